"""Shared helpers for the benchmarks: paths, timing, tables, JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_DIR",
    "CACHE_DIR",
    "REPO",
    "RESULTS_DIR",
    "Timed",
    "bench_env",
    "lethe_cmd",
    "machine_info",
    "median",
    "print_table",
    "run_timed",
    "write_results",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE_DIR = REPO / ".cache" / "bench"
RESULTS_DIR = BENCH_DIR / "results"
OPERATOR_SRC = REPO / "operator"

# Run from a fresh clone before ``pip install -e .``: find ``lethe`` in the tree.
if str(OPERATOR_SRC) not in sys.path:
    sys.path.insert(0, str(OPERATOR_SRC))


def bench_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``operator/`` on PYTHONPATH, plus ``extra``."""
    env = dict(os.environ)
    paths = [str(OPERATOR_SRC), str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Timed:
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def run_timed(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
              check: bool = True, timeout: float | None = None) -> Timed:
    """Run ``cmd`` and measure its wall time (process start to exit)."""
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=dict(env) if env is not None else bench_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return Timed(elapsed, proc.returncode, proc.stdout, proc.stderr)


def lethe_cmd() -> list[str]:
    """The ``lethe`` console script of this interpreter's venv (``python -m`` fallback)."""
    exe = Path(sys.executable).with_name("lethe")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "lethe.cli.main"]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def machine_info() -> dict[str, Any]:
    load = os.getloadavg()
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n== {title} ==")
    for n, r in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:,.3f}" if abs(c) < 10 else f"{c:,.1f}"
    if isinstance(c, int) and not isinstance(c, bool):
        return f"{c:,}"
    return str(c)


def write_results(name: str, data: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": name, "machine": machine_info(), **data},
                              indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"  results: {path.relative_to(REPO)}")
    return path
