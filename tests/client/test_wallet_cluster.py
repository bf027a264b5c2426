"""Wallets against a real 3-node cluster of `budgetd run` processes (tests/cluster/harness.py):
several bidder processes spend one campaign at once; committed spend never passes the budget and
every win arrives exactly once — also across a leader kill and a whole-cluster stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from budget_client import AsyncClient, Refused, Wallet, WalletSettings
from tests.cluster.harness import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
BUDGET_MICROS = 3_000_000


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    cluster = Cluster.create(tmp_path / "cluster")
    try:
        cluster.leader()
        yield cluster
    finally:
        cluster.stop_all()


def put_campaign(cluster: Cluster, campaign_id: str, budget_micros: int) -> None:
    body = {
        "currency": "USD",
        "timezone": "UTC",
        "total_budget_micros": budget_micros,
        "pacing": {"mode": "asap"},
        "status": "active",
    }
    response = cluster.request(cluster.leader(), "PUT", f"/v1/campaigns/{campaign_id}", body)
    assert response.status in (200, 201), response


def start_bidders(
    cluster: Cluster, campaign: str, *, processes: int, run_s: float, ttl_ms: int = 20_000
) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'client'}{os.pathsep}{ROOT}"}
    out = []
    for p in range(processes):
        cfg = {
            "endpoints": [n.url for n in cluster.nodes],
            "token": cluster.token,
            "campaign": campaign,
            "wallets": 2,
            "run_s": run_s,
            "bids_max": 5_000,
            "ttl_ms": ttl_ms,
            "seed": p,
            "name": f"p{p}",
        }
        out.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.client.bidder_process", json.dumps(cfg)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    return out


def collect(bidders: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
    reports = []
    for bidder in bidders:
        stdout, stderr = bidder.communicate(timeout=60)
        assert bidder.returncode == 0, stderr.decode()[-3000:]
        reports.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return reports


def check_exactly_once(cluster: Cluster, campaign: str, reports: list[dict[str, Any]]) -> None:
    wins = [tuple(w) for r in reports for w in r["wins"]]
    assert len({billing_id for billing_id, _ in wins}) == len(wins)
    assert all(r["pending"] == 0 for r in reports), reports
    state = cluster.request(cluster.leader(), "GET", f"/v1/campaigns/{campaign}").body
    won_micros = sum(amount for _, amount in wins)
    assert wins, "the bidders won nothing: the test proved nothing"
    assert state["spent_total_micros"] == won_micros  # every win once, none lost, none twice
    assert state["spent_total_micros"] <= BUDGET_MICROS
    assert state["overspend_total_micros"] == 0
    assert state["held_total_micros"] == 0  # every slice released on close


def test_many_wallets_in_several_processes_spend_one_budget_exactly_once(cluster: Cluster):
    put_campaign(cluster, "acme", BUDGET_MICROS)
    reports = collect(start_bidders(cluster, "acme", processes=3, run_s=6))
    check_exactly_once(cluster, "acme", reports)


def test_exactly_once_across_a_leader_kill(cluster: Cluster):
    put_campaign(cluster, "acme", BUDGET_MICROS)
    bidders = start_bidders(cluster, "acme", processes=3, run_s=8)
    time.sleep(2.0)
    leader = cluster.leader()
    cluster.kill(leader)
    cluster.leader([n.node_id for n in cluster.nodes if n.node_id != leader])
    cluster.start(leader)
    reports = collect(bidders)
    check_exactly_once(cluster, "acme", reports)


def test_wallets_ride_out_a_whole_cluster_stop(cluster: Cluster):
    put_campaign(cluster, "acme", BUDGET_MICROS)
    bidders = start_bidders(cluster, "acme", processes=2, run_s=9)
    time.sleep(2.0)
    cluster.stop_all()
    time.sleep(2.5)  # wallets spend only what they hold; wins wait
    for node in cluster.nodes:
        cluster.start(node.node_id)
    assert cluster.wait_ready(30) == []
    reports = collect(bidders)
    check_exactly_once(cluster, "acme", reports)


async def test_refill_flush_release_and_spool_against_a_real_cluster(
    cluster: Cluster, tmp_path: Path
):
    put_campaign(cluster, "solo", 1_000_000)
    spool = str(tmp_path / "solo.spool")
    client = AsyncClient([n.url for n in cluster.nodes], cluster.token)
    settings = WalletSettings(
        bidder_id="solo-1",
        slice_min_micros=100_000,
        slice_max_micros=400_000,
        spool_path=spool,
        apply_pass_through=False,
        flush_interval_ms=20,
    )
    wallet = Wallet(client, "solo", settings)
    await wallet.start()
    first = wallet.state()
    assert first.mode == "online" and first.available_micros == 100_000
    spent = 0
    deadline = time.monotonic() + 20
    for i in range(600):  # spend past the first slice: refills must arrive in time
        if spent >= 300_000 or time.monotonic() > deadline:
            break
        hold = wallet.try_hold(1_000)
        if hold is None:
            await wallet.sync()
            continue
        wallet.win(hold, 1_000, billing_id=f"solo-{i}")
        spent += 1_000
        if i % 20 == 0:
            await wallet.sync()
    assert spent == 300_000
    for _ in range(100):  # bounded: each sync is one round trip with its own deadline
        if wallet.state().pending_commits == 0:
            break
        await wallet.sync()
    assert wallet.state().pending_commits == 0
    state = await wallet.close()
    assert state.mode == "closed" and state.committed_micros == 300_000
    campaign = await client.get_campaign("solo")
    assert campaign["spent_total_micros"] == 300_000 and campaign["held_total_micros"] == 0
    # the spool is empty after a clean close; a late billing notice is direct spend, once
    assert Path(spool).read_text() == ""
    again = Wallet(client, "solo", settings)
    first_spend = await again.record_late(5_000, billing_id="solo-late")
    replay = await again.record_late(5_000, billing_id="solo-late")
    assert replay.replayed and not first_spend.replayed
    try:
        await client.reserve("solo", 10**9, ttl_ms=1000, bidder_id="x", min_amount_micros=10**9)
    except Refused as refused:
        assert refused.code == "budget_exhausted"
    else:
        raise AssertionError("a reserve beyond the budget was granted")
    await client.close()
