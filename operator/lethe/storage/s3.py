"""S3 backend: a bucket and a prefix on AWS, MinIO, Ceph RGW or any S3-compatible server.

* Keys in :class:`~lethe.storage.base.Entry` are relative to the prefix and
  opaque: ``/x``, ``a//b``, ``a/./b`` and ``a/../b`` are keys like any other
  (S3 has no directories to escape), deleted by exactly that key. Keys under
  ``<prefix>.lethe/`` are the operator's own and never listed as candidates.
  "Folder" marker objects (keys ending in ``/``, or equal to the prefix) are
  S3's directories, not items: they are not entries but are counted in
  :attr:`S3Storage.folder_markers`, which the plan reports.
* Where a key travels in a URL (DeleteObject on a server that honours only
  ``If-Match``), a server or proxy that normalized ``//``, ``.`` or ``..``
  segments would delete *another* key; such keys are deleted there only after
  a probe under ``.lethe/`` showed the server keeps them literal (DeleteObjects
  and the listings carry keys in XML or the query string: always literal).
* Listing order is S3's: keys ascending by UTF-8 bytes, so all keys under one
  ``dir/`` prefix are contiguous.
* Throttling: botocore's ``standard`` retry mode retries ``503 SlowDown``
  (and other throttling codes, 500/502/504 and connection errors) with
  exponential backoff and jitter, ``max_attempts`` times in all.
* Credentials are handed to botocore and not kept on this object; messages
  built here name the bucket, key and error code, never a credential.
* Versioned buckets (``Enabled`` or ``Suspended``, checked once and cached):
  the listing comes from ListObjectVersions so each entry carries the current
  VersionId. Expiring a current version follows S3 Lifecycle: a delete marker
  is placed (a delete without VersionId), the data stays as a noncurrent
  version until ``noncurrentVersionsMaxAge``, and no older version ever
  becomes current again. Fencing (I3) on ``Enabled`` buckets: the marker's
  request carries the ETag condition of unversioned buckets (below) where the
  server honours one, so it places nothing on a key rewritten or deleted
  since the re-list, even when it goes out late (chaos seed 21515); and after
  placing the marker, the key's versions are read back; if the newest version
  behind the marker is not the planned one (an overwrite landed just before an
  unconditional marker), the marker is removed again by its VersionId (undo)
  and the entry is ``CHANGED_SKIPPED``. On ``Suspended`` buckets an overwrite reuses the
  VersionId ``null``, so deletes there carry the ETag condition of unversioned
  buckets (below). A delete marker with no version behind it is removed by
  :meth:`S3Storage.list_noncurrent_versions` (``ExpiredObjectDeleteMarker``).
* Unversioned buckets: a delete must be conditional on the ETag seen by the
  re-list just before it (I3), or an object overwritten in between is deleted.
  Servers differ, so :meth:`S3Storage.check_fenced_deletes` probes once: AWS
  and Ceph honour the per-object ``ETag`` in DeleteObjects (one request per
  1,000 keys); some honour only ``If-Match`` on DeleteObject (moto: one
  request per key, sent concurrently); some honour neither (MinIO's community
  edition), and then Lethe refuses to delete there at all: enable versioning.
* Object lock: a legal hold or retention lock makes the delete fail; that is
  reported as ``LOCKED``. ``BypassGovernanceRetention`` is never sent.
* Concurrency: one delete call (a journaled batch) runs as up to
  :data:`_DELETE_CONCURRENCY` chunks at once, each with its own re-list,
  request(s) and read-back; the fence stops them all the first time it fails
  (:meth:`S3Storage._fan_out`). Batches themselves stay one after another.
"""

from __future__ import annotations

import builtins
import email.utils
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lethe.spec import S3Target
from lethe.storage import pausepoint
from lethe.storage.base import (
    DELETE_MARKER,
    INTERNAL_PREFIX,
    ConflictError,
    DeleteResult,
    Entry,
    Fence,
    Outcome,
    StorageError,
    TargetUnavailable,
    check_key,
    no_fence,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

__all__ = ["ABSENT_TOKEN", "MAX_DELETE_KEYS", "S3Storage"]

log = logging.getLogger(__name__)

#: DeleteObjects takes at most this many keys per call.
MAX_DELETE_KEYS: Final = 1000
#: ``replace_object(if_match=ABSENT_TOKEN)`` creates only if absent (``If-None-Match: *``).
ABSENT_TOKEN: Final = "-"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_FOUND: Final = frozenset({"404", "NoSuchBucket", "NotFound"})
_DENIED: Final = frozenset({"403", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId",
                            "SignatureDoesNotMatch", "AccountProblem"})
# Codes a server may use for "I do not understand per-object ETag conditions".
_NO_CONDITIONS: Final = frozenset({"NotImplemented", "MalformedXML", "InvalidArgument"})
_PRECONDITION: Final = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict",
                                  "409"})
_STATUS_CODES: Final = {"403": "AccessDenied", "404": "NoSuchKey", "409":
                        "ConditionalRequestConflict", "412": "PreconditionFailed"}
#: An ETag no object has: the probe's delete must fail on a server that checks it.
_WRONG_ETAG: Final = '"00000000000000000000000000000000"'
#: Concurrent DeleteObject requests when the server only honours If-Match one key at a time.
_SINGLE_DELETE_WORKERS: Final = 16
#: Chunks of one delete_batch / delete_versions call in flight at once. Each chunk is
#: a round trip or three (re-list, DeleteObjects, read-back on versioned buckets) that
#: a server may spend waiting on its disk or the network, so a few chunks overlap (not
#: measured to gain on the loaded bench machine: bench/README.md); the journal caps
#: a batch at 1,000 keys, so without splitting it a batch would be one chunk and
#: nothing would overlap. 4 bounds what a
#: fence that raises can no longer stop (requests already in flight) to 4 requests.
_DELETE_CONCURRENCY: Final = 4
#: Smallest chunk split off a batch: below this a chunk's fixed cost (its own
#: re-list and read-back requests) outweighs the overlap.
_MIN_CHUNK_KEYS: Final = 100
DeleteMode = Literal["batch", "single", "none"]
_LOCK_WORDS: Final = ("object lock", "objectlock", "retention", "legal hold", "legalhold",
                      "worm", "locked")


_NORMALIZED_URLS: Final = (
    "not deleted: this server honours conditional deletes only on DeleteObject, where the "
    "key travels in the URL, and a probe showed that it (or a proxy) rewrites '//', '.' or "
    "'..' segments there, so the request could delete another key")


def _in_url_ambiguous(full_key: str) -> bool:
    """Would an HTTP server or proxy that normalizes paths read this key differently?"""
    parts = full_key.split("/")
    return "" in parts or "." in parts or ".." in parts


def _ns(dt: datetime) -> int:
    """Exact nanoseconds since the epoch (no float rounding)."""
    return ((dt - _EPOCH) // timedelta(microseconds=1)) * 1000


def _fingerprint(etag: str, last_modified: datetime) -> str:
    return f"{etag}:{_ns(last_modified)}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))


def _errtext(exc: BaseException) -> str:
    """A message without credentials: botocore's messages name the operation,
    the code and the server's message, or the endpoint for connection errors."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '?')}: {err.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def _is_lock_error(code: str, message: str) -> bool:
    if code in ("ObjectLocked", "InvalidRetentionPeriod"):
        return True
    text = message.lower()
    return code in ("AccessDenied", "InvalidRequest") and any(w in text for w in _LOCK_WORDS)


#: Seconds between an overwrite and a marker placed on it by an attempt that had
#: re-listed the key just before (see S3Storage.unhide_overwrites): the re-list, the
#: DeleteObjects and their retries.
_RACE_WINDOW = 60.0


def _key_before(key: str) -> str:
    """A string sorting just below ``key`` (for StartAfter, which is exclusive).

    Decrement the last character and append U+10FFFF, the greatest code point:
    only keys beginning with that very string can fall in between.
    """
    if not key:
        return ""
    last = ord(key[-1])
    if last == 0:
        return key[:-1]
    prev = last - 1
    if 0xD800 <= prev <= 0xDFFF:  # no surrogates in UTF-8
        prev = 0xD7FF
    return key[:-1] + chr(prev) + "\U0010ffff"


class _Stopped(Exception):
    """Another chunk of the same call had its fence raise: send nothing more."""


_C = TypeVar("_C")
_R = TypeVar("_R")


def _chunk_size(n: int) -> int:
    """Keys per chunk for a call of ``n`` entries: ``n`` spread evenly over
    :data:`_DELETE_CONCURRENCY` chunks, fewer where a chunk would hold less than
    :data:`_MIN_CHUNK_KEYS`, none over :data:`MAX_DELETE_KEYS` (DeleteObjects'
    limit). 150 -> one chunk of 150, 1,000 -> 4 of 250, 5,000 -> 5 of 1,000."""
    chunks = min(_DELETE_CONCURRENCY, max(1, n // _MIN_CHUNK_KEYS))
    return max(1, min(MAX_DELETE_KEYS, math.ceil(n / chunks)))


def _split(entries: Sequence[Entry], ident: Callable[[Entry], object]
           ) -> builtins.list[builtins.list[tuple[int, Entry]]]:
    """``(position, entry)`` chunks of :func:`_chunk_size` distinct identities,
    in order; entries with the same ``ident`` (the same key, or key and version)
    share one chunk, so two chunks never delete the same object at once."""
    groups: dict[object, builtins.list[tuple[int, Entry]]] = {}
    for i, e in enumerate(entries):
        groups.setdefault(ident(e), []).append((i, e))
    ordered = builtins.list(groups.values())
    size = _chunk_size(len(ordered))
    return [[pair for group in ordered[s:s + size] for pair in group]
            for s in range(0, len(ordered), size)]


class S3Storage:
    """A bucket + prefix as a :class:`~lethe.storage.base.Storage`.

    ``client`` overrides the boto3 client (tests); otherwise one is built from
    the target: ``endpoint``, ``region`` (default ``us-east-1``), path-style
    addressing when ``forcePathStyle``, ``retry_mode``/``max_attempts``
    retries. ``access_key``/``secret_key`` of ``None`` mean botocore's default
    chain (environment, web identity/IRSA, instance profile).

    On unversioned buckets every delete carries the ETag the re-list saw, in
    the form the server honours (see the module docstring); a server that
    honours none gets no deletes (``ConditionalDeletesUnsupported``).
    """

    def __init__(self, target: S3Target, *, access_key: str | None = None,
                 secret_key: str | None = None, client: S3Client | None = None,
                 retry_mode: Literal["standard", "adaptive", "legacy"] = "standard",
                 max_attempts: int = 8,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0) -> None:
        self.target = target
        self.bucket = target.bucket
        self.prefix = target.prefix
        self._internal = target.prefix + INTERNAL_PREFIX
        self._versioning: str | None = None  # "Enabled", "Suspended" or "" (never enabled)
        self._delete_mode: DeleteMode | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._chunk_pool: ThreadPoolExecutor | None = None  # chunks in flight (_fan_out)
        self._probe_lock = threading.Lock()  # one conditional-delete probe, not one per chunk
        self._url_probe_lock = threading.Lock()
        #: Folder marker objects (keys ending in ``/``) in the last whole :meth:`list`:
        #: not entries (S3's directories), counted so that nothing goes unreported.
        self.folder_markers = 0
        self._literal_urls: bool | None = None
        if client is None:
            config = Config(
                s3={"addressing_style": "path" if target.forcePathStyle else "auto"},
                retries={"mode": retry_mode, "max_attempts": max_attempts},
                connect_timeout=connect_timeout, read_timeout=read_timeout,
                max_pool_connections=_SINGLE_DELETE_WORKERS * 2, user_agent_extra="lethe",
            )
            session = boto3.session.Session()
            # botocore's default (dateutil) parser costs ~140 µs per LastModified, more
            # than the LIST round trip itself on a fast server; ISO 8601 parses in 1 µs.
            session._session.get_component("response_parser_factory").set_parser_defaults(
                timestamp_parser=_fast_timestamp)
            client = session.client(
                "s3", endpoint_url=target.endpoint, region_name=target.region or "us-east-1",
                aws_access_key_id=access_key, aws_secret_access_key=secret_key, config=config)
        self.client: S3Client = client
        # I3 at the last moment botocore offers: every DeleteObject(s) *attempt*,
        # retries included (they may go out seconds later), calls the fence of the
        # running delete after signing, just before the socket write.
        self._send_fence: Fence = no_fence
        self._undoing = threading.local()  # set while _check_marker undoes its marker
        for op in ("DeleteObject", "DeleteObjects"):
            client.meta.events.register(f"before-send.s3.{op}", self._fence_send)

    def _fence_send(self, **_kwargs: Any) -> None:
        """botocore ``before-send`` handler of delete requests: raising here stops
        the request unsent (botocore does not retry a non-network error)."""
        if getattr(self._undoing, "active", False):
            return  # taking back our own marker (see _check_marker)
        if pausepoint.ENABLED and self._send_fence is not no_fence:  # a batch's, not a probe's
            pausepoint.pause_point("s3-delete")
        self._send_fence()

    def __repr__(self) -> str:  # never the credentials
        return f"S3Storage({self.describe()!r})"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def close(self) -> None:
        for pool in (self._chunk_pool, self._pool):
            if pool is not None:
                pool.shutdown()
        self.client.close()

    # --- readiness and clock ---------------------------------------------------

    def _unavailable(self, exc: BaseException, what: str) -> TargetUnavailable:
        where = f"{self.describe()} ({self.target.endpoint or 'AWS'})"
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in _NOT_FOUND:
                return TargetUnavailable(
                    "TargetUnreachable",
                    f"bucket {self.bucket!r} does not exist at {self.target.endpoint or 'AWS'}; "
                    "create it or fix spec.target.s3.bucket/endpoint")
            if code in _DENIED:
                return TargetUnavailable(
                    "AccessDenied",
                    f"{what} on {where} was denied ({_errtext(exc)}); check the credentials "
                    "Secret and the bucket policy (needs s3:ListBucket, s3:DeleteObject, "
                    "s3:GetObject, s3:PutObject)")
        return TargetUnavailable("TargetUnreachable", f"{what} on {where} failed: {_errtext(exc)}")

    def check_ready(self) -> None:
        """HeadBucket plus a one-key ListObjectsV2 under the prefix."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc, "HeadBucket/ListObjectsV2") from None

    def now(self) -> float:
        """The server's clock: the ``Date`` header of a HeadBucket response (1 s resolution)."""
        try:
            resp = self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc, "HeadBucket") from None
        date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not date:
            raise StorageError(f"{self.describe()}: the server sent no Date header")
        try:
            return email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            raise StorageError(f"{self.describe()}: unparseable Date header {date!r}") from None

    def is_versioned(self) -> bool:
        """GetBucketVersioning, once. If it cannot be read, assume unversioned: a delete
        without VersionId on a versioned bucket only adds a (recoverable) delete marker."""
        return self._versioning_status() in ("Enabled", "Suspended")

    def _versioning_status(self) -> str:
        if self._versioning is None:
            try:
                status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except ClientError as exc:
                log.warning("%s: cannot read versioning (%s); assuming unversioned",
                            self.describe(), _errtext(exc))
                status = None
            self._versioning = str(status or "")
        return self._versioning

    def check_fenced_deletes(self) -> None:
        """Raise :class:`TargetUnavailable` unless a delete here can be refused for
        an object changed since the re-list (I3): a server that honours ETag
        conditions on deletes, or a versioned bucket (a marker placed over an
        overwrite is read back and removed). Probes before the first batch, not
        inside it; versioned buckets use the condition too where it is honoured."""
        if self._conditional_mode() != "none" or self._versioning_status() == "Enabled":
            return
        raise TargetUnavailable(
            "ConditionalDeletesUnsupported",
            f"{self.describe()} ({self.target.endpoint or 'AWS'}) is unversioned and its "
            "server ignores ETag conditions on DeleteObject and DeleteObjects, so an object "
            "overwritten just before its delete would be deleted; Lethe deletes nothing "
            f"there. Enable versioning on bucket {self.bucket!r} (deletes then place delete "
            "markers, checked and undone if an overwrite came first) or use a server with "
            "conditional deletes")

    def _conditional_mode(self) -> DeleteMode:
        """Probe once with a throw-away object under ``.lethe/`` and a wrong ETag:
        the first form of conditional delete that the server refuses is the one
        it honours. Believing a server's documentation is not enough: several
        accept the field and delete anyway."""
        if self._delete_mode is not None:
            return self._delete_mode
        with self._probe_lock:  # chunks of one batch ask at once: probe once
            if self._delete_mode is None:
                self._delete_mode = self._probe_conditional_mode()
            return self._delete_mode

    def _probe_conditional_mode(self) -> DeleteMode:
        key = self._internal + "probe/conditional-delete"
        mode: DeleteMode = "none"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"lethe probe")
            try:
                resp = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": key, "ETag": _WRONG_ETAG}], "Quiet": False})
                if any(e.get("Code") in _PRECONDITION for e in resp.get("Errors", [])):
                    mode = "batch"
            except ClientError as exc:
                if _code(exc) not in _NO_CONDITIONS:
                    raise
            if mode == "none":
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"lethe probe")
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=_WRONG_ETAG)
                except ClientError as exc:
                    if _code(exc) in _PRECONDITION:
                        mode = "single"
                    elif _code(exc) not in _NO_CONDITIONS:
                        raise
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc, "probing conditional deletes (PutObject/DeleteObject "
                                    f"of {key})") from None
        if self.is_versioned():  # the probe's versions and markers, by VersionId
            try:
                page = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
                ids: builtins.list[ObjectIdentifierTypeDef] = [
                    {"Key": key, "VersionId": v["VersionId"]}
                    for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                    if v["Key"] == key]
                errors = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": ids, "Quiet": True}
                ).get("Errors", []) if ids else []
                why = "; ".join(f"{e.get('Code')}: {e.get('Message', '')}" for e in errors[:2])
            except (ClientError, BotoCoreError) as exc:
                why = _errtext(exc)
            if why:  # only clutter under .lethe/
                log.warning("%s: removing the probe's versions of %s failed (%s); they stay "
                            "(needs s3:ListBucketVersions and s3:DeleteObjectVersion; an "
                            "Object Lock default retention keeps them)",
                            self.describe(), key, why)
        log.info("%s: conditional deletes: %s", self.describe(), {
            "batch": "per-object ETag in DeleteObjects", "single": "If-Match per DeleteObject",
            "none": "not honoured"}[mode])
        return mode

    def _keeps_literal_urls(self) -> bool:
        """Probe once whether keys with ``//``, ``.`` or ``..`` segments survive a trip
        in a URL (PutObject, DeleteObject) to this server unchanged. The probe keys
        lie under ``.lethe/``, so a server that rewrites them can only touch the
        operator's own keys; they are removed with DeleteObjects (keys in XML)."""
        if self._literal_urls is not None:
            return self._literal_urls
        with self._url_probe_lock:  # chunks of one batch ask at once: probe once
            if self._literal_urls is None:
                self._literal_urls = self._probe_literal_urls()
            return self._literal_urls

    def _probe_literal_urls(self) -> bool:
        base = self._internal + "probe/keys/"
        want = {base + k for k in ("a//b", "a/./b", "a/../b")}

        def present() -> set[str]:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base)
            return {o["Key"] for o in page.get("Contents", [])}

        ok = False
        try:
            for key in sorted(want):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"lethe probe")
            if present() == want:
                for key in sorted(want):
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                ok = not present()
            leftover = present()
            if leftover:
                self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in sorted(leftover)], "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            log.warning("%s: probing keys with '//', '.' or '..' in URLs failed (%s); such "
                        "keys are not deleted with DeleteObject", self.describe(), _errtext(exc))
        log.info("%s: keys with '//', '.' or '..' segments in URLs: %s", self.describe(),
                 "kept literal" if ok else "NOT kept literal (such keys are not deleted)")
        return ok

    # --- listing -----------------------------------------------------------------

    def _relative(self, full_key: str) -> str | None:
        """The entry key of a listed key (opaque: any string), or ``None`` for the
        operator's own keys and for folder markers (ending in ``/``)."""
        if full_key.startswith(self._internal) or not full_key.startswith(self.prefix):
            return None
        key = full_key[len(self.prefix):]
        if not key or key.endswith("/"):
            return None
        return key

    def _marker(self, full_key: str) -> bool:
        return full_key.endswith("/") and not full_key.startswith(self._internal)

    def list(self, prefix: str | None = None) -> Iterator[Entry]:
        """Stream entries page by page (1,000 per request), in S3 key order.

        ``prefix`` is a group (any string: keys are opaque, so ``""`` is the group of
        ``/x`` and lists below ``<target prefix>/``); ``None`` lists the whole target
        and counts its folder markers in :attr:`folder_markers`."""
        if prefix is None:
            self.folder_markers = 0
        full = self.prefix + ("" if prefix is None else prefix + "/")
        try:
            if self.is_versioned():
                yield from self._list_versioned(full, count=prefix is None)
                return
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = self._relative(obj["Key"])
                    if key is None:
                        if prefix is None and self._marker(obj["Key"]):
                            self.folder_markers += 1
                        continue
                    written = obj["LastModified"].timestamp()  # the write time: minAge reads it
                    yield Entry(key=key, size=obj["Size"], mtime=written,
                                fingerprint=_fingerprint(obj["ETag"], obj["LastModified"]),
                                ctime=written)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"listing {self.describe()} failed: {_errtext(exc)}") from None

    def _list_versioned(self, full: str, *, count: bool) -> Iterator[Entry]:
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=full)
        for page in pages:
            for v in page.get("Versions", []):
                if not v.get("IsLatest"):
                    continue
                key = self._relative(v["Key"])
                if key is None:
                    if count and self._marker(v["Key"]):
                        self.folder_markers += 1
                    continue
                written = v["LastModified"].timestamp()
                yield Entry(key=key, size=v["Size"], mtime=written,
                            fingerprint=_fingerprint(v["ETag"], v["LastModified"]),
                            version_id=v.get("VersionId"), ctime=written)

    def list_internal(self, prefix: str) -> Iterator[str]:
        """Keys (relative to the target prefix) starting with ``prefix`` (``.lethe/ledger/``)."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(self.prefix):]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"listing {self.describe()}{prefix} failed: "
                               f"{_errtext(exc)}") from None

    # --- deleting ----------------------------------------------------------------

    def _common_prefix(self, lo: str, hi: str) -> str:
        """The longest prefix of full keys ``lo`` and ``hi`` (both under ours): what a
        listing of the keys between them needs."""
        common = self.prefix
        for a, b in zip(lo[len(common):], hi[len(common):], strict=False):
            if a != b:
                break
            common += a
        return common

    def _relist(self, full_keys: Sequence[str]) -> dict[str, tuple[str, datetime]]:
        """Current ``(etag, last_modified)`` of the keys in ``[min, max]``: one
        ListObjectsV2 (more pages only if other objects lie in that range)."""
        lo, hi = min(full_keys), max(full_keys)
        common = self._common_prefix(lo, hi)
        wanted = set(full_keys)
        found: dict[str, tuple[str, datetime]] = {}
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": common}
        start = _key_before(lo)
        if start > common:
            kwargs["StartAfter"] = start
        while True:
            page = self.client.list_objects_v2(**kwargs)
            for obj in page.get("Contents", []):
                if obj["Key"] in wanted:
                    found[obj["Key"]] = (obj["ETag"], obj["LastModified"])
                if obj["Key"] >= hi:
                    return found
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return found
            kwargs.pop("StartAfter", None)
            kwargs["ContinuationToken"] = token

    def delete_batch(self, entries: Sequence[Entry], *, fence: Fence = no_fence
                     ) -> builtins.list[DeleteResult]:
        """Delete entries whose fingerprint is unchanged; one result per entry, in order.

        Per chunk of 1,000: **one** ListObjectsV2 over the chunk's key range
        (``StartAfter`` just below the smallest key, stopping past the
        largest) re-reads every ETag and LastModified without a request per
        object. A missing key is ``ALREADY_GONE``, a different fingerprint
        ``CHANGED_SKIPPED``. On ``Enabled`` versioned buckets the rest get a
        delete marker (a delete without VersionId, in the form below, or
        unconditional in one DeleteObjects where the server honours no condition
        or the key cannot travel in a URL), then each key's newest version is
        read back and a marker placed on top of an overwrite is removed again
        (``CHANGED_SKIPPED``, see :meth:`_check_marker`), also when the fence
        stops the chunk half-way. Else the rest are deleted on the condition
        that the ETag is still the one the re-list saw: **one** DeleteObjects
        (``Quiet`` off, so every key gets a result) where the server honours
        per-object ETags, one ``If-Match`` DeleteObject per key where it
        honours only that, and not at all where it honours neither. So an
        object overwritten after the re-list is never deleted nor hidden.

        Chunks: the entries are split into up to :data:`_DELETE_CONCURRENCY`
        chunks of :func:`_chunk_size` keys (100 to 1,000), which run the above
        concurrently (see :meth:`_fan_out`), each with its own re-list, request
        and read-back; so a 1,000-key batch is 4 chunks of 250 in flight at once.

        A failure of the whole request (network, 5xx after retries, denied)
        yields ``ERROR`` for each entry of that chunk only; nothing is raised.
        ``fence`` is called before each DeleteObjects, or each single
        DeleteObject, and before each attempt is sent; once it raises, no chunk
        sends another delete (those already in flight finish, a chunk whose
        markers are placed still reads them back) and the call re-raises it.
        """
        results: dict[int, DeleteResult] = {}
        for part in self._fan_out(_split(entries, lambda e: e.key), self._delete_chunk, fence):
            results.update(part)
        return [results[i] for i in range(len(entries))]

    def _fan_out(self, chunks: Sequence[_C], work: Callable[[_C, Fence], _R],
                 fence: Fence) -> builtins.list[_R]:
        """``work(chunk, guarded_fence)`` for each chunk, at most
        :data:`_DELETE_CONCURRENCY` at once; the results in the chunks' order.

        The fence (I3) holds for every chunk: ``guarded_fence``, which ``work``
        calls before each delete request, and botocore's ``before-send`` hook
        (:meth:`_fence_send`, before each attempt) both call ``fence``; the first
        time either raises (or a chunk fails in any other way) a shared flag is
        set, after which every guarded fence raises :class:`_Stopped` without
        asking ``fence`` (checks are serialized, so none slips in between) and
        chunks not yet started do not start. Requests
        already in flight finish. Then, once every chunk has ended, the first
        real exception is raised (never a ``_Stopped``): the batch stays
        journaled and a resume re-checks each key.
        """
        stopped = threading.Event()
        # The fence's own exception, wherever it surfaced: a chunk's single-delete
        # workers may report a sibling's _Stopped first.
        first: builtins.list[BaseException] = []

        def stop(exc: BaseException) -> None:
            if not isinstance(exc, _Stopped):
                first.append(exc)
            stopped.set()

        # One check at a time (the fence is a local check of a few µs): a check that
        # starts after another raised sees the flag, never a fence that might pass.
        checking = threading.Lock()

        def guarded() -> None:
            with checking:
                if stopped.is_set():
                    raise _Stopped
                try:
                    fence()
                except BaseException as exc:
                    stop(exc)
                    raise

        def run(chunk: _C) -> _R:
            if stopped.is_set():
                raise _Stopped
            try:
                return work(chunk, guarded)
            except BaseException as exc:
                stop(exc)
                raise

        self._send_fence = guarded  # and again before each attempt is sent (_fence_send)
        try:
            if len(chunks) <= 1:  # no thread to start
                try:
                    return [run(c) for c in chunks]
                except _Stopped as exc:
                    raise (first or [exc])[0] from None
            if self._chunk_pool is None:
                self._chunk_pool = ThreadPoolExecutor(_DELETE_CONCURRENCY,
                                                      thread_name_prefix="s3-chunk")
            futures = [self._chunk_pool.submit(run, c) for c in chunks]
            wait(futures)
        finally:
            self._send_fence = no_fence
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            raise (first or errors)[0]
        return [f.result() for f in futures]

    def _delete_chunk(self, chunk: Sequence[tuple[int, Entry]], fence: Fence
                      ) -> dict[int, DeleteResult]:
        out: dict[int, DeleteResult] = {}
        todo: list[tuple[int, Entry, str]] = []
        for i, entry in chunk:
            if not entry.key:  # keys are opaque strings, but never empty
                out[i] = DeleteResult(entry.key, Outcome.ERROR, "refusing an empty key")
                continue
            if entry.key.startswith(INTERNAL_PREFIX):
                out[i] = DeleteResult(entry.key, Outcome.ERROR,
                                      "refusing to delete the operator's own files")
                continue
            todo.append((i, entry, self.prefix + entry.key))
        if not todo:
            return out
        try:
            current = self._relist([full for _i, _e, full in todo])
        except (ClientError, BotoCoreError) as exc:
            msg = f"re-list before delete failed: {_errtext(exc)}"
            out.update({i: DeleteResult(e.key, Outcome.ERROR, msg) for i, e, _f in todo})
            return out
        # Enabled versioning: a delete places a delete marker (S3 Lifecycle's expiry),
        # read back and undone below. It carries the ETag condition too where the
        # server honours one, as every delete does elsewhere (Suspended buckets: an
        # overwrite there reuses the VersionId "null", so only the ETag tells): a
        # request that goes out late (its sender frozen after its fence check,
        # docs/raft.md) then places no marker over a key deleted or rewritten
        # meanwhile (chaos seed 21515).
        markers = self._versioning_status() == "Enabled"
        try:
            mode = self._conditional_mode()
        except TargetUnavailable as exc:
            out.update({i: DeleteResult(e.key, Outcome.ERROR, str(exc)) for i, e, _f in todo})
            return out
        if mode == "none" and not markers:  # never an unconditional delete (I3)
            msg = "server ignores conditional deletes; not deleting (enable versioning)"
            out.update({i: DeleteResult(e.key, Outcome.ERROR, msg) for i, e, _f in todo})
            return out
        to_delete: dict[str, list[tuple[int, Entry]]] = {}  # full key -> its entries
        objects: list[ObjectIdentifierTypeDef] = []  # conditional on their ETag
        loose: list[ObjectIdentifierTypeDef] = []  # unconditional markers (read back)
        for i, entry, full in todo:
            seen = current.get(full)
            if seen is None:
                out[i] = DeleteResult(entry.key, Outcome.ALREADY_GONE)
                continue
            fp = _fingerprint(*seen)
            if fp != entry.fingerprint:
                out[i] = DeleteResult(entry.key, Outcome.CHANGED_SKIPPED,
                                      f"fingerprint {fp} != {entry.fingerprint}")
                continue
            # A marker for such a key goes in DeleteObjects' XML, unconditional (read
            # back below), without the URL probe, whose objects would leave versions.
            ambiguous = mode == "single" and _in_url_ambiguous(full) and (
                markers or not self._keeps_literal_urls())
            if ambiguous and not markers:
                out[i] = DeleteResult(entry.key, Outcome.ERROR, _NORMALIZED_URLS)
                continue
            if full not in to_delete:
                obj: ObjectIdentifierTypeDef = {"Key": full}
                if markers and (mode == "none" or ambiguous):
                    loose.append(obj)
                else:
                    obj["ETag"] = seen[0]
                    objects.append(obj)
            to_delete.setdefault(full, []).append((i, entry))
        resp: dict[str, builtins.list[Any]] = {"Deleted": [], "Errors": []}
        stopped_by: BaseException | None = None  # the fence, after some were sent
        for request, single in ((objects, mode == "single"), (loose, False)):
            if not request or stopped_by is not None:
                continue
            try:
                if single:
                    part: Mapping[str, Any] = self._delete_each(request, fence)
                    stopped_by = part.get("stopped_by")
                else:
                    fence()
                    part = self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": request, "Quiet": False})
            except (ClientError, BotoCoreError) as exc:
                msg = f"DeleteObjects failed: {_errtext(exc)}"
                for obj in request:
                    out.update({i: DeleteResult(e.key, Outcome.ERROR, msg)
                                for i, e in to_delete.pop(obj["Key"], [])})
                continue
            except Exception as exc:  # the fence, here or in before-send: markers of
                stopped_by = exc  # an earlier request are read back first, below
                continue
            resp["Deleted"] += part.get("Deleted", [])
            resp["Errors"] += part.get("Errors", [])
        placed: list[tuple[str, str, list[tuple[int, Entry]]]] = []
        for d in resp.get("Deleted", []):
            group = to_delete.pop(d["Key"], [])
            if markers and d.get("DeleteMarkerVersionId") and group:
                placed.append((d["Key"], str(d["DeleteMarkerVersionId"]), group))
                continue
            out.update({i: DeleteResult(e.key, Outcome.DELETED) for i, e in group})
        for err in resp.get("Errors", []):
            group = to_delete.pop(err["Key"], [])
            code, message = err.get("Code", "?"), err.get("Message", "")
            if code in ("NoSuchKey", "NoSuchVersion"):
                outcome = Outcome.ALREADY_GONE
            elif code in _PRECONDITION:
                outcome = Outcome.CHANGED_SKIPPED
            elif _is_lock_error(code, message):
                outcome = Outcome.LOCKED
            else:
                outcome = Outcome.ERROR
            out.update({i: DeleteResult(e.key, outcome, f"{code}: {message}") for i, e in group})
        for group in to_delete.values():  # the server said nothing about these
            out.update({i: DeleteResult(e.key, Outcome.ERROR, "no result from DeleteObjects")
                        for i, e in group})
        if placed:
            try:
                newest: dict[str, dict[str, Any]] | None = self._newest_versions(
                    [full for full, _m, _g in placed])
                failure = ""
            except (ClientError, BotoCoreError) as exc:
                newest, failure = None, f"reading its versions failed ({_errtext(exc)})"
            for full, mid, group in placed:
                outcome, detail = self._check_marker(
                    full, mid, group[0][1], None if newest is None else newest.get(full),
                    failure=failure)
                out.update({i: DeleteResult(e.key, outcome, detail) for i, e in group})
        if stopped_by is not None:
            raise stopped_by  # after the read-back: no marker of ours left unchecked
        return out

    def _newest_versions(self, full_keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest version (not a delete marker) of each of ``full_keys`` that has
        one: one ListObjectVersions over the keys' range, like :meth:`_relist` (more
        pages only if other versions lie in that range), not a request per key.
        Versions of a key come newest first, so the first one seen is its newest."""
        lo, hi = min(full_keys), max(full_keys)
        common = self._common_prefix(lo, hi)
        wanted = set(full_keys)
        found: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": common}
        start = _key_before(lo)
        if start > common:
            kwargs["KeyMarker"] = start
        while True:
            page = self.client.list_object_versions(**kwargs)
            for v in page.get("Versions", []):
                if v["Key"] in wanted and v["Key"] not in found:
                    found[v["Key"]] = dict(v)
            next_key = page.get("NextKeyMarker")
            if not page.get("IsTruncated") or not next_key or next_key > hi:
                return found
            kwargs["KeyMarker"] = next_key
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker", "")

    def unhide_overwrites(self, entries: Sequence[Entry], *, since: float
                          ) -> builtins.list[DeleteResult | None]:
        """See :meth:`VersionedStorage.unhide_overwrites`. One ListObjectVersions over
        the keys' range (like :meth:`_newest_versions`); each marker found hiding an
        unplanned version goes through :meth:`_check_marker`, the read-back's own
        undo (not fenced: it only takes back a marker of this run)."""
        if not entries or self._versioning_status() != "Enabled":
            return [None] * len(entries)
        fulls = [self.prefix + e.key for e in entries]
        try:
            tops = self._version_tops(fulls)
        except (ClientError, BotoCoreError) as exc:
            return [DeleteResult(e.key, Outcome.ERROR, "a resumed batch could not read the "
                                 f"key's versions to look for a marker hiding an overwrite "
                                 f"({_errtext(exc)})") for e in entries]
        out: list[DeleteResult | None] = []
        for entry, full in zip(entries, fulls, strict=True):
            marker, modified, newest = tops.get(full, (None, 0.0, None))
            # Whole seconds: a marker of this run's first second is not older than it.
            # The dead attempt's marker landed just after the overwrite it hides (between
            # its re-list and its DeleteObjects); a marker written long after the version
            # below it is somebody's delete of that version: left alone.
            if marker is None or newest is None or modified < int(since) - 1 or \
                    modified - newest["LastModified"].timestamp() > _RACE_WINDOW:
                out.append(None)
                continue
            outcome, detail = self._check_marker(full, marker, entry, newest, failure="")
            out.append(None if outcome is Outcome.DELETED else
                       DeleteResult(entry.key, outcome, detail))
        return out

    def _version_tops(self, full_keys: Sequence[str]
                      ) -> dict[str, tuple[str | None, float, dict[str, Any] | None]]:
        """Per key of ``full_keys`` that has any version: (VersionId of the delete
        marker on top or None, its LastModified in seconds, the newest version that
        is not a marker or None). Lists from the keys' common prefix, without a
        KeyMarker below the first key: moto (the test server) then leaves out that
        key's delete markers, which are what this looks for. Only resumed batches
        call it."""
        lo, hi = min(full_keys), max(full_keys)
        common = self._common_prefix(lo, hi)
        wanted = set(full_keys)
        markers: dict[str, tuple[str | None, float]] = {}
        newest: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": common}
        while True:
            page = self.client.list_object_versions(**kwargs)
            for m in page.get("DeleteMarkers", []):
                if m["Key"] in wanted and m.get("IsLatest"):
                    markers[m["Key"]] = (str(m["VersionId"]), m["LastModified"].timestamp())
            for v in page.get("Versions", []):
                if v["Key"] in wanted and v["Key"] not in newest:
                    newest[v["Key"]] = dict(v)
            next_key = page.get("NextKeyMarker")
            if not page.get("IsTruncated") or not next_key or next_key > hi:
                break
            kwargs["KeyMarker"] = next_key
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker", "")
        return {k: (*markers.get(k, (None, 0.0)), newest.get(k))
                for k in set(markers) | set(newest)}

    def _check_marker(self, full: str, marker: str, planned: Entry,
                      newest: dict[str, Any] | None, *, failure: str) -> tuple[Outcome, str]:
        """After placing delete marker ``marker`` on ``full`` (I3 on versioned buckets):
        keep it if the newest version of the key is the planned one (or a version
        written after the marker, which is current); else an overwrite landed between
        the re-list and the marker and would now be hidden, so remove the marker again
        by its VersionId (undo). The undo is not fenced: it only takes back our own
        marker, and skipping it after losing the lease would leave new data hidden."""
        unverified = bool(failure)
        why = failure
        if not unverified:
            if newest is not None and (
                    newest.get("VersionId") == planned.version_id if planned.version_id
                    else _fingerprint(newest["ETag"], newest["LastModified"])
                    == planned.fingerprint):
                return Outcome.DELETED, (f"delete marker {marker} placed; version "
                                         f"{newest.get('VersionId')} kept as noncurrent")
            if newest is not None and newest.get("IsLatest"):
                return Outcome.DELETED, (f"delete marker {marker} placed; version "
                                         f"{newest.get('VersionId')} written after it is current")
            why = ("no version behind it" if newest is None else
                   f"version {newest.get('VersionId')} was written before it")
        # The before-send fence of delete requests must not stop the undo: a lease
        # that lapsed between placing the marker and here would leave the overwrite
        # hidden behind it, and noncurrentVersionsMaxAge would later expire it.
        self._undoing.active = True  # this thread only: other workers stay fenced
        try:
            resp = self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": full, "VersionId": marker}], "Quiet": False})
            errors = resp.get("Errors", [])
            if errors:
                raise StorageError(f"{errors[0].get('Code', '?')}: {errors[0].get('Message', '')}")
        except Exception as exc:  # every failure is reported, never a lost marker
            text = _errtext(exc) if isinstance(exc, (ClientError, BotoCoreError)) else str(exc)
            return Outcome.ERROR, (f"delete marker {marker} placed but {why}; removing the "
                                   f"marker failed ({text}): remove version {marker} of "
                                   f"{full!r} by hand")
        finally:
            self._undoing.active = False
        if unverified:  # nothing deleted: the planned version is current again
            return Outcome.ERROR, f"delete marker {marker} removed again (undo): {why}"
        outcome = Outcome.ALREADY_GONE if newest is None else Outcome.CHANGED_SKIPPED
        return outcome, f"delete marker {marker} removed again (undo): {why}"

    def _delete_each(self, objects: builtins.list[ObjectIdentifierTypeDef], fence: Fence
                     ) -> dict[str, Any]:
        """DeleteObject with ``If-Match`` per key, concurrently, answered in
        DeleteObjects' shape: for servers that check the condition only there.
        Once ``fence`` (or anything else) raises, no worker sends another
        request; the call waits for those in flight and returns what they did,
        with the exception under ``"stopped_by"`` for the caller to raise once
        it has read back the markers placed (a marker left unchecked could hide
        an overwrite)."""
        stopped = threading.Event()

        def one(obj: ObjectIdentifierTypeDef) -> tuple[str, dict[str, str]]:
            if stopped.is_set():
                return "Stopped", {}
            try:
                fence()
            except BaseException:
                stopped.set()
                raise
            try:
                r = self.client.delete_object(Bucket=self.bucket, Key=obj["Key"],
                                              IfMatch=obj["ETag"])
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code = _code(exc)  # a bare status when the server sent no error body
                return "Errors", {"Key": obj["Key"], "Code": _STATUS_CODES.get(code, code),
                                  "Message": str(err.get("Message", ""))}
            except BotoCoreError as exc:
                return "Errors", {"Key": obj["Key"], "Code": "RequestFailed",
                                  "Message": _errtext(exc)}
            if r.get("DeleteMarker") and r.get("VersionId"):  # as DeleteObjects says it
                return "Deleted", {"Key": obj["Key"], "DeleteMarkerVersionId": r["VersionId"]}
            return "Deleted", {"Key": obj["Key"]}

        if self._pool is None:
            self._pool = ThreadPoolExecutor(_SINGLE_DELETE_WORKERS,
                                            thread_name_prefix="s3-delete")
        resp: dict[str, Any] = {"Deleted": [], "Errors": [], "Stopped": []}
        futures = [self._pool.submit(one, obj) for obj in objects]
        try:
            for fut in futures:
                try:
                    kind, item = fut.result()
                except CancelledError:
                    continue
                except Exception as exc:
                    if resp.get("stopped_by") is None:
                        resp["stopped_by"] = exc
                        stopped.set()
                        for later in futures:
                            later.cancel()
                    continue
                resp[kind].append(item)
        finally:
            stopped.set()  # an interrupt here stops the rest too
            for fut in futures:
                fut.cancel()
        return resp

    # --- versions and uploads ----------------------------------------------------

    def list_noncurrent_versions(self, older_than: float) -> Iterator[Entry]:
        """Noncurrent versions that became noncurrent before ``older_than``, and
        delete markers with nothing behind them.

        ``older_than`` is an absolute time, epoch seconds by the storage's clock
        (``now() - noncurrentVersionsMaxAge``). A version becomes noncurrent
        when the next newer version or delete marker of its key is written,
        which is how S3 lifecycle rules count it; ``Entry.mtime`` is that time.
        A key whose history holds delete markers and no version at all yields
        those markers (S3 Lifecycle's ``ExpiredObjectDeleteMarker``; fingerprint
        :data:`~lethe.storage.base.DELETE_MARKER`): removing them shows nothing
        old again. A marker that still covers a version is left alone; once that
        version has gone, a later run removes the marker, never the same run (if
        the version's delete failed, the marker would be all that hides it).
        Streaming; one key's history at a time.
        """
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=self.prefix)
        last_key: str | None = None
        successor: datetime | None = None  # LastModified of the next newer item of last_key
        has_version = False  # last_key has a version (not only delete markers)
        markers: list[Entry] = []  # last_key's delete markers, until we know
        try:
            for page in pages:
                items: list[tuple[str, datetime, bool, dict[str, Any], bool]] = [
                    (v["Key"], v["LastModified"], bool(v.get("IsLatest")), dict(v), False)
                    for v in page.get("Versions", [])]
                items += [(m["Key"], m["LastModified"], bool(m.get("IsLatest")), dict(m), True)
                          for m in page.get("DeleteMarkers", [])]
                # S3 order: key ascending, then newest first (bytes order == str order);
                # the page splits versions from delete markers, so merge them back, the
                # latest first when two share a LastModified (1 s resolution).
                items.sort(key=lambda t: (t[0], -_ns(t[1]), not t[2]))
                for full, modified, latest, item, is_marker in items:
                    if full != last_key:
                        if not has_version:
                            yield from markers
                        last_key, successor, has_version, markers = full, None, False, []
                    key = self._relative(full)
                    if is_marker:
                        if key is not None:
                            markers.append(Entry(key=key, size=0, mtime=modified.timestamp(),
                                                 fingerprint=f"{DELETE_MARKER}{_ns(modified)}",
                                                 version_id=item["VersionId"]))
                    else:
                        has_version = True
                        if not latest and successor is not None and key is not None \
                                and successor.timestamp() < older_than:
                            yield Entry(key=key, size=item.get("Size", 0),
                                        mtime=successor.timestamp(),
                                        fingerprint=_fingerprint(item["ETag"], modified),
                                        version_id=item["VersionId"])
                    successor = modified
            if not has_version:
                yield from markers
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"listing versions of {self.describe()} failed: "
                               f"{_errtext(exc)}") from None

    def delete_versions(self, entries: Sequence[Entry], *, fence: Fence = no_fence
                        ) -> builtins.list[DeleteResult]:
        """Delete exact versions (from :meth:`list_noncurrent_versions`) by VersionId.

        A version never changes, so there is no fingerprint re-check; locks are
        reported as ``LOCKED``. One DeleteObjects per chunk, the chunks in flight
        at once and fenced as in :meth:`delete_batch` (:meth:`_fan_out`).
        """
        chunks = _split(entries, lambda e: (e.key, e.version_id))
        results: dict[int, DeleteResult] = {}
        for pairs, part in zip(chunks, self._fan_out(
                [[e for _i, e in pairs] for pairs in chunks], self._delete_version_chunk,
                fence), strict=True):
            results.update((i, r) for (i, _e), r in zip(pairs, part, strict=True))
        return [results[i] for i in range(len(entries))]

    def _delete_version_chunk(self, chunk: Sequence[Entry], fence: Fence
                              ) -> builtins.list[DeleteResult]:
        results: builtins.list[DeleteResult] = []
        groups: dict[tuple[str, str], list[Entry]] = {}
        objects: list[ObjectIdentifierTypeDef] = []
        pre: dict[int, DeleteResult] = {}
        for n, e in enumerate(chunk):
            if e.version_id is None or not e.key or e.key.startswith(INTERNAL_PREFIX):
                pre[n] = DeleteResult(e.key, Outcome.ERROR, "no VersionId / internal key")
                continue
            ident = (self.prefix + e.key, e.version_id)
            if ident not in groups:
                objects.append({"Key": ident[0], "VersionId": ident[1]})
            groups.setdefault(ident, []).append(e)
        by_ident: dict[tuple[str, str], DeleteResult] = {}
        if objects:
            fence()
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": False})
                for d in resp.get("Deleted", []):
                    ident = (d["Key"], d.get("VersionId", ""))
                    by_ident[ident] = DeleteResult(ident[0], Outcome.DELETED)
                for err in resp.get("Errors", []):
                    code, msg = err.get("Code", "?"), err.get("Message", "")
                    outcome = (Outcome.LOCKED if _is_lock_error(code, msg) else
                               Outcome.ALREADY_GONE if code in ("NoSuchKey", "NoSuchVersion")
                               else Outcome.ERROR)
                    ident = (err["Key"], err.get("VersionId", ""))
                    if not ident[1]:  # moto omits it: the key's one version asked for
                        asked = [i for i in groups if i[0] == ident[0]]
                        ident = asked[0] if len(asked) == 1 else ident
                    by_ident[ident] = DeleteResult(err["Key"], outcome, f"{code}: {msg}")
            except (ClientError, BotoCoreError) as exc:
                text = f"DeleteObjects failed: {_errtext(exc)}"
                by_ident = {i: DeleteResult(i[0], Outcome.ERROR, text) for i in groups}
        for n, e in enumerate(chunk):
            if n in pre:
                results.append(pre[n])
                continue
            r = by_ident.get((self.prefix + e.key, e.version_id or ""))
            what = (f"delete marker {e.version_id} removed (no version behind it)"
                    if e.fingerprint.startswith(DELETE_MARKER) else f"version {e.version_id}")
            results.append(DeleteResult(e.key, r.outcome, r.detail or what)
                           if r else
                           DeleteResult(e.key, Outcome.ERROR, "no result from DeleteObjects"))
        return results

    def abort_incomplete_uploads(self, older_than: float) -> int:
        """Abort multipart uploads under the prefix initiated before ``older_than``
        (epoch seconds, storage clock). Returns how many were aborted."""
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for up in page.get("Uploads", []):
                    if up["Initiated"].timestamp() >= older_than:
                        continue
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    except ClientError as exc:
                        if _code(exc) not in ("NoSuchUpload", "404"):
                            raise
                        continue
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"aborting uploads in {self.describe()} failed after "
                               f"{aborted}: {_errtext(exc)}") from None
        return aborted

    # --- small objects -----------------------------------------------------------

    def read_object(self, key: str) -> tuple[bytes, str] | None:
        """``(data, token)``; the token is the object's ETag (quotes included)."""
        full = self.prefix + check_key(key)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=full)
            return resp["Body"].read(), resp["ETag"]
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StorageError(f"reading {self.describe()}{key} failed: "
                               f"{_errtext(exc)}") from None
        except BotoCoreError as exc:
            raise StorageError(f"reading {self.describe()}{key} failed: "
                               f"{_errtext(exc)}") from None

    def replace_object(self, key: str, data: bytes | BinaryIO, *,
                       if_match: str | None = None) -> str:
        """PutObject; return the new ETag.

        ``if_match``: ``None`` writes unconditionally; an ETag sends
        ``If-Match`` (the server refuses with 412 if the object changed or 404
        if it vanished); :data:`ABSENT_TOKEN` sends ``If-None-Match: *``
        (create only). A refusal raises :class:`ConflictError`: read and retry.
        A PUT is atomic on S3. Caveat: if a conditional PUT succeeds but its
        response is lost and botocore retries it, the retry sees the new ETag
        and fails; the caller re-reads, finds its own content, and is done.
        """
        full = self.prefix + check_key(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Body": data}
        if if_match == ABSENT_TOKEN:
            kwargs["IfNoneMatch"] = "*"
        elif if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            resp = self.client.put_object(**kwargs)
        except ClientError as exc:
            code = _code(exc)
            if if_match is not None and code in ("PreconditionFailed", "412", "NoSuchKey",
                                                 "404", "ConditionalRequestConflict", "409"):
                raise ConflictError(f"{self.describe()}{key} changed since it was read "
                                    f"({code}); read it again and retry") from None
            if code in _DENIED:  # reason AccessDenied: a condition a person can act on
                raise self._unavailable(exc, f"PutObject of {full}") from None
            raise StorageError(f"writing {self.describe()}{key} failed: "
                               f"{_errtext(exc)}") from None
        except BotoCoreError as exc:
            raise StorageError(f"writing {self.describe()}{key} failed: "
                               f"{_errtext(exc)}") from None
        return str(resp["ETag"])

    def delete_object(self, key: str) -> None:
        full = self.prefix + check_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return
            raise StorageError(f"deleting {self.describe()}{key} failed: "
                               f"{_errtext(exc)}") from None
        except BotoCoreError as exc:
            raise StorageError(f"deleting {self.describe()}{key} failed: "
                               f"{_errtext(exc)}") from None


def chunked(entries: Iterable[Entry], size: int = MAX_DELETE_KEYS
            ) -> Iterator[builtins.list[Entry]]:
    """Group a stream of entries into delete batches of at most ``size``."""
    batch: builtins.list[Entry] = []
    for e in entries:
        batch.append(e)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fast_timestamp(value: str) -> datetime:
    """ISO 8601 fast path for response timestamps; anything else goes to botocore."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        from botocore.utils import parse_timestamp

        return parse_timestamp(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
