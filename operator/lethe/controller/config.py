"""``lethe run`` settings: one table, each setting a flag with an environment fallback.

:data:`SETTINGS` is the single source of truth: ``lethe run --help`` shows every
entry with its variable and default, the chart sets exactly these variables
(``charts/lethe/templates/statefulset.yaml``), docs/install.md lists them, and
``tests/test_chart.py`` checks that the three agree. A flag wins over its
variable; an unset or empty variable means the default.

Raft peers: with ``--raft-self`` the peers are ``--raft-peers``; without it the
replica is ``<statefulset>-<ordinal>`` (its pod name) behind the headless
Service ``--raft-service``, and the seed is ordinals ``0..--raft-replicas-1``
(:func:`lethe.raft.discovery.discover`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lethe.raft.discovery import Discovery, discover

__all__ = ["ENV_ONLY", "SETTINGS", "OperatorConfig", "Setting", "parse_config"]


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
    #: Runs the leader executes at once (threads; each mostly waits on the API
    #: server, Raft and storage).
    concurrent_runs: int = 16
    raft_self: str = ""
    raft_peers: tuple[str, ...] = ()
    raft_bind: str = ""
    raft_service: str = ""
    raft_port: int = 7000
    raft_replicas: int = 1
    raft_password_file: str = ""

    def discovery(self) -> Discovery:
        """This replica's Raft identity and bootstrap seed (raises ValueError)."""
        return discover(pod_name=self.pod_name, namespace=self.namespace,
                        raft_self=self.raft_self, raft_peers=self.raft_peers,
                        raft_bind=self.raft_bind, service=self.raft_service,
                        port=self.raft_port, replicas=self.raft_replicas)


@dataclass(frozen=True, slots=True)
class Setting:
    """One ``lethe run`` option: ``--flag``, its variable, its default and meaning."""

    flag: str
    env: str
    #: The default as a user writes it; None: no value (shown as ``describe``).
    default: str | None
    help: str
    parse: Callable[[str], Any] = str
    #: How --help shows a default that is not a constant.
    describe: str | None = None
    choices: tuple[str, ...] | None = None
    boolean: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not an integer") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("not a positive integer")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 0 < value < 65536:
        raise ValueError("not a TCP port (1-65535)")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not value > 0:
        raise ValueError("not a positive number")
    return value


def _truthy(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"", "0", "false", "no", "off"}:
        return False
    raise ValueError("not a boolean (1/0, true/false)")


SETTINGS: tuple[Setting, ...] = (
    # -- identity and Kubernetes API
    Setting("--pod-name", "POD_NAME", None, "this replica's pod name; in a StatefulSet also "
            "its Raft identity (<statefulset>-<ordinal>)", describe="the host name"),
    Setting("--namespace", "POD_NAMESPACE", "default",
            "the namespace the operator runs in (events, its StatefulSet, peer DNS names)"),
    Setting("--kubeconfig", "KUBECONFIG", None, "kubeconfig file",
            describe="the in-cluster service account"),
    Setting("--watch-namespaces", "LETHE_WATCH_NAMESPACES", "",
            "comma-separated namespaces to watch; empty watches the whole cluster"),
    # -- what policies may reach (docs/security.md)
    Setting("--allowed-roots", "LETHE_ALLOWED_ROOTS", "",
            "comma-separated POSIX roots a policy may target; empty allows no POSIX target"),
    Setting("--namespace-roots", "LETHE_NAMESPACE_ROOTS", "",
            "comma-separated namespace=/root pairs: confine a namespace's policies to a root"),
    Setting("--allowed-buckets", "LETHE_ALLOWED_BUCKETS", "",
            "comma-separated S3 buckets a policy may target; empty allows any bucket"),
    # -- local state, HTTP, logs, scheduling
    Setting("--data-dir", "LETHE_DATA_DIR", "/var/lib/lethe",
            "the replica's own state (Raft log and snapshots under raft/)"),
    Setting("--http-host", "LETHE_HTTP_HOST", "0.0.0.0",
            "address of /healthz, /readyz, /raft and /metrics"),
    Setting("--http-port", "LETHE_HTTP_PORT", "8080", "port of the HTTP server", parse=_port),
    Setting("--log-format", "LETHE_LOG_FORMAT", "json", "log lines as JSON objects or text",
            choices=("json", "text")),
    Setting("--log-level", "LETHE_LOG_LEVEL", "INFO",
            "lowest level logged (secrets are never logged at any level)",
            choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Setting("--tick", "LETHE_TICK_SECONDS", "1.0",
            "seconds between two looks of the leader loop at the schedules",
            parse=_positive_float),
    Setting("--starting-deadline", "LETHE_STARTING_DEADLINE_SECONDS", "300",
            "seconds a scheduled run may start late; a later one counts as missed",
            parse=_positive_float),
    Setting("--concurrent-runs", "LETHE_CONCURRENT_RUNS", "16",
            "runs (of different policies) the leader executes at the same time",
            parse=_positive_int),
    # -- Raft (docs/raft.md)
    Setting("--raft-port", "LETHE_RAFT_PORT", "7000",
            "Raft port (StatefulSet layout: every member listens on it)", parse=_port),
    Setting("--raft-replicas", "LETHE_RAFT_REPLICAS", "1",
            "StatefulSet layout: size of the bootstrap seed (ordinals 0..N-1); once the "
            "cluster exists, membership lives in the Raft log", parse=_positive_int),
    Setting("--raft-service", "LETHE_RAFT_SERVICE", "",
            "StatefulSet layout: the headless Service of the peer DNS names",
            describe="the StatefulSet's name"),
    Setting("--raft-self", "LETHE_RAFT_SELF", "",
            "explicit layout: this member's advertised host:port (replaces the "
            "StatefulSet layout)"),
    Setting("--raft-peers", "LETHE_RAFT_PEERS", "",
            "explicit layout: comma-separated host:port of the other members"),
    Setting("--raft-bind", "LETHE_RAFT_BIND", "",
            "host:port the Raft server binds", describe="--raft-self, or 0.0.0.0:<raft-port>"),
    Setting("--raft-password-file", "LETHE_RAFT_PASSWORD_FILE", "",
            "file holding the shared Raft password (a mounted Secret)"),
    Setting("--insecure-dev-raft", "LETHE_INSECURE_DEV_RAFT", "false",
            "run Raft WITHOUT a password: local development only (anyone who reaches the "
            "Raft port can run code in the operator)", parse=_truthy, boolean=True),
)

#: Read from the environment only, never from a flag (a flag shows in `ps`).
ENV_ONLY: Mapping[str, str] = {
    "LETHE_RAFT_PASSWORD": "the Raft password itself; used when no password file is set",
    "LETHE_POSIX_PARALLELISM": "threads per POSIX target once it measures latency-bound "
                               "(NFS), 1..256; default 16, 1 = one operation at a time",
}


def _list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _mapping(value: str) -> dict[str, str]:
    out = {}
    for item in _list(value):
        ns, _, root = item.partition("=")
        if not ns or not root.startswith("/"):
            raise ValueError(f"{item!r} is not namespace=/absolute/path")
        out[ns] = root
    return out


def _help(s: Setting) -> str:
    shown = s.describe if s.describe is not None else (s.default or "empty")
    return f"{s.help} [env {s.env}; default: {shown}]"


def parser() -> argparse.ArgumentParser:
    """The ``lethe run`` parser; defaults are filled from the environment later."""
    epilog = "Environment only:\n" + "\n".join(f"  {k}  {v}" for k, v in ENV_ONLY.items())
    p = argparse.ArgumentParser(
        prog="lethe run", epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one operator replica (the container's entry point). Every option "
                    "falls back to the environment variable shown with it.")
    for s in SETTINGS:
        if s.boolean:
            p.add_argument(s.flag, dest=s.dest, action="store_true", default=None,
                           help=_help(s))
        else:
            p.add_argument(s.flag, dest=s.dest, default=None, choices=s.choices,
                           metavar=s.dest.upper(), help=_help(s))
    return p


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> OperatorConfig:
    """Flags, else the environment, else the defaults of :data:`SETTINGS`.

    A bad value exits with status 2 and a message naming the flag and variable.
    """
    e = os.environ if env is None else env
    p = parser()
    ns = p.parse_args(list(argv))
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw, source = getattr(ns, s.dest), s.flag
        if raw is True:  # a boolean flag given
            values[s.dest] = True
            continue
        if raw is None:
            raw, source = e.get(s.env) or None, s.env
        if raw is None:
            raw, source = s.default, "default"
        if raw is None:
            values[s.dest] = None
            continue
        where = s.flag if source == s.flag else f"{s.env} (the default of {s.flag})"
        if s.choices is not None and raw not in s.choices:
            p.error(f"{where}: {raw!r} is not one of {', '.join(s.choices)}")
        try:
            values[s.dest] = s.parse(raw)
        except ValueError as exc:
            p.error(f"{where}: {raw!r} is {exc}")
    try:
        namespace_roots = _mapping(values["namespace_roots"])
    except ValueError as exc:
        p.error(f"--namespace-roots / LETHE_NAMESPACE_ROOTS: {exc}")
    return OperatorConfig(
        pod_name=values["pod_name"] or os.uname().nodename, namespace=values["namespace"],
        http_host=values["http_host"], http_port=values["http_port"],
        data_dir=values["data_dir"], kubeconfig=values["kubeconfig"],
        insecure_dev_raft=values["insecure_dev_raft"],
        allowed_roots=tuple(os.path.realpath(r) for r in _list(values["allowed_roots"])),
        namespace_roots={k: os.path.realpath(v) for k, v in namespace_roots.items()},
        allowed_buckets=_list(values["allowed_buckets"]),
        watch_namespaces=_list(values["watch_namespaces"]),
        log_format=values["log_format"], log_level=values["log_level"],
        tick_seconds=values["tick"],
        starting_deadline=values["starting_deadline"],
        concurrent_runs=values["concurrent_runs"],
        raft_self=values["raft_self"], raft_peers=_list(values["raft_peers"]),
        raft_bind=values["raft_bind"], raft_service=values["raft_service"],
        raft_port=values["raft_port"], raft_replicas=values["raft_replicas"],
        raft_password_file=values["raft_password_file"])
