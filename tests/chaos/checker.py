"""The independent checker: verdicts from storage, ledgers, manifest and CR status.

It shares no code with the operator (no ``lethe`` import at all): it reads the
directory with ``os``, the bucket with boto3, the ledgers and plans as JSON
Lines, and re-implements the one eligibility rule the trials use: an object is
eligible when it is *selected* (not under ``.lethe/``, not the manifest, no
path component named ``keep``) and its mtime is at least ``max_age`` before
now and not in the future.

What the trial hands over (:class:`TrialRecord`) is what the test itself
did: every population object and every writer operation with its wall-clock
interval and content hash, the jobs it created, and what the consumer thread
saw. Definitions (numbers match the issue):

1. **No wrongful deletion.** POSIX (maxAge 1d, so nothing a writer touched can
   become eligible during a trial): every key a writer wrote, overwrote or
   touched exists at the end with the content of its last write; every
   population key that is gone was eligible (old, selected). S3 (maxAge of a
   few seconds, so eligibility is a function of time), decided from the
   recording proxy's log (s3proxy.py) and the test's own record of every PUT,
   never from the ledger: every DeleteObject(s) that succeeded names a key
   under the prefix, selected (no ``keep`` component), that the test wrote;
   the version it asks for (``If-Match``/ETag) and the version the server
   held when the request arrived (at least the last PUT completed before it)
   were both written more than ``max_age - 1 s`` before the request arrived;
   and every key's last written version is still there or was removed by a
   delete request sent more than ``max_age - 1 s`` after that write began.
   The 1 s is exact, not slop: the product's clock (the server's ``Date``
   header) and S3 LastModified are both whole seconds, truncated, so a
   correct delete of a version whose write began at ``t0`` arrives after
   ``t0 + max_age - 1``.
2. **Convergence.** After the final CleanupJob (writers stopped, all replicas
   healthy), no object that is eligible by the rule above remains (S3: eligible
   when the final job was created).
3. **Manifest.** The final manifest references only existing files, and the
   consumer thread never saw, during the trial, a manifest referencing a file
   it had already seen missing before reading that manifest.
4. **Ledger exactly once.** Per key version, across all runs of the policy:
   exactly one line with outcome ``deleted`` or ``already-gone`` if it is gone,
   none if it exists (POSIX paths are never recreated by the writers, so a key
   is a version there); on S3 every line names a version the test wrote.
   Every line sits in ``<run_id>/<seq>.jsonl`` matching its own ``run_id``
   and ``batch``, and names the policy.
5. **Each CleanupJob executed exactly once.** Every job ends ``Succeeded``
   with a ``runId`` that is the same in two reads at least 3 s apart and
   differs from every other job's; every run id in the target's ledgers and
   plans belongs to one of the policy's jobs or to a scheduled run
   (``TrialRecord.scheduled``, from the replicas' logs); no slot started two
   runs that ran, and no job reports a scheduled run as its own.
6. **Counters.** A job's ``status.counters`` equal the counts of its run's
   ledger lines: ``deleted`` = lines deleted|already-gone, ``bytesFreed`` =
   their sizes, ``skippedChanged`` = changed-skipped and gone-or-replaced lines,
   ``errors`` = error lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.s3proxy import Request, read_log

REMOVED = ("deleted", "already-gone")
#: What status counts as skippedChanged: gone-or-replaced is a key of a resumed batch
#: whose object differs and that an earlier attempt may have deleted (issue #17).
SKIPPED = ("changed-skipped", "gone-or-replaced")
S3_SLOP = 2.0  # convergence: S3 LastModified and Date have 1 s resolution
#: Check 1 on S3: the product's clock and LastModified are whole seconds, truncated.
S3_CLOCK_SLOP = 1.0


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass
class WriteOp:
    key: str
    op: str  # create | overwrite | touch | populate (S3 population)
    t0: float
    t1: float
    ok: bool
    digest: str | None = None  # md5 of the new content (None for touch)
    version: str | None = None  # S3 VersionId the PUT's response named (versioned buckets)


@dataclass
class JobRecord:
    name: str
    policy: str  # posix | s3
    created: float
    status_first: dict[str, Any] = field(default_factory=dict)
    status_second: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialRecord:
    seed: int
    ns: str
    posix_root: Path
    manifest_key: str
    posix_max_age: float
    s3_bucket: str
    s3_prefix: str
    s3_max_age: float
    #: POSIX population: key -> (mtime, md5)
    posix_population: dict[str, tuple[float, str]] = field(default_factory=dict)
    posix_ops: list[WriteOp] = field(default_factory=list)
    #: every S3 PUT the test made, ok or not (the population's are op "populate")
    s3_ops: list[WriteOp] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    final_jobs_created: dict[str, float] = field(default_factory=dict)
    consumer_violations: list[str] = field(default_factory=list)
    consumer_checks: int = 0
    #: Versioned bucket, and the policy's noncurrentVersionsMaxAge (seconds).
    s3_versioned: bool = False
    s3_noncurrent_max_age: float = 0.0
    #: Scheduled runs, from the replicas' logs: policy -> run id -> slots it served.
    scheduled: dict[str, dict[str, set[str]]] = field(default_factory=dict)


@dataclass
class Violation:
    check: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.kind}: {self.detail}"


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def add(self, check: int, kind: str, detail: str) -> None:
        self.violations.append(Violation(check, kind, detail))


def selected(key: str, manifest_key: str | None) -> bool:
    parts = key.split("/")
    return not (key.startswith(".lethe/") or key == manifest_key or "keep" in parts[:-1])


def eligible(key: str, mtime: float, *, now: float, max_age: float,
             manifest_key: str | None) -> bool:
    return selected(key, manifest_key) and mtime <= now - max_age and mtime <= now + 60


# -- reading storage --------------------------------------------------------------------


def _posix_state(root: Path) -> dict[str, os.stat_result]:
    out: dict[str, os.stat_result] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".lethe" or rel.startswith(".lethe" + os.sep):
            dirnames[:] = []
            continue
        for f in filenames:
            key = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
            out[key] = os.stat(os.path.join(dirpath, f), follow_symlinks=False)
    return out


@dataclass
class LedgerLine:
    where: str
    data: dict[str, Any]


def _parse_lines(where: str, body: str) -> Iterable[LedgerLine]:
    for raw in body.splitlines():
        if raw.strip():
            yield LedgerLine(where, json.loads(raw))


def posix_ledger(root: Path) -> list[LedgerLine]:
    base = root / ".lethe" / "ledger"
    out: list[LedgerLine] = []
    for f in sorted(base.rglob("*.jsonl")) if base.exists() else []:
        out += _parse_lines(str(f.relative_to(base)), f.read_text())
    return out


def posix_plan_runs(root: Path) -> set[str]:
    base = root / ".lethe" / "plans"
    return {f.stem for f in base.rglob("*.jsonl")} if base.exists() else set()


def s3_ledger(client: Any, bucket: str, prefix: str) -> list[LedgerLine]:
    lp = f"{prefix}.lethe/ledger/"
    out: list[LedgerLine] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=lp):
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
            out += _parse_lines(o["Key"][len(lp):], body)
    return out


def s3_objects(client: Any, bucket: str, prefix: str) -> dict[str, tuple[str, float, int]]:
    """Current objects under ``prefix`` (not .lethe/): key -> (md5, LastModified, size)."""
    out: dict[str, tuple[str, float, int]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            key = o["Key"][len(prefix):]
            if key.startswith(".lethe/"):
                continue
            out[key] = (o["ETag"].strip('"'), o["LastModified"].timestamp(), o["Size"])
    return out


# -- the checks -------------------------------------------------------------------------


def _check_ledger_shape(v: Verdict, lines: list[LedgerLine], policy: str) -> None:
    for ln in lines:
        d = ln.data
        run_dir, _, fname = ln.where.rpartition("/")
        if run_dir != d.get("run_id") or fname != f"{int(d.get('batch', -1)):06d}.jsonl":
            v.add(4, "ledger-misfiled", f"{ln.where}: run_id={d.get('run_id')} "
                  f"batch={d.get('batch')}")
        if d.get("policy") != policy:
            v.add(4, "ledger-policy", f"{ln.where}: policy {d.get('policy')} != {policy}")
        if d.get("outcome") not in (*REMOVED, *SKIPPED, "locked", "error"):
            v.add(4, "ledger-outcome", f"{ln.where}: {d.get('outcome')}")


def _check_jobs(v: Verdict, rec: TrialRecord, policy: str, lines: list[LedgerLine],
                plan_runs: set[str]) -> None:
    jobs = [j for j in rec.jobs if j.policy == policy]
    run_ids: dict[str, str] = {}
    for j in jobs:
        a, b = j.status_first, j.status_second
        rid = a.get("runId")
        if a.get("phase") != "Succeeded":
            v.add(5, "job-not-succeeded", f"{j.name}: phase {a.get('phase')!r} "
                  f"conditions {a.get('conditions')}")
        if not rid:
            v.add(5, "job-no-run-id", f"{j.name}: {a}")
            continue
        if b.get("runId") != rid or b.get("phase") != a.get("phase"):
            v.add(5, "job-status-moved", f"{j.name}: {rid}/{a.get('phase')} then "
                  f"{b.get('runId')}/{b.get('phase')}")
        if rid in run_ids:
            v.add(5, "job-run-shared", f"{j.name} and {run_ids[rid]} share run {rid}")
        run_ids[rid] = j.name
        mine = [ln.data for ln in lines if ln.data.get("run_id") == rid]
        want = {"deleted": sum(1 for d in mine if d["outcome"] in REMOVED),
                "bytesFreed": sum(int(d["size"]) for d in mine if d["outcome"] in REMOVED),
                "skippedChanged": sum(1 for d in mine if d["outcome"] in SKIPPED),
                "errors": sum(1 for d in mine if d["outcome"] == "error")}
        got = {k: int((a.get("counters") or {}).get(k, 0)) for k in want}
        if got != want:
            v.add(6, "counters", f"{j.name} run {rid}: status {got} != ledger {want}")
        if want["errors"]:
            v.notes.append(f"{policy} run {rid}: {want['errors']} error lines: "
                           + "; ".join(sorted({d.get('detail', '') for d in mine
                                               if d['outcome'] == 'error'})[:3]))
    scheduled = rec.scheduled.get(policy, {})
    ran = {ln.data.get("run_id", "") for ln in lines} | plan_runs
    for rid in sorted(ran):
        if rid not in run_ids and rid not in scheduled:
            v.add(5, "run-without-job", f"{policy}: run {rid} in ledgers/plans belongs to "
                  f"no CleanupJob (jobs: {sorted(run_ids)}) and no scheduled slot")
    # Each slot runs at most once (as a CronJob's slot does; the journal's SkipSlot and
    # BeginRun CAS are what the product relies on), whatever failed over meanwhile.
    by_slot: dict[str, set[str]] = defaultdict(set)
    for rid, slots in scheduled.items():
        if rid not in ran:
            continue  # logged as starting, but its BeginRun never committed
        for slot in slots:
            by_slot[slot].add(rid)
        if rid in run_ids:
            v.add(5, "job-run-shared", f"{run_ids[rid]} reports scheduled run {rid} "
                  f"(slot {sorted(slots)}) as its own")
    for slot, rids in sorted(by_slot.items()):
        if len(rids) > 1:
            v.add(5, "slot-run-twice", f"{policy}: slot {slot} started runs {sorted(rids)}")
    v.stats[f"{policy}_scheduled_runs"] = len(set(scheduled) & ran)


_KEPT = re.compile(r"the old file is kept as (\S+) beside it")


def _kept_beside(v: Verdict, lines: list[LedgerLine], rec: TrialRecord,
                 contents: dict[str, str]) -> set[str]:
    """Quarantined files kept under their quarantine name because a writer re-created
    the original name before it could be given back (posix ``_restore``; the run's
    ``error`` line names them). Accounted for when the file holds a version someone
    wrote of that key: nothing was lost, and the ledger says where it is."""
    versions: defaultdict[str, set[str]] = defaultdict(set)
    for key, (_mtime, digest) in rec.posix_population.items():
        versions[key].add(digest)
    for op in rec.posix_ops:
        if op.ok and op.digest is not None:
            versions[op.key].add(op.digest)
    kept: set[str] = set()
    for ln in lines:
        d = ln.data
        m = _KEPT.search(str(d.get("detail", ""))) if d.get("outcome") == "error" else None
        if m is None:
            continue
        tmp = os.path.join(os.path.dirname(d["key"]), m[1])
        if tmp not in contents:
            continue  # removed since (a later run, or a person): not a leftover
        if contents[tmp] in versions[d["key"]]:
            kept.add(tmp)
        else:
            v.add(1, "kept-unknown-content", f"posix {tmp}, kept for {d['key']} by run "
                  f"{d.get('run_id')}, holds content {contents[tmp]} no one wrote there")
            kept.add(tmp)
    return kept


def check_posix(v: Verdict, rec: TrialRecord, *, now: float) -> None:
    root, mkey = rec.posix_root, rec.manifest_key
    state = _posix_state(root)
    contents = {k: md5((root / k).read_bytes()) for k in state if k != mkey}
    lines = posix_ledger(root)
    _check_ledger_shape(v, lines, policy=f"{rec.ns}/posix")
    removed: Counter[str] = Counter(ln.data["key"] for ln in lines
                                    if ln.data.get("outcome") in REMOVED)
    # 1. writes survive with their last content.
    last_content: dict[str, str] = {}
    written: dict[str, WriteOp] = {}
    for op in sorted(rec.posix_ops, key=lambda o: o.t0):
        if not op.ok:
            continue
        written[op.key] = op
        if op.digest is not None:
            last_content[op.key] = op.digest
    for key, op in written.items():
        want = last_content.get(key) or rec.posix_population.get(key, (0.0, ""))[1]
        if key not in state:
            when = [(d["outcome"], d["run_id"], d["batch"], round(d["time"], 3))
                    for d in (ln.data for ln in lines) if d["key"] == key]
            v.add(1, "deleted-after-write",
                  f"posix {key}: last {op.op} at {op.t0:.3f}-{op.t1:.3f} yet it is gone; "
                  f"ledger: {when}")
        elif contents.get(key) != want:
            v.add(1, "content-changed", f"posix {key}: content {contents.get(key)} != last "
                  f"write {want}")
    for key, (mtime, _d) in rec.posix_population.items():
        if key in state or key in written:
            continue
        if not eligible(key, mtime, now=now, max_age=rec.posix_max_age, manifest_key=mkey):
            v.add(1, "deleted-ineligible", f"posix {key}: mtime {mtime:.0f} "
                  f"(age {(now - mtime) / 86400:.2f} d) was never eligible, yet it is gone")
    known = set(rec.posix_population) | {op.key for op in rec.posix_ops if op.ok}
    known |= _kept_beside(v, lines, rec, contents)
    for key in state:
        if key not in known and key != mkey:
            v.add(1, "unknown-file", f"posix {key} exists but no one wrote it")
    # 2. convergence.
    for key, st in state.items():
        if eligible(key, st.st_mtime, now=now, max_age=rec.posix_max_age, manifest_key=mkey):
            v.add(2, "not-converged", f"posix {key} eligible (mtime {st.st_mtime:.0f}) but "
                  f"still there after the final job")
    # 3. manifest.
    doc = json.loads((root / mkey).read_text())
    refs = [f if isinstance(f, str) else f.get("path") for f in doc.get("files", [])]
    for key in refs:
        if key not in state:
            v.add(3, "manifest-dangling", f"final manifest references missing {key}")
    for msg in rec.consumer_violations:
        v.add(3, "manifest-dangling-live", msg)
    # 4. exactly once.
    for key in known:
        n = removed.get(key, 0)
        if key in state and n:
            v.add(4, "ledger-says-removed", f"posix {key} exists but has {n} removal lines")
        elif key not in state and n != 1:
            v.add(4, "ledger-count", f"posix {key} is gone with {n} removal lines")
    for key in removed:
        if key not in known:
            v.add(4, "ledger-unknown-key", f"posix {key} in the ledger, never written")
    _check_jobs(v, rec, "posix", lines, posix_plan_runs(root))
    v.stats["posix_deleted"] = sum(removed.values())
    v.stats["posix_skipped"] = sum(1 for ln in lines if ln.data["outcome"] == "changed-skipped")
    v.stats["posix_ops"] = sum(1 for o in rec.posix_ops if o.ok)


@dataclass
class S3State:
    """What the checker reads of the S3 side after a trial: current objects under the
    prefix (key -> (md5, LastModified, size), ``.lethe/`` left out), ledger lines, run
    ids of plan files, and every request the recording proxy saw (s3proxy.py)."""

    objects: dict[str, tuple[str, float, int]]
    ledger: list[LedgerLine]
    plan_runs: set[str]
    requests: list[Request]
    #: Versioned buckets: every version and delete marker under the prefix.
    versions: list[Version] = field(default_factory=list)


@dataclass
class Version:
    """One entry of ListObjectVersions (``.lethe/`` left out)."""

    key: str  # without the prefix
    version: str
    etag: str | None  # md5; None for a delete marker
    latest: bool
    modified: float  # LastModified, whole seconds


def s3_versions(client: Any, bucket: str, prefix: str) -> list[Version]:
    out: list[Version] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                      Prefix=prefix):
        for o in page.get("Versions", []):
            out.append(Version(o["Key"][len(prefix):], o["VersionId"], o["ETag"].strip('"'),
                               bool(o["IsLatest"]), o["LastModified"].timestamp()))
        for o in page.get("DeleteMarkers", []):
            out.append(Version(o["Key"][len(prefix):], o["VersionId"], None,
                               bool(o["IsLatest"]), o["LastModified"].timestamp()))
    return [x for x in out if not x.key.startswith(".lethe/")]


def read_s3(client: Any, rec: TrialRecord, requests_log: Path) -> S3State:
    bucket, prefix = rec.s3_bucket, rec.s3_prefix
    plan_runs: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}.lethe/plans/"):
        plan_runs |= {Path(o["Key"]).stem for o in page.get("Contents", [])}
    return S3State(objects=s3_objects(client, bucket, prefix),
                   ledger=s3_ledger(client, bucket, prefix), plan_runs=plan_runs,
                   requests=read_log(requests_log),
                   versions=s3_versions(client, bucket, prefix) if rec.s3_versioned else [])


def check_s3(v: Verdict, rec: TrialRecord, s3: S3State) -> None:
    prefix, max_age, objs, lines = rec.s3_prefix, rec.s3_max_age, s3.objects, s3.ledger
    young = max_age - S3_CLOCK_SLOP  # a correct delete arrives more than this after t0
    _check_ledger_shape(v, lines, policy=f"{rec.ns}/s3")
    by_digest: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ln in lines:
        by_digest[ln.data["fingerprint"].split(":")[0].strip('"')].append(ln.data)
    attempts: dict[str, list[WriteOp]] = defaultdict(list)  # key -> every PUT, by start
    version: dict[str, WriteOp] = {}  # md5 -> the PUT that wrote it (contents are unique)
    for op in sorted(rec.s3_ops, key=lambda o: o.t0):
        attempts[op.key].append(op)
        if op.digest:
            version[op.digest] = op
    # 1a. Every delete the proxy saw succeed, whatever the ledger says.
    removals: dict[str, list[Request]] = defaultdict(list)
    n_deletes = 0
    for req in s3.requests:
        if req.is_delete_object and req.status >= 500:
            removals[req.key.removeprefix(prefix)].append(req)  # may have happened: 1b only
        for full, etag, _vid in req.deletes():
            n_deletes += 1
            where = f"{req.method} {full!r} at {req.t0:.3f} (status {req.status})"
            key = _target_key(v, rec, req, full, attempts)
            if key is None:
                continue
            removals[key].append(req)
            hist = [w for w in attempts[key] if w.ok]
            if etag is not None:
                asked = version.get(etag.strip('"'))
                if asked is None or asked.key != key:
                    v.add(1, "s3-delete-unknown-version", f"{where}: ETag {etag} is no "
                          f"version the test wrote to {key!r}")
                elif req.t0 - asked.t0 <= young:
                    v.add(1, "s3-delete-asked-young", f"{where}: asked to delete the version "
                          f"written at {asked.t0:.3f}, {req.t0 - asked.t0:.2f}s old "
                          f"(maxAge {max_age:.0f}s)")
            # What the server deleted is the version current when it processed the
            # request: the last PUT that completed before the request arrived, or later.
            done = [w for w in hist if w.t1 < req.t0]
            if done and req.t0 - done[-1].t0 <= young:
                v.add(1, "s3-deleted-too-young", f"{where}: the current version was written "
                      f"at {done[-1].t0:.3f}-{done[-1].t1:.3f}, {req.t0 - done[-1].t0:.2f}s "
                      f"before (maxAge {max_age:.0f}s)")
    # 1b. Every key's last written version is still there, or a delete that could have
    # removed it lawfully was seen (sent late enough after the write began).
    lost: set[str] = set()
    for key, ops in attempts.items():
        ok = [w for w in ops if w.ok]
        if not ok:
            continue
        last = ok[-1]
        later = {w.digest for w in ops if w.t0 >= last.t0}  # incl. failed PUTs that landed
        cur = objs.get(key)
        if cur is not None:
            if cur[0] not in later:
                lost.add(key)
                v.add(1, "s3-write-replaced", f"s3 {key}: content {cur[0]} is none of the "
                      f"test's writes since {last.t0:.3f} (last {last.digest})")
            continue
        cands = [r for r in removals.get(key, []) if r.t1 > last.t0]
        if not cands:
            lost.add(key)
            v.add(1, "s3-write-lost", f"s3 {key}: last write ({last.digest}) at "
                  f"{last.t0:.3f}-{last.t1:.3f} is gone and no delete request came after it")
        elif all(r.t0 - last.t0 <= young for r in cands):
            lost.add(key)
            v.add(1, "s3-deleted-too-young", f"s3 {key}: last write at {last.t0:.3f}-"
                  f"{last.t1:.3f} is gone; deletes sent at {[round(r.t0, 3) for r in cands]}"
                  f", all within maxAge {max_age:.0f}s of it")
    # 2. convergence, as of the final job's creation.
    t_final = rec.final_jobs_created.get("s3", 0.0)
    for key, (_digest, mtime, _size) in objs.items():
        if eligible(key, mtime, now=t_final - S3_SLOP, max_age=max_age, manifest_key=None):
            v.add(2, "not-converged", f"s3 {key} (LastModified {mtime:.0f}) eligible when "
                  f"the final job was created, still there")
    # 4. each version removed once; none removed that exists.
    current = {(k, d) for k, (d, _m, _s) in objs.items()}
    for digest, ds in by_digest.items():
        for d in ds:
            w = version.get(digest)
            if w is None or w.key != d["key"]:
                v.add(4, "ledger-unknown-version", f"s3 {d['key']} etag {digest}: no such "
                      f"version was written ({d['outcome']})")
    for key, ops in attempts.items():
        ok = [w for w in ops if w.ok and w.digest]
        for i, w in enumerate(ok):
            n = sum(1 for d in by_digest.get(w.digest or "", []) if d["key"] == key
                    and d["outcome"] in REMOVED)
            superseded = i < len(ok) - 1  # overwritten (unversioned: gone, no line needed)
            if (key, w.digest) in current and n:
                v.add(4, "ledger-says-removed", f"s3 {key} {w.digest} exists, {n} removal "
                      f"lines")
            elif (key, w.digest) not in current and not superseded and n != 1 \
                    and key not in lost:
                v.add(4, "ledger-count", f"s3 {key} {w.digest} gone with {n} removal lines")
            elif n > 1:
                v.add(4, "ledger-count", f"s3 {key} {w.digest} has {n} removal lines")
    _s3_common_tail(v, rec, s3, n_deletes)


def _target_key(v: Verdict, rec: TrialRecord, req: Request, full: str,
                attempts: dict[str, list[WriteOp]]) -> str | None:
    """The key (without the prefix) a successful delete named, after the checks every
    delete must pass: in the bucket and under the prefix, selected, written by the
    test. ``None`` when the rest of check 1 cannot apply (or for ``.lethe/``)."""
    prefix = rec.s3_prefix
    where = f"{req.method} {full!r} at {req.t0:.3f} (status {req.status})"
    if req.bucket != rec.s3_bucket or not full.startswith(prefix):
        v.add(1, "s3-delete-outside-target", f"{where} in bucket {req.bucket!r}, "
              f"outside {rec.s3_bucket}/{prefix}")
        return None
    key = full[len(prefix):]
    if key.startswith(".lethe/"):
        return None  # the product's own probe, plan and ledger objects
    if not selected(key, None):
        v.add(1, "s3-delete-excluded", f"{where}: the policy excludes **/keep/**")
    if not any(w.ok for w in attempts.get(key, [])):
        v.add(1, "s3-delete-unknown-key", f"{where}: no one ever wrote {key!r}")
        return None
    return key


def check_s3_versioned(v: Verdict, rec: TrialRecord, s3: S3State) -> None:
    """Check 1, 2 and 4 on a versioned bucket (docs/s3.md, "Versioned buckets").

    Expiring places a delete marker; a marker that landed on an overwrite is
    removed again by the product (its read-back), so a marker may hide a young
    version for a moment: what is checked is the end state and every permanent
    deletion. A version is identified by the VersionId its PUT returned (and by
    its content's md5: contents are unique).

    1. Every version the test wrote is still listed, or a DeleteObject naming its
       VersionId succeeded; such a delete removed a *noncurrent* version (some
       later PUT or marker of the key began before the request arrived) that had
       been noncurrent for more than ``noncurrentVersionsMaxAge - 1 s`` (measured
       from the earliest successor: the generous side). A key's last write is
       current at the end, or hidden by a marker whose request arrived more than
       ``maxAge - 1 s`` after that write began; an older version never becomes
       current again.
    2. As of the final job's creation: no current version older than maxAge, no
       version noncurrent for longer than noncurrentVersionsMaxAge (counted from
       the next newer item where a marker shares the version's LastModified second).
    4. Per version: at most one line placing a marker on it, and exactly one line
       removing it if it is gone (none if it is listed); lines name versions the
       test wrote.
    """
    prefix, max_age, nc_age = rec.s3_prefix, rec.s3_max_age, rec.s3_noncurrent_max_age
    young, nc_young = max_age - S3_CLOCK_SLOP, nc_age - S3_CLOCK_SLOP
    lines = s3.ledger
    _check_ledger_shape(v, lines, policy=f"{rec.ns}/s3")
    attempts: dict[str, list[WriteOp]] = defaultdict(list)
    by_vid: dict[str, WriteOp] = {}
    by_digest: dict[str, WriteOp] = {}
    for op in sorted(rec.s3_ops, key=lambda o: o.t0):
        attempts[op.key].append(op)
        if op.ok and op.version:
            by_vid[op.version] = op
        if op.digest:
            by_digest[op.digest] = op
    #: key -> (request, marker VersionId) of each marker placed on it
    placed: dict[str, list[tuple[Request, str]]] = defaultdict(list)
    marker_req: dict[str, Request] = {}  # marker VersionId -> the request that placed it
    removed: dict[str, list[Request]] = defaultdict(list)  # VersionId -> its deletes
    n_deletes = 0
    for req in s3.requests:
        for full, marker in req.markers:
            marker_req[marker] = req
            placed[full.removeprefix(prefix)].append((req, marker))
    # A marker removed again (the undo after an overwrite raced it, or a lone marker)
    # stops making the version behind it noncurrent from then on.
    marker_gone: dict[str, float] = {}
    for req in s3.requests:
        for _full, _etag, vid in req.deletes():
            if vid is not None and vid in marker_req:
                marker_gone[vid] = min(marker_gone.get(vid, req.t0), req.t0)
    never = float("inf")
    for req in s3.requests:
        for full, _etag, vid in req.deletes():
            n_deletes += 1
            key = _target_key(v, rec, req, full, attempts)
            if key is None or vid is None:
                continue  # a marker placement: judged by the end state below
            removed[vid].append(req)
            w = by_vid.get(vid)
            if w is None:
                continue  # a marker (undo, or one with nothing behind it) or an unknown PUT
            where = f"DeleteObject {full!r} versionId {vid} at {req.t0:.3f}"
            succ = [o.t0 for o in attempts[key] if o.t0 > w.t0] + \
                   [r.t0 for r, m in placed.get(key, []) if r.t0 > w.t0
                    and marker_gone.get(m, never) >= req.t0]
            first = min(succ, default=None)
            if first is None or first >= req.t0:
                v.add(1, "s3-deleted-current-version", f"{where}: the version written at "
                      f"{w.t0:.3f} was current (no later write or marker before it)")
            elif req.t0 - first <= nc_young:
                v.add(1, "s3-noncurrent-too-young", f"{where}: noncurrent since {first:.3f} "
                      f"at the earliest, {req.t0 - first:.2f}s (noncurrentVersionsMaxAge "
                      f"{nc_age:.0f}s)")
    listed: dict[str, list[Version]] = defaultdict(list)
    for x in s3.versions:
        listed[x.key].append(x)
    present = {x.version for x in s3.versions}
    lost: set[str] = set()
    for vid, w in by_vid.items():
        if vid not in present and vid not in removed:
            lost.add(w.key)
            v.add(1, "s3-version-lost", f"s3 {w.key} version {vid} (written {w.t0:.3f}) is "
                  f"gone and no DeleteObject named it")
    for key, ops in attempts.items():
        ok = [w for w in ops if w.ok]
        if not ok:
            continue
        last = ok[-1]
        top = next((x for x in listed.get(key, []) if x.latest), None)
        if top is None:
            continue  # every version removed: each removal was judged above
        if top.etag is not None:
            if top.etag not in {w.digest for w in ops if w.t0 >= last.t0}:
                v.add(1, "s3-resurrected", f"s3 {key}: current version {top.version} "
                      f"({top.etag}) is older than the last write {last.digest} at "
                      f"{last.t0:.3f}")
            continue
        by = marker_req.get(top.version)
        if by is None:
            v.add(1, "s3-marker-unknown", f"s3 {key}: hidden by marker {top.version}, which "
                  f"no request through the proxy placed")
        elif by.t0 - last.t0 <= young:
            v.add(1, "s3-hidden-too-young", f"s3 {key}: marker {top.version} placed at "
                  f"{by.t0:.3f} hides the write of {last.t0:.3f}-{last.t1:.3f}, "
                  f"{by.t0 - last.t0:.2f}s old (maxAge {max_age:.0f}s)")
    # 2. convergence, as of the final job's creation.
    # A version is surely noncurrent once a later write or marker has landed (the
    # earliest t1 of those, from the test's own record). Except a marker of the
    # version's own LastModified second: no listing can order the two (whole seconds;
    # seed 16021), so the product counts from the next newer item, the safe side
    # (docs/s3.md), and so does this check. The latest marker is known to be newer.
    t_final = rec.final_jobs_created.get("s3", 0.0) - S3_SLOP
    listed_at = {x.version: x for x in s3.versions}

    def same_second(marker: str, x: Version) -> bool:
        m = listed_at.get(marker)
        return (m is not None and m.etag is None and not m.latest
                and int(m.modified) == int(x.modified))
    for x in s3.versions:
        w = by_vid.get(x.version)
        if x.etag is None:
            continue
        if x.latest and eligible(x.key, x.modified, now=t_final, max_age=max_age,
                                 manifest_key=None):
            v.add(2, "not-converged", f"s3 {x.key} current version {x.version} "
                  f"(LastModified {x.modified:.0f}) eligible when the final job was "
                  f"created, still there")
        elif not x.latest and w is not None and selected(x.key, None):
            landed = [o.t1 for o in attempts[x.key] if o.ok and o.t0 > w.t0] + \
                     [r.t1 for r, m in placed.get(x.key, []) if r.t0 > w.t0
                      and marker_gone.get(m, never) >= t_final and not same_second(m, x)]
            if landed and min(landed) <= t_final - nc_age:
                v.add(2, "not-converged", f"s3 {x.key} version {x.version} noncurrent "
                      f"since {min(landed):.3f} at the latest, past noncurrentVersionsMaxAge "
                      f"when the final job was created, still there")
    # 4. per version: placements at most once, removals exactly once if gone.
    placements: Counter[tuple[str, str]] = Counter()
    removals: Counter[tuple[str, str]] = Counter()
    for ln in lines:
        d = ln.data
        digest = str(d.get("fingerprint", "")).split(":")[0].strip('"')
        if d.get("rule") == "expiredObjectDeleteMarker" or d["outcome"] not in REMOVED:
            continue
        w = by_digest.get(digest)
        if w is None or w.key != d["key"]:
            v.add(4, "ledger-unknown-version", f"s3 {d['key']} etag {digest}: no such "
                  f"version was written ({d['outcome']}, rule {d.get('rule')})")
            continue
        bucket = removals if d.get("rule") == "noncurrentVersionsMaxAge" else placements
        bucket[(d["key"], digest)] += 1
    # Every marker a replica placed is accounted for in the ledger: by a line for the
    # version it hid (deleted, or already-gone when a resumed batch found it hidden) or
    # by the undo's changed-skipped line. A marker with no line is a deletion nobody
    # can find in the audit trail.
    accounted: Counter[str] = Counter()
    for ln in lines:
        d = ln.data
        if d.get("rule") not in ("noncurrentVersionsMaxAge", "expiredObjectDeleteMarker") \
                and d["outcome"] in (*REMOVED, *SKIPPED, "error"):
            accounted[d["key"]] += 1
    for key, marks in sorted(placed.items()):
        if selected(key, None) and len(marks) > accounted[key]:
            v.add(4, "marker-unledgered", f"s3 {key}: {len(marks)} markers placed "
                  f"({[round(r.t0, 3) for r, _m in marks]}), {accounted[key]} ledger lines")
    listed_digests = {(x.key, x.etag) for x in s3.versions if x.etag is not None}
    for (key, digest), n in placements.items():
        if n > 1:
            v.add(4, "ledger-count", f"s3 {key} {digest}: {n} lines placed a marker on it")
    for w in by_vid.values():
        n = removals.get((w.key, w.digest or ""), 0)
        if (w.key, w.digest) in listed_digests and n:
            v.add(4, "ledger-says-removed", f"s3 {w.key} {w.digest} is listed, {n} "
                  f"removal lines")
        elif (w.key, w.digest) not in listed_digests and n != 1 and w.key not in lost:
            v.add(4, "ledger-count", f"s3 {w.key} {w.digest} gone with {n} removal lines")
    _s3_common_tail(v, rec, s3, n_deletes)
    v.stats["s3_markers"] = sum(len(r.markers) for r in s3.requests)


def _s3_common_tail(v: Verdict, rec: TrialRecord, s3: S3State, n_deletes: int) -> None:
    """What both S3 checks end with: the proxy saw requests, checks 5 and 6, stats."""
    lines = s3.ledger
    if not s3.requests:
        v.add(1, "s3-unobserved", "the proxy recorded no request: the replicas did not go "
              "through it, so no deletion could be checked")
    _check_jobs(v, rec, "s3", lines, s3.plan_runs)
    v.stats["s3_deleted"] = sum(1 for ln in lines if ln.data["outcome"] in REMOVED)
    v.stats["s3_skipped"] = sum(1 for ln in lines if ln.data["outcome"] == "changed-skipped")
    v.stats["s3_ops"] = sum(1 for o in rec.s3_ops if o.ok and o.op != "populate")
    v.stats["s3_delete_requests"] = n_deletes


def check(rec: TrialRecord, *, s3: S3State, now: float) -> Verdict:
    v = Verdict()
    check_posix(v, rec, now=now)
    if rec.s3_versioned:
        check_s3_versioned(v, rec, s3)
    else:
        check_s3(v, rec, s3)
    v.stats["consumer_checks"] = rec.consumer_checks
    return v
