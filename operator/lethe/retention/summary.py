"""Per-rule plan summaries: what each rule keeps and deletes, and why.

Every decision names exactly one *deciding rule*, so the per-rule rows add up
to the whole listing. Counts are kept per item (a group counts once) and per
entry (its members), bytes per entry. Memory is bounded: one row per rule name
(a fixed set) and at most ``sample_limit`` sample decisions per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

__all__ = ["RULE_ORDER", "Decision", "RuleStats", "Summary", "SummaryBuilder", "Why", "reason_text"]

#: Every rule name a decision can carry, in the order reports list them.
RULE_ORDER: tuple[str, ...] = (
    "maxAge", "maxTotalSize", "not-kept",                       # delete
    "minAge", "keepWithin", "keepLast", "keepHourly", "keepDaily", "keepWeekly",
    "keepMonthly", "keepYearly", "new-since-plan", "group-changed", "no-rule",
    "ungrouped", "not-selected",                                # keep
)


#: A reason, or ``(format, limit, age)`` to write it with: only sampled decisions
#: are ever read as text, so the planner defers the formatting (two durations
#: per entry otherwise). A tuple, not a closure, so equal decisions compare equal.
Why = str | tuple[Callable[[Any, float], str], Any, float]


def reason_text(why: Why) -> str:
    if isinstance(why, str):
        return why
    fmt, limit, age = why
    return fmt(limit, age)


class Decision(NamedTuple):
    """The verdict for one listed entry.

    ``rule`` is the deciding rule (see :data:`RULE_ORDER`); ``reason`` says it in
    words with the numbers. ``group`` is the entry's group with ``groupBy``
    (``None`` otherwise): every selected member of a group gets the group's
    decision. ``item`` is what the rules judged (the key, or the group).

    A named tuple (one per listed entry: cheap to build), with the reason kept
    as ``why`` and formatted only when read.
    """

    key: str
    delete: bool
    rule: str
    why: Why
    group: str | None = None
    size: int = 0
    item: str = ""

    @property
    def reason(self) -> str:
        return reason_text(self.why)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "delete": self.delete, "rule": self.rule,
                "reason": self.reason, "group": self.group, "size": self.size}


@dataclass(slots=True)
class RuleStats:
    """One row of the per-rule breakdown."""

    rule: str
    kept_items: int = 0
    kept_entries: int = 0
    kept_bytes: int = 0
    deleted_items: int = 0
    deleted_entries: int = 0
    deleted_bytes: int = 0
    #: Age in seconds of the oldest item this rule deletes (``None``: deletes none).
    oldest_eligible_age: float | None = None
    sample: list[Decision] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kept": {"items": self.kept_items, "entries": self.kept_entries,
                     "bytes": self.kept_bytes},
            "deleted": {"items": self.deleted_items, "entries": self.deleted_entries,
                        "bytes": self.deleted_bytes},
            "oldest_eligible_age": self.oldest_eligible_age,
            "sample": [d.to_dict() for d in self.sample],
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """The plan in numbers. ``rules`` lists only rules that decided something."""

    entries: int
    selected_entries: int
    items: int
    deleted_items: int
    deleted_entries: int
    deleted_bytes: int
    kept_bytes: int
    oldest_eligible_age: float | None
    rules: tuple[RuleStats, ...]
    #: Extra listing passes the size cap needed (0 in almost every plan).
    refinement_passes: int = 0

    def rule(self, name: str) -> RuleStats:
        for r in self.rules:
            if r.rule == name:
                return r
        return RuleStats(rule=name)

    def deletes_every_item(self) -> bool:
        """True when the plan deletes at least one item and every item the rules
        judged (selected, not ``ungrouped``): the ``allowDeleteAll`` brake's test.
        A zero, a typo or a clock can turn a rule into "delete the whole target";
        a policy that means it says so (``spec.safety.allowDeleteAll``)."""
        judged = self.items - self.rule("ungrouped").kept_items
        return self.deleted_items > 0 and self.deleted_items >= judged

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries, "selected_entries": self.selected_entries,
            "items": self.items, "deleted_items": self.deleted_items,
            "deleted_entries": self.deleted_entries, "deleted_bytes": self.deleted_bytes,
            "kept_bytes": self.kept_bytes, "oldest_eligible_age": self.oldest_eligible_age,
            "refinement_passes": self.refinement_passes,
            "deletes_every_item": self.deletes_every_item(),
            "rules": [r.to_dict() for r in self.rules],
        }


class SummaryBuilder:
    """Accumulates decisions into a :class:`Summary` in bounded memory."""

    def __init__(self, *, sample_limit: int) -> None:
        self.sample_limit = sample_limit
        self._rows: dict[str, RuleStats] = {}
        self.entries = 0
        self.selected_entries = 0

    def add(self, d: Decision, *, items: int, entries: int, nbytes: int, age: float | None,
            sample: Decision | None = None) -> None:
        """Record ``items`` items / ``entries`` entries decided as ``d``."""
        row = self._rows.get(d.rule)
        if row is None:
            row = self._rows[d.rule] = RuleStats(rule=d.rule)
        if d.delete:
            row.deleted_items += items
            row.deleted_entries += entries
            row.deleted_bytes += nbytes
            if age is not None and (row.oldest_eligible_age is None
                                    or age > row.oldest_eligible_age):
                row.oldest_eligible_age = age
        else:
            row.kept_items += items
            row.kept_entries += entries
            row.kept_bytes += nbytes
        if len(row.sample) < self.sample_limit:
            row.sample.append(sample or d)

    def copy(self) -> SummaryBuilder:
        """An independent copy (so :meth:`build` can add final rows without mutating)."""
        b = SummaryBuilder(sample_limit=self.sample_limit)
        b.entries, b.selected_entries = self.entries, self.selected_entries
        b._rows = {k: replace(r, sample=list(r.sample)) for k, r in self._rows.items()}
        return b

    def count_entry(self, *, selected: bool) -> None:
        self.entries += 1
        if selected:
            self.selected_entries += 1

    def build(self, *, refinement_passes: int = 0) -> Summary:
        rows = sorted(self._rows.values(), key=lambda r: (
            RULE_ORDER.index(r.rule) if r.rule in RULE_ORDER else len(RULE_ORDER), r.rule))
        selected = [r for r in rows if r.rule not in ("not-selected",)]
        ages = [r.oldest_eligible_age for r in rows if r.oldest_eligible_age is not None]
        return Summary(
            entries=self.entries,
            selected_entries=self.selected_entries,
            items=sum(r.kept_items + r.deleted_items for r in selected),
            deleted_items=sum(r.deleted_items for r in rows),
            deleted_entries=sum(r.deleted_entries for r in rows),
            deleted_bytes=sum(r.deleted_bytes for r in rows),
            kept_bytes=sum(r.kept_bytes for r in rows),
            oldest_eligible_age=max(ages) if ages else None,
            rules=tuple(rows),
            refinement_passes=refinement_passes,
        )

    def footprint(self) -> int:
        return sum(1 + len(r.sample) for r in self._rows.values())
