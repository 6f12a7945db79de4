"""I9 against a *running* operator: garbage and a crafted pickle on each replica's Raft port.

``tests/raft/test_security.py`` attacks a bare Raft node; here the targets are the
three ``lethe run`` replicas of an operator in service (kopf watches, leader loop,
HTTP), so what is proven is the product as deployed: nothing that arrives on the
port without the password is unpickled, a connection that never authenticates is
dropped, and the cluster keeps its leader and still runs a CleanupJob afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pysyncobj.encryptor import getEncryptor

from tests.badinput.operators import finished, job, old_files, policy, tracebacks
from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import LocalReplicas, Replica
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

#: How long an unauthenticated connection may stay open: the product's bound plus slack
#: for a busy machine.
DROP_WITHIN = 15.0


class _Exploit:
    """Unpickling this runs ``touch marker``: proof of code execution if the file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _frame(payload: bytes) -> bytes:
    """pysyncobj's framing: a native 4-byte signed length, then the message."""
    return struct.pack("i", len(payload)) + payload


def _payloads(marker: Path) -> dict[str, bytes]:
    rng = random.Random(8)  # seeded: a failure replays with the same bytes
    evil = pickle.dumps(_Exploit(marker), 2)
    wrong_key = getEncryptor("not-the-cluster-password")
    return {
        "random bytes": rng.randbytes(64 * 1024),
        "framed random bytes": _frame(rng.randbytes(4096)),
        "negative length": struct.pack("i", -64) + rng.randbytes(256),
        # As pysyncobj frames a message when it has no password, and as a bare pickle.
        "crafted pickle (zlib)": _frame(zlib.compress(evil, 3)),
        "crafted pickle (bare)": _frame(evil),
        "crafted pickle (unframed)": evil,
        # The protocol done right, with the wrong password: the HMAC must reject it.
        "crafted pickle (wrong password)": _frame(wrong_key.encrypt_at_time(
            zlib.compress(evil, 3), int(time.monotonic()))),
    }


def _dropped(sock: socket.socket, *, within: float) -> bool:
    """True once the peer closes (or resets) the connection, within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


@contextlib.contextmanager
def _connect(r: Replica) -> Iterator[socket.socket]:
    with socket.create_connection((r.host, r.raft_port), timeout=5) as s:
        yield s


def test_garbage_and_crafted_pickles_on_running_replicas(
        operators: LocalReplicas, crds_installed: KubeCluster, tmp_path: Path) -> None:
    kube, replicas = crds_installed, operators
    marker = tmp_path / "pwned"
    before = tracebacks(replicas)
    rejected_before = {r.name: (r.raft() or {}).get("rejected_messages", 0)
                       for r in replicas.replicas}
    with contextlib.ExitStack() as stack:
        # Connected, then silent, or a frame cut short: not a peer; dropped in time.
        idle = [(r, name, stack.enter_context(_connect(r)), payload)
                for r in replicas.replicas
                for name, payload in (("silent", b""),
                                      ("partial frame", struct.pack("i", 512) + b"x"))]
        for _r, _name, s, payload in idle:
            s.sendall(payload)
        for r in replicas.replicas:
            for name, payload in _payloads(marker).items():
                with _connect(r) as s:
                    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                        s.sendall(payload)
                    assert _dropped(s, within=DROP_WITHIN), f"{r.name}: {name}: connection kept"
            # A frame that claims 2 GiB: the node must not wait (and buffer) for the rest.
            with _connect(r) as s:
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    s.sendall(struct.pack("i", 2**31 - 1) + os.urandom(256 * 1024))
                assert _dropped(s, within=DROP_WITHIN), f"{r.name}: a 2 GiB frame kept open"
        for r, name, s, _payload in idle:
            assert _dropped(s, within=DROP_WITHIN), f"{r.name}: {name} connection kept"

    assert not marker.exists(), "a crafted pickle was executed"
    for r in replicas.replicas:
        assert r.alive(), f"{r.name} exited"
        log = r.log_path.read_text(errors="replace")
        assert "rejected unauthenticated message" in log, r.name
        st = r.raft()
        assert st is not None and st["rejected_messages"] > rejected_before[r.name], st
    leader = replicas.wait_leader(timeout=30)
    assert leader.raft()["leader"] == leader.raft_address  # type: ignore[index]

    # The operator still works: a CleanupJob applied afterwards succeeds.
    ns = "raft-garbage"
    kube.kubectl("create", "namespace", ns, check=False)
    root = replicas.data_root / "after-attack"  # type: ignore[attr-defined]
    files = old_files(root, 30)
    kube.apply(policy("after", ns, {"posix": {"path": str(root)}}, rules={"maxAge": "30d"}))
    kube.apply(job("after", ns, policyRef={"name": "after"}, mode="Enforce"))
    done = finished(kube, "after", ns, timeout=60)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["counters"]["deleted"] == 30 and not any(p.exists() for p in files)
    assert not marker.exists()
    wait_for(lambda: all(r.get("/readyz")[0] == 200 for r in replicas.replicas), timeout=30,
             what="every replica ready")
    assert tracebacks(replicas) == before, "the attack left tracebacks in the logs"
