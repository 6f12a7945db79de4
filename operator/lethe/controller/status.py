"""Status as kstatus-based tools (Flux, Argo CD) read it: pure builders, no I/O.

``Ready`` is the normal-true condition; ``Reconciling`` and ``Stalled`` are
abnormal-true ones, present with ``status: "False"`` when all is well. Each
carries ``observedGeneration``; ``lastTransitionTime`` only moves when the
status value changes, as the Kubernetes API conventions ask.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["conditions", "iso", "run_summary"]


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(old: Mapping[str, Mapping[str, Any]], *, type_: str, status: bool, reason: str,
          message: str, generation: int, now: float) -> dict[str, Any]:
    value = "True" if status else "False"
    prev = old.get(type_)
    since = prev.get("lastTransitionTime") if prev and prev.get("status") == value else None
    return {"type": type_, "status": value, "reason": reason, "message": message[:1000],
            "observedGeneration": generation, "lastTransitionTime": since or iso(now)}


def conditions(*, previous: Sequence[Mapping[str, Any]] | None, generation: int, now: float,
               reconciling: str | None = None, stalled: tuple[str, str] | None = None,
               ready_reason: str = "Succeeded", ready_message: str = "",
               missed: str | None = None) -> list[dict[str, Any]]:
    """The three conditions for one moment.

    ``reconciling`` is the message while a run is in progress; ``stalled`` is
    ``(reason, message)`` when progress needs a person (or a reachable target);
    ``missed`` describes scheduled slots that never started (a fourth condition).
    """
    old = {c.get("type", ""): c for c in previous or ()}
    ready = reconciling is None and stalled is None
    if stalled is not None:
        r_reason, r_msg = stalled
    elif reconciling is not None:
        r_reason, r_msg = "Running", reconciling
    else:
        r_reason, r_msg = ready_reason, ready_message
    extra = [] if missed is None else [
        _cond(old, type_="MissedSchedule", status=True, reason="SlotMissed", message=missed,
              generation=generation, now=now)]
    return [*extra,
        _cond(old, type_="Ready", status=ready, reason=r_reason, message=r_msg,
              generation=generation, now=now),
        _cond(old, type_="Reconciling", status=reconciling is not None,
              reason="Running" if reconciling is not None else "Idle",
              message=reconciling or "", generation=generation, now=now),
        _cond(old, type_="Stalled", status=stalled is not None,
              reason=stalled[0] if stalled else "None",
              message=stalled[1] if stalled else "", generation=generation, now=now),
    ]


def run_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """``status.lastRun`` from a runner report (``RunReport.as_dict()``)."""
    return {
        "id": report["run_id"], "start": iso(report["started"]),
        "end": iso(report["ended"]) if report.get("ended") else None,
        "result": report["result"], "mode": report["mode"],
        "scanned": report["scanned"], "matched": report["matched"],
        "deleted": report["deleted"], "bytesFreed": report["bytes_freed"],
        "skippedChanged": report["skipped_changed"], "errors": report["errors"],
        "reason": report.get("reason") or "", "message": report.get("message") or "",
    }
