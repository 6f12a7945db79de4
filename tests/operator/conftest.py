"""Three real operator replicas against the real API server.

Each replica authenticates with its own ServiceAccount token, bound by the
RBAC rules the Helm chart renders (not the admin), so these tests also prove
the chart's RBAC suffices. The API server's audit log tells which identity
wrote what (tests/fixtures/kube.py enables it).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lethe.devenv import LocalReplicas
from tests.fixtures.kube import BIN_DIR, KubeCluster

REPO = Path(__file__).resolve().parents[2]
NS = "lethe-system"


def render_rbac(*, release: str = "lethe", namespace: str = NS) -> list[dict[str, Any]]:
    """The chart's RBAC objects, as `helm template` renders them."""
    out = subprocess.run(
        [str(BIN_DIR / "helm"), "template", release, str(REPO / "charts/lethe"),
         "--namespace", namespace, "--show-only", "templates/rbac.yaml"],
        capture_output=True, text=True, check=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def sa_kubeconfig(kube: KubeCluster, *, sa: str, path: Path) -> str:
    token = kube.kubectl("create", "token", sa, "-n", NS, "--duration", "4h").stdout.strip()
    cfg = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cfg["users"] = [{"name": sa, "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = sa
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def identities(crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
               ) -> list[str]:
    """Three ServiceAccounts bound to the chart's ClusterRole/Role; their kubeconfigs."""
    kube = crds_installed
    d = tmp_path_factory.mktemp("identities")
    kube.kubectl("create", "namespace", NS, check=False)
    objs = render_rbac()
    names = [f"lethe-op-{i}" for i in range(3)]
    for n in names:
        kube.kubectl("create", "serviceaccount", n, "-n", NS, check=False)
    for o in objs:
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            o["subjects"] = [{"kind": "ServiceAccount", "name": n, "namespace": NS}
                             for n in names]
        kube.apply(o)
    return [sa_kubeconfig(kube, sa=n, path=d / f"{n}.kubeconfig") for n in names]


@pytest.fixture(scope="module")
def operators(identities: list[str], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[LocalReplicas]:
    root = tmp_path_factory.mktemp("operators")
    data = root / "data"
    data.mkdir()
    reps = LocalReplicas(count=3, workdir=root, kubeconfigs=identities,
                         password=secrets.token_hex(16),
                         env={"LETHE_ALLOWED_ROOTS": str(data), "LETHE_LOG_FORMAT": "json",
                              "LETHE_STARTING_DEADLINE_SECONDS": "120"})
    reps.data_root = data  # type: ignore[attr-defined]
    reps.start()
    try:
        reps.wait_ready(timeout=120)
        reps.wait_leader(timeout=30)
        yield reps
    finally:
        reps.stop()


def get(kube: KubeCluster, kind: str, name: str, ns: str) -> dict[str, Any] | None:
    out = kube.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None
