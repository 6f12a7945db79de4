"""One run of a policy: plan → intent → manifest → fenced delete → ledger → completion.

Every step is journaled before or after it happens (I2) and may be repeated
after a crash with the same result (I6):

* a batch is recorded in the journal (keys, fingerprints, term) before any
  storage call; intents are pipelined a few batches ahead so the journal's
  round trips overlap with storage work;
* its keys leave the consumer manifest (I4) — a manifest failure stops the
  run before any further delete;
* deletes happen only while this node leads the term that recorded the batch
  and its lease is valid (I3), and the backend re-checks each fingerprint;
* the batch's ledger file is written, then its completion committed.

A new leader resumes an active run: batches the old leader left in flight are
finished from their ledger file if it exists, otherwise re-recorded under the
new term (a leader never deletes under another term's authority), and the
rest is re-planned against the run's original clock, so counters continue
and nothing is deleted twice.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from lethe.journal import (
    COUNTER_NAMES,
    EXPIRED_MARKER_RULE,
    MAX_BATCH,
    NONCURRENT_RULE,
    VERSION_RULES,
    AdoptIntent,
    BeginRun,
    CompleteBatch,
    FinishRun,
    Intent,
    IntentEntry,
    Journal,
    JournalError,
    RecordIntent,
    Replan,
    RunState,
)
from lethe.retention.select import Selector
from lethe.runner import ledger, manifest
from lethe.runner.plan import Plan, PlannedEntry, make_plan
from lethe.spec import Policy
from lethe.storage.base import (
    DELETE_MARKER,
    INTERNAL_PREFIX,
    DeleteResult,
    Entry,
    Outcome,
    Storage,
    StorageError,
    VersionedStorage,
)
from lethe.storage.clock import ClockSkewError, check_skew

__all__ = ["NONCURRENT_RULE", "LostLeadership", "RunReport", "Runner", "new_run_id"]

log = logging.getLogger("lethe.runner")

#: Intents recorded ahead of the batch being deleted (pipelining the journal).
PIPELINE_DEPTH = 3
#: How long a leader waits for its lease to come back before giving up the run.
LEASE_WAIT = 3.0


class LostLeadership(JournalError):
    """This node may no longer act; the run stops and the next leader resumes it."""


class _Cancelled(Exception):
    """The run's policy or job went away or changed: stop between batches."""


def new_run_id(*, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def policy_key(policy: Policy) -> str:
    return f"{policy.namespace}/{policy.name}"


@dataclass(slots=True)
class RunReport:
    run_id: str
    policy: str
    mode: str
    result: str  # Succeeded | Failed | Stalled | Planned | Aborted | Skipped
    started: float
    ended: float = 0.0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    plan: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # condition reason when not Succeeded (SafetyBrake, TargetUnreachable …)
    message: str = ""
    resumed: bool = False
    plan_key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        c = self.counters
        return {
            "run_id": self.run_id, "policy": self.policy, "mode": self.mode,
            "result": self.result, "reason": self.reason, "message": self.message,
            "started": self.started, "ended": self.ended, "resumed": self.resumed,
            "scanned": c.get("scanned", 0), "matched": c.get("matched", 0),
            "deleted": c.get("deleted", 0), "bytes_freed": c.get("bytesFreed", 0),
            "skipped_changed": c.get("skippedChanged", 0), "errors": c.get("errors", 0),
            "locked": c.get("locked", 0), "uploads_aborted": c.get("uploadsAborted", 0),
            "gone_or_replaced": c.get("goneOrReplaced", 0),
            "plan": self.plan, "plan_key": self.plan_key,
        }


def _batches(items: Iterator[PlannedEntry], size: int) -> Iterator[list[PlannedEntry]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


class Runner:
    """Executes runs of one policy on one target through one journal."""

    def __init__(self, *, policy: Policy, storage: Storage, journal: Journal,
                 clock: Callable[[], float] = time.time, spool_dir: str | None = None,
                 batch_size: int | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> None:
        self.policy = policy
        self.key = policy_key(policy)
        self.storage = storage
        self.journal = journal
        self.clock = clock
        self.spool_dir = spool_dir
        #: Keys per journaled batch: ``spec.batchSize`` unless a caller (a test) says.
        self.batch_size = max(1, min(batch_size or policy.batchSize, MAX_BATCH))
        self.progress = progress
        self.cancelled = cancelled
        self._manifest_key = policy.manifest.path.strip("/") if policy.manifest else None
        self._groups_kept = 0  # members of groups kept whole because they changed
        self._uploads_aborted = 0

    # -- entry points -------------------------------------------------------------

    def run(self, *, run_id: str | None = None, mode: str | None = None,
            slot: str | None = None, job: str | None = None,
            waive_brakes: bool = False) -> RunReport:
        """Start a run (or resume this policy's active one) and carry it to the end.

        ``waive_brakes`` is for a run a person acknowledged after a brake tripped.
        """
        active = self.journal.read().runs.get(self.key)
        if active is not None:
            return self._resume(active)
        mode = mode or self.policy.mode
        run_id = run_id or new_run_id()
        started = self.clock()
        report = RunReport(run_id=run_id, policy=self.key, mode=mode, result="Failed",
                           started=started)
        self._require_lease()
        now = self._storage_clock(report, enforce=mode != "Plan")
        if now is None:
            log.warning("run %s not started: %s %s", run_id, report.reason, report.message)
            return report
        plan = self._plan(now, report)
        if plan is None:
            log.warning("run %s not started: %s %s", run_id, report.reason, report.message)
            return report
        log.info("run %s planned (%s): scanned %d, selected %d, eligible %d", run_id, mode,
                 plan.scanned, plan.selected, plan.matched)
        report.counters["scanned"] = plan.scanned
        report.counters["matched"] = plan.matched
        try:
            brake = None if waive_brakes else self._brake(plan)
            term = self.journal.current_term()
            self.journal.commit(BeginRun(
                policy=self.key, run_id=run_id, term=term, started=started, now=now,
                slot=slot, job=job, mode="Plan" if brake else mode, planned=plan.matched,
                scanned=plan.scanned))
            if brake:
                report.reason = "SafetyBrake"
                self._commit_finish(report, "Stalled", brake)
                return report
            if mode == "Plan":
                try:
                    report.plan_key = self._publish_plan(run_id, plan)
                except StorageError as e:  # e.g. PutObject denied: a reason, not a crash
                    report.reason = getattr(e, "reason", "StorageError")
                    log.error("run %s: plan not published: %s", run_id, e)
                    self._commit_finish(report, "Failed", str(e))
                    return report
                self._commit_finish(report, "Planned", "")
                return report
            self._apply(report, plan, start_seq=0)
            return report
        finally:
            plan.discard()

    def _resume(self, run: RunState) -> RunReport:
        report = RunReport(run_id=run.run_id, policy=self.key, mode=run.mode, result="Failed",
                           started=run.started, resumed=True,
                           counters={**dict.fromkeys(COUNTER_NAMES, 0), **run.counters})
        log.info("resuming run %s of %s at batch %d", run.run_id, self.key, run.next_seq)
        self._require_lease()
        if run.mode == "Plan":
            # Nothing to finish but the record: a plan is cheap to recompute next time.
            self._commit_finish(report, "Aborted", "leader changed during a plan run")
            return report
        try:
            self.storage.check_ready()
            self.storage.check_fenced_deletes()
        except StorageError as e:
            report.reason = getattr(e, "reason", "TargetUnreachable")
            report.message = str(e)
            return report  # the run stays active; the next attempt resumes it
        inflight = sorted(run.inflight.values(), key=lambda i: i.seq)
        # Batches run in seq order and each writes its ledger file before the next one
        # deletes anything: of those in flight, only the first without a ledger file
        # may have been begun (and its outcomes lost) by an earlier attempt.
        begun = True
        for n, intent in enumerate(inflight):
            if self.cancelled() and ledger.read_batch(
                    storage=self.storage, root=self.policy.ledgerPath, run_id=run.run_id,
                    seq=intent.seq) is None:
                # Cancelled (e.g. its policy edited while no leader ran it): stop as
                # between batches. Batches ran in order, so only this first one without
                # a ledger file may have begun. Close the later ones first, so that a
                # failover from here on finds only this one, then finish it.
                for later in inflight[n + 1:]:
                    self.journal.commit(CompleteBatch(policy=self.key, run_id=run.run_id,
                                                      seq=later.seq, counters={},
                                                      term=self.journal.current_term()))
                self._finish_inflight(run.run_id, intent, maybe_begun=begun, since=run.now)
                break
            if self._finish_inflight(run.run_id, intent, maybe_begun=begun, since=run.now):
                begun = False
        if self.cancelled():
            self._commit_finish(report, "Aborted", "cancelled between batches (policy "
                                "deleted, edited or suspended, or job deleted)")
            return report
        plan = self._plan(run.now, report)
        if plan is None:
            return report
        try:
            # The run's counters are the journal's (whoever ran its earlier batches),
            # with ``matched`` now the items its batches took plus what is left.
            self.journal.commit(Replan(policy=self.key, run_id=run.run_id,
                                       term=self.journal.current_term(), matched=plan.matched))
            report.counters = dict(self.journal.read().runs[self.key].counters)
            self._apply(report, plan, start_seq=run.next_seq)
        finally:
            plan.discard()
        return report

    # -- steps --------------------------------------------------------------------

    def _require_lease(self, *, term: int | None = None, wait: float = LEASE_WAIT) -> None:
        """Wait briefly for a valid lease (it lapses for a tick under load); give up
        at once if the term moved: then another node leads and will resume the run."""
        deadline = time.monotonic() + wait
        while not self.journal.lease_valid():
            if (term is not None and self.journal.current_term() != term) \
                    or time.monotonic() > deadline:
                raise LostLeadership("not the leader with a valid lease; not acting")
            time.sleep(0.02)
        if term is not None and self.journal.current_term() != term:
            raise LostLeadership(f"term moved past {term}; not acting")

    def _storage_clock(self, report: RunReport, *, enforce: bool) -> float | None:
        """The storage's clock, or ``None`` (reason in ``report``) if the target
        must not be used now; an Enforce run also needs fenced deletes (I3)."""
        try:
            self.storage.check_ready()
            if enforce:
                self.storage.check_fenced_deletes()
            now = self.storage.now()
        except StorageError as e:
            report.reason = getattr(e, "reason", "TargetUnreachable")
            report.message = str(e)
            return None
        try:  # the message names the target, the skew, its direction and the bound
            check_skew(now, self.clock(), self.policy.safety.maxClockSkew,
                       target=self.storage.describe())
        except ClockSkewError as e:
            report.reason = "ClockSkew"
            report.message = str(e)
            return None
        return now

    def _plan(self, now: float, report: RunReport) -> Plan | None:
        exclude = frozenset({self._manifest_key}) if self._manifest_key else frozenset()
        try:
            plan = make_plan(policy=self.policy, storage=self.storage, now=now,
                             spool_dir=self.spool_dir, exclude=exclude,
                             progress=self._scan_progress)
        except StorageError as e:
            report.reason = getattr(e, "reason", "StorageError")
            report.message = str(e)
            return None
        report.plan = {**plan.counts(), "rules": plan.summary}
        return plan

    def _scan_progress(self, phase: str, n: int) -> None:
        if self.progress is not None:
            self.progress({"phase": phase, "scanned": n})

    def _brake(self, plan: Plan) -> str | None:
        s = self.policy.safety
        if s.maxDeletes is not None and plan.matched > s.maxDeletes:
            return (f"plan deletes {plan.matched} items, more than spec.safety.maxDeletes "
                    f"({s.maxDeletes}); acknowledge the run or raise the limit")
        if (s.maxDeletePercent is not None and plan.selected
                and plan.matched * 100 > s.maxDeletePercent * plan.selected):
            pct = plan.matched * 100 / plan.selected
            return (f"plan deletes {pct:.1f}% of {plan.selected} selected items, more than "
                    f"spec.safety.maxDeletePercent ({s.maxDeletePercent}%); acknowledge the "
                    f"run or raise the limit")
        if not s.allowDeleteAll and plan.summary.get("deletes_every_item"):
            return (f"plan deletes every selected item ({plan.matched} of {plan.selected}); if "
                    f"the policy means that, set spec.safety.allowDeleteAll: true, else fix "
                    f"spec.rules (a keep count of 0 is not set) or acknowledge the run")
        return None

    def _publish_plan(self, run_id: str, plan: Plan) -> str:
        """Plan mode's output: the full plan as JSON Lines in the target."""
        key = f"{INTERNAL_PREFIX}plans/{self.policy.name}/{run_id}.jsonl"
        with open(plan.spool_path, "rb") as f:
            self.storage.replace_object(key, f)  # streamed: memory stays O(1) (I5)
        return key

    def _apply(self, report: RunReport, plan: Plan, *, start_seq: int) -> None:
        """Pipelined batches; stops between batches on cancel or lost lease."""
        term = self.journal.current_term()
        pending: deque[tuple[RecordIntent, Future[int]]] = deque()
        completions: deque[Future[int]] = deque()
        seq = start_seq
        cursor = 0
        try:
            entries = plan.entries()
            if self.policy.groupBy is not None:
                entries = self._intact_groups(entries, report)
            chunks = itertools.chain(_batches(entries, self.batch_size),
                                     _batches(self._noncurrent(plan.now), self.batch_size))
            for chunk in chunks:
                if self.cancelled():
                    raise _Cancelled
                self._require_lease(term=term)
                cursor += len(chunk)
                cmd = RecordIntent(policy=self.key, run_id=report.run_id, seq=seq, term=term,
                                   cursor=cursor, entries=tuple(
                                       IntentEntry(key=p.key, fingerprint=p.fingerprint,
                                                   size=p.size, rule=p.rule,
                                                   version_id=p.version_id) for p in chunk))
                seq += 1
                while completions and completions[0].done():
                    completions.popleft().result()
                while len(pending) + len(completions) >= PIPELINE_DEPTH * 2:
                    completions.popleft().result(timeout=30)
                pending.append((cmd, self.journal.commit_async(cmd)))
                if len(pending) > PIPELINE_DEPTH:
                    if self.cancelled():
                        raise _Cancelled
                    completions.append(self._execute(report, *pending.popleft(), term=term))
            self._drain(pending, completions, report, term)
            self._abort_uploads(plan.now)
        except _Cancelled:
            # Recorded but not executed: close those batches empty, then the run.
            for cmd, fut in pending:
                fut.result(timeout=30)
                completions.append(self.journal.commit_async(CompleteBatch(
                    policy=self.key, run_id=report.run_id, seq=cmd.seq, term=term,
                    counters={})))
            while completions:
                completions.popleft().result(timeout=30)
            self._commit_finish(report, "Aborted", "cancelled between batches (policy "
                                "deleted, edited or suspended, or job deleted)")
            return
        except (manifest.ManifestError, StorageError) as e:
            # Stop before any further delete; what is in flight stays journaled.
            report.reason = "ManifestError" if isinstance(e, manifest.ManifestError) \
                else getattr(e, "reason", "StorageError")
            report.message = str(e)
            for _cmd, fut in pending:
                fut.cancel()
            log.error("run %s stopped: %s", report.run_id, e)
            return
        self._commit_finish(report, "Succeeded", "")

    def _noncurrent(self, now: float) -> Iterator[PlannedEntry]:
        """``spec.target.s3.noncurrentVersionsMaxAge``: the noncurrent versions to
        remove, and delete markers with nothing behind them, after the plan's own
        deletions, batched and journaled like them. Not counted by the brakes, which
        judge the plan of current objects."""
        max_age = getattr(self.policy.target, "noncurrentVersionsMaxAge", None)
        store = self.storage
        if max_age is None or not isinstance(store, VersionedStorage) or not store.is_versioned():
            return
        selector = Selector(self.policy.selection)
        for e in store.list_noncurrent_versions(now - max_age):
            if not selector.matches_key(e.key):  # an excluded key's history is kept too
                continue
            rule = (EXPIRED_MARKER_RULE if e.fingerprint.startswith(DELETE_MARKER)
                    else NONCURRENT_RULE)
            yield PlannedEntry(key=e.key, size=e.size, mtime=e.mtime, fingerprint=e.fingerprint,
                               rule=rule, version_id=e.version_id)

    def _abort_uploads(self, now: float) -> None:
        """``spec.target.s3.abortIncompleteUploadsAfter``, once the deletions are done."""
        after = getattr(self.policy.target, "abortIncompleteUploadsAfter", None)
        if after is None or not isinstance(self.storage, VersionedStorage):
            return
        self._require_lease()
        self._uploads_aborted += self.storage.abort_incomplete_uploads(now - after)

    def _intact_groups(self, entries: Iterator[PlannedEntry], report: RunReport
                       ) -> Iterator[PlannedEntry]:
        """Re-list each group just before its members are recorded for deletion; a group
        that gained, lost or changed a member since planning is kept whole (never half
        deleted). Holds one group's planned members in memory at a time."""
        selector = Selector(self.policy.selection)
        for group, members_iter in itertools.groupby(entries, key=lambda p: p.group):
            members = list(members_iter)
            if group is None:
                yield from members
                continue
            planned = {(m.key, m.fingerprint) for m in members}
            now = {(e.key, e.fingerprint) for e in self.storage.list(prefix=group)
                   if selector.selected(e.key, e.size)}
            if now == planned:
                yield from members
                continue
            self._groups_kept += len(members)
            log.info("run %s: group %s changed since planning (%d planned, %d now); kept "
                     "whole", report.run_id, group, len(planned), len(now))

    def _drain(self, pending: deque[tuple[RecordIntent, Future[int]]],
               completions: deque[Future[int]], report: RunReport, term: int) -> None:
        while pending:
            if self.cancelled():
                raise _Cancelled
            completions.append(self._execute(report, *pending.popleft(), term=term))
        while completions:
            completions.popleft().result(timeout=30)

    def _execute(self, report: RunReport, cmd: RecordIntent, fut: Future[int], *, term: int
                 ) -> Future[int]:
        index = fut.result(timeout=30)
        intent = Intent(seq=cmd.seq, term=cmd.term, index=index, entries=cmd.entries,
                        cursor=cmd.cursor)
        counters = self._delete_batch(report.run_id, intent)
        for k, v in counters.items():
            report.counters[k] = report.counters.get(k, 0) + v
        if self.progress is not None:
            self.progress({"phase": "delete", "run_id": report.run_id, **report.counters})
        return self.journal.commit_async(CompleteBatch(
            policy=self.key, run_id=report.run_id, seq=intent.seq, term=term, counters=counters))

    def _delete_batch(self, run_id: str, intent: Intent, *, begun_in: int | None = None,
                      begun_since: float = 0.0) -> dict[str, int]:
        """Delete one journaled batch, write its ledger file, return its counts.

        ``begun_in``: the term of an earlier attempt at this batch that may have
        deleted some of it and stopped before its ledger file (a resume). A key whose
        object then differs from the planned one is recorded ``gone-or-replaced``, not
        ``changed-skipped``: this node cannot tell whether that attempt deleted the
        planned version before a writer put another object there, and the ledger only
        records what its writer saw (issue #17). On a versioned bucket that attempt
        may also have placed a marker on an overwrite and died before its read-back:
        keys found gone are checked for such a marker (written since
        ``begun_since``, the run's storage clock) and it is removed again."""
        keys = [e.key for e in intent.entries]
        if self._manifest_key:
            manifest.remove_entries(storage=self.storage, path=self._manifest_key, keys=keys)
        # An export unmounted mid-run must mean zero further deletes, not the mount point's.
        self.storage.check_ready()
        # Fence (I3): lead the very term that recorded this batch, with a valid lease,
        # checked again immediately before every rename, unlink and delete request
        # the backend makes, and before the ledger write. A local check (a few µs):
        # the slow path waits briefly for a lease that lapsed for a tick under load.
        lease_valid, current_term, term = (self.journal.lease_valid,
                                           self.journal.current_term, intent.term)

        def fence() -> None:
            if not (lease_valid() and current_term() == term):
                self._require_lease(term=term)

        fence()
        entries: Sequence[Entry] = [
            Entry(key=e.key, size=e.size, mtime=0.0, fingerprint=e.fingerprint,
                  version_id=e.version_id) for e in intent.entries]
        versions = bool(intent.entries) and intent.entries[0].rule in VERSION_RULES
        if versions:
            # Exact versions, never current ones: a batch holds only these (see _apply).
            if not isinstance(self.storage, VersionedStorage):
                raise StorageError(f"{self.storage.describe()} has no object versions")
            results = self.storage.delete_versions(entries, fence=fence)
        else:
            results = self.storage.delete_batch(entries, fence=fence)
        if begun_in is not None:
            results = [_unsure(r, begun_in) if r.outcome is Outcome.CHANGED_SKIPPED else r
                       for r in results]
            if not versions and isinstance(self.storage, VersionedStorage):
                fence()  # as for any step of the batch; the undo itself is not fenced
                results = self._unhide(entries, results, since=begun_since)
        lines = ledger.write_batch(storage=self.storage, root=self.policy.ledgerPath,
                                   policy=self.key, run_id=run_id, intent=intent,
                                   results=results, when=self.clock(), fence=fence)
        for r in results:
            if r.outcome in (Outcome.ERROR, Outcome.LOCKED):
                log.warning("run %s: %s %s: %s", run_id, r.outcome.value, r.key, r.detail)
        return ledger.counts(lines)

    def _unhide(self, entries: Sequence[Entry], results: list[DeleteResult], *,
                since: float) -> list[DeleteResult]:
        """``results`` with each ALREADY_GONE key re-checked for a marker of an earlier
        attempt hiding an overwrite (:meth:`VersionedStorage.unhide_overwrites`)."""
        assert isinstance(self.storage, VersionedStorage)
        gone = [i for i, r in enumerate(results) if r.outcome is Outcome.ALREADY_GONE]
        fixed = self.storage.unhide_overwrites([entries[i] for i in gone], since=since)
        out = list(results)
        for i, r in zip(gone, fixed, strict=True):
            if r is not None:
                out[i] = r
        return out

    def _finish_inflight(self, run_id: str, intent: Intent, *, maybe_begun: bool,
                         since: float = 0.0) -> bool:
        """Finish a batch a previous leader left in flight; ``True`` if it had no ledger
        file (so it was deleted here).

        If its ledger file exists the batch is done; record its counts. Else
        delete it again (each key is re-checked: what the old leader deleted is
        ``already-gone``), under our own term's authority first (never delete
        under another term's), but as the *same* batch: a late ledger write by
        a paused old leader then replaces that one file instead of adding lines.
        ``maybe_begun``: an earlier attempt may have begun this batch (see
        :meth:`_delete_batch`'s ``begun_in``).
        """
        term = self.journal.current_term()
        done = ledger.read_batch(storage=self.storage, root=self.policy.ledgerPath,
                                 run_id=run_id, seq=intent.seq)
        if done is not None:
            self.journal.commit(CompleteBatch(policy=self.key, run_id=run_id, seq=intent.seq,
                                              term=term, counters=ledger.counts(done)))
            return False
        begun_in = intent.term if maybe_begun else None
        if intent.term != term:
            index = self.journal.commit(AdoptIntent(policy=self.key, run_id=run_id,
                                                    seq=intent.seq, term=term))
            intent = Intent(seq=intent.seq, term=term, index=index, entries=intent.entries,
                            cursor=intent.cursor)
        counters = self._delete_batch(run_id, intent, begun_in=begun_in, begun_since=since)
        self.journal.commit(CompleteBatch(policy=self.key, run_id=run_id, seq=intent.seq,
                                          term=term, counters=counters))
        return True

    def _commit_finish(self, report: RunReport, result: str, message: str) -> None:
        term = self.journal.current_term()
        # scanned, matched and every batch's counts are in the journal already (BeginRun,
        # Replan, CompleteBatch): only what this node counted outside any batch is added.
        extra = {"skippedChanged": self._groups_kept}
        if self._uploads_aborted:
            extra["uploadsAborted"] = self._uploads_aborted
        self.journal.commit(FinishRun(policy=self.key, run_id=report.run_id, term=term,
                                      result=result, ended=self.clock(), counters=extra,
                                      message=message))
        rec = self.journal.read().history[self.key][-1]
        c = rec.counters
        log.info("run %s %s: scanned %d, eligible %d, deleted %d (%d bytes), skipped "
                 "changed %d (%d gone or replaced), errors %d%s", report.run_id, result,
                 c.get("scanned", 0), c.get("matched", 0), c.get("deleted", 0),
                 c.get("bytesFreed", 0), c.get("skippedChanged", 0),
                 c.get("goneOrReplaced", 0), c.get("errors", 0),
                 f" — {message}" if message else "")
        report.result = result
        report.message = message
        report.ended = rec.ended
        report.counters = dict(rec.counters)


def _unsure(result: DeleteResult, term: int) -> DeleteResult:
    """A changed key of a batch that an earlier attempt may have begun (see
    :meth:`Runner._delete_batch`): what this node saw, and what it cannot know."""
    return DeleteResult(result.key, Outcome.GONE_OR_REPLACED,
                        f"not the planned object ({result.detail}); kept. An attempt at this "
                        f"batch in term {term} stopped before writing this file and may have "
                        f"deleted the planned one")
