"""POSIX backend: a directory tree, typically an NFS mount.

Safety model (issue 3, item 1; invariants I3, I6, I10):

* **Nothing outside the root, ever.** Every operation walks from a file
  descriptor of the root, one component at a time, with
  ``O_DIRECTORY | O_NOFOLLOW`` relative to the parent's descriptor, and acts
  with ``*at()`` calls (``unlink(name, dir_fd=…)``). A directory swapped for a
  symlink between listing and deleting makes the walk fail with ``ELOOP`` /
  ``ENOTDIR``; it cannot redirect the delete. Keys are checked with
  :func:`~lethe.storage.base.check_key` (no ``..``, no absolute keys).
* **Symlinks are never followed** and are never deletion candidates; nor are
  fifos, sockets or devices. Only regular files are listed.
* **One filesystem.** The root's ``st_dev`` is captured at the first
  :meth:`PosixStorage.check_ready`; a later change (remount, unmount) makes the
  target unavailable, and anything below the root on another device (a nested
  mount) is neither listed nor deleted.
* **An unmounted export means zero deletes.** With ``sentinel`` set, the file
  must exist in the root or :meth:`~PosixStorage.check_ready` refuses.
* **Skipped:** NFS silly-rename placeholders (``.nfs*``), files being
  deleted (``.lethe-del-*``, see :meth:`PosixStorage.delete_batch`), files being
  written (``.lethe-tmp-*``, see :meth:`PosixStorage.replace_object`), the operator's own
  ``.lethe/`` at the root, and every directory holding a ``.lethe-keep`` file
  together with everything below it.

Listing order (the rules layer relies on it for ``groupBy``): depth first,
names sorted by their bytes within each directory, a subdirectory's entries
emitted where its name sorts. All entries under a directory are therefore
contiguous. Note this is *component-wise* order: ``a/x`` comes before
``a.txt`` (``a`` < ``a.txt``), unlike a plain sort of full keys.

Names are bytes on disk. Keys are ``str`` decoded with :func:`os.fsdecode`
(UTF-8 with ``surrogateescape``), so non-UTF-8 names round-trip: the key the
listing yields, given back to :meth:`~PosixStorage.delete_batch`, names the
same file.

Latency-bound storage (an NFS export: every ``stat``, ``rename`` and
``unlink`` is a round trip to the server) is worked on by a bounded thread
pool of :data:`DEFAULT_PARALLELISM` threads (``LETHE_POSIX_PARALLELISM``):
the entries of a directory are ``stat``-ed concurrently, at most
``2 × parallelism`` ahead of the one being yielded, and the subdirectories met
there are opened and read ahead (at most :data:`_PREFETCH_DIRS` held); the
listing order above is unchanged. A delete batch is cut into that many contiguous slices, each
deleted by one thread with exactly the sequential per-file steps (quarantine
rename, fingerprint check, unlink, the fence before each). Where a metadata
operation costs microseconds (tmpfs, a local disk's page cache) threads only
add Python overhead, so the pool is used only once the first operations of an
instance measured as latency-bound (see :meth:`PosixStorage._is_latency_bound`).
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import re
import secrets
import stat
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from operator import attrgetter
from typing import BinaryIO, Final, TypeAlias, TypeVar

from lethe.spec import PosixTarget
from lethe.storage import pausepoint
from lethe.storage.base import (
    INTERNAL_PREFIX,
    ConflictError,
    DeleteResult,
    Entry,
    Fence,
    Outcome,
    StorageError,
    TargetUnavailable,
    check_key,
    no_fence,
)

__all__ = ["ABSENT_TOKEN", "DEFAULT_PARALLELISM", "KEEP_FILE", "PosixStorage"]

log = logging.getLogger(__name__)

#: A directory containing a file of this name is protected with everything below it.
KEEP_FILE: Final = ".lethe-keep"
#: ``replace_object(if_match=ABSENT_TOKEN)`` creates the object only if it does not
#: exist yet (S3: ``If-None-Match: *``). Same value in the S3 backend.
ABSENT_TOKEN: Final = "-"

_INTERNAL_DIR: Final = INTERNAL_PREFIX.rstrip("/")
_NFS_PLACEHOLDER: Final = ".nfs"
#: A file being deleted is first renamed to this prefix + a hash of its name (see
#: ``PosixStorage._delete_one``); such names are never listed.
_QUARANTINE: Final = ".lethe-del-"
#: :meth:`PosixStorage.replace_object` writes its temporary file under this prefix.
_TEMP: Final = ".lethe-tmp-"
_UNLISTED: Final = (_NFS_PLACEHOLDER, _QUARANTINE, _TEMP)
#: The temporary files of versions before 2026-12-01 (``.<name>.lethe-tmp-<hex12>``).
_LEGACY_TEMP: Final = re.compile(r"\..+\.lethe-tmp-[0-9a-f]{12}\Z", re.DOTALL)
#: ``(st_dev, st_ino, name)`` of the directories and temporary files this
#: process is writing now, so that removing interrupted writes' leftovers never
#: takes a live one. Registered before the file is created; names are random
#: and created ``O_EXCL``, so a name a sweep saw unregistered is never a live write.
_WRITING: Final[set[tuple[int, int, str]]] = set()
_WRITING_LOCK: Final = threading.Lock()
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROBE_KEY: Final = INTERNAL_PREFIX + "clock-probe"
#: How many listing problems (unreadable directories) are kept for reporting.
_MAX_LISTING_ERRORS: Final = 100
_name = attrgetter("name")
_RENAME_NOREPLACE: Final = 1  # linux/fs.h

#: Threads for latency-bound storage (``LETHE_POSIX_PARALLELISM`` overrides it;
#: 1 = one operation at a time). 16 requests in flight hide a 0.5-2 ms round trip
#: behind Python's per-file cost (~20 µs) without crowding an NFS client's RPC slots.
DEFAULT_PARALLELISM: Final = 16
_MAX_PARALLELISM: Final = 256
#: A listing ``stat`` slower than this (median of the first few) means a
#: latency-bound filesystem: tmpfs or a cached local disk answer in 1-5 µs, an
#: NFS round trip takes 100 µs or more. A file's delete is 3-6 such operations.
_SLOW_STAT_S: Final = 100e-6
_SLOW_DELETE_S: Final = 300e-6
#: How many operations are timed (sequentially) before deciding.
_PROBE_OPS: Final = 8
#: Subdirectories the pool opens and reads ahead of the listing, over all levels
#: of one listing; each holds a descriptor until the listing descends into it.
_PREFETCH_DIRS: Final = 64
#: ... and their entries, over all of them: a DirEntry is ~150 bytes, so ~15 MB.
#: 64 directories of 50,000 files each would have held ~480 MB (a review found it);
#: a directory beyond this is read when the listing reaches it, as without threads.
_PREFETCH_ENTRIES: Final = 100_000


class _Prefetch:
    """What one listing's pool may hold read ahead: directories and their entries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs, self._entries = _PREFETCH_DIRS, _PREFETCH_ENTRIES

    def take_dir(self) -> bool:
        with self._lock:
            if self._dirs < 1:
                return False
            self._dirs -= 1
            return True

    def take_entries(self, n: int) -> bool:
        with self._lock:
            if n > self._entries:
                return False
            self._entries -= n
            return True

    def give(self, *, dirs: int, entries: int) -> None:
        with self._lock:
            self._dirs += dirs
            self._entries += entries


def _parallelism_from_env() -> int:
    raw = os.environ.get("LETHE_POSIX_PARALLELISM", "").strip()
    if not raw:
        return DEFAULT_PARALLELISM
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_PARALLELISM:
        raise StorageError(f"LETHE_POSIX_PARALLELISM must be a whole number from 1 to "
                           f"{_MAX_PARALLELISM}, not {raw!r}")
    return int(raw)


def _load_renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's ``renameat2`` (2.28+), or ``None``: ``os.rename`` has no flags."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def fingerprint(st: os.stat_result) -> str:
    """``"{inode}:{size}:{mtime_ns}"``: changes when the file is replaced or written."""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _errtext(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "E?")
    return f"{name}: {exc.strerror or exc}"


class _DirWalker:
    """Opens directories under the root by components, reusing the current chain.

    Holds one descriptor per level of the last directory opened, so a sorted
    batch (entries of one directory are contiguous) opens each directory once
    and never holds more than ``depth`` descriptors. Every component is opened
    with ``O_NOFOLLOW`` relative to its parent, is checked to be on the root's
    device, and is checked for a ``.lethe-keep`` file.
    """

    def __init__(self, root_fd: int, dev: int, *, check_keep: bool = True) -> None:
        self._root_fd = root_fd
        self._dev = dev
        self._check_keep = check_keep
        self._names: list[str] = []
        self._fds: list[int] = []
        self.root_protected = check_keep and _has_keep(root_fd)

    def open(self, parts: Sequence[str]) -> int:
        """Descriptor of the directory ``parts`` (a tuple of names below the root).

        Raises ``OSError`` from the walk (``ENOENT``, ``ELOOP``, ``ENOTDIR``…),
        :class:`_Protected` under ``.lethe-keep`` and :class:`_OtherDevice` on
        a nested mount.
        """
        if self.root_protected:
            raise _Protected("")
        if parts == self._names:  # the same directory as the last call: the usual case
            return self._fds[-1] if self._fds else self._root_fd
        keep = 0
        while keep < len(self._names) and keep < len(parts) and self._names[keep] == parts[keep]:
            keep += 1
        self._truncate(keep)
        for name in parts[keep:]:
            parent = self._fds[-1] if self._fds else self._root_fd
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                if os.fstat(fd).st_dev != self._dev:
                    raise _OtherDevice("/".join(parts[: len(self._names) + 1]))
                if self._check_keep and _has_keep(fd):
                    raise _Protected("/".join(parts[: len(self._names) + 1]))
            except BaseException:
                os.close(fd)
                raise
            self._names.append(name)
            self._fds.append(fd)
        return self._fds[-1] if self._fds else self._root_fd

    def _truncate(self, n: int) -> None:
        while len(self._fds) > n:
            os.close(self._fds.pop())
            self._names.pop()

    def close(self) -> None:
        self._truncate(0)


class _Protected(Exception):
    pass


class _OtherDevice(Exception):
    pass


def _has_keep(dir_fd: int) -> bool:
    try:
        os.stat(KEEP_FILE, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _read_dir(dfd: int, *, at_root: bool) -> list[os.DirEntry[str]]:
    """Entries of a directory, filtered, in name byte order.

    All-ASCII names (the common case) sort as ``str`` at C speed; otherwise by
    their bytes, which differs from code-point order for undecodable names.
    """
    with os.scandir(dfd) as it:
        ents = [e for e in it if not e.name.startswith(_UNLISTED)
                and not (at_root and e.name == _INTERNAL_DIR)]
    if all(map(str.isascii, map(_name, ents))):
        ents.sort(key=_name)
    else:
        ents.sort(key=lambda e: os.fsencode(e.name))
    return ents


_Stat: TypeAlias = os.stat_result | OSError
_Listed: TypeAlias = "tuple[os.DirEntry[str], _Stat, _Child]"
_T = TypeVar("_T")
_R = TypeVar("_R")


def _lstat(ent: os.DirEntry[str]) -> _Stat:
    """The entry's ``lstat``, or the ``OSError`` (raised in the caller's thread)."""
    try:
        return ent.stat(follow_symlinks=False)
    except OSError as exc:
        return exc


def _ordered(pool: ThreadPoolExecutor, fn: Callable[[_T], _R], items: Sequence[_T], *,
             window: int, discard: Callable[[_R], None]) -> Iterator[tuple[_T, _R]]:
    """``(item, fn(item))`` in ``items``' order, computed in ``pool`` with at most
    ``window`` calls submitted and not yet consumed. Closing the iterator cancels
    the calls not started and waits for the running ones, whose results go to
    ``discard`` (to release what they hold)."""
    pending: deque[tuple[_T, Future[_R]]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= window:
                head, fut = pending.popleft()
                yield head, fut.result()
        while pending:
            head, fut = pending.popleft()
            yield head, fut.result()
    finally:
        for _item, fut in pending:
            if not fut.cancel():
                with contextlib.suppress(Exception):
                    discard(fut.result())


class _NotRead:
    """A subdirectory the pool did not read ahead (the listing opens it itself)."""


_NOT_READ: Final = _NotRead()
#: A subdirectory read ahead: ``(fd, sorted entries)`` to descend into; ``None``
#: to skip quietly; the ``OSError`` to record; or not read.
_Prepared: TypeAlias = tuple[int, builtins.list[os.DirEntry[str]]] | OSError | None
_Child: TypeAlias = _Prepared | _NotRead


def _prepare_child(dfd: int, name: str, dev: int) -> _Prepared:
    """Open (``O_NOFOLLOW``) and read the subdirectory ``name`` of ``dfd``.

    ``None``: vanished, swapped for a symlink (``ELOOP``), on another device or
    protected by ``.lethe-keep``. An ``OSError`` is returned (to be recorded by
    the listing's thread), never raised. The caller owns the returned fd.
    """
    try:
        cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return None if exc.errno == errno.ELOOP else exc
    try:
        if os.fstat(cfd).st_dev != dev or _has_keep(cfd):
            os.close(cfd)
            return None
        return cfd, _read_dir(cfd, at_root=False)
    except OSError as exc:
        os.close(cfd)
        return exc
    except BaseException:
        os.close(cfd)
        raise


def _split(key: str) -> tuple[list[str], str]:
    parts = check_key(key).split("/")
    return parts[:-1], parts[-1]


class PosixStorage:
    """A directory tree as a :class:`~lethe.storage.base.Storage`.

    ``target.path`` is opened as given (a symlink *as the root itself* is
    followed once, at open time; the tenancy check above this layer resolves
    and vets the root). ``expect_dev`` pins the root's device from a previous
    run; without it the device seen by the first :meth:`check_ready` is pinned.

    ``target.pruneEmptyDirs``: after each :meth:`delete_batch`, directories
    emptied by it are removed bottom-up (see :meth:`prune_empty_dirs`); the
    number removed accumulates in :attr:`pruned_dirs`.

    ``parallelism``: threads for latency-bound storage (default: the
    ``LETHE_POSIX_PARALLELISM`` variable, else :data:`DEFAULT_PARALLELISM`;
    1 = never concurrent). A bad variable raises :class:`StorageError`.

    Not thread-safe: one runner uses one instance (which uses its own pool).
    """

    def __init__(self, target: PosixTarget, *, expect_dev: int | None = None,
                 parallelism: int | None = None) -> None:
        self.target = target
        self.parallelism = _parallelism_from_env() if parallelism is None else parallelism
        if not 1 <= self.parallelism <= _MAX_PARALLELISM:
            raise StorageError(f"parallelism must be 1..{_MAX_PARALLELISM}, "
                               f"not {self.parallelism}")
        #: None until the first timed operations decide (see _is_latency_bound).
        self.latency_bound: bool | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._samples: dict[float, builtins.list[float]] = {}
        self._path = target.path
        self._dev: int | None = expect_dev
        self._root_fd: int | None = None
        #: Directories removed by empty-directory pruning, over this instance's life.
        self.pruned_dirs = 0
        #: Cleared when the filesystem refuses ``RENAME_NOREPLACE``.
        self._noreplace = True
        #: ``(st_dev, st_ino)`` of directories already cleared of interrupted
        #: writes' temporary files (once per instance: a run).
        self._swept: set[tuple[int, int]] = set()
        #: ``(key, error)`` of directories the last :meth:`list` could not read
        #: (at most 100 kept; ``listing_error_count`` has the total). Their
        #: contents were not listed, so a runner should report them.
        self.listing_errors: list[tuple[str, str]] = []
        self.listing_error_count = 0

    # --- lifecycle ---------------------------------------------------------------

    def describe(self) -> str:
        return f"posix:{self._path}"

    @property
    def device(self) -> int | None:
        """The pinned ``st_dev`` of the root (persist it to detect remounts across runs)."""
        return self._dev

    def check_fenced_deletes(self) -> None:
        """Always possible here: :meth:`delete_batch` compares each file's
        fingerprint just before its ``unlinkat`` (see its window)."""

    def check_ready(self) -> None:
        """Open the root afresh and verify it: exists, is a directory, same device, sentinel.

        On success all later operations use the descriptor opened here, so a
        root swapped afterwards does not redirect them (call again at the start
        of every run and batch to notice an unmount).
        """
        path = self._path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TargetUnavailable(
                "TargetUnreachable",
                f"{path} does not exist; is the volume mounted? Nothing will be deleted "
                "until it is back") from None
        except NotADirectoryError:
            raise TargetUnavailable(
                "TargetUnreachable", f"{path} is not a directory; fix spec.target.posix.path"
            ) from None
        except OSError as exc:
            raise TargetUnavailable(
                "TargetUnreachable", f"cannot open {path}: {_errtext(exc)}") from None
        try:
            st = os.fstat(fd)
            if self._dev is not None and st.st_dev != self._dev:
                raise TargetUnavailable(
                    "TargetUnreachable",
                    f"{path} is now on device {st.st_dev:#x}, not {self._dev:#x} as before: the "
                    "export was unmounted or remounted; nothing will be deleted until the same "
                    "filesystem is back (or the operator is restarted on purpose)")
            if self.target.sentinel is not None:
                sentinel = check_key(self.target.sentinel)
                try:
                    sdir, sname = _split(sentinel)
                    walker = _DirWalker(fd, st.st_dev, check_keep=False)
                    try:
                        os.stat(sname, dir_fd=walker.open(sdir), follow_symlinks=False)
                    finally:
                        walker.close()
                except (OSError, _OtherDevice):
                    raise TargetUnavailable(
                        "TargetUnreachable",
                        f"sentinel file {sentinel!r} is missing in {path}: the export is probably "
                        f"not mounted. Mount it, or create the sentinel on the real export "
                        f"(touch {os.path.join(path, sentinel)}) to confirm it") from None
        except BaseException:
            os.close(fd)
            raise
        if self._dev is None:
            self._dev = st.st_dev
        if self._root_fd is not None:
            os.close(self._root_fd)
        self._root_fd = fd

    def _root(self) -> tuple[int, int]:
        if self._root_fd is None or self._dev is None:
            self.check_ready()
        assert self._root_fd is not None and self._dev is not None
        return self._root_fd, self._dev

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None

    # --- concurrency -------------------------------------------------------------

    def _workers(self) -> ThreadPoolExecutor | None:
        """The pool, when this storage is latency-bound and may use threads."""
        if self.parallelism <= 1 or not self.latency_bound:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallelism, thread_name_prefix="posix")
        return self._pool

    def _is_latency_bound(self, samples: Sequence[float], limit: float) -> bool:
        """Decide once per instance from the first operations' times (s each).

        The median, so one preemption of this process on a busy node does not
        count as a slow filesystem. With ``parallelism`` 1 nothing is timed.
        """
        if self.latency_bound is not None:
            return self.latency_bound
        seen = self._samples.setdefault(limit, [])
        seen.extend(samples)  # a first directory of 3 files does not decide alone
        if len(seen) >= _PROBE_OPS:
            self.latency_bound = statistics.median(seen) > limit
            log.debug("%s: median %.0f µs per operation: %s", self.describe(),
                      statistics.median(seen) * 1e6,
                      "latency-bound, using threads" if self.latency_bound else "sequential")
        return bool(self.latency_bound)

    def __enter__(self) -> PosixStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- clock -------------------------------------------------------------------

    def now(self) -> float:
        """The storage's clock: touch ``.lethe/clock-probe`` and read back its mtime.

        ``utime`` with no explicit time asks the server to stamp its own time
        (NFS ``SET_TO_SERVER_TIME``), which is the clock that stamps the files
        we compare against. Needs a writable root; raises StorageError otherwise.
        """
        root_fd, _dev = self._root()
        try:
            dfd = self._ensure_dirs(root_fd, [_INTERNAL_DIR])
            try:
                fd = os.open("clock-probe", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=dfd)
                try:
                    os.utime(fd)
                    return os.fstat(fd).st_mtime_ns / 1e9
                finally:
                    os.close(fd)
            finally:
                if dfd != root_fd:
                    os.close(dfd)
        except OSError as exc:
            raise StorageError(
                f"cannot read the clock of {self.describe()} via {_PROBE_KEY}: {_errtext(exc)}"
            ) from None

    # --- listing -----------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Stream regular files depth first (see the module docstring for the order).

        Memory is one sorted name list per open level (O(depth × directory
        size)); one descriptor per level is held while descending. Directories
        that vanish while listed are skipped silently; unreadable ones are
        skipped and recorded in :attr:`listing_errors`.
        """
        root_fd, dev = self._root()
        self.listing_errors = []
        self.listing_error_count = 0
        if _has_keep(root_fd):
            return
        if prefix:
            # The same safe walk as deletes: O_NOFOLLOW per component, same device,
            # no .lethe-keep on the way; a missing or unsafe directory lists nothing.
            walker = _DirWalker(root_fd, dev)
            try:
                top = os.dup(walker.open(check_key(prefix).split("/")))
            except (OSError, _Protected, _OtherDevice):
                return
            finally:
                walker.close()
            start, at_root = prefix + "/", False
        else:
            top, start, at_root = os.dup(root_fd), "", True
        # One pass per directory: getdents through os.scandir, then one fstatat per
        # name through its DirEntry (the same syscall as os.stat, less Python).
        # Subdirectories are then opened O_NOFOLLOW and fstat'ed (_prepare_child).
        # Stack of (dir fd, key prefix, iterator over the directory's sorted entries).
        # On latency-bound storage the stats of a directory's entries run in the
        # pool, a bounded window ahead (_ordered), and the pool also opens and reads
        # the subdirectories it meets (at most _PREFETCH_DIRS held); the yield
        # order is the same.
        stack: builtins.list[tuple[int, str, Iterator[_Listed]]] = []
        is_reg, is_dir = stat.S_ISREG, stat.S_ISDIR
        slots = _Prefetch()
        try:
            stack.append((top, start, self._stats(_read_dir(top, at_root=at_root), top, dev,
                                                  slots)))
            while stack:
                dfd, base, ents = stack[-1]
                for ent, st, child in ents:
                    if isinstance(st, OSError):
                        if not isinstance(st, FileNotFoundError):
                            self._listing_error(base + ent.name, st)
                        continue
                    mode = st.st_mode
                    if is_reg(mode):
                        if st.st_dev == dev:  # else a nested mount's
                            size, mtime_ns = st.st_size, st.st_mtime_ns
                            # ctime: when the file arrived (tar -x/rsync -a keep old
                            # mtimes); the minAge floor reads the newer of the two.
                            yield Entry(base + ent.name, size, mtime_ns / 1e9,
                                        f"{st.st_ino}:{size}:{mtime_ns}", None,
                                        st.st_ctime_ns / 1e9)
                    elif is_dir(mode):
                        if isinstance(child, _NotRead):
                            child = _prepare_child(dfd, ent.name, dev)
                        elif isinstance(child, tuple):
                            # Its fd now counts as a level of the stack.
                            slots.give(dirs=1, entries=len(child[1]))
                        if isinstance(child, OSError):
                            self._listing_error(base + ent.name + "/", child)
                        elif child is not None:
                            cfd, cents = child
                            stack.append((cfd, base + ent.name + "/",
                                          self._stats(cents, cfd, dev, slots)))
                            break  # descend; this directory's iterator resumes afterwards
                    # symlinks, fifos, sockets, devices: never candidates
                else:
                    os.close(dfd)
                    stack.pop()
        finally:
            for dfd, _p, ents in stack:
                close = getattr(ents, "close", None)
                if close is not None:
                    close()  # cancels its window before the directory's fd goes
                os.close(dfd)

    def _stats(self, ents: builtins.list[os.DirEntry[str]], dfd: int, dev: int,
               slots: _Prefetch) -> Iterator[_Listed]:
        """``(entry, its lstat or the OSError, the subdirectory read ahead)`` in
        ``ents``' order (the last is :data:`_NOT_READ` unless the pool read it).

        Until this instance has decided, the first :data:`_PROBE_OPS` are timed
        one by one; on latency-bound storage the rest run in the pool, at most
        ``2 × parallelism`` ahead of the consumer, and a subdirectory met there
        is opened and read too while one of ``slots`` is free (memory and
        descriptors stay bounded). ``dfd`` stays open until this is exhausted
        or closed (closing waits for the pool's calls).
        """
        i = 0
        if self.latency_bound is None and self.parallelism > 1:
            samples = []
            for ent in ents[:_PROBE_OPS]:
                t0 = time.perf_counter()
                st = _lstat(ent)
                samples.append(time.perf_counter() - t0)
                yield ent, st, _NOT_READ
                i += 1
            self._is_latency_bound(samples, _SLOW_STAT_S)
        pool = self._workers()
        if pool is None or len(ents) - i < 2:
            for ent in ents[i:] if i else ents:
                try:  # _lstat inlined: this loop runs once per file on tmpfs too
                    st = ent.stat(follow_symlinks=False)
                except OSError as exc:
                    st = exc
                yield ent, st, _NOT_READ
            return

        def ahead(ent: os.DirEntry[str]) -> tuple[_Stat, _Child]:
            st = _lstat(ent)
            if (isinstance(st, os.stat_result) and stat.S_ISDIR(st.st_mode)
                    and slots.take_dir()):
                child = _prepare_child(dfd, ent.name, dev)
                if not isinstance(child, tuple):
                    slots.give(dirs=1, entries=0)
                elif not slots.take_entries(len(child[1])):
                    os.close(child[0])  # too many entries held: read it when reached
                    slots.give(dirs=1, entries=0)
                    return st, _NOT_READ
                return st, child
            return st, _NOT_READ

        def discard(result: tuple[_Stat, _Child]) -> None:
            if isinstance(result[1], tuple):
                os.close(result[1][0])
                slots.give(dirs=1, entries=len(result[1][1]))

        for ent, (st, child) in _ordered(pool, ahead, ents[i:], window=2 * self.parallelism,
                                         discard=discard):
            yield ent, st, child

    def _listing_error(self, key: str, exc: OSError) -> None:
        self.listing_error_count += 1
        if len(self.listing_errors) < _MAX_LISTING_ERRORS:
            self.listing_errors.append((key, _errtext(exc)))
        log.warning("listing %s: skipped %r: %s", self.describe(), key, _errtext(exc))

    # --- deleting ----------------------------------------------------------------

    def delete_batch(self, entries: Sequence[Entry], *, fence: Fence = no_fence
                     ) -> builtins.list[DeleteResult]:
        """Delete each entry if its fingerprint still matches; one result per entry, in order.

        Per entry: walk to its directory by descriptors (``O_NOFOLLOW``), then
        ``fstatat`` the name without following symlinks and compare
        ``inode:size:mtime_ns`` with the entry's fingerprint, then
        ``unlinkat``. ``ALREADY_GONE`` if the file or a parent directory is
        missing; ``CHANGED_SKIPPED`` if the fingerprint differs, the name is no
        longer a regular file, or a ``.lethe-keep`` appeared above it; ``ERROR``
        (with the errno name) for anything else, including a path component
        that is now a symlink (``ELOOP``/``ENOTDIR``) or on another device.

        POSIX has no conditional unlink, so the name is taken away first: the
        file is renamed to ``.lethe-del-<hash of its name>`` in its directory,
        *then* checked, then unlinked, or given its name back if it changed
        (never over a file created meanwhile). Every write that completed
        before the rename is seen by the check; a writer opening the path
        afterwards gets ``ENOENT``. What remains is a write through a descriptor
        opened before the rename and landing after the check: a write to a file
        being deleted, as with any ``rm``. A crash between rename and unlink
        leaves the quarantined name, which the resumed batch finishes.

        With ``pruneEmptyDirs`` the directories emptied are then removed (see
        :meth:`prune_empty_dirs`). Entries are most efficient in listing order.

        ``fence`` (I3) is called immediately before every rename and every
        unlink, so a node that wakes from a pause with its lease lapsed
        touches no further file. If it raises after this file's rename, the
        file gets its name back first (never over a file created meanwhile):
        undoing our own rename hides nothing from the next leader.

        On latency-bound storage the batch is cut into up to ``parallelism``
        contiguous slices deleted concurrently, each by one thread with its
        own directory walker and exactly the steps above (fence, rename,
        check, fence, unlink per file). Results keep the input order. Once
        the fence raises in any thread, the others touch no further file
        (each checks a shared stop flag before its next file, and the fence
        itself before its next rename or unlink); all threads are waited for
        before the exception propagates.
        """
        root_fd, dev = self._root()
        results: builtins.list[DeleteResult] = []
        walker = _DirWalker(root_fd, dev)
        try:
            if self.latency_bound is None and self.parallelism > 1:
                samples = []
                for entry in entries[:_PROBE_OPS]:
                    t0 = time.perf_counter()
                    results.append(self._delete_one(walker, entry, dev, fence))
                    samples.append(time.perf_counter() - t0)
                self._is_latency_bound(samples, _SLOW_DELETE_S)
            rest = entries[len(results):] if results else entries
            pool = self._workers() if len(rest) > 1 else None
            if pool is None:
                for entry in rest:
                    results.append(self._delete_one(walker, entry, dev, fence))
            else:
                results += self._delete_concurrently(pool, rest, root_fd, dev, fence)
        finally:
            walker.close()
        if self.target.pruneEmptyDirs:
            gone = [r.key for r in results if r.outcome in (Outcome.DELETED, Outcome.ALREADY_GONE)]
            self.pruned_dirs += len(self.prune_empty_dirs(gone))
        return results

    def _delete_concurrently(self, pool: ThreadPoolExecutor, entries: Sequence[Entry],
                             root_fd: int, dev: int, fence: Fence
                             ) -> builtins.list[DeleteResult]:
        """:meth:`_delete_one` over ``entries`` in ``parallelism`` contiguous slices
        (one walker each, so a directory is opened once per slice); results in
        input order. Raises the first exception of any slice after all stopped."""
        n = min(self.parallelism, len(entries))
        bounds = [len(entries) * k // n for k in range(n + 1)]
        stop = threading.Event()

        def run(lo: int, hi: int) -> builtins.list[DeleteResult]:
            out: builtins.list[DeleteResult] = []
            walker = _DirWalker(root_fd, dev)
            try:
                for entry in entries[lo:hi]:
                    if stop.is_set():
                        break  # another slice's fence raised: its exception propagates
                    out.append(self._delete_one(walker, entry, dev, fence))
            except BaseException:
                stop.set()
                raise
            finally:
                walker.close()
            return out

        futures = [pool.submit(run, bounds[k], bounds[k + 1]) for k in range(n)]
        results: builtins.list[DeleteResult] = []
        first: BaseException | None = None
        for fut in futures:  # wait for every slice: none may act after we return
            try:
                results += fut.result()
            except BaseException as exc:  # re-raised below, after every slice stopped
                stop.set()
                first = first or exc
        if first is not None:
            raise first
        return results

    def _delete_one(self, walker: _DirWalker, entry: Entry, dev: int, fence: Fence
                    ) -> DeleteResult:
        key = entry.key
        try:
            parts, name = _split(key)
        except StorageError as exc:
            return DeleteResult(key, Outcome.ERROR, str(exc))
        if key.startswith(INTERNAL_PREFIX):
            return DeleteResult(key, Outcome.ERROR, "refusing to delete the operator's own files")
        if name.startswith(_UNLISTED):
            return DeleteResult(key, Outcome.ERROR, "refusing to delete an NFS placeholder "
                                "or a file being deleted or written")
        try:
            dfd = walker.open(parts)
        except FileNotFoundError:
            return DeleteResult(key, Outcome.ALREADY_GONE, "parent directory is gone")
        except _Protected as exc:
            return DeleteResult(key, Outcome.CHANGED_SKIPPED,
                                f"protected by {KEEP_FILE} in {str(exc) or '.'}")
        except _OtherDevice as exc:
            return DeleteResult(key, Outcome.ERROR, f"{exc} is on another filesystem")
        except OSError as exc:
            hint = (" (a directory was replaced by a symlink or file)"
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR) else "")
            return DeleteResult(key, Outcome.ERROR, f"{_errtext(exc)}{hint}")
        # Take the name away first, then verify the file we now hold (I3): a writer
        # that opens the path from here on gets ENOENT, and every write before the
        # rename shows in the fingerprint. (Stat, then unlink, lost a write landing
        # between the two: chaos seed 4102.)
        tmp = _QUARANTINE + hashlib.sha256(os.fsencode(name)).hexdigest()[:20]
        if pausepoint.ENABLED:
            pausepoint.pause_point("rename")
        fence()  # raises when this node may no longer act: nothing renamed
        try:
            self._quarantine(dfd, name, tmp)
        except FileExistsError:
            pass  # an attempt that crashed after its rename left it there: verify it now
        except FileNotFoundError:
            return DeleteResult(key, Outcome.ALREADY_GONE)
        except OSError as exc:
            return DeleteResult(key, Outcome.ERROR, _errtext(exc))
        try:
            st = os.stat(tmp, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return DeleteResult(key, Outcome.ALREADY_GONE)
        except OSError as exc:
            return self._restore(dfd, tmp, name, key, Outcome.ERROR, _errtext(exc))
        if not stat.S_ISREG(st.st_mode):
            return self._restore(dfd, tmp, name, key, Outcome.CHANGED_SKIPPED,
                                 "no longer a regular file")
        if st.st_dev != dev:
            return self._restore(dfd, tmp, name, key, Outcome.ERROR, "on another filesystem")
        current = fingerprint(st)
        if current != entry.fingerprint:
            return self._restore(dfd, tmp, name, key, Outcome.CHANGED_SKIPPED,
                                 f"fingerprint {current} != {entry.fingerprint}")
        try:
            fence()
        except BaseException:
            self._restore(dfd, tmp, name, key, Outcome.ERROR, "lease lapsed")
            raise
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            return DeleteResult(key, Outcome.ALREADY_GONE)
        except OSError as exc:
            return self._restore(dfd, tmp, name, key, Outcome.ERROR, _errtext(exc))
        return DeleteResult(key, Outcome.DELETED)

    def _quarantine(self, dfd: int, name: str, tmp: str) -> None:
        """Rename ``name`` to ``tmp`` unless ``tmp`` exists (then ``FileExistsError``).

        ``renameat2(RENAME_NOREPLACE)`` does both in one call; where the library
        or the filesystem lacks it (``EINVAL``: some NFS clients), a ``stat`` of
        ``tmp`` comes first. Both raise ``FileNotFoundError`` if ``name`` is gone.
        """
        if self._noreplace and _renameat2 is not None:
            if _renameat2(dfd, os.fsencode(name), dfd, os.fsencode(tmp),
                          _RENAME_NOREPLACE) == 0:
                return
            err = ctypes.get_errno()
            if err == errno.ENOENT:  # gone, or renamed by an attempt that crashed after it
                os.stat(tmp, dir_fd=dfd, follow_symlinks=False)  # ENOENT: really gone
                err = errno.EEXIST
            if err not in (errno.EINVAL, errno.ENOSYS):
                raise OSError(err, os.strerror(err), name)
            self._noreplace = False
        try:
            os.stat(tmp, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(name, tmp, src_dir_fd=dfd, dst_dir_fd=dfd)
            return
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), tmp)

    @staticmethod
    def _restore(dfd: int, tmp: str, name: str, key: str, outcome: Outcome,
                 detail: str) -> DeleteResult:
        """Give a file that must not be deleted its name back, never over another file:
        a hard link fails if the name was re-created meanwhile (then both are kept)."""
        try:
            os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            os.unlink(tmp, dir_fd=dfd)
        except FileExistsError:
            return DeleteResult(key, Outcome.ERROR, f"{detail}; {key} was re-created "
                                f"meanwhile, the old file is kept as {tmp} beside it")
        except OSError:  # no hard links here (or a directory): rename back if still free
            try:
                os.stat(name, dir_fd=dfd, follow_symlinks=False)
                return DeleteResult(key, Outcome.ERROR, f"{detail}; {key} was re-created "
                                    f"meanwhile, the old file is kept as {tmp} beside it")
            except FileNotFoundError:
                try:
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                except OSError as exc:
                    return DeleteResult(key, Outcome.ERROR, f"{detail}; could not restore it "
                                        f"from {tmp}: {_errtext(exc)}")
            except OSError as exc:
                return DeleteResult(key, Outcome.ERROR, f"{detail}; left as {tmp}: "
                                    f"{_errtext(exc)}")
        return DeleteResult(key, outcome, detail)

    def prune_empty_dirs(self, keys: Iterable[str]) -> builtins.list[str]:
        """Remove directories left empty above the given (deleted) keys; return their keys.

        For each key's parent directory, deepest first: ``rmdir`` it by name
        relative to its parent's descriptor; if that succeeds, try its parent
        next. The kernel's ``rmdir`` only removes an *empty* directory, so the
        emptiness check is atomic. Never the root (it has no name below
        itself), never ``.lethe/``, never a protected directory (it holds
        ``.lethe-keep``, so it is not empty), never a mount point (``EBUSY``) or
        a symlink (``ENOTDIR``). A directory that a writer is just about to use
        may disappear under it; such a writer sees ``ENOENT``.
        """
        root_fd, dev = self._root()
        todo: set[tuple[str, ...]] = set()
        for key in keys:
            try:
                parts, _name = _split(key)
            except StorageError:
                continue
            if parts and parts[0] != _INTERNAL_DIR:
                todo.add(tuple(parts))
        removed: builtins.list[str] = []
        walker = _DirWalker(root_fd, dev)
        try:
            while todo:
                deepest = max(todo, key=lambda p: (len(p), [os.fsencode(x) for x in p]))
                todo.discard(deepest)
                try:
                    pfd = walker.open(deepest[:-1])
                    os.rmdir(deepest[-1], dir_fd=pfd)
                except (OSError, _Protected, _OtherDevice):
                    continue
                removed.append("/".join(deepest))
                if len(deepest) > 1:
                    todo.add(deepest[:-1])
        finally:
            walker.close()
        return removed

    # --- small objects (manifest, ledger) ----------------------------------------

    def read_object(self, key: str) -> tuple[bytes, str] | None:
        """``(data, token)``; the token is the file's ``inode:size:mtime_ns``."""
        root_fd, dev = self._root()
        parts, name = _split(key)
        # Internal objects live wherever the policy says, even under .lethe-keep.
        walker = _DirWalker(root_fd, dev, check_keep=False)
        try:
            try:
                dfd = walker.open(parts)
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except (OSError, _Protected, _OtherDevice) as exc:
                raise StorageError(f"cannot read {key!r} in {self.describe()}: {exc}") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise StorageError(f"{key!r} in {self.describe()} is not a regular file")
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks), fingerprint(st)
            except OSError as exc:
                raise StorageError(f"cannot read {key!r} in {self.describe()}: "
                                   f"{_errtext(exc)}") from None
            finally:
                os.close(fd)
        finally:
            walker.close()

    def replace_object(self, key: str, data: bytes | BinaryIO, *,
                       if_match: str | None = None) -> str:
        """Atomically replace or create ``key``; return the new token.

        Writes ``.lethe-tmp-<name>.<random>`` in the same directory, fsyncs it,
        renames it over ``key`` and fsyncs the directory, so a crash leaves
        either the old or the new content, never a torn file. Missing parent
        directories are created.

        A process killed mid-write leaves its temporary file (chaos seed
        12325). Such names are never listed (neither retention candidates nor
        ledger files), and the first write of an instance (a run) into a
        directory removes the ``.lethe-tmp-*`` files there that no write of
        this process has in flight (and an earlier version's
        ``.<name>.lethe-tmp-<hex12>`` of the name written). So a leftover goes
        at the next run's next write into its directory: a resumed batch
        rewrites its ledger file, and its manifest while the batch's entries
        are still listed; until then it only takes space. A live write of
        another process (a deposed leader, a ``lethe apply`` sharing the
        directory) may lose its temp file too: its rename then fails with
        :class:`StorageError` and changes nothing (a create via ``link`` has
        already happened and stands). The ``.lethe-tmp-`` prefix is reserved.

        ``if_match``: ``None`` replaces
        unconditionally; a token from :meth:`read_object` requires the file to
        still have it; :data:`ABSENT_TOKEN` requires the file not to exist
        (atomic, via ``link``). A mismatch raises :class:`ConflictError`.

        The token check before the rename is not atomic with it (POSIX has no
        compare-and-rename); only the fenced leader writes these files, so the
        check guards against stale state, not against a concurrent writer.
        """
        root_fd, _dev = self._root()
        parts, name = _split(key)
        try:
            dfd = self._ensure_dirs(root_fd, parts)
        except OSError as exc:
            raise StorageError(f"cannot create the directory of {key!r} in "
                               f"{self.describe()}: {_errtext(exc)}") from None
        tmp = f"{_TEMP}{name}.{secrets.token_hex(6)}"
        if len(os.fsencode(tmp)) > 255:
            tmp = f"{_TEMP}{secrets.token_hex(12)}"
        slot: tuple[int, int, str] | None = None
        try:
            dst = os.fstat(dfd)
            self._remove_interrupted_writes(dfd, (dst.st_dev, dst.st_ino), parts, name)
            slot = (dst.st_dev, dst.st_ino, tmp)
            with _WRITING_LOCK:  # before the name exists: a sweep never sees it unregistered
                _WRITING.add(slot)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=dfd)
            try:
                try:
                    chunks = [data] if isinstance(data, bytes) else iter(
                        lambda: data.read(1 << 20), b"")
                    for chunk in chunks:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                    os.fsync(fd)
                    token = fingerprint(os.fstat(fd))
                finally:
                    os.close(fd)
                if if_match == ABSENT_TOKEN:
                    try:
                        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    except FileExistsError:
                        raise ConflictError(f"{key!r} already exists in {self.describe()}"
                                            ) from None
                    # Created; another process's sweep may have taken the temp name.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=dfd)
                else:
                    if if_match is not None:
                        try:
                            current = fingerprint(os.stat(name, dir_fd=dfd, follow_symlinks=False))
                        except FileNotFoundError:
                            current = "absent"
                        if current != if_match:
                            raise ConflictError(f"{key!r} in {self.describe()} changed "
                                                f"(token {current}, expected {if_match})")
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                os.fsync(dfd)
            except BaseException:
                with contextlib.suppress(OSError):  # ENOENT once renamed: the name is random
                    os.unlink(tmp, dir_fd=dfd)
                raise
            # The inode (and mtime) survive rename/link, so the temp file's
            # fingerprint is the new file's token.
            return token
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} in {self.describe()}: "
                               f"{_errtext(exc)}") from None
        finally:
            if slot is not None:
                with _WRITING_LOCK:
                    _WRITING.discard(slot)
            if dfd != root_fd:
                os.close(dfd)

    def _remove_interrupted_writes(self, dfd: int, dir_id: tuple[int, int],
                                   parts: builtins.list[str], name: str) -> None:
        """Once per instance and directory ``dir_id`` (``st_dev, st_ino``): unlink
        the temporary files interrupted :meth:`replace_object` calls left in
        ``dfd`` (see there). Best effort: a failure is logged, the write goes on."""
        if dir_id in self._swept:
            return
        legacy = f".{name}.lethe-tmp-"
        try:
            with os.scandir(dfd) as it:
                names = [e.name for e in it if e.name.startswith(_TEMP) or (
                    e.name.startswith(legacy) and _LEGACY_TEMP.match(e.name))]
        except OSError as exc:
            log.warning("%s: cannot look for interrupted writes in %r: %s", self.describe(),
                        "/".join(parts) or ".", _errtext(exc))
            return
        self._swept.add(dir_id)
        for n in names:
            with _WRITING_LOCK:  # only the lookup: the lock is process-wide
                live = (*dir_id, n) in _WRITING
            if live:
                continue
            leftover = "/".join([*parts, n])
            try:
                if not stat.S_ISREG(os.stat(n, dir_fd=dfd, follow_symlinks=False).st_mode):
                    continue
                os.unlink(n, dir_fd=dfd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("%s: cannot remove %r, the temporary file of an interrupted "
                            "write: %s", self.describe(), leftover, _errtext(exc))
                continue
            log.info("%s: removed %r, the temporary file of an interrupted write",
                     self.describe(), leftover)

    def delete_object(self, key: str) -> None:
        root_fd, dev = self._root()
        parts, name = _split(key)
        walker = _DirWalker(root_fd, dev, check_keep=False)
        try:
            try:
                os.unlink(name, dir_fd=walker.open(parts))
            except (FileNotFoundError, NotADirectoryError):
                return
            except (OSError, _Protected, _OtherDevice) as exc:
                raise StorageError(f"cannot delete {key!r} in {self.describe()}: {exc}") from None
        finally:
            walker.close()

    def list_internal(self, prefix: str) -> Iterator[str]:
        """Keys of regular files whose key starts with ``prefix``, in listing order.

        ``prefix`` is usually a directory (``.lethe/ledger/``); a partial last
        component (``.lethe/ledger/run-1``) filters names in that directory.
        """
        root_fd, dev = self._root()
        dir_part, _sep, _rest = prefix.rpartition("/")
        parts = check_key(dir_part).split("/") if dir_part else []
        walker = _DirWalker(root_fd, dev, check_keep=False)
        try:
            try:
                start = os.dup(walker.open(parts))
            except (FileNotFoundError, NotADirectoryError):
                return
            except (OSError, _Protected, _OtherDevice) as exc:
                raise StorageError(f"cannot list {prefix!r} in {self.describe()}: {exc}") from None
        finally:
            walker.close()
        base = dir_part + "/" if dir_part else ""
        stack: builtins.list[tuple[int, str, list[str]]] = []
        try:
            stack.append((start, base, self._read_names(start)))
            while stack:
                dfd, kp, names = stack[-1]
                if not names:
                    os.close(dfd)
                    stack.pop()
                    continue
                name = names.pop()
                key = kp + name
                if not (key.startswith(prefix) or prefix.startswith(key + "/")):
                    continue
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and key.startswith(prefix):
                    yield key
                elif stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
                    try:
                        cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                    except OSError:
                        continue
                    try:
                        children = self._read_names(cfd)
                    except OSError:
                        os.close(cfd)
                        continue
                    stack.append((cfd, key + "/", children))
        finally:
            for dfd, _k, _n in stack:
                os.close(dfd)

    @staticmethod
    def _read_names(dfd: int) -> builtins.list[str]:
        with os.scandir(dfd) as it:  # a temp file is not (yet) a ledger or plan
            names = [e.name for e in it
                     if not e.name.startswith(_TEMP) and not _LEGACY_TEMP.match(e.name)]
        names.sort(key=os.fsencode, reverse=True)
        return names

    def _ensure_dirs(self, root_fd: int, parts: Sequence[str]) -> int:
        """Open (creating as needed) the directory ``parts``; caller closes if != root_fd."""
        fd = root_fd
        try:
            for name in parts:
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                if fd != root_fd:
                    os.close(fd)
                fd = nfd
        except BaseException:
            if fd != root_fd:
                os.close(fd)
            raise
        return fd
