#!/usr/bin/env python3
"""Benchmark of the pure ledger on one core: op throughput, snapshot size and speed, memory.

    .venv/bin/python scripts/bench_ledger.py            # the full run (about 2-3 minutes)
    .venv/bin/python scripts/bench_ledger.py --quick    # tiny sizes, to check it still runs

Three measurements, each repeated and reported as a median (the machine is shared and noisy):

1. ops/s: a 70/25/5 reserve/commit/release mix over campaigns in 3-level trees (10,000 campaigns
   by default), applied in batches as the proposer would (100 ops per batch), the clock moving
   1 ms per batch. Op dicts are built before the clock starts, as a codec would hand them over.
2. snapshot: 100,000 campaigns with 1,000,000 open reservations: encoded bytes, encode seconds,
   decode seconds, and that the decoded ledger has the same digest.
3. memory: resident bytes per open reservation, with its reserve's idempotency key and without
   (keys pruned by a short retention).

Prints a table and writes JSON to bench-results/ledger-<time>.json.

``--gc-pauses N`` instead grows a ledger to N open reservations (1,000-reserve batches, as a
leader applies /v1/batch) under each collector policy in turn, in fresh processes, and reports
the longest collector pause and the time collecting: CPython's defaults, the thresholds nodes
used before (100,000, 50, 1,000) without freezing, and a node's policy (`budgetd.gctune`).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from budgetd import gctune
from budgetd.codec import decode_snapshot, encode_snapshot
from budgetd.ledger import Ledger, Limits

START_MS = 1_780_000_000_000
DAY_MICROS = 10**15


def tree_ids(campaigns: int) -> tuple[list[str], list[str]]:
    """Ids of ``campaigns`` campaigns in 3-level trees (roots, 9 children each, 10 grandchildren
    each), parents first; and the leaves."""
    per_root = 1 + 9 + 90
    roots = max(1, campaigns // per_root)
    ids: list[str] = []
    leaves: list[str] = []
    for r in range(roots):
        root = f"adv{r}"
        ids.append(root)
        for c in range(9):
            child = f"{root}:c{c}"
            ids.append(child)
            for g in range(10):
                leaf = f"{child}:l{g}"
                ids.append(leaf)
                leaves.append(leaf)
    return ids, leaves


def build_tree(ledger: Ledger, campaigns: int, *, at_ms: int) -> list[str]:
    ids, leaves = tree_ids(campaigns)
    ops: list[dict[str, Any]] = []
    for campaign_id in ids:
        op: dict[str, Any] = {"op": "put_campaign", "campaign_id": campaign_id}
        if ":" not in campaign_id:
            op.update(currency="USD", timezone="America/New_York")
            op.update(daily_budget_micros=DAY_MICROS, pacing={"mode": "even", "burst_ppm": 500_000})
        else:
            op["daily_budget_micros"] = DAY_MICROS // 10
        ops.append(op)
    for start in range(0, len(ops), 1000):
        results = ledger.apply_batch(at_ms, ops[start : start + 1000])
        assert all(r["code"] == "ok" for r in results), results[:3]
    return leaves


def mix_ops(leaves: list[str], count: int, *, seed: int, first_id: int = 1) -> list[dict[str, Any]]:
    """A 70/25/5 reserve/commit/release mix. Reservation ids are predicted: every reserve here is
    granted, and the ledger numbers reservations ``first_id``, ``first_id + 1``, ... in order."""
    rng = random.Random(seed)
    ops: list[dict[str, Any]] = []
    open_ids: list[int] = []
    next_id = first_id
    for index in range(count):
        roll = rng.random()
        key = f"bidder-{index % 64}:{index}"
        if roll < 0.70 or not open_ids:
            ops.append(
                {
                    "op": "reserve",
                    "idempotency_key": key,
                    "campaign_id": rng.choice(leaves),
                    "amount_micros": rng.randrange(1_000, 1_000_000),
                    "ttl_ms": 30_000,
                    "bidder_id": f"bidder-{index % 64}",
                }
            )
            open_ids.append(next_id)
            next_id += 1
        elif roll < 0.95:
            slot = rng.randrange(len(open_ids))
            final = rng.random() < 0.4
            rid = open_ids[slot]
            if final:
                open_ids[slot] = open_ids[-1]
                open_ids.pop()
            ops.append(
                {
                    "op": "commit",
                    "idempotency_key": key,
                    "reservation_id": rid,
                    "amount_micros": rng.randrange(1, 1_000),
                    "final": final,
                }
            )
        else:
            slot = rng.randrange(len(open_ids))
            rid = open_ids[slot]
            open_ids[slot] = open_ids[-1]
            open_ids.pop()
            ops.append({"op": "release", "idempotency_key": key, "reservation_id": rid})
    return ops


def bench_ops(
    campaigns: int, ops_count: int, repeats: int, batch: int, *, node_gc: bool
) -> dict[str, Any]:
    """With ``node_gc`` the collector is set up as a running node sets it (budgetd.gctune);
    without, CPython's defaults. Repeats alternate between the two only across calls."""
    runs = []
    for repeat in range(repeats):
        ledger = Ledger()
        leaves = build_tree(ledger, campaigns, at_ms=START_MS)
        ops = mix_ops(leaves, ops_count, seed=repeat)
        batches = [ops[i : i + batch] for i in range(0, len(ops), batch)]
        gc.collect()
        defaults = gc.get_threshold()
        if node_gc:
            gctune.tune_for_node()
        refused = 0
        started = time.perf_counter()
        cpu_started = time.process_time()
        now = START_MS
        for chunk in batches:
            now += 1
            for result in ledger.apply_batch(now, chunk):
                if result["code"] != "ok":
                    refused += 1
        cpu = time.process_time() - cpu_started
        wall = time.perf_counter() - started
        gc.unfreeze()
        gc.set_threshold(*defaults)
        ledger.check_invariants()
        runs.append(
            {"ops_per_s": ops_count / wall, "cpu_ops_per_s": ops_count / cpu, "refused": refused}
        )
    return {
        "gc": "node (budgetd.gctune)" if node_gc else "CPython defaults",
        "campaigns": campaigns,
        "ops": ops_count,
        "batch_ops": batch,
        "repeats": repeats,
        "ops_per_s_median": statistics.median(r["ops_per_s"] for r in runs),
        "cpu_ops_per_s_median": statistics.median(r["cpu_ops_per_s"] for r in runs),
        "refused_max": max(r["refused"] for r in runs),
        "runs": runs,
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill_reservations(
    ledger: Ledger, leaves: list[str], count: int, *, step_ms: int, ttl_ms: int = 86_400_000
) -> int:
    now = ledger.now_ms
    for start in range(0, count, 1000):
        now += step_ms
        ops = [
            {
                "op": "reserve",
                "idempotency_key": f"fill-{i}",
                "campaign_id": leaves[i % len(leaves)],
                "amount_micros": 1_000 + i % 1_000,
                "ttl_ms": ttl_ms,
                "bidder_id": f"bidder-{i % 64}",
            }
            for i in range(start, min(start + 1000, count))
        ]
        ops.append({"op": "pulse"})
        results = ledger.apply_batch(now, ops)
        assert all(r["code"] == "ok" for r in results), results[0]
    return now


def _memory_child(campaigns: int, reservations: int, with_keys: bool) -> tuple[float, int]:
    """Runs in a fresh interpreter: resident bytes added per open reservation."""
    limits = Limits() if with_keys else Limits(idempotency_retention_ms=1)
    ledger = Ledger(limits)
    leaves = build_tree(ledger, campaigns, at_ms=START_MS)
    gctune.tune_for_node()
    before = rss_bytes()
    fill_reservations(ledger, leaves, reservations, step_ms=1 if with_keys else 200)
    gc.collect()
    return (rss_bytes() - before) / reservations, ledger.stats()["idempotency_keys"]


def bench_memory(campaigns: int, reservations: int) -> dict[str, Any]:
    """Each measurement in a fresh process, so that no freed memory is reused."""
    out: dict[str, Any] = {"campaigns": campaigns, "reservations": reservations}
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for label, with_keys in (("with_key", True), ("without_key", False)):
            per_reservation, keys = pool.apply(_memory_child, (campaigns, reservations, with_keys))
            out[f"bytes_per_open_reservation_{label}"] = per_reservation
            out[f"idempotency_keys_{label}"] = keys
    return out


def bench_snapshot(campaigns: int, reservations: int, repeats: int) -> dict[str, Any]:
    ledger = Ledger()
    leaves = build_tree(ledger, campaigns, at_ms=START_MS)
    fill_reservations(ledger, leaves, reservations, step_ms=1)
    digest = ledger.digest()
    encode_s, decode_s = [], []
    size = 0
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        data = encode_snapshot(ledger)
        encode_s.append(time.perf_counter() - started)
        size = len(data)
        gc.collect()
        started = time.perf_counter()
        restored = decode_snapshot(data)
        decode_s.append(time.perf_counter() - started)
        if restored.digest() != digest:
            raise SystemExit("snapshot round trip changed the digest")
        del restored, data
    return {
        "campaigns": len(ledger.campaign_ids("", limit=10**9)),
        "open_reservations": ledger.stats()["open_reservations"],
        "idempotency_keys": ledger.stats()["idempotency_keys"],
        "snapshot_bytes": size,
        "encode_s_median": statistics.median(encode_s),
        "decode_s_median": statistics.median(decode_s),
        "repeats": repeats,
    }


def _scale_child(campaigns: int, reservations: int, mix_count: int) -> dict[str, float]:
    """Runs in a fresh interpreter: every cost at one size of the ledger, in CPU seconds (the
    machine may be shared)."""
    ledger = Ledger()
    started = time.process_time()
    leaves = build_tree(ledger, campaigns, at_ms=START_MS)
    build_s = time.process_time() - started
    gctune.tune_for_node()
    before = rss_bytes()
    started = time.process_time()
    # 1 h slices: they all expire before the New York day of START_MS ends (no roll-over inside).
    now = fill_reservations(ledger, leaves, reservations, step_ms=1, ttl_ms=3_600_000)
    fill_s = time.process_time() - started
    gc.collect()
    bytes_per_reservation = (rss_bytes() - before) / reservations
    ops = mix_ops(leaves, mix_count, seed=0, first_id=reservations + 1)
    batches = [ops[i : i + 100] for i in range(0, len(ops), 100)]
    started = time.process_time()
    for chunk in batches:
        now += 1
        ledger.apply_batch(now, chunk)
    mix_s = time.process_time() - started
    started = time.process_time()
    ledger.apply_batch(now + 60_000, [])  # the mix's own slices expire
    mix_expiry_s = time.process_time() - started
    now += 60_000
    started = time.process_time()
    ledger.apply_batch(now, [{"op": "pulse"}])  # control: every campaign's rate
    pulse_s = time.process_time() - started
    del ops, batches
    gc.collect()
    started = time.process_time()
    data = encode_snapshot(ledger)
    encode_s = time.process_time() - started
    started = time.process_time()
    restored = decode_snapshot(data)
    decode_s = time.process_time() - started
    started = time.process_time()
    digest = ledger.digest()
    digest_s = time.process_time() - started
    if restored.digest() != digest:
        raise SystemExit("snapshot round trip changed the digest")
    size = len(data)
    del restored, data
    gc.collect()
    open_before = ledger.stats()["open_reservations"]
    started = time.process_time()
    ledger.apply_batch(now + 3_600_000, [])  # every reservation's time is up
    sweep_s = time.process_time() - started
    expired = open_before - ledger.stats()["open_reservations"]
    if expired < reservations:
        raise SystemExit(f"only {expired} of {reservations} reservations expired")
    ledger.check_invariants()
    return {
        "campaigns": campaigns,
        "open_reservations": reservations,
        "build_campaigns_us_per_campaign": build_s / campaigns * 1e6,
        "fill_reserves_per_s": reservations / fill_s,
        "mix_ops_per_s": mix_count / mix_s,
        "bytes_per_open_reservation": bytes_per_reservation,
        "pulse_control_ms": pulse_s * 1e3,
        "mix_expiry_ms": mix_expiry_s * 1e3,
        "snapshot_bytes": size,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "digest_s": digest_s,
        "encode_us_per_reservation": encode_s / reservations * 1e6,
        "decode_us_per_reservation": decode_s / reservations * 1e6,
        "sweep_s": sweep_s,
        "sweep_us_per_expired": sweep_s / expired * 1e6,
    }


def _campaigns_child(campaigns: int) -> dict[str, float]:
    """Runs in a fresh interpreter: put_campaign with ids in random order (children of 100 roots),
    the cost per new campaign over the last tenth; then one control pulse over all of them."""
    rng = random.Random(campaigns)
    ledger = Ledger()
    roots = [f"adv{r}" for r in range(100)]
    ledger.apply_batch(
        START_MS,
        [
            {"op": "put_campaign", "campaign_id": root, "currency": "USD", "timezone": "UTC"}
            for root in roots
        ]
        + [{"op": "pulse"}],
    )
    gctune.tune_for_node()
    gc.collect()
    rss_before = rss_bytes()  # every campaign's id and object is made after this
    tenth = max(1_000, campaigns // 10)
    late_s = 0.0
    for start in range(0, campaigns, 1000):
        ops = [
            {"op": "put_campaign", "campaign_id": f"{rng.choice(roots)}:{rng.getrandbits(60):x}"}
            for _ in range(min(1000, campaigns - start))
        ]
        started = time.process_time()
        results = ledger.apply_batch(START_MS, ops)
        if start >= campaigns - tenth:
            late_s += time.process_time() - started
        assert results[0]["code"] == "ok", results[0]
    del ops
    gc.collect()
    bytes_per_campaign = (rss_bytes() - rss_before) / campaigns
    started = time.process_time()
    ledger.apply_batch(START_MS + 60_000, [{"op": "pulse"}])
    pulse_s = time.process_time() - started
    return {
        "campaigns": campaigns,
        "bytes_per_campaign": bytes_per_campaign,
        "put_campaign_us_last_tenth": late_s / tenth * 1e6,
        "pulse_control_ms": pulse_s * 1e3,
    }


def bench_campaign_scale(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    runs: dict[int, list[dict[str, float]]] = {size: [] for size in sizes}
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for _ in range(repeats):
            for size in sizes:
                runs[size].append(pool.apply(_campaigns_child, (size,)))
    return [
        {key: statistics.median(run[key] for run in runs[size]) for key in runs[size][0]}
        for size in sizes
    ]


def bench_scale(
    campaigns: int, sizes: list[int], mix_count: int, repeats: int
) -> list[dict[str, Any]]:
    """Each size in a fresh process, sizes alternating within each repeat; medians per size."""
    runs: dict[int, list[dict[str, float]]] = {size: [] for size in sizes}
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for _ in range(repeats):
            for size in sizes:
                runs[size].append(pool.apply(_scale_child, (campaigns, size, mix_count)))
    out = []
    for size in sizes:
        row: dict[str, Any] = {
            key: statistics.median(run[key] for run in runs[size]) for key in runs[size][0]
        }
        row["repeats"] = repeats
        out.append(row)
    return out


def print_scale(rows: list[dict[str, Any]]) -> None:
    columns = (
        ("open_reservations", "open", "{:,.0f}"),
        ("fill_reserves_per_s", "fill/s", "{:,.0f}"),
        ("mix_ops_per_s", "mix ops/s", "{:,.0f}"),
        ("bytes_per_open_reservation", "B/resv", "{:,.0f}"),
        ("pulse_control_ms", "pulse ms", "{:,.1f}"),
        ("encode_us_per_reservation", "enc us/r", "{:.2f}"),
        ("decode_us_per_reservation", "dec us/r", "{:.2f}"),
        ("encode_s", "enc s", "{:.3f}"),
        ("decode_s", "dec s", "{:.3f}"),
        ("digest_s", "digest s", "{:.3f}"),
        ("sweep_us_per_expired", "sweep us/r", "{:.2f}"),
        ("sweep_s", "sweep s", "{:.3f}"),
    )
    print(f"scaling, {rows[0]['campaigns']:,} campaigns, median of {rows[0]['repeats']}:")
    print("  ".join(f"{title:>11}" for _, title, _ in columns))
    for row in rows:
        print("  ".join(f"{fmt.format(row[key]):>11}" for key, _, fmt in columns))


#: Collector policies of --gc-pauses: name -> (thresholds, freeze the survivors of middle and old
#: collections as a node does).
GC_POLICIES: dict[str, tuple[tuple[int, int, int], bool]] = {
    "python defaults": (gc.get_threshold(), False),
    "100k/50/1k, no freezing": ((100_000, 50, 1_000), False),
    "node (budgetd.gctune)": (gctune.NODE_THRESHOLDS, True),
}


def _gc_child(policy: str, reservations: int) -> dict[str, Any]:
    """Runs in a fresh interpreter: grow a ledger of 100 campaigns to ``reservations`` open
    reservations under ``policy``; every collection timed."""
    ledger = Ledger()
    leaves = build_tree(ledger, 100, at_ms=START_MS)
    thresholds, freezes = GC_POLICIES[policy]
    if freezes:
        gctune.tune_for_node()
    else:
        gc.collect()
        gc.set_threshold(*thresholds)
    pauses: list[list[float]] = [[], [], []]
    started = [0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.insert(0, watch)  # before gctune's own callback, which may freeze
    began = time.perf_counter()
    fill_reservations(ledger, leaves, reservations, step_ms=1)
    elapsed = time.perf_counter() - began
    gc.callbacks.remove(watch)
    every = [pause for generation in pauses for pause in generation]
    return {
        "policy": policy,
        "reservations": reservations,
        "reserves_per_s": reservations / elapsed,
        "collections": [len(generation) for generation in pauses],
        "max_pause_ms": max(every, default=0.0) * 1000,
        "max_pause_ms_by_generation": [max(g, default=0.0) * 1000 for g in pauses],
        "collecting_share": sum(every) / elapsed,
    }


def bench_gc_pauses(reservations: int, repeats: int) -> list[dict[str, Any]]:
    """Each policy in a fresh process, policies alternating within each repeat; medians."""
    runs: dict[str, list[dict[str, Any]]] = {policy: [] for policy in GC_POLICIES}
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for _ in range(repeats):
            for policy in GC_POLICIES:
                runs[policy].append(pool.apply(_gc_child, (policy, reservations)))
    rows = []
    for policy, results in runs.items():
        row: dict[str, Any] = {"policy": policy, "reservations": reservations, "repeats": repeats}
        for key in ("reserves_per_s", "max_pause_ms", "collecting_share"):
            row[key] = statistics.median(result[key] for result in results)
        row["max_pause_ms_worst"] = max(result["max_pause_ms"] for result in results)
        row["collections"] = results[0]["collections"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--scale",
        action="store_true",
        help="only the scaling series: 1k, 100k, 1M open reservations, then 10k, 100k, 1M "
        "campaigns (--quick: smaller)",
    )
    parser.add_argument("--scale-campaigns", type=int, default=10_000)
    parser.add_argument(
        "--campaign-series", action="store_true", help="only the campaigns part of --scale"
    )
    parser.add_argument(
        "--gc-pauses",
        type=int,
        metavar="N",
        help="only the collector pauses while a ledger grows to N open reservations, per policy",
    )
    args = parser.parse_args()
    if args.gc_pauses is not None:
        if not 1_000 <= args.gc_pauses <= 20_000_000:
            parser.error("--gc-pauses is 1,000..20,000,000 reservations")
        repeats = 1 if args.quick else args.repeats
        rows = bench_gc_pauses(args.gc_pauses, repeats)
        print(
            f"collector pauses growing a ledger to {args.gc_pauses:,} open reservations, "
            f"median of {repeats}:"
        )
        print(
            f"{'policy':>26}  {'reserves/s':>11}  {'max pause ms':>12}  {'worst ms':>9}  "
            f"{'collecting':>10}  {'collections by generation':>25}"
        )
        for row in rows:
            print(
                f"{row['policy']:>26}  {row['reserves_per_s']:>11,.0f}  "
                f"{row['max_pause_ms']:>12,.1f}  {row['max_pause_ms_worst']:>9,.1f}  "
                f"{row['collecting_share']:>10.1%}  {row['collections']!s:>25}"
            )
        args.out.mkdir(exist_ok=True)
        path = args.out / f"ledger-gc-{time.strftime('%Y%m%dT%H%M%S')}.json"
        path.write_text(json.dumps({"python": sys.version.split()[0], "gc": rows}, indent=2))
        print(f"wrote {path}")
        return
    if args.scale or args.campaign_series:
        rows = []
        if args.scale:
            sizes_open = [1_000, 10_000] if args.quick else [1_000, 100_000, 1_000_000]
            rows = bench_scale(
                args.scale_campaigns, sizes_open, 5_000 if args.quick else 100_000, args.repeats
            )
            print_scale(rows)
        sizes_campaigns = [1_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
        campaign_rows = bench_campaign_scale(sizes_campaigns, args.repeats)
        print(f"campaigns in random id order, CPU, median of {args.repeats}:")
        print(f"{'campaigns':>11}  {'put us':>11}  {'pulse ms':>11}  {'B/campaign':>11}")
        for row in campaign_rows:
            print(
                f"{row['campaigns']:>11,}  {row['put_campaign_us_last_tenth']:>11.1f}  "
                f"{row['pulse_control_ms']:>11.1f}  {row['bytes_per_campaign']:>11,.0f}"
            )
        args.out.mkdir(exist_ok=True)
        path = args.out / f"ledger-scale-{time.strftime('%Y%m%dT%H%M%S')}.json"
        report = {"python": sys.version.split()[0], "scale": rows, "campaigns": campaign_rows}
        path.write_text(json.dumps(report, indent=2))
        print(f"wrote {path}")
        return
    if args.quick:
        sizes = {
            "campaigns": 1_000,
            "ops": 5_000,
            "snap_campaigns": 1_000,
            "snap_reservations": 5_000,
        }
        repeats = 1
    else:
        sizes = {
            "campaigns": 10_000,
            "ops": 300_000,
            "snap_campaigns": 100_000,
            "snap_reservations": 1_000_000,
        }
        repeats = args.repeats
    report = {
        "python": sys.version.split()[0],
        "ops": bench_ops(sizes["campaigns"], sizes["ops"], repeats, batch=100, node_gc=True),
        "ops_default_gc": bench_ops(
            sizes["campaigns"], sizes["ops"], repeats, batch=100, node_gc=False
        ),
        "snapshot": bench_snapshot(
            sizes["snap_campaigns"], sizes["snap_reservations"], min(repeats, 3)
        ),
        "memory": bench_memory(sizes["snap_campaigns"], sizes["snap_reservations"]),
    }
    snap, memory = report["snapshot"], report["memory"]
    for ops in (report["ops"], report["ops_default_gc"]):
        print(
            f"ledger ops/s, {ops['gc']} (median of {ops['repeats']}, {ops['campaigns']} "
            f"campaigns, 70/25/5 mix): {ops['ops_per_s_median']:,.0f} wall, "
            f"{ops['cpu_ops_per_s_median']:,.0f} cpu "
            f"(aim 150,000: {ops['ops_per_s_median'] / 150_000:.2f}x)"
        )
    print(
        f"snapshot of {snap['campaigns']:,} campaigns + {snap['open_reservations']:,} open "
        f"reservations: {snap['snapshot_bytes']:,} bytes, encode {snap['encode_s_median']:.2f} s, "
        f"decode {snap['decode_s_median']:.2f} s (aim <= 10 s each)"
    )
    print(
        f"memory per open reservation: "
        f"{memory['bytes_per_open_reservation_with_key']:.0f} B with its idempotency key, "
        f"{memory['bytes_per_open_reservation_without_key']:.0f} B without "
        f"(aim <= 400 B)"
    )
    args.out.mkdir(exist_ok=True)
    path = args.out / f"ledger-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
