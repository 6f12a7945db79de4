"""The operator image as built by `make image` (scripts/image.sh): it runs as a non-root
uid on a read-only root filesystem, answers `lethe run --help`, and a one-node Raft
cluster started from it with a password becomes ready against a real API server.

Needs the Docker daemon that built the image (scripts/image.sh leaves the one it
started running until `scripts/node-cluster.sh down`); skipped without it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import IMAGE, REPO, Cluster, wait_for

pytestmark = pytest.mark.e2e

DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "")
UID = "65532"


def docker(*args: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module", autouse=True)
def image() -> None:
    if not DOCKER or docker("version", check=False).returncode != 0:
        pytest.skip("no Docker daemon answers (make image starts one)")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.skip(f"image {IMAGE} is not in Docker: run make image")


def test_image_runs_as_non_root_on_a_read_only_root() -> None:
    cfg = json.loads(docker("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert cfg["User"] == f"{UID}:{UID}", cfg["User"]
    out = docker("run", "--rm", "--read-only", "--entrypoint", "id", IMAGE).stdout
    assert out.startswith(f"uid={UID}(lethe) gid={UID}(lethe)"), out
    # The root filesystem needs no write: nothing at run time writes outside /tmp.
    probe = docker("run", "--rm", "--read-only", "--entrypoint", "python3", IMAGE, "-c",
                   "import lethe, pathlib; pathlib.Path('/opt/x').touch()", check=False)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe


def test_lethe_run_help() -> None:
    proc = docker("run", "--rm", "--read-only", IMAGE, "--help")
    assert "usage: lethe run" in proc.stdout, proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def one_node(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A container of the image on the host network: one Raft node, a password from a
    mounted file, the cluster's API through its kubeconfig."""
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    secret = tmp_path / "password"
    secret.write_text(uuid.uuid4().hex + "\n")
    secret.chmod(0o444)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(Path(cluster.kubeconfig).read_text())
    kubeconfig.chmod(0o444)
    http, raft = _free_port(), _free_port()
    name = f"lethe-image-{uuid.uuid4().hex[:6]}"
    docker("run", "-d", "--name", name, "--read-only", "--network", "host",
           "--tmpfs", "/tmp", "--tmpfs", f"/var/lib/lethe:uid={UID},gid={UID}",
           "-v", f"{secret}:/etc/lethe/raft/password:ro",
           "-v", f"{kubeconfig}:/etc/lethe/kubeconfig:ro",
           "-e", "KUBECONFIG=/etc/lethe/kubeconfig",
           "-e", "LETHE_RAFT_PASSWORD_FILE=/etc/lethe/raft/password",
           "-e", f"LETHE_RAFT_SELF=127.0.0.1:{raft}", "-e", "LETHE_HTTP_HOST=127.0.0.1",
           "-e", f"LETHE_HTTP_PORT={http}", "-e", f"POD_NAME={name}",
           "-e", "LETHE_LOG_FORMAT=text", IMAGE)
    try:
        yield name, http
    finally:
        docker("rm", "-f", name, check=False)


def test_one_node_start_with_a_password(one_node: tuple[str, int]) -> None:
    name, http = one_node

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, timeout=120, what="the container's /readyz")
    except Exception:
        print(docker("logs", name, check=False).stderr[-4000:])
        raise
    def raft() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/raft", timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]

    # Polled: a tick that ran late voids the lease until the next heartbeat round
    # (it was void at the one moment read, at load ~20).
    st = wait_for(lambda: (s := raft()).get("lease_valid") and s, timeout=30,
                  what="a valid lease on the one node")
    assert not st.get("peers"), st
    # SIGTERM (docker stop): it leaves cleanly and quickly.
    start = time.monotonic()
    docker("stop", "--time", "30", name)
    took = time.monotonic() - start
    code = json.loads(docker("inspect", name).stdout)[0]["State"]["ExitCode"]
    assert code == 0 and took < 30, (code, took, docker("logs", name).stderr[-2000:])
