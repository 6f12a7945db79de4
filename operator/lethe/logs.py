"""Logs a person can follow: JSON lines, and every line of a run names the run.

The run context lives in a ContextVar set by the thread that executes the
run, so every logger below it (runner, storage, journal) gets ``run_id``,
``policy`` and ``namespace`` without passing them around.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter

__all__ = ["run_context", "setup_logging"]

_RUN: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("lethe_run",
                                                                            default=None)


@contextlib.contextmanager
def run_context(*, run_id: str, policy: str, namespace: str) -> Iterator[None]:
    token = _RUN.set({"run_id": run_id, "policy": policy, "namespace": namespace})
    try:
        yield
    finally:
        _RUN.reset(token)


class _RunFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _RUN.get()
        if ctx:
            for k, v in ctx.items():
                setattr(record, k, v)
        return True


def setup_logging(*, fmt: str = "json", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RunFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf and urllib3 are chatty at INFO about every watch; keep the story readable.
    # Never below WARNING, whatever --log-level says: the kubernetes client logs whole
    # response bodies at DEBUG (a Secret's data, base64), botocore request headers.
    for name in ("kopf", "urllib3", "botocore", "boto3", "s3transfer", "kubernetes"):
        logging.getLogger(name).setLevel(logging.WARNING)
