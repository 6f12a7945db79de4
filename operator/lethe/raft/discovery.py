"""Who my peers are: StatefulSet DNS names, or an explicit list.

In Kubernetes every replica is ``<statefulset>-<ordinal>`` behind a headless
Service, so peer ``i`` is ``<sts>-<i>.<svc>[.<ns>.svc]:<port>``. A replica binds
on all interfaces but *advertises* its DNS name: the name is its identity in
the Raft membership and survives a reschedule, while the IP does not (hence
the short DNS cache in :mod:`lethe.raft.config`). The headless Service should
set ``publishNotReadyAddresses: true`` so peers resolve before they are Ready.

The configured size is only the bootstrap seed. Once a cluster exists its
membership lives in the Raft log. Being in the seed does not make a replica a
member: after ``helm upgrade --set replicaCount=5`` the new pods lethe-3 and
lethe-4 are in the seed of five, yet the cluster is lethe-0..2. A replica
without Raft data therefore asks its peers first and joins through the leader
(:class:`lethe.raft.node.RaftJournal`); one outside the seed (``kubectl scale``
does not change the pod template, so new pods still see the old size) never
bootstraps. A replica that is scaled away leaves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysyncobj.node import TCPNode

__all__ = [
    "DialNode",
    "Discovery",
    "discover",
    "set_dial_overrides",
    "statefulset_peers",
]

_ORDINAL = re.compile(r"^(?P<sts>.+)-(?P<ordinal>\d+)$")

#: address -> "host:port" actually dialled. Empty in production; tests use it to
#: route each link through a TCP proxy they can cut, without changing identities.
_DIAL_OVERRIDES: dict[str, str] = {}


def set_dial_overrides(overrides: Mapping[str, str]) -> None:
    """Dial ``address`` at ``overrides[address]`` (process-wide; tests only)."""
    _DIAL_OVERRIDES.clear()
    _DIAL_OVERRIDES.update(overrides)


class DialNode(TCPNode):  # type: ignore[misc]  # pysyncobj is untyped
    """A pysyncobj TCP node whose identity is its advertised address.

    Identical to ``TCPNode`` unless a dial override exists for the address:
    then connections go to the override (a test proxy) while the node keeps
    its identity, so membership, votes and logs are unaffected.
    """

    def _dial(self) -> tuple[str, int] | None:
        target = _DIAL_OVERRIDES.get(self.address)
        if target is None:
            return None
        host, port = target.rsplit(":", 1)
        return host, int(port)

    @property
    def ip(self) -> Any:
        dial = self._dial()
        if dial is None:
            return super().ip
        from pysyncobj.dns_resolver import globalDnsResolver
        return globalDnsResolver().resolve(dial[0])

    @property
    def port(self) -> int:
        dial = self._dial()
        return int(super().port) if dial is None else dial[1]


def statefulset_peers(*, statefulset: str, service: str, namespace: str | None, port: int,
                      replicas: int) -> list[str]:
    """Advertised addresses of ordinals ``0..replicas-1``."""
    suffix = f".{namespace}.svc" if namespace else ""
    return [f"{statefulset}-{i}.{service}{suffix}:{port}" for i in range(replicas)]


@dataclass(frozen=True, slots=True)
class Discovery:
    #: My advertised address (identity).
    self_address: str
    #: The bootstrap seed: every member address I should know at start, me included
    #: when I am part of it.
    seed: tuple[str, ...]
    #: Where the Raft server binds (``0.0.0.0:<port>`` in a pod).
    bind_address: str | None = None
    dial: Mapping[str, str] = field(default_factory=dict)

    @property
    def peers(self) -> list[str]:
        return [a for a in self.seed if a != self.self_address]

    @property
    def in_seed(self) -> bool:
        """False for a replica added by ``kubectl scale`` without a new configured size:
        it never bootstraps, it can only join. True does not mean "member" (see the
        module doc)."""
        return self.self_address in self.seed


def discover(*, pod_name: str, namespace: str | None, raft_self: str = "",
             raft_peers: Sequence[str] = (), raft_bind: str = "", service: str = "",
             port: int = 7000, replicas: int = 1) -> Discovery:
    """This member's identity and bootstrap seed (the ``lethe run --raft-*`` settings).

    Explicit layout when ``raft_self`` is set: the seed is ``raft_self`` plus
    ``raft_peers``. Otherwise the StatefulSet layout: ``pod_name`` is
    ``<sts>-<ordinal>``, peers are ``<sts>-<i>.<service>.<namespace>.svc:<port>``
    for ``i < replicas`` (``service`` defaults to ``<sts>``). Raises ValueError
    naming the setting when neither layout applies.
    """
    if raft_self:
        seed = tuple(dict.fromkeys([raft_self, *(p.strip() for p in raft_peers if p.strip())]))
        return Discovery(self_address=raft_self, seed=seed, bind_address=raft_bind or None)
    m = _ORDINAL.match(pod_name)
    if m is None:
        raise ValueError(f"pod name {pod_name!r} (--pod-name / POD_NAME) is not "
                         "<statefulset>-<ordinal>; set --raft-self/--raft-peers "
                         "(LETHE_RAFT_SELF/LETHE_RAFT_PEERS) instead")
    service = service or m["sts"]
    seed = tuple(statefulset_peers(statefulset=m["sts"], service=service,
                                   namespace=namespace or None, port=port, replicas=replicas))
    suffix = f".{namespace}.svc" if namespace else ""
    me = f"{pod_name}.{service}{suffix}:{port}"
    return Discovery(self_address=me, seed=seed, bind_address=raft_bind or f"0.0.0.0:{port}")
