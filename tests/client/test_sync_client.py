"""The blocking facade, as a bidder without asyncio uses it, against a real cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from budget_client import Client, Refused
from tests.cluster.harness import Cluster

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster.create(tmp_path / "cluster")
    try:
        cluster.leader()
        yield cluster
    finally:
        cluster.stop_all()


def test_the_sync_client_reserves_commits_and_reads_through_any_node(cluster: Cluster) -> None:
    # Only a follower listed first: the client must find the leader by itself.
    leader = cluster.leader()
    endpoints = [n.http_address for n in cluster.nodes if n.node_id != leader]
    with Client(endpoints, cluster.token) as client:
        client.put_campaign(
            "sync", {"currency": "USD", "timezone": "UTC", "daily_budget_micros": 1_000}
        )
        granted = client.reserve("sync", 600, ttl_ms=60_000, bidder_id="b1")
        assert granted.granted_micros == 600
        assert client.leader == cluster.node(leader).url
        committed = client.commit(granted.reservation_id, 250, final=True)
        assert committed.committed_micros == 250
        with pytest.raises(Refused) as refused:
            client.reserve("sync", 800, ttl_ms=60_000, bidder_id="b1", min_amount_micros=800)
        assert refused.value.code == "budget_exhausted"
        assert client.get_campaign("sync")["spent_today_micros"] == 250
