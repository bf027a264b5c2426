"""Stateful model test: `budgetd.ledger.Ledger` against the naive reference in reference.py.

Hypothesis drives one ledger and the reference with the same batches — reserve, commit (partial,
final, beyond the hold, late), release, direct spend, pulse, put_campaign (budgets, pause, version
checks, creation), retries with the same key and body, reuses of a key with another body, time
moving a little, into the past, across local midnights of two trees (UTC and America/New_York,
whose 2026-03-08 lasts 23 h) and to the millisecond of an expiry, a retention or a midnight — and
snapshot round trips (as is, or through JSON), after which the run continues on the restored
ledger. A replica that is never restored gets the same batches. Table limits and retentions are
drawn per run, small enough to be reached.

After every step: `check_invariants()`, I1 from the campaign views, I3 (every campaign's and every
reservation's numbers equal the model's), I5 (the replica's digest equals the ledger's) and I6
(`now_ms` is the largest timestamp applied). A replay or a reused key must leave the digest as it
was. Grants on the even-paced campaign are modelled; its pass-through rate is not.
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

from budgetd.ledger import Ledger, Limits, render_results


def _load_reference() -> Any:  # by path: works whether or not tests/ is a package
    name = "budgetd_tests_ledger_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("reference.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ref = _load_reference()

#: 2026-03-07 23:20 UTC, 18:20 in New York: small steps reach UTC midnight while reservations of
#: the first day are still open, and the first New York midnight ahead starts a 23 h day.
T0_MS = int(datetime(2026, 3, 7, 23, 20, tzinfo=UTC).timestamp()) * 1000

HOUR_MS = 3_600_000
#: Small tables and short retentions, drawn per run, so that limits, pruning and eviction happen
#: within a run; long retentions keep ended reservations (late commits, retired days) around.
limits_choices = st.fixed_dictionaries(
    {
        "open_reservations_max": st.sampled_from([8, 2, 1_000]),
        "ended_reservations_max": st.sampled_from([10, 3, 1_000]),
        "idempotency_retention_ms": st.sampled_from([6 * HOUR_MS, 2 * HOUR_MS, 48 * HOUR_MS]),
        "ended_retention_ms": st.sampled_from([HOUR_MS, 30 * HOUR_MS, 96 * HOUR_MS]),
    }
)

TREES = {"a": ("USD", "UTC"), "b": ("USD", "America/New_York")}
EVEN = {"mode": "even", "burst_ppm": 50_000}
#: The campaigns created at the start: id -> settings.
INITIAL = {
    "a": {"daily_budget_micros": 1500, "total_budget_micros": 4000},
    "a:x": {"daily_budget_micros": 900, "total_budget_micros": 2500},
    "a:x:1": {"daily_budget_micros": 400, "total_budget_micros": 1000},
    "a:y": {"daily_budget_micros": 600},
    "b": {"daily_budget_micros": 1200, "total_budget_micros": 3500},
    "b:x": {"total_budget_micros": 1000},
    "b:e": {"daily_budget_micros": 800, "pacing": EVEN},
}
#: Created by a put during the run (until then: not_found); the last one never (no parent).
LATER = ["a:y:2", "b:x:1", "a:z:9"]
CAMPAIGN_IDS = [*INITIAL, *LATER]
DAILY_CHOICES = [None, 200, 400, 800, 1500]
TOTAL_CHOICES = [None, 600, 1500, 3000, 6000]
BIDDERS = ["bidder-1", "bidder-2"]

#: What happens at a local midnight: the day an op lands on is decided at the millisecond.
MIDNIGHT_OPS = ["spend", "reserve", "commit", "pulse"]

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
        self.ledger = self.replica = Ledger()  # until create_campaigns
        self.model = ref.Reference(ref.Limits(1, 1, 1, 1))
        self.max_timestamp_ms = 0
        self.keys_made = 0
        #: Every op sent with an idempotency key, for retries and reuses.
        self.history: list[dict[str, Any]] = []
        #: key -> the ledger's result when the key was (last) remembered.
        self.originals: dict[str, dict[str, Any]] = {}
        #: Keyed ops refused with a code that writes nothing: a retry is judged afresh.
        self.unrecorded: list[dict[str, Any]] = []

    # ---------------------------------------------------------------------------------------
    # Applying batches to the ledger, the replica and the model

    def _live_reservations(self) -> list[int]:
        """Reservations the ledger still keeps (open, or ended and not yet forgotten)."""
        return [rid for rid, r in self.model.reservations.items() if not r.forgotten]

    def _new_key(self) -> str:
        self.keys_made += 1
        return f"k{self.keys_made}"

    def _apply(self, timestamp_ms: int, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = self.ledger.apply_batch(timestamp_ms, ops)
        # The replica applies as a node does: unrendered, rendered after (by the proposer only).
        unrendered = self.replica.apply_unrendered(timestamp_ms, ops)
        assert render_results(ops, unrendered) == results, "replica decided otherwise"
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
        elif key is not None:
            self.unrecorded.append(op)

    def _run(self, data: st.DataObject, timestamp_ms: int, kinds: list[Any]) -> list[Any]:
        """Draw one op per kind against the model's state (so later ops of the batch may use a
        reservation an earlier one creates), apply them as one batch, compare every result.

        A kind is a name (``"reserve"``...), ``(name, reservation_id)`` for a commit or release
        of that reservation, or a ready op.
        """
        timestamp_ms = max(0, timestamp_ms)
        self.model.advance(timestamp_ms)
        ops: list[dict[str, Any]] = []
        expected: list[dict[str, Any]] = []
        for kind in kinds:
            if type(kind) is dict:
                op = dict(kind)
            elif type(kind) is tuple:
                op = self._draw_op(data, kind[0], reservation_id=kind[1])
            else:
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

    def _draw_op(
        self, data: st.DataObject, kind: str, reservation_id: int | None = None
    ) -> dict[str, Any]:
        draw = data.draw
        model = self.model
        if kind == "reserve":
            campaign_id = draw(st.sampled_from(CAMPAIGN_IDS), label="campaign")
            amount = draw(self._amounts(campaign_id, 500), label="amount")
            op = {
                "op": "reserve",
                "idempotency_key": self._new_key(),
                "campaign_id": campaign_id,
                "amount_micros": amount,
                "ttl_ms": draw(ttls, label="ttl"),
                "bidder_id": draw(st.sampled_from(BIDDERS)),
            }
            if draw(st.booleans(), label="with minimum"):
                op["min_amount_micros"] = draw(st.integers(1, amount), label="minimum")
            return op
        if kind in ("commit", "release"):
            live = self._live_reservations()
            gone = [rid for rid, r in model.reservations.items() if r.forgotten]
            gone.append(model.next_reservation_id + 7)  # never existed
            if reservation_id is None:
                pick_gone = not live or draw(st.integers(0, 3), label="pick gone") == 3
                reservation_id = draw(
                    st.sampled_from(gone if pick_gone else live), label="reservation"
                )
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
            campaign_id = draw(st.sampled_from(CAMPAIGN_IDS), label="campaign")
            return {
                "op": "spend",
                "idempotency_key": self._new_key(),
                "campaign_id": campaign_id,
                "amount_micros": draw(self._amounts(campaign_id, 400), label="amount"),
                "bidder_id": draw(st.sampled_from(BIDDERS)),
            }
        if kind == "pulse":
            return {"op": "pulse"}
        if kind == "put":
            return self._draw_put(data)
        if kind in ("retry", "reuse") and self.history:
            # Mostly one of the latest requests, as a client retrying after a timeout, or one
            # that was refused without writing anything.
            pools = [self.history[-1:], self.history[-8:], self.history]
            if self.unrecorded:
                pools.append(self.unrecorded[-8:])
            pool = draw(st.sampled_from(pools), label="from")
            earlier = draw(st.sampled_from(pool), label=f"{kind} of")
            if kind == "retry":
                return dict(earlier)
            return self._other_body(data, earlier)
        return {"op": "pulse"}

    def _amounts(self, campaign_id: str, amount_max: int) -> st.SearchStrategy[int]:
        """Any amount, or one that just fills (or overfills) a cap on the campaign's path."""
        model = self.model
        rooms = []
        if campaign_id in model.campaigns:
            today = model.today(campaign_id)
            for level in model.path(campaign_id):
                settings = model.campaigns[level].settings
                daily = settings["daily_budget_micros"]
                total = settings["total_budget_micros"]
                if daily is not None:
                    rooms.append(daily - model.spent(level, today) - model.held(level, today))
                if total is not None:
                    rooms.append(total - model.spent(level) - model.held(level))
        rooms = sorted({room + extra for room in rooms for extra in (0, 1, 50) if room + extra > 0})
        if not rooms:
            return st.integers(1, amount_max)
        return st.one_of(st.integers(1, amount_max), st.sampled_from(rooms))

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
        """The same idempotency key with a request that differs from the earlier one in one
        field (or is another op altogether)."""
        other = dict(earlier)
        name = earlier["op"]
        changes = ["another op"]
        if name in ("reserve", "commit", "spend"):
            changes.append("amount")
        if name in ("reserve", "spend"):
            changes += ["campaign", "bidder"]
        if name == "reserve":
            changes += ["ttl", "minimum"]
        if name in ("commit", "release"):
            changes.append("reservation")
        if name == "commit":
            changes.append("final")
        if name == "put_campaign":
            changes += ["status", "daily"]
        change = data.draw(st.sampled_from(changes), label="change")
        if change == "another op":
            campaign_id = "a:y" if earlier.get("campaign_id") == "a" else "a"
            return {
                "op": "spend",
                "idempotency_key": earlier["idempotency_key"],
                "campaign_id": campaign_id,
                "amount_micros": 1,
                "bidder_id": "bidder-9",
            }
        if change == "amount":
            other["amount_micros"] += 1
        elif change == "campaign":
            other["campaign_id"] = "a:x" if earlier["campaign_id"] == "a:y" else "a:y"
        elif change == "bidder":
            other["bidder_id"] = "bidder-9"
        elif change == "ttl":
            other["ttl_ms"] = earlier["ttl_ms"] - 1 or 2
        elif change == "minimum":
            minimum = earlier.get("min_amount_micros", 1)
            other["amount_micros"] = max(2, earlier["amount_micros"])
            other["min_amount_micros"] = 2 if minimum == 1 else 1
        elif change == "reservation":
            other["reservation_id"] += 1
        elif change == "final":
            other["final"] = not earlier.get("final", False)
        elif change == "status":
            other["status"] = "active" if earlier.get("status") == "paused" else "paused"
        elif change == "daily":
            other["daily_budget_micros"] = earlier.get("daily_budget_micros", 100) + 1
        return other

    # ---------------------------------------------------------------------------------------
    # Rules

    @initialize(limits=limits_choices)
    def create_campaigns(self, limits: dict[str, int]) -> None:
        self.ledger = Ledger(Limits(**limits))
        self.replica = Ledger(Limits(**limits))
        self.model = ref.Reference(ref.Limits(**limits))
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

    @precondition(lambda self: self._live_reservations())
    @rule(data=st.data(), step=time_steps)
    def commit(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["commit"])

    @precondition(lambda self: self._live_reservations())
    @rule(data=st.data(), step=time_steps)
    def release(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["release"])

    @rule(data=st.data(), step=time_steps)
    def spend(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["spend"])

    @rule(data=st.data(), step=time_steps)
    def put_campaign(self, data: st.DataObject, step: int) -> None:
        self._run(data, self.model.now_ms + step, ["put"])

    @rule(data=st.data(), step=time_steps, pulse=st.booleans(), midnight=st.integers(0, 3))
    def advance_time(self, data: st.DataObject, step: int, pulse: bool, midnight: int) -> None:
        """A batch that only moves time (expiry, day roll), or a pulse: a step, a step into the
        past, or (one time in four) a jump to around a coming local midnight of one tree."""
        timestamp_ms = self.model.now_ms + step
        if midnight == 3:
            timezone = TREES[data.draw(st.sampled_from(sorted(TREES)), label="tree")][1]
            days_ahead = data.draw(st.sampled_from([1, 1, 1, 2, 3]), label="days ahead")
            day = ref.local_date(timezone, self.model.now_ms) + timedelta(days=days_ahead)
            offset_ms = data.draw(st.integers(-2_000, 2_000), label="offset")
            timestamp_ms = ref.local_midnight_ms(timezone, day) + offset_ms
        self._run(data, timestamp_ms, ["pulse"] if pulse else [])

    @precondition(lambda self: self.model.reservations or self.model.keys)
    @rule(data=st.data(), nudge_ms=st.sampled_from([0, -1, 1]))
    def at_a_boundary(self, data: st.DataObject, nudge_ms: int) -> None:
        """Time moves to (or 1 ms either side of) a moment when something changes, and the thing
        that changes is touched: an expiry (exact for commit and release, within its 100 ms
        bucket for holds), the end of an ended reservation's retention, an idempotency key's,
        a tree's next local midnight."""
        model = self.model
        limits = model.limits
        targets: dict[str, list[tuple[int, list[Any]]]] = {
            "expiry": [],
            "expiry bucket": [],
            "ended retention": [],
            "key retention": [],
            "midnight": [],
        }
        for _, timezone in TREES.values():
            tomorrow = ref.local_date(timezone, model.now_ms) + timedelta(days=1)
            midnight_ms = ref.local_midnight_ms(timezone, tomorrow)
            targets["midnight"] += [(midnight_ms, [kind]) for kind in MIDNIGHT_OPS]
        for rid, reservation in model.reservations.items():
            if reservation.forgotten:
                continue
            if reservation.state == "open":
                expires_ms = reservation.expires_at_ms
                bucket_ms = -(-expires_ms // ref.EXPIRY_BUCKET_MS) * ref.EXPIRY_BUCKET_MS
                targets["expiry"].append((expires_ms, [("commit", rid)]))
                targets["expiry"].append((expires_ms, [("release", rid)]))
                targets["expiry bucket"].append((bucket_ms, [] if rid % 2 else ["reserve"]))
            else:
                retained_ms = reservation.ended_at_ms + limits.ended_retention_ms
                targets["ended retention"].append((retained_ms, ["pulse", ("commit", rid)]))
        kept_ms = limits.idempotency_retention_ms + ref.KEY_BUCKET_MS
        for op in self.history:
            entry = model.keys.get(op["idempotency_key"])
            if entry is not None and entry[0] == ref.body_of(op):
                targets["key retention"].append((entry[2] + kept_ms, ["pulse", op]))
        kinds = [kind for kind in targets if targets[kind]]
        if kinds:
            kind = data.draw(st.sampled_from(kinds), label="boundary kind")
            timestamp_ms, ops = data.draw(st.sampled_from(targets[kind]), label=kind)
            self._run(data, timestamp_ms + nudge_ms, ops)

    @rule(
        data=st.data(),
        kinds=st.lists(
            st.sampled_from(
                [
                    *("reserve", "reserve", "commit", "commit", "release", "spend"),
                    *("pulse", "put", "retry", "reuse"),
                ]
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
                (
                    view["day"],
                    view["spent_today_micros"],
                    view["held_micros"],
                    view["overspend_micros"],
                )
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
    max_examples=400,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestLedgerModel = LedgerModel.TestCase
