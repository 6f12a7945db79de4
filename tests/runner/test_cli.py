"""`lethe plan` / `lethe apply` as a user runs them, on a directory and on S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.runner.conftest import make_file, posix_policy

REPO = Path(__file__).resolve().parents[2]


def lethe(*args: str, env: dict[str, str] | None = None, timeout: float = 180
          ) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lethe.cli.main", *args], env=full,
                          capture_output=True, text=True, timeout=timeout)


def write(tmp: Path, doc: dict[str, Any]) -> str:
    p = tmp / f"{doc['metadata']['name']}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def s3_policy(name: str, s3_server: Any, bucket: str, prefix: str, rules: dict[str, Any],
              **s3: Any) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": "test"},
            "spec": {"target": {"s3": {"bucket": bucket, "prefix": prefix,
                                       "endpoint": s3_server.endpoint, "region": "us-east-1",
                                       "forcePathStyle": True, **s3}},
                     "rules": rules}}


def s3_env(s3_server: Any) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}


def test_plan_then_apply_on_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    for i in range(10):
        make_file(root, f"app/{i}.log", age_days=40 + i)
        make_file(root, f"app/recent-{i}.log", age_days=1)
    f = write(tmp_path, posix_policy(root, "logs", rules={"maxAge": "30d"}))
    state = ["--state-dir", str(tmp_path / "state")]
    plan = lethe("plan", "-f", f, *state)
    assert plan.returncode == 0, plan.stderr
    assert "eligible 10" in plan.stdout and "maxAge" in plan.stdout
    assert len(list(root.rglob("*.log"))) == 20
    out = lethe("apply", "-f", f, "--output", "json", *state)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for k in ("scanned", "matched", "deleted", "skipped_changed", "bytes_freed", "errors"):
        assert k in r
    assert (r["scanned"], r["matched"], r["deleted"], r["errors"]) == (20, 10, 10, 0)
    assert len(list(root.rglob("*.log"))) == 10


def test_bad_policy_file_names_the_field(tmp_path: Path) -> None:
    doc = posix_policy(tmp_path, "bad", rules={"maxAge": "30 days"})
    out = lethe("plan", "-f", write(tmp_path, doc))
    assert out.returncode != 0 and "spec.rules.maxAge" in out.stderr


def test_apply_on_s3(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    client = s3_server.client()
    for i in range(30):
        client.put_object(Bucket=s3_bucket, Key=f"tmp/old-{i}", Body=b"o" * 10)
    time.sleep(12)  # moto stamps LastModified with its own clock: let these age
    for i in range(5):
        client.put_object(Bucket=s3_bucket, Key=f"tmp/new-{i}", Body=b"n" * 10)
    doc = s3_policy("s3", s3_server, s3_bucket, "tmp/", {"maxAge": "10s"})
    env = s3_env(s3_server)
    out = lethe("apply", "-f", write(tmp_path, doc), "--output", "json", "--state-dir",
                str(tmp_path / "state"), env=env)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["deleted"] == 30 and r["errors"] == 0, r
    left = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket,
                                                           Prefix="tmp/")["Contents"]
                  if not o["Key"].startswith("tmp/.lethe/"))
    assert left == [f"tmp/new-{i}" for i in range(5)]
    assert s3_server.secret_key not in out.stdout + out.stderr


def test_plan_diff_shows_what_a_change_would_do(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    for i in range(10):
        make_file(root, f"b-{i:02d}.tar", age_days=i * 10 + 1)  # 1, 11, …, 91 days
    old = write(tmp_path, posix_policy(root, "old", rules={"maxAge": "60d"}))
    new_doc = posix_policy(root, "new", rules={"maxAge": "30d", "keepLast": 5})
    new = write(tmp_path, new_doc)
    out = lethe("plan", "--diff", old, new, "--output", "json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    # maxAge 60d deletes b-06..b-09; maxAge 30d + keepLast 5 deletes b-05..b-09.
    assert d["became_eligible"]["entries"] == 1
    assert [c["key"] for c in d["became_eligible"]["sample"]] == ["b-05.tar"]
    assert d["became_protected"]["entries"] == 0
    text = lethe("plan", "--diff", old, new)
    assert text.returncode == 0 and "newly eligible" in text.stdout and "b-05.tar" in text.stdout
    assert len(list(root.glob("*.tar"))) == 10  # a diff deletes nothing


def test_plan_breakdown_per_rule_on_s3(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    client = s3_server.client()
    for i in range(8):
        client.put_object(Bucket=s3_bucket, Key=f"snap/{i}", Body=b"s" * 100)
    doc = s3_policy("s3plan", s3_server, s3_bucket, "snap/", {"keepLast": 3})
    env = s3_env(s3_server)
    out = lethe("plan", "-f", write(tmp_path, doc), "--state-dir", str(tmp_path / "s"),
                env=env)
    assert out.returncode == 0, out.stderr
    assert "keepLast" in out.stdout and "eligible 5" in out.stdout
    kept = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="snap/")["Contents"]}
    # The plan file lives under snap/.lethe/: count only the user's objects.
    assert {k for k in kept if not k.startswith("snap/.lethe/")} == {f"snap/{i}" for i in range(8)}


def test_apply_removes_old_noncurrent_versions_and_stale_uploads(
        tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    """``noncurrentVersionsMaxAge`` and ``abortIncompleteUploadsAfter`` act in an Enforce
    run: versions noncurrent for longer go (journaled and in the ledger, by VersionId),
    current objects, delete markers and recently superseded versions stay."""
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
    for body in (b"a1", b"a2", b"a3"):
        client.put_object(Bucket=s3_bucket, Key="v/a", Body=body)
    client.put_object(Bucket=s3_bucket, Key="v/b", Body=b"b1")
    client.delete_object(Bucket=s3_bucket, Key="v/b")  # a delete marker over b1
    client.create_multipart_upload(Bucket=s3_bucket, Key="v/big")
    time.sleep(10)  # moto stamps with its own clock: these became noncurrent 10 s ago
    client.put_object(Bucket=s3_bucket, Key="v/c", Body=b"c1")
    client.put_object(Bucket=s3_bucket, Key="v/c", Body=b"c2")  # c1: noncurrent just now
    expired = {(v["Key"], v["VersionId"]) for v in client.list_object_versions(
        Bucket=s3_bucket, Prefix="v/")["Versions"]
        if not v["IsLatest"] and v["Key"] in ("v/a", "v/b")}
    assert len(expired) == 3
    doc = s3_policy("versions", s3_server, s3_bucket, "v/", {"maxAge": "1h"},
                    noncurrentVersionsMaxAge="8s", abortIncompleteUploadsAfter="8s")
    env = s3_env(s3_server)
    out = lethe("apply", "-f", write(tmp_path, doc), "--output", "json", "--state-dir",
                str(tmp_path / "state"), env=env)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["result"] == "Succeeded" and r["matched"] == 0, r
    assert r["deleted"] == 3 and r["errors"] == 0 and r["uploads_aborted"] == 1, r
    listing = client.list_object_versions(Bucket=s3_bucket, Prefix="v/")
    left = {(v["Key"], v["VersionId"]) for v in listing["Versions"]
            if not v["Key"].startswith("v/.lethe/")}
    assert not left & expired
    assert {k for k, _ in left} == {"v/a", "v/c"} and len(left) == 3  # a3, c1, c2
    assert [m["Key"] for m in listing.get("DeleteMarkers", [])] == ["v/b"]
    assert client.get_object(Bucket=s3_bucket, Key="v/a")["Body"].read() == b"a3"
    assert not client.list_multipart_uploads(Bucket=s3_bucket, Prefix="v/").get("Uploads")
    ledger_keys = [o["Key"] for o in client.list_objects_v2(
        Bucket=s3_bucket, Prefix="v/.lethe/ledger/")["Contents"]]
    lines = [json.loads(x) for k in ledger_keys for x in client.get_object(
        Bucket=s3_bucket, Key=k)["Body"].read().decode().splitlines()]
    assert sorted((x["key"], x["detail"]) for x in lines) == sorted(
        (k.removeprefix("v/"), f"version {vid}") for k, vid in expired)
    assert {x["rule"] for x in lines} == {"noncurrentVersionsMaxAge"}
    assert {x["outcome"] for x in lines} == {"deleted"}


def test_an_unfinished_enforce_run_is_never_finished_by_plan_or_another_policy(
        tmp_path: Path) -> None:
    """The journal is keyed by namespace/name: a run left unfinished was resumed by the
    next invocation whatever it was. `lethe plan` of a same-named policy on another
    directory emptied that directory (found by the CLI fuzz, session 4)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(4):
        make_file(a, f"{i}.log", age_days=40)
        make_file(b, f"{i}.log", age_days=40)
    (a / "manifest.json").write_text('"a manifest that is neither a list nor files"')
    first = posix_policy(a, "p", rules={"maxAge": "30d"}, mode="Enforce")
    first["spec"]["manifest"] = {"path": "manifest.json"}
    first["spec"]["select"] = {"include": ["*.log"]}
    first["spec"]["safety"] = {"allowDeleteAll": True}
    state = ["--state-dir", str(tmp_path / "state")]
    (tmp_path / "1").mkdir()
    f1 = write(tmp_path / "1", first)
    out = lethe("apply", "-f", f1, *state)
    assert out.returncode != 0 and "manifest" in (out.stdout + out.stderr), out
    assert len(list(a.glob("*.log"))) == 4  # manifest first: nothing deleted
    other = posix_policy(b, "p", rules={"maxAge": "30d"}, mode="Enforce")
    other["spec"]["safety"] = {"allowDeleteAll": True}
    (tmp_path / "2").mkdir()
    f2 = write(tmp_path / "2", other)
    for cmd in ("plan", "apply"):
        out = lethe(cmd, "-f", f2, *state)
        assert out.returncode != 0, (cmd, out.stdout)
        assert "unfinished" in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(list(b.glob("*.log"))) == 4, f"`lethe {cmd}` deleted another policy's files"
    # The same policy, its manifest mended, finishes its own run.
    (a / "manifest.json").write_text("[]")
    out = lethe("apply", "-f", f1, "--output", "json", *state)
    assert out.returncode == 0, out.stderr
    assert list(a.glob("*.log")) == [] and len(list(b.glob("*.log"))) == 4


_HOLD = """
import sys, time
from pathlib import Path
from lethe.raft.lock import hold_data_dir
hold_data_dir(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_apply_of_a_policy_in_use_stops_at_once_naming_the_holder(
        tmp_path: Path) -> None:
    """restic's rule for a locked repository: a second run does not queue behind the
    first, which may take hours (before, it waited without a limit); it says who
    holds the policy's journal and stops, deleting nothing. The holder is a real
    process taking the journal's lock as `lethe apply` does: a real apply cannot be
    held mid-run on demand."""
    root = tmp_path / "logs"
    for i in range(5):
        make_file(root, f"{i}.log", age_days=40)
    f = write(tmp_path, posix_policy(root, "busy", rules={"maxAge": "30d"},
                                     safety={"allowDeleteAll": True}))
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}"}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(state / "test" / "busy")],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        out = lethe("apply", "-f", f, "--state-dir", str(state), timeout=60)
        assert out.returncode == 1, out
        assert f"held by pid {holder.pid}" in out.stderr, out.stderr
        assert "another `lethe apply`" in out.stderr and "Traceback" not in out.stderr
        assert len(list(root.glob("*.log"))) == 5
    finally:
        holder.kill()
        holder.wait()
    out = lethe("apply", "-f", f, "--state-dir", str(state), timeout=60)
    assert out.returncode == 0, out.stderr
    assert list(root.glob("*.log")) == []
