"""The chaos checker must be able to fail: one synthetic trial it passes, and for
each property it checks a plant it must catch.

No processes: the POSIX side is a real temporary directory, the S3 side an
:class:`S3State` built by hand (what ``read_s3`` would have read from the bucket
and the proxy's log), the jobs' statuses are dicts. Each plant changes the
clean trial in one way and names the violation kind the checker must report.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos.checker import (
    JobRecord,
    LedgerLine,
    S3State,
    TrialRecord,
    Version,
    WriteOp,
    check,
    md5,
)
from tests.chaos.s3proxy import Request

T = 1_800_000_000.0  # "now" of the synthetic trial
DAY = 86400.0
NS = "chaos-1"


@dataclass
class Trial:
    rec: TrialRecord
    s3: S3State

    @property
    def root(self) -> Path:
        return self.rec.posix_root


def _file(root: Path, key: str, body: bytes, mtime: float) -> str:
    p = root / key
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(body)
    os.utime(p, (mtime, mtime))
    return md5(body)


def _posix_line(run: str, key: str, size: int, outcome: str = "deleted",
                batch: int = 0) -> dict[str, object]:
    return {"run_id": run, "batch": batch, "policy": f"{NS}/posix", "key": key,
            "outcome": outcome, "size": size, "time": T - 50, "fingerprint": "i:s:m"}


def _write_posix_ledger(root: Path, lines: list[dict[str, object]],
                        name: str = "R1/000000.jsonl") -> None:
    f = root / ".lethe" / "ledger" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))


def _s3_line(run: str, key: str, digest: str, outcome: str = "deleted", *,
             rule: str = "maxAge", batch: int = 0) -> LedgerLine:
    return LedgerLine(f"{run}/{batch:06d}.jsonl", {
        "run_id": run, "batch": batch, "policy": f"{NS}/s3", "key": key, "outcome": outcome,
        "size": 10, "time": T - 50, "fingerprint": f'"{digest}":1', "rule": rule})


def _succeeded(run: str, deleted: int, size: int) -> dict[str, object]:
    return {"phase": "Succeeded", "runId": run,
            "counters": {"deleted": deleted, "bytesFreed": size, "skippedChanged": 0,
                         "errors": 0}}


def _delete(key: str, t0: float, *, etag: str | None = None, status: int = 204,
            bucket: str = "b") -> Request:
    return Request(t0=t0, t1=t0 + 0.05, method="DELETE", bucket=bucket, key=key,
                   query={"x-id": "DeleteObject"}, status=status, if_match=etag)


def clean(tmp: Path) -> Trial:
    """A small trial that went right: every property holds."""
    rec = TrialRecord(seed=1, ns=NS, posix_root=tmp / "target", manifest_key="manifest.json",
                      posix_max_age=DAY, s3_bucket="b", s3_prefix="data/", s3_max_age=8.0)
    root = rec.posix_root
    root.mkdir(parents=True)
    # POSIX: an old file the product deleted, a young one a writer overwrote, a kept
    # old one, a future-dated one, and a file a writer created.
    rec.posix_population["d0/old-00001.dat"] = (T - 10 * DAY, md5(b"old"))
    for key, body, mtime in (("d1/young-00001.dat", b"young", T - 3600),
                             ("keep/d0/old-000.dat", b"kept", T - 10 * DAY),
                             ("d0/future-000.dat", b"future", T + 7200)):
        rec.posix_population[key] = (mtime, _file(root, key, body, mtime))
    rec.posix_ops.append(WriteOp("d1/young-00001.dat", "overwrite", T - 30, T - 29.9, True,
                                 _file(root, "d1/young-00001.dat", b"rewritten", T - 30)))
    rec.posix_ops.append(WriteOp("d1/young-00001.dat", "touch", T - 20, T - 19.9, True))
    rec.posix_ops.append(WriteOp("d2/new-w0-00001.dat", "create", T - 10, T - 9.9, True,
                                 _file(root, "d2/new-w0-00001.dat", b"new", T - 10)))
    os.utime(root / "d1/young-00001.dat", (T - 20, T - 20))
    (root / "manifest.json").write_text(json.dumps(
        {"version": 1, "files": ["d1/young-00001.dat", "keep/d0/old-000.dat"]}))
    _write_posix_ledger(root, [_posix_line("R1", "d0/old-00001.dat", 3)])
    (root / ".lethe" / "plans").mkdir(parents=True)
    (root / ".lethe" / "plans" / "R1.jsonl").write_text("{}\n")
    rec.jobs.append(JobRecord("posix-1", "posix", T - 60, _succeeded("R1", 1, 3),
                              _succeeded("R1", 1, 3)))
    # S3: an old object deleted (If-Match), one overwritten young, a kept one, a young one.
    d_old, d_keep, d_young, d_pop2, d_new = (md5(x) for x in (b"o", b"k", b"y", b"p2", b"n"))
    for key, digest, t0 in (("p0/old-00000", d_old, T - 100), ("keep/k-000", d_keep, T - 100),
                            ("p0/old-00001", d_pop2, T - 100), ("p1/young-0000", d_young, T - 3)):
        rec.s3_ops.append(WriteOp(key, "populate", t0, t0 + 0.1, True, digest))
    rec.s3_ops.append(WriteOp("p0/old-00001", "overwrite", T - 5, T - 4.9, True, d_new))
    rec.final_jobs_created["s3"] = T - 2
    rec.jobs.append(JobRecord("s3-1", "s3", T - 60, _succeeded("S1", 1, 10),
                              _succeeded("S1", 1, 10)))
    s3 = S3State(
        objects={"keep/k-000": (d_keep, T - 100, 1), "p0/old-00001": (d_new, T - 5, 1),
                 "p1/young-0000": (d_young, T - 3, 1)},
        ledger=[_s3_line("S1", "p0/old-00000", d_old)],
        plan_runs={"S1"},
        requests=[
            Request(t0=T - 60, t1=T - 59.9, method="GET", bucket="b", key="",
                    query={"list-type": "2", "prefix": "data/"}, status=200),
            _delete("data/.lethe/probe/conditional-delete", T - 59),
            _delete("data/p0/old-00000", T - 50, etag=f'"{d_old}"'),
            _delete("data/p0/old-00001", T - 50, etag=f'"{d_new}"', status=412),
        ])
    return Trial(rec, s3)


def clean_versioned(tmp: Path) -> Trial:
    """The clean trial on a versioned bucket (noncurrentVersionsMaxAge 8 s): p0/old-00000
    expired (marker M1 at T-50), its data version v1 removed as noncurrent at T-30;
    p0/old-00001 overwritten at T-5 (v2 noncurrent, too recently to go); a kept and a
    young object untouched."""
    t = clean(tmp)
    rec = t.rec
    rec.s3_versioned, rec.s3_noncurrent_max_age = True, 8.0
    d_old, d_keep, d_pop2, d_young, d_new = (md5(x) for x in (b"o", b"k", b"p2", b"y", b"n"))
    rec.s3_ops = [WriteOp("p0/old-00000", "populate", T - 100, T - 99.9, True, d_old, "v1"),
                  WriteOp("keep/k-000", "populate", T - 100, T - 99.9, True, d_keep, "vk"),
                  WriteOp("p0/old-00001", "populate", T - 100, T - 99.9, True, d_pop2, "v2"),
                  WriteOp("p1/young-0000", "populate", T - 3, T - 2.9, True, d_young, "vy"),
                  WriteOp("p0/old-00001", "overwrite", T - 5, T - 4.9, True, d_new, "v3")]
    # p3/old-00082 (seed 5008): a marker and the overwrite after it in the same second
    # (LastModified T-40 both), then a marker over the overwrite; v5 removed.
    d5, d6 = md5(b"5"), md5(b"6")
    rec.s3_ops += [WriteOp("p3/old-00082", "populate", T - 100, T - 99.9, True, d5, "v5"),
                   WriteOp("p3/old-00082", "overwrite", T - 39.8, T - 39.7, True, d6, "v6")]
    # p4/old-00811 (seed 10001): a marker raced an overwrite and was removed again (the
    # undo, a changed-skipped line); a later marker hides the overwrite lawfully.
    d7, d8 = md5(b"7"), md5(b"8")
    rec.s3_ops += [WriteOp("p4/old-00811", "populate", T - 100, T - 99.9, True, d7, "v7"),
                   WriteOp("p4/old-00811", "overwrite", T - 30, T - 29.9, True, d8, "v8")]
    done = {**_succeeded("S1", 7, 70)}
    done["counters"] = {**done["counters"], "skippedChanged": 1}  # type: ignore[dict-item]
    rec.jobs[1] = JobRecord("s3-1", "s3", T - 60, done, dict(done))
    t.s3 = S3State(
        objects={"keep/k-000": (d_keep, T - 100, 1), "p0/old-00001": (d_new, T - 5, 1),
                 "p1/young-0000": (d_young, T - 3, 1)},
        ledger=[_s3_line("S1", "p0/old-00000", d_old),
                _s3_line("S1", "p0/old-00000", d_old, rule="noncurrentVersionsMaxAge",
                         batch=1),
                _s3_line("S1", "p3/old-00082", d5, batch=2),
                _s3_line("S1", "p3/old-00082", d6, batch=3),
                _s3_line("S1", "p3/old-00082", d5, rule="noncurrentVersionsMaxAge",
                         batch=4),
                _s3_line("S1", "p4/old-00811", d7, "changed-skipped", batch=5),
                _s3_line("S1", "p4/old-00811", d8, batch=6),
                _s3_line("S1", "p4/old-00811", d7, rule="noncurrentVersionsMaxAge",
                         batch=7)],
        plan_runs={"S1"},
        requests=[
            Request(t0=T - 50, t1=T - 49.9, method="POST", bucket="b", key="",
                    query={"delete": ""}, status=200,
                    objects=[{"key": "data/p0/old-00000", "etag": None, "version": None}],
                    deleted=["data/p0/old-00000"], markers=[["data/p0/old-00000", "M1"]]),
            Request(t0=T - 30, t1=T - 29.9, method="DELETE", bucket="b",
                    key="data/p0/old-00000", query={"versionId": "v1"}, status=204),
            Request(t0=T - 40, t1=T - 39.9, method="DELETE", bucket="b",
                    key="data/p3/old-00082", query={}, status=204,
                    markers=[["data/p3/old-00082", "Ma"]]),
            Request(t0=T - 8, t1=T - 7.9, method="DELETE", bucket="b",
                    key="data/p3/old-00082", query={}, status=204,
                    markers=[["data/p3/old-00082", "Mb"]]),
            Request(t0=T - 7, t1=T - 6.9, method="DELETE", bucket="b",
                    key="data/p3/old-00082", query={"versionId": "v5"}, status=204),
            Request(t0=T - 29.5, t1=T - 29.4, method="DELETE", bucket="b",
                    key="data/p4/old-00811", query={}, status=204,
                    markers=[["data/p4/old-00811", "Mc"]]),
            Request(t0=T - 28, t1=T - 27.9, method="DELETE", bucket="b",
                    key="data/p4/old-00811", query={"versionId": "Mc"}, status=204),
            Request(t0=T - 6, t1=T - 5.9, method="DELETE", bucket="b",
                    key="data/p4/old-00811", query={}, status=204,
                    markers=[["data/p4/old-00811", "Md"]]),
            Request(t0=T - 5, t1=T - 4.9, method="DELETE", bucket="b",
                    key="data/p4/old-00811", query={"versionId": "v7"}, status=204),
        ],
        versions=[Version("p0/old-00000", "M1", None, True, T - 50),
                  Version("keep/k-000", "vk", d_keep, True, T - 100),
                  Version("p0/old-00001", "v2", d_pop2, False, T - 100),
                  Version("p0/old-00001", "v3", d_new, True, T - 5),
                  Version("p1/young-0000", "vy", d_young, True, T - 3),
                  Version("p3/old-00082", "v6", d6, False, T - 40),
                  Version("p3/old-00082", "Ma", None, False, T - 40),
                  Version("p3/old-00082", "Mb", None, True, T - 8),
                  Version("p4/old-00811", "v8", d8, False, T - 30),
                  Version("p4/old-00811", "Md", None, True, T - 6)])
    return t


def _kinds(t: Trial) -> set[str]:
    return {v.kind for v in check(t.rec, s3=t.s3, now=T).violations}


def test_clean_trial_passes(tmp_path: Path) -> None:
    v = check((t := clean(tmp_path)).rec, s3=t.s3, now=T)
    assert v.violations == []
    assert v.stats["s3_delete_requests"] == 2  # the probe's and p0/old-00000's


def test_clean_versioned_trial_passes(tmp_path: Path) -> None:
    v = check((t := clean_versioned(tmp_path)).rec, s3=t.s3, now=T)
    assert v.violations == []
    assert (v.stats["s3_delete_requests"], v.stats["s3_markers"]) == (9, 5)


# -- one plant per property: (name, expected kind, plant) ------------------------------

Plant = Callable[[Trial], None]
PLANTS: list[tuple[str, str, Plant]] = []


def plant(name: str, kind: str) -> Callable[[Plant], Plant]:
    def add(fn: Plant) -> Plant:
        PLANTS.append((name, kind, fn))
        return fn
    return add


def _young(t: Trial) -> str:
    return next(o.digest or "" for o in t.rec.s3_ops if o.key == "p1/young-0000")


# 1. POSIX: no wrongful deletion.
@plant("posix file a writer wrote is gone", "deleted-after-write")
def _(t: Trial) -> None:
    (t.root / "d2/new-w0-00001.dat").unlink()


@plant("posix file lost its last write", "content-changed")
def _(t: Trial) -> None:
    (t.root / "d1/young-00001.dat").write_bytes(b"something else")


@plant("posix future-dated file deleted", "deleted-ineligible")
def _(t: Trial) -> None:
    (t.root / "d0/future-000.dat").unlink()


@plant("posix excluded old file deleted", "deleted-ineligible")
def _(t: Trial) -> None:
    (t.root / "keep/d0/old-000.dat").unlink()
    doc = json.loads((t.root / "manifest.json").read_text())
    doc["files"].remove("keep/d0/old-000.dat")
    (t.root / "manifest.json").write_text(json.dumps(doc))


@plant("posix file no one wrote", "unknown-file")
def _(t: Trial) -> None:
    _file(t.root, "d3/stray.dat", b"?", T - 10)


def _kept(t: Trial, body: bytes) -> None:
    """A quarantined file kept beside its re-created original (posix _restore), and
    the run's error line that names it (seed 10529)."""
    key, tmp = "d1/young-00001.dat", ".lethe-del-0123456789abcdef0123"
    _file(t.root, f"d1/{tmp}", body, T - 3600)
    line = _posix_line("R1", key, len(body), outcome="error", batch=1)
    line["detail"] = (f"fingerprint a != b; {key} was re-created meanwhile, the old file "
                      f"is kept as {tmp} beside it")
    _write_posix_ledger(t.root, [line], name="R1/000001.jsonl")
    job = t.rec.jobs[0]
    for st in (job.status_first, job.status_second):
        st["counters"]["errors"] = 1



@plant("posix kept quarantine file holds content no one wrote", "kept-unknown-content")
def _(t: Trial) -> None:
    _kept(t, b"nobody wrote this")


# 2. convergence.
@plant("posix eligible file left", "not-converged")
def _(t: Trial) -> None:
    t.rec.posix_population["d4/old-00009.dat"] = (
        T - 5 * DAY, _file(t.root, "d4/old-00009.dat", b"left", T - 5 * DAY))


@plant("s3 eligible object left", "not-converged")
def _(t: Trial) -> None:
    t.rec.s3_ops.append(WriteOp("p2/old-00009", "populate", T - 100, T - 99.9, True, md5(b"l")))
    t.s3.objects["p2/old-00009"] = (md5(b"l"), T - 100, 1)


# 3. manifest.
@plant("final manifest references a missing file", "manifest-dangling")
def _(t: Trial) -> None:
    (t.root / "manifest.json").write_text(json.dumps({"files": ["d0/old-00001.dat"]}))


@plant("consumer saw a dangling reference", "manifest-dangling-live")
def _(t: Trial) -> None:
    t.rec.consumer_violations.append("d0/old-00001.dat was missing and then referenced")


# 4. ledger exactly once.
@plant("posix removal line for a file that exists", "ledger-says-removed")
def _(t: Trial) -> None:
    _write_posix_ledger(t.root, [_posix_line("R1", "d1/young-00001.dat", 5)],
                        "R1/000001.jsonl")


@plant("posix file removed twice in the ledger", "ledger-count")
def _(t: Trial) -> None:
    _write_posix_ledger(t.root, [_posix_line("R1", "d0/old-00001.dat", 3, "already-gone",
                                             batch=1)], "R1/000001.jsonl")


@plant("posix gone file with no ledger line", "ledger-count")
def _(t: Trial) -> None:
    _write_posix_ledger(t.root, [])


@plant("posix ledger names a key never written", "ledger-unknown-key")
def _(t: Trial) -> None:
    _write_posix_ledger(t.root, [_posix_line("R1", "d9/never.dat", 1, batch=1)],
                        "R1/000001.jsonl")


@plant("ledger line filed under another batch", "ledger-misfiled")
def _(t: Trial) -> None:
    _write_posix_ledger(t.root, [_posix_line("R1", "d0/old-00001.dat", 3, batch=7)])


@plant("ledger line of another policy", "ledger-policy")
def _(t: Trial) -> None:
    t.s3.ledger[0].data["policy"] = f"{NS}/other"


@plant("ledger outcome unknown", "ledger-outcome")
def _(t: Trial) -> None:
    t.s3.ledger[0].data["outcome"] = "vanished"


@plant("s3 removal line for an object that exists", "ledger-says-removed")
def _(t: Trial) -> None:
    t.s3.ledger.append(_s3_line("S1", "p1/young-0000", _young(t)))


@plant("s3 version removed twice in the ledger", "ledger-count")
def _(t: Trial) -> None:
    t.s3.ledger.append(_s3_line("S1", "p0/old-00000", t.s3.ledger[0].data["fingerprint"]
                                .split(":")[0].strip('"'), "already-gone"))


@plant("s3 ledger names a version never written", "ledger-unknown-version")
def _(t: Trial) -> None:
    t.s3.ledger.append(_s3_line("S1", "p0/old-00000", md5(b"never"), "changed-skipped"))


# 5. each CleanupJob once.
@plant("job failed", "job-not-succeeded")
def _(t: Trial) -> None:
    t.rec.jobs[0].status_first["phase"] = "Failed"
    t.rec.jobs[0].status_second["phase"] = "Failed"


@plant("job without a run id", "job-no-run-id")
def _(t: Trial) -> None:
    del t.rec.jobs[1].status_first["runId"]


@plant("job's run id moved between reads", "job-status-moved")
def _(t: Trial) -> None:
    t.rec.jobs[0].status_second["runId"] = "R2"


@plant("two jobs share a run", "job-run-shared")
def _(t: Trial) -> None:
    t.rec.jobs.append(JobRecord("posix-2", "posix", T - 30, _succeeded("R1", 1, 3),
                                _succeeded("R1", 1, 3)))


@plant("a run no job asked for", "run-without-job")
def _(t: Trial) -> None:
    (t.root / ".lethe" / "plans" / "R9.jsonl").write_text("{}\n")


# 6. counters.
@plant("job counters disagree with the ledger", "counters")
def _(t: Trial) -> None:
    t.rec.jobs[1].status_first["counters"]["deleted"] = 2


# 1. S3: every delete the proxy saw, whatever the ledger says.
@plant("s3 young object deleted, ledger silent", "s3-deleted-too-young")
def _(t: Trial) -> None:
    t.s3.requests.append(_delete("data/p1/young-0000", T - 1))
    del t.s3.objects["p1/young-0000"]


@plant("s3 delete racing the write it removed", "s3-deleted-too-young")
def _(t: Trial) -> None:
    # arrived just before the PUT began, answered after: 1a cannot see it, 1b must
    t.s3.requests.append(_delete("data/p1/young-0000", T - 3.02))
    del t.s3.objects["p1/young-0000"]


@plant("s3 overwritten object deleted by an old ETag (server ignored it)",
       "s3-deleted-too-young")
def _(t: Trial) -> None:
    old = next(o.digest for o in t.rec.s3_ops if o.key == "p0/old-00001" and o.op == "populate")
    t.s3.requests.append(_delete("data/p0/old-00001", T - 2, etag=f'"{old}"'))
    del t.s3.objects["p0/old-00001"]


@plant("s3 young version asked for (DeleteObjects)", "s3-delete-asked-young")
def _(t: Trial) -> None:
    y = _young(t)
    t.s3.requests.append(Request(
        t0=T - 2.5, t1=T - 2.4, method="POST", bucket="b", key="", query={"delete": ""},
        status=200, objects=[{"key": "data/p1/young-0000", "etag": f'"{y}"', "version": None}],
        deleted=["data/p1/young-0000"]))
    del t.s3.objects["p1/young-0000"]


@plant("s3 delete of an excluded key", "s3-delete-excluded")
def _(t: Trial) -> None:
    t.s3.requests.append(_delete("data/keep/k-000", T - 20))
    del t.s3.objects["keep/k-000"]


@plant("s3 delete outside the target", "s3-delete-outside-target")
def _(t: Trial) -> None:
    t.s3.requests.append(_delete("other/x", T - 20))


@plant("s3 delete in another bucket", "s3-delete-outside-target")
def _(t: Trial) -> None:
    t.s3.requests.append(_delete("data/p0/old-00000", T - 20, bucket="elsewhere"))


@plant("s3 delete of a key never written", "s3-delete-unknown-key")
def _(t: Trial) -> None:
    t.s3.requests.append(_delete("data/p9/never", T - 20))


@plant("s3 delete asking for a version never written", "s3-delete-unknown-version")
def _(t: Trial) -> None:
    t.s3.requests.append(_delete("data/p0/old-00001", T - 20, etag=f'"{md5(b"x")}"'))


@plant("s3 object gone with no delete request", "s3-write-lost")
def _(t: Trial) -> None:
    del t.s3.objects["p0/old-00001"]


@plant("s3 object's content replaced", "s3-write-replaced")
def _(t: Trial) -> None:
    t.s3.objects["p1/young-0000"] = (md5(b"intruder"), T - 1, 1)


@plant("replicas bypassed the proxy", "s3-unobserved")
def _(t: Trial) -> None:
    t.s3.requests.clear()


# 5. scheduled runs.
@plant("a slot started two runs", "slot-run-twice")
def _(t: Trial) -> None:
    t.rec.scheduled["posix"] = {"R2": {"2026-01-01T00:01:00Z"}, "R3": {"2026-01-01T00:01:00Z"}}
    for rid in ("R2", "R3"):
        (t.root / ".lethe" / "plans" / f"{rid}.jsonl").write_text("{}\n")


@plant("a job reports a scheduled run as its own", "job-run-shared")
def _(t: Trial) -> None:
    t.rec.scheduled["posix"] = {"R1": {"2026-01-01T00:01:00Z"}}


# Versioned buckets (clean_versioned).
VPLANTS: list[tuple[str, str, Plant]] = []


def vplant(name: str, kind: str) -> Callable[[Plant], Plant]:
    def add(fn: Plant) -> Plant:
        VPLANTS.append((name, kind, fn))
        return fn
    return add


def _versions(t: Trial, key: str) -> dict[str, Version]:
    return {x.version: x for x in t.s3.versions if x.key == key}


@vplant("current version deleted by VersionId", "s3-deleted-current-version")
def _(t: Trial) -> None:
    t.s3.requests.append(Request(t0=T - 1, t1=T - 0.9, method="DELETE", bucket="b",
                                 key="data/p0/old-00001", query={"versionId": "v3"},
                                 status=204))
    t.s3.versions.remove(_versions(t, "p0/old-00001")["v3"])
    _versions(t, "p0/old-00001")["v2"].latest = True


@vplant("noncurrent version removed too soon", "s3-noncurrent-too-young")
def _(t: Trial) -> None:
    t.s3.requests.append(Request(t0=T - 2, t1=T - 1.9, method="DELETE", bucket="b",
                                 key="data/p0/old-00001", query={"versionId": "v2"},
                                 status=204))
    t.s3.versions.remove(_versions(t, "p0/old-00001")["v2"])


@vplant("version gone with no request", "s3-version-lost")
def _(t: Trial) -> None:
    t.s3.versions.remove(_versions(t, "p0/old-00001")["v2"])


@vplant("older version current again", "s3-resurrected")
def _(t: Trial) -> None:
    vs = _versions(t, "p0/old-00001")
    vs["v2"].latest, vs["v3"].latest = True, False


@vplant("key hidden by a marker nobody placed", "s3-marker-unknown")
def _(t: Trial) -> None:
    _versions(t, "p1/young-0000")["vy"].latest = False
    t.s3.versions.append(Version("p1/young-0000", "M9", None, True, T - 1))


@vplant("young write hidden by a marker", "s3-hidden-too-young")
def _(t: Trial) -> None:
    _versions(t, "p1/young-0000")["vy"].latest = False
    t.s3.versions.append(Version("p1/young-0000", "M9", None, True, T - 1))
    t.s3.requests.append(Request(t0=T - 1, t1=T - 0.9, method="DELETE", bucket="b",
                                 key="data/p1/young-0000", query={}, status=204,
                                 markers=[["data/p1/young-0000", "M9"]]))


@vplant("eligible current version left", "not-converged")
def _(t: Trial) -> None:
    t.rec.s3_ops.append(WriteOp("p2/old-00009", "populate", T - 100, T - 99.9, True,
                                md5(b"l"), "v9"))
    t.s3.versions.append(Version("p2/old-00009", "v9", md5(b"l"), True, T - 100))


@vplant("expired noncurrent version left", "not-converged")
def _(t: Trial) -> None:
    t.s3.requests.pop()  # v1's removal never happened
    t.s3.ledger.pop()
    t.s3.versions.append(Version("p0/old-00000", "v1", md5(b"o"), False, T - 100))


@vplant("marker placed twice on one version in the ledger", "ledger-count")
def _(t: Trial) -> None:
    t.s3.ledger.append(_s3_line("S1", "p0/old-00000", md5(b"o"), batch=2))


@vplant("noncurrent version removed, ledger silent", "ledger-count")
def _(t: Trial) -> None:
    t.s3.ledger.pop()


@vplant("marker placed, no ledger line", "marker-unledgered")
def _(t: Trial) -> None:
    t.s3.ledger.pop(2)  # p3/old-00082's first placement


@vplant("removal line for a version still listed", "ledger-says-removed")
def _(t: Trial) -> None:
    t.s3.ledger.append(_s3_line("S1", "p0/old-00001", md5(b"p2"),
                                rule="noncurrentVersionsMaxAge", batch=2))


@vplant("ledger names a version never written", "ledger-unknown-version")
def _(t: Trial) -> None:
    t.s3.ledger.append(_s3_line("S1", "p0/old-00001", md5(b"never"), batch=2))


@vplant("delete of an excluded key", "s3-delete-excluded")
def _(t: Trial) -> None:
    t.s3.requests.append(Request(t0=T - 1, t1=T - 0.9, method="DELETE", bucket="b",
                                 key="data/keep/k-000", query={}, status=204,
                                 markers=[["data/keep/k-000", "M8"]]))


def _same_second_marker(t: Trial, *, next_marker_at: float) -> None:
    """Seed 16021 on p5/old-00421: overwrite vB, then marker Me 0.25 s later in the
    same LastModified second (placed for vA), vA removed as noncurrent, and marker Mf
    (the latest) over vB at ``next_marker_at``."""
    k, da, db = "p5/old-00421", md5(b"A"), md5(b"B")
    t.rec.s3_ops += [WriteOp(k, "populate", T - 100, T - 99.9, True, da, "vA"),
                     WriteOp(k, "overwrite", T - 20.4, T - 20.1, True, db, "vB")]
    t.s3.requests += [
        Request(t0=T - 20.3, t1=T - 20.05, method="DELETE", bucket="b", key=f"data/{k}",
                query={}, status=204, markers=[[f"data/{k}", "Me"]]),
        Request(t0=T - 9, t1=T - 8.9, method="DELETE", bucket="b", key=f"data/{k}",
                query={"versionId": "vA"}, status=204),
        Request(t0=next_marker_at, t1=next_marker_at + 0.05, method="DELETE", bucket="b",
                key=f"data/{k}", query={}, status=204, markers=[[f"data/{k}", "Mf"]])]
    t.s3.ledger += [_s3_line("S1", k, da, batch=8), _s3_line("S1", k, db, batch=9),
                    _s3_line("S1", k, da, rule="noncurrentVersionsMaxAge", batch=10)]
    t.s3.versions += [Version(k, "vB", db, False, T - 21), Version(k, "Me", None, False, T - 21),
                      Version(k, "Mf", None, True, float(int(next_marker_at)))]
    done = _succeeded("S1", 10, 100)
    done["counters"] = {**done["counters"], "skippedChanged": 1}  # type: ignore[dict-item]
    t.rec.jobs[1] = JobRecord("s3-1", "s3", T - 60, done, dict(done))


def test_a_marker_in_the_versions_second_is_not_its_successor(tmp_path: Path) -> None:
    """Seed 16021: the listing cannot tell that Me is newer than vB (same second), so
    vB counts as noncurrent from Mf (6 s before the end: too recent to go), not from
    Me; but an Mf old enough still makes a left vB not converged."""
    t = clean_versioned(tmp_path / "recent")
    _same_second_marker(t, next_marker_at=T - 6)
    assert _kinds(t) == set()
    t = clean_versioned(tmp_path / "old")
    _same_second_marker(t, next_marker_at=T - 13)
    assert "not-converged" in _kinds(t)


@pytest.mark.parametrize(("name", "kind", "fn"), PLANTS, ids=[p[0] for p in PLANTS])
def test_checker_catches(tmp_path: Path, name: str, kind: str, fn: Plant) -> None:
    t = clean(tmp_path)
    fn(t)
    got = _kinds(t)
    assert kind in got, f"planted {name!r}: expected {kind}, checker said {sorted(got)}"


@pytest.mark.parametrize(("name", "kind", "fn"), VPLANTS, ids=[p[0] for p in VPLANTS])
def test_checker_catches_on_versioned_buckets(tmp_path: Path, name: str, kind: str,
                                              fn: Plant) -> None:
    t = clean_versioned(tmp_path)
    fn(t)
    got = _kinds(t)
    assert kind in got, f"planted {name!r}: expected {kind}, checker said {sorted(got)}"


def test_every_kind_is_planted() -> None:
    """Every violation kind checker.py can report has a plant above."""
    src = (Path(__file__).parent / "checker.py").read_text()
    reported = set(re.findall(r'v\.add\(\d, "([a-z0-9-]+)"', src))
    planted = {k for _n, k, _f in PLANTS + VPLANTS}
    assert reported - planted == set(), f"kinds with no plant: {sorted(reported - planted)}"


def test_a_kept_quarantine_file_holding_a_written_version_is_accounted_for(
        tmp_path: Path) -> None:
    t = clean(tmp_path)
    _kept(t, b"young")  # the key's populated version, which a writer then overwrote
    assert check(t.rec, s3=t.s3, now=T).violations == []

