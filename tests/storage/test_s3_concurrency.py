"""Chunks of one S3 delete call in flight at once (issue #16 item 4), on the real
moto server of tests/fixtures/s3.py.

Versioned buckets on a server that honours no delete condition, so each chunk is
one DeleteObjects of unconditional delete markers (MinIO's community edition).
moto honours If-Match on DeleteObject, and its storage would send one request per
key (as it does unversioned, 16 at a time), so the fixture sets the probe's answer
to "none": the chunking above the request is the same for every form. The
overlap is seen by the recording proxy of the fault runs (tests/chaos/s3proxy.py,
a process of its own in front of moto) and forced by a barrier in botocore's
``before-send`` hook, so that a sequential implementation fails at once instead
of by a timing that a loaded machine may or may not produce. Injected, because
moto cannot produce it: one chunk's DeleteObjects answered 500 (moto never fails
a whole request), by a ``before-send`` hook returning a real HTTP response
object, as the SlowDown test in test_s3.py does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from lethe.storage import s3 as s3mod
from lethe.storage.base import Entry, Outcome
from lethe.storage.s3 import S3Storage
from tests.chaos.s3proxy import S3Proxy, read_log
from tests.fixtures.s3 import S3Server
from tests.storage.test_s3 import _Raw, make, put_many

N = 400  # 4 chunks of 100 (_chunk_size)


class _LeaseLost(Exception):
    pass


@pytest.fixture
def proxy(s3_server: S3Server, tmp_path: Path) -> Iterator[S3Proxy]:
    p = S3Proxy(upstream=s3_server.endpoint, log=tmp_path / "requests.jsonl")
    yield p
    p.close()


@pytest.fixture
def versioned(s3_server: S3Server, s3_bucket: str, proxy: S3Proxy) -> Iterator[S3Storage]:
    """A versioned bucket holding N objects, and a storage whose requests go
    through the proxy (populated directly, so the log holds only the storage's)."""
    direct = make(s3_server, s3_bucket)
    direct.client.put_bucket_versioning(Bucket=s3_bucket,
                                        VersioningConfiguration={"Status": "Enabled"})
    put_many(direct, [f"p/k{i:04d}" for i in range(N)])
    direct.close()
    store = make(S3Server(endpoint=proxy.endpoint), s3_bucket)
    store._delete_mode = "none"  # see the module docstring
    yield store
    store.close()


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    edges = sorted([(t0, 1) for t0, _ in intervals] + [(t1, -1) for _, t1 in intervals])
    most = now = 0
    for _t, step in edges:
        now += step
        most = max(most, now)
    return most


def _delete_objects(proxy: S3Proxy) -> list[Any]:
    return [r for r in read_log(proxy.log) if r.is_delete_objects]


def _barrier(store: S3Storage, parties: int) -> None:
    """Hold each DeleteObjects at the socket until ``parties`` of them are there."""
    gate = threading.Barrier(parties, timeout=30)

    def hold(**_kw: Any) -> None:
        if not getattr(store._undoing, "active", False):  # an undo is no chunk's request
            gate.wait()
    store.client.meta.events.register("before-send.s3.DeleteObjects", hold)


@pytest.mark.parametrize("call", ["delete_batch", "delete_versions"])
def test_chunks_are_in_flight_at_once_and_results_keep_their_order(
        versioned: S3Storage, proxy: S3Proxy, call: str) -> None:
    """4 chunks: the barrier lets no DeleteObjects out until all 4 wait at it
    (sequential chunks break it after 30 s), the proxy sees them overlap, and the
    first chunk, delayed by 1 s after the barrier, ends last yet its results come
    first. Planted: chunks run one after another (a loop instead of the pool):
    BrokenBarrierError; results in completion order: the order assertion fails."""
    entries = list(versioned.list())
    assert len(entries) == N
    _barrier(versioned, 4)
    first_key = versioned.prefix + entries[0].key

    def slow_first(request: Any, **_kw: Any) -> None:
        if first_key.encode() in (request.body or b""):
            time.sleep(1.0)
    versioned.client.meta.events.register("before-send.s3.DeleteObjects", slow_first)
    results = getattr(versioned, call)(entries)
    assert [r.key for r in results] == [e.key for e in entries]
    assert {r.outcome for r in results} == {Outcome.DELETED}
    sent = _delete_objects(proxy)
    assert len(sent) == 4
    assert sorted(len(r.objects) for r in sent) == [100] * 4
    assert _max_overlap([(r.t0, r.t1) for r in sent]) >= 2
    # the delayed first chunk was answered last, the order of results is the entries'
    assert max(sent, key=lambda r: r.t1).objects[0]["key"] == first_key


def test_in_flight_chunks_are_bounded(versioned: S3Storage, proxy: S3Proxy,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """More chunks than workers (DeleteObjects' limit lowered to 25 for the test: 16
    chunks of 25): never more than _DELETE_CONCURRENCY requests at once, counted
    by the storage's own client at the socket. Planted: a pool of 16 workers:
    the count reached 14 and the test failed."""
    monkeypatch.setattr(s3mod, "MAX_DELETE_KEYS", 25)
    entries = list(versioned.list())
    lock = threading.Lock()
    open_now, most = [0], [0]

    def enter(**_kw: Any) -> None:
        with lock:
            open_now[0] += 1
            most[0] = max(most[0], open_now[0])
        time.sleep(0.05)  # hold the slot long enough for the others to arrive

    def leave(**_kw: Any) -> None:
        with lock:
            open_now[0] -= 1

    versioned.client.meta.events.register("before-send.s3.DeleteObjects", enter)
    versioned.client.meta.events.register("needs-retry.s3.DeleteObjects", leave)
    results = versioned.delete_batch(entries)
    assert {r.outcome for r in results} == {Outcome.DELETED}
    assert len(_delete_objects(proxy)) == 16
    assert 2 <= most[0] <= s3mod._DELETE_CONCURRENCY


def _flaky_fence(k: int) -> tuple[Callable[[], None], list[int]]:
    """A fence that raises on its k-th call only (a lease lost, then a slow path that
    would let a later caller through): a call after the k-th is a violation."""
    calls = [0]
    lock = threading.Lock()

    def fence() -> None:
        with lock:
            calls[0] += 1
            if calls[0] == k:
                raise _LeaseLost
    return fence, calls


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_after_the_fence_raises_no_chunk_asks_it_again_or_sends(
        versioned: S3Storage, proxy: S3Proxy, k: int) -> None:
    """Each request passes two checks (the chunk's, then botocore's before-send),
    so k-1 passing checks allow at most (k-1)//2 DeleteObjects, and once the fence
    has raised it is never called again. Planted: the guarded fence without its
    stop flag: the fence was called again after raising (and requests went out)."""
    fence, calls = _flaky_fence(k)
    entries = list(versioned.list())
    with pytest.raises(_LeaseLost):
        versioned.delete_batch(entries, fence=fence)
    assert calls[0] == k
    sent = _delete_objects(proxy)
    assert len(sent) <= (k - 1) // 2
    # A chunk that did send read its markers back: every key is current again or
    # hidden by exactly its planned version's marker (nothing else deleted).
    rel = len(versioned.prefix)
    current = {e.key for e in versioned.list()}
    asked = {str(o["key"])[rel:] for r in sent for o in r.objects}
    assert current | asked == {e.key for e in entries}
    assert not current & {k[rel:] for r in sent for k in r.deleted}


def test_one_chunks_failure_is_its_own(versioned: S3Storage, proxy: S3Proxy) -> None:
    """The second chunk's DeleteObjects is answered 500 InternalError on every
    attempt (injected, see the module docstring): its 100 entries are ERROR, the
    other 300 are deleted, nothing is raised. Planted: the chunk's ClientError
    re-raised: the whole call raised and the test failed."""
    entries = list(versioned.list())
    doomed = versioned.prefix + entries[100].key
    failed: list[int] = []

    def fail_second(request: Any, **_kw: Any) -> AWSResponse | None:
        if doomed.encode() not in (request.body or b""):
            return None
        failed.append(1)
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                b"<Message>We encountered an internal error.</Message></Error>")
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/xml"
        return AWSResponse(request.url, 500, headers, _Raw(body))

    versioned.client.meta.events.register_first("before-send.s3.DeleteObjects",
                                                fail_second)  # type: ignore[arg-type]
    results = versioned.delete_batch(entries)
    assert [r.key for r in results] == [e.key for e in entries]
    assert [r.outcome for r in results] == (
        [Outcome.DELETED] * 100 + [Outcome.ERROR] * 100 + [Outcome.DELETED] * 200)
    assert all("InternalError" in r.detail for r in results[100:200])
    assert len(failed) >= 2  # retried (botocore), then reported
    assert sorted(e.key for e in versioned.list()) == [e.key for e in entries[100:200]]


def test_small_batches_stay_one_request(versioned: S3Storage, proxy: S3Proxy) -> None:
    """Below 2 x _MIN_CHUNK_KEYS a batch is not split: one DeleteObjects."""
    entries = list(versioned.list())[:150]
    results = versioned.delete_batch(entries)
    assert {r.outcome for r in results} == {Outcome.DELETED}
    assert [len(r.objects) for r in _delete_objects(proxy)] == [150]


def test_a_key_twice_stays_in_one_chunk(versioned: S3Storage, proxy: S3Proxy) -> None:
    """The same key at both ends of a batch: both results come from the one chunk
    that holds them (one marker for it), never from two chunks deleting it at
    once. Planted: chunks cut by position: the key went to two DeleteObjects."""
    entries = list(versioned.list())
    batch = [*entries, entries[0]]
    results = versioned.delete_batch(batch)
    assert [r.key for r in results] == [e.key for e in batch]
    assert {r.outcome for r in results} == {Outcome.DELETED}
    sent = _delete_objects(proxy)
    asked = [o["key"] for r in sent for o in r.objects]
    assert len(asked) == len(set(asked)) == N


def test_entry_type_is_unchanged() -> None:
    """The chunking is internal: Entry and the constants callers read are as before."""
    assert s3mod.MAX_DELETE_KEYS == 1000
    assert s3mod._chunk_size(1000) == 250
    assert s3mod._chunk_size(150) == 150
    assert s3mod._chunk_size(5000) == 1000
    assert s3mod._chunk_size(250) == 125
    assert s3mod._chunk_size(0) == 1
    assert Entry("k", 1, 0.0, "f").version_id is None
