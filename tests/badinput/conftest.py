"""One three-replica operator on the session's API server, shared by the bad-input tests
that attack a running operator (starting three replicas costs ~20 s on a busy machine).

Package scope: it is stopped before ``tests/operator`` starts its own replicas, so two
operators never watch the same API server at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.badinput.operators import running_replicas
from tests.fixtures.kube import KubeCluster
from tests.fixtures.replicas import LocalReplicas


@pytest.fixture(scope="package")
def operators(crds_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[LocalReplicas]:
    root = tmp_path_factory.mktemp("badinput-operators")
    with running_replicas(crds_installed, workdir=root, data_root=root / "data") as reps:
        reps.data_root = root / "data"  # type: ignore[attr-defined]
        yield reps
