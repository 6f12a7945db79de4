"""`helm install` as documented, on kind: three replicas do a real run, scale, fail over.

Opt-in (see conftest.py and docs/testing.md): ``pip install pytest-kind==22.11.1``,
load the image (``kind load docker-image IMAGE --name lethe-kind``), then
``LETHE_KIND_IMAGE=IMAGE pytest -m kind tests/kind``. The tests run in order and
share one release.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kind.conftest import (
    CHART,
    DATA_HOST,
    DATA_NODE,
    IMAGE,
    MOUNT,
    NS,
    RELEASE,
    Kind,
    wait_for,
)

pytestmark = pytest.mark.kind

CJ = "cleanupjobs.lethe.io"
RP = "retentionpolicies.lethe.io"
APP_NS = "kind-e2e"
DAY = 86400


def values() -> dict[str, Any]:
    """The chart's defaults, plus: our image, and a hostPath volume instead of NFS."""
    repo, _, tag = IMAGE.rpartition(":")
    return {
        "replicaCount": 3,
        "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
        "config": {"allowedRoots": [MOUNT]},
        "extraVolumes": [{"name": "testdata",
                          "hostPath": {"path": DATA_NODE, "type": "Directory"}}],
        "extraVolumeMounts": [{"name": "testdata", "mountPath": MOUNT}],
    }


def files(sub: str, n: int, *, age_days: float, prefix: str) -> list[Path]:
    """Files in the shared directory (host side), world-writable dirs for uid 65532."""
    root = DATA_HOST / sub
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o777)
    t = time.time() - age_days * DAY
    out = []
    for i in range(n):
        p = root / f"{prefix}-{i:03d}.log"
        p.write_text("x" * 100)
        os.utime(p, (t, t))
        out.append(p)
    return out


def policy(name: str, sub: str) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": APP_NS},
            "spec": {"target": {"posix": {"path": f"{MOUNT}/{sub}"}},
                     "rules": {"maxAge": "30d"}}}


def job(name: str, policy_name: str) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "CleanupJob",
            "metadata": {"name": name, "namespace": APP_NS},
            "spec": {"policyRef": {"name": policy_name}, "mode": "Enforce"}}


def run_job(kind: Kind, sub: str, *, old: int = 20, new: int = 5) -> dict[str, Any]:
    """A policy over DATA_HOST/sub and an Enforce CleanupJob on it; the finished job."""
    name = f"{sub}-{uuid.uuid4().hex[:6]}"
    olds = files(sub, old, age_days=40, prefix="old")
    news = files(sub, new, age_days=1, prefix="new")
    kind.apply(policy(sub, sub), job(name, sub))
    done = wait_for(lambda: (o := kind.get(CJ, name, APP_NS)) and
                    (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") and o,
                    timeout=180, what=f"CleanupJob {name} to finish")
    st = done["status"]
    assert st["phase"] == "Succeeded", st
    assert st["counters"]["deleted"] == old and st["counters"]["errors"] == 0, st
    assert not any(p.exists() for p in olds) and all(p.exists() for p in news)
    return dict(done)


@pytest.fixture(scope="module")
def release(kind: Kind, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kind]:
    vals = tmp_path_factory.mktemp("helm") / "values.yaml"
    vals.write_text(yaml.safe_dump(values()))
    kind.helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", NS,
              "--create-namespace", "--values", str(vals), "--wait", "--timeout", "10m")
    kind.kubectl("create", "namespace", APP_NS)  # fails loudly if left from a previous run
    try:
        yield kind
    finally:
        kind.try_kubectl("delete", "namespace", APP_NS, "--wait=false")
        kind.helm("uninstall", RELEASE, "--namespace", NS, "--wait")


def test_three_replicas_run_a_job_and_only_the_leader_writes(release: Kind) -> None:
    kind = release
    assert kind.ready_pods() == [f"{RELEASE}-{i}" for i in range(3)], kind.diagnose()
    leader = wait_for(kind.leader, timeout=60, what="a Raft leader")
    assert kind.members(leader) == 3
    done = run_job(kind, "first")
    run_id = done["status"]["runId"]
    # The policy's status names the one replica that wrote it: the leader.
    pol = wait_for(lambda: (o := kind.get(RP, "first", APP_NS)) and
                   (o.get("status") or {}).get("leader") and o, timeout=60,
                   what="the policy's status")
    assert pol["status"]["leader"] == leader
    # Every event came from the leader, and only its log tells the run.
    events = json.loads(kind.kubectl("get", "events", "-n", APP_NS, "-o", "json"))["items"]
    lethe = [e for e in events if (e.get("source") or {}).get("component") == "lethe"]
    assert lethe and {e.get("reportingInstance") for e in lethe} == {leader}, lethe
    told = [p for p in kind.ready_pods() if run_id in kind.logs(p)]
    assert told == [leader], told


def test_scale_to_five_and_back_to_three(release: Kind) -> None:
    kind = release
    kind.helm("upgrade", RELEASE, str(CHART), "--namespace", NS, "--reuse-values",
              "--set", "replicaCount=5", "--wait", "--timeout", "10m")
    wait_for(lambda: len(kind.ready_pods()) == 5, timeout=300, what="5 ready pods")
    wait_for(lambda: (ld := kind.leader()) and kind.members(ld) == 5, timeout=180,
             what="a Raft cluster of 5")
    kind.helm("upgrade", RELEASE, str(CHART), "--namespace", NS, "--reuse-values",
              "--set", "replicaCount=3", "--wait", "--timeout", "10m")
    wait_for(lambda: kind.ready_pods() == [f"{RELEASE}-{i}" for i in range(3)],
             timeout=300, what="pods 3 and 4 gone")
    # The removed replicas left Raft on their way out: the quorum is 2 of 3 again.
    leader = wait_for(lambda: (ld := kind.leader()) and kind.members(ld) == 3 and ld,
                      timeout=180, what="a Raft cluster of 3")
    for pod in kind.ready_pods():
        assert kind.members(pod) == 3, (pod, kind.raft(pod))
    done = run_job(kind, "after-scale")
    pol = wait_for(lambda: (o := kind.get(RP, "after-scale", APP_NS)) and
                   (o.get("status") or {}).get("leader") and o, timeout=60,
                   what="the policy's status")
    assert pol["status"]["leader"] == leader, done


def test_killing_the_leader_pod_elects_another(release: Kind) -> None:
    kind = release
    old = wait_for(kind.leader, timeout=60, what="a Raft leader")
    kind.kubectl("delete", "pod", old, "-n", NS, "--grace-period=0", "--force",
                 "--wait=false")
    new = wait_for(lambda: (ld := kind.leader()) and ld != old and ld, timeout=120,
                   what="a new leader")
    assert new != old
    # The StatefulSet brings the killed pod back; it rejoins as a follower.
    wait_for(lambda: len(kind.ready_pods()) == 3, timeout=300, what="3 ready pods again")
    wait_for(lambda: kind.members(new) == 3, timeout=120, what="3 Raft members")
    run_job(kind, "after-failover")
    pol = wait_for(lambda: (o := kind.get(RP, "after-failover", APP_NS)) and
                   (o.get("status") or {}).get("leader") and o, timeout=60,
                   what="the policy's status")
    assert pol["status"]["leader"] == kind.leader() or pol["status"]["leader"] == new
