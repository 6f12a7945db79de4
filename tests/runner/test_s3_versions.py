"""Versioned buckets follow S3 Lifecycle (issue #14 item 7), run end to end through
the real one-node Raft journal on the real S3 server (moto): expiring a current
version leaves a delete marker and the previous content never becomes current;
the data goes with ``noncurrentVersionsMaxAge``; a marker with nothing behind it
goes after that; the ledger says what happened at each step."""

from __future__ import annotations

import time
from typing import Any

from lethe.raft.node import RaftJournal
from lethe.runner import ledger
from lethe.runner.execute import Runner
from lethe.spec import parse_policy
from lethe.storage.s3 import S3Storage
from tests.fixtures.s3 import S3Server


def _run(s3_server: S3Server, bucket: str, journal: RaftJournal, name: str,
         select: dict[str, Any] | None = None,
         **s3: Any) -> tuple[dict[str, Any], list[ledger.LedgerLine]]:
    doc = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": name, "namespace": "test"},
           "spec": {"target": {"s3": {"bucket": bucket, "prefix": "v/",
                                      "endpoint": s3_server.endpoint, "region": "us-east-1",
                                      "forcePathStyle": True, **s3}},
                    "mode": "Enforce", "rules": {"keepLast": 1}, "select": select or {}}}
    policy = parse_policy(doc)
    store = S3Storage(policy.target, access_key=s3_server.access_key,  # type: ignore[arg-type]
                      secret_key=s3_server.secret_key, max_attempts=3)
    try:
        r = Runner(policy=policy, storage=store, journal=journal).run().as_dict()
        lines = list(ledger.read_run(storage=store, root=policy.ledgerPath, run_id=r["run_id"]))
    finally:
        store.close()
    return r, lines


def test_versioned_lifecycle_end_to_end(s3_server: S3Server, s3_bucket: str,
                                        journal: RaftJournal) -> None:
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket=s3_bucket, Key="v/report", Body=b"first draft")
    client.put_object(Bucket=s3_bucket, Key="v/report", Body=b"final")  # overwritten
    time.sleep(1.1)
    client.put_object(Bucket=s3_bucket, Key="v/newest", Body=b"n")  # keepLast 1 keeps it

    def body(key: str) -> bytes | None:
        try:
            return client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    # 1. expiring the current version leaves a marker: no resurrection of "first draft"
    r, lines = _run(s3_server, s3_bucket, journal, "vers-1")
    assert (r["result"], r["deleted"], r["errors"]) == ("Succeeded", 1, 0), r
    assert body("v/report") is None and body("v/newest") == b"n"
    [line] = lines
    assert (line.key, line.outcome) == ("report", "deleted")  # a plan rule (keepLast)
    assert line.detail.startswith("delete marker ") and "kept as noncurrent" in line.detail
    vers = client.list_object_versions(Bucket=s3_bucket, Prefix="v/report")
    assert len(vers["Versions"]) == 2 and len(vers["DeleteMarkers"]) == 1

    # 2. noncurrentVersionsMaxAge removes the data; the marker stays while it covers any
    time.sleep(2.1)
    r, lines = _run(s3_server, s3_bucket, journal, "vers-2", noncurrentVersionsMaxAge="1s")
    assert (r["result"], r["deleted"], r["errors"]) == ("Succeeded", 2, 0), r
    assert sorted((x.key, x.rule) for x in lines) == [("report", "noncurrentVersionsMaxAge")] * 2
    vers = client.list_object_versions(Bucket=s3_bucket, Prefix="v/report")
    assert not vers.get("Versions") and len(vers["DeleteMarkers"]) == 1
    assert body("v/report") is None

    # 3. a marker with nothing behind it is removed (ExpiredObjectDeleteMarker)
    r, lines = _run(s3_server, s3_bucket, journal, "vers-3", noncurrentVersionsMaxAge="1s")
    assert (r["result"], r["deleted"], r["errors"]) == ("Succeeded", 1, 0), r
    [line] = lines
    assert (line.key, line.rule, line.outcome) == ("report", "expiredObjectDeleteMarker",
                                                   "deleted")
    assert line.detail.startswith("delete marker ") and "no version behind it" in line.detail
    vers = client.list_object_versions(Bucket=s3_bucket, Prefix="v/report")
    assert not vers.get("Versions") and not vers.get("DeleteMarkers")
    assert body("v/newest") == b"n"


def test_noncurrent_versions_of_unselected_keys_are_kept(s3_server: S3Server, s3_bucket: str,
                                                         journal: RaftJournal) -> None:
    """``select.exclude`` protects a key's whole history: its noncurrent versions and
    delete markers are not removed by ``noncurrentVersionsMaxAge`` either."""
    client = s3_server.client()
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in ("v/keep/a", "v/tmp/b"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"1")
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"2")
    client.put_object(Bucket=s3_bucket, Key="v/keep/gone", Body=b"1")
    client.delete_object(Bucket=s3_bucket, Key="v/keep/gone")  # its version: noncurrent
    time.sleep(2.1)
    r, lines = _run(s3_server, s3_bucket, journal, "vers-select", select={
        "exclude": ["keep/**"]}, noncurrentVersionsMaxAge="1s")
    assert (r["result"], r["deleted"], r["errors"]) == ("Succeeded", 1, 0), r
    assert [(x.key, x.rule) for x in lines] == [("tmp/b", "noncurrentVersionsMaxAge")]
    vers = client.list_object_versions(Bucket=s3_bucket, Prefix="v/keep/")
    assert len(vers["Versions"]) == 3 and len(vers["DeleteMarkers"]) == 1
