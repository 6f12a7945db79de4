"""The one storage interface that the POSIX and S3 backends implement.

Everything above this layer sees keys (``/``-separated, relative to the
target root), entries and per-entry delete results; it never sees a path or a
boto3 client. POSIX keys never start with ``/`` and never contain an empty,
``.`` or ``..`` component (:func:`check_key`); S3 keys are opaque strings, and
``/x`` or ``a/../b`` are keys like any other there (see storage/s3.py).
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "ConflictError",
    "DeleteResult",
    "Entry",
    "Outcome",
    "Storage",
    "StorageError",
    "TargetUnavailable",
]

#: The operator's own files in a target (ledgers, plans, probe files); never
#: listed, never a deletion candidate.
INTERNAL_PREFIX = ".lethe/"


class Entry(NamedTuple):
    """One object as listed. ``fingerprint`` changes whenever the object does.

    POSIX: ``"{inode}:{size}:{mtime_ns}"``. S3: ``"{etag}:{last_modified_ns}"``
    (or the VersionId on a versioned bucket, kept in ``version_id`` too).

    A named tuple, not a dataclass: a listing makes one per object, and a frozen
    dataclass costs about three times as much to construct (measured on the
    200,000-file benchmark); it is just as immutable.
    """

    key: str
    size: int
    mtime: float  # seconds since the epoch, UTC, by the storage's clock
    fingerprint: str
    version_id: str | None = None
    #: When the object arrived or last changed, if that can be later than ``mtime``:
    #: POSIX ``st_ctime`` (``tar -x``, ``rsync -a`` and ``cp -p`` set old mtimes on
    #: files created now), S3 ``LastModified`` (the write time). ``None``: unknown,
    #: read as ``mtime``. Only the ``minAge`` floor reads it (docs/retention.md).
    ctime: float | None = None


class Outcome(enum.Enum):
    DELETED = "deleted"
    ALREADY_GONE = "already-gone"  # counts as deleted (I6)
    CHANGED_SKIPPED = "changed-skipped"  # fingerprint differs from the batch's (I3)
    LOCKED = "locked"  # legal hold / retention lock: reported, never fought
    #: Another object than the planned one is at the key (kept), and an earlier attempt
    #: at the batch stopped without its ledger file: it may have deleted the planned one.
    #: Never a backend's answer; the runner's, when it finishes such a batch.
    GONE_OR_REPLACED = "gone-or-replaced"
    ERROR = "error"


class DeleteResult(NamedTuple):
    """One entry's outcome (a named tuple: one per deleted object)."""

    key: str
    outcome: Outcome
    detail: str = ""


class StorageError(Exception):
    """An operation failed; the message says what and where (never credentials)."""


class TargetUnavailable(StorageError):
    """The target must not be touched now: missing root, changed device, no
    sentinel, no bucket, access denied. A run that sees this deletes nothing."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a condition reason, e.g. "TargetUnreachable"


class ConflictError(StorageError):
    """A conditional replace lost a race (S3 If-Match failed); read and retry."""


#: Fingerprint prefix of a delete marker in :meth:`VersionedStorage.list_noncurrent_versions`
#: (a marker has no ETag): ``"delete-marker:{last_modified_ns}"``.
DELETE_MARKER = "delete-marker:"

#: Raises when the caller may no longer delete (see :meth:`Storage.delete_batch`).
Fence = Callable[[], None]


def no_fence() -> None:
    """For callers outside a run (tests, tools): deletes are not fenced."""


@runtime_checkable
class Storage(Protocol):
    """A target: a POSIX directory or an S3 bucket+prefix."""

    def describe(self) -> str:
        """Human-readable target, e.g. ``posix:/data/media`` or ``s3://bucket/prefix``."""
        ...

    def check_ready(self) -> None:
        """Raise :class:`TargetUnavailable` unless it is safe to list and delete now."""
        ...

    def check_fenced_deletes(self) -> None:
        """Raise :class:`TargetUnavailable` unless a delete can be refused for an object
        changed since it was listed (I3). Called before an Enforce run starts."""
        ...

    def now(self) -> float:
        """The storage's clock (S3: a response's Date; POSIX: a probe file's mtime)."""
        ...

    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Stream every entry under the target, in a deterministic order, O(1) memory
        per entry (POSIX: per directory). Skips ``.lethe/``, ``.nfs*`` placeholders and
        subtrees protected by ``.lethe-keep``; never follows symlinks. With ``prefix``
        (a directory key, e.g. a group), only the entries below ``prefix/``."""
        ...

    def delete_batch(self, entries: Sequence[Entry], *, fence: Fence = no_fence
                     ) -> builtins.list[DeleteResult]:
        """Delete up to 1,000 entries, re-checking each fingerprint first (I3); one
        result per entry, in order. Never raises for a single entry's failure.

        ``fence`` is called immediately before every delete request is sent (POSIX:
        before every rename and every unlink) and raises when this node may no
        longer delete (I3: only while its lease holds). Its exception propagates
        and nothing further is deleted; the batch stays in flight for the next
        leader to finish."""
        ...

    def read_object(self, key: str) -> tuple[bytes, str] | None:
        """Read a small object: ``(data, token)`` or ``None`` if absent. ``token`` is
        what :meth:`replace_object` takes as ``if_match``."""
        ...

    def replace_object(self, key: str, data: bytes | BinaryIO, *,
                       if_match: str | None = None) -> str:
        """Atomically replace (or create) an object; return its new token. ``data``
        may be an open binary file, streamed (a published plan can be large: I5).
        POSIX: temp file + fsync + rename. S3: conditional PUT; raises
        :class:`ConflictError` if ``if_match`` no longer matches."""
        ...

    def delete_object(self, key: str) -> None:
        """Remove a small internal object (missing is fine)."""
        ...

    def list_internal(self, prefix: str) -> Iterator[str]:
        """Keys under an internal prefix such as ``.lethe/ledger/`` (for audits)."""
        ...

    def close(self) -> None:
        ...


@dataclass(frozen=True, slots=True)
class Batch:
    """What the runner hands to a backend: the entries and why they were chosen."""

    entries: tuple[Entry, ...]


def check_key(key: str) -> str:
    """Reject keys that could escape a target root; return the key unchanged."""
    if not key or key.startswith("/") or "\x00" in key:
        raise StorageError(f"refusing key {key!r}: empty, absolute or NUL")
    parts = key.split("/")  # runs once per deleted object: list membership, at C speed
    if "" in parts or "." in parts or ".." in parts:
        raise StorageError(f"refusing key {key!r}: empty, '.' or '..' component")
    return key


@runtime_checkable
class VersionedStorage(Protocol):
    """What a target with object versions adds (S3): removing noncurrent versions
    (``noncurrentVersionsMaxAge``) and aborting stale multipart uploads."""

    def is_versioned(self) -> bool:
        ...

    def list_noncurrent_versions(self, older_than: float) -> Iterator[Entry]:
        """Noncurrent versions that became noncurrent before ``older_than`` (storage
        clock); ``version_id`` set, ``mtime`` the time they became noncurrent. Also,
        whatever their age, delete markers with no version of their key behind them
        (S3 Lifecycle's ``ExpiredObjectDeleteMarker``): fingerprint
        :data:`DELETE_MARKER` + LastModified in ns, size 0."""
        ...

    def delete_versions(self, entries: Sequence[Entry], *, fence: Fence = no_fence
                        ) -> builtins.list[DeleteResult]:
        """Delete exact versions by VersionId; one result per entry, in order;
        ``fence`` as for :meth:`Storage.delete_batch`."""
        ...

    def abort_incomplete_uploads(self, older_than: float) -> int:
        """Abort multipart uploads initiated before ``older_than``; how many."""
        ...

    def unhide_overwrites(self, entries: Sequence[Entry], *, since: float
                          ) -> builtins.list[DeleteResult | None]:
        """For a batch an earlier attempt may have begun (a resume): ``entries`` are
        keys the re-list found gone. Where a delete marker written at or after
        ``since`` (storage clock, seconds) hides a version other than the planned
        one, that attempt placed it on an overwrite and died before its read-back:
        remove it again, as the read-back would have. One result per entry (``None``:
        nothing to change, the key stays ``ALREADY_GONE``)."""
        ...
