"""In-process clusters of RaftNodes: election, replication, results, refusals, failover."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from raft_helpers import Cluster, campaign_batch, has_campaign, propose, wait_for

from budgetd.codec import encode_batch
from budgetd.replication import Outcome


def test_three_nodes_elect_one_leader_and_apply_every_entry_in_order(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.leader()
    leader_id = leader.status()["node_id"]

    for i in range(10):
        result = propose(leader, campaign_batch(f"acme{i}"))
        assert result.outcome is Outcome.OK, result
        # The proposer gets the ledger's own results, on the leader's tick thread.
        assert result.results == [
            {"code": "ok", "campaign_id": f"acme{i}", "version": 1, "created": True}
        ]
        assert result.thread == f"raft-tick-{leader_id}"
    replayed = propose(leader, campaign_batch("acme0"))
    assert replayed.results == [
        {"code": "ok", "campaign_id": "acme0", "version": 1, "created": False}
    ]

    digest = cluster.wait_same_digest()
    for node in cluster.nodes.values():
        assert node.digest() == digest == node.read(lambda ledger: ledger.digest())
        assert all(has_campaign(node, f"acme{i}") for i in range(10))
        assert node.leader_id() == leader_id

    # status() is the tick thread's view: at most one tick behind.
    wait_for(lambda: leader.status()["applied_index"] == leader.applied_index(), "a fresh view")
    status = leader.status()
    assert status["role"] == "leader"
    assert status["leader_id"] == leader_id
    assert status["commit_index"] >= status["applied_index"]
    assert status["ready"] is True
    by_id = {m["id"]: m for m in status["members"]}
    assert set(by_id) == {m.id for m in cluster.members}
    for member in cluster.members:
        row = by_id[member.id]
        assert row["raft_address"] == member.raft_address
        assert row["http_address"] == member.http_address
        assert row["dc"] == member.dc
        assert row["role"] == ("leader" if member.id == leader_id else "follower")
    wait_for(lambda: all(m["healthy"] for m in leader.status()["members"]), "all peers connected")
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    assert follower.status()["role"] == "follower"
    assert follower.status()["term"] == status["term"]


def test_a_follower_refuses_to_propose_and_names_the_leader(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.leader()
    assert propose(leader, campaign_batch("before")).outcome is Outcome.OK
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    # Forwarding is the HTTP layer's job: a follower refuses at once, definitely not applied.
    refused = propose(follower, campaign_batch("through-follower"))
    assert (refused.outcome, refused.results, refused.reason) == (
        Outcome.FAILED,
        None,
        "not_leader",
    )
    assert follower.leader_id() == leader.status()["node_id"]
    assert follower.leader_member() is not None
    # A later entry applied everywhere proves the refused one never was.
    assert propose(leader, campaign_batch("after")).outcome is Outcome.OK
    cluster.wait_same_digest()
    for node in cluster.nodes.values():
        assert has_campaign(node, "after")
        assert not has_campaign(node, "through-follower")


def test_an_entry_that_is_not_a_batch_is_refused_by_every_replica_alike(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.leader()
    before = propose(leader, campaign_batch("a"))
    assert before.outcome is Outcome.OK
    digest_before = cluster.wait_same_digest()
    index_before = leader.applied_index()

    garbage = propose(leader, b"\xc1 not msgpack")
    assert garbage.outcome is Outcome.OK
    assert garbage.results is not None and len(garbage.results) == 1
    assert garbage.results[0]["code"] == "invalid_request"
    wrong_batch = propose(leader, encode_batch(1, "not a list"))  # type: ignore[arg-type]
    assert wrong_batch.outcome is Outcome.OK
    assert wrong_batch.results is not None
    assert wrong_batch.results[0]["code"] == "invalid_request"

    assert cluster.wait_same_digest() == digest_before
    assert leader.applied_index() >= index_before + 2


def test_an_entry_beyond_the_batch_size_is_refused_before_raft(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1)
    node = cluster.start(cluster.members[0].id)
    cluster.leader()
    limit = cluster.settings("n1").proposer.batch_bytes_max
    result = propose(node, b"\x00" * (limit + 1))
    assert result.outcome is Outcome.FAILED
    assert result.reason.startswith("entry_too_large")


def test_losing_the_leader_elects_another_and_loses_no_acknowledged_entry(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    old_leader = cluster.leader()
    acked = []
    for i in range(20):
        assert cluster.propose_acked(campaign_batch(f"before{i}")).outcome is Outcome.OK
        acked.append(f"before{i}")

    # Keep proposing on the old leader while it goes away: each outcome must be honest.
    outcomes: list[tuple[str, Outcome]] = []
    stop = threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            name = f"during{i}"
            outcomes.append((name, propose(old_leader, campaign_batch(name)).outcome))
            i += 1

    hammering = threading.Thread(target=hammer)
    hammering.start()
    wait_for(lambda: len(outcomes) >= 3, "a few proposals during the failover")
    closed_at = time.monotonic()
    cluster.stop(old_leader.status()["node_id"])
    stop.set()
    hammering.join(60)
    new_leader = cluster.leader()
    failover_s = time.monotonic() - closed_at
    print(f"failover: new leader {new_leader.status()['node_id']} after {failover_s:.3f} s")
    assert new_leader is not old_leader

    acked += [name for name, outcome in outcomes if outcome is Outcome.OK]
    for i in range(5):
        assert cluster.propose_acked(campaign_batch(f"after{i}")).outcome is Outcome.OK
        acked.append(f"after{i}")
    cluster.wait_same_digest()
    for node in cluster.nodes.values():
        missing = [name for name in acked if not has_campaign(node, name)]
        assert not missing, f"acknowledged entries lost on {node.status()['node_id']}: {missing}"
        # FAILED is definite: such an entry must be nowhere.
        for name, outcome in outcomes:
            if outcome is Outcome.FAILED:
                assert not has_campaign(node, name)
