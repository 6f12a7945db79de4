"""Local operator replicas as real processes: ``make run`` and the end-to-end tests.

Each replica is ``lethe run`` in its own process with its own loopback address
(127.0.0.2, .3, …) for Raft and HTTP, its own data directory and its own
kubeconfig, exactly as a pod of the StatefulSet would be, minus the kubelet.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["LocalReplicas", "Replica"]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    index: int
    name: str
    host: str
    raft_port: int
    http_port: int
    data_dir: Path
    log_path: Path
    kubeconfig: str
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def raft_address(self) -> str:
        return f"{self.host}:{self.raft_port}"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def get(self, path: str, *, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=timeout) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()
        except OSError as e:
            return 0, str(e)

    def raft(self) -> dict[str, Any] | None:
        code, body = self.get("/raft")
        return json.loads(body) if code == 200 else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalReplicas:
    def __init__(self, *, count: int, workdir: Path, kubeconfigs: Sequence[str],
                 password: str, env: Mapping[str, str] | None = None,
                 python: str = sys.executable) -> None:
        self.workdir = workdir
        self.password = password
        self.env = dict(env or {})
        self.python = python
        self.replicas: list[Replica] = []
        for i in range(count):
            host = f"127.0.0.{2 + i}"
            d = workdir / f"lethe-{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.replicas.append(Replica(
                index=i, name=f"lethe-{i}", host=host, raft_port=_free_port(host),
                http_port=_free_port(host), data_dir=d / "data", log_path=d / "operator.log",
                kubeconfig=kubeconfigs[i % len(kubeconfigs)]))

    def _env(self, r: Replica) -> dict[str, str]:
        peers = ",".join(o.raft_address for o in self.replicas if o is not r)
        src = Path(__file__).resolve().parents[1]
        return {
            **os.environ, **self.env,
            "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "POD_NAME": r.name, "POD_NAMESPACE": "lethe-system",
            "KUBECONFIG": r.kubeconfig,
            "LETHE_RAFT_SELF": r.raft_address, "LETHE_RAFT_PEERS": peers,
            "LETHE_RAFT_PASSWORD": self.password,
            "LETHE_HTTP_HOST": r.host, "LETHE_HTTP_PORT": str(r.http_port),
            "LETHE_DATA_DIR": str(r.data_dir),
        }

    def start(self, index: int | None = None) -> None:
        for r in self.replicas if index is None else [self.replicas[index]]:
            if r.alive():
                continue
            r.data_dir.mkdir(parents=True, exist_ok=True)
            r._log = open(r.log_path, "ab")  # noqa: SIM115  (kept open for the process)
            r.proc = subprocess.Popen(
                [self.python, "-m", "lethe.cli.main", "run"], env=self._env(r),
                stdout=r._log, stderr=subprocess.STDOUT, start_new_session=True)

    def signal(self, index: int, sig: int) -> None:
        r = self.replicas[index]
        if r.proc is not None and r.proc.poll() is None:
            os.kill(r.proc.pid, sig)

    def kill(self, index: int) -> None:
        self.signal(index, signal.SIGKILL)
        r = self.replicas[index]
        if r.proc is not None:
            r.proc.wait(timeout=10)

    def stop(self, index: int | None = None, *, timeout: float = 15.0) -> None:
        targets = self.replicas if index is None else [self.replicas[index]]
        for r in targets:
            if r.proc is not None and r.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(r.proc.pid, signal.SIGCONT)
                    os.kill(r.proc.pid, signal.SIGTERM)
        for r in targets:
            if r.proc is not None:
                try:
                    r.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait(timeout=5)
            if r._log is not None:
                r._log.close()
                r._log = None

    def leader(self) -> Replica | None:
        """The replica whose lease is valid right now, if exactly one claims it."""
        leaders = [r for r in self.replicas if r.alive()
                   and (st := r.raft()) is not None and st.get("lease_valid")]
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(self, *, timeout: float = 30.0,
                    exclude: Replica | None = None) -> Replica:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.leader()
            if r is not None and r is not exclude:
                return r
            time.sleep(0.2)
        raise TimeoutError(f"no Raft leader among local replicas within {timeout:.0f}s; "
                           f"logs in {self.workdir}")

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        """Wait until every replica answers ``/readyz`` with 200.

        Every replica counts, not only those alive at the call: a replica that was
        never started or has exited fails at once. Raises RuntimeError naming the
        dead replica with the last 3,000 characters of its log, TimeoutError
        naming those still not ready after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        pending = list(self.replicas)
        while True:
            for r in self.replicas:  # also those already ready: all must stay up
                if not r.alive():
                    code = "never started" if r.proc is None else f"exit {r.proc.returncode}"
                    tail = r.log_path.read_text(errors="replace")[-3000:] \
                        if r.log_path.exists() else "(no log)"
                    raise RuntimeError(f"replica {r.name} is not running ({code}); "
                                       f"{r.log_path} ends:\n{tail}")
            pending = [r for r in pending if r.get("/readyz")[0] != 200]
            if not pending:
                return
            if time.monotonic() >= deadline:
                said = "; ".join(f"{r.name}: {r.get('/readyz')[1].strip()[:300]!r}"
                                 for r in pending)
                raise TimeoutError(f"replicas {[r.name for r in pending]} not ready in "
                                   f"{timeout:.0f}s ({said}); logs in {self.workdir}")
            time.sleep(0.3)
