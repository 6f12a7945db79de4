"""Raft pre-vote (Ongaro's thesis §9.6, etcd's PreVote) on top of pysyncobj.

pysyncobj has no pre-vote. A member whose election timer expires (a follower
resumed after SIGSTOP, a partition that heals, an ex-leader that stepped
down) increments its term and sends RequestVote at once. The followers ignore
it (our vote guard in :class:`lethe.raft.machine.LeaseTransport`), but the
*leader* does not: a RequestVote with a higher term makes it step down. So a
returning member deposed a healthy leader, even mid-run (#17 item 5).

With pre-vote a member whose timer expires first asks its peers "would you
vote for me in term T+1?" without changing any state, its own or theirs. A
peer says yes only if all of these hold:

* it is not itself the leader (a leader that lost its quorum steps down
  after ``leaderFallbackTimeout`` and may then say yes);
* it has not heard from a leader for ``raftMinTimeout`` (the same rule as the
  vote guard: a live leader exists);
* T+1 is above its own term (a real vote for T+1 would be refused anyway);
* the asker's log is at least as up to date as its own (Raft §5.4.1).

Only with a majority of yes (itself included) does the member campaign; a
refused member keeps its term and follows the leader's next heartbeat, unless
the refuser's term is above its own: then it moves to that term (etcd's rule,
see :meth:`PreVoteSyncObj._adopt_refuser_term`). A
failed pre-vote costs no term, so a member cut off from the others never
inflates its term while it is away.

Elections that are not a timeout skip the pre-vote: a one-node cluster, and a
TimeoutNow sent by the leader during a graceful leadership transfer.

Compatibility: a pysyncobj without this class ignores the unknown ``pre_vote``
message (no answer), so during a rolling upgrade an upgraded member campaigns
only once a majority of members answer pre-votes; old members still elect
among themselves as before.

Everything here runs in pysyncobj's tick thread; the name-mangled attributes
are pysyncobj 0.3.17's (pinned in requirements.lock).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import SyncObj

__all__ = ["PreVoteStats", "PreVoteSyncObj"]

log = logging.getLogger("lethe.raft")

_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2
#: Seconds between two log lines about refused pre-votes (a cut-off member
#: retries every 0.4-0.8 s; one line per round would drown the log).
_LOG_EVERY = 10.0

PRE_VOTE = "pre_vote"
PRE_VOTE_RESPONSE = "pre_vote_response"


class PreVoteStats:
    """Counters and the last outcome, for `/raft` and the quorum diagnosis."""

    def __init__(self) -> None:
        self.rounds = 0  # pre-votes this member started
        self.won = 0  # of which a majority granted (then it campaigned)
        self.refused_to_others = 0  # pre-votes of others this member refused
        #: peer id -> (monotonic time, reason) of its newest refusal of our pre-vote
        self.refusals: dict[str, tuple[float, str]] = {}
        self.last_round_at = float("-inf")


class PreVoteSyncObj(SyncObj):  # type: ignore[misc]  # pysyncobj is untyped
    """``SyncObj`` whose timeout elections are preceded by a pre-vote.

    ``leader_contact`` returns the ``time.monotonic()`` of the newest
    append_entries this member accepted from a leader (kept by the transport,
    which sees every message first).
    """

    # pysyncobj's, written here too (declared so that mypy knows the type).
    _SyncObj__raftElectionDeadline: float
    _SyncObj__raftLeader: Any

    def __init__(self, *args: Any, leader_contact: Callable[[], float], **kwargs: Any) -> None:
        # Set before SyncObj.__init__: its tick thread may start at once.
        self._pv_leader_contact = leader_contact
        self._pv_round = 0
        self._pv_term = 0
        self._pv_grants: set[str] = set()
        self._pv_permit_at = float("-inf")
        self._pv_logged_at = float("-inf")
        self.pre_vote_stats = PreVoteStats()
        super().__init__(*args, **kwargs)

    # -- the gate, before pysyncobj's own tick ------------------------------------

    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._pre_vote_gate()
        super()._onTick(timeToWait)

    def _pre_vote_gate(self) -> None:
        """If pysyncobj is about to campaign on a timeout, ask first (see module doc)."""
        now = time.monotonic()
        if (self._SyncObj__selfNode is None or not self._SyncObj__transport.ready
                or self._SyncObj__raftState == _LEADER
                or self._SyncObj__raftElectionDeadline >= now):
            return
        others = list(self._SyncObj__otherNodes)
        if not others or self._SyncObj__transferInProgress:
            return  # one-node cluster, or the leader handed over (TimeoutNow)
        if self._SyncObj__raftLeader is not None:
            # Silent for an election timeout: no longer a known leader. pysyncobj
            # forgets it only when it campaigns, so a member cut off from everyone
            # (it never campaigns then) or refused its pre-vote would name a dead
            # leader for ever, and /readyz would believe it.
            self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()
        permit, self._pv_permit_at = self._pv_permit_at, float("-inf")
        if now - permit < self.conf.raftMinTimeout and self._pv_leader_contact() < permit:
            return  # a majority granted our pre-vote just now (no leader since): campaign
        if not self._SyncObj__connectedNodes:
            return  # pysyncobj does not campaign unconnected either
        # Hold pysyncobj's election back for one more timeout and ask.
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        self._pv_round += 1
        self._pv_term = int(self._SyncObj__raftCurrentTerm) + 1
        self._pv_grants = set()
        stats = self.pre_vote_stats
        stats.rounds += 1
        stats.last_round_at = now
        message = {"type": PRE_VOTE, "round": self._pv_round, "term": self._pv_term,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for node in others:
            self._SyncObj__transport.send(node, message)
        if now - self._pv_logged_at >= _LOG_EVERY:
            self._pv_logged_at = now
            log.info("raft: no leader heard for %.2fs; pre-vote for term %d asks %s",
                     now - self._pv_leader_contact(), self._pv_term,
                     ", ".join(sorted(str(n.id) for n in others)))

    def _adopt_refuser_term(self, node: Any, message: dict[str, Any]) -> None:
        """A refusal from a peer at a higher term moves us to that term, as a
        follower (etcd raft's rule for a rejected MsgPreVoteResp with a higher term).

        Without it two members can wait for each other for ever: B campaigned for
        T+1 and lost (its RequestVote was dropped by A's vote guard, which leaves A's
        term alone), then A's log grew past B's. A asks for T+1: B refuses, its term
        is not below; B asks for T+2: A refuses, B's log is behind. Nobody is elected
        until a third member returns (most likely the end-to-end suite's 60 s
        without a leader while the old one was stopped). At T+1, A's next pre-vote
        asks T+2, which B grants.

        The round in flight closes with it (etcd's ``becomeFollower`` resets the
        tally): its grants were for the old term, and counting one that arrives
        later would make us campaign at the new term + 1, deposing the refuser if
        it is a leader elected just now.
        """
        term = int(message.get("term", 0))
        if term <= int(self._SyncObj__raftCurrentTerm) or self._SyncObj__raftState == _LEADER:
            return
        log.info("raft: %s refused our pre-vote at term %d, above ours (%d): moving to "
                 "that term", node.id, term, int(self._SyncObj__raftCurrentTerm))
        self._SyncObj__setCurrentTerm(term, None)
        self._SyncObj__setState(_FOLLOWER)
        if self._SyncObj__raftLeader is not None:
            self._SyncObj__raftLeader = None
            self._SyncObj__onLeaderChanged()
        self._pv_round += 1  # later answers to the old round are not counted
        self._pv_grants = set()
        self._pv_permit_at = float("-inf")
        now = time.monotonic()
        if self._SyncObj__raftElectionDeadline < now:  # a permit won this tick: void
            self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()

    # -- messages (called by the transport, before pysyncobj sees anything) --------

    def on_pre_vote_message(self, node: Any, message: dict[str, Any]) -> None:
        if message.get("type") == PRE_VOTE:
            granted, why = self._pre_vote_decision(message)
            if not granted:
                self.pre_vote_stats.refused_to_others += 1
            self._SyncObj__transport.send(node, {
                "type": PRE_VOTE_RESPONSE, "round": message.get("round"), "granted": granted,
                "reason": why, "term": int(self._SyncObj__raftCurrentTerm)})
        elif message.get("type") == PRE_VOTE_RESPONSE:
            self._on_pre_vote_response(node, message)

    def _pre_vote_decision(self, message: dict[str, Any]) -> tuple[bool, str]:
        if self._SyncObj__raftState == _LEADER:
            return False, "I am the leader"
        quiet = time.monotonic() - self._pv_leader_contact()
        if quiet < self.conf.raftMinTimeout:
            return False, f"heard from the leader {quiet:.2f}s ago"
        term = int(self._SyncObj__raftCurrentTerm)
        if int(message.get("term", 0)) <= term:
            return False, f"my term {term} is not below {message.get('term')}"
        mine = (int(self._SyncObj__getCurrentLogTerm()), int(self._SyncObj__getCurrentLogIndex()))
        theirs = (int(message.get("last_log_term", -1)), int(message.get("last_log_index", -1)))
        if theirs < mine:
            return False, f"its log (term, index) {theirs} is behind mine {mine}"
        return True, "no leader heard and its log is up to date"

    def _on_pre_vote_response(self, node: Any, message: dict[str, Any]) -> None:
        if not message.get("granted"):
            self._adopt_refuser_term(node, message)
        if message.get("round") != self._pv_round:
            return  # a round we already gave up
        peer = str(node.id)
        if not message.get("granted"):
            self.pre_vote_stats.refusals[peer] = (time.monotonic(),
                                                  str(message.get("reason", "")))
            return
        self._pv_grants.add(peer)
        members = len(self._SyncObj__otherNodes) + 1
        if self._SyncObj__raftState == _LEADER or (len(self._pv_grants) + 1) * 2 <= members:
            return
        self.pre_vote_stats.won += 1
        log.info("raft: pre-vote for term %d granted by %s; campaigning", self._pv_term,
                 ", ".join(sorted(self._pv_grants)))
        self._pv_round += 1  # close the round: later answers are not counted twice
        self._pv_permit_at = time.monotonic()
        self._SyncObj__raftElectionDeadline = 0.0  # campaign on the next tick
