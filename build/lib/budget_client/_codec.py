"""Bodies on the wire: msgpack (the default) or JSON, chosen per client.

Owns content types and encoding. Imports msgpack and the stdlib only; never budgetd.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgpack

__all__ = ["JSON", "MSGPACK", "Codec", "codec_for"]

MSGPACK: Final = "application/msgpack"
JSON: Final = "application/json"


class Codec:
    """Encodes request bodies as ``content_type`` and decodes any answer by its Content-Type."""

    def __init__(self, content_type: str) -> None:
        if content_type not in (MSGPACK, JSON):
            raise ValueError(f"content type must be {MSGPACK} or {JSON}, not {content_type!r}")
        self.content_type = content_type

    def encode(self, value: Any) -> bytes:
        if self.content_type == MSGPACK:
            return bytes(msgpack.packb(value, use_bin_type=True))
        return json.dumps(value, separators=(",", ":")).encode()

    @staticmethod
    def decode(content_type: str, raw: bytes) -> Any:
        """The body of an answer; None when empty; raw text when neither JSON nor msgpack."""
        if not raw:
            return None
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind == MSGPACK:
            return msgpack.unpackb(raw, raw=False, strict_map_key=False)
        if kind.endswith("json"):
            return json.loads(raw)
        return raw.decode("utf-8", "replace")


def codec_for(wire: str) -> Codec:
    """``"msgpack"`` or ``"json"``."""
    if wire == "msgpack":
        return Codec(MSGPACK)
    if wire == "json":
        return Codec(JSON)
    raise ValueError(f"wire must be 'msgpack' or 'json', not {wire!r}")
