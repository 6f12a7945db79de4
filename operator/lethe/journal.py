"""The journal: what every replica agrees happened, as a pure state machine.

The runner writes ahead here (I2): a run begins, each delete batch is recorded
as an intent (keys, fingerprints, the term that authorised it) before any
storage call, and completed after. The Raft layer replicates :class:`Command`
values and calls :meth:`JournalState.apply` on every replica in log order;
a local (single-process) journal does the same. Because every transition is
compare-and-set on run id, batch sequence and term, a late entry from a
deposed leader is rejected by every replica alike, not applied.

State stays bounded (I5): at most ``MAX_INFLIGHT`` batches of at most
``MAX_BATCH`` keys per active run, ``HISTORY_PER_POLICY`` finished runs per
policy and ``MAX_JOB_MARKERS`` CleanupJob markers. Never the inventory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Protocol

__all__ = [
    "MAX_BATCH",
    "MAX_INFLIGHT",
    "AdoptIntent",
    "BeginRun",
    "Command",
    "CompleteBatch",
    "Counters",
    "Fence",
    "FinishRun",
    "Intent",
    "IntentEntry",
    "Journal",
    "JournalError",
    "JournalRejected",
    "JournalState",
    "NotLeader",
    "RecordIntent",
    "Replan",
    "RunState",
    "SkipSlot",
]

MAX_BATCH = 1000
MAX_INFLIGHT = 8
HISTORY_PER_POLICY = 20
MAX_JOB_MARKERS = 10_000

#: ``goneOrReplaced`` is a subset of ``skippedChanged``: keys whose object differed from
#: the planned one when a batch was finished after an earlier attempt at it stopped
#: without its ledger file, so that attempt may have deleted the planned version (the
#: ledger outcome ``gone-or-replaced``).
COUNTER_NAMES = ("scanned", "matched", "deleted", "bytesFreed", "skippedChanged", "errors",
                 "locked", "uploadsAborted", "goneOrReplaced")
#: The ledger rule of a noncurrent version removed by ``noncurrentVersionsMaxAge``. Such
#: entries are not items of the plan: ``matched`` does not count them.
NONCURRENT_RULE = "noncurrentVersionsMaxAge"
#: The ledger rule of a delete marker removed because no version is behind it
#: (S3 Lifecycle's ExpiredObjectDeleteMarker). Like noncurrent versions, not a plan item.
EXPIRED_MARKER_RULE = "expiredObjectDeleteMarker"
#: Batches of these rules remove versions, not the plan's items.
VERSION_RULES = frozenset({NONCURRENT_RULE, EXPIRED_MARKER_RULE})
Counters = Mapping[str, int]


def add_counters(a: Counters, b: Counters) -> dict[str, int]:
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in COUNTER_NAMES}


# --- commands (small, picklable, the only things written to the log) ------------


@dataclass(frozen=True, slots=True)
class IntentEntry:
    key: str
    fingerprint: str
    size: int
    rule: str
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class Fence:
    """A new leader's first entry: from here on, commands of older terms are void."""

    term: int


@dataclass(frozen=True, slots=True)
class BeginRun:
    policy: str  # "namespace/name"
    run_id: str
    term: int
    started: float
    #: The run's reference time: a resumed run re-plans against the same clock.
    now: float
    #: Scheduled slot (ISO time) this run serves: each slot runs at most once.
    slot: str | None = None
    #: CleanupJob uid this run serves: each job runs at most once.
    job: str | None = None
    mode: str = "Enforce"
    planned: int = 0  # items the plan selected (what brakes were checked against)
    scanned: int = 0  # items the plan listed: the run's ``scanned`` counter


@dataclass(frozen=True, slots=True)
class RecordIntent:
    policy: str
    run_id: str
    seq: int  # 0, 1, 2 … per run, no gaps
    term: int
    entries: tuple[IntentEntry, ...]
    cursor: int = 0  # planned items consumed so far (progress, resume)


@dataclass(frozen=True, slots=True)
class AdoptIntent:
    """A new leader takes over a batch an older term left in flight: same keys,
    same ``seq`` (so the same ledger file), its own term's authority. Keeping the
    seq matters: the old leader may have been paused after its deletes and write
    that batch's ledger file late; both then replace one file, never add a second
    line per key (chaos seed 3004)."""

    policy: str
    run_id: str
    seq: int
    term: int


@dataclass(frozen=True, slots=True)
class Replan:
    """A leader resuming a run has finished its in-flight batches and planned the rest
    again (against the run's own clock): ``matched`` items are still to go. The run's
    ``matched`` becomes the plan items its batches took so far plus these, so it stays
    the run's whole count across any number of resumes. ``scanned`` stays the first
    plan's: a re-plan lists the same target again, it does not find new items."""

    policy: str
    run_id: str
    term: int
    matched: int


@dataclass(frozen=True, slots=True)
class CompleteBatch:
    policy: str
    run_id: str
    seq: int
    term: int
    counters: Counters


@dataclass(frozen=True, slots=True)
class FinishRun:
    policy: str
    run_id: str
    term: int
    result: str  # Succeeded | Failed | Aborted | Stalled | Planned
    ended: float
    counters: Counters = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True, slots=True)
class SkipSlot:
    """Scheduled slots up to ``slot`` passed their deadline unrun: never run them late."""

    policy: str
    slot: str
    term: int


Command = (Fence | BeginRun | RecordIntent | AdoptIntent | CompleteBatch | FinishRun | SkipSlot
           | Replan)


# --- state ------------------------------------------------------------------------


@dataclass(slots=True)
class Intent:
    seq: int
    term: int
    index: int  # the journal index that authorised these deletes (goes to the ledger)
    entries: tuple[IntentEntry, ...]
    cursor: int


@dataclass(slots=True)
class RunState:
    policy: str
    run_id: str
    term: int
    started: float
    now: float
    mode: str
    planned: int
    slot: str | None
    job: str | None
    next_seq: int = 0
    cursor: int = 0
    inflight: dict[int, Intent] = field(default_factory=dict)
    #: The run's counters so far: ``scanned`` and ``matched`` from its plan (see
    #: :class:`Replan`), the rest summed from completed batches. What status, events
    #: and metrics report, whichever leader finishes the run (issue #17).
    counters: dict[str, int] = field(default_factory=dict)
    #: Plan items (current objects) recorded in this run's batches so far.
    recorded: int = 0

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        # Pickled as a slotted object: (None, {slot: value}). A snapshot written before
        # a field existed loads it with its default (else: AttributeError on use).
        _, values = state
        for f in fields(self):
            if f.name in values:
                value = values[f.name]
            else:
                value = f.default_factory() if f.default_factory is not MISSING else f.default
            object.__setattr__(self, f.name, value)


@dataclass(frozen=True, slots=True)
class RunRecord:
    policy: str
    run_id: str
    started: float
    ended: float
    result: str
    counters: Mapping[str, int]
    slot: str | None
    job: str | None
    message: str = ""


class JournalError(Exception):
    pass


class JournalRejected(JournalError):
    """The state machine refused a command (a failed compare-and-set)."""


class NotLeader(JournalError):
    """Only the leader (with a valid lease) may commit."""


@dataclass(slots=True)
class JournalState:
    """Replicated on every node; mutated only through :meth:`apply`."""

    term: int = 0
    index: int = 0  # last applied journal index
    runs: dict[str, RunState] = field(default_factory=dict)
    history: dict[str, list[RunRecord]] = field(default_factory=dict)
    jobs: OrderedDict[str, RunRecord] = field(default_factory=OrderedDict)
    last_slot: dict[str, str] = field(default_factory=dict)

    def apply(self, cmd: Command, *, index: int) -> str | None:
        """Apply ``cmd`` at journal ``index``; return ``None`` or why it was rejected.

        Rejections change nothing, so every replica stays identical.
        """
        self.index = max(self.index, index)
        if isinstance(cmd, Fence):
            if cmd.term < self.term:
                return f"fence of term {cmd.term} is older than term {self.term}"
            self.term = cmd.term
            return None
        if cmd.term < self.term:
            return f"term {cmd.term} is stale: term {self.term} has begun"
        self.term = cmd.term
        if isinstance(cmd, BeginRun):
            return self._begin(cmd)
        if isinstance(cmd, SkipSlot):
            last = self.last_slot.get(cmd.policy)
            if last is not None and cmd.slot <= last:
                return f"slot {cmd.slot} is not after the last slot {last}"
            self.last_slot[cmd.policy] = cmd.slot
            return None
        run = self.runs.get(cmd.policy)
        if run is None or run.run_id != cmd.run_id:
            return f"run {cmd.run_id} of {cmd.policy} is not active"
        if isinstance(cmd, RecordIntent):
            if cmd.seq != run.next_seq:
                return f"batch {cmd.seq} out of order: expected {run.next_seq}"
            if len(run.inflight) >= MAX_INFLIGHT:
                return f"{MAX_INFLIGHT} batches already in flight"
            if len(cmd.entries) > MAX_BATCH:
                return f"batch of {len(cmd.entries)} keys exceeds {MAX_BATCH}"
            run.inflight[cmd.seq] = Intent(seq=cmd.seq, term=cmd.term, index=index,
                                           entries=cmd.entries, cursor=cmd.cursor)
            run.recorded += sum(e.rule not in VERSION_RULES for e in cmd.entries)
            run.next_seq += 1
            run.cursor = max(run.cursor, cmd.cursor)
            return None
        if isinstance(cmd, AdoptIntent):
            held = run.inflight.get(cmd.seq)
            if held is None:
                return f"batch {cmd.seq} is not in flight"
            if held.term >= cmd.term:
                return f"batch {cmd.seq} is already authorised in term {held.term}"
            run.inflight[cmd.seq] = Intent(seq=cmd.seq, term=cmd.term, index=index,
                                           entries=held.entries, cursor=held.cursor)
            return None
        if isinstance(cmd, Replan):
            if cmd.matched < 0:
                return f"negative matched {cmd.matched}"
            run.counters["matched"] = run.recorded + cmd.matched
            return None
        if isinstance(cmd, CompleteBatch):
            if cmd.seq not in run.inflight:
                return f"batch {cmd.seq} is not in flight"
            del run.inflight[cmd.seq]
            run.counters = add_counters(run.counters, cmd.counters)
            return None
        # FinishRun
        if run.inflight:
            return f"batches {sorted(run.inflight)} are still in flight"
        counters = add_counters(run.counters, cmd.counters)
        rec = RunRecord(policy=run.policy, run_id=run.run_id, started=run.started,
                        ended=cmd.ended, result=cmd.result, counters=counters, slot=run.slot,
                        job=run.job, message=cmd.message)
        del self.runs[cmd.policy]
        hist = self.history.setdefault(cmd.policy, [])
        hist.append(rec)
        del hist[:-HISTORY_PER_POLICY]
        if run.job is not None:
            self.jobs[run.job] = rec
            while len(self.jobs) > MAX_JOB_MARKERS:
                self.jobs.popitem(last=False)
        return None

    def _begin(self, cmd: BeginRun) -> str | None:
        active = self.runs.get(cmd.policy)
        if active is not None:
            return f"run {active.run_id} of {cmd.policy} is still active"
        if cmd.job is not None and cmd.job in self.jobs:
            return f"job {cmd.job} already ran as {self.jobs[cmd.job].run_id}"
        if cmd.slot is not None:
            last = self.last_slot.get(cmd.policy)
            if last is not None and cmd.slot <= last:
                return f"slot {cmd.slot} already ran (last {last})"
            self.last_slot[cmd.policy] = cmd.slot
        self.runs[cmd.policy] = RunState(
            policy=cmd.policy, run_id=cmd.run_id, term=cmd.term, started=cmd.started,
            now=cmd.now, mode=cmd.mode, planned=cmd.planned, slot=cmd.slot, job=cmd.job,
            counters={**dict.fromkeys(COUNTER_NAMES, 0), "scanned": cmd.scanned,
                      "matched": cmd.planned})
        return None

    def snapshot(self) -> JournalState:
        """A copy for readers, so they never see a half-applied entry.

        Only what :meth:`apply` changes in place is copied: the containers, and each
        active run's own dicts. Records (``RunRecord``, ``Intent`` and its entries)
        are never changed once made, so they are shared: with 1,000 policies a deep
        copy of their histories took longer than a small run itself, under the lock
        the Raft thread needs to apply entries.
        """
        return JournalState(
            term=self.term, index=self.index,
            runs={k: replace(r, inflight=dict(r.inflight), counters=dict(r.counters))
                  for k, r in self.runs.items()},
            history={k: list(v) for k, v in self.history.items()},
            jobs=OrderedDict(self.jobs), last_slot=dict(self.last_slot))


class Journal(Protocol):
    """What the runner and operator need from the replicated journal."""

    def is_leader(self) -> bool: ...

    def lease_valid(self) -> bool:
        """Leader of the current term AND heard from a quorum within the lease (I3)."""
        ...

    def current_term(self) -> int: ...

    def commit(self, cmd: Command, *, timeout: float = 10.0) -> int:
        """Commit and apply; return the journal index. Raises NotLeader,
        JournalRejected (CAS failed), or JournalError (timeout, lost leadership)."""
        ...

    def commit_async(self, cmd: Command) -> Future[int]:
        """Like :meth:`commit` but pipelined: the future resolves when applied."""
        ...

    def read(self) -> JournalState:
        """A consistent copy of the applied state."""
        ...


def with_term(cmd: Command, term: int) -> Command:
    """Re-stamp a command with the caller's current term."""
    return replace(cmd, term=term)
