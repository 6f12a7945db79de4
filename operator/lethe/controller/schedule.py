"""Cron slots: which scheduled slot is due now, and which were missed.

Exactly once per slot comes from the journal (``BeginRun.slot`` is
compare-and-set against the last slot run); this module only says which slot
a leader should try, so a leader that dies at the slot's moment is replaced by
one that still runs it (within the starting deadline), never by one that runs
it again.

Daylight saving time (docs/schedules.md). A schedule names wall-clock times in
its zone; a wall time can fail to exist (clocks spring forward) or exist twice
(clocks fall back). Like Vixie cron (cron(8): "Only jobs that run at a
particular time (not specified as @hourly, nor with '*' in the hour or minute
specifier) are affected"), the answer depends on the schedule:

- *fixed-time* schedules (no ``*`` at the start of the minute or hour field,
  e.g. ``30 2 * * *``): a time in a skipped span runs once, at the first
  instant after the jump (02:30 -> 03:00 new time); a repeated time runs once,
  at its first occurrence. A daily schedule therefore runs once per local day.
- *wildcard* schedules (``0 * * * *``, ``*/15 * * * *``, ``@hourly``): they
  follow the clock as it is: a skipped time does not run, a repeated one runs
  at both occurrences, so the real interval between runs stays the same.

Jumps of 3 hours or more (a zone changing its standard offset, a whole day
skipped at the date line) are corrections, as for cron: nothing is caught up.

Slot ids are UTC instants, so two wall times that land on the same instant
(a skipped 02:00 moved to 03:00 next to a real 03:00) are one slot.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from croniter import croniter

__all__ = ["Due", "due_slot", "is_wildcard", "next_run", "slot_id", "slots_after"]

#: A clock jump at least this long is a correction, not DST (cron(8): "Clock
#: changes of more than 3 hours are considered to be corrections to the clock").
_CORRECTION = dt.timedelta(hours=3)


def slot_id(t: dt.datetime) -> str:
    """A sortable slot id: the UTC ISO time of the slot (string order = time order)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_slot(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def is_wildcard(schedule: str) -> bool:
    """Vixie cron's MIN_STAR/HR_STAR: the minute or the hour field starts with ``*``
    (``*``, ``*/15``), or the macro is ``@hourly``. Such schedules follow the clock
    through DST; the others (fixed-time) are moved or deduplicated (module doc)."""
    if schedule.startswith("@"):
        return schedule == "@hourly"
    minute, hour = schedule.split()[:2]
    return minute.startswith("*") or hour.startswith("*")


def _zone(name: str) -> dt.tzinfo:
    # UTC needs no zone database (a host without tzdata still runs UTC schedules).
    return dt.UTC if name == "UTC" else ZoneInfo(name)


def _offset_at(t: dt.datetime, zone: dt.tzinfo) -> dt.timedelta:
    off = t.astimezone(zone).utcoffset()
    assert off is not None
    return off


def _jump_end(before: dt.datetime, after: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The first instant in ``(before, after]`` with ``after``'s UTC offset (the
    moment the clock jumped), to the second: bisection, as zoneinfo does not
    expose its transitions."""
    target = _offset_at(after, zone)
    lo, hi = int(before.timestamp()), int(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(dt.datetime.fromtimestamp(mid, dt.UTC), zone) == target:
            hi = mid
        else:
            lo = mid
    return dt.datetime.fromtimestamp(hi, dt.UTC)


def _instants(wall: dt.datetime, zone: dt.tzinfo, *, wildcard: bool
              ) -> tuple[list[dt.datetime], dt.datetime]:
    """The UTC instants a naive wall time of ``zone`` runs at, and a lower bound of
    the instants of every later wall time (what makes the merge in
    :func:`slots_after` exact)."""
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    off0, off1 = first.utcoffset(), second.utcoffset()
    assert off0 is not None and off1 is not None
    u0, u1 = first.astimezone(dt.UTC), second.astimezone(dt.UTC)
    if off0 == off1:
        return [u0], u0
    if off0 > off1:  # repeated: u0 is the first occurrence, u1 the second
        return ([u0, u1] if wildcard else [u0]), u0
    # Skipped (PEP 495: fold=0 reads it with the old offset, fold=1 with the new):
    # the jump happened in (u1, u0]; everything later is at or after it.
    end = _jump_end(u1, u0, zone)
    if wildcard or off1 - off0 >= _CORRECTION:
        return [], end
    return [end], end


def slots_after(*, schedule: str, zone: dt.tzinfo, after: dt.datetime
                ) -> Iterator[dt.datetime]:
    """Every slot strictly after ``after`` (aware), as UTC instants, ascending, each once.

    Endless for a valid schedule; croniter raises ``CroniterBadDateError`` for one
    that never matches (``0 0 30 2 *``), which :func:`lethe.spec.parse_spec` rejects.
    """
    wildcard = is_wildcard(schedule)
    local = after.astimezone(zone)
    start = local.replace(tzinfo=None)
    if local.fold == 0:
        # Inside the first pass of a repeated span, the wall times just before this
        # one come again (second pass) after ``after``: start the walk early enough.
        again = local.replace(fold=1).utcoffset()
        now_off = local.utcoffset()
        assert again is not None and now_off is not None
        if again < now_off:
            start -= now_off - again
    # croniter on naive datetimes steps through wall times with no zone arithmetic.
    walls = croniter(schedule, start)
    pending: list[dt.datetime] = []
    last: dt.datetime | None = None
    while True:
        wall: dt.datetime = walls.get_next(dt.datetime)
        instants, bound = _instants(wall, zone, wildcard=wildcard)
        while pending and pending[0] < bound:
            s = heapq.heappop(pending)
            if s > after and s != last:
                last = s
                yield s
        for s in instants:
            heapq.heappush(pending, s)


@dataclass(frozen=True, slots=True)
class Due:
    slot: str | None  # the slot to run now, if any
    missed: int  # slots that passed without a run and are now beyond the deadline
    last_missed: str | None = None  # the newest of those (journaled as skipped)


def next_run(*, schedule: str, tz: str, now: float) -> dt.datetime:
    """The first slot after ``now`` (Unix seconds), as an aware UTC datetime."""
    after = dt.datetime.fromtimestamp(now, dt.UTC)
    return next(slots_after(schedule=schedule, zone=_zone(tz), after=after))


def due_slot(*, schedule: str, tz: str, now: float, last_slot: str | None, since: float,
             deadline: float, max_scan: int = 1000) -> Due:
    """The newest slot in ``(max(last_slot, since), now]`` if within ``deadline``.

    ``since`` (the policy's creation time) keeps a new policy from running
    slots that passed before it existed. Older unrun slots count as missed.
    ``now``, ``since`` are Unix seconds, ``deadline`` seconds; at most
    ``max_scan`` slots are looked at (the rest are found on later calls, as the
    newest of them is journaled as skipped).
    """
    floor = dt.datetime.fromtimestamp(since, dt.UTC)
    if last_slot is not None:
        floor = max(floor, _parse_slot(last_slot))
    now_dt = dt.datetime.fromtimestamp(now, dt.UTC)
    slots: list[dt.datetime] = []
    for s in slots_after(schedule=schedule, zone=_zone(tz), after=floor):
        if s > now_dt or len(slots) >= max_scan:
            break
        slots.append(s)
    if not slots:
        return Due(slot=None, missed=0)
    newest = slots[-1]
    if (now_dt - newest).total_seconds() <= deadline:
        return Due(slot=slot_id(newest), missed=len(slots) - 1,
                   last_missed=slot_id(slots[-2]) if len(slots) > 1 else None)
    return Due(slot=None, missed=len(slots), last_missed=slot_id(newest))
