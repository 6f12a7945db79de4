# Shared fixtures live in tests/fixtures/ as pytest plugins; list each one here.
# kube: a real etcd + kube-apiserver for the session (or LETHE_TEST_KUBECONFIG).
# s3: a real S3-compatible server (moto) on loopback for the session.
import os
from collections.abc import Generator
from typing import Any

import pytest

pytest_plugins = ["tests.fixtures.kube", "tests.fixtures.s3"]

# CI runs as root with every part installed: there a skip means a check did not
# run (a mount that failed, a fixture that gave up), so it fails the run.
# `.ci/run` sets LETHE_NO_SKIP=1; a developer without root still sees the skip.
NO_SKIP = os.environ.get("LETHE_NO_SKIP") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under LETHE_NO_SKIP=1 (CI): {report.longrepr}"
