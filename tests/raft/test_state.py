"""Compare-and-set rules of the replicated JournalState, and the log codec."""

from __future__ import annotations

import pickle
from typing import Any, get_args

import pytest

from lethe.journal import (
    HISTORY_PER_POLICY,
    MAX_INFLIGHT,
    NONCURRENT_RULE,
    AdoptIntent,
    BeginRun,
    Command,
    CompleteBatch,
    Fence,
    FinishRun,
    IntentEntry,
    JournalState,
    RecordIntent,
    Replan,
    RunState,
    SkipSlot,
)
from lethe.raft.machine import decode_command, encode_command

P = "ns/policy"


def begin(state: JournalState, run: str = "r1", *, term: int = 1, index: int = 1,
          **kw: object) -> str | None:
    return state.apply(BeginRun(policy=P, run_id=run, term=term, started=0.0, now=0.0,
                                **kw), index=index)  # type: ignore[arg-type]


def intent(seq: int, *, run: str = "r1", term: int = 1) -> RecordIntent:
    return RecordIntent(policy=P, run_id=run, seq=seq, term=term,
                        entries=(IntentEntry(key=f"k{seq}", fingerprint="f", size=1, rule="r"),))


def test_fence_rejects_older_terms_everywhere() -> None:
    s = JournalState()
    assert begin(s, term=1) is None
    assert s.apply(Fence(term=2), index=2) is None
    before = pickle.dumps(s)
    reason = s.apply(intent(0, term=1), index=3)
    assert reason is not None and "stale" in reason
    assert s.apply(Fence(term=1), index=4) is not None
    s.index = 2  # apply() advances the index even when rejecting; the rest is unchanged
    assert pickle.dumps(s) == before
    assert s.apply(intent(0, term=2), index=5) is None


def test_out_of_order_sequence_rejected() -> None:
    s = JournalState()
    begin(s)
    assert s.apply(intent(1), index=2) is not None
    assert s.apply(intent(0), index=3) is None
    assert s.apply(intent(0), index=4) is not None  # duplicate
    assert s.runs[P].inflight[0].index == 3  # the Raft index that authorised it


def test_duplicate_job_and_slot_rejected() -> None:
    s = JournalState()
    assert begin(s, "r1", job="uid-1", slot="2026-01-01T03:00") is None
    assert s.apply(FinishRun(policy=P, run_id="r1", term=1, result="Succeeded", ended=1.0),
                   index=2) is None
    assert begin(s, "r2", job="uid-1") is not None
    assert begin(s, "r3", slot="2026-01-01T03:00") is not None
    assert begin(s, "r4", slot="2026-01-02T03:00") is None


def test_one_run_per_policy_and_finish_needs_no_inflight() -> None:
    s = JournalState()
    begin(s, "r1")
    assert begin(s, "r2") is not None
    s.apply(intent(0), index=2)
    fin = FinishRun(policy=P, run_id="r1", term=1, result="Succeeded", ended=1.0)
    assert s.apply(fin, index=3) is not None
    assert s.apply(CompleteBatch(policy=P, run_id="r1", seq=0, term=1, counters={"deleted": 1}),
                   index=4) is None
    assert s.apply(fin, index=5) is None
    assert s.history[P][-1].counters["deleted"] == 1


def test_inflight_and_history_bounded() -> None:
    s = JournalState()
    begin(s)
    for seq in range(MAX_INFLIGHT):
        assert s.apply(intent(seq), index=2 + seq) is None
    assert s.apply(intent(MAX_INFLIGHT), index=100) is not None
    s2 = JournalState()
    for n in range(HISTORY_PER_POLICY + 5):
        assert begin(s2, f"r{n}", index=2 * n) is None
        assert s2.apply(FinishRun(policy=P, run_id=f"r{n}", term=1, result="Succeeded",
                                  ended=1.0), index=2 * n + 1) is None
    assert len(s2.history[P]) == HISTORY_PER_POLICY


def test_codec_round_trips_every_command_with_builtins_only() -> None:
    cmds: list[Command] = [
            Fence(term=3), BeginRun(policy=P, run_id="r", term=3, started=1.0, now=2.0,
                                    slot="s", job="j", mode="Plan", planned=5),
            intent(0), CompleteBatch(policy=P, run_id="r", seq=0, term=3, counters={"deleted": 2}),
            FinishRun(policy=P, run_id="r", term=3, result="Failed", ended=3.0, message="x"),
            SkipSlot(policy=P, slot="2026-01-01T03:00", term=3),
            AdoptIntent(policy=P, run_id="r", seq=0, term=4),
            Replan(policy=P, run_id="r", term=4, matched=7)]
    assert {type(c) for c in cmds} == set(get_args(Command))  # every kind, also new ones
    for cmd in cmds:
        wire = encode_command(cmd)
        assert b"lethe" not in pickle.dumps(wire, 2)  # no class references in the log
        assert decode_command(pickle.loads(pickle.dumps(wire, 2))) == cmd


def test_adopt_moves_a_batch_to_the_new_term_keeping_its_seq() -> None:
    """A new leader finishes an old term's in-flight batch as the same batch (same
    seq, so the same ledger file), with its own term's authority and index."""
    s = JournalState()
    begin(s)
    assert s.apply(intent(0), index=2) is None
    assert s.apply(AdoptIntent(policy=P, run_id="r1", seq=1, term=2), index=3) is not None
    assert s.apply(AdoptIntent(policy=P, run_id="r1", seq=0, term=1), index=4) is not None
    assert s.apply(AdoptIntent(policy=P, run_id="r1", seq=0, term=2), index=5) is None
    held = s.runs[P].inflight[0]
    assert (held.term, held.index, held.entries) == (2, 5, intent(0).entries)
    assert s.runs[P].next_seq == 1  # no new seq
    assert s.apply(AdoptIntent(policy=P, run_id="r1", seq=0, term=2), index=6) is not None
    # the old term can no longer complete it; the new one can
    assert s.apply(CompleteBatch(policy=P, run_id="r1", seq=0, term=1, counters={}),
                   index=7) is not None
    assert s.apply(CompleteBatch(policy=P, run_id="r1", seq=0, term=2, counters={}),
                   index=8) is None


def test_run_counters_survive_any_number_of_replans() -> None:
    """Issue #17 item 4: ``scanned`` is the first plan's; ``matched`` is the plan items
    the run's batches took (noncurrent versions are not plan items) plus what the
    newest re-plan still found; batch counts add up whoever completed them."""
    s = JournalState()
    assert begin(s, planned=30, scanned=100) is None
    assert s.runs[P].counters["scanned"] == 100 and s.runs[P].counters["matched"] == 30
    noncurrent = RecordIntent(policy=P, run_id="r1", seq=1, term=1, entries=(
        IntentEntry(key="k", fingerprint="v", size=1, rule=NONCURRENT_RULE, version_id="v"),))
    for i, cmd in enumerate((intent(0), noncurrent)):
        assert s.apply(cmd, index=2 + i) is None
    assert s.apply(CompleteBatch(policy=P, run_id="r1", seq=0, term=1,
                                 counters={"deleted": 1}), index=4) is None
    # A new leader (term 2) finishes batch 1 and re-plans: 29 items left.
    assert s.apply(Replan(policy=P, run_id="r1", term=2, matched=29), index=5) is None
    assert s.runs[P].counters["matched"] == 30
    assert s.apply(intent(2, term=2), index=6) is None
    assert s.apply(Replan(policy=P, run_id="r1", term=3, matched=28), index=7) is None
    assert s.runs[P].counters["matched"] == 30  # 2 plan items recorded + 28 left
    assert s.apply(Replan(policy=P, run_id="r1", term=2, matched=1), index=8) is not None
    for seq in (1, 2):
        assert s.apply(CompleteBatch(policy=P, run_id="r1", seq=seq, term=3,
                                     counters={"deleted": 1, "goneOrReplaced": 0}),
                       index=8 + seq) is None
    assert s.apply(FinishRun(policy=P, run_id="r1", term=3, result="Succeeded", ended=1.0,
                             counters={"skippedChanged": 2}), index=11) is None
    c = s.history[P][-1].counters
    assert (c["scanned"], c["matched"], c["deleted"], c["skippedChanged"]) == (100, 30, 3, 2)


def test_log_entries_and_snapshots_from_before_a_new_field_still_load() -> None:
    """A BeginRun logged before ``scanned`` existed decodes with its default; more
    values than fields is refused. A snapshot's RunState without ``recorded`` loads."""
    name, values = encode_command(BeginRun(policy=P, run_id="r", term=1, started=1.0,
                                           now=2.0, planned=5, scanned=9))
    old = decode_command((name, values[:-1]))
    assert isinstance(old, BeginRun) and (old.planned, old.scanned) == (5, 0)
    with pytest.raises(ValueError, match="more than"):
        decode_command((name, (*values, 1)))
    s = JournalState()
    begin(s)
    run = s.runs[P]
    state: Any = run.__getstate__()  # dataclass(slots=True): (None, {field: value})
    _, slots = state
    del slots["recorded"]
    loaded = RunState.__new__(RunState)
    loaded.__setstate__((None, slots))
    assert loaded.recorded == 0 and loaded.run_id == "r1"
    assert pickle.loads(pickle.dumps(s)).runs[P] == run


def test_a_snapshot_does_not_change_with_later_entries() -> None:
    """Readers get a snapshot that later applies leave alone: each active run's
    counters and in-flight batches, history, job markers and slots. (Records are
    shared, not copied, since they never change: see JournalState.snapshot.)"""
    s = JournalState()
    begin(s, job="j0", slot="2026-01-01T00:00:00Z")
    s.apply(intent(0), index=2)
    snap = s.snapshot()
    s.apply(Replan(policy=P, run_id="r1", term=1, matched=7), index=3)
    s.apply(intent(1), index=4)
    s.apply(AdoptIntent(policy=P, run_id="r1", seq=0, term=2), index=5)
    for seq in (0, 1):
        s.apply(CompleteBatch(policy=P, run_id="r1", seq=seq, term=2,
                              counters={"deleted": 1}), index=6 + seq)
    s.apply(FinishRun(policy=P, run_id="r1", term=2, result="Succeeded", ended=1.0),
            index=8)
    s.apply(SkipSlot(policy=P, slot="2026-01-01T00:05:00Z", term=2), index=9)
    run = snap.runs[P]
    assert sorted(run.inflight) == [0] and run.inflight[0].term == 1
    assert (run.next_seq, run.counters["matched"], run.counters["deleted"]) == (1, 0, 0)
    assert snap.history == {} and not snap.jobs and snap.term == 1
    assert snap.last_slot == {P: "2026-01-01T00:00:00Z"}
    assert P not in s.runs and s.history[P][-1].counters["deleted"] == 2
