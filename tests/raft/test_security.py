"""I9: the Raft port needs a password; a crafted pickle executes nothing."""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from lethe.raft.security import InsecureRaftRefused, resolve_password
from tests.raft.conftest import ROOT, Cluster

pytestmark = pytest.mark.timeout(60)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _frame(payload: bytes) -> bytes:
    return struct.pack("i", len(payload)) + payload


def test_crafted_pickle_without_password_executes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start(0, peers=[])
    cluster.wait_leader()
    marker = tmp_path / "pwned"
    evil = zlib.compress(pickle.dumps(_Exploit(marker), 2), 3)
    host, port = cluster.raft[0].rsplit(":", 1)
    # As pysyncobj would frame it with no password, and as a bare pickle.
    for payload in (_frame(evil), _frame(pickle.dumps(_Exploit(marker), 2))):
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(payload)
            s.settimeout(2)
            # Dropped by the node: EOF or a reset. A timeout means it kept the
            # connection open, which is the failure this test exists for.
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""
    time.sleep(0.5)
    assert not marker.exists()
    assert "rejected unauthenticated message" in cluster.log(0)
    st = cluster.status(0)
    assert st is not None and st["state"] == "leader" and st["rejected_messages"] >= 1
    _, resp = cluster.commit({"kind": "BeginRun", "run_id": "after-attack"})
    assert resp["index"] > 0


def test_refuses_to_start_without_password() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in {"LETHE_RAFT_PASSWORD", "LETHE_RAFT_PASSWORD_FILE",
                        "LETHE_INSECURE_DEV_RAFT"}}
    env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'operator'}"
    proc = subprocess.run([sys.executable, "-m", "lethe.raft", "--self", "127.0.0.9:1"],
                          env=env, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert b"refusing to start Raft without a password" in proc.stderr


def test_password_sources(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    assert resolve_password(environ={"LETHE_RAFT_PASSWORD": "env"}) == "env"
    assert resolve_password(environ={"LETHE_RAFT_PASSWORD_FILE": str(secret)}) == "from-file"
    assert resolve_password(password_file=secret, environ={}) == "from-file"
    assert resolve_password(environ={"LETHE_INSECURE_DEV_RAFT": "1"}) is None
    with pytest.raises(InsecureRaftRefused):
        resolve_password(environ={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InsecureRaftRefused):
        resolve_password(password_file=tmp_path / "empty", environ={})
