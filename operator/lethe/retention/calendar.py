"""Calendar retention (``keepHourly`` … ``keepYearly``), restic/borg style.

For each granularity with a count N > 0: items are put into calendar buckets
(hour, day, ISO week, month, year) of their mtime, read as wall-clock time in
``rules.timeZone``; the N *most recent buckets that contain a valid item* each
keep their newest valid item (newest by the planner's total order: mtime, then
the larger key). Empty buckets (gaps) do not count, so ``keepDaily: 7`` keeps
seven days that *have* backups, like restic's ``--keep-daily``. Granularities
are independent: an item may represent its day and its week at once; an item
kept by one rule does not use up another rule's count.

A count that is not used up (fewer buckets with a valid item than N) also
keeps the *oldest* valid item, as restic does since 0.16: with ``keepDaily: 7``
and two backups on one day, both stay. It only ever keeps more, and a young
history is never thinned before it has N buckets.

Memory: per granularity at most 2N buckets, each holding one item; when the
map grows past 2N it is cut back to the N most recent. A bucket dropped then
can never come back into the N most recent, because N more recent buckets
already exist, so the result does not depend on listing order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from lethe.retention.order import mtime_of
from lethe.spec import CalendarRules

__all__ = ["GRANULARITIES", "CalendarKeeper", "Granularity", "bucket_id", "bucket_label",
           "bucket_of", "granularities_of", "local_time", "zone"]

# Timestamps outside what datetime can represent are clamped for bucketing only.
_MIN_TS = -62_135_596_800 + 2 * 86_400  # 0001-01-03
_MAX_TS = 253_402_300_799 - 2 * 86_400  # 9999-12-29
#: More than any backwards jump of a wall clock (DST, zone changes): buckets are
#: monotone in time except within such a jump.
_SLACK = 2 * 86_400


@dataclass(frozen=True, slots=True)
class Granularity:
    name: str  # "hourly"
    rule: str  # "keepHourly": the name reported as the deciding rule


GRANULARITIES: tuple[Granularity, ...] = (
    Granularity("hourly", "keepHourly"),
    Granularity("daily", "keepDaily"),
    Granularity("weekly", "keepWeekly"),
    Granularity("monthly", "keepMonthly"),
    Granularity("yearly", "keepYearly"),
)


def granularities_of(cal: CalendarRules) -> list[tuple[Granularity, int]]:
    """The configured granularities with their counts, in the fixed report order."""
    counts = {"hourly": cal.hourly, "daily": cal.daily, "weekly": cal.weekly,
              "monthly": cal.monthly, "yearly": cal.yearly}
    return [(g, counts[g.name]) for g in GRANULARITIES if counts[g.name] > 0]


def local_time(mtime: float, tz: dt.tzinfo) -> dt.datetime:
    ts = min(max(float(mtime), _MIN_TS), _MAX_TS)
    return dt.datetime.fromtimestamp(ts, tz)


def bucket_id(granularity: str, t: dt.datetime) -> int:
    """The bucket of a local time; ids increase with wall-clock time.

    Weeks are ISO weeks (Monday first; the week of 2021-01-01 is 2020-W53).
    """
    if granularity == "daily":
        return t.toordinal()
    if granularity == "hourly":
        return t.toordinal() * 24 + t.hour
    if granularity == "weekly":
        y, w, _ = t.isocalendar()
        return y * 100 + w
    if granularity == "monthly":
        return t.year * 12 + t.month - 1
    if granularity == "yearly":
        return t.year
    raise ValueError(f"unknown granularity {granularity!r}")


def bucket_label(granularity: str, t: dt.datetime) -> str:
    """How a bucket is shown in reasons: ``2025-06-14``, ``2025-W24``, ``2025-06``."""
    if granularity == "hourly":
        return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}"
    if granularity == "daily":
        return f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    if granularity == "weekly":
        y, w, _ = t.isocalendar()
        return f"{y:04d}-W{w:02d}"
    if granularity == "monthly":
        return f"{t.year:04d}-{t.month:02d}"
    return f"{t.year:04d}"


def bucket_of(granularity: str, mtime: float, tz: dt.tzinfo) -> tuple[int, str]:
    """``(bucket id, label)`` of an mtime in zone ``tz``."""
    t = local_time(mtime, tz)
    return bucket_id(granularity, t), bucket_label(granularity, t)


def zone(name: str) -> dt.tzinfo:
    """``rules.timeZone`` as a tzinfo (``UTC`` without consulting tzdata)."""
    return dt.UTC if name == "UTC" else ZoneInfo(name)


class CalendarKeeper:
    """One granularity: the newest valid item of each of the N most recent buckets."""

    __slots__ = ("_best", "_extra", "_floor", "_oldest", "_oldest_rep", "count", "granularity",
                 "tz")

    def __init__(self, *, granularity: Granularity, count: int, tz: dt.tzinfo) -> None:
        self.granularity = granularity
        self.count = count
        self.tz = tz
        #: bucket -> (sort key, id, size, arrival) of its newest valid item
        self._best: dict[int, tuple[bytes, str, int, float]] = {}
        #: the oldest valid item seen (O(1) memory), and after seal() the one kept
        #: because the count is not used up (None if the count is used up or the
        #: oldest item represents its bucket anyway)
        self._oldest: tuple[bytes, str, int, float] | None = None
        self._extra: tuple[bytes, str, int, float] | None = None
        self._floor: int | None = None  # oldest retained bucket, after seal()
        self._oldest_rep = float("inf")  # oldest representative's mtime, after seal()

    def offer(self, *, local: dt.datetime, skey: bytes, item: str, size: int,
              arrival: float) -> None:
        """A valid item; ``local`` is its mtime as wall-clock time in the rule's zone,
        ``arrival`` the newest of its mtime and ctime (carried for the size cap)."""
        rec = (skey, item, size, arrival)
        if self._oldest is None or skey < self._oldest[0]:
            self._oldest = rec
        bucket = bucket_id(self.granularity.name, local)
        cur = self._best.get(bucket)
        if cur is None:
            self._best[bucket] = rec
            if len(self._best) > 2 * self.count:
                self._prune()
        elif skey > cur[0]:
            self._best[bucket] = rec

    def _prune(self) -> None:
        keep = sorted(self._best)[-self.count:]
        self._best = {b: self._best[b] for b in keep}

    def seal(self) -> None:
        if len(self._best) > self.count:
            self._prune()
        self._floor = min(self._best) if self._best else None
        self._oldest_rep = min((mtime_of(v[0]) for v in self._best.values()),
                               default=float("inf"))
        # Fewer buckets than the count means nothing was ever pruned: the count is
        # not used up, so the oldest item stays too (restic >= 0.16).
        old = self._oldest
        self._extra = (old if old is not None and len(self._best) < self.count
                       and all(v[1] != old[1] for v in self._best.values()) else None)

    def kept(self) -> dict[str, tuple[int, bytes, int, float]]:
        """Item id -> (bucket, sort key, size, arrival) of the representatives and of
        the oldest item kept because the count is not used up (after :meth:`seal`)."""
        out = {item: (b, skey, size, arr) for b, (skey, item, size, arr) in self._best.items()}
        if self._extra is not None:
            skey, item, size, arr = self._extra
            out[item] = (self._floor if self._floor is not None else 0, skey, size, arr)
        return out

    def kept_as_oldest(self, item: str) -> bool:
        """Kept only because it is the oldest item and the count is not used up."""
        return self._extra is not None and self._extra[1] == item

    def buckets_used(self) -> int:
        """Buckets holding a valid item, up to the count (after :meth:`seal`)."""
        return len(self._best)

    def would_keep(self, *, mtime: float, skey: bytes, item: str) -> bool:
        """Would an item unseen in pass 1 have become a representative?

        Used in pass 2 so that something new since planning is never deleted
        because the plan could not know it (it is kept, "new-since-plan").
        """
        full = len(self._best) >= self.count and self._floor is not None
        if full and mtime < self._oldest_rep - _SLACK:
            # Older than every representative by more than any wall-clock jump:
            # its bucket is older than the oldest kept one, or has a newer rep.
            return False
        if not full and self._oldest is not None and skey < self._oldest[0]:
            return True  # it would have been the oldest item, kept while the count lasts
        bucket = bucket_id(self.granularity.name, local_time(mtime, self.tz))
        cur = self._best.get(bucket)
        if cur is not None:
            return skey > cur[0] and cur[1] != item
        if not full or self._floor is None:
            return True
        return bucket > self._floor

    def newcomer_floor(self) -> float:
        """An mtime below which :meth:`would_keep` is surely False (after seal)."""
        if len(self._best) < self.count or self._floor is None:
            return float("-inf")
        return self._oldest_rep - _SLACK

    def size(self) -> int:
        return len(self._best)
