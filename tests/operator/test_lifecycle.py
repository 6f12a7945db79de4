"""A run's lifecycle edges, end to end (issue #6): the leader killed at a scheduled
slot, the policy edited mid-run (also while no leader runs it), the policy deleted
mid-run.

Three real replicas (their own module-scoped set), the real API server, POSIX
directories and moto S3. Each scheduled policy fires once an hour, at the first
minute boundary a few seconds after it is created (``next_slot``): a test waits
for at most one boundary, and no later slot of the same policy can blur "this
slot ran exactly once".
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import LocalReplicas
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import NS, condition, get, render_rbac, sa_kubeconfig
from tests.operator.test_operator import CJ, _upload, files, job, ns, policy


@pytest.fixture(scope="module")
def identities(crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
               ) -> list[str]:
    """conftest's identities under other ServiceAccount names (bound by the same chart
    RBAC, next to conftest's): test_operator.py proves I1 from the audit log by name,
    assuming one leader per session, and leadership moves here by design."""
    kube = crds_installed
    d = tmp_path_factory.mktemp("identities")
    kube.kubectl("create", "namespace", NS, check=False)
    names = [f"lethe-lc-{i}" for i in range(3)]
    for name in names:
        kube.kubectl("create", "serviceaccount", name, "-n", NS, check=False)
    bound = names + [f"lethe-op-{i}" for i in range(3)]
    for o in render_rbac():
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            o["subjects"] = [{"kind": "ServiceAccount", "name": x, "namespace": NS}
                             for x in bound]
        kube.apply(o)
    return [sa_kubeconfig(kube, sa=x, path=d / f"{x}.kubeconfig") for x in names]


def next_slot(*, lead: float = 3.0) -> tuple[str, str]:
    """A cron that fires once an hour, at the first minute boundary at least ``lead``
    seconds from now, and that slot's id as the journal and the logs spell it."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead)
    boundary = at.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return f"{boundary.minute} * * * *", boundary.strftime("%Y-%m-%dT%H:%M:%SZ")


class LogTail:
    """The replicas' JSON log lines written since this was made, read incrementally,
    so a test can act (SIGKILL) within milliseconds of the line it waits for."""

    def __init__(self, reps: LocalReplicas) -> None:
        self.reps = reps
        self.pos = {r.index: r.log_path.stat().st_size for r in reps.replicas}

    def new_lines(self) -> list[tuple[int, dict[str, Any]]]:
        out: list[tuple[int, dict[str, Any]]] = []
        for r in self.reps.replicas:
            with open(r.log_path, "rb") as f:
                f.seek(self.pos[r.index])
                data = f.read()
            whole = data[:data.rfind(b"\n") + 1]  # a line still being written waits
            self.pos[r.index] += len(whole)
            for raw in whole.splitlines():
                if raw.startswith(b"{"):
                    try:
                        out.append((r.index, json.loads(raw)))
                    except ValueError:
                        continue
        return out


def log_lines(reps: LocalReplicas) -> list[dict[str, Any]]:
    out = []
    for r in reps.replicas:
        for raw in r.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
    return out


def tracebacks(reps: LocalReplicas) -> list[str]:
    return [line[:2000] for r in reps.replicas
            for line in r.log_path.read_text(errors="replace").splitlines()
            if "Traceback" in line]


def posix_ledger(root: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for f in sorted((root / ".lethe/ledger").rglob("*.jsonl"))
            for x in f.read_text().splitlines()]


def s3_ledger(client: Any, bucket: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Each ledger file (one per batch) of the target, by key, with its lines."""
    out: dict[str, list[dict[str, Any]]] = {}
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}.lethe/ledger/")
    for page in pages:
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
            out[o["Key"]] = [json.loads(x) for x in body.splitlines()]
    return out


def s3_count(client: Any, bucket: str, prefix: str) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(int(p.get("KeyCount", 0)) for p in pages)


def s3_secret(kube: KubeCluster, n: str, s3_server: Any) -> None:
    kube.kubectl("create", "secret", "generic", "s3", "-n", n,
                 f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
                 f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_server.secret_key}", check=False)


def s3_target(s3_server: Any, bucket: str, prefix: str) -> dict[str, Any]:
    return {"s3": {"bucket": bucket, "prefix": prefix, "endpoint": s3_server.endpoint,
                   "region": "us-east-1", "forcePathStyle": True,
                   "credentialsSecretRef": {"name": "s3"}}}


def events(kube: KubeCluster, n: str, name: str, reason: str) -> list[dict[str, Any]]:
    items = json.loads(kube.kubectl("get", "events", "-n", n, "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"].get("name") == name
            and e["involvedObject"].get("kind") == "RetentionPolicy" and e["reason"] == reason]


def wait_finished_job(kube: KubeCluster, name: str, n: str, *, timeout: float = 90
                      ) -> dict[str, Any]:
    done: dict[str, Any] = wait_for(
        lambda: (o := get(kube, CJ, name, n)) and
        (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") and o,
        timeout=timeout, what=f"CleanupJob {n}/{name} to finish")
    return done


# -- 1. the leader killed at a scheduled slot ---------------------------------------


@pytest.mark.parametrize("kill_on", ["starting", "first-batch"])
def test_leader_killed_at_a_scheduled_slot_runs_it_exactly_once(
        operators: LocalReplicas, crds_installed: KubeCluster, kill_on: str) -> None:
    """SIGKILL the leader as it takes up a slot: on its "run … starting (slot …)" line
    (before its status write, before BeginRun: the slot is not consumed yet, the new
    leader must still run it, once), or as its first batch's ledger file appears
    (BeginRun committed: the slot is consumed, only a resume of that very run may
    finish it). Either way: one run id in the ledger, each file once, one
    RunFinished, no missed slot, no second run."""
    kube, n = crds_installed, ns(crds_installed, f"e2e-slot-{kill_on}")
    root = operators.data_root / f"slot-{kill_on}"  # type: ignore[attr-defined]
    old = files(root, 6000 if kill_on == "first-batch" else 3000, age_days=40, prefix="old")
    new = files(root, 5, age_days=1, prefix="new")
    tail = LogTail(operators)
    cron, slot = next_slot()
    kube.apply(policy("hourly", n, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"},
                      mode="Enforce", schedule=cron))
    marker = f"starting (slot {slot}, mode Enforce)"
    index, line = wait_for(
        lambda: next(((i, x) for i, x in tail.new_lines() if x.get("namespace") == n
                      and marker in str(x.get("message"))), None),
        timeout=100, interval=0.02, what=f"the leader to log {marker!r}")
    first_id = line["run_id"]
    if kill_on == "first-batch":
        ledger_dir = root / ".lethe/ledger"
        wait_for(lambda: ledger_dir.is_dir() and any(ledger_dir.rglob("*.jsonl")),
                 timeout=60, interval=0.02, what="the slot's first batch")
        first_id = next(ledger_dir.iterdir()).name
        now = operators.leader()  # leadership may have moved (under load) since the line
        index = now.index if now is not None else index
    operators.kill(index)
    killed = operators.replicas[index]
    operators.wait_leader(timeout=30, exclude=killed)
    obj = wait_for(lambda: (o := get(kube, "rp", "hourly", n)) and
                   ((o.get("status") or {}).get("lastRun") or {}).get("result") and o,
                   timeout=120, what="the slot's run to finish under the new leader")
    operators.start(index)
    operators.wait_ready(timeout=90)  # a few ticks pass: a second run would begin now

    last = obj["status"]["lastRun"]
    assert last["result"] == "Succeeded", last
    assert not any(p.exists() for p in old), "the slot never ran (fully)"
    assert all(p.exists() for p in new)
    lines = posix_ledger(root)
    assert {x["run_id"] for x in lines} == {last["id"]}, "the slot ran under two run ids"
    per_key = Counter(x["key"] for x in lines)
    assert set(per_key) == {p.name for p in old}
    assert set(per_key.values()) == {1}, "a file was deleted (recorded) twice"
    assert last["deleted"] == len(old)
    # Which path it took: the killed leader's run resumed, or (killed before BeginRun)
    # a new run for the same slot; never both, never a run for another slot.
    # (Under load, leadership may move more than once: more runs may log "starting"
    # for the slot, but only the one whose BeginRun the journal accepted goes on.)
    logged = log_lines(operators)
    for_slot = {x["run_id"] for x in logged if x.get("namespace") == n
                and f"starting (slot {slot}," in str(x.get("message"))}
    resumed = {x["run_id"] for x in logged if x.get("namespace") == n
               and str(x.get("message", "")).startswith("resuming run")}
    assert last["id"] in for_slot, (for_slot, last)
    assert resumed <= {last["id"]}, f"resumed a run that did not finish the slot: {resumed}"
    if kill_on == "first-batch":  # the journal held the slot's run: only it may finish
        assert last["id"] == first_id and resumed == {first_id}, (first_id, last, resumed)
    print(f"kill on {kill_on!r}: run {first_id} "
          f"{'resumed' if last['id'] == first_id else 'never began; new run ' + last['id']}")
    finished = events(kube, n, "hourly", "RunFinished")
    assert len(finished) == 1 and last["id"] in finished[0]["message"], finished
    again = get(kube, "rp", "hourly", n)
    assert again and again["status"]["lastRun"]["id"] == last["id"]
    assert not again["status"].get("missedSlots") and condition(again, "MissedSchedule") is None
    assert condition(again, "Stalled")["status"] == "False"  # type: ignore[index]
    assert posix_ledger(root) == lines
    assert not tracebacks(operators)


# -- 2. the policy edited mid-run ----------------------------------------------------


def test_policy_edit_mid_run_stops_between_batches_and_the_next_run_uses_the_new_spec(
        operators: LocalReplicas, crds_installed: KubeCluster, s3_server: Any,
        s3_bucket: str) -> None:
    """A run belongs to the generation it began under. Raising retention mid-run
    (keepLast, so the newer wave is now kept) stops the run between batches: the
    batch in progress finishes, no later batch deletes anything, none of what the
    new spec keeps is touched, the status observes the new generation, and the next
    run deletes exactly what the new spec says."""
    kube, n = crds_installed, ns(crds_installed, "e2e-edit")
    client = s3_server.client()
    # Listed (and deleted) first, three batches: the edit lands during the second, and
    # even if a failover hides which batch was in progress (the new leader then finishes
    # one more), the newer wave's batch (the fourth) is never reached.
    older = [f"e/a-{i:05d}" for i in range(3000)]
    newer = [f"e/b-{i:05d}" for i in range(500)]
    _upload(client, s3_bucket, older)
    # S3's LastModified has one-second resolution: the newer wave must be strictly newer.
    time.sleep(1.05 - time.time() % 1.0)
    _upload(client, s3_bucket, newer)
    s3_secret(kube, n, s3_server)
    cron, _slot = next_slot()
    kube.apply(policy("edited", n, s3_target(s3_server, s3_bucket, "e/"),
                      rules={"maxAge": "2s"}, mode="Enforce", schedule=cron))
    wait_for(lambda: s3_ledger(client, s3_bucket, "e/"), timeout=180, interval=0.1,
             what="the scheduled run's first batch")
    out = kube.kubectl("patch", "rp", "edited", "-n", n, "--type=merge", "-o", "json",
                       "-p", json.dumps({"spec": {"rules": {"keepLast": len(newer)}}}))
    edited_at = time.time()
    generation = json.loads(out.stdout)["metadata"]["generation"]

    obj = wait_for(lambda: (o := get(kube, "rp", "edited", n)) and
                   ((o.get("status") or {}).get("lastRun") or {}).get("result") and o,
                   timeout=150, what="the run to stop")
    last = obj["status"]["lastRun"]
    assert last["result"] == "Aborted" and "cancelled" in last["message"], last
    aborted = s3_ledger(client, s3_bucket, "e/")
    assert {x["run_id"] for lines in aborted.values() for x in lines} == {last["id"]}
    gone = {x["key"] for lines in aborted.values() for x in lines}
    assert gone <= {k.removeprefix("e/") for k in older}, "deleted what the new spec keeps"
    assert s3_count(client, s3_bucket, "e/b-") == len(newer)
    assert s3_count(client, s3_bucket, "e/a-") < len(older)
    # Between batches: only the batch in progress when the edit landed (and at most one
    # begun while the watch delivered it) may finish after the edit was written.
    late = [k for k, lines in aborted.items() if max(x["time"] for x in lines) > edited_at]
    assert len(late) <= 2, f"batches finished after the edit: {sorted(late)}"

    # The status catches up with the new generation once the run has stopped.
    obj = wait_for(lambda: (o := get(kube, "rp", "edited", n)) and
                   o["status"].get("observedGeneration") == generation and o,
                   timeout=30, what="observedGeneration to reach the edit")
    conds = obj["status"]["conditions"]
    assert {c["observedGeneration"] for c in conds} == {generation}, conds
    assert condition(obj, "Reconciling")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]

    # The next run uses the new spec: the rest of the older wave goes, the newer stays.
    kube.apply(job("after-edit", n, policyRef={"name": "edited"}, mode="Enforce"))
    st = wait_finished_job(kube, "after-edit", n, timeout=120)["status"]
    assert st["phase"] == "Succeeded", st
    assert s3_count(client, s3_bucket, "e/a-") == 0
    assert s3_count(client, s3_bucket, "e/b-") == len(newer)
    lines = [x for ls in s3_ledger(client, s3_bucket, "e/").values() for x in ls]
    assert Counter(x["key"] for x in lines) == Counter(k.removeprefix("e/") for k in older)
    assert {x["run_id"] for x in lines} == {last["id"], st["runId"]}
    assert st["counters"]["deleted"] == len(older) - len(gone)
    assert all(r.get("/healthz")[0] == 200 for r in operators.replicas)
    assert not tracebacks(operators)


def test_policy_switched_to_plan_while_no_leader_runs_it_is_not_resumed(
        operators: LocalReplicas, crds_installed: KubeCluster, s3_server: Any,
        s3_bucket: str) -> None:
    """The run's leader dies mid-run and, before any replica leads again, the policy is
    switched to Plan. Resuming the journal's run (Enforce) would re-plan with the new
    spec and go on deleting, past its mode and its brakes. The new leader instead stops
    it as a cancel between batches does: it finishes at most the one batch that may
    have been in progress, closes the rest unexecuted, and records the run Aborted."""
    kube, n = crds_installed, ns(crds_installed, "e2e-edit-failover")
    client = s3_server.client()
    keys = [f"p/obj-{i:05d}" for i in range(3000)]
    _upload(client, s3_bucket, keys)
    s3_secret(kube, n, s3_server)
    cron, _slot = next_slot()
    kube.apply(policy("switched", n, s3_target(s3_server, s3_bucket, "p/"),
                      rules={"maxAge": "2s"}, mode="Enforce", schedule=cron))
    first = wait_for(lambda: s3_ledger(client, s3_bucket, "p/"), timeout=180, interval=0.1,
                     what="the scheduled run's first batch")
    run_id = next(iter(first.values()))[0]["run_id"]
    # No quorum, so no leader at all: one replica SIGKILLed (the leader, if one leads
    # right now), another SIGSTOPped. Nobody can act on the edit before a restart.
    dead = operators.leader() or operators.replicas[0]
    paused = next(r for r in operators.replicas if r is not dead)
    operators.signal(paused.index, signal.SIGSTOP)
    try:
        operators.kill(dead.index)
        at_kill = s3_ledger(client, s3_bucket, "p/")
        left = s3_count(client, s3_bucket, "p/obj-")
        assert left > 1000, "the run got too far to tell"
        out = kube.kubectl("patch", "rp", "switched", "-n", n, "--type=merge", "-o", "json",
                           "-p", '{"spec":{"mode":"Plan"}}')
        generation = json.loads(out.stdout)["metadata"]["generation"]
        operators.start(dead.index)  # quorum again; its first LIST sees the edit
        operators.wait_leader(timeout=60)
    finally:
        operators.signal(paused.index, signal.SIGCONT)
    obj = wait_for(lambda: (o := get(kube, "rp", "switched", n)) and
                   ((o.get("status") or {}).get("lastRun") or {}).get("result") and o,
                   timeout=120, what="the new leader to settle the interrupted run")
    last = obj["status"]["lastRun"]
    assert last["id"] == run_id and last["result"] == "Aborted", last
    after = s3_ledger(client, s3_bucket, "p/")
    assert len(set(after) - set(at_kill)) <= 1, sorted(set(after) - set(at_kill))
    remaining = s3_count(client, s3_bucket, "p/obj-")
    assert left - 1000 <= remaining <= left, (left, remaining)
    assert any(str(x.get("message", "")).startswith(f"resuming run {run_id}")
               for x in log_lines(operators)), "not settled by the resume path"
    obj = wait_for(lambda: (o := get(kube, "rp", "switched", n)) and
                   o["status"].get("observedGeneration") == generation and o,
                   timeout=30, what="observedGeneration to reach the edit")
    assert condition(obj, "Reconciling")["status"] == "False"  # type: ignore[index]
    operators.wait_ready(timeout=90)
    assert s3_count(client, s3_bucket, "p/obj-") == remaining  # Plan deletes nothing
    assert not tracebacks(operators)


# -- 3. the policy deleted mid-run ---------------------------------------------------


def run_ended(reps: LocalReplicas, run_id: str) -> str | None:
    """How the run ended, from the logs: stopped by its runner between batches, or
    (if leadership moved meanwhile) closed by the next leader because its policy is
    gone."""
    for x in log_lines(reps):
        msg = str(x.get("message", ""))
        if msg.startswith(f"run {run_id} Aborted: "):
            return "runner"
        if msg.startswith(f"abandoned run {run_id} "):
            return "abandoned"
    return None


def test_policy_deleted_mid_run_is_cancelled_cleanly(
        operators: LocalReplicas, crds_installed: KubeCluster, s3_server: Any,
        s3_bucket: str) -> None:
    """Deleting the policy mid-run stops its run between batches (Aborted), deletes
    nothing more, writes no status to the deleted object in a loop, logs no
    traceback, and the leader goes on serving other work."""
    kube, n = crds_installed, ns(crds_installed, "e2e-delete")
    client = s3_server.client()
    keys = [f"d/obj-{i:05d}" for i in range(3000)]
    _upload(client, s3_bucket, keys)
    s3_secret(kube, n, s3_server)
    cron, _slot = next_slot()
    kube.apply(policy("doomed", n, s3_target(s3_server, s3_bucket, "d/"),
                      rules={"maxAge": "2s"}, mode="Enforce", schedule=cron))
    first = wait_for(lambda: s3_ledger(client, s3_bucket, "d/"), timeout=180, interval=0.1,
                     what="the scheduled run's first batch")
    run_id = next(iter(first.values()))[0]["run_id"]
    deleted_at = time.time()
    kube.kubectl("delete", "rp", "doomed", "-n", n)
    how = wait_for(lambda: run_ended(operators, run_id), timeout=90,
                   what=f"run {run_id} to end Aborted")
    settled = s3_ledger(client, s3_bucket, "d/")
    left = s3_count(client, s3_bucket, "d/obj-")
    assert 0 < left < len(keys), "stopped too late to tell"
    assert {x["run_id"] for lines in settled.values() for x in lines} == {run_id}
    late = [k for k, lines in settled.items() if max(x["time"] for x in lines) > deleted_at]
    assert len(late) <= 2, f"batches finished after the deletion: {sorted(late)}"

    # The leader goes on working: another policy's CleanupJob succeeds.
    root = operators.data_root / "after-delete"  # type: ignore[attr-defined]
    victims = files(root, 7, age_days=40)
    kube.apply(policy("other", n, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"}))
    kube.apply(job("other-now", n, policyRef={"name": "other"}, mode="Enforce"))
    st = wait_finished_job(kube, "other-now", n)["status"]
    assert st["phase"] == "Succeeded" and st["counters"]["deleted"] == 7, st
    assert not any(p.exists() for p in victims)
    # Nothing more was deleted by the cancelled run meanwhile. (Under load a deposed
    # leader may still finish the batch it had begun, after the next leader closed
    # the run: that batch is still one of the at most two "late" ones.)
    final = s3_ledger(client, s3_bucket, "d/")
    late = [k for k, lines in final.items() if max(x["time"] for x in lines) > deleted_at]
    assert len(late) <= 2, f"batches finished after the deletion: {sorted(late)}"
    remaining = s3_count(client, s3_bucket, "d/obj-")
    assert remaining > 0 and remaining <= left
    deleted = {x["key"] for lines in final.values() for x in lines
               if x["outcome"] in ("deleted", "already-gone")}
    assert len(deleted) == len(keys) - remaining, "a delete without its ledger line"
    finished = events(kube, n, "doomed", "RunFinished")
    assert len(finished) == (1 if how == "runner" else 0), finished
    assert all(f"run {run_id} Aborted" in e["message"] for e in finished), finished

    # No status writes to the deleted object in a loop (the API server's audit log).
    if kube.state_dir is not None:
        writes = []
        for raw in (kube.state_dir / "logs" / "audit.log").read_text().splitlines():
            ev = json.loads(raw)
            ref = ev.get("objectRef") or {}
            if (ref.get("resource"), ref.get("namespace"), ref.get("name")) != (
                    "retentionpolicies", n, "doomed") or ev["verb"] == "delete":
                continue
            t = dt.datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if t.timestamp() > deleted_at:
                writes.append((ev["verb"], ref.get("subresource"),
                               ev.get("responseStatus", {}).get("code")))
        # The run's own final report (a 404), once; a loop would write at every tick.
        assert len(writes) <= 1, writes
    errors = [x for x in log_lines(operators) if x.get("level") in ("ERROR", "CRITICAL")
              and "doomed" in json.dumps(x)]
    assert not errors, errors
    assert not tracebacks(operators)
    assert all(r.get("/healthz")[0] == 200 for r in operators.replicas)


# -- 4. the policy of a CleanupJob edited mid-run --------------------------------------


def test_policy_ref_job_stops_when_its_policy_is_edited(
        operators: LocalReplicas, crds_installed: KubeCluster, s3_server: Any,
        s3_bucket: str) -> None:
    """A CleanupJob with ``policyRef`` runs the policy as it was when the run began
    (``status.policyGeneration``). Editing the policy mid-run (a ``keepLast`` that
    keeps every object) stops the job's run between batches, and the job ends
    Failed with its run Aborted: nothing more is deleted for the old spec."""
    kube, n = crds_installed, ns(crds_installed, "e2e-job-edit")
    client = s3_server.client()
    keys = [f"j/obj-{i:05d}" for i in range(3000)]
    _upload(client, s3_bucket, keys)
    s3_secret(kube, n, s3_server)
    kube.apply(policy("referenced", n, s3_target(s3_server, s3_bucket, "j/"),
                      rules={"maxAge": "2s"}))
    began = get(kube, "rp", "referenced", n)["metadata"]["generation"]  # type: ignore[index]
    time.sleep(3)  # every object is now older than maxAge
    kube.apply(job("ref-job", n, policyRef={"name": "referenced"}, mode="Enforce"))
    wait_for(lambda: s3_ledger(client, s3_bucket, "j/"), timeout=120, interval=0.1,
             what="the job's first batch")
    kube.kubectl("patch", "rp", "referenced", "-n", n, "--type=merge",
                 "-p", json.dumps({"spec": {"rules": {"keepLast": len(keys)}}}))
    edited_at = time.time()

    st = wait_finished_job(kube, "ref-job", n, timeout=120)["status"]
    assert st["phase"] == "Failed", st
    assert st["policyGeneration"] == began, st
    stalled = condition({"status": st}, "Stalled")
    assert stalled is not None and stalled["reason"] == "Aborted", st["conditions"]
    assert "cancelled" in stalled["message"], stalled
    ledger = s3_ledger(client, s3_bucket, "j/")
    assert {x["run_id"] for lines in ledger.values() for x in lines} == {st["runId"]}
    late = [k for k, lines in ledger.items() if max(x["time"] for x in lines) > edited_at]
    assert len(late) <= 2, f"batches finished after the edit: {sorted(late)}"
    remaining = s3_count(client, s3_bucket, "j/obj-")
    assert remaining > 0, "the run was not stopped"
    deleted = {x["key"] for lines in ledger.values() for x in lines
               if x["outcome"] in ("deleted", "already-gone")}
    assert len(deleted) == len(keys) - remaining, "a delete without its ledger line"
    assert st["counters"]["deleted"] == len(deleted), st["counters"]
    assert not tracebacks(operators)
