"""scripts/bench: options, the plan and its estimate, the run, and the files it writes.

The parent process starts the stores (LocalCluster, benchlib.etcd), creates the campaigns
through the load generators, and for each point tells them when the measured window opens and
closes; meanwhile it reads the leader's /metrics and the nodes' /proc at both edges. With
--vs-etcd, etcd runs beside the smallest cluster while its reserve/hot points are measured, each
budgetd run paired with an etcd run back to back (Bench.interleaved). It talks to budgetd only
over HTTP and stops only the processes it started, by PID.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final, NoReturn

from benchlib import loadgen, observe, report
from benchlib.etcd import EtcdCluster
from budgetd.localcluster import LocalCluster

__all__ = ["main"]

WORKLOADS: Final = ("reserve", "mix", "batch", "batch-reserve", "wallet")
#: What --workloads means when not given: batch-reserve (reservations that stay open) on demand.
DEFAULT_WORKLOADS: Final = ("reserve", "mix", "batch", "wallet")
CAMPAIGN_SETS: Final = ("hot", "cold")
HOT_CAMPAIGNS: Final = 100
COLD_CAMPAIGNS: Final = 100_000
ROOT_BUDGET_MICROS: Final = 10**15
ETCD_BUDGET_MICROS: Final = 10**12
#: Campaigns of the open-reservation pre-fill (a set of their own, on a fresh cluster).
FILL_CAMPAIGNS: Final = 100
FILL_CONCURRENCY: Final = 64
READY_TIMEOUT_S: Final = 60.0
FAILOVER_TIMEOUT_S: Final = 60.0
LEADER_TIMEOUT_S: Final = 60.0
#: How long a money read (for the conservation check) is retried while the cluster is busy.
MONEY_READ_TIMEOUT_S: Final = 60.0
#: An answer of a load generator may come this long after its window closed (wallet close,
#: the last requests' timeouts) before the run is abandoned.
ANSWER_GRACE_S: Final = 60.0
#: Gap between sending a point's commands and the start of its warm-up.
DISPATCH_S: Final = 0.3
#: Prefix of the other store's processes among those whose CPU a paired run reads.
_IDLE: Final = "idle:"
#: Bounds of the options.
CONCURRENCY_MAX: Final = 4_096
RESERVATIONS_MAX: Final = 5_000_000
DURATION_S_MAX: Final = 600.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, exit 2 (argparse would print the usage first)."""
        self.exit(2, f"scripts/bench: {message} (see scripts/bench --help)\n")


def _int_list(text: str, *, low: int, high: int, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{name} takes integers separated by commas, got {text!r}"
        ) from None
    for value in values:
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} values are {low}..{high}, got {value}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{name} lists {text!r} with a repeat")
    return values


def _choices(text: str, *, allowed: tuple[str, ...], name: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [value for value in values if value not in allowed]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"{name} takes some of {','.join(allowed)}, got {text!r}")
    return list(dict.fromkeys(values))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scripts/bench",
        description=(
            "The benchmark of record: a real, durable budgetd cluster on loopback, load from "
            "separate processes, medians of repeats; JSON, markdown and a plot in bench-results/."
        ),
        epilog="docs/performance.md describes every figure. Bad options exit 2, nothing started.",
    )
    parser.add_argument(
        "--workloads",
        type=lambda t: _choices(t, allowed=WORKLOADS, name="--workloads"),
        default=list(DEFAULT_WORKLOADS),
        help=(
            "of reserve,mix,batch,batch-reserve,wallet (default: all but batch-reserve, whose "
            "reservations stay open)"
        ),
    )
    parser.add_argument(
        "--campaigns",
        type=lambda t: _choices(t, allowed=CAMPAIGN_SETS, name="--campaigns"),
        default=list(CAMPAIGN_SETS),
        help=f"hot ({HOT_CAMPAIGNS} campaigns) and/or cold (--cold-campaigns; default both)",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda t: _int_list(t, low=1, high=CONCURRENCY_MAX, name="--concurrency"),
        default=None,
        help="concurrent requests (wallets for wallet) per point (default 1,16,64,256; "
        "--quick: 1,16)",
    )
    parser.add_argument(
        "--nodes",
        type=lambda t: _int_list(t, low=1, high=9, name="--nodes"),
        default=[3],
        help="cluster sizes, e.g. 3,5 for a comparison (default 3)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per point, medians reported (default 3, min 3)",
    )
    parser.add_argument(
        "--duration-s", type=float, default=None, help="measured window per run (default 4)"
    )
    parser.add_argument(
        "--warmup-s", type=float, default=None, help="load before each window (default 1)"
    )
    parser.add_argument(
        "--reservations",
        type=lambda t: _int_list(t, low=1, high=RESERVATIONS_MAX, name="--reservations"),
        default=[],
        help="open-reservation scaling: pre-fill these many (e.g. 1000,100000,1000000)",
    )
    parser.add_argument(
        "--vs-etcd",
        action="store_true",
        help="the reserve workload on the hot set against a 3-member etcd too, each run paired "
        "with budgetd's (smallest --nodes) back to back",
    )
    parser.add_argument(
        "--loadgens", type=int, default=2, help="load-generator processes, 1 or 2 (default 2)"
    )
    parser.add_argument(
        "--batch-ops", type=int, default=500, help="ops per /v1/batch request (default 500)"
    )
    parser.add_argument(
        "--bid-rate",
        type=int,
        default=200,
        help="bid requests/s offered to each wallet (default 200)",
    )
    parser.add_argument(
        "--cold-campaigns",
        type=int,
        default=None,
        help=f"size of the cold set (default {COLD_CAMPAIGNS:,})",
    )
    parser.add_argument(
        "--no-failover",
        dest="failover",
        action="store_false",
        help="skip the kill -9 of the leader after each sweep (timed to the next acknowledged "
        "write)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where results go")
    parser.add_argument(
        "--load-max", type=float, default=0.5, help="refuse above this 1-min load (0.5)"
    )
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument("--quick", action="store_true", help="every selected workload in seconds")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    return parser


@dataclass
class Plan:
    args: argparse.Namespace
    concurrency: list[int]
    repeats: int
    duration_s: float
    warmup_s: float
    cold_campaigns: int

    @property
    def sets(self) -> list[str]:
        return list(self.args.campaigns)

    def set_size(self, name: str) -> int:
        return HOT_CAMPAIGNS if name == "hot" else self.cold_campaigns

    def points(self) -> int:
        per_cluster = len(self.args.workloads) * len(self.sets) * len(self.concurrency)
        return per_cluster * len(self.args.nodes)

    def estimate_s(self) -> float:
        run_s = self.warmup_s + self.duration_s + DISPATCH_S + 2.0  # reads, scrapes, tail
        total = self.points() * self.repeats * run_s
        total += len(self.args.nodes) * 10.0  # start, leader, stop
        if self.args.failover:
            total += len(self.args.nodes) * self.repeats * 8.0  # election, restart, catch-up
        if "cold" in self.sets:
            total += len(self.args.nodes) * self.cold_campaigns / 700  # PUTs, about 700/s
        if self.args.vs_etcd:
            total += 15.0 + len(self.concurrency) * self.repeats * run_s
        if self.args.reservations:
            total += len(self.args.nodes) * (
                15.0
                + max(self.args.reservations) / 15_000  # pre-fill through /v1/batch
                + len(self.args.reservations) * self.repeats * run_s
            )
        return total

    def describe(self) -> str:
        a = self.args
        lines = [
            f"plan: nodes {','.join(map(str, a.nodes))}; workloads {','.join(a.workloads)}; "
            f"campaigns {','.join(f'{s} ({self.set_size(s):,})' for s in self.sets)}",
            f"      concurrency {','.join(map(str, self.concurrency))}; {self.repeats} repeats of "
            f"{self.warmup_s:g} s warm-up + {self.duration_s:g} s measured; {a.loadgens} load "
            f"generator process(es); batch {a.batch_ops} ops; wallets offered {a.bid_rate} bids/s",
            f"      {self.points()} points x {self.repeats} = {self.points() * self.repeats} runs"
            + (
                f", etcd reserve/hot at each concurrency interleaved with budgetd's "
                f"({min(a.nodes)} nodes)"
                if a.vs_etcd
                else ""
            )
            + (
                f", open reservations {','.join(f'{n:,}' for n in a.reservations)}"
                if a.reservations
                else ""
            ),
            f"estimate: about {self.estimate_s() / 60:.1f} minutes",
        ]
        return "\n".join(lines)


def _plan(argv: list[str] | None) -> Plan:
    parser = _parser()
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = args.repeats if args.repeats is not None else (1 if quick else 3)
    if repeats < (1 if quick else 3) or repeats > 50:
        parser.error(f"--repeats is 3..50 (1..50 with --quick), got {repeats}")
    duration_s = args.duration_s if args.duration_s is not None else (0.5 if quick else 4.0)
    warmup_s = args.warmup_s if args.warmup_s is not None else (0.2 if quick else 1.0)
    if not 0.1 <= duration_s <= DURATION_S_MAX or not 0.0 <= warmup_s <= DURATION_S_MAX:
        parser.error(
            f"--duration-s is 0.1..{DURATION_S_MAX:g} and --warmup-s 0..{DURATION_S_MAX:g}"
        )
    if args.loadgens not in (1, 2):
        parser.error(f"--loadgens is 1 or 2, got {args.loadgens}")
    if not 1 <= args.batch_ops <= 1_000:
        parser.error(f"--batch-ops is 1..1000 (the API's batch_ops_max), got {args.batch_ops}")
    if not 1 <= args.bid_rate <= 100_000:
        parser.error(f"--bid-rate is 1..100000, got {args.bid_rate}")
    cold = (
        args.cold_campaigns
        if args.cold_campaigns is not None
        else (2_000 if quick else COLD_CAMPAIGNS)
    )
    if not 1 <= cold <= 1_000_000:
        parser.error(f"--cold-campaigns is 1..1000000, got {cold}")
    concurrency = args.concurrency or ([1, 16] if quick else [1, 16, 64, 256])
    if args.vs_etcd and ("reserve" not in args.workloads or "hot" not in args.campaigns):
        parser.error(
            "--vs-etcd pairs each etcd run with a budgetd reserve run on the hot set: "
            "--workloads needs reserve and --campaigns hot"
        )
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is not a directory")
    return Plan(args, concurrency, repeats, duration_s, warmup_s, cold)


def _busy(plan: Plan) -> str | None:
    load = os.getloadavg()[0]
    if load > plan.args.load_max and not plan.args.force:
        return (
            f"scripts/bench: the machine is busy: 1-minute load average {load:.2f} > "
            f"--load-max {plan.args.load_max:g}; figures would measure the other load. "
            "Retry when idle, or pass --force."
        )
    return None


# -- load generators ----------------------------------------------------------------------------


class LoadGens:
    """The load-generator processes (spawned, so they share nothing with this one)."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[BaseProcess] = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=loadgen.serve,
                args=(theirs, index),
                name=f"bench-loadgen-{index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def ask(
        self, messages: list[dict[str, Any] | None], *, deadline: float
    ) -> list[dict[str, Any]]:
        """Send each process its message (None: nothing) and wait for every answer until
        ``deadline`` (monotonic)."""
        asked = [(pipe, m) for pipe, m in zip(self.pipes, messages, strict=False) if m is not None]
        for pipe, message in asked:
            pipe.send(message)
        answers = []
        for pipe, message in asked:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"a load generator did not answer {message['cmd']} in time")
            answer: dict[str, Any] = pipe.recv()
            if "failed" in answer:
                raise RuntimeError(f"load generator failed {message['cmd']}: {answer['failed']}")
            answers.append(answer)
        return answers

    def close(self) -> None:
        for pipe in self.pipes:
            with suppress(OSError, BrokenPipeError):
                pipe.send({"cmd": "exit"})
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()  # by its PID
                process.join(5)


def _split(total: int, parts: int) -> list[int]:
    """``total`` coroutines over ``parts`` processes (the first ones take the remainder)."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _chunks(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[index::parts] for index in range(parts)]


# -- budgetd ------------------------------------------------------------------------------------


def _get_json(url: str, token: str | None = None, timeout_s: float = 10.0) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def _get_text(url: str, timeout_s: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return str(response.read().decode())


def _leader(cluster: LocalCluster, timeout_s: float = LEADER_TIMEOUT_S) -> str:
    """The id of the leader as some running node knows it (a busy node may take seconds)."""
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if not node.running:
                continue
            try:
                body = _get_json(node.url + "/v1/cluster?digest=last", cluster.token, timeout_s=5.0)
            except OSError as exc:
                seen = f"{node.node_id}: {exc}"
                continue
            if body.get("leader_id"):
                return str(body["leader_id"])
            seen = f"{node.node_id} knows no leader"
        time.sleep(0.1)
    raise RuntimeError(f"the cluster has no leader after {timeout_s:g} s (last: {seen})")


def _money(url: str, token: str, campaign_id: str) -> tuple[int, int] | str:
    """(held, spent) totals of a campaign's subtree, read through the log; retried while the
    cluster answers 503/504 (an overloaded queue), else what went wrong."""
    deadline = time.monotonic() + MONEY_READ_TIMEOUT_S
    problem = ""
    while time.monotonic() < deadline:
        try:
            body = _get_json(f"{url}/v1/campaigns/{campaign_id}?consistency=strong", token)
            return int(body["held_total_micros"]), int(body["spent_total_micros"])
        except urllib.error.HTTPError as exc:
            problem = f"GET /v1/campaigns/{campaign_id} answered {exc.code}"
            if exc.code not in (503, 504):
                return problem
        except OSError as exc:
            problem = f"GET /v1/campaigns/{campaign_id}: {exc}"
        time.sleep(0.5)
    return f"{problem} for {MONEY_READ_TIMEOUT_S:g} s"


def _now_tag() -> str:
    """Part of a run's idempotency keys: runs of one cluster never share a key."""
    return f"t{time.time_ns() % 10**8}"


def _failover(cluster: LocalCluster, campaign_id: str, repeat: int) -> float:
    """kill -9 of the leader until a reserve is acknowledged (201) through any running node;
    then the node is started again and the cluster waited for. Seconds from the kill."""
    leader_id = _leader(cluster)
    killed_at = time.monotonic()
    cluster.kill(leader_id)
    deadline = killed_at + FAILOVER_TIMEOUT_S
    body = json.dumps(
        {"campaign_id": campaign_id, "amount_micros": 1, "ttl_ms": 60_000, "bidder_id": "failover"}
    ).encode()
    attempt = 0
    try:
        while time.monotonic() < deadline:
            for node in cluster.nodes:
                if not node.running:
                    continue
                attempt += 1
                request = urllib.request.Request(
                    node.url + "/v1/reservations",
                    data=body,
                    headers={
                        "Authorization": f"Bearer {cluster.token}",
                        "Content-Type": "application/json",
                        "Idempotency-Key": f"failover-{repeat}-{time.time_ns()}-{attempt}",
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=2) as response:
                        if response.status == 201:
                            return time.monotonic() - killed_at
                except OSError:
                    pass
            time.sleep(0.01)
        raise RuntimeError(f"no reserve acknowledged within {FAILOVER_TIMEOUT_S:g} s of the kill")
    finally:
        cluster.start(leader_id)
        if cluster.wait_ready(READY_TIMEOUT_S):
            raise RuntimeError("the restarted node did not become ready:\n" + cluster.logs())


@contextmanager
def _budgetd(
    folder: Path, nodes: int, on_error: Callable[[LocalCluster], None]
) -> Iterator[LocalCluster]:
    """A started, ready cluster, stopped (by PID) at the end; ``on_error`` sees it first when
    something raised."""
    cluster = LocalCluster.on_free_ports(folder, nodes)
    cluster.log_level = "warning"
    try:
        for node in cluster.nodes:
            cluster.start(node.node_id)
        if cluster.wait_ready(READY_TIMEOUT_S):
            raise RuntimeError("the cluster did not become ready:\n" + cluster.logs())
        yield cluster
    except BaseException:
        on_error(cluster)
        raise
    finally:
        cluster.stop_all()


class Bench:
    """One run of the plan."""

    def __init__(self, plan: Plan, gens: LoadGens, folder: Path) -> None:
        self.plan = plan
        self.gens = gens
        self.folder = folder
        self.seed = 0
        #: Each sweep as it grows, so an aborted run still writes the points it measured.
        self.partial: dict[int, dict[str, Any]] = {}
        #: etcd's side of the paired runs (--vs-etcd), as it grows.
        self.etcd_out: dict[str, Any] | None = None

    def keep_logs(self, cluster: LocalCluster, name: str) -> None:
        """Copy the nodes' logs next to the results (the data dir is deleted at the end)."""
        folder = self.plan.args.out / f"logs-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for node in cluster.nodes:
            if node.log.exists():
                shutil.copy(node.log, folder / node.log.name)
        print(f"  node logs kept in {folder}", flush=True)

    def _target(self, cluster: LocalCluster) -> dict[str, Any]:
        leader = cluster.node(_leader(cluster))
        return {
            "store": "budgetd",
            "url": leader.url,
            "leader_id": leader.node_id,
            "endpoints": [node.http_address for node in cluster.nodes],
            "token": cluster.token,
        }

    def create_set(self, target: dict[str, Any], name: str, size: int) -> float:
        """The root ``name`` with ``size`` children ``name:c<i>``; seconds it took."""
        began = time.monotonic()
        root = {"currency": "USD", "timezone": "UTC", "total_budget_micros": ROOT_BUDGET_MICROS}
        deadline = began + 60.0 + size / 100
        self.gens.ask(
            [{"cmd": "put_campaigns", **target, "campaigns": [(name, root)]}], deadline=deadline
        )
        children: list[tuple[str, dict[str, Any]]] = [
            (f"{name}:c{index}", {}) for index in range(size)
        ]
        parts = _chunks(children, len(self.gens.processes))
        self.gens.ask(
            [{"cmd": "put_campaigns", **target, "campaigns": part} for part in parts],
            deadline=deadline,
        )
        return time.monotonic() - began

    def point(
        self,
        *,
        target: dict[str, Any],
        pids: dict[str, int],
        workload: str,
        campaign_set: str,
        campaigns: int,
        concurrency: int,
        tag: str,
        idle_pids: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """One run of one point: the load generators' tallies merged, the leader's counters and
        the processes' CPU over the window, RSS after it, and the conservation check;
        ``idle_pids`` (the other store's processes, not under load) have their CPU over the
        window reported apart, as ``idle_cpu_s_per_s``."""
        budgetd = target["store"] == "budgetd"
        token = target.get("token", "")
        money_before = _money(target["url"], token, campaign_set) if budgetd else None
        start_at = time.monotonic() + DISPATCH_S + self.plan.warmup_s
        end_at = start_at + self.plan.duration_s
        shares = _split(concurrency, min(len(self.gens.processes), concurrency))
        messages: list[dict[str, Any] | None] = []
        for index, share in enumerate(shares):
            self.seed += 1
            messages.append(
                {
                    "cmd": "run",
                    **target,
                    "workload": workload,
                    "campaign_prefix": campaign_set,
                    "campaigns": campaigns,
                    "concurrency": share,
                    "start_at": start_at,
                    "end_at": end_at,
                    "tag": f"{tag}w{index}",
                    "seed": self.seed,
                    "batch_ops": self.plan.args.batch_ops,
                    "bid_rate_per_s": self.plan.args.bid_rate,
                }
            )
        for pipe, message in zip(self.gens.pipes, messages, strict=False):
            if message is not None:
                pipe.send(message)
        all_pids = {**pids, **{f"loadgen{i}": pid for i, pid in enumerate(self.gens.pids)}}
        all_pids |= {f"{_IDLE}{name}": pid for name, pid in (idle_pids or {}).items()}
        # Both edges read in the same order (CPU, clock, /metrics), so the deltas span the same
        # interval up to the difference between two scrapes.
        time.sleep(max(0.0, start_at - time.monotonic()))
        use_0 = {name: observe.usage(pid) for name, pid in all_pids.items()}
        t0 = time.monotonic()
        counters_0 = self._counters(target) if budgetd else None
        time.sleep(max(0.0, end_at - time.monotonic()))
        use_1 = {name: observe.usage(pid) for name, pid in all_pids.items()}
        t1 = time.monotonic()
        counters_1 = self._counters(target) if budgetd else None
        answers = []
        for pipe, message in zip(self.gens.pipes, messages, strict=False):
            if message is None:
                continue
            if not pipe.poll(max(0.0, end_at + ANSWER_GRACE_S - time.monotonic())):
                raise RuntimeError(f"a load generator did not finish {workload} in time")
            answer = pipe.recv()
            if "failed" in answer:
                raise RuntimeError(f"load generator failed {workload}: {answer['failed']}")
            answers.append(answer)
        money_after = _money(target["url"], token, campaign_set) if budgetd else None
        merged = report.merge(answers, self.plan.duration_s)
        seconds = t1 - t0
        spans = {
            name: (before, after)
            for name, before in use_0.items()
            if before is not None and (after := use_1.get(name)) is not None
        }
        cpu = {name: (b.cpu_s - a.cpu_s) / seconds for name, (a, b) in spans.items()}
        merged["cpu_s_per_s"] = {k: v for k, v in cpu.items() if not k.startswith(_IDLE)}
        # The kernel's part of each node's CPU, and the minor faults behind much of it.
        merged["system_s_per_s"] = {
            name: (b.system_s - a.system_s) / seconds
            for name, (a, b) in spans.items()
            if name in pids
        }
        merged["minor_faults_per_s"] = {
            name: (b.minor_faults - a.minor_faults) / seconds
            for name, (a, b) in spans.items()
            if name in pids
        }
        if idle_pids:
            merged["idle_cpu_s_per_s"] = {
                k.removeprefix(_IDLE): v for k, v in cpu.items() if k.startswith(_IDLE)
            }
        merged["leader_id"] = target.get("leader_id")
        merged["rss_bytes"] = {name: observe.rss_bytes(pid) for name, pid in pids.items()}
        if counters_0 is not None and counters_1 is not None:
            merged["leader"] = counters_0.delta(counters_1, seconds)
        if money_before is not None and money_after is not None:
            merged["conservation"] = report.conservation(
                workload, merged, before=money_before, after=money_after
            )
        return merged

    def _counters(self, target: dict[str, Any]) -> observe.LeaderCounters | None:
        try:
            return observe.LeaderCounters.of(
                observe.parse_metrics(_get_text(target["url"] + "/metrics"))
            )
        except OSError:
            return None

    def sweep(self, nodes: int) -> dict[str, Any]:
        """Every workload x set x concurrency on one fresh cluster of ``nodes``."""
        plan = self.plan
        out: dict[str, Any] = {"nodes": nodes, "setup_s": {}, "points": []}
        self.partial[nodes] = out
        folder = Path(tempfile.mkdtemp(prefix=f"budgetd-{nodes}n-", dir=self.folder))
        with _budgetd(folder, nodes, lambda c: self.keep_logs(c, f"sweep-{nodes}n")) as cluster:
            target = self._target(cluster)
            pids = {node.node_id: node.process.pid for node in cluster.nodes if node.process}
            out["leader_at_start"] = target["leader_id"]
            for name in plan.sets:
                out["setup_s"][name] = self.create_set(target, name, plan.set_size(name))
                print(
                    f"  {nodes} nodes: {name} set of {plan.set_size(name):,} campaigns in "
                    f"{out['setup_s'][name]:.1f} s",
                    flush=True,
                )
            out["rss_bytes_after_setup"] = {n: observe.rss_bytes(p) for n, p in pids.items()}
            paired = plan.args.vs_etcd and nodes == min(plan.args.nodes)
            for workload in plan.args.workloads:
                for name in plan.sets:
                    if paired and (workload, name) == ("reserve", "hot"):
                        print("  etcd, 3 members, alongside: reserve/hot interleaved", flush=True)
                        self.interleaved(cluster, pids, nodes, out["points"])
                        continue
                    for concurrency in plan.concurrency:
                        runs = []
                        for repeat in range(plan.repeats):
                            target = self._target(cluster)  # leadership may have moved
                            tag = (
                                f"n{nodes}{workload[:2]}{name[0]}{concurrency}r{repeat}{_now_tag()}"
                            )
                            runs.append(
                                self.point(
                                    target=target,
                                    pids=pids,
                                    workload=workload,
                                    campaign_set=name,
                                    campaigns=plan.set_size(name),
                                    concurrency=concurrency,
                                    tag=tag,
                                )
                            )
                        point = report.summarize(runs)
                        point |= {
                            "workload": workload,
                            "campaigns": name,
                            "concurrency": concurrency,
                        }
                        out["points"].append(point)
                        print("  " + report.one_line(nodes, point), flush=True)
            if plan.args.failover:
                try:
                    out["failover_s"] = [
                        _failover(cluster, f"{plan.sets[0]}:c0", repeat)
                        for repeat in range(plan.repeats)
                    ]
                except RuntimeError as exc:  # the sweep's figures stand; say what went wrong
                    out["failover_error"] = str(exc)
                    print(f"  {nodes} nodes: failover not measured: {exc}", flush=True)
                    self.keep_logs(cluster, f"failover-{nodes}n")
                else:
                    out["failover_s_median"] = statistics.median(out["failover_s"])
                    print(
                        f"  {nodes} nodes: kill -9 of the leader to the first acknowledged "
                        f"reserve: median {out['failover_s_median']:.2f} s of {out['failover_s']}",
                        flush=True,
                    )
        shutil.rmtree(folder, ignore_errors=True)
        return out

    def reservations(self, nodes: int) -> list[dict[str, Any]]:
        """Open-reservation scaling on a fresh cluster: pre-fill, then reserve at
        FILL_CONCURRENCY, at each size."""
        plan = self.plan
        rows: list[dict[str, Any]] = []
        folder = Path(tempfile.mkdtemp(prefix=f"budgetd-fill-{nodes}n-", dir=self.folder))
        with _budgetd(folder, nodes, lambda c: self.keep_logs(c, f"fill-{nodes}n")) as cluster:
            target = self._target(cluster)
            pids = {node.node_id: node.process.pid for node in cluster.nodes if node.process}
            self.create_set(target, "fill", FILL_CAMPAIGNS)
            time.sleep(1.0)
            rss_0 = {n: observe.rss_bytes(p) for n, p in pids.items()}
            open_now = 0
            for size in sorted(plan.args.reservations):
                began = time.monotonic()
                missing = max(0, size - open_now)
                shares = _split(missing, len(self.gens.processes))
                answers = self.gens.ask(
                    [
                        {
                            "cmd": "prefill",
                            **target,
                            "campaign_prefix": "fill",
                            "campaigns": FILL_CAMPAIGNS,
                            "count": share,
                            "batch_ops": 500,
                            "tag": f"f{size}w{index}",
                            "seed": size + index,
                        }
                        for index, share in enumerate(shares)
                    ],
                    deadline=time.monotonic() + 120.0 + missing / 1_000,
                )
                open_now += sum(answer["ops"].get("reserve", 0) for answer in answers)
                fill_s = time.monotonic() - began
                runs = []
                for repeat in range(plan.repeats):
                    run = self.point(
                        target=target,
                        pids=pids,
                        workload="reserve",
                        campaign_set="fill",
                        campaigns=FILL_CAMPAIGNS,
                        concurrency=FILL_CONCURRENCY,
                        tag=f"n{nodes}s{size}r{repeat}{_now_tag()}",
                    )
                    open_now += run["ops"].get("reserve", 0)
                    runs.append(run)
                row = report.summarize(runs)
                row |= {
                    "reservations_target": size,
                    "reservations_open": open_now,
                    "fill_s": fill_s,
                    "rss_bytes_empty": rss_0,
                    "concurrency": FILL_CONCURRENCY,
                }
                row["rss_bytes_per_reservation"] = {
                    node: (row["rss_bytes"][node] - rss_0[node]) / open_now
                    for node in pids
                    if row["rss_bytes"].get(node) and rss_0.get(node)
                }
                rows.append(row)
                print("  " + report.one_line(nodes, row, label=f"open {open_now:,}"), flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        return rows

    def interleaved(
        self, cluster: LocalCluster, pids: dict[str, int], nodes: int, points: list[dict[str, Any]]
    ) -> None:
        """The reserve workload over the hot set, budgetd (``cluster``) and a 3-member etcd
        started beside it, in pairs: for each concurrency and repeat, one run of each back to
        back, the first alternating between repeats (report.pair_first). Each run has its own
        warm-up; the other store's CPU over its window is read too. budgetd's points go to
        ``points``, etcd's to ``self.etcd_out`` (with its conservation check at the end)."""
        plan = self.plan
        etcd_out: dict[str, Any] = {"budgetd_nodes": nodes, "interleaved": True, "points": []}
        self.etcd_out = etcd_out
        folder = Path(tempfile.mkdtemp(prefix="etcd-", dir=self.folder))
        etcd = EtcdCluster(folder)
        try:
            etcd.start()
            _wait_etcd(etcd)
            url = _etcd_leader(etcd)
            etcd_target = {"store": "etcd", "url": url}
            etcd_pids = etcd.pids
            campaigns = [f"hot:c{index}" for index in range(HOT_CAMPAIGNS)]
            self.gens.ask(
                [
                    {
                        "cmd": "etcd_budgets",
                        "url": url,
                        "campaigns": part,
                        "budget_micros": ETCD_BUDGET_MICROS,
                    }
                    for part in _chunks(campaigns, len(self.gens.processes))
                ],
                deadline=time.monotonic() + 60.0,
            )
            granted = 0
            unknown = 0
            for concurrency in plan.concurrency:
                runs: dict[str, list[dict[str, Any]]] = {"budgetd": [], "etcd": []}
                for repeat in range(plan.repeats):
                    first = report.pair_first(repeat)
                    for store in (first, "etcd" if first == "budgetd" else "budgetd"):
                        ours_now = store == "budgetd"
                        run = self.point(
                            # leadership may have moved
                            target=self._target(cluster) if ours_now else etcd_target,
                            pids=pids if ours_now else etcd_pids,
                            idle_pids=etcd_pids if ours_now else pids,
                            workload="reserve" if ours_now else "etcd_reserve",
                            campaign_set="hot",
                            campaigns=HOT_CAMPAIGNS,
                            concurrency=concurrency,
                            tag=(f"n{nodes}reh" if ours_now else "e")
                            + f"{concurrency}r{repeat}{_now_tag()}",
                        )
                        if not ours_now:
                            granted += run["granted_micros"]
                            unknown += run["unknown"]
                        runs[store].append(run | {"repeat": repeat, "first": first})
                where = {"workload": "reserve", "campaigns": "hot", "concurrency": concurrency}
                ours = report.summarize(runs["budgetd"]) | where
                theirs = report.summarize(runs["etcd"]) | where
                points.append(ours)
                etcd_out["points"].append(theirs)
                print("  " + report.one_line(nodes, ours), flush=True)
                print("  " + report.one_line(0, theirs, label="etcd reserve/hot"), flush=True)
                print("  " + report.pair_line(report.ratio_row(ours, theirs, nodes)), flush=True)
            audit = self.gens.ask(
                [{"cmd": "etcd_audit", "url": url, "campaigns": campaigns}],
                deadline=time.monotonic() + 120.0,
            )[0]
            taken = len(campaigns) * ETCD_BUDGET_MICROS - audit["remaining_micros"]
            etcd_out["conservation"] = {
                "granted_micros": granted,
                "taken_micros": taken,
                "reservation_records_micros": audit["records_micros"],
                "reservation_records": audit["records"],
                "unknown_outcomes": unknown,
                "holds": (granted == taken == audit["records_micros"]) if unknown == 0 else None,
            }
            print(
                "  etcd conservation " + report.verdict(etcd_out["conservation"]["holds"]),
                flush=True,
            )
        finally:
            etcd.stop()
            shutil.rmtree(folder, ignore_errors=True)


def _wait_etcd(cluster: EtcdCluster) -> None:
    deadline = time.monotonic() + 30.0
    body = json.dumps({"key": "cmVhZHk="}).encode()
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(cluster.client_urls[0] + "/v3/kv/range", data=body)
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("etcd did not become ready:\n" + cluster.logs())


def _etcd_leader(cluster: EtcdCluster) -> str:
    for url in cluster.client_urls:
        request = urllib.request.Request(url + "/v3/maintenance/status", data=b"{}")
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.loads(response.read())
        if body.get("leader") == body.get("header", {}).get("member_id"):
            return url
    raise RuntimeError("etcd has no leader")


def main(argv: list[str] | None = None) -> int:
    plan = _plan(argv)
    print(plan.describe(), flush=True)
    if plan.args.dry_run:
        return 0
    # SIGTERM (a supervisor, `kill PID`) unwinds like Ctrl-C: every cluster, etcd and load
    # generator this run started is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupted)
    refusal = _busy(plan)
    if refusal:
        print(refusal, file=sys.stderr)
        return 3
    if plan.args.vs_etcd:
        from benchlib.etcd import ensure_etcd

        ensure_etcd()
    out_dir: Path = plan.args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    began = time.monotonic()
    result: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "scripts/bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "options": _options(plan),
        "estimate_s": plan.estimate_s(),
    }
    with tempfile.TemporaryDirectory(prefix=".bench-data-", dir=out_dir) as data:
        result["machine"] = observe.machine(data)
        gens = LoadGens(plan.args.loadgens)
        bench = Bench(plan, gens, Path(data))
        result["budgetd"] = {}
        try:
            for nodes in plan.args.nodes:
                print(f"budgetd, {nodes} nodes", flush=True)
                result["budgetd"][str(nodes)] = bench.sweep(nodes)
                if plan.args.reservations:
                    print(f"budgetd, {nodes} nodes, open reservations", flush=True)
                    result["budgetd"][str(nodes)]["reservations"] = bench.reservations(nodes)
        except (RuntimeError, OSError) as exc:
            # The points measured so far are still written; the run fails.
            result["aborted"] = f"{type(exc).__name__}: {exc}"
            print(f"scripts/bench: run aborted: {result['aborted']}", file=sys.stderr)
            for nodes, sweep in bench.partial.items():
                result["budgetd"].setdefault(str(nodes), sweep)
        finally:
            gens.close()
        if bench.etcd_out is not None:
            result["etcd"] = bench.etcd_out
            result["vs_etcd"] = report.ratios(result)
    result["elapsed_s"] = time.monotonic() - began
    result["loop"] = "uvloop" if _has_uvloop() else "asyncio"
    paths = report.write(result, out_dir / f"bench-{stamp}")
    print(report.markdown(result))
    for path in paths:
        print(f"wrote {path}")
    failed = report.failures(result)
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


def _interrupted(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _options(plan: Plan) -> dict[str, Any]:
    options = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(plan.args).items()
    }
    options |= {
        "concurrency": plan.concurrency,
        "repeats": plan.repeats,
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "cold_campaigns": plan.cold_campaigns,
        "hot_campaigns": HOT_CAMPAIGNS,
        "amount_micros": loadgen.AMOUNT_MICROS,
        "ttl_ms": loadgen.TTL_MS,
        "mix": {"reserve": loadgen.MIX_RESERVE, "commit": loadgen.MIX_COMMIT},
        "wallet": {"win_share": loadgen.WIN_SHARE, "clearing_ratio": loadgen.CLEARING_RATIO},
    }
    return options
