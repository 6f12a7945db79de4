"""Least privilege, proven against the real API server (issue 7, item 4).

Two claims about the RBAC the Helm chart renders (``charts/lethe/templates/rbac.yaml``):

* **It suffices.** One operator replica whose only identity is a ServiceAccount
  token bound by the chart's rendered ClusterRole and Role (not the admin)
  completes the whole scenario below.
* **Every rule is needed.** For each rule × verb of the rendered RBAC, the same
  scenario runs with a copy of the RBAC that lacks just that verb, and the
  operator must say so: the API server's 403 for exactly that verb and
  resource (``cannot <verb> resource "<resource>" in API group "<group>"``) in
  an error-level log line, a traceback, or a condition's message. A replica
  that dies or a ``Stalled`` condition for some other reason proves nothing
  about the verb and does not count. Nothing it cannot do may pass for success.

Both renders are proven: watching the whole cluster (one ClusterRole) and
``config.watchNamespaces`` (the namespaced rules in a Role per watched
namespace, with ``LETHE_WATCH_NAMESPACES`` set as the chart sets it).

The scenario, in its own namespace per case (which is also the replica's
``POD_NAMESPACE``, so the chart's namespaced Role lands there):

1. a RetentionPolicy without a schedule (its status is patched: Ready/NoSchedule);
2. an Enforce CleanupJob on it over a directory (files deleted, counters, events);
3. a Plan CleanupJob with ``ttlSecondsAfterFinished: 1`` (deleted after it finishes);
4. an S3 policy (a moto server) whose ``credentialsSecretRef`` names a Secret, and
   an Enforce CleanupJob on it: with the Secret read it deletes the bucket's old
   objects — without it, it fails as ``CredentialsMissing``;
5. the release's StatefulSet exists with ``replicas: 0``, so on SIGTERM the replica
   reads it, sees a scale-down and leaves Raft.

Cases whose removal the operator does not notice are product bugs: they are
``xfail(strict=True)`` with the reason, and reported (docs/testing.md lists them).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.kube import BIN_DIR, KubeCluster
from tests.fixtures.replicas import LocalReplicas, Replica
from tests.fixtures.s3 import S3Server
from tests.operator.conftest import condition

REPO = Path(__file__).resolve().parents[1]

RELEASE = "lethe"  # fullname "lethe": the replica "lethe-0" reads StatefulSet "lethe"
POD = "lethe-0"
CJ = "cleanupjobs.lethe.io"
RP = "retentionpolicies.lethe.io"
DAY = 86400
OLD, NEW = 5, 2  # files older / younger than the policy's maxAge
S3_OBJECTS = 3
READY_TIMEOUT = 30.0
SCENARIO_TIMEOUT = 25.0


# -- the cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One verb of one rendered rule, and what breaks without it (docs/testing.md)."""

    kind: str  # ClusterRole | Role
    group: str
    resources: tuple[str, ...]
    verb: str
    without: str
    #: Set when the operator does not notice the removal: why (a product bug).
    silent: str | None = None

    @property
    def id(self) -> str:
        res = "+".join(r.replace("retentionpolicies", "rp").replace("cleanupjobs", "cj")
                       for r in self.resources)
        return f"{self.kind}-{self.group or 'core'}-{res}-{self.verb}".replace(".", "_")

    @property
    def key(self) -> tuple[str, str, tuple[str, ...], str]:
        return (self.kind, self.group, self.resources, self.verb)


LETHE = "lethe.io"
KINDS = ("retentionpolicies", "cleanupjobs")
STATUS = ("retentionpolicies/status", "cleanupjobs/status")
CASES = [
    Case("ClusterRole", LETHE, KINDS, "list",
         "the initial LIST (main._initial_list) gets 403: the process exits after one "
         "error line quoting it, never ready"),
    Case("ClusterRole", LETHE, KINDS, "watch",
         "kopf's watch gets 403: nothing created after start-up is seen"),
    Case("ClusterRole", LETHE, STATUS, "patch",
         "every status patch gets 403: one ERROR line per object and tick quoting it; "
         "no phase, no conditions"),
    Case("ClusterRole", LETHE, ("cleanupjobs",), "delete",
         "ttlSecondsAfterFinished: the DELETE gets 403, logged at ERROR every tick; "
         "the finished job stays"),
    Case("ClusterRole", "", ("secrets",), "get",
         "credentialsSecretRef cannot be read: the job fails Stalled/CredentialsForbidden "
         "and the 403 is logged at ERROR"),
    Case("ClusterRole", "", ("events",), "create",
         "events are not posted: ERROR `cannot create events … forbidden` naming the "
         "verb and resource"),
    Case("ClusterRole", "apiextensions.k8s.io", ("customresourcedefinitions",), "list",
         "kopf cannot discover the CRDs (its resource scanning gets 403)"),
    Case("ClusterRole", "apiextensions.k8s.io", ("customresourcedefinitions",), "watch",
         "kopf cannot watch the CRDs for new/changed resources"),
    Case("Role", "apps", ("statefulsets",), "get",
         "on SIGTERM the StatefulSet read gets 403: ERROR `cannot tell a scale-down … "
         "forbidden`; the replica stays a Raft member"),
]


def _namespaced(case: Case) -> Case:
    """The same rule as the watchNamespaces render places it: namespaced rules move
    from the ClusterRole into a Role in each watched namespace."""
    if case.kind == "ClusterRole" and case.group != "apiextensions.k8s.io":
        return dataclasses.replace(case, kind="Role")
    return case


NS_CASES = [_namespaced(c) for c in CASES] + [
    Case("ClusterRole", "", ("namespaces",), "list",
         "kopf cannot learn which namespaces exist: each start retries the 403 at ERROR "
         "nine times before it falls back to the listed names"),
    Case("ClusterRole", "", ("namespaces",), "watch",
         "kopf cannot follow namespaces: a listed namespace created later is not seen "
         "until a restart"),
]


def _render(*, namespace: str, watch: bool) -> list[dict[str, Any]]:
    """The chart's RBAC, cluster-wide or with ``config.watchNamespaces=[namespace]``."""
    extra = ["--set", f"config.watchNamespaces={{{namespace}}}"] if watch else []
    out = subprocess.run(
        [str(BIN_DIR / "helm"), "template", RELEASE, str(REPO / "charts/lethe"),
         "--namespace", namespace, "--show-only", "templates/rbac.yaml", *extra],
        capture_output=True, text=True, check=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _rule_verbs(objs: list[dict[str, Any]]) -> set[tuple[str, str, tuple[str, ...], str]]:
    out = set()
    for o in objs:
        if o["kind"] in ("ClusterRole", "Role"):
            for rule in o.get("rules") or []:
                for group in rule.get("apiGroups") or []:
                    for verb in rule["verbs"]:
                        out.add((o["kind"], group, tuple(rule["resources"]), verb))
    return out


@pytest.mark.parametrize("watch", [False, True], ids=["cluster-wide", "watchNamespaces"])
def test_cases_cover_every_rendered_rule_and_verb(watch: bool) -> None:
    """A rule added to the chart without a case here fails this test (and vice versa)."""
    cases = NS_CASES if watch else CASES
    rendered = _rule_verbs(_render(namespace="rbac-coverage", watch=watch))
    assert rendered == {c.key for c in cases}
    assert len({c.id for c in cases}) == len(cases)


# -- one replica, one namespace, one identity ---------------------------------------


class _Replicas(LocalReplicas):
    """LocalReplicas whose pods live in ``namespace`` (the launcher hard-codes lethe-system)."""

    def __init__(self, *, namespace: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.namespace = namespace

    def _env(self, r: Replica) -> dict[str, str]:
        return {**super()._env(r), "POD_NAMESPACE": self.namespace}


def _without(objs: list[dict[str, Any]], case: Case | None, ns: str) -> list[dict[str, Any]]:
    """The rendered RBAC with ``case``'s verb removed; cluster-scoped names made unique."""
    out = []
    for o in copy.deepcopy(objs):
        if o["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            o["metadata"]["name"] = f"{RELEASE}-{ns}"
            if o["kind"] == "ClusterRoleBinding":
                o["roleRef"]["name"] = f"{RELEASE}-{ns}"
        if case is not None and o["kind"] == case.kind:
            rules = []
            for rule in o["rules"]:
                if (rule.get("apiGroups") == [case.group]
                        and tuple(rule["resources"]) == case.resources):
                    assert case.verb in rule["verbs"], (case, rule)
                    rule["verbs"] = [v for v in rule["verbs"] if v != case.verb]
                if rule["verbs"]:
                    rules.append(rule)
            o["rules"] = rules
        out.append(o)
    return out


def _kubeconfig(kube: KubeCluster, *, sa: str, ns: str, path: Path) -> str:
    token = kube.kubectl("create", "token", sa, "-n", ns, "--duration", "1h").stdout.strip()
    cfg = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cfg["users"] = [{"name": sa, "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = sa
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _files(root: Path, n: int, *, age_days: float, prefix: str) -> list[Path]:
    t = time.time() - age_days * DAY
    out = []
    for i in range(n):
        p = root / f"{prefix}-{i}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x" * 10)
        os.utime(p, (t, t))
        out.append(p)
    return out


def _obj(kind: str, name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "lethe.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _statefulset(ns: str, replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "lethe", "app.kubernetes.io/instance": RELEASE}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": RELEASE, "namespace": ns},
            "spec": {"replicas": replicas, "serviceName": RELEASE,
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "lethe",
                                                           "image": "lethe:test"}]}}}}


@dataclass
class Observation:
    ready: bool = False
    died: bool = False
    readyz_after: int = 0  # /readyz once the scenario ran (0: no answer)
    log: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    raw_lines: list[str] = field(default_factory=list)  # not JSON: tracebacks, crashes
    objects: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    events: set[str] = field(default_factory=set)
    old: list[Path] = field(default_factory=list)
    new: list[Path] = field(default_factory=list)
    s3_left: int = -1

    def errors(self, *, said: bool = False) -> list[str]:
        """Error-level text, quotes unescaped: ERROR/CRITICAL records and raw lines.
        ``said``: only what a person reads first, the records' messages (no
        tracebacks, no raw lines)."""
        out = [f"{r.get('logger')}: {r.get('message')}" + ("" if said else
                                                           f" {r.get('exc_info') or ''}")
               for r in self.records if r.get("level") in ("ERROR", "CRITICAL")]
        if not said:
            out += self.raw_lines
        return [t.replace('\\"', '"') for t in out]

    def stalls(self) -> set[tuple[str, str, str]]:
        out = set()
        for (kind, name), o in self.objects.items():
            c = condition(o, "Stalled")
            if c and c.get("status") == "True":
                out.add((kind, name, str(c.get("reason"))))
        return out

    def summary(self) -> str:
        st = {f"{k}/{n}": (o or {}).get("status") for (k, n), o in self.objects.items()}
        return (f"ready={self.ready} died={self.died} readyz_after={self.readyz_after} "
                f"scenario_complete={_done(self.objects)} events={sorted(self.events)} "
                f"left_raft={'leaving Raft' in self.log}\n"
                f"status={json.dumps(st, default=str)[:3000]}\n"
                f"log tail:\n{self.log[-4000:]}")


def _parse_log(text: str, obs: Observation) -> None:
    obs.log = text
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            obs.records.append(rec)
        elif line.strip():
            obs.raw_lines.append(line)


def _setup(kube: KubeCluster, ns: str, case: Case | None, rbac: list[dict[str, Any]],
           workdir: Path, s3: S3Server) -> str:
    # A rerun against a kept cluster (LETHE_TEST_KUBECONFIG) starts from scratch.
    kube.kubectl("delete", f"{CJ},{RP}", "--all", "-n", ns, "--wait=false", check=False)
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": RELEASE, "namespace": ns}},
        *_without(rbac, case, ns), _statefulset(ns, 0),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": ns},
         "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key,
                        "AWS_SECRET_ACCESS_KEY": s3.secret_key}}]
    kube.apply(yaml.safe_dump_all(docs))
    return _kubeconfig(kube, sa=RELEASE, ns=ns, path=workdir / "sa.kubeconfig")


def _objects(kube: KubeCluster, ns: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Both kinds in ``ns`` by (kind, name), in one kubectl call."""
    out = kube.kubectl("get", f"{RP},{CJ}", "-n", ns, "-o", "json").stdout
    return {(o["kind"], o["metadata"]["name"]): o for o in json.loads(out)["items"]}


def _done(objs: Mapping[tuple[str, str], dict[str, Any] | None]) -> bool:
    """The whole scenario happened: both jobs finished, the TTL one deleted, policy status."""
    return bool(
        _finished(objs.get(("CleanupJob", "now"))) and _finished(objs.get(("CleanupJob", "s3")))
        and objs.get(("CleanupJob", "ttl")) is None
        and condition(objs.get(("RetentionPolicy", "logs")), "Ready"))


def _finished(obj: dict[str, Any] | None) -> bool:
    return ((obj or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _forbidden_in(text: str) -> bool:
    return "forbidden" in text.lower() or " 403" in text


@contextlib.contextmanager
def _replica(ns: str, kc: str, workdir: Path, root: Path, watch: bool) -> Iterator[_Replicas]:
    env = {"LETHE_ALLOWED_ROOTS": str(root), "LETHE_LOG_FORMAT": "json",
           "LETHE_TICK_SECONDS": "0.5"}
    if watch:  # as the chart sets it with config.watchNamespaces
        env["LETHE_WATCH_NAMESPACES"] = ns
    reps = _Replicas(namespace=ns, count=1, workdir=workdir, kubeconfigs=[kc],
                     password=secrets.token_hex(16), env=env)
    reps.start()
    try:
        yield reps
    finally:
        reps.stop()


def run_scenario(kube: KubeCluster, s3: S3Server, tmp: Path, ns: str,
                 rbac: list[dict[str, Any]], case: Case | None, *,
                 watch: bool = False) -> Observation:
    root, workdir = tmp / "data", tmp / "work"
    root.mkdir()
    workdir.mkdir()
    kc = _setup(kube, ns, case, rbac, workdir, s3)
    client = s3.client()
    bucket = f"{ns}-{secrets.token_hex(4)}"[:63]
    client.create_bucket(Bucket=bucket)
    for i in range(S3_OBJECTS):
        client.put_object(Bucket=bucket, Key=f"data/obj-{i}", Body=b"d")
    # Older than the policy's maxAge (1 s) by the server's clock, whose Date header
    # counts whole seconds, before the policy exists (CI once had the replica ready
    # within a second, and nothing was eligible yet).
    put_done = time.monotonic()
    obs = Observation()
    with _replica(ns, kc, workdir, root, watch) as reps:
        r = reps.replicas[0]
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and r.alive():
            if r.get("/readyz")[0] == 200:
                obs.ready = True
                break
            time.sleep(0.3)
        if obs.ready:  # a replica that never gets ready has said so: nothing to drive
            obs.old = _files(root / "logs", OLD, age_days=40, prefix="old")
            obs.new = _files(root / "logs", NEW, age_days=1, prefix="new")
            time.sleep(max(0.0, put_done + 3.0 - time.monotonic()))
            kube.apply(yaml.safe_dump_all([
                _obj("RetentionPolicy", "logs", ns, {
                    "target": {"posix": {"path": str(root / "logs")}},
                    "rules": {"maxAge": "30d"}}),
                _obj("RetentionPolicy", "bucket", ns, {
                    "target": {"s3": {"bucket": bucket, "prefix": "data/",
                                      "endpoint": s3.endpoint, "region": s3.region,
                                      "forcePathStyle": True,
                                      "credentialsSecretRef": {"name": "s3"}}},
                    "rules": {"maxAge": "1s"},
                    "safety": {"allowDeleteAll": True}}),  # every object goes, on purpose
                _obj("CleanupJob", "now", ns, {"policyRef": {"name": "logs"},
                                               "mode": "Enforce"}),
                _obj("CleanupJob", "ttl", ns, {"policyRef": {"name": "logs"},
                                               "ttlSecondsAfterFinished": 1}),
                _obj("CleanupJob", "s3", ns, {"policyRef": {"name": "bucket"},
                                              "mode": "Enforce"})]))
            # Until the scenario completes, or the replica says loudly it cannot.
            deadline = time.monotonic() + SCENARIO_TIMEOUT
            while time.monotonic() < deadline and r.alive() and not _done(_objects(kube, ns)):
                text = r.log_path.read_text(errors="replace")
                if any(_forbidden_in(line) for line in text.splitlines()
                       if '"level": "ERROR"' in line or line.startswith("Traceback")):
                    time.sleep(2)  # let it show what else it does about it
                    break
                time.sleep(0.3)
            obs.readyz_after = r.get("/readyz")[0]
        obs.died = not r.alive()
        found = _objects(kube, ns)
        for key in (("RetentionPolicy", "logs"), ("RetentionPolicy", "bucket"),
                    ("CleanupJob", "now"), ("CleanupJob", "ttl"), ("CleanupJob", "s3")):
            obs.objects[key] = found.get(key)
        events = json.loads(kube.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
        obs.events = {e.get("reason") for e in events["items"]}
    _parse_log(r.log_path.read_text(errors="replace"), obs)  # after SIGTERM: shutdown too
    obs.s3_left = client.list_objects_v2(Bucket=bucket, Prefix="data/obj-").get("KeyCount", 0)
    return obs


# -- the proofs ---------------------------------------------------------------------


TEMPLATE_NS = "rbac-template"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return _render(namespace=TEMPLATE_NS, watch=False)


@pytest.fixture(scope="module")
def rendered_ns() -> list[dict[str, Any]]:
    return _render(namespace=TEMPLATE_NS, watch=True)


def _rendered_for(rendered: list[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    """The chart's RBAC as rendered for namespace ``ns`` (only namespaces differ)."""
    # Whole-document replace: the watchNamespaces render also names the namespace
    # in the LETHE_WATCH_NAMESPACES-matched Roles.
    return [yaml.safe_load(yaml.safe_dump(o).replace(TEMPLATE_NS, ns)) for o in rendered]


@pytest.mark.parametrize("watch", [False, True], ids=["cluster-wide", "watchNamespaces"])
def test_chart_identity_completes_a_full_run(crds_installed: KubeCluster, s3_server: S3Server,
                                             tmp_path: Path, watch: bool,
                                             rendered: list[dict[str, Any]],
                                             rendered_ns: list[dict[str, Any]]) -> None:
    """One replica, bound only by the chart's RBAC, does everything the operator does."""
    ns = "rbac-full-ns" if watch else "rbac-full"
    obs = run_scenario(crds_installed, s3_server, tmp_path, ns,
                       _rendered_for(rendered_ns if watch else rendered, ns), None, watch=watch)
    why = obs.summary()
    assert obs.ready and not obs.died and obs.readyz_after == 200, why
    now = obs.objects[("CleanupJob", "now")]
    assert now is not None, why
    st = now["status"]
    assert st["phase"] == "Succeeded", why
    assert st["counters"]["deleted"] == OLD and st["counters"]["matched"] == OLD, why
    assert st["counters"]["scanned"] == OLD + NEW and st["counters"]["errors"] == 0, why
    assert condition(now, "Ready")["status"] == "True", why  # type: ignore[index]
    assert not any(p.exists() for p in obs.old) and all(p.exists() for p in obs.new)
    # A schedule-free policy's status is patched by the leader.
    pol = obs.objects[("RetentionPolicy", "logs")]
    ready = condition(pol, "Ready")
    assert ready and ready["status"] == "True" and ready["reason"] == "NoSchedule", why
    assert pol and pol["status"]["leader"] == POD, why
    # ttlSecondsAfterFinished: deleted.
    assert obs.objects[("CleanupJob", "ttl")] is None, why
    # The Secret was read: the S3 job deleted the bucket's objects with its keys.
    s3 = obs.objects[("CleanupJob", "s3")]
    assert s3 and s3["status"]["phase"] == "Succeeded", why
    assert s3["status"]["counters"]["deleted"] == S3_OBJECTS and obs.s3_left == 0, why
    assert not obs.stalls(), why
    assert {"RunStarted", "RunFinished"} <= obs.events, why
    # On SIGTERM it read the StatefulSet (replicas: 0) and left Raft.
    assert "the StatefulSet shrank below this replica: leaving Raft" in obs.log, why
    assert not obs.errors(), why
    assert not any(_forbidden_in(t) for t in obs.log.splitlines()), why


def _evidence(obs: Observation, case: Case, *, said: bool = False) -> list[str]:
    """Where the operator said the API server refused exactly ``case``'s verb on its
    resource (an error-level log line, a traceback, or a condition's message);
    empty if it did not. A replica that merely failed, or a Stalled condition for
    another reason, proves nothing about this verb. ``said``: in an error
    record's message or a condition only, not buried in a traceback."""
    group = re.escape(case.group)
    pats = [re.compile(rf'cannot {case.verb} resource "{re.escape(res)}" in API group "{group}"')
            for res in case.resources]
    texts = [f"error log: {t}" for t in obs.errors(said=said)]
    for (kind, name), o in obs.objects.items():
        for c in ((o or {}).get("status") or {}).get("conditions") or []:
            texts.append(f"{kind}/{name} {c.get('type')}={c.get('status')} "
                         f"{c.get('reason')}: {c.get('message')}")
    return [t[:300] for t in texts if any(p.search(t) for p in pats)]


def _params(cases: list[Case], watch: bool) -> list[Any]:
    return [pytest.param(c, watch, id=("ns-" if watch else "") + c.id,
                         marks=[pytest.mark.xfail(strict=True, reason=c.silent)]
                         if c.silent else []) for c in cases]


@pytest.mark.parametrize(("case", "watch"), _params(CASES, False) + _params(NS_CASES, True))
def test_every_rule_is_needed(case: Case, watch: bool, crds_installed: KubeCluster,
                              s3_server: S3Server, tmp_path: Path,
                              rendered: list[dict[str, Any]],
                              rendered_ns: list[dict[str, Any]]) -> None:
    """Without this verb the operator reports the API server's 403 for exactly that
    verb and resource (error log or condition), or the test fails."""
    ns = ("rbacns-" if watch else "rbac-") + re.sub(r"[^a-z0-9]+", "-",
                                                    case.id.lower())[:50].strip("-")
    obs = run_scenario(crds_installed, s3_server, tmp_path, ns,
                       _rendered_for(rendered_ns if watch else rendered, ns), case, watch=watch)
    print(f"\n[{case.id}] evidence: {_evidence(obs, case)}\n{obs.summary()[:1500]}")
    assert _evidence(obs, case), (
        f"removing {case.verb} on {case.group or 'core'}/{','.join(case.resources)} from the "
        f"{case.kind} went unnoticed (no 403 for that verb and resource):\n{obs.summary()}")
    assert _evidence(obs, case, said=True), (
        f"the 403 for {case.verb} on {','.join(case.resources)} shows only inside a "
        f"traceback: say it in an error line or a condition\n{obs.summary()}")
