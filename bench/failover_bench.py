"""Failover as a user sees it (#16 item 6): SIGKILL of the leader in the middle of an
Enforce run, to the new leader's first delete of that same run.

Per trial: a real kube-apiserver + etcd (shared by all trials), three ``lethe
run`` replicas with the chart's RBAC and the operator's default timings (tick
1 s, lease and election as shipped), a directory of ``--files`` old files in
16 subdirectories plus some young ones, and one CleanupJob (Enforce,
``batchSize`` 200, so the run has many batches). Once the run has written
its second ledger file the leader is SIGKILLed; from then on the benchmark
polls the 16 directories' mtimes every 2 ms: the first change is the new
leader's first quarantine rename of that run (the killed process makes no
further syscall). The trial also checks that the job ends Succeeded with the
same run id the ledger was being written under (the run was resumed, not
restarted) and that every old file was deleted exactly once (ledger lines).

Prints p50/p95 and writes ``bench/results/failover.json``. Target (#16):
p50 <= 2 s, p95 <= 3 s. Nothing here asserts a time.
Run: ``python -m bench.failover_bench [--trials 20] [--files 4000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.chaos.env import Shared
from tests.fixtures.replicas import LocalReplicas

from bench._common import print_table, write_results

__all__ = ["main"]

DAY = 86400.0
DIRS = 16


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _populate(root: Path, files: int) -> None:
    now = time.time()
    for d in range(DIRS):
        (root / f"d{d:02d}").mkdir(parents=True)
    for i in range(files):
        p = root / f"d{i % DIRS:02d}" / f"old-{i:05d}.dat"
        p.write_bytes(b"x" * 64)
        os.utime(p, (now - 10 * DAY, now - 10 * DAY))
    for i in range(files // 10):  # young files: the plan does not delete everything
        (root / f"d{i % DIRS:02d}" / f"young-{i:05d}.dat").write_bytes(b"y")


def _ledger(root: Path) -> list[dict[str, Any]]:
    base = root / ".lethe" / "ledger"
    out: list[dict[str, Any]] = []
    for f in sorted(base.rglob("*.jsonl")) if base.exists() else []:
        out += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return out


def _ledger_files(root: Path) -> int:
    base = root / ".lethe" / "ledger"
    return sum(len(f) for _d, _s, f in os.walk(base)) if base.exists() else 0


def _dir_mtimes(root: Path) -> list[int]:
    return [os.stat(root / f"d{d:02d}").st_mtime_ns for d in range(DIRS)]


def one_trial(shared: Shared, n: int, *, files: int, base: Path) -> dict[str, Any]:
    assert shared.kube is not None
    kube = shared.kube
    work = base / f"trial-{n}"
    root = work / "data" / "target"
    _populate(root, files)
    reps = LocalReplicas(count=3, workdir=work / "ops", kubeconfigs=shared.identities,
                         password=secrets.token_hex(16), python=sys.executable,
                         env={"LETHE_ALLOWED_ROOTS": str(work / "data"),
                              "LETHE_LOG_FORMAT": "json"})
    ns = f"failover-{n}-{secrets.token_hex(3)}"
    try:
        reps.start()
        reps.wait_ready(timeout=120)
        reps.wait_leader(timeout=30)
        kube.kubectl("create", "namespace", ns)
        kube.apply({"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
                    "metadata": {"name": "p", "namespace": ns},
                    "spec": {"mode": "Enforce", "batchSize": 200,
                             "target": {"posix": {"path": str(root)}},
                             "rules": {"maxAge": "1d"},
                             "safety": {"maxDeletes": 10_000_000, "maxDeletePercent": 100}}})
        kube.apply({"apiVersion": "lethe.io/v1alpha1", "kind": "CleanupJob",
                    "metadata": {"name": "j", "namespace": ns},
                    "spec": {"policyRef": {"name": "p"}, "mode": "Enforce"}})
        deadline = time.monotonic() + 120
        while _ledger_files(root) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"trial {n}: the run wrote no second ledger file")
            time.sleep(0.005)
        leader = reps.leader()
        if leader is None:
            raise RuntimeError(f"trial {n}: no leader to kill")
        run_ids = {x["run_id"] for x in _ledger(root)}
        assert leader.proc is not None
        t_kill = time.monotonic()
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        before = _dir_mtimes(root)  # after the kill: the dead leader's renames are in it
        first = None
        while first is None and time.monotonic() - t_kill < 60:
            if _dir_mtimes(root) != before:
                first = time.monotonic() - t_kill
            else:
                time.sleep(0.002)
        if first is None:
            raise RuntimeError(f"trial {n}: no delete within 60 s of the kill")
        new_leader = reps.leader()
        deadline = time.monotonic() + 180
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            out = kube.kubectl("get", "cleanupjobs.lethe.io", "j", "-n", ns, "-o", "json",
                               check=False)
            st = json.loads(out.stdout).get("status") or {} if out.returncode == 0 else {}
            if st.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)
        lines = _ledger(root)
        removed: dict[str, int] = {}
        for x in lines:
            if x["outcome"] in ("deleted", "already-gone"):
                removed[x["key"]] = removed.get(x["key"], 0) + 1
        problems = []
        if st.get("phase") != "Succeeded":
            problems.append(f"job {st.get('phase')}")
        if st.get("runId") not in run_ids:
            problems.append(f"job run {st.get('runId')} is not the killed leader's {run_ids}")
        if len(removed) != files or any(c != 1 for c in removed.values()):
            problems.append(f"{len(removed)} of {files} old files in the ledger, "
                            f"{sum(1 for c in removed.values() if c != 1)} not once")
        return {"trial": n, "seconds": first, "killed": leader.name,
                "new_leader": new_leader.name if new_leader else None,
                "problems": problems}
    finally:
        reps.stop()
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.failover_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--files", type=int, default=4000, help="old files per trial")
    ap.add_argument("--quick", action="store_true", help="3 trials of 1,200 files")
    args = ap.parse_args(argv)
    trials, files = (3, 1200) if args.quick else (args.trials, args.files)
    base = Path(tempfile.mkdtemp(prefix="lethe-failover-"))
    shared = Shared(base)
    results: list[dict[str, Any]] = []
    try:
        shared.start()
        for n in range(trials):
            r = one_trial(shared, n, files=files, base=base)
            results.append(r)
            print(f"  trial {n + 1:2d}: {r['seconds']:.3f}s  {r['killed']} -> "
                  f"{r['new_leader']}  {'; '.join(r['problems']) or 'ok'}", flush=True)
    finally:
        shared.stop()
        shutil.rmtree(base, ignore_errors=True)
    secs = [r["seconds"] for r in results]
    summary = {"trials": len(secs), "p50": _pct(secs, 0.5), "p95": _pct(secs, 0.95),
               "max": max(secs), "files": files,
               "bad_trials": [r for r in results if r["problems"]]}
    print_table("failover: SIGKILL of the leader mid-run -> the new leader's first delete",
                ["trials", "p50 s", "p95 s", "max s", "target"],
                [[len(secs), f"{summary['p50']:.2f}", f"{summary['p95']:.2f}",
                  f"{summary['max']:.2f}", "p50 <= 2, p95 <= 3"]])
    write_results("failover" + ("-quick" if args.quick else ""),
                  {"summary": summary, "trials": results})
    return 1 if summary["bad_trials"] else 0


if __name__ == "__main__":
    sys.exit(main())
