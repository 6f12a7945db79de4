"""Two processes of one member never use its journal at once.

``kubectl delete pod --force`` starts a pod's replacement, with the same name and
volume, while the old container is still stopping (seen in the end-to-end suite:
the old process led its term with one follower for about 5 s while the new one led
the next term with the other). Here the "replacement" is a second ``lethe.raft``
process with the same address and data directory: it must wait, without opening the
journal or listening, until the first one is gone, then carry on from its journal.
"""

from __future__ import annotations

import json
import time
import urllib.request

from tests.fixtures.ports import free_port
from tests.raft.conftest import Cluster


def _answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/raft", timeout=1) as r:
            return bool(json.loads(r.read()))
    except OSError:
        return False


def test_a_second_process_of_a_member_waits_for_the_first_to_exit(cluster: Cluster) -> None:
    cluster.start_all(3)
    leader = cluster.wait_leader()
    _, before = cluster.commit({"kind": "BeginRun", "run_id": "r1", "policy": "default/a"})
    follower = next(i for i in range(3) if i != leader)
    host = cluster.raft[follower].rsplit(":", 1)[0]
    twin_http = f"{host}:{free_port(host)}"
    twin = cluster.start(follower, peers=[0, 1, 2], http=twin_http, log_name="twin.log")
    try:
        twin_log = cluster.tmp / "twin.log"
        cluster.wait_for(lambda: "another process holds" in twin_log.read_text(), timeout=15,
                         what="the twin to say it waits for the lock")
        # Waiting, not working: no test server (started after the journal), still alive,
        # and the member it doubles goes on as before.
        time.sleep(2)
        assert twin.poll() is None, twin_log.read_text()
        assert not _answers(twin_http), "the twin opened the journal while the first ran"
        assert "raft.journal" not in twin_log.read_text()
        cluster.kill(follower)  # SIGKILL: the kernel releases the lock
        cluster.wait_for(lambda: _answers(twin_http), timeout=20, what="the twin to start")
        assert "after waiting" in twin_log.read_text()
        # It is the member, with its journal: it follows the leader and sees new entries.
        cluster.http[follower] = twin_http
        _, after = cluster.commit({"kind": "BeginRun", "run_id": "r2", "policy": "default/b"},
                                  among=[i for i in range(3) if i != follower])
        assert after["index"] > before["index"]
        cluster.wait_for(lambda: set(cluster.get(follower, "/state")["runs"])
                         == {"default/a", "default/b"}, timeout=20,
                         what="the twin to hold both runs")
    finally:
        if twin.poll() is None:
            twin.kill()
        twin.wait(timeout=10)
