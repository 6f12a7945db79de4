"""Two members that refuse each other's pre-vote still elect a leader.

The end-to-end suite once had no leader for 60 s after the leader's process was
SIGSTOPped: the two others waited for each other until the stopped one was
killed. The state that does it: member B campaigned for term T+1 and lost (its
RequestVote was dropped by A's vote guard, which leaves A's term alone: A still
heard the leader), then A's log grew past B's. Now A asks for T+1 and B refuses
(its term is not below); B asks for T+2 and A refuses (B's log is behind).

Three real ``PreVoteSyncObj`` members talk over loopback TCP with the shipped
transport and timings; the test drives their ticks itself (``autoTick`` off),
which is how it stops the leader: it stops ticking it, its sockets stay open, as
under SIGSTOP. B's lost campaign is the one thing set directly (its term and
vote), because the race that produces it (a pre-vote granted, then the
RequestVote dropped by a guard that a late heartbeat re-armed) cannot be timed
from outside.
"""

from __future__ import annotations

import time
from typing import Any

from lethe.journal import Fence
from lethe.raft.config import DEFAULT_TIMINGS, make_conf
from lethe.raft.discovery import DialNode
from lethe.raft.machine import JournalMachine, LeaseTransport, encode_command
from lethe.raft.prevote import PreVoteSyncObj
from tests.fixtures.ports import free_ports

_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2


def _member(me: str, others: list[str]) -> tuple[PreVoteSyncObj, JournalMachine]:
    conf = make_conf(timings=DEFAULT_TIMINGS, password="test-raft-password-0123456789",
                     data_dir=None, bind_address=me)
    conf.autoTick = False
    machine = JournalMachine()
    box: dict[str, Any] = {}
    obj = PreVoteSyncObj(DialNode(me), [DialNode(o) for o in others], conf=conf,
                         consumers=[machine], nodeClass=DialNode, transportClass=LeaseTransport,
                         leader_contact=lambda: box["t"].last_leader_contact)
    box["t"] = obj._SyncObj__transport
    return obj, machine


def _tick(objs: list[PreVoteSyncObj], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for o in objs:
            o.doTick(0.002)


def _leaders(objs: list[PreVoteSyncObj]) -> list[PreVoteSyncObj]:
    return [o for o in objs if o._SyncObj__raftState == _LEADER]


def _elect(objs: list[PreVoteSyncObj]) -> None:
    deadline = time.monotonic() + 20
    while len(_leaders(objs)) != 1 and time.monotonic() < deadline:
        _tick(objs, 0.1)


def test_members_that_refuse_each_other_elect_once_the_leader_stops() -> None:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3, host="127.0.0.1")]
    members = [_member(a, [o for o in addrs if o != a]) for a in addrs]
    objs = [o for o, _ in members]
    try:
        _elect(objs)
        (leader,) = _leaders(objs)
        a, b = (o for o in objs if o is not leader)
        machine = members[objs.index(leader)][1]
        term = int(leader._SyncObj__raftCurrentTerm)

        def commit(n: int, ticking: list[PreVoteSyncObj]) -> None:
            for _ in range(n):
                machine.apply_command(encode_command(Fence(term=term)))
            _tick(ticking, 0.5)

        commit(3, objs)
        # B misses the next entries (not ticked), then "campaigns and loses": term
        # T+1, its own vote, a candidate. A's log is now ahead of B's.
        commit(5, [leader, a])
        assert a._SyncObj__getCurrentLogIndex() > b._SyncObj__getCurrentLogIndex()
        b._SyncObj__setCurrentTerm(term + 1, b._SyncObj__selfNode.id)
        b._SyncObj__setState(_CANDIDATE)
        b._SyncObj__raftLeader = None
        # The leader stops (no more ticks; its sockets stay open, as under SIGSTOP).
        _tick([a, b], 10)
        elected = _leaders([a, b])
        assert elected == [a], (
            f"no leader in 10 s: A term {a._SyncObj__raftCurrentTerm} log "
            f"{a._SyncObj__getCurrentLogIndex()}, B term {b._SyncObj__raftCurrentTerm} log "
            f"{b._SyncObj__getCurrentLogIndex()}; B refused A: "
            f"{a.pre_vote_stats.refusals}; A refused B: {b.pre_vote_stats.refusals}")
        assert int(a._SyncObj__raftCurrentTerm) >= term + 2
    finally:
        for o in objs:
            o.destroy()


def test_a_grant_of_a_round_closed_by_a_higher_term_does_not_start_a_campaign() -> None:
    """The refusal that moves us to a higher term closes the round: a grant of that
    round arriving afterwards was given for the old term, and winning with it would
    campaign at the new term + 1, deposing the refuser if it was a leader elected
    just then. The two answers are delivered by calling the handler the transport
    calls (their order on two connections cannot be arranged from outside)."""
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3, host="127.0.0.1")]
    objs = [_member(a, [o for o in addrs if o != a])[0] for a in addrs]
    try:
        _elect(objs)
        a = next(o for o in objs if o._SyncObj__raftState != _LEADER)
        peers = sorted(a._SyncObj__otherNodes, key=lambda n: str(n.id))
        term = int(a._SyncObj__raftCurrentTerm)
        a._pv_round += 1  # a pre-vote round of ours in flight
        a._pv_grants = set()
        in_flight, won = a._pv_round, a.pre_vote_stats.won
        a.on_pre_vote_message(peers[0], {"type": "pre_vote_response", "round": in_flight,
                                         "granted": False, "reason": "I am the leader",
                                         "term": term + 3})
        assert int(a._SyncObj__raftCurrentTerm) == term + 3
        a.on_pre_vote_message(peers[1], {"type": "pre_vote_response", "round": in_flight,
                                         "granted": True, "reason": "no leader heard",
                                         "term": term})
        assert a.pre_vote_stats.won == won, "a grant of the closed round won it"
        assert a._pv_permit_at == float("-inf")
        assert a._SyncObj__raftElectionDeadline > time.monotonic()
    finally:
        for o in objs:
            o.destroy()
