"""``RaftJournal``: the narrow interface over pysyncobj that the rest of Lethe uses.

It implements :class:`lethe.journal.Journal` (am I leader, term, lease,
commit, read) plus membership (join, leave, add, remove) and status.

Leadership is *fenced*, not merely gated:

1. After winning an election in term T, the node commits ``Fence(term=T)``.
   Once applied, every replica's state machine rejects commands of terms
   older than T — a deposed leader's late entries are void everywhere.
2. :meth:`RaftJournal.lease_valid` is True only while (a) pysyncobj says we
   lead, (b) the Fence of the *current* term has been applied, and (c) a
   quorum acknowledged a heartbeat we sent less than ``lease_window`` ago
   (``LeaseTransport`` tracks send times; followers refuse to vote for a rival
   for ``raftMinTimeout`` after hearing from us, and ``lease_window`` is 80 % of
   that). The check uses the current clock, so a process resumed after
   SIGSTOP sees an expired lease before its tick thread has even run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj.config import FAIL_REASON
from pysyncobj.utility import TcpUtility, UtilityException

from lethe.journal import (
    Command,
    Fence,
    Journal,
    JournalError,
    JournalRejected,
    JournalState,
    NotLeader,
)
from lethe.raft.config import DEFAULT_TIMINGS, RaftTimings, make_conf
from lethe.raft.discovery import DialNode
from lethe.raft.lock import hold_data_dir
from lethe.raft.machine import JournalMachine, LeaseTransport, encode_command
from lethe.raft.prevote import PreVoteSyncObj
from lethe.raft.status import RaftMetrics, RaftStatus, build_status

__all__ = ["RaftJournal"]

log = logging.getLogger("lethe.raft")

_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if not k.startswith("_")}
_LOST_LEADERSHIP = {FAIL_REASON.NOT_LEADER, FAIL_REASON.MISSING_LEADER,
                    FAIL_REASON.LEADER_CHANGED, FAIL_REASON.DISCARDED}
_MEMBERS_FILE = "members.json"
#: Seconds without a known leader after which a member says why, in its log
#: (then every QUORUM_LOG_EVERY) and in /readyz: several election timeouts,
#: so a normal election or restart stays quiet.
QUORUM_REPORT_AFTER = 5.0
QUORUM_LOG_EVERY = 30.0


#: Seconds between two rounds of asking the peers about the cluster, and the
#: timeout of one peer's answer, while a replica is not yet a member.
PROBE_EVERY = 0.5
PROBE_TIMEOUT = 1.0
_STATE_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER in its status


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer's pysyncobj ``status``, reduced to what the membership decision needs."""

    address: str
    #: The leader it follows (itself when it leads), or None.
    leader: str | None
    is_leader: bool
    term: int
    #: Its membership: itself and its partners.
    members: frozenset[str]
    #: Its log holds more than pysyncobj's initial no-op entry, or it committed one.
    has_data: bool


def peer_view(address: str, raw: Any) -> PeerView | None:
    """Parse the dict a pysyncobj ``status`` utility command returns (None if it is not one)."""
    if not isinstance(raw, dict):
        return None
    prefix = "partner_node_status_server_"
    leader = raw.get("leader")
    me = str(getattr(raw.get("self"), "id", address))
    try:
        return PeerView(address=address, leader=None if leader is None else str(leader.id),
                        is_leader=raw.get("state") == _STATE_LEADER,
                        term=int(raw.get("raft_term", 0)),
                        members=frozenset([me, *(k[len(prefix):] for k in raw
                                                 if str(k).startswith(prefix))]),
                        has_data=int(raw.get("log_len", 0)) > 1
                        or int(raw.get("commit_idx", 0)) > 1)
    except (TypeError, ValueError, AttributeError):
        return None


@dataclass(frozen=True, slots=True)
class MembershipStep:
    """What a replica that is not yet a confirmed member does next (see membership_step)."""

    #: member: done. adopt: take ``members`` and wait for the leader to feed us.
    #: join: take ``members`` and ask ``leader`` to add us. bootstrap: campaign
    #: with the seed. wait: ask again later (``reason`` says why).
    kind: str
    members: frozenset[str] = frozenset()
    leader: str | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.kind == "adopt":
            return f"listed by the leader {self.leader}: waiting for it to send the log"
        if self.kind == "join":
            return (f"not a member of the cluster led by {self.leader} "
                    f"({', '.join(sorted(self.members))}): asking it to add this replica")
        if self.kind == "bootstrap":
            return f"no cluster exists: bootstrapping one with the seed ({self.reason})"
        return self.reason


def membership_step(*, me: str, seed: frozenset[str], bootstrapper: str | None, holding: bool,
                    views: Mapping[str, PeerView | None]) -> MembershipStep:
    """Decide from the peers' answers (``views``; None = no answer); pure.

    A leader's answer decides: listed there, we are a member (``holding``: wait
    to be fed first); not listed, we join. Without a leader a replica with Raft
    data simply waits (it campaigns as usual meanwhile). A held replica
    bootstraps only if it is ``bootstrapper``, no answer shows Raft data, and a
    majority of ``seed`` (itself included) answered with exactly ``seed`` as
    their membership and no data: then no cluster can exist that a majority
    of the seed belongs to, and every replica that votes holds the same seed.
    """
    leaders = sorted((v for v in views.values() if v is not None and v.is_leader),
                     key=lambda v: v.term, reverse=True)
    if leaders:
        top = leaders[0]
        if me in top.members:
            kind = "adopt" if holding else "member"
            return MembershipStep(kind, members=top.members, leader=top.address)
        return MembershipStep("join", members=top.members, leader=top.address)
    named = sorted({v.leader for v in views.values() if v is not None and v.leader})
    if named:
        return MembershipStep("wait", reason=f"peers name the leader {', '.join(named)}, "
                                             "which did not answer yet")
    answered = sorted(a for a, v in views.items() if v is not None)
    if not holding:
        return MembershipStep("wait", reason="no leader known; answered: "
                                             + (", ".join(answered) or "nobody"))
    data = sorted(v.address for v in views.values() if v is not None and v.has_data)
    if data:
        return MembershipStep("wait", reason=f"no Raft data here, and {', '.join(data)} "
                                             "hold Raft data but know no leader: waiting "
                                             "for their cluster's leader")
    if me != bootstrapper:
        return MembershipStep("wait", reason=f"no Raft data and no cluster found (answered: "
                                             f"{', '.join(answered) or 'nobody'}): waiting "
                                             f"for {bootstrapper} to bootstrap or a leader")
    fresh = [a for a, v in views.items() if v is not None and a in seed and v.members == seed]
    need = len(seed) // 2 + 1
    why = (f"{1 + len(fresh)} of the {len(seed)} seed replicas answered without Raft data, "
           f"{need} needed")
    if 1 + len(fresh) >= need:
        return MembershipStep("bootstrap", members=seed, reason=why)
    return MembershipStep("wait", reason=f"no Raft data and no cluster found: {why} "
                                         "before bootstrapping")


class _HoldingSyncObj(PreVoteSyncObj):
    """``PreVoteSyncObj`` that can be held: while ``holding`` it never campaigns
    (it still votes and follows a leader that feeds it). The first append from a
    leader ends the hold (a leader only sends to its members), as does
    :meth:`bootstrap`. Also runs callables on the tick thread (``call_on_tick``),
    where pysyncobj's state may be changed."""

    def __init__(self, *args: Any, hold: bool, **kwargs: Any) -> None:
        # Set before SyncObj.__init__: its tick thread may start at once.
        self.holding = hold
        self._tick_calls: list[Callable[[], None]] = []
        self._tick_calls_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def call_on_tick(self, fn: Callable[[], None]) -> None:
        with self._tick_calls_lock:
            self._tick_calls.append(fn)

    def bootstrap(self) -> None:
        """Tick thread: end the hold and campaign now (a majority of the seed is fresh)."""
        if self.holding:
            self.holding = False
            self._SyncObj__raftElectionDeadline = time.monotonic()

    def _onTick(self, timeToWait: float = 0.0) -> None:
        with self._tick_calls_lock:
            calls, self._tick_calls = self._tick_calls, []
        for fn in calls:
            fn()
        if self.holding:
            if self._SyncObj__raftLeader is not None:
                self.holding = False
                log.info("raft: %s: a leader sends this replica the log; it is a member",
                         self._SyncObj__selfNode.id)
            else:
                self._SyncObj__raftElectionDeadline = float("inf")
        super()._onTick(timeToWait)


@dataclass(frozen=True, slots=True)
class _Published:
    """What the tick thread last observed; replaced atomically, read lock-free."""

    leader: bool
    term: int
    #: Send time (time.monotonic()) of the newest heartbeat a quorum acknowledged.
    quorum_at: float
    lease_expiry: float  # quorum_at + lease window; -inf when not leading
    #: time.monotonic() of the tick that published this view.
    ticked_at: float = float("-inf")


_NOT_LEADING = _Published(leader=False, term=0, quorum_at=float("-inf"),
                          lease_expiry=float("-inf"))


class RaftJournal:
    """One Raft member holding the replicated journal. Thread-safe.

    ``peers`` is the bootstrap seed (without ``self_address``; with ``join=True``
    this replica is not part of the seed, e.g. a pod added by ``kubectl scale``
    while the pods' configured size stayed the same). If ``data_dir`` holds a
    membership file from an earlier run, that wins over the seed: once a
    cluster exists its membership lives in the log.

    A replica without that file (a new pod, a lost volume) does not trust the
    seed: it holds (never campaigns) and asks its peers whether a cluster
    exists. If a leader answers, it takes the leader's membership and, when
    not listed there, asks the leader to add it. Only the seed's first member
    (``bootstrapper``) may end the hold without a leader, and only once a
    majority of the seed answered that they hold no Raft data either and
    nobody answered with data (a fresh install). The rule, and why it cannot
    form a second cluster, is in docs/raft.md ("Who bootstraps").

    Another process holding ``data_dir`` is waited for (raft/lock.py); with
    ``wait_for_lock=False`` the constructor raises ``lethe.raft.lock.DataDirBusy`` instead.
    """

    def __init__(self, *, self_address: str, peers: Sequence[str], password: str | None,
                 data_dir: Path | str | None, timings: RaftTimings = DEFAULT_TIMINGS,
                 bind_address: str | None = None, join: bool = False,
                 metrics: RaftMetrics | None = None, wait_for_lock: bool = True) -> None:
        self._self = self_address
        self._timings = timings
        self._password = password
        self._data_dir = Path(data_dir) if data_dir is not None else None
        # Before anything in the directory is read: another process of this identity
        # may still be writing it (docs/raft.md, "A force-deleted pod").
        self._lock_fd = (hold_data_dir(self._data_dir, wait=wait_for_lock)
                         if self._data_dir is not None else None)
        try:
            self._metrics = metrics
            self._published = _NOT_LEADING
            # Pause detection (see lease_remaining): a gap between two ticks longer than
            # this means the process (or its tick thread) did not run; the lease is then
            # void until a quorum acknowledges a heartbeat sent after the gap.
            self._pause_gap = max(4 * timings.auto_tick_period, timings.lease_window / 2)
            self._last_tick = time.monotonic()
            self._reconfirm_after = float("-inf")
            self._pending: dict[int, Future[int]] = {}
            self._pending_lock = threading.Lock()
            self._pending_seq = 0
            self._fence_inflight_term = -1
            self._last_leader: str | None = None
            self._was_leader_term = -1
            self._members_written: tuple[str, ...] = ()
            self._closed = threading.Event()
            self._leaderless_since: float | None = time.monotonic()
            self._quorum_logged_at = float("-inf")
            self._membership_note: str | None = None
            self._leaving = threading.Event()

            others = list(dict.fromkeys(p for p in peers if p != self_address))
            #: The bootstrap seed, this replica included unless it joins from outside it.
            self._seed = frozenset(others if join else [self_address, *others])
            #: The only seed member that may form a new cluster (the same on every replica
            #: of one seed: ordinal 0 of a StatefulSet sorts first).
            self._bootstrapper = min(self._seed) if self._seed else None
            remembered = self._load_members()
            initial = others if remembered is None else [m for m in remembered if m != self_address]
            # No Raft data: hold until a leader feeds us or we may bootstrap (see class doc).
            # A seed of one (`lethe apply`, a single replica) has nobody to ask.
            hold = remembered is None and self._seed != {self_address}
            self._machine = JournalMachine()
            self._conf = make_conf(timings=timings, password=password, data_dir=self._data_dir,
                                   bind_address=bind_address)
            self._sync = _HoldingSyncObj(DialNode(self_address), [DialNode(p) for p in initial],
                                         conf=self._conf, consumers=[self._machine],
                                         nodeClass=DialNode, transportClass=LeaseTransport,
                                         leader_contact=self._leader_contact, hold=hold)
            self._sync.addOnTickCallback(self._on_tick)
            if not initial and not hold:
                # A one-node cluster (`lethe apply`, a single replica) campaigns on its
                # first tick instead of after a random 0.4-0.8 s: the timeout only gives
                # a live leader's heartbeats the chance to arrive first, and no other
                # member exists to send any. Raft's safety never rests on timeouts; the
                # lease of a one-node cluster needs no follower either.
                self._sync._SyncObj__raftElectionDeadline = 0.0
            self._membership_thread: threading.Thread | None = None
            if hold or remembered is not None:
                # Also with data: a replica removed by a scale-down whose volume was kept
                # remembers a membership that no longer lists it, and must ask to be added.
                self._membership_thread = threading.Thread(
                    target=self._membership_loop, name="raft-membership", daemon=True)
                self._membership_thread.start()
        except BaseException:
            if self._lock_fd is not None:  # a failed start must not keep the directory
                os.close(self._lock_fd)
            raise

    # -- Journal protocol -------------------------------------------------------------

    def is_leader(self) -> bool:
        """pysyncobj's view; WARNING: two nodes may both believe it. Use lease_valid()."""
        return bool(self._sync._isLeader())

    def current_term(self) -> int:
        return int(self._sync.raftCurrentTerm)

    def lease_valid(self) -> bool:
        """Leader of the current term, fenced, and heard from a quorum within the lease (I3)."""
        return self.lease_remaining() > 0.0

    def lease_remaining(self) -> float:
        """Seconds of lease left (0 when not valid); uses the caller's clock, not the tick's.

        A local check (no network, a few µs), so callers may make it before every
        side effect. Besides the lease's own expiry it treats a gap in this
        process's execution as a lapse: if the tick thread has not published
        for longer than the pause gap (``max(4 ticks, lease_window / 2)``, 0.2 s
        by default), the caller may have just woken from SIGSTOP, a VM freeze or
        a long stall before the tick thread had a chance to run, so the view is
        stale; the tick that sees the gap then keeps the lease void until a
        quorum acknowledges a heartbeat *sent after* the gap (``_on_tick``).
        """
        pub = self._published
        now = time.monotonic()
        if now - pub.ticked_at > self._pause_gap or pub.lease_expiry <= now \
                or not self._fenced(pub):
            return 0.0
        return pub.lease_expiry - now

    def wait_lease(self, *, timeout: float) -> bool:
        """Wait up to ``timeout`` for a valid lease. Under load a follower's
        acknowledgement can lag past the (short) lease window for a moment;
        side effects should pause and resume rather than abort the run."""
        return self._wait_for(self.lease_valid, timeout)

    def _fenced_leadership(self) -> _Published | None:
        """The published view if we lead the current term and its Fence is applied."""
        pub = self._published
        return pub if self._fenced(pub) else None

    def _fenced(self, pub: _Published) -> bool:
        """``pub`` says we lead, and pysyncobj still agrees on leadership and term,
        and that term's Fence is applied (attribute reads only: per-delete cost)."""
        sync = self._sync
        return (pub.leader and sync._isLeader() and sync.raftCurrentTerm == pub.term
                and self._machine.fenced_term == pub.term)

    def _may_commit(self) -> bool:
        """Admission for commits: fenced leader that heard from a quorum within
        ``leader_fallback_timeout``. Looser than the lease on purpose: a commit
        that succeeds is itself proof of leadership (pysyncobj resolves it only
        if the entry applied at that index carries our term), while a deposed
        leader's entry is void through the Fence. This only fails fast on a
        node that is obviously cut off — e.g. resumed after SIGSTOP."""
        pub = self._fenced_leadership()
        return pub is not None and (time.monotonic() - pub.quorum_at
                                    < self._timings.leader_fallback_timeout)

    def commit(self, cmd: Command, *, timeout: float = 10.0) -> int:
        """Commit, wait until applied here, return the Raft index (see Journal)."""
        future = self.commit_async(cmd)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            raise JournalError(f"{type(cmd).__name__} not applied within {timeout:.1f}s "
                               "(outcome unknown: re-read the journal)") from None

    def commit_async(self, cmd: Command) -> Future[int]:
        """Submit without waiting; many may be in flight (they pipeline in one append).

        The future resolves with the index when the entry is applied here, or
        fails with NotLeader (not the fenced leader in contact with a quorum at
        submission; see ``_may_commit``), JournalRejected (CAS
        failed; nothing changed) or JournalError (leadership lost meanwhile;
        outcome unknown).
        """
        future: Future[int] = Future()
        if not self._may_commit():
            future.set_exception(NotLeader(
                f"not the fenced leader in contact with a quorum (term {self.current_term()})"))
            return future
        self._submit(cmd, future)
        return future

    def submit_unfenced(self, cmd: Command) -> Future[int]:
        """Submit without the lease check. Tests use it to prove the state machine
        rejects a deposed leader's stale entry; production code must not."""
        future: Future[int] = Future()
        self._submit(cmd, future)
        return future

    def read(self) -> JournalState:
        state, _ = self._machine.snapshot()
        return state

    # -- membership -------------------------------------------------------------------

    @property
    def self_address(self) -> str:
        return self._self

    def leader(self) -> str | None:
        node = self._sync._getLeader()
        return None if node is None else str(node.id)

    def members(self) -> list[str]:
        """This node's view of the membership (itself included), sorted."""
        return sorted({self._self, *self._other_ids()})

    def add_member(self, address: str, *, timeout: float = 10.0) -> None:
        """Leader only: add ``address`` (one change at a time, as Raft requires)."""
        self._membership_change(lambda cb: self._sync.addNodeToCluster(DialNode(address),
                                                                       callback=cb),
                                what=f"add {address}", timeout=timeout)

    def remove_member(self, address: str, *, timeout: float = 10.0) -> None:
        """Leader only: remove ``address``. The leader cannot remove itself: leave() instead."""
        self._membership_change(lambda cb: self._sync.removeNodeFromCluster(DialNode(address),
                                                                            callback=cb),
                                what=f"remove {address}", timeout=timeout)

    def holding(self) -> bool:
        """True while this replica, started without Raft data, may not campaign yet:
        no leader has fed it and it may not bootstrap (see the class doc)."""
        return bool(self._sync.holding)

    def leave(self, *, timeout: float = 15.0) -> None:
        """Graceful scale-down: hand over leadership if needed, then get removed.

        pysyncobj refuses to let a leader remove itself, so a leader first
        transfers leadership, then asks the new leader (through any member) to
        remove it. Returns once a peer no longer lists us, or raises.
        """
        deadline = time.monotonic() + timeout
        # No more "add me" from the membership loop once we ask to be removed.
        self._leaving.set()
        thread = self._membership_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=PROBE_TIMEOUT + 2.5)
        while time.monotonic() < deadline:
            if not self._sync.otherNodes:
                return  # a one-node cluster has nobody to hand over to
            if self.is_leader():
                self._sync.transferLeadership(callback=None)
                self._wait_for(lambda: not self.is_leader(), 2.0)
                continue
            for peer in self._seed_peers():
                reply = self._utility(peer, ["remove", self._self], timeout=2.0)
                if reply is not None and reply.startswith("SUCCESS"):
                    log.info("raft: %s left the cluster through %s", self._self, peer)
                    return
            time.sleep(0.2)
        raise JournalError(f"could not leave the cluster within {timeout:.0f}s")

    # -- status and lifecycle ---------------------------------------------------------

    def status(self) -> RaftStatus:
        """The `/raft` document (see :func:`lethe.raft.status.build_status`)."""
        raw: dict[str, Any] = {}
        for _ in range(5):  # getStatus() iterates dicts the tick thread mutates
            try:
                raw = dict(self._sync.getStatus())
                break
            except RuntimeError:
                time.sleep(0.001)
        transport = self._transport()
        since = self._leaderless_since
        return build_status(raw=raw, self_address=self._self,
                            lease_remaining=self.lease_remaining(),
                            fenced_term=self._machine.fenced(),
                            acked=transport.acked_send_times() if transport else {},
                            rejected_messages=transport.rejected_messages if transport else 0,
                            last_heard=transport.last_heard() if transport else {},
                            leaderless_for=None if since is None else time.monotonic() - since,
                            problem=self.quorum_problem())

    def quorum_problem(self) -> str | None:
        """Why no leader is known, once that has lasted QUORUM_REPORT_AFTER seconds.

        One sentence for the log and /readyz (#14: a replica that cannot form
        or join a quorum must say so): how long, how many members it needs,
        and for each peer whether it is connected, when it last answered, and
        what it said to our pre-vote. ``None`` while a leader is known or the
        leaderless spell is still short. A Raft port that cannot be bound is
        named at once. Any thread.
        """
        transport = self._transport()
        unbound = transport.bind_problem if transport is not None else None
        if unbound is not None:
            return unbound  # nothing else happens until it listens: no ticks, no peers
        since = self._leaderless_since
        if since is None:
            return None
        now = time.monotonic()
        if now - since < QUORUM_REPORT_AFTER:
            return None
        heard = transport.last_heard() if transport is not None else {}
        nodes: list[Any] = []
        for _ in range(5):
            try:
                nodes = list(self._sync.otherNodes)
                break
            except RuntimeError:
                time.sleep(0.001)
        members = len(nodes) + 1
        need = members // 2 + 1
        refusals: dict[str, tuple[float, str]] = {}
        with contextlib.suppress(RuntimeError):  # the tick thread may add a peer meanwhile
            refusals = dict(self._sync.pre_vote_stats.refusals)
        parts = []
        for node in sorted(nodes, key=lambda n: str(n.id)):
            peer = str(node.id)
            what = "connected" if self._sync.isNodeConnected(node) else "not connected"
            t = heard.get(peer)
            what += ", never answered" if t is None else f", last answered {now - t:.1f}s ago"
            if _name_does_not_resolve(peer):
                what += ", its name does not resolve"
            refused = refusals.get(peer)
            if refused is not None and now - refused[0] < QUORUM_LOG_EVERY:
                what += f", refused our pre-vote ({refused[1]})"
            parts.append(f"{peer} {what}")
        text = (f"no Raft leader for {now - since:.0f}s: {self._self} needs {need} of "
                f"{members} members (itself and {need - 1} more) and sees peers: "
                + ("; ".join(parts) or "none"))
        rejected = transport.rejected_messages if transport is not None else 0
        if rejected:
            text += (f"; {rejected} incoming messages failed authentication "
                     "(a peer with another Raft password?)")
        note = self._membership_note
        if note is not None:
            text += f"; membership: {note}"
        return text

    def _watch_quorum(self, now: float, leader: str | None) -> None:
        """Tick thread: track how long no leader is known; say why in the log."""
        if leader is not None:
            since, self._leaderless_since = self._leaderless_since, None
            if since is not None and now - since >= QUORUM_REPORT_AFTER:
                log.info("raft: leader %s known after %.1fs without one", leader, now - since)
            return
        if self._leaderless_since is None:
            self._leaderless_since = now
            return
        if (now - self._leaderless_since >= QUORUM_REPORT_AFTER
                and now - self._quorum_logged_at >= QUORUM_LOG_EVERY):
            self._quorum_logged_at = now
            log.warning("raft: %s", self.quorum_problem())

    def wait_leader(self, *, timeout: float) -> str | None:
        """Block until some leader is known (or ``timeout``); return its address."""
        self._wait_for(lambda: self.leader() is not None, timeout)
        return self.leader()

    def close(self) -> None:
        """Stop ticking, close sockets and files; fail whatever is still pending."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(Exception):
            self._sync.destroy_synchronous()
        self._fail_pending(JournalError("raft node closed"))
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the journal is closed: another process may take it
            self._lock_fd = None

    # -- internals (tick thread unless noted) -----------------------------------------

    def _submit(self, cmd: Command, future: Future[int]) -> None:
        if self._closed.is_set():
            future.set_exception(JournalError("raft node closed"))
            return
        with self._pending_lock:
            self._pending_seq += 1
            key = self._pending_seq
            self._pending[key] = future

        def done(result: Any, error: int) -> None:
            with self._pending_lock:
                self._pending.pop(key, None)
            if future.done():
                return
            with contextlib.suppress(Exception):  # a racing close() may have failed it
                if error == FAIL_REASON.SUCCESS:
                    index, reason = result
                    if reason is None:
                        future.set_result(int(index))
                    else:
                        future.set_exception(JournalRejected(reason))
                elif error in _LOST_LEADERSHIP:
                    future.set_exception(NotLeader(
                        f"{type(cmd).__name__} not committed: {_FAIL_NAMES.get(error, error)}"))
                else:
                    future.set_exception(JournalError(
                        f"{type(cmd).__name__} failed: {_FAIL_NAMES.get(error, error)}"))

        try:
            self._machine.apply_command(encode_command(cmd), callback=done)
        except AttributeError:
            # close() raced with us: destroy() detaches the consumer (its _syncObj is
            # None), so a run thread still finishing a batch gets the journal's error.
            if not self._closed.is_set():
                raise
            with self._pending_lock:
                self._pending.pop(key, None)
            if not future.done():
                future.set_exception(JournalError("raft node closed"))

    def _fail_pending(self, exc: JournalError) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                with contextlib.suppress(Exception):
                    fut.set_exception(exc)

    def _leader_contact(self) -> float:
        """Monotonic time of the newest append_entries accepted from a leader."""
        transport = self._transport()
        return transport.last_leader_contact if transport is not None else time.monotonic()

    def _transport(self) -> LeaseTransport | None:
        t = getattr(self._sync, "_SyncObj__transport", None)
        return t if isinstance(t, LeaseTransport) else None

    def _on_tick(self) -> None:
        """Publish the lease, fence a new term, persist membership, update metrics."""
        now = time.monotonic()
        gap, self._last_tick = now - self._last_tick, now
        if gap > self._pause_gap:
            # We did not run for `gap` seconds (SIGSTOP, VM freeze, starvation): what a
            # quorum acknowledged before proves nothing about now. Require a fresh round.
            self._reconfirm_after = now
            if self._published.leader:
                # Past the lease window it is a real lapse; shorter gaps happen under load.
                log.log(logging.WARNING if gap > self._timings.lease_window else logging.DEBUG,
                        "raft: %s did not run for %.2fs; lease void until a quorum "
                        "acknowledges a heartbeat sent after the pause", self._self, gap)
        leader = bool(self._sync._isLeader())
        term = int(self._sync.raftCurrentTerm)
        transport = self._transport()
        others = list(self._sync.otherNodes)
        if leader and self._was_leader_term != term:
            self._was_leader_term = term
            if transport is not None:
                transport.reset_acks()
            log.info("raft: %s became leader of term %d", self._self, term)
        if not leader and self._was_leader_term != -1:
            self._was_leader_term = -1
            log.info("raft: %s is no longer leader (term %d)", self._self, term)
            self._fail_pending(JournalError(
                "leadership lost before the entry was applied (outcome unknown: "
                "re-read the journal)"))
        expiry = quorum_at = float("-inf")
        if leader:
            acked = transport.acked_send_times() if transport is not None else {}
            need = (len(others) + 1) // 2  # acknowledgements needed besides my own
            if need == 0:
                quorum_at = now
            else:
                times = sorted((acked.get(n, float("-inf")) for n in others), reverse=True)
                quorum_at = times[need - 1]
            if quorum_at >= self._reconfirm_after:
                expiry = quorum_at + self._timings.lease_window
            if self._machine.fenced() < term and self._fence_inflight_term != term:
                self._fence_inflight_term = term

                def fenced(result: Any, error: int, t: int = term) -> None:
                    if error != FAIL_REASON.SUCCESS or result[1] is not None:
                        log.warning("raft: fence of term %d failed: %s", t,
                                    _FAIL_NAMES.get(error, result))
                        self._fence_inflight_term = -1  # retry on a later tick

                self._machine.apply_command(encode_command(Fence(term=term)), callback=fenced)
        self._published = _Published(leader=leader, term=term, quorum_at=quorum_at,
                                     lease_expiry=expiry, ticked_at=now)
        current_leader = self.leader()
        self._watch_quorum(now, current_leader)
        if current_leader != self._last_leader:
            if self._metrics is not None and current_leader is not None:
                self._metrics.leader_changes.inc()
            self._last_leader = current_leader
        self._persist_members(others)
        if self._metrics is not None:
            self._metrics.observe(
                is_leader=leader, term=term, commit_index=int(self._sync.raftCommitIndex),
                connected_peers=sum(1 for n in others if self._sync.isNodeConnected(n)),
                lease_valid=expiry > now and self._machine.fenced() == term)

    def _persist_members(self, others: list[Any]) -> None:
        # Not while holding: the file means "this replica belongs to a cluster". A
        # held replica that restarted with its seed remembered would campaign with
        # it and could form a second cluster with other new replicas.
        if self._data_dir is None or self._sync.holding:
            return
        members = tuple(sorted({self._self, *(str(n.id) for n in others)}))
        if members == self._members_written:
            return
        path = self._data_dir / _MEMBERS_FILE
        tmp = path.with_suffix(".tmp")
        try:
            # Durable before it counts as written: after a power loss the file is
            # the old membership or the new one, never empty.
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(list(members)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dfd = os.open(self._data_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self._members_written = members
        except OSError as exc:
            log.warning("raft: cannot persist membership to %s: %s", path, exc)

    def _load_members(self) -> list[str] | None:
        if self._data_dir is None:
            return None
        path = self._data_dir / _MEMBERS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(data, list) and all(isinstance(x, str) for x in data):
            # A node that was removed and has no peers left in its file falls back to the seed.
            return data if len(data) > 1 else None
        return None

    def _seed_peers(self) -> list[str]:
        leader = self.leader()
        peers = self._other_ids()
        if leader is not None and leader != self._self:
            peers = [leader, *(p for p in peers if p != leader)]
        return peers

    def _other_ids(self) -> list[str]:
        """Peer addresses, from a thread other than the tick thread (which may
        be resizing the set while we copy it)."""
        for _ in range(5):
            try:
                return [str(n.id) for n in self._sync.otherNodes]
            except RuntimeError:
                time.sleep(0.001)
        return []

    def _utility(self, peer: str, command: list[Any], *, timeout: float) -> str | None:
        """Send an authenticated pysyncobj utility command (add/remove) to ``peer``."""
        try:
            reply = TcpUtility(self._password, timeout).executeCommand(DialNode(peer), command)
        except (UtilityException, OSError) as exc:
            log.debug("raft: %s to %s failed: %s", command[0], peer, exc)
            return None
        return None if reply is None else str(reply)

    def _peer_view(self, peer: str) -> PeerView | None:
        """``peer``'s own status over the authenticated Raft port, or None if it
        does not answer within PROBE_TIMEOUT."""
        try:
            raw = TcpUtility(self._password, PROBE_TIMEOUT).executeCommand(DialNode(peer),
                                                                           ["status"])
        except (UtilityException, OSError) as exc:
            log.debug("raft: status of %s failed: %s", peer, exc)
            return None
        return peer_view(peer, raw)

    def _membership_loop(self) -> None:
        """Until this replica is a member of a cluster that has a leader: ask the
        peers, adopt the leader's membership, ask it to add us, or bootstrap."""
        said: str | None = None
        while not self._closed.is_set() and not self._leaving.is_set():
            try:
                step = self._membership_round()
            except Exception:  # never let the thread die silently: retry next round
                log.exception("raft: membership check failed")
                step = MembershipStep("wait", reason="membership check failed (see log)")
            if step.kind == "member":
                if said is not None:
                    log.info("raft: %s is a member of the cluster of %s", self._self,
                             ", ".join(sorted(step.members)))
                self._membership_note = None
                return
            text = step.describe()
            self._membership_note = text
            if text != said:
                log.info("raft: %s: %s", self._self, text)
                said = text
            if step.kind == "bootstrap":
                self._sync.call_on_tick(self._sync.bootstrap)
            elif step.kind in ("adopt", "join"):
                self._adopt(step.members)
                if step.kind == "join" and step.leader is not None \
                        and not self._leaving.is_set():
                    reply = self._utility(step.leader, ["add", self._self], timeout=2.0)
                    if reply is not None and reply.startswith("SUCCESS"):
                        log.info("raft: %s added to the cluster by %s", self._self, step.leader)
            self._closed.wait(PROBE_EVERY)

    def _membership_round(self) -> MembershipStep:
        if self.is_leader():
            return MembershipStep("member", members=frozenset(self.members()))
        holding = self.holding()
        candidates = [p for p in dict.fromkeys([*self._seed_peers(), *sorted(self._seed)])
                      if p != self._self]
        # In parallel: a frozen peer costs PROBE_TIMEOUT, not one per peer.
        with ThreadPoolExecutor(max_workers=max(1, len(candidates)),
                                thread_name_prefix="raft-probe") as pool:
            asked: dict[str, PeerView | None] = dict(
                zip(candidates, pool.map(self._peer_view, candidates), strict=True))
        # Ask the leaders they name too (a member outside our seed, e.g. ordinal 4
        # for a pod started with a seed of 3).
        for view in list(asked.values()):
            if view is not None and view.leader and view.leader not in asked \
                    and view.leader != self._self:
                asked[view.leader] = self._peer_view(view.leader)
        return membership_step(me=self._self, seed=self._seed, bootstrapper=self._bootstrapper,
                               holding=holding, views=asked)

    def _adopt(self, members: frozenset[str]) -> None:
        """Make ``members`` (a leader's view) our peers, on the tick thread: a new
        replica must accept the leader's connection and dial its members."""
        others = sorted(m for m in members if m != self._self)
        if set(others) == set(self._other_ids()):
            return

        def apply() -> None:
            # Decided from answers gathered a moment ago: if a leader has begun to
            # send us the log meanwhile, the log maintains the membership; never
            # overwrite it with an older view.
            # Held or not: the hold ends only after this tick's queued calls, and a
            # first append received in the previous tick's poll has already set the
            # leader and may have applied membership entries (review of 4125432: a
            # stale view applied then gave a member a wrong peer list for good).
            sync = self._sync
            if sync._SyncObj__raftLeader is not None or len(sync._SyncObj__raftLog) > 1:
                return
            log.info("raft: %s takes the leader's membership: %s", self._self, ", ".join(others))
            sync._SyncObj__updateClusterConfiguration(others)

        self._sync.call_on_tick(apply)

    def _membership_change(self, start: Callable[[Callable[[Any, int], None]], None], *,
                           what: str, timeout: float) -> None:
        if not self.is_leader():
            raise NotLeader(f"{what}: only the leader changes membership")
        done = threading.Event()
        outcome: list[int] = []

        def cb(_result: Any, error: int) -> None:
            outcome.append(error)
            done.set()

        start(cb)
        if not done.wait(timeout):
            raise JournalError(f"{what}: not committed within {timeout:.1f}s")
        if outcome[0] != FAIL_REASON.SUCCESS:
            raise JournalError(f"{what}: {_FAIL_NAMES.get(outcome[0], outcome[0])}")

    def _wait_for(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            if self._closed.wait(0.02):
                return False
        return cond()


def _name_does_not_resolve(address: str) -> bool:
    """True if pysyncobj's DNS cache holds a failed lookup of ``address``'s host
    (it retries after ``dns_fail_cache_time``); reads the cache, never resolves."""
    from pysyncobj.dns_resolver import globalDnsResolver

    host = address.rsplit(":", 1)[0]
    cache = getattr(globalDnsResolver(), "_DnsCachingResolver__cache", {})
    entry = cache.get(host)
    return entry is not None and not entry[1]


def _conforms_to_journal(journal: RaftJournal) -> Journal:
    """Static check only: mypy proves RaftJournal satisfies the Journal protocol."""
    return journal
