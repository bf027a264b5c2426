"""The ``cluster`` fixture of the real-process cluster tests: three `budgetd run` nodes on
loopback, stopped by PID afterwards; their logs are printed when the test failed."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster, running_cluster


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    """Keep each phase's report on the test item (``rep_call``), for fixtures to read."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    yield from running_cluster(tmp_path / "cluster", request)
