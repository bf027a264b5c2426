"""The Raft port speaks pickle: no secret, no cluster; one address; strangers change nothing."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from raft_helpers import Cluster, campaign_batch, node_settings, propose, wait_for

from budgetd.replication import Outcome, RaftNode
from budgetd.replication.config import data_files
from budgetd.settings import SettingsError


def test_a_multi_member_node_refuses_to_start_without_a_secret(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUDGETD_CLUSTER_SECRET", raising=False)
    cluster = make_cluster(3)
    settings = node_settings(cluster.root, cluster.members, "n1", secret=False)
    with pytest.raises(SettingsError, match="secret"):
        RaftNode(settings)
    assert not os.path.exists(data_files(settings).journal)  # refused before touching disk


def test_a_wildcard_bind_address_is_refused(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(3)
    settings = cluster.settings("n1")
    port = settings.me.raft_address.rsplit(":", 1)[1]
    for wildcard in (f"0.0.0.0:{port}", f"[::]:{port}"):
        with pytest.raises(SettingsError, match="wildcard"):
            RaftNode(replace(settings, raft_bind=wildcard))


def test_the_raft_port_listens_on_the_configured_address_only(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1)
    node = cluster.start("n1")
    host, port = cluster.members[0].raft_address.rsplit(":", 1)
    assert host == "127.0.0.1"
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    # Any other loopback address reaches this machine too; a 0.0.0.0 bind would accept it.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", int(port)), timeout=5).close()
    assert node.status()["role"] in ("leader", "follower", "candidate")


def test_a_second_node_cannot_take_a_bound_address(make_cluster: Callable[..., Cluster]) -> None:
    from budgetd.replication import ReplicationError

    cluster = make_cluster(1)
    cluster.start("n1")
    squatter_root = cluster.root / "squatter"
    squatter_root.mkdir()
    with pytest.raises(ReplicationError, match="cannot bind"):
        RaftNode(node_settings(squatter_root, cluster.members, "n1", secret=False)).start()


def _frame(message: object) -> bytes:
    """A frame as pysyncobj writes it without a password (tcp_connection.py send)."""
    data = zlib.compress(pickle.dumps(message, protocol=2), 3)
    return struct.pack("i", len(data)) + data


class _Canary:
    """Unpickling this creates a file: proof of code execution on the receiver."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.path),))


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def test_a_peer_without_the_secret_changes_nothing(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.leader()
    assert propose(leader, campaign_batch("before")).outcome is Outcome.OK
    digest = cluster.wait_same_digest()
    before = {node_id: n.status() for node_id, n in cluster.nodes.items()}
    canary = tmp_path / "pwned"
    stranger = "127.0.0.1:1"
    member = cluster.members[0].raft_address
    attacks = [
        [_frame(["add", stranger])],  # syncobj_admin's membership command
        [_frame(["status"])],
        [_frame(_Canary(canary))],  # code execution if unpickled
        [
            _frame(member),
            _frame(
                {
                    "type": "request_vote",
                    "term": 10**6,
                    "last_log_index": 10**9,
                    "last_log_term": 10**6,
                }
            ),
        ],
        [b"\x10\x00\x00\x00" + os.urandom(16)],  # random bytes shaped like a frame
    ]
    for target in cluster.nodes.values():
        host, port = target.status()["members"][0]["raft_address"].rsplit(":", 1)
        for frames in attacks:
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                for frame in frames:
                    sock.sendall(frame)
                sock.settimeout(5)
                assert _closed_by_peer(sock), "a node kept talking to a peer without the secret"

    assert not canary.exists()
    assert propose(cluster.leader(), campaign_batch("after")).outcome is Outcome.OK
    cluster.wait_same_digest()
    for node_id, node in cluster.nodes.items():
        status = node.status()
        assert status["term"] < 10**6  # the forged vote request was never read
        assert sorted(m["raft_address"] for m in status["members"]) == sorted(
            m["raft_address"] for m in before[node_id]["members"]
        )
        assert stranger not in {m["raft_address"] for m in status["members"]}
    assert cluster.wait_same_digest() != digest  # "after" is there; nothing else changed
    wait_for(lambda: all(m["healthy"] for m in leader.status()["members"]), "peers still connected")


def test_without_a_secret_the_same_canary_runs_code(
    make_cluster: Callable[..., Cluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: a one-member node may run without a secret, and then the
    canary frame is unpickled. (So give even a one-member node a secret outside tests.)"""
    monkeypatch.delenv("BUDGETD_CLUSTER_SECRET", raising=False)
    cluster = make_cluster(1)
    node = RaftNode(node_settings(cluster.root, cluster.members, "n1", secret=False))
    node.start()
    try:
        canary = tmp_path / "pwned"
        host, port = cluster.members[0].raft_address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(_frame(_Canary(canary)))
            wait_for(canary.exists, "the canary to run")
    finally:
        node.close()
