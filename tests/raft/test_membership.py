"""Who joins and who bootstraps (#13), with real processes.

A replica started without Raft data must not trust its seed: after ``helm
upgrade --set replicaCount=5`` the new pods lethe-3 and lethe-4 are in a seed
of five, yet the cluster is lethe-0..2. Member ``i`` of the harness is
127.0.0.(i+1); ``peers=`` is the seed the process is given.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from lethe.raft.node import PeerView, membership_step
from tests.raft.conftest import Cluster

pytestmark = pytest.mark.timeout(150)


def begin(run: str, policy: str) -> dict[str, Any]:
    return {"kind": "BeginRun", "run_id": run, "policy": policy}


def members(c: Cluster, i: int) -> set[str]:
    st = c.status(i)
    assert st is not None
    return {st["self"], *(p["address"] for p in st["peers"])}


def agree(c: Cluster, nodes: list[int], size: int) -> bool:
    """Every node in ``nodes`` names the same leader and sees ``size`` members."""
    views = [c.status(i) for i in nodes]
    if any(v is None for v in views):
        return False
    leaders = {v["leader"] for v in views if v is not None}
    return (len(leaders) == 1 and None not in leaders
            and all(len(members(c, i)) == size for i in nodes))


def test_new_replicas_in_a_larger_seed_join_the_existing_cluster(cluster: Cluster) -> None:
    """The helm upgrade case: lethe-3 and lethe-4 start with a seed of five. Before
    the fix they believed themselves members, never asked to be added, and the
    cluster stayed at three."""
    cluster.start_all(3)
    cluster.wait_leader()
    cluster.commit(begin("r1", "a/p"))
    for new in (3, 4):
        cluster.start(new, peers=[0, 1, 2, 3, 4])
    cluster.wait_for(lambda: agree(cluster, [0, 1, 2, 3, 4], 5), timeout=40,
                     what="all five agree on one leader and five members")
    cluster.commit(begin("r2", "b/p"))
    cluster.wait_for(lambda: all(cluster.get(i, "/state")["runs"].get("b/p") for i in range(5)),
                     what="a commit reaches the new members")
    assert "asking it to add this replica" in cluster.log(3)


def test_fresh_install_of_five_bootstraps_once(cluster: Cluster) -> None:
    """Five replicas without data started together form one cluster of five."""
    cluster.start_all(5)
    cluster.wait_for(lambda: agree(cluster, list(range(5)), 5), timeout=40,
                     what="one cluster of five")
    assert "bootstrapping one with the seed" in cluster.log(0)
    for i in range(1, 5):
        assert "bootstrapping" not in cluster.log(i), i


def test_new_replicas_do_not_form_a_cluster_while_the_old_one_is_unreachable(
        cluster: Cluster) -> None:
    """The existing members frozen (SIGSTOP: they accept connections, never answer)
    while two new replicas with a seed of five start: no leader among them, for
    however long; once the members wake, the new ones join them."""
    cluster.start_all(3)
    old = cluster.wait_leader()
    cluster.commit(begin("r1", "a/p"))
    for i in range(3):
        cluster.signal(i, signal.SIGSTOP)
    try:
        for new in (3, 4):
            cluster.start(new, peers=[0, 1, 2, 3, 4])
        no_leader_among(cluster, [3, 4], 8.0)  # many election timeouts and probe rounds
    finally:
        for i in range(3):
            cluster.signal(i, signal.SIGCONT)
    cluster.wait_for(lambda: agree(cluster, [0, 1, 2, 3, 4], 5), timeout=40,
                     what="the new replicas joined the old cluster")
    st = cluster.status(3)
    assert st is not None and st["term"] >= 1
    assert cluster.get(3, "/state")["runs"]["a/p"]["run_id"] == "r1"
    del old


def no_leader_among(c: Cluster, nodes: list[int], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i in nodes:
            st = c.status(i)
            assert st is None or (st["leader"] is None and st["state"] != "leader"), st
        time.sleep(0.2)


def test_new_replicas_that_are_a_majority_of_the_seed_never_bootstrap(
        cluster: Cluster) -> None:
    """3 -> 7 in one go while the old members are frozen: the four new replicas are
    a majority of the seed of seven and reach each other. None may bootstrap (only
    lethe-0, which holds data, could), also after they crash and restart while
    still held (a held replica writes no membership file: with one it would start
    as a member of the seed and campaign)."""
    cluster.start_all(3)
    cluster.wait_leader()
    cluster.commit(begin("r1", "a/p"))
    new = [3, 4, 5, 6]
    for i in range(3):
        cluster.signal(i, signal.SIGSTOP)
    try:
        for i in new:
            cluster.start(i, peers=list(range(7)))
        no_leader_among(cluster, new, 6.0)
        for i in new:
            cluster.kill(i)
        for i in new:
            cluster.start(i, peers=list(range(7)))
        no_leader_among(cluster, new, 6.0)
    finally:
        for i in range(3):
            cluster.signal(i, signal.SIGCONT)
    cluster.wait_for(lambda: agree(cluster, list(range(7)), 7), timeout=60,
                     what="the four joined the old cluster")
    # Agreeing on the membership is not having applied the log: catching up may lag
    # under load (make test saw KeyError 'a/p' here once).
    cluster.wait_for(lambda: all(cluster.get(i, "/state")["runs"].get("a/p", {})
                                 .get("run_id") == "r1" for i in new),
                     timeout=30, what="the four caught up with the old cluster's log")


def test_wiped_member_outside_its_seed_rejoins(cluster: Cluster) -> None:
    """A member added by scale-up (seed of three) loses its volume: it is still
    listed, takes the leader's membership (it must accept the leader's
    connection) and catches up, without a second add."""
    cluster.start_all(3)
    cluster.wait_leader()
    for new in (3, 4):
        cluster.start(new, peers=[0, 1, 2], join=True)
        cluster.wait_for(lambda new=new: agree(cluster, list(range(new + 1)), new + 1),
                         timeout=40, what=f"member {new} joined")
    cluster.commit(begin("r1", "a/p"))
    cluster.kill(4)
    cluster.wipe(4)
    cluster.commit(begin("r2", "b/p"))
    cluster.start(4, peers=[0, 1, 2], join=True)
    cluster.wait_for(lambda: cluster.get(4, "/state")["runs"].get("b/p", {}).get("run_id")
                     == "r2", timeout=40, what="the wiped member caught up")
    cluster.wait_for(lambda: agree(cluster, list(range(5)), 5), what="still five members")


def test_scaled_down_replica_with_its_volume_joins_again(cluster: Cluster) -> None:
    """5 -> 3 keeps the removed replicas' volumes; 3 -> 5 again: each remembers a
    membership that no longer lists it, and asks to be added back."""
    cluster.start_all(3)
    cluster.wait_leader()
    for new in (3, 4):
        cluster.start(new, peers=[0, 1, 2, 3, 4])
    cluster.wait_for(lambda: agree(cluster, list(range(5)), 5), timeout=40, what="five")
    for gone in (4, 3):
        assert cluster.terminate(gone) == 0
        assert "left the cluster" in cluster.log(gone)
    cluster.wait_for(lambda: agree(cluster, [0, 1, 2], 3), what="back to three")
    cluster.commit(begin("r1", "a/p"))
    for new in (3, 4):
        cluster.start(new, peers=[0, 1, 2, 3, 4])
    cluster.wait_for(lambda: agree(cluster, list(range(5)), 5), timeout=40,
                     what="five again")
    cluster.wait_for(lambda: cluster.get(4, "/state")["runs"].get("a/p"),
                     what="the returning replica caught up")


# -- the decision itself, for the cases processes cannot produce on demand ------------

SEED5 = frozenset(f"n{i}" for i in range(5))


def view(addr: str, *, members: frozenset[str] = SEED5, leader: str | None = None,
         data: bool = False, term: int = 0) -> PeerView:
    return PeerView(address=addr, leader=leader, is_leader=leader == addr, term=term,
                    members=members, has_data=data)


def test_decision_without_a_leader_only_the_bootstrapper_bootstraps() -> None:
    fresh = {f"n{i}": view(f"n{i}") for i in (1, 2)}
    step = membership_step(me="n0", seed=SEED5, bootstrapper="n0", holding=True, views=fresh)
    assert step.kind == "bootstrap"
    # Not the bootstrapper: wait, even with every peer fresh (3 -> 7 with the old
    # members unreachable: four new replicas are a majority of seven).
    seed7 = frozenset(f"n{i}" for i in range(7))
    news: dict[str, PeerView | None] = {f"n{i}": view(f"n{i}", members=seed7)
                                        for i in (4, 5, 6)}
    news.update({f"n{i}": None for i in range(3)})
    step = membership_step(me="n3", seed=seed7, bootstrapper="n0", holding=True, views=news)
    assert step.kind == "wait"
    # The bootstrapper fresh (volume lost), a peer with data: never bootstrap.
    mixed = {"n1": view("n1", members=frozenset({"n0", "n1", "n2"}), data=True),
             "n3": view("n3"), "n4": view("n4")}
    step = membership_step(me="n0", seed=SEED5, bootstrapper="n0", holding=True, views=mixed)
    assert step.kind == "wait"
    # Fresh peers with another seed (pods of an older template) do not count.
    other = {f"n{i}": view(f"n{i}", members=frozenset({"n0", "n1", "n2"})) for i in (1, 2)}
    step = membership_step(me="n0", seed=SEED5, bootstrapper="n0", holding=True, views=other)
    assert step.kind == "wait"


def test_decision_follows_the_leader() -> None:
    m3 = frozenset({"n0", "n1", "n2"})
    views = {"n0": view("n0", members=m3, leader="n1", data=True),
             "n1": view("n1", members=m3, leader="n1", data=True, term=4)}
    step = membership_step(me="n3", seed=SEED5, bootstrapper="n0", holding=True, views=views)
    assert (step.kind, step.leader, step.members) == ("join", "n1", m3)
    step = membership_step(me="n2", seed=SEED5, bootstrapper="n0", holding=True, views=views)
    assert step.kind == "adopt"
    step = membership_step(me="n2", seed=SEED5, bootstrapper="n0", holding=False, views=views)
    assert step.kind == "member"
