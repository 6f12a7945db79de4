"""``python -m tests.chaos --trials N [--seed S] [--quick]`` (``make chaos TRIALS=N``).

Starts one API server and one moto server for the whole run; each trial gets
a fresh namespace, bucket, directory, recording S3 proxy and three fresh
replicas (a new Raft cluster). Trial ``k`` uses seed ``S + k``; re-run one with
``--seed S+k --trials 1``. Exit status 1 if any trial found a violation, raised
(ERROR), or proves nothing (FAILED: no fault landed, a thread died or did less
than its floor, a replica not alive and ready at the end).
"""

from __future__ import annotations

import argparse
import fcntl
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.chaos.env import Shared
from tests.chaos.trial import run_trial


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    p.add_argument("--quick", action="store_true", help="smaller populations, shorter chaos")
    p.add_argument("--keep", action="store_true", help="keep every trial's directory")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    first = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    base = args.workdir or Path(tempfile.mkdtemp(prefix="lethe-chaos-"))
    base.mkdir(parents=True, exist_ok=True)
    # Two runs in one workdir share its kubeconfigs: one's replicas would serve the
    # other's API server as a second cluster (session 7 lost a run so).
    lock = open(base / ".lock", "a")  # noqa: SIM115 (held until the process exits)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"chaos: {base} is in use by another run; give another --workdir",
              file=sys.stderr)
        return 2
    print(f"chaos: {args.trials} trials, seeds {first}..{first + args.trials - 1}, "
          f"{'quick' if args.quick else 'full'}; work in {base}", flush=True)
    shared = Shared(base)
    faults: Counter[str] = Counter()
    changes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    failed: list[int] = []
    stats: Counter[str] = Counter()
    t0 = time.monotonic()
    try:
        shared.start()
        for k in range(args.trials):
            seed = first + k
            res = run_trial(shared, seed, quick=args.quick, base=base, keep=args.keep)
            faults += res.faults
            changes += res.leader_changes
            stats.update(res.verdict.stats)
            kinds.update(v.kind for v in res.verdict.violations)
            status = "ok" if res.ok else ("ERROR" if res.error else
                                          "VIOLATION" if res.verdict.violations else "FAILED")
            print(f"trial {k + 1}/{args.trials} seed {seed}: {status} in {res.seconds:.0f}s; "
                  f"faults {dict(res.faults)}; leader changes per fault "
                  f"{dict(res.leader_changes)}; {res.verdict.stats}", flush=True)
            for v in res.verdict.violations[:20]:
                print(f"    {v}", flush=True)
            if len(res.verdict.violations) > 20:
                print(f"    … {len(res.verdict.violations) - 20} more", flush=True)
            for n in res.verdict.notes[:5]:
                print(f"    note: {n}", flush=True)
            for f in res.failures:
                print("    FAILED: " + f.replace("\n", "\n    "), flush=True)
            if res.error:
                print("    " + res.error.replace("\n", "\n    "), flush=True)
            if not res.ok:
                failed.append(seed)
                print(f"    kept {res.workdir}; reproduce: python -m tests.chaos --trials 1 "
                      f"--seed {seed}{' --quick' if args.quick else ''}", flush=True)
    finally:
        shared.stop()
    print(f"\nsummary: {args.trials} trials (seeds {first}..{first + args.trials - 1}) in "
          f"{(time.monotonic() - t0) / 60:.1f} min; faults injected "
          f"{sum(faults.values())} {dict(sorted(faults.items()))}; leader changes per fault "
          f"{dict(sorted(changes.items()))}; totals {dict(stats)}; "
          f"violations {sum(kinds.values())} {dict(kinds)}; failed seeds {failed or 'none'}",
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
