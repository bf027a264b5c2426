"""Helpers for in-process clusters of RaftNodes on 127.0.0.1: settings, waits, proposals.

Every wait is a bounded poll on a condition. Timers are fast, but nothing asserts on time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from budgetd.codec import encode_batch
from budgetd.localcluster import free_ports
from budgetd.replication import Outcome, RaftNode
from budgetd.settings import Member, NodeSettings, ProposerSettings, RaftSettings

#: Generous: other jobs share the 2 cores.
WAIT_S = 30.0
START_MS = 1_780_000_000_000

FAST_RAFT = RaftSettings(
    election_timeout_min_ms=300,
    election_timeout_max_ms=600,
    heartbeat_ms=50,
    leader_fallback_ms=1_000,
    connection_timeout_ms=1_000,
    reconnect_ms=200,
    snapshot_entries=20_000,
    snapshot_interval_ms=600_000,
    tick_ms=5,
)


def free_port() -> int:
    return free_ports(1)[0]


def wait_for(condition: Callable[[], Any], what: str, *, timeout_s: float = WAIT_S) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def make_members(count: int) -> list[Member]:
    return [
        Member(
            id=f"n{i}",
            raft_address=f"127.0.0.1:{free_port()}",
            http_address=f"127.0.0.1:{free_port()}",
            dc=f"dc{i % 2}",
        )
        for i in range(1, count + 1)
    ]


def node_settings(
    root: Path,
    members: Iterable[Member],
    node_id: str,
    *,
    secret: bool = True,
    raft: RaftSettings = FAST_RAFT,
) -> NodeSettings:
    secret_file = None
    if secret:
        secret_path = root / "cluster.secret"
        if not secret_path.exists():
            secret_path.write_text("test-cluster-secret\n")
        secret_file = str(secret_path)
    return NodeSettings(
        node_id=node_id,
        data_dir=str(root / node_id),
        members=tuple(members),
        secret_file=secret_file,
        raft=raft,
        proposer=ProposerSettings(request_timeout_ms=10_000),
    )


@dataclass
class Result:
    outcome: Outcome
    results: list[dict[str, Any]] | None
    reason: str
    thread: str


def propose(node: RaftNode, entry: bytes, *, timeout_s: float = WAIT_S) -> Result:
    """Propose and wait for the callback (which RaftNode guarantees within its own timeout)."""
    done = threading.Event()
    box: list[Result] = []

    def callback(outcome: Outcome, results: list[dict[str, Any]] | None, reason: str) -> None:
        box.append(Result(outcome, results, reason, threading.current_thread().name))
        done.set()

    node.propose(entry, callback)
    assert done.wait(timeout_s), "the proposal callback never ran"
    assert len(box) == 1
    return box[0]


def campaign_op(name: str, daily_budget_micros: int = 1_000_000) -> dict[str, Any]:
    return {
        "op": "put_campaign",
        "campaign_id": name,
        "currency": "USD",
        "timezone": "UTC",
        "daily_budget_micros": daily_budget_micros,
    }


def campaign_batch(*names: str, at_ms: int = START_MS) -> bytes:
    return encode_batch(at_ms, [campaign_op(name) for name in names])


@dataclass
class Cluster:
    """Nodes of one cluster in this process; closed by the fixture that made it."""

    root: Path
    members: list[Member]
    raft: RaftSettings = FAST_RAFT
    nodes: dict[str, RaftNode] = field(default_factory=dict)

    def settings(self, node_id: str) -> NodeSettings:
        return node_settings(self.root, self.members, node_id, raft=self.raft)

    def start(self, node_id: str) -> RaftNode:
        node = RaftNode(self.settings(node_id))
        node.start()
        self.nodes[node_id] = node
        return node

    def start_all(self) -> None:
        for member in self.members:
            self.start(member.id)

    def stop(self, node_id: str) -> None:
        self.nodes.pop(node_id).close()

    def close(self) -> None:
        for node_id in list(self.nodes):
            self.stop(node_id)

    def with_raft(self, **changes: Any) -> Cluster:
        self.raft = replace(self.raft, **changes)
        return self

    def leader(self, *, among: Iterable[str] | None = None, timeout_s: float = WAIT_S) -> RaftNode:
        """Wait until exactly one running node leads and every running node (or every node
        ``among`` these ids) names it."""

        def single_leader() -> RaftNode | None:
            nodes = [n for i, n in self.nodes.items() if among is None or i in among]
            leaders = [n for n in nodes if n.is_leader()]
            if len(leaders) != 1:
                return None
            leader_id = leaders[0].status()["node_id"]
            if all(n.leader_id() == leader_id for n in nodes):
                return leaders[0]
            return None

        node: RaftNode = wait_for(single_leader, "one agreed leader", timeout_s=timeout_s)
        return node

    def propose_acked(self, entry: bytes, *, attempts: int = 50) -> Result:
        """Propose on the current leader until OK. Retries only definite failures (FAILED) and
        UNKNOWN outcomes of idempotent entries (callers pass put_campaign batches)."""
        last: Result | None = None
        for _ in range(attempts):
            leader = self.leader()
            last = propose(leader, entry)
            if last.outcome is Outcome.OK:
                return last
        raise AssertionError(f"no OK after {attempts} attempts; last: {last}")

    def wait_applied(self, index: int, nodes: Iterable[RaftNode] | None = None) -> None:
        targets = list(self.nodes.values() if nodes is None else nodes)
        wait_for(
            lambda: all(n.applied_index() >= index for n in targets),
            f"all nodes applied index {index}",
        )

    def wait_same_digest(self, nodes: Iterable[RaftNode] | None = None) -> str:
        """Wait until the nodes applied the same index and hold the same digest; return it."""
        targets = list(self.nodes.values() if nodes is None else nodes)

        def same() -> str | None:
            indexes = {n.applied_index() for n in targets}
            if len(indexes) != 1:
                return None
            digests = {n.digest() for n in targets}
            if len(digests) != 1 or {n.applied_index() for n in targets} != indexes:
                return None
            return digests.pop()

        digest: str = wait_for(same, "equal applied indexes and digests")
        return digest


def has_campaign(node: RaftNode, name: str) -> bool:
    return bool(node.read(lambda ledger: ledger.campaign(name) is not None))
