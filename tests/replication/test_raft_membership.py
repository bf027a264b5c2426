"""Dynamic membership: a new node catches up through a snapshot install; a node is removed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
from raft_helpers import (
    WAIT_S,
    Cluster,
    campaign_batch,
    has_campaign,
    make_members,
    propose,
    wait_for,
)

from budgetd.replication import Outcome, RaftNode
from budgetd.settings import Member


def change(call: Callable[[Callable[[Outcome, str], None]], None]) -> tuple[Outcome, str]:
    done = threading.Event()
    box: list[tuple[Outcome, str]] = []

    def callback(outcome: Outcome, reason: str) -> None:
        box.append((outcome, reason))
        done.set()

    call(callback)
    assert done.wait(WAIT_S), "the membership callback never ran"
    return box[0]


def add(leader: RaftNode, member: Member) -> tuple[Outcome, str]:
    return change(lambda cb: leader.add_member(member, cb))


def remove(leader: RaftNode, member_id: str) -> tuple[Outcome, str]:
    return change(lambda cb: leader.remove_member(member_id, cb))


def on_leader(
    cluster: Cluster,
    attempt: Callable[[RaftNode], tuple[Outcome, str]],
    among: list[str] | None = None,
) -> tuple[Outcome, str]:
    """Retry a membership change on the current leader while it is definitely refused because
    leadership moved or the new leader's first entry is not applied yet (pysyncobj's rule)."""
    for _ in range(50):
        result = attempt(cluster.leader(among=among))
        if result[0] is not Outcome.FAILED or result[1] not in ("not_leader", "request_denied"):
            return result
    raise AssertionError(f"the change was refused 50 times: {result}")


def test_a_new_member_catches_up_by_snapshot_and_a_member_can_be_removed(
    make_cluster: Callable[..., Cluster], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="budgetd.replication.node")
    cluster = make_cluster(3, snapshot_entries=10)
    cluster.start_all()
    for i in range(25):
        assert cluster.propose_acked(campaign_batch(f"c{i}")).outcome is Outcome.OK
    leader = cluster.leader()
    wait_for(lambda: (leader.status()["snapshot"]["written"] or 0) >= 1, "the leader compacted")

    # A fourth member: its settings list all four; the others' settings learn of it by add.
    newcomer = make_members(1)[0]
    newcomer = Member(id="n4", raft_address=newcomer.raft_address, http_address="10.9.9.9:80")
    cluster.members.append(newcomer)
    fresh = cluster.start("n4")
    assert not has_campaign(fresh, "c0")

    # Followers refuse membership changes; the leader takes one at a time.
    follower = next(n for n in cluster.nodes.values() if n not in (leader, fresh))
    assert add(follower, newcomer) == (Outcome.FAILED, "not_leader")
    assert add(leader, cluster.members[0]) == (Outcome.FAILED, "already_member")
    founders = ["n1", "n2", "n3"]
    assert on_leader(cluster, lambda leader: add(leader, newcomer), founders) == (Outcome.OK, "ok")

    leader = cluster.leader()
    digest = cluster.wait_same_digest()
    assert fresh.digest() == digest
    assert fresh.status()["snapshot"]["installed"] >= 1, "n4 did not catch up by a snapshot"
    assert all(has_campaign(fresh, f"c{i}") for i in range(25))
    assert {m["id"] for m in leader.status()["members"]} == {"n1", "n2", "n3", "n4"}
    assert next(m for m in leader.status()["members"] if m["id"] == "n4")["http_address"] == (
        "10.9.9.9:80"
    )
    # Four members now: entries still commit and reach the newcomer.
    assert cluster.propose_acked(campaign_batch("with-n4")).outcome is Outcome.OK
    cluster.wait_same_digest()
    assert has_campaign(fresh, "with-n4")

    # Remove a member that is not the leader; the leader cannot remove itself.
    leader = cluster.leader()
    leader_id = leader.status()["node_id"]
    assert remove(leader, leader_id) == (Outcome.FAILED, "cannot_remove_self")
    assert remove(leader, "nobody") == (Outcome.FAILED, "unknown_member")
    victim_id = next(node_id for node_id in cluster.nodes if node_id != leader_id)
    victim = cluster.nodes[victim_id]
    assert on_leader(cluster, lambda leader: remove(leader, victim_id)) == (Outcome.OK, "ok")
    leader = cluster.leader()
    wait_for(
        lambda: victim_id not in {m["id"] for m in leader.status()["members"]},
        "the leader dropped the removed member",
    )
    index_removed = victim.applied_index()
    remaining = [n for node_id, n in cluster.nodes.items() if node_id != victim_id]
    for i in range(3):
        result = propose(cluster.leader(), campaign_batch(f"after-removal{i}"))
        assert result.outcome is Outcome.OK
    cluster.wait_same_digest(remaining)
    assert all(has_campaign(n, "after-removal2") for n in remaining)
    assert not has_campaign(victim, "after-removal0")
    assert victim.applied_index() <= index_removed + 1
    for node in remaining:
        assert len(node.status()["members"]) == 3

    # Each node logged its state changes as events with its id, term and indexes.
    events = [
        (record.getMessage(), record.__dict__)
        for record in caplog.records
        if record.name == "budgetd.replication.node"
    ]

    def logged(event: str, **fields: object) -> bool:
        return any(
            message == event and all(extra.get(k) == v for k, v in fields.items())
            for message, extra in events
        )

    assert logged("snapshot_taken")
    assert logged("snapshot_installed", node_id="n4")
    # A member's id is known where its settings list it; its raft address always.
    assert logged("member_added", raft_address=newcomer.raft_address)
    assert logged("member_removed", member_id=victim_id)
    assert logged("became_leader", node_id=leader_id)
    for message, extra in events:
        if message in ("member_added", "snapshot_installed", "became_leader"):
            assert {"node_id", "term", "commit_index", "applied_index"} <= set(extra), message
