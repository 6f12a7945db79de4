"""A one-node Raft cluster for the command line: the operator's code path (I7).

``lethe plan``/``lethe apply`` run through the same journal as the operator,
so a killed ``lethe apply`` resumes exactly where it stopped when run again
with the same state directory. The node listens on loopback only, with a
fresh random password: nothing else ever talks to it.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from lethe.journal import JournalError
from lethe.raft.config import DEFAULT_TIMINGS, RaftTimings
from lethe.raft.lock import DataDirBusy
from lethe.raft.node import RaftJournal

__all__ = ["LOCAL_TIMINGS", "local_journal"]

#: pysyncobj applies an entry one tick after it appends it, and a tick with nothing
#: to read sleeps ``auto_tick_period`` in poll(): every synchronous commit of
#: the CLI (BeginRun, FinishRun, the last batches) waited up to 50 ms for that
#: sleep. A one-node cluster has no peer traffic to wait for, so it ticks every
#: 10 ms; the lease and election timings are the operator's.
LOCAL_TIMINGS = replace(DEFAULT_TIMINGS, auto_tick_period=0.01)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_journal(*, data_dir: str | Path, timeout: float = 15.0,
                  timings: RaftTimings = LOCAL_TIMINGS) -> Iterator[RaftJournal]:
    """The journal of ``data_dir``, led by this process once it holds the lease.

    :raises JournalError: another process (a ``lethe apply`` or ``lethe plan`` of the
        same policy and state directory) holds ``data_dir``, or the node did not
        lead within ``timeout`` seconds.
    """
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{_free_port()}"
    try:
        journal = RaftJournal(self_address=address, peers=[], password=secrets.token_hex(16),
                              data_dir=data_dir, bind_address=address, timings=timings,
                              wait_for_lock=False)
    except DataDirBusy as e:
        raise JournalError(f"{e}: another `lethe apply` or `lethe plan` of this policy "
                           "is using its journal; run this one once it has finished") from e
    try:
        deadline = time.monotonic() + timeout
        while not journal.lease_valid():
            if time.monotonic() > deadline:
                why = journal.quorum_problem()
                raise JournalError(f"one-node Raft in {data_dir} did not become leader "
                                   f"within {timeout:.0f}s" + (f": {why}" if why else ""))
            time.sleep(0.02)
        yield journal
    finally:
        journal.close()
