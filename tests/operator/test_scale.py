"""Scaling the StatefulSet 3 -> 5 -> 3 with `lethe run` replicas (#13).

The replicas are configured as the chart configures pods (``POD_NAME=lethe-<i>``,
``LETHE_RAFT_REPLICAS``, ``LETHE_RAFT_SERVICE``: Raft identities
``lethe-<i>.lethe-raft.lethe-system.svc:7000``), each name dialled at a loopback
port through the product's test hook (LocalReplicas' StatefulSet layout). The
StatefulSet object lives in the real API server: a terminating replica reads its
``spec.replicas`` to tell a scale-down from a restart. No kubelet, so the test
plays the StatefulSet controller: ``helm upgrade --set replicaCount=5`` sets the
object's size and every pod's ``LETHE_RAFT_REPLICAS``, restarts the old pods one
by one (the template changed) and starts the new ones.
"""

from __future__ import annotations

import json
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import STS_NAMESPACE, LocalReplicas
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import get, render_rbac, sa_kubeconfig
from tests.operator.test_operator import files, job, ns, policy

pytestmark = pytest.mark.timeout(600)

NS = STS_NAMESPACE


def statefulset(replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "lethe"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "lethe", "namespace": NS},
            "spec": {"replicas": replicas, "serviceName": "lethe-raft",
                     "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "lethe",
                                                           "image": "lethe:test"}]}}}}


@pytest.fixture(scope="module")
def identities(crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
               ) -> list[str]:
    """Five ServiceAccounts bound by the chart's RBAC (with the other modules' names,
    which the same bindings must keep)."""
    kube = crds_installed
    d = tmp_path_factory.mktemp("identities")
    kube.kubectl("create", "namespace", NS, check=False)
    names = [f"lethe-sc-{i}" for i in range(5)]
    for name in names:
        kube.kubectl("create", "serviceaccount", name, "-n", NS, check=False)
    bound = names + [f"lethe-op-{i}" for i in range(3)] + [f"lethe-lc-{i}" for i in range(3)]
    for o in render_rbac():
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            o["subjects"] = [{"kind": "ServiceAccount", "name": x, "namespace": NS}
                             for x in bound]
        kube.apply(o)
    return [sa_kubeconfig(kube, sa=x, path=d / f"{x}.kubeconfig") for x in names]


@pytest.fixture(scope="module")
def pods(identities: list[str], crds_installed: KubeCluster,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalReplicas]:
    kube = crds_installed
    kube.kubectl("delete", "statefulset", "lethe", "-n", NS, "--ignore-not-found")
    kube.apply(statefulset(3))
    root = tmp_path_factory.mktemp("sts")
    data = root / "data"
    data.mkdir()
    reps = LocalReplicas(count=5, workdir=root, kubeconfigs=identities,
                         password=secrets.token_hex(16), statefulset=True, raft_replicas=3,
                         env={"LETHE_ALLOWED_ROOTS": str(data), "LETHE_LOG_FORMAT": "json"})
    reps.data_root = data  # type: ignore[attr-defined]
    try:
        for i in range(3):
            reps.start(i)
        reps.wait_ready(timeout=120, indexes=range(3))
        yield reps
    finally:
        reps.stop()
        kube.kubectl("delete", "statefulset", "lethe", "-n", NS, "--ignore-not-found")


def views(reps: LocalReplicas, indexes: range) -> list[dict[str, Any] | None]:
    return [reps.replicas[i].raft() for i in indexes]


def one_cluster(reps: LocalReplicas, indexes: range) -> bool:
    """Every replica in ``indexes`` names the same leader and exactly these members."""
    want = {reps.identity(reps.replicas[i]) for i in indexes}
    seen = views(reps, indexes)
    if any(v is None for v in seen):
        return False
    leaders = {v["leader"] for v in seen if v is not None}
    return (len(leaders) == 1 and leaders <= want
            and all({v["self"], *(p["address"] for p in v["peers"])} == want
                    for v in seen if v is not None))


def scale(kube: KubeCluster, n: int) -> None:
    kube.kubectl("scale", "statefulset", "lethe", "-n", NS, f"--replicas={n}")


def log_of(reps: LocalReplicas, i: int) -> str:
    return reps.replicas[i].log_path.read_text(errors="replace")


def run_job(kube: KubeCluster, reps: LocalReplicas, name: str) -> None:
    """A CleanupJob deletes exactly its 12 old files, once (ledger), and succeeds."""
    n = ns(kube, "e2e-scale")
    root = reps.data_root / name  # type: ignore[attr-defined]
    old = files(root, 12, age_days=40, prefix="old")
    new = files(root, 5, age_days=1, prefix="new")
    kube.apply(policy(name, n, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"}))
    kube.apply(job(name, n, policyRef={"name": name}, mode="Enforce"))
    done = wait_for(lambda: (o := get(kube, "cleanupjob", name, n)) and
                    (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") and o,
                    timeout=120, what=f"CleanupJob {name} to finish")
    st = done["status"]
    assert st["phase"] == "Succeeded" and st["counters"]["deleted"] == len(old), st
    assert not any(p.exists() for p in old) and all(p.exists() for p in new)
    ledger = [json.loads(x) for f in sorted((root / ".lethe/ledger").rglob("*.jsonl"))
              for x in f.read_text().splitlines()]
    keys = [x["key"] for x in ledger]
    assert sorted(keys) == sorted(p.name for p in old), keys  # each file once
    assert {x["run_id"] for x in ledger} == {st["runId"]}


def test_scale_3_to_5_to_3(pods: LocalReplicas, crds_installed: KubeCluster) -> None:
    kube, reps = crds_installed, pods
    wait_for(lambda: one_cluster(reps, range(3)), timeout=60, what="three members")

    # helm upgrade --set replicaCount=5: the object grows, every pod gets the new
    # seed; the new pods start at once (Parallel), the old ones restart one by one.
    scale(kube, 5)
    reps.raft_replicas = 5
    for i in (3, 4):
        reps.start(i)
    for i in range(3):
        reps.stop(i)
        proc = reps.replicas[i].proc
        assert proc is not None and proc.returncode == 0
        assert "leaving Raft" not in log_of(reps, i)  # a restart is not a scale-down
        reps.start(i)
        reps.wait_ready(timeout=120, indexes=[i])
    reps.wait_ready(timeout=120)
    wait_for(lambda: one_cluster(reps, range(5)), timeout=60,
             what="all five agree on one leader and five members")
    for i in (3, 4):
        assert "asking it to add this replica" in log_of(reps, i), i
        assert "bootstrapping" not in log_of(reps, i), i
    run_job(kube, reps, "after-up")

    # helm upgrade --set replicaCount=3: both extra pods get SIGTERM together.
    scale(kube, 3)
    reps.raft_replicas = 3
    for i in (3, 4):
        reps.signal(i, signal.SIGTERM)
    for i in (3, 4):
        proc = reps.replicas[i].proc
        assert proc is not None and proc.wait(timeout=45) == 0, log_of(reps, i)[-3000:]
        assert "left the cluster" in log_of(reps, i), i
    wait_for(lambda: one_cluster(reps, range(3)), timeout=60, what="back to three members")
    run_job(kube, reps, "after-down")
    assert not [line for i in range(5) for line in log_of(reps, i).splitlines()
                if "Traceback" in line]



def test_kubectl_scale_again_with_the_kept_volumes(pods: LocalReplicas,
                                                   crds_installed: KubeCluster) -> None:
    """After the test above: ``kubectl scale`` 3 -> 5 changes no pod template, so the
    new pods keep ``LETHE_RAFT_REPLICAS=3`` (outside the seed), and they reuse the
    volumes of the earlier lethe-3 and lethe-4, which remember a membership that no
    longer lists them. They are added back; then 5 -> 3 again."""
    kube, reps = crds_installed, pods
    wait_for(lambda: one_cluster(reps, range(3)), timeout=60, what="three members")
    assert reps.raft_replicas == 3
    for i in (3, 4):
        assert (reps.replicas[i].data_dir / "raft/members.json").exists()
    scale(kube, 5)
    for i in (3, 4):
        reps.start(i)
    reps.wait_ready(timeout=120)
    wait_for(lambda: one_cluster(reps, range(5)), timeout=60, what="five members again")
    run_job(kube, reps, "after-kubectl-up")
    scale(kube, 3)
    for i in (4, 3):  # one at a time this time
        reps.signal(i, signal.SIGTERM)
        proc = reps.replicas[i].proc
        assert proc is not None and proc.wait(timeout=45) == 0, log_of(reps, i)[-3000:]
    wait_for(lambda: one_cluster(reps, range(3)), timeout=60, what="back to three members")


def test_a_replica_that_cannot_leave_says_so_in_one_line(pods: LocalReplicas,
                                                          crds_installed: KubeCluster) -> None:
    """Scale-down while the other members are frozen: the leave cannot commit. The
    replica still exits 0 within its grace period and says, in one log line and
    not a traceback, that the others still count it."""
    kube, reps = crds_installed, pods
    scale(kube, 4)
    reps.start(3)
    reps.wait_ready(timeout=120, indexes=[3])
    wait_for(lambda: one_cluster(reps, range(4)), timeout=60, what="four members")
    scale(kube, 3)
    for i in range(3):
        reps.signal(i, signal.SIGSTOP)
    try:
        reps.signal(3, signal.SIGTERM)
        proc = reps.replicas[3].proc
        assert proc is not None and proc.wait(timeout=60) == 0, log_of(reps, 3)[-3000:]
    finally:
        for i in range(3):
            reps.signal(i, signal.SIGCONT)
    text = log_of(reps, 3)
    assert "could not leave the cluster" in text and "still count" in text, text[-3000:]
    assert "Traceback" not in text
