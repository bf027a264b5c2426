#!/usr/bin/env python3
"""CPU cost of budgetd's HTTP path alone: the API (`make_app` + `start_api`) over an instant
scripted service, in a child process, driven from this one over loopback.

    .venv/bin/python scripts/bench_api.py reserve 20000   # 64 clients, one reserve a request
    .venv/bin/python scripts/bench_api.py batch 200000    # 8 clients, 500 reserves a request

Prints the child's CPU microseconds (user + system, from /proc, Linux) per op and the ops/s seen.
CPU per op is what the HTTP side costs a node whatever else runs on the machine; ops/s is not
(the load generator shares the cores). BUDGETD_EVENT_LOOP=asyncio|uvloop picks the child's loop
(default: uvloop when installed); run it with PYTHONPATH set to another tree's folder to compare
two trees of budgetd in one run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgpack

TOKEN = "bench-api-token-0123456789"
CLIENTS = {"reserve": 64, "batch": 8}
BATCH_OPS = 500

SERVER = f"""
import asyncio, os
from budgetd.api import TokenEntry, Tokens, make_app, start_api
from budgetd.settings import ApiSettings

class Instant:
    node_id = "n1"
    reservation_id = 0

    def admit(self, ops):
        pass  # never overloaded

    async def submit(self, ops):
        await asyncio.sleep(0)
        results = []
        for op in ops:
            self.reservation_id += 1
            results.append({{"code": "ok", "reservation_id": self.reservation_id,
                "granted_micros": op["amount_micros"], "expires_at_ms": 1,
                "pass_through_ppm": 1_000_000}})
        return results

async def main():
    settings = ApiSettings(rate_per_s=10**9, rate_burst=10**9)
    tokens = Tokens([TokenEntry.from_plaintext("bench", {TOKEN!r}, roles=["admin"])])
    runner, site = await start_api(make_app(Instant(), settings, tokens), settings, "127.0.0.1", 0)
    print(site.bound_port, flush=True)
    await asyncio.Event().wait()

loop = os.environ.get("BUDGETD_EVENT_LOOP", "auto")
try:
    import uvloop
except ImportError:
    uvloop = None
if uvloop is not None and loop != "asyncio":
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reserve_body(key: str) -> dict[str, object]:
    return {
        "campaign_id": "bench:c1",
        "amount_micros": 1_000,
        "ttl_ms": 3_600_000,
        "bidder_id": "bidder-1",
        "idempotency_key": key,
    }


async def drive(port: int, kind: str, requests_per_client: int) -> int:
    """Every client sends its requests one after another; the ops answered."""
    url = f"http://127.0.0.1:{port}"
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/msgpack",
        "Accept": "application/msgpack",
    }
    keys = itertools.count()
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            for _ in range(requests_per_client):
                if kind == "reserve":
                    key = f"k{next(keys)}"
                    body = reserve_body(key)
                    del body["idempotency_key"]
                    path, status, extra = "/v1/reservations", 201, {"Idempotency-Key": key}
                else:
                    ops = [
                        {"op": "reserve", **reserve_body(f"k{next(keys)}")}
                        for _ in range(BATCH_OPS)
                    ]
                    body, path, status, extra = {"ops": ops}, "/v1/batch", 200, {}
                async with session.post(
                    url + path, data=msgpack.packb(body), headers={**headers, **extra}
                ) as response:
                    answer = await response.read()
                    assert response.status == status, answer

        await asyncio.gather(*(client() for _ in range(CLIENTS[kind])))
    return CLIENTS[kind] * requests_per_client * (1 if kind == "reserve" else BATCH_OPS)


def main() -> None:
    args = sys.argv[1:]
    if len(args) != 2 or args[0] not in CLIENTS or not args[1].isdigit() or int(args[1]) < 1:
        print(
            f"usage: bench_api.py {'|'.join(CLIENTS)} OPS (OPS a positive integer)", file=sys.stderr
        )
        raise SystemExit(2)
    kind, ops = args[0], int(args[1])
    per_client = max(1, ops // CLIENTS[kind] // (1 if kind == "reserve" else BATCH_OPS))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, cwd=Path(__file__).parent
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(drive(port, kind, max(1, per_client // 10)))  # warm-up
        cpu_before, started = cpu_s(server.pid), time.monotonic()
        done = asyncio.run(drive(port, kind, per_client))
        cpu_used, elapsed = cpu_s(server.pid) - cpu_before, time.monotonic() - started
        print(
            f"{kind} ops={done} server_cpu_us_per_op={1e6 * cpu_used / done:.1f} "
            f"ops_per_s={done / elapsed:,.0f}"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
