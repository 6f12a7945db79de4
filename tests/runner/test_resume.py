"""Resumed runs (issue #17 items 3, 4, 7): a run's counters are the journal's whoever
finished it, a resumed batch records only what its writer saw, and the batch size is
the policy's ``spec.batchSize``.

Real directories, real S3 (moto), a real one-node Raft journal; the POSIX crash is a
real SIGKILL of a ``lethe apply`` process (tests/runner/crash_driver.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from lethe.journal import Fence
from lethe.raft.node import RaftJournal
from lethe.runner import ledger
from lethe.runner.execute import Runner
from lethe.spec import SpecError, parse_policy, parse_spec
from lethe.storage.base import DeleteResult, Entry, Storage, no_fence
from lethe.storage.base import Fence as DeleteFence
from lethe.storage.posix import PosixStorage
from lethe.storage.s3 import S3Storage
from tests.runner.conftest import make_file, posix_policy

REPO = Path(__file__).resolve().parents[2]
LETHE = [sys.executable, "-m", "lethe.cli.main"]


class Killed(Exception):
    """Raised where a SIGKILL would land: between a batch's last delete request and its
    ledger write. In-process so that one test can stop a run several times on one
    journal; after :func:`settle`, the journal is as a kill can leave it (the batch
    recorded, not completed), and the next Runner resumes it as a new leader would."""


def settle(journal: RaftJournal) -> None:
    """The dead runner's pipelined journal entries (completions of earlier batches,
    intents recorded ahead) were submitted before it raised; a real kill may or may
    not have let them commit. Commit a no-op behind them (pysyncobj applies in
    submission order) so they all have: one of the states a kill leaves."""
    journal.commit(Fence(term=journal.current_term()))


class DiesAfterDeleting:
    """The real backend; its ``at``-th delete_batch call deletes the whole batch and
    then the node "dies" (:class:`Killed`) before the batch's ledger file is written."""

    def __init__(self, inner: Storage, *, at: int | None) -> None:
        self.inner = inner
        self.at = at
        self.calls = 0
        self.deleted: list[DeleteResult] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def delete_batch(self, entries: Sequence[Entry], *, fence: DeleteFence = no_fence
                     ) -> list[DeleteResult]:
        n, self.calls = self.calls, self.calls + 1
        results = self.inner.delete_batch(entries, fence=fence)
        if n == self.at:
            self.deleted = results
            raise Killed
        return results


def ledger_lines(root: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for f in sorted((root / ".lethe/ledger").rglob("*.jsonl"))
            for x in f.read_text().splitlines()]


def from_ledger(lines: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The status counters, recomputed here from the ledger's own words."""
    out = Counter(x["outcome"] for x in lines)
    return {"deleted": out["deleted"] + out["already-gone"],
            "bytes_freed": sum(x["size"] for x in lines
                               if x["outcome"] in ("deleted", "already-gone")),
            "skipped_changed": out["changed-skipped"] + out["gone-or-replaced"],
            "gone_or_replaced": out["gone-or-replaced"],
            "errors": out["error"], "locked": out["locked"]}


# -- 4. counters across any number of resumes ------------------------------------------


def test_counters_across_two_resumes_equal_the_ledger(journal: RaftJournal,
                                                      tmp_path: Path) -> None:
    """The node dies twice mid-run (after its 3rd batch's deletes, then after the
    resumed run's 2nd); the third attempt finishes. Before the fix, the finishing
    node reported only its own re-plan: ``scanned`` of what was left, ``matched`` 0."""
    root = tmp_path / "data"
    old = [f"d{i % 4}/old-{i:03d}.bin" for i in range(50)]
    for k in old:
        make_file(root, k, age_days=60, size=100 + len(k))
    for i in range(12):
        make_file(root, f"d{i % 4}/new-{i:03d}.bin", age_days=1)
    policy = parse_policy(posix_policy(root, "two-resumes", rules={"maxAge": "30d"},
                                       batchSize=5))
    for at in (2, 1):
        storage = DiesAfterDeleting(PosixStorage(policy.target), at=at)  # type: ignore[arg-type]
        with pytest.raises(Killed):
            Runner(policy=policy, storage=storage, journal=journal).run()
        settle(journal)
        assert journal.read().runs[f"test/{policy.name}"].inflight  # really mid-run
    report = Runner(policy=policy, storage=PosixStorage(policy.target),  # type: ignore[arg-type]
                    journal=journal).run()
    r = report.as_dict()
    assert r["resumed"] and r["result"] == "Succeeded", r
    lines = ledger_lines(root)
    assert Counter(x["key"] for x in lines) == Counter(old)  # each key once, all of them
    # spec.batchSize: 50 keys in batches of 5 are 10 ledger files (the default is 1,000).
    assert len(list((root / ".lethe/ledger").rglob("*.jsonl"))) == 10
    assert {k: r[k] for k in from_ledger(lines)} == from_ledger(lines)
    assert (r["scanned"], r["matched"], r["deleted"]) == (62, 50, 50), r
    rec = journal.read().history[f"test/{policy.name}"][-1]
    assert dict(rec.counters) == report.counters  # what status, events and metrics read


# -- 3. a resumed batch claims only what it saw ----------------------------------------


def test_posix_resumed_batch_does_not_claim_a_recreated_file_was_skipped(
        tmp_path: Path) -> None:
    """A real ``lethe apply`` deletes batch 1 and is SIGKILLed before its ledger file;
    a writer recreates 3 of those files and rewrites (same mtime, other size) every
    file still waiting. The resumed batch 1 records the 3 as ``gone-or-replaced``
    (the dead process may have deleted the planned ones; nobody can tell now), never
    ``changed-skipped``; a file of a batch nobody had begun that changed is still
    plainly ``changed-skipped`` (or deleted by the re-plan, which saw its new self)."""
    root = tmp_path / "data"
    old = [f"d{i % 3}/old-{i:03d}.bin" for i in range(40)]
    for k in old:
        make_file(root, k, age_days=60)
    spec = posix_policy(root, "recreated", rules={"maxAge": "30d"},
                        safety={"allowDeleteAll": True})  # every file is old on purpose
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
    recreated = sorted(k for k, _o in zombie)[:3]
    for k in recreated:
        (root / k).write_bytes(b"new content")  # mtime now: not eligible any more
    waiting = [k for k in old if (root / k).exists() and k not in recreated]
    assert len(waiting) == 20
    for k in waiting:  # a writer rewrote them: other size, same (old) mtime
        st = (root / k).stat()
        (root / k).write_bytes(b"y" * 7)
        os.utime(root / k, ns=(st.st_atime_ns, st.st_mtime_ns))

    done = subprocess.run([*LETHE, "apply", "-f", str(policy_file), "--state-dir", str(state),
                           "--output", "json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    lines = ledger_lines(root)
    outcome = {x["key"]: x["outcome"] for x in lines if x["batch"] == 1}
    assert {k for k, o in outcome.items() if o == "gone-or-replaced"} == set(recreated)
    assert {o for k, o in outcome.items() if k not in recreated} == {"already-gone"}
    unsure = [x for x in lines if x["outcome"] == "gone-or-replaced"]
    assert len(unsure) == 3 and all("term" in x["detail"] for x in unsure), unsure
    assert {x["outcome"] for x in lines if x["key"] in waiting} <= {"changed-skipped",
                                                                    "deleted"}
    assert all((root / k).read_bytes() == b"new content" for k in recreated)  # kept
    assert {k: report[k] for k in from_ledger(lines)} == from_ledger(lines), report
    assert report["gone_or_replaced"] == 3


def test_s3_resumed_batch_does_not_claim_a_recreated_key_was_skipped(
        journal: RaftJournal, s3_server: Any, s3_bucket: str) -> None:
    """The S3 case of the fault checker (41, 159 and 51 keys in its trials): the If-Match
    deletes of a batch succeeded, the node died before the ledger PUT, a writer put
    3 of those keys again, a new attempt resumed the batch and found other ETags."""
    client = s3_server.client()
    keys = [f"logs/{i:03d}.log" for i in range(30)]
    for k in keys:
        client.put_object(Bucket=s3_bucket, Key=f"p/{k}", Body=b"x" * 50)
    doc = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": "s3-recreated", "namespace": "test"},
           "spec": {"target": {"s3": {"bucket": s3_bucket, "prefix": "p/",
                                      "endpoint": s3_server.endpoint, "region": "us-east-1",
                                      "forcePathStyle": True}},
                    "rules": {"maxAge": "2s"}, "mode": "Enforce", "batchSize": 10,
                    "safety": {"allowDeleteAll": True}}}  # every key is old on purpose
    policy = parse_policy(doc)
    # S3 has no utime: the objects age for real. Older than 2 s at the run's clock
    # (LastModified has whole seconds); the writer's later objects are younger than it,
    # so the resumed run's re-plan (same clock) keeps them.
    time.sleep(3.5)

    def storage(at: int | None) -> DiesAfterDeleting:
        inner = S3Storage(policy.target, access_key=s3_server.access_key,  # type: ignore[arg-type]
                          secret_key=s3_server.secret_key)
        return DiesAfterDeleting(inner, at=at)

    dying = storage(1)
    with pytest.raises(Killed):
        Runner(policy=policy, storage=dying, journal=journal).run()
    settle(journal)
    assert {r.outcome.value for r in dying.deleted} == {"deleted"} and len(dying.deleted) == 10
    recreated = sorted(r.key for r in dying.deleted)[:3]
    for k in recreated:
        client.put_object(Bucket=s3_bucket, Key=f"p/{k}", Body=b"new")
    report = Runner(policy=policy, storage=storage(None), journal=journal).run()
    r = report.as_dict()
    assert r["resumed"] and r["result"] == "Succeeded", r
    lines = list(ledger.read_run(storage=storage(None), root=policy.ledgerPath,
                                 run_id=report.run_id))
    as_dicts = [x._asdict() for x in lines]
    outcome = {x.key: x.outcome for x in lines if x.batch == 1}
    assert {k for k, o in outcome.items() if o == "gone-or-replaced"} == set(recreated)
    assert {o for k, o in outcome.items() if k not in recreated} == {"already-gone"}
    assert Counter(x.key for x in lines) == Counter(keys)
    assert sorted({x.batch for x in lines}) == [0, 1, 2]  # spec.batchSize: 10 keys each
    assert {k: r[k] for k in from_ledger(as_dicts)} == from_ledger(as_dicts), r
    assert (r["matched"], r["deleted"], r["gone_or_replaced"]) == (30, 27, 3), r
    for k in recreated:  # the writer's objects were kept
        assert client.get_object(Bucket=s3_bucket, Key=f"p/{k}")["Body"].read() == b"new"


# -- 7. spec.batchSize -----------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1001, "10", True])
def test_batch_size_out_of_range_names_the_field(value: Any) -> None:
    with pytest.raises(SpecError, match=r"spec\.batchSize"):
        parse_spec({"target": {"posix": {"path": "/data"}}, "batchSize": value},
                   name="p", namespace="n")


def test_batch_size_defaults_to_the_s3_cap() -> None:
    policy = parse_spec({"target": {"posix": {"path": "/data"}}}, name="p", namespace="n")
    assert policy.batchSize == 1000


class DiesBeforeReadBack:
    """A versioned bucket's first attempt at its ``at``-th batch, cut where chaos
    seed 10105 cut it: a writer overwrites 3 of the batch's keys after the re-list,
    the attempt's one DeleteObjects (no VersionIds: delete markers) lands on top of
    those overwrites, and the node dies before its read-back could undo them. The
    request is sent here with the backend's own client, as the backend sends it to a
    server that honours no delete condition (MinIO; since e97d3c2 a server that honours
    one refuses such a marker): a SIGKILL between that request and the next cannot be
    timed in-process, and this is the state it leaves."""

    def __init__(self, inner: S3Storage, *, at: int, writer: Any, bucket: str,
                 delay: float = 0.0) -> None:
        self.inner, self.at, self.calls = inner, at, 0
        self.writer, self.bucket, self.delay = writer, bucket, delay
        self.overwritten: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def delete_batch(self, entries: Sequence[Entry], *, fence: DeleteFence = no_fence
                     ) -> list[DeleteResult]:
        n, self.calls = self.calls, self.calls + 1
        if n != self.at:
            return self.inner.delete_batch(entries, fence=fence)
        self.overwritten = sorted(e.key for e in entries)[:3]
        for k in self.overwritten:
            self.writer.put_object(Bucket=self.bucket, Key=f"p/{k}", Body=b"new")
        time.sleep(self.delay)
        self.inner.client.delete_objects(Bucket=self.bucket, Delete={
            "Objects": [{"Key": f"p/{e.key}"} for e in entries], "Quiet": False})
        raise Killed


@pytest.mark.parametrize("late", [False, True], ids=["raced", "somebody-else"])
def test_s3_resumed_batch_unhides_an_overwrite_its_dead_attempt_hid(
        journal: RaftJournal, s3_server: Any, s3_bucket: str, late: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos seed 10105 (versioned bucket, noncurrentVersionsMaxAge): the leader placed
    a batch's markers, one on an object overwritten 0.02 s before, and was SIGKILLed
    during the read-back that would have removed that marker. The new leader's resume
    found the key gone and recorded ``already-gone``; the overwrite stayed hidden and
    was later removed for good as a noncurrent version. The resume must remove such a
    marker again and keep the overwrite current. ``late``: the marker came longer
    after the overwrite than an attempt's re-list-to-delete can take (the window is
    shrunk to 1 s here, 60 s in the product): somebody's own delete, left alone."""
    import lethe.storage.s3 as s3mod
    if late:
        monkeypatch.setattr(s3mod, "_RACE_WINDOW", 1.0)
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
    keys = [f"logs/{i:03d}.log" for i in range(30)]
    for k in keys:
        client.put_object(Bucket=s3_bucket, Key=f"p/{k}", Body=b"x" * 50)
    policy = parse_policy({
        "apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": "s3-unhide", "namespace": "test"},
        "spec": {"target": {"s3": {"bucket": s3_bucket, "prefix": "p/",
                                   "endpoint": s3_server.endpoint, "region": "us-east-1",
                                   "forcePathStyle": True}},
                 "rules": {"maxAge": "2s"}, "mode": "Enforce", "batchSize": 10,
                 "safety": {"allowDeleteAll": True}}})
    time.sleep(3.5)  # LastModified has whole seconds: old at the run's clock

    def storage() -> S3Storage:
        return S3Storage(policy.target, access_key=s3_server.access_key,  # type: ignore[arg-type]
                         secret_key=s3_server.secret_key)

    dying = DiesBeforeReadBack(storage(), at=1, writer=client, bucket=s3_bucket,
                               delay=2.5 if late else 0.0)
    with pytest.raises(Killed):
        Runner(policy=policy, storage=dying, journal=journal).run()
    settle(journal)
    hidden = dying.overwritten
    for k in hidden:  # the dead attempt's markers hide the writer's objects
        with pytest.raises(client.exceptions.NoSuchKey):
            client.get_object(Bucket=s3_bucket, Key=f"p/{k}")
    report = Runner(policy=policy, storage=storage(), journal=journal).run()
    r = report.as_dict()
    assert r["resumed"] and r["result"] == "Succeeded", r
    if late:
        for k in hidden:  # not ours by the rule: still hidden, recorded as gone
            with pytest.raises(client.exceptions.NoSuchKey):
                client.get_object(Bucket=s3_bucket, Key=f"p/{k}")
        assert (r["deleted"], r["skipped_changed"]) == (30, 0), r
        return
    for k in hidden:  # current again, with the writer's content
        assert client.get_object(Bucket=s3_bucket, Key=f"p/{k}")["Body"].read() == b"new"
    lines = list(ledger.read_run(storage=storage(), root=policy.ledgerPath,
                                 run_id=report.run_id))
    outcome = {x.key: (x.outcome, x.detail) for x in lines if x.batch == 1}
    for k in hidden:
        assert outcome[k][0] == "changed-skipped" and "removed again (undo)" in outcome[k][1]
    assert {o for k, (o, _d) in outcome.items() if k not in hidden} == {"already-gone"}
    assert Counter(x.key for x in lines) == Counter(keys)
    assert (r["deleted"], r["skipped_changed"]) == (27, 3), r
