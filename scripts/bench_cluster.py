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

With ``--vs-etcd`` it also starts a durable 3-member etcd on loopback (scripts/bench_etcd.py: the
read-then-compare-and-swap budget recipe, linearizable reads, fsync on) and runs 1 and 2 against it
in the same run, then prints budgetd/etcd ratios. Both sides end with a conservation check: the
slices granted in answers equal the budget the store says it has taken.

The load generator shares the machine's two cores with the three nodes; the figures are for this
machine as a whole, not for a node alone. Writes JSON to bench-results/cluster-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from bench_etcd import EtcdBudgets, etcd_cluster

from budgetd.localcluster import LocalCluster

CAMPAIGNS = 100
#: The parts of the benchmark (``--only``).
PARTS = ("latency", "concurrent", "batch", "failover")
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
        "ttl_ms": 3_600_000,
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


#: One reserve of the benchmark: the index of the request in, the micros granted out (None:
#: refused).
Reserve = Callable[[int], Awaitable[int | None]]


def budgetd_reserve(client: Client, url: str) -> Reserve:
    async def reserve(index: int) -> int | None:
        status, body = await client.call(url, "POST", "/v1/reservations", reserve_body(index))
        return int(body["granted_micros"]) if status == 201 else None

    return reserve


async def latency_one_client(reserve: Reserve, count: int) -> dict[str, float]:
    """One request at a time: p50 / p99 seconds turned into ms; every reserve must be granted."""
    samples = []
    for index in range(count):
        started = time.perf_counter()
        granted = await reserve(index)
        samples.append(time.perf_counter() - started)
        assert granted, f"reserve {index} refused"
    return {"p50_ms": 1000 * percentile(samples, 0.5), "p99_ms": 1000 * percentile(samples, 0.99)}


async def concurrent_reserves(reserve: Reserve, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` loops reserving for ``seconds``: ops/s, p50 / p99, refusals, micros granted."""
    samples: list[float] = []
    refused = 0
    granted_micros = 0
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal refused, granted_micros
        index = offset
        while time.monotonic() < deadline:
            started = time.perf_counter()
            granted = await reserve(index)
            samples.append(time.perf_counter() - started)
            if granted is None:
                refused += 1
            else:
                granted_micros += granted
            index += clients

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    return {
        "ops_per_s": len(samples) / elapsed,
        "p50_ms": 1000 * percentile(samples, 0.5),
        "p99_ms": 1000 * percentile(samples, 0.99),
        "refused": refused,
        "granted_micros": granted_micros,
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


def cpu_s(cluster: LocalCluster) -> dict[str, float]:
    """CPU seconds (user + system) each running node has used so far, by node id (Linux)."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    used = {}
    for node in cluster.nodes:
        if node.process is not None and node.running:
            fields = Path(f"/proc/{node.process.pid}/stat").read_text().rpartition(")")[2].split()
            used[node.node_id] = (int(fields[11]) + int(fields[12])) / ticks_per_s
    return used


def cpu_per_op(
    cluster: LocalCluster, leader_url: str, before: dict[str, float], ops: float
) -> dict[str, float]:
    """The leader's and the whole cluster's CPU microseconds per op since ``before``."""
    after = cpu_s(cluster)
    leader = next(node.node_id for node in cluster.nodes if node.url == leader_url)
    spent = {node_id: after[node_id] - before[node_id] for node_id in before}
    return {
        "leader_cpu_us_per_op": 1e6 * spent[leader] / max(ops, 1),
        "cluster_cpu_us_per_op": 1e6 * sum(spent.values()) / max(ops, 1),
    }


async def held_total(client: Client, url: str) -> int:
    status, body = await client.call(
        url, "GET", "/v1/campaigns/bench?consistency=strong", None, key=False
    )
    assert status == 200, body
    return int(body["held_total_micros"])


def etcd_reserve(budgets: EtcdBudgets, tag: str) -> Reserve:
    async def reserve(index: int) -> int | None:
        granted = await budgets.reserve(f"bench:c{index % CAMPAIGNS}", f"{tag}-{index}", 1_000)
        return 1_000 if granted else None

    return reserve


async def etcd_side(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The same reserve workload against etcd, ending with its conservation check."""
    budget_micros = 10**12
    with etcd_cluster(folder) as cluster:
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as session:
            await cluster.wait_ready(session)
            budgets = EtcdBudgets(session, await cluster.leader_url(session))
            for index in range(CAMPAIGNS):
                await budgets.put_budget(f"bench:c{index}", budget_micros)
            report: dict[str, Any] = {"latency": [], "concurrent_64": []}
            granted = 0
            for repeat in range(args.repeats):
                report["latency"].append(
                    await latency_one_client(
                        etcd_reserve(budgets, f"l{repeat}"), 50 if args.quick else 500
                    )
                )
                granted += 1_000 * (50 if args.quick else 500)
                conflicts = budgets.cas_conflicts
                run = await concurrent_reserves(
                    etcd_reserve(budgets, f"c{repeat}"), 64, 1 if args.quick else 10
                )
                run["cas_conflicts"] = budgets.cas_conflicts - conflicts
                report["concurrent_64"].append(run)
                granted += int(run["granted_micros"])
            remaining = 0
            for index in range(CAMPAIGNS):
                remaining += (await budgets.remaining(f"bench:c{index}"))[0]
            records, recorded_micros = await budgets.reserved_total()
            taken = CAMPAIGNS * budget_micros - remaining
            report["conservation"] = {
                "granted_micros": granted,
                "taken_micros": taken,
                "reservation_records_micros": recorded_micros,
                "reservation_records": records,
                "holds": granted == taken == recorded_micros,
            }
    return report


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
                report: dict[str, Any] = {
                    "latency": [],
                    "concurrent_64": [],
                    "batch": [],
                    "failover_s": [],
                }
                only = args.only
                for _ in range(args.repeats):
                    if "latency" in only:
                        report["latency"].append(
                            await latency_one_client(
                                budgetd_reserve(client, url), 50 if quick else 500
                            )
                        )
                    if "concurrent" in only:
                        before = await held_total(client, url)
                        seconds = 1 if quick else 10
                        cpu_before = cpu_s(cluster)
                        run_64 = await concurrent_reserves(
                            budgetd_reserve(client, url), 64, seconds
                        )
                        ops = run_64["ops_per_s"] * seconds
                        run_64 |= cpu_per_op(cluster, url, cpu_before, ops)
                        taken = await held_total(client, url) - before
                        run_64["conservation_holds"] = taken == run_64["granted_micros"]
                        report["concurrent_64"].append(run_64)
                    if "batch" in only:
                        seconds = 1 if quick else 10
                        cpu_before = cpu_s(cluster)
                        run_batch = await batch_reserves(
                            client, url, 8, 100 if quick else 500, seconds
                        )
                        ops = run_batch["ops_per_s"] * seconds
                        run_batch |= cpu_per_op(cluster, url, cpu_before, ops)
                        report["batch"].append(run_batch)
                for _ in range(args.repeats if "failover" in only else 0):
                    report["failover_s"].append(await failover(cluster, client))
                    url = await leader_url(cluster, client)
        finally:
            cluster.stop_all()
        if args.vs_etcd and {"latency", "concurrent"} <= args.only:
            report["etcd"] = await etcd_side(args, Path(folder) / "etcd")
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
    parser.add_argument(
        "--vs-etcd", action="store_true", help="also run the reserve workload against etcd"
    )
    parser.add_argument(
        "--load-max",
        type=float,
        default=0.5,
        help="refuse to run while the 1-minute load average is above this (default 0.5)",
    )
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: all of {','.join(PARTS)})",
    )
    args = parser.parse_args()
    args.only = set(args.only.split(","))
    if not args.only <= set(PARTS):
        parser.error(f"--only takes parts of {','.join(PARTS)}")
    if args.quick:
        args.repeats = 1
    load = os.getloadavg()[0]
    if load > args.load_max and not (args.force or args.quick):
        raise SystemExit(
            f"bench_cluster: the machine is busy (1-minute load {load:.2f} > {args.load_max});"
            " figures would measure the other load. Retry when idle, or pass --force."
        )
    report = asyncio.run(run(args))
    summary: dict[str, float] = {}
    if report["latency"]:
        summary["reserve_latency_1_client_p50_ms"] = median_of(report["latency"], "p50_ms")
        summary["reserve_latency_1_client_p99_ms"] = median_of(report["latency"], "p99_ms")
    if report["concurrent_64"]:
        summary |= {
            "reserve_64_clients_ops_per_s": median_of(report["concurrent_64"], "ops_per_s"),
            "reserve_64_clients_p50_ms": median_of(report["concurrent_64"], "p50_ms"),
            "reserve_64_clients_p99_ms": median_of(report["concurrent_64"], "p99_ms"),
            "reserve_64_clients_leader_cpu_us_per_op": median_of(
                report["concurrent_64"], "leader_cpu_us_per_op"
            ),
            "reserve_64_clients_cluster_cpu_us_per_op": median_of(
                report["concurrent_64"], "cluster_cpu_us_per_op"
            ),
        }
        summary["budgetd_conservation_holds"] = all(
            run["conservation_holds"] for run in report["concurrent_64"]
        )
    if report["batch"]:
        summary["batch_reserve_ops_per_s"] = median_of(report["batch"], "ops_per_s")
        summary["batch_leader_cpu_us_per_op"] = median_of(report["batch"], "leader_cpu_us_per_op")
        summary["batch_cluster_cpu_us_per_op"] = median_of(report["batch"], "cluster_cpu_us_per_op")
    if report["failover_s"]:
        summary["failover_s_median"] = statistics.median(report["failover_s"])
    summary["repeats"] = args.repeats
    if "etcd" in report:
        etcd = report["etcd"]
        summary |= {
            "etcd_latency_1_client_p50_ms": median_of(etcd["latency"], "p50_ms"),
            "etcd_latency_1_client_p99_ms": median_of(etcd["latency"], "p99_ms"),
            "etcd_64_clients_ops_per_s": median_of(etcd["concurrent_64"], "ops_per_s"),
            "etcd_64_clients_p50_ms": median_of(etcd["concurrent_64"], "p50_ms"),
            "etcd_64_clients_p99_ms": median_of(etcd["concurrent_64"], "p99_ms"),
            "etcd_64_clients_cas_conflicts": median_of(etcd["concurrent_64"], "cas_conflicts"),
            "etcd_conservation_holds": etcd["conservation"]["holds"],
        }
        summary["ratio_64_clients_throughput"] = (
            summary["reserve_64_clients_ops_per_s"] / summary["etcd_64_clients_ops_per_s"]
        )
        summary["ratio_64_clients_p99_etcd_over_budgetd"] = (
            summary["etcd_64_clients_p99_ms"] / summary["reserve_64_clients_p99_ms"]
        )
        summary["ratio_1_client_p50_etcd_over_budgetd"] = (
            summary["etcd_latency_1_client_p50_ms"] / summary["reserve_latency_1_client_p50_ms"]
        )
    for name, value in summary.items():
        print(f"{name:40} {value:,.2f}")
    args.out.mkdir(exist_ok=True)
    path = args.out / f"cluster-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"summary": summary, "runs": report}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
