"""jepsen-lite's first step: a 3-node budgetd cluster in network namespaces, a leader isolated
by nftables and healed, and a teardown that leaves nothing behind.

Waits are bounded polls on a condition; nothing asserts on timing. Observations (status codes,
seconds) are printed for the report: run with -s to see them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from budgetd.api import Tokens
from jepsen_lite import Net, Refused, Response, Sandbox, preflight
from jepsen_lite.sandbox import remove_stale, sandbox_namespaces, tokens_file
from tests.jepsen.helpers import agreed_leader, needs_sandbox, until

pytestmark = pytest.mark.jepsen


CAMPAIGN = {
    "currency": "USD",
    "timezone": "UTC",
    "total_budget_micros": 10**12,
    "pacing": {"mode": "asap"},
    "status": "active",
}


def converged(sandbox: Sandbox) -> str | None:
    """The digest, once every node reports the same (applied index, fresh digest)."""
    views = [sandbox.view(node_id, fresh_digest=True) for node_id in sandbox.node_ids]
    states = {(v["applied_index"], v["digest"]) if v else None for v in views}
    if len(states) == 1 and None not in states:
        return str(states.pop()[1])  # type: ignore[index]
    return None


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


@pytest.fixture
def sandbox(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "cluster") as sandbox:
        try:
            yield sandbox
        finally:
            if request.session.testsfailed:
                print(sandbox.logs())


# Without root: the refusals and the formats ---------------------------------------------------


def test_preflight_refuses_in_one_line_without_root_or_tools() -> None:
    not_root = preflight(euid=1000, which=lambda tool: f"/usr/sbin/{tool}")
    assert not_root is not None and "root" in not_root and "\n" not in not_root
    no_nft = preflight(euid=0, which=lambda tool: None if tool == "nft" else f"/usr/sbin/{tool}")
    assert no_nft is not None and "nft" in no_nft and "nftables" in no_nft
    assert preflight(euid=0, which=lambda tool: f"/usr/sbin/{tool}") is None


def test_sandbox_refuses_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(Refused, match="needs root"), Sandbox(tmp_path):
        pass


def test_tokens_file_is_one_budgetd_loads() -> None:
    tokens = Tokens.parse(tomllib.loads(tokens_file("s3cret-token")))
    entry = tokens.authenticate("s3cret-token")
    assert entry is not None and entry.is_admin
    assert tokens.authenticate("other-token") is None


def test_partition_groups_must_cover_every_node_once() -> None:
    net = Net("unused", {"n1": "10.77.1.1", "n2": "10.77.1.2", "n3": "10.77.1.3"})
    with pytest.raises(ValueError, match="no group: n3"):
        net.partition([["n1"], ["n2"]])
    with pytest.raises(ValueError, match="two groups"):
        net.partition([["n1", "n2"], ["n2", "n3"]])
    with pytest.raises(ValueError, match="unknown node"):
        net.isolate("n9")


# Real namespaces and processes ----------------------------------------------------------------


@needs_sandbox
def test_three_nodes_elect_a_leader_and_serve_writes(sandbox: Sandbox) -> None:
    leader = until(lambda: agreed_leader(sandbox, sandbox.node_ids), "one leader")
    follower = next(n for n in sandbox.node_ids if n != leader)
    put = sandbox.request(follower, "PUT", "/v1/campaigns/acme", CAMPAIGN, follow=True)
    assert put.status in (200, 201), put
    for node_id in sandbox.node_ids:

        def local_read(node_id: str = node_id) -> Response | None:
            got = sandbox.request(node_id, "GET", "/v1/campaigns/acme?consistency=local")
            return got if got.status == 200 else None

        got = until(local_read, f"acme applied on {node_id}")
        assert got.body["total_budget_micros"] == 10**12
    # The nodes see each other only by their namespace addresses.
    view = sandbox.view(leader)
    assert view is not None
    assert {m["raft_address"] for m in view["members"]} == {n.raft_address for n in sandbox.nodes}


@needs_sandbox
def test_isolated_leader_cannot_write_majority_moves_on_heal_converges(sandbox: Sandbox) -> None:
    old = until(lambda: agreed_leader(sandbox, sandbox.node_ids), "one leader")
    put = sandbox.request(old, "PUT", "/v1/campaigns/before", CAMPAIGN)
    assert put.status in (200, 201), put
    majority = [n for n in sandbox.node_ids if n != old]

    isolated_at = time.monotonic()
    sandbox.net.isolate(old)
    assert sandbox.net.installed() == {(old, n) for n in majority} | {(n, old) for n in majority}

    new = until(lambda: agreed_leader(sandbox, majority), "a new leader in the majority")
    elected_s = time.monotonic() - isolated_at
    assert new != old

    # The isolated node still answers HTTP (the harness's path is never cut) but cannot
    # make a write happen.
    isolated_write = sandbox.request(old, "PUT", "/v1/campaigns/isolated", CAMPAIGN, timeout_s=15)
    assert isolated_write.status is not None, isolated_write
    assert not 200 <= isolated_write.status < 300, isolated_write
    assert isolated_write.status in (307, 421, 503, 504), isolated_write
    old_view = sandbox.view(old)

    majority_write = sandbox.request(new, "PUT", "/v1/campaigns/majority", CAMPAIGN)
    assert majority_write.status in (200, 201), majority_write
    missing = sandbox.request(new, "GET", "/v1/campaigns/isolated")
    assert missing.status == 404, missing

    healed_at = time.monotonic()
    sandbox.net.heal()
    assert sandbox.net.installed() == frozenset()
    leader = until(lambda: agreed_leader(sandbox, sandbox.node_ids), "one leader after heal")
    digest = until(lambda: converged(sandbox), "all nodes on one digest", limit_s=45)
    converged_s = time.monotonic() - healed_at

    caught_up = sandbox.request(old, "GET", "/v1/campaigns/majority?consistency=local")
    assert caught_up.status == 200, caught_up
    for node_id in sandbox.node_ids:
        never = sandbox.request(node_id, "GET", "/v1/campaigns/isolated?consistency=local")
        assert never.status == 404, (node_id, never)

    print(
        "\nOBSERVED isolate:",
        json.dumps(
            {
                "old_leader": old,
                "new_leader": new,
                "leader_after_heal": leader,
                "new_leader_after_s": round(elected_s, 2),
                "isolated_write_status": isolated_write.status,
                "isolated_write_code": (isolated_write.body or {}).get("code")
                if isinstance(isolated_write.body, dict)
                else None,
                "isolated_write_location": isolated_write.headers.get("Location"),
                "isolated_write_s": round(isolated_write.elapsed_s, 2),
                "isolated_node_view": {
                    k: (old_view or {}).get(k) for k in ("role", "term", "leader_id")
                },
                "converged_after_heal_s": round(converged_s, 2),
                "digest": digest[:16],
            }
        ),
    )


@needs_sandbox
def test_teardown_leaves_no_namespace_or_process_even_on_error(tmp_path: Path) -> None:
    subprocess.run(["ip", "netns", "add", "jl-999999999-dead-n1"], check=True)  # a stale one
    pids: list[int] = []
    names: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), Sandbox(tmp_path / "cluster") as sandbox:
        assert "jl-999999999-dead-n1" not in sandbox_namespaces()
        pids = [node.pid for node in sandbox.nodes if node.pid is not None]
        names = [n for n in sandbox_namespaces() if n.startswith(f"jl-{sandbox.run_id}-")]
        assert len(pids) == 3 and len(names) == 4
        until(lambda: agreed_leader(sandbox, sandbox.node_ids), "one leader")
        raise RuntimeError("boom")
    assert not set(names) & set(sandbox_namespaces())  # (another run's may exist: not ours)
    assert pids_alive(pids) == []


HARNESS = """
import json, sys, time
from pathlib import Path
from jepsen_lite import Sandbox
sandbox = Sandbox(Path(sys.argv[1])).__enter__()
print(json.dumps({"run_id": sandbox.run_id, "pids": [n.pid for n in sandbox.nodes]}), flush=True)
time.sleep(600)
"""


@needs_sandbox
def test_nodes_die_with_a_killed_harness_and_its_namespaces_are_removed_next_time(
    tmp_path: Path,
) -> None:
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(tmp_path / "cluster")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert harness.stdout is not None
        started = json.loads(harness.stdout.readline())
    finally:
        harness.send_signal(signal.SIGKILL)
        harness.wait(10)
    until(lambda: not pids_alive(started["pids"]), "the nodes to die with their harness")
    left = [n for n in sandbox_namespaces() if n.startswith(f"jl-{started['run_id']}-")]
    assert len(left) == 4  # named namespaces outlive a SIGKILLed harness...
    removed = remove_stale()
    assert set(left) <= set(removed)  # ...until the next sandbox removes them
    assert not [n for n in sandbox_namespaces() if n.startswith(f"jl-{started['run_id']}-")]
