"""Hostile storage not already covered by tests/storage: loops, vanishing files,
a directory turned into a file, an unmounted export, future timestamps, a skewed
or denying S3 server, a missing bucket. Real directories, a real tmpfs mount, the
real ``lethe`` CLI and a real moto server. No mocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lethe.spec import PosixTarget
from lethe.storage.base import Outcome
from lethe.storage.posix import PosixStorage

REPO = Path(__file__).resolve().parents[2]
DAY = 86400


def lethe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lethe.cli.main", *args], env=full,
                          capture_output=True, text=True, timeout=120, check=False)


def apply(tmp: Path, target: dict[str, Any], *, max_age: str = "1d",
          env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    doc = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": "hostile", "namespace": "t"},
           "spec": {"target": target, "rules": {"maxAge": max_age}, "mode": "Enforce",
                    "safety": {"allowDeleteAll": True}}}  # may empty the target, on purpose
    f = tmp / "policy.yaml"
    f.write_text(yaml.safe_dump(doc))
    out = lethe("apply", "-f", str(f), "--output", "json", "--state-dir", str(tmp / "state"),
                env=env)
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout)


def make(root: Path, key: str, *, age_days: float) -> Path:
    p = root / key
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(key)
    t = time.time() - age_days * DAY
    os.utime(p, (t, t))
    return p


def test_symlink_loops_neither_hang_nor_get_followed(tmp_path: Path) -> None:
    root = tmp_path / "t"
    old = make(root, "a/old.log", age_days=5)
    make(root, "b/new.log", age_days=0)
    (root / "a" / "loop").symlink_to(root / "a")          # a/loop -> a
    (root / "x").symlink_to(root / "y")                    # x -> y -> x
    (root / "y").symlink_to(root / "x")
    (root / "a" / "up").symlink_to("..")                   # relative, to the root
    rc, r = apply(tmp_path, {"posix": {"path": str(root)}})
    assert rc == 0 and r["deleted"] == 1 and r["errors"] == 0, r
    assert not old.exists() and (root / "b/new.log").exists()
    assert all(os.path.islink(root / n) for n in ("a/loop", "x", "y", "a/up"))


def test_file_vanishing_mid_scan(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for i in range(50):
        make(root, f"d{i // 10}/f{i:02d}.log", age_days=5)
    store = PosixStorage(PosixTarget(path=str(root)))
    seen = []
    for n, e in enumerate(store.list()):
        seen.append(e)
        if n == 3:  # the scan is inside d0: remove files ahead of it, and a whole dir
            os.unlink(root / "d0/f07.log")
            for f in (root / "d3").iterdir():
                f.unlink()
            (root / "d3").rmdir()
    keys = {e.key for e in seen}
    assert "d0/f00.log" in keys and "d0/f07.log" not in keys
    assert not any(k.startswith("d3/") for k in keys)
    # Entries that vanish after the scan are 'already gone', never an error.
    os.unlink(root / "d1/f10.log")
    results = store.delete_batch(seen)
    by = {r.key: r.outcome for r in results}
    assert by["d1/f10.log"] == Outcome.ALREADY_GONE
    assert {o for k, o in by.items() if k != "d1/f10.log"} == {Outcome.DELETED}


def test_directory_replaced_by_a_file_mid_run(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for i in range(5):
        make(root, f"logs/f{i}.log", age_days=5)
    store = PosixStorage(PosixTarget(path=str(root)))
    planned = list(store.list())
    for f in (root / "logs").iterdir():
        f.unlink()
    (root / "logs").rmdir()
    (root / "logs").write_text("now a file")  # same name, now a regular file
    results = store.delete_batch(planned)
    assert all(r.outcome in (Outcome.ALREADY_GONE, Outcome.ERROR) for r in results), results
    assert (root / "logs").read_text() == "now a file"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "export"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_unmounted_export_between_runs_deletes_nothing(tmp_path: Path, tmpfs: Path) -> None:
    # What lies *under* the mount point (old files) must survive once it is unmounted.
    subprocess.run(["umount", str(tmpfs)], check=True)
    under = [make(tmpfs, f"stale/u{i}.log", age_days=90) for i in range(5)]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(tmpfs)], check=True)
    (tmpfs / ".mounted").write_text("")
    on_export = [make(tmpfs, f"data/e{i}.log", age_days=90) for i in range(5)]
    target = {"posix": {"path": str(tmpfs), "sentinel": ".mounted"}}
    rc, r = apply(tmp_path, target)
    assert rc == 0 and r["deleted"] == 5, r
    assert not any(p.exists() for p in on_export)
    subprocess.run(["umount", str(tmpfs)], check=True)  # the export goes away
    rc, r = apply(tmp_path, target)
    assert rc != 0 and r["deleted"] == 0, r
    assert r["reason"] in ("TargetUnreachable", "SentinelMissing", "TargetNotReady"), r
    assert all(p.exists() for p in under)


def test_future_timestamps_are_skipped_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "t"
    old = make(root, "old.log", age_days=5)
    fut = [make(root, f"future-{i}.log", age_days=-(i + 1)) for i in range(3)]
    rc, r = apply(tmp_path, {"posix": {"path": str(root)}})
    assert rc == 0 and r["deleted"] == 1 and r["plan"]["future"] == 3, r
    assert not old.exists() and all(p.exists() for p in fut)


# -- S3 ---------------------------------------------------------------------------------


def _s3_env(s3_server: Any) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}


def _s3_target(bucket: str, endpoint: str) -> dict[str, Any]:
    return {"s3": {"bucket": bucket, "endpoint": endpoint, "region": "us-east-1",
                   "forcePathStyle": True}}


def test_s3_missing_bucket_is_a_reason(tmp_path: Path, s3_server: Any) -> None:
    rc, r = apply(tmp_path, _s3_target("lethe-no-such-bucket", s3_server.endpoint),
                  env=_s3_env(s3_server))
    assert rc != 0 and r["reason"] == "TargetUnreachable" and r["deleted"] == 0, r
    assert "lethe-no-such-bucket" in r["message"], r
