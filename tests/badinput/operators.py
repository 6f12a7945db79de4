"""Three real ``lethe run`` replicas for the bad-input tests that need a running operator.

The same set-up as ``tests/operator`` (each replica authenticates with its own
ServiceAccount token bound by the chart's rendered RBAC), but for any API server:
the restart test brings its own, the Raft-port test uses the session's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import LocalReplicas
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import NS, get, render_rbac, sa_kubeconfig

__all__ = ["CJ", "chart_identities", "finished", "job", "ledger_lines", "old_files", "policy",
           "running_replicas", "tracebacks"]

CJ = "cleanupjobs.lethe.io"
DAY = 86400


def chart_identities(kube: KubeCluster, *, workdir: Path, tag: str = "bad") -> list[str]:
    """Three ServiceAccounts ``lethe-<tag>-<i>`` bound by the chart's ClusterRole/Role
    (bindings of their own); their kubeconfigs."""
    kube.kubectl("create", "namespace", NS, check=False)
    # Own names, and own bindings: tests/operator proves I1 from the audit log by the
    # lethe-op-* identities of *its* replicas, on the same API server.
    names = [f"lethe-{tag}-{i}" for i in range(3)]
    for n in names:
        kube.kubectl("create", "serviceaccount", n, "-n", NS, check=False)
    for o in render_rbac():
        if o["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            o["metadata"]["name"] += f"-{tag}"
            o["subjects"] = [{"kind": "ServiceAccount", "name": n, "namespace": NS}
                             for n in names]
        kube.apply(o)
    workdir.mkdir(parents=True, exist_ok=True)
    return [sa_kubeconfig(kube, sa=n, path=workdir / f"{n}.kubeconfig") for n in names]


@contextlib.contextmanager
def running_replicas(kube: KubeCluster, *, workdir: Path, data_root: Path
                     ) -> Iterator[LocalReplicas]:
    """Three replicas, ready and with a leader; stopped (SIGTERM) on exit."""
    data_root.mkdir(parents=True, exist_ok=True)
    reps = LocalReplicas(count=3, workdir=workdir,
                         kubeconfigs=chart_identities(kube, workdir=workdir / "identities"),
                         password=secrets.token_hex(16),
                         env={"LETHE_ALLOWED_ROOTS": str(data_root), "LETHE_LOG_FORMAT": "json",
                              "LETHE_STARTING_DEADLINE_SECONDS": "120"})
    reps.start()
    try:
        reps.wait_ready(timeout=120)
        reps.wait_leader(timeout=30)
        yield reps
    finally:
        reps.stop()


def old_files(root: Path, n: int, *, age_days: float = 40) -> list[Path]:
    """``n`` one-byte files dated ``age_days`` ago, 500 per directory."""
    t = time.time() - age_days * DAY
    out = []
    for i in range(n):
        p = root / f"d{i // 500:03d}" / f"f{i:05d}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        os.utime(p, (t, t))
        out.append(p)
    return out


def policy(name: str, ns: str, target: dict[str, Any], **spec: Any) -> dict[str, Any]:
    # Test targets are emptied on purpose: opt in to that (the allowDeleteAll brake
    # has its own tests in tests/runner/test_delete_all_brake.py).
    spec["safety"] = {"allowDeleteAll": True, **spec.get("safety", {})}
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": {"target": target, **spec}}


def job(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": "CleanupJob",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def finished(kube: KubeCluster, name: str, ns: str, *, timeout: float) -> dict[str, Any]:
    """The CleanupJob once its phase is Succeeded or Failed."""
    return dict(wait_for(
        lambda: (o := get(kube, CJ, name, ns)) and
        (o.get("status") or {}).get("phase") in ("Succeeded", "Failed") and o,
        timeout=timeout, interval=0.3, what=f"CleanupJob {ns}/{name} to finish"))


def ledger_lines(root: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for f in sorted((root / ".lethe/ledger").rglob("*.jsonl"))
            for x in f.read_text().splitlines() if x.strip()]


def tracebacks(reps: LocalReplicas) -> Counter[str]:
    """Per replica, how many tracebacks its log holds (JSON lines carry them in ``exc_info``
    or as text; either way the word appears once per traceback)."""
    return Counter({r.name: r.log_path.read_text(errors="replace").count("Traceback")
                    for r in reps.replicas if r.log_path.exists()})
