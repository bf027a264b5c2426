"""Real clusters of `budgetd run` processes on loopback: election, redirects, crashes, restarts,
membership, retries across leader changes, and a paused (deposed) leader."""

from __future__ import annotations

import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster, Response, until

pytestmark = pytest.mark.cluster

CAMPAIGN = {
    "currency": "USD",
    "timezone": "UTC",
    "total_budget_micros": 10**12,
    "pacing": {"mode": "asap"},
    "status": "active",
}


def put_campaign(cluster: Cluster, node_id: str, campaign_id: str = "acme") -> None:
    response = cluster.request(
        node_id, "PUT", f"/v1/campaigns/{campaign_id}", CAMPAIGN, follow=True
    )
    assert response.status in (200, 201), response


def write_until_ok(
    cluster: Cluster, method: str, path: str, body: Any, key: str, attempts: int = 200
) -> Response:
    """What a careful client does: the same idempotency key until a definite answer."""
    last: Any = None
    for _ in range(attempts):
        for node in cluster.nodes:
            if not node.running:
                continue
            try:
                response = cluster.request(
                    node.node_id,
                    method,
                    path,
                    body,
                    headers={"Idempotency-Key": key},
                    follow=True,
                    timeout_s=3,
                )
            except (OSError, urllib.error.URLError) as error:
                last = error
                continue
            if response.status in (503, 504) or response.status == 307:
                last = response
                continue
            return response
        time.sleep(0.1)
    raise AssertionError(f"no definite answer for {key}: {last!r}")


def spent_total(cluster: Cluster, node_id: str, campaign_id: str = "acme") -> int:
    response = cluster.request(node_id, "GET", f"/v1/campaigns/{campaign_id}", follow=True)
    assert response.status == 200, response
    return int(response.body["spent_total_micros"])


def test_one_leader_and_any_node_answers(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = next(n.node_id for n in cluster.nodes if n.node_id != leader)
    put_campaign(cluster, follower)
    body = {"campaign_id": "acme", "amount_micros": 1_000, "ttl_ms": 60_000, "bidder_id": "b1"}
    # A follower forwards to the leader (plain curl works against any node)...
    forwarded = cluster.request(
        follower, "POST", "/v1/reservations", body, headers={"Idempotency-Key": "r1"}
    )
    assert forwarded.status == 201 and forwarded.body["granted_micros"] == 1_000
    assert forwarded.headers["X-Budgetd-Leader"] == cluster.node(leader).http_address
    # ...or, asked to, redirects: the same key then replays the same reservation.
    redirected = cluster.request(
        follower,
        "POST",
        "/v1/reservations",
        body,
        headers={"Idempotency-Key": "r1", "Prefer": "redirect"},
    )
    assert redirected.status == 307
    assert redirected.headers["Location"].startswith(cluster.node(leader).url)
    assert redirected.body["code"] == "not_leader"
    followed = cluster.request(
        follower,
        "POST",
        "/v1/reservations",
        body,
        headers={"Idempotency-Key": "r1", "Prefer": "redirect"},
        follow=True,
    )
    assert followed.status == 201
    assert followed.body["reservation_id"] == forwarded.body["reservation_id"]
    assert followed.body["replayed"] is True
    local = cluster.request(follower, "GET", "/v1/campaigns/acme?consistency=local")
    assert local.status == 200 and local.body["stale_ok"] is True
    cluster.wait_converged()


def test_killing_the_leader_loses_no_acknowledged_spend(cluster: Cluster) -> None:
    leader = cluster.leader()
    put_campaign(cluster, leader)
    acked: list[int] = []
    failures: list[str] = []
    halfway = threading.Event()

    def writer() -> None:
        try:
            for i in range(120):
                amount = 1_000 + i
                response = write_until_ok(
                    cluster,
                    "POST",
                    "/v1/campaigns/acme/spend",
                    {"amount_micros": amount, "bidder_id": "b1"},
                    key=f"spend-{i}",
                )
                if response.status != 200:
                    failures.append(f"spend-{i}: {response}")
                    return
                acked.append(amount)
                if i == 40:
                    halfway.set()
        except AssertionError as error:
            failures.append(str(error))
            halfway.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert halfway.wait(120)
    cluster.kill(leader)
    thread.join(300)
    assert not failures, failures
    cluster.start(leader)
    cluster.leader()
    cluster.wait_converged()
    for node in cluster.nodes:
        assert spent_total(cluster, node.node_id) == sum(acked)


def test_a_retry_after_a_leader_change_returns_the_original_result(cluster: Cluster) -> None:
    leader = cluster.leader()
    put_campaign(cluster, leader)
    body = {"campaign_id": "acme", "amount_micros": 5_000, "ttl_ms": 600_000, "bidder_id": "b1"}
    first = write_until_ok(cluster, "POST", "/v1/reservations", body, key="slice-1")
    assert first.status == 201
    cluster.wait_converged()
    cluster.kill(leader)
    new_leader = cluster.leader()
    assert new_leader != leader
    again = write_until_ok(cluster, "POST", "/v1/reservations", body, key="slice-1")
    assert again.body["reservation_id"] == first.body["reservation_id"]
    assert again.body.get("replayed") is True
    reused = write_until_ok(
        cluster, "POST", "/v1/reservations", body | {"amount_micros": 6_000}, key="slice-1"
    )
    assert reused.status == 409 and reused.body["code"] == "idempotency_key_reused"


def test_all_nodes_killed_and_restarted_keep_every_write(cluster: Cluster) -> None:
    leader = cluster.leader()
    put_campaign(cluster, leader)
    total = 0
    for i in range(30):
        response = write_until_ok(
            cluster,
            "POST",
            "/v1/campaigns/acme/spend",
            {"amount_micros": 100 + i, "bidder_id": "b1"},
            key=f"s{i}",
        )
        assert response.status == 200
        total += 100 + i
    for node in cluster.nodes:
        cluster.kill(node.node_id)
    for node in cluster.nodes:
        cluster.start(node.node_id)
    cluster.leader()
    cluster.wait_converged()
    for node in cluster.nodes:
        assert spent_total(cluster, node.node_id) == total


def test_a_paused_leader_never_answers_a_stale_strong_read(cluster: Cluster) -> None:
    old = cluster.leader()
    put_campaign(cluster, old)
    cluster.wait_converged()
    cluster.pause(old)
    others = [n.node_id for n in cluster.nodes if n.node_id != old]
    cluster.leader(among=others)
    response = write_until_ok(
        cluster,
        "POST",
        "/v1/campaigns/acme/spend",
        {"amount_micros": 777, "bidder_id": "b1"},
        key="after-failover",
    )
    assert response.status == 200
    cluster.resume(old)
    # The old leader may still believe it leads. Whatever it answers, it never answers stale.
    read = cluster.request(old, "GET", "/v1/campaigns/acme", timeout_s=15)
    if read.status == 200:
        assert read.body["spent_total_micros"] == 777, "a strong read returned stale data"
    else:
        assert read.status in (307, 503, 504), read
    reserve = cluster.request(
        old,
        "POST",
        "/v1/reservations",
        {"campaign_id": "acme", "amount_micros": 10, "ttl_ms": 1_000, "bidder_id": "b1"},
        headers={"Idempotency-Key": "old-leader-slice"},
        timeout_s=15,
    )
    assert reserve.status in (201, 307, 503, 504), reserve
    cluster.wait_converged()


def test_membership_add_and_remove_a_node(tmp_path: Path) -> None:
    # Snapshots every few entries, so the newcomer has to catch up through a snapshot install.
    cluster = Cluster.create(tmp_path / "cluster", size=3, extra=1, raft="snapshot_entries = 8")
    try:
        leader = cluster.leader()
        put_campaign(cluster, leader)
        for i in range(20):
            assert (
                write_until_ok(
                    cluster,
                    "POST",
                    "/v1/campaigns/acme/spend",
                    {"amount_micros": 10, "bidder_id": "b1"},
                    key=f"pre-{i}",
                ).status
                == 200
            )
        newcomer = cluster.nodes[3]
        cluster.start(newcomer.node_id)
        added = cluster.request(
            leader,
            "POST",
            "/v1/cluster/members",
            {
                "id": newcomer.node_id,
                "raft_address": newcomer.raft_address,
                "http_address": newcomer.http_address,
                "dc": "local",
            },
            follow=True,
        )
        assert added.status == 200, added
        cluster.wait_converged()
        assert spent_total(cluster, newcomer.node_id) == 200
        installed = cluster.cluster_view(newcomer.node_id)["snapshot"]["installed"]
        assert installed >= 1, "the newcomer caught up through a snapshot"
        until(
            lambda: len(cluster.cluster_view(leader)["members"]) == 4, "the newcomer to be a member"
        )
        removed = cluster.request(
            cluster.leader(), "DELETE", f"/v1/cluster/members/{newcomer.node_id}", follow=True
        )
        assert removed.status == 200, removed
        until(
            lambda: len(cluster.cluster_view(cluster.leader())["members"]) == 3,
            "the newcomer to be removed",
        )
    finally:
        cluster.stop_all()


def test_a_limit_change_on_the_leader_is_applied_by_every_node_and_survives_a_restart(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    put_campaign(cluster, leader)
    change = {"idempotency_keys_max": 3, "idempotency_retention_ms": 7_200_000}
    answer = cluster.request(leader, "PATCH", "/v1/admin/limits", change)
    assert answer.status == 200, answer
    expected = {**answer.body["limits"]}
    assert {name: expected[name] for name in change} == change
    nodes = [node.node_id for node in cluster.nodes]

    def local_limits(node_id: str) -> dict[str, Any]:
        response = cluster.request(node_id, "GET", "/v1/admin/limits?consistency=local")
        assert response.status == 200, response
        return dict(response.body["limits"])

    for node_id in nodes:
        until(lambda node_id=node_id: local_limits(node_id) == expected, f"{node_id}'s limits")
    cluster.wait_converged()
    # Every node now decides with them: the keyed ops beyond the limit are refused, from any node.
    codes = []
    for index in range(4):
        response = write_until_ok(
            cluster,
            "POST",
            "/v1/campaigns/acme/spend",
            {"amount_micros": 1, "bidder_id": "b1"},
            key=f"limit-{index}",
        )
        codes.append(response.body.get("code", "ok") if response.status != 200 else "ok")
    assert codes == ["ok", "ok", "ok", "limit_reached"]
    # A bad change from a follower writes nothing anywhere.
    follower = next(node_id for node_id in nodes if node_id != leader)
    bad = cluster.request(follower, "PATCH", "/v1/admin/limits", {"ttl_ms_max": 0}, follow=True)
    assert bad.status == 400 and bad.body["code"] == "invalid_request"
    # A restarted node has them from its own journal and dump.
    cluster.kill(follower)
    cluster.start(follower)
    until(lambda: local_limits(follower) == expected, f"{follower}'s limits after a restart")
    cluster.wait_converged()
