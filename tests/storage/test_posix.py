"""POSIX backend against real directories (tmp_path); mocks only where noted."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast
from unittest import mock

import pytest

from lethe.spec import PosixTarget
from lethe.storage.base import (
    ConflictError,
    Entry,
    Outcome,
    Storage,
    StorageError,
    TargetUnavailable,
)
from lethe.storage.posix import ABSENT_TOKEN, PosixStorage


def put(root: Path, rel: str | bytes, data: bytes = b"x", mtime: float | None = None) -> Path:
    p = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(rel))))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture(params=["renameat2", "stat+rename"])
def store(root: Path, request: pytest.FixtureRequest) -> Iterator[PosixStorage]:
    """Both quarantine paths: ``renameat2(RENAME_NOREPLACE)``, and the fallback
    for filesystems that refuse it (set here as if one had answered EINVAL)."""
    s = PosixStorage(PosixTarget(path=str(root)))
    s._noreplace = request.param == "renameat2"
    s.check_ready()
    yield s
    s.close()


def keys(s: PosixStorage) -> list[str]:
    return [e.key for e in s.list()]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- listing -----------------------------------------------------------------


def test_implements_the_protocol(store: PosixStorage) -> None:
    assert isinstance(store, Storage)
    assert store.describe().startswith("posix:/")


def test_listing_is_depth_first_sorted_and_contiguous(root: Path, store: PosixStorage) -> None:
    for rel in ["b", "a.txt", "a/z", "a/c/d", "a/c/a", "a/b", "A", "a-1/x", "0"]:
        put(root, rel)
    got = keys(store)
    assert got == ["0", "A", "a/b", "a/c/a", "a/c/d", "a/z", "a-1/x", "a.txt", "b"]
    # every directory's entries are contiguous
    for d in ("a/", "a/c/", "a-1/"):
        idx = [i for i, k in enumerate(got) if k.startswith(d)]
        assert idx == list(range(idx[0], idx[-1] + 1))
    assert keys(store) == got  # deterministic


def test_entries_carry_size_mtime_and_fingerprint(root: Path, store: PosixStorage) -> None:
    p = put(root, "d/f.log", b"hello", mtime=1_600_000_000.25)
    [e] = list(store.list())
    st = os.stat(p)
    assert e == Entry("d/f.log", 5, st.st_mtime_ns / 1e9,
                      f"{st.st_ino}:5:{st.st_mtime_ns}", ctime=st.st_ctime_ns / 1e9)
    assert abs(e.mtime - 1_600_000_000.25) < 1e-6


def test_listing_streams_and_releases_descriptors(root: Path, store: PosixStorage) -> None:
    for i in range(50):
        put(root, f"d{i % 5}/sub/f{i}")
    before = open_fds()
    it = store.list()
    first = next(it)
    assert first.key == "d0/sub/f0"
    assert open_fds() > before  # descriptors of the open levels only
    assert open_fds() - before <= 4
    it.close()  # type: ignore[attr-defined]
    assert open_fds() == before
    assert len(keys(store)) == 50
    assert open_fds() == before


def test_symlinks_are_never_followed_or_listed(tmp_path: Path, root: Path,
                                               store: PosixStorage) -> None:
    outside = tmp_path / "outside"
    put(outside, "secret.txt")
    put(outside, "deep/secret2.txt")
    put(root, "real/file")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "real" / "linkfile").symlink_to(outside / "secret.txt")
    (root / "inner-link").symlink_to(root / "real" / "file")
    (root / "dangling").symlink_to(tmp_path / "nope")
    assert keys(store) == ["real/file"]


def test_special_files_nfs_placeholders_and_internal_dir_are_skipped(
        root: Path, store: PosixStorage) -> None:
    put(root, ".nfs0000000012345678")
    put(root, "d/.nfs00000000abcdef01")
    put(root, ".lethe/ledger/run-1.jsonl")
    put(root, "d/.lethe/not-internal")  # only the root's .lethe is internal
    put(root, "d/.nfsdir-is-skipped-too/x")
    os.mkfifo(root / "fifo")
    assert keys(store) == ["d/.lethe/not-internal"]


def test_lethe_keep_protects_a_subtree(root: Path, store: PosixStorage) -> None:
    put(root, "keep/.lethe-keep", b"")
    put(root, "keep/a")
    put(root, "keep/sub/b")
    put(root, "other/c")
    put(root, "other/sub/.lethe-keep", b"")
    put(root, "other/sub/d")
    assert keys(store) == ["other/c"]
    put(root, ".lethe-keep", b"")
    assert keys(store) == []


def test_odd_names_round_trip_to_delete(root: Path, store: PosixStorage) -> None:
    names: list[bytes] = [
        "ünïcödé/日本語.txt".encode(),
        b"with space/and  two",
        b"new\nline",
        b"tab\there",
        b"x" * 255,
        b"latin1-\xe9\xff/\xfe-file",
        b"-leading-dash",
        b"trailing-space ",
    ]
    for n in names:
        put(root, n)
    entries = list(store.list())
    assert sorted(os.fsencode(e.key) for e in entries) == sorted(names)
    results = store.delete_batch(entries)
    assert [r.outcome for r in results] == [Outcome.DELETED] * len(names), results
    for n in names:
        assert not os.path.lexists(os.path.join(os.fsencode(root), n))


# --- deleting ----------------------------------------------------------------


def test_delete_checks_fingerprints(root: Path, store: PosixStorage) -> None:
    put(root, "a/same", mtime=1000)
    put(root, "a/appended", mtime=1000)
    put(root, "a/replaced", mtime=1000)
    put(root, "a/gone", mtime=1000)
    put(root, "b/dirgone", mtime=1000)
    put(root, "a/now-a-dir", mtime=1000)
    entries = list(store.list())
    with open(root / "a/appended", "ab") as f:
        f.write(b"more")
    os.utime(root / "a/appended", (1000, 1000))  # same mtime, different size
    new = put(root, "a/replaced.new", mtime=1000)
    os.replace(new, root / "a/replaced")  # same size and mtime, other inode
    os.unlink(root / "a/gone")
    for p in (root / "b").iterdir():
        p.unlink()
    (root / "b").rmdir()
    os.unlink(root / "a/now-a-dir")
    (root / "a/now-a-dir").mkdir()
    results = {r.key: r for r in store.delete_batch(entries)}
    assert results["a/same"].outcome is Outcome.DELETED
    assert results["a/appended"].outcome is Outcome.CHANGED_SKIPPED
    assert results["a/replaced"].outcome is Outcome.CHANGED_SKIPPED
    assert results["a/gone"].outcome is Outcome.ALREADY_GONE
    assert results["b/dirgone"].outcome is Outcome.ALREADY_GONE
    assert results["a/now-a-dir"].outcome is Outcome.CHANGED_SKIPPED
    assert not (root / "a/same").exists()
    assert (root / "a/appended").exists() and (root / "a/replaced").exists()
    # results are in the entries' order and idempotent on repeat (I6)
    again = store.delete_batch(entries)
    assert [r.key for r in again] == [e.key for e in entries]
    assert again[[e.key for e in entries].index("a/same")].outcome is Outcome.ALREADY_GONE


def test_directory_swapped_for_symlink_cannot_redirect_deletes(
        tmp_path: Path, root: Path, store: PosixStorage) -> None:
    """Between listing and deleting, ``root/sub`` becomes a symlink to a directory
    outside the root holding files of the same names. Nothing outside is touched."""
    outside = tmp_path / "outside"
    for i in range(3):
        put(root, f"sub/deeper/f{i}", b"data", mtime=1000)
        put(outside, f"deeper/f{i}", b"data", mtime=1000)
        put(root, f"sub/f{i}", b"data", mtime=1000)
        put(outside, f"f{i}", b"data", mtime=1000)
    entries = list(store.list())
    assert len(entries) == 6
    os.rename(root / "sub", tmp_path / "moved-away")
    (root / "sub").symlink_to(outside, target_is_directory=True)
    results = store.delete_batch(entries)
    assert {r.outcome for r in results} <= {Outcome.ERROR, Outcome.ALREADY_GONE}
    assert all("ELOOP" in r.detail or "ENOTDIR" in r.detail for r in results
               if r.outcome is Outcome.ERROR)
    assert sorted(p.name for p in outside.rglob("f*")) == ["f0", "f0", "f1", "f1", "f2", "f2"]
    assert len(list((tmp_path / "moved-away").rglob("f*"))) == 6


def test_even_identical_fingerprints_outside_cannot_be_deleted(
        tmp_path: Path, root: Path, store: PosixStorage) -> None:
    """Worst case: the listed directory itself is moved outside and a symlink put
    in its place, so the very same inodes (same fingerprints) sit behind the link."""
    put(root, "sub/f", b"data", mtime=1000)
    entries = list(store.list())
    os.rename(root / "sub", tmp_path / "elsewhere")
    (root / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    [r] = store.delete_batch(entries)
    assert r.outcome is Outcome.ERROR and ("ELOOP" in r.detail or "ENOTDIR" in r.detail)
    assert (tmp_path / "elsewhere" / "f").exists()


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "a/../../x", "a//b", "./a",
                                 "a/./b", "", "a\x00b", ".lethe/ledger/x", ".nfs1234"])
def test_unsafe_keys_are_refused(tmp_path: Path, root: Path, store: PosixStorage,
                                 key: str) -> None:
    put(tmp_path, "outside", b"data")
    put(root, ".lethe/ledger/x")
    put(root, ".nfs1234")
    [r] = store.delete_batch([Entry(key, 4, 0.0, "whatever")])
    assert r.outcome is Outcome.ERROR, r
    assert (tmp_path / "outside").exists()
    assert (root / ".lethe/ledger/x").exists() and (root / ".nfs1234").exists()


def test_symlink_itself_is_not_deleted(tmp_path: Path, root: Path,
                                       store: PosixStorage) -> None:
    target = put(tmp_path, "t")
    (root / "link").symlink_to(target)
    st = os.lstat(root / "link")
    fp = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    [r] = store.delete_batch([Entry("link", st.st_size, 0.0, fp)])
    assert r.outcome is Outcome.CHANGED_SKIPPED
    assert os.path.islink(root / "link") and target.exists()


def test_keep_file_added_after_listing_protects(root: Path, store: PosixStorage) -> None:
    put(root, "d/sub/f")
    entries = list(store.list())
    put(root, "d/.lethe-keep", b"")
    [r] = store.delete_batch(entries)
    assert r.outcome is Outcome.CHANGED_SKIPPED and ".lethe-keep" in r.detail
    assert (root / "d/sub/f").exists()


def test_permission_denied_is_an_error_result(root: Path, store: PosixStorage) -> None:
    """Mocked: the tests run as root, which bypasses a real ``chmod 000``, so EACCES
    from unlinkat is injected instead."""
    put(root, "d/f")
    entries = list(store.list())
    real_unlink = os.unlink

    def deny(path: Any, *a: Any, **kw: Any) -> None:
        if kw.get("dir_fd") is not None:
            raise PermissionError(errno.EACCES, "Permission denied")
        real_unlink(path, *a, **kw)

    with mock.patch("lethe.storage.posix.os.unlink", deny):
        [r] = store.delete_batch(entries)
    assert r.outcome is Outcome.ERROR and r.detail.startswith("EACCES")
    assert (root / "d/f").exists()


def test_io_error_on_stat_is_an_error_result(root: Path, store: PosixStorage) -> None:
    """Mocked: a disk/NFS EIO cannot be produced on demand on a healthy filesystem."""
    put(root, "f")
    entries = list(store.list())
    real_stat = os.stat

    def eio(path: Any, *a: Any, **kw: Any) -> os.stat_result:
        if str(path).startswith(".lethe-del-"):
            raise OSError(errno.EIO, "Input/output error")
        return real_stat(path, *a, **kw)

    with mock.patch("lethe.storage.posix.os.stat", eio):
        [r] = store.delete_batch(entries)
    assert r.outcome is Outcome.ERROR and "EIO" in r.detail
    assert (root / "f").exists()


@contextlib.contextmanager
def after_rename(store: PosixStorage, act: Callable[[str, str], None]) -> Iterator[None]:
    """Run ``act(name, quarantine_name)`` right after each quarantine rename, by
    either path (``renameat2`` or stat + rename): a real action at a moment that
    real scheduling hits only by chance."""
    real = PosixStorage._quarantine

    def wrapped(self: PosixStorage, dfd: int, name: str, tmp: str) -> None:
        real(self, dfd, name, tmp)
        act(name, tmp)

    with mock.patch.object(PosixStorage, "_quarantine", wrapped):
        yield


def _quarantined(root: Path) -> list[Path]:
    return [p for p in root.rglob(".lethe-del-*")]


def test_write_landing_between_rename_and_check_is_caught(root: Path,
                                                          store: PosixStorage) -> None:
    """Chaos seed 4102: a writer overwrote a file between the fingerprint check and
    the unlink, and the overwrite was deleted. Now the name goes first. The write
    is real, through a descriptor the writer opened before the delete; only its
    moment is forced (right after the rename), which real scheduling produces
    only by chance."""
    put(root, "d/f", b"old", mtime=1000)
    put(root, "d/g", b"old", mtime=1000)
    entries = list(store.list())
    writer = open(root / "d/f", "r+b")  # noqa: SIM115

    def rename_then_write(src: str, dst: str) -> None:
        if src == "f":
            writer.write(b"NEW")
            writer.flush()
            os.utime(writer.fileno())

    with after_rename(store, rename_then_write):
        results = {r.key: r for r in store.delete_batch(entries)}
    writer.close()
    assert results["d/f"].outcome is Outcome.CHANGED_SKIPPED
    assert results["d/g"].outcome is Outcome.DELETED
    assert (root / "d/f").read_bytes() == b"NEW"  # back under its own name
    assert not (root / "d/g").exists()
    assert _quarantined(root) == []
    assert keys(store) == ["d/f"]


def test_writer_opening_the_path_after_the_rename_gets_enoent(root: Path,
                                                              store: PosixStorage) -> None:
    """Once renamed away, an unchanged eligible file is deleted and a writer that
    opens its path (without O_CREAT, as an in-place overwrite does) fails."""
    put(root, "f", b"old", mtime=1000)
    entries = list(store.list())
    seen: list[int] = []

    def rename_then_open(src: str, dst: str) -> None:
        try:
            os.open(root / "f", os.O_WRONLY)
        except FileNotFoundError:
            seen.append(errno.ENOENT)

    with after_rename(store, rename_then_open):
        [r] = store.delete_batch(entries)
    assert r.outcome is Outcome.DELETED and seen == [errno.ENOENT]


def test_quarantine_left_by_a_crash_is_finished_and_never_listed(root: Path,
                                                                 store: PosixStorage) -> None:
    """A crash between the rename and the unlink leaves ``.lethe-del-*``; the
    resumed batch (same entries) verifies and deletes it; a changed one is put back."""
    put(root, "d/a", b"a", mtime=1000)
    put(root, "d/b", b"b", mtime=1000)
    entries = list(store.list())
    real_unlink = os.unlink

    def crash(path: Any, *a: Any, **kw: Any) -> None:
        if str(path).startswith(".lethe-del-"):
            raise KeyboardInterrupt  # the process dies here
        real_unlink(path, *a, **kw)

    with mock.patch("lethe.storage.posix.os.unlink", crash), pytest.raises(KeyboardInterrupt):
        store.delete_batch(entries[:1])
    [left] = _quarantined(root)
    assert keys(store) == ["d/b"]  # d/a is neither at its name nor listed
    with open(left, "ab") as f:  # changed while quarantined: must come back
        f.write(b"+")
    results = store.delete_batch(entries)
    assert [r.outcome for r in results] == [Outcome.CHANGED_SKIPPED, Outcome.DELETED]
    assert (root / "d/a").read_bytes() == b"a+" and _quarantined(root) == []
    entries = list(store.list())
    with mock.patch("lethe.storage.posix.os.unlink", crash), pytest.raises(KeyboardInterrupt):
        store.delete_batch(entries)
    assert [r.outcome for r in store.delete_batch(entries)] == [Outcome.DELETED]
    assert keys(store) == [] and _quarantined(root) == []


def test_restore_never_replaces_a_file_created_meanwhile(root: Path,
                                                         store: PosixStorage) -> None:
    put(root, "f", b"old", mtime=1000)
    entries = list(store.list())

    def rename_then_race(src: str, dst: str) -> None:
        os.utime(root / dst)  # the quarantined file changed (a writer's open fd) ...
        (root / "f").write_bytes(b"brand new")  # ... and someone created f again

    with after_rename(store, rename_then_race):
        [r] = store.delete_batch(entries)
    assert r.outcome is Outcome.ERROR and "re-created" in r.detail
    [kept] = _quarantined(root)
    assert kept.read_bytes() == b"old" and (root / "f").read_bytes() == b"brand new"


def test_no_descriptor_leak_over_many_batches(root: Path, store: PosixStorage) -> None:
    for i in range(300):
        put(root, f"d{i % 7}/s{i % 3}/f{i}")
    before = open_fds()
    entries = list(store.list())
    for i in range(0, len(entries), 50):
        assert all(r.outcome is Outcome.DELETED for r in store.delete_batch(entries[i:i + 50]))
    assert open_fds() == before
    assert keys(store) == []


# --- pruning -----------------------------------------------------------------


def test_prune_empty_dirs(root: Path) -> None:
    s = PosixStorage(PosixTarget(path=str(root), pruneEmptyDirs=True))
    put(root, "a/b/c/f1")
    put(root, "a/b/c/f2")
    put(root, "a/keepme")
    put(root, "x/y/f")
    put(root, "p/.lethe-keep", b"")
    (root / "empty-before").mkdir()
    entries = [e for e in s.list() if e.key != "a/keepme"]
    results = s.delete_batch(entries)
    assert all(r.outcome is Outcome.DELETED for r in results)
    assert not (root / "a/b").exists()
    assert (root / "a/keepme").exists()
    assert not (root / "x").exists()
    assert (root / "p/.lethe-keep").exists()
    assert (root / "empty-before").exists()  # not emptied by us: left alone
    assert root.is_dir() and s.pruned_dirs == 4  # a/b/c, a/b, x/y, x
    s.now()  # creates .lethe/
    assert s.prune_empty_dirs([".lethe/clock-probe", ".lethe/x/y"]) == []
    assert (root / ".lethe").is_dir()
    s.close()


def test_prune_never_removes_root_or_follows_links(tmp_path: Path, root: Path,
                                                   store: PosixStorage) -> None:
    (tmp_path / "out" / "empty").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path / "out", target_is_directory=True)
    assert store.prune_empty_dirs(["f", "link/empty/f", "link/f"]) == []
    assert (tmp_path / "out" / "empty").is_dir() and root.is_dir()


# --- readiness ---------------------------------------------------------------


def test_missing_root_is_unavailable(tmp_path: Path) -> None:
    s = PosixStorage(PosixTarget(path=str(tmp_path / "nope")))
    with pytest.raises(TargetUnavailable) as info:
        s.check_ready()
    assert info.value.reason == "TargetUnreachable" and "mounted" in str(info.value)
    with pytest.raises(TargetUnavailable):
        list(s.list())  # any operation checks readiness first
    put(tmp_path, "file")
    with pytest.raises(TargetUnavailable, match="not a directory"):
        PosixStorage(PosixTarget(path=str(tmp_path / "file"))).check_ready()


def test_sentinel_required(root: Path) -> None:
    s = PosixStorage(PosixTarget(path=str(root), sentinel=".mounted"))
    with pytest.raises(TargetUnavailable) as info:
        s.check_ready()
    assert info.value.reason == "TargetUnreachable"
    assert ".mounted" in str(info.value) and "touch" in str(info.value)
    put(root, ".mounted", b"")
    s.check_ready()
    os.unlink(root / ".mounted")
    with pytest.raises(TargetUnavailable):
        s.check_ready()
    put(root, "sub/dir/.mounted", b"")
    PosixStorage(PosixTarget(path=str(root), sentinel="sub/dir/.mounted")).check_ready()


def test_pinned_device_mismatch_is_unavailable(root: Path) -> None:
    dev = os.stat(root).st_dev
    PosixStorage(PosixTarget(path=str(root)), expect_dev=dev).check_ready()
    with pytest.raises(TargetUnavailable, match="device"):
        PosixStorage(PosixTarget(path=str(root)), expect_dev=dev + 1).check_ready()


def _mount_tmpfs(path: Path) -> bool:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "lethe-test", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    done: list[Path] = []
    yield done
    for p in reversed(done):
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


def test_root_remounted_is_unavailable(root: Path, mounts: list[Path]) -> None:
    """Real mount: a tmpfs mounted over the root after the first check (an export
    mounted or unmounted under a running operator) changes st_dev."""
    s = PosixStorage(PosixTarget(path=str(root)))
    s.check_ready()
    if not _mount_tmpfs(root):
        pytest.skip("cannot mount tmpfs here")
    mounts.append(root)
    with pytest.raises(TargetUnavailable, match="device"):
        s.check_ready()
    s.close()


def test_nested_mount_is_neither_listed_nor_deleted(root: Path, mounts: list[Path]) -> None:
    put(root, "local/f")
    (root / "mnt").mkdir()
    if not _mount_tmpfs(root / "mnt"):
        pytest.skip("cannot mount tmpfs here")
    mounts.append(root / "mnt")
    other = put(root, "mnt/sub/f")
    s = PosixStorage(PosixTarget(path=str(root)))
    assert keys(s) == ["local/f"]
    st = os.stat(other)
    [r] = s.delete_batch([Entry("mnt/sub/f", st.st_size, 0.0,
                                f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")])
    assert r.outcome is Outcome.ERROR and "another filesystem" in r.detail
    assert other.exists()
    s.close()


# --- small objects and the clock ---------------------------------------------


def test_read_replace_delete_small_objects(root: Path, store: PosixStorage) -> None:
    assert store.read_object("manifest.json") is None
    assert store.read_object("no/such/dir/x") is None
    t1 = store.replace_object("manifest.json", b"[1]", if_match=ABSENT_TOKEN)
    with pytest.raises(ConflictError):
        store.replace_object("manifest.json", b"[9]", if_match=ABSENT_TOKEN)
    data, token = store.read_object("manifest.json") or (b"", "")
    assert (data, token) == (b"[1]", t1)
    t2 = store.replace_object("manifest.json", b"[1,2]", if_match=t1)
    assert t2 != t1
    with pytest.raises(ConflictError):
        store.replace_object("manifest.json", b"[3]", if_match=t1)  # stale token
    assert (root / "manifest.json").read_bytes() == b"[1,2]"
    t3 = store.replace_object("manifest.json", b"{}")  # unconditional
    assert store.read_object("manifest.json") == (b"{}", t3)
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json"]  # no temp files
    store.replace_object(".lethe/ledger/run-1/b-0001.jsonl", b"{}\n")
    store.replace_object(".lethe/ledger/run-1/b-0002.jsonl", b"{}\n")
    store.replace_object(".lethe/ledger/run-2/b-0001.jsonl", b"{}\n")
    assert list(store.list_internal(".lethe/ledger/")) == [
        ".lethe/ledger/run-1/b-0001.jsonl", ".lethe/ledger/run-1/b-0002.jsonl",
        ".lethe/ledger/run-2/b-0001.jsonl"]
    assert list(store.list_internal(".lethe/ledger/run-2")) == [
        ".lethe/ledger/run-2/b-0001.jsonl"]
    assert list(store.list_internal(".lethe/nothing/")) == []
    assert keys(store) == ["manifest.json"]  # .lethe/ never listed
    store.delete_object(".lethe/ledger/run-2/b-0001.jsonl")
    store.delete_object(".lethe/ledger/run-2/b-0001.jsonl")  # missing is fine
    assert not (root / ".lethe/ledger/run-2/b-0001.jsonl").exists()
    with pytest.raises(StorageError):
        store.replace_object("../escape", b"x")


def test_interrupted_write_leftover_is_unlisted_and_removed_but_a_live_write_is_not(
        tmp_path: Path, root: Path) -> None:
    """Chaos seed 12325: a leader SIGKILLed inside ``replace_object`` left its
    temporary file for ever, and the listing offered it to the rules. Here a
    real process is killed mid-write (its first MiB written, the rest not
    sent); the leftover is never listed, nor read as a ledger file, and the
    next instance's first write into that directory removes it (and an earlier
    version's ``.<name>.lethe-tmp-<hex12>`` of the name written), but not the
    temporary file of a write this process has in flight in the same directory."""
    put(root, "data/f1")
    killed = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "from lethe.spec import PosixTarget\n"
         "from lethe.storage.posix import PosixStorage\n"
         "s = PosixStorage(PosixTarget(path=sys.argv[1]))\n"
         "s.check_ready()\n"
         "s.replace_object('data/manifest.json', sys.stdin.buffer)\n", str(root)],
        stdin=subprocess.PIPE)
    assert killed.stdin is not None
    killed.stdin.write(b"[" + b" " * (1 << 20))  # one read's worth; the write then waits
    killed.stdin.flush()

    def temps(d: Path) -> list[Path]:
        return [p for p in d.iterdir() if p.name.startswith(".lethe-tmp-")]
    deadline = time.monotonic() + 30
    while not [p for p in temps(root / "data") if p.stat().st_size >= 1 << 20]:
        assert killed.poll() is None and time.monotonic() < deadline, "no temp file was written"
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    killed.stdin.close()
    leftover, = temps(root / "data")
    assert leftover.name.startswith(".lethe-tmp-manifest.json.")
    legacy = put(root, "data/.manifest.json.lethe-tmp-0123456789ab", b"[]")
    ledger_leftover = put(root, ".lethe/ledger/run-1/.lethe-tmp-000001.jsonl.0123456789ab",
                          b'{"key": "f1"}\n')

    s = PosixStorage(PosixTarget(path=str(root)))
    s.check_ready()
    s2 = PosixStorage(PosixTarget(path=str(root)))
    s2.check_ready()
    r, w = os.pipe()
    try:
        assert keys(s) == ["data/.manifest.json.lethe-tmp-0123456789ab", "data/f1"]
        assert list(s.list_internal(".lethe/ledger/")) == []
        s2.replace_object(".manifest.json", b"[]")  # another directory: data/ untouched
        assert leftover.exists() and legacy.exists()
        s2.replace_object(".lethe/ledger/run-1/000002.jsonl", b"{}\n")
        assert not ledger_leftover.exists()
        # s's first write into data/ clears the leftover, and stays in flight.
        live: dict[str, Any] = {}

        def write_live() -> None:
            with os.fdopen(r, "rb") as src:
                try:
                    live["token"] = s.replace_object("data/other.json", src)
                except Exception as exc:
                    live["error"] = exc
        thread = threading.Thread(target=write_live, daemon=True)
        thread.start()
        while not [p for p in temps(root / "data") if p != leftover]:
            assert time.monotonic() < deadline, "the live write made no temp file"
            time.sleep(0.01)
        assert not leftover.exists()
        assert legacy.exists()  # only removed by a write of its own name
        # Another instance's first write into data/ must leave the live one alone.
        s2.replace_object("data/manifest.json", b"[]")
        assert not legacy.exists()
        os.write(w, b"{}")
        os.close(w)
        w = -1
        thread.join(30)
        assert "error" not in live, live.get("error")
        assert (root / "data/other.json").read_bytes() == b"{}"
        assert sorted(p.name for p in (root / "data").iterdir()) == [
            "f1", "manifest.json", "other.json"]
    finally:
        if w >= 0:
            os.close(w)
        s.close()
        s2.close()


def test_a_failed_write_leaves_no_temp_file(root: Path, store: PosixStorage) -> None:
    """The source failing mid-stream (a spool file's read error: not producible on
    demand, hence a stand-in) must not leave the half-written temp file."""
    class FailingSource(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            raise OSError(errno.EIO, "Input/output error")
    with pytest.raises(StorageError, match="EIO"):
        store.replace_object("plan.jsonl", cast(BinaryIO, FailingSource()))
    assert list(root.iterdir()) == []


def test_replace_object_does_not_follow_symlinks(tmp_path: Path, root: Path,
                                                 store: PosixStorage) -> None:
    (root / "ln").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(StorageError):
        store.replace_object("ln/evil", b"x")
    assert not (tmp_path / "evil").exists()
    target = put(tmp_path, "victim", b"orig")
    (root / "m.json").symlink_to(target)
    with pytest.raises(StorageError):
        store.read_object("m.json")
    store.replace_object("m.json", b"new")  # replaces the link itself, not its target
    assert target.read_bytes() == b"orig" and (root / "m.json").read_bytes() == b"new"


def test_now_is_the_probe_files_mtime(root: Path, store: PosixStorage) -> None:
    t = store.now()
    assert abs(t - time.time()) < 2
    probe = root / ".lethe" / "clock-probe"
    assert probe.exists() and os.stat(probe).st_mtime_ns / 1e9 == t
    assert keys(store) == []


def test_list_under_a_prefix_stays_inside_and_never_follows_symlinks(root: Path,
                                                                     tmp_path: Path) -> None:
    put(root, "g1/a")
    put(root, "g1/sub/b")
    put(root, "g2/c")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    (root / "link").symlink_to(outside)
    s = PosixStorage(PosixTarget(path=str(root)))
    assert [e.key for e in s.list(prefix="g1")] == ["g1/a", "g1/sub/b"]
    assert list(s.list(prefix="link")) == []  # a symlinked "group" lists nothing
    assert list(s.list(prefix="missing")) == []


@pytest.mark.parametrize("lapse_at", [101, 102])
def test_fence_is_checked_before_every_rename_and_unlink(root: Path, store: PosixStorage,
                                                         lapse_at: int) -> None:
    """The lease is re-checked before each rename and each unlink (I3): two checks
    per file. Once the fence raises nothing more is touched and the exception
    reaches the runner. Call 101 is the check before file 51's rename (nothing
    renamed); call 102 the one between its rename and unlink (it gets its name
    back: no quarantined file is left for nobody to finish)."""
    for i in range(200):
        put(root, f"d/f{i:03d}", mtime=1000)
    entries = list(store.list())
    calls = [0]

    class LeaseLost(Exception):
        pass

    def fence() -> None:
        calls[0] += 1
        if calls[0] == lapse_at:
            raise LeaseLost

    with pytest.raises(LeaseLost):
        store.delete_batch(entries, fence=fence)
    assert keys(store) == [e.key for e in entries[50:]] and _quarantined(root) == []
