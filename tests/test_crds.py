"""The CRDs against a real kube-apiserver: install, examples, validation, printing, explain.

Every invalid object in tests/crd_cases.py must be rejected by the API server
with a message naming the field, and by ``lethe.spec`` with ``SpecError.field``
naming the same field, so the two validators never drift apart.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from lethe.spec import AMBIGUOUS_UNIT, DURATION_PATTERN, SpecError, parse_policy, parse_spec
from tests.crd_cases import API, INVALID, VALID, Case
from tests.fixtures.kube import CRD_DIR, CRD_NAMES, ROOT, KubeCluster

EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
NS = "lethe-crd-tests"


def _crd(plural: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CRD_DIR / f"{plural}.lethe.io.yaml").read_text())
    return doc


def _schema(plural: str) -> dict[str, Any]:
    schema: dict[str, Any] = _crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="module")
def ns(crds_installed: KubeCluster) -> Iterator[KubeCluster]:
    kube = crds_installed
    kube.kubectl("create", "namespace", NS, check=False)
    yield kube
    # No namespace controller runs, so delete the objects, not the namespace.
    kube.kubectl("delete", "retentionpolicies,cleanupjobs", "--all", "-n", NS, "--wait=false",
                 check=False)


def _parser_error(case: Case) -> SpecError | None:
    """What lethe.spec says about a case; None if the parser does not cover it."""
    obj = case.obj(NS)
    try:
        if case.kind == "RetentionPolicy":
            parse_policy(obj)
        elif "policy" in obj["spec"] and case.field.startswith("spec.policy."):
            parse_spec(obj["spec"]["policy"], name="job", namespace=NS, path="spec.policy")
        else:
            return None
    except SpecError as e:
        return e
    raise AssertionError(f"lethe.spec accepted {case.id}: {json.dumps(obj['spec'])}")


# --- static checks (no server) --------------------------------------------------


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("plural", ["retentionpolicies", "cleanupjobs"])
def test_duration_fields_match_the_parser(plural: str) -> None:
    """Every duration field has the parser's pattern and its ambiguous-m rule, and
    the fixed-length ones refuse months, so kubectl and `lethe plan` agree."""
    fields = {p.rsplit(".", 1)[-1]: node for p, node in _walk(_schema(plural), "")
              if node.get("pattern") == DURATION_PATTERN}
    assert set(fields) == {"maxAge", "minAge", "keepWithin", "maxClockSkew",
                           "noncurrentVersionsMaxAge", "abortIncompleteUploadsAfter"}
    for name, node in fields.items():
        rules = [v["rule"] for v in node.get("x-kubernetes-validations", [])]
        assert f"!self.matches('{AMBIGUOUS_UNIT.pattern}')" in rules, name
        fixed = "!self.matches('[0-9](y|mo)')" in rules
        assert fixed == (name not in ("maxAge", "minAge", "keepWithin")), name


@pytest.mark.parametrize("plural", ["retentionpolicies", "cleanupjobs"])
def test_every_field_has_a_description(plural: str) -> None:
    missing = [p for p, node in _walk(_schema(plural), "") if p != ".metadata"
               and not node.get("description")]
    assert not missing, f"fields without a description: {missing}"


def test_inline_job_policy_schema_is_the_policy_spec_schema() -> None:
    # The CleanupJob's inline policy is a copy of the RetentionPolicy spec; keep them equal.
    policy_spec = dict(_schema("retentionpolicies")["properties"]["spec"])
    inline = dict(_schema("cleanupjobs")["properties"]["spec"]["properties"]["policy"])
    policy_spec.pop("description")
    inline.pop("description")
    assert inline == policy_spec


# CleanupJob-level rules (policyRef vs inline, ttl) are not lethe.spec's business.
PARSER_CASES = [c for c in INVALID
                if c.kind == "RetentionPolicy" or c.field.startswith("spec.policy.")]


@pytest.mark.parametrize("case", PARSER_CASES, ids=lambda c: c.id)
def test_parser_rejects_invalid_case_naming_the_field(case: Case) -> None:
    err = _parser_error(case)
    assert err is not None
    assert err.field == case.field, f"parser blamed {err.field!r}: {err}"
    assert case.message in str(err), f"parser said {err}, not {case.message!r}"


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_parser_accepts_valid_case(case: Case) -> None:
    spec = case.spec()
    if case.kind == "RetentionPolicy":
        parse_policy({"kind": "RetentionPolicy", "metadata": {"name": "x"}, "spec": spec})
    elif "policy" in spec:
        parse_spec(spec["policy"], name="x", namespace="default", path="spec.policy")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policies_parse(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == "RetentionPolicy":
            parse_policy(doc)
        elif doc["kind"] == "CleanupJob" and "policy" in doc["spec"]:
            parse_spec(doc["spec"]["policy"], name="x", namespace="x", path="spec.policy")


# --- against the API server -----------------------------------------------------


def test_crds_are_established(crds_installed: KubeCluster) -> None:
    for name in CRD_NAMES:
        out = crds_installed.kubectl("get", "crd", name, "-o", "json").stdout
        conditions = {c["type"]: c["status"] for c in json.loads(out)["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
    # Short names and the category resolve. CleanupJob's is lcj: "cj" is CronJob's.
    proc = crds_installed.kubectl("get", "rp,lcj,lethe", "-A")
    assert "Warning" not in proc.stderr, proc.stderr


def test_examples_apply_cleanly(crds_installed: KubeCluster) -> None:
    # One call, all files: order within the call handles Namespace/Secret first.
    args = [a for p in EXAMPLES for a in ("-f", str(p))]
    assert len(EXAMPLES) >= 6
    out = crds_installed.kubectl("apply", "--validate=strict", *args)
    assert "Warning" not in out.stderr, out.stderr


@pytest.fixture(scope="module")
def api_answers(ns: KubeCluster) -> dict[str, subprocess.CompletedProcess[str]]:
    """kubectl create of every invalid case, run concurrently: one process each is slow."""
    def create(case: Case) -> subprocess.CompletedProcess[str]:
        return ns.kubectl("create", "--validate=strict", "-f", "-",
                          input=yaml.safe_dump(case.obj(NS)), check=False)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip((c.id for c in INVALID), pool.map(create, INVALID), strict=True))


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_api_server_rejects_invalid_case_naming_the_field(
    api_answers: dict[str, subprocess.CompletedProcess[str]], case: Case
) -> None:
    proc = api_answers[case.id]
    assert proc.returncode != 0, f"API server accepted {case.id}"
    err = proc.stderr
    # The path appears as spec.x.y (field errors) or "spec.x.y" (strict decoding).
    assert f"{case.field}:" in err or f"{case.field}[" in err or f'"{case.field}"' in err, err
    assert case.message in err, err


def test_api_server_accepts_valid_cases(ns: KubeCluster) -> None:
    # One call for all: a List of objects, server-side dry run (full validation).
    items = {"apiVersion": "v1", "kind": "List", "items": [c.obj(NS) for c in VALID]}
    ns.kubectl("create", "--dry-run=server", "--validate=strict", "-f", "-",
               input=yaml.safe_dump(items))


def test_mode_defaults_to_plan(ns: KubeCluster) -> None:
    obj = {"apiVersion": API, "kind": "RetentionPolicy",
           "metadata": {"name": "defaults", "namespace": NS}, "spec": {
               "target": {"posix": {"path": "/d"}}}}
    out = ns.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                     input=yaml.safe_dump(obj)).stdout
    assert json.loads(out)["spec"]["mode"] == "Plan"


def _status_patch(kube: KubeCluster, kind: str, name: str, status: dict[str, Any]) -> None:
    kube.kubectl("patch", kind, name, "-n", NS, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": status}))


def test_printer_columns_and_status_subresource(ns: KubeCluster) -> None:
    policy = {"apiVersion": API, "kind": "RetentionPolicy",
              "metadata": {"name": "printed", "namespace": NS}, "spec": {
                  "target": {"posix": {"path": "/data/printed"}},
                  "rules": {"maxAge": "7d"}, "schedule": "0 3 * * *", "mode": "Enforce"}}
    ns.apply(policy)
    now = "2030-01-02T03:04:05Z"
    _status_patch(ns, "rp", "printed", {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "RunSucceeded",
                        "message": "", "lastTransitionTime": now, "observedGeneration": 1}],
        "lastRun": {"id": "r-1", "start": now, "end": now, "result": "Succeeded",
                    "scanned": 10, "matched": 4, "deleted": 4, "bytesFreed": 4096,
                    "skippedChanged": 0, "errors": 0},
        "nextRunTime": now, "leader": "lethe-0", "eligible": 0, "oldestEligibleAge": "3d4h",
        "lastPlan": {"maxAge": {"items": 4, "bytes": 4096}}, "acknowledgedRun": "r-0",
    })
    out = ns.kubectl("get", "rp", "printed", "-n", NS).stdout
    header, row = out.splitlines()[:2]
    for column in ("NAME", "PATH", "BUCKET", "SCHEDULE", "MODE", "READY", "LAST RESULT",
                   "DELETED", "NEXT RUN", "AGE"):
        assert column in header, header
    for value in ("printed", "/data/printed", "0 3 * * *", "Enforce", "True", "Succeeded"):
        assert value in row, row

    job = {"apiVersion": API, "kind": "CleanupJob",
           "metadata": {"name": "printed-job", "namespace": NS},
           "spec": {"policyRef": {"name": "printed"}}}
    ns.apply(job)
    _status_patch(ns, "cleanupjob", "printed-job", {
        "observedGeneration": 1, "phase": "Succeeded", "progress": "done", "runId": "r-2",
        "counters": {"scanned": 3, "matched": 2, "deleted": 2, "bytesFreed": 10,
                     "skippedChanged": 0, "errors": 0},
        "startTime": now, "completionTime": now,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                        "message": "2 deleted", "lastTransitionTime": now}],
    })
    out = ns.kubectl("get", "cleanupjob", "printed-job", "-n", NS).stdout
    header, row = out.splitlines()[:2]
    for column in ("NAME", "POLICY", "PHASE", "MODE", "DELETED", "AGE"):
        assert column in header, header
    assert row.split()[:5] == ["printed-job", "printed", "Succeeded", "Plan", "2"], row


def test_status_schema_rejects_bad_phase(ns: KubeCluster) -> None:
    ns.apply({"apiVersion": API, "kind": "CleanupJob",
              "metadata": {"name": "bad-phase", "namespace": NS},
              "spec": {"policyRef": {"name": "x"}}})
    proc = ns.kubectl("patch", "cleanupjob", "bad-phase", "-n", NS, "--subresource=status",
                      "--type=merge", "-p", '{"status": {"phase": "Exploded"}}', check=False)
    assert proc.returncode != 0 and "status.phase" in proc.stderr, proc.stderr


def test_explain_teaches_the_rules(crds_installed: KubeCluster) -> None:
    # explain wraps text; compare with whitespace collapsed.
    out = " ".join(crds_installed.kubectl("explain", "retentionpolicy.spec.rules").stdout.split())
    for text in ("maxAge", "keepLast", "maxTotalSize", "keepDaily", "At least one deletion rule",
                 "Delete items older than this"):
        assert text in out, out
    out = " ".join(crds_installed.kubectl("explain", "cleanupjob.spec").stdout.split())
    assert "policyRef" in out and "exactly one" in out, out
