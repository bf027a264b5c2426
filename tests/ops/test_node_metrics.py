"""budgetd.metrics: per-campaign series stay bounded (roots up to campaign_series_max, listed ids,
the rest summed into campaign="_other" per currency), figures come from the applied ledger, and
the ledger's read views behind them page through every root."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from budgetd.distribution import Distribution
from budgetd.ledger import Ledger, codes
from budgetd.metrics import OTHER, ProposerFigures, node_registry
from budgetd.replication import PeerStats, RaftStats
from budgetd.settings import MetricsSettings

T = TypeVar("T")
NOW_MS = 1_790_000_000_000


def _put(campaign_id: str, *, currency: str = "USD", daily: int = 1_000_000) -> dict[str, Any]:
    return {
        "op": "put_campaign",
        "campaign_id": campaign_id,
        "currency": currency,
        "timezone": "UTC",
        "daily_budget_micros": daily,
        "pacing": {"mode": "even"},
    }


def _spend(campaign_id: str, amount: int, key: str) -> dict[str, Any]:
    return {
        "op": "spend",
        "campaign_id": campaign_id,
        "amount_micros": amount,
        "bidder_id": "b1",
        "idempotency_key": key,
    }


class _AppliedNode:
    """A node as the collector sees it: a real ledger with ops applied, Raft figures as data."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.reads = 0

    def raft_stats(self) -> RaftStats:
        return RaftStats(
            role="leader",
            term=3,
            commit_index=40,
            applied_index=38,
            leader_known=True,
            quorum=True,
            peers=(PeerStats("n2", "127.0.0.1:7002", True, 5),),
            snapshot={
                "bytes": 10,
                "index": 30,
                "last_duration_ms": 5.0,
                "written": 1,
                "failed": 0,
                "installed": 0,
            },
            journal_bytes=4096,
            dump_mtime_s=None,
            data_dir_free_bytes=10,
            data_dir_size_bytes=100,
            sync_seconds=Distribution((0.001, 0.01)).snapshot(),
            last_apply_s=0.0001,
            entries_applied=38,
            replayed_ops={"commit": 2},
        )

    def proposer_stats(self) -> ProposerFigures:
        batch = Distribution((1, 10))
        batch.observe(3)
        return ProposerFigures(0, 1, 5, 1, 1, 0, 0, batch.snapshot(), batch.snapshot())

    def read(self, reader: Callable[[Ledger], T]) -> T:
        self.reads += 1
        return reader(self.ledger)


def _scrape(
    node: _AppliedNode, settings: MetricsSettings
) -> dict[str, dict[tuple[Any, ...], float]]:
    text = generate_latest(node_registry(node, "n1", settings)).decode()
    out: dict[str, dict[tuple[Any, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def _ledger_with_roots(count: int) -> Ledger:
    ledger = Ledger()
    ops = [_put(f"adv{index:04d}") for index in range(count)]
    ops += [_put("eur1", currency="EUR"), _put("adv0000:summer")]
    results = ledger.apply_batch(NOW_MS, ops)
    assert all(result["code"] == codes.OK for result in results), results
    spends = [_spend(f"adv{index:04d}", 100 + index, f"s{index}") for index in range(count)]
    spends += [_spend("adv0000:summer", 7, "child"), _spend("eur1", 50, "eur")]
    assert all(r["code"] == codes.OK for r in ledger.apply_batch(NOW_MS + 1, spends))
    return ledger


def _campaign_series(
    samples: dict[str, dict[tuple[Any, ...], float]], name: str
) -> dict[str, float]:
    return {
        dict(labels)["campaign"] + "/" + dict(labels)["currency"]: value
        for labels, value in samples[name].items()
    }


def test_campaign_series_are_bounded_and_the_rest_is_summed_per_currency() -> None:
    node = _AppliedNode(_ledger_with_roots(2_500))
    settings = MetricsSettings(campaign_series_max=10, campaigns=("adv0000:summer",))
    samples = _scrape(node, settings)
    spent = _campaign_series(samples, "budgetd_campaign_spent_today_micros")
    # The listed child, then the first 9 roots in id order; everything else folded.
    shown = {key for key in spent if not key.startswith(OTHER)}
    assert shown == {"adv0000:summer/USD"} | {f"adv{i:04d}/USD" for i in range(9)}
    assert spent["adv0000:summer/USD"] == 7
    assert spent["adv0000/USD"] == 100 + 7  # a root's figures include its subtree
    folded_usd = sum(100 + i for i in range(9, 2_500))
    assert spent[f"{OTHER}/USD"] == folded_usd
    assert spent[f"{OTHER}/EUR"] == 50
    folded = samples["budgetd_campaign_series_folded"]
    assert folded[(("currency", "USD"), ("node", "n1"))] == 2_500 - 9
    assert folded[(("currency", "EUR"), ("node", "n1"))] == 1
    # Series stay bounded whatever the number of campaigns: max + one _other per currency.
    for name in ("budgetd_campaign_spent_today_micros", "budgetd_campaign_held_micros"):
        assert len(samples[name]) == 10 + 2
    # Pages of roots: the ledger lock is taken a bounded number of times per page, not per id.
    assert node.reads < 10


def test_pacing_error_is_spend_minus_the_plan_for_paced_campaigns() -> None:
    ledger = _ledger_with_roots(1)
    node = _AppliedNode(ledger)
    samples = _scrape(node, MetricsSettings())
    view = ledger.campaign("adv0000")
    assert view is not None
    plan = _campaign_series(samples, "budgetd_campaign_plan_micros")["adv0000/USD"]
    assert plan == view["pacing"]["allowance_micros"]
    error = _campaign_series(samples, "budgetd_campaign_pacing_error_micros")["adv0000/USD"]
    assert error == view["spent_today_micros"] - plan


def test_raft_and_proposer_figures_are_exposed_with_the_node_label() -> None:
    samples = _scrape(_AppliedNode(_ledger_with_roots(1)), MetricsSettings())
    node = (("node", "n1"),)
    assert samples["budgetd_raft_role"][(("node", "n1"), ("role", "leader"))] == 1
    assert samples["budgetd_raft_role"][(("node", "n1"), ("role", "follower"))] == 0
    assert samples["budgetd_raft_apply_lag_entries"][node] == 2
    assert samples["budgetd_raft_replication_lag_entries"][(("node", "n1"), ("peer", "n2"))] == 5
    assert samples["budgetd_replayed_ops_total"][(("node", "n1"), ("op", "commit"))] == 2
    entries = samples["budgetd_proposer_entries_total"]
    assert entries[(("node", "n1"), ("outcome", "ok"))] == 5
    assert entries[(("node", "n1"), ("outcome", "unknown"))] == 1
    assert samples["budgetd_proposer_batch_ops_count"][node] == 1
    assert samples["budgetd_ledger_campaigns"][node] == 3


def test_root_campaign_ids_skip_subtrees_and_page() -> None:
    ledger = Ledger()
    ops = [_put(c) for c in ("a", "a:x", "a:x:y", "a9", "b", "b:z", "c")]
    assert all(r["code"] == codes.OK for r in ledger.apply_batch(NOW_MS, ops))
    assert ledger.root_campaign_ids() == ["a", "a9", "b", "c"]
    assert ledger.root_campaign_ids(limit=2) == ["a", "a9"]
    assert ledger.root_campaign_ids(after="a9", limit=2) == ["b", "c"]
    assert ledger.root_campaign_ids(after="c") == []
    assert [f.campaign_id for f in ledger.day_figures(["b:z", "nope", "a"])] == ["b:z", "a"]


def test_campaign_figures_are_recomputed_at_most_every_refresh_period() -> None:
    ledger = _ledger_with_roots(3)
    node = _AppliedNode(ledger)
    registry = node_registry(node, "n1", MetricsSettings(campaign_refresh_ms=3_600_000))
    key = (("campaign", "adv0001"), ("currency", "USD"), ("node", "n1"))

    def spent() -> float:
        text = generate_latest(registry).decode()
        family = next(
            f
            for f in text_string_to_metric_families(text)
            if f.name == "budgetd_campaign_spent_today_micros"
        )
        return next(s.value for s in family.samples if tuple(sorted(s.labels.items())) == key)

    assert spent() == 101
    assert ledger.apply_batch(NOW_MS + 2, [_spend("adv0001", 5, "more")])[0]["code"] == codes.OK
    reads = node.reads
    assert spent() == 101  # the figures of the last walk, within the refresh period
    assert node.reads == reads + 1  # only the table sizes were read again
    fresh = _scrape(node, MetricsSettings(campaign_refresh_ms=1))
    assert _campaign_series(fresh, "budgetd_campaign_spent_today_micros")["adv0001/USD"] == 106


def test_every_ledger_limit_is_a_gauge_next_to_its_table() -> None:
    ledger = _ledger_with_roots(3)
    [result] = ledger.apply_batch(
        ledger.now_ms, [{"op": "set_limits", "campaigns_max": 10, "idempotency_keys_max": 10}]
    )
    assert result["code"] == codes.OK
    samples = _scrape(_AppliedNode(ledger), MetricsSettings())
    limits = {
        dict(labels)["limit"]: value for labels, value in samples["budgetd_ledger_limit"].items()
    }
    assert limits == {name: float(value) for name, value in ledger.limits.to_plain().items()}
    assert limits["campaigns_max"] == 10 and limits["idempotency_keys_max"] == 10
    node = (("node", "n1"),)
    # usage / limit, as the alert rules compute it
    held = ledger.stats()["campaigns"]
    assert samples["budgetd_ledger_campaigns"][node] / limits["campaigns_max"] == held / 10
    assert {dict(labels)["node"] for labels in samples["budgetd_ledger_limit"]} == {"n1"}


def test_collector_pauses_and_frozen_objects_are_series_of_the_node() -> None:
    samples = _scrape(_AppliedNode(_ledger_with_roots(1)), MetricsSettings())
    for generation in ("0", "1", "2"):
        labels = (("generation", generation), ("node", "n1"))
        assert labels in samples["budgetd_gc_pause_seconds_count"]
        assert labels in samples["budgetd_gc_pause_seconds_sum"]
    assert samples["budgetd_gc_frozen_objects"][(("node", "n1"),)] >= 0
