"""One request as a handler sees it: the caller, strict parsing of path, query, headers and body,
the service, and the answer. Every check that can refuse a request before it reaches the log is
here, so handlers stay a few lines each.

Imports aiohttp, the service protocol and the api's own modules; never pysyncobj.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, TypeVar

from aiohttp import web

from budgetd.api._bodies import CAMPAIGN_ID, IDEMPOTENCY_KEY, MEMBER_ID, RESERVATION_ID_PATTERN
from budgetd.api._fastbody import FastBody
from budgetd.api._metrics import ApiMetrics
from budgetd.api._problems import PROBLEMS, ApiError, invalid
from budgetd.api._schema import Invalid, Schema
from budgetd.api._tokens import TokenEntry
from budgetd.api._wire import decode, encode, is_msgpack
from budgetd.ledger import INT64_MAX, Ledger, codes
from budgetd.service import Service
from budgetd.settings import ApiSettings

__all__ = ["CALLER", "METRICS", "SERVICE", "SETTINGS", "TARGET", "Call", "read_body"]

T = TypeVar("T")

SERVICE: Final = web.AppKey[Service]("budgetd_service")
SETTINGS: Final = web.AppKey[ApiSettings]("budgetd_api_settings")
METRICS: Final = web.AppKey[ApiMetrics]("budgetd_api_metrics")
#: The authenticated caller of a request, and the target a handler names for the audit record
#: when the path does not (a member added).
CALLER: Final = web.RequestKey[TokenEntry]("budgetd_caller")
TARGET: Final = web.RequestKey[str]("budgetd_audit_target")

_RESERVATION_ID: Final = re.compile(RESERVATION_ID_PATTERN)
_VERSION: Final = re.compile(r'(?P<quote>"?)(?P<version>[1-9][0-9]{0,18})(?P=quote)')
#: ``?limit=`` when none is given (never above api.list_limit_max).
LIST_LIMIT_DEFAULT: Final = 100


def _check(schema: Schema, value: Any, where: str = "") -> Any:
    try:
        return schema.check(value, where)
    except Invalid as error:
        raise invalid(str(error)) from None


def refusal(result: Mapping[str, Any]) -> ApiError:
    """The problem for a ledger refusal (a result whose code is not ok)."""
    code = result["code"]
    assert code != codes.OK and code in PROBLEMS, f"the ledger answered unknown code {code!r}"
    extra = {"replayed": True} if result.get("replayed") else None
    return ApiError(code, str(result.get("detail", "")), extra=extra)


async def read_body(request: web.Request) -> bytes:
    """The whole body: 413 beyond api.body_bytes_max, 408 when it does not arrive within
    api.body_timeout_ms (a slow client must not hold a handler)."""
    settings = request.app[SETTINGS]
    limit = settings.body_bytes_max

    def too_large() -> ApiError:
        return ApiError("payload_too_large", f"a request body holds at most {limit} bytes")

    if request.content_length is not None and request.content_length > limit:
        raise too_large()
    try:
        if request.content.is_eof():  # all of it has arrived: reading it cannot wait
            data = await request.read()
        else:
            async with asyncio.timeout(settings.body_timeout_ms / 1000):
                data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large() from None
    except TimeoutError:
        raise ApiError(
            "request_timeout",
            f"the request body did not arrive within {settings.body_timeout_ms} ms; nothing "
            f"was written",
        ) from None
    if len(data) > limit:
        raise too_large()
    return data


class Call:
    def __init__(self, request: web.Request, caller: TokenEntry | None) -> None:
        self.request = request
        self.caller = caller
        self.service: Service = request.app[SERVICE]
        self.settings: ApiSettings = request.app[SETTINGS]
        self.metrics: ApiMetrics = request.app[METRICS]

    # Path and query ----------------------------------------------------------------------------

    def campaign_id(self) -> str:
        campaign_id: str = _check(CAMPAIGN_ID, self.request.match_info["id"], "campaign id")
        return campaign_id

    def member_id(self) -> str:
        member_id: str = _check(MEMBER_ID, self.request.match_info["id"], "member id")
        return member_id

    def reservation_id(self) -> int:
        text = self.request.match_info["rid"]
        if not _RESERVATION_ID.fullmatch(text) or int(text) > INT64_MAX:
            raise invalid(f"reservation id must be a positive int64, got {text[:40]!r}")
        return int(text)

    def query(self, allowed: Collection[str] = ()) -> dict[str, str]:
        """The query parameters; an unknown or repeated one is refused."""
        found: dict[str, str] = {}
        if not self.request.query_string:
            return found
        for name, value in self.request.query.items():
            if name not in allowed:
                known = ", ".join(allowed) or "none"
                raise invalid(f"unknown query parameter {name!r} (known: {known})")
            if name in found:
                raise invalid(f"query parameter {name!r} is given twice")
            found[name] = value
        return found

    def strong(self, query: Mapping[str, str]) -> bool:
        value = query.get("consistency", "strong")
        if value not in ("strong", "local"):
            raise invalid(f"consistency must be strong or local, got {value[:40]!r}")
        return value == "strong"

    def list_limit(self, query: Mapping[str, str]) -> int:
        maximum = self.settings.list_limit_max
        text = query.get("limit")
        if text is None:
            return min(LIST_LIMIT_DEFAULT, maximum)
        digits = text.isascii() and text.isdecimal() and len(text) <= 12
        if not digits or not 1 <= int(text) <= maximum:
            raise invalid(f"limit must be an integer from 1 to {maximum}, got {text[:40]!r}")
        return int(text)

    # Headers -----------------------------------------------------------------------------------

    def _single_header(self, name: str) -> str | None:
        values = self.request.headers.getall(name, [])
        if len(values) > 1:
            raise invalid(f"the {name} header is given {len(values)} times")
        return values[0] if values else None

    def idempotency_key(self) -> str:
        """The required ``Idempotency-Key`` of a mutating POST."""
        key = self._single_header("Idempotency-Key")
        if key is None:
            raise invalid(
                "the Idempotency-Key header is required: 1-128 printable ASCII characters, "
                "the same on every retry of this request"
            )
        checked: str = _check(IDEMPOTENCY_KEY, key, "the Idempotency-Key header")
        return checked

    def optional_idempotency_key(self) -> str | None:
        key = self._single_header("Idempotency-Key")
        if key is None:
            return None
        checked: str = _check(IDEMPOTENCY_KEY, key, "the Idempotency-Key header")
        return checked

    def if_match(self) -> int | None:
        """``If-Match: <version>`` (or ``"<version>"``, the ETag this API sends)."""
        value = self._single_header("If-Match")
        if value is None:
            return None
        match = _VERSION.fullmatch(value.strip())
        if match is None or int(match["version"]) > INT64_MAX:
            raise invalid(f"If-Match must be a campaign version such as 3, got {value[:40]!r}")
        return int(match["version"])

    # Body --------------------------------------------------------------------------------------

    async def decoded_body(self) -> Any:
        """The body decoded by its Content-Type, not yet checked; 413 beyond the limit."""
        data = await read_body(self.request)
        return decode(self.request.content_type if data else "", data)

    async def fast_body(self, fast: FastBody) -> Any | None:
        """The body decoded and checked in one pass, when it is msgpack that ``fast`` accepts;
        otherwise None, and `decoded_body` with `check` judge it (and word the error)."""
        data = await read_body(self.request)
        if not data or not is_msgpack(self.request.content_type):
            return None
        return fast.decode(data)

    async def body(self, schema: Schema) -> dict[str, Any]:
        value: dict[str, Any] = _check(schema, await self.decoded_body())
        return value

    @staticmethod
    def check(schema: Schema, value: Any, where: str = "") -> Any:
        return _check(schema, value, where)

    # Rights ------------------------------------------------------------------------------------

    def _caller(self) -> TokenEntry:
        assert self.caller is not None, "an authenticated route has a caller"
        return self.caller

    def require_spend(self, campaign_id: str, where: str = "") -> None:
        caller = self._caller()
        if not caller.may_spend(campaign_id):
            prefix = f"{where}: " if where else ""
            raise ApiError(
                "forbidden",
                f"{prefix}token {caller.name!r} may not spend on campaign {campaign_id!r}",
            )

    def require_read(self, campaign_id: str) -> None:
        caller = self._caller()
        if not caller.may_read(campaign_id):
            raise ApiError(
                "forbidden", f"token {caller.name!r} may not read campaign {campaign_id!r}"
            )

    async def reservation_owners(self, reservation_ids: list[int]) -> dict[int, str]:
        """Campaign of each reservation that exists, as of a barrier if one is missing here.

        Only callers limited to prefixes need this (``TokenEntry.needs_owner_check``).
        """

        def owners(ledger: Ledger) -> dict[int, str]:
            found = {}
            for reservation_id in reservation_ids:
                view = ledger.reservation(reservation_id)
                if view is not None:
                    found[reservation_id] = view["campaign_id"]
            return found

        found = self.service.read(owners)
        if len(found) < len(set(reservation_ids)):
            await self.service.barrier()
            found = self.service.read(owners)
        return found

    # Service -----------------------------------------------------------------------------------

    async def submit(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = await self.service.submit(ops)
        assert len(results) == len(ops), f"{len(ops)} ops, {len(results)} results"
        return results

    async def submit_one(self, op: dict[str, Any]) -> dict[str, Any]:
        """The ledger's ``ok`` result for ``op``; a refusal is raised as its problem."""
        [result] = await self.submit([op])
        if result["code"] != codes.OK:
            raise refusal(result)
        return result

    async def read(self, reader: Callable[[Ledger], T], *, strong: bool) -> tuple[T, int]:
        """``reader``'s answer and the applied index it was read at. Strong: after a barrier,
        so it reflects every write acknowledged before this call."""
        if strong:
            await self.service.barrier()
        value = self.service.read(reader)
        return value, self.service.applied_index()

    # Answer ------------------------------------------------------------------------------------

    def respond(
        self,
        body: Mapping[str, Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        return encode(self.request, body, status=status, headers=headers)
