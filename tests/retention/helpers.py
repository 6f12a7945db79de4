"""Small builders shared by the retention tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from lethe.retention import Decision, Planner, plan
from lethe.spec import Duration, GroupBy, Rules, Selection
from lethe.storage.base import Entry

DAY = 86400
HOUR = 3600
#: A fixed "now" for the tests: 2025-06-15 12:00:00 UTC.
NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC).timestamp()


def S(seconds: int) -> Duration:
    """A fixed duration of ``seconds`` (policies write 30d; tests compute)."""
    return Duration.of(seconds)


def ts(text: str, tz: str = "UTC") -> float:
    """'2025-06-15 12:00' (wall clock in ``tz``) -> epoch seconds."""
    from zoneinfo import ZoneInfo
    zone: dt.tzinfo = dt.UTC if tz == "UTC" else ZoneInfo(tz)
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return dt.datetime.strptime(text, fmt).replace(tzinfo=zone).timestamp()


def entry(key: str, mtime: float, size: int = 1, fp: str | None = None,
          ctime: float | None = None) -> Entry:
    return Entry(key=key, size=size, mtime=mtime, fingerprint=fp or f"{key}:{size}:{mtime}",
                 ctime=ctime)


def run(rules: Rules, entries: Sequence[Entry], *, now: float = NOW,
        selection: Selection | None = None, depth: int | None = None,
        **kw: int) -> dict[str, Decision]:
    planner = Planner(rules=rules, selection=selection,
                      group_by=GroupBy(depth=depth) if depth else None, now=now, **kw)
    return {d.key: d for d in plan(planner, lambda: list(entries))}


def kept(decisions: dict[str, Decision]) -> set[str]:
    return {k for k, d in decisions.items() if not d.delete}


def deleted(decisions: dict[str, Decision]) -> set[str]:
    return {k for k, d in decisions.items() if d.delete}


def keys(entries: Iterable[Entry]) -> list[str]:
    return [e.key for e in entries]
