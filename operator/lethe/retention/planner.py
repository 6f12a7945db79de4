"""The streaming, multi-pass retention planner: entries in, decisions out.

Usage (the runner's loop)::

    planner = Planner(rules=policy.rules, selection=policy.selection,
                      group_by=policy.groupBy, now=storage.now())
    for e in storage.list():
        planner.observe(e)                 # pass 1: bounded state only
    while not planner.seal():              # False only when maxTotalSize needs
        for e in storage.list():           # one more look (see sizecap.py)
            planner.observe(e)
    for e in storage.list():
        d = planner.decide(e)              # pass 2: one Decision per entry
    summary = planner.summary()

Memory is O(keepLast + sum of calendar counts + size-cap bins + groups), never
O(entries): see each helper module. Decisions do not depend on the order of
the listing in pass 1; ties in mtime are broken by key (``order.py``).

The rules and how they compose are specified in ``docs/retention.md``; in short,
an item is deleted iff it is selected AND not protected (minAge, keepWithin,
keepLast, calendar, new-since-plan / group-changed) AND (older than maxAge OR
beyond maxTotalSize OR, when only keep rules are given, kept by none of them).

Timestamps: ``minAge`` reads when an item *arrived* (the newest of mtime and
``Entry.ctime``); ``maxAge``, ``keepWithin``, the calendar rules and the order
read mtime. ``maxAge``/``minAge`` count back from ``now``; ``keepWithin`` from the
newest valid item (restic), so a stalled backup job never wears history away.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator

from lethe.retention.calendar import CalendarKeeper, bucket_of, granularities_of, local_time, zone
from lethe.retention.groups import GroupRecord, group_of
from lethe.retention.keeplast import NewestKeeper
from lethe.retention.order import fmt_bytes, fmt_duration, mtime_of, sort_key
from lethe.retention.select import Selector, nfc
from lethe.retention.sizecap import SizeCap
from lethe.retention.summary import Decision, Summary, SummaryBuilder, Why, reason_text
from lethe.spec import Duration, GroupBy, Policy, Rules, Selection
from lethe.storage.base import Entry

__all__ = ["Decision", "Planner", "PlannerError", "plan"]

_UNIT = {"hourly": "hour", "daily": "day", "weekly": "ISO week", "monthly": "month",
         "yearly": "year"}


class PlannerError(RuntimeError):
    """The planner was driven out of order (e.g. ``decide`` before ``seal``)."""


_Verdict = tuple[bool, str, Why]  # (delete, rule, reason or how to write it)


class Planner:
    """Plans one run of one policy over one listing. Not thread-safe; one use."""

    def __init__(
        self,
        *,
        rules: Rules,
        selection: Selection | None = None,
        group_by: GroupBy | None = None,
        now: float,
        sample_limit: int = 20,
        exact_limit: int = 20_000,
        histogram_bins: int = 4096,
    ) -> None:
        self.rules = rules
        self.selector = Selector(selection or Selection())
        self.depth = group_by.depth if group_by is not None else None
        self.now = float(now)
        self.tz: dt.tzinfo = zone(rules.timeZone)
        cal = rules.calendar
        # A keep count or keepWithin of 0 is "not set" (restic), never "keep none".
        self._keep_last = NewestKeeper(count=rules.keepLast) if rules.keepLast else None
        self._calendars = [CalendarKeeper(granularity=g, count=n, tz=self.tz)
                           for g, n in granularities_of(cal)]
        self._cap = (SizeCap(cap=rules.maxTotalSize, exact_limit=exact_limit,
                             bins=histogram_bins) if rules.maxTotalSize is not None else None)
        self._within: Duration | None = (cal.within if cal.within is not None
                                         and not cal.within.is_zero() else None)
        #: Thresholds as instants (months are calendar months in the rules' zone):
        #: expired iff mtime < max-age cut; floor-protected iff arrival > min-age cut.
        self._max_age_cut = (rules.maxAge.before(self.now, tz=self.tz)
                             if rules.maxAge is not None else None)
        self._min_age_cut = (rules.minAge.before(self.now, tz=self.tz)
                             if rules.minAge is not None else None)
        #: keepWithin counts back from the newest valid item not after now (restic);
        #: known at seal. Kept iff mtime > the within cut.
        self._anchor = float("-inf")
        self._within_cut: float | None = None
        #: Files with keepWithin and maxTotalSize: the cap needs the within cut, known
        #: only after pass 1, so it is fed in one extra pass (phase "capfeed").
        self._defer_cap = self._cap is not None and self._within is not None and self.depth is None
        has_delete_rule = rules.maxAge is not None or rules.maxTotalSize is not None
        has_keep_rule = (self._keep_last is not None or bool(self._calendars)
                         or self._within is not None)
        #: Only keep rules given: what none of them keeps is deleted (restic's forget).
        self.keep_only = has_keep_rule and not has_delete_rule
        self._validity = rules.validity
        self._groups: dict[str, GroupRecord] = {}
        self._phase = "observe"  # observe -> (capfeed ->) (refine ->)* decide
        self._kept_last: dict[str, tuple[bytes, int, float]] = {}
        self._kept_cal: list[dict[str, tuple[int, bytes, int, float]]] = []
        #: Pass 2: items older than this cannot be new-since-plan keepers.
        self._newcomer_floor = float("inf")
        self._summary = SummaryBuilder(sample_limit=sample_limit)
        self.passes = 0

    @classmethod
    def for_policy(cls, policy: Policy, *, now: float, **kwargs: int) -> Planner:
        """A planner for a parsed :class:`~lethe.spec.Policy`."""
        return cls(rules=policy.rules, selection=policy.selection, group_by=policy.groupBy,
                   now=now, **kwargs)

    # -- helpers --------------------------------------------------------------------

    def _floor_protected(self, arrival: float) -> bool:
        """minAge: arrived (newest of mtime and ctime) less than minAge ago."""
        return self._min_age_cut is not None and arrival > self._min_age_cut

    def _within_kept(self, mtime: float) -> bool:
        """keepWithin, once the within cut is known (after pass 1)."""
        return self._within_cut is not None and mtime > self._within_cut

    def _age_protected(self, mtime: float, arrival: float) -> bool:
        return self._floor_protected(arrival) or self._within_kept(mtime)

    def _expired(self, mtime: float) -> bool:
        return self._max_age_cut is not None and mtime < self._max_age_cut

    def _file_valid(self, size: int) -> bool:
        v = self._validity
        return v is None or v.minSize is None or size >= v.minSize

    def _group_valid(self, rec: GroupRecord) -> bool:
        v = self._validity
        if v is None:
            return True
        if v.markerFile is not None and not rec.has_marker:
            return False
        return v.minSize is None or rec.total >= v.minSize

    def _is_marker(self, group: str, key: str) -> bool:
        v = self._validity
        # NFC: a marker written by a macOS client matches the name typed in the spec
        return (v is not None and v.markerFile is not None
                and nfc(key) == nfc(f"{group}/{v.markerFile}"))

    def _set_protected(self, item: str) -> bool:
        return item in self._kept_last or any(item in k for k in self._kept_cal)

    def _candidate(self, item: str, mtime: float, arrival: float) -> bool:
        """Would the size cap consider this item (after seal)?"""
        return not (self._age_protected(mtime, arrival) or self._expired(mtime)
                    or self._set_protected(item))

    # -- pass 1 ------------------------------------------------------------------------

    @property
    def needs_observation(self) -> bool:
        """False when no rule keeps statistics (only maxAge/minAge/selection): then
        pass 1 may be skipped and :meth:`seal` called at once, saving a listing."""
        return (self.depth is not None or self._keep_last is not None
                or bool(self._calendars) or self._cap is not None or self._within is not None)

    def observe(self, entry: Entry) -> None:
        """Pass 1 (and any refinement pass): look at one listed entry."""
        if self._phase == "observe":
            self._observe(entry)
        elif self._phase == "capfeed":
            self._capfeed(entry)
        elif self._phase == "refine":
            self._refine(entry)
        else:
            raise PlannerError("observe() after the plan was sealed")

    def _observe(self, e: Entry) -> None:
        selected = self.selector.selected(e.key, e.size)
        if self.depth is None:
            if selected:
                self._offer(e.key, e.mtime, _arrival(e), e.size, self._file_valid(e.size))
            return
        g = group_of(e.key, self.depth)
        if g is None:
            return
        rec = self._groups.get(g)
        if rec is None:
            rec = self._groups[g] = GroupRecord()
        rec.observe(key=e.key, fingerprint=e.fingerprint, mtime=e.mtime, size=e.size,
                    selected=selected, marker=self._is_marker(g, e.key), arrival=_arrival(e))

    def _offer(self, item: str, mtime: float, arrival: float, size: int, valid: bool) -> None:
        skey = sort_key(mtime, item)
        if valid:
            if mtime <= self.now and mtime > self._anchor:
                self._anchor = mtime
            if self._keep_last is not None:
                self._keep_last.offer(skey=skey, item=item, size=size, arrival=arrival)
            if self._calendars:
                local = local_time(mtime, self.tz)
                for c in self._calendars:
                    c.offer(local=local, skey=skey, item=item, size=size, arrival=arrival)
        if self._cap is not None and not self._defer_cap:
            if self._age_protected(mtime, arrival):
                self._cap.protect(size)
            elif not self._expired(mtime):
                self._cap.add(skey=skey, mtime=mtime, size=size)

    def _capfeed(self, e: Entry) -> None:
        """The extra pass for files with keepWithin and maxTotalSize: every keeper is
        known now, so each selected entry goes to the cap as protected or candidate."""
        assert self._cap is not None
        if not self.selector.selected(e.key, e.size):
            return
        if self._age_protected(e.mtime, _arrival(e)) or self._set_protected(e.key):
            self._cap.protect(e.size)
        elif not self._expired(e.mtime):
            self._cap.add(skey=sort_key(e.mtime, e.key), mtime=e.mtime, size=e.size)

    def _refine(self, e: Entry) -> None:
        assert self._cap is not None and self.depth is None
        if not self.selector.selected(e.key, e.size):
            return
        skey = sort_key(e.mtime, e.key)
        if self._cap.in_interval(skey) and self._candidate(e.key, e.mtime, _arrival(e)):
            self._cap.refine(skey=skey, size=e.size)

    def seal(self) -> bool:
        """End a listing pass. True: ready for :meth:`decide`. False: the size cap
        needs one more pass over the same listing through :meth:`observe`."""
        self.passes += 1
        if self._phase == "refine":
            assert self._cap is not None
            if not self._cap.resolve_refinement():
                return False
            self._phase = "decide"
            return True
        if self._phase == "capfeed":
            return self._resolve_cap()
        if self._phase != "observe":
            raise PlannerError("seal() called twice")
        if self.depth is not None:
            # Groups are offered only now; the keepWithin anchor comes first, so the
            # size cap below already knows which groups keepWithin keeps.
            for rec in self._groups.values():
                if rec.selected_count and self._group_valid(rec) and rec.newest <= self.now:
                    self._anchor = max(self._anchor, rec.newest)
            self._set_within_cut()
            for g in sorted(self._groups):
                rec = self._groups[g]
                if rec.selected_count:
                    self._offer(g, rec.newest, rec.arrival, rec.total, self._group_valid(rec))
        else:
            self._set_within_cut()
        self._seal_keepers()
        if self._defer_cap:
            self._phase = "capfeed"
            return False
        return self._resolve_cap()

    def _set_within_cut(self) -> None:
        if self._within is None:
            return
        anchor = self._anchor if self._anchor > float("-inf") else self.now
        self._within_cut = self._within.before(anchor, tz=self.tz)

    def _resolve_cap(self) -> bool:
        if self._cap is not None and not self._cap.resolve():
            if self.depth is None:
                self._phase = "refine"
                return False
            self._refine_groups_in_memory()
        if self.depth is not None:
            self._plan_groups()
        self._phase = "decide"
        return True

    def _seal_keepers(self) -> None:
        if self._keep_last is not None:
            self._kept_last = self._keep_last.kept()
        for c in self._calendars:
            c.seal()
        self._kept_cal = [c.kept() for c in self._calendars]
        floors = [c.newcomer_floor() for c in self._calendars]
        if self._keep_last is not None:
            floors.append(self._keep_last.newcomer_floor())
        self._newcomer_floor = min(floors, default=float("inf"))
        if self._cap is None or self._defer_cap:
            return
        # Items kept by keepLast / calendar count towards the cap but are never cut:
        # move the ones pass 1 counted as candidates over to the protected total.
        seen: set[str] = set()
        protected = [(i, s, z, a) for i, (s, z, a) in self._kept_last.items()]
        for kept in self._kept_cal:
            protected.extend((i, s, z, a) for i, (_, s, z, a) in kept.items())
        for item, skey, size, arrival in protected:
            if item in seen:
                continue
            seen.add(item)
            mtime = mtime_of(skey)
            if self._age_protected(mtime, arrival):
                continue
            if not self._expired(mtime):
                self._cap.withdraw(skey=skey, mtime=mtime, size=size)
            self._cap.protect(size)

    def _refine_groups_in_memory(self) -> None:
        """Groups are in memory already, so refinement passes need no re-listing."""
        assert self._cap is not None
        while True:
            for g in sorted(self._groups):
                rec = self._groups[g]
                if not rec.selected_count:
                    continue
                skey = sort_key(rec.newest, g)
                if self._cap.in_interval(skey) and self._candidate(g, rec.newest, rec.arrival):
                    self._cap.refine(skey=skey, size=rec.total)
            if self._cap.resolve_refinement():
                return

    def _plan_groups(self) -> None:
        for g, rec in self._groups.items():
            if rec.selected_count:
                rec.delete, rec.rule, why = self._judge(
                    g, rec.newest, rec.total, valid=self._group_valid(rec), pass2=False,
                    arrival=rec.arrival)
                rec.reason = reason_text(why)

    # -- judging -------------------------------------------------------------------------

    def _judge(self, item: str, mtime: float, size: int, *, valid: bool,
               pass2: bool, arrival: float) -> _Verdict:
        """The composition of all rules for one item (see docs/retention.md).

        ``arrival`` is the newest of mtime and ctime (minAge reads it); every other
        rule reads ``mtime``. Runs once per listed entry: reasons are returned
        unformatted (see :data:`~lethe.retention.summary.Why`) and the sort key is
        computed only for the rules that compare it."""
        r = self.rules
        age = self.now - mtime
        if self._floor_protected(arrival):
            if arrival > mtime:
                return False, "minAge", (_arrived_within_min_age, r.minAge, self.now - arrival)
            return False, "minAge", (_younger_than_min_age, r.minAge, age)
        if self._within_kept(mtime):
            return False, "keepWithin", (_within_keep_within, self._within,
                                         self._anchor_or_now() - mtime)
        if self._kept_last or self._calendars:
            keeps = self._keeps(item, mtime)
            if keeps:
                return False, keeps[0][0], "; ".join(k[1] for k in keeps)
        skey: bytes | None = None
        if pass2 and valid and mtime >= self._newcomer_floor:
            skey = sort_key(mtime, item)
            if ((self._keep_last is not None and self._keep_last.would_keep(skey=skey))
                    or any(c.would_keep(mtime=mtime, skey=skey, item=item)
                           for c in self._calendars)):
                return False, "new-since-plan", ("new or changed since planning; a keep rule "
                                                 "would have kept it, so it stays")
        if self._expired(mtime):
            return True, "maxAge", (_older_than_max_age, r.maxAge, age)
        cap = self._cap
        if cap is not None and cap.cutoff is not None and (
                skey or sort_key(mtime, item)) <= cap.cutoff:
            return True, "maxTotalSize", (_beyond_max_total_size, cap.cap, age)
        if self.keep_only:
            return True, "not-kept", "kept by no keep rule (only keep rules are set)"
        if not r.deletes_anything():
            return False, "no-rule", "the rule set is empty: everything is kept"
        return False, "no-rule", "no deletion rule applies"

    def _keeps(self, item: str, mtime: float) -> list[tuple[str, str]]:
        """(rule, reason) of each keep rule that keeps ``item`` as sealed after pass 1."""
        r = self.rules
        keeps: list[tuple[str, str]] = []
        what = "valid items" if self._validity is not None else "items"
        if item in self._kept_last:
            keeps.append(("keepLast", f"one of the {r.keepLast} newest {what}"))
        for c, kept in zip(self._calendars, self._kept_cal, strict=True):
            if item in kept:
                _, label = bucket_of(c.granularity.name, mtime, self.tz)
                unit = _UNIT[c.granularity.name]
                if c.kept_as_oldest(item):
                    used = c.buckets_used()
                    keeps.append((c.granularity.rule,
                                  f"the oldest {what[:-1]}, kept because {c.granularity.rule} "
                                  f"{c.count} is not used up (only {used} {unit}"
                                  f"{'' if used == 1 else 's'} with {what}), as restic does"))
                    continue
                keeps.append((c.granularity.rule,
                              f"newest of {unit} {label} ({r.timeZone}), one of the "
                              f"{c.count} most recent {unit}s kept by {c.granularity.rule}"))
        return keeps

    def _anchor_or_now(self) -> float:
        return self._anchor if self._anchor > float("-inf") else self.now

    # -- pass 2 ---------------------------------------------------------------------------

    def decide(self, entry: Entry) -> Decision:
        """Pass 2: the decision for one entry of the (re-)listing."""
        if self._phase != "decide":
            raise PlannerError("decide() before seal() returned True")
        e = entry
        why_not = self.selector.why_not(e.key, e.size)
        if self.depth is None:
            self._summary.count_entry(selected=why_not is None)
            if why_not is not None:
                d = Decision(e.key, False, "not-selected", why_not, None, e.size, e.key)
                self._summary.add(d, items=1, entries=1, nbytes=e.size, age=None)
                return d
            delete, rule, reason = self._judge(e.key, e.mtime, e.size,
                                               valid=self._file_valid(e.size), pass2=True,
                                               arrival=_arrival(e))
            d = Decision(e.key, delete, rule, reason, None, e.size, e.key)
            self._summary.add(d, items=1, entries=1, nbytes=e.size,
                              age=self.now - e.mtime)
            return d
        return self._decide_member(e, why_not)

    def _decide_member(self, e: Entry, why_not: str | None) -> Decision:
        assert self.depth is not None
        self._summary.count_entry(selected=why_not is None)
        g = group_of(e.key, self.depth)
        if g is None:
            if why_not is not None:
                d = Decision(e.key, False, "not-selected", why_not, None, e.size, e.key)
            else:
                d = Decision(e.key, False, "ungrouped",
                             f"not inside a directory at groupBy depth {self.depth}",
                             None, e.size, e.key)
            self._summary.add(d, items=1, entries=1, nbytes=e.size, age=None)
            return d
        rec = self._groups.get(g)
        if rec is None:  # a whole new group since planning
            rec = self._groups[g] = GroupRecord()
            rec.changed = True
        rec.see_again(key=e.key, fingerprint=e.fingerprint, mtime=e.mtime)
        if why_not is not None:
            d = Decision(e.key, False, "not-selected", why_not, g, e.size, g)
            self._summary.add(d, items=1, entries=1, nbytes=e.size, age=None)
            return d
        rec.entries2 += 1
        rec.bytes2 += e.size
        if rec.changed or not rec.selected_count:
            return Decision(e.key, False, "group-changed", _CHANGED, g, e.size, g)
        return Decision(e.key, rec.delete, rec.rule, rec.reason, g, e.size, g)

    def group_complete(self, group: str) -> bool:
        """After all of a group's members went through :meth:`decide`: True iff the
        group is exactly what pass 1 saw (same member keys and fingerprints).

        With ``groupBy`` the runner MUST hold a group's deletes until this returns
        True (the listing is contiguous per group, so that is when the next group
        starts, or the listing ends); on False every member is kept, rule
        ``group-changed``, and :meth:`summary` reports it so.
        """
        rec = self._groups.get(group)
        if rec is None:
            return False
        if not rec.unchanged():
            rec.changed = True
            return False
        return True

    def summary(self) -> Summary:
        """Per-rule breakdown of everything decided so far (call after pass 2)."""
        if self.depth is not None:
            return self._group_summary()
        return self._summary.build(refinement_passes=self._refinements())

    def _refinements(self) -> int:
        return self._cap.refinement_passes if self._cap is not None else 0

    def _group_summary(self) -> Summary:
        # Group rows are final only now (a group can turn out changed at its end),
        # so they are added to a copy of the per-entry builder's rows.
        b = self._summary.copy()
        for g in sorted(self._groups):
            rec = self._groups[g]
            if not rec.entries2:
                continue
            if not rec.unchanged() or not rec.selected_count:
                d = Decision(g, False, "group-changed", _CHANGED, g, rec.bytes2, g)
                age = None
            else:
                d = Decision(g, rec.delete, rec.rule, rec.reason, g, rec.bytes2, g)
                age = self.now - rec.newest
            b.add(d, items=1, entries=rec.entries2, nbytes=rec.bytes2, age=age)
        return b.build(refinement_passes=self._refinements())

    def footprint(self) -> dict[str, int]:
        """Sizes of the retained containers: the memory-boundedness test reads them."""
        return {
            "keepLast": self._keep_last.size() if self._keep_last is not None else 0,
            "calendar": sum(c.size() for c in self._calendars),
            "sizeCap": self._cap.footprint() if self._cap is not None else 0,
            "groups": len(self._groups),
            "summary": self._summary.footprint(),
            "protected": len(self._kept_last) + sum(len(k) for k in self._kept_cal),
        }


def _arrival(e: Entry) -> float:
    """When an entry arrived or last changed: the newest of mtime and ctime."""
    c = e.ctime
    return e.mtime if c is None or c < e.mtime else c


def _younger_than_min_age(limit: Duration, age: float) -> str:
    return f"younger than minAge {limit} (age {fmt_duration(age)})"


def _arrived_within_min_age(limit: Duration, since: float) -> str:
    return (f"arrived or changed {fmt_duration(since)} ago (ctime), younger than minAge "
            f"{limit}, although its mtime is older")


def _within_keep_within(limit: Duration, before_newest: float) -> str:
    return (f"within keepWithin {limit} of the newest valid item "
            f"({fmt_duration(before_newest)} before it)")


def _older_than_max_age(limit: Duration, age: float) -> str:
    return f"older than maxAge {limit} (age {fmt_duration(age)})"


def _beyond_max_total_size(cap: int, age: float) -> str:
    return f"oldest beyond maxTotalSize {fmt_bytes(int(cap))} (age {fmt_duration(age)})"


_CHANGED = ("the group gained, lost or changed a member since planning; "
            "kept whole, never partly deleted")


def plan(planner: Planner, listing: Callable[[], Iterable[Entry]]) -> Iterator[Decision]:
    """Drive every pass of ``planner`` over ``listing()`` (called once per pass)
    and yield pass 2's decisions. A convenience for the CLI, tests and diffs;
    with ``groupBy`` the caller still owns :meth:`Planner.group_complete`."""
    for e in listing():
        planner.observe(e)
    while not planner.seal():
        for e in listing():
            planner.observe(e)
    for e in listing():
        yield planner.decide(e)
