"""The bytes of budgetd's replicated data: ledger snapshots and batches, as versioned msgpack.

Owns every encoding that leaves the process for disk or for a peer. Never pickle. Imports msgpack
and the ledger; nothing of pysyncobj, aiohttp or click.

A snapshot is ``["budgetd.snapshot", 1, <Ledger.export_state()>]``; a batch (one log entry) is
``["budgetd.batch", 1, timestamp_ms, [op, ...]]``. The tag and version come first so that a future
format can be told apart from this one and from foreign bytes.
"""

import threading
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


def encode_batch(timestamp_ms: int, ops: list[dict[str, Any]], *, keep: bool = False) -> bytes:
    """The log entry of ``ops`` stamped ``timestamp_ms``. ``keep``: the proposing node keeps
    ``(timestamp_ms, ops)`` for `decode_batch` of the same bytes (see `_Kept`)."""
    payload = [BATCH_TAG, BATCH_VERSION, timestamp_ms, ops]
    if keep:
        try:
            data: bytes = msgpack.packb(payload, use_bin_type=True, strict_types=True)
        except TypeError:
            pass  # a tuple or a subclass somewhere: decoding would not give it back as it is
        else:
            _kept.put(data, timestamp_ms, ops)
            return data
    data = msgpack.packb(payload, use_bin_type=True)
    return data


def decode_batch(data: bytes) -> tuple[Any, Any]:
    """``(timestamp_ms, ops)`` as decoded; the ledger checks every field again. Bytes this
    process encoded with ``keep`` give back the ops it encoded, without decoding them."""
    if len(data) > BATCH_BYTES_MAX:
        raise CodecError(f"batch of {len(data)} bytes exceeds {BATCH_BYTES_MAX}")
    kept = _kept.take(data)
    if kept is not None:
        return kept
    payload = _unpack(
        data, what="batch", tag=BATCH_TAG, version=BATCH_VERSION, length=4, lists=True
    )
    return payload[2], payload[3]


class _Kept:
    """Batches this process encoded as a proposer, so that when the entry comes back to be
    applied on the same node its ops are not decoded again (about 1.4 µs per op, 8 % of a
    leader's CPU per op under /v1/batch load).

    Only batches encoded with msgpack's ``strict_types`` are kept: every value is then exactly a
    dict, list, str, bytes, int, float, bool or None, which decoding the bytes gives back as an
    equal value of the same type, so the kept ops are what the followers decode. The ledger
    never mutates an op, and the proposer hands over ops that nobody changes afterwards.
    A batch is forgotten once taken; the oldest go beyond KEEP_MAX (entries that were never
    committed). Any thread: the proposer encodes on the event loop, the Raft thread decodes.
    """

    KEEP_MAX: Final = 16

    def __init__(self) -> None:
        self._batches: dict[bytes, tuple[int, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes, timestamp_ms: int, ops: list[dict[str, Any]]) -> None:
        with self._lock:
            self._batches[data] = (timestamp_ms, ops)
            while len(self._batches) > self.KEEP_MAX:
                del self._batches[next(iter(self._batches))]

    def take(self, data: bytes) -> tuple[int, list[dict[str, Any]]] | None:
        if not self._batches:  # a follower: no hashing of the entry
            return None
        with self._lock:
            return self._batches.pop(data, None)


_kept: Final = _Kept()
