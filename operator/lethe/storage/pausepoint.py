"""Test-only pause points: a real process SIGSTOPs itself at a chosen side effect.

The fencing tests (tests/raft/test_fencing_*.py) need a leader frozen at an
exact step — just before a delete rename, a delete request or a ledger write —
then a new leader finishing the run, then the old one woken. Timing a SIGSTOP
from outside cannot hit one step among thousands, so the process does it to
itself, *before* the step's own fence check (the fence is what is tested).

``LETHE_TEST_PAUSE_AT=<point>:<n>`` pauses at the ``n``-th (1-based) arrival at
``point`` (``rename``, ``s3-delete`` or ``ledger``) in this process.
``LETHE_TEST_PAUSE_ONCE=<path>``, if set, makes it one pause per cluster: the
first process to arrive creates ``path`` (``O_EXCL``, holding its pid) and
pauses; the others go on. The environment is read once, at import: in
production :data:`ENABLED` is False and each call site costs one test of a
module constant.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["ENABLED", "pause_point"]

_SPEC = os.environ.get("LETHE_TEST_PAUSE_AT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_AT = int(_NTH) if _NTH.isdigit() else 0
_ONCE = os.environ.get("LETHE_TEST_PAUSE_ONCE", "")
#: True only in a process started with LETHE_TEST_PAUSE_AT (tests).
ENABLED: bool = bool(_POINT) and _AT > 0
_count = 0
_lock = threading.Lock()


def pause_point(point: str) -> None:
    """Count an arrival at ``point``; at the configured one, SIGSTOP this process.

    Returns after SIGCONT. Call only under ``if ENABLED:``.
    """
    global _count
    if point != _POINT:
        return
    with _lock:
        _count += 1
        if _count != _AT:
            return
        if _ONCE:
            try:
                fd = os.open(_ONCE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return  # another replica already paused: this one goes on
            os.write(fd, f"{os.getpid()} {point}:{_AT}\n".encode())
            os.close(fd)
        # To this thread: it then stops before the call returns. kill(getpid())
        # lets the kernel pick a thread to take the stop (the main one), and this
        # thread ran on meanwhile, through the very check the pause must precede
        # (CI saw the paused request sent with a check made before the stop).
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
