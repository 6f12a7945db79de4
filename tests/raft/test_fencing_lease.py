"""The lease treats a gap in the process's own execution as a lapse (#17 item 1).

A pause longer than the lease window shows in the lease arithmetic itself
(``time.monotonic()`` runs on while a process is stopped). A shorter one does
not, so the node also checks how old its published Raft view is: if the tick
thread has not run for longer than the pause gap, the lease is void until a
tick re-confirms it with a fresh quorum acknowledgement.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lethe.raft.local import LOCAL_TIMINGS, local_journal


def test_a_gap_shorter_than_the_lease_is_still_a_lapse(tmp_path: Path) -> None:
    """A real execution gap of the tick thread: this thread keeps the GIL in a busy
    loop (switch interval raised so it never yields) for longer than the pause gap
    but shorter than the lease window, then checks the lease without yielding.
    The lease arithmetic alone would say valid (the last tick is less than a lease
    window ago); the gap rule says lapsed. Once the tick thread runs again, the
    lease comes back by itself."""
    t = LOCAL_TIMINGS
    gap = max(4 * t.auto_tick_period, t.lease_window / 2)
    busy = (gap + t.lease_window) / 2  # 0.24 s: past the gap, inside the lease window
    with local_journal(data_dir=tmp_path) as journal:
        old = sys.getswitchinterval()
        for _attempt in range(5):
            time.sleep(0.05)  # let the tick thread publish a fresh view
            sys.setswitchinterval(30.0)
            try:
                start = time.monotonic()
                while time.monotonic() - start < busy:
                    pass
                valid = journal.lease_valid()
                elapsed = time.monotonic() - start
            finally:
                sys.setswitchinterval(old)
            if elapsed < t.lease_window * 0.9:  # else the OS preempted us too long: retry
                break
        else:
            raise AssertionError("could not hold a gap shorter than the lease window")
        assert not valid, f"lease valid after the tick thread did not run for {elapsed:.2f}s"
        deadline = time.monotonic() + 5
        while not journal.lease_valid():
            assert time.monotonic() < deadline, "the lease never came back after the gap"
            time.sleep(0.01)

