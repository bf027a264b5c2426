"""The aiohttp application: the route table with each route's access, authentication, the
per-token rate limit, and the one middleware that settles the request id, forwards a follower's
request to the leader, turns every error into a problem, audits admin routes and measures every
request.

Imports aiohttp, prometheus_client and the api's own modules; never pysyncobj.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from budgetd.api import _forward as forwarding
from budgetd.api import _handlers as handlers
from budgetd.api._audit import REQUEST_ID, AuditLog
from budgetd.api._call import CALLER, METRICS, SERVICE, SETTINGS, TARGET, Call
from budgetd.api._limits import RateLimiter
from budgetd.api._metrics import CONTENT_TYPE, UNMATCHED, ApiMetrics
from budgetd.api._problems import ApiError
from budgetd.api._tokens import ADMIN, BIDDER, TokenEntry, Tokens, TokensFile
from budgetd.api._wire import JSON, encode_error
from budgetd.service import (
    Conflict,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    Service,
    ServiceError,
    Unavailable,
)
from budgetd.settings import ApiSettings

__all__ = ["ROUTES", "Access", "Route", "make_app"]

log = logging.getLogger("budgetd.api")

TOKENS: Final = web.AppKey[TokensFile]("budgetd_tokens")
OPENAPI: Final = web.AppKey[bytes]("budgetd_openapi")
LIMITER: Final = web.AppKey[RateLimiter]("budgetd_rate_limiter")
AUDIT: Final = web.AppKey[AuditLog]("budgetd_audit")
#: (method, route template) → access, for the audit middleware.
ACCESS: Final = web.AppKey[dict[tuple[str, str], "Access"]]("budgetd_access")

Handler = Callable[[Call], Awaitable[web.StreamResponse]]


class Access(enum.Enum):
    """Who may call a route (prefix limits are checked by the handler, which knows the ids)."""

    PUBLIC = "public"  # no token
    READ = "read"  # any role
    SPEND = "spend"  # admin or bidder
    ADMIN = "admin"

    def permits(self, caller: TokenEntry) -> bool:
        if self is Access.SPEND:
            return caller.is_admin or BIDDER in caller.roles
        if self is Access.ADMIN:
            return ADMIN in caller.roles
        return True


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access


async def _metrics(call: Call) -> web.StreamResponse:
    # Collectors read the node's state (a ledger walk for campaign figures): off the loop.
    body = await asyncio.get_running_loop().run_in_executor(None, call.metrics.exposition)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def _openapi(call: Call) -> web.StreamResponse:
    return web.Response(body=call.request.app[OPENAPI], content_type=JSON)


#: Every route of the API; budgetd/api/openapi.json documents exactly these.
ROUTES: Final = (
    Route("PUT", "/v1/campaigns/{id}", handlers.put_campaign, Access.ADMIN),
    Route("GET", "/v1/campaigns/{id}", handlers.get_campaign, Access.READ),
    Route("GET", "/v1/campaigns", handlers.list_campaigns, Access.READ),
    Route("POST", "/v1/campaigns/{id}/spend", handlers.spend, Access.SPEND),
    Route("POST", "/v1/reservations", handlers.reserve, Access.SPEND),
    Route("GET", "/v1/reservations/{rid}", handlers.get_reservation, Access.READ),
    Route("POST", "/v1/reservations/{rid}/commit", handlers.commit, Access.SPEND),
    Route("POST", "/v1/reservations/{rid}/release", handlers.release, Access.SPEND),
    Route("POST", "/v1/batch", handlers.batch, Access.SPEND),
    Route("GET", "/v1/cluster", handlers.cluster, Access.READ),
    Route("POST", "/v1/cluster/members", handlers.add_member, Access.ADMIN),
    Route("DELETE", "/v1/cluster/members/{id}", handlers.remove_member, Access.ADMIN),
    Route("POST", "/v1/cluster/leader", handlers.transfer_leader, Access.ADMIN),
    Route("GET", "/v1/snapshot", handlers.snapshot, Access.ADMIN),
    Route("GET", "/v1/admin/limits", handlers.get_limits, Access.ADMIN),
    Route("PATCH", "/v1/admin/limits", handlers.patch_limits, Access.ADMIN),
    Route("GET", "/healthz", handlers.healthz, Access.PUBLIC),
    Route("GET", "/readyz", handlers.readyz, Access.PUBLIC),
    Route("GET", "/metrics", _metrics, Access.PUBLIC),
    Route("GET", "/openapi.json", _openapi, Access.PUBLIC),
)

_CHALLENGE: Final = 'Bearer realm="budgetd"'


def _authenticate(request: web.Request) -> TokenEntry:
    header = request.headers.get("Authorization")
    if header is None:
        raise ApiError(
            "unauthorized",
            "send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    scheme, _, token = header.strip().partition(" ")
    tokens = request.app[TOKENS].tokens
    caller = tokens.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if caller is None:
        raise ApiError(
            "unauthorized",
            "the bearer token is not valid",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
        )
    return caller


def _guarded(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def guarded(request: web.Request) -> web.StreamResponse:
        caller = None
        if route.access is not Access.PUBLIC:
            caller = _authenticate(request)
            request[CALLER] = caller
            wait_s = request.app[LIMITER].admit(caller)
            if wait_s is not None:
                raise ApiError(
                    "rate_limited",
                    f"token {caller.name!r} is over its request rate; nothing was written: "
                    f"retry after {wait_s} s with the same idempotency key",
                    headers={"Retry-After": str(wait_s)},
                )
            if not route.access.permits(caller):
                roles = ", ".join(sorted(caller.roles))
                raise ApiError(
                    "forbidden",
                    f"token {caller.name!r} ({roles}) may not {route.method} {route.path}",
                )
        return await route.handler(Call(request, caller))

    return guarded


def _service_problem(error: ServiceError, request: web.Request) -> ApiError:
    if isinstance(error, NotLeader) and error.leader_http:
        headers = {
            "Location": forwarding.leader_url(
                error.leader_http, request.raw_path, scheme=request.app[SETTINGS].scheme
            ),
            forwarding.LEADER: error.leader_http,
        }
        if forwarding.prefers_redirect(request):
            headers["Preference-Applied"] = "redirect"
        return ApiError(
            "not_leader",
            f"this node is not the leader; send the request to {error.leader_http}: {error.detail}",
            headers=headers,
            extra={"leader": error.leader_http},
        )
    if isinstance(error, NotFound):
        return ApiError("not_found", error.detail)
    if isinstance(error, Conflict):
        return ApiError("conflict", f"nothing was changed: {error.detail}")
    if isinstance(error, NotLeader | Unavailable):
        retry_after_s = error.retry_after_s if isinstance(error, Unavailable) else 1
        return ApiError(
            "unavailable",
            f"nothing was written; retry with the same idempotency key: {error.detail}",
            headers={"Retry-After": str(max(1, retry_after_s))},
        )
    assert isinstance(error, OutcomeUnknown), f"unknown service error {error!r}"
    return ApiError(
        "outcome_unknown",
        f"the request may or may not have been applied; retry with the same idempotency key: "
        f"{error.detail}",
    )


def _problem_response(request: web.Request, error: Exception) -> web.Response:
    """The problem answer for ``error`` raised by a route handler; re-raises what is not ours."""
    if isinstance(error, ApiError):
        response = encode_error(request, error)
        if error.code == "request_timeout":
            response.force_close()  # the rest of the body is never read
        return response
    if isinstance(error, ServiceError):
        return encode_error(request, _service_problem(error, request))
    if isinstance(error, web.HTTPException):
        if error.status == 404:
            return encode_error(request, ApiError("not_found", f"no route {request.path}"))
        if error.status == 405:
            allow = error.headers.get("Allow", "")
            detail = f"{request.method} is not allowed on {request.path}; allowed: {allow}"
            return encode_error(
                request, ApiError("method_not_allowed", detail, headers={"Allow": allow})
            )
        if error.status == 413:
            return encode_error(request, ApiError("payload_too_large", error.text or "too large"))
        raise error
    log.exception("%s %s failed", request.method, request.path, exc_info=error)
    detail = "internal error; a write may or may not have been applied"
    return encode_error(request, ApiError("internal_error", detail))


async def _answer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The route's answer, every error turned into a problem object encoded as the caller
    accepts. A request that met NotLeader with a known leader is forwarded there, unless
    `forwarding.wanted` says no."""
    try:
        try:
            return await handler(request)
        except NotLeader as error:
            if error.leader_http is None or not forwarding.wanted(request):
                raise
            leader_http = error.leader_http
        return await forwarding.forward(request, leader_http)
    except Exception as error:
        return _problem_response(request, error)


#: A caller's request id is kept when it is this (else a new one is made up).
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class _RequestIds:
    """Made-up request ids: 32 hex digits, a random prefix drawn once per process and a
    counter, unique within the process and across processes with overwhelming probability."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(secrets.randbits(32))

    def __call__(self) -> str:
        # Starting below 2**32, the counter needs 2**64 - 2**32 ids to outgrow 16 digits.
        return f"{self._prefix}{next(self._counter):016x}"


_new_request_id: Final = _RequestIds()


@web.middleware
async def _serve(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Around every request, in one layer: settle its id (the caller's X-Request-Id if well
    formed, else a new one), bind it to the request's log records and echo it in the answer;
    turn every error into a problem (`_answer`); measure latency and status, labelled by route
    template (bounded), not path; and write one audit record per call of an admin route,
    refused or not, with its final status."""
    started_s = time.perf_counter()
    given = request.headers.get(forwarding.REQUEST_ID)
    request_id = given if given and _REQUEST_ID.fullmatch(given) else _new_request_id()
    request[forwarding.REQUEST_ID_KEY] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    status = audit_status = 500
    try:
        response = await _answer(request, handler)
        status = audit_status = response.status
    except web.HTTPException as error:
        status = error.status
        error.headers[forwarding.REQUEST_ID] = request_id
        raise
    except asyncio.CancelledError:
        status = audit_status = 499  # the client went away
        raise
    finally:
        structlog.contextvars.clear_contextvars()
        route = request.match_info.route
        resource = route.resource
        if resource is None:
            method, label = "other", UNMATCHED
        else:
            method, label = route.method, resource.canonical
        app = request.app
        app[METRICS].observe(
            method=method, route=label, status=status, seconds=time.perf_counter() - started_s
        )
        if resource is not None and app[ACCESS].get((method, label)) is Access.ADMIN:
            _audit(request, label, audit_status)
    response.headers[forwarding.REQUEST_ID] = request_id
    return response


def _audit(request: web.Request, template: str, status: int) -> None:
    """One audit record per call of an admin route, refused or not, with its final status."""
    caller = request.get(CALLER)
    match = request.match_info
    request.app[AUDIT].record(
        token_name=None if caller is None else caller.name,
        remote=request.remote,
        request_id=request.headers.get(REQUEST_ID),
        method=request.method,
        route=template,
        target=request.get(TARGET) or match.get("id") or match.get("rid"),
        status=status,
    )


async def _reload_tokens(app: web.Application) -> AsyncIterator[None]:
    """Look at the tokens file every api.tokens_reload_ms while the app runs."""
    tokens_file = app[TOKENS]
    period_s = app[SETTINGS].tokens_reload_ms / 1000

    async def watch() -> None:
        while True:
            await asyncio.sleep(period_s)
            tokens_file.check()

    task = asyncio.create_task(watch()) if tokens_file.path is not None else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def make_app(
    service: Service,
    settings: ApiSettings,
    tokens: Tokens | TokensFile,
    *,
    registry: CollectorRegistry | None = None,
    audit: AuditLog | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The HTTP API of one node. ``tokens``: fixed, or a file watched for changes. ``registry``:
    where the API's metrics live (a fresh one by default; pass the node's to expose them with
    its other metrics). ``audit``: where admin actions are recorded (default: nowhere).
    ``clock``: the rate limiter's (monotonic seconds)."""
    for name in ("body_bytes_max", "batch_ops_max", "list_limit_max", "ready_lag_entries_max"):
        value = getattr(settings, name)
        assert type(value) is int and value >= 1, f"api.{name} must be a positive integer"
    app = web.Application(
        middlewares=[_serve],
        client_max_size=settings.body_bytes_max,
    )
    app[SERVICE] = service
    app[SETTINGS] = settings
    app[TOKENS] = tokens if isinstance(tokens, TokensFile) else TokensFile(tokens)
    app[LIMITER] = RateLimiter(
        rate_per_s=settings.rate_per_s, burst=settings.rate_burst, clock=clock
    )
    app[AUDIT] = audit if audit is not None else AuditLog(None)
    app[ACCESS] = {(route.method, route.path): route.access for route in ROUTES}
    app[METRICS] = ApiMetrics(registry if registry is not None else CollectorRegistry())
    app[OPENAPI] = resources.files("budgetd.api").joinpath("openapi.json").read_bytes()
    app.cleanup_ctx.append(forwarding.client_context)
    app.cleanup_ctx.append(_reload_tokens)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _guarded(route))
    return app
