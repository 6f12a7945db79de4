"""``lethe run``: one operator replica — Raft node, kopf watches, leader loop, HTTP.

Start-up order matters: Raft first (so a replica is a member before it is
ready), then one LIST of both kinds (so the inventory is complete before the
leader loop may act on it), then kopf's watches keep it current.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import kopf
from kubernetes import client as k8s

from lethe.controller.config import OperatorConfig, parse_config
from lethe.controller.handlers import register, settings
from lethe.controller.kube import (
    GROUP,
    PLURALS,
    VERSION,
    KubeWriter,
    api_forbidden,
    api_message,
    load_api,
)
from lethe.controller.leader import Inventory, Leader
from lethe.http.server import Probes, serve
from lethe.journal import JournalError
from lethe.logs import setup_logging
from lethe.metrics import Metrics
from lethe.raft.http import raft_ready
from lethe.raft.node import RaftJournal
from lethe.raft.security import InsecureRaftRefused, resolve_password
from lethe.raft.status import RaftMetrics

__all__ = ["run_main"]

log = logging.getLogger("lethe.operator")

#: Seconds kopf gets to close its watches on shutdown.
SHUTDOWN_GRACE = 10.0


def _initial_list(api: k8s.ApiClient, inventory: Inventory, config: OperatorConfig) -> None:
    custom = k8s.CustomObjectsApi(api)
    for kind, plural in PLURALS.items():
        if config.watch_namespaces:
            items: list[dict[str, Any]] = []
            for ns in config.watch_namespaces:
                items += custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                              plural)["items"]
        else:
            items = custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        for obj in items:
            obj.setdefault("kind", kind)
            inventory.put(kind, obj)
    inventory.synced.set()


def _scaling_down(api: k8s.ApiClient, config: OperatorConfig) -> bool:
    """On SIGTERM: is this pod's ordinal beyond the StatefulSet's new size? Then it
    leaves Raft, so the remaining members' quorum shrinks with it."""
    sts, _, ordinal = config.pod_name.rpartition("-")
    if not sts or not ordinal.isdigit():
        return False
    try:
        obj = k8s.AppsV1Api(api).read_namespaced_stateful_set(sts, config.namespace)
    except k8s.ApiException as e:
        if e.status != 404:
            log.error("cannot tell a scale-down from a restart, staying a Raft member: "
                      "reading StatefulSet %s/%s failed: HTTP %s: %s", config.namespace, sts,
                      e.status, api_message(e))
        return False
    return int(ordinal) >= int(obj.spec.replicas or 0)


def run_main(argv: Sequence[str]) -> int:
    config = parse_config(argv)
    setup_logging(fmt=config.log_format, level=logging.getLevelName(config.log_level))
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1` dumps every thread's stack
    try:
        password = resolve_password(password_file=config.raft_password_file or None,
                                    insecure_dev=config.insecure_dev_raft)
        disc = config.discovery()
    except (InsecureRaftRefused, ValueError) as e:
        log.error("%s", e)
        return 2
    metrics = Metrics()
    raft_metrics = RaftMetrics(registry=metrics.registry)
    # Whether this replica joins an existing cluster or helps bootstrap a new one is
    # not decided here: the seed cannot tell (after `helm upgrade --set replicaCount=5`
    # the new pods are in the seed too). RaftJournal asks the peers first (docs/raft.md,
    # "Who bootstraps"); outside the seed it never bootstraps.
    journal = RaftJournal(self_address=disc.self_address, peers=disc.peers, password=password,
                          data_dir=f"{config.data_dir}/raft", bind_address=disc.bind_address,
                          join=not disc.in_seed, metrics=raft_metrics)
    inventory = Inventory()
    # Every run thread may write at once, besides the watch and the leader loop.
    api = load_api(config.kubeconfig, connections=config.concurrent_runs + 4)
    writer = KubeWriter(api=api, may_write=journal.lease_valid, component=config.pod_name)
    leader = Leader(config=config, journal=journal, inventory=inventory, writer=writer,
                    metrics=metrics)
    heartbeat = [time.monotonic()]
    watching = threading.Event()

    def ready() -> tuple[bool, str]:
        raft_ok, why = raft_ready(journal)
        if not raft_ok:
            return False, why
        if not inventory.synced.is_set() or not watching.is_set():
            return False, "watches not established yet"
        return True, why

    probes = Probes(healthy=lambda: time.monotonic() - heartbeat[0] < 30, ready=ready,
                    raft_status=lambda: dict(journal.status()), registries=[metrics.registry])
    http = serve(host=config.http_host, port=config.http_port, probes=probes)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(2):
            heartbeat[0] = time.monotonic()

    threading.Thread(target=beat, name="lethe-heartbeat", daemon=True).start()
    try:
        _initial_list(api, inventory, config)
    except k8s.ApiException as e:
        if (why := api_forbidden(e)) is None:
            raise
        # The pod restarts until RBAC is fixed: one line each time, not a traceback.
        log.error("cannot list the operator's own resources at start: %s; exiting", why)
        stop.set()
        try:
            journal.close()
            http.shutdown()
        finally:
            logging.shutdown()
            os._exit(1)
    threading.Thread(target=leader.run_forever, args=(stop,), name="lethe-leader",
                     daemon=True).start()

    registry = kopf.OperatorRegistry()
    register(registry=registry, inventory=inventory)
    loop = asyncio.new_event_loop()
    stop_flag: asyncio.Future[None] = loop.create_future()

    async def operate() -> None:
        ready_flag: asyncio.Future[None] = loop.create_future()

        async def mark_ready() -> None:
            await ready_flag
            watching.set()

        marker = asyncio.create_task(mark_ready())
        await kopf.operator(registry=registry, settings=settings(pod_name=config.pod_name),
                            standalone=True, clusterwide=not config.watch_namespaces,
                            namespaces=list(config.watch_namespaces), stop_flag=stop_flag,
                            ready_flag=ready_flag)
        marker.cancel()

    # kopf runs in its own thread so that this thread owns SIGTERM: shutdown is then
    # bounded by us (leave Raft on scale-down, stop writing) whatever kopf is doing.
    kopf_thread = threading.Thread(target=loop.run_until_complete, args=(operate(),),
                                   name="lethe-kopf", daemon=True)
    kopf_thread.start()
    requested = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: requested.set())
    log.info("operator %s started: raft %s, peers %s, http %s:%d", config.pod_name,
             disc.self_address, ",".join(disc.peers) or "(none)", config.http_host,
             config.http_port)
    code = 0
    while not requested.wait(1.0):
        if not kopf_thread.is_alive():
            log.error("the watch loop (kopf) exited; stopping so the pod restarts")
            code = 1
            break
    log.info("stopping: no more runs or API writes from this replica")
    stop.set()
    def raise_flag() -> None:
        if not stop_flag.done():
            stop_flag.set_result(None)

    loop.call_soon_threadsafe(raise_flag)
    kopf_thread.join(timeout=SHUTDOWN_GRACE)
    leader.close()
    try:
        if _scaling_down(api, config):
            log.info("the StatefulSet shrank below this replica: leaving Raft")
            journal.leave()
    except JournalError as e:
        # One line, not a traceback: the operator needs to know the members still
        # count this replica (docs/raft.md, "Scaling").
        log.error("%s; the other members still count %s until it is removed",
                  e, disc.self_address)
    finally:
        journal.close()
        http.shutdown()
        logging.shutdown()
    # Run threads still in a batch stop at their next lease check; do not wait for them.
    os._exit(code)
