"""Benchmark of budget_client's wallet.

1. hot path: try_hold + win pairs per second on one core, and the p99 of one pair, with the
   wallet's own upkeep (hold sweep, building commits) run every 10,000 pairs as the background
   task would — the batches go to an in-memory ledger; the client's encoding is timed, the
   in-memory server's work is not;
2. bid mix: try_hold per second on one core with upkeep, 20 % of the holds won with a billing
   id (one commit op each), the rest lost — as a bidder following the README would;
3. floor: the same pairs through the least Python that does a pair's work (two calls, a clock
   read, a comparison, one object for the hold, a queue append, a list append): the ceiling any
   pure-Python wallet can reach on this machine;
4. consensus round trips (/v1/batch requests) per 1,000 bids for a steady simulated bidder on a
   simulated clock: 10,000 bid requests/s, 20 % wins, default WalletSettings;
5. with --cluster: the same against a real durable 3-node cluster on loopback
   (budgetd.localcluster), in real time, at each of --cluster-rates bids/s for --cluster-s
   seconds; also checks that the campaign's spend equals what the wallet won.

Rates are per CPU second of the benchmark's thread (time.thread_time), i.e. per core, whatever
else the machine runs; latencies are wall time. Each figure is the median of --repeat runs. Usage:
    .venv/bin/python scripts/bench_client.py [--pairs 300000] [--repeat 5]
    .venv/bin/python scripts/bench_client.py --cluster [--cluster-rates 1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import msgpack

from budget_client import AsyncClient, RawResponse, Wallet, WalletSettings


def cpu_s() -> float:
    """CPU seconds of this thread: the machine may be shared, and a wall clock would count the
    time other processes held the core."""
    return time.thread_time()


class InMemoryLedger:
    """Answers /v1/batch with grants as large as asked and every commit ok."""

    def __init__(self) -> None:
        self.next_rid = 1
        self.requests = 0
        self.server_s = 0.0  # time spent playing the server: not the client's work

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> RawResponse:
        self.requests += 1
        began = cpu_s()
        try:
            return self._answer(body)
        finally:
            self.server_s += cpu_s() - began

    def _answer(self, body: bytes | None) -> RawResponse:
        ops = msgpack.unpackb(body)["ops"]
        results: list[dict[str, Any]] = []
        for op in ops:
            if op["op"] == "reserve":
                results.append(
                    {
                        "code": "ok",
                        "reservation_id": self.next_rid,
                        "granted_micros": op["amount_micros"],
                        "expires_at_ms": 10**13,
                        "pass_through_ppm": 1_000_000,
                        "pass_through_rate": 1.0,
                        "replayed": False,
                    }
                )
                self.next_rid += 1
            elif op["op"] == "commit":
                results.append(
                    {
                        "code": "ok",
                        "reservation_id": op["reservation_id"],
                        "committed_micros": op["amount_micros"],
                        "remaining_micros": 0,
                        "late": False,
                        "overspend_micros": 0,
                        "replayed": False,
                    }
                )
            elif op["op"] == "release":
                results.append(
                    {
                        "code": "ok",
                        "reservation_id": op["reservation_id"],
                        "released_micros": 0,
                        "replayed": False,
                    }
                )
            else:
                results.append(
                    {
                        "code": "ok",
                        "campaign_id": op["campaign_id"],
                        "recorded_micros": op["amount_micros"],
                        "overspend_micros": 0,
                        "day": "2026-01-01",
                        "replayed": False,
                    }
                )
        return RawResponse(
            200, {"Content-Type": "application/msgpack"}, msgpack.packb({"results": results})
        )

    async def close(self) -> None:
        pass


async def _bench_wallet() -> tuple[InMemoryLedger, AsyncClient, Wallet]:
    """A started wallet (no background task) over the in-memory ledger, with one slice large
    enough that no refill interrupts a measurement; the ledger and client with it."""
    ledger = InMemoryLedger()
    client = AsyncClient(["127.0.0.1:1"], "t", transport=ledger)
    settings = WalletSettings(
        bidder_id="bench",
        slice_min_micros=10**15,
        slice_max_micros=10**15,
        ttl_ms=3_600_000,
        flush_wins_max=10_000,
        pending_wins_max=100_000,
    )
    wallet = Wallet(client, "acme", settings)
    await wallet.start(background=False)
    return ledger, client, wallet


async def hot_path(pairs: int) -> dict[str, float]:
    ledger, client, wallet = await _bench_wallet()
    try_hold, win = wallet.try_hold, wallet.win
    chunk = 10_000
    gc.collect()
    # throughput: plain loop, upkeep included
    start = cpu_s()
    upkeep_s = 0.0
    for _done in range(0, pairs, chunk):
        for _ in range(chunk):
            win(try_hold(1_000), 700)  # type: ignore[arg-type]
        t = cpu_s()
        await wallet.sync()
        upkeep_s += cpu_s() - t
    total_s = cpu_s() - start - ledger.server_s
    upkeep_s -= ledger.server_s
    # latency of single pairs
    samples = []
    clock = time.perf_counter_ns
    for _done in range(0, min(pairs, 200_000), chunk):
        for _ in range(chunk):
            t0 = clock()
            win(try_hold(1_000), 700)  # type: ignore[arg-type]
            samples.append(clock() - t0)
        await wallet.sync()
    samples.sort()
    await client.close()
    return {
        "pairs_per_s_with_upkeep": pairs / total_s,
        "pairs_per_s_hot_only": pairs / (total_s - upkeep_s),
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "p999_us": samples[int(len(samples) * 0.999)] / 1000,
    }


async def bid_mix(holds: int, *, win_every: int = 5) -> dict[str, float]:
    """Holds per second with upkeep: one hold in ``win_every`` won (with a billing id), the
    others lost."""
    ledger, client, wallet = await _bench_wallet()
    try_hold, win, loss = wallet.try_hold, wallet.win, wallet.loss
    chunk = 10_000
    billing_ids = [f"imp-{i:012d}" for i in range(holds)]
    gc.collect()
    start = cpu_s()
    for done in range(0, holds, chunk):
        for i in range(done, done + chunk):
            hold = try_hold(1_000)
            if i % win_every:
                loss(hold)  # type: ignore[arg-type]
            else:
                win(hold, 700, billing_id=billing_ids[i])  # type: ignore[arg-type]
        await wallet.sync()
    total_s = cpu_s() - start - ledger.server_s
    await client.close()
    return {"mix_holds_per_s_with_upkeep": holds / total_s}


def floor(pairs: int) -> dict[str, float]:
    """Pairs per second of the least Python doing a pair's work, for comparison."""

    class Slice:
        __slots__ = ("available_micros", "stop_s")

    class MinimalHold:
        __slots__ = ("amount_micros", "created_s", "slice", "state")

        def __init__(self, slice_: Slice, amount_micros: int, created_s: float) -> None:
            self.slice = slice_
            self.amount_micros = amount_micros
            self.created_s = created_s
            self.state = 0

    s = Slice()
    s.available_micros = 10**15
    s.stop_s = float("inf")
    holds: deque[MinimalHold] = deque()
    wins: list[tuple[Slice, int, None]] = []
    clock = time.monotonic

    def try_hold(price: int) -> MinimalHold | None:
        now = clock()
        if s.available_micros >= price and now < s.stop_s:
            s.available_micros -= price
            hold = MinimalHold(s, price, now)
            holds.append(hold)
            return hold
        return None

    def win(hold: MinimalHold, clearing: int) -> None:
        hold.state = 1
        if clearing < hold.amount_micros:
            s.available_micros += hold.amount_micros - clearing
        wins.append((s, clearing, None))

    gc.collect()
    start = cpu_s()
    for _ in range(pairs):
        win(try_hold(1_000), 700)  # type: ignore[arg-type]
    return {"floor_pairs_per_s": pairs / (cpu_s() - start)}


async def round_trips(bids: int, *, bid_rate_per_s: float, win_share: float) -> dict[str, float]:
    now = [1000.0]
    ledger = InMemoryLedger()
    client = AsyncClient(["127.0.0.1:1"], "t", transport=ledger)
    settings = WalletSettings(bidder_id="sim")
    rng = random.Random(7)
    wallet = Wallet(client, "acme", settings, clock=lambda: now[0], random=rng.random)
    await wallet.start(background=False)
    flush_s = settings.flush_interval_ms / 1000
    tick = getattr(wallet, "_tick", wallet.sync)  # what the background task does each tick
    next_flush = now[0] + flush_s
    warm = bids // 5
    start_requests = 0
    for i in range(warm + bids):
        if i == warm:
            start_requests = ledger.requests
        now[0] += 1 / bid_rate_per_s
        hold = wallet.try_hold(rng.randrange(500, 3_000))
        if hold is not None:
            if rng.random() < win_share:
                wallet.win(hold, hold.amount_micros * 7 // 10)
            else:
                wallet.loss(hold)
        if now[0] >= next_flush or len(wallet._wins) >= settings.flush_wins_max:
            await tick()
            next_flush = now[0] + flush_s
    requests = ledger.requests - start_requests
    await client.close()
    return {"round_trips_per_1000_bids": requests * 1000 / bids}


async def cluster_round_trips(
    rates_per_s: list[int], run_s: float, repeat: int, *, win_share: float
) -> dict[str, Any]:
    """Round trips per 1,000 bids against a real 3-node cluster, one wallet with its background
    task, bids paced in real time (each rate run for ``run_s`` and at most ``rate × run_s``
    bids). Rates alternate within each repeat; medians per rate."""
    import tempfile
    from pathlib import Path

    from budgetd.localcluster import LocalCluster

    runs: dict[int, list[dict[str, float]]] = {rate: [] for rate in rates_per_s}
    with tempfile.TemporaryDirectory(prefix="budgetd-bench-client-") as folder:
        cluster = LocalCluster.on_free_ports(Path(folder), 3)
        cluster.log_level = "warning"
        for node in cluster.nodes:
            cluster.start(node.node_id)
        try:
            if cluster.wait_ready(60):
                raise SystemExit("cluster not ready:\n" + cluster.logs())
            client = AsyncClient([n.url for n in cluster.nodes], cluster.token)
            root = {"currency": "USD", "timezone": "UTC", "total_budget_micros": 10**15}
            await client.put_campaign("bench", root)
            index = 0
            for _ in range(repeat):
                for rate in rates_per_s:
                    index += 1
                    campaign_id = f"bench:r{index}"
                    await client.put_campaign(campaign_id, {})
                    runs[rate].append(
                        await _paced_wallet(client, campaign_id, rate, run_s, win_share)
                    )
            await client.close()
        finally:
            cluster.stop_all()
    out: dict[str, Any] = {}
    for rate, results in runs.items():
        out[f"{rate}_bids_per_s"] = {
            key: round(statistics.median(r[key] for r in results), 3) for key in results[0]
        }
    return out


async def _paced_wallet(
    client: AsyncClient, campaign_id: str, rate_per_s: int, run_s: float, win_share: float
) -> dict[str, float]:
    rng = random.Random(rate_per_s)
    wallet = Wallet(client, campaign_id, WalletSettings(bidder_id="bench"))
    await wallet.start()
    bids_max = int(rate_per_s * run_s)
    tick_s = 0.005
    bids = holds = 0
    won_micros = 0
    started = time.monotonic()
    trips_before = wallet.state().round_trips
    while bids < bids_max and time.monotonic() - started < run_s * 2:
        due = min(bids_max, int((time.monotonic() - started) * rate_per_s))
        while bids < due:
            bids += 1
            hold = wallet.try_hold(rng.randrange(500, 3_000))
            if hold is None:
                continue
            holds += 1
            if rng.random() < win_share:
                price = hold.amount_micros * 7 // 10
                wallet.win(hold, price, billing_id=f"{campaign_id}.{bids}")
                won_micros += price
            else:
                wallet.loss(hold)
        await asyncio.sleep(tick_s)
    elapsed_s = time.monotonic() - started
    trips = wallet.state().round_trips - trips_before
    state = await wallet.close()
    campaign = await client.get_campaign(campaign_id)
    spent = int(campaign["spent_total_micros"])
    if state.pending_commits or spent != won_micros:
        raise SystemExit(f"{campaign_id}: spent {spent}, won {won_micros}, state {state}")
    return {
        "bids_per_s": bids / elapsed_s,
        "held_share": holds / max(bids, 1),
        "round_trips_per_1000_bids": trips * 1000 / max(bids, 1),
        "round_trips_per_s": trips / elapsed_s,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bids", type=int, default=200_000)
    parser.add_argument("--cluster", action="store_true", help="only the real-cluster run")
    parser.add_argument("--cluster-rates", default="1000,10000", help="bids/s, comma-separated")
    parser.add_argument("--cluster-s", type=float, default=10.0, help="seconds per rate")
    args = parser.parse_args()
    if args.cluster:
        rates = [int(rate) for rate in args.cluster_rates.split(",")]
        found = await cluster_round_trips(rates, args.cluster_s, args.repeat, win_share=0.2)
        print(json.dumps({**found, "win_share": 0.2, "repeat": args.repeat}, indent=2))
        return
    hot, mix, floors, trips = [], [], [], []
    for _ in range(args.repeat):  # alternating, so that noise hits every figure alike
        hot.append(await hot_path(args.pairs))
        mix.append(await bid_mix(args.pairs))
        floors.append(floor(args.pairs))
        trips.append(await round_trips(args.bids, bid_rate_per_s=10_000, win_share=0.2))
    report: dict[str, Any] = {}
    for runs in (hot, mix, floors, trips):
        for key in runs[0]:
            report[key] = round(statistics.median(run[key] for run in runs), 3)
    report["repeat"] = args.repeat
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
