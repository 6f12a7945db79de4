"""Three real operator replicas against the real API server.

Each replica authenticates with its own ServiceAccount token, bound by the
RBAC rules the Helm chart renders (not the admin), so these tests also prove
the chart's RBAC suffices. The API server's audit log tells which identity
wrote what (tests/fixtures/kube.py enables it).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.kube import BIN_DIR, KubeCluster
from tests.fixtures.replicas import LocalReplicas

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


# -- I1 across leader changes -----------------------------------------------------------

_BECAME = re.compile(r"raft: (\S+) became leader of term (\d+)")


def _log_time(text: str) -> float:
    """A replica log's ``time`` (logging's asctime, local time, milliseconds)."""
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _audit_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def writes_by_non_leaders(kube: KubeCluster, replicas: LocalReplicas, *, since: float,
                          until: float) -> list[str]:
    """I1 over time: every API write (audit log) that a replica's identity made in
    ``[since, until]`` while it was not the newest Raft leader.

    Leadership comes from every replica's own log ("became leader of term T"), so
    a deposed leader's write is judged by the moment its *successor* took over,
    not by when the deposed one noticed. Empty means every write came from the
    replica that had most recently become leader. Times are wall-clock seconds.
    """
    assert kube.state_dir is not None
    by_address = {r.raft_address: r.index for r in replicas.replicas}
    by_identity = {Path(r.kubeconfig).stem: r.index for r in replicas.replicas}
    became: list[tuple[float, int, int]] = []  # (time, term, replica index)
    for r in replicas.replicas:
        if not r.log_path.exists():
            continue
        for line in r.log_path.read_text(errors="replace").splitlines():
            if "became leader" not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            m = _BECAME.search(str(rec.get("message", "")))
            if m and m.group(1) in by_address:
                became.append((_log_time(rec["time"]), int(m.group(2)), by_address[m.group(1)]))
    became.sort()
    bad = []
    for line in (kube.state_dir / "logs" / "audit.log").read_text().splitlines():
        ev = json.loads(line)
        user = ev.get("user", {}).get("username", "")
        if not user.startswith(f"system:serviceaccount:{NS}:"):
            continue
        who = by_identity.get(user.rsplit(":", 1)[1])
        if who is None:
            continue
        at = _audit_time(ev["requestReceivedTimestamp"])
        if not since <= at <= until:
            continue
        # The log has milliseconds; the audit microseconds: compare at the coarser grain.
        leaders = [b for b in became if b[0] <= at + 0.001]
        if not leaders or leaders[-1][2] != who:
            cur = f"lethe-{leaders[-1][2]} (term {leaders[-1][1]})" if leaders else "nobody"
            bad.append(f"lethe-{who} {ev.get('verb')} {ev.get('requestURI')} at "
                       f"{ev['requestReceivedTimestamp']} while the leader was {cur}")
    return bad


@pytest.fixture(autouse=True)
def _leader_only_writes(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that drives replicas: I1 held for the whole test, failovers,
    pauses and restarts included (not only in steady state)."""
    since = time.time()
    yield
    if "operators" not in request.fixturenames:
        return
    kube: KubeCluster = request.getfixturevalue("crds_installed")
    if kube.state_dir is None:  # an external cluster: its audit log is not ours to read
        return
    time.sleep(1.0)  # the audit log is written after the response: let it land
    replicas: LocalReplicas = request.getfixturevalue("operators")
    bad = writes_by_non_leaders(kube, replicas, since=since, until=time.time())
    assert not bad, "I1: API writes by a replica that was not the leader:\n" + "\n".join(bad[:20])
