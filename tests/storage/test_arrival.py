"""``Entry.ctime``: when an object arrived, which the ``minAge`` floor reads (issue #14).

POSIX on a real directory: a file created now and given a 2020 mtime (as
``tar -x``, ``rsync -a`` and ``cp -p`` do) lists with its old mtime and a ctime
of now. S3 on the real S3 server: ``ctime`` is ``LastModified``, the write time,
in plain and in versioned listings.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lethe.spec import PosixTarget, S3Target
from lethe.storage.posix import PosixStorage
from lethe.storage.s3 import S3Storage
from tests.fixtures.s3 import S3Server

OLD = time.mktime((2020, 3, 1, 12, 0, 0, 0, 0, -1))


def test_posix_lists_ctime_of_a_restored_file(tmp_path: Path) -> None:
    before = time.time()
    p = tmp_path / "restored.tar"
    p.write_bytes(b"x" * 10)
    os.utime(p, (OLD, OLD))
    [e] = list(PosixStorage(PosixTarget(path=str(tmp_path))).list())
    st = os.stat(p)
    assert e.key == "restored.tar" and abs(e.mtime - OLD) < 1e-6
    assert e.ctime == st.st_ctime_ns / 1e9 and e.ctime >= before - 1


def _store(s3_server: S3Server, bucket: str) -> S3Storage:
    return S3Storage(S3Target(bucket=bucket, prefix="p/", endpoint=s3_server.endpoint,
                              region="us-east-1", forcePathStyle=True),
                     access_key=s3_server.access_key, secret_key=s3_server.secret_key)


def test_s3_lists_last_modified_as_ctime(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="p/a", Body=b"1")
    store = _store(s3_server, s3_bucket)
    try:
        [e] = list(store.list())
    finally:
        store.close()
    head = client.head_object(Bucket=s3_bucket, Key="p/a")
    assert e.ctime == e.mtime == head["LastModified"].timestamp()
    client.put_bucket_versioning(Bucket=s3_bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket=s3_bucket, Key="p/a", Body=b"2")
    store = _store(s3_server, s3_bucket)  # a new store: versioning is read once per store
    try:
        [v] = list(store.list())
    finally:
        store.close()
    assert v.version_id and v.ctime == v.mtime and v.ctime >= e.ctime
