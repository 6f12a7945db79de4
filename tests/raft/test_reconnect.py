"""A peer whose address stopped answering is dialled again, not waited out.

Found on real pods (tests/e2e, issue #13): when a pod is replaced its IP goes away
without a reset, so a connect to the old address gets no answer at all. pysyncobj
enforces its connection timeout only when the socket has an event, and a connect
that nobody answers has none until the kernel gives up (about 127 s of SYN
retries): the leader did not dial the new pod for two minutes, and the new pod
stayed NotReady. Here a real listener whose accept queue is full stands in for the
vanished address (the kernel drops the SYNs, as for an address nobody holds); it is
then replaced by a forwarder to the real member, as the name would now resolve to
the new pod.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from typing import Any

import pytest

from tests.fixtures.ports import free_port
from tests.raft.conftest import Cluster
from tests.raft.proxy import LinkProxy

pytestmark = pytest.mark.timeout(120)

BLACKHOLE_HOST = "127.0.0.9"


def _black_hole() -> tuple[socket.socket, list[socket.socket]]:
    """A listener that answers no SYN: backlog 0, its accept queue filled and never
    accepted (Linux then drops further SYNs)."""
    srv = socket.create_server((BLACKHOLE_HOST, free_port(BLACKHOLE_HOST)), backlog=0)
    fill = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(srv.getsockname())
        fill.append(c)
    probe = socket.create_connection  # a real connect must not complete now
    try:
        probe(srv.getsockname(), timeout=1.5).close()
        raise AssertionError("the black hole accepted a connection")
    except TimeoutError:
        pass
    return srv, fill


def _dials(host: str, port: int, *, exclude: set[int], seconds: float) -> dict[int, float]:
    """The connects pending to host:port seen over ``seconds`` (``ss``), one per
    attempt: local port -> how long it was seen pending (s)."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-tnH", "state", "syn-sent", "dst", f"{host}:{port}"],
                             capture_output=True, text=True, check=True).stdout
        now = time.monotonic()
        for m in re.findall(r":(\d+)\s+\S+:\d+\s*$", out, re.M):
            first.setdefault(int(m), now)
            last[int(m)] = now
        time.sleep(0.05)
    return {p: last[p] - first[p] for p in first if p not in exclude}


def _connected(c: Cluster, i: int, peer: int) -> bool:
    st: dict[str, Any] | None = c.status(i)
    return bool(st) and any(p["address"] == c.raft[peer] and p["connected"]
                            for p in st["peers"])  # type: ignore[index]


def test_a_connect_nobody_answers_is_given_up_and_retried(cluster: Cluster) -> None:
    c = cluster
    c.define(3)
    srv, fill = _black_hole()
    # Member 2 (127.0.0.3, the greater address) is the one that dials member 1; its
    # dial goes to the black hole. Members 0 and 1 form the quorum meanwhile.
    c.start(0, peers=[0, 1, 2])
    c.start(1, peers=[0, 1, 2])
    c.start(2, peers=[0, 1, 2],
            extra=["--dial", f"{c.raft[1]}={BLACKHOLE_HOST}:{srv.getsockname()[1]}"])
    c.wait_leader(timeout=30)
    c.wait_for(lambda: _connected(c, 2, 0), timeout=30, what="member 2 connected to 0")
    port = srv.getsockname()[1]
    # Member 2 gives a connect up after connectionTimeout (2 s) and dials again.
    # Without that a connect stays pending while the kernel retries its SYN (about
    # 11 s on loopback, 127 s on a pod network).
    dials = _dials(BLACKHOLE_HOST, port, exclude={s.getsockname()[1] for s in fill},
                   seconds=12)
    assert len(dials) >= 2, f"member 2 dialled the silent address {len(dials)} time(s) in 12 s"
    longest = max(dials.values())
    assert longest < 5, f"a connect to the silent address stayed pending {longest:.1f}s"
    assert not _connected(c, 2, 1)
    srv.close()
    for s in fill:
        s.close()
    # The address answers again, now for the real member 1.
    host, raft_port = c.raft[1].rsplit(":", 1)
    proxy = LinkProxy(listen=(BLACKHOLE_HOST, port), target=(host, int(raft_port)))
    c.proxies[(2, 1)] = proxy  # closed with the cluster
    c.wait_for(lambda: _connected(c, 2, 1), timeout=30, what="member 2 connected to 1")
