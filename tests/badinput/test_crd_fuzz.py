"""Random RetentionPolicy specs against the real API server (server-side dry run).

Each generated object is either rejected with a message naming a ``spec.``
field, or accepted; an accepted object (as the server returns it, defaults
applied) must be handled by :func:`lethe.spec.parse_spec` without a crash:
it returns a Policy or raises SpecError, nothing else.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lethe.spec import Policy, SpecError, parse_spec
from tests.fixtures.kube import KubeCluster

NS = "badinput-fuzz"

junk = st.one_of(st.integers(-5, 10**6), st.booleans(), st.text(max_size=12),
                 st.lists(st.integers(), max_size=2), st.none(),
                 st.floats(allow_nan=False, allow_infinity=False))
durations = st.one_of(st.sampled_from(["30d", "1h", "90m", "90min", "6mo", "1w2d", "0s", "5s",
                                       "", "1d1w", "10x", "-1d", "1.5h"]), junk)
quantities = st.one_of(st.sampled_from(["500Gi", "10M", "1024", "0", "1.5Gi", "-1", "Gi"]),
                       st.integers(-10, 10**9), junk)
ints = st.one_of(st.integers(-3, 200), junk)
posix = st.fixed_dictionaries({"path": st.one_of(st.sampled_from(
    ["/data/x", "relative/path", "/", "/data/../etc", ""]), junk)},
    optional={"sentinel": st.one_of(st.just(".mounted"), junk),
              "pruneEmptyDirs": st.one_of(st.booleans(), junk)})
s3 = st.fixed_dictionaries({"bucket": st.one_of(st.sampled_from(
    ["avatars", "UPPER", "a", "x" * 70, "my.bucket"]), junk)},
    optional={"prefix": st.one_of(st.just("tmp/"), junk),
              "endpoint": st.one_of(st.just("http://minio:9000"), st.just("ftp://x"), junk),
              "forcePathStyle": st.one_of(st.booleans(), junk),
              "credentialsSecretRef": st.one_of(st.fixed_dictionaries({"name": st.text(
                  alphabet="abc-", max_size=6)}), junk)})
target = st.one_of(
    st.fixed_dictionaries({"posix": posix}), st.fixed_dictionaries({"s3": s3}),
    st.fixed_dictionaries({"posix": posix, "s3": s3}), st.just({}), junk)
rules = st.fixed_dictionaries({}, optional={
    "maxAge": durations, "minAge": durations, "keepLast": ints, "maxTotalSize": quantities,
    "keepDaily": ints, "keepWeekly": ints, "keepWithin": durations,
    "bogusRule": st.integers()})
spec = st.fixed_dictionaries({"target": target}, optional={
    "rules": st.one_of(rules, junk),
    "select": st.one_of(st.fixed_dictionaries({}, optional={
        "include": st.one_of(st.lists(st.sampled_from(["**/*.log", "*", "[", ""]),
                                      max_size=3), junk),
        "exclude": st.one_of(st.lists(st.just("**/keep/**"), max_size=1), junk),
        "minSize": quantities}), junk),
    "schedule": st.one_of(st.sampled_from(["0 3 * * *", "*/5 * * * *", "@daily", "61 * * * *",
                                           "not a cron", ""]), junk),
    "mode": st.one_of(st.sampled_from(["Plan", "Enforce", "enforce", "Delete"]), junk),
    "suspend": st.one_of(st.booleans(), junk),
    "safety": st.one_of(st.fixed_dictionaries({}, optional={
        "maxDeletes": ints, "maxDeletePercent": ints, "maxClockSkew": durations}), junk),
    "manifest": st.one_of(st.fixed_dictionaries({"path": st.one_of(
        st.sampled_from(["manifest.json", "../up.json", "/abs.json"]), junk)},
        optional={"format": st.sampled_from(["json", "yaml"])}), junk),
    "groupBy": st.one_of(st.fixed_dictionaries({"depth": ints}), junk),
    "unknownField": st.integers(),
})

# A field below spec (``spec.rules.maxAge``, ``spec.target``), never bare ``spec``:
# "spec: Invalid value" tells a user nothing about what to change.
FIELD = re.compile(r"spec(\.[A-Za-z0-9_\[\]]+)+|unknown field \"spec\.[.\w\[\]]+\"")


@pytest.fixture(scope="module")
def custom_api(crds_installed: KubeCluster) -> Any:
    """One API client for all examples: a kubectl process per example costs seconds."""
    from kubernetes import client, config

    crds_installed.kubectl("create", "namespace", NS, check=False)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(crds_installed.kubeconfig),
                            client_configuration=cfg)
    return client.CustomObjectsApi(client.ApiClient(cfg))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=spec)
def test_fuzzed_policy_is_rejected_with_a_field_or_parses(custom_api: Any,
                                                          spec: dict[str, Any]) -> None:
    from kubernetes.client.rest import ApiException

    obj = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": "fuzz", "namespace": NS}, "spec": spec}
    try:
        accepted = custom_api.create_namespaced_custom_object(
            "lethe.io", "v1alpha1", NS, "retentionpolicies", obj, dry_run="All",
            field_validation="Strict")
    except ApiException as e:
        body = str(e.body)
        assert e.status in (400, 422), body
        assert FIELD.search(body), f"rejection names no field: {body}"
        return
    try:
        policy = parse_spec(accepted.get("spec"), name="fuzz", namespace=NS)
    except SpecError as e:
        assert e.field.startswith("spec."), e
    else:
        assert isinstance(policy, Policy)
