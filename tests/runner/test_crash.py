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


def test_late_ledger_write_of_an_old_leader_adds_no_second_line(tmp_path: Path) -> None:
    """Chaos seed 3004: a leader deleted a batch, was paused before writing its
    ledger file, the next leader finished the batch (all ``already-gone``), then
    the old one woke and wrote its file. Each key must still have one line: the
    resumed batch keeps its seq, so both writes go to the same file, atomically
    replaced. The crash is real; the late write is the product's own
    ``ledger.write_batch`` with what the killed process had deleted."""
    root = tmp_path / "data"
    old = [f"d{i % 3}/old-{i:03d}.bin" for i in range(30)]
    for k in old:
        make_file(root, k, age_days=60)
    spec = posix_policy(root, "late-ledger", rules={"maxAge": "30d"},
                        safety={"allowDeleteAll": True})  # all go, on purpose
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(spec))
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}"}
    crashed = subprocess.run([sys.executable, str(REPO / "tests/runner/crash_driver.py"),
                              str(policy_file), str(state), "whole-batch", "1"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    zombie = json.loads((state / "zombie.json").read_text())
    assert {o for _k, o in zombie} == {"deleted"} and len(zombie) == 10
    done = subprocess.run([*LETHE, "apply", "-f", str(policy_file), "--state-dir", str(state),
                           "--output", "json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == len(old)
    run_dir, = (root / ".lethe/ledger").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == [f"{s:06d}.jsonl" for s in range(3)]
    resumed = [json.loads(x) for x in (run_dir / "000001.jsonl").read_text().splitlines()]
    assert {x["key"] for x in resumed} == {k for k, _o in zombie}
    assert {x["outcome"] for x in resumed} == {"already-gone"}
    assert {x["term"] for x in resumed} != {1}  # finished under the new term's authority

    # The old leader wakes up and tries to write its ledger file for that batch, late:
    # the file is compare-and-set on the term, so the newer term's file stays.
    from lethe.journal import Intent, IntentEntry
    from lethe.runner import ledger
    from lethe.spec import parse_policy
    from lethe.storage.base import DeleteResult, Outcome
    from lethe.storage.posix import PosixStorage

    policy = parse_policy(spec)
    storage = PosixStorage(policy.target)  # type: ignore[arg-type]
    storage.check_ready()
    entries = tuple(IntentEntry(key=x["key"], fingerprint=x["fingerprint"], size=x["size"],
                                rule=x["rule"]) for x in resumed)
    written = (run_dir / "000001.jsonl").read_bytes()
    with pytest.raises(ledger.Superseded):
        ledger.write_batch(storage=storage, root=policy.ledgerPath,
                           policy=resumed[0]["policy"], run_id=resumed[0]["run_id"],
                           intent=Intent(seq=1, term=1, index=3, entries=entries, cursor=20),
                           results=[DeleteResult(k, Outcome(o)) for k, o in zombie], when=0.0)
    assert (run_dir / "000001.jsonl").read_bytes() == written
    per_key = Counter(str(x["key"]) for x in _ledger(root))
    assert set(per_key) == set(old) and set(per_key.values()) == {1}, per_key
