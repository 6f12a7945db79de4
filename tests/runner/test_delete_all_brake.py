"""The allowDeleteAll brake and the minAge floor on real directories (issue #14).

A plan that would delete every selected item (and at least one) stops before
its first delete, like maxDeletes/maxDeletePercent: result Stalled, reason
SafetyBrake, a message that says what to write, and nothing deleted, unless the
policy sets ``spec.safety.allowDeleteAll: true`` or a person acknowledges the
run. ``lethe plan`` shows the same. And a file restored with ``tar -x``/``cp -p``
(old mtime, ctime now) is protected by ``minAge`` on a real file system.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lethe.raft.node import RaftJournal
from lethe.runner.execute import Runner
from lethe.spec import parse_policy
from lethe.storage.posix import PosixStorage
from tests.runner.conftest import make_file, posix_policy
from tests.runner.test_cli import lethe, write
from tests.runner.test_execute import Hooked


def run(journal: RaftJournal, root: Path, name: str, *, waive: bool = False,
        **spec: Any) -> dict[str, Any]:
    policy = parse_policy(posix_policy(root, name, **spec))
    report = Runner(policy=policy, storage=PosixStorage(policy.target),  # type: ignore[arg-type]
                    journal=journal).run(waive_brakes=waive)
    return report.as_dict()


def files(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file() and ".lethe" not in p.parts}


def test_a_plan_that_deletes_everything_stops(journal: RaftJournal, tmp_path: Path) -> None:
    root = tmp_path / "all-old"
    for i in range(5):
        make_file(root, f"f{i}.log", age_days=40 + i)
    r = run(journal, root, "all-old", rules={"maxAge": "30d"})
    assert r["result"] == "Stalled" and r["reason"] == "SafetyBrake", r
    assert "spec.safety.allowDeleteAll: true" in r["message"], r["message"]
    assert "every selected item (5 of 5)" in r["message"], r["message"]
    assert r["deleted"] == 0 and len(files(root)) == 5
    # a person acknowledges the run (the operator's lethe.io/acknowledge-run): it goes
    r = run(journal, root, "all-old", waive=True, rules={"maxAge": "30d"})
    assert r["result"] == "Succeeded" and r["deleted"] == 5 and files(root) == set()


def test_allow_delete_all_opts_in(journal: RaftJournal, tmp_path: Path) -> None:
    root = tmp_path / "opt-in"
    for i in range(3):
        make_file(root, f"f{i}.tmp", age_days=2)
    r = run(journal, root, "opt-in", rules={"maxAge": "1d"}, safety={"allowDeleteAll": True})
    assert r["result"] == "Succeeded" and r["deleted"] == 3 and files(root) == set()


def test_one_kept_item_is_not_everything(journal: RaftJournal, tmp_path: Path) -> None:
    root = tmp_path / "one-stays"
    for i in range(3):
        make_file(root, f"old{i}.log", age_days=40)
    make_file(root, "new.log", age_days=1)
    make_file(root, "notes.txt", age_days=400)  # not selected: does not count
    r = run(journal, root, "one-stays", rules={"maxAge": "30d"},
            select={"include": ["*.log"]})
    assert r["result"] == "Succeeded" and r["deleted"] == 3, r
    assert files(root) == {"new.log", "notes.txt"}


def test_nothing_to_delete_is_not_everything(journal: RaftJournal, tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert run(journal, root, "empty", rules={"maxAge": "30d"})["result"] == "Succeeded"
    make_file(root, "young.log", age_days=1)
    assert run(journal, root, "empty", rules={"maxAge": "30d"})["result"] == "Succeeded"


def test_every_group_deleted_trips_although_a_readme_stays(journal: RaftJournal,
                                                           tmp_path: Path) -> None:
    root = tmp_path / "groups"
    for d in ("2025-01-01", "2025-01-02"):
        make_file(root, f"{d}/db.tar", age_days=90)
    make_file(root, "README", age_days=1)  # ungrouped: always kept, not an item
    r = run(journal, root, "groups", rules={"maxAge": "30d"}, groupBy={"depth": 1})
    assert r["result"] == "Stalled" and "allowDeleteAll" in r["message"], r
    assert files(root) == {"db.tar", "README"}


def test_lethe_plan_shows_the_brake(tmp_path: Path) -> None:
    root = tmp_path / "cli"
    for i in range(2):
        make_file(root, f"f{i}.log", age_days=40)
    doc = posix_policy(root, "cli-all", rules={"maxAge": "30d"})
    out = lethe("plan", "-f", write(tmp_path, doc), "--state-dir", str(tmp_path / "s"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Stalled" in out.stdout and "SafetyBrake" in out.stdout, out.stdout
    assert "spec.safety.allowDeleteAll: true" in out.stdout, out.stdout
    assert files(root) == {"f0.log", "f1.log"}


def test_min_age_protects_a_restored_file_on_a_real_directory(journal: RaftJournal,
                                                              tmp_path: Path) -> None:
    """``tar -x``/``rsync -a``/``cp -p`` create files now with mtimes of 2020: the
    file's ctime is now (user space cannot set it back), its mtime is old."""
    root = tmp_path / "restored"
    root.mkdir()
    old = time.mktime((2020, 3, 1, 12, 0, 0, 0, 0, -1))
    for name in ("restored-a.tar", "restored-b.tar"):
        p = root / name
        p.write_bytes(b"x" * 10)
        os.utime(p, (old, old))  # as tar -x does, just after creating the file
    rules = {"maxAge": "30d", "minAge": "1h"}
    r = run(journal, root, "restored", rules=rules)
    assert r["result"] == "Succeeded" and r["deleted"] == 0, r
    assert files(root) == {"restored-a.tar", "restored-b.tar"}
    row = {x["rule"]: x for x in r["plan"]["rules"]["rules"]}["minAge"]
    assert row["kept"]["items"] == 2 and "ctime" in row["sample"][0]["reason"], row
    # Two hours later (the storage clock moved on; the skew bound admits it) the
    # floor is over and maxAge, which reads mtime, deletes them.
    policy = parse_policy(posix_policy(
        root, "restored-later", rules=rules,
        safety={"allowDeleteAll": True, "maxClockSkew": "3h"}))
    later = Hooked(PosixStorage(policy.target), now_shift=2 * 3600)  # type: ignore[arg-type]
    r = Runner(policy=policy, storage=later, journal=journal).run().as_dict()
    assert r["result"] == "Succeeded" and r["deleted"] == 2 and files(root) == set(), r
