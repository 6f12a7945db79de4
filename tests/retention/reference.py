"""A deliberately naive, in-memory reference of docs/retention.md for the tests.

It holds the whole listing, sorts it, and applies the rules in the documented
order. The streaming planner must agree with it decision for decision. It is
written from docs/retention.md alone and shares no code with the planner:
months come from dateutil's relativedelta (which clamps 31 March - 1 month to
28/29 February, as the docs say), not from ``Duration.before``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from wcmatch import glob

from lethe.spec import Duration, Rules, Selection
from lethe.storage.base import Entry


@dataclass
class RefItem:
    id: str
    mtime: float
    size: int
    valid: bool
    arrival: float  # newest of mtime and ctime (of the selected members, for a group)


def _arrival(e: Entry) -> float:
    return e.mtime if e.ctime is None else max(e.mtime, e.ctime)


def _minus(t: float, d: Duration, tz: dt.tzinfo) -> float:
    """t - d: calendar months on the wall clock of tz, then fixed seconds."""
    if d.months:
        local = dt.datetime.fromtimestamp(t, tz)
        try:
            t = (local - relativedelta(months=d.months)).timestamp()
        except (ValueError, OverflowError):
            return float("-inf")
    return t - d.seconds


def _selected(sel: Selection, e: Entry) -> bool:
    flags = glob.GLOBSTAR | glob.DOTGLOB
    if e.key.startswith(".lethe/"):
        return False
    if sel.exclude and glob.globmatch(e.key, list(sel.exclude), flags=flags):
        return False
    if sel.include and not glob.globmatch(e.key, list(sel.include), flags=flags):
        return False
    if sel.minSize is not None and e.size < sel.minSize:
        return False
    return not (sel.maxSize is not None and e.size > sel.maxSize)


def _bucket(gran: str, mtime: float, tz: dt.tzinfo) -> tuple[int, ...]:
    t = dt.datetime.fromtimestamp(mtime, tz)
    if gran == "hourly":
        return (t.year, t.month, t.day, t.hour)
    if gran == "daily":
        return (t.year, t.month, t.day)
    if gran == "weekly":
        y, w, _ = t.isocalendar()
        return (y, w)
    if gran == "monthly":
        return (t.year, t.month)
    return (t.year,)


def reference_plan(rules: Rules, entries: Sequence[Entry], *, now: float,
                   selection: Selection | None = None,
                   depth: int | None = None) -> dict[str, tuple[bool, str]]:
    """key -> (delete, deciding rule) for every entry."""
    sel = selection or Selection()
    out: dict[str, tuple[bool, str]] = {}
    items: dict[str, RefItem] = {}
    member_of: dict[str, str] = {}
    v = rules.validity
    if depth is None:
        for e in entries:
            if not _selected(sel, e):
                out[e.key] = (False, "not-selected")
                continue
            valid = v is None or v.minSize is None or e.size >= v.minSize
            items[e.key] = RefItem(e.key, e.mtime, e.size, valid, _arrival(e))
            member_of[e.key] = e.key
    else:
        groups: dict[str, list[Entry]] = {}
        for e in entries:
            parts = e.key.split("/")
            if len(parts) <= depth:
                out[e.key] = (False, "ungrouped" if _selected(sel, e) else "not-selected")
                continue
            groups.setdefault("/".join(parts[:depth]), []).append(e)
        for g, members in groups.items():
            chosen = [m for m in members if _selected(sel, m)]
            for m in members:
                if m not in chosen:
                    out[m.key] = (False, "not-selected")
            if not chosen:
                continue
            total = sum(m.size for m in chosen)
            valid = True
            if v is not None:
                if v.markerFile is not None:
                    valid = any(m.key == f"{g}/{v.markerFile}" for m in members)
                if v.minSize is not None:
                    valid = valid and total >= v.minSize
            items[g] = RefItem(g, max(m.mtime for m in chosen), total, valid,
                               max(_arrival(m) for m in chosen))
            for m in chosen:
                member_of[m.key] = g

    def order(i: RefItem) -> tuple[float, str]:
        return (i.mtime, i.id)

    newest_first = sorted(items.values(), key=order, reverse=True)
    valid_newest_first = [i for i in newest_first if i.valid]
    keep_last: set[str] = set()
    if rules.keepLast:  # 0 is "not set", as in restic
        keep_last = {i.id for i in valid_newest_first[: rules.keepLast]}
    tz: dt.tzinfo = dt.UTC if rules.timeZone == "UTC" else ZoneInfo(rules.timeZone)
    cal_keep: dict[str, set[str]] = {}
    c = rules.calendar
    for gran, rule, n in (("hourly", "keepHourly", c.hourly), ("daily", "keepDaily", c.daily),
                          ("weekly", "keepWeekly", c.weekly),
                          ("monthly", "keepMonthly", c.monthly),
                          ("yearly", "keepYearly", c.yearly)):
        if n <= 0:
            continue
        best: dict[tuple[int, ...], RefItem] = {}
        for i in valid_newest_first:  # first seen per bucket is the newest
            best.setdefault(_bucket(gran, i.mtime, tz), i)
        recent = sorted(best, reverse=True)[:n]
        cal_keep[rule] = {best[b].id for b in recent}
        if len(best) < n and valid_newest_first:
            # the count is not used up: the oldest valid item stays too
            cal_keep[rule].add(valid_newest_first[-1].id)

    within = c.within if c.within is not None and not c.within.is_zero() else None
    newest_valid = [i.mtime for i in valid_newest_first if i.mtime <= now]
    anchor = newest_valid[0] if newest_valid else now
    verdict: dict[str, tuple[bool, str]] = {}
    pending: list[RefItem] = []
    for i in items.values():
        if rules.minAge is not None and i.arrival > _minus(now, rules.minAge, tz):
            verdict[i.id] = (False, "minAge")
        elif within is not None and i.mtime > _minus(anchor, within, tz):
            verdict[i.id] = (False, "keepWithin")
        elif i.id in keep_last:
            verdict[i.id] = (False, "keepLast")
        elif any(i.id in s for s in cal_keep.values()):
            first = next(r for r in ("keepHourly", "keepDaily", "keepWeekly", "keepMonthly",
                                     "keepYearly") if i.id in cal_keep.get(r, ()))
            verdict[i.id] = (False, first)
        elif rules.maxAge is not None and i.mtime < _minus(now, rules.maxAge, tz):
            verdict[i.id] = (True, "maxAge")
        else:
            pending.append(i)
    if rules.maxTotalSize is not None:
        total = sum(i.size for i in items.values() if not verdict.get(i.id, (False, ""))[0])
        for i in sorted(pending, key=order):
            if total <= rules.maxTotalSize:
                break
            verdict[i.id] = (True, "maxTotalSize")
            total -= i.size
    keep_rules = bool(rules.keepLast) or bool(cal_keep) or within is not None
    keep_only = keep_rules and rules.maxAge is None and rules.maxTotalSize is None
    for i in pending:
        if i.id not in verdict:
            verdict[i.id] = (True, "not-kept") if keep_only else (False, "no-rule")
    for key, item in member_of.items():
        out[key] = verdict[item]
    return out
