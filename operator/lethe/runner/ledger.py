"""The audit ledger: one JSON Lines file per batch, in the target itself.

Why per batch and replaced whole: a resumed batch rewrites its own file, so
a crash can neither lose nor duplicate lines, and the file's presence tells a
new leader that the batch's deletes already happened (its outcomes are then
taken from the file instead of a second delete that would only see
"already gone").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lethe.journal import Intent
from lethe.storage.base import DeleteResult, Outcome, Storage

__all__ = ["LedgerLine", "ledger_key", "read_batch", "read_run", "write_batch"]


@dataclass(frozen=True, slots=True)
class LedgerLine:
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
        return json.dumps({
            "key": self.key, "size": self.size, "fingerprint": self.fingerprint,
            "outcome": self.outcome, "rule": self.rule, "policy": self.policy,
            "run_id": self.run_id, "batch": self.batch, "journal_index": self.journal_index,
            "term": self.term, "time": self.time, "detail": self.detail,
        }, ensure_ascii=False, sort_keys=True)


def ledger_key(*, root: str, run_id: str, seq: int) -> str:
    return f"{root.strip('/')}/{run_id}/{seq:06d}.jsonl"


def write_batch(*, storage: Storage, root: str, policy: str, run_id: str, intent: Intent,
                results: Iterable[DeleteResult], when: float) -> list[LedgerLine]:
    """Write (or rewrite) the ledger file of one batch; return its lines."""
    by_key = {e.key: e for e in intent.entries}
    lines = []
    for r in results:
        e = by_key[r.key]
        lines.append(LedgerLine(
            key=r.key, size=e.size, fingerprint=e.fingerprint, outcome=r.outcome.value,
            rule=e.rule, policy=policy, run_id=run_id, batch=intent.seq,
            journal_index=intent.index, term=intent.term, time=when, detail=r.detail))
    body = "".join(line.to_json() + "\n" for line in lines).encode()
    storage.replace_object(ledger_key(root=root, run_id=run_id, seq=intent.seq), body)
    return lines


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


def counts(lines: Iterable[LedgerLine]) -> dict[str, int]:
    """Run counters as the status reports them, derived from ledger lines."""
    c = {"deleted": 0, "bytesFreed": 0, "skippedChanged": 0, "errors": 0, "locked": 0}
    for line in lines:
        if line.outcome in (Outcome.DELETED.value, Outcome.ALREADY_GONE.value):
            c["deleted"] += 1
            c["bytesFreed"] += line.size
        elif line.outcome == Outcome.CHANGED_SKIPPED.value:
            c["skippedChanged"] += 1
        elif line.outcome == Outcome.LOCKED.value:
            c["locked"] += 1
        else:
            c["errors"] += 1
    return c
