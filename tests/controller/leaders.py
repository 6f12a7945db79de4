"""A Leader on a one-node journal that writes to a real API server, as a replica
builds it (controller/main.py), for tests that drive its ticks themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lethe.controller.config import parse_config
from lethe.controller.kube import KubeWriter, load_api
from lethe.controller.leader import Inventory, Leader
from lethe.metrics import Metrics
from lethe.raft.node import RaftJournal
from tests.fixtures.kube import KubeCluster


def api_leader(*, kube: KubeCluster, journal: RaftJournal, inventory: Inventory, spool: Path,
               allowed_root: Path, **kw: Any) -> Leader:
    """Pod ``lethe-0``'s Leader: ``spool`` is its data dir (it must exist),
    ``allowed_root`` its one allowed root; ``kw`` goes to :class:`Leader`
    (``clock``, ``storage_factory``)."""
    config = parse_config([], env={"POD_NAME": "lethe-0", "LETHE_DATA_DIR": str(spool),
                                   "LETHE_ALLOWED_ROOTS": str(allowed_root)})
    writer = KubeWriter(api=load_api(str(kube.kubeconfig)), may_write=journal.lease_valid,
                        component="lethe-0")
    return Leader(config=config, journal=journal, inventory=inventory, writer=writer,
                  metrics=Metrics(), **kw)
