"""S3 that says AccessDenied: a real server enforcing real IAM policies.

moto's server mode evaluates IAM policies once authentication is switched on
(``POST /moto-api/reset-auth`` with ``0``: every later request is signed by, and
authorised for, an IAM user). This module has a moto server of its own, because
that switch is global to the server. Three users:

* ``admin``: ``s3:*`` (sets up the buckets and checks what is left);
* ``lister``: may list and read the bucket, and is explicitly denied
  ``s3:PutObject`` and ``s3:DeleteObject`` on its objects;
* ``nobody``: no policy at all (everything implicitly denied).

What must hold: a denied run deletes nothing, says ``AccessDenied`` and names the
bucket (in the CLI's report, and as the CleanupJob's ``Stalled`` condition), and
the operator stays healthy and does not hammer the bucket. A control run with the
admin's keys then deletes everything: the objects were eligible all along.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config

from tests.badinput.operators import job, policy, tracebacks
from tests.fixtures.kube import KubeCluster
from tests.fixtures.ports import free_port
from tests.fixtures.replicas import LocalReplicas
from tests.fixtures.s3 import _moto_command, _wait_ready
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import condition, get

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
OBJECTS = 12


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class IamS3:
    endpoint: str
    admin: Keys
    lister: Keys
    nobody: Keys

    def client(self, keys: Keys) -> Any:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=keys.access_key, aws_secret_access_key=keys.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def _user(iam: Any, name: str, statements: list[dict[str, Any]]) -> Keys:
    iam.create_user(UserName=name)
    if statements:
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": statements}))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return Keys(k["AccessKeyId"], k["SecretAccessKey"])


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[IamS3]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(_moto_command(port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(endpoint, proc)
        iam = boto3.session.Session().client(
            "iam", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="setup", aws_secret_access_key="setup")
        everything = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        # moto authorises HeadBucket as s3:HeadBucket (AWS itself asks for s3:ListBucket).
        read = {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:HeadBucket",
                                              "s3:GetObject", "s3:GetBucketVersioning"],
                "Resource": ["arn:aws:s3:::*"]}
        no_writes = {"Effect": "Deny", "Action": ["s3:PutObject", "s3:DeleteObject"],
                     "Resource": ["arn:aws:s3:::*/*"]}
        s3 = IamS3(endpoint=endpoint, admin=_user(iam, "admin", [everything]),
                   lister=_user(iam, "lister", [read, no_writes]), nobody=_user(iam, "nobody", []))
        # From now on every request is authenticated and authorised by IAM.
        urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
            headers={"Content-Type": "text/plain"}), timeout=10).close()
        with pytest.raises(Exception, match="InvalidAccessKeyId"):
            s3.client(Keys("unknown", "unknown")).list_buckets()
        yield s3
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@pytest.fixture
def bucket(iam_s3: IamS3) -> str:
    """A bucket with ``OBJECTS`` objects under ``data/``, all older than the rule's 1 s."""
    name = f"denied-{uuid.uuid4().hex[:12]}"
    admin = iam_s3.client(iam_s3.admin)
    admin.create_bucket(Bucket=name)
    for i in range(OBJECTS):
        admin.put_object(Bucket=name, Key=f"data/obj-{i:03d}", Body=b"payload")
    newest = max(o["LastModified"].timestamp()
                 for o in admin.list_objects_v2(Bucket=name)["Contents"])
    wait_for(lambda: time.time() >= newest + 2, timeout=10, interval=0.2,
             what="the objects to age 2s")
    return name


def _count(iam_s3: IamS3, bucket: str) -> int:
    out = iam_s3.client(iam_s3.admin).list_objects_v2(Bucket=bucket, Prefix="data/obj-")
    return int(out.get("KeyCount", 0))


def _target(iam_s3: IamS3, bucket: str) -> dict[str, Any]:
    return {"s3": {"bucket": bucket, "prefix": "data/", "endpoint": iam_s3.endpoint,
                   "region": "us-east-1", "forcePathStyle": True}}


def _cli(command: str, tmp: Path, target: dict[str, Any], keys: Keys
         ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    doc = policy("denied", "t", target, rules={"maxAge": "1s"}, mode="Enforce")
    f = tmp / f"{command}-{uuid.uuid4().hex[:6]}.yaml"
    f.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}",
           "AWS_ACCESS_KEY_ID": keys.access_key, "AWS_SECRET_ACCESS_KEY": keys.secret_key}
    out = subprocess.run([sys.executable, "-m", "lethe.cli.main", command, "-f", str(f),
                          "--output", "json", "--state-dir", str(tmp / "state")],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip(), f"no report; stderr:\n{out.stderr}"
    return out, json.loads(out.stdout)


@pytest.mark.parametrize(("who", "command"), [("lister", "apply"), ("lister", "plan"),
                                               ("nobody", "apply")])
def test_cli_reports_access_denied_and_deletes_nothing(
        iam_s3: IamS3, bucket: str, tmp_path: Path, who: str, command: str) -> None:
    target = _target(iam_s3, bucket)
    out, r = _cli(command, tmp_path, target, getattr(iam_s3, who))
    assert out.returncode != 0, r
    assert r["reason"] == "AccessDenied", r
    assert bucket in r["message"] and "denied" in r["message"], r["message"]
    assert "Traceback" not in out.stderr, out.stderr
    assert r["deleted"] == 0 and _count(iam_s3, bucket) == OBJECTS
    # Control: the same policy with keys that may delete removes every object.
    out, r = _cli("apply", tmp_path, target, iam_s3.admin)
    assert out.returncode == 0 and r["deleted"] == OBJECTS, (r, out.stderr)
    assert _count(iam_s3, bucket) == 0


def test_cleanupjob_on_a_denying_bucket_is_stalled_access_denied(
        operators: LocalReplicas, crds_installed: KubeCluster, iam_s3: IamS3,
        bucket: str) -> None:
    kube, ns = crds_installed, "s3-denied"
    kube.kubectl("create", "namespace", ns, check=False)
    before = tracebacks(operators)
    kube.kubectl("create", "secret", "generic", "lister", "-n", ns,
                 f"--from-literal=AWS_ACCESS_KEY_ID={iam_s3.lister.access_key}",
                 f"--from-literal=AWS_SECRET_ACCESS_KEY={iam_s3.lister.secret_key}")
    target = _target(iam_s3, bucket)
    target["s3"]["credentialsSecretRef"] = {"name": "lister"}
    kube.apply(policy("denied", ns, target, rules={"maxAge": "1s"}, mode="Enforce"))
    kube.apply(job("denied", ns, policyRef={"name": "denied"}, mode="Enforce"))
    obj = wait_for(lambda: (o := get(kube, "cleanupjobs.lethe.io", "denied", ns)) and
                   (c := condition(o, "Stalled")) and c["status"] == "True" and o,
                   timeout=60, what="the job's Stalled condition")
    stalled = condition(obj, "Stalled")
    assert stalled is not None and stalled["reason"] == "AccessDenied", stalled
    assert bucket in stalled["message"], stalled["message"]
    assert obj["status"]["phase"] in ("Pending", "Failed"), obj["status"]
    # While it stays denied: nothing deleted, and no new attempt every tick (each one
    # costs requests to the bucket, a RunStarted event and two status writes).
    time.sleep(5)
    assert _count(iam_s3, bucket) == OBJECTS
    events = json.loads(kube.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    started = [e for e in events if e["reason"] == "RunStarted"]
    assert sum(int(e.get("count") or 1) for e in started) <= 2, started
    again = get(kube, "cleanupjobs.lethe.io", "denied", ns)
    assert condition(again, "Stalled")["reason"] == "AccessDenied"  # type: ignore[index]
    assert all(r.alive() and r.get("/readyz")[0] == 200 for r in operators.replicas)
    assert tracebacks(operators) == before
