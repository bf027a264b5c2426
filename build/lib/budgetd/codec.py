"""The bytes of budgetd's replicated data: ledger snapshots and batches, as versioned msgpack.

Owns every encoding that leaves the process for disk or for a peer. Never pickle. Imports msgpack
and the ledger; nothing of pysyncobj, aiohttp or click.

A snapshot is ``["budgetd.snapshot", 1, <Ledger.export_state()>]``; a batch (one log entry) is
``["budgetd.batch", 1, timestamp_ms, [op, ...]]``. The tag and version come first so that a future
format can be told apart from this one and from foreign bytes.
"""

from typing import Any, Final

import msgpack

from budgetd import gctune
from budgetd.ledger import Ledger, SnapshotError

__all__ = [
    "BATCH_VERSION",
    "SNAPSHOT_VERSION",
    "CodecError",
    "decode_batch",
    "decode_snapshot",
    "encode_batch",
    "encode_snapshot",
]

SNAPSHOT_TAG: Final = "budgetd.snapshot"
SNAPSHOT_VERSION: Final = 1
BATCH_TAG: Final = "budgetd.batch"
BATCH_VERSION: Final = 1

#: The largest batch accepted from the log, in bytes (a guard against garbage, not a tuning knob).
BATCH_BYTES_MAX: Final = 64 * 1024 * 1024


class CodecError(ValueError):
    """Bytes that are not a budgetd snapshot or batch of a version this build reads."""


def encode_snapshot(ledger: Ledger) -> bytes:
    with gctune.paused():
        payload = [SNAPSHOT_TAG, SNAPSHOT_VERSION, ledger.export_state()]
        data: bytes = msgpack.packb(payload, use_bin_type=True)
    return data


def decode_snapshot(data: bytes) -> Ledger:
    """The ledger in ``data``. Arrays decode as tuples (the ledger's fingerprints are tuples)."""
    with gctune.paused():
        return _decode_snapshot(data)


def _unpack(data: bytes, *, what: str, tag: str, version: int, length: int, lists: bool) -> Any:
    """The tagged, versioned msgpack array in ``data`` (arrays as lists or as tuples)."""
    try:
        payload = msgpack.unpackb(data, raw=False, use_list=lists, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as error:
        raise CodecError(f"{what} is not msgpack: {error}") from error
    if type(payload) is not (list if lists else tuple) or len(payload) != length:
        raise CodecError(f"bytes are not a budgetd {what}")
    if payload[0] != tag:
        raise CodecError(f"bytes are not a budgetd {what}")
    if payload[1] != version:
        raise CodecError(f"{what} version {payload[1]!r} is not {version}")
    return payload


def _decode_snapshot(data: bytes) -> Ledger:
    payload = _unpack(
        data, what="snapshot", tag=SNAPSHOT_TAG, version=SNAPSHOT_VERSION, length=3, lists=False
    )
    try:
        return Ledger.from_state(payload[2])
    except SnapshotError as error:
        raise CodecError(str(error)) from error


def encode_batch(timestamp_ms: int, ops: list[dict[str, Any]]) -> bytes:
    data: bytes = msgpack.packb([BATCH_TAG, BATCH_VERSION, timestamp_ms, ops], use_bin_type=True)
    return data


def decode_batch(data: bytes) -> tuple[Any, Any]:
    """``(timestamp_ms, ops)`` as decoded; the ledger checks every field again."""
    if len(data) > BATCH_BYTES_MAX:
        raise CodecError(f"batch of {len(data)} bytes exceeds {BATCH_BYTES_MAX}")
    payload = _unpack(
        data, what="batch", tag=BATCH_TAG, version=BATCH_VERSION, length=4, lists=True
    )
    return payload[2], payload[3]
