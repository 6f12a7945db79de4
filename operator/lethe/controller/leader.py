"""The leader's loop: schedule runs, resume interrupted ones, report status.

Every replica keeps an :class:`Inventory` of both kinds (fed by kopf watches)
so a new leader starts warm; only a node whose journal lease is valid gets
past the first line of :meth:`Leader.tick`, and every API write re-checks it
(:mod:`lethe.controller.kube`). Runs execute in worker threads, one per
policy at a time; the journal's compare-and-set on slot and job makes each
scheduled slot and each CleanupJob run at most once across failovers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions
from kubernetes.client.rest import ApiException

from lethe.controller import schedule, status
from lethe.controller.config import OperatorConfig
from lethe.controller.kube import (
    KubeWriter,
    NotAllowed,
    SecretForbidden,
    api_forbidden,
    api_unavailable,
)
from lethe.controller.tenancy import check_target
from lethe.journal import (
    CompleteBatch,
    FinishRun,
    Journal,
    JournalError,
    JournalState,
    RunRecord,
    SkipSlot,
)
from lethe.logs import run_context
from lethe.metrics import Metrics
from lethe.runner.execute import LostLeadership, Runner, RunReport, new_run_id
from lethe.spec import Policy, S3Target, SpecError, parse_spec
from lethe.storage.base import Storage
from lethe.storage.factory import open_storage

__all__ = ["ACK_ANNOTATION", "Inventory", "Leader"]

log = logging.getLogger("lethe.leader")

ACK_ANNOTATION = "lethe.io/acknowledge-run"
PROGRESS_INTERVAL = 3.0  # seconds between progress patches of a CleanupJob
RETRY_SECONDS = 30.0  # before resuming a run that stopped on an error
#: Before a new attempt at a run that could not start (target unreachable, access
#: denied …); each attempt costs requests to the target, an event and status writes.
START_RETRY_SECONDS = 10.0
#: A scheduled run writes its "in progress" status (Reconciling) only once it has
#: run this long: a run on a small target ends sooner, and its final status is
#: what a reader sees anyway. One status write (and its watch event on every
#: replica) less per short run; issue 16 item 5.
ANNOUNCE_AFTER = 2.0
#: How long a tick reuses a policy's target check (I10: it resolves the path, a
#: round trip per component on NFS, for every policy every tick). A run always
#: checks again just before it starts.
TARGET_RECHECK_SECONDS = 30.0
#: How often a running run reads its object from the API server instead of
#: trusting the watch alone (see Leader._cancelled): an edit, suspend or deletion
#: stops it within about this long plus one batch, however late the watch is.
FRESH_READ_SECONDS = 1.0
#: A CleanupJob whose policy this replica has not seen waits quietly this long
#: before it says so: a policy and a job applied together arrive through two
#: watches, in either order.
POLICY_GRACE_SECONDS = 10.0


class Inventory:
    """Both kinds as last seen by this replica's watch; thread-safe copies out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.synced = threading.Event()

    def put(self, kind: str, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        with self._lock:
            self._objs[(kind, meta["namespace"], meta["name"])] = json.loads(json.dumps(body))

    def remove(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._objs.pop((kind, namespace, name), None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objs.get((kind, namespace, name))

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [v for (k, _, _), v in sorted(self._objs.items()) if k == kind]

    def identities(self) -> set[tuple[str, str, str]]:
        """(kind, namespace, name) of every object."""
        with self._lock:
            return set(self._objs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objs)


def _ts(value: str | None) -> float:
    if not value:
        return time.time()
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


@dataclass(slots=True)
class _Parsed:
    """A spec as parsed once (until it changes) and its target as last checked."""
    text: str  # the spec's canonical JSON: a different one is parsed again
    policy: Policy | None
    invalid: str  # the SpecError's text when policy is None
    not_allowed: str | None = None
    checked: float = float("-inf")


@dataclass(slots=True)
class _Active:
    future: Future[None]
    kind: str
    namespace: str
    name: str
    generation: int
    term: int  # the Raft term it started in


class Stopping(Exception):
    """The replica is shutting down; raised where a tick would start a run."""


class Leader:
    def __init__(self, *, config: OperatorConfig, journal: Journal, inventory: Inventory,
                 writer: KubeWriter, metrics: Metrics, clock: Callable[[], float] = time.time,
                 storage_factory: Callable[..., Storage] = open_storage) -> None:
        self.config = config
        self.journal = journal
        self.inventory = inventory
        self.writer = writer
        self.metrics = metrics
        self.clock = clock
        self.storage_factory = storage_factory
        self.pool = ThreadPoolExecutor(max_workers=config.concurrent_runs,
                                       thread_name_prefix="lethe-run")
        #: Held while a run is submitted and while the pool is closed: a tick still in
        #: progress at shutdown then stops quietly instead of failing on the pool.
        self._submitting = threading.Lock()
        self._closed = False
        self._active: dict[str, _Active] = {}  # policy key -> running thread
        self._written: dict[tuple[str, str, str], str] = {}  # what we last patched
        #: A run that stopped on an error stays active in the journal; resume it only
        #: after a pause, not every tick.
        self._retry_after: dict[str, float] = {}
        #: Policy key -> no new attempt before this time: its last run could not start.
        self._start_after: dict[str, float] = {}
        #: The journal as of this tick's start: once per tick, not once per object
        #: (the journal's CAS guards every start anyway).
        self._state = JournalState()
        # Per-tick work is per object: parse a spec once per version and compute a
        # schedule's next slot once per slot, not every tick (issue 16 item 5).
        self._parsed: dict[tuple[str, str, str], _Parsed] = {}
        #: Policy key -> (the inputs of due_slot but now, the first slot after them).
        self._next_slot: dict[str, tuple[tuple[str, str, str | None, float], float]] = {}
        #: Policy key -> the run whose final status this leader wrote last: until the
        #: watch shows it, the inventory's status is older than what the API holds.
        self._reported: dict[str, str] = {}

    # -- the loop --------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.config.tick_seconds):
            try:
                self.tick()
            except (NotAllowed, Stopping):
                pass
            except Exception as e:  # e.g. resuming an interrupted run
                if api_unavailable(e):
                    log.warning("leader tick: API server unavailable (%s); retrying next tick",
                                _brief(e))
                elif (why := api_forbidden(e)) is not None:
                    log.error("leader tick: %s; retrying next tick", why)
                else:
                    log.exception("leader tick failed; retrying next tick")

    def tick(self) -> None:
        if not self.journal.lease_valid() or not self.inventory.synced.is_set():
            self._written.clear()  # a future term re-asserts status from scratch
            return
        self._state = self.journal.read()
        self._prune_caches()
        for key, act in list(self._active.items()):
            if act.future.done():
                del self._active[key]
                # Still active in the journal: it stopped on an error, so pause before
                # resuming it; unless leadership changed since it started (it stopped
                # for that), then it resumes now, wherever leadership went.
                if key in self._state.runs and act.term == self.journal.current_term():
                    self._retry_after[key] = self.clock() + RETRY_SECONDS
        self._resume_interrupted()
        # One object's failure (a 403, a bad status) must not starve the others.
        for kind, reconcile in (("RetentionPolicy", self._reconcile_policy),
                                ("CleanupJob", self._reconcile_job)):
            for obj in self.inventory.all(kind):
                try:
                    reconcile(obj)
                except (NotAllowed, Stopping):
                    return
                except Exception as e:
                    meta = obj.get("metadata", {})
                    if api_unavailable(e):  # waited out, not a bug: no traceback per tick
                        log.warning("reconciling %s %s/%s: API server unavailable (%s); "
                                    "retrying next tick", kind, meta.get("namespace"),
                                    meta.get("name"), _brief(e))
                        continue
                    if (why := api_forbidden(e)) is not None:
                        log.error("reconciling %s %s/%s: %s; retrying next tick", kind,
                                  meta.get("namespace"), meta.get("name"), why)
                        continue
                    log.exception("reconciling %s %s/%s failed; retrying next tick", kind,
                                  meta.get("namespace"), meta.get("name"))

    def close(self) -> None:
        """Start no more runs (shutdown). Runs in flight are not waited for: each stops
        at its next lease check, and the journal resumes it on the next leader."""
        with self._submitting:
            self._closed = True
            self.pool.shutdown(wait=False, cancel_futures=True)

    # -- helpers ---------------------------------------------------------------------

    def _submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        """Start ``fn(*args)`` on a run thread.

        :raises Stopping: after :meth:`close`; the tick that asked ends there.
        """
        with self._submitting:
            if self._closed:
                raise Stopping("the replica is stopping: no new runs")
            return self.pool.submit(_logged(fn), *args)

    def _prune_caches(self) -> None:
        """Forget objects that are gone (a cache entry per object ever seen would grow
        without end with CleanupJobs' inline policies)."""
        if len(self._parsed) + len(self._next_slot) < 2 * len(self.inventory) + 100:
            return
        keep = self.inventory.identities()
        self._parsed = {i: v for i, v in self._parsed.items()
                        if ("RetentionPolicy", i[0], i[1]) in keep
                        or ("CleanupJob", i[0], i[1].removeprefix("cleanupjob:")) in keep}
        self._next_slot = {k: v for k, v in self._next_slot.items()
                           if ("RetentionPolicy", *k.split("/", 1)) in keep}

    def _patch(self, kind: str, obj: Mapping[str, Any], st: dict[str, Any]) -> None:
        meta = obj["metadata"]
        ident = (kind, meta["namespace"], meta["name"])
        st = {**st, "leader": self.config.pod_name} if kind == "RetentionPolicy" else st
        # As the object will show it: a merge patch's nulls remove fields, so a status
        # rebuilt from the object compares equal to the one written.
        blob = json.dumps(_without_nulls(st), sort_keys=True, default=str)
        if self._written.get(ident) == blob:
            return
        # Only write when it changes what the object shows (conditions' times aside).
        self.writer.patch_status(kind=kind, namespace=meta["namespace"], name=meta["name"],
                                 status=st)
        self._written[ident] = blob

    def _patch_run_status(self, kind: str, obj: Mapping[str, Any], st: dict[str, Any]) -> None:
        """A run's own status writes must not stop the run: the API server carries the
        status, not the run. If it cannot take one now, the run goes on; a later tick
        writes a job's result from the journal (see :meth:`_reconcile_job`)."""
        try:
            self._patch(kind, obj, st)
        except Exception as e:
            if not api_unavailable(e):
                raise
            meta = obj["metadata"]
            log.warning("status of %s %s/%s not written, the run goes on: API server "
                        "unavailable (%s)", kind, meta["namespace"], meta["name"], _brief(e))

    def _credentials(self, policy: Policy) -> tuple[str, str] | None:
        t = policy.target
        if not isinstance(t, S3Target) or t.credentialsSecretRef is None:
            return None
        ref = t.credentialsSecretRef
        try:
            data = self.writer.read_secret(namespace=policy.namespace, name=ref.name)
        except SecretForbidden as e:
            raise _Stall("CredentialsForbidden", str(e)) from e
        if data is None or ref.accessKeyIdKey not in data or ref.secretAccessKeyKey not in data:
            raise _Stall("CredentialsMissing",
                         f"Secret {policy.namespace}/{ref.name} (spec.target.s3."
                         f"credentialsSecretRef) is missing or lacks the keys "
                         f"{ref.accessKeyIdKey} and {ref.secretAccessKeyKey}")
        return data[ref.accessKeyIdKey], data[ref.secretAccessKeyKey]

    def _policy_of(self, obj: Mapping[str, Any]) -> Policy:
        meta = obj["metadata"]
        return self._checked(obj.get("spec"), name=meta["name"], namespace=meta["namespace"])

    def _checked(self, raw: Any, *, name: str, namespace: str, path: str = "spec") -> Policy:
        """Parse a spec and check its target against the installation (I10).

        Each version of a spec is parsed once and its target checked at most every
        :data:`TARGET_RECHECK_SECONDS`; :meth:`_execute` checks the target again
        right before a run. Raises :class:`_Stall` (``InvalidSpec``,
        ``TargetNotAllowed``)."""
        ident = (namespace, name, path)
        text = json.dumps(raw, sort_keys=True, default=str)
        hit = self._parsed.get(ident)
        if hit is None or hit.text != text:
            try:
                hit = _Parsed(text, parse_spec(raw, name=name, namespace=namespace,
                                               path=path), "")
            except SpecError as e:
                hit = _Parsed(text, None, str(e))
            self._parsed[ident] = hit
        if hit.policy is None:
            raise _Stall("InvalidSpec", hit.invalid)
        now = self.clock()
        if now - hit.checked >= TARGET_RECHECK_SECONDS or now < hit.checked:
            hit.not_allowed = check_target(policy=hit.policy, config=self.config)
            hit.checked = now
        if hit.not_allowed:
            raise _Stall("TargetNotAllowed", hit.not_allowed)
        return hit.policy

    # -- RetentionPolicy -------------------------------------------------------------

    def _reconcile_policy(self, obj: dict[str, Any]) -> None:
        meta, st = obj["metadata"], obj.get("status") or {}
        key = f"{meta['namespace']}/{meta['name']}"
        gen = int(meta.get("generation", 1))
        now = self.clock()
        if key in self._active or key in self._state.runs:
            # Its run (running, or waiting to be resumed) owns the status until it ends:
            # observedGeneration stays the generation that run began under.
            return
        base = {k: st[k] for k in ("lastRun", "lastPlan", "eligible", "oldestEligibleAge",
                                   "stalledRun", "missedSlots") if k in st}
        # A run's own report is lost if its leader dies or loses its lease between
        # FinishRun and that status write (or the run was closed by a later leader):
        # the journal still has the run, so report it from there (as for CleanupJobs).
        since = _ts(meta.get("creationTimestamp"))
        rec = next((r for r in reversed(self._state.history.get(key, ()))
                    if r.job is None and r.started >= since), None)
        if rec is not None and rec.run_id > str((base.get("lastRun") or {}).get("id", "")):
            if self._reported.get(key) == rec.run_id:
                return  # written by this leader, not yet seen by the watch: wait for it
            base["lastRun"] = _record_summary(rec)
        try:
            policy = self._policy_of(obj)
        except _Stall as s:
            self._patch("RetentionPolicy", obj, {**base, "observedGeneration": gen,
                        "nextRunTime": None, "conditions": status.conditions(
                            previous=st.get("conditions"), generation=gen, now=now,
                            stalled=(s.reason, s.message))})
            return
        stalled = st.get("stalledRun") or {}
        ack = (meta.get("annotations") or {}).get(ACK_ANNOTATION)
        if stalled and stalled.get("generation") == gen and ack != stalled.get("id"):
            # A tripped brake holds until a person acknowledges the run or edits the spec.
            self._patch("RetentionPolicy", obj, {**base, "observedGeneration": gen,
                        "nextRunTime": None, "conditions": status.conditions(
                            previous=st.get("conditions"), generation=gen, now=now,
                            stalled=("SafetyBrake", _brake_message(
                                str(stalled.get("message", "")), str(stalled.get("id", "")))))})
            return
        if stalled and ack == stalled.get("id") and stalled.get("generation") == gen:
            self._start(obj, policy, slot=None, waive_brakes=True)
            return
        if policy.suspend or not policy.schedule:
            reason = "Suspended" if policy.suspend else "NoSchedule"
            self._patch("RetentionPolicy", obj, {**base, "observedGeneration": gen,
                        "nextRunTime": None, "conditions": status.conditions(
                            previous=st.get("conditions"), generation=gen, now=now,
                            ready_reason=reason, ready_message=(
                                "spec.suspend is true" if policy.suspend else
                                "no spec.schedule: runs only through CleanupJobs"))})
            return
        inputs = (policy.schedule, policy.timeZone, self._state.last_slot.get(key), since)
        known = self._next_slot.get(key)
        if known is not None and known[0] == inputs and now < known[1]:
            due = schedule.Due(slot=None, missed=0)  # no slot since the last: none due
        else:
            due = schedule.due_slot(schedule=policy.schedule, tz=policy.timeZone, now=now,
                                    last_slot=inputs[2], since=since,
                                    deadline=self.config.starting_deadline)
            known = None
        if due.missed and due.last_missed:
            self.metrics.missed_schedules.labels(namespace=policy.namespace,
                                                 policy=policy.name).inc(due.missed)
            base["missedSlots"] = int(base.get("missedSlots", 0)) + due.missed
            base["lastMissedSlot"] = due.last_missed
            if due.slot is None:
                try:
                    self.journal.commit(SkipSlot(policy=key, slot=due.last_missed,
                                                 term=self.journal.current_term()))
                except JournalError as e:
                    log.info("could not record missed slot of %s: %s", key, e)
        if due.slot is not None:
            if self.clock() >= self._start_after.get(key, 0.0):
                self._start(obj, policy, slot=due.slot, extra=base)
            return
        missed = _missed_text(base)
        if known is None:
            # No slot in (last slot, now]: the next one after now is the next after those.
            nxt = schedule.next_run(schedule=policy.schedule, tz=policy.timeZone, now=now)
            if not due.missed:
                self._next_slot[key] = (inputs, nxt.timestamp())
        else:
            nxt = dt.datetime.fromtimestamp(known[1], dt.UTC)
        prev = [c for c in st.get("conditions") or () if c.get("type") == "Ready"]
        self._patch("RetentionPolicy", obj, {**base, "observedGeneration": gen,
                    "nextRunTime": schedule.slot_id(nxt), "conditions": status.conditions(
                        previous=st.get("conditions"), generation=gen, now=now,
                        ready_reason=prev[0].get("reason", "Scheduled") if prev and
                        prev[0].get("status") == "True" else "Scheduled",
                        ready_message=_ready_message(base.get("lastRun"), nxt),
                        missed=missed)})

    def _start(self, obj: dict[str, Any], policy: Policy, *, slot: str | None,
               waive_brakes: bool = False, extra: Mapping[str, Any] | None = None,
               generation: int | None = None) -> None:
        """Run (or resume) the policy. ``generation`` is the one the run belongs to: a
        resumed run's may be older than the object's, and then it only stops."""
        key = f"{policy.namespace}/{policy.name}"
        gen = generation or int(obj["metadata"].get("generation", 1))
        fut = self._submit(self._policy_run, obj, policy, slot, waive_brakes,
                           dict(extra or {}), gen)
        self._active[key] = _Active(future=fut, kind="RetentionPolicy",
                                    namespace=policy.namespace, name=policy.name, generation=gen,
                                    term=self.journal.current_term())

    def _cancelled(self, kind: str, namespace: str, name: str, generation: int
                   ) -> Callable[[], bool]:
        """A run stops between batches when its object is deleted, edited or suspended.

        The watch usually tells first. Under load it can lag by seconds while
        batches go on deleting by the old spec, so a run that lasts also reads the
        object from the API server, at most once per ``FRESH_READ_SECONDS``
        (never for a run shorter than that). A failed read leaves it to the watch.
        """
        def ended(cur: Mapping[str, Any] | None) -> bool:
            if cur is None or int(cur["metadata"].get("generation", 1)) != generation:
                return True
            return bool((cur.get("spec") or {}).get("suspend"))

        next_read = time.monotonic() + FRESH_READ_SECONDS

        def check() -> bool:  # the run's own thread only
            nonlocal next_read
            if ended(self.inventory.get(kind, namespace, name)):
                return True
            now = time.monotonic()
            if now < next_read:
                return False
            next_read = now + FRESH_READ_SECONDS
            try:
                return ended(self.writer.read_object(kind=kind, namespace=namespace,
                                                     name=name))
            except (ApiException, urllib3.exceptions.HTTPError) as e:
                log.info("could not read %s %s/%s (the watch still decides): %s", kind,
                         namespace, name, _brief(e))
                return False
        return check

    def _execute(self, *, policy: Policy, run_id: str, mode: str | None, slot: str | None,
                 job: str | None, waive_brakes: bool, cancelled: Callable[[], bool],
                 progress: Callable[[dict[str, Any]], None] | None = None) -> RunReport:
        # I10 at the moment it counts: the tick's check may be TARGET_RECHECK_SECONDS old.
        reason = check_target(policy=policy, config=self.config)
        if reason:
            raise _Stall("TargetNotAllowed", reason)
        storage = self.storage_factory(policy.target, credentials=self._credentials(policy))
        try:
            runner = Runner(policy=policy, storage=storage, journal=self.journal,
                            cancelled=cancelled, progress=progress,
                            spool_dir=self.config.data_dir)
            report = runner.run(run_id=run_id, mode=mode, slot=slot, job=job,
                                waive_brakes=waive_brakes)
        finally:
            storage.close()
        if report.ended == 0.0:  # not started: do not try again at every tick
            self._start_after[f"{policy.namespace}/{policy.name}"] = \
                self.clock() + START_RETRY_SECONDS
        return report

    def _policy_run(self, obj: dict[str, Any], policy: Policy, slot: str | None,
                    waive_brakes: bool, base: dict[str, Any], gen: int) -> None:
        run_id = new_run_id()
        active = self.journal.read().runs.get(f"{policy.namespace}/{policy.name}")
        if active is not None:
            run_id = active.run_id
        with run_context(run_id=run_id, policy=policy.name, namespace=policy.namespace):
            log.info("run %s of %s starting (slot %s, mode %s)", run_id, policy.name, slot,
                     policy.mode)
            prev = (obj.get("status") or {}).get("conditions")
            base.pop("stalledRun", None) if waive_brakes else None

            def in_progress() -> None:
                self._patch("RetentionPolicy", obj, {**base, "observedGeneration": gen,
                            "conditions": status.conditions(
                                previous=prev, generation=gen, now=self.clock(),
                                reconciling=f"run {run_id} in progress")})

            # A resumed or acknowledged run, or one whose generation the status does not
            # show yet, writes it now: a resume after a failover reads the generation
            # the run began under from status.observedGeneration (_run_generation).
            deferred = slot is not None and not waive_brakes and active is None and \
                (obj.get("status") or {}).get("observedGeneration") == gen
            announce = None
            try:
                if deferred:
                    announce = _Once(in_progress, delay=ANNOUNCE_AFTER, what=f"run {run_id}")
                else:
                    in_progress()
                self.writer.event(obj=obj, reason="RunStarted",
                                  message=f"run {run_id} started ({policy.mode})")
                try:
                    report = self._execute(
                        policy=policy, run_id=run_id, mode=None, slot=slot, job=None,
                        waive_brakes=waive_brakes,
                        cancelled=self._cancelled("RetentionPolicy", policy.namespace,
                                                  policy.name, gen))
                finally:
                    if announce is not None:
                        announce.cancel()  # waits for a write in progress: ours comes after
            except _Stall as s:
                self._patch("RetentionPolicy", obj, {**base, "observedGeneration": gen,
                            "conditions": status.conditions(previous=prev, generation=gen,
                                                            now=self.clock(),
                                                            stalled=(s.reason, s.message))})
                self.writer.event(obj=obj, reason=s.reason, message=s.message, warning=True)
                return
            except (LostLeadership, NotAllowed) as e:
                log.warning("run %s stopped: %s", run_id, e)
                return
            except JournalError as e:
                log.info("run of %s not started: %s", policy.name, e)
                return
            self._report_policy(obj, policy, report, base)

    def _report_policy(self, obj: dict[str, Any], policy: Policy, report: RunReport,
                       base: dict[str, Any]) -> None:
        gen = int(obj["metadata"].get("generation", 1))
        r = report.as_dict()
        plan = r.get("plan") or {}
        eligible = max(0, r["matched"] - r["deleted"]) if report.mode == "Enforce" \
            else r["matched"]
        oldest = plan.get("oldestEligibleAgeSeconds")
        self.metrics.observe_run(namespace=policy.namespace, policy=policy.name,
                                 result=report.result, seconds=max(0.0, report.ended -
                                                                   report.started),
                                 counters=_metric_counters(report), eligible=eligible,
                                 oldest_age=oldest if eligible else 0)
        st: dict[str, Any] = {**base, "observedGeneration": gen,
                              "lastRun": status.run_summary(r), "eligible": eligible,
                              "oldestEligibleAge": f"{int(oldest)}s" if oldest and eligible
                              else None,
                              "lastPlan": _plan_status(plan)}
        nxt: dt.datetime | None = None
        if policy.schedule and not policy.suspend:
            # The slot just run is no longer next: a reader must never see a
            # nextRunTime older than lastRun.
            nxt = schedule.next_run(schedule=policy.schedule, tz=policy.timeZone,
                                    now=max(self.clock(), report.ended))
            st["nextRunTime"] = schedule.slot_id(nxt)
        stalled = None
        if report.reason == "SafetyBrake":
            self.metrics.brake_trips.labels(namespace=policy.namespace,
                                            policy=policy.name).inc()
            st["stalledRun"] = {"id": report.run_id, "generation": gen,
                                "message": report.message}
            stalled = ("SafetyBrake", _brake_message(report.message or "", report.run_id))
            self.writer.event(obj=obj, reason="SafetyBrake", message=stalled[1], warning=True)
        elif report.result not in ("Succeeded", "Planned", "Aborted"):
            stalled = (report.reason or "RunFailed", report.message or report.result)
            self.writer.event(obj=obj, reason=report.reason or "RunFailed",
                              message=report.message or report.result, warning=True)
        else:
            st["stalledRun"] = None
            self.writer.event(obj=obj, reason="RunFinished", message=(
                f"run {report.run_id} {report.result}: deleted {r['deleted']}, "
                f"eligible {eligible}, {_skipped_text(r)}, errors {r['errors']}"))
        st["conditions"] = status.conditions(
            previous=(obj.get("status") or {}).get("conditions"), generation=gen,
            now=self.clock(), stalled=stalled, ready_reason=report.result,
            # The next tick's message for the same status (one write, not two).
            ready_message=_ready_message(st["lastRun"], nxt), missed=_missed_text(base))
        cur = self.inventory.get("RetentionPolicy", policy.namespace, policy.name) or obj
        self._patch("RetentionPolicy", cur, st)
        self._reported[f"{policy.namespace}/{policy.name}"] = report.run_id

    # -- CleanupJob ------------------------------------------------------------------

    def _job_policy(self, obj: Mapping[str, Any]) -> Policy:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        ref = spec.get("policyRef")
        if ref:
            pol = self.inventory.get("RetentionPolicy", meta["namespace"], ref.get("name", ""))
            if pol is None:
                raise _Stall("PolicyNotFound", f"spec.policyRef: RetentionPolicy "
                             f"{meta['namespace']}/{ref.get('name')} does not exist")
            return self._policy_of(pol)
        return self._checked(spec.get("policy"), name=f"cleanupjob:{meta['name']}",
                             namespace=meta["namespace"], path="spec.policy")

    def _reconcile_job(self, obj: dict[str, Any]) -> None:
        meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        uid, gen, now = meta["uid"], int(meta.get("generation", 1)), self.clock()
        phase = st.get("phase")
        if phase in ("Succeeded", "Failed"):
            ttl = spec.get("ttlSecondsAfterFinished")
            done = st.get("completionTime")
            if ttl is not None and done and _ts(done) + ttl <= now:
                self.writer.delete(kind="CleanupJob", namespace=meta["namespace"],
                                   name=meta["name"])
            return
        record = self._state.jobs.get(uid)
        if record is not None:
            # It ran (exactly once); only its final status patch was lost.
            self._patch("CleanupJob", obj, self._job_final(obj, record.run_id, record.result,
                                                           dict(record.counters),
                                                           record.message, record.ended))
            return
        try:
            policy = self._job_policy(obj)
        except _Stall as s:
            if s.reason == "PolicyNotFound":
                self._job_waits(obj, s)
                return
            self._patch("CleanupJob", obj, {
                "phase": "Failed", "observedGeneration": gen, "completionTime": status.iso(now),
                "conditions": status.conditions(previous=st.get("conditions"), generation=gen,
                                                now=now, stalled=(s.reason, s.message))})
            self.writer.event(obj=obj, reason=s.reason, message=s.message, warning=True)
            return
        key = f"{policy.namespace}/{policy.name}"
        if key in self._active or self.clock() < self._start_after.get(key, 0.0):
            return  # one run per policy at a time; a run that could not start waits
        active = self._state.runs.get(key)
        if active is not None and active.job != uid:
            return  # another job's or a scheduled run: _job_run would adopt its run id
        fut = self._submit(self._job_run, obj, policy)
        self._active[key] = _Active(future=fut, kind="CleanupJob", namespace=meta["namespace"],
                                    name=meta["name"], generation=gen,
                                    term=self.journal.current_term())

    def _job_waits(self, obj: Mapping[str, Any], stall: _Stall) -> None:
        """A job whose ``policyRef`` names no policy (yet) waits for it, as a Pod
        waits for a ConfigMap it mounts: ``Pending`` with ``Stalled``, and it starts
        once the policy exists. Failing it would make ``kubectl apply -f`` of a
        policy and a job, or a GitOps sync that creates the job first, fail at
        random: the two kinds reach the leader through two watches, in no order."""
        meta, st = obj["metadata"], obj.get("status") or {}
        now = self.clock()
        if now - _ts(meta.get("creationTimestamp")) < POLICY_GRACE_SECONDS:
            return
        gen = int(meta.get("generation", 1))
        ident = ("CleanupJob", meta["namespace"], meta["name"])
        before = self._written.get(ident)
        message = f"{stall.message}; the job starts when it does"
        self._patch("CleanupJob", obj, {
            "phase": "Pending", "observedGeneration": gen,
            "conditions": status.conditions(previous=st.get("conditions"), generation=gen,
                                            now=now, stalled=(stall.reason, message))})
        if self._written.get(ident) != before:
            self.writer.event(obj=obj, reason=stall.reason, message=message, warning=True)

    def _job_final(self, obj: Mapping[str, Any], run_id: str, result: str,
                   counters: Mapping[str, int], message: str, ended: float) -> dict[str, Any]:
        gen = int(obj["metadata"].get("generation", 1))
        ok = result in ("Succeeded", "Planned")
        st = obj.get("status") or {}
        return {
            "phase": "Succeeded" if ok else "Failed", "runId": run_id,
            "observedGeneration": gen, "completionTime": status.iso(ended),
            "counters": {k: int(counters.get(k, 0)) for k in (
                "scanned", "matched", "deleted", "bytesFreed", "skippedChanged", "errors")},
            "progress": "done", "startTime": st.get("startTime") or status.iso(ended),
            "conditions": status.conditions(
                previous=st.get("conditions"), generation=gen, now=self.clock(),
                stalled=None if ok else (result, message or result),
                ready_reason=result, ready_message=message or f"run {run_id} {result}")}

    def _job_run(self, obj: dict[str, Any], policy: Policy) -> None:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        gen = int(meta.get("generation", 1))
        active = self.journal.read().runs.get(f"{policy.namespace}/{policy.name}")
        run_id = active.run_id if active is not None else new_run_id()
        # The run belongs to the job's generation and, with policyRef, the policy's
        # generation it began under (recorded in the job's status before BeginRun): an
        # edit or deletion of either stops it between batches, and a run resumed after
        # a failover under another spec only stops (I8: brakes are never skipped).
        if active is not None:
            gen = _run_generation(obj)
            policy_gen = (obj.get("status") or {}).get("policyGeneration")
        else:
            policy_gen = self._ref_generation(obj)
        mode = spec.get("mode", "Plan")
        last = [0.0]
        start = status.iso(self.clock())

        def progress(info: dict[str, Any]) -> None:
            if self.clock() - last[0] < PROGRESS_INTERVAL:
                return
            last[0] = self.clock()
            counters = {k: int(info.get(k, 0)) for k in ("scanned", "matched", "deleted",
                                                          "bytesFreed", "skippedChanged",
                                                          "errors")}
            self._patch_run_status("CleanupJob", obj, {
                "phase": "Running", "runId": run_id, "startTime": start,
                "observedGeneration": gen, "progress": f"{info.get('phase')}",
                "counters": counters})

        with run_context(run_id=run_id, policy=policy.name, namespace=policy.namespace):
            log.info("run %s of CleanupJob %s/%s starting (%s)", run_id, meta["namespace"],
                     meta["name"], mode)
            try:
                self._patch_run_status("CleanupJob", obj, {
                    "phase": "Running", "runId": run_id, "startTime": start,
                    "observedGeneration": gen, "progress": "planning",
                    "policyGeneration": policy_gen,
                    "conditions": status.conditions(
                        previous=(obj.get("status") or {}).get("conditions"), generation=gen,
                        now=self.clock(), reconciling=f"run {run_id} in progress")})
                self.writer.event(obj=obj, reason="RunStarted",
                                  message=f"run {run_id} started ({mode})")
                report = self._execute(
                    policy=policy, run_id=run_id, mode=mode, slot=None, job=meta["uid"],
                    waive_brakes=False, progress=progress,
                    cancelled=self._job_cancelled(obj, generation=gen,
                                                  policy_generation=policy_gen))
            except _Stall as s:
                now = self.clock()
                self._patch("CleanupJob", obj, {
                    "phase": "Failed", "observedGeneration": gen,
                    "completionTime": status.iso(now), "conditions": status.conditions(
                        previous=None, generation=gen, now=now, stalled=(s.reason, s.message))})
                self.writer.event(obj=obj, reason=s.reason, message=s.message, warning=True)
                return
            except (LostLeadership, NotAllowed, JournalError) as e:
                log.warning("job run %s stopped: %s", run_id, e)
                return
            if report.ended == 0.0:
                # Failed before it began (target unreachable …): nothing journaled, retry later.
                self._patch_run_status("CleanupJob", obj, {
                    "phase": "Pending", "observedGeneration": gen, "progress": report.message,
                    "conditions": status.conditions(
                        previous=None, generation=gen, now=self.clock(),
                        stalled=(report.reason or "RunFailed", report.message))})
                return
            r = report.as_dict()
            self.metrics.observe_run(namespace=policy.namespace, policy=policy.name,
                                     result=report.result,
                                     seconds=max(0.0, report.ended - report.started),
                                     counters=_metric_counters(report), eligible=0,
                                     oldest_age=None)
            self._patch_run_status("CleanupJob", obj, self._job_final(
                obj, report.run_id, report.result, report.counters,
                report.message or report.reason, report.ended))
            self.writer.event(obj=obj, reason="RunFinished", message=(
                f"run {report.run_id} {report.result}: deleted {r['deleted']}, "
                f"{_skipped_text(r)}, errors {r['errors']}"))

    def _ref_generation(self, job: Mapping[str, Any]) -> int | None:
        """The current generation of the job's ``policyRef`` policy (None: inline policy)."""
        ref = (job.get("spec") or {}).get("policyRef")
        if not ref:
            return None
        pol = self.inventory.get("RetentionPolicy", job["metadata"]["namespace"],
                                 ref.get("name", ""))
        return None if pol is None else int(pol["metadata"].get("generation", 1))

    def _job_cancelled(self, job: Mapping[str, Any], *, generation: int,
                       policy_generation: int | None) -> Callable[[], bool]:
        """A job's run stops between batches when the job is deleted or edited, or its
        ``policyRef`` policy is deleted or edited (the generation differs, or was never
        recorded: the safe side)."""
        meta = job["metadata"]
        has_ref = bool((job.get("spec") or {}).get("policyRef"))
        check_job = self._cancelled("CleanupJob", meta["namespace"], meta["name"], generation)

        def check() -> bool:
            if check_job():
                return True
            if not has_ref:
                return False
            cur = self.inventory.get("CleanupJob", meta["namespace"], meta["name"])
            return cur is None or policy_generation is None \
                or self._ref_generation(cur) != policy_generation
        return check

    # -- failover --------------------------------------------------------------------

    def _resume_interrupted(self) -> None:
        """Runs the journal says are active but no thread here is executing."""
        for key, run in self._state.runs.items():
            if key in self._active or self.clock() < self._retry_after.get(key, 0.0):
                continue
            ns, _, name = key.partition("/")
            if run.job is not None:
                job = next((j for j in self.inventory.all("CleanupJob")
                            if j["metadata"]["uid"] == run.job), None)
                # A job that finished, or whose policy is gone, would never resume it:
                # without this its run stayed active for ever, holding the policy's key.
                if job is not None and self._job_runnable(job):
                    self._reconcile_job(job)
                    continue
                why = "its CleanupJob was deleted or can no longer run"
            else:
                pol = self.inventory.get("RetentionPolicy", ns, name)
                if pol is not None:
                    try:
                        policy = self._policy_of(pol)
                    except _Stall:
                        pass
                    else:
                        # Edited while no leader ran it: it resumes only to stop (I8: a
                        # new spec's brakes, mode and rules are never skipped by a resume).
                        self._start(pol, policy, slot=None, generation=_run_generation(pol))
                        continue
                why = "its RetentionPolicy was deleted or is no longer valid"
            self._abandon(key, run.run_id, list(run.inflight), why=why)

    def _job_runnable(self, job: Mapping[str, Any]) -> bool:
        if (job.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return False
        try:
            self._job_policy(job)
        except _Stall:
            return False
        return True

    def _abandon(self, key: str, run_id: str, inflight: list[int], *, why: str) -> None:
        """Nothing can run it any more (its object is gone or invalid): close the run in
        the journal, deleting nothing more."""
        term = self.journal.current_term()
        for seq in inflight:
            self.journal.commit(CompleteBatch(policy=key, run_id=run_id, seq=seq, term=term,
                                              counters={}))
        self.journal.commit(FinishRun(policy=key, run_id=run_id, term=term, result="Aborted",
                                      ended=self.clock(), message=why))
        log.info("abandoned run %s of %s: %s", run_id, key, why)


def _ready_message(last_run: Mapping[str, Any] | None, nxt: dt.datetime | None) -> str:
    """Ready's message for a policy between runs: its last run and its next slot.
    Written by the run's final status and rebuilt by every tick after it, so the
    two must agree."""
    parts = [f"last run {last_run.get('id')} {last_run.get('result')}"] if last_run else []
    if nxt is not None:
        parts.append(f"next run at {schedule.slot_id(nxt)}")
    return "; ".join(parts)


def _without_nulls(value: Any) -> Any:
    """``value`` as a JSON merge patch leaves it in the object: keys set to null
    are removed (RFC 7386), at every depth; lists are taken whole."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


class _Once:
    """Call ``action`` once, ``delay`` seconds from now, unless :meth:`cancel` comes
    first. ``cancel`` returns only after a call in progress has finished, so what
    the caller writes next lands after it."""

    def __init__(self, action: Callable[[], None], *, delay: float, what: str) -> None:
        self._action, self._what = action, what
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(delay, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            try:
                self._action()
            except NotAllowed as e:
                log.info("%s: in-progress status not written: %s", self._what, e)
            except Exception as e:  # the run goes on; its final status follows
                log.warning("%s: in-progress status not written: %s", self._what, _brief(e))

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True


def _brake_message(message: str, run_id: str) -> str:
    """The Stalled message of a tripped brake, the same on every tick while it holds
    (it names the run to acknowledge: the one thing a person must type)."""
    return f"{message} (annotate {ACK_ANNOTATION}={run_id} to let it proceed)"


def _record_summary(rec: RunRecord) -> dict[str, Any]:
    """``status.lastRun`` from the journal's record of a run (no plan details)."""
    c = rec.counters
    return status.run_summary({
        "run_id": rec.run_id, "started": rec.started, "ended": rec.ended,
        "result": rec.result, "mode": "Plan" if rec.result in ("Planned", "Stalled")
        else "Enforce", "scanned": c.get("scanned", 0), "matched": c.get("matched", 0),
        "deleted": c.get("deleted", 0), "bytes_freed": c.get("bytesFreed", 0),
        "skipped_changed": c.get("skippedChanged", 0), "errors": c.get("errors", 0),
        "reason": "", "message": rec.message})


def _metric_counters(report: RunReport) -> dict[str, int]:
    """What a run adds to the object counters: its journal totals once it finished
    (whichever leaders ran its batches), nothing while it stays active to be resumed
    (its batches so far are counted when it finishes; counting them now too would
    count them twice)."""
    return dict(report.counters) if report.ended else {}


def _skipped_text(r: Mapping[str, Any]) -> str:
    """The event's word on skipped keys; ``gone-or-replaced`` ones named apart."""
    unsure = r.get("gone_or_replaced", 0)
    return f"skipped {r['skipped_changed']}" + (
        f" ({unsure} gone or replaced after a failover: an earlier attempt may have "
        f"deleted the planned version; see the ledger)" if unsure else "")


def _run_generation(obj: Mapping[str, Any]) -> int:
    """The generation the policy's active run began under. A run writes it to
    status.observedGeneration before it begins, and nothing else writes that status
    while the run is active; a status the watch has not delivered yet reads older,
    which only stops the run (the safe side)."""
    gen = int(obj["metadata"].get("generation", 1))
    seen = (obj.get("status") or {}).get("observedGeneration")
    return seen if isinstance(seen, int) and 0 < seen <= gen else gen


def _missed_text(st: Mapping[str, Any]) -> str | None:
    if not st.get("missedSlots"):
        return None
    return (f"{st['missedSlots']} scheduled slot(s) did not start in time, the last at "
            f"{st.get('lastMissedSlot')} (was no replica leader?)")


def _plan_status(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The plan as status shows it: counts, and per rule items and bytes kept/deleted."""
    rules = (plan.get("rules") or {}).get("rules") or []
    return {**{k: v for k, v in plan.items() if k != "rules"},
            "rules": {r["rule"]: {"keptItems": r["kept"]["items"],
                                  "keptBytes": r["kept"]["bytes"],
                                  "deletedItems": r["deleted"]["items"],
                                  "deletedBytes": r["deleted"]["bytes"]} for r in rules}}


def _logged(fn: Callable[..., None]) -> Callable[..., None]:
    """Worker threads' errors must reach the log, not die silently in a Future."""
    def run(*args: Any) -> None:
        try:
            fn(*args)
        except NotAllowed as e:
            log.info("stopped writing: %s", e)
        except Exception as e:
            if api_unavailable(e):
                log.warning("run worker stopped: API server unavailable (%s)", _brief(e))
                return
            if (why := api_forbidden(e)) is not None:
                obj = args[0] if args and isinstance(args[0], dict) else {}  # the object run
                meta = obj.get("metadata", {})
                log.error("run of %s %s/%s stopped: %s", obj.get("kind"),
                          meta.get("namespace"), meta.get("name"), why)
                return
            log.exception("run worker failed")
    return run


def _brief(exc: BaseException) -> str:
    """One line about an API failure (urllib3's messages carry the whole URL)."""
    return f"{type(exc).__name__}: {exc}"[:300].replace("\n", " ")


class _Stall(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
