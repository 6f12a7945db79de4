"""A run's counters across failovers (issue #17 item 4), end to end.

Three real replicas (their own module-scoped set, under their own ServiceAccounts:
leadership moves here by design), the real API server, a POSIX directory. The
leader is SIGKILLed twice in the middle of one scheduled run; the third leader
finishes it. Then ``status.lastRun``, the ``RunFinished`` event and the replicas'
``/metrics`` must all say what the ledger says, and ``matched`` / ``scanned`` must
be the run's, not the last leader's re-plan's (before the fix: ``matched: 0``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import LocalReplicas, Replica
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import NS, condition, get, render_rbac, sa_kubeconfig
from tests.operator.test_lifecycle import (
    LogTail,
    events,
    log_lines,
    next_slot,
    posix_ledger,
    tracebacks,
)
from tests.operator.test_operator import files, ns, policy

BATCH = 40  # spec.batchSize: many batches, so each leader is caught mid-run


@pytest.fixture(scope="module")
def identities(crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
               ) -> list[str]:
    """conftest's identities under other ServiceAccount names (bound by the same chart
    RBAC): test_operator.py proves I1 from the audit log by name, assuming one leader
    per session, and this module moves leadership twice."""
    kube = crds_installed
    d = tmp_path_factory.mktemp("identities")
    kube.kubectl("create", "namespace", NS, check=False)
    names = [f"lethe-rc-{i}" for i in range(3)]
    for name in names:
        kube.kubectl("create", "serviceaccount", name, "-n", NS, check=False)
    bound = names + [f"lethe-op-{i}" for i in range(3)] + [f"lethe-lc-{i}" for i in range(3)]
    for o in render_rbac():
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            o["subjects"] = [{"kind": "ServiceAccount", "name": x, "namespace": NS}
                             for x in bound]
        kube.apply(o)
    return [sa_kubeconfig(kube, sa=x, path=d / f"{x}.kubeconfig") for x in names]


def metric(replica: Replica, name: str, labels: dict[str, str]) -> float:
    """One sample of ``name`` with these labels on one replica (0 if absent)."""
    code, body = replica.get("/metrics")
    assert code == 200, body[:300]
    total = 0.0
    for line in body.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def ledger_files(root: Path) -> list[Path]:
    d = root / ".lethe/ledger"
    return sorted(d.rglob("*.jsonl")) if d.is_dir() else []


def kill_leader_mid_run(operators: LocalReplicas, root: Path, *, after_files: int
                        ) -> tuple[int, int]:
    """SIGKILL the leader once the run has written more than ``after_files`` ledger
    files (so it is deleting now), then restart it as a follower so that the cluster
    keeps a quorum for the next kill. Returns the killed replica's index and the
    number of ledger files at the kill."""
    wait_for(lambda: len(ledger_files(root)) > after_files, timeout=120, interval=0.02,
             what=f"more than {after_files} ledger files")
    leader = operators.wait_leader(timeout=30)
    operators.kill(leader.index)
    at_kill = len(ledger_files(root))
    operators.wait_leader(timeout=60, exclude=leader)
    operators.start(leader.index)
    return leader.index, at_kill


def test_counters_equal_the_ledger_after_two_failovers(operators: LocalReplicas,
                                                       crds_installed: KubeCluster) -> None:
    kube, n = crds_installed, ns(crds_installed, "e2e-resume-counters")
    root = operators.data_root / "resume-counters"  # type: ignore[attr-defined]
    old = files(root, 8000, age_days=40, prefix="old")
    new = files(root, 7, age_days=1, prefix="new")
    tail = LogTail(operators)
    cron, slot = next_slot()
    kube.apply(policy("twice", n, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"},
                      mode="Enforce", schedule=cron, batchSize=BATCH))
    marker = f"starting (slot {slot}, mode Enforce)"
    wait_for(lambda: any(x.get("namespace") == n and marker in str(x.get("message"))
                         for _i, x in tail.new_lines()),
             timeout=100, interval=0.05, what=f"the leader to log {marker!r}")
    first, at_first = kill_leader_mid_run(operators, root, after_files=0)
    # The next leader resumes the run; catch it mid-run too, past the batches in flight
    # at the first kill (at most 8: journal.MAX_INFLIGHT), which it finishes first.
    second, _ = kill_leader_mid_run(operators, root, after_files=at_first + 8)
    obj = wait_for(lambda: (o := get(kube, "rp", "twice", n)) and
                   ((o.get("status") or {}).get("lastRun") or {}).get("result") and o,
                   timeout=180, what="the run to finish under the third leader")
    operators.wait_ready(timeout=90)

    last = obj["status"]["lastRun"]
    run_id = last["id"]
    resumed = [x for x in log_lines(operators) if x.get("namespace") == n
               and str(x.get("message", "")).startswith(f"resuming run {run_id}")]
    print(f"killed lethe-{first} then lethe-{second}; run {run_id} resumed "
          f"{len(resumed)} times; lastRun {last}")
    assert last["result"] == "Succeeded", last
    assert len(resumed) >= 2, "the leader was not caught mid-run twice"
    assert not any(p.exists() for p in old) and all(p.exists() for p in new)

    lines = posix_ledger(root)
    assert {x["run_id"] for x in lines} == {run_id}
    assert Counter(x["key"] for x in lines) == Counter(p.name for p in old)
    assert len(ledger_files(root)) == math.ceil(len(old) / BATCH)  # spec.batchSize used
    outcomes = Counter(x["outcome"] for x in lines)
    ledger = {"deleted": outcomes["deleted"] + outcomes["already-gone"],
              "bytesFreed": sum(x["size"] for x in lines
                                if x["outcome"] in ("deleted", "already-gone")),
              "skippedChanged": outcomes["changed-skipped"] + outcomes["gone-or-replaced"],
              "errors": outcomes["error"]}
    assert {k: last[k] for k in ledger} == ledger, (last, outcomes)
    # The run's own plan, not the last leader's re-plan of what was left.
    assert (last["scanned"], last["matched"]) == (len(old) + len(new), len(old)), last
    assert obj["status"]["eligible"] == 0

    finished = [e for e in events(kube, n, "twice", "RunFinished") if run_id in e["message"]]
    assert len(finished) == 1, finished
    assert (f"deleted {ledger['deleted']}, eligible 0, skipped {ledger['skippedChanged']}, "
            f"errors {ledger['errors']}") in finished[0]["message"], finished[0]["message"]

    # Metrics: only the replica that finished the run counted it, once, whole; the
    # killed ones restarted with fresh counters. Summed as docs/metrics.md says.
    labels = {"namespace": n, "policy": "twice"}
    up = [r for r in operators.replicas if r.alive()]
    assert sum(metric(r, "lethe_objects_deleted_total", labels) for r in up) \
        == ledger["deleted"]
    assert sum(metric(r, "lethe_bytes_deleted_total", labels) for r in up) \
        == ledger["bytesFreed"]
    assert sum(metric(r, "lethe_runs_total", {**labels, "result": "Succeeded"})
               for r in up) == 1
    assert condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
    assert not tracebacks(operators)
