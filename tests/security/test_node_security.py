"""Real `budgetd run` processes: a token rotated without a restart (SIGHUP, and the file's change
alone), a broken tokens file that locks no one out, the audit log on disk, and a stranger on the
Raft port — garbage, pickles, forged Raft messages, without the cluster secret — changing nothing
(digest, applied index, term, members) and crashing nothing."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from budgetd.api import TokenEntry, Tokens
from tests.cluster.harness import Cluster, until

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

QUIET = "pulse_interval_ms = 3600000"
ROOT = {
    "currency": "USD",
    "timezone": "UTC",
    "daily_budget_micros": 100_000_000,
    "pacing": {"mode": "asap"},
    "status": "active",
}
NEW_TOKEN = "rotated-admin-token-0123456789"


def _status(cluster: Cluster, token: str, path: str = "/v1/cluster") -> int:
    node_id = cluster.nodes[0].node_id
    return cluster.request(
        node_id, "GET", path, headers={"Authorization": f"Bearer {token}"}
    ).status


@pytest.fixture(params=["sighup", "file-change"])
def rotating(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    reload_ms = 3_600_000 if request.param == "sighup" else 100
    cluster = Cluster.create(tmp_path / "cluster", 1, api=f"tokens_reload_ms = {reload_ms}")
    try:
        assert cluster.wait_ready(60) == [], cluster.logs()
        yield cluster, str(request.param)
    finally:
        cluster.stop_all()


def test_a_token_is_rotated_without_a_restart(rotating: tuple[Cluster, str]) -> None:
    cluster, how = rotating
    node = cluster.nodes[0]
    assert node.process is not None
    pid = node.process.pid
    old = cluster.token
    tokens_file = cluster.root / "tokens.toml"
    assert _status(cluster, old) == 200 and _status(cluster, NEW_TOKEN) == 401

    tokens_file.write_text(
        Tokens.render_file([TokenEntry.from_plaintext("rotated", NEW_TOKEN, roles=["admin"])])
    )
    if how == "sighup":
        assert _status(cluster, old) == 200  # checked hourly only: nothing changes by itself
        os.kill(pid, signal.SIGHUP)
    until(lambda: _status(cluster, old) == 401, "the old token to be refused", 30)
    assert _status(cluster, NEW_TOKEN) == 200
    assert node.process.pid == pid and node.running

    # A broken file keeps the rotated token and logs one error.
    tokens_file.write_text("[[token]]\nname = 'x'\n")
    if how == "sighup":
        os.kill(pid, signal.SIGHUP)
    until(lambda: "not reloaded" in node.log.read_text(), "the reload error in the log", 30)
    assert _status(cluster, NEW_TOKEN) == 200
    if how == "sighup":
        os.kill(pid, signal.SIGHUP)  # the same broken file again: no second error
        assert _status(cluster, NEW_TOKEN) == 200
    assert node.log.read_text().count("not reloaded") == 1

    # The admin action of the new token is in the audit log, by name.
    headers = {"Authorization": f"Bearer {NEW_TOKEN}", "X-Request-Id": "rotation-1"}
    reply = cluster.request(node.node_id, "PUT", "/v1/campaigns/acme", ROOT, headers=headers)
    assert reply.status == 201
    audit = cluster.root / node.node_id / "audit.jsonl"
    [record] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert (record["token_name"], record["target"], record["status"]) == ("rotated", "acme", 201)
    assert record["request_id"] == "rotation-1" and NEW_TOKEN not in audit.read_text()


# ----------------------------------------------------------------------------------------------
# The Raft port


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


@pytest.fixture
def quiet_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster.create(tmp_path / "cluster", 3, proposer=QUIET)
    try:
        assert cluster.wait_ready(60) == [], cluster.logs()
        yield cluster
    finally:
        cluster.stop_all()


def _snapshot(cluster: Cluster) -> dict[str, tuple[str, int, int, list[str]]]:
    cluster.wait_converged()
    found = {}
    for node in cluster.nodes:
        view = cluster.cluster_view(node.node_id)
        members = sorted(m["raft_address"] for m in view["members"])
        found[node.node_id] = (view["digest"], view["applied_index"], view["term"], members)
    return found


def test_a_stranger_on_the_raft_port_changes_nothing_and_crashes_nothing(
    quiet_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = quiet_cluster
    leader = cluster.leader()
    assert cluster.request(leader, "PUT", "/v1/campaigns/acme", ROOT).status == 201
    before = _snapshot(cluster)
    canary = tmp_path / "pwned"
    some_member = cluster.nodes[0].raft_address
    attacks = [
        [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
        [os.urandom(4096)],
        [b"\xff\xff\xff\x7f" + os.urandom(64)],  # a frame claiming 2 GiB
        [b"\x10\x00\x00\x00" + os.urandom(16)],
        [_frame(["add", "127.0.0.1:1"])],  # syncobj_admin's membership command
        [_frame(_Canary(canary))],  # code execution if unpickled
        [
            _frame(some_member),
            _frame(
                {
                    "type": "request_vote",
                    "term": 10**6,
                    "last_log_index": 10**9,
                    "last_log_term": 10**6,
                }
            ),
        ],
        [
            _frame(some_member),
            _frame({"type": "append_entries", "term": 10**6, "entries": [], "commit_index": 9}),
        ],
    ]
    for node in cluster.nodes:
        host, port = node.raft_address.rsplit(":", 1)
        for frames in attacks:
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.settimeout(5)
                try:
                    for frame in frames:
                        sock.sendall(frame)
                    sock.recv(4096)
                except (ConnectionError, TimeoutError):
                    pass

    assert not canary.exists(), "a pickle sent to the Raft port was unpickled"
    for node in cluster.nodes:
        assert node.running, cluster.logs()
        assert cluster.request(node.node_id, "GET", "/healthz").status == 200
    assert cluster.wait_ready(30) == []
    after = _snapshot(cluster)
    for node_id, (digest, applied, term, members) in after.items():
        digest_0, applied_0, term_0, members_0 = before[node_id]
        assert (digest, members) == (digest_0, members_0), node_id
        assert term < 10**6, "a forged Raft message was read"
        # Nothing entered the log but the no-op a leader appends in each new term (an election
        # is not a change, and a loaded machine may hold one whatever the Raft port hears).
        assert applied - applied_0 <= term - term_0, (node_id, before, after, cluster.logs())
    # And the cluster still works.
    assert cluster.request(leader, "PUT", "/v1/campaigns/acme:after", ROOT).status == 201
    cluster.wait_converged()
