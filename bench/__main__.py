"""``python -m bench`` (``make bench``): every benchmark in sequence.

posix (lethe vs find), s3 (lethe vs rclone, aws CLI, boto3 loop on moto, an
unversioned bucket), s3-versioned (the same on a versioned bucket), s3-minio
(the same on MinIO, versioned), memory (peak RSS of a plan), nfs (find, rclone
and lethe on an NFS-shaped FUSE mount), failover (SIGKILL of the leader
mid-run to the new leader's first delete), policies (start lag of many
scheduled policies), and raft if
``bench/raft_bench.py`` exists. Each prints a table and writes
``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import _common  # noqa: F401  (puts operator/ on sys.path)

#: name -> (module bench.<module>_bench, its arguments)
BENCHES: dict[str, tuple[str, list[str]]] = {
    "posix": ("posix", []), "s3": ("s3", []), "s3-versioned": ("s3", ["--versioned"]),
    "s3-minio": ("s3", ["--server", "minio", "--versioned"]), "memory": ("memory", []),
    "nfs": ("nfs", []), "failover": ("failover", []), "policies": ("policies", []),
    "raft": ("raft", [])}
NAMES = tuple(BENCHES)


def _run(name: str, quick: bool) -> None:
    """Run one benchmark's ``main``; a non-zero int return is a failure."""
    module_name, extra = BENCHES[name]
    module = importlib.import_module(f"bench.{module_name}_bench")
    entry: Callable[..., Any] = module.main
    argv = [*extra, "--quick"] if quick else list(extra)
    if quick and name == "raft":  # owned elsewhere: use the options it has
        source = inspect.getsource(module)
        argv = ["--quick"] if "--quick" in source else (
            ["--trials", "3"] if "--trials" in source else [])
    params = inspect.signature(entry).parameters
    if "argv" in params:
        rc = entry(argv)
    elif params:
        rc = entry(*([argv] if len(params) == 1 else []))
    else:  # a main() that parses sys.argv itself
        saved = sys.argv
        sys.argv = [f"bench.{name}_bench", *argv]
        try:
            rc = entry()
        finally:
            sys.argv = saved
    if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
        raise RuntimeError(f"bench.{name}_bench exited {rc}")


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--only", choices=NAMES, action="append",
                    help="run just this benchmark (repeatable)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = ap.parse_args()
    names = list(args.only or NAMES)
    if "raft" in names and importlib.util.find_spec("bench.raft_bench") is None:
        if args.only:
            print("bench/raft_bench.py does not exist (yet)", file=sys.stderr)
            return 2
        names.remove("raft")
    failed: list[str] = []
    for name in names:
        print(f"\n##### {name}{' (quick)' if args.quick else ''} #####")
        sys.stdout.flush()
        t0 = time.perf_counter()
        try:
            _run(name, args.quick)
        except (Exception, SystemExit):
            traceback.print_exc()
            failed.append(name)
        print(f"  ({name} took {time.perf_counter() - t0:.0f}s)")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
