"""One chaos trial: population, replicas, jobs, writers, consumer, nemesis, verdict.

Reproducible from its seed in what it decides: the population (names, ages,
sizes), the manifest, each writer's sequence of operations and targets, the
S3 maxAge, and the nemesis's sequence of faults, victims (by role when the
role is "leader") and durations. Real processes and real time make the
interleavings differ from one replay to the next; that is the point of
running many seeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.checker import JobRecord, TrialRecord, Verdict, WriteOp, check, md5, read_s3
from tests.chaos.env import ChaosReplicas, Shared, new_replicas
from tests.chaos.s3proxy import S3Proxy

DAY = 86400.0
CJ = "cleanupjobs.lethe.io"
TERMINAL = ("Succeeded", "Failed")
#: Floors per second of chaos: each writer thread's successful operations, and the
#: consumer's manifest checks. Measured rates are ~10/s (POSIX writers), ~7/s (S3
#: writer) and ~4/s (consumer) on the loaded 2-core machine; a floor an order of
#: magnitude lower trips only on a thread that stalled or stopped early.
WRITER_FLOOR = 1.0
CONSUMER_FLOOR = 0.5


@dataclass
class TrialResult:
    seed: int
    faults: Counter[str]
    verdict: Verdict
    seconds: float
    error: str | None = None
    workdir: Path | None = None
    #: fault kind -> leader changes seen while it was the latest fault (LeaderWatch)
    leader_changes: Counter[str] = field(default_factory=Counter)
    #: why the trial proves nothing, though it raised nothing: no fault landed, a
    #: thread died, a thread did less than its floor, a replica not alive and ready
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.verdict.violations and not self.failures


@dataclass
class Sizes:
    posix_old: int
    s3_old: int
    chaos_seconds: float

    @classmethod
    def pick(cls, rng: random.Random, quick: bool) -> Sizes:
        if quick:
            return cls(rng.randint(300, 700), rng.randint(100, 250), rng.uniform(10, 14))
        return cls(rng.randint(1200, 2600), rng.randint(300, 1200), rng.uniform(20, 28))


# -- population -------------------------------------------------------------------------


def make_posix(rng: random.Random, rec: TrialRecord, n_old: int) -> list[str]:
    """Old (2–60 d), young (< 12 h), future-dated and kept files; returns the old keys."""
    root, now = rec.posix_root, time.time()
    plan: list[tuple[str, float]] = []
    for i in range(n_old):
        plan.append((f"d{i % 8}/old-{i:05d}.dat", now - rng.uniform(2, 60) * DAY))
    for i in range(n_old // 5):
        plan.append((f"d{i % 8}/young-{i:05d}.dat", now - rng.uniform(0, 0.5) * DAY))
    for i in range(12):
        plan.append((f"d{i % 8}/future-{i:03d}.dat", now + rng.uniform(3600, 2 * DAY)))
    for i in range(40):
        plan.append((f"keep/d{i % 3}/old-{i:03d}.dat", now - rng.uniform(2, 60) * DAY))
    for key, mtime in plan:
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        body = f"{rec.seed}:{key}:".encode() + b"p" * rng.randint(0, 300)
        p.write_bytes(body)
        os.utime(p, (mtime, mtime))
        rec.posix_population[key] = (mtime, md5(body))
    old = [k for k, _ in plan if "/old-" in k and not k.startswith("keep/")]
    refs = rng.sample([k for k, _ in plan if "/future-" not in k], k=min(300, len(plan) // 3))
    (root / rec.manifest_key).write_text(json.dumps({"version": 1, "files": refs}))
    return old


def s3_put(client: Any, rec: TrialRecord, key: str, body: bytes, lock: threading.Lock, *,
           op: str) -> bool:
    """PUT one object and record the attempt (a failed PUT may still have landed)."""
    t0, ok, version = time.time(), True, None
    try:
        version = client.put_object(Bucket=rec.s3_bucket, Key=rec.s3_prefix + key,
                                    Body=body).get("VersionId")
    except Exception:  # botocore's errors and connection failures alike: recorded, not ok
        ok = False
    with lock:
        rec.s3_ops.append(WriteOp(key, op, t0, time.time(), ok, md5(body), version))
    return ok


def make_s3(rng: random.Random, rec: TrialRecord, client: Any, keys: list[str],
            lock: threading.Lock) -> None:
    bodies = [(k, f"{rec.seed}:{k}:{uuid.uuid4().hex}".encode() + b"s" * rng.randint(0, 200))
              for k in keys]
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(lambda kb: s3_put(client, rec, kb[0], kb[1], lock, op="populate"),
                      bodies))


# -- writers and the consumer -----------------------------------------------------------


class Writers:
    """Two POSIX writers and one S3 writer; each key belongs to one writer thread."""

    def __init__(self, rec: TrialRecord, seed: int, old_posix: list[str], s3_keys: list[str],
                 s3_client: Any, lock: threading.Lock) -> None:
        self.rec, self.seed, self.lock = rec, seed, lock
        self.old_posix, self.s3_keys, self.s3 = old_posix, s3_keys, s3_client
        self.stop = threading.Event()
        self.done: Counter[str] = Counter()  # thread name -> successful operations
        self.died: dict[str, str] = {}  # thread name -> traceback
        self.threads = [threading.Thread(target=self._guard, args=(f"posix-{i}", self._posix, i),
                                         daemon=True) for i in range(2)]
        self.threads.append(threading.Thread(target=self._guard, args=("s3", self._s3),
                                             daemon=True))

    def _guard(self, name: str, body: Callable[..., None], *args: Any) -> None:
        self.done[name] = 0
        try:
            body(*args)
        except BaseException:  # recorded: a dead writer fails the trial (harness_failures)
            self.died[name] = traceback.format_exc()

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def _posix(self, idx: int) -> None:
        rng = random.Random(self.seed * 101 + idx)
        owned_old = [k for k in self.old_posix if int(md5(k.encode()), 16) % 2 == idx]
        owned = [k for k in self.rec.posix_population if int(md5(k.encode()), 16) % 2 == idx
                 and k != self.rec.manifest_key]
        root, n = self.rec.posix_root, 0
        while not self.stop.is_set():
            n += 1
            r = rng.random()
            key = rng.choice(owned_old) if rng.random() < 0.6 and owned_old else rng.choice(owned)
            body = f"{self.seed}:w{idx}:{n}:".encode() + b"w" * rng.randint(1, 400)
            t0, ok, digest, op = time.time(), True, None, "overwrite"
            try:
                if r < 0.45:
                    fd = os.open(root / key, os.O_WRONLY | os.O_TRUNC)
                    try:
                        os.write(fd, body)
                    finally:
                        os.close(fd)
                    digest = md5(body)
                elif r < 0.75:
                    op = "touch"
                    os.utime(root / key)
                else:
                    op, key = "create", f"d{rng.randrange(8)}/new-w{idx}-{n:05d}.dat"
                    fd = os.open(root / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    try:
                        os.write(fd, body)
                    finally:
                        os.close(fd)
                    digest = md5(body)
                    owned.append(key)
            except FileNotFoundError:
                ok = False
            with self.lock:
                self.rec.posix_ops.append(WriteOp(key, op, t0, time.time(), ok, digest))
            self.done[f"posix-{idx}"] += ok
            time.sleep(rng.uniform(0.01, 0.05))

    def _s3(self) -> None:
        rng = random.Random(self.seed * 101 + 7)
        keys = [k for k in self.s3_keys if not k.startswith("keep/")]
        n = 0
        while not self.stop.is_set():
            n += 1
            if rng.random() < 0.6 and keys:
                key, op = rng.choice(keys), "overwrite"
            else:
                key, op = f"p{rng.randrange(5)}/new-{n:05d}", "create"
                keys.append(key)
            body = f"{self.seed}:s3w:{n}:{uuid.uuid4().hex}".encode() + b"w" * rng.randint(1, 99)
            self.done["s3"] += s3_put(self.s3, self.rec, key, body, self.lock, op=op)
            time.sleep(rng.uniform(0.03, 0.12))


class Consumer(threading.Thread):
    """Reads the manifest as a consumer would: a key seen missing *before* a read of the
    manifest must not be referenced by that manifest (files never come back)."""

    def __init__(self, rec: TrialRecord, keys: list[str]) -> None:
        super().__init__(daemon=True)
        self.rec, self.keys, self.stop = rec, keys, threading.Event()
        self.died: str | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException:  # recorded: a dead consumer fails the trial
            self.died = traceback.format_exc()

    def _run(self) -> None:
        root = self.rec.posix_root
        while not self.stop.is_set():
            missing = {k for k in self.keys if not os.path.lexists(root / k)}
            try:
                doc = json.loads((root / self.rec.manifest_key).read_text())
            except (OSError, ValueError) as e:
                self.rec.consumer_violations.append(f"manifest unreadable: {e}")
                continue
            refs = {f if isinstance(f, str) else f.get("path") for f in doc.get("files", [])}
            for k in sorted(refs & missing):
                self.rec.consumer_violations.append(
                    f"{k} was missing at {time.time():.3f} and then still referenced")
            self.rec.consumer_checks += 1
            time.sleep(0.2)


# -- the nemesis ------------------------------------------------------------------------


class LeaderWatch(threading.Thread):
    """Samples who holds the lease, as (replica, term), every 0.2 s and counts each
    change against the latest fault injected ("none" before the first,
    "after-chaos" once the nemesis has healed everything), so a trial
    reports leader changes per fault (#17 item 5: a returning replica must not
    depose a healthy leader). A change that reverts between two samples is
    missed, and a paused replica's /raft stalls a sample for its 2 s timeout:
    the counts are lower bounds."""

    def __init__(self, reps: ChaosReplicas) -> None:
        super().__init__(daemon=True)
        self.reps, self.fault = reps, "none"
        self.changes: Counter[str] = Counter()
        self.stop = threading.Event()
        self.log: list[str] = []
        self._last: tuple[int, int] | None = None
        self.died: str | None = None

    def run(self) -> None:
        try:
            self._watch()
        except BaseException:  # recorded: its counts would stop early, unnoticed
            self.died = traceback.format_exc()

    def _watch(self) -> None:
        while not self.stop.wait(0.2):
            holders = [(r.index, int(st["term"])) for r in self.reps.replicas
                       if r.alive() and (st := r.raft()) is not None and st.get("lease_valid")]
            if len(holders) != 1:
                continue
            if self._last is not None and holders[0] != self._last:
                self.changes[self.fault] += 1
                self.log.append(f"{time.time():.3f} leader {self._last} -> {holders[0]} "
                                f"under {self.fault}")
            self._last = holders[0]


class Nemesis(threading.Thread):
    """One fault at a time, each healed before the next (the majority stays reachable
    between faults, so jobs can finish): SIGKILL (random node, the leader, or the
    leader just after a batch's ledger file appeared, so the next batch is in
    flight), SIGSTOP/SIGCONT, SIGTERM+restart, and a partition of one node
    through the TCP proxies."""

    KINDS = (("kill", 2), ("kill-leader", 2), ("kill-leader-mid-batch", 3), ("pause", 2),
             ("pause-leader", 2), ("restart", 1), ("partition", 1), ("partition-leader", 2))
    #: The second nemesis of a trial (``overlap``): kills and pauses only (a partition
    #: heals every link), on a replica the first is not holding, so two faults overlap
    #: and the cluster may lose its quorum for a while.
    OVERLAP_KINDS = (("kill", 2), ("kill-leader", 1), ("pause", 2), ("pause-leader", 1))

    def __init__(self, reps: ChaosReplicas, rng: random.Random, faults: Counter[str],
                 ledger_count: Callable[[], int], watch: LeaderWatch | None = None, *,
                 busy: dict[int, str] | None = None, overlap: bool = False) -> None:
        super().__init__(daemon=True)
        self.reps, self.rng, self.faults, self.ledger_count = reps, rng, faults, ledger_count
        self.watch = watch
        self.stop = threading.Event()
        self.log: list[str] = []
        self.died: str | None = None
        self._woken = False
        #: replica index -> "first"/"second": which nemesis holds a fault on it now
        self.busy = busy if busy is not None else {}
        self.overlap = overlap
        self.me = "second" if overlap else "first"

    def _victim(self, leader: bool) -> int:
        free = [i for i in range(len(self.reps.replicas)) if i not in self.busy]
        if leader:
            r = self.reps.leader()
            if r is not None and r.index not in self.busy:
                return r.index
        return self.rng.choice(free or range(len(self.reps.replicas)))

    def _hold(self, i: int, seconds: float) -> None:
        """Mark replica ``i`` as held by this nemesis for ``seconds`` (or until stop);
        a fault the other nemesis holds at the same time is counted "simultaneous"."""
        self.busy[i] = self.me
        if any(who != self.me for who in list(self.busy.values())):
            self.faults["simultaneous"] += 1
            self._note(f"simultaneous with the other nemesis's fault: {dict(self.busy)}")
        try:
            self.stop.wait(seconds)
        finally:
            self.busy.pop(i, None)

    def _note(self, text: str) -> None:
        self.log.append(f"{time.time():.3f} {text}")

    def run(self) -> None:
        try:
            self._run()
        except BaseException:  # recorded: a dead nemesis fails the trial
            self.died = traceback.format_exc()

    def timed_pause(self, stop: threading.Event) -> None:
        """A replica that paused itself at its pause point (``paused-once`` names its
        pid): it stays stopped while another leader takes over and for a while
        after (or until ``stop``), then is woken. Counted as fault
        ``pause-at-<point>``. Called by :class:`PauseWaker` for the whole trial: the
        step may come after the chaos phase, when nothing else would wake it."""
        once = self.reps.workdir / "paused-once"
        if self._woken or not once.exists():
            return
        pid_text, _, point = once.read_text().partition(" ")
        if not pid_text.strip().isdigit():
            return  # being written
        pid = int(pid_text)
        state = ""
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state != "T":
            # The file is written just before the process stops itself: a live one
            # seen running may be about to stop (seed 19513: read in that window,
            # never woken). Only a file older than that gives up on it.
            with contextlib.suppress(OSError):
                if state not in ("", "Z") and time.time() - once.stat().st_mtime < 5.0:
                    return
            self._woken = True  # killed meanwhile, or woken by another fault's SIGCONT
            return
        kind = "pause-at-" + point.strip().split(":")[0]
        if self.watch is not None:
            self.watch.fault = kind
        self.faults[kind] += 1
        hold = self.rng.uniform(3.0, 10.0)
        self._note(f"{kind} pid {pid} ({point.strip()}) for {hold:.1f}s")
        stop.wait(hold)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        self._woken = True

    def _run(self) -> None:
        table = self.OVERLAP_KINDS if self.overlap else self.KINDS
        kinds = [k for k, _ in table]
        weights = [w for _, w in table]
        pace = (1.5, 5.0) if self.overlap else (0.3, 2.0)
        while not self.stop.wait(self.rng.uniform(*pace)):
            kind = self.rng.choices(kinds, weights)[0]
            hold = self.rng.uniform(0.5, 5.0)
            try:
                self._inject(kind, hold)
            except Exception as e:  # noted; a trial where no fault landed fails
                self._note(f"{kind} failed: {e!r}")

    def _inject(self, kind: str, hold: float) -> None:
        reps = self.reps
        if self.watch is not None and not self.overlap:
            self.watch.fault = kind if kind != "kill-leader-mid-batch" else "kill-leader"
        if kind == "kill-leader-mid-batch":
            i = self._victim(True)
            before = self.ledger_count()
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and self.ledger_count() == before:
                time.sleep(0.02)
            if self.ledger_count() == before:
                kind = "kill-leader"
            if self.watch is not None:
                self.watch.fault = kind
            reps.kill(i)
            self.faults[kind] += 1
            self._note(f"{kind} {i}; restart in {hold:.1f}s")
            self._hold(i, hold)
            reps.start(i)
        elif kind.startswith("kill"):
            i = self._victim(kind == "kill-leader")
            reps.kill(i)
            self.faults[kind] += 1
            self._note(f"{kind} {i}; restart in {hold:.1f}s")
            self._hold(i, hold)
            reps.start(i)
        elif kind.startswith("pause"):
            i = self._victim(kind == "pause-leader")
            reps.signal(i, signal.SIGSTOP)
            self.faults[kind] += 1
            self._note(f"{kind} {i} for {hold:.1f}s")
            self._hold(i, hold)
            reps.signal(i, signal.SIGCONT)
        elif kind == "restart":
            i = self._victim(False)
            reps.stop(i)
            self.faults[kind] += 1
            self._note(f"restart {i}")
            reps.start(i)
        elif kind.startswith("partition"):
            i = self._victim(kind == "partition-leader")
            reps.isolate(i)
            self.faults[kind] += 1
            self._note(f"{kind} {i} for {hold:.1f}s")
            self._hold(i, hold)
            reps.heal()

    def heal_all(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        if self.overlap:
            return  # the first nemesis heals everything
        if self.watch is not None:
            self.watch.fault = "after-chaos"  # the final jobs' changes are no fault's
        self.reps.heal()
        for r in self.reps.replicas:
            with contextlib.suppress(ProcessLookupError):
                if r.alive():
                    os.kill(r.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        self.reps.start()


class PauseWaker(threading.Thread):
    """Runs :meth:`Nemesis.timed_pause` from the start of the trial to its end."""

    def __init__(self, nemesis: Nemesis) -> None:
        super().__init__(daemon=True)
        self.nemesis, self.stop = nemesis, threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.wait(0.2):
                self.nemesis.timed_pause(self.stop)
        except BaseException:  # recorded: a dead waker fails the trial like the nemesis
            self.nemesis.died = traceback.format_exc()


# -- Kubernetes helpers -----------------------------------------------------------------


def _obj(kind: str, name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _status(shared: Shared, name: str, ns: str) -> dict[str, Any]:
    assert shared.kube is not None
    out = shared.kube.kubectl("get", CJ, name, "-n", ns, "-o", "json", check=False)
    return dict(json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}


def _wait_jobs(shared: Shared, names: list[str], ns: str, timeout: float) -> list[str]:
    """Wait until every job is terminal; return those that are not."""
    deadline, pending = time.monotonic() + timeout, list(names)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if _status(shared, n, ns).get("phase") not in TERMINAL]
        if pending:
            time.sleep(1.0)
    return pending


def _quiesce(shared: Shared, policies: list[str], ns: str, timeout: float) -> list[str]:
    """Suspend ``policies`` and wait until the leader reports each at rest: it writes
    the new generation as observed only once no run of the policy is active (a run
    stops between batches when its policy is suspended). Returns those not at rest."""
    assert shared.kube is not None
    for p in policies:
        shared.kube.kubectl("patch", "retentionpolicies.lethe.io", p, "-n", ns, "--type=merge",
                            "-p", '{"spec": {"suspend": true}}')
    deadline, pending = time.monotonic() + timeout, list(policies)
    while pending and time.monotonic() < deadline:
        left = []
        for p in pending:
            out = shared.kube.kubectl("get", "retentionpolicies.lethe.io", p, "-n", ns,
                                      "-o", "json", check=False)
            obj = json.loads(out.stdout) if out.returncode == 0 else {}
            st = obj.get("status") or {}
            rec = [c for c in st.get("conditions") or () if c.get("type") == "Reconciling"]
            if st.get("observedGeneration") != (obj.get("metadata") or {}).get("generation") \
                    or not rec or rec[0].get("status") != "False":
                left.append(p)
        pending = left
        if pending:
            time.sleep(1.0)
    return pending


# -- the trial --------------------------------------------------------------------------


def drop_bucket(client: Any, bucket: str) -> None:
    """Remove a passed trial's bucket with every version, marker and upload: moto keeps
    all in memory for the whole run, and a run of 40 trials grew it to 3.6 GB and a
    steady share of a core, which starved the replicas of later trials (session 12).
    Best effort: a bucket left behind costs memory, not a verdict."""
    try:
        items = [{"Key": v["Key"], "VersionId": v["VersionId"]}  # all first: deleting
                 for page in client.get_paginator("list_object_versions").paginate(
                     Bucket=bucket)  # while paging skips some
                 for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
        for i in range(0, len(items), 1000):  # DeleteObjects' limit
            client.delete_objects(Bucket=bucket,
                                  Delete={"Objects": items[i:i + 1000], "Quiet": True})
        for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        client.delete_bucket(Bucket=bucket)
    except Exception as e:  # cleanup only: never a trial's verdict
        print(f"    note: bucket {bucket} not removed: {e}", flush=True)


def _dump_stacks(reps: ChaosReplicas) -> None:
    """Each live replica writes every thread's stack into its log (the shim's
    faulthandler on SIGUSR1), and every TCP socket on the machine goes to
    ``sockets.txt``: the evidence a readiness timeout needs (10503, 10615: lethe-0's
    tick never ran, as if pysyncobj could not bind its Raft port, which it retries
    silently)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, timeout=20)
        (reps.workdir / "sockets.txt").write_text(out.stdout + out.stderr)
    for r in reps.replicas:
        if r.proc is not None and r.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.proc.pid, signal.SIGUSR1)
    time.sleep(1.0)


def run_trial(shared: Shared, seed: int, *, quick: bool, base: Path, keep: bool = False
              ) -> TrialResult:
    started = time.monotonic()
    faults: Counter[str] = Counter()
    workdir = base / f"trial-{seed}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    rng = random.Random(seed)
    ns = f"chaos-{seed}"
    data = workdir / "data"
    rec = TrialRecord(seed=seed, ns=ns, posix_root=data / "target", manifest_key="manifest.json",
                      posix_max_age=DAY, s3_bucket=f"chaos-{seed}-{uuid.uuid4().hex[:8]}",
                      s3_prefix="data/", s3_max_age=float(rng.choice([8, 15, 30])))
    rec.posix_root.mkdir(parents=True)
    sizes = Sizes.pick(rng, quick)
    # Half the trials on a versioned bucket (delete markers, noncurrent versions removed
    # after noncurrentVersionsMaxAge, lone markers), and each policy scheduled every
    # minute in half the trials, besides its CleanupJobs.
    rec.s3_versioned = rng.random() < 0.5
    rec.s3_noncurrent_max_age = float(rng.choice([5, 10, 20]))
    scheduled = {p: rng.random() < 0.5 for p in ("posix", "s3")}
    assert shared.kube is not None and shared.s3 is not None
    kube, client, lock = shared.kube, shared.s3.client(), threading.Lock()
    reps: ChaosReplicas | None = None
    writers: Writers | None = None
    consumer: Consumer | None = None
    nemesis: Nemesis | None = None
    second: Nemesis | None = None
    waker: PauseWaker | None = None
    watch: LeaderWatch | None = None
    proxy: S3Proxy | None = None
    verdict = Verdict()
    failures: list[str] = []
    try:
        old_posix = make_posix(rng, rec, sizes.posix_old)
        client.create_bucket(Bucket=rec.s3_bucket)
        if rec.s3_versioned:
            client.put_bucket_versioning(Bucket=rec.s3_bucket,
                                         VersioningConfiguration={"Status": "Enabled"})
        proxy = S3Proxy(upstream=shared.s3.endpoint, log=workdir / "s3-requests.jsonl")
        s3_old = [f"p{i % 5}/old-{i:05d}" for i in range(sizes.s3_old)] + \
                 [f"keep/k-{i:03d}" for i in range(20)]
        make_s3(rng, rec, client, s3_old, lock)
        # One pause timed to land on a side effect (issue #17): a delete rename, an
        # S3 delete request or a ledger write, at a random arrival.
        point = rng.choice(["rename", "s3-delete", "ledger"])
        nth = {"rename": rng.randint(1, 150), "s3-delete": rng.randint(1, 20),
               "ledger": rng.randint(1, 3)}[point]
        pause_at = f"{point}:{nth}"
        reps = new_replicas(shared, workdir / "ops", data_root=data, namespace=ns,
                            pause_at=pause_at)
        reps.start()
        try:
            reps.wait_ready(timeout=120)
        except TimeoutError:
            _dump_stacks(reps)
            raise
        reps.wait_leader(timeout=30)
        kube.kubectl("create", "namespace", ns, check=False)
        kube.kubectl("create", "secret", "generic", "s3", "-n", ns,
                     f"--from-literal=AWS_ACCESS_KEY_ID={shared.s3.access_key}",
                     f"--from-literal=AWS_SECRET_ACCESS_KEY={shared.s3.secret_key}")
        common = {"mode": "Enforce", "select": {"exclude": ["**/keep/**"]},
                  "safety": {"maxDeletes": 1_000_000, "maxDeletePercent": 100,
                             "allowDeleteAll": True}}
        every = {p: {"schedule": "* * * * *"} if on else {} for p, on in scheduled.items()}
        kube.apply(_obj("RetentionPolicy", "posix", ns, {
            **common, **every["posix"], "target": {"posix": {"path": str(rec.posix_root)}},
            "rules": {"maxAge": "1d"}, "manifest": {"path": rec.manifest_key}}))
        versions = {"noncurrentVersionsMaxAge": f"{int(rec.s3_noncurrent_max_age)}s"} \
            if rec.s3_versioned else {}
        kube.apply(_obj("RetentionPolicy", "s3", ns, {
            **common, **every["s3"], "rules": {"maxAge": f"{int(rec.s3_max_age)}s"},
            "target": {"s3": {"bucket": rec.s3_bucket, "prefix": rec.s3_prefix,
                              "endpoint": proxy.endpoint, "region": "us-east-1",
                              "forcePathStyle": True, "credentialsSecretRef": {"name": "s3"},
                              **versions}}}))
        make_s3(rng, rec, client, [f"p{i % 5}/young-{i:04d}" for i in range(60)], lock)

        writers = Writers(rec, seed, old_posix, s3_old, client, lock)
        consumer = Consumer(rec, sorted(rec.posix_population))
        watch = LeaderWatch(reps)
        watch.start()
        nemesis = Nemesis(reps, random.Random(seed * 7919), faults,
                          lambda: _ledger_files(rec.posix_root), watch)
        nemesis._note(f"timed pause armed at {pause_at}; s3 "
                      f"{'versioned' if rec.s3_versioned else 'unversioned'}; scheduled "
                      f"{sorted(p for p, on in scheduled.items() if on) or 'none'}")
        second = Nemesis(reps, random.Random(seed * 7919 + 1), faults,
                         lambda: _ledger_files(rec.posix_root), busy=nemesis.busy,
                         overlap=True)
        waker = PauseWaker(nemesis)
        waker.start()
        writers.start()
        consumer.start()
        jobs: list[str] = []

        def submit(name: str, policy: str) -> None:
            kube.apply(_obj("CleanupJob", name, ns, {"policyRef": {"name": policy},
                                                     "mode": "Enforce"}))
            rec.jobs.append(JobRecord(name=name, policy=policy, created=time.time()))
            jobs.append(name)

        submit("posix-1", "posix")
        submit("s3-1", "s3")
        nemesis.start()
        second.start()
        time.sleep(sizes.chaos_seconds / 2)
        submit("posix-2", "posix")
        submit("s3-2", "s3")
        time.sleep(sizes.chaos_seconds / 2)
        second.heal_all()
        nemesis.heal_all()
        writers.join()
        unfinished = _wait_jobs(shared, jobs, ns, timeout=120)
        for n in unfinished:
            verdict.add(5, "job-not-finished", f"{n} not terminal 120 s after healing: "
                        f"{_status(shared, n, ns)}")
        consumer.stop.set()
        consumer.join(timeout=5)
        reps.wait_ready(timeout=90)
        for name, policy in (("posix-final", "posix"), ("s3-final", "s3")):
            rec.final_jobs_created[policy] = time.time()
            submit(name, policy)
        for n in _wait_jobs(shared, ["posix-final", "s3-final"], ns, timeout=120):
            verdict.add(2, "final-job-not-finished", f"{n}: {_status(shared, n, ns)}")
        if any(scheduled.values()):
            # A scheduled run may still be deleting: the checks need storage at rest.
            busy = _quiesce(shared, [p for p, on in scheduled.items() if on], ns, timeout=120)
            if busy:
                failures.append(f"scheduled runs of {busy} still active 120 s after "
                                "suspending their policies")
        for j in rec.jobs:
            j.status_first = _status(shared, j.name, ns)
        time.sleep(3)
        for j in rec.jobs:
            j.status_second = _status(shared, j.name, ns)
        rec.scheduled = scheduled_runs(reps.replicas[0].log_path.parent.parent)
        got = check(rec, s3=read_s3(client, rec, proxy.log), now=time.time())
        verdict.violations += got.violations
        verdict.notes += got.notes
        verdict.stats.update(got.stats)
        # Moments two faults were in force together: a statistic, not one more fault.
        verdict.stats["simultaneous"] = faults.pop("simultaneous", 0)
        verdict.stats["s3_versioned"] = int(rec.s3_versioned)
        failures += harness_failures(faults, writers, consumer, nemesis, sizes.chaos_seconds)
        if second.died is not None:
            failures.append(f"the second nemesis died:\n{second.died}")
        if watch is not None and watch.died is not None:
            failures.append(f"the leader watch died:\n{watch.died}")
        try:  # the trial ends with every replica alive and ready
            reps.wait_ready(timeout=60)
        except (RuntimeError, TimeoutError) as e:
            failures.append(f"replicas not all alive and ready at the end: {e}")
        verdict.notes += sorted(nemesis.log + second.log) \
            if verdict.violations or failures else []
        error = None
    except Exception:
        error = traceback.format_exc()
    finally:
        for t in (nemesis, second, waker, watch):
            if t is not None and t.is_alive():
                t.stop.set()
        if watch is not None:
            watch.join(timeout=5)
        if writers is not None:
            writers.join()
        if consumer is not None:
            consumer.stop.set()
        if reps is not None:
            reps.close()
        if proxy is not None:
            proxy.close()
        kube.kubectl("delete", "cleanupjobs.lethe.io,retentionpolicies.lethe.io", "--all",
                     "-n", ns, "--wait=false", check=False)
    kept = keep or error is not None or bool(verdict.violations) or bool(failures)
    if kept:
        (workdir / "record.txt").write_text(_dump(rec, verdict, failures))
        if watch is not None:  # faults and leader changes, interleaved in time
            events = sorted((nemesis.log if nemesis is not None else []) + watch.log
                            + (second.log if second is not None else []))
            (workdir / "leaders.txt").write_text("\n".join(events) + "\n")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        drop_bucket(client, rec.s3_bucket)
    return TrialResult(seed=seed, faults=faults, verdict=verdict,
                       seconds=time.monotonic() - started, error=error,
                       workdir=workdir if kept else None, failures=failures,
                       leader_changes=watch.changes if watch is not None else Counter())


def harness_failures(faults: Counter[str], writers: Writers, consumer: Consumer,
                     nemesis: Nemesis, chaos_seconds: float) -> list[str]:
    """Why a trial that found no violation still proves nothing: no fault landed, a
    writer, the consumer or the nemesis died, or a thread did fewer operations than
    its floor (``WRITER_FLOOR``/``CONSUMER_FLOOR`` per second of chaos)."""
    out: list[str] = []
    if not sum(faults.values()):
        out.append("no fault landed: " + ("; ".join(nemesis.log[-3:]) or "none injected"))
    for name, tb in sorted(writers.died.items()):
        out.append(f"writer {name} died:\n{tb}")
    for name, died in (("consumer", consumer.died), ("nemesis", nemesis.died)):
        if died is not None:
            out.append(f"{name} died:\n{died}")
    floor = int(WRITER_FLOOR * chaos_seconds)
    for name, n in sorted(writers.done.items()):
        if n < floor and name not in writers.died:
            out.append(f"writer {name} did {n} successful operations, floor {floor}")
    floor = int(CONSUMER_FLOOR * chaos_seconds)
    if consumer.rec.consumer_checks < floor and consumer.died is None:
        out.append(f"consumer made {consumer.rec.consumer_checks} manifest checks, "
                   f"floor {floor}")
    return out


_STARTING = re.compile(r"^run (\S+) of (\S+) starting \(slot (\S+), mode ")


def scheduled_runs(ops: Path) -> dict[str, dict[str, set[str]]]:
    """Policy -> run id -> slots, from every replica's log under ``ops``: the leader logs
    "run R of P starting (slot S, mode M)" for scheduled runs (slot None on a resume;
    CleanupJob runs log "of CleanupJob ns/name" instead)."""
    out: dict[str, dict[str, set[str]]] = {}
    for log in sorted(ops.rglob("operator.log")):
        for raw in log.read_text(errors="replace").splitlines():
            if "starting (slot" not in raw:
                continue
            with contextlib.suppress(ValueError):
                m = _STARTING.match(str(json.loads(raw).get("message", "")))
                if m and m[3] != "None":
                    out.setdefault(m[2], {}).setdefault(m[1], set()).add(m[3])
                elif m:
                    out.setdefault(m[2], {}).setdefault(m[1], set())
    return out


def _ledger_files(root: Path) -> int:
    base = root / ".lethe" / "ledger"
    return sum(len(files) for _d, _s, files in os.walk(base))


def _dump(rec: TrialRecord, verdict: Verdict, failures: list[str]) -> str:
    lines = [f"seed {rec.seed} ns {rec.ns} bucket {rec.s3_bucket} s3 maxAge {rec.s3_max_age}"]
    lines += [f"FAILED: {f}" for f in failures]
    lines += [str(v) for v in verdict.violations] + verdict.notes
    lines += [f"job {j.name}: {json.dumps(j.status_first, sort_keys=True)}" for j in rec.jobs]
    lines += [f"posix-op {o}" for o in rec.posix_ops]
    lines += [f"s3-op {o}" for o in rec.s3_ops]
    return "\n".join(lines) + "\n"
