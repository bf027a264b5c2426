"""The figures of scripts/bench: one run merged from the load generators' tallies, medians over
repeats, the conservation checks, budgetd/etcd ratios (of each adjacent pair of runs, and of the
medians), and the files (JSON, markdown, plot).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = [
    "conservation",
    "failures",
    "markdown",
    "merge",
    "one_line",
    "pair_first",
    "pair_line",
    "pair_ratios",
    "ratio_row",
    "ratios",
    "summarize",
    "verdict",
    "write",
]

MIB = 1024 * 1024
_LATENCY_KEYS = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
#: The figures compared between budgetd and etcd (throughput: above 1 favours budgetd; latency:
#: below 1 does).
_RATIO_KEYS = ("ops_per_s", "p50_ms", "p99_ms")


def _percentile(ordered: list[float], share: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def merge(answers: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """One run: the tallies of every load generator summed, latencies pooled."""
    latencies = sorted(value for answer in answers for value in answer["latencies_s"])
    run: dict[str, Any] = {
        "window_ops": sum(a["window_ops"] for a in answers),
        "window_requests": sum(a["window_requests"] for a in answers),
        "ops_per_s": sum(a["window_ops"] for a in answers) / duration_s,
        "requests_per_s": sum(a["window_requests"] for a in answers) / duration_s,
        "samples": len(latencies),
    }
    for key, share in zip(_LATENCY_KEYS, (0.5, 0.95, 0.99, 1.0), strict=True):
        value = _percentile(latencies, share)
        run[key] = None if value is None else 1000 * value
    for key in ("ops", "refused", "errors"):
        total: Counter[str] = Counter()
        for answer in answers:
            total.update(answer[key])
        run[key] = dict(total)
    for key in (
        "unknown",
        "granted_micros",
        "released_micros",
        "committed_micros",
        "cas_conflicts",
    ):
        run[key] = sum(a.get(key, 0) for a in answers)
    run["loop"] = sorted({a.get("loop", "?") for a in answers})
    wallets = [a["wallet"] for a in answers if "wallet" in a]
    if wallets:
        wallet: dict[str, Any] = {}
        for key, value in wallets[0].items():
            if isinstance(value, int):
                wallet[key] = sum(w[key] for w in wallets)
        modes: Counter[str] = Counter()
        for w in wallets:
            modes.update(w["modes"])
        wallet["modes"] = dict(modes)
        wallet["bids_per_s"] = wallet["bids"] / duration_s
        wallet["round_trips_per_1000_bids"] = (
            1000 * wallet["round_trips_in_window"] / wallet["bids"] if wallet["bids"] else None
        )
        run["wallet"] = wallet
    return run


def conservation(
    workload: str,
    run: dict[str, Any],
    *,
    before: tuple[int, int] | str,
    after: tuple[int, int] | str,
) -> dict[str, Any]:
    """Money the answers say was granted (less what releases returned) against what the store
    says its campaigns hold and spent; for wallets, commits against spend and nothing left
    held. ``holds`` is None when some outcome is unknown (then an exact check cannot be made)
    or the store could not be read (``before`` / ``after`` say why)."""
    if isinstance(before, str) or isinstance(after, str):
        return {"holds": None, "unread": before if isinstance(before, str) else after}
    held_delta = after[0] - before[0]
    spent_delta = after[1] - before[1]
    check: dict[str, Any] = {"held_delta_micros": held_delta, "spent_delta_micros": spent_delta}
    if workload == "wallet":
        committed = run["wallet"]["committed_micros"]
        check |= {"committed_micros": committed}
        holds = held_delta == 0 and spent_delta == committed
    else:
        expected = run["granted_micros"] - run["released_micros"]
        check |= {
            "granted_less_released_micros": expected,
            "taken_micros": held_delta + spent_delta,
        }
        holds = held_delta + spent_delta == expected and spent_delta == run["committed_micros"]
    check["holds"] = holds if run["unknown"] == 0 else None
    return check


def _median(values: list[Any]) -> Any:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _all_hold(checks: list[bool | None]) -> bool | None:
    if any(check is False for check in checks):
        return False
    if any(check is None for check in checks):
        return None
    return True


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A point: medians over its runs (counts of refusals and errors summed over them)."""
    point: dict[str, Any] = {"repeats": len(runs)}
    for key in ("ops_per_s", "requests_per_s", *_LATENCY_KEYS):
        point[key] = _median([run[key] for run in runs])
    for key in ("refused", "errors"):
        total: Counter[str] = Counter()
        for run in runs:
            total.update(run[key])
        point[key] = dict(total)
    point["unknown"] = sum(run["unknown"] for run in runs)
    point["ops"] = runs[-1]["ops"]
    leaders = [run["leader"] for run in runs if "leader" in run]
    if leaders:
        point["leader"] = {key: _median([lead[key] for lead in leaders]) for key in leaders[0]}
    point["cpu_s_per_s"] = {
        name: _median([run["cpu_s_per_s"].get(name) for run in runs])
        for name in runs[0]["cpu_s_per_s"]
    }
    for key in ("system_s_per_s", "minor_faults_per_s"):
        if all(key in run for run in runs):
            point[key] = {
                name: _median([run[key].get(name) for run in runs]) for name in runs[0][key]
            }
    point["rss_bytes"] = runs[-1]["rss_bytes"]
    idle = [run["idle_cpu_s_per_s"] for run in runs if "idle_cpu_s_per_s" in run]
    if idle:
        # The other store's processes over this point's windows (paired runs only).
        point["idle_cpu_s_per_s"] = {name: _median([i.get(name) for i in idle]) for name in idle[0]}
        totals = [sum(value for value in i.values() if value is not None) for i in idle]
        point["idle_cpu_s_per_s_total"] = _median(totals)
        point["idle_cpu_s_per_s_total_max"] = max(totals)
    wallets = [run["wallet"] for run in runs if "wallet" in run]
    if wallets:
        point["wallet"] = {
            "bids_per_s": _median([w["bids_per_s"] for w in wallets]),
            "round_trips_per_1000_bids": _median([w["round_trips_per_1000_bids"] for w in wallets]),
            "last_run": wallets[-1],
        }
    if any("cas_conflicts" in run for run in runs):
        point["cas_conflicts"] = sum(run.get("cas_conflicts", 0) for run in runs)
    checks = [run["conservation"] for run in runs if "conservation" in run]
    if checks:
        point["conservation_holds"] = _all_hold([check["holds"] for check in checks])
        point["conservation"] = checks
    point["runs"] = [
        {key: value for key, value in run.items() if key not in ("conservation",)} for run in runs
    ]
    return point


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _node_cpu(point: dict[str, Any]) -> str:
    return " / ".join(
        _fmt(value, 2)
        for name, value in sorted(point["cpu_s_per_s"].items())
        if not name.startswith("loadgen")
    )


def _node_kernel(point: dict[str, Any]) -> str:
    """Each node's system CPU as a share of its CPU ("-" for a point measured without it)."""
    system = point.get("system_s_per_s") or {}
    return " / ".join(
        f"{system[name] / cpu:.0%}" if cpu and system.get(name) is not None else "-"
        for name, cpu in sorted(point["cpu_s_per_s"].items())
        if not name.startswith("loadgen")
    )


def _node_rss(point: dict[str, Any]) -> str:
    return " / ".join(
        _fmt((value or 0) / MIB, 0) for _, value in sorted(point["rss_bytes"].items())
    )


def one_line(nodes: int, point: dict[str, Any], *, label: str = "") -> str:
    what = label or f"{point.get('workload')}/{point.get('campaigns')}"
    text = (
        f"{f'{nodes}n ' if nodes else ''}{what} c={point.get('concurrency')}: "
        f"{_fmt(point['ops_per_s'], 0)} ops/s, "
        f"p50 {_fmt(point['p50_ms'], 2)} p99 {_fmt(point['p99_ms'], 2)} ms"
    )
    if "wallet" in point:
        text += f", {_fmt(point['wallet']['round_trips_per_1000_bids'], 2)} round trips/1000 bids"
    if "conservation_holds" in point:
        text += f", conservation {verdict(point['conservation_holds'])}"
    return text


def verdict(holds: bool | None) -> str:
    return {True: "holds", False: "BROKEN", None: "n/a (unknown outcome or unread)"}[holds]


def pair_first(repeat: int) -> str:
    """Which store runs first in the pair of runs of ``repeat`` (0-based): budgetd, then etcd
    first, alternately, so neither always runs on the machine the other just left."""
    return "budgetd" if repeat % 2 == 0 else "etcd"


def pair_ratios(
    ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str
) -> dict[str, Any]:
    """budgetd's ``key`` over etcd's for each pair (run i of each, measured back to back), and
    the median, min and max of those ratios. A pair missing a figure (no sample, or etcd's 0)
    has no ratio and is left out of the median; ``pairs`` lists every pair in order."""
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} budgetd runs against {len(theirs)} etcd runs: not pairs")
    pairs: list[float | None] = []
    for a, b in zip(ours, theirs, strict=True):
        pairs.append(a[key] / b[key] if a.get(key) is not None and b.get(key) else None)
    present = [value for value in pairs if value is not None]
    return {
        "pairs": pairs,
        "median": statistics.median(present) if present else None,
        "min": min(present) if present else None,
        "max": max(present) if present else None,
    }


def ratio_row(ours: dict[str, Any], theirs: dict[str, Any], nodes: int) -> dict[str, Any]:
    """budgetd's point against etcd's at one concurrency: for each figure, the median of the
    paired ratios (``<key>_paired_ratio_median``, with ``_min``, ``_max`` and every pair in
    ``_paired_ratios``), each store's median of its repeats (``<key>_budgetd``, ``<key>_etcd``)
    and their quotient (``<key>_ratio_of_medians``); and the idle store's CPU s/s (summed over
    its processes, median over the windows of the other, and max)."""
    ours_runs, theirs_runs = ours.get("runs", []), theirs.get("runs", [])
    row: dict[str, Any] = {
        "concurrency": theirs["concurrency"],
        "budgetd_nodes": nodes,
        "pairs": min(len(ours_runs), len(theirs_runs)),
        "first": [run.get("first") for run in ours_runs],
    }
    paired = len(ours_runs) == len(theirs_runs) > 0
    for key in _RATIO_KEYS:
        a, b = ours[key], theirs[key]
        by_pair = pair_ratios(ours_runs, theirs_runs, key) if paired else None
        row[f"{key}_paired_ratio_median"] = by_pair["median"] if by_pair else None
        row[f"{key}_paired_ratio_min"] = by_pair["min"] if by_pair else None
        row[f"{key}_paired_ratio_max"] = by_pair["max"] if by_pair else None
        row[f"{key}_paired_ratios"] = by_pair["pairs"] if by_pair else []
        row[f"{key}_budgetd"] = a
        row[f"{key}_etcd"] = b
        row[f"{key}_ratio_of_medians"] = a / b if a is not None and b else None
    row["idle_etcd_cpu_s_per_s_in_budgetd_windows"] = ours.get("idle_cpu_s_per_s_total")
    row["idle_etcd_cpu_s_per_s_in_budgetd_windows_max"] = ours.get("idle_cpu_s_per_s_total_max")
    row["idle_budgetd_cpu_s_per_s_in_etcd_windows"] = theirs.get("idle_cpu_s_per_s_total")
    row["idle_budgetd_cpu_s_per_s_in_etcd_windows_max"] = theirs.get("idle_cpu_s_per_s_total_max")
    return row


def _spread(row: dict[str, Any], key: str, digits: int = 2) -> str:
    """``median (min-max)`` of the paired ratios of ``key``."""
    return (
        f"{_fmt(row[f'{key}_paired_ratio_median'], digits)} "
        f"({_fmt(row[f'{key}_paired_ratio_min'], digits)}-"
        f"{_fmt(row[f'{key}_paired_ratio_max'], digits)})"
    )


def pair_line(row: dict[str, Any]) -> str:
    return (
        f"budgetd/etcd c={row['concurrency']}, {row['pairs']} pairs: ops/s "
        f"{_spread(row, 'ops_per_s')}, p99 {_spread(row, 'p99_ms')} (median of pairs, min-max); "
        f"idle CPU s/s: etcd {_fmt(row['idle_etcd_cpu_s_per_s_in_budgetd_windows'], 3)}, "
        f"budgetd {_fmt(row['idle_budgetd_cpu_s_per_s_in_etcd_windows'], 3)}"
    )


def ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """budgetd / etcd for the reserve workload on the hot set, per concurrency, from the runs
    paired with etcd's (the smallest budgetd cluster measured)."""
    nodes = str(result["etcd"].get("budgetd_nodes", min(result["budgetd"], key=int)))
    if nodes not in result["budgetd"]:
        return []
    ours = {
        p["concurrency"]: p
        for p in result["budgetd"][nodes]["points"]
        if p["workload"] == "reserve" and p["campaigns"] == "hot"
    }
    return [
        ratio_row(ours[theirs["concurrency"]], theirs, int(nodes))
        for theirs in result["etcd"]["points"]
        if theirs["concurrency"] in ours
    ]


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header: list[str], align: str) -> list[str]:
    """A markdown header; ``align`` has one letter per column: l (left) or r (right)."""
    return [_row(*header), "|" + "|".join("---" if a == "l" else "--:" for a in align) + "|"]


def _sweep_lines(nodes: str, sweep: dict[str, Any], o: dict[str, Any]) -> list[str]:
    setup = ", ".join(f"{k} set {v:.1f} s" for k, v in sweep["setup_s"].items())
    failover = ""
    if "failover_s" in sweep:
        runs = [round(x, 2) for x in sweep["failover_s"]]
        failover = (
            " Failover (kill -9 of the leader to the next acknowledged reserve): median "
            f"{sweep['failover_s_median']:.2f} s of {runs}."
        )
    lines = [
        f"## budgetd, {nodes} nodes",
        "",
        f"Set-up: {setup}.{failover}",
        "ops/s counts reserve/commit/release ops (batch: the ops inside the requests; wallet: "
        "bids). Latency is per request (wallet: per try_hold + win/loss). ops/entry: proposer ops "
        "per log entry (mean), entries/s: Raft entries per second, both from the leader's "
        "/metrics. CPU: CPU seconds per second of each node; kernel: the system part of that "
        "CPU (page faults of growing memory, syncs, sockets); RSS after the point.",
        "",
        *_table(
            [
                "workload", "campaigns", "conc.", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
                "refused", "errors", "ops/entry", "entries/s", "CPU s/s per node",
                "kernel per node", "RSS MiB per node", "conservation",
            ],
            "llrrrrrrrrrrllll",
        ),
    ]  # fmt: skip
    for p in sweep["points"]:
        leader = p.get("leader", {})
        lines.append(
            _row(
                p["workload"], p["campaigns"], p["concurrency"], _fmt(p["ops_per_s"], 0),
                _fmt(p["p50_ms"], 2), _fmt(p["p95_ms"], 2), _fmt(p["p99_ms"], 2),
                _fmt(p["max_ms"], 1), sum(p["refused"].values()), sum(p["errors"].values()),
                _fmt(leader.get("proposer_ops_per_entry_mean"), 1),
                _fmt(leader.get("raft_entries_per_s"), 0), _node_cpu(p), _node_kernel(p),
                _node_rss(p), verdict(p.get("conservation_holds")),
            )
        )  # fmt: skip
    wallet_points = [p for p in sweep["points"] if "wallet" in p]
    if wallet_points:
        lines += [
            "",
            f"Wallets ({o['bid_rate']} bid requests/s offered to each, "
            f"{o['wallet']['win_share']:.0%} of held bids won; counters of the last run):",
            "",
            *_table(
                [
                    "campaigns", "wallets", "bids/s", "round trips / 1,000 bids", "held bids",
                    "wins", "committed micros", "pending", "failed wins", "modes",
                ],
                "lrrrrrrrrl",
            ),
        ]  # fmt: skip
        for p in wallet_points:
            w = p["wallet"]["last_run"]
            lines.append(
                _row(
                    p["campaigns"], p["concurrency"], _fmt(p["wallet"]["bids_per_s"], 0),
                    _fmt(p["wallet"]["round_trips_per_1000_bids"], 2), f"{w['bids_held']:,}",
                    f"{w['wins']:,}", f"{w['committed_micros']:,}", w["pending_commits"],
                    w["failed_wins"], w["modes"],
                )
            )  # fmt: skip
    rows = sweep.get("reservations")
    if rows:
        lines += [
            "",
            f"Open reservations (a fresh cluster; reserve at {rows[0]['concurrency']} concurrent "
            "requests over 100 campaigns after each pre-fill):",
            "",
            *_table(
                [
                    "open", "fill s", "ops/s", "p50 ms", "p99 ms", "RSS MiB per node",
                    "RSS bytes per reservation per node",
                ],
                "rrrrrll",
            ),
        ]  # fmt: skip
        for r in rows:
            per = " / ".join(_fmt(v, 0) for _, v in sorted(r["rss_bytes_per_reservation"].items()))
            lines.append(
                _row(
                    f"{r['reservations_open']:,}", _fmt(r["fill_s"], 1), _fmt(r["ops_per_s"], 0),
                    _fmt(r["p50_ms"], 2), _fmt(r["p99_ms"], 2), _node_rss(r), per,
                )
            )  # fmt: skip
    lines.append("")
    return lines


def _nodes_lines(result: dict[str, Any]) -> list[str]:
    """Each point of the smallest cluster against the same point of every larger one."""
    sizes = sorted(result["budgetd"], key=int)
    base = sizes[0]
    by_key = {
        size: {(p["workload"], p["campaigns"], p["concurrency"]): p for p in sweep["points"]}
        for size, sweep in result["budgetd"].items()
    }
    lines = [f"## {' against '.join(sizes)} nodes", ""]
    for other in sizes[1:]:
        lines += [
            f"{other} nodes / {base} nodes (ops/s below 1 or p99 above 1: {other} nodes slower):",
            "",
            *_table(
                [
                    "workload", "campaigns", "conc.", f"ops/s {base}n", f"ops/s {other}n",
                    "ratio", f"p99 ms {base}n", f"p99 ms {other}n", "ratio",
                ],
                "llrrrrrrr",
            ),
        ]  # fmt: skip
        for key, a in by_key[base].items():
            b = by_key[other].get(key)
            if b is None:
                continue
            cells: list[Any] = list(key)
            for field, digits in (("ops_per_s", 0), ("p99_ms", 2)):
                ratio = b[field] / a[field] if a[field] and b[field] is not None else None
                cells += [_fmt(a[field], digits), _fmt(b[field], digits), _fmt(ratio, 2)]
            lines.append(_row(*cells))
        lines.append("")
    return lines


def _etcd_lines(result: dict[str, Any]) -> list[str]:
    etcd = result["etcd"]
    nodes = etcd.get("budgetd_nodes", "?")
    rows = result.get("vs_etcd", [])
    lines = [
        f"## budgetd ({nodes} nodes) against etcd (3 members), reserve on the hot set",
        "",
        "Interleaved: at each concurrency, each repeat runs budgetd and etcd back to back (both "
        "clusters up, each run with its own warm-up), budgetd first in even repeats and etcd "
        "first in odd ones. A paired ratio is budgetd's figure over etcd's in one such pair; "
        "the table gives their median and min-max. Throughput above 1 and latency below 1 "
        "favour budgetd.",
        "",
        "Paired ratios, budgetd / etcd (median of the pairs, min-max):",
        "",
        *_table(["conc.", "pairs", "ops/s ratio", "p50 ratio", "p99 ratio"], "rrlll"),
    ]
    for r in rows:
        lines.append(
            _row(
                r["concurrency"], r["pairs"], _spread(r, "ops_per_s"), _spread(r, "p50_ms"),
                _spread(r, "p99_ms"),
            )
        )  # fmt: skip
    lines += [
        "",
        "Each store's median of its repeats, the ratio of those medians, and the CPU s/s of the "
        "idle store's processes (summed; median over the other's windows, max in brackets):",
        "",
        *_table(
            [
                "conc.", "budgetd ops/s", "etcd ops/s", "ratio of medians", "budgetd p50 ms",
                "etcd p50 ms", "ratio of medians", "budgetd p99 ms", "etcd p99 ms",
                "ratio of medians", "idle etcd CPU s/s (budgetd runs)",
                "idle budgetd CPU s/s (etcd runs)",
            ],
            "rrrrrrrrrrrr",
        ),
    ]  # fmt: skip
    for r in rows:
        cells: list[Any] = [r["concurrency"]]
        for key, digits in (("ops_per_s", 0), ("p50_ms", 2), ("p99_ms", 2)):
            cells += [
                _fmt(r[f"{key}_budgetd"], digits),
                _fmt(r[f"{key}_etcd"], digits),
                _fmt(r[f"{key}_ratio_of_medians"], 2),
            ]
        for key in (
            "idle_etcd_cpu_s_per_s_in_budgetd_windows",
            "idle_budgetd_cpu_s_per_s_in_etcd_windows",
        ):
            cells.append(f"{_fmt(r[key], 3)} ({_fmt(r[key + '_max'], 3)})")
        lines.append(_row(*cells))
    lines += [
        "",
        "etcd's points (reserve = linearizable read + CAS transaction):",
        "",
        *_table(
            [
                "conc.", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "CAS conflicts",
                "refused", "errors", "CPU s/s per member", "RSS MiB per member",
            ],
            "rrrrrrrrrll",
        ),
    ]  # fmt: skip
    for p in etcd["points"]:
        lines.append(
            _row(
                p["concurrency"], _fmt(p["ops_per_s"], 0), _fmt(p["p50_ms"], 2),
                _fmt(p["p95_ms"], 2), _fmt(p["p99_ms"], 2), _fmt(p["max_ms"], 1),
                f"{p.get('cas_conflicts', 0):,}", sum(p["refused"].values()),
                sum(p["errors"].values()), _node_cpu(p), _node_rss(p),
            )
        )  # fmt: skip
    c = etcd.get("conservation")
    lines += [
        "",
        (
            f"etcd conservation: granted {c['granted_micros']:,} micros, taken "
            f"{c['taken_micros']:,}, reservation records {c['reservation_records_micros']:,} "
            f"({c['reservation_records']:,} records): {verdict(c['holds'])}."
            if c
            else "etcd conservation: not checked (the run stopped first)."
        ),
        "",
    ]
    return lines


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    o = result["options"]
    disk = m["disk"]
    lines = [
        f"# scripts/bench, {result['started_utc']}",
        "",
        *([f"**Aborted**: {result['aborted']}", ""] if "aborted" in result else []),
        f"`{result['command']}` — {result['elapsed_s'] / 60:.1f} min (estimate "
        f"{result['estimate_s'] / 60:.1f}); {o['repeats']} repeats of {o['duration_s']:g} s "
        f"after {o['warmup_s']:g} s warm-up, medians; {o['loadgens']} load-generator process(es) "
        f"({result.get('loop', '?')}).",
        "",
        f"Machine: {m.get('nproc')} CPUs ({m.get('cpu_model', '?')}), kernel {m.get('kernel')}, "
        f"{(m.get('mem_total_bytes') or 0) / 2**30:.0f} GiB, data on {disk.get('source')} "
        f"({disk.get('fstype')}, rotational {disk.get('rotational', '?')}); 1-min load "
        f"{m.get('load_average_1m', 0):.2f} at start.",
        "",
    ]
    for nodes, sweep in result["budgetd"].items():
        lines += _sweep_lines(nodes, sweep, o)
    if len(result["budgetd"]) > 1:
        lines += _nodes_lines(result)
    if "etcd" in result:
        lines += _etcd_lines(result)
    return "\n".join(lines)


def failures(result: dict[str, Any]) -> list[str]:
    """Broken conservation checks (a refusal to lose money is the one result that fails a run)."""
    failed = [f"aborted: {result['aborted']}"] if "aborted" in result else []
    for nodes, sweep in result["budgetd"].items():
        for p in [*sweep["points"], *sweep.get("reservations", [])]:
            if p.get("conservation_holds") is False:
                failed.append(
                    f"budgetd {nodes} nodes {p.get('workload', 'reserve')}/"
                    f"{p.get('campaigns', 'fill')} c={p['concurrency']}: conservation broken: "
                    f"{p['conservation']}"
                )
    if "etcd" in result and result["etcd"].get("conservation", {}).get("holds") is False:
        failed.append(f"etcd conservation broken: {result['etcd']['conservation']}")
    return failed


def _plot(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (throughput, p99) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
    for nodes, sweep in result["budgetd"].items():
        keys = sorted(
            {(p["workload"], p["campaigns"]) for p in sweep["points"] if p["workload"] != "wallet"}
        )
        for workload, campaigns in keys:
            points = [
                p
                for p in sweep["points"]
                if (p["workload"], p["campaigns"]) == (workload, campaigns)
            ]
            style = {"linestyle": "-" if campaigns == "hot" else "--", "marker": "o"}
            series.append((f"budgetd {nodes}n {workload}/{campaigns}", points, style))
    if "etcd" in result:
        series.append(
            (
                "etcd 3m reserve/hot",
                result["etcd"]["points"],
                {"color": "black", "linewidth": 2.5, "marker": "s"},
            )
        )
    for label, points, style in series:
        points = sorted(points, key=lambda p: p["concurrency"])
        xs = [p["concurrency"] for p in points]
        throughput.plot(xs, [p["ops_per_s"] or 0 for p in points], label=label, **style)
        p99.plot(xs, [p["p99_ms"] or 0 for p in points], label=label, **style)
    for axis, title, unit in ((throughput, "throughput", "ops/s"), (p99, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    throughput.legend(fontsize=7)
    figure.suptitle(
        f"scripts/bench {result['started_utc']} (medians of {result['options']['repeats']})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write(result: dict[str, Any], base: Path) -> list[Path]:
    """``base``.json, .md and .png; the paths written."""
    json_path = base.with_suffix(".json")
    json_path.write_text(json.dumps(result, indent=1, default=str))
    md_path = base.with_suffix(".md")
    md_path.write_text(markdown(result))
    paths = [json_path, md_path]
    plot = _plot(result, base.with_suffix(".png"))
    if plot is not None:
        paths.append(plot)
    return paths
