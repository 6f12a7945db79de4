"""The plan/apply pipeline on real directories through a real one-node Raft journal."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from lethe.raft.node import RaftJournal
from lethe.runner import ledger
from lethe.runner.execute import Runner
from lethe.spec import parse_policy
from lethe.storage.base import DeleteResult, Entry, Fence, Storage, StorageError, no_fence
from lethe.storage.posix import PosixStorage
from tests.runner.conftest import DAY, make_file, posix_policy


class Hooked:
    """The real POSIX backend with a hook before deletes and manifest writes.

    Not a mock: every call reaches the real directory; the hook lets a test act
    at the exact moment a real writer or a failing disk would.
    """

    def __init__(self, inner: Storage, *, before_delete: Any = None,
                 fail_replace: str | None = None, now_shift: float = 0.0) -> None:
        self.inner = inner
        self.before_delete = before_delete
        self.fail_replace = fail_replace
        self.now_shift = now_shift

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def now(self) -> float:
        return self.inner.now() + self.now_shift

    def delete_batch(self, entries: Sequence[Entry], *, fence: Fence = no_fence
                     ) -> list[DeleteResult]:
        if self.before_delete:
            self.before_delete(entries)
        return self.inner.delete_batch(entries, fence=fence)

    def replace_object(self, key: str, data: bytes | BinaryIO, *,
                       if_match: str | None = None) -> str:
        if self.fail_replace and key == self.fail_replace:
            # A real disk error (EIO/ENOSPC) cannot be produced on demand here.
            raise StorageError(f"simulated write failure on {key}")
        return self.inner.replace_object(key, data, if_match=if_match)


def run(journal: RaftJournal, root: Path, name: str, *, mode: str | None = None,
        storage: Any = None, **spec: Any) -> dict[str, Any]:
    policy = parse_policy(posix_policy(root, name, **spec))
    st = storage or PosixStorage(policy.target)  # type: ignore[arg-type]
    report = Runner(policy=policy, storage=st, journal=journal, batch_size=7).run(mode=mode)
    return report.as_dict()


#: For policies that delete every selected item on purpose (the allowDeleteAll brake).
ALL = {"allowDeleteAll": True}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and ".lethe" not in p.parts}


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    for i in range(20):
        make_file(root, f"old/{i:02d}.log", age_days=40 + i)
        make_file(root, f"new/{i:02d}.log", age_days=i / 10)
    return root


def test_plan_deletes_nothing_and_counts(journal: RaftJournal, media: Path) -> None:
    before = tree(media)
    r = run(journal, media, "plan-only", mode="Plan", rules={"maxAge": "30d"})
    assert r["result"] == "Planned"
    assert (r["scanned"], r["matched"], r["deleted"]) == (40, 20, 0)
    assert tree(media) == before
    plan_file = media / r["plan_key"]
    keys = {json.loads(line)["key"] for line in plan_file.read_text().splitlines()}
    assert keys == {f"old/{i:02d}.log" for i in range(20)}


def test_default_mode_is_plan(journal: RaftJournal, media: Path) -> None:
    policy = posix_policy(media, "no-mode", rules={"maxAge": "1d"})
    del policy["spec"]["mode"]
    p = parse_policy(policy)
    r = Runner(policy=p, storage=PosixStorage(p.target), journal=journal).run()  # type: ignore[arg-type]
    assert r.result == "Planned" and r.counters["deleted"] == 0
    assert len(tree(media)) == 40


def test_apply_deletes_exactly_the_old_files_with_a_ledger(journal: RaftJournal,
                                                           media: Path) -> None:
    r = run(journal, media, "apply-old", rules={"maxAge": "30d"})
    assert r["result"] == "Succeeded", r
    assert r["deleted"] == 20 and r["bytes_freed"] == 2000 and r["errors"] == 0
    assert tree(media) == {f"new/{i:02d}.log" for i in range(20)}
    lines = list(ledger.read_run(storage=PosixStorage(parse_policy(
        posix_policy(media, "x")).target), root=".lethe/ledger", run_id=r["run_id"]))  # type: ignore[arg-type]
    assert sorted(x.key for x in lines) == sorted(f"old/{i:02d}.log" for i in range(20))
    assert all(x.rule == "maxAge" and x.policy == "test/apply-old" and x.journal_index > 0
               for x in lines)
    assert len({x.batch for x in lines}) == 3  # batches of 7: 7 + 7 + 6


def test_names_that_are_not_utf8_are_deleted_and_recorded(journal: RaftJournal,
                                                          tmp_path: Path) -> None:
    """A POSIX name is bytes; one that is not UTF-8 must be deleted *and* land in
    the ledger (the ledger write used to fail after the delete had happened)."""
    root = tmp_path / "raw"
    root.mkdir()
    for raw in (b"bad-\xff.log", "caf\u00e9.log".encode(), b"plain.log"):
        path = os.path.join(os.fsencode(root), raw)
        with open(path, "wb") as f:
            f.write(b"x")
        os.utime(path, (time.time() - 40 * DAY,) * 2)
    r = run(journal, root, "raw-names", rules={"maxAge": "30d"},
            safety=ALL)
    assert r["result"] == "Succeeded" and r["deleted"] == 3 and r["errors"] == 0, r
    assert tree(root) == set()
    lines = list(ledger.read_run(storage=PosixStorage(parse_policy(
        posix_policy(root, "x")).target), root=".lethe/ledger", run_id=r["run_id"]))  # type: ignore[arg-type]
    assert sorted(os.fsencode(x.key) for x in lines) == sorted(
        [b"bad-\xff.log", "caf\u00e9.log".encode(), b"plain.log"])


def test_changed_file_is_skipped_not_deleted(journal: RaftJournal, media: Path) -> None:
    victim = media / "old/03.log"

    def overwrite(entries: Sequence[Entry]) -> None:
        if any(e.key == "old/03.log" for e in entries):
            victim.write_bytes(b"rewritten after planning")

    policy = parse_policy(posix_policy(media, "changed", rules={"maxAge": "30d"}))
    st = Hooked(PosixStorage(policy.target), before_delete=overwrite)  # type: ignore[arg-type]
    r = run(journal, media, "changed", storage=st, rules={"maxAge": "30d"})
    assert r["skipped_changed"] == 1 and r["deleted"] == 19
    assert victim.read_bytes() == b"rewritten after planning"


def test_manifest_updated_before_deletes(journal: RaftJournal, media: Path) -> None:
    manifest = media / "manifest.json"
    manifest.write_text(json.dumps({"version": 3, "files": [
        *(f"old/{i:02d}.log" for i in range(20)), *(f"new/{i:02d}.log" for i in range(20))]}))
    seen: list[set[str]] = []

    def check(entries: Sequence[Entry]) -> None:
        listed = set(json.loads(manifest.read_text())["files"])
        seen.append({e.key for e in entries} & listed)

    policy = parse_policy(posix_policy(media, "manifest", rules={"maxAge": "30d"},
                                       manifest={"path": "manifest.json"}))
    st = Hooked(PosixStorage(policy.target), before_delete=check)  # type: ignore[arg-type]
    r = run(journal, media, "manifest", storage=st, rules={"maxAge": "30d"},
            manifest={"path": "manifest.json"})
    assert r["deleted"] == 20
    assert seen and all(not s for s in seen), "a file was deleted while still in the manifest"
    doc = json.loads(manifest.read_text())
    assert doc["version"] == 3 and doc["files"] == [f"new/{i:02d}.log" for i in range(20)]
    assert manifest.exists()  # the manifest itself is never a candidate


def test_manifest_failure_stops_before_any_delete(journal: RaftJournal, media: Path) -> None:
    manifest = media / "manifest.json"
    manifest.write_text(json.dumps([f"old/{i:02d}.log" for i in range(20)]))
    policy = parse_policy(posix_policy(media, "manifest-fail", rules={"maxAge": "30d"},
                                       manifest={"path": "manifest.json"}))
    st = Hooked(PosixStorage(policy.target), fail_replace="manifest.json")  # type: ignore[arg-type]
    r = run(journal, media, "manifest-fail", storage=st, rules={"maxAge": "30d"},
            manifest={"path": "manifest.json"})
    assert r["result"] != "Succeeded" and r["reason"] == "ManifestError"
    assert len(tree(media)) == 41  # every data file, plus the manifest


@pytest.mark.parametrize("safety", [{"maxDeletes": 5}, {"maxDeletePercent": 10}])
def test_brakes_stop_before_the_first_delete(journal: RaftJournal, media: Path,
                                             safety: dict[str, int]) -> None:
    name = "brake-" + next(iter(safety)).lower()
    r = run(journal, media, name, rules={"maxAge": "30d"}, safety=safety)
    assert r["result"] == "Stalled" and r["reason"] == "SafetyBrake"
    assert "spec.safety" in r["message"]
    assert len(tree(media)) == 40


def test_clock_skew_refuses_to_run(journal: RaftJournal, media: Path) -> None:
    policy = parse_policy(posix_policy(media, "skew", rules={"maxAge": "30d"}))
    st = Hooked(PosixStorage(policy.target), now_shift=3600)  # type: ignore[arg-type]
    r = run(journal, media, "skew", storage=st, rules={"maxAge": "30d"})
    assert r["reason"] == "ClockSkew" and r["deleted"] == 0
    assert len(tree(media)) == 40


def test_future_timestamps_are_skipped_and_reported(journal: RaftJournal,
                                                    tmp_path: Path) -> None:
    root = tmp_path / "future"
    make_file(root, "from-the-future.log", age_days=-30)
    make_file(root, "old.log", age_days=90)
    r = run(journal, root, "future", rules={"maxAge": "30d"},
            safety=ALL)
    assert r["plan"]["future"] == 1 and r["deleted"] == 1
    assert tree(root) == {"from-the-future.log"}


def test_empty_rules_keep_everything(journal: RaftJournal, media: Path) -> None:
    r = run(journal, media, "empty")
    assert r["deleted"] == 0 and len(tree(media)) == 40


def test_second_run_is_idempotent(journal: RaftJournal, media: Path) -> None:
    first = run(journal, media, "twice", rules={"maxAge": "30d"})
    second = run(journal, media, "twice", rules={"maxAge": "30d"})
    assert first["deleted"] == 20 and second["deleted"] == 0 and second["matched"] == 0


def test_age_only_policy_lists_the_target_once_per_pass(journal: RaftJournal,
                                                        media: Path) -> None:
    """maxAge alone needs no statistics: one listing plans, not two (bench finding)."""
    policy = parse_policy(posix_policy(media, "one-pass", rules={"maxAge": "30d"}))
    inner = PosixStorage(policy.target)  # type: ignore[arg-type]
    calls = [0]

    class Counting(Hooked):
        def list(self) -> Any:
            calls[0] += 1
            return self.inner.list()

    r = Runner(policy=policy, storage=Counting(inner), journal=journal).run(mode="Plan")  # type: ignore[arg-type]
    assert r.counters["matched"] == 20 and calls[0] == 1
    keep = parse_policy(posix_policy(media, "two-pass", rules={"keepLast": 5}))
    calls[0] = 0
    Runner(policy=keep, storage=Counting(inner), journal=journal).run(mode="Plan")  # type: ignore[arg-type]
    assert calls[0] == 2


def test_published_plan_is_streamed_whole(journal: RaftJournal, tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(3000):
        make_file(root, f"d{i % 30}/{i:05d}-{'x' * 60}.bin", age_days=90, size=1)
    r = run(journal, root, "streamed", mode="Plan", rules={"maxAge": "30d"},
            safety=ALL)
    lines = (root / r["plan_key"]).read_text().splitlines()
    assert len(lines) == 3000 and len({json.loads(x)["key"] for x in lines}) == 3000


def test_cancel_stops_between_batches_and_closes_the_run(journal: RaftJournal,
                                                         media: Path) -> None:
    """Deleting, editing or suspending a policy mid-run: the run stops between
    batches (the batch in hand finishes), is recorded as Aborted, and a later run
    starts fresh rather than resuming it."""
    policy = parse_policy(posix_policy(media, "cancelled", rules={"maxAge": "30d"}))
    batches = [0]

    def count(entries: Sequence[Entry]) -> None:
        batches[0] += 1

    st = Hooked(PosixStorage(policy.target), before_delete=count)  # type: ignore[arg-type]
    runner = Runner(policy=policy, storage=st, journal=journal, batch_size=7,
                    cancelled=lambda: batches[0] >= 1)
    r = runner.run()
    assert r.result == "Aborted" and "cancelled" in r.message
    assert 0 < r.counters["deleted"] < 20  # stopped part-way, between batches
    assert "test/cancelled" not in journal.read().runs
    again = Runner(policy=policy, storage=PosixStorage(policy.target), journal=journal).run()  # type: ignore[arg-type]
    assert not again.resumed and again.counters["deleted"] == 20 - r.counters["deleted"]


def test_group_that_gains_a_member_after_planning_is_kept_whole(journal: RaftJournal,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "backups"
    for i in range(10):  # bigger than one batch of 7: deleted whole across batches
        make_file(root, f"2025-01-01/part-{i}.tar", age_days=90)
    for i in range(3):
        make_file(root, f"2025-02-01/part-{i}.tar", age_days=60)
        make_file(root, f"2026-11-20/part-{i}.tar", age_days=1)
    policy = parse_policy(posix_policy(root, "groups", rules={"maxAge": "30d"},
                                       groupBy={"depth": 1}))
    inner = PosixStorage(policy.target)  # type: ignore[arg-type]

    class Writer(Hooked):
        """A backup job adds a part to 2025-02-01 right after the plan was made."""

        def list(self, prefix: str = "") -> Any:
            if prefix == "2025-02-01":
                make_file(root, "2025-02-01/part-late.tar", age_days=60)
            return self.inner.list(prefix)

    r = Runner(policy=policy, storage=Writer(inner), journal=journal, batch_size=7).run()
    assert r.result == "Succeeded", r
    assert not (root / "2025-01-01").exists() or not any((root / "2025-01-01").iterdir())
    assert sorted(p.name for p in (root / "2025-02-01").iterdir()) == [
        "part-0.tar", "part-1.tar", "part-2.tar", "part-late.tar"]
    assert len(list((root / "2026-11-20").iterdir())) == 3
    assert r.counters["deleted"] == 10 and r.counters["skippedChanged"] == 3
