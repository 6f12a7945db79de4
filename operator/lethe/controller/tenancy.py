"""What a namespaced policy may reach (I10), as one pure check.

A policy that asks for more is not run: the caller sets ``Stalled`` with
reason ``TargetNotAllowed`` and the message returned here.
"""

from __future__ import annotations

import os

from lethe.controller.config import OperatorConfig
from lethe.spec import Policy, PosixTarget

__all__ = ["check_target"]


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_target(*, policy: Policy, config: OperatorConfig) -> str | None:
    """Return why the policy's target is not allowed, or ``None``."""
    t = policy.target
    if isinstance(t, PosixTarget):
        # Resolve '..' and symlinks first: the path that counts is where it really goes.
        real = os.path.realpath(t.path)
        data_dir = os.path.realpath(config.data_dir)
        if _within(real, data_dir) or _within(data_dir, real):
            return f"spec.target.posix.path {t.path!r} overlaps the operator's data directory"
        ns_root = config.namespace_roots.get(policy.namespace)
        if ns_root is not None:
            if not _within(real, ns_root):
                return (f"spec.target.posix.path {t.path!r} resolves to {real!r}, outside "
                        f"{ns_root!r}, the root allowed for namespace {policy.namespace!r}")
            return None
        if not config.allowed_roots:
            return "no POSIX roots are allowed by this installation (LETHE_ALLOWED_ROOTS)"
        if not any(_within(real, root) for root in config.allowed_roots):
            return (f"spec.target.posix.path {t.path!r} resolves to {real!r}, outside the "
                    f"allowed roots {', '.join(config.allowed_roots)}")
        return None
    if config.allowed_buckets and t.bucket not in config.allowed_buckets:
        return (f"spec.target.s3.bucket {t.bucket!r} is not on the allow-list "
                f"({', '.join(config.allowed_buckets)})")
    return None
