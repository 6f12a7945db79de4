"""Memory boundedness: the planner's containers do not grow with the listing.

Measured by counting retained records (heap slots, calendar buckets, size-cap
bins and exact-map entries, summary rows and samples), not by RSS.
"""

from __future__ import annotations

from collections.abc import Iterator

from lethe.retention import Planner
from lethe.spec import CalendarRules, Duration, GroupBy, Rules
from lethe.storage.base import Entry

from .helpers import DAY, NOW

N = 200_000


_CACHE: dict[tuple[int, bool], list[Entry]] = {}


def listing(n: int, *, grouped: bool = False) -> list[Entry]:
    """Built once per shape: the test measures the planner, not the generator."""
    if (n, grouped) not in _CACHE:
        _CACHE[(n, grouped)] = list(_gen(n, grouped=grouped))
    return _CACHE[(n, grouped)]


def _gen(n: int, *, grouped: bool) -> Iterator[Entry]:
    for i in range(n):
        key = f"set{i // 2000:04d}/f{i:07d}" if grouped else f"d{i % 97:02d}/f{i:07d}.log"
        # ~2.3 years of history, many distinct mtimes
        yield Entry(key=key, size=100 + i % 1000, mtime=NOW - (i * 397) % (850 * DAY),
                    fingerprint=str(i))


def run(planner: Planner, n: int, *, grouped: bool = False) -> dict[str, int]:
    peak: dict[str, int] = {}

    def note() -> None:
        for k, v in planner.footprint().items():
            peak[k] = max(peak.get(k, 0), v)

    for i, e in enumerate(listing(n, grouped=grouped)):
        planner.observe(e)
        if i % 10_000 == 0:
            note()
    while not planner.seal():
        for e in listing(n, grouped=grouped):
            planner.observe(e)
        note()
    deleted = 0
    for i, e in enumerate(listing(n, grouped=grouped)):
        deleted += planner.decide(e).delete
        if i % 10_000 == 0:
            note()
    note()
    assert 0 < deleted < n
    return peak


RULES = Rules(maxAge=Duration.of(700 * DAY), minAge=Duration.of(DAY), keepLast=50,
              maxTotalSize=50 * 10**6,
              calendar=CalendarRules(daily=14, weekly=8, monthly=12, yearly=3))


def test_file_mode_state_is_bounded() -> None:
    p = Planner(rules=RULES, now=NOW, exact_limit=5_000, histogram_bins=1024, sample_limit=10)
    peak = run(p, N)
    assert peak["keepLast"] <= 50
    assert peak["calendar"] <= 2 * (14 + 8 + 12 + 3)
    assert peak["sizeCap"] <= 5_000 + 1 + 2 * 1024
    assert peak["groups"] == 0
    assert peak["summary"] <= 16 * 11
    assert peak["protected"] <= 50 + 14 + 8 + 12 + 3
    s = p.summary()
    assert s.entries == N and s.rule("maxTotalSize").deleted_items > 0


def test_group_mode_state_is_o_groups() -> None:
    p = Planner(rules=RULES, now=NOW, group_by=GroupBy(depth=1), sample_limit=10)
    peak = run(p, N, grouped=True)
    assert peak["groups"] == N // 2000
    assert peak["keepLast"] <= 50 and peak["sizeCap"] <= N // 2000 + 1
