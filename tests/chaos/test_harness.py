"""The fault harness must be able to fail: replicas that died, threads that died or
stalled, no fault landed, and the recording S3 proxy's view of deletes."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.chaos.checker import TrialRecord
from tests.chaos.env import ChaosReplicas
from tests.chaos.s3proxy import S3Proxy, read_log
from tests.chaos.trial import Consumer, Nemesis, Writers, drop_bucket, harness_failures
from tests.fixtures.replicas import LocalReplicas
from tests.fixtures.s3 import S3Server


def _dying(tmp_path: Path) -> LocalReplicas:
    """Three replicas whose 'python' prints a line and exits 3: a replica that
    crashes at start-up, without needing an API server."""
    exe = tmp_path / "crash"
    exe.write_text('#!/bin/sh\necho "boom in $POD_NAME"\nexit 3\n')
    exe.chmod(0o755)
    return LocalReplicas(count=3, workdir=tmp_path / "reps", kubeconfigs=["none"],
                         password="x", python=str(exe))


def test_wait_ready_fails_when_every_replica_died(tmp_path: Path) -> None:
    reps = _dying(tmp_path)
    reps.start()
    for r in reps.replicas:
        assert r.proc is not None
        r.proc.wait(timeout=10)
    with pytest.raises(RuntimeError) as e:
        reps.wait_ready(timeout=5)
    reps.stop()
    assert "replica lethe-0 is not running (exit 3)" in str(e.value)
    assert "boom in lethe-0" in str(e.value)  # the log's tail


def test_wait_ready_fails_for_a_replica_never_started(tmp_path: Path) -> None:
    reps = _dying(tmp_path)
    with pytest.raises(RuntimeError, match=r"lethe-0 is not running \(never started\)"):
        reps.wait_ready(timeout=5)


#: A replica at its pause point, as operator/lethe/storage/pausepoint.py does it: the
#: ``paused-once`` file first, the stop after (here 0.5 s after, a slow stop widened).
_PAUSES_ITSELF = """
import os, signal, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, f"{os.getpid()} s3-delete:1\\n".encode()); os.close(fd)
time.sleep(0.5)
signal.pthread_kill(__import__("threading").get_ident(), signal.SIGSTOP)
print("woken", flush=True)
"""


def test_timed_pause_wakes_a_replica_seen_before_it_stopped(tmp_path: Path) -> None:
    """Seed 19513: the waker read ``paused-once`` between its write and the stop, took
    the running process for one killed meanwhile, and left it stopped for good."""
    proc = subprocess.Popen([sys.executable, "-c", _PAUSES_ITSELF,
                             str(tmp_path / "paused-once")], stdout=subprocess.PIPE)
    reps = cast(ChaosReplicas, SimpleNamespace(workdir=tmp_path))
    faults: Counter[str] = Counter()
    nemesis = Nemesis(reps, random.Random(1), faults, lambda: 0)
    now = threading.Event()
    now.set()  # no hold: wake as soon as it is seen stopped
    try:
        while not (tmp_path / "paused-once").exists():
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            nemesis.timed_pause(now)
            time.sleep(0.05)
        assert proc.poll() is not None, "the replica that paused itself was never woken"
    finally:
        proc.kill()
        proc.wait()
    assert proc.stdout is not None and proc.stdout.read() == b"woken\n"
    assert faults == Counter({"pause-at-s3-delete": 1})


def _threads(tmp_path: Path) -> tuple[TrialRecord, Writers, Consumer, Nemesis]:
    rec = TrialRecord(seed=1, ns="x", posix_root=tmp_path, manifest_key="manifest.json",
                      posix_max_age=86400, s3_bucket="b", s3_prefix="data/", s3_max_age=8)
    # No population and no S3 client: each POSIX writer dies on its first choice of a
    # key (IndexError), the S3 writer's every PUT fails (recorded, not ok).
    writers = Writers(rec, 1, [], [], None, threading.Lock())
    consumer = Consumer(rec, [])
    nemesis = Nemesis(cast(ChaosReplicas, None), random.Random(1), Counter(), lambda: 0)
    return rec, writers, consumer, nemesis


def test_dead_writers_no_fault_and_floors_fail_the_trial(tmp_path: Path) -> None:
    rec, writers, consumer, nemesis = _threads(tmp_path)
    writers.start()
    time.sleep(0.5)
    writers.join()
    got = harness_failures(Counter(), writers, consumer, nemesis, chaos_seconds=10)
    text = "\n".join(got)
    assert "no fault landed" in text
    assert "writer posix-0 died" in text and "writer posix-1 died" in text
    assert "IndexError" in text
    assert "writer s3 did 0 successful operations, floor 10" in text
    assert "consumer made 0 manifest checks, floor 5" in text
    assert rec.s3_ops and not any(o.ok for o in rec.s3_ops)


def test_a_healthy_trial_has_no_harness_failure(tmp_path: Path) -> None:
    rec, writers, consumer, nemesis = _threads(tmp_path)
    writers.done.update({"posix-0": 30, "posix-1": 30, "s3": 20})
    rec.consumer_checks = 10
    assert harness_failures(Counter({"kill": 1}), writers, consumer, nemesis,
                            chaos_seconds=12) == []


def test_proxy_records_every_delete_with_its_outcome(tmp_path: Path, s3_server: S3Server,
                                                     s3_bucket: str) -> None:
    proxy = S3Proxy(upstream=s3_server.endpoint, log=tmp_path / "log.jsonl")
    try:
        c: Any = S3Server(endpoint=proxy.endpoint).client()
        etag = c.put_object(Bucket=s3_bucket, Key="data/a", Body=b"a")["ETag"]
        c.put_object(Bucket=s3_bucket, Key="data/b", Body=b"b")
        c.put_object(Bucket=s3_bucket, Key="data/c d", Body=b"c")
        before = time.time()
        c.delete_object(Bucket=s3_bucket, Key="data/a", IfMatch=etag)
        resp = c.delete_objects(Bucket=s3_bucket, Delete={"Objects": [
            {"Key": "data/b"}, {"Key": "data/c d", "ETag": '"x"'}]})
        assert c.head_bucket(Bucket=s3_bucket)["ResponseMetadata"]["HTTPHeaders"]["date"]
    finally:
        proxy.close()
    reqs = read_log(tmp_path / "log.jsonl")
    assert [r.method for r in reqs] == ["PUT", "PUT", "PUT", "DELETE", "POST", "HEAD"]
    single, batch = reqs[3], reqs[4]
    assert before <= single.t0 <= single.t1
    assert single.deletes() == [("data/a", etag, None)]
    assert batch.objects[1] == {"key": "data/c d", "etag": '"x"', "version": None}
    assert sorted(k for k, _e, _v in batch.deletes()) == sorted(
        d["Key"] for d in resp.get("Deleted", []))
    assert all(r.bucket == s3_bucket for r in reqs)


def test_proxy_records_versions_and_markers(tmp_path: Path, s3_server: S3Server,
                                            s3_bucket: str) -> None:
    """Versioned buckets: a DeleteObjects naming two versions of one key records both
    (the checker once kept one per key and reported the other as lost), and a delete
    without VersionId records the marker it placed, batched or single."""
    direct: Any = s3_server.client()
    direct.put_bucket_versioning(Bucket=s3_bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
    v1 = direct.put_object(Bucket=s3_bucket, Key="data/a", Body=b"1")["VersionId"]
    v2 = direct.put_object(Bucket=s3_bucket, Key="data/a", Body=b"2")["VersionId"]
    direct.put_object(Bucket=s3_bucket, Key="data/a", Body=b"3")
    direct.put_object(Bucket=s3_bucket, Key="data/b", Body=b"b")
    direct.put_object(Bucket=s3_bucket, Key="data/c", Body=b"c")
    proxy = S3Proxy(upstream=s3_server.endpoint, log=tmp_path / "log.jsonl")
    try:
        c: Any = S3Server(endpoint=proxy.endpoint).client()
        c.delete_objects(Bucket=s3_bucket, Delete={"Objects": [
            {"Key": "data/a", "VersionId": v1}, {"Key": "data/a", "VersionId": v2},
            {"Key": "data/b"}]})
        marker = c.delete_object(Bucket=s3_bucket, Key="data/c")["VersionId"]
    finally:
        proxy.close()
    batch, single = read_log(tmp_path / "log.jsonl")
    assert sorted(batch.deletes(), key=str) == sorted(
        [("data/a", None, v1), ("data/a", None, v2), ("data/b", None, None)], key=str)
    [[key, placed]] = batch.markers
    listed = direct.list_object_versions(Bucket=s3_bucket, Prefix="data/b")["DeleteMarkers"]
    assert key == "data/b" and [m["VersionId"] for m in listed] == [placed]
    assert single.markers == [["data/c", marker]]


def test_drop_bucket_removes_versions_markers_uploads_and_the_bucket(s3_server: S3Server
                                                                     ) -> None:
    """A passed trial's bucket goes, whatever it holds (more than one page of versions
    included): else moto grows for the whole run and slows later trials."""
    c: Any = s3_server.client()
    bucket = "drop-me"
    c.create_bucket(Bucket=bucket)
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for i in range(600):
        c.put_object(Bucket=bucket, Key=f"k/{i}", Body=b"x")
        c.put_object(Bucket=bucket, Key=f"k/{i}", Body=b"y")
    c.delete_object(Bucket=bucket, Key="k/0")  # a delete marker
    c.create_multipart_upload(Bucket=bucket, Key="k/stale")
    drop_bucket(c, bucket)
    assert bucket not in [b["Name"] for b in c.list_buckets()["Buckets"]]
