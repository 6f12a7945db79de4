"""Cron slots: which scheduled slot is due now, and which were missed.

Exactly once per slot comes from the journal (``BeginRun.slot`` is
compare-and-set against the last slot run); this module only says which slot
a leader should try, so a leader that dies at the slot's moment is replaced by
one that still runs it (within the starting deadline), never by one that runs
it again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from croniter import croniter

__all__ = ["Due", "due_slot", "next_run", "slot_id"]


def slot_id(t: dt.datetime) -> str:
    """A sortable slot id: the UTC ISO time of the slot (string order = time order)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_slot(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Due:
    slot: str | None  # the slot to run now, if any
    missed: int  # slots that passed without a run and are now beyond the deadline
    last_missed: str | None = None  # the newest of those (journaled as skipped)


def next_run(*, schedule: str, tz: str, now: float) -> dt.datetime:
    base = dt.datetime.fromtimestamp(now, ZoneInfo(tz))
    nxt: dt.datetime = croniter(schedule, base).get_next(dt.datetime)
    return nxt


def due_slot(*, schedule: str, tz: str, now: float, last_slot: str | None, since: float,
             deadline: float, max_scan: int = 1000) -> Due:
    """The newest slot in ``(max(last_slot, since), now]`` if within ``deadline``.

    ``since`` (the policy's creation time) keeps a new policy from running
    slots that passed before it existed. Older unrun slots count as missed.
    """
    zone = ZoneInfo(tz)
    floor = dt.datetime.fromtimestamp(since, dt.UTC)
    if last_slot is not None:
        floor = max(floor, _parse_slot(last_slot))
    it = croniter(schedule, floor.astimezone(zone))
    slots: list[dt.datetime] = []
    now_dt = dt.datetime.fromtimestamp(now, dt.UTC)
    for _ in range(max_scan):
        s: dt.datetime = it.get_next(dt.datetime)
        if s > now_dt:
            break
        slots.append(s)
    if not slots:
        return Due(slot=None, missed=0)
    newest = slots[-1]
    if (now_dt - newest).total_seconds() <= deadline:
        return Due(slot=slot_id(newest), missed=len(slots) - 1,
                   last_missed=slot_id(slots[-2]) if len(slots) > 1 else None)
    return Due(slot=None, missed=len(slots), last_missed=slot_id(newest))
