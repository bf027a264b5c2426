"""Defence in depth: whatever arrives in a batch, `Ledger.apply_batch` answers with a code.

The API validates requests first, but a log entry can hold anything a codec decodes (and a
raising apply would be retried forever by the Raft library). So every field of every op is
checked again in the ledger: a malformed op is refused with ``invalid_request`` (an oversized
batch with ``limit_reached``), and a refusal of that kind writes nothing — not the op's effect,
not its idempotency key. "Nothing" is checked with `Ledger.digest()` before and after, and by
sending a valid op with the same key afterwards: it must be applied fresh, not replayed.
"""

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetd.ledger import INT64_MAX, Ledger, Limits, codes, render_results

T0_MS = int(datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()) * 1000
DAY_MS = 86_400_000
ALL_CODES = frozenset({codes.OK, *codes.REFUSALS})

#: The reservation the fixture leaves open, and one it closed.
OPEN_RID = 1
CLOSED_RID = 2


def _fixture(limits: Limits | None = None) -> Ledger:
    """A small live ledger: a tree with budgets and even pacing, an open and a closed
    reservation, spend, and remembered idempotency keys. The same every time."""
    ledger = Ledger(limits)
    results = ledger.apply_batch(
        T0_MS,
        [
            {
                "op": "put_campaign",
                "campaign_id": "acme",
                "currency": "USD",
                "timezone": "UTC",
                "daily_budget_micros": 100_000_000,
                "total_budget_micros": 1_000_000_000,
                "pacing": {"mode": "even", "burst_ppm": 500_000},
            },
            {
                "op": "put_campaign",
                "idempotency_key": "put-summer",
                "campaign_id": "acme:summer",
                "daily_budget_micros": 50_000_000,
            },
            {
                "op": "reserve",
                "idempotency_key": "fixture-r1",
                "campaign_id": "acme:summer",
                "amount_micros": 1_000_000,
                "ttl_ms": 3_600_000,
                "bidder_id": "bidder-1",
            },
            {
                "op": "reserve",
                "idempotency_key": "fixture-r2",
                "campaign_id": "acme",
                "amount_micros": 2_000_000,
                "ttl_ms": 3_600_000,
                "bidder_id": "bidder-2",
            },
        ],
    )
    assert [r["code"] for r in results] == [codes.OK] * 4
    results = ledger.apply_batch(
        T0_MS,
        [
            {"op": "release", "idempotency_key": "fixture-l2", "reservation_id": CLOSED_RID},
            {
                "op": "spend",
                "idempotency_key": "fixture-s1",
                "campaign_id": "acme:summer",
                "amount_micros": 300_000,
                "bidder_id": "bidder-1",
            },
        ],
    )
    assert [r["code"] for r in results] == [codes.OK] * 2
    return ledger


#: One valid op of each kind; on the fixture each is applied ("ok") and changes the state.
BASE: dict[str, dict[str, Any]] = {
    "put_campaign": {
        "op": "put_campaign",
        "idempotency_key": "put-k",
        "campaign_id": "beta",
        "currency": "EUR",
        "timezone": "Europe/Paris",
        "daily_budget_micros": 5_000_000,
        "total_budget_micros": 50_000_000,
        "start_ms": 0,
        "end_ms": T0_MS + 30 * DAY_MS,
        "pacing": {"mode": "traffic_shaped", "hourly_weights": [1] * 24, "burst_ppm": 10_000},
        "status": "active",
    },
    "reserve": {
        "op": "reserve",
        "idempotency_key": "reserve-k",
        "campaign_id": "acme:summer",
        "amount_micros": 1_000,
        "min_amount_micros": 1,
        "ttl_ms": 60_000,
        "bidder_id": "bidder-1",
    },
    "commit": {
        "op": "commit",
        "idempotency_key": "commit-k",
        "reservation_id": OPEN_RID,
        "amount_micros": 100,
        "final": False,
    },
    "release": {"op": "release", "idempotency_key": "release-k", "reservation_id": OPEN_RID},
    "spend": {
        "op": "spend",
        "idempotency_key": "spend-k",
        "campaign_id": "acme:summer",
        "amount_micros": 100,
        "bidder_id": "bidder-1",
    },
    "pulse": {"op": "pulse"},
}

ABSENT = object()


def _variant(name: str, field: str, value: object) -> dict[str, Any]:
    """BASE[name] with ``field`` set to ``value`` (or removed, for ABSENT). ``pacing.x`` reaches
    into the pacing map."""
    op = copy.deepcopy(BASE[name])
    target = op
    if field.startswith("pacing."):
        target = op["pacing"]
        field = field.removeprefix("pacing.")
    if value is ABSENT:
        del target[field]
    else:
        target[field] = value
    return op


# ------------------------------------------------------------------------------------------------
# The bad values, field by field

NOT_INTS: list[object] = [
    "100",
    "",
    100.0,
    1e3,
    float("nan"),
    float("inf"),
    True,
    False,
    [],
    [100],
    {},
    {"value": 100},
    b"100",
    2**63,
    2**64,
    -(2**63),
    -1,
]
NOT_TOKENS: list[object] = [
    "",
    "k" * 129,
    "k\x00",
    "k\n",
    "k\t",
    "k\x7f",
    "k\x1b[31m",
    "clé",
    "k\u200b",
    "k\ud800",
    5,
    5.0,
    True,
    ["k"],
    {"k": 1},
    b"k",
]
NOT_CAMPAIGN_IDS: list[object] = [
    "",
    "a:b:c:d:e",  # five levels
    "x" * 65,
    "acme:" + "x" * 65,
    "acme:",
    ":acme",
    "acme::summer",
    "ac me",
    "acme/summer",
    "../acme",
    "acmé",
    "acme\x00",
    "acme\n",
    "ACME\u0301",
    5,
    True,
    ["acme"],
    {"acme": 1},
    b"acme",
]
NOT_CURRENCIES: list[object] = ["usd", "US", "XXX", "USD ", "", 840, True, [], {}, ["USD"]]
NOT_ZONES: list[object] = [
    "../../etc/passwd",
    "",
    "Not/AZone",
    "A" * 200,
    "utc",
    "posix/UTC",
    "America/New_York\x00",
    5,
    True,
    [],
    {},
    ["UTC"],
]
NOT_WEIGHTS: list[object] = [
    [1] * 23,
    [1] * 25,
    [],
    [-1] + [1] * 23,
    [0] * 24,
    [1_000_001] + [1] * 23,
    [1.0] * 24,
    [True] * 24,
    ["1"] * 24,
    [None] * 24,
    [[1]] * 24,
    "1" * 24,
    {str(hour): 1 for hour in range(24)},
    24,
    None,
]

CASES: list[tuple[str, str, object]] = []


def _cases(name: str, field: str, values: list[object]) -> None:
    CASES.extend((name, field, value) for value in values)


# Wrong types and ranges, for every field of every op.
_cases("reserve", "idempotency_key", [*NOT_TOKENS, None, ABSENT])
_cases("reserve", "campaign_id", [*NOT_CAMPAIGN_IDS, None, ABSENT])
_cases("reserve", "amount_micros", [*NOT_INTS, 0, None, ABSENT])
_cases("reserve", "min_amount_micros", [*NOT_INTS, 0, 1_001])
_cases("reserve", "ttl_ms", [*NOT_INTS, 0, 86_400_001, None, ABSENT])
_cases("reserve", "bidder_id", [*NOT_TOKENS, None, ABSENT])
_cases("commit", "idempotency_key", [*NOT_TOKENS, None, ABSENT])
_cases("commit", "reservation_id", [*NOT_INTS, 0, None, ABSENT])
_cases("commit", "amount_micros", [*NOT_INTS, 0, None, ABSENT])
_cases("commit", "final", ["true", "", 1, 0, [], {}])
_cases("release", "idempotency_key", [*NOT_TOKENS, None, ABSENT])
_cases("release", "reservation_id", [*NOT_INTS, 0, None, ABSENT])
_cases("spend", "idempotency_key", [*NOT_TOKENS, None, ABSENT])
_cases("spend", "campaign_id", [*NOT_CAMPAIGN_IDS, None, ABSENT])
_cases("spend", "amount_micros", [*NOT_INTS, 0, None, ABSENT])
_cases("spend", "bidder_id", [*NOT_TOKENS, None, ABSENT])
_cases("put_campaign", "idempotency_key", NOT_TOKENS)
_cases("put_campaign", "campaign_id", [*NOT_CAMPAIGN_IDS, None, ABSENT])
_cases("put_campaign", "currency", [*NOT_CURRENCIES, None, ABSENT])  # a root needs one
_cases("put_campaign", "timezone", [*NOT_ZONES, None, ABSENT])  # a root needs one
_cases("put_campaign", "daily_budget_micros", [*NOT_INTS, 0])
_cases("put_campaign", "total_budget_micros", [*NOT_INTS, 0])
_cases("put_campaign", "start_ms", NOT_INTS)
_cases("put_campaign", "end_ms", [*NOT_INTS, 0])  # 0 is not after start_ms 0
_cases("put_campaign", "expected_version", [*NOT_INTS, 0])
_cases("put_campaign", "status", ["PAUSED", "Active", "", "on", 1, True, [], {}])
_cases("put_campaign", "pacing", ["even", "", 5, True, [], ["even"]])
_cases("put_campaign", "pacing.mode", ["fast", "EVEN", "", 5, True, None, [], {}])
_cases("put_campaign", "pacing.hourly_weights", [*NOT_WEIGHTS, ABSENT])
_cases("put_campaign", "pacing.burst_ppm", [*NOT_INTS, 1_000_001])
# Unknown fields (also where an optional field is absent, so the op has its usual length).
for _name in BASE:
    _cases(_name, "bogus", [1, None])
    _cases(_name, "Op", ["reserve"])
    _cases(_name, "", [1])
    _cases(_name, "op\x00", [1])
_cases("put_campaign", "pacing.bogus", [1])
_cases("pulse", "idempotency_key", ["pulse-k"])  # a pulse takes no fields at all
_cases("pulse", "now_ms", [T0_MS + 1])


def _case_id(case: tuple[str, str, object]) -> str:
    name, field, value = case
    shown = "ABSENT" if value is ABSENT else repr(value)
    return f"{name}.{field}={shown[:30]}"


def _assert_refused_and_unchanged(
    ledger: Ledger, ops: object, *, expected: list[str], timestamp_ms: object = ABSENT
) -> list[dict[str, Any]]:
    before = ledger.digest()
    now_before = ledger.now_ms
    when = ledger.now_ms if timestamp_ms is ABSENT else timestamp_ms
    results = ledger.apply_batch(when, ops)
    assert [r["code"] for r in results] == expected, results
    for result in results:
        assert type(result["detail"]) is str and result["detail"]
        assert "replayed" not in result
    assert ledger.now_ms == now_before
    assert ledger.digest() == before, "a refused batch changed the state"
    ledger.check_invariants()
    return results


def _assert_keys_unused(ledger: Ledger, names: list[str]) -> None:
    """The base ops' idempotency keys were not remembered: each base op is applied fresh."""
    ops = [copy.deepcopy(BASE[name]) for name in names]
    if "commit" in names and "release" in names:
        raise AssertionError("commit and release share a reservation; check them apart")
    before = ledger.digest()
    results = ledger.apply_batch(ledger.now_ms, ops)
    for name, result in zip(names, results, strict=True):
        assert result["code"] == codes.OK, (name, result)
        assert "replayed" not in result
    assert ledger.digest() != before


def test_every_base_op_is_valid_and_changes_the_state() -> None:
    """Without this, 'the digest did not change' would prove nothing."""
    for name in BASE:
        ledger = _fixture()
        before = ledger.digest()
        [result] = ledger.apply_batch(ledger.now_ms, [copy.deepcopy(BASE[name])])
        assert result["code"] == codes.OK, (name, result)
        assert ledger.digest() != before, name
        ledger.check_invariants()


@pytest.mark.parametrize("case", CASES, ids=[_case_id(case) for case in CASES])
def test_a_malformed_field_is_refused_and_writes_nothing(case: tuple[str, str, object]) -> None:
    name, field, value = case
    ledger = _fixture()
    op = _variant(name, field, value)
    [result] = _assert_refused_and_unchanged(ledger, [op], expected=[codes.INVALID_REQUEST])
    if field not in ("", "Op", "op\x00", "bogus", "pacing.bogus"):
        # The detail names what is wrong (the root's currency and zone: "a root campaign needs
        # a currency and a timezone").
        assert field.removeprefix("pacing.") in result["detail"], result["detail"]
    _assert_keys_unused(ledger, [name])


@pytest.mark.parametrize(
    "op",
    [
        # A child repeats its root's currency and zone, or omits them: never others.
        {"op": "put_campaign", "campaign_id": "acme:new", "currency": "EUR"},
        {"op": "put_campaign", "campaign_id": "acme:new", "timezone": "Europe/Paris"},
        {"op": "put_campaign", "campaign_id": "acme:new", "currency": "USD", "timezone": "Etc/UTC"},
        # A campaign's currency and zone are fixed for life.
        {"op": "put_campaign", "campaign_id": "acme", "currency": "EUR", "timezone": "UTC"},
        {"op": "put_campaign", "campaign_id": "acme", "currency": "USD", "timezone": "Asia/Tokyo"},
        # Paced modes need a daily budget; weights belong to traffic_shaped.
        {
            "op": "put_campaign",
            "campaign_id": "acme:new",
            "pacing": {"mode": "even"},
        },
        {
            "op": "put_campaign",
            "campaign_id": "acme:new",
            "daily_budget_micros": 1_000,
            "pacing": {"mode": "even", "hourly_weights": [1] * 24},
        },
        {
            "op": "put_campaign",
            "campaign_id": "acme:new",
            "daily_budget_micros": 1_000,
            "pacing": {"mode": "traffic_shaped"},
        },
        # A flight ends after it starts.
        {
            "op": "put_campaign",
            "campaign_id": "acme:new",
            "start_ms": T0_MS,
            "end_ms": T0_MS,
        },
        {
            "op": "put_campaign",
            "campaign_id": "acme:new",
            "start_ms": T0_MS + 1,
            "end_ms": T0_MS,
        },
        # The minimum cannot exceed the amount asked.
        {**BASE["reserve"], "amount_micros": 10, "min_amount_micros": 11},
        # An unknown field while an optional one is absent: the op has its usual length.
        {
            **{k: v for k, v in BASE["reserve"].items() if k != "min_amount_micros"},
            "bogus": 1,
        },
        {**{k: v for k, v in BASE["commit"].items() if k != "final"}, "bogus": 1},
        {**{k: v for k, v in BASE["reserve"].items() if k != "amount_micros"}, "amount": 1_000},
        # Unknown fields that are not strings (a decoded map may have any keys).
        {**BASE["spend"], 5: 1},
        {**BASE["release"], None: 1},
        {**BASE["commit"], (1, 2): 1},
    ],
    ids=lambda op: repr(op)[:60],
)
def test_a_malformed_op_is_refused_and_writes_nothing(op: dict[Any, Any]) -> None:
    ledger = _fixture()
    _assert_refused_and_unchanged(ledger, [op], expected=[codes.INVALID_REQUEST])
    ledger.check_invariants()
    if op["op"] != "put_campaign":
        _assert_keys_unused(ledger, [op["op"]])


@pytest.mark.parametrize(
    "op",
    [
        "reserve",
        "",
        5,
        1.5,
        None,
        True,
        [],
        ["op", "reserve"],
        ("op", "reserve"),
        b"reserve",
        {},
        {"op": None},
        {"op": ""},
        {"op": "RESERVE"},
        {"op": "Reserve"},
        {"op": "reserve "},
        {"op": "_reserve"},
        {"op": "__class__"},
        {"op": "apply_batch"},
        {"op": "export_state"},
        {"op": "replay"},
        {"op": 5},
        {"op": True},
        {"op": ["reserve"]},
        {"op": {"reserve": 1}},
        {**BASE["reserve"], "op": "Reserve"},
        {k: v for k, v in BASE["spend"].items() if k != "op"},
    ],
    ids=repr,
)
def test_an_op_that_is_not_a_known_op_map_is_refused(op: object) -> None:
    ledger = _fixture()
    _assert_refused_and_unchanged(ledger, [op], expected=[codes.INVALID_REQUEST])
    _assert_keys_unused(ledger, ["reserve", "spend"])


def test_a_bad_op_between_good_ones_is_skipped_alone() -> None:
    bad = _variant("reserve", "amount_micros", "1000")
    mixed = _fixture()
    clean = _fixture()
    results = mixed.apply_batch(T0_MS, [BASE["spend"], bad, BASE["reserve"], "junk"])
    assert [r["code"] for r in results] == [
        codes.OK,
        codes.INVALID_REQUEST,
        codes.OK,
        codes.INVALID_REQUEST,
    ]
    expected = clean.apply_batch(T0_MS, [BASE["spend"], BASE["reserve"]])
    assert [results[0], results[2]] == expected
    assert mixed.digest() == clean.digest()


# ------------------------------------------------------------------------------------------------
# The batch itself


@pytest.mark.parametrize(
    "ops",
    [None, {}, {"ops": [BASE["spend"]]}, "spend", 5, True, (BASE["spend"],), b"\x90"],
    ids=repr,
)
def test_a_batch_that_is_not_a_list_is_refused(ops: object) -> None:
    ledger = _fixture()
    _assert_refused_and_unchanged(ledger, ops, expected=[codes.INVALID_REQUEST])
    _assert_keys_unused(ledger, ["spend"])


@pytest.mark.parametrize(
    "timestamp_ms",
    [
        -1,
        -(2**63),
        float(T0_MS + 1),
        1.78e12,
        float("nan"),
        True,
        False,
        str(T0_MS + 1),
        None,
        [T0_MS + 1],
        {"timestamp_ms": T0_MS + 1},
        2**63,
        2**64,
    ],
    ids=repr,
)
def test_a_bad_batch_timestamp_refuses_every_op(timestamp_ms: object) -> None:
    ledger = _fixture()
    ops = [BASE["spend"], BASE["reserve"], {"op": "pulse"}]
    _assert_refused_and_unchanged(
        ledger, ops, expected=[codes.INVALID_REQUEST] * 3, timestamp_ms=timestamp_ms
    )
    _assert_keys_unused(ledger, ["spend", "reserve", "pulse"])


@pytest.mark.parametrize(
    "timestamp_ms",
    [
        int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()) * 1000 + 999,
        2**62,
        INT64_MAX,
    ],
    ids=["9999-12-31T23:59:59.999Z", "2**62", "INT64_MAX"],
)
def test_an_int64_timestamp_beyond_the_calendar_is_refused_not_a_crash(timestamp_ms: int) -> None:
    """A timestamp that fits int64 but whose local day has no date (past year 9999) must be
    refused like any other bad timestamp. It must not raise out of apply_batch (the Raft library
    retries a raising apply forever) nor move the clock to where no day can roll."""
    ledger = _fixture()
    ops = [BASE["spend"], {"op": "pulse"}]
    _assert_refused_and_unchanged(
        ledger, ops, expected=[codes.INVALID_REQUEST] * 2, timestamp_ms=timestamp_ms
    )
    _assert_keys_unused(ledger, ["spend", "reserve"])


def test_an_int64_timestamp_beyond_the_calendar_on_an_empty_ledger() -> None:
    """Even with no campaign yet: accepting the time would make every later put_campaign fail."""
    ledger = Ledger()
    results = ledger.apply_batch(2**62, [BASE["put_campaign"]])
    assert [r["code"] for r in results] == [codes.INVALID_REQUEST]
    assert ledger.apply_batch(T0_MS, [BASE["put_campaign"]])[0]["code"] == codes.OK


def test_an_oversized_batch_is_refused_whole_and_writes_nothing() -> None:
    limits = Limits(batch_ops_max=4)
    ledger = _fixture(limits)
    ops = [BASE["spend"], BASE["reserve"], BASE["commit"], BASE["put_campaign"], {"op": "pulse"}]
    _assert_refused_and_unchanged(ledger, ops, expected=[codes.LIMIT_REACHED] * 5)
    # At the limit, the same ops (but one) are applied, fresh.
    results = ledger.apply_batch(ledger.now_ms, ops[:4])
    assert [r["code"] for r in results] == [codes.OK] * 4
    assert all("replayed" not in r for r in results)


def test_an_oversized_batch_at_the_default_limit_is_refused() -> None:
    ledger = _fixture()
    size = Limits().batch_ops_max + 1
    ops = [{**BASE["spend"], "idempotency_key": f"s{i}"} for i in range(size)]
    before = ledger.digest()
    results = ledger.apply_batch(ledger.now_ms, ops)
    assert len(results) == size
    assert {r["code"] for r in results} == {codes.LIMIT_REACHED}
    assert ledger.digest() == before
    assert ledger.apply_batch(ledger.now_ms, ops[:1])[0] == {
        "code": codes.OK,
        "recorded_micros": 100,
        "overspend_micros": 0,
        "day": "2026-06-01",
    }


@pytest.mark.parametrize(
    ("limits", "name"),
    [
        # The fixture holds one open reservation (and two, once) and five idempotency keys.
        (Limits(open_reservations_max=2, idempotency_keys_max=7), "reserve"),
        (Limits(idempotency_keys_max=5), "reserve"),
        (Limits(idempotency_keys_max=5), "spend"),
        (Limits(idempotency_keys_max=5), "commit"),
        (Limits(idempotency_keys_max=5), "release"),
        (Limits(idempotency_keys_max=5), "put_campaign"),
        (Limits(campaigns_max=2), "put_campaign"),
    ],
    ids=[
        "open_reservations-reserve",
        "keys-reserve",
        "keys-spend",
        "keys-commit",
        "keys-release",
        "keys-put_campaign",
        "campaigns-put_campaign",
    ],
)
def test_a_full_table_refuses_with_limit_reached_and_writes_nothing(
    limits: Limits, name: str
) -> None:
    ledger = _fixture(limits)
    if limits.open_reservations_max == 2:
        filler = {**BASE["reserve"], "idempotency_key": "filler"}
        assert ledger.apply_batch(ledger.now_ms, [filler])[0]["code"] == codes.OK
    _assert_refused_and_unchanged(ledger, [BASE[name]], expected=[codes.LIMIT_REACHED])
    # Room again (a slice released, the limit lifted by a restore): the same key is fresh.
    state = ledger.export_state()
    state["limits"] = Limits().to_plain()
    roomy = Ledger.from_state(state)
    if name == "reserve":
        roomy.apply_batch(roomy.now_ms, [BASE["release"]])
    _assert_keys_unused(roomy, [name])


# ------------------------------------------------------------------------------------------------
# Garbage, generated

FIELD_NAMES = sorted(
    {field for op in BASE.values() for field in op} | {"mode", "hourly_weights", "burst_ppm"}
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**65), 2**65),
    st.sampled_from([0, 1, 2, 3, 100, 2**63 - 1, 2**63, -1, T0_MS]),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=4),
    st.sampled_from(
        [
            *BASE,
            "acme",
            "acme:summer",
            "beta",
            "ghost",
            "USD",
            "EUR",
            "UTC",
            "Europe/Paris",
            "even",
            "asap",
            "frontloaded",
            "traffic_shaped",
            "active",
            "paused",
            "reserve-k",
            "fixture-r1",
            "put-summer",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=25),
        st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), inner, max_size=6),
    ),
    max_leaves=30,
)
garbage_ops = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=8) | st.integers() | st.none(),
    json_values,
    max_size=12,
)


@st.composite
def mutated_ops(draw: st.DrawFn) -> dict[Any, Any]:
    """A valid op with one to three fields replaced, removed or added."""
    op = copy.deepcopy(BASE[draw(st.sampled_from(sorted(BASE)))])
    for _ in range(draw(st.integers(1, 3))):
        fields = sorted(str(field) for field in op) or FIELD_NAMES
        field = draw(st.sampled_from(fields) | st.sampled_from(FIELD_NAMES) | st.text(max_size=6))
        if field in op and draw(st.booleans()):
            del op[field]
        elif field == "pacing" and type(op.get(field)) is dict and draw(st.booleans()):
            op[field][draw(st.sampled_from(["mode", "hourly_weights", "burst_ppm", "x"]))] = draw(
                json_values
            )
        else:
            op[field] = draw(json_values)
    return op


ops_strategy = st.one_of(
    mutated_ops(), garbage_ops, st.sampled_from([copy.deepcopy(op) for op in BASE.values()])
)
batches = st.one_of(st.lists(ops_strategy, max_size=8), json_values)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=batches, timestamp=st.one_of(st.just(T0_MS), st.integers(T0_MS, T0_MS + DAY_MS)))
def test_garbage_gets_a_code_for_every_op_and_refusals_write_nothing(
    ops: object, timestamp: int
) -> None:
    ledger = _fixture()
    results = ledger.apply_batch(timestamp, copy.deepcopy(ops))
    # A node applies unrendered and renders only for the proposer: the same answers.
    twin_ops = copy.deepcopy(ops)
    assert render_results(twin_ops, _fixture().apply_unrendered(timestamp, twin_ops)) == results
    if type(ops) is not list:
        assert [r["code"] for r in results] == [codes.INVALID_REQUEST]
        return
    assert len(results) == len(ops)
    for result in results:
        assert type(result) is dict
        assert result["code"] in ALL_CODES
        if result["code"] != codes.OK:
            assert type(result["detail"]) is str
    ledger.check_invariants()

    # A refusal that writes nothing leaves the state as if the op had not been sent at all.
    kept = [op for op, r in zip(ops, results, strict=True) if r["code"] not in codes.UNRECORDED]
    clean = _fixture()
    clean_results = clean.apply_batch(timestamp, copy.deepcopy(kept))
    assert clean_results == [r for r in results if r["code"] not in codes.UNRECORDED]
    assert clean.digest() == ledger.digest()
