"""A misspelt time zone or a cron string that never comes, on a running operator
(issue 14, item 4).

The CRD accepts any short string for ``spec.timeZone`` and ``spec.rules.timeZone``,
and a five-field cron string whose date never exists; before, the leader raised on
every tick for such a policy. Now it is ``Stalled`` with reason ``InvalidSpec`` and
a message naming the field, nothing runs, no replica logs a traceback, and fixing
the spec makes the policy run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.badinput.operators import old_files, policy, tracebacks
from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import LocalReplicas
from tests.fixtures.waiting import wait_for
from tests.operator.conftest import condition, get

pytestmark = pytest.mark.timeout(300)

RP = "retentionpolicies.lethe.io"
NS = "bad-zone"


def stalled(kube: KubeCluster, name: str) -> dict[str, Any]:
    return dict(wait_for(
        lambda: (c := condition(get(kube, RP, name, NS), "Stalled")) and
        c.get("status") == "True" and c, timeout=60, interval=0.5,
        what=f"RetentionPolicy {NS}/{name} to be Stalled"))


@pytest.mark.parametrize(("name", "spec", "field"), [
    ("rules-zone", {"rules": {"keepDaily": 3, "timeZone": "Europe/Berln"},
                    "schedule": "* * * * *"}, "spec.rules.timeZone"),
    ("schedule-zone", {"rules": {"maxAge": "1d"}, "schedule": "* * * * *",
                       "timeZone": "Europe/Berln"}, "spec.timeZone"),
    ("never", {"rules": {"maxAge": "1d"}, "schedule": "0 0 30 2 *"}, "spec.schedule"),
])
def test_invalid_spec_is_reported_not_raised(
        name: str, spec: dict[str, Any], field: str, operators: LocalReplicas,
        crds_installed: KubeCluster) -> None:
    kube, replicas = crds_installed, operators
    kube.kubectl("create", "namespace", NS, check=False)
    root: Path = replicas.data_root / f"zone-{name}"  # type: ignore[attr-defined]
    files = old_files(root, 5)
    before = tracebacks(replicas)
    kube.apply(policy(name, NS, {"posix": {"path": str(root)}}, mode="Enforce", **spec))
    c = stalled(kube, name)
    assert c["reason"] == "InvalidSpec" and c["message"].startswith(f"{field}: "), c
    if "Berln" in str(spec):
        assert "did you mean Europe/Berlin?" in c["message"], c
    st = (get(kube, RP, name, NS) or {}).get("status") or {}
    assert "lastRun" not in st and all(p.exists() for p in files)
    assert tracebacks(replicas) == before, "a replica logged a traceback"

    # Fixed: the next generation runs on the schedule (every minute) and deletes.
    fixed = {**spec, "schedule": "* * * * *", "timeZone": "Europe/Berlin",
             "rules": {"maxAge": "1d", "timeZone": "Europe/Berlin"}}
    kube.apply(policy(name, NS, {"posix": {"path": str(root)}}, mode="Enforce", **fixed))
    wait_for(lambda: not any(p.exists() for p in files), timeout=150, interval=1,
             what=f"{NS}/{name} to run once fixed")
    assert tracebacks(replicas) == before
