"""A tick still in progress when the replica stops starts nothing and logs no error.

On SIGTERM ``lethe run`` closes the leader's run pool while the leader thread
may be inside a tick. A tick that then reached a due CleanupJob called
``submit`` on the closed pool and logged ``RuntimeError: cannot schedule new
futures after shutdown`` with a traceback (seen in CI on a scale-down in
tests/operator/test_scale.py, where a replica stopped while it led).

The journal is a real one-node Raft journal and the run pool is the real one;
the Kubernetes writer is never reached on the path under test (admission
submits before any API call), so ``writer`` is ``None``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lethe.controller.config import parse_config
from lethe.controller.leader import Inventory, Leader
from lethe.metrics import Metrics
from lethe.raft.local import local_journal
from tests.fixtures.waiting import wait_for


def test_a_tick_after_close_starts_no_run_and_logs_no_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "data"
    target.mkdir()
    inventory = Inventory()
    inventory.put("CleanupJob", {
        "apiVersion": "lethe.io/v1alpha1", "kind": "CleanupJob",
        "metadata": {"name": "now", "namespace": "team", "uid": "job-uid", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"mode": "Enforce", "policy": {"target": {"posix": {"path": str(target)}},
                                               "rules": {"maxAge": "1d"}}}})
    inventory.synced.set()
    config = parse_config([], env={"POD_NAME": "lethe-0", "LETHE_ALLOWED_ROOTS": str(tmp_path)})
    with local_journal(data_dir=tmp_path / "raft") as journal:
        wait_for(journal.lease_valid, timeout=30, what="the one-node lease")
        leader = Leader(config=config, journal=journal, inventory=inventory,
                        writer=None,  # type: ignore[arg-type]  # never reached: see above
                        metrics=Metrics())
        leader.close()
        with caplog.at_level(logging.WARNING, logger="lethe"):
            leader.tick()
        assert not leader._active
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
            [r.getMessage() for r in caplog.records]
