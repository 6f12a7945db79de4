"""Runner fixtures: real directories, a real one-node Raft journal, real S3 (moto)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lethe.raft.local import local_journal
from lethe.raft.node import RaftJournal

DAY = 86400


@pytest.fixture(scope="session")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftJournal]:
    """One real one-node Raft for the runner tests (each test uses its own policy name)."""
    with local_journal(data_dir=tmp_path_factory.mktemp("raft")) as j:
        yield j


def make_file(root: Path, key: str, *, age_days: float, size: int = 100) -> Path:
    p = root / key
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * size)
    t = time.time() - age_days * DAY
    os.utime(p, (t, t))
    return p


def posix_policy(root: Path, name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"target": {"posix": {"path": str(root)}}, "mode": "Enforce"}
    body.update(spec)
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": "test"}, "spec": body}
