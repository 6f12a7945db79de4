"""The Helm chart, the raw manifests and the shipped docs artefacts.

Static checks (helm lint, schema, rendered objects, RBAC table, drift of the
chart's CRDs and of manifests/install.yaml) and checks against the real
kube-apiserver of the ``kube`` fixture (server-side dry-run of everything the
chart renders; a real ``helm install``/``helm upgrade`` that keeps the Raft
password). helm and kubectl come from ``make tools``; nothing here skips.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "lethe"
HELM = ROOT / ".cache" / "bin" / "helm"
INSTALL_YAML = ROOT / "manifests" / "install.yaml"
RENDER = ROOT / "scripts" / "render-manifests.sh"


def _kube_version() -> str:
    text = (ROOT / "tools" / "versions.env").read_text(encoding="utf-8")
    m = re.search(r"^K8S_VERSION=(\S+)", text, re.MULTILINE)
    assert m, "tools/versions.env has no K8S_VERSION"
    return m.group(1)


KUBE_VERSION = _kube_version()


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment where no user helm config, repository or plugin leaks in."""
    if not HELM.is_file():
        pytest.fail(f"{HELM.relative_to(ROOT)} is missing: run make tools")
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_CACHE_HOME=str(home / "cache"), XDG_DATA_HOME=str(home / "data"))
    env.pop("KUBECONFIG", None)
    return env


def _helm(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env,
                          timeout=180, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _template(env: dict[str, str], *sets: str, release: str = "lethe",
              namespace: str = "lethe-system") -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace,
            "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    out = _helm(env, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _env(sts: dict[str, Any]) -> dict[str, Any]:
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --------------------------------------------------------------------------- static


def test_values_validate_against_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(values, schema)


@pytest.mark.parametrize("sets", [
    [],
    ["nfs.server=nfs.example.com", "nfs.path=/exports/media"],
    ["nfs.existingClaim=media", "config.namespaceRoots.media=/data/media"],
    ["config.watchNamespaces={apps,media}", "metrics.serviceMonitor.enabled=true"],
    ["replicaCount=5", "persistence.enabled=false", "networkPolicy.enabled=false"],
    ["raft.existingSecret=lethe-raft"],
], ids=["defaults", "nfs-inline", "nfs-claim", "namespaced", "five-ephemeral", "raft-secret"])
def test_helm_lint(helm_env: dict[str, str], sets: list[str]) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    _helm(helm_env, *args)


@pytest.mark.parametrize(("sets", "needle"), [
    (["replicaCount=three"], "replicaCount"),
    (["replicaCount=0"], "replicaCount"),
    (["config.logFormat=xml"], "logFormat"),
    (["nfs.mountPath=data"], "mountPath"),
    (["replicas=3"], "replicas"),             # a typo is an error, not silently ignored
    (["raft.port=70000"], "port"),
])
def test_schema_rejects_bad_values(helm_env: dict[str, str], sets: list[str],
                                   needle: str) -> None:
    args = ["template", "lethe", str(CHART), "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    proc = _helm(helm_env, *args, check=False)
    assert proc.returncode != 0, f"{sets} was accepted"
    assert needle in proc.stderr, proc.stderr


def test_nfs_server_and_claim_are_exclusive(helm_env: dict[str, str]) -> None:
    proc = _helm(helm_env, "template", "lethe", str(CHART), "--kube-version", KUBE_VERSION,
                 "--set", "nfs.server=nfs", "--set", "nfs.path=/x",
                 "--set", "nfs.existingClaim=c", check=False)
    assert proc.returncode != 0 and "not both" in proc.stderr, proc.stderr


def test_statefulset_defaults(helm_env: dict[str, str]) -> None:
    docs = _template(helm_env)
    sts = _one(docs, "StatefulSet", "lethe")
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "lethe-raft"
    assert pod["terminationGracePeriodSeconds"] == 30
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    [claim] = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [c] = pod["containers"]
    assert c["image"] == "ghcr.io/lethe-io/lethe:0.1.0"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/var/lib/lethe": "data", "/etc/lethe/raft": "raft-password",
                      "/tmp": "tmp"}

    env = _env(sts)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["LETHE_RAFT_SERVICE"] == "lethe-raft"
    assert env["LETHE_RAFT_REPLICAS"] == "3"
    assert env["LETHE_RAFT_PORT"] == "7000"
    assert env["LETHE_HTTP_PORT"] == "8080"
    assert env["LETHE_DATA_DIR"] == "/var/lib/lethe"
    assert env["LETHE_RAFT_PASSWORD_FILE"] == "/etc/lethe/raft/password"
    assert env["LETHE_ALLOWED_ROOTS"] == ""          # no NFS configured: S3 only
    assert "LETHE_WATCH_NAMESPACES" not in env         # cluster-wide

    svc = _one(docs, "Service", "lethe-raft")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in svc["spec"]["ports"]] == [7000]
    assert _one(docs, "Service", "lethe-metrics")["spec"]["ports"][0]["port"] == 8080
    assert _one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]


# --------------------------------------------------------------- settings drift (#17)


def _settings_env() -> set[str]:
    """Every environment variable `lethe run` reads (its settings table)."""
    from lethe.controller.config import ENV_ONLY, SETTINGS
    return {s.env for s in SETTINGS} | set(ENV_ONLY)


# LETHE_TEST_*: pause points that only tests set (storage/pausepoint.py), documented
# in docs/testing.md; never a setting.
_NAME = re.compile(r"\bLETHE_(?!TEST_)[A-Z0-9_]+\b")


def test_chart_sets_only_variables_the_code_reads(helm_env: dict[str, str]) -> None:
    """Each variable the chart sets, with every optional one switched on, is a
    `lethe run` setting (LETHE_REPLICAS and LETHE_STATEFULSET were set and ignored)."""
    docs = _template(helm_env, "nfs.server=nfs.example", "nfs.path=/export",
                     "config.namespaceRoots.media=/data/media", "config.allowedBuckets={b}",
                     "config.watchNamespaces={team}")
    env = _env(_one(docs, "StatefulSet", "lethe"))
    ignored = sorted(set(env) - _settings_env() - {"HOME"})  # HOME: for Python, not lethe
    assert not ignored, f"the chart sets variables lethe run never reads: {ignored}"
    assert {"LETHE_NAMESPACE_ROOTS", "LETHE_ALLOWED_BUCKETS",
            "LETHE_WATCH_NAMESPACES"} <= set(env)


def test_every_variable_the_code_reads_is_a_documented_setting() -> None:
    """Any LETHE_* name in the operator's code is in the settings table, and the
    table (option, variable) is in docs/install.md and `lethe run --help`."""
    from lethe.controller.config import SETTINGS, parser
    in_code = set()
    for path in (ROOT / "operator" / "lethe").rglob("*.py"):
        in_code |= set(_NAME.findall(path.read_text(encoding="utf-8")))
    assert in_code - _settings_env() == set(), "read outside the settings table"
    install = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    helptext = " ".join(parser().format_help().split())
    for s in SETTINGS:
        assert f"| `{s.flag}` | `{s.env}` |" in install, f"{s.flag} missing in docs/install.md"
        assert s.flag in helptext and f"env {s.env};" in helptext, s.flag
    assert "LETHE_RAFT_PASSWORD`" in install and "LETHE_RAFT_PASSWORD" in helptext


def test_docs_name_no_variable_the_code_ignores() -> None:
    """docs/raft.md named LETHE_REPLICAS, which nothing read. (testing.md names the
    test suite's own variables.)"""
    known = _settings_env()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        if doc.name == "testing.md":
            continue
        unknown = set(_NAME.findall(doc.read_text(encoding="utf-8"))) - known
        assert not unknown, f"{doc.name} names variables lethe never reads: {sorted(unknown)}"


def test_run_settings_flags_env_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from lethe.controller.config import parse_config
    cfg = parse_config([], env={"POD_NAME": "lethe-2", "POD_NAMESPACE": "ops",
                                "LETHE_RAFT_REPLICAS": "5", "LETHE_RAFT_SERVICE": "lethe-raft",
                                "LETHE_HTTP_PORT": "9090", "LETHE_HTTP_HOST": ""})
    assert (cfg.http_port, cfg.http_host) == (9090, "0.0.0.0")  # empty means the default
    disc = cfg.discovery()
    assert disc.self_address == "lethe-2.lethe-raft.ops.svc:7000"
    assert len(disc.seed) == 5 and disc.bind_address == "0.0.0.0:7000"
    cfg = parse_config(["--http-port", "8081", "--raft-self", "127.0.0.1:7001"],
                       env={"LETHE_HTTP_PORT": "9090", "LETHE_RAFT_PEERS": "127.0.0.1:7002,"})
    assert cfg.http_port == 8081  # the flag wins
    assert cfg.discovery().peers == ["127.0.0.1:7002"]
    for env, named in (({"LETHE_HTTP_PORT": "http"}, "LETHE_HTTP_PORT"),
                       ({"LETHE_RAFT_REPLICAS": "0"}, "LETHE_RAFT_REPLICAS"),
                       ({"LETHE_LOG_FORMAT": "xml"}, "LETHE_LOG_FORMAT"),
                       ({"LETHE_INSECURE_DEV_RAFT": "maybe"}, "LETHE_INSECURE_DEV_RAFT"),
                       ({"LETHE_NAMESPACE_ROOTS": "media=data"}, "LETHE_NAMESPACE_ROOTS")):
        with pytest.raises(SystemExit) as exc:
            parse_config([], env=env)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, err
    with pytest.raises(ValueError, match="POD_NAME"):
        parse_config([], env={"POD_NAME": "laptop"}).discovery()
    # `lethe run --help` reaches this parser (the top-level one used to swallow it).
    from lethe.cli.main import main
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--raft-peers" in out and "LETHE_RAFT_PEERS" in out


def test_nfs_volume_and_allowed_roots(helm_env: dict[str, str]) -> None:
    sts = _one(_template(helm_env, "nfs.server=nfs.example.com", "nfs.path=/exports",
                         "config.namespaceRoots.media=/data/media",
                         "config.namespaceRoots.logs=/data/logs"), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    nfs = next(v for v in pod["volumes"] if v["name"] == "nfs")
    assert nfs["nfs"] == {"server": "nfs.example.com", "path": "/exports"}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "nfs")
    assert mount["mountPath"] == "/data" and not mount.get("readOnly")
    env = _env(sts)
    assert env["LETHE_ALLOWED_ROOTS"] == "/data"
    assert env["LETHE_NAMESPACE_ROOTS"] == "logs=/data/logs,media=/data/media"

    sts = _one(_template(helm_env, "nfs.existingClaim=media-nfs", "nfs.mountPath=/mnt/media",
                         "config.allowedBuckets={a,b}"), "StatefulSet")
    nfs = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "nfs")
    assert nfs["persistentVolumeClaim"] == {"claimName": "media-nfs"}
    assert _env(sts)["LETHE_ALLOWED_ROOTS"] == "/mnt/media"
    assert _env(sts)["LETHE_ALLOWED_BUCKETS"] == "a,b"

    sts = _one(_template(helm_env, "nfs.existingClaim=media-nfs",
                         "config.allowedRoots={/data,/scratch}",
                         "extraVolumes[0].name=scratch",
                         "extraVolumes[0].persistentVolumeClaim.claimName=scratch",
                         "extraVolumeMounts[0].name=scratch",
                         "extraVolumeMounts[0].mountPath=/scratch"), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert {"name": "scratch", "mountPath": "/scratch"} in pod["containers"][0]["volumeMounts"]
    assert {"name": "scratch", "persistentVolumeClaim": {"claimName": "scratch"}} in pod["volumes"]
    assert _env(sts)["LETHE_ALLOWED_ROOTS"] == "/data,/scratch"


def test_network_policy(helm_env: dict[str, str]) -> None:
    np = _one(_template(helm_env), "NetworkPolicy")
    raft, http = np["spec"]["ingress"]
    assert raft["ports"] == [{"port": "raft", "protocol": "TCP"}]
    assert raft["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "lethe", "app.kubernetes.io/instance": "lethe"}}}]
    assert http["ports"] == [{"port": "http", "protocol": "TCP"}] and "from" not in http
    np = _one(_template(helm_env, "networkPolicy.metricsFrom[0].namespaceSelector"
                                  ".matchLabels.team=monitoring"), "NetworkPolicy")
    assert np["spec"]["ingress"][1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]


# The operator's least-privilege RBAC (docs/security.md). One row per rule; the
# operator tests prove every row is needed. Change both together.
NAMESPACED_RULES = [
    (["lethe.io"], ["retentionpolicies", "cleanupjobs"], ["list", "watch"]),
    (["lethe.io"], ["retentionpolicies/status", "cleanupjobs/status"], ["patch"]),
    (["lethe.io"], ["cleanupjobs"], ["delete"]),
    ([""], ["secrets"], ["get"]),
    ([""], ["events"], ["create"]),
]
CLUSTER_RULES = [
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
]
# In the release's namespace: the replica's own StatefulSet, read on SIGTERM to
# tell a scale-down (leave Raft) from a restart.
SELF_RULES = [
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "resourceNames": ["lethe"],
     "verbs": ["get"]},
]


def _rules(role: dict[str, Any]) -> list[tuple[list[str], list[str], list[str]]]:
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames etc.
    return [(r["apiGroups"], r["resources"], r["verbs"]) for r in role["rules"]]


def test_rbac_is_exactly_the_table(helm_env: dict[str, str]) -> None:
    docs = _template(helm_env)
    assert _rules(_one(docs, "ClusterRole", "lethe")) == NAMESPACED_RULES + CLUSTER_RULES
    binding = _one(docs, "ClusterRoleBinding", "lethe")
    assert binding["roleRef"]["name"] == "lethe"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "lethe", "namespace": "lethe-system"}]
    assert _one(docs, "Role", "lethe-statefulset")["rules"] == SELF_RULES
    assert _one(docs, "RoleBinding", "lethe-statefulset")["subjects"] == binding["subjects"]
    assert {(d["kind"], d["metadata"]["name"]) for d in docs
            if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")} == {
        ("ClusterRole", "lethe"), ("ClusterRoleBinding", "lethe"),
        ("Role", "lethe-statefulset"), ("RoleBinding", "lethe-statefulset")}
    sts = _one(docs, "StatefulSet")
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] == "lethe"


def test_rbac_namespaced_mode(helm_env: dict[str, str]) -> None:
    docs = _template(helm_env, "config.watchNamespaces={apps,media}")
    # kopf observes Namespaces when it watches listed ones (names only).
    assert _rules(_one(docs, "ClusterRole", "lethe")) == [
        *CLUSTER_RULES, ([""], ["namespaces"], ["list", "watch"])]
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "lethe"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["apps", "media"]
    for role in roles:
        assert _rules(role) == NAMESPACED_RULES
    bindings = [d for d in docs if d["kind"] == "RoleBinding"
                and d["metadata"]["name"] == "lethe"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["apps", "media"]
    assert _env(_one(docs, "StatefulSet"))["LETHE_WATCH_NAMESPACES"] == "apps,media"


def _password(docs: list[dict[str, Any]]) -> str:
    secret = _one(docs, "Secret", "lethe-raft")
    return base64.b64decode(secret["data"]["password"]).decode()


def test_raft_password_generated_given_or_existing(helm_env: dict[str, str]) -> None:
    first, second = _password(_template(helm_env)), _password(_template(helm_env))
    assert re.fullmatch(r"[A-Za-z0-9]{32}", first), first
    assert first != second                      # generated, never a constant in the chart
    assert _password(_template(helm_env, "raft.password=hunter2hunter2")) == "hunter2hunter2"

    docs = _template(helm_env, "raft.existingSecret=my-raft")
    assert not [d for d in docs if d["kind"] == "Secret"]
    sts = _one(docs, "StatefulSet")
    vol = next(v for v in sts["spec"]["template"]["spec"]["volumes"]
               if v["name"] == "raft-password")
    assert vol["secret"]["secretName"] == "my-raft"
    # The upgrade path reads the stored password back (exercised for real below).
    assert 'lookup "v1" "Secret"' in (CHART / "templates" / "_helpers.tpl").read_text()


def test_chart_crds_identical_to_top_level() -> None:
    top = {p.name: p.read_bytes() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert top, "crds/ is empty"
    assert sorted(chart) == sorted(top), "charts/lethe/crds/ drifted: run make manifests"
    for name, data in top.items():
        assert chart[name] == data, f"charts/lethe/crds/{name} drifted: run make manifests"


def _render(helm_env: dict[str, str], out: Path) -> str:
    env = dict(helm_env, HELM=str(HELM))
    proc = subprocess.run([str(RENDER), "--output", str(out)], capture_output=True, text=True,
                          env=env, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    return out.read_text(encoding="utf-8")


def test_install_yaml_is_up_to_date(helm_env: dict[str, str], tmp_path: Path) -> None:
    fresh = _render(helm_env, tmp_path / "a.yaml")
    assert fresh == _render(helm_env, tmp_path / "b.yaml"), "rendering is not deterministic"
    assert INSTALL_YAML.is_file(), "manifests/install.yaml is missing: run make manifests"
    assert INSTALL_YAML.read_text(encoding="utf-8") == fresh, \
        "manifests/install.yaml drifted from the chart: run make manifests"


def test_install_yaml_contents() -> None:
    docs = [d for d in yaml.safe_load_all(INSTALL_YAML.read_text(encoding="utf-8")) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "lethe-system"
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "StatefulSet", "ClusterRole", "NetworkPolicy",
            "PodDisruptionBudget", "ServiceAccount"} <= kinds
    # No generated password is baked into the raw manifests: users create lethe-raft.
    assert "Secret" not in kinds
    sts = _one(docs, "StatefulSet", "lethe")
    vol = next(v for v in sts["spec"]["template"]["spec"]["volumes"]
               if v["name"] == "raft-password")
    assert vol["secret"]["secretName"] == "lethe-raft"
    for d in docs[1:]:
        if d["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == "lethe-system", d["metadata"]


# ------------------------------------------------------------------ docs artefacts

def _documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    names = set(re.findall(r"^\|\s*`(lethe_[a-z_]+)`", text, re.MULTILINE))
    assert names, "docs/metrics.md has no metrics table"
    return names


def test_grafana_dashboard_uses_documented_metrics() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text("utf-8"))
    assert dashboard["panels"] and dashboard["title"]

    def exprs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    yield v
                else:
                    yield from exprs(v)
        elif isinstance(node, list):
            for v in node:
                yield from exprs(v)

    used = {re.sub(r"_(bucket|sum|count)$", "", m)
            for e in exprs(dashboard) for m in re.findall(r"\blethe_[a-z_]+", e)}
    assert used, "the dashboard queries no lethe metric"
    assert used <= _documented_metrics(), used - _documented_metrics()


# ----------------------------------------------------------- the real API server

def _kubectl_out(proc: Any) -> str:
    out = proc.stdout
    return out.decode() if isinstance(out, bytes) else out


def _apply_namespace(kube: Any, name: str) -> None:
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))


def _dry_run(kube: Any, manifest: str) -> str:
    proc = kube.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server",
                        "--field-manager=lethe-chart-test", "-f", "-",
                        input=manifest, check=False)
    assert proc.returncode == 0, f"dry-run failed:\n{proc.stderr}"
    return _kubectl_out(proc)


def test_install_yaml_dry_run_server(kube: Any, crds_installed: Any) -> None:
    docs = [d for d in yaml.safe_load_all(INSTALL_YAML.read_text(encoding="utf-8")) if d]
    # A server-side dry run does not create the Namespace, so create it for real first.
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(docs[0]))
    out = _dry_run(kube, INSTALL_YAML.read_text(encoding="utf-8"))
    assert "statefulset.apps/lethe serverside-applied (server dry run)" in out, out


@pytest.mark.parametrize("sets", [
    ["nfs.server=nfs.example.com", "nfs.path=/exports", "config.namespaceRoots.media=/data/x"],
    ["nfs.existingClaim=media", "config.watchNamespaces={NS}", "persistence.enabled=false",
     "networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus"],
], ids=["nfs-inline-cluster-wide", "claim-namespaced"])
def test_chart_dry_run_server(kube: Any, crds_installed: Any, helm_env: dict[str, str],
                              sets: list[str]) -> None:
    ns = f"lethe-chart-{secrets.token_hex(3)}"
    _apply_namespace(kube, ns)
    args = ["template", "lethe", str(CHART), "--namespace", ns, "--kube-version", KUBE_VERSION,
            "--include-crds"]
    for s in sets:
        args += ["--set", s.replace("{NS}", "{" + ns + "}")]
    out = _dry_run(kube, _helm(helm_env, *args).stdout)
    assert "(server dry run)" in out


def test_helm_upgrade_keeps_generated_password(kube: Any, crds_installed: Any,
                                               helm_env: dict[str, str]) -> None:
    """A real install and upgrade: the generated Raft password survives the upgrade."""
    ns = f"lethe-helm-{secrets.token_hex(3)}"
    release = f"lethe-{secrets.token_hex(3)}"
    kcfg = ["--kubeconfig", str(kube.kubeconfig), "--namespace", ns]

    def stored() -> str:
        proc = kube.kubectl("-n", ns, "get", "secret", f"{release}-raft",
                            "-o", "jsonpath={.data.password}")
        return base64.b64decode(_kubectl_out(proc)).decode()

    # --skip-crds: the crds_installed fixture owns them. No --wait: there is no kubelet.
    _helm(helm_env, "install", release, str(CHART), *kcfg, "--create-namespace",
          "--skip-crds")
    try:
        before = stored()
        assert re.fullmatch(r"[A-Za-z0-9]{32}", before)
        _helm(helm_env, "upgrade", release, str(CHART), *kcfg, "--skip-crds",
              "--set", "replicaCount=5")
        assert stored() == before, "helm upgrade replaced the Raft password"
        sts = json.loads(_kubectl_out(kube.kubectl("-n", ns, "get", "statefulset", release,
                                                   "-o", "json")))
        assert sts["spec"]["replicas"] == 5
    finally:
        _helm(helm_env, "uninstall", release, *kcfg, check=False)
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
