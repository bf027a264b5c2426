"""Fixtures for in-process Raft clusters (tests/replication/raft_helpers.py has the helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from raft_helpers import Cluster, make_members


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(count)``: a cluster of ``count`` members (not started); all closed after."""
    clusters: list[Cluster] = []

    def make(count: int, **raft_changes: object) -> Cluster:
        cluster = Cluster(root=tmp_path / f"cluster{len(clusters)}", members=make_members(count))
        cluster.root.mkdir()
        if raft_changes:
            cluster.with_raft(**raft_changes)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()
