"""The POSIX backend's thread pool (latency-bound storage) on real directories.

tmpfs and a local disk answer a ``stat`` in microseconds, so the instance's
own probe would (rightly) stay sequential there; these tests set
``latency_bound = True`` to drive the concurrent listing and deletes over real
files. Mocks only where noted.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

import lethe.storage.posix as posix
from lethe.spec import PosixTarget
from lethe.storage.base import Outcome, StorageError
from lethe.storage.posix import PosixStorage

PARALLELISM = 8


def put(root: Path, rel: str, data: bytes = b"x", mtime: float = 1000) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, (mtime, mtime))
    return p


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def _store(root: Path, parallelism: int) -> PosixStorage:
    s = PosixStorage(PosixTarget(path=str(root)), parallelism=parallelism)
    s.check_ready()
    return s


@pytest.fixture
def par(root: Path) -> Iterator[PosixStorage]:
    s = _store(root, PARALLELISM)
    s.latency_bound = True  # see the module docstring
    yield s
    s.close()


def _quarantined(root: Path) -> list[Path]:
    return list(root.rglob(".lethe-del-*"))


def test_concurrent_listing_yields_what_the_sequential_one_does(root: Path,
                                                               par: PosixStorage) -> None:
    """Same entries in the same order (groupBy and keepLast read list() in this
    order): nested directories, a protected one, a symlink, odd names."""
    for d in range(4):
        for f in range(57):
            put(root, f"d{d}/f{f:03d}", mtime=1000 + f)
        put(root, f"d{d}/sub/deeper/x{d}")
    put(root, "a.txt")
    put(root, "kept/.lethe-keep")
    put(root, "kept/secret")
    (root / "d0/link").symlink_to(root / "a.txt")
    seq = _store(root, 1)
    try:
        expected = list(seq.list())
    finally:
        seq.close()
    assert len(expected) == 4 * 58 + 1
    assert list(par.list()) == expected


def test_concurrent_listing_is_bounded_and_releases_descriptors(root: Path,
                                                                par: PosixStorage) -> None:
    """At most 2 x parallelism stats are submitted ahead of the consumer (no queue
    of a whole directory), and closing the listing early leaves nothing open."""
    for f in range(500):
        put(root, f"d/f{f:03d}")
    started = [0]
    real = posix._lstat

    def counting(ent: os.DirEntry[str]) -> posix._Stat:
        started[0] += 1  # under the GIL; only compared loosely below
        return real(ent)

    ahead = 0
    with mock.patch.object(posix, "_lstat", counting):  # counts, changes nothing
        for n, _entry in enumerate(par.list(), start=1):
            ahead = max(ahead, started[0] - n)
    assert ahead <= 2 * PARALLELISM
    before = len(os.listdir("/proc/self/fd"))
    it = par.list()
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert len(os.listdir("/proc/self/fd")) == before


def test_subdirectories_read_ahead_keep_order_and_bound_descriptors(root: Path,
                                                                   par: PosixStorage) -> None:
    """Many small directories (a date-partitioned tree): the pool opens and reads
    them ahead, yet the listing equals the sequential one, at most
    _PREFETCH_DIRS descriptors (+ the open levels) are held at any time, and
    closing the listing midway releases every one of them."""
    for day in range(150):
        put(root, f"2026/{day:03d}/a.log")
        put(root, f"2026/{day:03d}/b.log")
        if day % 10 == 0:
            put(root, f"2026/{day:03d}/nested/c.log")
    put(root, "2026/077/.lethe-keep")
    (root / "2026/zz-link").symlink_to(root / "2026/001")
    seq = _store(root, 1)
    try:
        expected = list(seq.list())
    finally:
        seq.close()
    before = len(os.listdir("/proc/self/fd"))
    peak = 0
    got = []
    for entry in par.list():
        got.append(entry)
        peak = max(peak, len(os.listdir("/proc/self/fd")) - before)
    assert got == expected and len(got) == 149 * 2 + 15  # day 077 is protected
    assert peak <= posix._PREFETCH_DIRS + 5
    assert len(os.listdir("/proc/self/fd")) == before
    for stop_at in (1, 40, 200):
        it = par.list()
        for _ in range(stop_at):
            next(it)
        it.close()  # type: ignore[attr-defined]
        assert len(os.listdir("/proc/self/fd")) == before, stop_at


def test_concurrent_deletes_keep_order_outcomes_and_fingerprint_checks(
        root: Path, par: PosixStorage) -> None:
    """Every slice does the whole I3 delete: files rewritten after the listing
    (spread over all slices) are kept with their new content, gone ones are
    ALREADY_GONE, results come back in the input order, and more than one
    thread did the work."""
    for d in range(3):
        for f in range(100):
            put(root, f"d{d}/f{f:03d}", b"old")
    entries = list(par.list())
    changed = {e.key for e in entries[5::7]}
    gone = {e.key for e in entries[3::11]} - changed
    for key in changed:
        with open(root / key, "ab") as fh:
            fh.write(b"NEW")
    for key in gone:
        os.unlink(root / key)
    threads: set[str] = set()

    def fence() -> None:
        threads.add(threading.current_thread().name)

    results = par.delete_batch(entries, fence=fence)
    assert [r.key for r in results] == [e.key for e in entries]
    for r in results:
        want = (Outcome.CHANGED_SKIPPED if r.key in changed else
                Outcome.ALREADY_GONE if r.key in gone else Outcome.DELETED)
        assert r.outcome is want, r
    assert len({t for t in threads if t.startswith("posix")}) > 1
    assert sorted(str(p.relative_to(root)) for p in root.rglob("f*")) == sorted(changed)
    assert all((root / k).read_bytes() == b"oldNEW" for k in changed)
    assert _quarantined(root) == []


def test_every_rename_and_unlink_of_every_thread_follows_its_own_fence_call(
        root: Path, par: PosixStorage) -> None:
    """The #17 contract under concurrency: in each thread, the fence is called
    immediately before each quarantine rename and each unlink. Recorded by
    wrapping the rename and ``os.unlink`` (they still act for real)."""
    for f in range(240):
        put(root, f"d{f % 4}/f{f:03d}")
    entries = list(par.list())
    armed = threading.local()
    violations: list[str] = []
    real_quarantine = PosixStorage._quarantine
    real_unlink = os.unlink

    def fence() -> None:
        armed.ok = True

    def quarantine(self: PosixStorage, dfd: int, name: str, tmp: str) -> None:
        if not getattr(armed, "ok", False):
            violations.append(f"rename {name} without a fence")
        armed.ok = False
        real_quarantine(self, dfd, name, tmp)

    def unlink(path: str, *args: object, **kwargs: object) -> None:
        if str(path).startswith(".lethe-del-"):
            if not getattr(armed, "ok", False):
                violations.append(f"unlink {path} without a fence")
            armed.ok = False
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(PosixStorage, "_quarantine", quarantine), \
            mock.patch.object(os, "unlink", unlink):
        results = par.delete_batch(entries, fence=fence)
    assert violations == []
    assert {r.outcome for r in results} == {Outcome.DELETED}


def test_a_lapsed_fence_in_one_thread_stops_every_thread(root: Path,
                                                         par: PosixStorage) -> None:
    """The lease lapses for good at the 21st fence call (of any thread): the
    exception reaches the caller only after every thread stopped, each file is
    either deleted (both its fence calls passed) or intact under its own name,
    and nothing is touched afterwards."""
    for f in range(400):
        put(root, f"d{f % 5}/f{f:03d}")
    entries = list(par.list())
    calls = [0]
    lock = threading.Lock()

    class LeaseLost(Exception):
        pass

    def fence() -> None:
        with lock:
            calls[0] += 1
            if calls[0] >= 21:
                raise LeaseLost

    with pytest.raises(LeaseLost):
        par.delete_batch(entries, fence=fence)
    left = sorted(root.rglob("f*"))
    deleted = len(entries) - len(left)
    assert deleted <= 10  # each deleted file passed two of the 20 good calls
    assert _quarantined(root) == []
    time.sleep(0.2)
    assert sorted(root.rglob("f*")) == left


def test_the_probe_goes_concurrent_only_on_slow_storage(root: Path) -> None:
    """tmpfs or a local disk: sequential. A filesystem whose stat takes a
    millisecond (imitated with a sleep: no NFS here) switches to the pool."""
    for f in range(40):
        put(root, f"d/f{f:03d}")
    fast = _store(root, PARALLELISM)
    try:
        assert len(list(fast.list())) == 40
        assert fast.latency_bound is False
    finally:
        fast.close()
    real = posix._lstat

    def slow(ent: os.DirEntry[str]) -> posix._Stat:
        time.sleep(0.001)
        return real(ent)

    slow_store = _store(root, PARALLELISM)
    try:
        with mock.patch.object(posix, "_lstat", slow):
            assert len(list(slow_store.list())) == 40
        assert slow_store.latency_bound is True
    finally:
        slow_store.close()
    one = _store(root, 1)
    try:
        with mock.patch.object(posix, "_lstat", slow):
            list(one.list())
        assert one.latency_bound is None  # parallelism 1: never timed, never threads
    finally:
        one.close()


def test_a_bad_parallelism_variable_is_a_clear_error(root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETHE_POSIX_PARALLELISM", "lots")
    with pytest.raises(StorageError, match=r"LETHE_POSIX_PARALLELISM.*'lots'"):
        PosixStorage(PosixTarget(path=str(root)))
    monkeypatch.setenv("LETHE_POSIX_PARALLELISM", "4")
    assert PosixStorage(PosixTarget(path=str(root))).parallelism == 4


def test_read_ahead_holds_a_bounded_number_of_entries(root: Path, par: PosixStorage,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Big directories: the pool's read-ahead holds at most _PREFETCH_ENTRIES entries
    over all the directories it read ahead (a review found 64 directories of 50,000
    files would have held ~480 MB); a directory past the budget is read when the
    listing reaches it, and the listing is unchanged."""
    for d in range(12):
        for f in range(25):
            put(root, f"big/{d:02d}/f{f:02d}.log")
    seq = _store(root, 1)
    try:
        expected = list(seq.list())
    finally:
        seq.close()
    monkeypatch.setattr(posix, "_PREFETCH_ENTRIES", 60)
    peak = [0]

    class Counting(posix._Prefetch):
        def take_entries(self, n: int) -> bool:
            ok = super().take_entries(n)
            peak[0] = max(peak[0], 60 - self._entries)
            return ok

    monkeypatch.setattr(posix, "_Prefetch", Counting)
    assert list(par.list()) == expected
    assert 0 < peak[0] <= 60
