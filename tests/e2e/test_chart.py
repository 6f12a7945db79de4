"""`helm install` as documented, on a real cluster: three pods do real runs, fail over,
scale, upgrade, stop on SIGTERM and uninstall without losing data.

Opt-in (see conftest.py and docs/testing.md): ``make e2e``, or
``LETHE_E2E=1 pytest tests/e2e`` with a cluster per ``LETHE_E2E_CLUSTER``. The tests
run in file order and share one release; the last one uninstalls it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    APP_NS,
    CHART,
    DATA_HOST,
    MOUNT,
    NS,
    RELEASE,
    S3_HOST,
    Cluster,
    wait_for,
)
from tests.fixtures.s3 import S3Server, _moto_command, _wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

CJ = "cleanupjobs.lethe.io"
RP = "retentionpolicies.lethe.io"
DAY = 86400


def files(sub: str, n: int, *, age_days: float, prefix: str) -> list[Path]:
    """Files in the shared directory (host side), world-writable dirs for uid 65532."""
    root = DATA_HOST / sub
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o777)
    t = time.time() - age_days * DAY
    out = []
    for i in range(n):
        p = root / f"{prefix}-{i:03d}.log"
        p.write_text("x" * 100)
        os.utime(p, (t, t))
        out.append(p)
    return out


def policy(name: str, sub: str) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": APP_NS},
            "spec": {"target": {"posix": {"path": f"{MOUNT}/{sub}"}},
                     "rules": {"maxAge": "30d"}}}


def job(name: str, policy_name: str) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "CleanupJob",
            "metadata": {"name": name, "namespace": APP_NS},
            "spec": {"policyRef": {"name": policy_name}, "mode": "Enforce"}}


def finished(c: Cluster, name: str, *, timeout: float = 240) -> dict[str, Any]:
    done = wait_for(lambda: (o := c.get(CJ, name, APP_NS)) and
                    (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") and o,
                    timeout=timeout, what=f"CleanupJob {name} to finish")
    return dict(done)


def run_job(c: Cluster, sub: str, *, old: int = 20, new: int = 5) -> dict[str, Any]:
    """A policy over DATA_HOST/sub and an Enforce CleanupJob on it; the finished job."""
    name = f"{sub}-{uuid.uuid4().hex[:6]}"
    olds = files(sub, old, age_days=40, prefix="old")
    news = files(sub, new, age_days=1, prefix="new")
    c.apply(policy(sub, sub), job(name, sub))
    done = finished(c, name)
    st = done["status"]
    assert st["phase"] == "Succeeded", st
    assert st["counters"]["deleted"] == old and st["counters"]["errors"] == 0, st
    assert not any(p.exists() for p in olds) and all(p.exists() for p in news)
    return done


def policy_leader(c: Cluster, name: str) -> str:
    pol = wait_for(lambda: (o := c.get(RP, name, APP_NS)) and
                   (o.get("status") or {}).get("leader") and o, timeout=60,
                   what=f"the status of policy {name}")
    return str(pol["status"]["leader"])


def test_three_replicas_form_raft_and_only_the_leader_writes(release: Cluster) -> None:
    c = release
    assert c.ready_pods() == [f"{RELEASE}-{i}" for i in range(3)], c.diagnose()
    leader = wait_for(c.leader, timeout=120, what="a Raft leader")
    # Every pod's /raft agrees on the leader and on a membership of 3.
    for pod in c.ready_pods():
        def led(p: str = pod) -> Any:
            s = c.raft(p)
            return s and s.get("leader") and s
        st = wait_for(led, timeout=60, what=f"{pod}'s /raft")
        assert c.members(pod) == 3, (pod, st)
        assert str(st["leader"]).startswith(f"{leader}."), (pod, st, leader)
    done = run_job(c, "first")
    run_id = done["status"]["runId"]
    # The policy's status names the one replica that wrote it: the leader.
    assert policy_leader(c, "first") == leader
    # Every event came from the leader, and only its log tells the run.
    events = json.loads(c.kubectl("get", "events", "-n", APP_NS, "-o", "json"))["items"]
    lethe = [e for e in events if (e.get("source") or {}).get("component") == "lethe"]
    assert lethe and {e.get("reportingInstance") for e in lethe} == {leader}, lethe
    told = [p for p in c.ready_pods() if run_id in c.logs(p)]
    assert told == [leader], told


@pytest.fixture(scope="module")
def pod_s3() -> Iterator[S3Server]:
    """A moto S3 server on this host at an address the pods reach (S3_HOST)."""
    if not S3_HOST:
        pytest.skip("LETHE_E2E_S3_HOST is not set: no address of this host that pods reach")
    with socket.socket() as s:
        s.bind((S3_HOST, 0))
        port = s.getsockname()[1]
    cmd = _moto_command(port)
    cmd[cmd.index("127.0.0.1")] = S3_HOST
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    endpoint = f"http://{S3_HOST}:{port}"
    try:
        _wait_ready(endpoint, proc)
        yield S3Server(endpoint=endpoint)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()


def test_s3_policy_deletes_exactly_what_it_should(release: Cluster, pod_s3: S3Server) -> None:
    c = release
    s3 = pod_s3.client()
    bucket = f"lethe-e2e-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for i in range(15):
        s3.put_object(Bucket=bucket, Key=f"tmp/old-{i:02d}", Body=b"x" * 10)
    s3.put_object(Bucket=bucket, Key="keep/outside-prefix", Body=b"x")
    time.sleep(2.1)  # S3 times are whole seconds: the new ones are strictly newer
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"tmp/new-{i:02d}", Body=b"x" * 10)
    c.apply({"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "s3-creds", "namespace": APP_NS},
             "stringData": {"AWS_ACCESS_KEY_ID": pod_s3.access_key,
                            "AWS_SECRET_ACCESS_KEY": pod_s3.secret_key}},
            {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
             "metadata": {"name": "s3-tmp", "namespace": APP_NS},
             "spec": {"target": {"s3": {
                 "bucket": bucket, "prefix": "tmp/", "endpoint": pod_s3.endpoint,
                 "region": pod_s3.region, "forcePathStyle": True,
                 "credentialsSecretRef": {"name": "s3-creds",
                                          "accessKeyIdKey": "AWS_ACCESS_KEY_ID",
                                          "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY"}}},
                 "rules": {"keepLast": 5}}},
            job("s3-run", "s3-tmp"))
    st = finished(c, "s3-run")["status"]
    assert st["phase"] == "Succeeded", st
    assert st["counters"]["deleted"] == 15 and st["counters"]["errors"] == 0, st
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    # The run's ledger (what was deleted, once) lives under the prefix's .lethe/.
    ledger = [k for k in left if k.startswith("tmp/.lethe/ledger/")]
    data = [k for k in left if not k.startswith("tmp/.lethe/")]
    assert ledger, left
    assert data == ["keep/outside-prefix", *[f"tmp/new-{i:02d}" for i in range(5)]], left


def test_killing_the_leader_pod_elects_another(release: Cluster) -> None:
    c = release
    old = wait_for(c.leader, timeout=60, what="a Raft leader")
    c.kubectl("delete", "pod", old, "-n", NS, "--grace-period=0", "--force", "--wait=false")
    new = wait_for(lambda: (ld := c.leader()) and ld != old and ld, timeout=120,
                   what="a new leader")
    # The StatefulSet brings the killed pod back; it rejoins as a follower.
    wait_for(lambda: len(c.ready_pods()) == 3, timeout=300, what="3 ready pods again")
    wait_for(lambda: c.members(new) == 3, timeout=120, what="3 Raft members")
    run_job(c, "after-failover")
    assert policy_leader(c, "after-failover") in (new, c.leader())


def _password(c: Cluster) -> str:
    secrets = json.loads(c.kubectl("get", "secrets", "-n", NS, "-o", "json"))["items"]
    raft = [s for s in secrets if "password" in (s.get("data") or {})]
    assert len(raft) == 1, [s["metadata"]["name"] for s in raft]
    return str(raft[0]["data"]["password"])


def test_helm_upgrade_keeps_password_and_journal(release: Cluster) -> None:
    c = release
    password = _password(c)
    claims = {p["metadata"]["name"]: p["metadata"]["uid"] for p in json.loads(
        c.kubectl("get", "pvc", "-n", NS, "-o", "json"))["items"]}
    leader = wait_for(c.leader, timeout=60, what="a Raft leader")
    before = c.raft(leader) or {}
    # A changed pod template: every pod is replaced, one at a time.
    c.helm("upgrade", RELEASE, str(CHART), "--namespace", NS, "--reuse-values",
           "--set-string", f"podAnnotations.e2e-upgrade={uuid.uuid4().hex[:8]}",
           "--wait", "--timeout", "10m")
    wait_for(lambda: len(c.ready_pods()) == 3, timeout=300, what="3 ready pods")
    assert _password(c) == password
    after_claims = {p["metadata"]["name"]: p["metadata"]["uid"] for p in json.loads(
        c.kubectl("get", "pvc", "-n", NS, "-o", "json"))["items"]}
    assert after_claims == claims
    new_leader = wait_for(c.leader, timeout=120, what="a Raft leader after the upgrade")
    after = c.raft(new_leader) or {}
    # The journal survived: the log goes on from where it was, it did not restart.
    key = next((k for k in ("commit_index", "commitIndex", "log_len", "raft_term")
                if k in before), None)
    if key is not None:
        assert int(after.get(key) or 0) >= int(before[key] or 0), (before, after)
    # Policies and their run history are still known: a new run works.
    run_job(c, "after-upgrade")


def test_sigterm_ends_a_pod_within_its_grace_period(release: Cluster) -> None:
    c = release
    follower = next(p for p in c.ready_pods() if p != c.leader())
    grace = 30
    start = time.monotonic()
    c.kubectl("delete", "pod", follower, "-n", NS, "--wait=true", timeout=grace + 30)
    took = time.monotonic() - start
    assert took < grace, f"{follower} took {took:.1f}s to stop (grace {grace}s)"
    wait_for(lambda: len(c.ready_pods()) == 3, timeout=300, what="3 ready pods again")
    wait_for(lambda: (ld := c.leader()) and c.members(ld) == 3, timeout=120,
             what="3 Raft members")


def test_scale_to_five_and_back_to_three(release: Cluster) -> None:
    c = release
    c.helm("upgrade", RELEASE, str(CHART), "--namespace", NS, "--reuse-values",
           "--set", "replicaCount=5", "--wait", "--timeout", "10m")
    wait_for(lambda: len(c.ready_pods()) == 5, timeout=300, what="5 ready pods")
    wait_for(lambda: (ld := c.leader()) and c.members(ld) == 5, timeout=180,
             what="a Raft cluster of 5")
    c.helm("upgrade", RELEASE, str(CHART), "--namespace", NS, "--reuse-values",
           "--set", "replicaCount=3", "--wait", "--timeout", "10m")
    wait_for(lambda: c.ready_pods() == [f"{RELEASE}-{i}" for i in range(3)],
             timeout=300, what="pods 3 and 4 gone")
    # The removed replicas left Raft on their way out: the quorum is 2 of 3 again.
    leader = wait_for(lambda: (ld := c.leader()) and c.members(ld) == 3 and ld,
                      timeout=180, what="a Raft cluster of 3")
    for pod in c.ready_pods():
        assert c.members(pod) == 3, (pod, c.raft(pod))
    run_job(c, "after-scale")
    assert policy_leader(c, "after-scale") == leader


def test_helm_uninstall_leaves_crds_and_data(release: Cluster) -> None:
    c = release
    # A policy and old files it would delete if it ever ran (it has no schedule).
    files("kept", 5, age_days=40, prefix="old")
    c.apply(policy("kept", "kept"))
    kept = sorted(p.name for p in (DATA_HOST / "kept").iterdir())
    c.helm("uninstall", RELEASE, "--namespace", NS, "--wait")
    wait_for(lambda: not c.pods(), timeout=180, what="the pods gone")
    for crd in (RP, CJ):
        assert c.try_kubectl("get", "crd", crd), f"{crd} removed by helm uninstall"
    assert c.get(RP, "kept", APP_NS), "policies removed by helm uninstall"
    assert sorted(p.name for p in (DATA_HOST / "kept").iterdir()) == kept
    claims = json.loads(c.kubectl("get", "pvc", "-n", NS, "-o", "json"))["items"]
    assert len(claims) >= 3, "journal claims removed by helm uninstall"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-m", "e2e"]))
