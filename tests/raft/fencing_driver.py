"""One Lethe replica without Kubernetes, for the fencing tests: a real Raft member
(:class:`RaftJournal`, real pysyncobj over TCP) that, while it holds the lease,
starts or resumes the policy's one run with the product's :class:`Runner`, as
the operator's leader loop does. Nothing is mocked; the test pauses a replica
with the product's own pause points (``LETHE_TEST_PAUSE_AT``, see
lethe/storage/pausepoint.py).

usage: fencing_driver.py CONFIG.json
CONFIG: {"self", "peers", "password", "data_dir", "out_dir", "policy" (a
RetentionPolicy document), "batch_size", "s3_keys": [access, secret] or null}

It appends one JSON line per run attempt to ``<out_dir>/events.jsonl``
(``{"pid", "time", "what", "detail"}``) and, on S3, one line per delete request
that passed every ``before-send`` handler of the product (the last hook before
the socket write) to ``<out_dir>/requests.jsonl``: ``time`` is when it passed
them, ``checked`` when the product's fence check for it began (right after the
pause point, so a request of the thread that paused itself was checked after it
woke), ``if_match`` whether it carried an ``If-Match`` header.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lethe.raft.node import RaftJournal
from lethe.runner.execute import Runner
from lethe.spec import S3Target, parse_policy
from lethe.storage import pausepoint
from lethe.storage.base import Storage
from lethe.storage.posix import PosixStorage
from lethe.storage.s3 import S3Storage

_lock = threading.Lock()


def _append(path: Path, record: dict[str, Any]) -> None:
    with _lock, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    out = Path(cfg["out_dir"])
    events = out / "events.jsonl"
    policy = parse_policy(cfg["policy"])
    storage: Storage
    if isinstance(policy.target, S3Target):
        access, secret = cfg["s3_keys"]
        s3 = S3Storage(policy.target, access_key=access, secret_key=secret)
        check = threading.local()
        pause_point = pausepoint.pause_point

        def stamped(point: str) -> None:
            # The product calls its fence right after its pause point returns.
            pause_point(point)
            check.began = time.time()

        pausepoint.pause_point = stamped

        def record(request: Any, **_kw: Any) -> None:
            _append(out / "requests.jsonl", {
                "pid": os.getpid(), "time": time.time(), "checked": getattr(check, "began", 0.0),
                "method": request.method, "url": request.url,
                "if_match": "If-Match" in request.headers})

        for op in ("DeleteObject", "DeleteObjects"):
            # After the product's own handler (its fence): only requests about to be sent.
            s3.client.meta.events.register_last(f"before-send.s3.{op}", record)
        storage = s3
    else:
        storage = PosixStorage(policy.target)
    journal = RaftJournal(self_address=cfg["self"], peers=cfg["peers"],
                          password=cfg["password"], data_dir=cfg["data_dir"])
    key = f"{policy.namespace}/{policy.name}"
    while True:
        if journal.lease_valid():
            state = journal.read()
            if state.history.get(key):  # the run is finished: nothing more to do
                if not (out / "done.json").exists():
                    rec = state.history[key][-1]
                    _append(events, {"pid": os.getpid(), "time": time.time(), "what": "done",
                                     "detail": rec.result})
                    (out / "done.json").write_text(json.dumps(
                        {"pid": os.getpid(), "result": rec.result,
                         "counters": dict(rec.counters)}))
            else:
                try:
                    report = Runner(policy=policy, storage=storage, journal=journal,
                                    batch_size=cfg["batch_size"]).run(run_id="fencing-run",
                                                                      mode="Enforce")
                    what, detail = "run", report.result
                except Exception as exc:  # recorded for the test to read
                    what, detail = "raised", f"{type(exc).__name__}: {exc}"
                _append(events, {"pid": os.getpid(), "time": time.time(), "what": what,
                                 "detail": detail})
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1])
