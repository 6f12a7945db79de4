"""Layer 3: the replicated journal over Raft (pysyncobj), kept behind a narrow interface.

Use :class:`RaftJournal` (implements :class:`lethe.journal.Journal`); build one
from the environment with :func:`discover_from_env` and :func:`resolve_password`.
"""

from lethe.raft.config import DEFAULT_TIMINGS, RaftTimings
from lethe.raft.discovery import Discovery, discover_from_env
from lethe.raft.node import RaftJournal
from lethe.raft.security import InsecureRaftRefused, resolve_password
from lethe.raft.status import RaftMetrics, RaftStatus, render_table

__all__ = [
    "DEFAULT_TIMINGS",
    "Discovery",
    "InsecureRaftRefused",
    "RaftJournal",
    "RaftMetrics",
    "RaftStatus",
    "RaftTimings",
    "discover_from_env",
    "render_table",
    "resolve_password",
]
