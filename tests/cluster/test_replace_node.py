"""Replacing a member whose disk is lost, as docs/operations.md tells an operator to: a 3-node
cluster under a bidder load, kill -9 of a follower and its data dir deleted, `budgetd cluster
remove-node`, then a new member (new id, new ports) started and `budgetd cluster add-node`-ed;
it catches up through a snapshot install. Every acknowledged write is there once, and the new
member's digest equals the others'. Then the other members get the new member list and a
restart each, and the new member can lead, with followers forwarding to it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from budgetd.localcluster import LocalNode, free_ports, local_config
from tests.cluster.harness import Cluster, running_cluster, until
from tests.cluster.load import Load, put_campaign

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # Snapshots every few entries, so the newcomer has to catch up through a snapshot install.
    yield from running_cluster(tmp_path / "cluster", request, raft="snapshot_entries = 16")


def budgetd(
    cluster: Cluster, *args: str, via: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it, against node ``via`` (default: any running node)."""
    url = next(n.url for n in cluster.nodes if n.running and via in (None, n.node_id))
    command = [sys.executable, "-m", "budgetd", *args, "--url", url, "--token", cluster.token]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def test_a_follower_with_a_lost_disk_is_replaced_by_a_new_member(cluster: Cluster) -> None:
    leader = cluster.leader()
    put_campaign(cluster)
    load = Load(cluster, ops_max=1_500)
    load.start()
    try:
        load.wait_for(40)
        # The disk of a follower dies: kill -9, and its data is gone for good.
        dead = next(n for n in cluster.nodes if n.node_id != leader)
        cluster.kill(dead.node_id)
        shutil.rmtree(cluster.root / dead.node_id)
        load.wait_for(load.acknowledged + 40)

        # 1. Remove the dead member, so that the cluster's majority no longer counts it.
        budgetd(cluster, "cluster", "remove-node", dead.node_id)
        survivors = [n for n in cluster.nodes if n.node_id != dead.node_id]
        cluster.nodes.remove(dead)
        until(
            lambda: all(len(cluster.cluster_view(n.node_id)["members"]) == 2 for n in survivors),
            "the survivors to drop the dead member",
        )

        # 2. A new member: a new id, new ports, a config listing the members it joins and itself.
        raft_port, http_port = free_ports(2)
        new = LocalNode(
            "n4",
            f"127.0.0.1:{raft_port}",
            f"127.0.0.1:{http_port}",
            cluster.root / "n4.toml",
            cluster.root / "n4.log",
        )
        members = [(n.node_id, n.raft_address, n.http_address) for n in [*survivors, new]]
        new.config.write_text(local_config(new.node_id, members, raft="snapshot_entries = 16"))
        cluster.nodes.append(new)
        cluster.start(new.node_id)
        added = budgetd(
            cluster,
            "cluster",
            "add-node",
            "--id",
            new.node_id,
            "--raft-address",
            new.raft_address,
            "--http-address",
            new.http_address,
            "--dc",
            "local",
            "--json",
        )
        assert f'"id": "{new.node_id}"' in added.stdout
        load.wait_for(load.acknowledged + 40)
    finally:
        load.stop()
        load.join()

    ids = [n.node_id for n in cluster.nodes]
    assert ids == [*(n.node_id for n in survivors), "n4"]
    cluster.wait_converged(ids)
    load.check(ids)
    view = cluster.cluster_view("n4")
    assert view["snapshot"]["installed"] >= 1, "the new member caught up through a snapshot"
    assert sorted(m["id"] for m in view["members"]) == sorted(ids)
    status = budgetd(cluster, "cluster", "status")
    assert dead.node_id not in status.stdout

    # 3. The new member list into every other node's config, and a restart of each, one at a
    #    time: then every node knows the new member's id and HTTP address, and forwards to it
    #    when it leads.
    for node in survivors:
        node.config.write_text(local_config(node.node_id, members, raft="snapshot_entries = 16"))
        assert cluster.stop(node.node_id) == 0
        cluster.start(node.node_id)
        assert cluster.wait_ready(timeout_s=60) == [], cluster.logs()
    cluster.leader()
    budgetd(cluster, "cluster", "transfer-leader", "--to", new.node_id)
    assert cluster.leader() == new.node_id
    follower = survivors[0].node_id
    view = cluster.cluster_view(follower)
    assert sorted(m["id"] for m in view["members"]) == sorted(ids)
    spend = {"amount_micros": 7, "bidder_id": "load"}
    forwarded = cluster.request(
        follower, "POST", "/v1/campaigns/acme/spend", spend, headers={"Idempotency-Key": "last"}
    )
    assert forwarded.status == 200, forwarded
    assert forwarded.headers["X-Budgetd-Leader"] == new.http_address
    load.spends["last"] = 7
    cluster.wait_converged(ids)
    load.check(ids)
    print(
        f"\nreplace a node under load: {load.acknowledged} writes acknowledged, errors seen "
        f"and retried: {dict(load.errors)}"
    )


def test_a_member_with_a_lost_disk_comes_back_under_its_own_name(cluster: Cluster) -> None:
    """The Kubernetes way (a StatefulSet pod keeps its name and address; its PVC is new): remove
    the member, start it again with an empty data dir, add it back under the same id."""
    leader = cluster.leader()
    put_campaign(cluster)
    load = Load(cluster, ops_max=1_000)
    load.start()
    try:
        load.wait_for(40)
        lost = next(n for n in cluster.nodes if n.node_id != leader)
        cluster.kill(lost.node_id)
        shutil.rmtree(cluster.root / lost.node_id)
        budgetd(cluster, "cluster", "remove-node", lost.node_id)
        others = [n.node_id for n in cluster.nodes if n.node_id != lost.node_id]
        until(
            lambda: all(len(cluster.cluster_view(i)["members"]) == 2 for i in others),
            "the others to drop the lost member",
        )
        load.wait_for(load.acknowledged + 40)
        cluster.start(lost.node_id)  # its config is unchanged: every member, itself included
        budgetd(
            cluster,
            "cluster",
            "add-node",
            "--id",
            lost.node_id,
            "--raft-address",
            lost.raft_address,
            "--http-address",
            lost.http_address,
            "--dc",
            "local",
            via=others[0],
        )
        load.wait_for(load.acknowledged + 40)
    finally:
        load.stop()
        load.join()
    ids = [n.node_id for n in cluster.nodes]
    cluster.wait_converged(ids)
    load.check(ids)
    assert cluster.cluster_view(lost.node_id)["snapshot"]["installed"] >= 1
    # Every node knows it under its id, so it can lead.
    budgetd(cluster, "cluster", "transfer-leader", "--to", lost.node_id)
    assert cluster.leader() == lost.node_id
