"""`make run`: the whole product on this machine, then watch it work.

Starts the local control plane (scripts/cluster.sh), installs the CRDs, starts
an S3 server on loopback (moto) and fills a demo directory and bucket with
files of mixed ages, starts three operator replicas (Raft on 127.0.0.2-4),
applies example policies, and shows `kubectl get rp,lcj` as deletions happen.
Once the bucket's first objects are older than the S3 policy's maxAge, a
CleanupJob runs it: the old objects go, the ones uploaded just before stay.

Every run starts afresh (new Raft state, the demo's objects re-created), and
every way out (Ctrl-C, SIGTERM/SIGHUP, a failure, stdout closed as in
`make run | tee run.log`) stops everything this run started; a run killed
with SIGKILL is cleaned up by the next one (DEMO/pids) and by the cluster's
owner watchdog.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
KUBECTL = CACHE / "bin" / "kubectl"
KUBECONFIG = CACHE / "kubeconfig"
DEMO = CACHE / "demo"
PIDS = DEMO / "pids"  # "pid start-time" of what this run started, for the next run
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]  # lethe, and the replica launcher

from tests.fixtures.replicas import LocalReplicas  # noqa: E402

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


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="demo", aws_secret_access_key="demo-secret")


def fill_bucket(endpoint: str, *, prefix: str, count: int) -> None:
    s3 = s3_client(endpoint)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="avatars")
    for i in range(count):
        s3.put_object(Bucket="avatars", Key=f"tmp/{prefix}-{i:04d}.png", Body=b"\x89PNG" * 10)


def count_objects(endpoint: str) -> int:
    """The demo's uploads left (not Lethe's own ledger and plan objects)."""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(
        Bucket="avatars", Prefix="tmp/")
    return sum(1 for page in pages for o in page.get("Contents", ())
               if "-upload-" in o["Key"])


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
  rules: {maxAge: S3_MAX_AGE}
  mode: Enforce
  safety: {allowDeleteAll: true}  # a tmp/ prefix: emptying it is the point
"""

CLEANUP_JOB = """
apiVersion: lethe.io/v1alpha1
kind: CleanupJob
metadata: {name: avatars-now, namespace: demo}
spec: {policyRef: {name: avatars-tmp}, mode: Enforce, ttlSecondsAfterFinished: 600}
"""
#: The S3 policy's maxAge: the first upload must be older than this when the
#: CleanupJob runs, the second (just before it) younger.
S3_MAX_AGE = 30


class Stop(Exception):
    """SIGTERM or SIGHUP: leave like on Ctrl-C."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def say(*lines: str) -> None:
    """Print, unless stdout is gone (`make run | tee` after Ctrl-C): the demo goes on
    to its clean-up either way."""
    try:
        print(*lines, sep="\n", flush=True)
    except (BrokenPipeError, OSError):
        _silence_stdout()


def _silence_stdout() -> None:
    # Later writes (and the interpreter's flush at exit) must not fail again.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): a pid and
    its start time name one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def remember(pid: int) -> None:
    with PIDS.open("a") as f:
        f.write(f"{pid} {_start_time(pid)}\n")


def stop_leftovers() -> None:
    """Stop what an earlier run left behind (it was killed with SIGKILL): its
    replicas would otherwise join this run's API server."""
    if not PIDS.exists():
        return
    for line in PIDS.read_text().splitlines():
        pid_text, _, started = line.partition(" ")
        pid = int(pid_text)
        if started and _start_time(pid) == started:
            say(f"stopping process {pid} left by an earlier run")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # each was started in a session of its own
    PIDS.unlink()


def cluster_running() -> bool:
    return subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "status"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Clean-up runs to the end: a second Ctrl-C (or a SIGTERM) does not cut it short."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM,
                                                         signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main() -> int:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    DEMO.mkdir(parents=True, exist_ok=True)
    (DEMO / "error.log").unlink(missing_ok=True)
    stop_leftovers()
    procs: list[subprocess.Popen[bytes]] = []
    replicas: LocalReplicas | None = None
    # A cluster someone started before (make cluster) is theirs: it stays up after.
    ours = not cluster_running()
    # If this process dies without cleaning up (SIGKILL), the cluster's watchdog stops it.
    env = {**os.environ, "LETHE_CLUSTER_OWNER_PID": str(os.getpid())} if ours else None
    rc = 0
    try:
        subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "up"], check=True, env=env)
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        kubectl("wait", "--for=condition=Established", "--timeout=60s",
                "crd/retentionpolicies.lethe.io", "crd/cleanupjobs.lethe.io")
        # Objects of an earlier run (their status, a finished CleanupJob) would make this
        # run a different one; they have no finalizers, so this needs no operator.
        kubectl("delete", "retentionpolicies.lethe.io,cleanupjobs.lethe.io", "-n", "demo",
                "--all", "--ignore-not-found", "--timeout=60s")
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with (DEMO / "s3.log").open("wb") as s3_log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL, stderr=s3_log, start_new_session=True))
        remember(procs[-1].pid)
        data = DEMO / "data"
        fill_directory(data)
        for _ in range(100):
            try:
                fill_bucket(endpoint, prefix="old-upload", count=300)
                break
            except Exception:
                time.sleep(0.2)
        old_uploaded = time.monotonic()
        kubectl("apply", "-f", "-", input=POLICIES.replace("DATA", str(data))
                .replace("ENDPOINT", endpoint).replace("S3_MAX_AGE", f"{S3_MAX_AGE}s"))
        # Raft state of an earlier run names that run's ports: start afresh.
        shutil.rmtree(DEMO / "replicas", ignore_errors=True)
        replicas = LocalReplicas(count=3, workdir=DEMO / "replicas",
                                 kubeconfigs=[str(KUBECONFIG)],
                                 password=secrets.token_hex(16),
                                 env={"LETHE_ALLOWED_ROOTS": str(DEMO), "LETHE_LOG_FORMAT":
                                      "text", "LETHE_INSECURE_DEV_RAFT": "0"})
        replicas.start()
        for r in replicas.replicas:
            if r.proc is not None:
                remember(r.proc.pid)
        replicas.wait_ready(timeout=90)
        leader = replicas.wait_leader()
        say(f"\n3 replicas up, Raft leader {leader.name} ({leader.raft_address}); "
            f"logs in {DEMO / 'replicas'}; S3 at {endpoint}; demo data in {data}",
            f"kubectl --kubeconfig {KUBECONFIG} get rp,lcj -A   (Ctrl-C stops everything)\n")
        job_at = old_uploaded + S3_MAX_AGE + 5
        job_applied = False
        while True:
            if not job_applied and time.monotonic() >= job_at:
                fill_bucket(endpoint, prefix="new-upload", count=20)
                kubectl("apply", "-f", "-", input=CLEANUP_JOB)
                say(f"CleanupJob avatars-now applied: 300 objects older than {S3_MAX_AGE}s "
                    "should go, 20 just uploaded should stay")
                job_applied = True
            files = sum(1 for _ in data.rglob("*.log"))
            say(time.strftime("%H:%M:%S") + f"  {files} log files left in {data}, "
                f"{count_objects(endpoint)} objects left in s3://avatars/tmp/"
                + ("" if job_applied else
                   f" (CleanupJob in {max(0, int(job_at - time.monotonic()))}s)"),
                kubectl("get", "rp,lcj", "-n", "demo", check=False))
            time.sleep(10)
    except (KeyboardInterrupt, Stop):
        say("\nstopping …")
    except BaseException as e:
        rc = 1
        (DEMO / "error.log").write_text(traceback.format_exc())
        text = e.args[0] if isinstance(e, SystemExit) and e.args else f"{type(e).__name__}: {e}"
        with contextlib.suppress(OSError):
            print(f"make run failed: {text}\n(details in {DEMO / 'error.log'})",
                  file=sys.stderr, flush=True)
    finally:
        with signals_ignored():
            cleanup(replicas, procs, stop_cluster=ours)
    return rc


def cleanup(replicas: LocalReplicas | None, procs: list[subprocess.Popen[bytes]], *,
            stop_cluster: bool) -> None:
    """Stop everything this run started. Writes nothing to stdout or stderr, which
    may be a pipe whose reader is gone."""
    if replicas is not None:
        replicas.stop()
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
    if stop_cluster:
        # Its log lines go to a file: a shell writing to a closed pipe dies of SIGPIPE
        # between stopping the API server and stopping etcd.
        with (DEMO / "cluster-down.log").open("wb") as log:
            subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "down"],
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False)
    PIDS.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
