"""One process per Raft data directory.

A StatefulSet promises at most one pod per identity, but ``kubectl delete pod
--force`` breaks that promise (Kubernetes says so): the API object goes at
once and its replacement starts with the same name and the same volume while
the old container is still stopping. Seen in the end-to-end suite: the old
process led its term with one follower for about 5 s while its replacement
led the next term with the other. Two processes with one identity are two
Raft members that each count as the same vote, so each can form a "majority"
with a different peer, and both append to one journal file.

The data directory's lock file settles it: an exclusive ``flock``, which the
kernel releases however the holder ends (exit, SIGKILL, OOM kill). A second
process waits for it before it reads or writes anything in the directory.
``flock`` works across containers on one node (one inode, one kernel) and on
NFSv4, where Linux maps it to a byte-range lock on the server.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "DataDirBusy", "hold_data_dir"]

log = logging.getLogger("lethe.raft")

LOCK_FILE = "lock"


class DataDirBusy(Exception):
    """Another process holds the data directory (``hold_data_dir(wait=False)``)."""


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it (its pid, as its own PID namespace
    sees it)."""
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def hold_data_dir(directory: Path, *, wait: bool = True, poll: float = 0.5,
                  log_every: float = 10.0) -> int | None:
    """Lock ``directory`` for this process, waiting while another process holds it.

    Returns the open descriptor that holds the lock (closing it, or exiting,
    releases it), or ``None`` if the filesystem cannot lock at all (``ENOLCK``,
    e.g. NFSv3 without lockd; logged as a warning: a second process would not
    be stopped). ``poll`` and ``log_every`` are seconds. Waits for ever: a pod
    whose old container never exits is for its startup probe to restart. With
    ``wait=False`` (the command line, as restic does with a locked repository)
    it raises at once instead. The holder's pid is written into the lock file.

    :raises DataDirBusy: ``wait=False`` and another process holds the lock.
    :raises OSError: the directory or its lock file cannot be created or opened.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    started = time.monotonic()
    logged = float("-inf")
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                holder = _holder(fd)
                os.close(fd)
                raise DataDirBusy(f"{path} is held by {holder}") from None
            now = time.monotonic()
            if now - logged >= log_every:
                logged = now
                log.warning("raft: another process holds %s (%.0fs so far): waiting for it "
                            "to exit before using this journal (a pod of the same name still "
                            "stopping after `kubectl delete pod --force`)", path, now - started)
            time.sleep(poll)
            continue
        except OSError as e:
            if e.errno != errno.ENOLCK:
                os.close(fd)
                raise
            log.warning("raft: %s cannot be locked (%s): nothing stops a second process "
                        "from using this journal at the same time", path, e.strerror)
            os.close(fd)
            return None
        try:  # only for a second process's message: a full volume must not stop us
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            log.debug("raft: cannot write the pid into %s: %s", path, e.strerror)
        waited = time.monotonic() - started
        if waited >= poll:
            log.info("raft: took %s after waiting %.1fs for the process that held it", path,
                     waited)
        return fd
