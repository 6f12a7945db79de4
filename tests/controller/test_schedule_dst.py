"""Cron slots across daylight-saving transitions (issue 14, item 5; docs/schedules.md).

The rule under test (Vixie cron's, cron(8)): a fixed-time schedule runs a wall
time that does not exist at the first instant after the jump, and a wall time
that exists twice only at its first occurrence; a wildcard schedule (``*`` at
the start of the minute or hour field) follows the clock, so it skips what is
skipped and repeats what repeats. Each case is checked two ways: the slot list
itself, and a leader ticking every minute through the night that runs whatever
:func:`due_slot` hands it (what the operator does), so a slot offered twice
would show up as two runs.

Zones: Europe/Berlin and America/New_York (1-hour shifts at different local
hours), Australia/Lord_Howe (a 30-minute shift), Asia/Kolkata (no DST, a
half-hour offset), Pacific/Apia (skipped 30 December 2011 entirely).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from lethe.controller.schedule import due_slot, is_wildcard, next_run, slot_id, slots_after


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def slots(schedule: str, tz: str, start: str, end: str) -> list[str]:
    """Slot ids in (start, end], both UTC ISO times."""
    out: list[str] = []
    for s in slots_after(schedule=schedule, zone=ZoneInfo(tz), after=utc(start)):
        if s > utc(end):
            return out
        out.append(slot_id(s))
    raise AssertionError("unreachable")


def leader_runs(schedule: str, tz: str, start: str, end: str, *, tick: int = 60) -> list[str]:
    """Slots a leader starts when it calls due_slot every ``tick`` seconds."""
    t, stop = utc(start).timestamp(), utc(end).timestamp()
    since, last, runs = t, None, []
    while t <= stop:
        d = due_slot(schedule=schedule, tz=tz, now=t, last_slot=last, since=since, deadline=300)
        if d.slot is not None:
            runs.append(d.slot)
            last = d.slot
        t += tick
    return runs


def local(ids: list[str], tz: str) -> list[str]:
    return [dt.datetime.fromisoformat(i.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
            .strftime("%m-%d %H:%M%z") for i in ids]


# (zone, spring-forward night, fall-back night): UTC windows from local evening to morning.
BERLIN = ("Europe/Berlin", ("2026-03-28T20:00:00", "2026-03-29T06:00:00"),
          ("2026-10-24T20:00:00", "2026-10-25T06:00:00"))
NEW_YORK = ("America/New_York", ("2026-03-08T02:00:00", "2026-03-08T12:00:00"),
            ("2026-11-01T02:00:00", "2026-11-01T12:00:00"))
# Lord Howe: +10:30 standard, +11 summer; 02:00 -> 02:30 in October, 02:00 -> 01:30 in April.
LORD_HOWE = ("Australia/Lord_Howe", ("2026-10-03T10:00:00", "2026-10-03T20:00:00"),
             ("2026-04-04T10:00:00", "2026-04-04T20:00:00"))


# --- fixed-time: once per local day, moved out of a gap, first of a repeat -----------

@pytest.mark.parametrize(("zone", "schedule", "spring", "fall"), [
    # Berlin: 02:30 does not exist on 29 March (-> 03:00 CEST = 01:00Z);
    # on 25 October it exists twice (00:30Z CEST, 01:30Z CET): only the first.
    (BERLIN, "30 2 * * *", ["03-29 03:00+0200"], ["10-25 02:30+0200"]),
    (NEW_YORK, "30 2 * * *", ["03-08 03:00-0400"], ["11-01 02:30-0500"]),  # NY repeats 01:xx
    (NEW_YORK, "30 1 * * *", ["03-08 01:30-0500"], ["11-01 01:30-0400"]),
    # Lord Howe: 02:15 is inside the 30-minute gap (-> 02:30 +11); 01:45 repeats in April.
    (LORD_HOWE, "15 2 * * *", ["10-04 02:30+1100"], ["04-05 02:15+1030"]),
    (LORD_HOWE, "45 1 * * *", ["10-04 01:45+1030"], ["04-05 01:45+1100"]),
])
def test_fixed_time_runs_once_per_night(zone: tuple[str, tuple[str, str], tuple[str, str]],
                                        schedule: str, spring: list[str], fall: list[str]
                                        ) -> None:
    tz, (s0, s1), (f0, f1) = zone
    assert local(slots(schedule, tz, s0, s1), tz) == spring
    assert local(slots(schedule, tz, f0, f1), tz) == fall
    assert local(leader_runs(schedule, tz, s0, s1), tz) == spring
    assert local(leader_runs(schedule, tz, f0, f1), tz) == fall


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                                "Asia/Kolkata", "UTC"])
@pytest.mark.parametrize("schedule", ["30 2 * * *", "0 2 * * *", "45 1 * * *", "@daily"])
def test_daily_runs_once_per_local_day_all_year(tz: str, schedule: str) -> None:
    """Every day of 2026 (both transitions in every DST zone here) has exactly one slot."""
    ids = slots(schedule, tz, "2025-12-31T00:00:00", "2027-01-02T00:00:00")
    per_day = Counter(dt.datetime.fromisoformat(i.replace("Z", "+00:00")).astimezone(
        ZoneInfo(tz)).date() for i in ids)
    year = {d: n for d, n in per_day.items() if d.year == 2026}
    assert len(year) == 365 and set(year.values()) == {1}, \
        {d: n for d, n in year.items() if n != 1}


def test_skipped_time_coalesces_with_the_next_real_slot() -> None:
    """``0 2,3 * * *`` on the spring night: 02:00 moves to 03:00, which is a slot
    anyway: one run, not two at the same instant."""
    tz, (s0, s1), _ = BERLIN
    assert local(slots("0 2,3 * * *", tz, s0, s1), tz) == ["03-29 03:00+0200"]
    assert local(leader_runs("0 2,3 * * *", tz, s0, s1), tz) == ["03-29 03:00+0200"]


def test_a_skipped_day_is_not_caught_up() -> None:
    """Samoa skipped 30 December 2011 (-10 -> +14): a 24-hour jump is a clock
    correction (cron(8): more than 3 hours), so that day's 02:30 is not run on the
    31st as a second run: every day that exists has one run."""
    ids = slots("30 2 * * *", "Pacific/Apia", "2011-12-27T00:00:00", "2012-01-02T00:00:00")
    assert local(ids, "Pacific/Apia") == ["12-27 02:30-1000", "12-28 02:30-1000",
                                          "12-29 02:30-1000", "12-31 02:30+1400",
                                          "01-01 02:30+1400", "01-02 02:30+1400"]


# --- wildcard: follow the clock ---------------------------------------------------

@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_hourly_runs_every_real_hour_through_both_transitions(
        zone: tuple[str, tuple[str, str], tuple[str, str]]) -> None:
    tz, spring, fall = zone
    for start, end in (spring, fall):
        ids = slots("0 * * * *", tz, start, end)
        assert len(ids) == 10  # 10 real hours, 10 runs: 9 or 11 wall hours
        steps = {(utc(b[:-1]) - utc(a[:-1])).total_seconds() for a, b in pairwise(ids)}
        assert steps == {3600.0}
        assert leader_runs("0 * * * *", tz, start, end) == ids


def test_hourly_in_the_repeated_hour_runs_twice_and_the_skipped_hour_never() -> None:
    tz = BERLIN[0]
    spring = local(slots("0 * * * *", tz, "2026-03-28T23:30:00", "2026-03-29T02:30:00"), tz)
    assert spring == ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200"]
    fall = local(slots("@hourly", tz, "2026-10-24T23:30:00", "2026-10-25T02:30:00"), tz)
    assert fall == ["10-25 02:00+0200", "10-25 02:00+0100", "10-25 03:00+0100"]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, LORD_HOWE])
def test_every_15_minutes_keeps_a_15_minute_rhythm(
        zone: tuple[str, tuple[str, str], tuple[str, str]]) -> None:
    tz, spring, fall = zone
    for start, end in (spring, fall):
        ids = slots("*/15 * * * *", tz, start, end)
        assert len(ids) == 40
        steps = {(utc(b[:-1]) - utc(a[:-1])).total_seconds() for a, b in pairwise(ids)}
        assert steps == {900.0}, local(ids, tz)
        assert leader_runs("*/15 * * * *", tz, start, end) == ids


def test_lord_howe_hourly_follows_the_half_hour_shift() -> None:
    """Hourly at minute 0 does not touch Lord Howe's 30-minute gap or repeat (they
    are 02:00-02:30 and 01:30-02:00): the wall clock simply gains or loses half an
    hour, so one interval is 90 minutes, as for cron."""
    tz = LORD_HOWE[0]
    spring = local(slots("0 * * * *", tz, "2026-10-03T13:00:00", "2026-10-03T17:00:00"), tz)
    assert spring == ["10-04 00:00+1030", "10-04 01:00+1030", "10-04 03:00+1100",
                      "10-04 04:00+1100"]
    fall = local(slots("0 * * * *", tz, "2026-04-04T12:00:00", "2026-04-04T16:30:00"), tz)
    assert fall == ["04-05 00:00+1100", "04-05 01:00+1100", "04-05 02:00+1030",
                    "04-05 03:00+1030"]


def test_no_dst_zone_is_plain() -> None:
    ids = slots("0 * * * *", "Asia/Kolkata", "2026-03-28T20:00:00", "2026-03-29T06:00:00")
    assert len(ids) == 10 and ids[0] == "2026-03-28T20:30:00Z"  # +05:30


# --- resuming inside a transition (a leader elected in the middle of it) -----------

def test_after_the_first_pass_of_a_repeat_the_second_pass_still_comes() -> None:
    """A slot run at 02:00 CEST (first pass), then the walk resumes from it: the
    second pass of the repeated hour (02:00 CET) is ahead for a wildcard schedule
    and not for a fixed-time one."""
    first = utc("2026-10-25T00:00:00")  # 02:00 CEST
    zone = ZoneInfo("Europe/Berlin")
    nxt = next(slots_after(schedule="*/30 * * * *", zone=zone, after=first))
    assert slot_id(nxt) == "2026-10-25T00:30:00Z"
    wild = [slot_id(s) for s in islice(slots_after(schedule="0 * * * *", zone=zone,
                                                   after=first), 2)]
    assert wild == ["2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"]
    fixed = next(slots_after(schedule="0 2 * * *", zone=zone, after=first))
    assert slot_id(fixed) == "2026-10-26T01:00:00Z"  # tomorrow 02:00 CET
    d = due_slot(schedule="0 2 * * *", tz="Europe/Berlin", now=utc("2026-10-25T01:00:30")
                 .timestamp(), last_slot=slot_id(first), since=0, deadline=300)
    assert d.slot is None and d.missed == 0


def test_next_run_reports_the_moved_slot() -> None:
    now = utc("2026-03-29T00:30:00").timestamp()  # 01:30 CET, 30 minutes before the jump
    assert slot_id(next_run(schedule="30 2 * * *", tz="Europe/Berlin", now=now)) \
        == "2026-03-29T01:00:00Z"  # 03:00 CEST


@pytest.mark.parametrize(("schedule", "wild"), [
    ("0 * * * *", True), ("*/15 * * * *", True), ("* 2 * * *", True), ("@hourly", True),
    ("30 2 * * *", False), ("0 1-3 * * *", False), ("0,30 9 * * 1-5", False),
    ("@daily", False), ("0 */2 * * *", True),
])
def test_wildcard_is_vixies_star_flag(schedule: str, wild: bool) -> None:
    assert is_wildcard(schedule) is wild
