"""Objects the CRDs must reject (or accept), shared by the API-server and parser checks.

Each invalid case names the field the error must point at. The same cases run
through ``lethe.spec`` so the CRD and the Python parser stay in agreement.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

API = "lethe.io/v1alpha1"

BASE_POLICY_SPEC: dict[str, Any] = {
    "target": {"posix": {"path": "/data/x"}},
    "rules": {"maxAge": "30d"},
}
BASE_JOB_SPEC: dict[str, Any] = {"policyRef": {"name": "some-policy"}}

_DELETE = object()  # marks a key to remove from the base spec


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # RetentionPolicy | CleanupJob
    #: Deep-merged into the base spec; a value of _DELETE removes that key; a
    #: top-level "__spec__" key replaces the whole spec.
    patch: dict[str, Any]
    #: Field path the API server's and the parser's error must name.
    field: str
    #: Extra text the API server's message must contain (optional).
    message: str = ""

    def spec(self) -> dict[str, Any]:
        if "__spec__" in self.patch:
            return copy.deepcopy(self.patch["__spec__"])
        base = BASE_POLICY_SPEC if self.kind == "RetentionPolicy" else BASE_JOB_SPEC
        return _merge(copy.deepcopy(base), self.patch)

    def obj(self, namespace: str) -> dict[str, Any]:
        name = self.id.replace("_", "-").lower()
        return {"apiVersion": API, "kind": self.kind,
                "metadata": {"name": name, "namespace": namespace}, "spec": self.spec()}


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is _DELETE:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict) and value:
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def rp(id: str, patch: dict[str, Any], field: str, message: str = "") -> Case:
    return Case(id, "RetentionPolicy", patch, field, message)


def cj(id: str, patch: dict[str, Any], field: str, message: str = "") -> Case:
    return Case(id, "CleanupJob", patch, field, message)


S3 = {"bucket": "b"}
#: What both validators say about a bare m (not "ambiguous": object names contain that).
MIN_OR_MO = "write min for minutes (90min) or mo for months (6mo)"

INVALID: list[Case] = [
    # target
    rp("two_targets", {"target": {"s3": S3}}, "spec.target", "exactly one of posix or s3"),
    rp("no_target", {"target": _DELETE}, "spec.target"),
    rp("empty_target", {"__spec__": {"target": {}, "rules": {"maxAge": "1d"}}}, "spec.target",
       "exactly one of posix or s3"),
    rp("relative_posix_path", {"target": {"posix": {"path": "data/x"}}},
       "spec.target.posix.path", "absolute"),
    rp("posix_without_path", {"__spec__": {"target": {"posix": {"sentinel": ".m"}}}},
       "spec.target.posix.path"),
    rp("s3_without_bucket", {"__spec__": {"target": {"s3": {"prefix": "p/"}}}},
       "spec.target.s3.bucket"),
    rp("s3_empty_bucket", {"__spec__": {"target": {"s3": {"bucket": ""}}}},
       "spec.target.s3.bucket"),
    rp("s3_prefix_not_a_folder",
       {"__spec__": {"target": {"s3": {"bucket": "b", "prefix": "tmp"}},
                     "rules": {"maxAge": "1d"}}},
       "spec.target.s3.prefix", "must end with '/'"),
    rp("secret_ref_without_name",
       {"__spec__": {"target": {"s3": {"bucket": "b", "credentialsSecretRef": {}}}}},
       "spec.target.s3.credentialsSecretRef.name"),
    rp("bad_noncurrent_age",
       {"__spec__": {"target": {"s3": {"bucket": "b", "noncurrentVersionsMaxAge": "30"}}}},
       "spec.target.s3.noncurrentVersionsMaxAge"),
    rp("bool_as_string", {"target": {"posix": {"pruneEmptyDirs": "yes"}}},
       "spec.target.posix.pruneEmptyDirs"),
    # durations and quantities
    rp("bad_duration", {"rules": {"maxAge": "30 days"}}, "spec.rules.maxAge"),
    rp("empty_duration", {"rules": {"maxAge": ""}}, "spec.rules.maxAge"),
    rp("duration_units_out_of_order", {"rules": {"minAge": "1d1w"}}, "spec.rules.minAge"),
    rp("bad_keep_within", {"rules": {"keepWithin": "2 days"}}, "spec.rules.keepWithin"),
    rp("bad_clock_skew", {"safety": {"maxClockSkew": "5 min"}}, "spec.safety.maxClockSkew"),
    # units that read two ways (issue #14): 6m is six months to a restic user
    rp("ambiguous_m_max_age", {"rules": {"maxAge": "6m"}}, "spec.rules.maxAge", MIN_OR_MO),
    rp("ambiguous_m_keep_within", {"rules": {"keepWithin": "1m", "keepDaily": 7}},
       "spec.rules.keepWithin", MIN_OR_MO),
    rp("ambiguous_m_inside", {"rules": {"minAge": "1h30m"}}, "spec.rules.minAge", MIN_OR_MO),
    rp("ambiguous_capital_m", {"rules": {"minAge": "6M"}}, "spec.rules.minAge", MIN_OR_MO),
    rp("ambiguous_m_clock_skew", {"safety": {"maxClockSkew": "5m"}},
       "spec.safety.maxClockSkew", MIN_OR_MO),
    rp("months_in_fixed_field",
       {"__spec__": {"target": {"s3": {"bucket": "b", "noncurrentVersionsMaxAge": "6mo"}}}},
       "spec.target.s3.noncurrentVersionsMaxAge", "write days"),
    rp("years_in_clock_skew", {"safety": {"maxClockSkew": "1y"}}, "spec.safety.maxClockSkew",
       "write days"),
    rp("months_before_years", {"rules": {"maxAge": "6mo1y"}}, "spec.rules.maxAge"),
    rp("bad_quantity", {"rules": {"maxTotalSize": "1.5Gi"}}, "spec.rules.maxTotalSize"),
    rp("quantity_bad_suffix", {"rules": {"maxTotalSize": "500GB"}}, "spec.rules.maxTotalSize"),
    rp("negative_quantity_string", {"select": {"minSize": "-5"}}, "spec.select.minSize"),
    rp("negative_quantity_int", {"select": {"maxSize": -1}}, "spec.select.maxSize"),
    rp("bad_validity_size", {"rules": {"validity": {"minSize": "big"}}},
       "spec.rules.validity.minSize"),
    # schedule
    rp("bad_cron_words", {"schedule": "every day"}, "spec.schedule", "cron"),
    rp("cron_four_fields", {"schedule": "0 3 * *"}, "spec.schedule", "cron"),
    rp("cron_six_fields", {"schedule": "0 0 3 * * *"}, "spec.schedule", "cron"),
    rp("cron_bad_chars", {"schedule": "0 3 * * $"}, "spec.schedule", "cron"),
    rp("unknown_cron_macro", {"schedule": "@fortnightly"}, "spec.schedule", "cron"),
    # counts and ranges
    rp("max_delete_percent_0", {"safety": {"maxDeletePercent": 0}},
       "spec.safety.maxDeletePercent"),
    rp("max_delete_percent_101", {"safety": {"maxDeletePercent": 101}},
       "spec.safety.maxDeletePercent"),
    rp("negative_max_deletes", {"safety": {"maxDeletes": -1}}, "spec.safety.maxDeletes"),
    rp("negative_keep_last", {"rules": {"keepLast": -1}}, "spec.rules.keepLast"),
    rp("keep_last_as_string", {"rules": {"keepLast": "10"}}, "spec.rules.keepLast"),
    rp("negative_keep_daily", {"rules": {"keepDaily": -1}}, "spec.rules.keepDaily"),
    rp("group_by_depth_0", {"groupBy": {"depth": 0}}, "spec.groupBy.depth"),
    rp("group_by_depth_33", {"groupBy": {"depth": 33}}, "spec.groupBy.depth"),
    rp("group_by_without_depth", {"groupBy": {}}, "spec.groupBy.depth"),
    # rules
    rp("rules_without_deletion_rule", {"rules": {"maxAge": _DELETE, "minAge": "1h",
                                                 "keepWithin": "2d"}},
       "spec.rules", "at least one deletion rule"),
    rp("calendar_rule_of_zero_deletes_nothing", {"rules": {"maxAge": _DELETE, "keepDaily": 0}},
       "spec.rules", "at least one deletion rule"),
    # issue #14: `keepLast: 0` alone deleted everything; 0 means "not set" (restic)
    rp("keep_last_zero_alone_is_no_rule", {"rules": {"maxAge": _DELETE, "keepLast": 0}},
       "spec.rules", "a keep count of 0 means not set"),
    rp("zero_keeps_and_zero_within", {"rules": {"maxAge": _DELETE, "keepLast": 0,
                                                "keepDaily": 0, "keepWithin": "0s"}},
       "spec.rules", "at least one deletion rule"),
    rp("allow_delete_all_as_string", {"safety": {"allowDeleteAll": "yes"}},
       "spec.safety.allowDeleteAll"),
    # enums, manifest, selection
    rp("bad_mode", {"mode": "Delete"}, "spec.mode"),
    rp("manifest_format_yaml", {"manifest": {"path": "m.yaml", "format": "yaml"}},
       "spec.manifest.format"),
    rp("manifest_without_path", {"manifest": {"format": "json"}}, "spec.manifest.path"),
    rp("empty_include_glob", {"select": {"include": [""]}}, "spec.select.include"),
    # unknown fields (strict field validation)
    rp("unknown_spec_field", {"retention": {"days": 3}}, "spec.retention"),
    rp("unknown_rules_field", {"rules": {"maxAgee": "1d"}}, "spec.rules.maxAgee"),
    rp("unknown_target_kind", {"target": {"gcs": {"bucket": "b"}}}, "spec.target.gcs"),
    # CleanupJob
    cj("job_both_ref_and_inline", {"policy": BASE_POLICY_SPEC}, "spec",
       "exactly one of policyRef or policy"),
    cj("job_neither_ref_nor_inline", {"policyRef": _DELETE, "mode": "Plan"}, "spec",
       "exactly one of policyRef or policy"),
    cj("job_negative_ttl", {"ttlSecondsAfterFinished": -1}, "spec.ttlSecondsAfterFinished"),
    cj("job_bad_mode", {"mode": "DryRun"}, "spec.mode"),
    cj("job_ref_without_name", {"policyRef": {"name": ""}}, "spec.policyRef.name"),
    cj("job_inline_relative_path",
       {"policyRef": _DELETE,
        "policy": {"target": {"posix": {"path": "tmp"}}, "rules": {"maxAge": "1d"}}},
       "spec.policy.target.posix.path", "absolute"),
    cj("job_inline_two_targets",
       {"policyRef": _DELETE,
        "policy": {"target": {"posix": {"path": "/t"}, "s3": S3}, "rules": {"keepLast": 1}}},
       "spec.policy.target", "exactly one of posix or s3"),
    cj("job_inline_no_deletion_rule",
       {"policyRef": _DELETE,
        "policy": {"target": {"posix": {"path": "/t"}}, "rules": {"minAge": "1h"}}},
       "spec.policy.rules", "at least one deletion rule"),
]

# Edge cases both validators must accept.
VALID: list[Case] = [
    rp("empty_rules_keep_everything", {"rules": {"maxAge": _DELETE}}, ""),
    rp("no_rules", {"rules": _DELETE}, ""),
    rp("cron_macro", {"schedule": "@daily"}, ""),
    rp("cron_with_names_and_steps", {"schedule": "*/15 0-6 ? JAN MON-FRI"}, ""),
    rp("cron_padded", {"schedule": " 0 3 * * * "}, ""),
    rp("quantity_as_integer", {"rules": {"maxTotalSize": 1073741824}}, ""),
    rp("quantity_decimal_suffix", {"select": {"minSize": "10M", "maxSize": "1T"}}, ""),
    rp("zero_counts", {"rules": {"keepLast": 0}, "safety": {"maxDeletes": 0}}, ""),
    rp("months_and_years", {"rules": {"maxAge": "1y6mo", "minAge": "90min",
                                      "keepWithin": "1mo", "keepMonthly": 6}}, ""),
    rp("every_unit", {"rules": {"maxAge": "1y2mo3w4d5h6min7s"}}, ""),
    rp("allow_delete_all", {"safety": {"allowDeleteAll": True}}, ""),
    rp("range_ends", {"groupBy": {"depth": 32}, "safety": {"maxDeletePercent": 100}}, ""),
    rp("calendar_only", {"rules": {"maxAge": _DELETE, "keepDaily": 7, "minAge": "1h"}}, ""),
    rp("calendar_with_keep_last", {"rules": {"maxAge": _DELETE, "keepLast": 1,
                                             "keepWithin": "1w2d3h4min5s", "keepHourly": 24,
                                             "keepYearly": 3}}, ""),
    rp("all_s3_fields",
       {"__spec__": {"target": {"s3": {
           "bucket": "b", "prefix": "", "endpoint": "http://127.0.0.1:9000",
           "region": "us-east-1", "forcePathStyle": True,
           "credentialsSecretRef": {"name": "c"}, "noncurrentVersionsMaxAge": "30d",
           "abortIncompleteUploadsAfter": "1d"}},
           "rules": {"maxTotalSize": "1Ei"}, "timeZone": "UTC", "suspend": True,
           "mode": "Enforce", "ledgerPath": "audit", "manifest": {"path": "m.json"}}}, ""),
    cj("job_inline", {"policyRef": _DELETE, "policy": BASE_POLICY_SPEC,
                      "ttlSecondsAfterFinished": 0, "mode": "Enforce"}, ""),
]
