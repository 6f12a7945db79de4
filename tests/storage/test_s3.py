"""S3 backend against a real moto server on loopback (see tests/fixtures/s3.py).

Mocks only where moto cannot produce the case: a 503 SlowDown is injected with
a botocore event hook (moto never throttles; the rest of the request path,
retries included, is real). AccessDenied on the bucket is real IAM in
tests/badinput/test_s3_access_denied.py.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from lethe.spec import S3Target
from lethe.storage.base import (
    DELETE_MARKER,
    ConflictError,
    Entry,
    Outcome,
    Storage,
    TargetUnavailable,
)
from lethe.storage.s3 import ABSENT_TOKEN, S3Storage, _key_before
from tests.fixtures.s3 import S3Server

SECRET = "sekrit-DO-NOT-LOG-123"


def make(s3_server: S3Server, bucket: str, prefix: str = "p/", **kw: Any) -> S3Storage:
    kw.setdefault("max_attempts", 3)
    return S3Storage(S3Target(bucket=bucket, prefix=prefix, endpoint=s3_server.endpoint,
                              region="us-east-1", forcePathStyle=True),
                     access_key=s3_server.access_key, secret_key=SECRET, **kw)


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str) -> Iterator[S3Storage]:
    s = make(s3_server, s3_bucket)
    yield s
    s.close()


class Calls:
    """Counts API operations a client sends (real requests, just observed)."""

    def __init__(self, storage: S3Storage) -> None:
        self.ops: list[str] = []
        self.params: list[tuple[str, dict[str, Any]]] = []
        storage.client.meta.events.register("before-parameter-build.s3", self._seen)

    def _seen(self, model: Any, params: dict[str, Any], **kw: Any) -> None:
        self.ops.append(model.name)
        self.params.append((model.name, params))


def put_many(store: S3Storage, keys: list[str], body: bytes = b"data") -> None:
    def put(k: str) -> None:
        store.client.put_object(Bucket=store.bucket, Key=k, Body=body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))


# --- configuration -----------------------------------------------------------


def test_client_configuration(store: S3Storage, s3_server: S3Server) -> None:
    assert isinstance(store, Storage)
    cfg = store.client.meta.config
    assert getattr(cfg, "s3", {})["addressing_style"] == "path"
    assert getattr(cfg, "retries", {})["mode"] == "standard"
    assert store.client.meta.endpoint_url == s3_server.endpoint
    urls: list[str] = []
    store.client.meta.events.register("before-send.s3", lambda request, **kw: urls.append(
        request.url))
    store.check_ready()
    assert urls[0].startswith(f"{s3_server.endpoint}/{store.bucket}")  # path style
    assert SECRET not in repr(store)


def test_slowdown_is_retried_with_backoff(store: S3Storage) -> None:
    """Injected: moto cannot be made to throttle. The first two sends of a
    ListObjectsV2 get a real 503 SlowDown HTTP response object; botocore's
    standard retry handler must back off and retry until the real server answers."""
    put_many(store, ["p/a"])
    sent: list[float] = []

    def throttle(request: Any, **kw: Any) -> AWSResponse | None:
        if "list-type=2" not in request.url:
            return None
        sent.append(time.monotonic())
        if len(sent) <= 2:
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                    b"<Message>Please reduce your request rate.</Message></Error>")
            headers = HTTPHeaders()
            headers["Content-Type"] = "application/xml"
            return AWSResponse(request.url, 503, headers, _Raw(body))
        return None

    store.client.meta.events.register_first("before-send.s3", throttle)  # type: ignore[arg-type]
    assert [e.key for e in store.list()] == ["a"]
    assert len(sent) == 3  # two throttled attempts, then success


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kw: Any) -> Iterator[bytes]:
        yield self._body

    def read(self, *a: Any) -> bytes:
        return self._body


# --- readiness and clock ------------------------------------------------------


def test_missing_bucket_is_unreachable(s3_server: S3Server) -> None:
    s = make(s3_server, "no-such-bucket-lethe")
    with pytest.raises(TargetUnavailable) as info:
        s.check_ready()
    assert info.value.reason == "TargetUnreachable" and "does not exist" in str(info.value)


def test_connection_refused_is_unreachable_without_secrets(caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = S3Storage(S3Target(bucket="b", endpoint=f"http://127.0.0.1:{port}",
                           forcePathStyle=True),
                  access_key="AKIDLETHE", secret_key=SECRET, max_attempts=1)
    caplog.set_level(logging.DEBUG, logger="lethe")
    with pytest.raises(TargetUnavailable) as info:
        s.check_ready()
    assert info.value.reason == "TargetUnreachable"
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_now_reads_the_date_header(store: S3Storage) -> None:
    assert abs(store.now() - time.time()) < 3


# --- listing -----------------------------------------------------------------


def test_list_paginates_strips_prefix_and_skips_internal(store: S3Storage) -> None:
    keys = [f"p/d{i % 3}/f{i:04d}" for i in range(1100)]
    put_many(store, [*keys, "p/.lethe/ledger/x", "other/q", "p/a//b", "p/../up", "p/", "p/d0/"])
    calls = Calls(store)
    entries = list(store.list())
    # keys are opaque: 'a//b' and '../up' are entries like any other
    assert [e.key for e in entries] == sorted([*(k[2:] for k in keys), "a//b", "../up"])
    assert calls.ops.count("ListObjectsV2") == 2  # 1,000 per page
    assert store.folder_markers == 2  # 'p/' and 'p/d0/': counted, not entries
    e = entries[0]
    assert e.size == 4 and e.version_id is None
    etag, ns = e.fingerprint.rsplit(":", 1)
    assert etag.startswith('"') and int(ns) == round(e.mtime * 1e9, -6)


def test_key_before_sorts_just_below() -> None:
    for key, sibling in [("a", "`zzz"), ("p/x.log", "p/x.lof-zz"), ("日本", "日末~"),
                         ("a\ue000", "a\ud7fe")]:
        b = _key_before(key).encode()
        assert sibling.encode() < b < key.encode()
    assert _key_before("z\x00") == "z"


# --- deleting ----------------------------------------------------------------


def test_delete_batch_relists_once_and_deletes_conditionally(store: S3Storage) -> None:
    keys = [f"p/k{i:03d}" for i in range(60)]
    put_many(store, ["p/a-before", "p/zz-after", *keys])
    entries = [e for e in store.list() if e.key.startswith("k")]
    store.client.put_object(Bucket=store.bucket, Key="p/k005", Body=b"changed!")
    store.client.delete_object(Bucket=store.bucket, Key="p/k007")
    store.check_fenced_deletes()  # the probe, once per storage (tested below)
    calls = Calls(store)
    results = store.delete_batch(entries)
    # one LIST for the whole batch; moto honours If-Match only on DeleteObject
    assert calls.ops == ["ListObjectsV2"] + ["DeleteObject"] * 58
    by = {r.key: r.outcome for r in results}
    assert [r.key for r in results] == [e.key for e in entries]
    assert by.pop("k005") is Outcome.CHANGED_SKIPPED
    assert by.pop("k007") is Outcome.ALREADY_GONE
    assert set(by.values()) == {Outcome.DELETED}
    left = [e.key for e in store.list()]
    assert left == ["a-before", "k005", "zz-after"]
    sent = [params for op, params in calls.params if op == "DeleteObject"]
    assert all(p["IfMatch"].startswith('"') for p in sent)
    assert not any("BypassGovernanceRetention" in p for p in sent)
    # repeat is idempotent
    again = store.delete_batch(entries)
    assert {r.key: r.outcome for r in again}["k000"] is Outcome.ALREADY_GONE


def test_probe_finds_the_conditional_delete_the_server_honours(store: S3Storage) -> None:
    """moto (5.2) ignores the per-object ETag in DeleteObjects but refuses a
    DeleteObject whose If-Match is stale: the probe must find exactly that."""
    calls = Calls(store)
    store.check_fenced_deletes()
    store.check_fenced_deletes()  # cached
    assert calls.ops == ["PutObject", "DeleteObjects", "PutObject", "DeleteObject",
                         "DeleteObject", "GetBucketVersioning"]
    assert store._delete_mode == "single"
    probe_key = calls.params[0][1]["Key"]
    assert probe_key.startswith("p/.lethe/")
    assert store.client.list_objects_v2(Bucket=store.bucket).get("KeyCount") == 0


def test_overwrite_between_relist_and_delete_survives(store: S3Storage) -> None:
    """The race the chaos trials found (docs/reliability.md): a writer overwrites
    an object after the batch's re-list and before its delete reaches the
    server. The overwrite is real (a PUT at that very moment); the delete must
    be refused and reported, and the new content must survive."""
    put_many(store, ["p/a", "p/b", "p/c"])
    entries = list(store.list())
    store.check_fenced_deletes()
    raced: list[str] = []

    def overwrite_b(params: dict[str, Any], **kw: Any) -> None:
        if params["Key"] == "p/b" and not raced:
            raced.append("x")
            store.client.put_object(Bucket=store.bucket, Key="p/b", Body=b"written late")

    store.client.meta.events.register("before-parameter-build.s3.DeleteObject", overwrite_b)
    results = {r.key: r for r in store.delete_batch(entries)}
    assert raced
    assert results["a"].outcome is Outcome.DELETED
    assert results["c"].outcome is Outcome.DELETED
    assert results["b"].outcome is Outcome.CHANGED_SKIPPED
    assert "PreconditionFailed" in results["b"].detail
    assert store.client.get_object(Bucket=store.bucket, Key="p/b")["Body"].read() \
        == b"written late"


def test_server_ignoring_conditions_gets_no_deletes(s3_server: S3Server, s3_bucket: str
                                                   ) -> None:
    """A server that accepts If-Match and deletes anyway (MinIO's community
    edition, minio/minio#21677). moto honours it, so a botocore hook strips the
    header before sending: the server then really deletes unconditionally, and
    the probe must notice from what the server did, not from what it said."""
    store = make(s3_server, s3_bucket)
    put_many(store, ["p/old"])

    def strip_if_match(request: Any, **kw: Any) -> None:
        request.headers.pop("If-Match", None)

    store.client.meta.events.register("before-send.s3.DeleteObject", strip_if_match)
    with pytest.raises(TargetUnavailable) as err:
        store.check_fenced_deletes()
    assert err.value.reason == "ConditionalDeletesUnsupported"
    assert "Enable versioning" in str(err.value) and s3_bucket in str(err.value)
    results = store.delete_batch(list(store.list()))
    assert [r.outcome for r in results] == [Outcome.ERROR]
    assert "not deleting" in results[0].detail
    assert [e.key for e in store.list()] == ["old"]
    # versioning makes it safe: deletes then name the listed VersionId
    store.client.put_bucket_versioning(Bucket=s3_bucket,
                                       VersioningConfiguration={"Status": "Enabled"})
    again = make(s3_server, s3_bucket)
    again.check_fenced_deletes()
    assert [r.outcome for r in again.delete_batch(list(again.list()))] == [Outcome.DELETED]
    store.close()
    again.close()


def test_delete_batch_handles_more_than_one_chunk_and_bad_keys(store: S3Storage) -> None:
    put_many(store, [f"p/x{i:04d}" for i in range(1005)])
    entries = list(store.list())
    # 'p/../evil' is a key like any other (absent here); the operator's own never go
    bad = [Entry("../evil", 1, 0, "f"), Entry(".lethe/ledger/x", 1, 0, "f")]
    results = store.delete_batch(bad + entries)
    assert [r.outcome for r in results[:2]] == [Outcome.ALREADY_GONE, Outcome.ERROR]
    assert {r.outcome for r in results[2:]} == {Outcome.DELETED}
    assert list(store.list()) == []


def test_per_key_access_denied_is_an_error(store: S3Storage) -> None:
    """Real: moto evaluates a bucket policy per key inside DeleteObjects."""
    import json

    put_many(store, ["p/ok", "p/denied"])
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
        "Resource": f"arn:aws:s3:::{store.bucket}/p/denied"}]}
    store.client.put_bucket_policy(Bucket=store.bucket, Policy=json.dumps(policy))
    results = {r.key: r for r in store.delete_batch(list(store.list()))}
    assert results["ok"].outcome is Outcome.DELETED
    assert results["denied"].outcome is Outcome.ERROR
    assert "AccessDenied" in results["denied"].detail


@pytest.fixture
def versioned(store: S3Storage) -> S3Storage:
    store.client.put_bucket_versioning(Bucket=store.bucket,
                                       VersioningConfiguration={"Status": "Enabled"})
    return store


def _body(store: S3Storage, key: str) -> bytes | None:
    try:
        return store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    except store.client.exceptions.NoSuchKey:
        return None


def test_versioned_expiry_places_a_delete_marker_and_never_resurrects(versioned: S3Storage
                                                                      ) -> None:
    """S3 Lifecycle semantics (issue #14 item 7): expiring the current version of an
    overwritten key leaves a delete marker; the key does not serve its previous
    content, and the expired data stays as a noncurrent version."""
    store = versioned
    put_many(store, ["p/a"], b"a1")
    put_many(store, ["p/a"], b"a2")
    put_many(store, ["p/b"], b"b1")
    entries = list(store.list())
    assert all(e.version_id for e in entries)
    planned = {e.key: e.version_id for e in entries}
    store.check_fenced_deletes()
    calls = Calls(store)
    results = {r.key: r for r in store.delete_batch(entries)}
    assert {r.outcome for r in results.values()} == {Outcome.DELETED}
    assert results["a"].detail.startswith("delete marker ")
    assert results["a"].detail.endswith(f"placed; version {planned['a']} kept as noncurrent")
    # markers (no VersionId), each on the ETag condition moto honours (If-Match)
    sent = [p for op, p in calls.params if op.startswith("Delete")]
    assert len(sent) == 2 and all("IfMatch" in p and "VersionId" not in p for p in sent)
    assert _body(store, "p/a") is None and _body(store, "p/b") is None  # not a1 again
    vers = store.client.list_object_versions(Bucket=store.bucket, Prefix="p/")
    assert sorted(m["Key"] for m in vers["DeleteMarkers"] if m["IsLatest"]) == ["p/a", "p/b"]
    assert sorted(v["Key"] for v in vers["Versions"]) == ["p/a", "p/a", "p/b"]  # kept
    assert list(store.list()) == []
    # a repeat (a resumed batch) finds the keys gone and places no second marker (I6)
    again = store.delete_batch(entries)
    assert {r.outcome for r in again} == {Outcome.ALREADY_GONE}
    assert len(store.client.list_object_versions(Bucket=store.bucket, Prefix="p/")[
        "DeleteMarkers"]) == 2


def test_versioned_overwrite_before_the_marker_is_not_hidden(versioned: S3Storage) -> None:
    """I3 on versioned buckets: an overwrite that lands after the re-list but before
    the marker would end up hidden behind it; the marker is removed again (undo)
    and the entry is changed-skipped. One written after the marker is current."""
    store = versioned
    # A server that honours no delete condition (MinIO's community edition): the
    # marker is unconditional and only the read-back can catch the overwrite. (moto
    # honours If-Match: see the next test for that form.)
    store._delete_mode = "none"
    put_many(store, ["p/a", "p/b", "p/c", "p/d"], b"old")
    entries = list(store.list())
    store.client.put_object(Bucket=store.bucket, Key="p/b", Body=b"new b")  # before re-list

    def before_marker(params: dict[str, Any], **kw: Any) -> None:
        if "VersionId" not in params["Delete"]["Objects"][0]:  # not the undo
            store.client.put_object(Bucket=store.bucket, Key="p/c", Body=b"new c")

    def after_marker(**kw: Any) -> None:
        if not any(k for k in ("p/d",) if _body(store, k) == b"new d"):
            store.client.put_object(Bucket=store.bucket, Key="p/d", Body=b"new d")

    store.client.meta.events.register("before-parameter-build.s3.DeleteObjects",
                                      before_marker)
    store.client.meta.events.register("after-call.s3.DeleteObjects", after_marker)
    results = {r.key: r for r in store.delete_batch(entries)}
    store.client.meta.events.unregister("before-parameter-build.s3.DeleteObjects",
                                        before_marker)
    store.client.meta.events.unregister("after-call.s3.DeleteObjects", after_marker)
    assert results["a"].outcome is Outcome.DELETED
    assert results["b"].outcome is Outcome.CHANGED_SKIPPED  # seen by the re-list
    assert results["c"].outcome is Outcome.CHANGED_SKIPPED, results["c"]
    assert "removed again (undo)" in results["c"].detail
    assert results["d"].outcome is Outcome.DELETED
    assert "written after it is current" in results["d"].detail
    assert (_body(store, "p/a"), _body(store, "p/b"), _body(store, "p/c"),
            _body(store, "p/d")) == (None, b"new b", b"new c", b"new d")
    markers = store.client.list_object_versions(Bucket=store.bucket, Prefix="p/c")
    assert not markers.get("DeleteMarkers")  # the undo left nothing behind


def test_versioned_marker_is_conditional_so_a_late_one_hides_nothing(versioned: S3Storage
                                                                     ) -> None:
    """Chaos seed 21515: a leader frozen after its fence check sent its marker request
    8 s late, after a new leader had deleted the same keys; the unconditional marker
    stacked on the new leader's and no ledger recorded it. Where the server honours an
    ETag condition (moto: If-Match), the marker carries it, as every unversioned
    delete does: a key deleted meanwhile (a delete marker is now current) or
    rewritten meanwhile gets no marker at all, and nothing is left to undo."""
    store = versioned
    put_many(store, ["p/gone", "p/new", "p/kept"], b"old")
    store.check_fenced_deletes()
    entries = list(store.list())
    planned = {e.key: e.version_id for e in entries}

    done: set[str] = set()

    def meanwhile(params: dict[str, Any], **kw: Any) -> None:  # after the re-list
        keys = [params["Key"]] if "Key" in params else [
            o["Key"] for o in params["Delete"]["Objects"] if "VersionId" not in o]
        for key in set(keys) - done:
            done.add(key)
            if key == "p/gone":  # the new leader's marker (this hook sees its request too)
                store.client.delete_object(Bucket=store.bucket, Key="p/gone")
            elif key == "p/new":
                store.client.put_object(Bucket=store.bucket, Key="p/new", Body=b"new")

    events = ("before-parameter-build.s3.DeleteObject", "before-parameter-build.s3.DeleteObjects")
    for event in events:
        store.client.meta.events.register(event, meanwhile)
    try:
        results = {r.key: r for r in store.delete_batch(entries)}
    finally:
        for event in events:
            store.client.meta.events.unregister(event, meanwhile)
    assert results["gone"].outcome is Outcome.ALREADY_GONE, results["gone"]
    assert results["new"].outcome is Outcome.CHANGED_SKIPPED, results["new"]
    assert results["kept"].outcome is Outcome.DELETED, results["kept"]
    vers = store.client.list_object_versions(Bucket=store.bucket, Prefix="p/")
    marks = sorted(m["Key"] for m in vers.get("DeleteMarkers", []))
    assert marks == ["p/gone", "p/kept"], marks  # one each: none stacked, none over "new"
    assert _body(store, "p/new") == b"new"
    assert {v["VersionId"] for v in vers["Versions"]} >= set(planned.values())  # all kept


def test_versioned_markers_carry_the_per_object_etag_in_batch_form(versioned: S3Storage
                                                                    ) -> None:
    """On a server that honours the ETag in DeleteObjects (AWS, Ceph: the probe's
    "batch"), markers go 1,000 keys per request, each with its ETag. moto ignores
    that ETag (so the probe never picks this form there): the request's shape is
    what is checked, by setting the probe's answer."""
    put_many(versioned, ["p/a", "p/b"])
    versioned._delete_mode = "batch"
    entries = list(versioned.list())
    calls = Calls(versioned)
    assert {r.outcome for r in versioned.delete_batch(entries)} == {Outcome.DELETED}
    [params] = [p for op, p in calls.params if op.startswith("Delete")]
    sent = [(o["Key"], o.get("ETag"), "VersionId" in o) for o in params["Delete"]["Objects"]]
    assert sent == [("p/" + e.key, e.fingerprint.split(":")[0], False) for e in entries]


@contextlib.contextmanager
def _rewritten_before_its_delete(store: S3Storage, key: str, body: bytes
                                 ) -> Iterator[set[str]]:
    """Rewrite ``key`` once, just before its DeleteObject is built (after the re-list);
    yields the set of keys rewritten so far."""
    done: set[str] = set()

    def rewrite(params: dict[str, Any], **kw: Any) -> None:
        if params["Key"] == key and key not in done:
            done.add(key)
            store.client.put_object(Bucket=store.bucket, Key=key, Body=body)

    event = "before-parameter-build.s3.DeleteObject"
    store.client.meta.events.register(event, rewrite)
    try:
        yield done
    finally:
        store.client.meta.events.unregister(event, rewrite)


def test_markers_placed_before_the_fence_stopped_a_chunk_are_read_back(versioned: S3Storage
                                                                       ) -> None:
    """Per-key markers (moto's form): the fence lets the first key's request through,
    then refuses the second's. The first key was rewritten with the same bytes after
    the re-list, so its conditional marker landed (same ETag) over the new version.
    The chunk must still read back what it placed, and take that marker back,
    before it raises: else the new version stays hidden (reviewer's finding)."""
    store = versioned
    put_many(store, ["p/a", "p/b"], b"same")
    store.check_fenced_deletes()
    entries = list(store.list())
    store._pool = ThreadPoolExecutor(1)  # one key after the other: a fixed order
    with _rewritten_before_its_delete(store, "p/a", b"same") as done, \
            pytest.raises(_LeaseLost):
        store.delete_batch(entries, fence=_fence_after(2))  # a's two checks pass
    assert done
    assert _body(store, "p/a") == b"same" and _body(store, "p/b") == b"same"
    assert not store.client.list_object_versions(Bucket=store.bucket, Prefix="p/").get(
        "DeleteMarkers")


@pytest.mark.parametrize("passed", [2, 3], ids=["checked-before", "checked-in-before-send"])
def test_markers_placed_before_the_fence_stopped_the_unconditional_request_are_read_back(
        versioned: S3Storage, passed: int) -> None:
    """Moto's form with a key that cannot travel in a URL: its unconditional marker
    goes in a DeleteObjects request sent after the per-key conditional ones. The
    fence lets ``p/a``'s conditional marker through (rewritten with the same bytes
    after the re-list, so it lands over the new version), then refuses the
    unconditional request: either at the chunk's own check before it (``passed``=2:
    the batch's check and ``p/a``'s pass) or at the check botocore runs before
    sending it (3: that one passes too). The chunk must read back ``p/a``'s marker
    and take it back before it raises, as it does when the fence stops the per-key
    requests."""
    store = versioned
    put_many(store, ["p/a", "p//b"], b"same")
    store.check_fenced_deletes()
    entries = list(store.list())
    with _rewritten_before_its_delete(store, "p/a", b"same") as done, \
            pytest.raises(_LeaseLost):
        store.delete_batch(entries, fence=_fence_after(passed))
    assert done
    assert _body(store, "p/a") == b"same" and _body(store, "p//b") == b"same"
    assert not store.client.list_object_versions(Bucket=store.bucket, Prefix="p/").get(
        "DeleteMarkers")


def test_versioned_probe_leaves_no_versions(versioned: S3Storage) -> None:
    """The probe's object, its delete markers and its versions are all removed again:
    a probe per run would otherwise pile up noncurrent versions under .lethe/."""
    versioned.check_fenced_deletes()
    assert versioned._delete_mode == "single"
    vers = versioned.client.list_object_versions(Bucket=versioned.bucket)
    assert not vers.get("Versions") and not vers.get("DeleteMarkers"), vers


def test_suspended_versioning_deletes_with_the_etag_condition(versioned: S3Storage) -> None:
    """On a Suspended bucket an overwrite reuses VersionId 'null', so a VersionId
    says nothing: deletes carry the ETag condition (moto: If-Match), and a stale one
    is refused. (moto 5.2 does not model Suspended buckets faithfully: a PUT drops
    the older real version and a delete leaves no null marker, so what remains
    behind the delete is not checked here.)"""
    store = S3Storage(versioned.target, access_key="x", secret_key="y",
                      client=versioned.client)
    put_many(store, ["p/k"], b"k1")
    store.client.put_bucket_versioning(Bucket=store.bucket,
                                       VersioningConfiguration={"Status": "Suspended"})
    put_many(store, ["p/k", "p/j"], b"k2")
    store.check_fenced_deletes()
    entries = list(store.list())
    calls = Calls(store)

    def overwrite_j(params: dict[str, Any], **kw: Any) -> None:  # after the re-list
        if params["Key"] == "p/j":
            store.client.put_object(Bucket=store.bucket, Key="p/j", Body=b"new j")

    store.client.meta.events.register("before-parameter-build.s3.DeleteObject", overwrite_j)
    results = {r.key: r.outcome for r in store.delete_batch(entries)}
    store.client.meta.events.unregister("before-parameter-build.s3.DeleteObject", overwrite_j)
    assert results == {"k": Outcome.DELETED, "j": Outcome.CHANGED_SKIPPED}
    assert sorted(op for op in calls.ops if op.startswith("Delete")) == ["DeleteObject"] * 2
    assert all("IfMatch" in p and "VersionId" not in p
               for op, p in calls.params if op == "DeleteObject")
    assert _body(store, "p/k") is None and _body(store, "p/j") == b"new j"


def test_noncurrent_versions_older_than(versioned: S3Storage) -> None:
    store = versioned
    for body in (b"v1", b"v2", b"v3"):
        put_many(store, ["p/k"], body)
        time.sleep(1.1)  # LastModified has 1 s resolution on the wire
    put_many(store, ["p/other"])
    store.client.delete_object(Bucket=store.bucket, Key="p/other")  # delete marker
    assert list(store.list_noncurrent_versions(older_than=time.time() - 3600)) == []
    old = list(store.list_noncurrent_versions(older_than=time.time() + 60))
    assert sorted(e.key for e in old) == ["k", "k", "other"]
    ks = [e for e in old if e.key == "k"]
    assert ks[0].mtime > ks[1].mtime  # each became noncurrent when the next was written
    results = store.delete_versions(old)
    assert {r.outcome for r in results} == {Outcome.DELETED}
    assert store.client.get_object(Bucket=store.bucket, Key="p/k")["Body"].read() == b"v3"
    # 'other' is now a delete marker with nothing behind it (ExpiredObjectDeleteMarker):
    # listed whatever its age, removed by its VersionId; then nothing is left of 'other'
    [lone] = list(store.list_noncurrent_versions(older_than=time.time() - 3600))
    assert (lone.key, lone.size) == ("other", 0)
    assert lone.fingerprint.startswith(DELETE_MARKER) and lone.version_id
    [r] = store.delete_versions([lone])
    assert r.outcome is Outcome.DELETED and r.detail.startswith("delete marker")
    assert list(store.list_noncurrent_versions(older_than=time.time() + 60)) == []
    vers = store.client.list_object_versions(Bucket=store.bucket, Prefix="p/other")
    assert not vers.get("Versions") and not vers.get("DeleteMarkers")


def test_locked_objects_are_reported_never_forced(s3_server: S3Server) -> None:
    client = s3_server.client()
    bucket = f"lethe-lock-{int(time.time() * 1000)}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    store = make(s3_server, bucket)
    store.client.put_object(Bucket=bucket, Key="p/held", Body=b"x",
                            ObjectLockLegalHoldStatus="ON")
    store.client.put_object(Bucket=bucket, Key="p/governed", Body=b"x",
                            ObjectLockMode="GOVERNANCE",
                            ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(hours=1))
    store.client.put_object(Bucket=bucket, Key="p/free", Body=b"x")
    calls = Calls(store)
    entries = list(store.list())
    # Object Lock protects versions, not keys (an Object Lock bucket is versioned):
    # expiring a current version only places a delete marker, as S3 Lifecycle does,
    # and the locked data stays as a noncurrent version.
    results = {r.key: r for r in store.delete_batch(entries)}
    assert {r.outcome for r in results.values()} == {Outcome.DELETED}
    assert all("kept as noncurrent" in r.detail for r in results.values())
    # Deleting the locked versions themselves is refused and reported, never forced.
    results = {r.key: r for r in store.delete_versions(entries)}
    assert results["held"].outcome is Outcome.LOCKED
    assert results["governed"].outcome is Outcome.LOCKED
    assert results["free"].outcome is Outcome.DELETED
    assert all("BypassGovernanceRetention" not in p for _, p in calls.params)
    left = store.client.list_object_versions(Bucket=bucket, Prefix="p/")["Versions"]
    assert sorted(v["Key"] for v in left) == ["p/governed", "p/held"]


def test_abort_incomplete_uploads(store: S3Storage) -> None:
    """moto reports every upload as initiated at 2010-11-10T20:48:33Z, so the
    "too young" case uses a cutoff before that date."""
    for k in ("p/big1", "p/big2", "elsewhere/big"):
        store.client.create_multipart_upload(Bucket=store.bucket, Key=k)
    initiated = store.client.list_multipart_uploads(Bucket=store.bucket)["Uploads"][0]
    cutoff = initiated["Initiated"].timestamp()
    assert store.abort_incomplete_uploads(older_than=cutoff) == 0
    assert store.abort_incomplete_uploads(older_than=time.time() + 60) == 2
    left = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["elsewhere/big"]


# --- small objects -----------------------------------------------------------


def test_read_replace_conditional(store: S3Storage) -> None:
    assert store.read_object("manifest.json") is None
    t1 = store.replace_object("manifest.json", b"[1]", if_match=ABSENT_TOKEN)
    with pytest.raises(ConflictError):
        store.replace_object("manifest.json", b"[2]", if_match=ABSENT_TOKEN)
    assert store.read_object("manifest.json") == (b"[1]", t1)
    t2 = store.replace_object("manifest.json", b"[1,2]", if_match=t1)
    with pytest.raises(ConflictError):
        store.replace_object("manifest.json", b"[3]", if_match=t1)
    assert store.read_object("manifest.json") == (b"[1,2]", t2)
    with pytest.raises(ConflictError):
        store.replace_object("absent.json", b"x", if_match=t2)
    store.replace_object(".lethe/ledger/r1/b1.jsonl", b"{}\n")
    store.replace_object(".lethe/ledger/r1/b2.jsonl", b"{}\n")
    assert list(store.list_internal(".lethe/ledger/")) == [
        ".lethe/ledger/r1/b1.jsonl", ".lethe/ledger/r1/b2.jsonl"]
    assert [e.key for e in store.list()] == ["manifest.json"]
    store.delete_object(".lethe/ledger/r1/b1.jsonl")
    store.delete_object(".lethe/ledger/r1/b1.jsonl")
    assert list(store.list_internal(".lethe/")) == [".lethe/ledger/r1/b2.jsonl"]


class _LeaseLost(Exception):
    pass


def _fence_after(n: int) -> Callable[[], None]:
    """A fence that lets ``n`` requests through, then raises (a real lease loss cannot
    be timed against one request of a running batch)."""
    calls = [0]
    lock = threading.Lock()

    def fence() -> None:
        with lock:
            calls[0] += 1
            if calls[0] > n:
                raise _LeaseLost
    return fence


def test_no_delete_request_after_the_fence_raises(store: S3Storage) -> None:
    """I3 per request: moto takes only single If-Match deletes, 16 at a time, so a
    batch of 200 is 200 requests; once the fence raises no worker sends another.
    Each request is checked twice: when a worker takes its key, and in botocore's
    ``before-send`` right before the socket write (retries included), so 20
    passing checks allow at most 10 requests."""
    put_many(store, [f"p/f{i:03d}" for i in range(200)])
    entries = list(store.list())
    with pytest.raises(_LeaseLost):
        store.delete_batch(entries, fence=_fence_after(20))
    deleted = 200 - len(list(store.list()))
    assert 0 < deleted <= 10, f"{deleted} deleted, 20 fence checks passed"


def test_versioned_batch_is_fenced_before_its_request(versioned: S3Storage) -> None:
    put_many(versioned, [f"p/v{i}" for i in range(5)])
    versioned.check_fenced_deletes()  # the probe's own deletes come before, unfenced
    entries = list(versioned.list())
    with pytest.raises(_LeaseLost):
        versioned.delete_batch(entries, fence=_fence_after(0))
    with pytest.raises(_LeaseLost):
        versioned.delete_versions(entries, fence=_fence_after(0))
    assert len(list(versioned.list())) == 5


# --- keys that look like paths (issue #14 item 6) ---------------------------------

PATHLIKE = ["/x", "a//b", "a/./b", "a/../b", "./c", "../d"]
NEIGHBOURS = ["x", "a/b", "b", "c", "d"]  # what a path normalizer would make of them


def _bucket_keys(store: S3Storage) -> set[str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])
            if "/.lethe/" not in o["Key"]}


@pytest.mark.parametrize("versioning", [False, True], ids=["unversioned", "versioned"])
def test_pathlike_keys_are_listed_and_deleted_exactly(s3_server: S3Server, s3_bucket: str,
                                                      versioning: bool) -> None:
    """S3 keys are opaque: each path-like key is an entry and its delete removes
    exactly that key (moto: DeleteObject per key, the key in the URL, after the
    literal-URL probe; versioned: these keys' markers in DeleteObjects, the key in XML,
    without the probe; the others If-Match per key)."""
    store = make(s3_server, s3_bucket)
    if versioning:
        store.client.put_bucket_versioning(Bucket=s3_bucket,
                                           VersioningConfiguration={"Status": "Enabled"})
    put_many(store, ["p/" + k for k in PATHLIKE + NEIGHBOURS])
    entries = list(store.list())
    assert sorted(e.key for e in entries) == sorted(PATHLIKE + NEIGHBOURS)
    store.check_fenced_deletes()
    doomed = [e for e in entries if e.key in PATHLIKE]
    results = store.delete_batch(doomed)
    assert [(r.key, r.outcome) for r in results] == [(e.key, Outcome.DELETED) for e in doomed]
    assert _bucket_keys(store) == {"p/" + k for k in NEIGHBOURS}
    assert sorted(e.key for e in store.list()) == sorted(NEIGHBOURS)
    store.close()


def test_pathlike_keys_are_not_sent_in_urls_a_server_rewrites(store: S3Storage) -> None:
    """A proxy that normalizes URL paths would turn DeleteObject of 'a/../b' into a
    delete of 'b'. moto keeps paths literal, so the rewrite is done by a botocore
    hook on the sent URL (the one part a real moto cannot produce); the probe
    finds it and such keys get an error, while plain keys are still deleted."""
    import posixpath
    from urllib.parse import urlsplit, urlunsplit

    def normalize(request: Any, **kw: Any) -> None:
        u = urlsplit(request.url)
        path = posixpath.normpath(u.path.replace("//", "/"))
        request.url = urlunsplit(u._replace(path=path + ("/" if u.path.endswith("/") else "")))

    put_many(store, ["p/" + k for k in PATHLIKE + NEIGHBOURS])
    entries = list(store.list())
    store.check_fenced_deletes()  # the conditional-delete probe, before the rewriting
    store.client.meta.events.register("before-send.s3", normalize)
    doomed = [e for e in entries if e.key in PATHLIKE or e.key == "c"]
    results = store.delete_batch(doomed)
    by = {r.key: r for r in results}
    assert by.pop("c").outcome is Outcome.DELETED
    assert {r.outcome for r in by.values()} == {Outcome.ERROR}
    assert all("rewrites" in r.detail for r in by.values())
    store.client.meta.events.unregister("before-send.s3", normalize)
    assert _bucket_keys(store) == {"p/" + k for k in PATHLIKE + NEIGHBOURS if k != "c"}
