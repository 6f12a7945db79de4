"""Raft timings, tuned for "a replica that dies is replaced within about a second".

pysyncobj's defaults are made for a generic cluster and are unsafe or slow for
us (see ``pysyncobj/config.py``). Every value below is a deliberate choice;
the comment says what the default is and why we differ.

The lease (see :mod:`lethe.raft.lease`) is derived from these numbers: a
leader may act for at most ``lease_window`` after the *send* time of the
newest heartbeat that a quorum acknowledged, and ``lease_window`` is kept
below ``raft_min_timeout`` (the earliest moment any follower may vote for a
rival), so two leaders never both hold a valid lease.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_TIMINGS", "RaftTimings", "make_conf"]


@dataclass(frozen=True, slots=True)
class RaftTimings:
    #: Default 0.05. Kept: the tick thread's poll timeout; the lease and metrics
    #: are republished on every tick.
    auto_tick_period: float = 0.05
    #: Default 0.1. Heartbeats twice as often, so a quorum acknowledgement (and
    #: thus the lease) is refreshed 6x within one lease window.
    append_entries_period: float = 0.05
    #: Default 0.4. Kept: a follower waits at least this long without hearing
    #: from the leader before it campaigns (and, with our vote guard, before it
    #: grants a vote to anyone else). Lower values cause spurious elections on
    #: a busy 2-core machine (GC pauses, CPU steal).
    raft_min_timeout: float = 0.4
    #: Default 1.4. Lowered so that failure detection takes 0.4-0.8 s: a dead
    #: leader is replaced in about 0.5-1 s end to end (the issue's target).
    raft_max_timeout: float = 0.8
    #: Default 30 s (!). A leader that has heard from no quorum for this long
    #: turns itself into a follower. 1 s: a leader cut off from the others
    #: stops believing it leads within 1-2 s. It stops *acting* earlier
    #: still, because its lease expires after ``lease_fraction * raft_min_timeout``.
    leader_fallback_timeout: float = 1.0
    #: Default 3.5. A silent connection is dropped after this (must be >=
    #: raft_max_timeout). With 50 ms heartbeats, 2 s of silence is a dead link.
    connection_timeout: float = 2.0
    #: Default 5.0. How often to redial a lost peer. 0.5 s, so a restarted pod
    #: is reconnected (and caught up) within a second, not five.
    connection_retry_time: float = 0.5
    #: Default 600 s. A restarted pod gets a new IP; the cache must not outlive
    #: that by more than a couple of seconds.
    dns_cache_time: float = 2.0
    #: Default 30 s. A peer whose DNS record does not exist yet (pod still
    #: starting) is retried after 1 s instead of 30 s.
    dns_fail_cache_time: float = 1.0
    #: Default 64 KiB. An intent of 1,000 keys pickles to ~100 KiB; above the
    #: batch size pysyncobj splits an entry into a chunked "transmission",
    #: which is slower and has an off-by-one on the final chunk. 4 MiB keeps
    #: every journal entry in one message.
    append_entries_batch_size_bytes: int = 4 * 1024 * 1024
    #: Default 64 KiB. Larger socket buffers for 100 KiB entries.
    socket_buffer_bytes: int = 1024 * 1024
    #: Default 5000 entries / 300 s. The in-memory log is what is bounded here
    #: (I5): at ~100 KiB per intent, 256 entries is ~25 MiB before a snapshot
    #: (the pickled, bounded JournalState) replaces it.
    log_compaction_min_entries: int = 256
    log_compaction_min_time: float = 60.0
    #: Lease = this fraction of raft_min_timeout after the send time of the
    #: newest quorum-acknowledged heartbeat. The 20 % margin absorbs clock-rate
    #: drift between hosts and the follower's own processing delay.
    lease_fraction: float = 0.8

    @property
    def lease_window(self) -> float:
        return self.raft_min_timeout * self.lease_fraction

    def validate(self) -> None:
        """Fail early on combinations that would make the lease unsound."""
        if not 0 < self.lease_fraction < 1:
            raise ValueError("lease_fraction must be in (0, 1): the lease must end before "
                             "any follower may vote for a rival")
        if self.raft_min_timeout <= 3 * self.append_entries_period:
            raise ValueError("raft_min_timeout must exceed 3 heartbeats")
        if self.leader_fallback_timeout <= self.append_entries_period:
            raise ValueError("leader_fallback_timeout must exceed append_entries_period")


DEFAULT_TIMINGS = RaftTimings()


def make_conf(*, timings: RaftTimings, password: str | None, data_dir: Path | None,
              bind_address: str | None) -> Any:
    """Build a ``pysyncobj.SyncObjConf``; the only place that names its options.

    ``data_dir`` holds ``raft.journal`` (every entry, as received) and
    ``raft.dump`` (the last snapshot); ``None`` keeps both in memory (tests only).
    """
    from pysyncobj import SyncObjConf

    timings.validate()
    journal_file = dump_file = None
    if data_dir is not None:
        os.makedirs(data_dir, exist_ok=True)
        journal_file = str(Path(data_dir) / "raft.journal")
        dump_file = str(Path(data_dir) / "raft.dump")
    conf = SyncObjConf(
        password=password,
        autoTick=True,
        autoTickPeriod=timings.auto_tick_period,
        appendEntriesPeriod=timings.append_entries_period,
        raftMinTimeout=timings.raft_min_timeout,
        raftMaxTimeout=timings.raft_max_timeout,
        leaderFallbackTimeout=timings.leader_fallback_timeout,
        connectionTimeout=timings.connection_timeout,
        connectionRetryTime=timings.connection_retry_time,
        dnsCacheTime=timings.dns_cache_time,
        dnsFailCacheTime=timings.dns_fail_cache_time,
        appendEntriesBatchSizeBytes=timings.append_entries_batch_size_bytes,
        sendBufferSize=timings.socket_buffer_bytes,
        recvBufferSize=timings.socket_buffer_bytes,
        logCompactionMinEntries=timings.log_compaction_min_entries,
        logCompactionMinTime=timings.log_compaction_min_time,
        journalFile=journal_file,
        fullDumpFile=dump_file,
        bindAddress=bind_address,
        # Membership lives in the log: join through the leader, leave on scale-down.
        dynamicMembershipChange=True,
        # Commands are only submitted by a leader holding a lease; do not park
        # them while no leader is known.
        commandsWaitLeader=False,
        # Snapshots in-process: forking a threaded process (kopf, HTTP, runs) can
        # deadlock the child on a lock held by another thread; the state is small (I5).
        useFork=False,
    )
    conf.validate()
    return conf
