"""Golden tables for calendar retention, each case checked by hand.

Every case lists the items (key, UTC wall-clock time[, size]), the rules, the
time zone used for buckets, "now", and the keys that must be KEPT; all other
selected items must be deleted. ``rules`` is what a policy's ``spec.rules``
says, so the cases double as examples for docs/retention.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest

from lethe.spec import CalendarRules, Duration, Rules, Validity, parse_duration

from .helpers import deleted, entry, kept, run, ts
from .reference import reference_plan

_CAL = {"keepHourly": "hourly", "keepDaily": "daily", "keepWeekly": "weekly",
        "keepMonthly": "monthly", "keepYearly": "yearly"}


def rules_of(spec: dict[str, Any]) -> Rules:
    def dur(key: str) -> Duration | None:
        v = spec.get(key)
        return None if v is None else parse_duration(v, field=key) if isinstance(v, str) \
            else Duration.of(v)

    cal = CalendarRules(within=dur("keepWithin"),
                        **{v: spec.get(k, 0) for k, v in _CAL.items()})
    validity = Validity(minSize=spec["validMinSize"]) if "validMinSize" in spec else None
    return Rules(maxAge=dur("maxAge"), minAge=dur("minAge"),
                 keepLast=spec.get("keepLast"), calendar=cal,
                 timeZone=spec.get("timeZone", "UTC"), validity=validity)


@dataclass
class Case:
    name: str
    rules: dict[str, Any]
    now: str
    items: list[tuple[Any, ...]]
    kept: list[str]
    rule_of: dict[str, str] = field(default_factory=dict)  # key -> expected deciding rule


D, H = 86400, 3600


def _series(start: dt.date, end: dt.date, *, hour: int, skip: Any) -> list[tuple[Any, ...]]:
    out = []
    day = start
    while day <= end:
        if not skip(day):
            out.append((f"b-{day.isoformat()}", f"{day.isoformat()} {hour:02d}:00"))
        day += dt.timedelta(days=1)
    return out


def _gappy(day: dt.date) -> bool:
    """The 400-day series' gaps: 10-12 June 2025, all of March 2025, every 13th."""
    return (day.day == 13 or (day.year, day.month) == (2025, 3)
            or dt.date(2025, 6, 10) <= day <= dt.date(2025, 6, 12))


SERIES_400 = _series(dt.date(2024, 5, 11), dt.date(2025, 6, 14), hour=2, skip=_gappy)
assert len(_series(dt.date(2024, 5, 11), dt.date(2025, 6, 14), hour=2,
                   skip=lambda d: False)) == 400

CASES = [
    Case("daily: one per day keeps the newest N days",
         {"keepDaily": 3}, "2025-06-15 12:00",
         [(f"d{d}", f"2025-06-{d} 03:00") for d in range(10, 15)],
         ["d12", "d13", "d14"]),
    Case("daily: gaps do not count, older days fill in",
         {"keepDaily": 3}, "2025-06-15 12:00",
         [("d08", "2025-06-08 03:00"), ("d09", "2025-06-09 03:00"),
          ("d12", "2025-06-12 03:00"), ("d14", "2025-06-14 03:00")],
         ["d09", "d12", "d14"]),
    Case("daily: several per day keeps the last of each day",
         {"keepDaily": 2}, "2025-06-15 12:00",
         [("12-23", "2025-06-12 23:00"), ("13-01", "2025-06-13 01:00"),
          ("13-13", "2025-06-13 13:00"), ("14-02", "2025-06-14 02:00"),
          ("14-22", "2025-06-14 22:00")],
         ["13-13", "14-22"]),
    Case("daily: equal mtimes, the larger key represents the day",
         {"keepDaily": 1}, "2025-06-15 12:00",
         [("a", "2025-06-14 10:00"), ("b", "2025-06-14 10:00"), ("c", "2025-06-14 09:00")],
         ["b"]),
    Case("daily: Europe/Berlin summer, 22:30 UTC is already the next day",
         {"keepDaily": 2, "timeZone": "Europe/Berlin"}, "2025-06-15 12:00",
         [("x2130", "2025-06-13 21:30"), ("x2230", "2025-06-13 22:30"),
          ("x14", "2025-06-14 10:00")],
         ["x2130", "x14"]),
    Case("daily: the same items in UTC pick differently",
         {"keepDaily": 2}, "2025-06-15 12:00",
         [("x2130", "2025-06-13 21:30"), ("x2230", "2025-06-13 22:30"),
          ("x14", "2025-06-14 10:00")],
         ["x2230", "x14"]),
    Case("daily: Europe/Berlin winter, 23:30 UTC is 00:30 the next day",
         {"keepDaily": 2, "timeZone": "Europe/Berlin"}, "2025-01-12 12:00",
         [("a", "2025-01-10 12:00"), ("b", "2025-01-10 23:30"), ("c", "2025-01-11 12:00")],
         ["a", "c"]),
    Case("daily: the same winter items in UTC",
         {"keepDaily": 2}, "2025-01-12 12:00",
         [("a", "2025-01-10 12:00"), ("b", "2025-01-10 23:30"), ("c", "2025-01-11 12:00")],
         ["b", "c"]),
    Case("monthly: America/New_York, 1 March 03:00 UTC is still February",
         {"keepMonthly": 2, "timeZone": "America/New_York"}, "2025-03-20 12:00",
         [("feb15", "2025-02-15 12:00"), ("mar01", "2025-03-01 03:00"),
          ("mar10", "2025-03-10 12:00")],
         ["mar01", "mar10"]),
    Case("weekly: ISO weeks across the 2024/2025 boundary (30 Dec 2024 is 2025-W01)",
         {"keepWeekly": 2}, "2025-01-10 12:00",
         [("dec28", "2024-12-28 12:00"), ("dec30", "2024-12-30 12:00"),
          ("jan01", "2025-01-01 12:00"), ("jan05", "2025-01-05 12:00"),
          ("jan06", "2025-01-06 12:00")],
         ["jan05", "jan06"]),
    Case("weekly: 2020-W53 spans New Year (31 Dec 2020 and 3 Jan 2021)",
         {"keepWeekly": 3}, "2021-01-05 12:00",
         [("dec27", "2020-12-27 12:00"), ("dec31", "2020-12-31 12:00"),
          ("jan03", "2021-01-03 12:00"), ("jan04", "2021-01-04 12:00")],
         ["dec27", "jan03", "jan04"]),
    Case("weekly: Asia/Kolkata, Sunday 19:00 UTC is Monday 00:30 IST",
         {"keepWeekly": 2, "timeZone": "Asia/Kolkata"}, "2025-06-10 12:00",
         [("sun18", "2025-06-08 18:00"), ("sun19", "2025-06-08 19:00")],
         ["sun18", "sun19"]),
    Case("weekly: the same items in UTC share one week (keepWeekly 2 not used up: "
         "the oldest stays too)",
         {"keepWeekly": 2}, "2025-06-10 12:00",
         [("sun18", "2025-06-08 18:00"), ("sun19", "2025-06-08 19:00")],
         ["sun18", "sun19"]),
    Case("weekly: the same week with keepWeekly 1 (used up): only the newest",
         {"keepWeekly": 1}, "2025-06-10 12:00",
         [("sun18", "2025-06-08 18:00"), ("sun19", "2025-06-08 19:00")],
         ["sun19"], {"sun18": "not-kept"}),
    Case("monthly: months without items are skipped",
         {"keepMonthly": 3}, "2025-06-15 12:00",
         [("jan05", "2025-01-05 12:00"), ("jan31", "2025-01-31 12:00"),
          ("mar01", "2025-03-01 12:00"), ("mar15", "2025-03-15 12:00"),
          ("may02", "2025-05-02 12:00")],
         ["jan31", "mar15", "may02"]),
    Case("yearly: the last item of each of the 2 most recent years",
         {"keepYearly": 2}, "2025-06-15 12:00",
         [("y22", "2022-06-01 12:00"), ("y23a", "2023-01-01 12:00"),
          ("y23b", "2023-12-31 23:00"), ("y25", "2025-01-01 00:00")],
         ["y23b", "y25"]),
    Case("yearly: Europe/Berlin, 31 Dec 23:30 UTC belongs to the next year",
         {"keepYearly": 2, "timeZone": "Europe/Berlin"}, "2025-06-15 12:00",
         [("jun23", "2023-06-01 12:00"), ("eve23", "2023-12-31 23:30"),
          ("may24", "2024-05-01 12:00")],
         ["jun23", "may24"]),
    Case("hourly: last item of each of the 3 most recent hours",
         {"keepHourly": 3}, "2025-06-15 15:00",
         [("1005", "2025-06-15 10:05"), ("1040", "2025-06-15 10:40"),
          ("1110", "2025-06-15 11:10"), ("1300", "2025-06-15 13:00"),
          ("1359", "2025-06-15 13:59"), ("1401", "2025-06-15 14:01")],
         ["1110", "1359", "1401"]),
    Case("hourly: Berlin DST fall-back, both 02:30 local times share one hour",
         {"keepHourly": 2, "timeZone": "Europe/Berlin"}, "2024-10-27 06:00",
         [("cest0230", "2024-10-27 00:30"), ("cet0230", "2024-10-27 01:30"),
          ("cet0310", "2024-10-27 02:10")],
         ["cet0230", "cet0310"]),
    Case("keepLast + keepDaily: union of both, rule reported is keepLast first",
         {"keepLast": 2, "keepDaily": 3}, "2025-06-15 12:00",
         [(f"d{d}", f"2025-06-{d} 03:00") for d in range(10, 15)]
         + [("d14pm", "2025-06-14 15:00")],
         ["d12", "d13", "d14", "d14pm"],
         {"d14pm": "keepLast", "d14": "keepLast", "d13": "keepDaily", "d10": "not-kept"}),
    Case("minAge floor with keepLast: young items stay whatever keepLast says",
         {"keepLast": 1, "minAge": 2 * D}, "2025-06-15 12:00",
         [("age1d", "2025-06-14 12:00"), ("age36h", "2025-06-14 00:00"),
          ("age3d", "2025-06-12 12:00"), ("age4d", "2025-06-11 12:00")],
         ["age1d", "age36h"],
         {"age1d": "minAge", "age36h": "minAge", "age3d": "not-kept"}),
    Case("keepWithin + keepDaily",
         {"keepWithin": 2 * D, "keepDaily": 1}, "2025-06-15 12:00",
         [("h12", "2025-06-15 00:00"), ("d1", "2025-06-14 12:00"),
          ("d3", "2025-06-12 12:00"), ("d5", "2025-06-10 12:00")],
         ["h12", "d1"], {"h12": "keepWithin", "d1": "keepWithin", "d3": "not-kept"}),
    Case("several per day with keepLast and minAge",
         {"keepDaily": 5, "keepLast": 2, "minAge": 12 * H}, "2025-06-15 12:00",
         [(f"{d}T{h:02d}", f"2025-06-{d} {h:02d}:00") for d in range(5, 15)
          for h in (1, 9, 17)] + [("15T01", "2025-06-15 01:00"), ("15T09", "2025-06-15 09:00")],
         ["15T01", "15T09", "14T17", "13T17", "12T17", "11T17"],
         {"15T09": "minAge", "14T17": "keepDaily", "5T01": "not-kept"}),
    Case("validity: a failed (too small) backup never represents its day",
         {"keepDaily": 2, "validMinSize": 100}, "2025-06-15 12:00",
         [("d14ok", "2025-06-14 10:00", 500), ("d14bad", "2025-06-14 20:00", 5),
          ("d13ok", "2025-06-13 10:00", 500)],
         ["d13ok", "d14ok"], {"d14bad": "not-kept"}),
    # issue #14, item 8: restic (>= 0.16) semantics
    Case("restic: keepDaily 7 with two items on one day keeps both (count not used up)",
         {"keepDaily": 7}, "2025-06-15 12:00",
         [("t0100", "2025-06-14 01:00"), ("t2300", "2025-06-14 23:00")],
         ["t0100", "t2300"], {"t0100": "keepDaily", "t2300": "keepDaily"}),
    Case("restic: the oldest is kept by each rule whose count is not used up",
         {"keepDaily": 2, "keepMonthly": 3}, "2025-06-15 12:00",
         [("may01", "2025-05-01 10:00"), ("may02", "2025-05-02 10:00"),
          ("jun13", "2025-06-13 10:00"), ("jun14", "2025-06-14 10:00")],
         ["may01", "may02", "jun13", "jun14"],
         {"may01": "keepMonthly", "may02": "keepMonthly", "jun13": "keepDaily"}),
    Case("restic: keepWithin counts back from the newest item, not from now",
         {"keepWithin": "7d", "keepMonthly": 12}, "2025-06-15 12:00",
         [("b10", "2025-06-05 12:00"), ("b11", "2025-06-04 12:00"),
          ("b12", "2025-06-03 12:00")],
         ["b10", "b11", "b12"], {"b10": "keepWithin", "b12": "keepWithin"}),
    Case("keepWithin from the newest: older than the window goes",
         {"keepWithin": "2d"}, "2025-06-15 12:00",
         [("new", "2025-06-05 12:00"), ("in", "2025-06-03 12:01"),
          ("edge", "2025-06-03 12:00"), ("out", "2025-06-01 12:00")],
         ["new", "in"], {"edge": "not-kept", "out": "not-kept"}),
    Case("keepWithin 1mo is a calendar month back from the newest (31 Mar -> 28 Feb)",
         {"keepWithin": "1mo", "keepLast": 1}, "2025-04-02 12:00",
         [("mar31", "2025-03-31 12:00"), ("feb28pm", "2025-02-28 12:01"),
          ("feb28", "2025-02-28 12:00"), ("feb27", "2025-02-27 12:00")],
         ["mar31", "feb28pm"], {"feb28": "not-kept"}),
    Case("maxAge 6mo is six calendar months before now, not six minutes",
         {"maxAge": "6mo"}, "2025-08-31 12:00",
         [("mar01", "2025-03-01 12:00"), ("feb28", "2025-02-28 12:00"),
          ("feb27", "2025-02-27 11:59")],
         ["mar01", "feb28"], {"feb27": "maxAge", "feb28": "no-rule"}),
    Case("maxAge 6mo in Europe/Berlin: months on the local clock (13:00 CET -> 13:00 CEST)",
         {"maxAge": "6mo", "timeZone": "Europe/Berlin"}, "2025-01-15 12:00",
         [("in", "2024-07-15 11:01"), ("out", "2024-07-15 10:59")],
         ["in"], {"out": "maxAge"}),
    Case("maxAge 6mo in UTC: the same items, the cut one hour later",
         {"maxAge": "6mo"}, "2025-01-15 12:00",
         [("in", "2024-07-15 12:00"), ("out", "2024-07-15 11:01")],
         ["in"], {"out": "maxAge"}),
    Case("maxAge 1y: a calendar year (2024 has 366 days)",
         {"maxAge": "1y"}, "2025-03-01 00:00",
         [("in", "2024-03-01 00:00"), ("out", "2024-02-29 23:59")],
         ["in"], {"out": "maxAge"}),
    Case("400 days with gaps: daily 7, weekly 4, monthly 6, yearly 2",
         {"keepDaily": 7, "keepWeekly": 4, "keepMonthly": 6, "keepYearly": 2},
         "2025-06-15 12:00", SERIES_400,
         ["b-2025-06-14", "b-2025-06-09", "b-2025-06-08", "b-2025-06-07", "b-2025-06-06",
          "b-2025-06-05", "b-2025-06-04",                    # 7 days (10-13 June missing)
          "b-2025-06-01", "b-2025-05-25",                    # weeks W22, W21
          "b-2025-05-31", "b-2025-04-30", "b-2025-02-28",    # months (March missing)
          "b-2025-01-31", "b-2024-12-31"],                   # Jan, Dec; 2024's last day
         {"b-2025-06-14": "keepDaily", "b-2025-06-08": "keepDaily",
          "b-2025-06-01": "keepWeekly", "b-2025-05-31": "keepMonthly",
          "b-2024-12-31": "keepMonthly", "b-2024-12-30": "not-kept"}),
    Case("400 days: monthly 3 + yearly 2 + maxAge 180d keeps the young and the reps",
         {"keepMonthly": 3, "keepYearly": 2, "maxAge": 180 * D},
         "2025-06-15 12:00", SERIES_400,
         [k for k, t in SERIES_400 if t > "2024-12-17 12:00"],
         {"b-2024-12-17": "maxAge", "b-2024-05-11": "maxAge", "b-2024-12-18": "no-rule",
          "b-2025-06-14": "keepMonthly", "b-2024-12-31": "keepYearly"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Case) -> None:
    rules = rules_of(case.rules)
    entries = [entry(it[0], ts(it[1]), it[2] if len(it) > 2 else 1) for it in case.items]
    decisions = run(rules, entries, now=ts(case.now))
    assert kept(decisions) == set(case.kept)
    assert deleted(decisions) == {e.key for e in entries} - set(case.kept)
    for key, rule in case.rule_of.items():
        assert decisions[key].rule == rule, (key, decisions[key])
    # The naive reference agrees too (it is what the property tests trust).
    ref = reference_plan(rules, entries, now=ts(case.now))
    assert {k for k, (dl, _) in ref.items() if not dl} == set(case.kept)


def test_enough_golden_cases() -> None:
    assert len(CASES) >= 20


def test_400_day_counts() -> None:
    """Hand count: 221 days from 2024-05-11 to 2024-12-17, minus eight 13ths."""
    case = CASES[-1]
    entries = [entry(k, ts(t)) for k, t in case.items]
    decisions = run(rules_of(case.rules), entries, now=ts(case.now))
    assert len(deleted(decisions)) == 213
