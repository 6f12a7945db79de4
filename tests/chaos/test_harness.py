"""The fault harness must be able to fail: replicas that died, threads that died or
stalled, no fault landed, and the recording S3 proxy's view of deletes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lethe.devenv import LocalReplicas


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
