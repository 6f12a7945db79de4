"""``lethe plan --diff``: what changes between two versions of a policy.

Both planners see the same listing; :class:`PlanDiff` compares their decisions
entry by entry. An entry *becomes eligible* when the old policy keeps it and
the new one deletes it, and *becomes protected* in the opposite case. Memory
is bounded: counters, a (old rule -> new rule) table whose size is bounded by
the fixed set of rule names, and a bounded sample of each kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lethe.retention.planner import Planner
from lethe.retention.summary import Decision, Summary
from lethe.storage.base import Entry

__all__ = ["Change", "DiffResult", "PlanDiff", "diff_plans"]


@dataclass(frozen=True, slots=True)
class Change:
    """One entry whose fate differs between the two policies."""

    key: str
    size: int
    old: Decision
    new: Decision

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size,
                "old": {"delete": self.old.delete, "rule": self.old.rule,
                        "reason": self.old.reason},
                "new": {"delete": self.new.delete, "rule": self.new.rule,
                        "reason": self.new.reason}}


@dataclass(slots=True)
class DiffResult:
    """Counts, bytes and samples of entries that change fate."""

    entries: int = 0
    unchanged: int = 0
    became_eligible: int = 0
    became_eligible_bytes: int = 0
    became_protected: int = 0
    became_protected_bytes: int = 0
    #: ``(old rule, new rule) -> entries`` for every entry whose deciding rule changed.
    transitions: dict[tuple[str, str], int] = field(default_factory=dict)
    eligible_sample: list[Change] = field(default_factory=list)
    protected_sample: list[Change] = field(default_factory=list)
    old_summary: Summary | None = None
    new_summary: Summary | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "unchanged": self.unchanged,
            "became_eligible": {"entries": self.became_eligible,
                                "bytes": self.became_eligible_bytes,
                                "sample": [c.to_dict() for c in self.eligible_sample]},
            "became_protected": {"entries": self.became_protected,
                                 "bytes": self.became_protected_bytes,
                                 "sample": [c.to_dict() for c in self.protected_sample]},
            "transitions": [{"old": o, "new": n, "entries": c}
                            for (o, n), c in sorted(self.transitions.items())],
            "old": self.old_summary.to_dict() if self.old_summary else None,
            "new": self.new_summary.to_dict() if self.new_summary else None,
        }


class PlanDiff:
    """Feed it both policies' decisions for each entry, in listing order."""

    def __init__(self, *, sample_limit: int = 20) -> None:
        self.sample_limit = sample_limit
        self.result = DiffResult()

    def add(self, old: Decision, new: Decision) -> None:
        if old.key != new.key:
            raise ValueError(f"decisions for different entries: {old.key!r} vs {new.key!r}")
        r = self.result
        r.entries += 1
        if old.rule != new.rule:
            t = (old.rule, new.rule)
            r.transitions[t] = r.transitions.get(t, 0) + 1
        if old.delete == new.delete:
            r.unchanged += 1
            return
        change = Change(key=new.key, size=new.size, old=old, new=new)
        if new.delete:
            r.became_eligible += 1
            r.became_eligible_bytes += new.size
            if len(r.eligible_sample) < self.sample_limit:
                r.eligible_sample.append(change)
        else:
            r.became_protected += 1
            r.became_protected_bytes += new.size
            if len(r.protected_sample) < self.sample_limit:
                r.protected_sample.append(change)


def _drive(planner: Planner, listing: Callable[[], Iterable[Entry]]) -> None:
    for e in listing():
        planner.observe(e)
    while not planner.seal():
        for e in listing():
            planner.observe(e)


def diff_plans(old: Planner, new: Planner, listing: Callable[[], Iterable[Entry]], *,
               sample_limit: int = 20) -> DiffResult:
    """Plan both policies over ``listing()`` (called once per pass of each planner,
    then once for the shared decision pass) and compare. Nothing is deleted."""
    _drive(old, listing)
    _drive(new, listing)
    diff = PlanDiff(sample_limit=sample_limit)
    for e in listing():
        diff.add(old.decide(e), new.decide(e))
    diff.result.old_summary = old.summary()
    diff.result.new_summary = new.summary()
    return diff.result
