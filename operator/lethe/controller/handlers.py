"""kopf wiring: every replica watches both kinds into its Inventory, and writes nothing.

Only low-level event handlers are registered: kopf adds finalizers and
progress annotations for change handlers, daemons and timers, never for event
handlers, so a follower's watch costs the API server no writes at all (I1).
Scheduling and status live in :mod:`lethe.controller.leader`.
"""

from __future__ import annotations

from typing import Any

import kopf

from lethe.controller.kube import GROUP, VERSION
from lethe.controller.leader import Inventory

__all__ = ["register", "settings"]


def settings(*, pod_name: str) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.peering.standalone = True  # Raft is the only election (two elections disagree)
    s.posting.enabled = False  # events come from the leader, through KubeWriter
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    s.networking.request_timeout = 30
    s.persistence.finalizer = f"{GROUP}/never-used"
    return s


def register(*, registry: kopf.OperatorRegistry, inventory: Inventory) -> None:
    def make(kind: str) -> Any:
        async def on_event(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
            meta = body.get("metadata", {})
            if event.get("type") == "DELETED":
                inventory.remove(kind, meta.get("namespace", ""), meta.get("name", ""))
            else:
                inventory.put(kind, dict(body))
        return on_event

    # A private registry has no default login: use the kubernetes client's config
    # (in-cluster ServiceAccount, or the KUBECONFIG a local replica is given).
    kopf.on.login(registry=registry, id="login")(kopf.login_via_client)
    kopf.on.event(GROUP, VERSION, "retentionpolicies", registry=registry,
                  id="inventory-policies")(make("RetentionPolicy"))
    kopf.on.event(GROUP, VERSION, "cleanupjobs", registry=registry,
                  id="inventory-jobs")(make("CleanupJob"))
