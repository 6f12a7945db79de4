"""POSIX: ``lethe apply`` (maxAge 30d) against ``find DIR -type f -mtime +30 -delete``.

A tree of 200 directories x 1,000 tiny files (every third file 40-400 days
old, the rest 0-20 days, so nothing lies near the 30-day boundary and both
tools' notions of "older than 30 days" agree) is generated once into a
template under ``.cache/bench/posix``. Each trial makes fresh ``cp -a`` copies
and times both tools on their own copy, alternating which goes first. After
both ran, the surviving files of the two copies must be the same set.
``lethe plan`` is timed on a third copy, and ``bench/posix_floor.py`` (the
same listing and safe-delete system calls in bare Python, nothing else) on a
fourth: the floor that any Python implementation of lethe's delete pays.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import (
    CACHE_DIR,
    lethe_cmd,
    median,
    print_table,
    run_timed,
    write_results,
)

__all__ = ["main"]

DAY = 86400
FILES_PER_DIR = 1000
TEMPLATE_MAX_AGE = 5 * DAY  # new files are <= 20 days old: stay well clear of 30
_STAMP = "bench-template.json"


def _mtime(i: int, now: float) -> float:
    """Every third file is old (40-400 days), the others new (0-20 days)."""
    h = (i * 2654435761) % 1_000_003
    if i % 3 == 0:
        return now - 40 * DAY - (h % (360 * DAY))
    return now - (h % (20 * DAY))


def make_template(root: Path, dirs: int, *, files_per_dir: int = FILES_PER_DIR
                  ) -> tuple[int, int]:
    """Generate (or reuse) the template tree; return (files, old files)."""
    stamp = root / _STAMP
    want = {"dirs": dirs, "files_per_dir": files_per_dir}
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        if {k: meta.get(k) for k in want} == want and time.time() - meta["created"] < \
                TEMPLATE_MAX_AGE:
            return meta["files"], meta["old"]
    if root.exists():
        shutil.rmtree(root)
    tree = root / "tree"
    tree.mkdir(parents=True)
    now = time.time()
    old = 0
    t0 = time.perf_counter()
    for d in range(dirs):
        dpath = tree / f"d{d:04d}"
        dpath.mkdir()
        dfd = os.open(dpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for f in range(files_per_dir):
                i = d * files_per_dir + f
                name = f"f{f:04d}.dat"
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
                os.write(fd, b"%d\n" % i)
                m = _mtime(i, now)
                os.utime(fd, (m, m))
                os.close(fd)
                old += i % 3 == 0
        finally:
            os.close(dfd)
    files = dirs * files_per_dir
    stamp.write_text(json.dumps({**want, "files": files, "old": old, "created": now}))
    print(f"  generated template: {files:,} files in {time.perf_counter() - t0:.1f}s "
          f"({old:,} older than 30 days)")
    return files, old


def _copy(template: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", str(template / "tree"), str(dst)], check=True)
    subprocess.run(["sync"], check=True)  # no writeback of the copy during the timing
    return dst


def survivors(root: Path) -> set[str]:
    """Relative paths of regular files, ignoring lethe's own ``.lethe/``."""
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root) and ".lethe" in dirnames:
            dirnames.remove(".lethe")
        rel = os.path.relpath(dirpath, root)
        for n in filenames:
            if os.path.isfile(os.path.join(dirpath, n)) and not os.path.islink(
                    os.path.join(dirpath, n)):
                out.add(n if rel == "." else f"{rel}/{n}")
    return out


def _policy(path: Path, target: Path) -> Path:
    doc = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": "bench", "namespace": "default"},
           "spec": {"target": {"posix": {"path": str(target)}}, "rules": {"maxAge": "30d"}}}
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def _lethe(verb: str, work: Path, target: Path, state: str) -> tuple[float, dict[str, Any]]:
    policy = _policy(work / f"policy-{target.name}.yaml", target)
    if (work / state).exists():
        shutil.rmtree(work / state)
    r = run_timed([*lethe_cmd(), verb, "-f", str(policy), "--output", "json",
                   "--state-dir", str(work / state)])
    report: dict[str, Any] = json.loads(r.stdout)
    return r.seconds, report


def _floor(target: Path, old: int) -> float:
    r = run_timed([sys.executable, "-m", "bench.posix_floor", str(target)])
    if int(r.stdout) != old:
        raise RuntimeError(f"posix_floor deleted {r.stdout.strip()}, expected {old}")
    return r.seconds


def _find(target: Path) -> float:
    return run_timed(["find", str(target), "-type", "f", "-mtime", "+30", "-delete"]).seconds


def profile_apply(work: Path, template: Path) -> None:
    """``lethe apply`` under cProfile on a fresh copy; prints the top functions."""
    target = _copy(template, work / "copy-profile")
    policy = _policy(work / "policy-profile.yaml", target)
    out = work / "apply.prof"
    shutil.rmtree(work / "state-profile", ignore_errors=True)
    t = run_timed([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "lethe.cli.main",
                   "apply", "-f", str(policy), "--output", "json",
                   "--state-dir", str(work / "state-profile")])
    print(f"\n  cProfile of lethe apply: {t.seconds:.1f}s wall (profiled), profile in {out}")
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(35)
    shutil.rmtree(target, ignore_errors=True)


def _fstype(path: Path) -> str:
    best, fstype = "", "?"
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return f"{fstype} ({best})"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.posix_bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="20,000 files, 1 trial")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="also cProfile one lethe apply")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the trees live (default: /dev/shm/lethe-bench, a tmpfs, "
                         "else .cache/bench); pass a disk or NFS path to include its I/O")
    args = ap.parse_args(argv)
    dirs = 20 if args.quick else 200
    trials = args.trials or (1 if args.quick else 3)
    base = args.workdir or (Path("/dev/shm/lethe-bench") if Path("/dev/shm").is_dir()
                            else CACHE_DIR)
    work = base / ("posix-quick" if args.quick else "posix")
    template = work / "template"
    files, old = make_template(template, dirs)
    expected_left = files - old
    rows: list[dict[str, Any]] = []
    for t in range(trials):
        a = _copy(template, work / "copy-find")
        b = _copy(template, work / "copy-lethe")
        order = ("find", "lethe") if t % 2 == 0 else ("lethe", "find")
        row: dict[str, Any] = {"trial": t + 1, "order": "/".join(order),
                               "loadavg": round(os.getloadavg()[0], 2)}
        for tool in order:
            if tool == "find":
                row["find_s"] = _find(a)
            else:
                row["lethe_apply_s"], report = _lethe("apply", work, b, "state-apply")
                if report["result"] != "Succeeded" or report["deleted"] != old:
                    raise RuntimeError(f"lethe apply: unexpected report {report}")
        left_a, left_b = survivors(a), survivors(b)
        if left_a != left_b or len(left_a) != expected_left:
            raise RuntimeError(f"selections differ: find left {len(left_a)}, lethe left "
                               f"{len(left_b)}, expected {expected_left}, "
                               f"{len(left_a ^ left_b)} paths differ")
        row["survivors"] = len(left_a)
        shutil.rmtree(a)
        shutil.rmtree(b)
        c = _copy(template, work / "copy-plan")
        row["lethe_plan_s"], report = _lethe("plan", work, c, "state-plan")
        if report["matched"] != old:
            raise RuntimeError(f"lethe plan matched {report['matched']}, expected {old}")
        shutil.rmtree(c)
        f = _copy(template, work / "copy-floor")
        row["python_floor_s"] = _floor(f, old)
        if survivors(f) != left_a:
            raise RuntimeError("posix_floor left other files than find")
        shutil.rmtree(f)
        row["ratio"] = row["lethe_apply_s"] / row["find_s"]
        rows.append(row)
        print(f"  trial {t + 1}/{trials} ({row['order']}): find {row['find_s']:.2f}s, "
              f"lethe apply {row['lethe_apply_s']:.2f}s, plan {row['lethe_plan_s']:.2f}s, "
              f"python floor {row['python_floor_s']:.2f}s, "
              f"load {row['loadavg']}")
        sys.stdout.flush()
    find_m = median([r["find_s"] for r in rows])
    apply_m = median([r["lethe_apply_s"] for r in rows])
    plan_m = median([r["lethe_plan_s"] for r in rows])
    floor_m = median([r["python_floor_s"] for r in rows])
    ratio_m = median([r["ratio"] for r in rows])
    print_table(
        f"POSIX: {files:,} files, {old:,} older than 30 days; {trials} trial(s) on "
        f"{_fstype(work)}",
        ["tool", "median s", "files deleted/s", "vs find"],
        [["find -mtime +30 -delete", find_m, int(old / find_m), 1.0],
         ["lethe apply (maxAge 30d)", apply_m, int(old / apply_m), apply_m / find_m],
         ["lethe plan (no delete)", plan_m, "-", plan_m / find_m],
         ["python floor (same syscalls)", floor_m, int(old / floor_m), floor_m / find_m]])
    print(f"  median of per-trial ratios lethe/find: {ratio_m:.2f}x (target <= 1.5x: "
          f"{'met' if ratio_m <= 1.5 else 'MISSED'}); survivors identical in every trial")
    result = {"workdir": str(work), "filesystem": _fstype(work), "files": files, "old": old,
              "trials": rows, "median_find_s": find_m,
              "median_lethe_apply_s": apply_m, "median_lethe_plan_s": plan_m,
              "median_python_floor_s": floor_m,
              "median_ratio_lethe_over_find": ratio_m, "target_ratio": 1.5,
              "target_met": ratio_m <= 1.5}
    write_results("posix-quick" if args.quick else "posix", result)
    if args.profile:
        profile_apply(work, template)
    return result


if __name__ == "__main__":
    main()
