"""The Kubernetes API server restarted in the middle of an Enforce run.

The API server carries the objects and their status, not the run: a run needs
only storage and Raft. So while the kube-apiserver process is down, the run's
batches must go on; when it comes back, the job's final status must be written
once, from the journal, with the run it really had, and the watches must pick up
new objects again. Real parts: a kube-apiserver + etcd of this module's own (it
is killed, as a crashed or OOM-killed control plane would be, and started again
with the very same command line, port and etcd; SIGKILL rather than SIGTERM
because a SIGTERMed kube-apiserver drains its watches for tens of seconds),
three ``lethe run`` replicas, a real directory.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.badinput.operators import (
    CJ,
    finished,
    job,
    ledger_lines,
    old_files,
    policy,
    running_replicas,
    tracebacks,
)
from tests.fixtures.kube import KubeCluster, _LocalCluster, private_cluster
from tests.fixtures.replicas import LocalReplicas
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import condition, get

pytestmark = pytest.mark.timeout(240)

#: Six batches of 1,000: the run outlives the first ledger file by several seconds.
FILES = 6000
BATCHES = FILES // 1000


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[KubeCluster, _LocalCluster]]:
    if os.environ.get("LETHE_TEST_KUBECONFIG"):
        pytest.skip("stops and restarts the kube-apiserver process: needs the test's own "
                    "control plane, not an external cluster")
    with private_cluster() as pc:
        yield pc


@pytest.fixture(scope="module")
def replicas(cluster: tuple[KubeCluster, _LocalCluster],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalReplicas]:
    root = tmp_path_factory.mktemp("restart-operators")
    with running_replicas(cluster[0], workdir=root, data_root=root / "data") as reps:
        reps.data_root = root / "data"  # type: ignore[attr-defined]
        yield reps


def _ledger_files(root: Path) -> int:
    return sum(1 for _ in (root / ".lethe/ledger").rglob("*.jsonl"))


def test_apiserver_restart_mid_run_finishes_the_job_once(
        cluster: tuple[KubeCluster, _LocalCluster], replicas: LocalReplicas) -> None:
    kube, control = cluster
    ns = "restart"
    kube.kubectl("create", "namespace", ns, check=False)
    root = replicas.data_root / "mid-run"  # type: ignore[attr-defined]
    files = old_files(root, FILES)
    kube.apply(policy("logs", ns, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"}))
    kube.apply(job("big", ns, policyRef={"name": "logs"}, mode="Enforce"))

    wait_for(lambda: _ledger_files(root) >= 1, timeout=60, interval=0.05,
             what="the first batch's ledger file")
    control.stop_apiserver(sig=signal.SIGKILL)
    at_stop = _ledger_files(root)
    assert at_stop < BATCHES, "the run ended before the API server stopped"
    # With the API server gone, the run goes on: later batches reach the storage.
    wait_for(lambda: _ledger_files(root) >= min(at_stop + 2, BATCHES), timeout=30,
             interval=0.1, what="more batches while the API server is down")
    assert all(r.alive() for r in replicas.replicas)
    control.start_apiserver(kube=kube)

    done = finished(kube, "big", ns, timeout=60)
    st = done["status"]
    assert st["phase"] == "Succeeded", st
    assert not any(p.exists() for p in files)
    lines = ledger_lines(root)
    per_key = Counter(x["key"] for x in lines)
    assert len(per_key) == FILES and set(per_key.values()) == {1}, \
        "a key was recorded twice, or one is missing"
    assert {x["run_id"] for x in lines} == {st["runId"]}, "more than one run"
    deleted = sum(1 for x in lines if x["outcome"] in ("deleted", "already-gone"))
    assert st["counters"]["deleted"] == deleted == FILES
    assert st["counters"]["bytesFreed"] == sum(x["size"] for x in lines)
    assert st["counters"]["errors"] == 0 and st["counters"]["skippedChanged"] == 0
    assert condition(done, "Ready")["status"] == "True"  # type: ignore[index]

    # No crash, no traceback loop once the API is back, every replica ready again.
    after = tracebacks(replicas)
    replicas.wait_ready(timeout=60)
    assert all(r.alive() for r in replicas.replicas)
    # The watches came back: a job created after the restart is seen and run.
    small = old_files(root / "after", 20)
    kube.apply(policy("after", ns, {"posix": {"path": str(root / "after")}},
                      rules={"maxAge": "30d"}))
    kube.apply(job("after", ns, policyRef={"name": "after"}, mode="Enforce"))
    later = finished(kube, "after", ns, timeout=60)
    assert later["status"]["phase"] == "Succeeded" and not any(p.exists() for p in small)
    again = get(kube, CJ, "big", ns)
    assert again and again["status"]["runId"] == st["runId"], "the job ran a second time"
    assert tracebacks(replicas) == after, "tracebacks keep coming after the API server is back"
