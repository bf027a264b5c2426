"""The ``set_limits`` op: limits change only through the log, are checked like any op, apply from
the batch that carries them, travel in snapshots, and replay to the same state everywhere."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from budgetd.codec import decode_snapshot, encode_snapshot
from budgetd.ledger import Ledger, Limits, codes
from budgetd.ledger import ledger as ledger_module
from budgetd.ledger.limits import (
    ENDED_RETENTION_MS_FLOOR,
    IDEMPOTENCY_RETENTION_MS_FLOOR,
    SETTABLE,
    TTL_MS_CEILING,
)

T0_MS = int(datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()) * 1000
HOUR_MS = 3_600_000

ROOT = {
    "op": "put_campaign",
    "campaign_id": "acme",
    "currency": "USD",
    "timezone": "UTC",
    "daily_budget_micros": 10**12,
}


def _spend(key: str) -> dict[str, Any]:
    return {
        "op": "spend",
        "idempotency_key": key,
        "campaign_id": "acme",
        "amount_micros": 100,
        "bidder_id": "b1",
    }


def _reserve(key: str, ttl_ms: int = 60_000) -> dict[str, Any]:
    return {
        "op": "reserve",
        "idempotency_key": key,
        "campaign_id": "acme",
        "amount_micros": 1_000,
        "ttl_ms": ttl_ms,
        "bidder_id": "b1",
    }


def _ledger(keys: int = 5) -> Ledger:
    """One campaign and ``keys`` remembered idempotency keys (direct spends), at T0."""
    ledger = Ledger()
    ops = [ROOT, *(_spend(f"s{index}") for index in range(keys))]
    assert {r["code"] for r in ledger.apply_batch(T0_MS, ops)} == {codes.OK}
    return ledger


def _set(ledger: Ledger, timestamp_ms: int | None = None, **changes: Any) -> dict[str, Any]:
    when = ledger.now_ms if timestamp_ms is None else timestamp_ms
    [result] = ledger.apply_batch(when, [{"op": "set_limits", **changes}])
    return result


def test_a_change_sets_the_named_limits_only_and_answers_all_of_them() -> None:
    ledger = _ledger()
    result = _set(ledger, idempotency_keys_max=6, ttl_ms_max=60_000)
    expected = {**Limits().to_plain(), "idempotency_keys_max": 6, "ttl_ms_max": 60_000}
    assert result == {"code": codes.OK, "limits": expected}
    assert ledger.limits.to_plain() == expected
    # From the next op on, the ledger decides with the new numbers.
    results = ledger.apply_batch(ledger.now_ms, [_spend("s5"), _spend("s6")])
    assert [r["code"] for r in results] == [codes.OK, codes.LIMIT_REACHED]
    [result] = ledger.apply_batch(ledger.now_ms, [_reserve("r1", ttl_ms=60_001)])
    assert result["code"] == codes.INVALID_REQUEST and "60000" in result["detail"]


def test_a_change_applies_from_its_place_in_the_batch() -> None:
    ledger = _ledger(keys=1)
    results = ledger.apply_batch(
        T0_MS, [_spend("a"), {"op": "set_limits", "idempotency_keys_max": 2}, _spend("b")]
    )
    assert [r["code"] for r in results] == [codes.OK, codes.OK, codes.LIMIT_REACHED]


def test_a_limit_below_usage_refuses_growth_only_and_drops_nothing() -> None:
    ledger = _ledger(keys=5)
    assert _set(ledger, idempotency_keys_max=2)["code"] == codes.OK
    assert ledger.stats()["idempotency_keys"] == 5  # nothing forgotten because of the limit
    [refused] = ledger.apply_batch(ledger.now_ms, [_spend("new")])
    assert refused["code"] == codes.LIMIT_REACHED
    # A retry of a request already applied is still answered from its key.
    [replayed] = ledger.apply_batch(ledger.now_ms, [_spend("s0")])
    assert replayed["code"] == codes.OK and replayed["replayed"] is True
    # Raised again, the table grows again.
    assert _set(ledger, idempotency_keys_max=20_000_000)["code"] == codes.OK
    assert ledger.apply_batch(ledger.now_ms, [_spend("new")])[0]["code"] == codes.OK


def test_campaigns_and_open_reservations_below_usage_refuse_new_ones() -> None:
    ledger = _ledger(keys=0)
    assert ledger.apply_batch(T0_MS, [_reserve("r1"), _reserve("r2")])[1]["code"] == codes.OK
    assert _set(ledger, open_reservations_max=1, campaigns_max=1)["code"] == codes.OK
    results = ledger.apply_batch(
        T0_MS, [_reserve("r3"), {**ROOT, "campaign_id": "globex"}, {**ROOT, "status": "paused"}]
    )
    assert [r["code"] for r in results] == [codes.LIMIT_REACHED, codes.LIMIT_REACHED, codes.OK]
    assert ledger.stats()["open_reservations"] == 2
    ledger.check_invariants()


def test_ended_reservations_shrink_to_a_lowered_limit_one_extra_per_end() -> None:
    ledger = _ledger(keys=0)
    ledger.apply_batch(T0_MS, [_reserve(f"r{index}") for index in range(6)])
    releases = [
        {"op": "release", "idempotency_key": f"l{rid}", "reservation_id": rid} for rid in (1, 2, 3)
    ]
    ledger.apply_batch(T0_MS, releases)
    assert ledger.stats()["ended_reservations"] == 3
    assert _set(ledger, ended_reservations_max=1)["code"] == codes.OK
    assert ledger.stats()["ended_reservations"] == 3  # nothing dropped by the change itself
    ledger.apply_batch(T0_MS, [{"op": "release", "idempotency_key": "l4", "reservation_id": 4}])
    assert ledger.stats()["ended_reservations"] == 2
    ledger.apply_batch(T0_MS, [{"op": "release", "idempotency_key": "l5", "reservation_id": 5}])
    assert ledger.stats()["ended_reservations"] == 1
    assert ledger.reservation(1) is None and ledger.reservation(5) is not None
    ledger.check_invariants()


def test_a_lowered_retention_forgets_older_keys_at_the_next_pulse() -> None:
    ledger = _ledger(keys=3)
    later = T0_MS + 2 * HOUR_MS
    ledger.apply_batch(later, [_spend("recent")])
    results = ledger.apply_batch(
        later, [{"op": "set_limits", "idempotency_retention_ms": HOUR_MS}, {"op": "pulse"}]
    )
    assert [r["code"] for r in results] == [codes.OK, codes.OK]
    assert ledger.stats()["idempotency_keys"] == 1
    # The forgotten keys are fresh again; the recent one still replays.
    results = ledger.apply_batch(later, [_spend("s0"), _spend("recent")])
    assert "replayed" not in results[0] and results[1]["replayed"] is True


def test_a_pulse_forgets_a_bounded_number_of_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "PRUNE_PER_PULSE_MAX", 2)
    ledger = _ledger(keys=0)
    for minute in range(5):  # five key groups of one key each
        ledger.apply_batch(T0_MS + minute * 60_000, [_spend(f"m{minute}")])
    later = T0_MS + 3 * HOUR_MS
    _set(ledger, later, idempotency_retention_ms=HOUR_MS)
    held = []
    for _ in range(4):
        ledger.apply_batch(later, [{"op": "pulse"}])
        held.append(ledger.stats()["idempotency_keys"])
    assert held == [3, 1, 0, 0]


def test_a_pulse_forgets_part_of_a_large_key_group_oldest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger_module, "PRUNE_PER_PULSE_MAX", 2)
    ledger = _ledger(keys=5)  # one key group (one minute) of five keys, s0 oldest
    later = T0_MS + 3 * HOUR_MS
    _set(ledger, later, idempotency_retention_ms=HOUR_MS)
    ledger.apply_batch(later, [{"op": "pulse"}])
    assert ledger.stats()["idempotency_keys"] == 3
    results = ledger.apply_batch(later, [_spend("s1"), _spend("s2")])
    assert "replayed" not in results[0] and results[1]["replayed"] is True
    # A snapshot of the half-forgotten group restores to the same state.
    assert Ledger.from_state(ledger.export_state()).digest() == ledger.digest()
    ledger.apply_batch(later, [{"op": "pulse"}])
    ledger.apply_batch(later, [{"op": "pulse"}])
    # s1 was remembered again (at `later`, a group of its own, not due yet).
    assert ledger.stats()["idempotency_keys"] == 1


BAD_CHANGES: dict[str, dict[str, Any]] = {
    "empty": {},
    "unknown field": {"idempotency_keys_maximum": 10},
    "fixed limit batch_ops_max": {"batch_ops_max": 10},
    "fixed limit amount_micros_max": {"amount_micros_max": 10},
    "an idempotency key": {"idempotency_key": "k", "campaigns_max": 10},
    "string": {"campaigns_max": "10"},
    "float": {"campaigns_max": 10.0},
    "bool": {"campaigns_max": True},
    "null": {"campaigns_max": None},
    "zero": {"idempotency_keys_max": 0},
    "negative": {"open_reservations_max": -1},
    "ttl above a day": {"ttl_ms_max": TTL_MS_CEILING + 1},
    "retention below the floor": {"idempotency_retention_ms": IDEMPOTENCY_RETENTION_MS_FLOOR - 1},
    "ended retention below the floor": {"ended_retention_ms": ENDED_RETENTION_MS_FLOOR - 1},
    "one good, one bad": {"campaigns_max": 10, "ended_reservations_max": 0},
}


@pytest.mark.parametrize("changes", BAD_CHANGES.values(), ids=BAD_CHANGES.keys())
def test_a_bad_change_is_refused_and_writes_nothing(changes: dict[str, Any]) -> None:
    ledger = _ledger()
    before = ledger.digest()
    result = _set(ledger, **changes)
    assert result["code"] == codes.INVALID_REQUEST
    assert type(result["detail"]) is str and result["detail"]
    assert ledger.digest() == before
    assert ledger.limits == Limits()


def test_every_settable_limit_can_be_set_at_its_floor() -> None:
    floors = {name: 1 for name in SETTABLE} | {
        "idempotency_retention_ms": IDEMPOTENCY_RETENTION_MS_FLOOR,
        "ended_retention_ms": ENDED_RETENTION_MS_FLOOR,
    }
    ledger = _ledger()
    assert _set(ledger, **floors)["code"] == codes.OK
    assert {name: getattr(ledger.limits, name) for name in SETTABLE} == floors


def test_snapshots_keep_the_changed_limits() -> None:
    ledger = _ledger()
    _set(ledger, idempotency_keys_max=7, idempotency_retention_ms=2 * HOUR_MS)
    restored = decode_snapshot(encode_snapshot(ledger))
    assert restored.limits == ledger.limits
    assert restored.digest() == ledger.digest()
    assert Ledger.from_state(ledger.export_state()).limits.idempotency_keys_max == 7
    # The restored ledger decides with them.
    results = restored.apply_batch(restored.now_ms, [_spend("x1"), _spend("x2"), _spend("x3")])
    assert [r["code"] for r in results] == [codes.OK, codes.OK, codes.LIMIT_REACHED]


def test_replicas_that_apply_the_same_batches_agree_and_a_change_moves_the_digest() -> None:
    batches: list[tuple[int, list[dict[str, Any]]]] = [
        (T0_MS, [ROOT, _spend("a"), _reserve("r1")]),
        (T0_MS + 1_000, [{"op": "set_limits", "idempotency_keys_max": 4}, _spend("b")]),
        (T0_MS + 2_000, [_spend("c"), _spend("d"), {"op": "set_limits"}, {"op": "pulse"}]),
        (T0_MS + 2 * HOUR_MS, [{"op": "set_limits", "idempotency_retention_ms": HOUR_MS}]),
        (T0_MS + 2 * HOUR_MS, [{"op": "pulse"}, _spend("e")]),
    ]
    first, second = Ledger(), Ledger()
    snapshot = None
    for index, (timestamp_ms, ops) in enumerate(batches):
        assert first.apply_batch(timestamp_ms, ops) == second.apply_batch(timestamp_ms, ops)
        assert first.digest() == second.digest()
        if index == 0:
            snapshot = encode_snapshot(first)
    assert first.limits.idempotency_keys_max == 4
    assert first.limits.idempotency_retention_ms == HOUR_MS
    # A replica restored from a snapshot taken before the changes, replaying the rest, agrees.
    assert snapshot is not None
    late = decode_snapshot(snapshot)
    for timestamp_ms, ops in batches[1:]:
        late.apply_batch(timestamp_ms, ops)
    assert late.digest() == first.digest()
    # The limits are part of the digest: the same tables with other limits differ.
    other = Ledger.from_state({**first.export_state(), "limits": Limits().to_plain()})
    assert other.digest() != first.digest()
