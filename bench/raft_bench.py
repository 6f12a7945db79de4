"""Raft benchmarks with real processes on loopback (password on, 3 members).

* failover: SIGKILL the leader, time until the first entry committed by the
  new leader (its Fence applied, then a BeginRun accepted) — over N trials.
* throughput: intents of 1,000 keys, each followed by its completion, committed
  one after another (sync) vs pipelined through commit_async (window = entries
  in flight).

Prints a table and writes ``bench/results/raft.json``.
Run: ``python -m bench.raft_bench [--trials 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.raft.conftest import Cluster

RESULTS = Path(__file__).resolve().parent / "results" / "raft.json"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def failover(c: Cluster, *, trials: int) -> dict[str, Any]:
    times: list[float] = []
    for n in range(trials):
        leader = c.wait_leader(timeout=30)
        rest = [i for i in range(3) if i != leader]
        t0 = time.monotonic()
        c.kill(leader)
        done = None
        while done is None and time.monotonic() - t0 < 30:
            for i in rest:
                try:
                    code, _ = c.post(i, "/commit", {"kind": "BeginRun", "run_id": f"f{n}",
                                                    "policy": f"failover/{n}"}, timeout=5)
                except OSError:
                    continue
                if code == 200:
                    done = time.monotonic() - t0
                    break
            time.sleep(0.01)
        if done is None:
            raise RuntimeError(f"trial {n}: no commit within 30s")
        times.append(done)
        print(f"  failover trial {n + 1:2d}: {done:.3f}s", flush=True)
        c.start(leader, peers=[0, 1, 2])
        c.wait_for(lambda i=leader: c.status(i) is not None
                   and c.status(i)["leader"] is not None, timeout=30, what="rejoined")  # type: ignore[index]
        time.sleep(1.0)  # let the restarted member settle before the next kill
    return {"trials": trials, "p50_s": statistics.median(times), "p95_s": _pct(times, 0.95),
            "min_s": min(times), "max_s": max(times), "samples_s": times}


def throughput(c: Cluster) -> list[dict[str, Any]]:
    out = []
    for mode, entries, window in (("sync", 30, 1), ("pipelined", 200, 16),
                                  ("pipelined", 200, 64)):
        leader = c.wait_leader(timeout=30)
        code, resp = c.post(leader, "/bench", {"entries": entries, "keys": 1000, "mode": mode,
                                               "window": window}, timeout=300)
        row = {"mode": mode, "window": window, **resp} if code == 200 else {
            "mode": mode, "window": window, "error": resp}
        print(f"  {mode:9s} window {window:3d}: {json.dumps(row)}", flush=True)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raft_bench")
    p.add_argument("--trials", type=int, default=20)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lethe-raft-bench-") as tmp:
        c = Cluster(Path(tmp))
        try:
            c.start_all(3)
            c.wait_leader(timeout=30)
            tp = throughput(c)
            fo = failover(c, trials=args.trials)
        finally:
            c.close()
    load = os.getloadavg()
    result = {"failover": fo, "throughput": tp, "nodes": 3, "password": True,
              "loadavg": load, "cpus": os.cpu_count()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print()
    print(f"{'metric':38s} {'value':>14s}")
    print(f"{'failover p50 (SIGKILL -> commit)':38s} {fo['p50_s']:>13.3f}s")
    print(f"{'failover p95':38s} {fo['p95_s']:>13.3f}s")
    for row in tp:
        name = f"{row['mode']} (window {row['window']})"
        if "intents_per_s" in row:
            print(f"{name + ' intents/s':38s} {row['intents_per_s']:>14.1f}")
            print(f"{name + ' keys/s':38s} {row['keys_per_s']:>14.0f}")
        else:
            print(f"{name:38s} {'failed: ' + str(row['error'])[:40]:>14s}")
    print(f"(load average {load[0]:.1f} on {os.cpu_count()} CPUs; written to {RESULTS})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
