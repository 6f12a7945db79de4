"""The operator end to end: three replicas, the real API server, real storage."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import LocalReplicas
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import condition, get

DAY = 86400
CJ = "cleanupjobs.lethe.io"


def files(root: Path, n: int, *, age_days: float, prefix: str = "f") -> list[Path]:
    out = []
    t = time.time() - age_days * DAY
    for i in range(n):
        p = root / f"{prefix}-{i:04d}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x" * 10)
        os.utime(p, (t, t))
        out.append(p)
    return out


def policy(name: str, ns: str, target: dict[str, Any], **spec: Any) -> dict[str, Any]:
    # Test targets are emptied on purpose: opt in to that (the allowDeleteAll brake
    # has its own tests in tests/runner/test_delete_all_brake.py).
    spec["safety"] = {"allowDeleteAll": True, **spec.get("safety", {})}
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"target": target, **spec}}


def job(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "CleanupJob",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def ns(kube: KubeCluster, name: str) -> str:
    kube.kubectl("create", "namespace", name, check=False)
    return name


def test_cleanupjob_enforces_once_and_reports(operators: LocalReplicas,
                                              crds_installed: KubeCluster) -> None:
    kube, n = crds_installed, ns(crds_installed, "e2e-job")
    root = operators.data_root / "job"  # type: ignore[attr-defined]
    old = files(root, 30, age_days=40, prefix="old")
    new = files(root, 10, age_days=1, prefix="new")
    kube.apply(policy("logs", n, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"}))
    kube.apply(job("now", n, policyRef={"name": "logs"}, mode="Enforce"))
    done = wait_for(lambda: (o := get(kube, CJ, "now", n)) and
                    (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") and o,
                    timeout=90, what="CleanupJob to finish")
    st = done["status"]
    assert st["phase"] == "Succeeded", st
    assert st["counters"]["deleted"] == 30 and st["counters"]["errors"] == 0
    assert not any(p.exists() for p in old) and all(p.exists() for p in new)
    assert condition(done, "Ready")["status"] == "True"  # type: ignore[index]
    # Exactly once: the run's ledger holds each key once, under the job's run id.
    lines = [json.loads(x) for f in (root / ".lethe/ledger").rglob("*.jsonl")
             for x in f.read_text().splitlines()]
    assert {x["run_id"] for x in lines} == {st["runId"]}
    assert sorted(Counter(x["key"] for x in lines).values()) == [1] * 30
    time.sleep(3)  # later ticks must not run it again
    again = get(kube, CJ, "now", n)
    assert again and again["status"]["runId"] == st["runId"]
    events = kube.kubectl("get", "events", "-n", n, "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"RunStarted", "RunFinished"} <= reasons
    # JSON logs a person can follow: every line of the run names it.
    lines = [json.loads(x) for r in operators.replicas
             for x in r.log_path.read_text(errors="replace").splitlines() if x.startswith("{")]
    of_run = [x for x in lines if x.get("run_id") == st["runId"]]
    assert of_run and all(x.get("policy") == "logs" and x.get("namespace") == n
                          for x in of_run)
    assert all("run_id" in x for x in lines if x.get("logger") == "lethe.runner")


def test_only_the_leader_writes_to_the_api(operators: LocalReplicas,
                                          crds_installed: KubeCluster) -> None:
    """I1, from the API server's own audit log: every write request (create, update,
    patch, delete) by the replicas' identities came from the Raft leader."""
    kube = crds_installed
    if kube.state_dir is None:
        import pytest
        pytest.skip("needs the test control plane's audit log (not an external cluster)")
    leader = operators.wait_leader()
    writers: Counter[str] = Counter()
    for line in (kube.state_dir / "logs" / "audit.log").read_text().splitlines():
        ev = json.loads(line)
        user = ev.get("user", {}).get("username", "")
        if user.startswith("system:serviceaccount:lethe-system:lethe-op-"):
            writers[user.rsplit("-", 1)[1]] += 1
    assert writers, "the leader wrote nothing at all: the audit log is not being read"
    assert set(writers) == {str(leader.index)}, (
        f"writes by replica(s) {dict(writers)}; only the leader {leader.index} may write")


def test_default_plan_mode_reports_and_deletes_nothing(operators: LocalReplicas,
                                                       crds_installed: KubeCluster) -> None:
    kube, n = crds_installed, ns(crds_installed, "e2e-plan")
    root = operators.data_root / "plan"  # type: ignore[attr-defined]
    old = files(root, 12, age_days=40)
    kube.apply(policy("dry", n, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"},
                      schedule="* * * * *"))
    obj = wait_for(lambda: (o := get(kube, "rp", "dry", n)) and
                   ((o.get("status") or {}).get("lastRun") or {}).get("result") and o,
                   timeout=100, what="a scheduled plan run")
    st = obj["status"]
    assert st["lastRun"]["result"] == "Planned" and st["lastRun"]["deleted"] == 0
    assert st["eligible"] == 12 and st["lastPlan"]["matched"] == 12
    assert "maxAge" in st["lastPlan"]["rules"]
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    assert st["nextRunTime"] > st["lastRun"]["start"], st  # RFC 3339 UTC strings sort
    assert all(p.exists() for p in old)
    plans = list((root / ".lethe/plans/dry").glob("*.jsonl"))
    assert len(plans) == 1 and len(plans[0].read_text().splitlines()) == 12
    printed = kube.kubectl("get", "rp", "dry", "-n", n).stdout
    assert "Planned" in printed


def test_unreachable_target_is_a_condition(operators: LocalReplicas,
                                           crds_installed: KubeCluster) -> None:
    kube, n = crds_installed, ns(crds_installed, "e2e-unreachable")
    missing = operators.data_root / "not-mounted"  # type: ignore[attr-defined]
    kube.apply(policy("gone", n, {"posix": {"path": str(missing)}}, rules={"maxAge": "1d"},
                      mode="Enforce"))
    kube.apply(job("try", n, policyRef={"name": "gone"}, mode="Enforce"))
    obj = wait_for(lambda: (o := get(kube, CJ, "try", n)) and condition(o, "Stalled") and
                   condition(o, "Stalled")["status"] == "True" and o,  # type: ignore[index]
                   timeout=60, what="Stalled condition")
    assert condition(obj, "Stalled")["reason"] == "TargetUnreachable"  # type: ignore[index]
    assert all(r.get("/healthz")[0] == 200 for r in operators.replicas)


def test_target_outside_allowed_roots_is_refused(operators: LocalReplicas,
                                                 crds_installed: KubeCluster,
                                                 tmp_path: Path) -> None:
    kube, n = crds_installed, ns(crds_installed, "e2e-tenancy")
    victim = files(tmp_path / "elsewhere", 3, age_days=90)
    kube.apply(policy("escape", n, {"posix": {"path": str(tmp_path / "elsewhere")}},
                      rules={"maxAge": "1d"}, mode="Enforce"))
    kube.apply(job("escape", n, policyRef={"name": "escape"}, mode="Enforce"))
    obj = wait_for(lambda: (o := get(kube, CJ, "escape", n)) and
                   (o.get("status") or {}).get("phase") == "Failed" and o, timeout=60,
                   what="job refused")
    assert condition(obj, "Stalled")["reason"] == "TargetNotAllowed"  # type: ignore[index]
    assert all(p.exists() for p in victim)


def test_brake_holds_until_acknowledged(operators: LocalReplicas,
                                        crds_installed: KubeCluster) -> None:
    kube, n = crds_installed, ns(crds_installed, "e2e-brake")
    root = operators.data_root / "brake"  # type: ignore[attr-defined]
    old = files(root, 20, age_days=40)
    kube.apply(policy("braked", n, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"},
                      mode="Enforce", schedule="* * * * *", safety={"maxDeletes": 5}))
    obj = wait_for(lambda: (o := get(kube, "rp", "braked", n)) and
                   (c := condition(o, "Stalled")) and c["reason"] == "SafetyBrake" and o,
                   timeout=100, what="SafetyBrake")
    assert all(p.exists() for p in old)
    run_id = obj["status"]["stalledRun"]["id"]
    assert run_id in condition(obj, "Stalled")["message"]  # type: ignore[index]
    kube.kubectl("annotate", "rp", "braked", "-n", n, f"lethe.io/acknowledge-run={run_id}")
    wait_for(lambda: not any(p.exists() for p in old), timeout=60,
             what="deletion after acknowledgement")
    # Not Reconciling either: while the acknowledged run is in progress, Stalled is
    # already False but its report (stalledRun cleared) is still to come.
    obj = wait_for(lambda: (o := get(kube, "rp", "braked", n)) and
                   condition(o, "Stalled")["status"] == "False" and  # type: ignore[index]
                   condition(o, "Reconciling")["status"] == "False" and o,  # type: ignore[index]
                   timeout=30, what="Stalled cleared and the run reported")
    # The acknowledged run deleted all 20, once (a later minute's slot may already
    # have run and found nothing, so read it from the ledger, not lastRun).
    lines = [json.loads(x) for f in (root / ".lethe/ledger").rglob("*.jsonl")
             for x in f.read_text().splitlines()]
    assert sorted(x["key"] for x in lines if x["outcome"] == "deleted") == sorted(
        p.name for p in old)
    assert len({x["run_id"] for x in lines}) == 1 and run_id not in {x["run_id"] for x in lines}
    assert obj["status"].get("stalledRun") is None


def _upload(client: Any, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"d" * 8), keys))


def _listed(client: Any, bucket: str, prefix: str) -> dict[str, Any]:
    """ListObjectsV2, polled again when moto answers 500: it did, after botocore's
    retries, while a run's concurrent deletes were in flight on a loaded machine."""
    for _ in range(5):
        try:
            return client.list_objects_v2(Bucket=bucket, Prefix=prefix)  # type: ignore[no-any-return]
        except client.exceptions.ClientError as e:
            if int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) < 500:
                raise
            time.sleep(1)
    raise AssertionError("moto kept answering 500 to a ListObjectsV2")


def test_failover_mid_run_finishes_the_same_run(operators: LocalReplicas,
                                               crds_installed: KubeCluster,
                                               s3_server: Any, s3_bucket: str) -> None:
    kube, n = crds_installed, ns(crds_installed, "e2e-failover")
    client = s3_server.client()
    keys = [f"data/obj-{i:05d}" for i in range(6000)]
    _upload(client, s3_bucket, keys)
    time.sleep(3)
    kube.kubectl("create", "secret", "generic", "s3", "-n", n,
                 f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
                 f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_server.secret_key}", check=False)
    kube.apply(policy("bucket", n, {"s3": {
        "bucket": s3_bucket, "prefix": "data/", "endpoint": s3_server.endpoint,
        "region": "us-east-1", "forcePathStyle": True,
        "credentialsSecretRef": {"name": "s3"}}}, rules={"maxAge": "2s"},
        # 30 batches: the kill lands mid-run even when polling the ledger lags (with
        # 6 batches of 1,000 the run had once ended before it, at load 24).
        batchSize=200))
    operators.wait_leader()
    kube.apply(job("big", n, policyRef={"name": "bucket"}, mode="Enforce"))

    def ledger_keys() -> list[str]:
        out = _listed(client, s3_bucket, "data/.lethe/ledger/")
        return [o["Key"] for o in out.get("Contents", [])]

    wait_for(lambda: len(ledger_keys()) >= 1, timeout=90, interval=0.1,
             what="the first batch's ledger file")
    # The leader now, the one deleting: under load the lease can move between the
    # job's creation and its first batch (full pytest run, session 11: the node
    # killed was a follower by then, and the run stayed in one term).
    first = operators.wait_leader()
    operators.kill(first.index)  # SIGKILL, in the middle of the run
    second = operators.wait_leader(timeout=30, exclude=first)
    assert second is not first
    done = wait_for(lambda: (o := get(kube, CJ, "big", n)) and
                    (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") and o,
                    timeout=180, what="the resumed job")
    operators.start(first.index)
    st = done["status"]
    assert st["phase"] == "Succeeded", st
    left = client.list_objects_v2(Bucket=s3_bucket, Prefix="data/obj-").get("KeyCount", 0)
    assert left == 0
    lines = []
    for k in ledger_keys():
        body = client.get_object(Bucket=s3_bucket, Key=k)["Body"].read().decode()
        lines += [json.loads(x) for x in body.splitlines()]
    per_key = Counter(x["key"] for x in lines)
    assert set(per_key) == set(k.removeprefix("data/") for k in keys)
    assert set(per_key.values()) == {1}, "a key was recorded (deleted) twice"
    assert {x["run_id"] for x in lines} == {st["runId"]}, "the new leader began a new run"
    assert st["counters"]["deleted"] == len(keys)
    assert len({x["term"] for x in lines}) >= 2  # batches authorised by both terms
    operators.wait_ready(timeout=60)


def test_secrets_never_appear_in_logs_events_or_status(operators: LocalReplicas,
                                                        crds_installed: KubeCluster) -> None:
    kube, n = crds_installed, ns(crds_installed, "e2e-secrets")
    secret = "s3cr3t-" + os.urandom(6).hex()
    kube.kubectl("create", "secret", "generic", "creds", "-n", n,
                 "--from-literal=AWS_ACCESS_KEY_ID=AKIAEXAMPLE",
                 f"--from-literal=AWS_SECRET_ACCESS_KEY={secret}")
    kube.apply(policy("leaky", n, {"s3": {"bucket": "no-such-bucket",
                                          "endpoint": "http://127.0.0.1:9",
                                          "credentialsSecretRef": {"name": "creds"}}},
                      rules={"maxAge": "1d"}, mode="Enforce"))
    kube.apply(job("leaky", n, policyRef={"name": "leaky"}, mode="Enforce"))
    wait_for(lambda: (o := get(kube, CJ, "leaky", n)) and condition(o, "Stalled"),
             timeout=60, what="a reported failure")
    seen = kube.kubectl("get", "rp,cleanupjobs.lethe.io,events", "-n", n, "-o", "yaml").stdout
    logs = "".join(r.log_path.read_text(errors="replace") for r in operators.replicas)
    assert secret not in seen and secret not in logs


# Two minute-slots (up to 60 s each to arrive), 4,000 uploads and their deletes by
# single If-Match requests: ~3 min, and past the suite's 300 s under heavy load.
@pytest.mark.timeout(600)
def test_suspend_mid_run_stops_between_batches_then_resume_finishes(
        operators: LocalReplicas, crds_installed: KubeCluster, s3_server: Any,
        s3_bucket: str) -> None:
    """A scheduled Enforce run is suspended mid-run (the same path as an edit or a
    deletion of the policy): it stops between batches as Aborted and nothing more is
    deleted; resuming lets the next slot finish the job."""
    kube, n = crds_installed, ns(crds_installed, "e2e-suspend")
    client = s3_server.client()
    # Forty batches of 100, each with its ledger write and journal commit, so the
    # suspend lands while batches remain; few enough keys that the finishing run fits
    # under CI's load (10,000 keys once took more than 150 s there).
    keys = [f"s/obj-{i:05d}" for i in range(4000)]
    _upload(client, s3_bucket, keys)
    kube.kubectl("create", "secret", "generic", "s3", "-n", n,
                 f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
                 f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_server.secret_key}", check=False)
    kube.apply(policy("sched", n, {"s3": {
        "bucket": s3_bucket, "prefix": "s/", "endpoint": s3_server.endpoint,
        "region": "us-east-1", "forcePathStyle": True, "credentialsSecretRef": {"name": "s3"}}},
        rules={"maxAge": "2s"}, mode="Enforce", schedule="* * * * *", batchSize=100))

    def ledgers() -> int:
        return int(_listed(client, s3_bucket, "s/.lethe/ledger/").get("KeyCount", 0))

    wait_for(lambda: ledgers() >= 1, timeout=100, interval=0.1, what="a scheduled run mid-way")
    kube.kubectl("patch", "rp", "sched", "-n", n, "--type=merge", "-p",
                 '{"spec":{"suspend":true}}')
    obj = wait_for(lambda: (o := get(kube, "rp", "sched", n)) and
                   ((o.get("status") or {}).get("lastRun") or {}).get("result") and o,
                   timeout=60, what="the run to stop")
    assert obj["status"]["lastRun"]["result"] == "Aborted", obj["status"]["lastRun"]
    settled = ledgers()
    left = client.list_objects_v2(Bucket=s3_bucket, Prefix="s/obj-").get("KeyCount", 0)
    assert 0 < left < len(keys)
    time.sleep(5)
    assert ledgers() == settled, "deleted more after the suspend"
    wait_for(lambda: (c := condition(get(kube, "rp", "sched", n), "Ready")) and
             c["reason"] == "Suspended", timeout=30, what="Ready/Suspended")
    kube.kubectl("patch", "rp", "sched", "-n", n, "--type=merge", "-p",
                 '{"spec":{"suspend":false}}')
    try:
        wait_for(lambda: client.list_objects_v2(Bucket=s3_bucket, Prefix="s/obj-")
                 .get("KeyCount", 0) == 0, timeout=240, what="the next slot to finish the job")
    except AssertionError as e:
        status = (get(kube, "rp", "sched", n) or {}).get("status")
        left = client.list_objects_v2(Bucket=s3_bucket, Prefix="s/obj-").get("KeyCount", 0)
        raise AssertionError(f"{e}; {left} keys left; status: {status}") from None
