"""What `/raft`, `lethe raft status` and `/metrics` show about this member.

Rendering is kept here (pure functions over plain dicts) so the operator's
HTTP server can mount the same `/raft` document the test entry point serves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["PeerStatus", "RaftMetrics", "RaftStatus", "build_status", "render_table"]

_STATE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}


class PeerStatus(TypedDict):
    address: str
    connected: bool
    match_index: int | None
    next_index: int | None
    #: Seconds since the send time of the newest heartbeat this peer acknowledged
    #: (leader only; the input of the lease).
    ack_age: float | None
    #: Seconds since any authenticated message from this peer (None: never).
    last_heard: float | None


class RaftStatus(TypedDict):
    self: str
    state: str
    leader: str | None
    term: int
    commit_index: int
    applied_index: int
    log_len: int
    has_quorum: bool
    lease_valid: bool
    lease_remaining: float
    fenced_term: int
    rejected_messages: int
    uptime: int
    #: Seconds since a leader was last known (None while one is known).
    leaderless_for: float | None
    #: Why no leader is known, once that lasts (see RaftJournal.quorum_problem).
    problem: str | None
    peers: list[PeerStatus]


def build_status(*, raw: Mapping[str, Any], self_address: str, lease_remaining: float,
                 fenced_term: int, acked: Mapping[Any, float],
                 rejected_messages: int, last_heard: Mapping[str, float] | None = None,
                 leaderless_for: float | None = None,
                 problem: str | None = None) -> RaftStatus:
    """Turn pysyncobj's flat ``getStatus()`` dict into a stable, typed document."""
    now = time.monotonic()
    prefix = "partner_node_status_server_"
    ack_by_id = {str(getattr(n, "id", n)): t for n, t in acked.items()}
    peers: list[PeerStatus] = []
    for key in sorted(k for k in raw if k.startswith(prefix)):
        addr = key[len(prefix):]
        t = ack_by_id.get(addr)
        heard = (last_heard or {}).get(addr)
        peers.append(PeerStatus(
            address=addr,
            connected=raw[key] == 2,
            match_index=raw.get(f"match_idx_server_{addr}"),
            next_index=raw.get(f"next_node_idx_server_{addr}"),
            ack_age=None if t is None else round(now - t, 3),
            last_heard=None if heard is None else round(now - heard, 3)))
    leader = raw.get("leader")
    return RaftStatus(
        self=self_address,
        state=_STATE_NAMES.get(int(raw.get("state", 0)), "unknown"),
        leader=None if leader is None else str(getattr(leader, "id", leader)),
        term=int(raw.get("raft_term", 0)),
        commit_index=int(raw.get("commit_idx", 0)),
        applied_index=int(raw.get("last_applied", 0)),
        log_len=int(raw.get("log_len", 0)),
        has_quorum=bool(raw.get("has_quorum", False)),
        lease_valid=lease_remaining > 0,
        lease_remaining=round(lease_remaining, 3),
        fenced_term=fenced_term,
        rejected_messages=rejected_messages,
        uptime=int(raw.get("uptime", 0)),
        leaderless_for=None if leaderless_for is None else round(leaderless_for, 1),
        problem=problem,
        peers=peers,
    )


def render_table(status: Mapping[str, Any]) -> str:
    """Human-readable form of a `/raft` document (for ``lethe raft status``)."""
    lines = [
        f"self:     {status.get('self')}",
        f"state:    {status.get('state')}   term {status.get('term')}   "
        f"leader {status.get('leader') or '-'}",
        f"index:    commit {status.get('commit_index')}   applied {status.get('applied_index')}"
        f"   log {status.get('log_len')}",
        f"lease:    {'valid' if status.get('lease_valid') else 'not held'}"
        f" ({status.get('lease_remaining', 0):.3f}s left; fenced term {status.get('fenced_term')})",
        f"quorum:   {'yes' if status.get('has_quorum') else 'NO'}"
        f"   rejected unauthenticated messages: {status.get('rejected_messages', 0)}",
        "",
    ]
    peers = list(status.get("peers") or [])
    rows = [("PEER", "CONNECTED", "MATCH", "ACK AGE")]
    for p in peers:
        age = p.get("ack_age")
        rows.append((str(p.get("address")), "yes" if p.get("connected") else "no",
                     "-" if p.get("match_index") is None else str(p.get("match_index")),
                     "-" if age is None else f"{age:.3f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not peers:
        lines.append("(no peers: one-node cluster)")
    if status.get("problem"):
        lines += ["", f"PROBLEM: {status['problem']}"]
    return "\n".join(lines)


class RaftMetrics:
    """Prometheus gauges and a counter; pass a registry in tests to stay isolated."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        # Imported here: the CLI's one-node journal has no metrics, and
        # prometheus_client (with http.server, wsgiref, email) is a tenth of
        # `lethe apply`'s start-up.
        from prometheus_client import Counter, Gauge

        kw: dict[str, Any] = {} if registry is None else {"registry": registry}
        self.is_leader = Gauge("lethe_raft_is_leader", "1 if this replica is the Raft leader", **kw)
        self.term = Gauge("lethe_raft_term", "Current Raft term", **kw)
        self.commit_index = Gauge("lethe_raft_commit_index", "Raft commit index", **kw)
        self.connected_peers = Gauge("lethe_raft_connected_peers",
                                     "Raft peers this replica is connected to", **kw)
        self.lease_valid = Gauge("lethe_raft_lease_valid",
                                 "1 if this replica holds a valid leader lease (may act)", **kw)
        self.leader_changes = Counter("lethe_raft_leader_changes",
                                      "Times the known Raft leader changed", **kw)

    def observe(self, *, is_leader: bool, term: int, commit_index: int, connected_peers: int,
                lease_valid: bool) -> None:
        self.is_leader.set(1 if is_leader else 0)
        self.term.set(term)
        self.commit_index.set(commit_index)
        self.connected_peers.set(connected_peers)
        self.lease_valid.set(1 if lease_valid else 0)
