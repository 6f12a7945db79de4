"""The pysyncobj side: replicated state machine and an instrumented transport.

Everything that touches pysyncobj internals lives here and in
:mod:`lethe.raft.node`; the rest of Lethe sees only :class:`lethe.journal.Journal`.

* :class:`JournalMachine` is a ``SyncObjConsumer`` whose one ``@replicated``
  method applies a :data:`~lethe.journal.Command` to a
  :class:`~lethe.journal.JournalState`. pysyncobj snapshots a consumer by
  pickling its fields: that is the bounded ``JournalState`` (I5), never storage
  inventory.
* The ``index`` given to ``JournalState.apply`` is the **real Raft log index**
  of the entry: pysyncobj applies entry ``raftLastApplied + 1`` and increments
  ``raftLastApplied`` only afterwards, on every replica and on journal replay
  alike, so it is deterministic.
* :class:`LeaseTransport` is pysyncobj's TCP transport plus three things it
  lacks: (1) for each follower, the *send* time of the newest heartbeat it
  acknowledged (the basis of the lease); (2) a vote guard: a follower that
  heard from a leader less than ``raftMinTimeout`` ago ignores vote requests,
  so no rival can be elected while the leader's lease may still be valid
  (the pre-vote of :mod:`lethe.raft.prevote` keeps a returning member from
  sending one at all); (3) a log line for every message that fails authentication; (4) bounds on
  a connection that has not authenticated yet (see ``LeaseTransport``); (5) the error
  of a Raft port it cannot bind, which pysyncobj retries in silence.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from typing import Any, get_args

from pysyncobj import SyncObjConsumer, replicated
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from lethe.journal import (
    Command,
    Fence,
    IntentEntry,
    JournalState,
)

__all__ = ["AUTH_DEADLINE", "MAX_FIRST_FRAME", "JournalMachine", "LeaseTransport",
           "decode_command", "encode_command"]

log = logging.getLogger("lethe.raft")

#: Unacknowledged heartbeats remembered per peer before we stop trusting the
#: FIFO pairing of sends and acknowledgements (see ``LeaseTransport``).
_MAX_OUTSTANDING = 100_000
#: Seconds an incoming connection may take to send its first, authenticated message.
#: A peer sends it at once on connecting; pysyncobj itself would wait forever.
AUTH_DEADLINE = 5.0
#: Largest first frame accepted before authentication: the first message is a
#: 32-byte random key (~150 bytes as a Fernet token). pysyncobj would otherwise
#: buffer whatever length the 4-byte prefix claims (up to 2 GiB) before checking it.
MAX_FIRST_FRAME = 64 * 1024
#: Seconds between two log lines about a Raft port that cannot be bound.
_BIND_LOG_EVERY = 30.0


# Every member of the Command union, so a new command cannot be left out (SkipSlot was).
_COMMAND_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in get_args(Command)}
_FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(cls.__dataclass_fields__) for name, cls in _COMMAND_TYPES.items()}

#: What goes into the Raft log: builtins only.
WireCommand = tuple[str, tuple[Any, ...]]


def encode_command(cmd: Command) -> WireCommand:
    """Flatten a command to builtins for the log.

    Pickling 1,000 slotted ``IntentEntry`` dataclasses costs ~9 ms (and as
    much again to unpickle, on every replica); the same data as plain tuples
    costs well under 1 ms. It also keeps the log free of class references, so
    unpickling a log entry never imports or constructs anything but builtins.
    """
    name = type(cmd).__name__
    values: list[Any] = []
    for field_name in _FIELDS[name]:
        value = getattr(cmd, field_name)
        if field_name == "entries":
            value = tuple((e.key, e.fingerprint, e.size, e.rule, e.version_id) for e in value)
        elif field_name == "counters":
            value = dict(value)
        values.append(value)
    return name, tuple(values)


def decode_command(wire: WireCommand) -> Command:
    """Inverse of :func:`encode_command` (deterministic on every replica)."""
    name, values = wire
    names = _FIELDS[name]
    if len(values) > len(names):
        raise ValueError(f"{name} has {len(values)} fields, more than {len(names)}")
    # Fewer values: an entry logged before trailing fields (with defaults) were added.
    kwargs = dict(zip(names, values, strict=False))
    if "entries" in kwargs:
        kwargs["entries"] = tuple(IntentEntry(*e) for e in kwargs["entries"])
    cmd: Command = _COMMAND_TYPES[name](**kwargs)
    return cmd


class JournalMachine(SyncObjConsumer):  # type: ignore[misc]  # pysyncobj is untyped
    """Replicated on every node. Mutated only by :meth:`apply_command`."""

    def __init__(self) -> None:
        # Attributes set before SyncObjConsumer.__init__ are *not* snapshotted.
        self._lock = threading.Lock()
        super().__init__()
        # Snapshotted (bounded): the journal and the newest term that was fenced.
        self.state = JournalState()
        self.fenced_term = 0

    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, wire: WireCommand) -> tuple[int, str | None]:
        """Apply one committed entry. Runs in pysyncobj's tick thread, in log order.

        Returns ``(index, rejection)``; a rejection changed nothing. An
        unexpected exception is turned into a rejection so one bad entry
        cannot wedge the apply loop (pysyncobj would retry it forever).
        """
        index = int(self._syncObj.raftLastApplied) + 1
        with self._lock:
            try:
                cmd = decode_command(wire)
                reason = self.state.apply(cmd, index=index)
            except Exception as exc:  # deterministic on every replica: same code, same input
                log.exception("raft: entry %d raised; treated as rejected", index)
                return index, f"internal error applying {wire[0]!r}: {exc}"
            if reason is None and isinstance(cmd, Fence):
                self.fenced_term = max(self.fenced_term, cmd.term)
        return index, reason

    def snapshot(self) -> tuple[JournalState, int]:
        """A consistent deep copy for readers in other threads."""
        with self._lock:
            return self.state.snapshot(), self.fenced_term

    def fenced(self) -> int:
        return self.fenced_term

    def _deserialize(self, data: dict[str, Any]) -> None:
        # Loading a snapshot (restart or catch-up from the leader).
        with self._lock:
            super()._deserialize(data)


class _AuditingEncryptor:
    """Wraps the Fernet encryptor of one incoming connection to log failures.

    pysyncobj silently drops a connection whose message fails to decrypt
    (``tcp_connection.py``: "Why no logging of security errors?"). The token
    is authenticated (HMAC) before anything is unpickled, so a crafted pickle
    never reaches ``pickle.loads``; we only add the audit trail.
    """

    def __init__(self, inner: Any, *, peer: str, on_reject: Any) -> None:
        self._inner = inner
        self._peer = peer
        self._on_reject = on_reject
        self._logged = False

    def _fail(self, exc: Exception) -> None:
        if not self._logged:
            self._logged = True
            log.warning("raft: rejected unauthenticated message from %s (wrong or missing "
                        "password; %s); connection dropped, nothing was unpickled",
                        self._peer, type(exc).__name__)
            self._on_reject()

    def extract_timestamp(self, data: bytes) -> int:
        try:
            return int(self._inner.extract_timestamp(data))
        except Exception as exc:
            self._fail(exc)
            raise

    def decrypt(self, data: bytes) -> bytes:
        try:
            return bytes(self._inner.decrypt(data))
        except Exception as exc:
            self._fail(exc)
            raise

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        return bytes(self._inner.encrypt_at_time(data, current_time))


class LeaseTransport(TCPTransport):  # type: ignore[misc]  # pysyncobj is untyped
    """TCP transport that measures quorum acknowledgements and guards votes.

    Lease bookkeeping: between two nodes there is exactly one TCP connection,
    messages are FIFO, and a follower answers each ``append_entries`` with at
    most one ``next_node_idx``. So the k-th answer on a connection acknowledges
    the k-th or a later heartbeat, and the send time of the k-th heartbeat is
    a *lower bound* for the heartbeat the follower actually received. The
    follower cannot vote for a rival before that receipt + ``raftMinTimeout``.
    On (dis)connect the queue is reset, because unanswered messages are lost.
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self._sent: dict[Any, deque[float]] = {}
        self._poisoned: set[Any] = set()
        self._acked: dict[Any, float] = {}
        # A fresh process behaves as if it had just heard from a leader: it
        # may have acknowledged one right before it restarted.
        self._last_leader_contact = time.monotonic()
        self._rejected = 0
        self._unauthenticated: dict[Any, tuple[float, str]] = {}  # conn -> (since, peer)
        self._votes_ignored = 0
        self._campaign_logged: Any = None
        #: peer id -> time.monotonic() of the newest message received from it
        self._last_heard: dict[str, float] = {}
        self._bind_problem: str | None = None
        self._bind_logged_at = float("-inf")
        super().__init__(syncObj, selfNode, otherNodes)

    # -- listening -----------------------------------------------------------------

    def _createServer(self) -> None:
        """pysyncobj retries a failed bind every ``bindRetryTime`` for ever and says
        nothing; meanwhile the node does not tick, so it neither campaigns nor
        answers. Keep the error so the log and /readyz can name it."""
        super()._createServer()
        conf, me = self._syncObj.conf, self._selfNode
        address = conf.bindAddress or getattr(me, "address", "?")
        bind = self._server.bind

        def bind_or_report() -> None:
            try:
                bind()
            except OSError as e:
                self._bind_problem = (f"cannot listen on {address} for Raft: "
                                      f"{e.strerror or e} (retrying every "
                                      f"{conf.bindRetryTime:g}s)")
                now = time.monotonic()
                if now - self._bind_logged_at >= _BIND_LOG_EVERY:
                    self._bind_logged_at = now
                    log.warning("raft: %s", self._bind_problem)
                raise
            if self._bind_problem is not None:
                log.info("raft: listening on %s after: %s", address, self._bind_problem)
            self._bind_problem = None

        self._server.bind = bind_or_report

    @property
    def bind_problem(self) -> str | None:
        """Why the Raft port is not listening yet (the last bind error), else None."""
        return self._bind_problem

    # -- lease bookkeeping (all in the tick thread) --------------------------------

    def send(self, node: Any, message: Any) -> bool:
        sent_at = time.monotonic()
        ok = bool(super().send(node, message))
        if isinstance(message, dict) and message.get("type") == "request_vote":
            term = message.get("term")
            if term != self._campaign_logged:
                self._campaign_logged = term
                log.info("raft: campaigning for term %s (last heard from a leader %.2fs ago)",
                         term, sent_at - self._last_leader_contact)
        if ok and isinstance(message, dict) and message.get("type") == "append_entries":
            q = self._sent.setdefault(node, deque())
            if len(q) >= _MAX_OUTSTANDING:
                self._poisoned.add(node)  # pairing no longer trustworthy until reconnect
            else:
                q.append(sent_at)
        return ok

    def _reset_link(self, node: Any) -> None:
        self._sent.pop(node, None)
        self._poisoned.discard(node)

    def _onNodeConnected(self, node: Any) -> None:
        self._reset_link(node)
        super()._onNodeConnected(node)

    def _onNodeDisconnected(self, node: Any) -> None:
        self._reset_link(node)
        self._acked.pop(node, None)
        super()._onNodeDisconnected(node)

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        self._last_heard[str(getattr(node, "id", node))] = time.monotonic()
        if isinstance(message, dict):
            kind = message.get("type")
            if kind == "next_node_idx":
                q = self._sent.get(node)
                if q and node not in self._poisoned:
                    sent_at = q.popleft()
                    if sent_at > self._acked.get(node, float("-inf")):
                        self._acked[node] = sent_at
            elif kind == "append_entries":
                if message.get("term", -1) >= self._syncObj.raftCurrentTerm:
                    self._last_leader_contact = time.monotonic()
            elif kind in ("pre_vote", "pre_vote_response"):
                # Ours (lethe.raft.prevote), never pysyncobj's: it would ignore them.
                handler = getattr(self._syncObj, "on_pre_vote_message", None)
                if handler is not None:
                    handler(node, message)
                return
            elif kind == "request_vote" and not self._syncObj._isLeader():
                quiet = time.monotonic() - self._last_leader_contact
                if quiet < self._syncObj.conf.raftMinTimeout:
                    # Vote guard (like etcd's CheckQuorum): the leader we heard
                    # from may still hold a lease; do not help depose it.
                    self._votes_ignored += 1
                    return
        super()._onMessageReceived(node, message)

    def acked_send_times(self) -> dict[Any, float]:
        """Peer -> send time of the newest heartbeat it acknowledged (tick thread)."""
        return dict(self._acked)

    def reset_acks(self) -> None:
        """Forget acknowledgements; called when a new leadership term begins."""
        self._acked.clear()

    def last_heard(self) -> dict[str, float]:
        """Peer id -> ``time.monotonic()`` of its newest message (any thread)."""
        for _ in range(5):
            try:
                return dict(self._last_heard)
            except RuntimeError:  # the tick thread added a peer meanwhile
                time.sleep(0.001)
        return {}

    @property
    def last_leader_contact(self) -> float:
        """``time.monotonic()`` of the newest append_entries accepted from a leader."""
        return self._last_leader_contact

    @property
    def rejected_messages(self) -> int:
        return self._rejected

    @property
    def votes_ignored(self) -> int:
        return self._votes_ignored

    # -- authentication audit ------------------------------------------------------

    def _onNewIncomingConnection(self, conn: Any) -> None:
        super()._onNewIncomingConnection(conn)
        if conn.encryptor is not None:
            peer = _peer_of(conn)
            conn.encryptor = _AuditingEncryptor(conn.encryptor, peer=peer,
                                                on_reject=self._count_reject)
            self._unauthenticated[conn] = (time.monotonic(), peer)
            self._guard_first_frame(conn, peer)

    def _guard_first_frame(self, conn: Any, peer: str) -> None:
        """Refuse a first frame that claims more than :data:`MAX_FIRST_FRAME` bytes (or
        a negative length) at once, instead of buffering it: nothing is unpickled
        either way, but pysyncobj would keep the connection and its buffer."""
        parse = conn._TcpConnection__processParseMessage

        def guarded() -> Any:
            if conn.sendRandKey is None:  # no authenticated message yet
                buf = conn._TcpConnection__readBuffer
                if len(buf) >= 4 and not 0 < struct.unpack("i", buf[:4])[0] <= MAX_FIRST_FRAME:
                    self._drop_unauthenticated(
                        conn, peer, f"first frame claims {struct.unpack('i', buf[:4])[0]} bytes")
                    return None
            return parse()

        # Name-mangled private method, looked up on the instance first.
        conn._TcpConnection__processParseMessage = guarded

    def _drop_unauthenticated(self, conn: Any, peer: str, why: str) -> None:
        log.warning("raft: rejected unauthenticated connection from %s (%s); connection "
                    "dropped, nothing was unpickled", peer, why)
        self._count_reject()
        self._unauthenticated.pop(conn, None)
        conn.disconnect()

    def _onTick(self) -> None:
        super()._onTick()
        self._drop_stuck_connects()
        if not self._unauthenticated:
            return
        now = time.monotonic()
        for conn, (since, peer) in list(self._unauthenticated.items()):
            if conn.sendRandKey is not None or conn.state != CONNECTION_STATE.CONNECTED:
                del self._unauthenticated[conn]  # authenticated, or gone
            elif now - since > AUTH_DEADLINE:
                self._drop_unauthenticated(
                    conn, peer, f"no authenticated message within {AUTH_DEADLINE:g}s")

    def _drop_stuck_connects(self) -> None:
        """Give up an outgoing connect that has not completed in ``connectionTimeout``.

        pysyncobj checks that timeout only when the socket has an event; a connect to
        an address nobody answers (a pod that was replaced: its old IP is gone, no
        RST ever comes) has none until the kernel gives up, about 127 s of SYN
        retries. Meanwhile the peer is never dialled again, not even at its new
        address. Disconnecting lets the next attempt resolve the name again.
        """
        now = time.monotonic()
        timeout = self._syncObj.conf.connectionTimeout
        for conn in list(self._connections.values()):
            if (conn.state == CONNECTION_STATE.CONNECTING
                    and now - conn._TcpConnection__lastReadTime > timeout):
                conn.disconnect()

    def _count_reject(self) -> None:
        self._rejected += 1


def _peer_of(conn: Any) -> str:
    try:
        host, port = conn._TcpConnection__socket.getpeername()[:2]
        return f"{host}:{port}"
    except Exception:
        return "unknown peer"
