"""Run one Raft member plus its test HTTP server: ``python -m lethe.raft``.

Used by tests and benchmarks to drive real processes::

    python -m lethe.raft --self 127.0.0.2:7001 --peers 127.0.0.3:7001,127.0.0.4:7001 \\
        --data-dir /tmp/n1 --password-file /run/secret --http 127.0.0.2:8001

SIGTERM leaves the cluster first when ``--leave-on-term`` is given (graceful
scale-down), then exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from lethe.raft.discovery import set_dial_overrides
from lethe.raft.http import serve
from lethe.raft.node import RaftJournal
from lethe.raft.security import InsecureRaftRefused, resolve_password
from lethe.raft.status import RaftMetrics

log = logging.getLogger("lethe.raft")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lethe.raft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--self", dest="self_address", required=True, help="advertised host:port")
    p.add_argument("--peers", default="", help="comma-separated seed peers (host:port)")
    p.add_argument("--bind", default=None, help="bind host:port (default: --self)")
    p.add_argument("--data-dir", default=None, help="journal and snapshot directory")
    p.add_argument("--password", default=None, help="Raft password (prefer --password-file)")
    p.add_argument("--password-file", default=None, help="file holding the Raft password")
    p.add_argument("--insecure-dev-raft", action="store_true",
                   help="run WITHOUT a password: unauthenticated, local development only")
    p.add_argument("--http", default=None, help="host:port of the test HTTP server")
    p.add_argument("--join", action="store_true",
                   help="this node is not part of the seed (--peers): it never bootstraps "
                        "a cluster, it only joins one")
    p.add_argument("--leave-on-term", action="store_true",
                   help="on SIGTERM, leave the cluster before exiting")
    p.add_argument("--dial", action="append", default=[],
                   help="TEST ONLY: addr=host:port, dial addr through a proxy")
    p.add_argument("--allow-unfenced", action="store_true",
                   help="TEST ONLY: accept POST /commit with unfenced=true")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        password = resolve_password(password=args.password, password_file=args.password_file,
                                    insecure_dev=args.insecure_dev_raft)
    except InsecureRaftRefused as exc:
        log.error("%s", exc)
        return 2
    set_dial_overrides(dict(d.split("=", 1) for d in args.dial))
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    journal = RaftJournal(self_address=args.self_address, peers=peers, password=password,
                          data_dir=args.data_dir, join=args.join,
                          bind_address=args.bind or args.self_address,
                          metrics=RaftMetrics())
    server = serve(journal=journal, address=args.http,
                   allow_unfenced=args.allow_unfenced) if args.http else None
    stop = threading.Event()

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log.info("raft: %s started (peers %s)", args.self_address, ", ".join(peers) or "none")
    while not stop.wait(0.5):
        pass
    if args.leave_on_term:
        try:
            journal.leave()
        except Exception as exc:
            log.error("raft: leave failed: %s", exc)
    if server is not None:
        server.shutdown()
    journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
