"""The Python floor for ``lethe apply`` on a POSIX tree: the same system calls,
nothing else.

One pass: ``os.scandir`` + ``lstat`` of every entry (as lethe lists), select
files older than 30 days; then per selected file the I3-safe delete lethe
does (``renameat2(RENAME_NOREPLACE)`` to a quarantine name, ``fstatat``,
compare ``inode:size:mtime_ns``, ``unlinkat``). No planner, journal, spool,
ledger or start-up. What lethe adds on top of this is its own cost; what this
costs above ``find`` is the price of Python and of the safe delete.

Run as ``python -m bench.posix_floor DIR``; prints the number deleted.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time

from lethe.storage.posix import _RENAME_NOREPLACE, _renameat2

__all__ = ["main"]

_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(dfd: int, cutoff_ns: int, out: list[tuple[int, str, str]]) -> None:
    with os.scandir(dfd) as it:
        ents = sorted(it, key=lambda e: e.name)
    for e in ents:
        st = e.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            if st.st_mtime_ns < cutoff_ns:
                out.append((dfd, e.name, f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"))
        elif stat.S_ISDIR(st.st_mode):
            _walk(os.open(e.name, _FLAGS, dir_fd=dfd), cutoff_ns, out)


def main(argv: list[str]) -> int:
    if _renameat2 is None:
        raise SystemExit("renameat2 is not available here")
    cutoff_ns = time.time_ns() - 30 * 86400 * 10**9
    todo: list[tuple[int, str, str]] = []
    _walk(os.open(argv[0], _FLAGS), cutoff_ns, todo)
    deleted = 0
    for dfd, name, fp in todo:
        tmp = ".lethe-del-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:20]
        if _renameat2(dfd, os.fsencode(name), dfd, os.fsencode(tmp), _RENAME_NOREPLACE):
            continue
        st = os.stat(tmp, dir_fd=dfd, follow_symlinks=False)
        if f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}" == fp:
            os.unlink(tmp, dir_fd=dfd)
            deleted += 1
    print(deleted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
