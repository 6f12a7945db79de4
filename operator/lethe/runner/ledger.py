"""The audit ledger: one JSON Lines file per batch, in the target itself.

Why per batch and replaced whole: a resumed batch rewrites its own file, so
a crash can neither lose nor duplicate lines, and the file's presence tells a
new leader that the batch's deletes already happened (its outcomes are then
taken from the file instead of a second delete that would only see
"already gone").

A ledger write is a side effect like a delete (I1, I3): it is fenced
immediately before the write, and it is compare-and-set on the term. A file
is written only if absent, or over a file of the same or an older term whose
token is unchanged since it was read (POSIX: ``link`` for a new file, token
check before the rename otherwise; S3: ``If-None-Match: *`` / ``If-Match``).
So a deposed leader that wakes between its fence and its write cannot replace
the file a newer term wrote for the same batch: its write fails, it re-reads,
finds the newer term and stops with :class:`Superseded`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import NamedTuple

from lethe.journal import Intent, JournalError
from lethe.storage import pausepoint
from lethe.storage.base import (
    ConflictError,
    DeleteResult,
    Fence,
    Outcome,
    Storage,
    StorageError,
    no_fence,
)

__all__ = ["LedgerLine", "Superseded", "ledger_key", "read_batch", "read_run", "write_batch"]

#: ``replace_object``'s "only if absent" token (the same on both backends).
_ABSENT = "-"
#: Conditional writes retried after a lost race before giving up (each loss means
#: the file changed under us; only a leader of a newer term writes it).
_CAS_ATTEMPTS = 5


class Superseded(JournalError):
    """A newer term already wrote this batch's ledger file: this node was deposed
    and must not act (its lines would replace what the newer leader observed)."""


class LedgerLine(NamedTuple):
    """One line of a ledger file (a named tuple: one per deleted object)."""

    key: str
    size: int
    fingerprint: str
    outcome: str
    rule: str
    policy: str
    run_id: str
    batch: int
    journal_index: int
    term: int
    time: float
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(self._asdict(), ensure_ascii=False, sort_keys=True)


def ledger_key(*, root: str, run_id: str, seq: int) -> str:
    return f"{root.strip('/')}/{run_id}/{seq:06d}.jsonl"


def _str(s: str) -> str:
    """A JSON string, UTF-8 as is; a POSIX name that is not UTF-8 (a key with
    surrogate escapes, see storage/posix.py) as ``\\udcXX`` escapes, which
    ``json.loads`` turns back into the same key."""
    if s.isascii():
        return encode_basestring(s)
    try:
        s.encode()
    except UnicodeEncodeError:
        return encode_basestring_ascii(s)
    return encode_basestring(s)


def write_batch(*, storage: Storage, root: str, policy: str, run_id: str, intent: Intent,
                results: Iterable[DeleteResult], when: float, fence: Fence = no_fence
                ) -> list[LedgerLine]:
    """Write (or rewrite) the ledger file of one batch; return its lines.

    ``fence`` is called immediately before the write (and before each retry).
    Raises :class:`Superseded` if a newer term's file for this batch exists, or
    appears between our read and our write (see the module docstring).

    Each line is exactly :meth:`LedgerLine.to_json`, but formatted here from the
    batch's shared fields encoded once, not through a dict and an encoder per
    line: this runs once per deleted object."""
    if pausepoint.ENABLED:
        pausepoint.pause_point("ledger")
    # In sort_keys order: batch, detail, fingerprint, journal_index, key, outcome,
    # policy, rule, run_id, size, term, time.
    dumps = json.dumps
    pre = f'{{"batch": {dumps(intent.seq)}, "detail": '
    index = f', "journal_index": {dumps(intent.index)}, "key": '
    pol = f', "policy": {_str(policy)}, "rule": '
    run = f', "run_id": {_str(run_id)}, "size": '
    end = f', "term": {dumps(intent.term)}, "time": {dumps(when)}}}\n'
    lines = []
    text = []
    # Results come in the batch's order (Storage.delete_batch): pair them by position,
    # as one key can appear twice (two noncurrent versions of it).
    for e, r in zip(intent.entries, results, strict=True):
        outcome = r.outcome._value_  # not .value: an enum property, per deleted object
        lines.append(LedgerLine(r.key, e.size, e.fingerprint, outcome, e.rule, policy, run_id,
                                intent.seq, intent.index, intent.term, when, r.detail))
        text.append(f'{pre}{_str(r.detail)}, "fingerprint": {_str(e.fingerprint)}{index}'
                    f'{_str(r.key)}, "outcome": {_str(outcome)}{pol}{_str(e.rule)}{run}'
                    f'{int.__repr__(e.size)}{end}')  # json's own int formatting
    key = ledger_key(root=root, run_id=run_id, seq=intent.seq)
    body = "".join(text).encode()
    for _ in range(_CAS_ATTEMPTS):
        got = storage.read_object(key)
        token = _ABSENT
        if got is not None:
            term = _term_of(got[0], key=key)
            if term > intent.term:
                raise Superseded(f"ledger {key} was written by term {term}; not replacing "
                                 f"it with term {intent.term}'s")
            token = got[1]
        fence()
        if pausepoint.ENABLED:
            pausepoint.pause_point("ledger-put")
        try:
            storage.replace_object(key, body, if_match=token)
        except ConflictError:
            continue  # changed since we read it: read again, compare terms again
        return lines
    raise Superseded(f"ledger {key} kept changing under term {intent.term}'s write")


def _term_of(data: bytes, *, key: str) -> int:
    """The term of a ledger file (every line of a file has its writer's term);
    -1 for an empty file (an empty batch): any writer may replace it. A file
    whose first line has no readable term is not replaced: StorageError."""
    first = data.split(b"\n", 1)[0].strip()
    if not first:
        return -1
    try:
        return int(json.loads(first)["term"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"ledger file {key}: no readable term on its first line "
                           f"({type(exc).__name__}: {exc}); not replacing it") from None


def _parse(data: bytes) -> list[LedgerLine]:
    return [LedgerLine(**json.loads(raw)) for raw in data.decode().splitlines() if raw.strip()]


def read_batch(*, storage: Storage, root: str, run_id: str, seq: int) -> list[LedgerLine] | None:
    got = storage.read_object(ledger_key(root=root, run_id=run_id, seq=seq))
    return None if got is None else _parse(got[0])


def read_run(*, storage: Storage, root: str, run_id: str | None = None) -> Iterator[LedgerLine]:
    """Every ledger line under ``root`` (of one run, or all runs), in key order."""
    prefix = root.strip("/") + "/" + (f"{run_id}/" if run_id else "")
    for key in sorted(storage.list_internal(prefix)):
        got = storage.read_object(key)
        if got is not None:
            yield from _parse(got[0])


_GONE = frozenset({Outcome.DELETED.value, Outcome.ALREADY_GONE.value})
_SKIPPED, _LOCKED = Outcome.CHANGED_SKIPPED.value, Outcome.LOCKED.value
_UNSURE = Outcome.GONE_OR_REPLACED.value


def counts(lines: Iterable[LedgerLine]) -> dict[str, int]:
    """Run counters as the status reports them, derived from ledger lines.

    ``gone-or-replaced`` counts in ``skippedChanged`` (the object now at the key is
    not the planned one, and was kept) and again in ``goneOrReplaced``, its subset
    whose planned version an earlier attempt may have deleted: never in ``deleted``,
    which counts only what a writer of the ledger saw go."""
    deleted = freed = skipped = locked = errors = unsure = 0
    for line in lines:  # once per deleted object: no enum lookups in here
        outcome = line.outcome
        if outcome in _GONE:
            deleted += 1
            freed += line.size
        elif outcome == _SKIPPED:
            skipped += 1
        elif outcome == _UNSURE:
            skipped += 1
            unsure += 1
        elif outcome == _LOCKED:
            locked += 1
        else:
            errors += 1
    return {"deleted": deleted, "bytesFreed": freed, "skippedChanged": skipped,
            "errors": errors, "locked": locked, "goneOrReplaced": unsure}
