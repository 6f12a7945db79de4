"""What an installation allows, and what never leaves it (issue 15, item 10).

Three replicas configured as a cautious installation would be: a bucket
allow-list (``LETHE_ALLOWED_BUCKETS``), a namespace allow-list
(``LETHE_WATCH_NAMESPACES``) and debug logging, against the real API server
and the real S3 server. One S3 policy with a consumer manifest and credentials
from a Secret runs to completion; then:

* the secret key is nowhere: replica logs (at DEBUG), the Raft journal on disk,
  ledgers and plans in the bucket, events, status;
* a policy on a bucket outside the allow-list is ``Stalled``/``TargetNotAllowed``
  and its bucket keeps every object;
* a policy in a namespace outside the watch list is never touched (no status,
  no deletes);
* the S3 consumer manifest lists exactly the survivors (I4 on S3).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.badinput.operators import chart_identities
from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import LocalReplicas
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import condition, get
from tests.operator.test_operator import CJ, _upload, job, ns, policy

WATCHED, UNWATCHED = "iso-watched", "iso-unwatched"
OLD, NEW = 30, 5


@pytest.fixture(scope="module")
def identities(crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
               ) -> list[str]:
    """Identities of their own: test_operator.py proves I1 by the ``lethe-op-*`` names
    over the whole audit log."""
    return chart_identities(crds_installed, workdir=tmp_path_factory.mktemp("identities"),
                            tag="iso")


@pytest.fixture(scope="module")
def buckets(s3_server: Any) -> tuple[str, str]:
    client = s3_server.client()
    allowed, other = (f"iso-{w}-{secrets.token_hex(4)}" for w in ("allowed", "other"))
    for b in (allowed, other):
        client.create_bucket(Bucket=b)
    return allowed, other


@pytest.fixture(scope="module")
def operators(identities: list[str], buckets: tuple[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalReplicas]:
    root = tmp_path_factory.mktemp("iso-operators")
    data = root / "data"
    data.mkdir()
    reps = LocalReplicas(count=3, workdir=root, kubeconfigs=identities,
                         password=secrets.token_hex(16),
                         env={"LETHE_ALLOWED_ROOTS": str(data), "LETHE_LOG_FORMAT": "json",
                              "LETHE_LOG_LEVEL": "DEBUG",
                              "LETHE_ALLOWED_BUCKETS": buckets[0],
                              "LETHE_WATCH_NAMESPACES": WATCHED})
    reps.data_root = data  # type: ignore[attr-defined]
    reps.start()
    try:
        reps.wait_ready(timeout=120)
        reps.wait_leader(timeout=30)
        yield reps
    finally:
        reps.stop()


def _secret(kube: KubeCluster, n: str, s3_server: Any, value: str) -> None:
    kube.kubectl("create", "secret", "generic", "s3", "-n", n,
                 f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
                 f"--from-literal=AWS_SECRET_ACCESS_KEY={value}", check=False)


def _target(s3_server: Any, bucket: str) -> dict[str, Any]:
    return {"s3": {"bucket": bucket, "prefix": "data/", "endpoint": s3_server.endpoint,
                   "region": "us-east-1", "forcePathStyle": True,
                   "credentialsSecretRef": {"name": "s3"}}}


def _finished(kube: KubeCluster, name: str, n: str) -> dict[str, Any]:
    obj: dict[str, Any] = wait_for(
        lambda: (o := get(kube, CJ, name, n)) and
        (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") and o,
        timeout=120, what=f"CleanupJob {n}/{name} to finish")
    return obj


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def test_secret_stays_secret_and_the_s3_manifest_lists_only_survivors(
        operators: LocalReplicas, crds_installed: KubeCluster, s3_server: Any,
        buckets: tuple[str, str]) -> None:
    kube, n, bucket = crds_installed, ns(crds_installed, WATCHED), buckets[0]
    client = s3_server.client()
    # moto accepts any secret key for a known access key: a unique one marks leaks.
    secret = "s3cr3t-" + os.urandom(8).hex()
    _secret(kube, n, s3_server, secret)
    old = [f"data/old-{i:03d}" for i in range(OLD)]
    _upload(client, bucket, old)
    time.sleep(3)
    # Not selected at all: an age margin would not survive a loaded machine.
    new = [f"data/new-{i:03d}" for i in range(NEW)]
    _upload(client, bucket, new)
    manifest = {"generator": "test", "files": [{"path": k.removeprefix("data/")}
                                               for k in old + new] + ["not-a-listed-key"]}
    client.put_object(Bucket=bucket, Key="data/manifest.json", Body=json.dumps(manifest))
    kube.apply(policy("media", n, _target(s3_server, bucket), rules={"maxAge": "3s"},
                      select={"include": ["old-*"]}, safety={"allowDeleteAll": True},
                      manifest={"path": "manifest.json"}))
    kube.apply(job("media", n, policyRef={"name": "media"}, mode="Enforce"))
    st = _finished(kube, "media", n)["status"]
    assert st["phase"] == "Succeeded", st
    assert st["counters"]["deleted"] == OLD, st
    assert sorted(_keys(client, bucket, "data/new-")) == new
    assert _keys(client, bucket, "data/old-") == []
    # I4 on S3: the consumer manifest lost exactly the deleted entries, kept the rest.
    after = json.loads(client.get_object(Bucket=bucket, Key="data/manifest.json")["Body"].read())
    assert after["generator"] == "test"
    assert after["files"] == [{"path": k.removeprefix("data/")} for k in new] \
        + ["not-a-listed-key"]
    # The secret, everywhere it could have gone.
    where: dict[str, str] = {
        "cluster objects and events": kube.kubectl(
            "get", "rp,cleanupjobs.lethe.io,events", "-n", n, "-o", "yaml").stdout}
    for r in operators.replicas:
        where[f"{r.name} log"] = r.log_path.read_text(errors="replace")
        for f in r.data_dir.rglob("*"):  # the Raft journal and snapshots
            if f.is_file():
                where[str(f)] = f.read_bytes().decode("latin-1")
    for k in _keys(client, bucket, "data/.lethe/"):  # ledgers and plans
        where[k] = client.get_object(Bucket=bucket, Key=k)["Body"].read().decode("latin-1")
    assert any(k.startswith("data/.lethe/ledger/") for k in where), sorted(where)
    assert any('"level": "DEBUG"' in where[f"{r.name} log"] for r in operators.replicas), \
        "LETHE_LOG_LEVEL=DEBUG was not applied: the 'every level' claim is untested"
    # The secret as written, and as the API carries it (base64, at any alignment).
    forms = [secret] + [base64.b64encode(b"x" * i + secret.encode()).decode()[4:-4]
                        for i in range(3)]
    leaked = [k for k, text in where.items() if any(f in text for f in forms)]
    assert not leaked, f"the secret key appears in: {leaked}"


def test_bucket_outside_the_allow_list_is_not_run(operators: LocalReplicas,
                                                  crds_installed: KubeCluster, s3_server: Any,
                                                  buckets: tuple[str, str]) -> None:
    kube, n, bucket = crds_installed, ns(crds_installed, WATCHED), buckets[1]
    client = s3_server.client()
    _secret(kube, n, s3_server, s3_server.secret_key)
    keys = [f"data/x-{i}" for i in range(5)]
    _upload(client, bucket, keys)
    time.sleep(2)
    kube.apply(policy("other", n, _target(s3_server, bucket), rules={"maxAge": "1s"}))
    kube.apply(job("other", n, policyRef={"name": "other"}, mode="Enforce"))
    o = wait_for(lambda: (o := get(kube, CJ, "other", n)) and condition(o, "Stalled") and o,
                 timeout=60, what="a Stalled condition")
    c = condition(o, "Stalled")
    assert c is not None and c["reason"] == "TargetNotAllowed", c
    assert bucket in c["message"], c
    assert sorted(_keys(client, bucket, "data/")) == keys


def test_unwatched_namespace_is_never_touched(operators: LocalReplicas,
                                              crds_installed: KubeCluster) -> None:
    kube, n = crds_installed, ns(crds_installed, UNWATCHED)
    root = operators.data_root / "unwatched"  # type: ignore[attr-defined]
    root.mkdir()
    paths = []
    for i in range(5):
        p = root / f"old-{i}.log"
        p.write_text("x")
        os.utime(p, (time.time() - 90 * 86400,) * 2)
        paths.append(p)
    kube.apply(policy("elsewhere", n, {"posix": {"path": str(root)}},
                      rules={"maxAge": "1d"}))
    kube.apply(job("elsewhere", n, policyRef={"name": "elsewhere"}, mode="Enforce"))
    # A control in the watched namespace, applied after, must finish: by then the
    # unwatched objects have had every chance to be seen.
    w = ns(kube, WATCHED)
    ctl = operators.data_root / "control"  # type: ignore[attr-defined]
    ctl.mkdir()
    (ctl / "keep.log").write_text("x")
    kube.apply(policy("control", w, {"posix": {"path": str(ctl)}}, rules={"maxAge": "1d"}))
    kube.apply(job("control", w, policyRef={"name": "control"}, mode="Enforce"))
    assert _finished(kube, "control", w)["status"]["phase"] == "Succeeded"
    time.sleep(3)
    for kind, name in (("rp", "elsewhere"), (CJ, "elsewhere")):
        obj = get(kube, kind, name, n)
        assert obj is not None and not obj.get("status"), obj
    assert all(p.exists() for p in paths)
    logs = "".join(r.log_path.read_text(errors="replace") for r in operators.replicas)
    assert UNWATCHED not in logs
