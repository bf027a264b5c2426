"""A node's Prometheus metrics: Raft, disk, proposer, ledger tables and per-campaign money, read
from the node's state when /metrics is scraped (`NodeCollector`), so no request pays for them.

Imports prometheus_client, the ledger's read views and the replication layer's `RaftStats`;
never pysyncobj, aiohttp or the API. The HTTP request metrics live in budgetd.api._metrics and
share the node's registry (`node_registry`).

Every series built here carries ``node`` (the member id). Bounded cardinality: per-campaign
gauges exist for root campaigns (advertisers) in id order up to ``[metrics]
campaign_series_max`` (default 500), plus the ids listed in ``[metrics] campaigns``; every
other root is summed into
``campaign="_other"``, one series per currency. With 100,000 campaigns a node exposes at most
``campaign_series_max + 1 + currencies`` series per campaign gauge. Campaign figures are read
from the ledger this node has applied, a page of 1,000 roots per hold of the ledger lock, at most
every ``[metrics] campaign_refresh_ms`` (the walk over 100,000 roots took 0.4 s on 2 vCPUs,
docs/slo.md; /metrics runs the collectors off the event loop).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from budgetd import gctune
from budgetd.distribution import DistributionSnapshot
from budgetd.ledger import DayFigures, Ledger
from budgetd.replication import RaftStats
from budgetd.settings import MetricsSettings

__all__ = ["OTHER", "ROLES", "NodeCollector", "NodeView", "ProposerFigures", "node_registry"]

#: The campaign label of the roots beyond the series limit, summed per currency.
OTHER: Final = "_other"
#: Every Raft role a node reports (one 0/1 series each).
ROLES: Final = ("follower", "candidate", "leader", "stopped")
#: Roots read per hold of the ledger lock.
PAGE: Final = 1_000

T = TypeVar("T")


class NodeView(Protocol):
    """What the collector reads from a node (budgetd.node.Node provides it)."""

    def raft_stats(self) -> RaftStats: ...

    def proposer_stats(self) -> ProposerFigures: ...

    def read(self, reader: Callable[[Ledger], T]) -> T: ...


@dataclass(frozen=True, slots=True)
class ProposerFigures:
    queued_ops: int
    inflight_entries: int
    entries_ok: int
    entries_failed: int
    entries_unknown: int
    requests_timed_out: int
    requests_rejected_queue_full: int
    batch_ops: DistributionSnapshot
    batch_bytes: DistributionSnapshot
    #: Wall clock minus the last stamp (budgetd.stamps), and stamps held inside the band.
    clock_skew_ms: int = 0
    stamps_held: int = 0
    #: Ops in log entries in flight, and ops of the requests refused for proposer.queue_ops_max.
    inflight_ops: int = 0
    ops_rejected_queue_full: int = 0


def node_registry(node: NodeView, node_id: str, settings: MetricsSettings) -> CollectorRegistry:
    """A fresh registry holding the node's collector (the API adds its request metrics)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(node, node_id, settings))
    return registry


def _root_page(ledger: Ledger, *, after: str | None) -> list[DayFigures]:
    return ledger.day_figures(ledger.root_campaign_ids(after=after, limit=PAGE))


def _histogram(
    name: str, documentation: str, node_id: str, snapshot: DistributionSnapshot
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["node"])
    family.add_metric(
        [node_id],
        [(_bound(bound), count) for bound, count in snapshot.buckets],
        snapshot.sum,
    )
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Gauges:
    """Gauge families labelled ``node`` (+ more), built in one pass."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.families: list[Metric] = []

    def gauge(self, name: str, documentation: str, value: float, **labels: str) -> None:
        family = GaugeMetricFamily(name, documentation, labels=["node", *labels])
        family.add_metric([self.node_id, *labels.values()], value)
        self.families.append(family)

    def counter(self, name: str, documentation: str, value: float) -> None:
        family = CounterMetricFamily(name, documentation, labels=["node"])
        family.add_metric([self.node_id], value)
        self.families.append(family)


@dataclass(slots=True)
class _Sum:
    """The figures of the roots folded into ``_other`` for one currency."""

    campaigns: int = 0
    spent: int = 0
    held: int = 0
    overspend: int = 0
    late: int = 0
    daily: int = 0
    plan: int = 0
    paced_spent: int = 0


_CAMPAIGN_GAUGES: Final = (
    ("spent_today_micros", "Spend of the campaign's subtree on its current local day."),
    ("held_micros", "Money held by open reservations of the subtree today."),
    ("available_micros", "What every level of the campaign's path still allows (capped only)."),
    ("overspend_micros", "Spend above the daily cap today (late commits), subtree."),
    ("late_commits_today", "Commits that arrived after their reservation expired, today."),
    ("daily_budget_micros", "The campaign's own daily budget (campaigns with one)."),
    ("plan_micros", "What the pacing plan allows to be spent by now (paced campaigns)."),
    (
        "pacing_error_micros",
        "Spend today minus the pacing plan by now (paced campaigns; positive: ahead of plan).",
    ),
)


class NodeCollector(Collector):
    """Builds every node-level metric from the node's state, at scrape time."""

    def __init__(self, node: NodeView, node_id: str, settings: MetricsSettings) -> None:
        self._node = node
        self._node_id = node_id
        self._settings = settings
        self._started_s = time.time()
        self._campaign_lock = threading.Lock()
        self._campaign_cache: tuple[float, list[Metric]] | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked: the families depend on the node's state

    def collect(self) -> Iterator[Metric]:
        yield from self._raft(self._node.raft_stats())
        yield from self._proposer(self._node.proposer_stats())
        yield from self._ledger()
        yield from self._gc(gctune.node_gc.figures())
        yield from self._cached_campaigns()

    # -- Raft, disk, apply ----------------------------------------------------------------------

    def _raft(self, stats: RaftStats) -> list[Metric]:
        g = _Gauges(self._node_id)
        node = self._node_id
        role = GaugeMetricFamily(
            "budgetd_raft_role",
            "1 for this node's current Raft role, 0 for the others.",
            labels=["node", "role"],
        )
        for name in ROLES:
            role.add_metric([node, name], 1.0 if stats.role == name else 0.0)
        g.families.append(role)
        g.gauge("budgetd_raft_term", "The Raft term this node is in.", stats.term)
        g.gauge(
            "budgetd_raft_commit_index",
            "The highest log index this node knows committed.",
            stats.commit_index,
        )
        g.gauge(
            "budgetd_raft_applied_index",
            "The log index of the last entry applied to the ledger.",
            stats.applied_index,
        )
        g.gauge(
            "budgetd_raft_apply_lag_entries",
            "Committed entries this node has not applied yet (commit index - applied index).",
            max(0, stats.commit_index - stats.applied_index),
        )
        g.gauge(
            "budgetd_raft_leader_known",
            "1 when this node knows a leader.",
            1.0 if stats.leader_known else 0.0,
        )
        g.gauge(
            "budgetd_raft_members",
            "Members of the cluster as this node knows them (itself too).",
            1 + len(stats.peers),
        )
        if stats.quorum is not None:
            g.gauge(
                "budgetd_raft_quorum",
                "Leader only: 1 while a majority (itself included) answered within the election "
                "timeout; 0 on a leader that lost its quorum (it steps down after "
                "raft.leader_fallback_ms).",
                1.0 if stats.quorum else 0.0,
            )
        connected = GaugeMetricFamily(
            "budgetd_raft_peer_connected",
            "1 while this node's link to the peer is up.",
            labels=["node", "peer"],
        )
        lag = GaugeMetricFamily(
            "budgetd_raft_replication_lag_entries",
            "Leader only: entries each peer is behind the leader's commit index (its match index).",
            labels=["node", "peer"],
        )
        for peer in stats.peers:
            peer_id = peer.member_id or peer.raft_address
            connected.add_metric([node, peer_id], 1.0 if peer.connected else 0.0)
            if peer.lag_entries is not None:
                lag.add_metric([node, peer_id], peer.lag_entries)
        g.families += [connected, lag]
        snapshot = stats.snapshot
        saved_s = stats.dump_mtime_s if stats.dump_mtime_s is not None else self._started_s
        g.gauge(
            "budgetd_snapshot_age_seconds",
            "Seconds since the node's dump (snapshot) file was written or installed; since the "
            "node started when it has none.",
            max(0.0, time.time() - saved_s),
        )
        g.gauge("budgetd_snapshot_bytes", "Size of the node's dump file.", snapshot["bytes"] or 0)
        g.gauge(
            "budgetd_snapshot_index", "Log index the node's dump holds.", snapshot["index"] or 0
        )
        g.gauge(
            "budgetd_snapshot_last_duration_seconds",
            "How long writing the last dump took (fork to rename).",
            (snapshot["last_duration_ms"] or 0) / 1000,
        )
        g.counter(
            "budgetd_snapshots_written", "Dumps written by this process.", snapshot["written"]
        )
        g.counter("budgetd_snapshot_failures", "Dumps that failed.", snapshot["failed"])
        g.counter(
            "budgetd_snapshots_installed", "Dumps installed from the leader.", snapshot["installed"]
        )
        g.gauge("budgetd_journal_bytes", "Size of the Raft journal file.", stats.journal_bytes)
        g.gauge(
            "budgetd_data_dir_free_bytes",
            "Bytes free for unprivileged users on the file system of node.data_dir.",
            stats.data_dir_free_bytes,
        )
        g.gauge(
            "budgetd_data_dir_size_bytes",
            "Size of the file system of node.data_dir.",
            stats.data_dir_size_bytes,
        )
        g.gauge(
            "budgetd_apply_last_seconds",
            "How long the ledger took to apply the last log entry.",
            stats.last_apply_s,
        )
        g.counter("budgetd_entries_applied", "Log entries applied.", stats.entries_applied)
        replayed = CounterMetricFamily(
            "budgetd_replayed_ops",
            "Ops answered from their idempotency key (retries, duplicate commits), by op.",
            labels=["node", "op"],
        )
        for op, count in sorted(stats.replayed_ops.items()):
            replayed.add_metric([node, op], count)
        g.families.append(replayed)
        g.families.append(
            _histogram(
                "budgetd_journal_sync_seconds",
                "Time of each sync of the Raft journal to disk (before acks and commits).",
                node,
                stats.sync_seconds,
            )
        )
        return g.families

    # -- proposer -------------------------------------------------------------------------------

    def _proposer(self, p: ProposerFigures) -> list[Metric]:
        g = _Gauges(self._node_id)
        g.gauge("budgetd_proposer_queue_ops", "Ops waiting to be proposed.", p.queued_ops)
        g.gauge(
            "budgetd_proposer_inflight_entries",
            "Log entries proposed and not yet answered.",
            p.inflight_entries,
        )
        g.gauge(
            "budgetd_proposer_inflight_ops",
            "Ops in log entries proposed and not yet answered (with the queued ops, what "
            "proposer.queue_ops_max bounds).",
            p.inflight_ops,
        )
        entries = CounterMetricFamily(
            "budgetd_proposer_entries",
            "Log entries proposed by this node, by outcome: ok (applied), definite (not "
            "applied: 503), unknown (maybe applied: 504).",
            labels=["node", "outcome"],
        )
        for outcome, count in (
            ("ok", p.entries_ok),
            ("definite", p.entries_failed),
            ("unknown", p.entries_unknown),
        ):
            entries.add_metric([self._node_id, outcome], count)
        g.families.append(entries)
        g.counter(
            "budgetd_proposer_requests_timed_out",
            "Requests answered 504 because the log did not answer within "
            "proposer.request_timeout_ms.",
            p.requests_timed_out,
        )
        g.counter(
            "budgetd_proposer_requests_rejected",
            "Requests refused (503, overloaded) because the ops queued and in flight would "
            "pass proposer.queue_ops_max.",
            p.requests_rejected_queue_full,
        )
        g.counter(
            "budgetd_proposer_ops_rejected",
            "Ops of the requests refused (503, overloaded) for proposer.queue_ops_max.",
            p.ops_rejected_queue_full,
        )
        g.gauge(
            "budgetd_clock_skew_seconds",
            "This node's wall clock minus the time it last stamped on a log entry (0 while they "
            "agree; budgetd.stamps holds stamps to the pace of real time).",
            p.clock_skew_ms / 1000,
        )
        g.counter(
            "budgetd_stamps_held",
            "Log entries stamped off this node's wall clock because it ran outside the band "
            "around real time.",
            p.stamps_held,
        )
        g.families.append(
            _histogram(
                "budgetd_proposer_batch_ops",
                "Ops per log entry proposed.",
                self._node_id,
                p.batch_ops,
            )
        )
        g.families.append(
            _histogram(
                "budgetd_proposer_batch_bytes",
                "Encoded bytes per log entry proposed.",
                self._node_id,
                p.batch_bytes,
            )
        )
        return g.families

    # -- garbage collector ----------------------------------------------------------------------

    def _gc(self, figures: gctune.GcFigures) -> list[Metric]:
        g = _Gauges(self._node_id)
        pauses = HistogramMetricFamily(
            "budgetd_gc_pause_seconds",
            "How long each cyclic garbage collection of the process held the interpreter lock "
            "(the Raft thread and the event loop wait meanwhile), by generation.",
            labels=["node", "generation"],
        )
        for generation, snapshot in enumerate(figures.pauses):
            pauses.add_metric(
                [self._node_id, str(generation)],
                [(_bound(bound), count) for bound, count in snapshot.buckets],
                snapshot.sum,
            )
        g.families.append(pauses)
        g.gauge(
            "budgetd_gc_frozen_objects",
            "Objects moved out of the collector's sight (long-lived: the ledger's reservations "
            "and campaigns); it should follow the ledger's size.",
            figures.frozen_objects,
        )
        return g.families

    # -- ledger ---------------------------------------------------------------------------------

    def _ledger(self) -> list[Metric]:
        sizes, limits = self._node.read(lambda ledger: (ledger.stats(), ledger.limits.to_plain()))
        g = _Gauges(self._node_id)
        for key, documentation in (
            ("campaigns", "Campaigns in the ledger."),
            ("open_reservations", "Reservations open (holding money)."),
            ("ended_reservations", "Ended reservations kept for late commits and reads."),
            ("idempotency_keys", "Idempotency keys remembered."),
        ):
            g.gauge(f"budgetd_ledger_{key}", documentation, sizes[key])
        g.gauge(
            "budgetd_ledger_time_seconds",
            "The ledger's clock (the last batch timestamp applied).",
            sizes["now_ms"] / 1000,
        )
        family = GaugeMetricFamily(
            "budgetd_ledger_limit",
            "The ledger's limits (replicated; PATCH /v1/admin/limits changes them): "
            'budgetd_ledger_<table> / on(node) budgetd_ledger_limit{limit="<table>_max"} is '
            "how full a table is. Retentions and ttl_ms_max in milliseconds.",
            labels=["node", "limit"],
        )
        for name, value in limits.items():
            family.add_metric([self._node_id, name], value)
        g.families.append(family)
        return g.families

    def _cached_campaigns(self) -> list[Metric]:
        """The campaign families, rebuilt at most every metrics.campaign_refresh_ms (one walk
        at a time, however many scrapers)."""
        with self._campaign_lock:
            now_s = time.monotonic()
            cache = self._campaign_cache
            if cache is None or now_s - cache[0] >= self._settings.campaign_refresh_ms / 1000:
                cache = self._campaign_cache = (now_s, self._campaigns())
            return cache[1]

    def _campaigns(self) -> list[Metric]:
        settings = self._settings
        listed = list(settings.campaigns)
        shown: list[DayFigures] = self._node.read(lambda ledger: ledger.day_figures(listed))
        seen = {figures.campaign_id for figures in shown}
        room = settings.campaign_series_max - len(shown)
        other: dict[str, _Sum] = {}
        after: str | None = None
        while True:
            page = self._node.read(functools.partial(_root_page, after=after))
            if not page:
                break
            after = page[-1].campaign_id
            for figures in page:
                if figures.campaign_id in seen:
                    continue
                if room > 0:
                    shown.append(figures)
                    room -= 1
                    continue
                total = other.setdefault(figures.currency, _Sum())
                total.campaigns += 1
                total.spent += figures.spent_today_micros
                total.held += figures.held_micros
                total.overspend += figures.overspend_micros
                total.late += figures.late_commits_today
                total.daily += figures.daily_budget_micros or 0
                if figures.plan_micros is not None:
                    total.plan += figures.plan_micros
                    total.paced_spent += figures.spent_today_micros
            if len(page) < PAGE:
                break
        families = {
            key: GaugeMetricFamily(
                f"budgetd_campaign_{key}", documentation, labels=["node", "campaign", "currency"]
            )
            for key, documentation in _CAMPAIGN_GAUGES
        }
        node = self._node_id
        for f in shown:
            labels = [node, f.campaign_id, f.currency]
            families["spent_today_micros"].add_metric(labels, f.spent_today_micros)
            families["held_micros"].add_metric(labels, f.held_micros)
            if f.available_micros is not None:
                families["available_micros"].add_metric(labels, f.available_micros)
            families["overspend_micros"].add_metric(labels, f.overspend_micros)
            families["late_commits_today"].add_metric(labels, f.late_commits_today)
            if f.daily_budget_micros is not None:
                families["daily_budget_micros"].add_metric(labels, f.daily_budget_micros)
            if f.plan_micros is not None:
                families["plan_micros"].add_metric(labels, f.plan_micros)
                families["pacing_error_micros"].add_metric(
                    labels, f.spent_today_micros - f.plan_micros
                )
        folded = GaugeMetricFamily(
            "budgetd_campaign_series_folded",
            f"Root campaigns summed into campaign={OTHER!r} (beyond metrics.campaign_series_max).",
            labels=["node", "currency"],
        )
        for currency, total in sorted(other.items()):
            labels = [node, OTHER, currency]
            families["spent_today_micros"].add_metric(labels, total.spent)
            families["held_micros"].add_metric(labels, total.held)
            families["overspend_micros"].add_metric(labels, total.overspend)
            families["late_commits_today"].add_metric(labels, total.late)
            families["daily_budget_micros"].add_metric(labels, total.daily)
            families["plan_micros"].add_metric(labels, total.plan)
            families["pacing_error_micros"].add_metric(labels, total.paced_spent - total.plan)
            folded.add_metric([node, currency], total.campaigns)
        return [*families.values(), folded]
