"""Local operator replicas as real processes: ``make run`` and the end-to-end tests.

Each replica is ``lethe run`` in its own process with its own loopback address
(127.0.0.2, .3, …) for Raft and HTTP, its own data directory and its own
kubeconfig, exactly as a pod of the StatefulSet would be, minus the kubelet.

Two layouts. By default each replica gets ``LETHE_RAFT_SELF``/``LETHE_RAFT_PEERS``
(loopback addresses). With ``statefulset=True`` they are configured as the
chart configures pods: ``POD_NAME=lethe-<i>``, ``LETHE_RAFT_REPLICAS`` (the
seed) and ``LETHE_RAFT_SERVICE``, so their Raft identities are
``lethe-<i>.lethe-raft.lethe-system.svc:7000``; ``python -m lethe.devenv``
then dials each name at its replica's loopback port through the product's
test hook (:func:`lethe.raft.discovery.set_dial_overrides`, ``LETHE_TEST_DIAL``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
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
    """A port free now, below the kernel's ephemeral range.

    A replica restarts on its ports (its Raft address is its identity). A port
    from the ephemeral range may meanwhile be the source port of any outgoing
    connection on that address, and the replica's bind then fails until that
    connection closes (chaos trials 10503 and 10615 stalled so).
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
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


#: StatefulSet layout: the names the chart gives (release ``lethe``).
STS_NAMESPACE = "lethe-system"
STS_SERVICE = "lethe-raft"
STS_RAFT_PORT = 7000


class LocalReplicas:
    """``count`` replicas (not started). ``statefulset=True``: the chart's layout
    (see the module doc); ``raft_replicas`` is the ``LETHE_RAFT_REPLICAS`` given to
    replicas started from then on (change it to play ``helm upgrade``)."""

    def __init__(self, *, count: int, workdir: Path, kubeconfigs: Sequence[str],
                 password: str, env: Mapping[str, str] | None = None,
                 python: str = sys.executable, statefulset: bool = False,
                 raft_replicas: int | None = None) -> None:
        self.workdir = workdir
        self.password = password
        self.env = dict(env or {})
        self.python = python
        self.statefulset = statefulset
        self.raft_replicas = count if raft_replicas is None else raft_replicas
        self.replicas: list[Replica] = []
        for i in range(count):
            host = f"127.0.0.{2 + i}"
            d = workdir / f"lethe-{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.replicas.append(Replica(
                index=i, name=f"lethe-{i}", host=host, raft_port=_free_port(host),
                http_port=_free_port(host), data_dir=d / "data", log_path=d / "operator.log",
                kubeconfig=kubeconfigs[i % len(kubeconfigs)]))

    def identity(self, r: Replica) -> str:
        """``r``'s Raft identity (what ``/raft`` calls it)."""
        if self.statefulset:
            return f"{r.name}.{STS_SERVICE}.{STS_NAMESPACE}.svc:{STS_RAFT_PORT}"
        return r.raft_address

    def _env(self, r: Replica) -> dict[str, str]:
        src = Path(__file__).resolve().parents[1]
        env = {
            **os.environ, **self.env,
            "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "POD_NAME": r.name, "POD_NAMESPACE": STS_NAMESPACE,
            "KUBECONFIG": r.kubeconfig,
            "LETHE_RAFT_PASSWORD": self.password,
            "LETHE_HTTP_HOST": r.host, "LETHE_HTTP_PORT": str(r.http_port),
            "LETHE_DATA_DIR": str(r.data_dir),
        }
        if self.statefulset:
            env.update({
                "LETHE_RAFT_SERVICE": STS_SERVICE, "LETHE_RAFT_PORT": str(STS_RAFT_PORT),
                "LETHE_RAFT_REPLICAS": str(self.raft_replicas),
                "LETHE_RAFT_BIND": r.raft_address,
                "LETHE_TEST_DIAL": ",".join(f"{self.identity(o)}={o.raft_address}"
                                              for o in self.replicas),
            })
        else:
            env.update({
                "LETHE_RAFT_SELF": r.raft_address,
                "LETHE_RAFT_PEERS": ",".join(o.raft_address for o in self.replicas
                                             if o is not r),
            })
        return env

    def start(self, index: int | None = None) -> None:
        for r in self.replicas if index is None else [self.replicas[index]]:
            if r.alive():
                continue
            r.data_dir.mkdir(parents=True, exist_ok=True)
            r._log = open(r.log_path, "ab")  # noqa: SIM115  (kept open for the process)
            module = "lethe.devenv" if self.statefulset else "lethe.cli.main"
            r.proc = subprocess.Popen(
                [self.python, "-m", module, "run"], env=self._env(r),
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

    def wait_ready(self, *, timeout: float = 60.0, indexes: Sequence[int] | None = None
                   ) -> None:
        """Wait until every replica (or those in ``indexes``) answers ``/readyz`` with 200.

        Every replica counts, not only those alive at the call: a replica that was
        never started or has exited fails at once. Raises RuntimeError naming the
        dead replica with the last 3,000 characters of its log, TimeoutError
        naming those still not ready after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        chosen = self.replicas if indexes is None else [self.replicas[i] for i in indexes]
        pending = list(chosen)
        while True:
            for r in chosen:  # also those already ready: all must stay up
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


def _run_dialled() -> int:
    """``python -m lethe.devenv run``: ``lethe run`` dialling each Raft identity in
    ``LETHE_TEST_DIAL`` (``name=host:port,…``) at a loopback port instead of
    resolving it (StatefulSet layout without a cluster DNS; tests only)."""
    from lethe.cli.main import main
    from lethe.raft.discovery import set_dial_overrides

    pairs = (item.partition("=") for item in
             filter(None, os.environ.get("LETHE_TEST_DIAL", "").split(",")))
    set_dial_overrides({name: dial for name, _, dial in pairs})
    return int(main(sys.argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(_run_dialled())
