"""Memory: peak RSS of a plan over 100,000 and 1,000,000 entries.

Each measurement is its own child process, so its peak RSS (``ru_maxrss``
from ``wait4``) is that plan's alone. The listing is synthetic (a Storage-like
object that yields :class:`~lethe.storage.base.Entry` objects from a
counter, in S3 key order, without touching disk), so only lethe's own memory
is measured. Two modes:

* ``make_plan``: :func:`lethe.runner.plan.make_plan` alone (both passes,
  the deletions spooled to a temp file);
* ``lethe plan``: what the CLI's ``lethe plan`` runs: a
  :class:`~lethe.runner.execute.Runner` in Plan mode over a one-node Raft
  journal, which also publishes the full plan into the target.

Two policies: ``maxAge: 30d``, and ``maxTotalSize`` (half the bytes) +
``keepLast: 1000`` + ``minAge: 1d``, which needs the size-cap histogram and a
bounded heap. A child that only imports lethe gives the interpreter floor.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from bench._common import bench_env, print_table, write_results

if TYPE_CHECKING:  # the child imports lethe only where it measures it
    from lethe.storage.base import DeleteResult, Entry, Fence

__all__ = ["main"]

DAY = 86400
NOW = 1_790_000_000.0  # fixed, so every run sees the same listing
SIZES = (100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
POLICIES = ("maxage", "sizecap")
MODES = ("make_plan", "lethe-plan")


def _size(i: int) -> int:
    return 1_000 + (i * 2654435761) % 100_000


def _policy(kind: str, n: int) -> dict[str, Any]:
    if kind == "maxage":
        rules: dict[str, Any] = {"maxAge": "30d"}
    else:
        total = sum(_size(i) for i in range(n))  # ~ n * 51 kB
        rules = {"maxTotalSize": str(total // 2), "keepLast": 1000, "minAge": "1d"}
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": "membench", "namespace": "bench"},
            "spec": {"target": {"posix": {"path": "/nonexistent-synthetic"}}, "rules": rules}}


class SyntheticStorage:
    """A Storage-like listing of ``n`` entries computed on the fly (never stored)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def describe(self) -> str:
        return f"synthetic:{self.n}"

    def check_ready(self) -> None:
        return None

    def now(self) -> float:
        return NOW

    def list(self, prefix: str = "") -> Iterator[Entry]:
        from lethe.storage.base import Entry

        span = 400 * DAY
        for i in range(self.n):
            h = (i * 2654435761) % 1_000_003
            mtime = NOW - 60 - h * span / 1_000_003
            size = _size(i)
            yield Entry(key=f"d{i // 1000:05d}/f{i % 1000:04d}.dat", size=size, mtime=mtime,
                        fingerprint=f"{i}:{size}:{int(mtime * 1e9)}")

    def check_fenced_deletes(self) -> None:
        raise RuntimeError("a plan never deletes")

    def delete_batch(self, entries: Sequence[Entry], *, fence: Fence | None = None
                     ) -> builtins.list[DeleteResult]:
        raise RuntimeError("a plan never deletes")

    def read_object(self, key: str) -> tuple[bytes, str] | None:
        return None

    def replace_object(self, key: str, data: bytes | BinaryIO, *,
                       if_match: str | None = None) -> str:
        if isinstance(data, bytes):
            return f"{len(data)}"  # received in memory, as a caller that passes bytes costs
        n = 0
        while chunk := data.read(1 << 20):  # streamed, as a real backend consumes it
            n += len(chunk)
        return f"{n}"

    def delete_object(self, key: str) -> None:
        return None

    def list_internal(self, prefix: str) -> Iterator[str]:
        return iter(())

    def close(self) -> None:
        return None


def child(n: int, kind: str, mode: str) -> None:
    """Run one plan in this process and print a JSON line of counts."""
    if n == 0:
        import lethe.raft.local
        import lethe.runner.execute  # noqa: F401

        print(json.dumps({"n": 0}))
        return
    from lethe.spec import parse_policy

    policy = parse_policy(_policy(kind, n))
    storage = SyntheticStorage(n)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lethe-membench-") as tmp:
        if mode == "make_plan":
            from lethe.runner.plan import make_plan

            plan = make_plan(policy=policy, storage=storage, now=NOW,
                             spool_dir=tmp)
            out: dict[str, Any] = {"scanned": plan.scanned, "matched": plan.matched,
                   "spool_bytes": os.path.getsize(plan.spool_path)}
            plan.discard()
        else:
            from lethe.raft.local import local_journal
            from lethe.runner.execute import Runner

            with local_journal(data_dir=os.path.join(tmp, "journal")) as j:
                runner = Runner(policy=policy, storage=storage, journal=j,
                                spool_dir=tmp, clock=lambda: NOW)
                report = runner.run(mode="Plan").as_dict()
            out = {"scanned": report["scanned"], "matched": report["matched"],
                   "result": report["result"]}
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


def measure(n: int, kind: str, mode: str) -> dict[str, Any]:
    """Peak RSS (MiB) of one child process running one plan."""
    cmd = [sys.executable, "-m", "bench.memory_bench", "--child", str(n), kind, mode]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=bench_env())
    assert proc.stdout is not None
    data = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    info: dict[str, Any] = json.loads(data.decode().strip().splitlines()[-1])
    return {"entries": n, "policy": kind, "mode": mode, "peak_rss_mib": usage.ru_maxrss / 1024,
            "wall_s": time.perf_counter() - t0, **info}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.memory_bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10,000 and 100,000 entries")
    ap.add_argument("--child", nargs=3, metavar=("N", "POLICY", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(int(args.child[0]), args.child[1], args.child[2])
        return {}
    small, large = QUICK_SIZES if args.quick else SIZES
    floor = measure(0, "maxage", "make_plan")["peak_rss_mib"]
    print(f"  interpreter + lethe imports: {floor:.1f} MiB peak RSS")
    runs: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    verdicts: list[bool] = []
    for mode in MODES:
        for kind in POLICIES:
            a = measure(small, kind, mode)
            b = measure(large, kind, mode)
            runs += [a, b]
            growth = (b["peak_rss_mib"] - a["peak_rss_mib"]) / a["peak_rss_mib"]
            ok = b["peak_rss_mib"] <= 150 and growth < 0.20
            verdicts.append(ok)
            rows.append([mode, kind, a["peak_rss_mib"], b["peak_rss_mib"], f"{growth:+.1%}",
                         b["matched"], b["seconds"], "met" if ok else "MISSED"])
            print(f"  {mode:<10} {kind:<8} {small:>9,}: {a['peak_rss_mib']:.1f} MiB "
                  f"({a['seconds']:.1f}s)  {large:>9,}: {b['peak_rss_mib']:.1f} MiB "
                  f"({b['seconds']:.1f}s)")
            sys.stdout.flush()
    print_table(f"Memory: peak RSS of a plan, {small:,} vs {large:,} entries "
                f"(floor {floor:.1f} MiB)",
                ["mode", "policy", f"MiB @{small:,}", f"MiB @{large:,}", "growth",
                 "matched", f"s @{large:,}", "<=150 MiB & <20%"], rows)
    result = {"floor_mib": floor, "sizes": [small, large], "runs": runs,
              "targets": {"max_mib_at_1m": 150, "max_growth": 0.20},
              "target_met": all(verdicts)}
    write_results("memory-quick" if args.quick else "memory", result)
    return result


if __name__ == "__main__":
    main()
