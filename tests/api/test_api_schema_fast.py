"""A closed object's inlined member checks (`Schema.fast`) accept exactly what the members' own
checks accept, and give back the same value: a valid body with one field changed, dropped or
added is judged the same way as member by member."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetd.api import _bodies as bodies
from budgetd.api._schema import Invalid, Object

pytestmark = pytest.mark.usefixtures("seeded")

_VALUES = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, 86_400_000, 86_400_001, 2**63 - 1, 2**63, True, 1.0, None]),
    st.text(max_size=140),
    st.sampled_from(["hot:c42", "a:b:c:d:e", "bench-42", "k" * 128, "k" * 129, "x y", "é", ""]),
    st.sampled_from(["USD", "usd", "XXX", "UTC", "Europe/Paris", "Mars/Olympus", "active"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

_RESERVE_OP = bodies.BATCH.properties["ops"].items.variants["reserve"]  # type: ignore[attr-defined]
#: Each schema with a body it accepts.
#: A batch's reserve op with every field, each valid (test_api_fastbody uses it too).
VALID_RESERVE_OP: dict[str, Any] = {
    "op": "reserve",
    "idempotency_key": "n3-batch-0-17",
    "campaign_id": "hot:c42",
    "amount_micros": 1000,
    "min_amount_micros": 500,
    "ttl_ms": 3_600_000,
    "bidder_id": "bench-42",
}
_VALID: list[tuple[Object, dict[str, Any]]] = [
    (_RESERVE_OP, VALID_RESERVE_OP),
    (
        bodies.RESERVE,
        {"campaign_id": "a:b", "amount_micros": 7, "ttl_ms": 1, "bidder_id": "x"},
    ),
    (bodies.SPEND, {"amount_micros": 2**63 - 1, "bidder_id": "b"}),
    (bodies.COMMIT, {"amount_micros": 5, "final": True}),
    (
        bodies.CAMPAIGN_PUT,
        {
            "currency": "USD",
            "timezone": "UTC",
            "total_budget_micros": 10**12,
            "daily_budget_micros": 10**9,
            "status": "active",
            "pacing": {"mode": "asap"},
        },
    ),
]


def reference(schema: Object, value: dict[str, Any]) -> dict[str, Any]:
    """The same check, member by member, with each member's own `check`."""
    if not value.keys() <= schema.properties.keys():
        raise Invalid("", "has unknown field(s)")
    if not value.keys() >= schema.required:
        raise Invalid("", "misses required field(s)")
    return {name: schema.properties[name].check(item) for name, item in value.items()}


def outcome(check: Any, value: dict[str, Any]) -> tuple[str, Any]:
    try:
        return ("ok", check(value))
    except Invalid:
        return ("invalid", None)


_FIELDS = sorted({name for schema, _ in _VALID for name in schema.properties} | {"extra"})
#: Around every bound the bodies use, and every type.
_EDGES: list[Any] = [
    *(bound + delta for bound in (0, 1, 86_400_000, 2**63 - 1) for delta in (-1, 0, 1)),
    -(2**64), 2**64, True, False, 1.0, None, [], {}, {"mode": "asap"},
    "", " ", "x y", "é", "k" * 64, "k" * 65, "k" * 128, "k" * 129, "a:b:c:d", "a:b:c:d:e", "a::b",
    "hot:c42", "bench-42", "USD", "usd", "XXX", "UTC", "Europe/Paris", "Mars/Olympus", "active",
    "reserve", "commit", "\x7f", "tab\t",
]  # fmt: skip


def judged_alike(schema: Object, valid: dict[str, Any], name: str, value: Any, drop: bool) -> None:
    body = dict(valid)
    if drop:
        body.pop(name, None)
    else:
        body[name] = value
    assert outcome(schema.check, body) == outcome(lambda v: reference(schema, v), body), body


@pytest.mark.parametrize(("schema", "valid"), _VALID, ids=lambda v: getattr(v, "name", None))
def test_every_field_at_every_edge_is_judged_as_member_by_member(
    schema: Object, valid: dict[str, Any]
) -> None:
    assert outcome(schema.check, valid) == ("ok", valid)
    for name in _FIELDS:
        judged_alike(schema, valid, name, None, drop=True)
        for value in _EDGES:
            judged_alike(schema, valid, name, value, drop=False)


@pytest.mark.parametrize(("schema", "valid"), _VALID, ids=lambda v: getattr(v, "name", None))
@given(name=st.sampled_from(_FIELDS), value=_VALUES)
def test_one_field_changed_at_random_is_judged_as_member_by_member(
    schema: Object, valid: dict[str, Any], name: str, value: Any
) -> None:
    judged_alike(schema, valid, name, value, drop=False)
