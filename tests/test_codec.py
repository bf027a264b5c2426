"""The bytes of snapshots and batches: versioned msgpack, round trips, and garbage refused."""

from __future__ import annotations

import contextlib

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
