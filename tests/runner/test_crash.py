"""Crash a real `lethe apply` process mid-run, run it again, check consistency (I2, I4, I6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.runner.conftest import make_file, posix_policy

REPO = Path(__file__).resolve().parents[2]
LETHE = [sys.executable, "-m", "lethe.cli.main"]


def _ledger(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for p in sorted((root / ".lethe/ledger").rglob("*.jsonl"))
            for line in p.read_text().splitlines()]


@pytest.mark.parametrize("where", ["after-manifest", "mid-batch"])
def test_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path, where: str) -> None:
    root = tmp_path / "data"
    old = [f"d{i % 3}/old-{i:03d}.bin" for i in range(45)]
    new = [f"d{i % 3}/new-{i:03d}.bin" for i in range(15)]
    for k in old:
        make_file(root, k, age_days=60)
    for k in new:
        make_file(root, k, age_days=1)
    (root / "manifest.json").write_text(json.dumps({"files": old + new}))
    spec = posix_policy(root, f"crash-{where}", rules={"maxAge": "30d"},
                        manifest={"path": "manifest.json"})
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(spec))
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}"}

    crashed = subprocess.run([sys.executable, str(REPO / "tests/runner/crash_driver.py"),
                              str(policy_file), str(state), where, "2"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    remaining = {k for k in old if (root / k).exists()}
    assert len(remaining) < len(old)  # it really was mid-run
    listed = set(json.loads((root / "manifest.json").read_text())["files"])
    assert all((root / k).exists() for k in listed), "manifest references a missing file"

    done = subprocess.run([*LETHE, "apply", "-f", str(policy_file), "--state-dir", str(state),
                           "--output", "json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed"] is True
    assert report["deleted"] == len(old), report  # counters continue across the crash
    assert not any((root / k).exists() for k in old)
    assert all((root / k).exists() for k in new)
    assert set(json.loads((root / "manifest.json").read_text())["files"]) == set(new)
    lines = _ledger(root)
    per_key = Counter(str(x["key"]) for x in lines)
    assert set(per_key) == set(old) and set(per_key.values()) == {1}, per_key
