"""Run ``lethe apply`` in-process and SIGKILL ourselves at a chosen step (crash tests).

usage: crash_driver.py POLICY.yaml STATE_DIR {after-manifest|mid-batch|whole-batch} BATCH
The kill is real: the process dies without cleanup, as a node does on OOM or
power loss; the test then runs the real CLI on the same state directory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from lethe.cli.main import _check_unfinished
from lethe.raft.local import local_journal
from lethe.runner.execute import Runner
from lethe.spec import parse_policy
from lethe.storage.base import DeleteResult, Entry
from lethe.storage.posix import PosixStorage


def main(argv: Sequence[str]) -> None:
    path, state, where, batch = argv[0], argv[1], argv[2], int(argv[3])
    with open(path) as f:
        policy = parse_policy(yaml.safe_load(f))
    inner = PosixStorage(policy.target)  # type: ignore[arg-type]
    calls = [0]

    class Dying:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def delete_batch(self, entries: Sequence[Entry], **kw: Any) -> list[DeleteResult]:
            if calls[0] == batch:
                if where == "mid-batch":
                    inner.delete_batch(list(entries)[: len(entries) // 2])
                elif where == "whole-batch":  # deleted, then gone before its ledger write
                    results = inner.delete_batch(entries)
                    with open(os.path.join(state, "zombie.json"), "w") as f:
                        json.dump([[r.key, r.outcome.value] for r in results], f)
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            return inner.delete_batch(entries, **kw)

    # The same journal directory `lethe apply --state-dir STATE` uses.
    data_dir = os.path.join(state, policy.namespace, policy.name)
    with local_journal(data_dir=data_dir) as j:
        # As `lethe apply` does before it starts a run: what spec it started with.
        _check_unfinished(None, policy=policy, mode="Enforce", data_dir=data_dir, file=path)
        Runner(policy=policy, storage=Dying(), journal=j, batch_size=10).run(mode="Enforce")


if __name__ == "__main__":
    main(sys.argv[1:])
