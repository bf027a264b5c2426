"""Fuzzing a real 3-node cluster (`budgetd run` processes on loopback) through its own
/openapi.json with schemathesis, with an admin token, sent to a follower so that every write is
also forwarded: no 500, every status, content type, header and body as documented. Then raw
hostile bodies at a quiet cluster: each refused with its problem, the digest and applied index
unchanged on every node, every node healthy.

A short, bounded run (``BUDGETD_FUZZ_EXAMPLES`` cases per operation, default 15); SECURITY.md
gives the command for a long one. tests/security/schemathesis.toml says which checks run and why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Decodes msgpack answers so that they are checked against the document too.
HOOKS = "tests.security.schemathesis_hooks"
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("BUDGETD_FUZZ_EXAMPLES", "15"))
#: The pulse carries time into the ledger every second by default, which moves the digest; the
#: quiet cluster pulses once an hour so that "nothing changed" can be checked exactly.
QUIET = "pulse_interval_ms = 3600000"
ROOT = {
    "currency": "USD",
    "timezone": "UTC",
    "daily_budget_micros": 100_000_000,
    "pacing": {"mode": "asap"},
    "status": "active",
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster.create(tmp_path / "cluster", 3, proposer=QUIET)
    try:
        assert cluster.wait_ready(60) == [], cluster.logs()
        yield cluster
    finally:
        cluster.stop_all()


def _follower(cluster: Cluster) -> str:
    leader = cluster.leader()
    return next(n.node_id for n in cluster.nodes if n.node_id != leader)


def _schemathesis(cluster: Cluster, node_id: str, cwd: Path, *args: str) -> None:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        cluster.node(node_id).url + "/openapi.json",
        "--header",
        f"Authorization: Bearer {cluster.token}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "1",
        "--seed",
        "20261127",
        *args,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"schemathesis found problems:\n{done.stdout[-12_000:]}"
    assert "passed" in done.stdout


def _healthy_and_converged(cluster: Cluster, member_ids: list[str]) -> str:
    for node in cluster.nodes:
        assert node.running, cluster.logs()
        assert cluster.request(node.node_id, "GET", "/healthz").status == 200
    digest = cluster.wait_converged()
    for node in cluster.nodes:
        members = cluster.cluster_view(node.node_id)["members"]
        assert sorted(m["id"] for m in members) == member_ids
    return digest


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    cluster: Cluster, tmp_path: Path
) -> None:
    follower = _follower(cluster)
    assert cluster.request(follower, "PUT", "/v1/campaigns/acme", ROOT).status == 201
    member_ids = sorted(n.node_id for n in cluster.nodes)
    # Every operation but membership changes: positive and negative cases, then sequences.
    _schemathesis(
        cluster,
        follower,
        tmp_path,
        "--exclude-path-regex",
        "^/v1/cluster/members",
        "--phases",
        "examples,coverage,fuzzing,stateful",
    )
    # Membership changes with invalid input only: a valid one with a made-up address would
    # really join a member that never answers (and stall the cluster by design).
    _schemathesis(
        cluster,
        follower,
        tmp_path,
        "--include-path-regex",
        "^/v1/cluster/members",
        "--mode",
        "negative",
        "--phases",
        "coverage,fuzzing",
    )
    _healthy_and_converged(cluster, member_ids)


_HOSTILE = [
    ("application/json", b"[" * 100_000 + b"]" * 100_000),
    ("application/json", b'{"ops":' * 5_000 + b"1" + b"}" * 5_000),
    ("application/json", b'{"ops": [{"op": "reserve", "amount_micros": NaN}]}'),
    ("application/json", b'{"ops": [], "ops": []}'),
    ("application/json", b'{"ops": [{"amount_micros": ' + b"9" * 5_000 + b"}]}"),
    ("application/json", b'{"ops": [{"campaign_id": "\xff\xfe"}]}'),
    ("application/json", b'{"ops": [{"op": "spend"'),
    ("application/msgpack", b"\x91" * 100_000 + b"\x01"),
    ("application/msgpack", b"\xdd\xff\xff\xff\xff"),
    ("application/msgpack", b"\x81\xa3ops\xc7\x02\x05xx"),
    ("text/plain", b"ops=1"),
]


def test_hostile_bodies_change_nothing_on_a_real_cluster(cluster: Cluster) -> None:
    follower = _follower(cluster)
    leader = cluster.leader()
    assert cluster.request(leader, "PUT", "/v1/campaigns/acme", ROOT).status == 201
    member_ids = sorted(n.node_id for n in cluster.nodes)
    digest = _healthy_and_converged(cluster, member_ids)
    applied = {n.node_id: cluster.cluster_view(n.node_id)["applied_index"] for n in cluster.nodes}
    for node_id in (leader, follower):
        for content_type, body in _HOSTILE:
            for path in ("/v1/batch", "/v1/reservations", "/v1/campaigns/acme:x"):
                method = "PUT" if path.startswith("/v1/campaigns") else "POST"
                response = _send_raw(cluster, node_id, method, path, content_type, body)
                assert response[0] in (400, 413), (node_id, path, body[:40], response)
                problem = json.loads(response[1])
                assert problem["code"] in ("invalid_request", "payload_too_large"), problem
    assert _healthy_and_converged(cluster, member_ids) == digest
    after = {n.node_id: cluster.cluster_view(n.node_id)["applied_index"] for n in cluster.nodes}
    assert after == applied, "a hostile body reached the log"


def _send_raw(
    cluster: Cluster, node_id: str, method: str, path: str, content_type: str, body: bytes
) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        cluster.node(node_id).url + path,
        data=body,
        method=method,
        headers={
            "Authorization": f"Bearer {cluster.token}",
            "Content-Type": content_type,
            "Idempotency-Key": "hostile",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
