"""A real 3-node cluster (`budgetd run` processes on loopback): every metric the alert rules and
the dashboard read exists in the nodes' /metrics after a little traffic; the nodes log JSON lines
with their state changes; /readyz drops a leader that lost its quorum."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.harness import Cluster, until
from tests.ops.promql import (
    dashboard_expressions,
    exposed_name,
    metric_names,
    recorded_names,
    rule_expressions,
)

pytestmark = pytest.mark.cluster

#: Series Prometheus makes itself (not in any /metrics).
PROMETHEUS_SERIES = frozenset({"up"})
#: One root shown per node, the other folded into campaign="_other": both kinds of series exist.
METRICS_TOML = '\n[metrics]\ncampaign_series_max = 2\ncampaigns = ["acme:summer"]\n'


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    cluster = Cluster.on_free_ports(tmp_path / "cluster", 3)
    assert isinstance(cluster, Cluster)
    for node in cluster.nodes:
        with node.config.open("a") as config:
            config.write(METRICS_TOML)
    for node in cluster.nodes:
        cluster.start(node.node_id)
    try:
        yield cluster
    finally:
        cluster.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(cluster.logs())


def _ok(response: Any, *statuses: int) -> Any:
    assert response.status in (statuses or (200, 201)), response
    return response.body


def _traffic(cluster: Cluster, leader: str, follower: str) -> None:
    campaign = {"currency": "USD", "timezone": "UTC", "daily_budget_micros": 50_000_000}
    for campaign_id, pacing in (("acme", "even"), ("acme:summer", "asap"), ("globex", "even")):
        body = {**campaign, "pacing": {"mode": pacing}}
        _ok(cluster.request(leader, "PUT", f"/v1/campaigns/{campaign_id}", body))
    # Through a follower: forwarded to the leader.
    answer = cluster.request(
        follower,
        "POST",
        "/v1/reservations",
        {
            "campaign_id": "acme:summer",
            "amount_micros": 5_000,
            "ttl_ms": 60_000,
            "bidder_id": "b1",
        },
        headers={"Idempotency-Key": "r1", "X-Request-Id": "bidder-7.42"},
    )
    reserved = _ok(answer)
    assert answer.headers["X-Request-Id"] == "bidder-7.42"
    rid = reserved["reservation_id"]
    for _ in range(2):  # the second is a retry: answered from its idempotency key
        _ok(
            cluster.request(
                leader,
                "POST",
                f"/v1/reservations/{rid}/commit",
                {"amount_micros": 2_000},
                headers={"Idempotency-Key": "c1"},
            )
        )
    _ok(
        cluster.request(
            leader,
            "POST",
            "/v1/campaigns/globex/spend",
            {"amount_micros": 700, "bidder_id": "b1"},
            headers={"Idempotency-Key": "s1"},
        )
    )
    # A 404: requests that fail are counted too.
    cluster.request(leader, "GET", "/v1/campaigns/nobody")


def _scrape(cluster: Cluster, node_id: str) -> tuple[dict[str, str], set[str]]:
    with urllib.request.urlopen(cluster.node(node_id).url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    families: dict[str, str] = {}
    samples: set[str] = set()
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        samples.update(sample.name for sample in family.samples)
    return families, samples


def test_every_metric_of_the_rules_and_the_dashboard_is_exposed(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n.node_id for n in cluster.nodes if n.node_id != leader)
    _traffic(cluster, leader, follower)
    cluster.wait_converged()
    families: dict[str, str] = {}
    samples: set[str] = set()
    for node in cluster.nodes:
        node_families, node_samples = _scrape(cluster, node.node_id)
        families.update(node_families)
        samples |= node_samples
    recorded = recorded_names()
    expressions = rule_expressions() + dashboard_expressions()
    referenced = set().union(*(metric_names(expression) for expression in expressions))
    assert len(referenced) > 30  # the parser found the names, not nothing
    missing = {
        name
        for name in referenced - recorded - PROMETHEUS_SERIES
        if name not in samples or exposed_name(name, families) not in families
    }
    assert not missing, f"referenced but not exposed by any node: {sorted(missing)}"


def test_nodes_log_json_state_changes_and_readyz_drops_a_leader_without_quorum(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    followers = [n.node_id for n in cluster.nodes if n.node_id != leader]
    until(
        lambda: all(
            cluster.request(n.node_id, "GET", "/readyz").status == 200 for n in cluster.nodes
        ),
        "every node ready",
    )

    def events(node_id: str) -> list[dict[str, Any]]:
        lines = cluster.node(node_id).log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]  # every line is JSON

    became = until(
        lambda: [e for e in events(leader) if e["event"] == "became_leader"], "became_leader"
    )
    assert became[-1]["node_id"] == leader
    assert isinstance(became[-1]["term"], int) and became[-1]["term"] >= 1
    assert {"commit_index", "applied_index", "timestamp", "level"} <= set(became[-1])
    assert any(e["event"] == "node_started" for e in events(leader))
    assert any(
        e["event"] == "leader_changed" and e["leader_id"] == leader for e in events(followers[0])
    )

    for node_id in followers:
        cluster.kill(node_id)
    answer = until(
        lambda: (r := cluster.request(leader, "GET", "/readyz")).status == 503 and r,
        "the leader without a quorum to become not ready",
    )
    assert answer.body["code"] == "unavailable"
    assert cluster.request(leader, "GET", "/healthz").status == 200  # alive, only not ready
    lost = until(
        lambda: {e["event"] for e in events(leader)} >= {"quorum_lost", "became_follower"},
        "quorum_lost and became_follower in the leader's log",
    )
    assert lost
