"""Stateful model test: `budgetd.ledger.Ledger` against the naive reference in reference.py.

Hypothesis drives one ledger and the reference with the same batches — reserve, commit (partial,
final, beyond the hold, late), release, direct spend, pulse, put_campaign (budgets, pause, version
checks, creation), retries with the same key and body, reuses of a key with another body, time
moving a little, into the past, and across local midnights of two trees (UTC and
America/New_York, whose 2026-03-08 lasts 23 h) — and snapshot round trips, after which the run
continues on the restored ledger. A replica that is never restored gets the same batches.

After every step: `check_invariants()`, I1 from the campaign views, I3 (every campaign's and every
reservation's numbers equal the model's), I5 (the replica's digest equals the ledger's) and I6
(`now_ms` is the largest timestamp applied).
"""

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from budgetd.ledger import Ledger, Limits


def _load_reference() -> Any:  # by path: works whether or not tests/ is a package
    name = "budgetd_tests_ledger_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("reference.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ref = _load_reference()

#: 2026-03-07 20:00 UTC, 15:00 in New York: the first New York midnight ahead starts a 23 h day.
T0_MS = int(datetime(2026, 3, 7, 20, tzinfo=UTC).timestamp()) * 1000

#: Small tables and retentions, so that limits, pruning and eviction happen within a run.
LIMITS = {
    "open_reservations_max": 8,
    "ended_reservations_max": 10,
    "idempotency_retention_ms": 6 * 3_600_000,
    "ended_retention_ms": 3_600_000,
}

TREES = {"a": ("USD", "UTC"), "b": ("USD", "America/New_York")}
EVEN = {"mode": "even", "burst_ppm": 50_000}
#: The campaigns created at the start: id -> settings.
INITIAL = {
    "a": {"daily_budget_micros": 3000, "total_budget_micros": 8000},
    "a:x": {"daily_budget_micros": 1500, "total_budget_micros": 4000},
    "a:x:1": {"daily_budget_micros": 600, "total_budget_micros": 1500},
    "a:y": {"daily_budget_micros": 1000},
    "b": {"daily_budget_micros": 2500, "total_budget_micros": 7000},
    "b:x": {"total_budget_micros": 2000},
    "b:e": {"daily_budget_micros": 1200, "pacing": EVEN},
}
#: Created by a put during the run (until then: not_found); the last one never (no parent).
LATER = ["a:y:2", "b:x:1", "a:z:9"]
CAMPAIGN_IDS = [*INITIAL, *LATER]
DAILY_CHOICES = [None, 200, 500, 1000, 1500, 3000]
TOTAL_CHOICES = [None, 800, 2000, 5000, 9000]
BIDDERS = ["bidder-1", "bidder-2"]

time_steps = st.one_of(
    st.just(0),
    st.integers(1, 3_000),
    st.integers(3_000, 600_000),
    st.integers(-5_000, -1),  # a batch stamped in the past: the clock stays
)
ttls = st.one_of(
    st.integers(1, 3_000),
    st.integers(3_000, 900_000),
    st.sampled_from([3_600_000, 43_200_000, 86_400_000]),  # across a midnight
)


def _matches(expected: Any, actual: Any) -> bool:
    """Equality, where the model's UNMODELLED matches anything."""
    if expected is ref.UNMODELLED:
        return True
    if type(expected) is dict:
        return (
            type(actual) is dict
            and expected.keys() == actual.keys()
            and all(_matches(value, actual[name]) for name, value in expected.items())
        )
    if type(expected) is list:
        return (
            type(actual) is list
            and len(expected) == len(actual)
            and all(_matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(type(expected) is type(actual) and expected == actual)


class LedgerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(Limits(**LIMITS))
        self.replica = Ledger(Limits(**LIMITS))
        self.model = ref.Reference(ref.Limits(**LIMITS))
        self.max_timestamp_ms = 0
        self.keys_made = 0
        #: Every op sent with an idempotency key, for retries and reuses.
        self.history: list[dict[str, Any]] = []
        #: key -> the ledger's result when the key was (last) remembered.
        self.originals: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------------------------------
    # Applying batches to the ledger, the replica and the model

    def _new_key(self) -> str:
        self.keys_made += 1
        return f"k{self.keys_made}"

    def _apply(self, timestamp_ms: int, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = self.ledger.apply_batch(timestamp_ms, ops)
        assert self.replica.apply_batch(timestamp_ms, ops) == results, "replica decided otherwise"
        self.max_timestamp_ms = max(self.max_timestamp_ms, timestamp_ms)
        return results

    def _check(self, op: dict[str, Any], expected: dict[str, Any], actual: dict[str, Any]) -> None:
        key = op.get("idempotency_key")
        where = f"\nop: {op}\nmodel: {expected}\nledger: {actual}"
        if expected.get("replayed"):
            assert actual == {**self.originals[key], "replayed": True}, "bad replay" + where
            assert actual["code"] == expected["code"], where
            return
        if expected["code"] == ref.OK:
            assert _matches(expected, actual), "result differs from the model" + where
        else:
            assert actual.get("code") == expected["code"], "wrong code" + where
            assert actual.keys() == {"code", "detail"}, where
        if key is not None and expected["code"] not in ref.UNRECORDED:
            self.originals[key] = actual

    def _run(self, data: st.DataObject, timestamp_ms: int, kinds: list[str]) -> list[Any]:
        """Draw one op per kind against the model's state (so later ops of the batch may use a
        reservation an earlier one creates), apply them as one batch, compare every result."""
        timestamp_ms = max(0, timestamp_ms)
        self.model.advance(timestamp_ms)
        ops: list[dict[str, Any]] = []
        expected: list[dict[str, Any]] = []
        for kind in kinds:
            op = self._draw_op(data, kind)
            ops.append(op)
            expected.append(self.model.apply_op(op))
            if "idempotency_key" in op:
                self.history.append(op)
        actual = self._apply(timestamp_ms, ops)
        assert len(actual) == len(ops)
        for op, want, got in zip(ops, expected, actual, strict=True):
            self._check(op, want, got)
        return expected

    def _draw_op(self, data: st.DataObject, kind: str) -> dict[str, Any]:
        draw = data.draw
        model = self.model
        if kind == "reserve":
            amount = draw(st.integers(1, 700), label="amount")
            op = {
                "op": "reserve",
                "idempotency_key": self._new_key(),
                "campaign_id": draw(st.sampled_from(CAMPAIGN_IDS), label="campaign"),
                "amount_micros": amount,
                "ttl_ms": draw(ttls, label="ttl"),
                "bidder_id": draw(st.sampled_from(BIDDERS)),
            }
            if draw(st.booleans(), label="with minimum"):
                op["min_amount_micros"] = draw(st.integers(1, amount), label="minimum")
            return op
        if kind in ("commit", "release"):
            known = sorted(model.reservations)
            missing = model.next_reservation_id + 7
            reservation_id = draw(st.sampled_from([*known, missing]), label="reservation")
            op = {"op": kind, "idempotency_key": self._new_key(), "reservation_id": reservation_id}
            if kind == "commit":
                reservation = model.reservations.get(reservation_id)
                left = 1
                if reservation is not None:
                    left = max(1, reservation.granted_micros - reservation.committed_micros)
                op["amount_micros"] = draw(
                    st.one_of(
                        st.integers(1, left),  # within what is still held
                        st.just(left),
                        st.integers(left + 1, left + 300),  # beyond the hold
                    ),
                    label="commit amount",
                )
                final = draw(st.sampled_from([None, False, True]), label="final")
                if final is not None:
                    op["final"] = final
            return op
        if kind == "spend":
            return {
                "op": "spend",
                "idempotency_key": self._new_key(),
                "campaign_id": draw(st.sampled_from(CAMPAIGN_IDS), label="campaign"),
                "amount_micros": draw(st.integers(1, 500), label="amount"),
                "bidder_id": draw(st.sampled_from(BIDDERS)),
            }
        if kind == "pulse":
            return {"op": "pulse"}
        if kind == "put":
            return self._draw_put(data)
        if kind in ("retry", "reuse") and self.history:
            earlier = draw(st.sampled_from(self.history), label=f"{kind} of")
            if kind == "retry":
                return dict(earlier)
            return self._other_body(data, earlier)
        return {"op": "pulse"}

    def _draw_put(self, data: st.DataObject) -> dict[str, Any]:
        draw = data.draw
        campaign_id = draw(st.sampled_from(CAMPAIGN_IDS), label="put campaign")
        root_id = campaign_id.split(":")[0]
        currency, timezone = TREES[root_id]
        op: dict[str, Any] = {"op": "put_campaign", "campaign_id": campaign_id}
        dailies = DAILY_CHOICES[1:] if campaign_id == "b:e" else DAILY_CHOICES
        daily = draw(st.sampled_from(dailies), label="daily")
        total = draw(st.sampled_from(TOTAL_CHOICES), label="total")
        if daily is not None:
            op["daily_budget_micros"] = daily
        if total is not None:
            op["total_budget_micros"] = total
        if campaign_id == "b:e":
            op["pacing"] = dict(EVEN)
        elif draw(st.booleans(), label="explicit asap"):
            op["pacing"] = {"mode": "asap"}
        if draw(st.integers(0, 3), label="paused") == 0:
            op["status"] = "paused"
        if campaign_id == root_id:
            op["currency"], op["timezone"] = currency, timezone
        else:
            spelling = draw(st.sampled_from(["omit", "omit", "same", "wrong"]), label="currency")
            if spelling == "same":
                op["currency"], op["timezone"] = currency, timezone
            elif spelling == "wrong":
                op["currency"] = "EUR"  # a tree has one currency: invalid_request
        campaign = self.model.campaigns.get(campaign_id)
        version = draw(st.sampled_from(["none", "none", "right", "wrong"]), label="version")
        if version == "right" and campaign is not None:
            op["expected_version"] = campaign.version
        elif version == "wrong":
            op["expected_version"] = (campaign.version if campaign else 0) + 1
        if draw(st.booleans(), label="keyed put"):
            op["idempotency_key"] = self._new_key()
        return op

    def _other_body(self, data: st.DataObject, earlier: dict[str, Any]) -> dict[str, Any]:
        """The same idempotency key with a request that differs from the earlier one."""
        key = earlier["idempotency_key"]
        if data.draw(st.booleans(), label="another op"):
            return {
                "op": "spend",
                "idempotency_key": key,
                "campaign_id": "a:y" if earlier.get("campaign_id") == "a" else "a",
                "amount_micros": 1,
                "bidder_id": "bidder-9",
            }
        other = dict(earlier)
        if earlier["op"] == "release":
            other.update(op="commit", amount_micros=1)
        elif earlier["op"] == "put_campaign":
            other["status"] = "active" if earlier.get("status") == "paused" else "paused"
        else:
            other["amount_micros"] = earlier["amount_micros"] + 1
        return other

    # ---------------------------------------------------------------------------------------
    # Rules

    @initialize()
    def create_campaigns(self) -> None:
        ops = []
        for campaign_id, campaign_settings in INITIAL.items():
            op = {"op": "put_campaign", "campaign_id": campaign_id, **campaign_settings}
            if campaign_id in TREES:
                op["currency"], op["timezone"] = TREES[campaign_id]
            ops.append(op)
        expected = self.model.apply_batch(T0_MS, ops)
        actual = self._apply(T0_MS, ops)
        for op, want, got in zip(ops, expected, actual, strict=True):
            assert want["code"] == ref.OK
            self._check(op, want, got)

    @rule(data=st.data(), step=time_steps)
    def reserve(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["reserve"])

    @rule(data=st.data(), step=time_steps)
    def commit(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["commit"])

    @rule(data=st.data(), step=time_steps)
    def release(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["release"])

    @rule(data=st.data(), step=time_steps)
    def spend(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["spend"])

    @rule(data=st.data(), step=time_steps)
    def put_campaign(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["put"])

    @rule(data=st.data(), step=time_steps, pulse=st.booleans())
    def advance_time(self, data: st.DataObject, step: int, pulse: bool) -> None:
        """A batch that only moves time (expiry, day roll), or a pulse."""
        self._run(data, self.model.now_ms + step, ["pulse"] if pulse else [])

    @rule(
        data=st.data(),
        root_id=st.sampled_from(sorted(TREES)),
        days_ahead=st.sampled_from([1, 1, 1, 2, 3]),
        offset_ms=st.integers(-2_000, 2_000),
        pulse=st.booleans(),
    )
    def jump_to_midnight(
        self, data: st.DataObject, root_id: str, days_ahead: int, offset_ms: int, pulse: bool
    ) -> None:
        """Time jumps to around a coming local midnight of one tree."""
        timezone = TREES[root_id][1]
        day = ref.local_date(timezone, self.model.now_ms) + timedelta(days=days_ahead)
        self._run(data, ref.local_midnight_ms(timezone, day) + offset_ms, ["pulse"] if pulse else [])

    @rule(
        data=st.data(),
        kinds=st.lists(
            st.sampled_from(
                ["reserve", "reserve", "commit", "commit", "release", "spend", "pulse", "put"]
                + ["retry", "reuse"]
            ),
            min_size=2,
            max_size=6,
        ),
        step=time_steps,
    )
    def batch(self, data: st.DataObject, kinds: list[str], step: int) -> None:
        self._run(data, self.model.now_ms + step, kinds)

    @precondition(lambda self: self.history)
    @rule(data=st.data(), count=st.integers(1, 3), back_ms=st.integers(0, 5_000))
    def retry(self, data: st.DataObject, count: int, back_ms: int) -> None:
        """Earlier requests again, same key and body, at or before now: the original results."""
        self._retry_or_reuse(data, ["retry"] * count, back_ms)

    @precondition(lambda self: self.history)
    @rule(data=st.data(), back_ms=st.integers(0, 5_000))
    def reuse_key(self, data: st.DataObject, back_ms: int) -> None:
        """An earlier key with another body: idempotency_key_reused, nothing written."""
        self._retry_or_reuse(data, ["reuse"], back_ms)

    def _retry_or_reuse(self, data: st.DataObject, kinds: list[str], back_ms: int) -> None:
        digest_before = self.ledger.digest()
        expected = self._run(data, self.model.now_ms - back_ms, kinds)
        # A key the ledger no longer keeps (pruned after its retention) is a new request.
        remembered = all(
            result.get("replayed") or result["code"] == ref.IDEMPOTENCY_KEY_REUSED
            for result in expected
        )
        if remembered:
            assert self.ledger.digest() == digest_before, "a replay or a reused key wrote state"

    @rule(through_json=st.booleans())
    def snapshot_round_trip(self, through_json: bool) -> None:
        """Restore from export_state (as is, or through a JSON codec) and carry on with it."""
        state = self.ledger.export_state()
        if through_json:
            state = json.loads(json.dumps(state))
        restored = Ledger.from_state(state)
        assert restored.digest() == self.ledger.digest(), "snapshot round trip changed the digest"
        restored.check_invariants()
        self.ledger = restored

    # ---------------------------------------------------------------------------------------
    # Invariants, after every step

    @invariant()
    def ledger_invariants_hold(self) -> None:
        self.ledger.check_invariants()

    @invariant()
    def clock_is_the_largest_timestamp(self) -> None:  # I6
        assert self.ledger.now_ms == self.max_timestamp_ms == self.model.now_ms

    @invariant()
    def replicas_agree(self) -> None:  # I5
        assert self.replica.digest() == self.ledger.digest()

    @invariant()
    def campaigns_match_the_model(self) -> None:  # I3, and every counter
        model = self.model
        for campaign_id in CAMPAIGN_IDS:
            view = self.ledger.campaign(campaign_id)
            if campaign_id not in model.campaigns:
                assert view is None, f"{campaign_id} exists in the ledger only"
                continue
            assert view is not None, f"{campaign_id} is missing"
            expected = model.campaign_view(campaign_id)
            actual = {name: view[name] for name in expected if name in view}
            actual["own_pass_through_ppm"] = view["pacing"]["own_pass_through_ppm"]
            actual["pass_through_ppm"] = view["pacing"]["pass_through_ppm"]
            assert _matches(expected, actual), (
                f"campaign {campaign_id} differs from the model at now={model.now_ms}"
                + "".join(
                    f"\n  {name}: model {expected[name]!r}, ledger {actual[name]!r}"
                    for name in expected
                    if not _matches(expected[name], actual[name])
                )
            )

    @invariant()
    def no_overspend_by_reservation(self) -> None:  # I1, from the campaign views
        model = self.model
        for campaign_id, campaign in model.campaigns.items():
            view = self.ledger.campaign(campaign_id)
            assert view is not None
            days = [
                (view["day"], view["spent_today_micros"], view["held_micros"], view["overspend_micros"])
            ] + [
                (d["day"], d["spent_micros"], d["held_micros"], d["overspend_micros"])
                for d in view["previous_days"]
            ]
            caps = {day.isoformat(): cap for day, cap in campaign.daily_cap_high.items()}
            for day, spent, held, overspend in days:
                cap = caps[day]
                assert cap is None or spent + held <= cap + overspend, (
                    f"I1: {campaign_id} on {day}: spent {spent} + held {held} > "
                    f"cap {cap} + overspend {overspend}"
                )
            cap = campaign.total_cap_high
            used = view["spent_total_micros"] + view["held_total_micros"]
            assert cap is None or used <= cap + view["overspend_total_micros"], (
                f"I1: {campaign_id} in total: {used} > cap {cap} + "
                f"overspend {view['overspend_total_micros']}"
            )

    @invariant()
    def reservations_match_the_model(self) -> None:
        model = self.model
        for reservation_id in model.reservations:
            expected = model.reservation_view(reservation_id)
            actual = self.ledger.reservation(reservation_id)
            assert _matches(expected, actual), (
                f"reservation {reservation_id}: model {expected}, ledger {actual}"
            )
        assert self.ledger.reservation(model.next_reservation_id) is None


LedgerModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestLedgerModel = LedgerModel.TestCase
