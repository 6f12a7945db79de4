"""Planning: two streaming passes over a target, deletions spooled to a local file.

Pass 1 feeds the retention planner's bounded statistics; pass 2 decides each
entry and appends the deletions to a spool file, so memory stays O(batch)
(I5) while the safety brakes can still see the whole plan before the first
delete (I8). The spool is also the full plan that Plan mode publishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from lethe.retention.planner import Planner
from lethe.spec import Policy
from lethe.storage.base import Entry, Storage

__all__ = ["FUTURE_TOLERANCE", "Plan", "PlannedEntry", "make_plan"]

#: Entries newer than the storage clock by more than this are skipped and
#: reported: a future mtime means a skewed writer, not a young file to age.
FUTURE_TOLERANCE = 60.0


@dataclass(frozen=True, slots=True)
class PlannedEntry:
    key: str
    size: int
    mtime: float
    fingerprint: str
    rule: str
    version_id: str | None = None
    group: str | None = None  # with groupBy: deleted only together with its group

    def entry(self) -> Entry:
        return Entry(key=self.key, size=self.size, mtime=self.mtime,
                     fingerprint=self.fingerprint, version_id=self.version_id)


@dataclass(slots=True)
class Plan:
    now: float
    spool_path: str
    scanned: int = 0
    selected: int = 0
    matched: int = 0
    matched_bytes: int = 0
    future: int = 0
    oldest_eligible: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def entries(self, *, skip: int = 0) -> Iterator[PlannedEntry]:
        with open(self.spool_path, encoding="utf-8", errors="surrogateescape") as f:
            for i, line in enumerate(f):
                if i >= skip:
                    yield PlannedEntry(**json.loads(line))

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spool_path)

    def counts(self) -> dict[str, Any]:
        age = None if self.oldest_eligible is None else max(0.0, self.now - self.oldest_eligible)
        return {"scanned": self.scanned, "selected": self.selected, "matched": self.matched,
                "matchedBytes": self.matched_bytes, "future": self.future,
                "oldestEligibleAgeSeconds": None if age is None else int(age)}


def _current(storage: Storage, *, now: float, plan: Plan | None) -> Iterator[Entry]:
    for e in storage.list():
        if e.mtime > now + FUTURE_TOLERANCE:
            if plan is not None:
                plan.future += 1
            continue
        yield e


def make_plan(*, policy: Policy, storage: Storage, now: float, spool_dir: str | None = None,
              exclude: frozenset[str] = frozenset(),
              progress: Callable[[str, int], None] | None = None) -> Plan:
    """Plan ``policy`` against ``storage`` as of ``now`` (the storage's clock).

    ``exclude`` holds keys that are never candidates (the consumer manifest itself).
    """
    planner = Planner.for_policy(policy, now=now)
    sealed = not planner.needs_observation and planner.seal()  # maxAge alone: one listing
    while not sealed:  # pass 1, plus refinement passes the size cap may ask for
        for n, e in enumerate(_current(storage, now=now, plan=None), 1):
            if e.key not in exclude:
                planner.observe(e)
            if progress is not None and n % 10_000 == 0:
                progress("scan", n)
        sealed = planner.seal()
    fd, path = tempfile.mkstemp(prefix="lethe-plan-", suffix=".jsonl", dir=spool_dir)
    plan = Plan(now=now, spool_path=path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as out:
            _decide_pass(planner, storage, plan, out, exclude, progress)
    except BaseException:
        os.unlink(path)
        raise
    plan.summary = planner.summary().to_dict()
    return plan


def _decide_pass(planner: Planner, storage: Storage, plan: Plan, out: TextIO,
                 exclude: frozenset[str], progress: Callable[[str, int], None] | None) -> None:
    """Pass 2. A group's deletions go to the spool as they come, but are cut off
    again (truncate to the group's start) unless the group proves unchanged since
    pass 1 once its last member has been seen: a group is never partly deleted."""
    group: str | None = None
    # spool offset and plan counters at the group's start
    mark: tuple[int, int, int, float | None] = (0, 0, 0, None)

    def close_group() -> None:
        if group is not None and not planner.group_complete(group):
            out.flush()
            out.seek(mark[0])
            out.truncate()
            plan.matched, plan.matched_bytes, plan.oldest_eligible = mark[1], mark[2], mark[3]

    for e in _current(storage, now=plan.now, plan=plan):
        plan.scanned += 1
        if e.key in exclude:
            continue
        d = planner.decide(e)
        if d.group != group:
            close_group()
            group = d.group
            out.flush()
            mark = (out.tell(), plan.matched, plan.matched_bytes, plan.oldest_eligible)
        if d.rule != "not-selected":
            plan.selected += 1
        if progress is not None and plan.scanned % 10_000 == 0:
            progress("plan", plan.scanned)
        if not d.delete:
            continue
        plan.matched += 1
        plan.matched_bytes += e.size
        if plan.oldest_eligible is None or e.mtime < plan.oldest_eligible:
            plan.oldest_eligible = e.mtime
        out.write(json.dumps({
            "key": e.key, "size": e.size, "mtime": e.mtime, "fingerprint": e.fingerprint,
            "rule": d.rule, "version_id": e.version_id, "group": d.group,
        }, ensure_ascii=False) + "\n")
    close_group()
