"""The end-to-end suite: the image and the Helm chart on a real cluster, three pods.

The test bodies do not depend on how the cluster was made. ``LETHE_E2E_CLUSTER``:

* ``node`` (default): the project's one-node cluster on this machine
  (``scripts/node-cluster.sh up``, started here if it is not running; ``make e2e``
  builds the image and the binaries first and stops the cluster afterwards).
* ``kind``: a kind cluster through pytest-kind (``pip install pytest-kind==22.11.1``,
  Docker, a registry or ``kind load docker-image``).
* ``kubeconfig``: any cluster, given ``LETHE_E2E_KUBECONFIG`` and ``LETHE_E2E_IMAGE``
  (an image the nodes can pull or already have). The shared "NFS" directory is a
  hostPath: the cluster must have one node, on this machine (``LETHE_E2E_DATA_NODE``
  is where the node sees ``LETHE_E2E_DATA``).

The suite is **deselected** (not skipped, not counted) unless ``-m e2e`` or
``LETHE_E2E=1`` is given. See docs/testing.md.

Environment (defaults for ``node``):

* ``LETHE_E2E_IMAGE`` — image ``repository:tag`` [``.cache/image/lethe.ref``, else
  ``lethe.local/lethe:dev``; kind: ``ghcr.io/lethe-io/lethe:0.1.0``].
* ``LETHE_E2E_DATA`` — host directory mounted into every pod at ``/data``, the
  stand-in for the NFS export [``/tmp/lethe-e2e-data``].
* ``LETHE_E2E_DATA_NODE`` — the same directory as the node sees it [same path;
  kind: ``/lethe-data``, its ``extraMounts``].
* ``LETHE_E2E_S3_HOST`` — the address of this host as pods reach it, where the
  test's S3 server listens [node: the bridge address ``10.244.0.1``; kind and
  kubeconfig: must be given for the S3 test, else it is skipped].
* ``LETHE_E2E_KIND_CLUSTER`` — kind cluster name [``lethe-kind``];
  ``LETHE_E2E_KIND_DELETE=1`` deletes it afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.waiting import wait_for as shared_wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART = REPO / "charts" / "lethe"
BIN = REPO / ".cache" / "bin"
TARGET = os.environ.get("LETHE_E2E_CLUSTER", "node")
if os.environ.get("LETHE_E2E_KUBECONFIG") and "LETHE_E2E_CLUSTER" not in os.environ:
    TARGET = "kubeconfig"
KIND_CLUSTER = os.environ.get("LETHE_E2E_KIND_CLUSTER", "lethe-kind")


def _default_image() -> str:
    if TARGET == "kind":
        return "ghcr.io/lethe-io/lethe:0.1.0"
    ref = REPO / ".cache" / "image" / "lethe.ref"
    return ref.read_text().strip() if ref.exists() else "lethe.local/lethe:dev"


IMAGE = os.environ.get("LETHE_E2E_IMAGE") or _default_image()
DATA_HOST = Path(os.environ.get("LETHE_E2E_DATA", "/tmp/lethe-e2e-data"))
DATA_NODE = os.environ.get("LETHE_E2E_DATA_NODE") or (
    "/lethe-data" if TARGET == "kind" else str(DATA_HOST))
S3_HOST = os.environ.get("LETHE_E2E_S3_HOST") or ("10.244.0.1" if TARGET == "node" else "")
MOUNT = "/data"  # the shared directory inside the operator pods (config.allowedRoots)
NS = "lethe-system"
APP_NS = "lethe-e2e"  # where the tests put their policies and jobs
RELEASE = "lethe"
HTTP_PORT = 8080
SELECTOR = f"app.kubernetes.io/name=lethe,app.kubernetes.io/instance={RELEASE}"


# -- opt-in: deselect unless asked for ----------------------------------------------


def e2e_requested(config: pytest.Config) -> bool:
    """``LETHE_E2E=1``, or a ``-m`` expression that selects ``e2e`` (not ``not e2e``)."""
    if os.environ.get("LETHE_E2E") == "1":
        return True
    expr = str(config.getoption("markexpr", "") or "")
    return re.search(r"(?<!not )\be2e\b", expr) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if e2e_requested(config):
        return
    mine = [i for i in items if i.path.is_relative_to(HERE)]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if not i.path.is_relative_to(HERE)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failed e2e test, keep what the pods said: the end of each pod's log goes
    into the report (CI keeps only the output of a failed run), whole logs under
    ``.cache/e2e-logs/<test>/``. The pods are gone once the cluster is stopped."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    c = getattr(item, "funcargs", {}).get("release")
    if rep.when != "call" or not rep.failed or not isinstance(c, Cluster):
        return
    keep = REPO / ".cache" / "e2e-logs" / re.sub(r"[^\w.-]+", "_", item.name)
    keep.mkdir(parents=True, exist_ok=True)
    tails = []
    for i in range(3):
        pod = f"{RELEASE}-{i}"
        for previous in (False, True):
            text = c.try_kubectl("logs", pod, "-n", NS, "-c", "lethe",
                                 *(["--previous"] if previous else [])) or ""
            if not text:
                continue
            name = f"{pod}{'-previous' if previous else ''}.log"
            (keep / name).write_text(text)
            tails.append(f"==> {name} (last 60 lines of {len(text.splitlines())})\n"
                         + "\n".join(text.splitlines()[-60:]))
    rep.sections.append((f"lethe pod logs (whole: {keep})", "\n".join(tails)))


def wait_for(cond: Callable[[], Any], *, timeout: float, what: str,
             interval: float = 2.0) -> Any:
    """Kubernetes moves slowly: poll every 2 s."""
    return shared_wait_for(cond, timeout=timeout, what=what, interval=interval)


def tool(name: str) -> str:
    """A binary from .cache/bin (scripts/build-tools.sh), else from PATH."""
    p = BIN / name
    if os.access(p, os.X_OK):
        return str(p)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found (.cache/bin or PATH)")
    return found


# -- the cluster, however it was made -------------------------------------------------


@dataclass
class Cluster:
    """kubectl and helm against one cluster, plus Lethe-specific probes."""

    kubeconfig: str
    kind: str  # node | kind | kubeconfig
    kubectl_bin: str = field(default_factory=lambda: tool("kubectl"))
    helm_bin: str = field(default_factory=lambda: tool("helm"))

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
                              input=input, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc.stdout

    def try_kubectl(self, *args: str, timeout: float = 30) -> str | None:
        try:
            return self.kubectl(*args, timeout=timeout)
        except (AssertionError, subprocess.TimeoutExpired):
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
        """The pod's /raft document, through the API server's pod proxy. A stopped
        process never answers: give up after 5 s, not the 30 s a hung call would take."""
        out = self.try_kubectl("--request-timeout=5s", "get", "--raw",
                               f"/api/v1/namespaces/{NS}/pods/{pod}:{HTTP_PORT}/proxy/raft",
                               timeout=10)
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

    def recycle_volumes(self) -> None:
        """Offer the journal volumes again after their claims were deleted (the node
        cluster's static local volumes; other clusters provision dynamically)."""
        if self.kind == "node":
            subprocess.run([str(REPO / "scripts" / "node-cluster.sh"), "volumes"],
                           check=True, timeout=120, capture_output=True)

    def diagnose(self) -> str:
        """What went wrong with the pods (an image that is not there, most often)."""
        out = self.try_kubectl("describe", "pods", "-n", NS, "-l", SELECTOR) or ""
        hint = ""
        if "ErrImagePull" in out or "ImagePullBackOff" in out:
            hint = (f"\nThe image {IMAGE} is not in the cluster: `make image` (node), "
                    f"or `kind load docker-image {IMAGE} --name {KIND_CLUSTER}` (kind).")
        return out[-6000:] + hint


def _node_cluster() -> str:
    """Start (or reuse) the project's node cluster; its kubeconfig path."""
    proc = subprocess.run([str(REPO / "scripts" / "node-cluster.sh"), "up"],
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/node-cluster.sh up failed:\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    DATA_HOST.mkdir(parents=True, exist_ok=True)
    DATA_HOST.chmod(0o777)  # the operator runs as uid 65532
    if TARGET == "node":
        yield Cluster(kubeconfig=_node_cluster(), kind="node")
    elif TARGET == "kubeconfig":
        kc = os.environ.get("LETHE_E2E_KUBECONFIG") or pytest.fail(
            "LETHE_E2E_CLUSTER=kubeconfig needs LETHE_E2E_KUBECONFIG")
        yield Cluster(kubeconfig=kc, kind="kubeconfig")
    elif TARGET == "kind":
        pytest_kind = pytest.importorskip(
            "pytest_kind", reason="the kind target needs `pip install pytest-kind==22.11.1`")
        config = DATA_HOST / f".kind-{KIND_CLUSTER}.yaml"
        # One node; the host's DATA_HOST appears in it as DATA_NODE (every pod mounts
        # the same directory, as every pod would mount the same NFS export).
        config.write_text(yaml.safe_dump({
            "kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4",
            "nodes": [{"role": "control-plane",
                       "extraMounts": [{"hostPath": str(DATA_HOST),
                                        "containerPath": DATA_NODE}]}]}))
        kc_cluster = pytest_kind.KindCluster(KIND_CLUSTER)
        kc_cluster.create(config_file=config)  # reuses an existing cluster of that name
        try:
            yield Cluster(kubeconfig=str(kc_cluster.kubeconfig_path), kind="kind",
                          kubectl_bin=str(kc_cluster.kubectl_path))
        finally:
            if os.environ.get("LETHE_E2E_KIND_DELETE") == "1":
                kc_cluster.delete()
    else:
        pytest.fail(f"LETHE_E2E_CLUSTER={TARGET!r}: expected node, kind or kubeconfig")


# -- the release: `helm install` as documented, once per test module ------------------


def values() -> dict[str, Any]:
    """The chart's defaults, plus: our image, and a hostPath volume instead of NFS."""
    repo, _, tag = IMAGE.rpartition(":")
    return {
        "replicaCount": 3,
        "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
        "config": {"allowedRoots": [MOUNT]},
        "extraVolumes": [{"name": "testdata",
                          "hostPath": {"path": DATA_NODE, "type": "Directory"}}],
        "extraVolumeMounts": [{"name": "testdata", "mountPath": MOUNT}],
    }


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    vals = tmp_path_factory.mktemp("helm") / "values.yaml"
    vals.write_text(yaml.safe_dump(values()))
    cluster.helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", NS,
                 "--create-namespace", "--values", str(vals), "--wait", "--timeout", "10m")
    # A namespace left by a previous run may still be terminating.
    wait_for(lambda: cluster.try_kubectl("get", "namespace", APP_NS) is None, timeout=180,
             what=f"namespace {APP_NS} from a previous run to go")
    cluster.kubectl("create", "namespace", APP_NS)
    try:
        yield cluster
    finally:
        cluster.try_kubectl("delete", "namespace", APP_NS, "--wait=false")
        if cluster.try_kubectl("get", "statefulset", RELEASE, "-n", NS):
            cluster.helm("uninstall", RELEASE, "--namespace", NS, "--wait")
        # The journal claims outlive the release (StatefulSet semantics); drop them
        # so the next run starts a fresh Raft cluster.
        cluster.try_kubectl("delete", "pvc", "-n", NS, "-l",
                            f"app.kubernetes.io/instance={RELEASE}", "--wait=true",
                            timeout=120)
        cluster.recycle_volumes()
