"""Prometheus metrics: one registry, names documented in docs/metrics.md."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LABELS = ("namespace", "policy")


class Metrics:
    """All of Lethe's run metrics on one registry (tests build their own)."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.runs = Counter("lethe_runs", "Runs finished, by result.", (*_LABELS, "result"),
                            registry=r)
        self.objects_deleted = Counter("lethe_objects_deleted", "Objects deleted.", _LABELS,
                                       registry=r)
        self.bytes_deleted = Counter("lethe_bytes_deleted", "Bytes freed by deletions.", _LABELS,
                                     registry=r)
        self.run_duration = Histogram(
            "lethe_run_duration_seconds", "Wall time of a run.", _LABELS, registry=r,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, float("inf")))
        self.brake_trips = Counter("lethe_brake_trips", "Safety brakes tripped.", _LABELS,
                                   registry=r)
        self.storage_errors = Counter("lethe_storage_errors",
                                      "Per-object delete errors and failed storage calls.",
                                      _LABELS, registry=r)
        self.eligible = Gauge("lethe_eligible_items",
                              "Items eligible for deletion but not deleted (deletion lag).",
                              _LABELS, registry=r)
        self.oldest_eligible = Gauge("lethe_oldest_eligible_age_seconds",
                                     "Age of the oldest eligible item not yet deleted.",
                                     _LABELS, registry=r)
        self.missed_schedules = Counter("lethe_missed_schedules",
                                        "Scheduled slots that did not run in time.", _LABELS,
                                        registry=r)

    def observe_run(self, *, namespace: str, policy: str, result: str, seconds: float,
                    counters: dict[str, int], eligible: int, oldest_age: float | None) -> None:
        lab = {"namespace": namespace, "policy": policy}
        self.runs.labels(result=result, **lab).inc()
        self.objects_deleted.labels(**lab).inc(counters.get("deleted", 0))
        self.bytes_deleted.labels(**lab).inc(counters.get("bytesFreed", 0))
        self.storage_errors.labels(**lab).inc(counters.get("errors", 0))
        self.run_duration.labels(**lab).observe(seconds)
        self.eligible.labels(**lab).set(eligible)
        self.oldest_eligible.labels(**lab).set(oldest_age or 0)
