"""A run thread that commits while the replica shuts down gets the journal's
error, not pysyncobj's internals.

CI (stop 18) saw a scheduled run's commit race with ``journal.close()`` on
SIGTERM: pysyncobj's ``destroy()`` detaches the state machine, and the
replicated call raised ``AttributeError: 'NoneType' object has no attribute
'_getFuncName'``, which the run worker logged as "run worker failed" with a
traceback. Run code treats ``JournalError`` as "stop here, the next leader
resumes"; that is what it must get.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lethe.journal import Fence, JournalError
from lethe.raft.local import local_journal


def test_a_commit_after_close_is_a_journal_error(tmp_path: Path) -> None:
    with local_journal(data_dir=tmp_path) as journal:
        term = journal.current_term()
        journal.close()
        # The published view still says "leader in contact with a quorum": only
        # the close itself can stop this commit, as in the race CI hit.
        with pytest.raises(JournalError):
            journal.commit(Fence(term=term), timeout=2.0)
