"""Overload on a real cluster: while the leader's admission bound (proposer.queue_ops_max) is
full, more batches are refused at once with 503 and Retry-After, write nothing, and the cluster
view still answers on every node."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster, Response, running_cluster, until

pytestmark = pytest.mark.cluster

BATCH_OPS = 200
#: Two batches fill the bound.
QUEUE_OPS_MAX = 2 * BATCH_OPS


@pytest.fixture
def small_bound(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # The followers are paused while the bound is full: the leader must keep leading (and the
    # admitted requests waiting) meanwhile.
    yield from running_cluster(
        tmp_path / "cluster",
        request,
        raft="leader_fallback_ms = 60000",
        api=f"batch_ops_max = {BATCH_OPS}",
        proposer=f"queue_ops_max = {QUEUE_OPS_MAX}\nrequest_timeout_ms = 60000",
    )


def _batch(prefix: str) -> dict[str, Any]:
    return {
        "ops": [
            {
                "op": "reserve",
                "idempotency_key": f"{prefix}-{i}",
                "campaign_id": "acme",
                "amount_micros": 1_000,
                "ttl_ms": 3_600_000,
                "bidder_id": "b1",
            }
            for i in range(BATCH_OPS)
        ]
    }


def test_a_full_leader_refuses_at_once_writes_nothing_and_every_node_still_answers(
    small_bound: Cluster,
) -> None:
    cluster = small_bound
    leader = cluster.leader()
    followers = [n.node_id for n in cluster.nodes if n.node_id != leader]
    put = cluster.request(
        leader,
        "PUT",
        "/v1/campaigns/acme",
        {"currency": "USD", "timezone": "UTC", "total_budget_micros": 10**12, "status": "active"},
    )
    assert put.status in (200, 201), put
    for follower in followers:
        cluster.pause(follower)
    answers: dict[str, Response] = {}
    try:
        # Two batches fill the bound: no quorum, so they stay in the leader's pipeline.
        admitted = [
            threading.Thread(
                target=lambda p=prefix: answers.__setitem__(
                    p, cluster.request(leader, "POST", "/v1/batch", _batch(p), timeout_s=120)
                )
            )
            for prefix in ("a", "b")
        ]
        for thread in admitted:
            thread.start()

        def full() -> bool:
            proposer = cluster.request(leader, "GET", "/v1/cluster").body["proposer"]
            return bool(proposer["queued_ops"] + proposer["inflight_ops"] == QUEUE_OPS_MAX)

        until(full, "the leader's bound to fill")
        refused = cluster.request(leader, "POST", "/v1/batch", _batch("c"))
        assert refused.status == 503, refused
        assert refused.body["code"] == "unavailable" and "overloaded" in refused.body["detail"]
        assert refused.headers["Retry-After"] == "1"
        view = cluster.request(leader, "GET", "/v1/cluster")
        assert view.status == 200 and view.body["role"] == "leader"
        metrics = cluster.request(leader, "GET", "/metrics").body.decode()
        assert f'budgetd_proposer_requests_rejected_total{{node="{leader}"}} 1.0' in metrics
        assert f'budgetd_proposer_inflight_ops{{node="{leader}"}}' in metrics
    finally:
        for follower in followers:
            cluster.resume(follower)
    for thread in admitted:
        thread.join(120)
    assert [answers[p].status for p in ("a", "b")] == [200, 200], answers
    # Sent again, the refused batch is applied now, and for the first time (nothing replayed).
    retried = cluster.request(leader, "POST", "/v1/batch", _batch("c"), follow=True)
    assert retried.status == 200, retried
    assert all(r["code"] == "ok" and not r.get("replayed") for r in retried.body["results"])
    for node in cluster.nodes:
        assert cluster.request(node.node_id, "GET", "/v1/cluster").status == 200
    cluster.wait_converged()
