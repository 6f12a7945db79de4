"""A storage clock that disagrees with the operator's (engine item 8), through the CLI.

Ages are measured by the storage's clock; when it and ours differ by more than
``spec.safety.maxClockSkew`` (default 300 s), one of them is wrong and no age can
be trusted, so the run must refuse to start, say why with both numbers, and
delete nothing. The skewed storage is a real moto server whose process clock is
shifted (``tests/badinput/skewed_s3.py``): its ``Date`` header and the
``LastModified`` it stamps lie together, as a skewed server's do.

Not covered here: a skewed *POSIX* target. Its clock is a probe file's mtime,
which the kernel stamps from the same realtime clock the operator reads (Linux
time namespaces do not shift CLOCK_REALTIME); without libfaketime or a remote
NFS server with its own clock it cannot be skewed on one machine.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.badinput.operators import policy
from tests.fixtures.ports import free_port
from tests.fixtures.s3 import S3Server, _wait_ready
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
OBJECTS = 10


@contextlib.contextmanager
def _skewed_server(offset: float) -> Iterator[S3Server]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("skewed_s3.py")),
                             str(offset), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(endpoint, proc)
        yield S3Server(endpoint=endpoint)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _server_now(server: S3Server, bucket: str) -> float:
    date = server.client().head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]["date"]
    return email.utils.parsedate_to_datetime(date).timestamp()


def _bucket(server: S3Server) -> str:
    """A bucket of ``OBJECTS`` objects under ``data/``, once they are older than the
    rule's ``maxAge: 1s`` by the server's own clock: a run that may delete deletes all."""
    name = f"skew-{uuid.uuid4().hex[:12]}"
    c = server.client()
    c.create_bucket(Bucket=name)
    for i in range(OBJECTS):
        c.put_object(Bucket=name, Key=f"data/obj-{i:03d}", Body=b"payload")
    newest = max(o["LastModified"].timestamp()
                 for o in c.list_objects_v2(Bucket=name)["Contents"])
    wait_for(lambda: _server_now(server, name) >= newest + 2, timeout=10, interval=0.2,
             what="the objects to age 2s by the server's clock")
    return name


def _left(server: S3Server, bucket: str) -> int:
    out = server.client().list_objects_v2(Bucket=bucket, Prefix="data/obj-")
    return int(out.get("KeyCount", 0))


def _apply(tmp: Path, server: S3Server, bucket: str, **safety: Any
           ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    spec: dict[str, Any] = {"rules": {"maxAge": "1s"}, "mode": "Enforce"}
    spec["safety"] = {"allowDeleteAll": True, **safety}  # every object goes, on purpose
    doc = policy("skewed", "t", {"s3": {"bucket": bucket, "prefix": "data/",
                                        "endpoint": server.endpoint, "region": "us-east-1",
                                        "forcePathStyle": True}}, **spec)
    f = tmp / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    f.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}",
           "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
    out = subprocess.run([sys.executable, "-m", "lethe.cli.main", "apply", "-f", str(f),
                          "--output", "json", "--state-dir", str(tmp / "state")],
                         env=env, capture_output=True, text=True, timeout=90, check=False)
    assert out.stdout.strip(), f"no report; stderr:\n{out.stderr}"
    return out, json.loads(out.stdout)


@pytest.mark.parametrize("offset", [900.0, -900.0], ids=["ahead", "behind"])
def test_skew_beyond_the_bound_refuses_to_run(tmp_path: Path, offset: float) -> None:
    with _skewed_server(offset) as server:
        bucket = _bucket(server)
        out, r = _apply(tmp_path, server, bucket)
        assert out.returncode != 0 and r["result"] == "Failed", r
        assert r["reason"] == "ClockSkew", r
        # The message names the target, the skew and its direction, and the bound.
        direction = "ahead of" if offset > 0 else "behind"
        m = re.search(rf"clock of s3://{bucket}/data/ is ([\d.]+)s {direction} the "
                      r"operator's clock \(allowed: 300s\)", r["message"])
        assert m and abs(float(m.group(1)) - abs(offset)) <= 5, r["message"]
        assert r["deleted"] == 0 and _left(server, bucket) == OBJECTS
        # The same objects with a bound that admits the skew: deleted, so they were
        # eligible, and only the skew stopped the first run.
        out, r = _apply(tmp_path, server, bucket, maxClockSkew="30min")
        assert out.returncode == 0 and r["deleted"] == OBJECTS, (r, out.stderr)
        assert _left(server, bucket) == 0


def test_skew_within_the_bound_runs_normally(tmp_path: Path) -> None:
    with _skewed_server(60.0) as server:
        bucket = _bucket(server)
        out, r = _apply(tmp_path, server, bucket)
        assert out.returncode == 0 and r["result"] == "Succeeded", (r, out.stderr)
        assert r["deleted"] == OBJECTS and r["plan"]["future"] == 0, r
        assert _left(server, bucket) == 0
