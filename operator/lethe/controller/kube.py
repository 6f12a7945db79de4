"""Every write Lethe makes to the Kubernetes API goes through here, leader-only (I1).

Each write first asks the journal whether this node still leads with a valid
lease; a follower (or a deposed leader) writes nothing. Status patches use the
``lethe`` field manager so other tools can see who owns which fields.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

__all__ = ["GROUP", "VERSION", "KubeWriter", "NotAllowed", "SecretForbidden", "api_forbidden",
           "api_message", "api_unavailable", "load_api"]

GROUP = "lethe.io"
VERSION = "v1alpha1"
FIELD_MANAGER = "lethe"
PLURALS = {"RetentionPolicy": "retentionpolicies", "CleanupJob": "cleanupjobs"}

log = logging.getLogger("lethe.kube")


class SecretForbidden(Exception):
    """RBAC forbids reading a credentials Secret (not the same as a missing one)."""


class NotAllowed(Exception):
    """This node may not write to the API now (not the leader, or lease lost)."""


def api_message(e: ApiException) -> str:
    """The API server's own explanation (names verb, resource and group on a 403)."""
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason)
    except (ValueError, AttributeError):
        return str(e.reason)


def api_unavailable(exc: BaseException) -> bool:
    """The API server cannot take requests right now (down, restarting, overloaded):
    no connection, a timeout, a 5xx or a 429. A transient state to wait out, not a bug
    to log with a traceback; a 4xx (403, 422 …) is not this."""
    if isinstance(exc, urllib3.exceptions.HTTPError):  # refused, reset, timed out, TLS
        return True
    return isinstance(exc, ApiException) and (exc.status in (0, 429) or
                                              (exc.status or 0) >= 500)


def api_forbidden(exc: BaseException) -> str | None:
    """For a 403, one line saying what the operator may not do and what to change;
    else None. A missing grant is the operator's configuration, not a bug in it:
    a traceback per tick would bury the API server's own words, which name the
    verb, resource and group."""
    if not (isinstance(exc, ApiException) and exc.status == 403):
        return None
    return (f"forbidden (HTTP 403): {api_message(exc)}; grant it to the operator's "
            "ServiceAccount (the Helm chart's rbac.yaml renders every rule it needs)")


def load_api(kubeconfig: str | None = None, *, connections: int = 20) -> k8s.ApiClient:
    """The API client: in-cluster config, else ``kubeconfig``. ``connections``: HTTP
    connections kept open to the API server. The client's default (5 per CPU) is
    below the leader's run threads: each request beyond it opened a new TLS
    connection (urllib3 "connection pool is full"), and those handshakes' CPU
    starved the Raft thread until the leader lost its lease (1,000 policies)."""
    try:
        k8s_config.load_incluster_config()
        cfg = k8s.Configuration.get_default_copy()
    except k8s_config.ConfigException:
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = connections
    return k8s.ApiClient(configuration=cfg)


class KubeWriter:
    def __init__(self, *, api: k8s.ApiClient, may_write: Callable[[], bool],
                 component: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.may_write = may_write
        self.component = component

    def _guard(self) -> None:
        if not self.may_write():
            raise NotAllowed("not the leader with a valid lease: no API writes")

    def patch_status(self, *, kind: str, namespace: str, name: str,
                     status: Mapping[str, Any]) -> None:
        self._guard()
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURALS[kind], name, {"status": dict(status)},
                field_manager=FIELD_MANAGER)
        except ApiException as e:
            if e.status == 404:
                return  # deleted meanwhile: nothing to report on
            raise

    def delete(self, *, kind: str, namespace: str, name: str) -> None:
        self._guard()
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace,
                                                        PLURALS[kind], name)
        except ApiException as e:
            if e.status != 404:
                raise

    def event(self, *, obj: Mapping[str, Any], reason: str, message: str,
              warning: bool = False) -> None:
        """Post a Kubernetes event about ``obj``; failures are logged, never fatal."""
        self._guard()
        meta = obj.get("metadata", {})
        now = dt.datetime.now(dt.UTC)
        body = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name=f"{meta.get('name')}.{uuid.uuid4().hex[:12]}",
                                      namespace=meta.get("namespace")),
            involved_object=k8s.V1ObjectReference(
                api_version=obj.get("apiVersion", f"{GROUP}/{VERSION}"), kind=obj.get("kind"),
                name=meta.get("name"), namespace=meta.get("namespace"), uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion")),
            reason=reason, message=message[:1024], type="Warning" if warning else "Normal",
            first_timestamp=now, last_timestamp=now, count=1,
            source=k8s.V1EventSource(component="lethe", host=self.component),
            reporting_component="lethe.io/operator", reporting_instance=self.component)
        try:
            self.core.create_namespaced_event(meta.get("namespace"), body)
        except ApiException as e:
            if api_unavailable(e):
                log.warning("event %s not posted: API server unavailable: HTTP %s", reason,
                            e.status)
                return
            # Not fatal to a run, but a missing RBAC rule must be seen: say which.
            log.error("cannot create events (core/v1) in namespace %s: HTTP %s: %s",
                      meta.get("namespace"), e.status, api_message(e))
        except urllib3.exceptions.HTTPError as e:
            log.warning("event %s not posted: API server unreachable: %s", reason,
                        type(e).__name__)

    def read_object(self, *, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API server holds it now, ``None`` if it does not exist.

        A LIST by name, because the operator's role grants list and watch on its
        kinds, not get. Raises ``ApiException`` and urllib3 errors to the caller.
        """
        out = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], field_selector=f"metadata.name={name}")
        items = out.get("items") or []
        return dict(items[0]) if items else None

    def read_secret(self, *, namespace: str, name: str) -> dict[str, str] | None:
        """Secret data, decoded; ``None`` if absent. Values are never logged."""
        try:
            s = self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status == 403:
                log.error("cannot get secret %s/%s: HTTP 403: %s", namespace, name,
                          api_message(e))
                raise SecretForbidden(f"reading Secret {namespace}/{name} is forbidden "
                                      f"(HTTP 403): grant the operator get on secrets") from e
            raise
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}
