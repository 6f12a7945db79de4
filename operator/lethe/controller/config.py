"""Operator configuration: flags, each with an environment variable the chart sets.

Raft peers are not here: :func:`lethe.raft.discovery.discover_from_env` reads
them (``LETHE_RAFT_SELF``/``LETHE_RAFT_PEERS``, or the StatefulSet layout).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["OperatorConfig", "parse_config"]


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    pod_name: str
    namespace: str
    http_host: str
    http_port: int
    data_dir: str
    kubeconfig: str | None
    insecure_dev_raft: bool
    allowed_roots: tuple[str, ...]
    namespace_roots: Mapping[str, str] = field(default_factory=dict)
    allowed_buckets: tuple[str, ...] = ()
    watch_namespaces: tuple[str, ...] = ()
    log_format: str = "json"
    log_level: str = "INFO"
    tick_seconds: float = 1.0
    #: How late a scheduled slot may still start; later ones count as missed.
    starting_deadline: float = 300.0


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _mapping(value: str | None) -> dict[str, str]:
    out = {}
    for item in _list(value):
        ns, _, root = item.partition("=")
        if not ns or not root.startswith("/"):
            raise SystemExit(f"LETHE_NAMESPACE_ROOTS: {item!r} is not namespace=/absolute/path")
        out[ns] = root
    return out


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> OperatorConfig:
    e = os.environ if env is None else env
    p = argparse.ArgumentParser(prog="lethe run", description="Run the Lethe operator.")
    a = p.add_argument
    a("--pod-name", default=e.get("POD_NAME") or os.uname().nodename)
    a("--namespace", default=e.get("POD_NAMESPACE", "default"))
    a("--http-host", default=e.get("LETHE_HTTP_HOST", "0.0.0.0"))
    a("--http-port", type=int, default=int(e.get("LETHE_HTTP_PORT", "8080")))
    a("--data-dir", default=e.get("LETHE_DATA_DIR", "/var/lib/lethe"))
    a("--kubeconfig", default=e.get("KUBECONFIG"))
    a("--insecure-dev-raft", action="store_true",
      default=e.get("LETHE_INSECURE_DEV_RAFT") == "1",
      help="run Raft without a password: local development only (remote code execution risk)")
    a("--allowed-roots", default=e.get("LETHE_ALLOWED_ROOTS", ""))
    a("--namespace-roots", default=e.get("LETHE_NAMESPACE_ROOTS", ""))
    a("--allowed-buckets", default=e.get("LETHE_ALLOWED_BUCKETS", ""))
    a("--watch-namespaces", default=e.get("LETHE_WATCH_NAMESPACES", ""))
    a("--log-format", choices=("json", "text"), default=e.get("LETHE_LOG_FORMAT", "json"))
    a("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
      type=str.upper, default=e.get("LETHE_LOG_LEVEL", "INFO"))
    a("--tick", type=float, default=float(e.get("LETHE_TICK_SECONDS", "1.0")))
    a("--starting-deadline", type=float,
      default=float(e.get("LETHE_STARTING_DEADLINE_SECONDS", "300")))
    ns = p.parse_args(list(argv))
    return OperatorConfig(
        pod_name=ns.pod_name, namespace=ns.namespace, http_host=ns.http_host,
        http_port=ns.http_port, data_dir=ns.data_dir,
        kubeconfig=ns.kubeconfig, insecure_dev_raft=ns.insecure_dev_raft,
        allowed_roots=tuple(os.path.realpath(r) for r in _list(ns.allowed_roots)),
        namespace_roots={k: os.path.realpath(v)
                         for k, v in _mapping(ns.namespace_roots).items()},
        allowed_buckets=_list(ns.allowed_buckets), watch_namespaces=_list(ns.watch_namespaces),
        log_format=ns.log_format, log_level=ns.log_level, tick_seconds=ns.tick,
        starting_deadline=ns.starting_deadline)
