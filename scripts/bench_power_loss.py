#!/usr/bin/env python3
"""What jepsen-lite's power-loss file system (lazyfs) costs: acknowledged spends per second and
their latency on a 3-node jepsen-lite sandbox, with every data dir on lazyfs (backed by the
disk), on the plain disk, and on tmpfs (/dev/shm: fsync costs nothing there, so lazyfs against
tmpfs is the price of FUSE itself, lazyfs against the disk what a test run sees), rotating in
one run.

    .venv/bin/python scripts/bench_power_loss.py            # about 1.5 minutes (root)
    .venv/bin/python scripts/bench_power_loss.py --quick    # a few seconds per phase

Each phase builds a fresh sandbox, creates one campaign and has ``--clients`` threads post
direct spends to the leader, one at a time each, for ``--seconds``; the figures are medians over
``--repeats`` phases of each kind. Also reported: CPU seconds of the lazyfs daemons per 1,000
spends. Load, nodes and daemons share the machine's two cores. Writes JSON to
bench-results/power-loss-<time>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from jepsen_lite import NamespaceHttp, Sandbox

#: kind: (where the sandbox root is, data dirs on lazyfs?)
KINDS = {"disk": ("disk", False), "tmpfs": ("shm", False), "lazyfs": ("disk", True)}
CAMPAIGN = {
    "currency": "USD",
    "timezone": "UTC",
    "daily_budget_micros": 10**15,
    "total_budget_micros": 10**16,
    "pacing": {"mode": "asap"},
    "status": "active",
}


def _leader(sandbox: Sandbox, limit_s: float = 30.0) -> str:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        views = [sandbox.view(n) for n in sandbox.node_ids]
        leaders = {v.get("leader_id") if v else None for v in views}
        if len(leaders) == 1 and (leader := leaders.pop()) in sandbox.node_ids:
            return str(leader)
        time.sleep(0.1)
    raise RuntimeError("no leader within 30 s")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(root: Path, *, power_loss: bool, clients: int, seconds: float) -> dict[str, Any]:
    with Sandbox(root, power_loss=power_loss) as sandbox:
        leader = _leader(sandbox)
        created = sandbox.request(
            leader, "PUT", "/v1/campaigns/bench", CAMPAIGN, headers={"Idempotency-Key": "c"}
        )
        if created.status not in (200, 201):
            raise RuntimeError(f"cannot create the campaign: {created}")
        daemons = [m.process.pid for m in sandbox.mounts.values() if m.process is not None]
        cpu_before = sum(_cpu_s(pid) for pid in daemons)
        url = sandbox.node(leader).url + "/v1/campaigns/bench/spend"
        keys = itertools.count()
        http = NamespaceHttp(sandbox.control, sandbox.token, workers=clients)
        deadline = time.monotonic() + seconds

        def client() -> tuple[list[float], int]:
            latencies, failed = [], 0
            while time.monotonic() < deadline:
                got = http.request_here(
                    url,
                    "POST",
                    {"amount_micros": 1000, "bidder_id": "bench"},
                    headers={"Idempotency-Key": f"s-{next(keys)}"},
                    timeout_s=10.0,
                )
                if got.status == 200:
                    latencies.append(got.elapsed_s)
                else:
                    failed += 1
            return latencies, failed

        try:
            started = time.monotonic()
            results = [f.result() for f in [http.submit_call(client) for _ in range(clients)]]
            elapsed_s = time.monotonic() - started
        finally:
            http.close()
        cpu_s = sum(_cpu_s(pid) for pid in daemons) - cpu_before
    latencies = sorted(x for lat, _ in results for x in lat)
    ok = len(latencies)
    return {
        "lazyfs": power_loss,
        "ok": ok,
        "failed": sum(f for _, f in results),
        "ops_per_s": ok / elapsed_s,
        "p50_ms": 1000 * latencies[ok // 2] if ok else None,
        "p99_ms": 1000 * latencies[min(ok - 1, ok * 99 // 100)] if ok else None,
        "daemon_cpu_s_per_1000": 1000 * cpu_s / ok if power_loss and ok else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one short phase of each kind")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeats = 2.0, 1
    if not 1 <= args.clients <= 16 or not 0 < args.seconds <= 60 or not 1 <= args.repeats <= 5:
        parser.error("--clients 1..16, --seconds up to 60, --repeats 1..5")
    phases = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-power-loss-") as disk,
        tempfile.TemporaryDirectory(prefix="bench-power-loss-", dir="/dev/shm") as shm,
    ):
        for index in range(args.repeats):
            for kind, (base, power_loss) in KINDS.items():
                root = Path(shm if base == "shm" else disk) / f"{index}-{kind}"
                got = phase(root, power_loss=power_loss, clients=args.clients, seconds=args.seconds)
                got = {"kind": kind, **got}
                print(json.dumps(got))
                phases.append(got)
    summary: dict[str, Any] = {}
    for kind in KINDS:
        runs = [p for p in phases if p["kind"] == kind]
        summary[kind] = {
            key: statistics.median(p[key] for p in runs)
            for key in ("ops_per_s", "p50_ms", "p99_ms", "daemon_cpu_s_per_1000")
            if all(p[key] is not None for p in runs)
        }
    for other in ("disk", "tmpfs"):
        summary[f"lazyfs_over_{other}"] = {
            "ops_per_s": summary["lazyfs"]["ops_per_s"] / summary[other]["ops_per_s"],
            "p50_ms": summary["lazyfs"]["p50_ms"] / summary[other]["p50_ms"],
        }
    print(json.dumps(summary, indent=2))
    out = Path("bench-results") / f"power-loss-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "phases": phases, "summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
