"""A run stops soon after its policy is suspended even when the watch is late.

The leader learns of an edit, a suspend or a deletion from its kopf watch, and
a run checks that inventory between batches. Under load the watch can lag by
seconds, and every batch meanwhile deletes by the old spec (a user who raised
retention loses what the new spec keeps). A run that lasts therefore also
reads its object from the API server, at most once a second.

Real parts: the test session's kube-apiserver with the CRDs, the product's
KubeWriter and Leader, a one-node Raft journal, a directory of 3,000 files.
The inventory is filled from the API server by hand where the operator's kopf
watch would do it; here it is never refreshed after the suspend, which is a
watch that has not delivered yet (a real watch cannot be made late on cue).
Each batch's delete is slowed by 0.2 s so the run lasts long enough to tell.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from lethe.controller.kube import GROUP, PLURALS, VERSION
from lethe.controller.leader import Inventory
from lethe.raft.local import local_journal
from lethe.storage.factory import open_storage
from tests.controller.leaders import api_leader
from tests.fixtures.kube import KubeCluster
from tests.fixtures.waiting import wait_for

FILES = 3000
BATCH = 100


class _Slow:
    """The real storage, each batch's delete 0.2 s slower (storage far away)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def delete_batch(self, *args: Any, **kw: Any) -> Any:
        time.sleep(0.2)
        return self._inner.delete_batch(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_suspend_the_watch_has_not_delivered_stops_the_run(
        crds_installed: KubeCluster, tmp_path: Path) -> None:
    kube = crds_installed
    ns = f"fresh-{secrets.token_hex(3)}"
    data = tmp_path / "data"
    data.mkdir()
    old = time.time() - 40 * 86400
    for i in range(FILES):
        p = data / f"f{i:05d}.log"
        p.write_bytes(b"x")
        os.utime(p, (old, old))
    kube.kubectl("create", "namespace", ns)
    kube.apply({"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetentionPolicy",
                "metadata": {"name": "logs", "namespace": ns},
                "spec": {"mode": "Enforce", "schedule": "* * * * *", "batchSize": BATCH,
                         "target": {"posix": {"path": str(data)}},
                         "rules": {"maxAge": "30d"}, "safety": {"allowDeleteAll": True}}})

    def get() -> dict[str, Any]:
        out = kube.kubectl("get", f"{PLURALS['RetentionPolicy']}.{GROUP}", "logs",
                           "-n", ns, "-o", "json")
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    inventory = Inventory()
    inventory.put("RetentionPolicy", get())
    inventory.synced.set()
    slot = (int(time.time()) // 60 + 1) * 60
    (tmp_path / "spool").mkdir()
    with local_journal(data_dir=tmp_path / "raft") as journal:
        leader = api_leader(kube=kube, journal=journal, inventory=inventory,
                            spool=tmp_path / "spool", allowed_root=data,
                            clock=lambda: slot + 0.5,
                            storage_factory=lambda target, **kw: _Slow(open_storage(target,
                                                                                    **kw)))
        try:
            leader.tick()  # the slot is due: the run starts

            def left() -> int:
                return sum(1 for p in data.iterdir() if p.name.startswith("f"))
            wait_for(lambda: left() <= FILES - BATCH, timeout=60, interval=0.05,
                     what="the first batch")
            kube.kubectl("patch", f"{PLURALS['RetentionPolicy']}.{GROUP}", "logs", "-n", ns,
                         "--type=merge", "-p", '{"spec":{"suspend":true}}')
            at_suspend = left()
            # The watch never delivers the suspend: the inventory keeps the old object.
            wait_for(lambda: all(a.future.done() for a in leader._active.values()),
                     timeout=60, interval=0.05, what="the run to end")
            after = left()
            last = (get().get("status") or {}).get("lastRun") or {}
            assert last.get("result") == "Aborted", last
            # Stopped within about a second of batches (0.2 s each) plus the one in
            # progress: far from the 3,000 the old spec would delete.
            assert at_suspend - after <= 10 * BATCH, (at_suspend, after)
            assert after > 0
        finally:
            leader.pool.shutdown(wait=True)
            kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
