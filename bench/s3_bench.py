"""S3: ``lethe apply`` against ``rclone delete``, ``aws s3 rm`` and a bare boto3 loop.

On moto's S3 server on loopback by default, or on MinIO (``--server minio``,
built by ``make bench`` from the Go module proxy into ``.cache/bench/bin``;
with ``--versioned`` only: MinIO honours no conditional delete, so lethe
refuses to delete from its unversioned buckets). Neither can backdate ``LastModified``, so
each tool gets a fresh bucket populated the same way: ``old/…`` objects (the
ones to delete), a pause of ``GAP`` seconds, then ``new/…`` objects (the ones
to keep). The age threshold handed to lethe (``maxAge: Ns``), rclone
(``--min-age Ns``) and the boto3 loop is computed at launch so the cutoff
falls in the middle of the pause; the aws CLI has no age filter, so it gets
the equivalent ``--exclude '*' --include 'old/*'``. After each tool the
bucket is listed: every ``old/`` key must be gone and every ``new/`` key left.
Tools run in a rotating order across trials. Rates are objects deleted per
second of the tool's wall time (listing and, for lethe, its per-batch
re-list verification, journal and ledger included).

``--versioned`` runs the same on buckets with versioning enabled. Every tool
deletes by key there, which leaves a delete marker per object (S3 Lifecycle's
expiry): lethe re-lists each chunk of up to 1,000 keys, places the markers with
one DeleteObjects and reads the versions back (its overwrite check), 4 chunks
of a batch in flight at once; rclone, the aws CLI and the boto3 loop only
delete. On an unversioned bucket moto honours only ``If-Match`` on
DeleteObject, so lethe there sends one request per object, like the aws CLI
(see README).

Requests per object: on MinIO (started with ``MINIO_PROMETHEUS_AUTH_TYPE=public``)
the bench reads MinIO's own per-API request counters
(``/minio/metrics/v3/api/requests``) just before and after each tool, so the
count is every request the tool sent (listing, deletes, lethe's ledger and
probes), divided by the objects deleted. moto has no such counters: not counted.

``--lethe-base DIR`` adds the tool ``lethe-base``: ``lethe apply`` with the
operator sources of ``DIR`` (e.g. ``git worktree add /tmp/base <commit>``)
first on PYTHONPATH, for a before/after in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from bench._common import (
    CACHE_DIR,
    bench_env,
    lethe_cmd,
    median,
    print_table,
    run_timed,
    write_results,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

__all__ = ["main"]

ACCESS, SECRET, REGION = "bench-access", "bench-secret", "us-east-1"
GAP = 12.0  # seconds between the old and the new set
AWSCLI_VENV = CACHE_DIR / "awscli-venv"
MINIO = CACHE_DIR / "bin" / "minio"
#: What ``make bench`` builds (``GOBIN=.cache/bench/bin go install …``): the last
#: community source on the module proxy.
MINIO_MODULE = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
TOOLS = ("lethe", "rclone", "awscli", "boto3")
LABELS = {"lethe": "lethe apply", "lethe-base": "lethe apply (--lethe-base)",
          "rclone": "rclone delete --min-age",
          "rclone-servertime": "rclone delete --min-age --use-server-modtime",
          "awscli": "aws s3 rm --recursive", "boto3": "boto3 list + DeleteObjects"}


@dataclass(frozen=True)
class Server:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def client(self, pool: int = 10) -> S3Client:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=pool,
                          retries={"mode": "standard", "max_attempts": 5}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serving(cmd: list[str], *, env: dict[str, str], port: int, probe: str,
             name: str) -> Iterator[Server]:
    """Run ``cmd`` until the block ends; yield once ``probe`` (a path) answers."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(endpoint + probe, timeout=1):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer within 60s") from None
                time.sleep(0.2)
        yield Server(endpoint, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def moto_server() -> Iterator[Server]:
    """moto's server mode on a free loopback port (as tests/fixtures/s3.py does)."""
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with _serving([*cmd, "-H", "127.0.0.1", "-p", str(port)], env=env, port=port,
                  probe="/moto-api/", name="moto_server") as server:
        yield server


@contextlib.contextmanager
def minio_server() -> Iterator[Server]:
    """MinIO on a free loopback port, one drive in a temporary directory on disk
    (MinIO wants O_DIRECT, which tmpfs lacks)."""
    port = _free_port()
    data = tempfile.mkdtemp(prefix="lethe-minio-", dir=CACHE_DIR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MINIO_"))}
    env.update({"MINIO_ROOT_USER": ACCESS, "MINIO_ROOT_PASSWORD": SECRET,
                "MINIO_BROWSER": "off",
                # the per-API request counters without a token (requests_by_api)
                "MINIO_PROMETHEUS_AUTH_TYPE": "public"})
    try:
        with _serving([str(MINIO), "server", data, "--quiet", "--address",
                       f"127.0.0.1:{port}"], env=env, port=port,
                      probe="/minio/health/live", name="minio") as server:
            yield server
    finally:
        shutil.rmtree(data, ignore_errors=True)


def requests_by_api(server: Server) -> dict[str, int]:
    """MinIO's counters of S3 requests served since it started, by API name
    (``minio_api_requests_total{name=...}``, Prometheus text format)."""
    with urllib.request.urlopen(server.endpoint + "/minio/metrics/v3/api/requests",
                                timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("minio_api_requests_total{"):
            labels, _, value = line.rpartition(" ")
            name = labels.split('name="', 1)[1].split('"', 1)[0]
            out[name] = out.get(name, 0) + int(float(value))
    return out


def _keys(kind: str, n: int) -> list[str]:
    return [f"{kind}/d{i // 1000:03d}/obj{i:06d}.dat" for i in range(n)]


def populate(server: Server, bucket: str, n_old: int, n_new: int, threads: int, *,
             versioned: bool = False) -> tuple[float, float]:
    """Create ``bucket`` with the old set, pause, the new set; return (old end, new start)."""
    c = server.client(pool=threads * 2)
    c.create_bucket(Bucket=bucket)
    if versioned:
        c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def put(key: str) -> None:
        c.put_object(Bucket=bucket, Key=key, Body=b"%d\n" % len(key))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, _keys("old", n_old)))
        old_end = time.time()
        time.sleep(GAP)
        new_start = time.time()
        list(pool.map(put, _keys("new", n_new)))
    return old_end, new_start


def verify_and_drop(server: Server, bucket: str, n_new: int) -> tuple[int, int]:
    """Count survivors (old, new), ignoring lethe's ``.lethe/``; then delete the bucket."""
    c = server.client()
    old = new = 0
    left: list[str] = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            k = obj["Key"]
            left.append(k)
            old += k.startswith("old/")
            new += k.startswith("new/")
    # Every version and delete marker (a versioned bucket must be empty of them too).
    versions: list[ObjectIdentifierTypeDef] = []
    for vpage in c.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in [*vpage.get("Versions", []), *vpage.get("DeleteMarkers", [])]:
            versions.append({"Key": item["Key"], "VersionId": item["VersionId"]})
    for i in range(0, len(versions), 1000):
        c.delete_objects(Bucket=bucket, Delete={"Objects": versions[i:i + 1000], "Quiet": True})
    c.delete_bucket(Bucket=bucket)
    if old or new != n_new:
        raise RuntimeError(f"{bucket}: {old} old objects left (want 0), {new} new (want {n_new})")
    return old, new


def _min_age(old_end: float, new_start: float) -> int:
    """Seconds such that ``now - age`` falls just after the old set (2-3 s into the pause).

    Each tool takes its own "now" when it starts, later than this; the cutoff
    moves forward by that start-up delay, which must stay below ``GAP`` - 5 s.
    lethe's "now" is the server's ``Date`` header, whole seconds: it can read up
    to 1 s early, so a cutoff only 1 s after the old set once left the last
    objects of it (38 of 20,000, on MinIO) out of lethe's selection. The
    survivor check catches a miss.
    """
    assert new_start - old_end >= GAP
    return max(1, math.ceil(time.time() - (old_end + 3.0)))


def time_listing(server: Server, bucket: str) -> float:
    """Seconds for lethe's storage layer to list the whole bucket once, in this
    process: the part of ``lethe apply`` that comes before its first delete (the
    brakes see the whole plan first, I8), measured apart so the README can say
    what pipelining listing with deleting could save at most."""
    from lethe.spec import S3Target
    from lethe.storage.s3 import S3Storage

    store = S3Storage(S3Target(bucket=bucket, prefix="", endpoint=server.endpoint,
                               region=REGION, forcePathStyle=True),
                      access_key=ACCESS, secret_key=SECRET)
    try:
        t0 = time.perf_counter()
        n = sum(1 for _ in store.list())
        secs = time.perf_counter() - t0
    finally:
        store.close()
    print(f"  listing {n:,} objects alone: {secs:.2f}s")
    return secs


def run_lethe(server: Server, bucket: str, age: int, work: Path, *,
              src: Path | None = None) -> tuple[float, int]:
    doc = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": bucket, "namespace": "bench"},
           "spec": {"target": {"s3": {"bucket": bucket, "prefix": "", "endpoint": server.endpoint,
                                      "region": REGION, "forcePathStyle": True}},
                    "rules": {"maxAge": f"{age}s"}}}
    policy = work / f"{bucket}.yaml"
    policy.write_text(json.dumps(doc))
    env = bench_env({"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET})
    if src is not None:  # another commit's sources first (--lethe-base)
        env["PYTHONPATH"] = os.pathsep.join([str(src / "operator"), env["PYTHONPATH"]])
    r = run_timed([*lethe_cmd(), "apply", "-f", str(policy), "--output", "json",
                   "--state-dir", str(work / f"state-{bucket}")], env=env)
    report = json.loads(r.stdout)
    if report["result"] != "Succeeded":
        raise RuntimeError(f"lethe apply: {report}")
    counts = {k: report[k] for k in ("scanned", "matched", "deleted", "skipped_changed",
                                     "errors", "locked")}
    print(f"  lethe: {counts}")
    return r.seconds, int(report["deleted"])


def _rclone_env(server: Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({"RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint,
                "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS,
                "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET,
                "RCLONE_CONFIG_BENCH_REGION": REGION,
                "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
                "RCLONE_CONFIG": os.devnull})
    return env


def run_rclone(server: Server, bucket: str, age: int, *, server_time: bool = False) -> float:
    extra = ["--use-server-modtime"] if server_time else []
    return run_timed(["rclone", "delete", f"bench:{bucket}", "--min-age", f"{age}s", *extra],
                     env=_rclone_env(server)).seconds


def _aws() -> Path | None:
    """The aws CLI of its own venv, else one on PATH (never this venv's botocore)."""
    venv = AWSCLI_VENV / "bin" / "aws"
    if venv.exists():
        return venv
    found = shutil.which("aws")
    return Path(found) if found else None


def run_awscli(server: Server, bucket: str) -> float:
    aws = _aws()
    assert aws is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    return run_timed([str(aws), "s3", "rm", f"s3://{bucket}/", "--recursive",
                      "--exclude", "*", "--include", "old/*", "--only-show-errors",
                      "--endpoint-url", server.endpoint], env=env).seconds


def run_boto3(server: Server, bucket: str, age: int) -> float:
    return run_timed([sys.executable, "-m", "bench.s3_bench", "--boto3-loop", bucket,
                      server.endpoint, str(age)], env=bench_env()).seconds


def boto3_loop(bucket: str, endpoint: str, age: int) -> None:
    """The bare reference: paginate, filter by LastModified, DeleteObjects per 1,000."""
    c = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"}))
    cutoff = datetime.now(UTC).timestamp() - age
    batch: list[str] = []

    def flush() -> None:
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch],
                                                "Quiet": True})
        batch.clear()

    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if obj["LastModified"].timestamp() < cutoff:
                batch.append(obj["Key"])
                if len(batch) == 1000:
                    flush()
    if batch:
        flush()


def _tool_available(tool: str) -> str | None:
    if tool.startswith("rclone") and not shutil.which("rclone"):
        return "rclone not installed (apt-get install -y rclone)"
    if tool == "awscli" and _aws() is None:
        return f"aws CLI not installed ({AWSCLI_VENV}/bin/pip install awscli)"
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.s3_bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2,000 objects, 1 trial")
    ap.add_argument("--objects", type=int, default=None, help="objects to delete (20,000)")
    ap.add_argument("--keep", type=int, default=None, help="objects to keep (1,000)")
    ap.add_argument("--trials", type=int, default=None, help="rounds over all tools (1)")
    ap.add_argument("--threads", type=int, default=16, help="upload threads")
    ap.add_argument("--versioned", action="store_true", help="buckets with versioning enabled")
    ap.add_argument("--server", choices=("moto", "minio"), default="moto")
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help=f"comma-separated subset of {','.join(LABELS)}")
    ap.add_argument("--lethe-base", type=Path, default=None,
                    help="a source tree of another commit: adds the tool lethe-base")
    ap.add_argument("--boto3-loop", nargs=3, metavar=("BUCKET", "ENDPOINT", "AGE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.boto3_loop:
        boto3_loop(args.boto3_loop[0], args.boto3_loop[1], int(args.boto3_loop[2]))
        return {}
    if args.server == "minio" and not MINIO.exists():
        print(f"  skipping: {MINIO} not built (GOBIN={MINIO.parent} go install {MINIO_MODULE})")
        return {}
    if args.server == "minio" and not args.versioned:
        raise SystemExit("--server minio needs --versioned: MinIO honours no conditional "
                         "delete, so lethe refuses to delete from its unversioned buckets")
    n_old = args.objects or (2_000 if args.quick else 20_000)
    n_new = args.keep or (200 if args.quick else 1_000)
    trials = args.trials or 1
    tools = [t for t in args.tools.split(",") if t]
    if args.lethe_base is not None and "lethe-base" not in tools:
        tools.append("lethe-base")
    if "lethe-base" in tools and args.lethe_base is None:
        raise SystemExit("the tool lethe-base needs --lethe-base DIR")
    skipped = {t: why for t in tools if (why := _tool_available(t))}
    for t, why in skipped.items():
        print(f"  skipping {t}: {why}")
    tools = [t for t in tools if t not in skipped]
    runs: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="lethe-s3bench-"))
    runners: dict[str, Callable[[Server, str, int], float]] = {
        "rclone": lambda s, b, a: run_rclone(s, b, a),
        "rclone-servertime": lambda s, b, a: run_rclone(s, b, a, server_time=True),
        "awscli": lambda s, b, _a: run_awscli(s, b),
        "boto3": run_boto3,
    }
    try:
        with (minio_server() if args.server == "minio" else moto_server()) as server:
            for t in range(trials):
                order = tools[t % len(tools):] + tools[:t % len(tools)]
                for tool in order:
                    bucket = f"bench-{tool}-{t}-{int(time.time())}"
                    t0 = time.perf_counter()
                    old_end, new_start = populate(server, bucket, n_old, n_new, args.threads,
                                                  versioned=args.versioned)
                    pop_s = time.perf_counter() - t0
                    age = _min_age(old_end, new_start)
                    list_s = time_listing(server, bucket) if tool == "lethe" else None
                    load = round(os.getloadavg()[0], 2)
                    before = requests_by_api(server) if args.server == "minio" else None
                    if tool in ("lethe", "lethe-base"):
                        secs, deleted = run_lethe(
                            server, bucket, age, work,
                            src=args.lethe_base if tool == "lethe-base" else None)
                        if deleted != n_old:
                            raise RuntimeError(f"lethe deleted {deleted}, expected {n_old}")
                    else:
                        secs = runners[tool](server, bucket, age)
                    sent: dict[str, int] | None = None
                    if before is not None:
                        after = requests_by_api(server)
                        sent = {k: v - before.get(k, 0) for k, v in sorted(after.items())
                                if v - before.get(k, 0)}
                    verify_and_drop(server, bucket, n_new)
                    per_obj = None if sent is None else sum(sent.values()) / n_old
                    runs.append({"trial": t + 1, "tool": tool, "seconds": secs,
                                 "objects_per_s": n_old / secs, "min_age_s": age,
                                 "populate_s": pop_s, "loadavg": load,
                                 "requests": sent, "requests_per_object": per_obj,
                                 "listing_alone_s": list_s})
                    print(f"  trial {t + 1}/{trials} {tool:<18} {secs:7.2f}s  "
                          f"{n_old / secs:8.1f} obj/s  (populate {pop_s:.0f}s, age {age}s, "
                          f"load {load})"
                          + ("" if sent is None else
                             f"  {per_obj:.4f} requests/object {sent}"))
                    sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {tool: median([r["seconds"] for r in runs if r["tool"] == tool]) for tool in tools}
    rate = {tool: n_old / s for tool, s in med.items()}
    lethe_rate = rate.get("lethe")
    per_object: dict[str, float | None] = {}
    for tool in tools:
        counted = [r["requests_per_object"] for r in runs
                   if r["tool"] == tool and r["requests_per_object"] is not None]
        per_object[tool] = median(counted) if counted else None
    rows = []
    for tool in tools:
        vs = lethe_rate / rate[tool] if lethe_rate and tool != "lethe" else None
        rpo = per_object[tool]
        rows.append([LABELS[tool], med[tool], round(rate[tool], 1),
                     "-" if vs is None else f"{vs:.2f}x",
                     "-" if rpo is None else f"{rpo:.4f}"])
    kind = "versioned buckets" if args.versioned else "unversioned buckets"
    print_table(f"S3 ({args.server}, loopback, {kind}): delete {n_old:,} of "
                f"{n_old + n_new:,} objects; {trials} trial(s)",
                ["tool", "median s", "objects/s", "lethe speed-up", "requests/object"], rows)
    # issue 16 set the MinIO targets; issue 3's stay for moto
    targets = {"rclone": 4.0, "awscli": 8.0} if args.server == "minio" else \
        {"rclone": 3.0, "awscli": 5.0}
    met: dict[str, bool] = {}
    for tool, want in targets.items():
        if lethe_rate and tool in rate:
            got = lethe_rate / rate[tool]
            met[tool] = got >= want
            print(f"  lethe vs {tool}: {got:.2f}x objects/s (target >= {want:.0f}x: "
                  f"{'met' if got >= want else 'MISSED'})")
    result = {"objects_deleted": n_old, "objects_kept": n_new, "trials": trials, "runs": runs,
              "median_seconds": med, "objects_per_s": rate, "targets": targets,
              "requests_per_object": per_object,
              "target_met": met, "skipped_tools": skipped, "versioned": args.versioned,
              "server": args.server}
    name = "s3" + ("-minio" if args.server == "minio" else "") + (
        "-versioned" if args.versioned else "") + ("-quick" if args.quick else "")
    write_results(name, result)
    return result


if __name__ == "__main__":
    main()
