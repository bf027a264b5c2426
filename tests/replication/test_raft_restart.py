"""Restarting nodes from their data directories: journal replay, dumps, log compaction."""

from __future__ import annotations

import os
from collections.abc import Callable

from raft_helpers import Cluster, campaign_batch, has_campaign, propose, wait_for

from budgetd.replication import Outcome


def test_a_single_node_resumes_from_its_journal(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(1)
    node = cluster.start("n1")
    cluster.leader()
    for i in range(5):
        assert propose(node, campaign_batch(f"solo{i}")).outcome is Outcome.OK
    digest, index = node.digest(), node.applied_index()
    cluster.stop("n1")
    assert not os.path.exists(os.path.join(cluster.root, "n1", "raft.dump"))  # journal only

    node = cluster.start("n1")
    cluster.leader()
    wait_for(lambda: node.applied_index() >= index, "the journal replayed")
    assert node.read(lambda ledger: ledger.campaign("solo4") is not None)
    assert propose(node, campaign_batch("solo5")).outcome is Outcome.OK
    assert node.digest() != digest
    assert has_campaign(node, "solo0") and has_campaign(node, "solo5")


def test_all_nodes_restart_from_dump_and_journal_after_compaction(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(3, snapshot_entries=10)
    cluster.start_all()
    for i in range(25):
        assert cluster.propose_acked(campaign_batch(f"c{i}")).outcome is Outcome.OK
    cluster.wait_same_digest()
    # Every node compacted at least once (a dump on disk, the journal cut).
    wait_for(
        lambda: all((n.status()["snapshot"]["written"] or 0) >= 1 for n in cluster.nodes.values()),
        "a dump on every node",
    )
    for i in range(25, 30):  # entries after the last dump live in the journal only
        assert cluster.propose_acked(campaign_batch(f"c{i}")).outcome is Outcome.OK
    digest = cluster.wait_same_digest()
    index = cluster.leader().applied_index()
    cluster.close()

    cluster.start_all()
    cluster.leader()
    cluster.wait_applied(index)
    assert cluster.wait_same_digest() == digest
    for node in cluster.nodes.values():
        assert all(has_campaign(node, f"c{i}") for i in range(30))
        assert node.status()["snapshot"]["index"] is not None
        # The dump's membership came back without the node itself among its peers.
        peers = [m for m in node.status()["members"] if m["role"] != node.status()["role"]]
        assert node.status()["node_id"] not in {m["id"] for m in peers}
        assert len(node.status()["members"]) == 3
    assert cluster.propose_acked(campaign_batch("c30")).outcome is Outcome.OK
    cluster.wait_same_digest()
