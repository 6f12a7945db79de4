"""A replica whose Raft port is taken says so, and joins once the port is free.

pysyncobj retries a failed bind every second for ever and logs nothing; until
it binds the node does not tick, so it never campaigns or answers. Two chaos
trials (seeds 10503, 10615) had a replica stuck exactly so, silent: its log
went from "started" to "stopping", and its peers saw it "not connected".
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from tests.raft.conftest import Cluster


def _readyz(cluster: Cluster, i: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://{cluster.http[i]}/readyz", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_a_taken_raft_port_is_named_in_readyz_and_the_log_then_joins(
        cluster: Cluster) -> None:
    cluster.define(1)
    host, port = cluster.raft[0].rsplit(":", 1)
    squatter = socket.socket()  # another process listening on the Raft port
    squatter.bind((host, int(port)))
    squatter.listen(1)
    try:
        cluster.start(0, peers=[0])
        want = f"cannot listen on {cluster.raft[0]} for Raft: Address already in use"
        cluster.wait_for(lambda: want in str(_readyz(cluster, 0)[1].get("reason")),
                         timeout=15, what="/readyz to name the taken port")
        code, body = _readyz(cluster, 0)
        assert code == 503 and body["ready"] is False, body
        assert want in str((cluster.status(0) or {}).get("problem")), cluster.status(0)
        cluster.wait_for(lambda: want in cluster.log(0), timeout=5, what="the log line")
    finally:
        squatter.close()
    cluster.wait_leader(among=[0], timeout=20)
    assert f"listening on {cluster.raft[0]} after" in cluster.log(0)
    code, body = _readyz(cluster, 0)
    assert code == 200 and body["ready"] is True, body
