"""`make run`: the whole product on this machine, then watch it work.

Starts the local control plane (scripts/cluster.sh), installs the CRDs, starts
an S3 server on loopback (moto) and fills a demo directory and bucket with
files of mixed ages, starts three operator replicas (Raft on 127.0.0.2-4),
applies example policies and a CleanupJob, and shows `kubectl get rp,lcj`
as deletions happen. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
KUBECTL = CACHE / "bin" / "kubectl"
KUBECONFIG = CACHE / "kubeconfig"
DEMO = CACHE / "demo"
sys.path.insert(0, str(ROOT / "operator"))

from lethe.devenv import LocalReplicas  # noqa: E402

DAY = 86400


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    out = subprocess.run([str(KUBECTL), "--kubeconfig", str(KUBECONFIG), *args], input=input,
                         capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill_directory(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    now = time.time()
    for app in ("web", "worker", "cron"):
        for day in range(0, 60, 2):
            p = root / "logs" / app / f"{app}-{day:02d}.log"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"log line\n" * (50 + day))
            os.utime(p, (now - day * DAY, now - day * DAY))
    (root / "logs" / "web" / "keep").mkdir()
    keep = root / "logs" / "web" / "keep" / "audit-2020.log"
    keep.write_text("kept by the exclude glob\n")
    os.utime(keep, (now - 400 * DAY, now - 400 * DAY))
    (root / ".lethe-sentinel").write_text("the export is mounted\n")


def fill_bucket(endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="demo", aws_secret_access_key="demo-secret")
    s3.create_bucket(Bucket="avatars")
    for i in range(300):
        s3.put_object(Bucket="avatars", Key=f"tmp/upload-{i:04d}.png", Body=b"\x89PNG" * 10)


POLICIES = """
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Secret
metadata: {name: s3-creds, namespace: demo}
stringData: {AWS_ACCESS_KEY_ID: demo, AWS_SECRET_ACCESS_KEY: demo-secret}
---
apiVersion: lethe.io/v1alpha1
kind: RetentionPolicy
metadata: {name: app-logs, namespace: demo}
spec:
  target: {posix: {path: DATA, sentinel: .lethe-sentinel}}
  select: {include: ["**/*.log"], exclude: ["**/keep/**"]}
  rules: {maxAge: 14d, keepLast: 5, minAge: 1h}
  schedule: "* * * * *"
  mode: Enforce
  safety: {maxDeletePercent: 90}
---
apiVersion: lethe.io/v1alpha1
kind: RetentionPolicy
metadata: {name: logs-dry-run, namespace: demo}
spec:
  target: {posix: {path: DATA}}
  rules: {maxAge: 7d}
  schedule: "* * * * *"
---
apiVersion: lethe.io/v1alpha1
kind: RetentionPolicy
metadata: {name: avatars-tmp, namespace: demo}
spec:
  target: {s3: {bucket: avatars, prefix: tmp/, endpoint: ENDPOINT, region: us-east-1,
                forcePathStyle: true, credentialsSecretRef: {name: s3-creds}}}
  rules: {maxAge: 10s}
  mode: Enforce
  safety: {allowDeleteAll: true}  # a tmp/ prefix: emptying it is the point
---
apiVersion: lethe.io/v1alpha1
kind: CleanupJob
metadata: {name: avatars-now, namespace: demo}
spec: {policyRef: {name: avatars-tmp}, mode: Enforce, ttlSecondsAfterFinished: 600}
"""


def main() -> int:
    procs: list[subprocess.Popen[bytes]] = []
    replicas: LocalReplicas | None = None
    subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "up"], check=True)
    try:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        kubectl("wait", "--for=condition=Established", "--timeout=60s",
                "crd/retentionpolicies.lethe.io", "crd/cleanupjobs.lethe.io")
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        DEMO.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=open(DEMO / "s3.log", "wb"),  # noqa: SIM115
            start_new_session=True))
        data = DEMO / "data"
        fill_directory(data)
        for _ in range(100):
            try:
                fill_bucket(endpoint)
                break
            except Exception:
                time.sleep(0.2)
        kubectl("apply", "-f", "-", input=POLICIES.replace("DATA", str(data))
                .replace("ENDPOINT", endpoint))
        replicas = LocalReplicas(count=3, workdir=DEMO / "replicas",
                                 kubeconfigs=[str(KUBECONFIG)],
                                 password=secrets.token_hex(16),
                                 env={"LETHE_ALLOWED_ROOTS": str(DEMO), "LETHE_LOG_FORMAT":
                                      "text", "LETHE_INSECURE_DEV_RAFT": "0"})
        replicas.start()
        replicas.wait_ready(timeout=90)
        leader = replicas.wait_leader()
        print(f"\n3 replicas up, Raft leader {leader.name} ({leader.raft_address}); "
              f"logs in {DEMO / 'replicas'}; S3 at {endpoint}; demo data in {data}")
        print(f"kubectl --kubeconfig {KUBECONFIG} get rp,lcj -A   (Ctrl-C stops everything)\n")
        while True:
            files = sum(1 for p in data.rglob("*.log"))
            print(time.strftime("%H:%M:%S"), f"  {files} log files left in {data}")
            print(kubectl("get", "rp,lcj", "-n", "demo", check=False))
            time.sleep(10)
    except KeyboardInterrupt:
        print("\nstopping …")
    finally:
        if replicas is not None:
            replicas.stop()
        for p in procs:
            with_pg = p.pid
            try:
                os.killpg(with_pg, signal.SIGTERM)
            except ProcessLookupError:
                pass
        subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "down"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
