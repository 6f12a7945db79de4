"""The opt-in kind suite: the Helm chart on a real (kind) cluster, three replicas.

Needs Docker, ``kind`` (pytest-kind downloads it), ``helm`` (``.cache/bin/helm`` or
on ``PATH``) and ``pip install pytest-kind==22.11.1`` (``.[kind]``). It is
**deselected** (not skipped: it is not counted) unless ``-m kind`` or ``LETHE_KIND=1``
is given. Nothing is built or loaded: the operator image must already be in the
cluster (``kind load docker-image``) or pullable. See docs/testing.md.

Environment:

* ``LETHE_KIND_IMAGE`` — the image, ``repository:tag`` (default the chart's:
  ``ghcr.io/lethe-io/lethe:0.1.0``).
* ``LETHE_KIND_CLUSTER`` — kind cluster name (default ``lethe-kind``); an existing
  cluster of that name is reused (it must have been created with the same
  ``extraMounts``, see :func:`kind_config`).
* ``LETHE_KIND_DATA`` — host directory shared into the node as the "NFS" export
  (default ``/tmp/lethe-kind-data``).
* ``LETHE_KIND_DELETE=1`` — delete the cluster afterwards (default: keep it, since
  the image was loaded into it by hand).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.waiting import wait_for as shared_wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART = REPO / "charts" / "lethe"
CLUSTER = os.environ.get("LETHE_KIND_CLUSTER", "lethe-kind")
IMAGE = os.environ.get("LETHE_KIND_IMAGE", "ghcr.io/lethe-io/lethe:0.1.0")
DATA_HOST = Path(os.environ.get("LETHE_KIND_DATA", "/tmp/lethe-kind-data"))
DATA_NODE = "/lethe-data"  # the host directory, inside the kind node
MOUNT = "/data"  # ... inside the operator pods (config.allowedRoots)
NS = "lethe-system"
RELEASE = "lethe"
HTTP_PORT = 8080
SELECTOR = f"app.kubernetes.io/name=lethe,app.kubernetes.io/instance={RELEASE}"


# -- opt-in: deselect unless asked for ----------------------------------------------


def kind_requested(config: pytest.Config) -> bool:
    """``LETHE_KIND=1``, or a ``-m`` expression that selects ``kind`` (not ``not kind``)."""
    if os.environ.get("LETHE_KIND") == "1":
        return True
    expr = str(config.getoption("markexpr", "") or "")
    return re.search(r"(?<!not )\bkind\b", expr) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if kind_requested(config):
        return
    mine = [i for i in items if i.path.is_relative_to(HERE)]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if not i.path.is_relative_to(HERE)]


# -- the cluster ----------------------------------------------------------------------


def kind_config() -> dict[str, Any]:
    """One node; the host's DATA_HOST appears in it as DATA_NODE (our stand-in for NFS:
    every pod mounts the same directory, as every pod would mount the same export)."""
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
            "nodes": [{"role": "control-plane",
                       "extraMounts": [{"hostPath": str(DATA_HOST),
                                        "containerPath": DATA_NODE}]}]}


def wait_for(cond: Callable[[], Any], *, timeout: float, what: str,
             interval: float = 2.0) -> Any:
    """Kubernetes on kind moves slowly: poll every 2 s."""
    return shared_wait_for(cond, timeout=timeout, what=what, interval=interval)


@dataclass
class Kind:
    """A kind cluster (pytest-kind's KindCluster) plus helm, and Lethe-specific probes."""

    cluster: Any  # pytest_kind.KindCluster (untyped)
    helm_bin: str

    @property
    def kubeconfig(self) -> str:
        return str(self.cluster.kubeconfig_path)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        # pytest-kind: subprocess.check_output with KUBECONFIG set; raises on failure.
        return str(self.cluster.kubectl(*args, input=input))

    def try_kubectl(self, *args: str) -> str | None:
        try:
            return str(self.cluster.kubectl(*args, stderr=subprocess.DEVNULL))
        except subprocess.CalledProcessError:
            return None

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))

    def get(self, kind: str, name: str, ns: str) -> dict[str, Any] | None:
        out = self.try_kubectl("get", kind, name, "-n", ns, "-o", "json")
        return json.loads(out) if out else None

    def helm(self, *args: str, timeout: float = 900) -> str:
        proc = subprocess.run([self.helm_bin, "--kubeconfig", self.kubeconfig, *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}\n"
                                 f"{self.diagnose()}")
        return proc.stdout

    def pods(self) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-n", NS, "-l", SELECTOR, "-o", "json")
        return list(json.loads(out)["items"])

    def ready_pods(self) -> list[str]:
        return sorted(
            p["metadata"]["name"] for p in self.pods()
            if not p["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []))

    def raft(self, pod: str) -> dict[str, Any] | None:
        """The pod's /raft document, through the API server's pod proxy."""
        out = self.try_kubectl("get", "--raw",
                               f"/api/v1/namespaces/{NS}/pods/{pod}:{HTTP_PORT}/proxy/raft")
        try:
            return json.loads(out) if out else None
        except ValueError:
            return None

    def leader(self) -> str | None:
        """The one pod whose Raft lease is valid, if exactly one claims it."""
        leaders = [p["metadata"]["name"] for p in self.pods()
                   if not p["metadata"].get("deletionTimestamp")
                   and (st := self.raft(p["metadata"]["name"])) and st.get("lease_valid")]
        return leaders[0] if len(leaders) == 1 else None

    def members(self, pod: str) -> int | None:
        """Raft membership size as ``pod`` sees it (itself + its peers)."""
        st = self.raft(pod)
        return None if st is None else 1 + len(st.get("peers") or [])

    def logs(self, pod: str) -> str:
        return self.try_kubectl("logs", pod, "-n", NS, "-c", "lethe") or ""

    def diagnose(self) -> str:
        """What went wrong with the pods (an image that is not there, most often)."""
        out = self.try_kubectl("describe", "pods", "-n", NS, "-l", SELECTOR) or ""
        hint = ""
        if "ErrImagePull" in out or "ImagePullBackOff" in out:
            hint = (f"\nThe image {IMAGE} is not in the cluster: build it and run "
                    f"`kind load docker-image {IMAGE} --name {CLUSTER}` (docs/testing.md).")
        return out[-6000:] + hint


@pytest.fixture(scope="session")
def kind() -> Iterator[Kind]:
    pytest_kind = pytest.importorskip(
        "pytest_kind", reason="the kind suite needs `pip install pytest-kind==22.11.1`")
    helm = str(REPO / ".cache" / "bin" / "helm")
    if not os.access(helm, os.X_OK):
        helm = shutil.which("helm") or pytest.fail("helm not found (.cache/bin or PATH)")
    DATA_HOST.mkdir(parents=True, exist_ok=True)
    DATA_HOST.chmod(0o777)  # the operator runs as uid 65532
    config = DATA_HOST / f".kind-{CLUSTER}.yaml"
    config.write_text(yaml.safe_dump(kind_config()))
    cluster = pytest_kind.KindCluster(CLUSTER)
    cluster.create(config_file=config)  # reuses an existing cluster of that name
    try:
        yield Kind(cluster=cluster, helm_bin=helm)
    finally:
        if os.environ.get("LETHE_KIND_DELETE") == "1":
            cluster.delete()
