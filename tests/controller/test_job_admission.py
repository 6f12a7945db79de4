"""A CleanupJob never takes over a scheduled run of its policy.

The journal allows one active run per policy. A scheduled run that stopped on
an error stays active there and is resumed only after ``RETRY_SECONDS``; a
CleanupJob with ``policyRef`` to the same policy that was reconciled in that
window used to be started, and ``_job_run`` adopts the policy's active run:
the job reported the scheduled run's id and counters as its own and never ran
itself (found while adding scheduled runs to the chaos trials). The job must
wait until the policy's run ends.

The journal is a real one-node Raft journal; the BeginRun is committed
directly because a stopped-on-error run is the state under test. The
Kubernetes writer is never reached on the path under test (admission returns
before any API call), so ``writer`` is ``None``: with the old admission the
run thread fails on it, which is where the test's assertion already failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lethe.controller.config import parse_config
from lethe.controller.leader import Inventory, Leader
from lethe.journal import BeginRun
from lethe.metrics import Metrics
from lethe.raft.local import local_journal


def _obj(kind: str, name: str, spec: dict[str, Any], uid: str) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": kind, "spec": spec,
            "metadata": {"name": name, "namespace": "team", "uid": uid, "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"}}


def test_a_job_waits_for_its_policys_scheduled_run(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.mkdir()
    inventory = Inventory()
    inventory.put("RetentionPolicy", _obj("RetentionPolicy", "logs", {
        "target": {"posix": {"path": str(target)}}, "rules": {"maxAge": "1d"},
        "schedule": "* * * * *", "mode": "Enforce"}, uid="p-uid"))
    job = _obj("CleanupJob", "now", {"policyRef": {"name": "logs"}, "mode": "Enforce"},
               uid="job-uid")
    inventory.put("CleanupJob", job)
    inventory.synced.set()
    config = parse_config([], env={"POD_NAME": "lethe-0", "LETHE_ALLOWED_ROOTS": str(tmp_path)})
    with local_journal(data_dir=tmp_path / "raft") as journal:
        now = time.time()
        journal.commit(BeginRun(policy="team/logs", run_id="20260101T000000Z-sched",
                                term=journal.current_term(), started=now, now=now,
                                slot="2026-01-01T00:00:00Z"))
        leader = Leader(config=config, journal=journal, inventory=inventory,
                        writer=None,  # type: ignore[arg-type]  # never reached: see above
                        metrics=Metrics())
        try:
            leader._state = journal.read()
            leader._reconcile_job(job)
            assert "team/logs" not in leader._active, \
                "the job was started while its policy's scheduled run is active"
        finally:
            leader.pool.shutdown(wait=True)
