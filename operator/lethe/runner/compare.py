"""``lethe plan --diff``: what a policy change would do, before anyone applies it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lethe.retention.diff import diff_plans
from lethe.retention.planner import Planner
from lethe.runner.plan import FUTURE_TOLERANCE
from lethe.spec import Policy
from lethe.storage.base import Entry, Storage

__all__ = ["compare_policies"]


def compare_policies(*, old: Policy, new: Policy, storage: Storage) -> dict[str, Any]:
    """Plan both versions against the same listing and clock; delete nothing."""
    storage.check_ready()
    now = storage.now()
    exclude = {m.path.strip("/") for m in (old.manifest, new.manifest) if m is not None}

    def listing() -> Iterator[Entry]:
        for e in storage.list():
            if e.key not in exclude and e.mtime <= now + FUTURE_TOLERANCE:
                yield e

    result = diff_plans(Planner.for_policy(old, now=now), Planner.for_policy(new, now=now),
                        listing)
    return {"target": storage.describe(), **result.to_dict()}
