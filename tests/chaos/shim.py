"""``lethe run`` with Raft links dialled through the chaos proxies.

The replica keeps its real identity (``LETHE_RAFT_SELF``); only where it dials
each peer changes, through the product's own test hook
(:func:`lethe.raft.discovery.set_dial_overrides`). ``LETHE_CHAOS_DIAL`` is
``addr=host:port,…``. Nothing else differs from ``python -m lethe.cli.main run``.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

from lethe.cli.main import main
from lethe.raft.discovery import set_dial_overrides


def _overrides(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        addr, _, dial = item.partition("=")
        out[addr] = dial
    return out


if __name__ == "__main__":
    # Every thread's stack into this replica's log on SIGUSR1: the harness asks for it
    # when replicas never become ready (seeds 10503 and 10615: a tick thread that
    # seemed to stop right after bootstrapping).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    set_dial_overrides(_overrides(os.environ.get("LETHE_CHAOS_DIAL", "")))
    sys.exit(main(["run"]))
