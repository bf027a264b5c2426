"""What a node tells its operators without stopping Raft: the ledger digest (hashed in a forked
child, equal to the one computed in the process) and the warning when terms change fast."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from raft_helpers import WAIT_S, Cluster, campaign_batch, wait_for

from budgetd.ledger import Ledger
from budgetd.node import DIGEST_MAX_AGE_S, Node
from budgetd.replication import RaftNode
from budgetd.replication.node import TERM_CHURN_CHANGES


def test_the_digest_from_the_child_is_the_ledgers_and_follows_applies(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1)
    cluster.start_all()
    node = cluster.leader()
    cluster.propose_acked(campaign_batch("acme", "globex"))
    index, digest = node.digest_with_index()
    assert digest == node.read(Ledger.digest)
    assert index == node.applied_index()
    cluster.propose_acked(campaign_batch("initech"))
    later_index, later = node.digest_with_index()
    assert later_index > index and later != digest
    assert later == node.read(Ledger.digest)


def test_fast_term_changes_log_one_warning_per_window(
    make_cluster: Callable[..., Cluster], caplog: pytest.LogCaptureFixture
) -> None:
    node = RaftNode(make_cluster(1).settings("n1"))  # not started: only the bookkeeping
    caplog.set_level(logging.WARNING, logger="budgetd.replication.node")
    for term in range(2, 2 + TERM_CHURN_CHANGES - 1):
        node._note_term_change(term)
    assert caplog.records == []
    for term in range(10, 15):
        node._note_term_change(term)
    warnings = [r for r in caplog.records if "terms_changing_fast" in r.getMessage()]
    assert len(warnings) == 1
    assert "now term 10" in warnings[0].getMessage()


def test_the_cluster_view_answers_from_the_last_digest_and_refreshes_it_in_the_background(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1)
    node = Node(cluster.settings("n1"))  # not started: the ledger and its digest only
    # Without refresh nothing is computed, not even a first digest.
    unrefreshed = node.cluster_status(refresh=False)
    assert (unrefreshed["digest"], unrefreshed["digest_index"]) == ("", 0)
    assert node._digest is None
    first = node.cluster_status()
    assert first["digest"] == node.raft.read(Ledger.digest)
    # A stale digest is answered at once (never computed on the caller's thread), and a new one
    # replaces it in the background.
    stale = (time.monotonic() - 2 * DIGEST_MAX_AGE_S, first["digest_index"], "0" * 64)
    node._digest = stale
    computing = node.raft.digest_with_index
    release = threading.Event()

    def slow_digest() -> tuple[int, str]:
        assert release.wait(WAIT_S)
        return computing()

    node.raft.digest_with_index = slow_digest  # type: ignore[method-assign]
    assert node.cluster_status(refresh=False)["digest"] == "0" * 64
    assert not node._digest_refreshing  # the last digest, stale or not, and no refresh
    assert node.cluster_status()["digest"] == "0" * 64
    assert node.cluster_status()["digest"] == "0" * 64  # one refresh at a time, still running
    release.set()
    wait_for(lambda: node.cluster_status()["digest"] == first["digest"], "a refreshed digest")
    assert node.cluster_status(fresh_digest=True)["digest"] == first["digest"]
