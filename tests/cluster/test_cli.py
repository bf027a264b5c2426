"""The `budgetd` admin commands against a real cluster, as an operator types them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster.create(tmp_path_factory.mktemp("cli") / "cluster")
    try:
        cluster.leader()
        yield cluster
    finally:
        cluster.stop_all()


def budgetd(
    cluster: Cluster, *args: str, node: int = 0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the CLI against node ``node`` (any node answers)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "budgetd",
            *args,
            "--url",
            cluster.nodes[node].url,
            "--token",
            cluster.token,
        ]
        if args[0] not in ("snapshot",) or args[1] == "save"
        else [sys.executable, "-m", "budgetd", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_campaign_reserve_commit_release_spend_and_read(cluster: Cluster) -> None:
    budgetd(
        cluster,
        "campaign",
        "put",
        "cli",
        "--currency",
        "EUR",
        "--timezone",
        "Europe/Paris",
        "--daily",
        "10000000",
        "--pacing",
        "asap",
    )
    budgetd(cluster, "campaign", "put", "cli:child", "--daily", "5000000", node=1)
    reserved = json.loads(
        budgetd(
            cluster,
            "reserve",
            "cli:child",
            "--amount",
            "1000000",
            "--ttl-ms",
            "60000",
            "--bidder",
            "b1",
            "--key",
            "cli-r1",
            "--json",
            node=2,
        ).stdout
    )
    rid = str(reserved["reservation_id"])
    committed = json.loads(budgetd(cluster, "commit", rid, "--amount", "250000", "--json").stdout)
    assert committed["committed_micros"] == 250_000
    assert (
        json.loads(budgetd(cluster, "release", rid, "--json").stdout)["released_micros"] == 750_000
    )
    budgetd(cluster, "spend", "cli:child", "--amount", "5000", "--bidder", "b1")
    shown = budgetd(cluster, "campaign", "get", "cli").stdout
    assert "spent today" in shown and "255,000" in shown
    listed = budgetd(cluster, "campaign", "list", "--prefix", "cli").stdout
    assert "cli:child" in listed
    status = budgetd(cluster, "cluster", "status").stdout
    assert "leader" in status and "n1" in status and "n3" in status


def test_errors_are_one_line_and_a_non_zero_exit(cluster: Cluster) -> None:
    missing = budgetd(cluster, "campaign", "get", "nope", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "not_found" in missing.stderr
    bad = budgetd(
        cluster,
        "reserve",
        "cli",
        "--amount",
        "-5",
        "--ttl-ms",
        "1000",
        "--bidder",
        "b",
        check=False,
    )
    assert bad.returncode == 1 and "invalid_request" in bad.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "budgetd", "cluster", "status", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
    config = subprocess.run(
        [sys.executable, "-m", "budgetd", "run", "--config", "/nonexistent.toml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert config.returncode == 1 and config.stderr.startswith("budgetd: config:")


def test_bad_requests_write_nothing(cluster: Cluster) -> None:
    leader = cluster.leader()
    before = cluster.request(leader, "GET", "/v1/campaigns/cli").body
    for body in (
        {"campaign_id": "cli", "amount_micros": 1.5, "ttl_ms": 1000, "bidder_id": "b"},
        {"campaign_id": "cli", "amount_micros": -1, "ttl_ms": 1000, "bidder_id": "b"},
        {"campaign_id": "cli", "amount_micros": 1, "ttl_ms": 1000, "bidder_id": "b", "x": 1},
        {"campaign_id": "c l i", "amount_micros": 1, "ttl_ms": 1000, "bidder_id": "b"},
    ):
        answer = cluster.request(
            leader, "POST", "/v1/reservations", body, headers={"Idempotency-Key": "bad"}
        )
        assert answer.status == 400 and answer.body["code"] == "invalid_request", answer
    no_key = cluster.request(
        leader,
        "POST",
        "/v1/reservations",
        {"campaign_id": "cli", "amount_micros": 1, "ttl_ms": 1000, "bidder_id": "b"},
    )
    assert no_key.status == 400
    after = cluster.request(leader, "GET", "/v1/campaigns/cli").body
    for field in ("spent_total_micros", "held_total_micros", "version"):
        assert after[field] == before[field]
    # The key was never remembered: using it now reserves for real.
    fresh = cluster.request(
        leader,
        "POST",
        "/v1/reservations",
        {"campaign_id": "cli", "amount_micros": 1, "ttl_ms": 1000, "bidder_id": "b"},
        headers={"Idempotency-Key": "bad"},
    )
    assert fresh.status == 201 and fresh.body["replayed"] is False


def test_snapshot_save_and_restore_into_a_new_cluster(cluster: Cluster, tmp_path: Path) -> None:
    saved = tmp_path / "backup.snapshot"
    budgetd(cluster, "snapshot", "save", str(saved))
    assert saved.stat().st_size > 0
    restored = Cluster.on_free_ports(tmp_path / "restored", 3)
    assert isinstance(restored, Cluster)
    for node in restored.nodes:
        budgetd(
            cluster,
            "snapshot",
            "restore",
            str(saved),
            "--data-dir",
            str(restored.root / node.node_id),
        )
    try:
        for node in restored.nodes:
            restored.start(node.node_id)
        leader = restored.leader()
        view = restored.request(leader, "GET", "/v1/campaigns/cli").body
        original = cluster.request(cluster.leader(), "GET", "/v1/campaigns/cli").body
        assert view["spent_total_micros"] == original["spent_total_micros"]
        restored.wait_converged()
    finally:
        restored.stop_all()


def test_limits_show_and_set(cluster: Cluster) -> None:
    shown = budgetd(cluster, "limits", "show", node=1).stdout
    assert "idempotency_keys_max" in shown and "20,000,000" in shown
    assert "batch_ops_max" in shown and "(fixed)" in shown
    changed = json.loads(
        budgetd(
            cluster,
            "limits",
            "set",
            "--idempotency-keys-max",
            "30000000",
            "--ended-retention-ms",
            "7200000",
            "--json",
            node=2,
        ).stdout
    )
    assert changed["limits"]["idempotency_keys_max"] == 30_000_000
    assert changed["limits"]["ended_retention_ms"] == 7_200_000
    shown = json.loads(budgetd(cluster, "limits", "show", "--json").stdout)
    assert shown["limits"] == changed["limits"]
    assert shown["usage"]["campaigns"] >= 1
    # Errors: one line, non-zero, nothing written.
    for args, text in (
        ((), "name at least one limit"),
        (("--idempotency-retention-ms", "60000"), "invalid_request"),
        (("--ttl-ms-max", "86400001"), "invalid_request"),
        (("--campaigns-max", "0"), "invalid_request"),
    ):
        refused = budgetd(cluster, "limits", "set", *args, check=False)
        assert refused.returncode == 1, refused
        assert refused.stderr.strip().count("\n") == 0 and text in refused.stderr
    assert (
        json.loads(budgetd(cluster, "limits", "show", "--json").stdout)["limits"]
        == (changed["limits"])
    )
    stranger = subprocess.run(
        [sys.executable, "-m", "budgetd", "limits", "show", "--url", cluster.nodes[0].url],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "BUDGETD_TOKEN": "not-a-token"},
    )
    assert stranger.returncode == 1 and "unauthorized" in stranger.stderr
    budgetd(cluster, "limits", "set", "--idempotency-keys-max", "20000000")
    budgetd(cluster, "limits", "set", "--ended-retention-ms", "3600000")
