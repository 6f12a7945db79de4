"""A paused leader that wakes must not act (issue #17, items 1 and 2; I1, I3).

Three real replicas (tests/raft/fencing_driver.py: a real pysyncobj member
each, running the product's Runner while it holds the lease) share one target.
The leader SIGSTOPs *itself* at an exact step through the product's test-only
pause point (``LETHE_TEST_PAUSE_AT``), placed before that step's fence check:
the Nth delete rename (POSIX), the Nth delete request (S3), or a batch's ledger
write (before its fence, or between its fence and the write itself). A writer
then rewrites what is left of the paused batch, a new leader finishes the run,
and only then is the old one resumed (SIGCONT). From then on the old replica
must leave no trace: no rename or unlink in the target (file ctimes and the
directory's mtime are unchanged), no delete request (S3: the driver records
every request that passed the product's ``before-send`` handlers), and no
ledger write (every ledger file is byte for byte what the new leader left).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ports import free_port
from tests.fixtures.s3 import S3Server
from tests.runner.conftest import make_file, posix_policy

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests/raft/fencing_driver.py"
BATCH = 100
OLD = 300  # three batches


class Replicas:
    """Three driver processes on 127.0.0.2-4, all with the same pause point."""

    def __init__(self, tmp: Path, policy: dict[str, Any], *, pause_at: str,
                 s3_keys: list[str] | None = None) -> None:
        self.tmp = tmp
        self.paused_marker = tmp / "paused"
        addrs = [f"127.0.0.{2 + i}:{free_port(f'127.0.0.{2 + i}')}" for i in range(3)]
        password = secrets.token_hex(16)
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'operator'}",
               "LETHE_TEST_PAUSE_AT": pause_at,
               "LETHE_TEST_PAUSE_ONCE": str(self.paused_marker)}
        self.outs: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        for i, addr in enumerate(addrs):
            out = tmp / f"replica-{i}"
            out.mkdir()
            cfg = {"self": addr, "peers": [a for a in addrs if a != addr],
                   "password": password, "data_dir": str(out / "raft"), "out_dir": str(out),
                   "policy": policy, "batch_size": BATCH, "s3_keys": s3_keys}
            (out / "config.json").write_text(json.dumps(cfg))
            self.outs.append(out)
            log = open(out / "driver.log", "wb")  # noqa: SIM115  (the child keeps it)
            self.procs.append(subprocess.Popen(
                [sys.executable, str(DRIVER), str(out / "config.json")], env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()

    def logs(self) -> str:
        return "\n".join(f"--- replica {i}\n{(o / 'driver.log').read_text()[-3000:]}"
                         for i, o in enumerate(self.outs))

    def wait(self, cond: Callable[[], Any], *, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = cond()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.logs()}")

    def paused_pid(self) -> int:
        """Wait until one replica paused itself and the kernel shows it stopped."""
        text = self.wait(lambda: self.paused_marker.exists() and self.paused_marker.read_text(),
                         timeout=120, what="a replica to reach its pause point")
        pid = int(text.split()[0])

        def stopped() -> bool:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"

        self.wait(stopped, timeout=10, what=f"pid {pid} to be stopped")
        return pid

    def events(self) -> list[dict[str, Any]]:
        out = []
        for o in self.outs:
            p = o / "events.jsonl"
            if p.exists():
                out += [json.loads(x) for x in p.read_text().splitlines() if x]
        return out

    def requests(self) -> list[dict[str, Any]]:
        out = []
        for o in self.outs:
            p = o / "requests.jsonl"
            if p.exists():
                out += [json.loads(x) for x in p.read_text().splitlines() if x]
        return out

    def done_by_other(self, pid: int) -> dict[str, Any]:
        """Wait until a replica other than ``pid`` finished the run."""
        def done() -> dict[str, Any] | None:
            for o in self.outs:
                p = o / "done.json"
                if p.exists() and p.read_text():
                    d: dict[str, Any] = json.loads(p.read_text())
                    return d
            return None

        d: dict[str, Any] = self.wait(done, timeout=180, what="a new leader to finish the run")
        assert d["pid"] != pid and d["result"] == "Succeeded", d
        return d

    def resume_and_settle(self, pid: int) -> float:
        """SIGCONT ``pid``; wait until its run attempt ended (it raised or returned):
        everything it did after waking is done by then. Returns the SIGCONT time."""
        woke = time.time()
        os.kill(pid, signal.SIGCONT)
        self.wait(lambda: [e for e in self.events() if e["pid"] == pid and e["time"] > woke],
                  timeout=60, what=f"the resumed pid {pid} to end its run attempt")
        return woke

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
        for p in self.procs:
            p.wait(timeout=10)


@pytest.fixture
def replicas_factory(tmp_path: Path) -> Iterator[Callable[..., Replicas]]:
    made: list[Replicas] = []

    def make(policy: dict[str, Any], **kw: Any) -> Replicas:
        r = Replicas(tmp_path, policy, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every name under ``root`` -> (inode, ctime_ns, mtime_ns), directories included:
    a rename, link or unlink changes the ctime of the file and the mtime of its
    directory."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, n))
            out[os.path.relpath(os.path.join(dirpath, n), root)] = (
                st.st_ino, st.st_ctime_ns, st.st_mtime_ns)
    st = os.lstat(root)
    out["."] = (st.st_ino, st.st_ctime_ns, st.st_mtime_ns)
    return out


def _ledger_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted((root / ".lethe/ledger").rglob("*.jsonl"))}


def _posix_setup(tmp_path: Path) -> tuple[Path, list[str], dict[str, Any]]:
    root = tmp_path / "data"
    old = [f"d/old-{i:03d}" for i in range(OLD)]
    for k in old:
        make_file(root, k, age_days=60)
    for i in range(20):
        make_file(root, f"d/new-{i:03d}", age_days=1)
    return root, old, posix_policy(root, "fencing", rules={"maxAge": "30d"})


def _rewrite(root: Path, keys: list[str]) -> int:
    """The writer: append to each file still there (the new leader must skip them)."""
    n = 0
    for k in keys:
        with contextlib.suppress(FileNotFoundError), open(root / k, "r+b") as f:
            f.seek(0, os.SEEK_END)
            f.write(b"rewritten")
            n += 1
    return n


def test_paused_leader_renames_nothing_after_it_wakes(
        tmp_path: Path, replicas_factory: Callable[..., Replicas]) -> None:
    """Pause before the 150th rename: mid-batch (batch 2 holds files 100-199), off
    any 64-file boundary. The writer rewrites what is left of that batch, the new
    leader skips those files as changed and finishes the run; then the old leader
    wakes and must not rename (quarantine and link back) any of them."""
    root, old, policy = _posix_setup(tmp_path)
    reps = replicas_factory(policy, pause_at="rename:150")
    pid = reps.paused_pid()
    rewritten = _rewrite(root, old[149:200])
    assert rewritten > 0
    done = reps.done_by_other(pid)
    assert done["counters"]["skippedChanged"] >= rewritten, done
    before, ledger_before = _tree(root), _ledger_files(root)
    reps.resume_and_settle(pid)
    after = _tree(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the woken ex-leader touched {changed[:10]}\n{reps.logs()}"
    assert _ledger_files(root) == ledger_before


@pytest.mark.parametrize("point", ["ledger:2", "ledger-put:2"])
def test_paused_leader_does_not_replace_a_newer_terms_ledger(
        tmp_path: Path, replicas_factory: Callable[..., Replicas], point: str) -> None:
    """Pause at the ledger write of batch 1, after its deletes: ``ledger`` before
    its fence, ``ledger-put`` between the fence and the write (only the term
    compare-and-set stops that one). The new leader redoes batch 1 under its own
    term (the old one's deletes show as already gone) and finishes; the woken
    old leader must leave every ledger file as the new leader wrote it."""
    root, _old, policy = _posix_setup(tmp_path)
    reps = replicas_factory(policy, pause_at=point)
    pid = reps.paused_pid()
    reps.done_by_other(pid)
    ledger_before = _ledger_files(root)
    batch1 = [json.loads(x) for k, v in ledger_before.items() if k.endswith("/000001.jsonl")
              for x in v.decode().splitlines()]
    assert len(batch1) == BATCH
    new_term = {x["term"] for x in batch1}
    assert len(new_term) == 1 and {x["outcome"] for x in batch1} == {"already-gone"}
    reps.resume_and_settle(pid)
    assert _ledger_files(root) == ledger_before, (
        f"the woken ex-leader rewrote a ledger file (new leader's term {new_term})\n"
        f"{reps.logs()}")


def _s3_setup(s3_server: S3Server, bucket: str) -> tuple[list[str], dict[str, Any]]:
    client = s3_server.client()
    old = [f"tmp/old-{i:03d}" for i in range(OLD)]
    for k in old:
        client.put_object(Bucket=bucket, Key=k, Body=b"old")
    policy = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
              "metadata": {"name": "fencing", "namespace": "test"},
              "spec": {"target": {"s3": {"bucket": bucket, "prefix": "tmp/",
                                         "endpoint": s3_server.endpoint,
                                         "region": "us-east-1", "forcePathStyle": True}},
                       "mode": "Enforce", "rules": {"maxAge": "2s"},
                       "safety": {"allowDeleteAll": True}}}  # all old on purpose
    time.sleep(3)  # the server's clock has whole seconds: every object is > 2 s old
    return old, policy


def _s3_ledgers(s3_server: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3_server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="tmp/.lethe/ledger/") for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in sorted(keys)}


def test_paused_leader_does_not_replace_a_newer_terms_s3_ledger(
        replicas_factory: Callable[..., Replicas], s3_server: S3Server,
        s3_bucket: str) -> None:
    """S3: pause batch 1's ledger write between its fence and its PUT. The new
    leader writes that file under its term; the old one's PUT, sent when it wakes,
    carries ``If-None-Match: *`` (it read no file), so the server refuses it; it
    re-reads, finds the newer term and stops."""
    _old, policy = _s3_setup(s3_server, s3_bucket)
    reps = replicas_factory(policy, pause_at="ledger-put:2",
                            s3_keys=[s3_server.access_key, s3_server.secret_key])
    pid = reps.paused_pid()
    reps.done_by_other(pid)
    before = _s3_ledgers(s3_server, s3_bucket)
    assert len(before) == OLD // BATCH
    reps.resume_and_settle(pid)
    assert _s3_ledgers(s3_server, s3_bucket) == before, reps.logs()


def test_paused_leader_sends_no_s3_delete_after_it_wakes(
        replicas_factory: Callable[..., Replicas], s3_server: S3Server,
        s3_bucket: str) -> None:
    """S3: pause before the 150th delete request (moto: one If-Match DeleteObject
    per key, 8 workers), rewrite what is left of that batch, let the new leader
    finish, wake the old one: no fence check of it made after it woke may pass.

    The other delete workers are frozen wherever the SIGSTOP found them; one
    that had passed its check but not yet sent sends when the process wakes
    (docs/raft.md, "The window that remains": at most one request per worker).
    CI saw it once. Such a request carries ``If-Match``, so the server refuses
    it for a rewritten object: every rewritten object must still be there."""
    client = s3_server.client()
    old, policy = _s3_setup(s3_server, s3_bucket)
    reps = replicas_factory(policy, pause_at="s3-delete:150",
                            s3_keys=[s3_server.access_key, s3_server.secret_key])
    pid = reps.paused_pid()
    listed = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=s3_bucket, Prefix="tmp/old-") for o in page.get("Contents", [])}
    rewritten = sorted(listed & set(old[100:200]))
    for k in rewritten:  # the writer
        client.put_object(Bucket=s3_bucket, Key=k, Body=b"rewritten")
    assert rewritten
    reps.done_by_other(pid)
    woke = reps.resume_and_settle(pid)
    mine = [r for r in reps.requests() if r["pid"] == pid]
    late = [r for r in mine if r["checked"] > woke]
    assert not late, f"the woken ex-leader sent {len(late)} delete requests: {late[:3]}"
    window = [r for r in mine if r["time"] > woke]
    assert len(window) <= 16 and all(r["if_match"] for r in window), window

    def body(key: str) -> bytes | None:
        try:
            return client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    gone = [k for k in rewritten if body(k) != b"rewritten"]
    assert not gone, gone
    assert len(_s3_ledgers(s3_server, s3_bucket)) == OLD // BATCH
