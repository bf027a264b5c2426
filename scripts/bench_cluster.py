#!/usr/bin/env python3
"""Benchmark of a real, durable 3-node budgetd cluster on loopback.

    .venv/bin/python scripts/bench_cluster.py            # about 3 minutes
    .venv/bin/python scripts/bench_cluster.py --quick    # a few seconds, to check it still runs

Starts `budgetd run` processes (fsync'd acknowledgements on, as always), creates campaigns, drives
load over HTTP/msgpack from this process, and stops every process it started. Each figure is the
median of ``--repeats`` runs:

1. durable reserve latency, one client, one request at a time: p50 / p99;
2. single-op reserve throughput with 64 concurrent clients: ops/s, p50 / p99;
3. reserve throughput through /v1/batch (8 clients, 500 ops per request): ops/s;
4. failover: kill -9 of the leader until a write is acknowledged by the new leader: seconds.

The load generator shares the machine's two cores with the three nodes; the figures are for this
machine as a whole, not for a node alone. Writes JSON to bench-results/cluster-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from budgetd.localcluster import LocalCluster

CAMPAIGNS = 100
MSGPACK = "application/msgpack"


class Client:
    def __init__(self, session: aiohttp.ClientSession, token: str) -> None:
        self.session = session
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": MSGPACK,
            "Accept": MSGPACK,
        }
        self.keys = itertools.count()

    async def call(
        self, url: str, method: str, path: str, body: Any, key: bool = True
    ) -> tuple[int, Any]:
        headers = dict(self.headers)
        if key:
            headers["Idempotency-Key"] = f"bench-{time.time_ns()}-{next(self.keys)}"
        async with self.session.request(
            method, url + path, data=msgpack.packb(body), headers=headers
        ) as response:
            return response.status, msgpack.unpackb(await response.read())


def reserve_body(index: int) -> dict[str, Any]:
    return {
        "campaign_id": f"bench:c{index % CAMPAIGNS}",
        "amount_micros": 1_000,
        "ttl_ms": 60_000,
        "bidder_id": f"bidder-{index % 64}",
    }


async def leader_url(cluster: LocalCluster, client: Client, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if not node.running:
                continue
            try:
                status, body = await client.call(node.url, "GET", "/v1/cluster", None, key=False)
            except (aiohttp.ClientError, OSError):
                continue
            if status == 200 and body.get("leader_id"):
                leader = cluster.node(body["leader_id"])
                if leader.running:
                    return leader.url
        await asyncio.sleep(0.05)
    raise SystemExit("no leader")


async def setup(cluster: LocalCluster, client: Client) -> str:
    url = await leader_url(cluster, client)
    root = {"currency": "USD", "timezone": "UTC", "total_budget_micros": 10**15}
    status, body = await client.call(url, "PUT", "/v1/campaigns/bench", root, key=False)
    assert status in (200, 201), body
    for index in range(CAMPAIGNS):
        status, body = await client.call(url, "PUT", f"/v1/campaigns/bench:c{index}", {}, key=False)
        assert status in (200, 201), body
    return url


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def latency_one_client(client: Client, url: str, count: int) -> dict[str, float]:
    samples = []
    for index in range(count):
        started = time.perf_counter()
        status, body = await client.call(url, "POST", "/v1/reservations", reserve_body(index))
        samples.append(time.perf_counter() - started)
        assert status == 201, body
    return {"p50_ms": 1000 * percentile(samples, 0.5), "p99_ms": 1000 * percentile(samples, 0.99)}


async def concurrent_reserves(
    client: Client, url: str, clients: int, seconds: float
) -> dict[str, float]:
    samples: list[float] = []
    refused = 0
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal refused
        index = offset
        while time.monotonic() < deadline:
            started = time.perf_counter()
            status, _ = await client.call(url, "POST", "/v1/reservations", reserve_body(index))
            samples.append(time.perf_counter() - started)
            if status != 201:
                refused += 1
            index += clients

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    return {
        "ops_per_s": len(samples) / elapsed,
        "p50_ms": 1000 * percentile(samples, 0.5),
        "p99_ms": 1000 * percentile(samples, 0.99),
        "refused": refused,
    }


async def batch_reserves(
    client: Client, url: str, clients: int, ops_per_batch: int, seconds: float
) -> dict[str, float]:
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        round_ = 0
        while time.monotonic() < deadline:
            ops = [
                {
                    "op": "reserve",
                    "idempotency_key": f"b{offset}-{round_}-{i}-{time.time_ns()}",
                    **reserve_body(i),
                }
                for i in range(ops_per_batch)
            ]
            status, body = await client.call(url, "POST", "/v1/batch", {"ops": ops}, key=False)
            assert status == 200, body
            done += len(ops)
            round_ += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return {"ops_per_s": done / (time.monotonic() - started)}


async def failover(cluster: LocalCluster, client: Client) -> float:
    url = await leader_url(cluster, client)
    leader = next(node for node in cluster.nodes if node.url == url)
    killed_at = time.monotonic()
    cluster.kill(leader.node_id)
    index = 0
    while True:
        for node in cluster.nodes:
            if not node.running:
                continue
            try:
                status, _ = await client.call(
                    node.url, "POST", "/v1/reservations", reserve_body(index)
                )
            except (aiohttp.ClientError, OSError):
                continue
            index += 1
            if status == 201:
                elapsed = time.monotonic() - killed_at
                cluster.start(leader.node_id)
                if cluster.wait_ready(30):
                    raise SystemExit("the restarted node did not become ready")
                return elapsed
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    with tempfile.TemporaryDirectory(prefix="budgetd-bench-") as folder:
        cluster = LocalCluster.on_free_ports(Path(folder), 3)
        cluster.log_level = "warning"
        for node in cluster.nodes:
            cluster.start(node.node_id)
        try:
            if cluster.wait_ready(60):
                raise SystemExit("cluster not ready:\n" + cluster.logs())
            connector = aiohttp.TCPConnector(limit=256)
            async with aiohttp.ClientSession(connector=connector) as session:
                client = Client(session, cluster.token)
                url = await setup(cluster, client)
                report: dict[str, list[Any]] = {
                    "latency": [],
                    "concurrent_64": [],
                    "batch": [],
                    "failover_s": [],
                }
                for _ in range(args.repeats):
                    report["latency"].append(
                        await latency_one_client(client, url, 50 if quick else 500)
                    )
                    report["concurrent_64"].append(
                        await concurrent_reserves(client, url, 64, 1 if quick else 10)
                    )
                    report["batch"].append(
                        await batch_reserves(
                            client, url, 8, 100 if quick else 500, 1 if quick else 10
                        )
                    )
                for _ in range(args.repeats):
                    report["failover_s"].append(await failover(cluster, client))
                    url = await leader_url(cluster, client)
        finally:
            cluster.stop_all()
    return report


def median_of(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    report = asyncio.run(run(args))
    summary = {
        "reserve_latency_1_client_p50_ms": median_of(report["latency"], "p50_ms"),
        "reserve_latency_1_client_p99_ms": median_of(report["latency"], "p99_ms"),
        "reserve_64_clients_ops_per_s": median_of(report["concurrent_64"], "ops_per_s"),
        "reserve_64_clients_p50_ms": median_of(report["concurrent_64"], "p50_ms"),
        "reserve_64_clients_p99_ms": median_of(report["concurrent_64"], "p99_ms"),
        "batch_reserve_ops_per_s": median_of(report["batch"], "ops_per_s"),
        "failover_s_median": statistics.median(report["failover_s"]),
        "repeats": args.repeats,
    }
    for name, value in summary.items():
        print(f"{name:36} {value:,.2f}")
    args.out.mkdir(exist_ok=True)
    path = args.out / f"cluster-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"summary": summary, "runs": report}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
