"""Real Raft processes on 127.0.0.x loopback, driven over their test HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ports import free_port
from tests.raft.proxy import LinkProxy

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "test-raft-password-0123456789"


class Cluster:
    """Up to 9 members; member ``i`` lives on 127.0.0.(i+1)."""

    def __init__(self, tmp: Path, *, proxied: bool = False) -> None:
        self.tmp = tmp
        self.proxied = proxied
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.raft: dict[int, str] = {}
        self.http: dict[int, str] = {}
        self.proxies: dict[tuple[int, int], LinkProxy] = {}
        self.password_file = tmp / "raft-password"
        self.password_file.write_text(PASSWORD + "\n")

    def define(self, n: int) -> None:
        for i in range(n):
            if i not in self.raft:
                host = f"127.0.0.{i + 1}"
                self.raft[i] = f"{host}:{free_port(host)}"
                self.http[i] = f"{host}:{free_port(host)}"

    def data_dir(self, i: int) -> Path:
        return self.tmp / f"node{i}"

    def _dial_args(self, i: int, members: list[int]) -> list[str]:
        if not self.proxied:
            return []
        args = []
        for j in members:
            if j == i:
                continue
            if (i, j) not in self.proxies:
                host, port = self.raft[j].rsplit(":", 1)
                self.proxies[(i, j)] = LinkProxy(listen=("127.0.0.1", 0),
                                                 target=(host, int(port)))
            args += ["--dial", f"{self.raft[j]}={self.proxies[(i, j)].address}"]
        return args

    def start(self, i: int, *, peers: list[int], join: bool = False,
              extra: list[str] | None = None, password: bool = True,
              http: str | None = None, log_name: str | None = None) -> subprocess.Popen[bytes]:
        """Start member ``i``; ``http`` and ``log_name`` start a second process of the
        same member (same address and data directory) beside the tracked one."""
        self.define(max([i, *peers]) + 1)
        cmd = [sys.executable, "-m", "lethe.raft", "--self", self.raft[i],
               "--peers", ",".join(self.raft[p] for p in peers if p != i),
               "--data-dir", str(self.data_dir(i)), "--http", http or self.http[i],
               "--allow-unfenced", "--leave-on-term",
               *self._dial_args(i, sorted({i, *peers}))]
        if password:
            cmd += ["--password-file", str(self.password_file)]
        if join:
            cmd.append("--join")
        cmd += extra or []
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'operator'}"}
        env.pop("LETHE_RAFT_PASSWORD", None)
        env.pop("LETHE_INSECURE_DEV_RAFT", None)
        log = open(self.tmp / (log_name or f"node{i}.log"), "ab")  # noqa: SIM115 (the process's)
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=ROOT)
        if http is None:
            self.procs[i] = proc
        return proc

    def start_all(self, n: int) -> None:
        self.define(n)
        for i in range(n):
            self.start(i, peers=list(range(n)))

    def log(self, i: int) -> str:
        return (self.tmp / f"node{i}.log").read_text(errors="replace")

    def signal(self, i: int, sig: int) -> None:
        self.procs[i].send_signal(sig)

    def kill(self, i: int) -> None:
        proc = self.procs.pop(i)
        proc.kill()
        proc.wait(timeout=10)

    def terminate(self, i: int, timeout: float = 30.0) -> int:
        proc = self.procs.pop(i)
        proc.terminate()
        return proc.wait(timeout=timeout)

    def wipe(self, i: int) -> None:
        shutil.rmtree(self.data_dir(i), ignore_errors=True)

    # -- HTTP --------------------------------------------------------------------------

    def get(self, i: int, path: str, timeout: float = 2.0) -> Any:
        with urllib.request.urlopen(f"http://{self.http[i]}{path}", timeout=timeout) as r:
            return json.loads(r.read())

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            return dict(self.get(i, "/raft"))
        except (OSError, ValueError):
            return None

    def post(self, i: int, path: str, body: dict[str, Any],
             timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(f"http://{self.http[i]}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def leader(self, among: list[int] | None = None) -> int | None:
        """The member that holds a valid lease, if exactly one does."""
        holders = []
        for i in among if among is not None else list(self.procs):
            st = self.status(i)
            if st is not None and st["state"] == "leader" and st["lease_valid"]:
                holders.append(i)
        return holders[0] if len(holders) == 1 else None

    def wait_leader(self, *, timeout: float = 20.0, among: list[int] | None = None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader(among)
            if leader is not None:
                return leader
            time.sleep(0.1)
        raise AssertionError(f"no leader within {timeout}s: "
                             f"{[self.status(i) for i in (among or list(self.procs))]}")

    def commit(self, body: dict[str, Any], *, timeout: float = 30.0,
               among: list[int] | None = None) -> tuple[int, dict[str, Any]]:
        """Commit through whoever leads; retry NotLeader/JournalError until ``timeout``.

        Returns (leader, response) of the first answer that is not a leadership
        problem (an index, or a state-machine rejection).
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            leader = self.leader(among)
            if leader is not None:
                try:
                    code, resp = self.post(leader, "/commit", body)
                except OSError as exc:
                    code, resp = 0, {"error": str(exc)}
                last = resp
                if code == 200 or resp.get("type") == "JournalRejected":
                    return leader, resp
            time.sleep(0.1)
        raise AssertionError(f"could not commit {body} within {timeout}s: {last}")

    def wait_for(self, cond: Any, *, timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                if cond():
                    return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or cond}")

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()
        for p in self.proxies.values():
            p.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def proxied_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, proxied=True)
    try:
        yield c
    finally:
        c.close()
