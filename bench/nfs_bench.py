"""NFS-shaped storage: find, rclone and ``lethe apply`` through ``latencyfs``.

``bench/latencyfs`` (Go, go-fuse; built by ``make bench`` into
``.cache/bench/bin``) mounts a tmpfs directory through FUSE and delays every
metadata request (LOOKUP, GETATTR, READDIR, RENAME, UNLINK, ...) by a fixed
time, with entry and attribute caching off: each operation is a round trip,
as on an NFS mount with ``actimeo=0``. For each delay (0.5 ms and 2 ms by
default) one ``latencyfs`` runs; each trial makes a fresh ``cp -a`` copy of the
posix benchmark's template (50 directories x 1,000 files, every third file
40-400 days old) *below* the mount per tool, then runs the tools through the
mount in a rotating order:

* ``find DIR -type f -mtime +30 -delete``
* ``rclone delete --min-age 30d DIR`` (its defaults: 8 checkers) and with
  ``--checkers 16``
* ``lethe apply`` (``maxAge: 30d``), the real CLI with a one-node journal

After each tool the surviving paths (read on the tmpfs below the mount, no
delay) must equal the first tool's and number files - old; else the run
fails. Per tool: wall time, CPU time (user + system of the tool's process
tree; the FUSE server's own CPU is not counted), files deleted per second,
and the FUSE requests it caused (from ``latencyfs``' counters).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import (
    CACHE_DIR,
    bench_env,
    lethe_cmd,
    median,
    print_table,
    run_timed,
    write_results,
)
from bench.posix_bench import make_template, survivors

__all__ = ["main"]

LATENCYFS = CACHE_DIR / "bin" / "latencyfs"
TOOLS = ("find", "rclone", "rclone-c16", "lethe")
#: Extra tools on request: ``lethe-seq`` is lethe with ``LETHE_POSIX_PARALLELISM=1``
#: (one operation at a time, as before the parallel listing and deletes).
EXTRA_TOOLS = ("lethe-seq",)


class _Mount:
    """One ``latencyfs`` process: ``lower`` seen through ``mnt`` with ``delay``."""

    def __init__(self, lower: Path, mnt: Path, delay_ms: float) -> None:
        self.lower, self.mnt, self.stats = lower, mnt, lower.parent / "latencyfs-stats.json"
        mnt.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(LATENCYFS), "-delay", f"{delay_ms}ms", "-stats", str(self.stats),
             str(lower), str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once mounted
        if "latencyfs:" not in line or self.proc.poll() is not None:
            raise RuntimeError(f"latencyfs did not mount {mnt}: {line}{self.proc.stdout.read()}")

    def counts(self) -> dict[str, int]:
        """FUSE requests since the last call (and resets the counters)."""
        self.stats.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.stats.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("latencyfs wrote no request counts")
            time.sleep(0.01)
        counts: dict[str, int] = json.loads(self.stats.read_text())
        return counts

    def round_trip_ms(self, n: int = 500) -> float:
        """Measured time of one GETATTR through the mount (ms): the delay plus
        FUSE's and the Go timer's own cost on this (loaded) machine."""
        probe = self.mnt / "rtt-probe"
        probe.write_bytes(b"")
        fd = os.open(probe, os.O_RDONLY)
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                os.fstat(fd)  # attributes expire at once: one GETATTR each
            return (time.perf_counter() - t0) / n * 1000
        finally:
            os.close(fd)
            probe.unlink()

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            subprocess.run(["umount", "-l", str(self.mnt)], check=False)


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _policy(path: Path, target: Path) -> Path:
    doc = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": "bench", "namespace": "default"},
           "spec": {"target": {"posix": {"path": str(target)}}, "rules": {"maxAge": "30d"}}}
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def _run_tool(tool: str, target: Path, work: Path, old: int) -> tuple[float, float]:
    """Run ``tool`` on ``target``; return (wall s, CPU s)."""
    env = dict(os.environ, RCLONE_CONFIG=str(work / "rclone.conf"))
    if tool == "find":
        cmd = ["find", str(target), "-type", "f", "-mtime", "+30", "-delete"]
    elif tool in ("rclone", "rclone-c16"):
        cmd = ["rclone", "delete", "--min-age", "30d", str(target)]
        if tool == "rclone-c16":
            cmd[2:2] = ["--checkers", "16"]
    elif tool in ("lethe", "lethe-seq"):
        state = work / f"state-{tool}"
        shutil.rmtree(state, ignore_errors=True)
        policy = _policy(work / f"policy-{tool}.yaml", target)
        cmd = [*lethe_cmd(), "apply", "-f", str(policy), "--output", "json",
               "--state-dir", str(state)]
        env = bench_env({"LETHE_POSIX_PARALLELISM": "1"} if tool == "lethe-seq" else None)
    else:
        raise ValueError(f"unknown tool {tool!r}")
    cpu0 = _cpu()
    r = run_timed(cmd, env=env)
    cpu = _cpu() - cpu0
    if tool.startswith("lethe"):
        report = json.loads(r.stdout)
        if report["result"] != "Succeeded" or report["deleted"] != old:
            raise RuntimeError(f"{tool}: unexpected report {report}")
    return r.seconds, cpu


def _trials(mount: _Mount, template: Path, work: Path, tools: list[str], trials: int,
            files: int, old: int, delay_ms: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for t in range(trials):
        order = tools[t % len(tools):] + tools[: t % len(tools)]
        row: dict[str, Any] = {"delay_ms": delay_ms, "trial": t + 1, "order": "/".join(order),
                               "loadavg": round(os.getloadavg()[0], 2)}
        reference: set[str] | None = None
        for tool in order:
            lower = mount.lower / f"copy-{tool}"
            if lower.exists():
                shutil.rmtree(lower)
            subprocess.run(["cp", "-a", str(template / "tree"), str(lower)], check=True)
            mount.counts()  # reset
            wall, cpu = _run_tool(tool, mount.mnt / lower.name, work, old)
            requests = mount.counts()
            left = survivors(lower)
            if reference is None:
                reference = left
            if left != reference or len(left) != files - old:
                raise RuntimeError(f"{tool} left {len(left)} files, expected {files - old}; "
                                   f"{len(left ^ reference)} paths differ from {order[0]}'s")
            shutil.rmtree(lower)
            row[f"{tool}_s"], row[f"{tool}_cpu_s"] = round(wall, 3), round(cpu, 3)
            row[f"{tool}_requests"] = sum(requests.values())
            row[f"{tool}_requests_by_op"] = requests
            print(f"    {delay_ms} ms, trial {t + 1}: {tool:<10} {wall:8.2f}s wall "
                  f"{cpu:7.2f}s CPU  {sum(requests.values()):>8,} requests", flush=True)
        for tool in tools:
            if tool != "find" and "find" in tools:
                row[f"{tool}_over_find"] = round(row[f"{tool}_s"] / row["find_s"], 3)
            if tool.startswith("lethe") and "rclone-c16" in tools:
                row[f"{tool}_over_rclone_c16"] = round(row[f"{tool}_s"] / row["rclone-c16_s"],
                                                       3)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any] | int:
    ap = argparse.ArgumentParser(prog="python -m bench.nfs_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5,000 files, 1 trial")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--dirs", type=int, default=None,
                    help="directories of --files-per-dir files (default 50; --quick: 5)")
    ap.add_argument("--files-per-dir", type=int, default=1000,
                    help="files per directory (default 1,000; a delete batch of 1,000 "
                         "files then spans about 3 directories)")
    ap.add_argument("--delays", default="0.5,2", help="ms per request, comma-separated")
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help=f"comma-separated, from {', '.join(TOOLS + EXTRA_TOOLS)}")
    args = ap.parse_args(argv)
    if not LATENCYFS.exists():
        print(f"  skipped: {LATENCYFS} is missing (make bench builds it: needs go)")
        return 0
    if not Path("/dev/fuse").exists():
        print("  skipped: no /dev/fuse (FUSE is needed; apt-get install -y fuse3)")
        return 0
    tools = [t for t in args.tools.split(",") if t]
    for t in tools:
        if t not in TOOLS + EXTRA_TOOLS:
            ap.error(f"--tools: unknown tool {t!r}")
    if shutil.which("rclone") is None and any(t.startswith("rclone") for t in tools):
        print("  rclone not found (apt-get install -y rclone): skipping its runs")
        tools = [t for t in tools if not t.startswith("rclone")]
    dirs = args.dirs or (5 if args.quick else 50)
    trials = args.trials or 1
    delays = [float(d) for d in args.delays.split(",")]
    base = Path("/dev/shm/lethe-bench") if Path("/dev/shm").is_dir() else CACHE_DIR
    work = base / ("nfs-quick" if args.quick else f"nfs-{dirs}x{args.files_per_dir}")
    template = work / "template"
    files, old = make_template(template, dirs, files_per_dir=args.files_per_dir)
    rows: list[dict[str, Any]] = []
    round_trips: dict[float, float] = {}
    for delay in delays:
        lower, mnt = work / "lower", work / "mnt"
        shutil.rmtree(lower, ignore_errors=True)
        lower.mkdir(parents=True)
        mount = _Mount(lower, mnt, delay)
        try:
            rtt = mount.round_trip_ms()
            print(f"  latencyfs {delay} ms: one request measured at {rtt:.2f} ms "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
            round_trips[delay] = round(rtt, 3)
            rows += _trials(mount, template, work, tools, trials, files, old, delay)
        finally:
            mount.close()
    table = []
    for delay in delays:
        mine = [r for r in rows if r["delay_ms"] == delay]
        for tool in tools:
            wall = median([r[f"{tool}_s"] for r in mine])
            table.append([f"{delay} ms", tool, wall, median([r[f"{tool}_cpu_s"] for r in mine]),
                          int(old / wall), median([r[f"{tool}_requests"] for r in mine]),
                          median([r[f"{tool}_over_find"] for r in mine])
                          if tool != "find" and "find" in tools else
                          (1.0 if tool == "find" else "-")])
    print_table(f"NFS-shaped (latencyfs): {files:,} files, {old:,} older than 30 days, "
                f"{trials} trial(s) per delay; survivors identical across tools",
                ["delay", "tool", "median wall s", "CPU s", "files deleted/s", "requests",
                 "vs find (median of trials)"], table)
    targets = {0.5: ("lethe_over_find", 0.5), 2.0: ("lethe_over_find", 0.33)}
    for delay in delays:
        mine = [r for r in rows if r["delay_ms"] == delay]
        if delay in targets and "lethe" in tools and "find" in tools:
            key, target = targets[delay]
            m = median([r[key] for r in mine])
            print(f"  {delay} ms: lethe/find {m:.2f}x (target <= {target}x: "
                  f"{'met' if m <= target else 'MISSED'})")
        if delay == 2.0 and "lethe" in tools and "rclone-c16" in tools:
            m = median([r["lethe_over_rclone_c16"] for r in mine])
            print(f"  {delay} ms: lethe/rclone --checkers 16 {m:.2f}x (target <= 0.7x: "
                  f"{'met' if m <= 0.7 else 'MISSED'})")
    result = {"files": files, "old": old, "files_per_dir": args.files_per_dir, "tools": tools,
              "delays_ms": delays,
              "measured_request_ms": round_trips, "trials": rows}
    name = "nfs-quick" if args.quick else "nfs"
    if args.files_per_dir != 1000 and not args.quick:
        name = f"nfs-{args.files_per_dir}-per-dir"
    write_results(name, result)
    return result


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)
