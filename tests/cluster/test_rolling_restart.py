"""A rolling restart under a bidder load, in the order docs/operations.md gives for an upgrade:
each follower in turn is stopped with SIGTERM, started again and waited ready and caught up;
the leader goes last, after `budgetd cluster transfer-leader` has moved leadership away.
Afterwards every acknowledged spend and commit is present exactly once on every node, and the
only errors the load saw were the documented retryable ones (counted and printed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cluster.harness import Cluster, until
from tests.cluster.load import Load, put_campaign

pytestmark = pytest.mark.cluster


def restart(cluster: Cluster, node_id: str) -> None:
    """Stop with SIGTERM (clean exit), start, and wait until the node is ready and has applied
    everything the leader had committed when it came back."""
    assert cluster.stop(node_id) == 0, f"{node_id} did not exit cleanly on SIGTERM"
    cluster.start(node_id)
    assert cluster.wait_ready(timeout_s=60) == [], cluster.logs()
    leader = cluster.leader()
    target = cluster.cluster_view(leader)["commit_index"]
    until(
        lambda: cluster.cluster_view(node_id)["applied_index"] >= target,
        f"{node_id} to catch up with the leader",
    )


def test_rolling_restart_under_load_loses_and_doubles_nothing(cluster: Cluster) -> None:
    cluster.leader()
    put_campaign(cluster)
    load = Load(cluster, ops_max=3_000)
    load.start()
    restarted: list[str] = []
    try:
        load.wait_for(30)
        leader = cluster.leader()
        for node in [n for n in cluster.nodes if n.node_id != leader]:
            restart(cluster, node.node_id)
            restarted.append(node.node_id)
            load.wait_for(load.acknowledged + 20)
        # The leader last, with leadership moved away first.
        moved = subprocess.run(
            [
                sys.executable,
                "-m",
                "budgetd",
                "cluster",
                "transfer-leader",
                "--to",
                restarted[0],
                "--url",
                cluster.node(leader).url,
                "--token",
                cluster.token,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert moved.returncode == 0, moved.stderr
        assert cluster.leader() == restarted[0]
        restart(cluster, leader)
        restarted.append(leader)
        load.wait_for(load.acknowledged + 20)
    finally:
        load.stop()
        load.join()
    assert sorted(restarted) == sorted(n.node_id for n in cluster.nodes)
    cluster.wait_converged()
    load.check([n.node_id for n in cluster.nodes])
    print(
        f"\nrolling restart under load: {load.acknowledged} writes acknowledged "
        f"({len(load.spends)} spends, {len(load.commits)} commits), errors seen and retried: "
        f"{dict(load.errors)}"
    )
