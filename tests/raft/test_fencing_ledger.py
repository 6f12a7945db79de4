"""Ledger writes are fenced side effects, compare-and-set on the term (#17 item 2).

Real directories and the real POSIX storage; the process-level races (a woken
ex-leader against a new leader) are in test_fencing_replicas.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lethe.journal import Intent, IntentEntry
from lethe.runner import ledger
from lethe.spec import PosixTarget
from lethe.storage.base import DeleteResult, Outcome, StorageError
from lethe.storage.posix import PosixStorage

RUN = "20261130T000000Z-fencing"


def _write(store: PosixStorage, term: int, outcome: Outcome, **kw: object) -> None:
    entries = (IntentEntry(key="a", fingerprint="1:1:1", size=1, rule="maxAge"),)
    ledger.write_batch(storage=store, root=".lethe/ledger", policy="ns/p", run_id=RUN,
                       intent=Intent(seq=0, term=term, index=10 + term, entries=entries,
                                     cursor=1),
                       results=[DeleteResult("a", outcome)], when=0.0, **kw)  # type: ignore[arg-type]


def _lines(store: PosixStorage) -> list[ledger.LedgerLine]:
    got = ledger.read_batch(storage=store, root=".lethe/ledger", run_id=RUN, seq=0)
    assert got is not None
    return got


@pytest.fixture
def store(tmp_path: Path) -> PosixStorage:
    s = PosixStorage(PosixTarget(path=str(tmp_path)))
    s.check_ready()
    return s


def test_an_older_term_never_replaces_a_newer_terms_file(store: PosixStorage) -> None:
    _write(store, 8, Outcome.CHANGED_SKIPPED)
    with pytest.raises(ledger.Superseded, match="term 8"):
        _write(store, 6, Outcome.DELETED)
    assert [(x.term, x.outcome) for x in _lines(store)] == [(8, "changed-skipped")]


def test_a_newer_term_replaces_an_older_terms_file(store: PosixStorage) -> None:
    _write(store, 6, Outcome.DELETED)
    _write(store, 8, Outcome.ALREADY_GONE)
    _write(store, 8, Outcome.ALREADY_GONE)  # the same term may rewrite its own file
    assert [(x.term, x.outcome) for x in _lines(store)] == [(8, "already-gone")]


def test_the_write_is_fenced(store: PosixStorage) -> None:
    class LeaseLost(Exception):
        pass

    def fence() -> None:
        raise LeaseLost

    with pytest.raises(LeaseLost):
        _write(store, 6, Outcome.DELETED, fence=fence)
    assert ledger.read_batch(storage=store, root=".lethe/ledger", run_id=RUN, seq=0) is None


def test_a_file_without_a_readable_term_is_an_error_naming_it(store: PosixStorage,
                                                              tmp_path: Path) -> None:
    path = tmp_path / ".lethe/ledger" / RUN / "000000.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("not json\n")
    with pytest.raises(StorageError, match=f"{RUN}/000000.jsonl"):
        _write(store, 6, Outcome.DELETED)
    assert path.read_text() == "not json\n"
