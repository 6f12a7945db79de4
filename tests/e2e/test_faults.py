"""Faults on real pods, in the middle of a run: the leader pod force-deleted, its
process SIGKILLed or SIGSTOPped from the host, a rolling restart; and whether the
probes report what they claim.

A run is "mid-run" here when its first ledger files exist and most batches are still
to come: a POSIX policy over ``OLD`` files on the shared directory with ``BATCH``
files per batch, so the run has ``OLD / BATCH`` batches (one Raft entry and one
ledger file each). After every fault the checks are the same: the CleanupJob
Succeeded with the run id it started with, the ledger names every old file exactly
once and under that run id, every young file is still there.

Signals from the host need the pod's process on this machine: only the ``node``
target (scripts/node-cluster.sh) gives that; on kind and kubeconfig these tests are
skipped with the reason (and fail under LETHE_NO_SKIP=1, as every skip does).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import APP_NS, DATA_HOST, HTTP_PORT, MOUNT, NS, RELEASE, Cluster, wait_for
from tests.e2e.test_chart import files, finished, job

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

#: Old files per mid-run test and files per batch: 150 batches, each a Raft commit
#: over the pod network and a ledger file; the first run on the node cluster took
#: tens of seconds, so a fault sent after the second ledger file lands mid-run.
OLD = 3000
BATCH = 20
YOUNG = 50


def settled(c: Cluster) -> str:
    """Three ready pods, one leader that counts three members; the leader's name."""
    wait_for(lambda: c.ready_pods() == [f"{RELEASE}-{i}" for i in range(3)], timeout=300,
             what="3 ready pods")
    return str(wait_for(lambda: (ld := c.leader()) and c.members(ld) == 3 and ld,
                        timeout=180, what="a leader of 3 members"))


def host_pids(c: Cluster, pod: str) -> list[int]:
    """The host pids of the pod's `lethe` container (its cgroup names the container id).

    Only on the node target, where the pods are processes of this machine."""
    if c.kind != "node":
        pytest.skip(f"signals from the host need the pod's process on this machine; "
                    f"the {c.kind} target gives no such access")
    obj = c.get("pod", pod, NS) or {}
    cid = next((s.get("containerID") or "" for s in
                (obj.get("status") or {}).get("containerStatuses") or []
                if s.get("name") == "lethe"), "").partition("://")[2]
    assert cid, f"{pod} has no running lethe container: {obj.get('status')}"
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if cid in (d / "cgroup").read_text():
                pids.append(int(d.name))
        except OSError:  # the process ended while we looked
            continue
    assert pids, f"no process of container {cid[:12]} ({pod}) found in /proc/*/cgroup"
    return pids


def signal_pod(c: Cluster, pod: str, sig: signal.Signals) -> list[int]:
    pids = host_pids(c, pod)
    for pid in pids:
        os.kill(pid, sig)
    return pids


@dataclass
class Run:
    """One big Enforce CleanupJob over DATA_HOST/sub, started with a known leader."""

    c: Cluster
    sub: str
    leader: str
    name: str = ""
    olds: list[Path] = field(default_factory=list)
    youngs: list[Path] = field(default_factory=list)

    @property
    def ledger_dir(self) -> Path:
        return DATA_HOST / self.sub / ".lethe" / "ledger"

    def ledger_files(self) -> list[Path]:
        return sorted(self.ledger_dir.glob("*/*.jsonl")) if self.ledger_dir.exists() else []

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(x) for f in self.ledger_files()
                for x in f.read_text().splitlines() if x.strip()]


def start_big_run(c: Cluster, sub: str, *, old: int = OLD, batch: int = BATCH) -> Run:
    """Files, a policy with small batches and an Enforce CleanupJob; returns once the
    run wrote its second ledger file (so it is under way, not finished)."""
    leader = settled(c)
    # A directory (and policy) of its own per run: an earlier run's ledger in the
    # shared directory would mix with this one's.
    sub = f"{sub}-{uuid.uuid4().hex[:6]}"
    run = Run(c=c, sub=sub, leader=leader, name=f"{sub}-job")
    run.olds = files(sub, old, age_days=40, prefix="old")
    run.youngs = files(sub, YOUNG, age_days=1, prefix="new")
    c.apply({"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
             "metadata": {"name": sub, "namespace": APP_NS},
             "spec": {"target": {"posix": {"path": f"{MOUNT}/{sub}"}},
                      "rules": {"maxAge": "30d"}, "batchSize": batch}},
            job(run.name, sub))
    wait_for(lambda: len(run.ledger_files()) >= 2, timeout=180, interval=0.2,
             what=f"the second ledger file of {run.name}")
    return run


def assert_mid_run(run: Run, *, batches: int) -> None:
    """The fault was sent before the run ended (else the test proves nothing)."""
    n = len(run.ledger_files())
    assert n < batches, (f"the run had written {n} of {batches} ledger files when the "
                         f"fault was sent: it was not mid-run (make OLD bigger)")


def finished_once(run: Run, *, failover: bool) -> dict[str, Any]:
    """The job Succeeded with the run id it began with; every old file deleted and in
    the ledger exactly once, under that run id; every young file still there."""
    c = run.c
    st = finished(c, run.name, timeout=600)["status"]
    assert st["phase"] == "Succeeded", st
    lines = run.lines()
    run_ids = {x["run_id"] for x in lines}
    assert run_ids == {st["runId"]}, f"ledger run ids {run_ids}, job's {st['runId']}"
    per_key = Counter(x["key"] for x in lines)
    assert set(per_key) == {p.name for p in run.olds}, (
        sorted(set(per_key) ^ {p.name for p in run.olds})[:10])
    twice = sorted(k for k, n in per_key.items() if n > 1)
    assert not twice, f"keys in the ledger more than once: {twice[:10]}"
    assert st["counters"]["deleted"] == len(run.olds) and st["counters"]["errors"] == 0, st
    assert not [p for p in run.olds if p.exists()]
    gone = [p.name for p in run.youngs if not p.exists()]
    assert not gone, f"young files deleted: {gone[:10]}"
    if failover:
        # Both terms wrote batches: the new leader finished what the old one began.
        assert len({x["term"] for x in lines}) >= 2, Counter(x["term"] for x in lines)
    return dict(st)


def term_of(c: Cluster, pod: str) -> int:
    """The pod's Raft term, read just before a fault."""
    st = c.raft(pod)
    assert st is not None, f"{pod} did not answer /raft"
    return int(st["term"])


def new_leader(c: Cluster, *, after_term: int) -> str:
    """A leader elected after the fault: of a later term, whichever pod it is. A
    force-deleted pod comes back under the same name (StatefulSet) and a killed
    container restarts in its pod, either soon enough to win the election."""
    def probe() -> str | None:
        ld = c.leader()
        st = c.raft(ld) if ld else None
        return ld if st and int(st["term"]) > after_term else None
    return str(wait_for(probe, timeout=120, what=f"a leader of a term after {after_term}"))


def test_leader_pod_force_deleted_mid_run(release: Cluster) -> None:
    c = release
    run = start_big_run(c, "force-deleted")
    term = term_of(c, run.leader)
    c.kubectl("delete", "pod", run.leader, "-n", NS, "--grace-period=0", "--force",
              "--wait=false")
    assert_mid_run(run, batches=OLD // BATCH)
    new_leader(c, after_term=term)
    finished_once(run, failover=True)


def test_leader_process_sigkilled_mid_run(release: Cluster) -> None:
    c = release
    run = start_big_run(c, "sigkilled")
    pid_before = host_pids(c, run.leader)
    term = term_of(c, run.leader)
    signal_pod(c, run.leader, signal.SIGKILL)
    assert_mid_run(run, batches=OLD // BATCH)
    new_leader(c, after_term=term)
    finished_once(run, failover=True)
    # The kubelet restarted the killed container in the same pod; it rejoins.
    settled(c)
    assert host_pids(c, run.leader) != pid_before


def test_leader_process_sigstopped_mid_run_wakes_without_deleting(release: Cluster) -> None:
    c = release
    old, batch = OLD * 2, BATCH // 2
    run = start_big_run(c, "sigstopped", old=old, batch=batch)
    stopped_pids = signal_pod(c, run.leader, signal.SIGSTOP)
    stopped_at = time.time()
    woken_pids: list[int] = []
    try:
        assert_mid_run(run, batches=old // batch)
        old_term = max(x["term"] for x in run.lines())
        # Wake it as soon as the new leader wrote a batch (well before the liveness
        # probe restarts it, ~30 s): its lease and its batch are stale by then, and
        # every side effect it still tries must be fenced.
        try:
            wait_for(lambda: any(x["term"] > old_term for x in run.lines()), timeout=60,
                     interval=0.2, what="a batch written by a new leader")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{why_no_new_leader(c, run.leader)}") from None
    finally:
        # Woken however the test went (a stopped process would otherwise stay until
        # the liveness probe restarts it).
        with contextlib.suppress(AssertionError):  # no running container right now
            woken_pids = signal_pod(c, run.leader, signal.SIGCONT)
    woken_mid_run = len(run.ledger_files()) < old // batch
    assert woken_pids == stopped_pids, (
        "the liveness probe restarted the stopped leader before it could be woken: "
        "this run does not test a woken leader")
    st = finished_once(run, failover=True)
    # Nothing the old term wrote is dated after the stop: the woken process wrote no
    # ledger file (and the checks above show it deleted nothing the ledger missed).
    late = [f.name for f in run.ledger_files()
            if any(json.loads(x)["term"] <= old_term for x in f.read_text().splitlines())
            and f.stat().st_mtime > stopped_at + 1]
    assert not late, f"ledger files of the stopped leader's term written after the stop: {late}"
    assert woken_mid_run, f"the run had ended before the old leader woke ({st['runId']})"
    settled(c)


def why_no_new_leader(c: Cluster, stopped: str) -> str:
    """What the two others see while the leader is stopped (gone once it wakes): their
    /raft, their sockets (`ss` in the pod's network namespace), and every thread's
    stack (SIGUSR1: faulthandler, into the pod log that the report carries)."""
    out = []
    for pod in (f"{RELEASE}-{i}" for i in range(3)):
        if pod == stopped:
            continue
        out.append(f"== {pod} /raft: {json.dumps(c.raft(pod))}")
        with contextlib.suppress(AssertionError, OSError, subprocess.SubprocessError):
            pids = host_pids(c, pod)
            ss = subprocess.run(["nsenter", "-t", str(pids[0]), "-n", "ss", "-tanoi"],
                                capture_output=True, text=True, timeout=10, check=False)
            out.append(f"== {pod} sockets:\n{ss.stdout}{ss.stderr}")
            for pid in pids:
                os.kill(pid, signal.SIGUSR1)
    time.sleep(1)  # the stacks reach the log
    return "\n".join(out)


def test_rollout_restart_keeps_one_leader_and_loses_no_run(release: Cluster) -> None:
    c = release
    run = start_big_run(c, "rollout", old=OLD * 2, batch=BATCH // 2)
    claims: list[tuple[float, float, str, int, float]] = []  # start, end, pod, term, lease
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for i in range(3):
                pod = f"{RELEASE}-{i}"
                t0 = time.monotonic()
                st = c.raft(pod)
                t1 = time.monotonic()
                if st and st.get("lease_valid"):
                    claims.append((t0, t1, pod, int(st["term"]),
                                   float(st.get("lease_remaining") or 0)))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        # The pre-restart leader's term must be on record before the restart: the
        # leader may be lethe-2, replaced first, and a poller that first reaches it
        # while it shuts down sees only the terms after (CI, stop 21).
        wait_for(lambda: bool(claims), timeout=60, interval=0.2,
                 what="the leader's lease seen before the restart")
        before = c.kubectl("get", "statefulset", RELEASE, "-n", NS, "-o",
                           "jsonpath={.status.updateRevision}")
        c.kubectl("rollout", "restart", f"statefulset/{RELEASE}", "-n", NS)
        c.kubectl("rollout", "status", f"statefulset/{RELEASE}", "-n", NS, "--timeout=600s",
                  timeout=660)
        after = c.kubectl("get", "statefulset", RELEASE, "-n", NS, "-o",
                          "jsonpath={.status.updateRevision}")
        assert after != before
        settled(c)
    finally:
        stop.set()
        poller.join(timeout=60)
    finished_once(run, failover=False)
    # Each replaced pod joined quickly: Ready (a leader known) soon after its
    # container started. The leader used to dial a replaced peer's old address and
    # wait out the kernel's SYN retries (~127 s) before dialling its new one
    # (LeaseTransport._drop_stuck_connects).
    slow = {p: s for p in c.ready_pods() if (s := _start_to_ready(c, p)) > JOIN_WITHIN}
    assert not slow, f"pods Ready more than {JOIN_WITHIN}s after their container started: {slow}"
    # One leader per term (Raft's election safety), and no two pods' leases certainly
    # valid at the same instant: a claim seen in [s, e] with r seconds left is valid
    # at least until s + r; another pod's claim answered entirely inside that window
    # would be a second leader at the same time.
    by_term: dict[int, set[str]] = {}
    for _, _, pod, term, _ in claims:
        by_term.setdefault(term, set()).add(pod)
    assert all(len(p) == 1 for p in by_term.values()), by_term
    overlaps = [(a[2], a[3], b[2], b[3]) for a in claims for b in claims
                if a[2] != b[2] and a[1] <= b[0] and b[1] <= a[0] + a[4]]
    assert not overlaps, f"two leases valid at once: {overlaps[:5]}"
    assert len(by_term) >= 2, f"the leader never changed during the restart: {by_term}"


#: Seconds from a replica's container start to Ready: the startup probe, a Raft
#: connection to the leader, the watches listed. About 10 s on the node cluster.
JOIN_WITHIN = 60


def _start_to_ready(c: Cluster, pod: str) -> float:
    """Seconds between the lethe container's start and the pod's Ready condition."""
    obj = c.get("pod", pod, NS) or {}
    status = obj.get("status") or {}
    started = next(s["state"]["running"]["startedAt"] for s in status["containerStatuses"]
                   if s["name"] == "lethe")
    ready = next(x["lastTransitionTime"] for x in status["conditions"] if x["type"] == "Ready")
    return (_when(ready) - _when(started)).total_seconds()


def _when(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")


def _ready(c: Cluster, pod: str) -> bool | None:
    obj = c.get("pod", pod, NS)
    if not obj:
        return None
    return any(x["type"] == "Ready" and x["status"] == "True"
               for x in (obj.get("status") or {}).get("conditions") or [])


def _restarts(c: Cluster, pod: str) -> int:
    obj = c.get("pod", pod, NS) or {}
    return sum(int(s.get("restartCount") or 0)
               for s in (obj.get("status") or {}).get("containerStatuses") or [])


def test_probes_report_what_they_claim(release: Cluster) -> None:
    """/readyz on every Ready pod says a leader is known; a stopped process (it answers
    nothing) goes NotReady within the readiness probe's window and is restarted by the
    liveness probe; after the restart it is a Ready member again.

    The chart: readiness /readyz every 5 s, 3 failures; liveness /healthz every 10 s,
    3 failures, 3 s timeout (charts/lethe/values.yaml)."""
    c = release
    leader = settled(c)
    for pod in c.ready_pods():
        body = c.kubectl("get", "--raw",
                         f"/api/v1/namespaces/{NS}/pods/{pod}:{HTTP_PORT}/proxy/readyz")
        # "ok: leader <address>": the leader this pod knows, the one /raft names.
        assert body.startswith("ok: leader "), (pod, body)
        assert body.split()[2] == (c.raft(pod) or {}).get("leader"), (pod, body)
    follower = next(p for p in c.ready_pods() if p != leader)
    restarts = _restarts(c, follower)
    signal_pod(c, follower, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_for(lambda: _ready(c, follower) is False, timeout=60, interval=1,
                 what=f"{follower} NotReady while stopped")
        not_ready_after = time.monotonic() - stopped
        wait_for(lambda: _restarts(c, follower) > restarts, timeout=120, interval=1,
                 what=f"the liveness probe to restart {follower}")
        restarted_after = time.monotonic() - stopped
    except BaseException:
        signal_pod(c, follower, signal.SIGCONT)
        raise
    # 3 x 5 s readiness + 3 s timeout; 3 x 10 s liveness + 3 s timeout, plus the
    # kubelet's sync period: generous bounds, but a probe that never fails fails here.
    assert not_ready_after < 60 and restarted_after < 120, (not_ready_after, restarted_after)
    # The leader never depended on the stopped follower: it stays leader throughout.
    assert c.leader() == leader
    settled(c)
