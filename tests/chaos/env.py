"""What a chaos run shares across trials: the API server, moto, identities; and
per trial three replicas whose Raft links go through proxies the nemesis cuts."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.kube import KubeCluster, _LocalCluster
from tests.fixtures.ports import free_port
from tests.fixtures.replicas import LocalReplicas, Replica
from tests.fixtures.s3 import S3Server, _moto_command, _wait_ready
from tests.operator.conftest import NS, render_rbac, sa_kubeconfig
from tests.raft.proxy import LinkProxy

ROOT = Path(__file__).resolve().parents[2]


class Shared:
    """One control plane, one moto server and three operator identities per chaos run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._cluster = _LocalCluster()
        self._moto: subprocess.Popen[bytes] | None = None
        self.kube: KubeCluster | None = None
        self.s3: S3Server | None = None
        self.identities: list[str] = []

    def start(self) -> None:
        kube = self.kube = self._cluster.start()
        kube.kubectl("apply", "-f", str(ROOT / "crds"))
        for attempt in range(3):  # kubectl wait errors out if asked before .status exists
            out = kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                               "crd/retentionpolicies.lethe.io", "crd/cleanupjobs.lethe.io",
                               check=attempt == 2)
            if out.returncode == 0:
                break
            time.sleep(2)
        kube.kubectl("create", "namespace", NS, check=False)
        names = [f"lethe-op-{i}" for i in range(3)]
        for n in names:
            kube.kubectl("create", "serviceaccount", n, "-n", NS, check=False)
        for o in render_rbac():
            if o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
                o["subjects"] = [{"kind": "ServiceAccount", "name": n, "namespace": NS}
                                 for n in names]
            kube.apply(o)
        self.identities = [sa_kubeconfig(kube, sa=n, path=self.workdir / f"{n}.kubeconfig")
                           for n in names]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._moto = subprocess.Popen(_moto_command(port), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env=env)
        self.s3 = S3Server(endpoint=f"http://127.0.0.1:{port}")
        _wait_ready(self.s3.endpoint, self._moto)

    def stop(self) -> None:
        if self._moto is not None:
            self._moto.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._moto.wait(timeout=10)
        self._cluster.stop()


class ChaosReplicas(LocalReplicas):
    """LocalReplicas whose Raft traffic i→j goes through a LinkProxy per ordered pair."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.proxies: dict[tuple[int, int], LinkProxy] = {}
        for a in self.replicas:
            for b in self.replicas:
                if a is not b:
                    self.proxies[(a.index, b.index)] = LinkProxy(
                        listen=("127.0.0.1", 0), target=(b.host, b.raft_port))

    def _env(self, r: Replica) -> dict[str, str]:
        env = super()._env(r)
        env["LETHE_CHAOS_DIAL"] = ",".join(
            f"{o.raft_address}={self.proxies[(r.index, o.index)].address}"
            for o in self.replicas if o is not r)
        return env

    def _command(self) -> list[str]:
        return [self.python, "-m", "tests.chaos.shim"]

    def isolate(self, index: int) -> None:
        for (a, b), p in self.proxies.items():
            if index in (a, b):
                p.cut()

    def heal(self) -> None:
        for p in self.proxies.values():
            p.heal()

    def close(self) -> None:
        self.stop()
        for p in self.proxies.values():
            p.close()


def new_replicas(shared: Shared, workdir: Path, *, data_root: Path,
                 namespace: str, pause_at: str = "") -> ChaosReplicas:
    """``pause_at`` (``rename:N``, ``s3-delete:N`` or ``ledger:N``): the first replica
    to reach that step SIGSTOPs itself there, once per trial (see
    lethe.storage.pausepoint); the nemesis wakes it (:meth:`Nemesis.timed_pause`)."""
    env = {"LETHE_ALLOWED_ROOTS": str(data_root), "LETHE_LOG_FORMAT": "json",
           "LETHE_TICK_SECONDS": "0.5", "LETHE_STARTING_DEADLINE_SECONDS": "120"}
    if pause_at:
        env["LETHE_TEST_PAUSE_AT"] = pause_at
        env["LETHE_TEST_PAUSE_ONCE"] = str(workdir / "paused-once")
    return ChaosReplicas(
        count=3, workdir=workdir, kubeconfigs=shared.identities,
        password=secrets.token_hex(16), python=sys.executable, env=env)
