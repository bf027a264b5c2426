"""Benchmark of budget_client's wallet (no cluster needed).

1. hot path: try_hold + win pairs per second on one core, and the p99 of one pair, with the
   wallet's own upkeep (hold sweep, building commits) run every 10,000 pairs as the background
   task would — the batches go to an in-memory ledger; the client's encoding is timed, the
   in-memory server's work is not;
2. consensus round trips (/v1/batch requests) per 1,000 bids for a steady simulated bidder on a
   simulated clock: 10,000 bid requests/s, 20 % wins, default WalletSettings.

Each figure is the median of --repeat runs. Usage:
    .venv/bin/python scripts/bench_client.py [--pairs 300000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
from collections.abc import Mapping
from typing import Any

import msgpack

from budget_client import AsyncClient, RawResponse, Wallet, WalletSettings


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
        began = time.perf_counter()
        try:
            return self._answer(body)
        finally:
            self.server_s += time.perf_counter() - began

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


async def hot_path(pairs: int) -> dict[str, float]:
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
    try_hold, win = wallet.try_hold, wallet.win
    chunk = 10_000
    gc.collect()
    # throughput: plain loop, upkeep included
    start = time.perf_counter()
    upkeep_s = 0.0
    for _done in range(0, pairs, chunk):
        for _ in range(chunk):
            win(try_hold(1_000), 700)  # type: ignore[arg-type]
        t = time.perf_counter()
        await wallet.sync()
        upkeep_s += time.perf_counter() - t
    total_s = time.perf_counter() - start - ledger.server_s
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


async def round_trips(bids: int, *, bid_rate_per_s: float, win_share: float) -> dict[str, float]:
    now = [1000.0]
    ledger = InMemoryLedger()
    client = AsyncClient(["127.0.0.1:1"], "t", transport=ledger)
    settings = WalletSettings(bidder_id="sim")
    rng = random.Random(7)
    wallet = Wallet(client, "acme", settings, clock=lambda: now[0], random=rng.random)
    await wallet.start(background=False)
    flush_s = settings.flush_interval_ms / 1000
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
            await wallet.sync()
            next_flush = now[0] + flush_s
    requests = ledger.requests - start_requests
    await client.close()
    return {"round_trips_per_1000_bids": requests * 1000 / bids}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bids", type=int, default=200_000)
    args = parser.parse_args()
    hot = [await hot_path(args.pairs) for _ in range(args.repeat)]
    trips = [
        await round_trips(args.bids, bid_rate_per_s=10_000, win_share=0.2)
        for _ in range(args.repeat)
    ]
    report = {key: round(statistics.median(run[key] for run in hot), 3) for key in hot[0]}
    report["round_trips_per_1000_bids"] = round(
        statistics.median(t["round_trips_per_1000_bids"] for t in trips), 3
    )
    report["repeat"] = args.repeat
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
