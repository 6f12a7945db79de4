"""Unit tests: one rule at a time, then the composition, selection and summaries."""

from __future__ import annotations

import pytest

from lethe.retention import Planner, PlannerError, Selector, diff_plans, plan
from lethe.spec import CalendarRules, GroupBy, Rules, Selection, Validity
from lethe.storage.base import Entry

from .helpers import DAY, HOUR, NOW, S, deleted, entry, kept, run

AGES = {"a1h": HOUR, "b1d": DAY, "c10d": 10 * DAY, "d40d": 40 * DAY, "e400d": 400 * DAY}
ENTRIES = [entry(k, NOW - age, size=100) for k, age in AGES.items()]


def test_empty_rules_keep_everything() -> None:
    d = run(Rules(), ENTRIES)
    assert kept(d) == set(AGES)
    assert {x.rule for x in d.values()} == {"no-rule"}


def test_max_age_deletes_strictly_older() -> None:
    d = run(Rules(maxAge=S(10 * DAY)), [*ENTRIES, entry("exact", NOW - 10 * DAY)])
    assert deleted(d) == {"d40d", "e400d"}
    assert d["exact"].rule == "no-rule"  # exactly maxAge old is not older
    assert d["d40d"].rule == "maxAge" and "older than maxAge 10d" in d["d40d"].reason


def test_min_age_is_absolute() -> None:
    d = run(Rules(maxAge=S(0), minAge=S(2 * DAY)), ENTRIES)
    assert kept(d) == {"a1h", "b1d"}
    assert d["a1h"].rule == "minAge"


def test_keep_last_alone_deletes_the_rest() -> None:
    d = run(Rules(keepLast=2), ENTRIES)
    assert kept(d) == {"a1h", "b1d"}
    assert d["c10d"].rule == "not-kept"


def test_keep_last_protects_from_max_age() -> None:
    d = run(Rules(maxAge=S(DAY // 2), keepLast=3), ENTRIES)
    assert kept(d) == {"a1h", "b1d", "c10d"}
    assert d["c10d"].rule == "keepLast"


def test_keep_last_zero_is_not_set() -> None:
    """restic and kopia read a keep count of 0 as "not set": it never means "keep
    none", which made `keepLast: 0` alone delete the whole target (issue #14)."""
    d = run(Rules(keepLast=0), ENTRIES)
    assert kept(d) == set(AGES) and {x.rule for x in d.values()} == {"no-rule"}
    d = run(Rules(keepLast=0, maxAge=S(20 * DAY)), ENTRIES)
    assert deleted(d) == {"d40d", "e400d"}  # as maxAge alone
    d = run(Rules(keepLast=0, calendar=CalendarRules(within=S(0))), ENTRIES)
    assert kept(d) == set(AGES)  # a zero keepWithin is not set either


def test_keep_last_counts_only_valid_items() -> None:
    es = [entry("new-bad", NOW - HOUR, size=1), entry("old-ok", NOW - 5 * DAY, size=500),
          entry("older-ok", NOW - 9 * DAY, size=500)]
    d = run(Rules(keepLast=1, validity=Validity(minSize=100)), es)
    assert kept(d) == {"old-ok"}  # the failed newest backup neither counts nor is kept
    assert d["new-bad"].rule == "not-kept"


def test_keep_within_alone() -> None:
    d = run(Rules(calendar=CalendarRules(within=S(2 * DAY))), ENTRIES)
    assert kept(d) == {"a1h", "b1d"}
    assert d["a1h"].rule == "keepWithin"


def test_max_total_size_deletes_oldest_until_under() -> None:
    d = run(Rules(maxTotalSize=250), ENTRIES)
    assert kept(d) == {"a1h", "b1d"}
    assert d["e400d"].rule == "maxTotalSize"


def test_max_total_size_exact_fit_deletes_nothing_more() -> None:
    assert kept(run(Rules(maxTotalSize=500), ENTRIES)) == set(AGES)
    assert kept(run(Rules(maxTotalSize=499), ENTRIES)) == set(AGES) - {"e400d"}


def test_protected_count_towards_cap_but_stay() -> None:
    d = run(Rules(maxTotalSize=150, keepLast=1, minAge=S(2 * DAY)), ENTRIES)
    assert kept(d) == {"a1h", "b1d"}  # 200 > 150, but both are protected


def test_cap_ignores_items_max_age_deletes() -> None:
    # maxAge removes e400d and d40d; the remaining 300 bytes are under 300.
    d = run(Rules(maxAge=S(20 * DAY), maxTotalSize=300), ENTRIES)
    assert kept(d) == {"a1h", "b1d", "c10d"}


def test_cap_with_ties_breaks_by_key() -> None:
    es = [entry(k, NOW - DAY, size=10) for k in "abcde"]
    assert kept(run(Rules(maxTotalSize=25), es)) == {"d", "e"}


def test_cap_refinement_passes_are_exact() -> None:
    es = [entry(f"k{i:04d}", NOW - (i % 37) * 60 - (i // 37), size=1 + i % 7)
          for i in range(600)]
    want = run(Rules(maxTotalSize=1000), es)
    got_planner = Planner(rules=Rules(maxTotalSize=1000), now=NOW, exact_limit=8,
                          histogram_bins=4)
    got = {d.key: d for d in plan(got_planner, lambda: es)}
    assert kept(got) == kept(want)
    assert got_planner.passes > 2  # the refinement really ran
    assert got_planner.summary().refinement_passes == got_planner.passes - 1


def test_cap_refinement_with_many_equal_mtimes() -> None:
    es = [entry(f"same/{i:05d}", NOW - DAY, size=3) for i in range(500)]
    p = Planner(rules=Rules(maxTotalSize=300), now=NOW, exact_limit=5, histogram_bins=3)
    d = {x.key: x for x in plan(p, lambda: es)}
    assert kept(d) == {f"same/{i:05d}" for i in range(400, 500)}


def test_selection_globs_and_sizes() -> None:
    s = Selector(Selection(include=("**/*.log",), exclude=("**/keep/**",), minSize=10,
                           maxSize=100))
    assert s.selected("a.log", 50) and s.selected("x/y/.hidden.log", 50)
    assert not s.selected("x/keep/a.log", 50)  # exclude wins
    assert not s.selected("a.txt", 50)
    assert not s.selected("a.log", 9) and not s.selected("a.log", 101)
    assert s.selected("a.log", 10) and s.selected("a.log", 100)  # bounds inclusive
    assert not s.selected(".lethe/ledger/x.log", 50)


def test_not_selected_entries_are_kept_and_reported() -> None:
    sel = Selection(include=("*.log",))
    d = run(Rules(maxAge=S(0)), [entry("a.log", NOW - DAY), entry("b.txt", NOW - DAY)],
            selection=sel)
    assert deleted(d) == {"a.log"}
    assert d["b.txt"].rule == "not-selected"


def test_new_since_plan_is_never_deleted() -> None:
    es = [entry(f"k{i}", NOW - i * DAY) for i in range(1, 6)]
    p = Planner(rules=Rules(keepLast=2), now=NOW)
    for e in es:
        p.observe(e)
    assert p.seal()
    newer = entry("fresh", NOW - 10)
    d = p.decide(newer)
    assert not d.delete and d.rule == "new-since-plan"
    assert p.decide(es[4]).delete


def test_driving_out_of_order_raises() -> None:
    p = Planner(rules=Rules(), now=NOW)
    with pytest.raises(PlannerError):
        p.decide(ENTRIES[0])
    assert p.seal()
    with pytest.raises(PlannerError):
        p.observe(ENTRIES[0])


def test_summary_per_rule() -> None:
    p = Planner(rules=Rules(maxAge=S(20 * DAY), keepLast=1), now=NOW, sample_limit=1)
    list(plan(p, lambda: ENTRIES))
    s = p.summary()
    assert s.entries == 5 and s.deleted_items == 2 and s.deleted_bytes == 200
    assert s.rule("maxAge").deleted_items == 2
    assert s.rule("maxAge").oldest_eligible_age == 400 * DAY
    assert s.rule("keepLast").kept_items == 1
    assert s.rule("no-rule").kept_items == 2
    assert len(s.rule("maxAge").sample) == 1
    assert s.oldest_eligible_age == 400 * DAY
    assert s.to_dict()["rules"][0]["rule"] == "maxAge"


def test_diff_between_policies() -> None:
    old = Planner(rules=Rules(maxAge=S(30 * DAY)), now=NOW)
    new = Planner(rules=Rules(maxAge=S(5 * DAY), keepLast=3), now=NOW)
    r = diff_plans(old, new, lambda: ENTRIES)
    assert r.became_eligible == 0 or {c.key for c in r.eligible_sample} == set()
    # old deletes d40d, e400d; new deletes d40d, e400d too (c10d kept by keepLast)
    assert r.became_protected == 0 and r.unchanged == 5
    new2 = Planner(rules=Rules(maxAge=S(5 * DAY)), now=NOW)
    old2 = Planner(rules=Rules(maxAge=S(30 * DAY)), now=NOW)
    r2 = diff_plans(old2, new2, lambda: ENTRIES)
    assert r2.became_eligible == 1 and r2.eligible_sample[0].key == "c10d"
    assert r2.transitions[("no-rule", "maxAge")] == 1
    r3 = diff_plans(Planner(rules=Rules(maxAge=S(5 * DAY)), now=NOW),
                    Planner(rules=Rules(maxAge=S(30 * DAY)), now=NOW), lambda: ENTRIES)
    assert r3.became_protected == 1 and r3.became_protected_bytes == 100
    assert r3.to_dict()["became_protected"]["entries"] == 1


# --- groups -------------------------------------------------------------------------


def backup_set(name: str, mtime: float, *, complete: bool = True, size: int = 100
               ) -> list[Entry]:
    es = [entry(f"{name}/db.tar", mtime - 60, size=size), entry(f"{name}/files.tar", mtime,
                                                                 size=size)]
    if complete:
        es.append(entry(f"{name}/COMPLETE", mtime, size=0))
    return es


def test_groups_are_kept_or_deleted_whole() -> None:
    es = (backup_set("s1", NOW - 40 * DAY) + backup_set("s2", NOW - 20 * DAY)
          + backup_set("s3", NOW - DAY) + [entry("README", NOW - 400 * DAY)])
    d = run(Rules(maxAge=S(30 * DAY)), es, depth=1)
    assert deleted(d) == {"s1/db.tar", "s1/files.tar", "s1/COMPLETE"}
    assert d["README"].rule == "ungrouped"
    assert d["s1/db.tar"].group == "s1"


def test_group_aged_by_newest_member() -> None:
    es = [entry("s/old", NOW - 90 * DAY), entry("s/new", NOW - DAY)]
    assert deleted(run(Rules(maxAge=S(30 * DAY)), es, depth=1)) == set()


def test_group_validity_marker_and_keep_last() -> None:
    es = (backup_set("s1", NOW - 3 * DAY) + backup_set("s2", NOW - 2 * DAY)
          + backup_set("s3", NOW - DAY, complete=False))
    rules = Rules(keepLast=1, validity=Validity(markerFile="COMPLETE"))
    d = run(rules, es, depth=1)
    assert {x.group for x in d.values() if not x.delete} == {"s2"}
    assert d["s3/db.tar"].rule == "not-kept"


def test_group_that_changed_since_planning_is_kept_whole() -> None:
    es = backup_set("s1", NOW - 40 * DAY)
    p = Planner(rules=Rules(maxAge=S(30 * DAY)), group_by=GroupBy(depth=1), now=NOW)
    for e in es:
        p.observe(e)
    assert p.seal()
    d1 = p.decide(es[0])
    assert d1.delete  # provisional: the runner holds it until group_complete()
    p.decide(es[1])
    p.decide(es[2])
    late = entry("s1/late.tar", NOW - 41 * DAY)  # unseen in pass 1, not newer
    d4 = p.decide(late)
    assert not d4.delete and d4.rule == "group-changed"
    assert not p.group_complete("s1")
    s = p.summary()
    assert s.deleted_items == 0 and s.rule("group-changed").kept_items == 1


def test_group_complete_when_unchanged() -> None:
    es = backup_set("s1", NOW - 40 * DAY)
    p = Planner(rules=Rules(maxAge=S(30 * DAY)), group_by=GroupBy(depth=1), now=NOW)
    ds = list(plan(p, lambda: es))
    assert all(d.delete for d in ds) and p.group_complete("s1")
    assert p.summary().deleted_items == 1 and p.summary().deleted_entries == 3


def test_group_with_newer_member_is_changed_at_once() -> None:
    es = backup_set("s1", NOW - 40 * DAY)
    p = Planner(rules=Rules(maxAge=S(30 * DAY)), group_by=GroupBy(depth=1), now=NOW)
    for e in es:
        p.observe(e)
    p.seal()
    d = p.decide(entry("s1/files.tar", NOW - HOUR, fp="changed"))
    assert d.rule == "group-changed" and not d.delete


def test_unselected_members_of_a_group_stay() -> None:
    es = [*backup_set("s1", NOW - 40 * DAY), entry("s1/keep/notes", NOW - 50 * DAY)]
    d = run(Rules(maxAge=S(30 * DAY)), es, depth=1, selection=Selection(exclude=("**/keep/**",)))
    assert d["s1/keep/notes"].rule == "not-selected"
    assert deleted(d) == {"s1/db.tar", "s1/files.tar", "s1/COMPLETE"}


def test_group_cap_uses_group_totals() -> None:
    es = backup_set("s1", NOW - 3 * DAY) + backup_set("s2", NOW - 2 * DAY)
    d = run(Rules(maxTotalSize=250), es, depth=1, exact_limit=1, histogram_bins=2)
    assert {x.group for x in d.values() if x.delete} == {"s1"}


# --- which timestamp each rule reads (issue #14, item 3) -------------------------------

RESTORED = entry("restored.tar", NOW - 5 * 365 * DAY, ctime=NOW - 10)  # tar -x a minute ago


def test_min_age_protects_a_restored_file_by_its_ctime() -> None:
    d = run(Rules(maxAge=S(30 * DAY), minAge=S(HOUR)), [RESTORED])
    assert kept(d) == {"restored.tar"} and d["restored.tar"].rule == "minAge"
    assert "ctime" in d["restored.tar"].reason and "10s ago" in d["restored.tar"].reason


def test_max_age_and_calendar_read_mtime_not_ctime() -> None:
    # without minAge, maxAge reads mtime (find -mtime): the restored file is 5 years old
    assert deleted(run(Rules(maxAge=S(30 * DAY)), [RESTORED])) == {"restored.tar"}
    es = [RESTORED, entry("new", NOW - DAY, ctime=NOW - DAY)]
    d = run(Rules(keepLast=1), es)
    assert d["restored.tar"].rule == "not-kept"  # the order is by mtime


def test_min_age_ctime_older_than_mtime_reads_mtime() -> None:
    e = entry("odd", NOW - 60, ctime=NOW - 10 * DAY)  # a clock jump; the newer counts
    assert run(Rules(maxAge=S(0), minAge=S(HOUR)), [e])["odd"].rule == "minAge"


def test_group_min_age_reads_its_newest_arrival() -> None:
    es = [entry("s1/a", NOW - 900 * DAY), entry("s1/b", NOW - 900 * DAY, ctime=NOW - 60)]
    d = run(Rules(maxAge=S(30 * DAY), minAge=S(HOUR)), es, depth=1)
    assert kept(d) == {"s1/a", "s1/b"} and d["s1/a"].rule == "minAge"


def test_min_age_with_size_cap_counts_restored_files_as_protected() -> None:
    es = [*ENTRIES, entry("r", NOW - 500 * DAY, size=100, ctime=NOW - 60)]
    d = run(Rules(maxTotalSize=250, minAge=S(HOUR)), es, exact_limit=1, histogram_bins=2)
    assert d["r"].rule == "minAge"
    assert kept(d) == {"r", "a1h"}  # r and a1h are 200 bytes of the 250


# --- restic semantics (issue #14, item 8) ------------------------------------------------


def test_oldest_item_reason_says_why() -> None:
    es = [entry("t0100", NOW - 11 * HOUR), entry("t2300", NOW - HOUR)]
    d = run(Rules(calendar=CalendarRules(daily=7)), es)
    assert kept(d) == {"t0100", "t2300"}
    assert "oldest" in d["t0100"].reason and "keepDaily 7 is not used up" in d["t0100"].reason
    assert "only 1 day" in d["t0100"].reason


def test_an_item_older_than_the_oldest_arriving_after_planning_stays() -> None:
    es = [entry("a", NOW - HOUR), entry("b", NOW - 2 * HOUR)]
    p = Planner(rules=Rules(calendar=CalendarRules(daily=7)), now=NOW)
    for e in es:
        p.observe(e)
    assert p.seal()
    late = p.decide(entry("older", NOW - 3 * HOUR))  # restored into the same day
    assert not late.delete and late.rule == "new-since-plan"


def test_keep_within_counts_from_the_newest_valid_item() -> None:
    # a stalled backup job: the newest backup is 40 days old
    es = [entry(f"b{i}", NOW - (40 + i) * DAY, size=100) for i in range(10)]
    es.append(entry("failed", NOW - DAY, size=1))  # not valid: does not move the window
    rules = Rules(calendar=CalendarRules(within=S(5 * DAY)), validity=Validity(minSize=50))
    d = run(rules, es)
    assert kept(d) >= {"b0", "b1", "b2", "b3", "b4"} and "b5" in deleted(d)
    assert "of the newest valid item" in d["b4"].reason


def test_keep_within_and_size_cap_need_one_extra_pass() -> None:
    es = [entry(f"b{i}", NOW - (40 + i) * DAY, size=100) for i in range(10)]
    p = Planner(rules=Rules(maxTotalSize=300, calendar=CalendarRules(within=S(5 * DAY))),
                now=NOW)
    d = {x.key: x for x in plan(p, lambda: es)}
    # keepWithin keeps b0..b4 (500 bytes > the cap): the cap deletes only the rest
    assert kept(d) == {f"b{i}" for i in range(5)}
    assert {d[f"b{i}"].rule for i in range(5, 10)} == {"maxTotalSize"}
    assert p.passes == 2
