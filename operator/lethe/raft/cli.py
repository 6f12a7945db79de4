"""``lethe raft status``: fetch a member's `/raft` document and print it as a table."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from lethe.raft.status import render_table

__all__ = ["raft_status_main"]


def raft_status_main(argv: list[str] | None = None) -> int:
    """Print the Raft status of the member at ``--url`` (default localhost:8080)."""
    p = argparse.ArgumentParser(prog="lethe raft status",
                                description="Show Raft state, leader, term, indexes, peers.")
    p.add_argument("--url", default="http://127.0.0.1:8080/raft",
                   help="the member's /raft endpoint (a base URL gets /raft appended)")
    p.add_argument("--json", action="store_true", help="print the raw JSON document")
    p.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    url = args.url if args.url.rstrip("/").endswith("/raft") else args.url.rstrip("/") + "/raft"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            status = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"lethe raft status: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else render_table(status))
    return 0
