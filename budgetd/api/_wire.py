"""Bodies on the wire: JSON or msgpack in (by Content-Type), JSON or msgpack out (by Accept).

Owns HTTP content negotiation and decoding strictness (duplicate JSON keys, NaN and Infinity
are refused). Imports aiohttp, msgpack and the schema module's quoting; knows nothing of routes
or the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgpack
from aiohttp import web

from budgetd.api._problems import ApiError, invalid
from budgetd.api._schema import quoted

__all__ = [
    "JSON",
    "MSGPACK",
    "PROBLEM_JSON",
    "decode",
    "encode",
    "encode_error",
    "is_msgpack",
    "wants_msgpack",
]

JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"
MSGPACK: Final = "application/msgpack"
_MSGPACK_TYPES: Final = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_JSON_TYPES: Final = frozenset({JSON, PROBLEM_JSON})


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {quoted(key)}")
        result[key] = value
    return result


def decode(content_type: str, data: bytes) -> Any:
    """The value in ``data``; an empty body is an empty object."""
    if not data:
        return {}
    if content_type in _JSON_TYPES:
        try:
            return json.loads(
                data.decode("utf-8"),
                parse_constant=_no_constant,
                object_pairs_hook=_no_duplicates,
            )
        except (ValueError, RecursionError) as error:
            raise invalid(f"the body is not valid JSON: {error}") from None
    if content_type in _MSGPACK_TYPES:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as error:
            raise invalid(f"the body is not valid msgpack: {error}") from None
    raise invalid(f"Content-Type {content_type!r} is not supported: send {JSON} or {MSGPACK}")


def is_msgpack(content_type: str) -> bool:
    """Whether a body of ``content_type`` is decoded as msgpack."""
    return content_type in _MSGPACK_TYPES


#: ``wants_msgpack``'s answers for the Accept headers seen most recently (clients send few
#: distinct ones); the cache holds at most this many.
_ACCEPT_CACHE_MAX: Final = 64
_accept_cache: dict[str, bool] = {}


def wants_msgpack(accept: str) -> bool:
    """Whether ``Accept`` prefers msgpack to JSON. A tie goes to msgpack (a client names it only
    on purpose); without either named, JSON."""
    answer = _accept_cache.get(accept)
    if answer is None:
        answer = _wants_msgpack(accept)
        if len(accept) <= 256:
            if len(_accept_cache) >= _ACCEPT_CACHE_MAX:
                _accept_cache.clear()
            _accept_cache[accept] = answer
    return answer


def _wants_msgpack(accept: str) -> bool:
    quality_msgpack = quality_json = 0.0
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if media in _MSGPACK_TYPES:
            quality_msgpack = max(quality_msgpack, quality)
        elif media in _JSON_TYPES:
            quality_json = max(quality_json, quality)
    return quality_msgpack > 0 and quality_msgpack >= quality_json


def encode(
    request: web.BaseRequest,
    body: Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    problem: bool = False,
) -> web.Response:
    """``body`` as the request's ``Accept`` prefers."""
    if wants_msgpack(request.headers.get("Accept", "")):
        data: bytes = msgpack.packb(body, use_bin_type=True)
        content_type = MSGPACK
    else:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
        content_type = PROBLEM_JSON if problem else JSON
    return web.Response(body=data, status=status, headers=headers, content_type=content_type)


def encode_error(request: web.BaseRequest, error: ApiError) -> web.Response:
    return encode(request, error.body(), status=error.status, headers=error.headers, problem=True)
