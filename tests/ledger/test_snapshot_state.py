"""Snapshots of the ledger: `export_state`, `Ledger.from_state` and `digest`.

A node that installs a snapshot must become indistinguishable from the nodes that applied the
log: the same digest, the same reads, and the same decisions for every later batch, across day
rolls and expiries (I5). A state that is not one the ledger wrote is refused with
`SnapshotError`, never with another exception. The export is plain data that any codec carries.
"""

import contextlib
import copy
import json
import random
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetd.ledger import STATE_FORMAT, TZDATA_VERSION, Ledger, Limits, SnapshotError, codes

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
#: 2026-03-06 12:00 UTC: the busy history crosses New York's 23-hour 2026-03-08.
T0_MS = int(datetime(2026, 3, 6, 12, tzinfo=UTC).timestamp()) * 1000

LIMITS = Limits(
    ended_reservations_max=12,
    idempotency_retention_ms=8 * HOUR_MS,
    ended_retention_ms=HOUR_MS,
)

CAMPAIGNS: list[dict[str, Any]] = [
    {
        "campaign_id": "acme",
        "currency": "USD",
        "timezone": "UTC",
        "daily_budget_micros": 40_000_000,
        "total_budget_micros": 400_000_000,
        "pacing": {"mode": "even", "burst_ppm": 100_000},
    },
    {"campaign_id": "acme:summer", "daily_budget_micros": 15_000_000},
    {"campaign_id": "acme:summer:video", "total_budget_micros": 6_000_000},
    {"campaign_id": "acme:winter", "daily_budget_micros": 5_000_000, "status": "paused"},
    {
        "campaign_id": "ny",
        "currency": "USD",
        "timezone": "America/New_York",
        "daily_budget_micros": 9_000_000,
        "pacing": {"mode": "frontloaded"},
    },
    {"campaign_id": "ny:x", "daily_budget_micros": 4_000_000, "end_ms": T0_MS + 50 * HOUR_MS},
    {
        "campaign_id": "lh",
        "currency": "AUD",
        "timezone": "Australia/Lord_Howe",
        "daily_budget_micros": 7_000_000,
        "pacing": {
            "mode": "traffic_shaped",
            "hourly_weights": [
                0,
                0,
                0,
                0,
                0,
                1,
                2,
                3,
                4,
                5,
                5,
                5,
                5,
                5,
                5,
                5,
                5,
                4,
                4,
                3,
                2,
                1,
                1,
                0,
            ],
            "burst_ppm": 50_000,
        },
    },
    {"campaign_id": "ktm", "currency": "NPR", "timezone": "Asia/Kathmandu"},
    {"campaign_id": "ktm:a", "total_budget_micros": 3_000_000, "start_ms": T0_MS + HOUR_MS},
]
CAMPAIGN_IDS = [c["campaign_id"] for c in CAMPAIGNS] + ["ghost", "acme:ghost"]
BIDDERS = ["bidder-1", "bidder-2", "bidder-3"]


class Driver:
    """Sends pseudo-random but reproducible traffic to a ledger and keeps what it sent."""

    def __init__(self, ledger: Ledger, seed: int) -> None:
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.now_ms = ledger.now_ms
        self.keys = 0
        #: key -> (op, result) for every keyed op that was sent.
        self.sent: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.reservation_ids: list[int] = []

    def next_reservation_id(self) -> int:
        return self.ledger.stats()["next_reservation_id"]

    def key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    def op(self) -> dict[str, Any]:
        rng = self.rng
        kind = rng.choices(
            ["reserve", "commit", "release", "spend", "put", "pulse", "retry", "reuse"],
            weights=[30, 22, 8, 6, 4, 8, 6, 2],
        )[0]
        rids = self.reservation_ids or [1]
        if kind == "reserve":
            return {
                "op": "reserve",
                "idempotency_key": self.key(),
                "campaign_id": rng.choice(CAMPAIGN_IDS),
                "amount_micros": rng.choice([1, 50_000, 400_000, 2_000_000, 9_000_000]),
                "min_amount_micros": rng.choice([1, 1, 1, 40_000]),
                "ttl_ms": rng.choice([500, 30_000, 10 * MINUTE_MS, 3 * HOUR_MS, 20 * HOUR_MS]),
                "bidder_id": rng.choice(BIDDERS),
            }
        if kind == "commit":
            return {
                "op": "commit",
                "idempotency_key": self.key(),
                "reservation_id": rng.choice([*rids[-15:], rng.randint(1, len(rids) + 3)]),
                "amount_micros": rng.choice([1, 30_000, 300_000, 3_000_000]),
                "final": rng.random() < 0.4,
            }
        if kind == "release":
            return {
                "op": "release",
                "idempotency_key": self.key(),
                "reservation_id": rng.choice(rids[-15:]),
            }
        if kind == "spend":
            return {
                "op": "spend",
                "idempotency_key": self.key(),
                "campaign_id": rng.choice(CAMPAIGN_IDS),
                "amount_micros": rng.choice([10_000, 700_000, 12_000_000]),
                "bidder_id": rng.choice(BIDDERS),
            }
        if kind == "put":
            settings = copy.deepcopy(rng.choice(CAMPAIGNS))
            if "daily_budget_micros" in settings:
                settings["daily_budget_micros"] += rng.choice([0, 1_000_000, -1_000_000])
            if rng.random() < 0.3:
                settings["status"] = rng.choice(["active", "paused"])
            if rng.random() < 0.3:
                settings["expected_version"] = rng.randint(1, 3)
            if rng.random() < 0.5:
                settings["idempotency_key"] = self.key()
            return {"op": "put_campaign", **settings}
        if kind == "pulse" or not self.sent:
            return {"op": "pulse"}
        key = rng.choice(list(self.sent))
        original = self.sent[key][0]
        if kind == "retry":
            return copy.deepcopy(original)
        changed = copy.deepcopy(original)
        changed["amount_micros"] = changed.get("amount_micros", 0) + 1
        return changed

    def step(self, *, advance_ms: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        rng = self.rng
        if advance_ms is None:
            advance_ms = rng.choice([0, 0, 100, 2_000, 45_000, 7 * MINUTE_MS, 2 * HOUR_MS])
        self.now_ms += advance_ms
        stamp = self.now_ms - rng.choice([0, 0, 0, 1_000])  # now and then, a stamp in the past
        ops = [self.op() for _ in range(rng.randint(1, 6))]
        return stamp, ops

    def apply(self, stamp: int, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = self.ledger.apply_batch(stamp, ops)
        for op, result in zip(ops, results, strict=True):
            if "reservation_id" in result and op["op"] == "reserve" and result["code"] == "ok":
                self.reservation_ids.append(result["reservation_id"])
            key = op.get("idempotency_key")
            if (
                key is not None
                and result["code"] not in codes.UNRECORDED
                and not result.get("replayed")
            ):
                # Remembered now: first use, or again after the key was pruned.
                self.sent[key] = (op, result)
        return results


def _reserve(key: str, campaign_id: str, *, ttl_ms: int) -> dict[str, Any]:
    return {
        "op": "reserve",
        "idempotency_key": key,
        "campaign_id": campaign_id,
        "amount_micros": 10_000,
        "ttl_ms": ttl_ms,
        "bidder_id": "bidder-1",
    }


def _commit(key: str, reservation_id: int, amount_micros: int) -> dict[str, Any]:
    return {
        "op": "commit",
        "idempotency_key": key,
        "reservation_id": reservation_id,
        "amount_micros": amount_micros,
    }


def _setup_ops() -> list[dict[str, Any]]:
    return [{"op": "put_campaign", **settings} for settings in CAMPAIGNS]


@cache
def _busy_history() -> tuple[tuple[int, str], ...]:
    """The batches of the busy ledger, as JSON text (so every build gets fresh objects)."""
    ledger = Ledger(LIMITS)
    driver = Driver(ledger, seed=20260306)
    batches = [(T0_MS, _setup_ops())]
    driver.apply(*batches[0])
    driver.now_ms = T0_MS
    for _ in range(320):  # about three days of ledger time
        stamp, ops = driver.step()
        batches.append((stamp, ops))
        driver.apply(stamp, ops)
    # Last, for sure, on a tree of its own: a slice that expired and got a late commit, one
    # released, one still open over the coming midnight.
    now = driver.now_ms
    tail_root = {
        "op": "put_campaign",
        "campaign_id": "tail",
        "currency": "EUR",
        "timezone": "Europe/Paris",
        "daily_budget_micros": 1_000_000,
    }
    expired, released, still_open = (
        _reserve(key, "tail", ttl_ms=ttl_ms)
        for key, ttl_ms in [("tail-1", 500), ("tail-2", 600_000), ("tail-3", 20 * HOUR_MS)]
    )
    first = driver.next_reservation_id()
    tail = [
        (now + 1, [tail_root, expired, released, still_open]),
        (now + 2_000, [_commit("tail-4", first, 20_000)]),
        (
            now + 2_001,
            [{"op": "release", "idempotency_key": "tail-5", "reservation_id": first + 1}],
        ),
    ]
    for stamp, ops in tail:
        batches.append((stamp, ops))
        results = driver.apply(stamp, ops)
        assert all(r["code"] == codes.OK for r in results), results
    return tuple((stamp, json.dumps(ops)) for stamp, ops in batches)


def _busy() -> tuple[Ledger, Driver]:
    ledger = Ledger(LIMITS)
    driver = Driver(ledger, seed=1)
    for stamp, ops in _busy_history():
        driver.apply(stamp, json.loads(ops))
    driver.rng = random.Random(99)
    driver.now_ms = ledger.now_ms
    return ledger, driver


def _lists(value: Any) -> Any:
    """The state as a JSON codec gives it back: arrays as lists."""
    return json.loads(json.dumps(value))


def _tuples(value: Any) -> Any:
    """The state as msgpack with use_list=False gives it back: arrays as tuples."""
    if type(value) in (list, tuple):
        return tuple(_tuples(item) for item in value)
    if type(value) is dict:
        return {key: _tuples(item) for key, item in value.items()}
    return value


SHAPES = {"as_exported": copy.deepcopy, "json_lists": _lists, "msgpack_tuples": _tuples}


def _view(ledger: Ledger, campaign_id: str) -> dict[str, Any]:
    view = ledger.campaign(campaign_id)
    assert view is not None, campaign_id
    return view


def _views(ledger: Ledger) -> tuple[Any, ...]:
    ids = ledger.campaign_ids(limit=1_000)
    last_rid = ledger.stats()["next_reservation_id"]
    return (
        ledger.now_ms,
        ledger.stats(),
        ids,
        [ledger.campaign(campaign_id) for campaign_id in ids],
        [ledger.reservation(rid) for rid in range(1, last_rid + 1)],
    )


# ------------------------------------------------------------------------------------------------
# The busy ledger is busy


def test_the_busy_ledger_has_everything_a_snapshot_must_carry() -> None:
    ledger, driver = _busy()
    ledger.check_invariants()
    state = ledger.export_state()
    reservations = [ledger.reservation(rid) for rid in range(1, driver.reservation_ids[-1] + 1)]
    assert {r["state"] for r in reservations if r is not None} >= {"open", "closed", "expired"}
    assert any(r is not None and r["late"] for r in reservations)
    assert None in reservations  # some ended ones were already forgotten
    views = [_view(ledger, c["campaign_id"]) for c in CAMPAIGNS]
    assert any(view["previous_days"] for view in views)
    assert sum(view["late_commits_total"] for view in views) > 0
    assert sum(view["overspend_total_micros"] for view in views) > 0
    assert len({view["timezone"] for view in views}) == 4
    assert ledger.stats()["idempotency_keys"] > 20
    assert ledger.stats()["open_reservations"] > 0
    assert state["idempotency"], "no remembered keys"
    assert ledger.now_ms > T0_MS + 2 * 24 * HOUR_MS
    # Days rolled: the New York tree went through its 23-hour day.
    assert _view(ledger, "ny")["day"] >= "2026-03-08"


# ------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_a_round_trip_gives_an_equal_export_digest_and_reads(shape: str) -> None:
    ledger, _ = _busy()
    state = ledger.export_state()
    restored = Ledger.from_state(SHAPES[shape](state))
    assert restored.export_state() == state
    assert restored.digest() == ledger.digest()
    assert _views(restored) == _views(ledger)
    assert restored.limits == LIMITS
    restored.check_invariants()
    # A snapshot of the restored ledger is the same snapshot again.
    again = Ledger.from_state(SHAPES[shape](restored.export_state()))
    assert again.digest() == ledger.digest()


def test_the_digest_tells_states_apart() -> None:
    ledger, driver = _busy()
    before = ledger.digest()
    assert ledger.digest() == before  # reading twice changes nothing
    assert Ledger.from_state(ledger.export_state()).digest() == before
    driver.apply(ledger.now_ms, [{"op": "pulse"}])
    driver.apply(ledger.now_ms + 1, [])  # only the clock moves
    assert ledger.digest() != before


def test_from_state_leaves_its_input_alone_and_the_export_is_a_copy() -> None:
    ledger, _ = _busy()
    state = ledger.export_state()
    kept = copy.deepcopy(state)
    restored = Ledger.from_state(state)
    assert state == kept
    digest = restored.digest()
    # Whatever a codec or a caller does to an export afterwards, the ledgers do not change.
    for value in state.values():
        if type(value) is list:
            for item in value:
                if type(item) is list:
                    item.clear()
            value.clear()
    state["limits"].clear()
    assert restored.digest() == digest == ledger.digest()


def test_replays_of_keys_from_before_the_snapshot_give_the_original_results() -> None:
    ledger, driver = _busy()
    restored = Ledger.from_state(_lists(ledger.export_state()))
    live = ledger.export_state()["idempotency"]
    remembered = [key for _, keys in live for key in keys]
    assert len(remembered) > 20
    ops = [copy.deepcopy(driver.sent[key][0]) for key in remembered]
    now = ledger.now_ms
    originals = ledger.apply_batch(now, ops)
    assert originals == [{**driver.sent[key][1], "replayed": True} for key in remembered]
    assert restored.apply_batch(now, copy.deepcopy(ops)) == originals
    assert restored.digest() == ledger.digest()


@st.composite
def further_batches(draw: st.DrawFn) -> tuple[int, list[tuple[int, int, bool]]]:
    """A seed for the traffic, and per batch: how far time moves, how many ops, and whether
    the restored ledger is snapshotted and restored once more before it."""
    seed = draw(st.integers(0, 2**32))
    steps = draw(
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from([0, 50, 1_000]),
                    st.integers(0, 10 * MINUTE_MS),
                    st.integers(HOUR_MS, 30 * HOUR_MS),  # across expiries and midnights
                ),
                st.integers(0, 6),
                st.booleans(),
            ),
            min_size=1,
            max_size=25,
        )
    )
    return seed, steps


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=further_batches())
def test_a_restored_ledger_decides_like_the_original(
    case: tuple[int, list[tuple[int, int, bool]]],
) -> None:
    seed, steps = case
    ledger, driver = _busy()
    driver.rng = random.Random(seed)
    restored = Ledger.from_state(_lists(ledger.export_state()))
    for advance_ms, count, resnapshot in steps:
        if resnapshot:
            restored = Ledger.from_state(_tuples(restored.export_state()))
        driver.now_ms += advance_ms
        ops = [driver.op() for _ in range(count)]
        stamp = driver.now_ms
        expected = driver.apply(stamp, ops)
        assert restored.apply_batch(stamp, copy.deepcopy(ops)) == expected
        assert restored.digest() == ledger.digest()
    assert _views(restored) == _views(ledger)
    restored.check_invariants()
    ledger.check_invariants()


def test_a_restored_ledger_rolls_days_and_expires_like_the_original() -> None:
    """The same, spelled out: an open slice expires and takes a late commit, every tree rolls
    over midnight, old keys are pruned — on both ledgers alike."""
    ledger, driver = _busy()
    restored = Ledger.from_state(_lists(ledger.export_state()))
    slice_id = driver.sent["tail-3"][1]["reservation_id"]  # open, 20 h to live
    assert ledger.reservation(slice_id)["state"] == "open"  # type: ignore[index]
    old_key = next(iter(driver.sent))
    days_before = {c["campaign_id"]: _view(ledger, c["campaign_id"])["day"] for c in CAMPAIGNS}

    def both(advance_ms: int, extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
        driver.now_ms += advance_ms
        ops = [driver.op() for _ in range(8)] + extra + [{"op": "pulse"}]
        expected = driver.apply(driver.now_ms, ops)
        assert restored.apply_batch(driver.now_ms, copy.deepcopy(ops)) == expected
        assert restored.digest() == ledger.digest()
        return expected

    both(10 * MINUTE_MS, [])
    late = _commit("late-1", slice_id, 5_000)
    results = both(21 * HOUR_MS, [late])
    assert results[-2]["code"] == codes.OK and results[-2]["late"] is True
    assert restored.reservation(slice_id) == ledger.reservation(slice_id)
    assert ledger.reservation(slice_id)["state"] == "expired"  # type: ignore[index]
    both(6 * HOUR_MS, [])
    both(30 * HOUR_MS, [])
    assert old_key not in {k for _, keys in ledger.export_state()["idempotency"] for k in keys}
    for campaign in CAMPAIGNS:
        campaign_id = campaign["campaign_id"]
        assert _view(ledger, campaign_id)["day"] > days_before[campaign_id]
        assert restored.campaign(campaign_id) == ledger.campaign(campaign_id)
    assert _views(restored) == _views(ledger)
    restored.check_invariants()


# ------------------------------------------------------------------------------------------------
# Plain data


def _assert_plain(value: Any, path: str = "state") -> None:
    """dict (str keys), list, str, int, bool, None; tuples too, which export_state documents
    for idempotency entries and every codec carries as arrays. Never a float, a set, bytes or an
    object of the ledger."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            assert type(key) is str, f"{path}: key {key!r}"
            _assert_plain(item, f"{path}.{key}")
    elif kind in (list, tuple):
        for index, item in enumerate(value):
            _assert_plain(item, f"{path}[{index}]")
    else:
        assert kind in (str, int, bool, type(None)), f"{path}: {kind.__name__} {value!r}"


def test_the_export_is_plain_data_without_floats() -> None:
    ledger, _ = _busy()
    state = ledger.export_state()
    _assert_plain(state)
    # No float, NaN or infinity hides anywhere: strict JSON accepts it and gives it back equal.
    text = json.dumps(state, allow_nan=False)
    assert Ledger.from_state(json.loads(text)).digest() == ledger.digest()
    assert state["format"] == STATE_FORMAT
    assert state["tzdata"] == TZDATA_VERSION


def test_an_empty_ledger_round_trips() -> None:
    empty = Ledger()
    state = empty.export_state()
    _assert_plain(state)
    restored = Ledger.from_state(_lists(state))
    assert restored.digest() == empty.digest()
    assert restored.export_state() == state


# ------------------------------------------------------------------------------------------------
# Malformed states


@cache
def _small_state_json() -> str:
    """A small state with one row of everything: a tree, an open and an ended reservation, and
    remembered keys."""
    ledger = Ledger(LIMITS)
    ledger.apply_batch(T0_MS, [*_setup_ops()[:2]])
    results = ledger.apply_batch(
        T0_MS + MINUTE_MS,
        [
            {
                "op": "reserve",
                "idempotency_key": "r1",
                "campaign_id": "acme:summer",
                "amount_micros": 1_000_000,
                "ttl_ms": HOUR_MS,
                "bidder_id": "bidder-1",
            },
            {
                "op": "reserve",
                "idempotency_key": "r2",
                "campaign_id": "acme",
                "amount_micros": 500_000,
                "ttl_ms": HOUR_MS,
                "bidder_id": "bidder-2",
            },
            {"op": "release", "idempotency_key": "l2", "reservation_id": 2},
        ],
    )
    assert [r["code"] for r in results] == ["ok"] * 3
    state = _lists(ledger.export_state())
    assert len(state["campaigns"]) == 2 and len(state["reservations"]) == 2
    assert len(state["ended"]) == 1 and state["idempotency_entries"]
    return json.dumps(state)


def _small_state() -> dict[str, Any]:
    state: dict[str, Any] = json.loads(_small_state_json())
    return state


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(state: dict[str, Any]) -> None:
        target: Any = state
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Any:
    def mutate(state: dict[str, Any]) -> None:
        target: Any = state
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


#: campaign row 0 is the root "acme", row 1 its child; reservation row 0 is open, row 1 ended.
ZONE = 3
DAYS = 19
MALFORMED: dict[str, Any] = {
    "format 2": _set(("format",), 2),
    "format 0": _set(("format",), 0),
    "format None": _set(("format",), None),
    "format '1'": _set(("format",), "1"),
    "format [1]": _set(("format",), [1]),
    "unknown zone": _set(("campaigns", 0, ZONE), "Mars/Olympus"),
    "zone path traversal": _set(("campaigns", 0, ZONE), "../../etc/passwd"),
    "zone lowercase": _set(("campaigns", 0, ZONE), "utc"),
    "zone empty": _set(("campaigns", 0, ZONE), ""),
    "zone number": _set(("campaigns", 0, ZONE), 5),
    "zone None": _set(("campaigns", 0, ZONE), None),
    "zone list": _set(("campaigns", 0, ZONE), ["UTC"]),
    "campaign row truncated": lambda s: s["campaigns"][0].pop(),
    "campaign row too long": lambda s: s["campaigns"][0].append(0),
    "campaign row empty": _set(("campaigns", 0), []),
    "campaign row not a list": _set(("campaigns", 0), "acme"),
    "campaign without days": _set(("campaigns", 0, DAYS), []),
    "day row truncated": lambda s: s["campaigns"][0][DAYS][0].pop(),
    "day of the child missing at the parent": lambda s: s["campaigns"][1][DAYS][0].__setitem__(
        0, s["campaigns"][1][DAYS][0][0] + 1
    ),
    "child before its parent": lambda s: s["campaigns"].reverse(),
    "parent missing": lambda s: s["campaigns"].pop(0),
    "reservation row truncated": lambda s: s["reservations"][0].pop(),
    "reservation row empty": _set(("reservations", 0), []),
    "reservation of a missing campaign": _set(("reservations", 0, 1), "ghost"),
    "open reservation on a day not kept": _set(("reservations", 0, 6), 1),
    "ended lists a missing reservation": _set(("ended",), [99]),
    "ended lists an open reservation": _set(("ended",), [1, 2]),
    "idempotency bucket truncated": lambda s: s["idempotency"][0].pop(),
    "idempotency entry truncated": lambda s: s["idempotency_entries"][0].pop(),
    "idempotency entries fewer than keys": lambda s: s["idempotency_entries"].pop(),
    "idempotency keys fewer than entries": lambda s: s["idempotency"][0][1].pop(),
    "limits invalid": _set(("limits", "campaigns_max"), 0),
    "limits unknown": _set(("limits", "reservations_max"), 10),
    "limits not a map": _set(("limits",), [1, 2]),
    "ttl limit above a day": _set(("limits", "ttl_ms_max"), 86_400_001),
    "now not a number": _set(("now_ms",), "soon"),
    "now infinite": _set(("now_ms",), float("inf")),
    "now NaN": _set(("now_ms",), float("nan")),
    "day ordinal huge": lambda s: [row[DAYS][0].__setitem__(0, 10**30) for row in s["campaigns"]],
    "day ordinal 0": lambda s: [row[DAYS][0].__setitem__(0, 0) for row in s["campaigns"]],
    "day ordinal past 9999": lambda s: [
        row[DAYS][0].__setitem__(0, 3_652_059) for row in s["campaigns"]
    ],
    "campaigns not a list": _set(("campaigns",), {"acme": 1}),
    "reservations None": _set(("reservations",), None),
    **{
        f"section {name} missing": _delete((name,))
        for name in [
            "format",
            "tzdata",
            "limits",
            "now_ms",
            "campaign_seq",
            "next_reservation_id",
            "next_control_ms",
            "campaigns",
            "reservations",
            "ended",
            "idempotency",
            "idempotency_entries",
        ]
    },
}


def test_the_malformed_cases_cover_every_section() -> None:
    exported = set(Ledger().export_state())
    missing = {name.split()[1] for name in MALFORMED if name.startswith("section")}
    assert missing == exported


@pytest.mark.parametrize("name", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_state_raises_snapshot_error(name: str) -> None:
    state = _small_state()
    assert Ledger.from_state(copy.deepcopy(state)).export_state() is not None
    MALFORMED[name](state)
    with pytest.raises(SnapshotError):
        Ledger.from_state(state)


@pytest.mark.parametrize(
    "state", [None, [], (), "", "{}", 0, 1, True, b"", [["format", 1]], {}], ids=repr
)
def test_a_state_that_is_not_a_map_or_is_empty_raises_snapshot_error(state: object) -> None:
    with pytest.raises(SnapshotError):
        Ledger.from_state(state)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["UTC", "acme", "ok", "even", 0, 1, 2, -1, 10**6]),
)
garbage = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a list or dict in the state."""
    out = [path]
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        if type(item) in (list, dict):
            out.extend(_containers(item, (*path, key)))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_damaged_state_is_restored_or_refused_never_a_crash(data: st.DataObject) -> None:
    state = _small_state()
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_containers(state)))
        target: Any = state
        for step in path:
            target = target[step]
        keys = list(target) if type(target) is dict else list(range(len(target)))
        action = data.draw(st.sampled_from(["replace", "delete", "append"]))
        if action == "append" or not keys:
            if type(target) is dict:
                target[data.draw(st.text(max_size=5))] = data.draw(garbage)
            else:
                target.append(data.draw(garbage))
            continue
        key = data.draw(st.sampled_from(keys))
        if action == "delete":
            del target[key]
        else:
            target[key] = data.draw(garbage)
    with contextlib.suppress(SnapshotError):
        Ledger.from_state(state)
