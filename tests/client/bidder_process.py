"""A bidder process for the integration tests: several wallets on one campaign, bidding in a
bounded loop, then closing; prints one JSON line with every win (billing id, amount) and the
final wallet states. Run: python -m tests.client.bidder_process CONFIG_JSON."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from budget_client import AsyncClient, Hold, RetryPolicy, Wallet, WalletSettings


async def bid(
    wallet: Wallet, name: str, rng: random.Random, cfg: dict[str, Any], wins: list[tuple[str, int]]
) -> None:
    deadline = time.monotonic() + cfg["run_s"]
    holds: list[tuple[Hold, str]] = []
    for i in range(cfg["bids_max"]):
        if time.monotonic() >= deadline:
            break
        price = rng.randrange(1_000, 5_000)
        hold = wallet.try_hold(price)
        if hold is not None:
            holds.append((hold, f"{name}-{i}"))
        if len(holds) >= 8 or hold is None:  # notices arrive a little later, in a burst
            for held, billing_id in holds:
                if rng.random() < 0.5:
                    clearing = rng.randrange(500, held.amount_micros + 1)
                    wallet.win(held, clearing, billing_id=billing_id)
                    wins.append((billing_id, clearing))
                else:
                    wallet.loss(held)
            holds.clear()
            await asyncio.sleep(0.002 if hold is not None else 0.02)


async def main(cfg: dict[str, Any]) -> None:
    client = AsyncClient(
        cfg["endpoints"],
        cfg["token"],
        retry=RetryPolicy(attempts_max=20, deadline_s=15, backoff_max_s=0.5),
    )
    wallets = []
    for w in range(cfg["wallets"]):
        settings = WalletSettings(
            bidder_id=f"{cfg['name']}-w{w}",
            ttl_ms=cfg["ttl_ms"],
            slice_min_micros=20_000,
            slice_max_micros=200_000,
            apply_pass_through=False,
            close_drain_s=0.5,
        )
        wallet = Wallet(client, cfg["campaign"], settings)
        await wallet.start()
        wallets.append(wallet)
    wins: list[tuple[str, int]] = []
    rng = random.Random(cfg["seed"])
    await asyncio.gather(
        *(
            bid(w, f"{cfg['name']}-w{i}", random.Random(rng.random()), cfg, wins)
            for i, w in enumerate(wallets)
        )
    )
    states = []
    for wallet in wallets:
        for _ in range(40):  # bounded: wait for the cluster to take the last wins
            state = await wallet.close()
            if state.pending_commits == 0:
                break
            await asyncio.sleep(0.5)
        states.append(wallet.state().__repr__())
    await client.close()
    print(
        json.dumps(
            {
                "wins": wins,
                "states": states,
                "pending": sum(w.state().pending_micros for w in wallets),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
