"""A CleanupJob whose policy is not there yet waits for it instead of failing.

``kubectl apply -f`` of a policy and a job in one file, or a GitOps sync, can
hand the leader the job before the policy: the two kinds come through two
watches, in no order between them. The job used to fail at once with
``PolicyNotFound`` and never ran (seen in the CI sim: the job of
tests/badinput/test_apiserver_restart.py, applied right after its policy,
ended ``Failed``). It now stays ``Pending`` (quietly for
``POLICY_GRACE_SECONDS``, then with a ``Stalled`` condition and a warning
event) and runs once the policy exists, as a Pod waits for its ConfigMap.

Real parts: the test session's kube-apiserver with the CRDs, the product's
KubeWriter and Leader, a one-node Raft journal, a real directory. The
inventory is filled by hand where the kopf watch would fill it: the test
decides which object the watch has delivered.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from lethe.controller.kube import GROUP, PLURALS, VERSION
from lethe.controller.leader import POLICY_GRACE_SECONDS, Inventory, _ts
from lethe.raft.local import local_journal
from tests.badinput.operators import old_files
from tests.controller.leaders import api_leader
from tests.fixtures.kube import KubeCluster
from tests.fixtures.waiting import wait_for


def test_a_job_applied_before_its_policy_waits_then_runs(
        crds_installed: KubeCluster, tmp_path: Path) -> None:
    kube = crds_installed
    ns = f"waits-{secrets.token_hex(3)}"
    data = tmp_path / "data"
    files = old_files(data, 5)
    kube.kubectl("create", "namespace", ns)

    def get(kind: str, name: str) -> dict[str, Any]:
        out = kube.kubectl("get", f"{PLURALS[kind]}.{GROUP}", name, "-n", ns, "-o", "json")
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    kube.apply({"apiVersion": f"{GROUP}/{VERSION}", "kind": "CleanupJob",
                "metadata": {"name": "now", "namespace": ns},
                "spec": {"policyRef": {"name": "logs"}, "mode": "Enforce"}})
    created = _ts(get("CleanupJob", "now")["metadata"]["creationTimestamp"])
    clock = [created + 1.0]
    inventory = Inventory()
    inventory.put("CleanupJob", get("CleanupJob", "now"))
    inventory.synced.set()
    (tmp_path / "spool").mkdir()
    with local_journal(data_dir=tmp_path / "raft") as journal:
        wait_for(journal.lease_valid, timeout=30, what="the one-node lease")
        leader = api_leader(kube=kube, journal=journal, inventory=inventory,
                            spool=tmp_path / "spool", allowed_root=data,
                            clock=lambda: clock[0])
        try:
            # Within the grace: nothing written, nothing started.
            leader.tick()
            assert not leader._active
            assert not get("CleanupJob", "now").get("status"), "spoke within the grace"

            # After it: Pending, Stalled with the reason, one warning event; not Failed.
            clock[0] = created + POLICY_GRACE_SECONDS + 1.0
            leader.tick()
            leader.tick()
            st = get("CleanupJob", "now").get("status") or {}
            assert st.get("phase") == "Pending", st
            stalled = [c for c in st.get("conditions") or () if c["type"] == "Stalled"]
            assert stalled and stalled[0]["status"] == "True" \
                and stalled[0]["reason"] == "PolicyNotFound", st
            events = json.loads(kube.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
            assert [e["reason"] for e in events["items"]] == ["PolicyNotFound"], events

            # The policy arrives (and the job as it now shows): the job runs.
            kube.apply({"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetentionPolicy",
                        "metadata": {"name": "logs", "namespace": ns},
                        "spec": {"target": {"posix": {"path": str(data)}},
                                 "rules": {"maxAge": "30d"},
                                 "safety": {"allowDeleteAll": True}}})
            inventory.put("RetentionPolicy", get("RetentionPolicy", "logs"))
            inventory.put("CleanupJob", get("CleanupJob", "now"))
            leader.tick()
            assert leader._active, "the job did not start once its policy existed"
            wait_for(lambda: all(a.future.done() for a in leader._active.values()),
                     timeout=60, interval=0.05, what="the run to end")
            st = get("CleanupJob", "now").get("status") or {}
            assert st.get("phase") == "Succeeded", st
            assert not any(p.exists() for p in files)
        finally:
            leader.close()
            kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
