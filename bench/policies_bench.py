"""Many policies (#16 item 5): N RetentionPolicies, each scheduled every minute on a
small directory, on three local replicas; how late each slot's run starts.

A real kube-apiserver + etcd, three ``lethe run`` replicas with the chart's
RBAC and default settings, ``--policies`` RetentionPolicies (Enforce,
``schedule: "* * * * *"``, maxAge 30d) on directories of 20 young files each
(so every run lists 20 files and deletes nothing: the fixed cost of a run,
not its deletes). The benchmark waits for ``--slots`` whole minutes after
the first full minute and reads the leader's log: for each policy and slot,
the start lag is the time of "run R of P starting (slot S, ...)" minus S;
a slot with no such line is missed. The replicas' ``lethe_runs_total``
would say the same; the log also gives the lag.

Prints median, p95 and max start lag and missed slots per N; writes
``bench/results/policies.json``. Target (#16): 1,000 policies, p95 lag
<= 10 s, no missed slot. Nothing here asserts a time.
Run: ``python -m bench.policies_bench [--policies 300 1000] [--slots 3]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from tests.chaos.env import Shared
from tests.fixtures.replicas import LocalReplicas

from bench._common import print_table, write_results

__all__ = ["main"]

_STARTING = re.compile(r"^run \S+ of (\S+) starting \(slot (\S+), mode ")
#: The run's id in its "starting" line and in the runner's last line ("run R Succeeded: …").
_RUN_START = re.compile(r"^run (\S+) of \S+ starting \(slot ")
_RUN_END = re.compile(r"^run (\S+) [A-Z][a-z]+: scanned ")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def _ts(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC).timestamp()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _log_time(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").replace(
        tzinfo=dt.UTC).timestamp()


def one_size(shared: Shared, n: int, *, slots: int, base: Path,
             concurrent_runs: int | None = None) -> dict[str, Any]:
    assert shared.kube is not None
    kube = shared.kube
    work = base / f"n{n}"
    data = work / "data"
    for i in range(n):
        d = data / f"p{i:04d}"
        d.mkdir(parents=True)
        for f in range(20):
            (d / f"f{f:02d}.log").write_bytes(b"x")
    reps = LocalReplicas(count=3, workdir=work / "ops", kubeconfigs=shared.identities,
                         password=secrets.token_hex(16), python=sys.executable,
                         env={"LETHE_ALLOWED_ROOTS": str(data), "LETHE_LOG_FORMAT": "json",
                              **({"LETHE_CONCURRENT_RUNS": str(concurrent_runs)}
                                 if concurrent_runs else {})})
    ns = f"policies-{n}-{secrets.token_hex(3)}"
    try:
        reps.start()
        reps.wait_ready(timeout=120)
        reps.wait_leader(timeout=30)
        kube.kubectl("create", "namespace", ns)
        items = [{"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
                  "metadata": {"name": f"p{i:04d}", "namespace": ns},
                  "spec": {"mode": "Enforce", "schedule": "* * * * *",
                           "target": {"posix": {"path": str(data / f"p{i:04d}")}},
                           "rules": {"maxAge": "30d"}}} for i in range(n)]
        for k in range(0, n, 250):  # a loaded API server takes more than kubectl's 60 s
            kube.kubectl("apply", "-f", "-", timeout=600, input=yaml.safe_dump(
                {"apiVersion": "v1", "kind": "List", "items": items[k:k + 250]}))
        created = time.time()
        # Slots counted: the whole minutes after the first full minute once all exist.
        first = (int(created) // 60 + 2) * 60
        want = [first + 60 * s for s in range(slots)]
        print(f"  {n} policies created; measuring slots "
              f"{[time.strftime('%H:%M', time.gmtime(w)) for w in want]}", flush=True)
        time.sleep(max(0.0, want[0] - time.time()))
        cpu0 = [_cpu_seconds(r.proc.pid) for r in reps.replicas if r.proc is not None]
        time.sleep(max(0.0, want[-1] + 60 - time.time()))
        cpu1 = [_cpu_seconds(r.proc.pid) for r in reps.replicas if r.proc is not None]
        starts: dict[tuple[str, float], float] = {}
        began: dict[str, float] = {}
        walls: list[float] = []  # a run's "starting" line to the runner's last line
        for r in reps.replicas:
            for raw in r.log_path.read_text(errors="replace").splitlines():
                if "starting (slot" not in raw:
                    if ": scanned " in raw and raw.startswith("{"):
                        rec = json.loads(raw)
                        e = _RUN_END.match(rec.get("message", ""))
                        if e and e[1] in began:
                            walls.append(_log_time(rec["time"]) - began.pop(e[1]))
                    continue
                rec = json.loads(raw)
                b = _RUN_START.match(rec.get("message", ""))
                if b and rec.get("namespace") == ns:
                    began[b[1]] = _log_time(rec["time"])
                m = _STARTING.match(rec.get("message", ""))
                if m and m[2] != "None" and rec.get("namespace") == ns:
                    key = (m[1], _ts(m[2]))
                    starts.setdefault(key, _log_time(rec["time"]))
        lags = [starts[(f"p{i:04d}", w)] - w for i in range(n) for w in want
                if (f"p{i:04d}", w) in starts]
        missed = n * slots - len(lags)
        cpu = sorted(b - a for a, b in zip(cpu0, cpu1, strict=True))
        return {"policies": n, "slots": slots, "runs": len(lags), "missed": missed,
                "lag_p50": _pct(lags, 0.5), "lag_p95": _pct(lags, 0.95),
                "lag_max": max(lags, default=0.0),
                "concurrent_runs": concurrent_runs or 16,
                "run_wall_p50": _pct(walls, 0.5), "run_wall_p95": _pct(walls, 0.95),
                # The busiest replica is the leader (it may change under load).
                "cpu_seconds_per_run_leader": cpu[-1] / max(1, len(lags)),
                "cpu_seconds_per_run_followers": sum(cpu[:-1]) / max(1, len(lags)),
                "loadavg": list(os.getloadavg())}
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        reps.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.policies_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", type=int, nargs="+", default=[300, 1000])
    ap.add_argument("--slots", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100 policies, 1 slot")
    ap.add_argument("--concurrent-runs", type=int, default=None,
                    help="the replicas' LETHE_CONCURRENT_RUNS (default: theirs, 16)")
    args = ap.parse_args(argv)
    sizes, slots = ([100], 1) if args.quick else (args.policies, args.slots)
    base = Path(tempfile.mkdtemp(prefix="lethe-policies-"))
    shared = Shared(base)
    rows: list[dict[str, Any]] = []
    try:
        shared.start()
        for n in sizes:
            rows.append(one_size(shared, n, slots=slots, base=base,
                                 concurrent_runs=args.concurrent_runs))
            print(f"  {rows[-1]}", flush=True)
    finally:
        shared.stop()
        shutil.rmtree(base, ignore_errors=True)
    print_table("many policies, each every minute: start lag after the slot",
                ["policies", "slots", "runs", "missed", "lag p50 s", "lag p95 s", "max s",
                 "runs at once", "run wall p50/p95 s", "leader CPU ms/run", "followers",
                 "target"],
                [[r["policies"], r["slots"], r["runs"], r["missed"], f"{r['lag_p50']:.1f}",
                  f"{r['lag_p95']:.1f}", f"{r['lag_max']:.1f}", r["concurrent_runs"],
                  f"{r['run_wall_p50']:.2f}/{r['run_wall_p95']:.2f}",
                  f"{1000 * r['cpu_seconds_per_run_leader']:.0f}",
                  f"{1000 * r['cpu_seconds_per_run_followers']:.0f}",
                  "1,000: p95 <= 10 s, none missed"] for r in rows])
    write_results("policies" + ("-quick" if args.quick else ""), {"sizes": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
