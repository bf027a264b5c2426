"""`FastBody` (msgspec) accepts only what the schema's own check accepts, and gives back what that
check gives back: for any body, the fast path's answer is None (the slow path judges) or equal to
``schema.check`` of the decoded body. Valid bodies do take the fast path."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_api_schema_fast import VALID_RESERVE_OP

from budgetd.api import _bodies as bodies
from budgetd.api._fastbody import FastBody
from budgetd.api._schema import AnyOf, Integer, Invalid, Object, Schema, String, Tagged

RESERVE_OP = VALID_RESERVE_OP  # every field of a reserve op, each valid
COMMIT_OP = {
    "op": "commit",
    "idempotency_key": "c-1",
    "reservation_id": 7,
    "amount_micros": 5,
    "final": True,
}
RELEASE_OP = {"op": "release", "idempotency_key": "r-1", "reservation_id": 2**63 - 1}
SPEND_OP = {
    "op": "spend",
    "idempotency_key": "s-1",
    "campaign_id": "a:b:c:d",
    "amount_micros": 1,
    "bidder_id": "~",
}
OPS = [RESERVE_OP, COMMIT_OP, RELEASE_OP, SPEND_OP]

#: Around every bound the bodies use, and every type msgpack has.
EDGES: list[Any] = [
    *(bound + delta for bound in (0, 1, 86_400_000, 2**63 - 1) for delta in (-1, 0, 1)),
    -(2**63), 2**64 - 1, True, False, 1.0, 0.5, None, [], {}, b"x", msgpack.ExtType(5, b"x"),
    "", " ", "x y", "é", "k" * 64, "k" * 65, "k" * 128, "k" * 129, "a:b:c:d", "a:b:c:d:e", "a::b",
    "hot:c42", "bench-42", "x\n", "\x7f", "tab\t", "reserve", "commit", "release", "spend",
    "pulse", [RESERVE_OP], {"op": "reserve"},
]  # fmt: skip
FIELDS = sorted({name for op in OPS for name in op} | {"extra", "ops"})

FAST = FastBody(bodies.BATCH)


def slow(schema: Schema, data: bytes) -> tuple[str, Any]:
    """What the handler's slow path makes of ``data``: decode, then check."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData):
        return ("invalid", None)
    try:
        return ("ok", schema.check(value))
    except Invalid:
        return ("invalid", None)


def agrees(data: bytes, fast: FastBody = FAST, schema: Schema = bodies.BATCH) -> Any:
    """The fast answer for ``data``, having checked it against the slow path's."""
    answer = fast.decode(data)
    if answer is not None:
        assert slow(schema, data) == ("ok", answer), data
    return answer


@pytest.mark.parametrize("op", OPS, ids=lambda op: op["op"])
def test_valid_ops_take_the_fast_path(op: dict[str, Any]) -> None:
    body = {"ops": [op, RESERVE_OP, op]}
    assert agrees(msgpack.packb(body)) == body


@pytest.mark.parametrize("op", OPS, ids=lambda op: op["op"])
def test_every_field_of_every_op_at_every_edge(op: dict[str, Any]) -> None:
    for name in FIELDS:
        dropped = {key: value for key, value in op.items() if key != name}
        agrees(msgpack.packb({"ops": [dropped]}))
        for value in EDGES:
            changed = {**op, name: value}
            agrees(msgpack.packb({"ops": [RESERVE_OP, changed]}, use_bin_type=True))


def test_optional_fields_stay_absent_and_null_is_not_a_value_here() -> None:
    bare = {key: value for key, value in RESERVE_OP.items() if key != "min_amount_micros"}
    assert agrees(msgpack.packb({"ops": [bare]})) == {"ops": [bare]}
    assert agrees(msgpack.packb({"ops": [{**RESERVE_OP, "min_amount_micros": None}]})) is None


def _map(*pairs: tuple[bytes, bytes]) -> bytes:
    """A msgpack map of already packed keys and values (duplicates allowed)."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(key + value for key, value in pairs)


def _pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


RAW: dict[str, bytes] = {
    "empty": b"",
    "garbage": b"\xc1\xc1",
    "truncated": _pack({"ops": [RESERVE_OP]})[:-3],
    "trailing data": _pack({"ops": [RESERVE_OP]}) + b"\x01",
    "a second value": _pack({"ops": [RESERVE_OP]}) * 2,
    "not utf-8": _pack({"ops": [{**RESERVE_OP, "bidder_id": "b"}]}).replace(b"\xa1b", b"\xa1\xff"),
    "int key": _pack({"ops": [RESERVE_OP], 1: 2}),
    "bytes key": _map((_pack(b"ops"), _pack([RESERVE_OP]))),
    "duplicate top-level key": _map(
        (_pack("ops"), _pack([RESERVE_OP])), (_pack("ops"), _pack([COMMIT_OP]))
    ),
    "duplicate op field": _pack({"ops": []})[:-1]
    + b"\x91"
    + _map(
        *((_pack(key), _pack(value)) for key, value in RESERVE_OP.items()),
        (_pack("amount_micros"), _pack(2**63)),
    ),
    "duplicate tag": _pack({"ops": []})[:-1]
    + b"\x91"
    + _map(
        *((_pack(key), _pack(value)) for key, value in RELEASE_OP.items()),
        (_pack("op"), _pack("reserve")),
    ),
    "float64 amount": _pack({"ops": [RESERVE_OP]}).replace(
        b"\xcd\x03\xe8", b"\xcb" + struct.pack(">d", 1000.0)
    ),
    "deep nesting": b"\x91" * 5000 + b"\x90",
    "a list body": _pack([RESERVE_OP]),
}


@pytest.mark.parametrize("data", RAW.values(), ids=RAW.keys())
def test_hostile_bytes_are_left_to_the_slow_path_or_judged_alike(data: bytes) -> None:
    agrees(data)


def test_a_duplicate_field_means_what_msgpack_decoding_makes_of_it() -> None:
    """msgpack-python keeps the last of duplicate keys; so must the fast path, or refuse."""
    for name in ("duplicate top-level key", "duplicate op field", "duplicate tag"):
        answer = agrees(RAW[name])
        assert answer is None or slow(bodies.BATCH, RAW[name])[0] == "ok"


_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from(EDGES),
    st.text(max_size=140),
    st.binary(max_size=3),
    st.floats(allow_nan=False),
    st.lists(_INT64, max_size=2),
    st.dictionaries(st.text(max_size=5), _INT64, max_size=2),
)


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(OPS),
            st.dictionaries(st.sampled_from(FIELDS), _VALUES, max_size=2),
            st.lists(st.sampled_from(FIELDS), max_size=1),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_random_batches_are_judged_alike(
    ops: list[tuple[dict[str, Any], dict[str, Any], list[str]]],
) -> None:
    body = []
    for op, changes, dropped in ops:
        changed = {**op, **changes}
        body.append({key: value for key, value in changed.items() if key not in dropped})
    agrees(_pack({"ops": body}))


#: The fields of the single-op bodies and of a campaign.
BODY_FIELDS = [*sorted(bodies.CAMPAIGN_PUT.properties), "amount_micros", "ttl_ms", "bidder_id"]


@pytest.mark.parametrize(
    "schema",
    [bodies.RESERVE, bodies.COMMIT, bodies.SPEND, bodies.RELEASE, bodies.CAMPAIGN_PUT],
    ids=lambda schema: schema.name,
)
@given(changes=st.dictionaries(st.sampled_from([*BODY_FIELDS, "campaign_id", "final"]), _VALUES))
def test_other_request_schemas_are_judged_alike(schema: Object, changes: dict[str, Any]) -> None:
    fast = FastBody(schema)
    assert fast.supported
    agrees(_pack(changes), fast, schema)


def test_what_msgspec_cannot_say_has_no_fast_path() -> None:
    assert not FastBody(AnyOf((Integer(0, 1), String("x")))).supported
    assert not FastBody(Object({"a": Integer(0, 1)}, closed=False)).supported
    untagged = Tagged("op", {"x": Object({"a": Integer(0, 1)}, name="X")})
    assert not FastBody(untagged).supported
    assert FastBody(untagged).decode(_pack({"op": "x", "a": 1})) is None
