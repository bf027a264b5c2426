"""The bytes of snapshots and batches: versioned msgpack, round trips, and garbage refused."""

from __future__ import annotations

import contextlib
import copy

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetd.codec import (
    CodecError,
    decode_batch,
    decode_snapshot,
    encode_batch,
    encode_snapshot,
)
from budgetd.ledger import Ledger

T0 = 1_780_000_000_000
OPS = [
    {
        "op": "put_campaign",
        "campaign_id": "acme",
        "currency": "USD",
        "timezone": "UTC",
        "daily_budget_micros": 5_000_000,
        "pacing": {"mode": "traffic_shaped", "hourly_weights": list(range(1, 25))},
        "idempotency_key": "p1",
    },
    {
        "op": "reserve",
        "idempotency_key": "k1",
        "campaign_id": "acme",
        "amount_micros": 10_000,
        "ttl_ms": 60_000,
        "bidder_id": "b1",
    },
]


def busy_ledger() -> Ledger:
    ledger = Ledger()
    ledger.apply_batch(T0, OPS)
    ledger.apply_batch(
        T0 + 1, [{"op": "commit", "idempotency_key": "c1", "reservation_id": 1, "amount_micros": 7}]
    )
    return ledger


def test_a_snapshot_round_trips_to_the_same_digest_and_decisions() -> None:
    ledger = busy_ledger()
    data = encode_snapshot(ledger)
    restored = decode_snapshot(data)
    assert restored.digest() == ledger.digest()
    # Replays after a restore still match their fingerprints (tuples inside tuples).
    for one in (ledger, restored):
        assert one.apply_batch(T0 + 2, OPS)[0]["replayed"] is True
    assert restored.digest() == ledger.digest()


def test_snapshots_are_tagged_msgpack_never_pickle() -> None:
    data = encode_snapshot(busy_ledger())
    tag, version, state = msgpack.unpackb(data)
    assert (tag, version) == ("budgetd.snapshot", 1)
    assert state["format"] == 1
    assert not data.startswith(b"\x80"), "pickle protocol header"


def test_a_batch_round_trips() -> None:
    assert decode_batch(encode_batch(T0, OPS)) == (T0, OPS)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x93",  # truncated array
        msgpack.packb(["budgetd.batch", 1, T0, []]),  # a batch is not a snapshot
        msgpack.packb(["budgetd.snapshot", 2, {}]),  # a future version
        msgpack.packb(["budgetd.snapshot", 1, {"format": 1}]),  # a state missing its parts
        msgpack.packb({"budgetd.snapshot": 1}),
        b"\x80\x04\x95" + b"\x00" * 8,  # pickle
    ],
)
def test_bad_snapshot_bytes_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_snapshot(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        msgpack.packb(["budgetd.snapshot", 1, {}]),
        msgpack.packb(["budgetd.batch", 9, T0, []]),
        msgpack.packb(["budgetd.batch", 1, T0]),
        msgpack.packb(["budgetd.batch", 1, T0, []]) + b"\x00",  # trailing bytes
    ],
)
def test_bad_batch_bytes_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_batch(data)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_codec_error(data: bytes) -> None:
    for decode in (decode_batch, decode_snapshot):
        with contextlib.suppress(CodecError):
            decode(data)


def _typed(value: object) -> object:
    """``value`` with the type of every part spelled out (``True == 1`` and ``(1,) != [1]``
    compare, this does not forgive either)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_typed(item) for item in value])
    return (type(value).__name__, value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@given(st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=5), max_size=5))
def test_kept_ops_are_what_decoding_the_bytes_gives(ops: list[dict[str, object]]) -> None:
    data = encode_batch(T0, ops, keep=True)
    decoded = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)[3]
    assert data == encode_batch(T0, ops)  # keeping changes no byte
    timestamp_ms, kept = decode_batch(data)
    assert timestamp_ms == T0 and _typed(kept) == _typed(decoded)


def test_the_proposer_gets_its_own_ops_back_once_and_then_decodes() -> None:
    ops = [dict(op) for op in OPS]
    data = encode_batch(T0, ops, keep=True)
    assert decode_batch(data)[1] is ops  # no decoding on the proposing node
    again = decode_batch(data)  # a replay (restart, catch-up) decodes
    assert again == (T0, ops) and again[1] is not ops


def test_ops_with_tuples_are_not_kept_since_decoding_gives_lists() -> None:
    ops = [{"op": "put_campaign", "campaign_id": "a", "pacing": {"hourly_weights": (1,) * 24}}]
    data = encode_batch(T0, ops, keep=True)
    _, decoded = decode_batch(data)
    assert decoded is not ops
    assert decoded[0]["pacing"]["hourly_weights"] == [1] * 24


def test_only_the_last_kept_batches_are_remembered() -> None:
    first = [{"op": "pulse", "n": 0}]
    first_data = encode_batch(T0, first, keep=True)
    for n in range(1, 40):
        encode_batch(T0, [{"op": "pulse", "n": n}], keep=True)
    assert decode_batch(first_data)[1] is not first  # forgotten, decoded


def test_a_kept_batch_over_the_size_limit_is_refused_as_on_every_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import budgetd.codec

    data = encode_batch(T0, OPS, keep=True)
    monkeypatch.setattr(budgetd.codec, "BATCH_BYTES_MAX", len(data) - 1)
    with pytest.raises(CodecError, match="exceeds"):
        decode_batch(data)


def test_the_ledger_never_changes_the_ops_it_applies() -> None:
    # The proposing node applies the very ops it encoded (kept batches): they must come out of
    # the ledger as they went in, as the followers' decoded copies do.
    ops = [
        *OPS,
        {"op": "commit", "idempotency_key": "c1", "reservation_id": 1, "amount_micros": 7},
        {
            "op": "spend",
            "idempotency_key": "s1",
            "campaign_id": "acme",
            "amount_micros": 5,
            "bidder_id": "b1",
        },
        {"op": "release", "idempotency_key": "r1", "reservation_id": 1},
        {"op": "set_limits", "campaigns_max": 1_000},
        {"op": "pulse"},
        {"op": "commit", "idempotency_key": "c2", "reservation_id": 99, "amount_micros": 1},
        {"op": "nonsense", "campaign_id": ["not", "an", "id"]},
    ]
    before = copy.deepcopy(ops)
    results = Ledger().apply_batch(T0, ops)
    assert ops == before and _typed(ops) == _typed(before)
    assert [r["code"] for r in results][:6] == ["ok"] * 6
