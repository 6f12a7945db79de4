"""A short scheduled run costs one status write, not three (issue 16 item 5).

With a thousand policies each run every minute, every status write is a
request on the leader, a watch event on every replica and a share of the
leader's one core. A run of a small target used to write "in progress", then
its result, and the next tick wrote the same status again with a different
Ready message. Now a scheduled run writes "in progress" only once it has run
for ``ANNOUNCE_AFTER`` seconds, and the next tick rebuilds exactly the status
the run wrote.

Real parts: the kube-apiserver of the test session with the CRDs, the
product's own KubeWriter, a one-node Raft journal, a directory of 20 files.
The inventory is refreshed from the API server by hand where the operator's
kopf watch would do it, so the test decides when the watch "delivers" (the
stale-inventory case below needs that). Writes are counted by wrapping the
real writer's ``patch_status``: every call still reaches the API server. The
leader's clock is set just after a slot, so the test need not wait for one.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lethe.controller import leader as leader_mod
from lethe.controller.config import parse_config
from lethe.controller.kube import GROUP, PLURALS, VERSION, KubeWriter, load_api
from lethe.controller.leader import Inventory, Leader
from lethe.metrics import Metrics
from lethe.raft.local import local_journal
from lethe.storage.factory import open_storage
from tests.fixtures.kube import KubeCluster
from tests.fixtures.waiting import wait_for


class _Setup:
    def __init__(self, kube: KubeCluster, tmp_path: Path) -> None:
        self.kube = kube
        self.ns = f"writes-{secrets.token_hex(3)}"
        self.data = tmp_path / "data"
        self.data.mkdir()
        for i in range(20):
            (self.data / f"f{i:02d}.log").write_bytes(b"x")
        kube.kubectl("create", "namespace", self.ns)
        kube.apply({"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetentionPolicy",
                    "metadata": {"name": "logs", "namespace": self.ns},
                    "spec": {"mode": "Enforce", "schedule": "* * * * *",
                             "target": {"posix": {"path": str(self.data)}},
                             "rules": {"maxAge": "30d"}}})
        self.inventory = Inventory()
        self.watch()
        self.inventory.synced.set()
        self.writes: list[dict[str, Any]] = []

    def get(self) -> dict[str, Any]:
        out = self.kube.kubectl("get", f"{PLURALS['RetentionPolicy']}.{GROUP}", "logs",
                                "-n", self.ns, "-o", "json")
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def watch(self) -> None:
        """What the kopf watch does when it delivers the object's latest version."""
        self.inventory.put("RetentionPolicy", self.get())

    def counting(self, writer: KubeWriter) -> KubeWriter:
        real = writer.patch_status

        def patch_status(**kw: Any) -> None:
            self.writes.append(kw["status"])
            real(**kw)
        writer.patch_status = patch_status  # type: ignore[method-assign]
        return writer


@pytest.fixture
def setup(crds_installed: KubeCluster, tmp_path: Path) -> Iterator[_Setup]:
    s = _Setup(crds_installed, tmp_path)
    yield s
    s.kube.kubectl("delete", "namespace", s.ns, "--wait=false", check=False)


def _leader(s: _Setup, journal: Any, clock: list[float], tmp_path: Path, *,
            open_delay: float = 0.0) -> Leader:
    def slow_open(target: Any, **kw: Any) -> Any:  # a target slow to reach (an NFS mount)
        time.sleep(open_delay)
        return open_storage(target, **kw)

    (tmp_path / "spool").mkdir(exist_ok=True)
    config = parse_config([], env={"POD_NAME": "lethe-0", "LETHE_DATA_DIR": str(tmp_path / "spool"),
                                   "LETHE_ALLOWED_ROOTS": str(tmp_path / "data")})
    writer = s.counting(KubeWriter(api=load_api(str(s.kube.kubeconfig)),
                                   may_write=journal.lease_valid, component="lethe-0"))
    return Leader(config=config, journal=journal, inventory=s.inventory, writer=writer,
                  metrics=Metrics(), clock=lambda: clock[0], storage_factory=slow_open)


def _wait_runs(leader: Leader) -> None:
    wait_for(lambda: all(a.future.done() for a in leader._active.values()), timeout=60,
             interval=0.05, what="the run to end")


def _ready(st: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == "Ready")


def test_a_short_scheduled_run_writes_its_status_once(setup: _Setup, tmp_path: Path) -> None:
    s = setup
    slot = (int(time.time()) // 60 + 1) * 60  # the next minute: after the policy's creation
    clock = [slot - 20.0]
    with local_journal(data_dir=tmp_path / "raft") as journal:
        leader = _leader(s, journal, clock, tmp_path)
        try:
            leader.tick()  # between slots: the next run time, once
            assert len(s.writes) == 1 and "nextRunTime" in s.writes[0]
            s.watch()
            clock[0] += 5
            leader.tick()
            assert len(s.writes) == 1, "an unchanged status was written again"

            clock[0] = slot + 0.5
            leader.tick()  # the slot is due: its run starts
            _wait_runs(leader)
            run_writes = s.writes[1:]
            assert len(run_writes) == 1, [_ready(w) for w in run_writes]
            final = run_writes[0]
            assert final["lastRun"]["result"] == "Succeeded"
            assert final["lastRun"]["scanned"] == 20 and final["lastRun"]["deleted"] == 0
            ready = _ready(final)
            assert ready["status"] == "True"
            assert ready["message"].startswith(f"last run {final['lastRun']['id']} Succeeded")

            clock[0] += 1
            leader.tick()  # the watch has not delivered the run's status yet
            assert len(s.writes) == 2, "a tick wrote over the run's status from a stale copy"
            s.watch()
            clock[0] += 1
            leader.tick()  # it has: the tick rebuilds the same status
            assert len(s.writes) == 2, ("the tick after the run wrote again: "
                                        f"{_ready(s.writes[-1])} after {ready}")
            shown = s.get()["status"]
            assert shown["nextRunTime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                         time.gmtime(slot + 60))
        finally:
            leader.pool.shutdown(wait=True)


def test_a_longer_run_still_shows_in_progress_first(setup: _Setup, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A run that outlives ANNOUNCE_AFTER: its target takes 1 s to open, and
    # ANNOUNCE_AFTER is 0.1 s instead of 2 s to keep the test short.
    monkeypatch.setattr(leader_mod, "ANNOUNCE_AFTER", 0.1)
    s = setup
    slot = (int(time.time()) // 60 + 1) * 60
    clock = [slot + 0.5]
    with local_journal(data_dir=tmp_path / "raft") as journal:
        leader = _leader(s, journal, clock, tmp_path, open_delay=1.0)
        try:
            leader.tick()
            _wait_runs(leader)
            reconciling = [next(c for c in w["conditions"] if c["type"] == "Reconciling")
                           for w in s.writes]
            assert [c["status"] for c in reconciling] == ["True", "False"], reconciling
            assert "lastRun" in s.writes[-1]
            assert s.get()["status"]["lastRun"]["id"] == s.writes[-1]["lastRun"]["id"]
        finally:
            leader.pool.shutdown(wait=True)
