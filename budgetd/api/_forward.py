"""Follower forwarding: a request that met `NotLeader` is sent on to the leader by this node and
the leader's answer relayed, so that a plain client (curl without -L, which drops Authorization on
a redirect to another port) works against any node (DESIGN §5).

Owns the app's one client session, which headers cross in each direction, when a node forwards
rather than answers 307, and how a failed forward ends for idempotent safety: the leader cannot be
connected to → 503 (definitely not sent); anything after the request may have been sent → 503 for
a GET (a read writes nothing), 504 ``outcome_unknown`` otherwise. Imports aiohttp and the api's
own modules; never pysyncobj.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from budgetd.api._call import METRICS, SERVICE, SETTINGS, read_body
from budgetd.api._problems import ApiError
from budgetd.api._serve import client_ssl_context

__all__ = [
    "CLIENT",
    "FORWARDED_BY",
    "FORWARD_CONNECT_TIMEOUT_S",
    "FORWARD_TIMEOUT_S",
    "LEADER",
    "client_context",
    "forward",
    "leader_url",
    "prefers_redirect",
    "wanted",
]

log = logging.getLogger("budgetd.api")

#: Set on a forwarded request (the forwarding node's id). A node never forwards such a request
#: again: it answers 307, so a forward is one hop at most.
FORWARDED_BY: Final = "X-Budgetd-Forwarded-By"
#: Set on the answer to a forwarded request (and on a 307): the leader's HTTP address.
LEADER: Final = "X-Budgetd-Leader"
#: A forward's whole round trip, connect to the answer's last byte. A constant until
#: budgetd.settings has ``api.forward_timeout_ms``.
FORWARD_TIMEOUT_S: Final = 10.0
#: Opening a TCP connection to the leader (a partitioned leader drops SYNs silently). Past it the
#: request was definitely not sent: 503, not 504.
FORWARD_CONNECT_TIMEOUT_S: Final = 2.0
#: Connections open to leaders at once; further forwards wait for one (within the timeout).
FORWARD_CONNECTIONS_MAX: Final = 100

#: A request's id: taken from the caller or made up, echoed in the answer, logged with every
#: record of the request, and carried to the leader when forwarded.
REQUEST_ID: Final = "X-Request-Id"
#: The request's id, as the node settled it (request key).
REQUEST_ID_KEY: Final = web.RequestKey[str]("budgetd_request_id")

#: What crosses to the leader, and what comes back. Nothing else: no cookies, no hop headers.
REQUEST_HEADERS: Final = ("Authorization", "Content-Type", "Accept", "Idempotency-Key", "If-Match")
RESPONSE_HEADERS: Final = (
    "Content-Type",
    "Location",
    "Retry-After",
    "ETag",
    "WWW-Authenticate",
    "Content-Disposition",
    "Allow",
)
#: Methods whose forward may end "maybe sent" as 503: they write nothing.
_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})

CLIENT: Final = web.AppKey[aiohttp.ClientSession]("budgetd_forward_client")


async def client_context(app: web.Application) -> AsyncIterator[None]:
    """The shared client session: opened on the app's start-up, closed on its clean-up."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=FORWARD_CONNECTIONS_MAX, ssl=client_ssl_context(app[SETTINGS]) or True
        ),
        timeout=aiohttp.ClientTimeout(
            total=FORWARD_TIMEOUT_S, sock_connect=FORWARD_CONNECT_TIMEOUT_S
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    # aiohttp sends a GET, PUT or DELETE a second time when the connection drops; the answer
    # would then be the second attempt's (a 503 "not sent" for a PUT the leader applied). Every
    # forward is sent once. aiohttp's own test client turns the retry off the same way.
    assert hasattr(session, "_retry_connection"), "aiohttp changed how it retries; check forward"
    session._retry_connection = False
    app[CLIENT] = session
    try:
        yield
    finally:
        await session.close()


def leader_url(leader_http: str, raw_path: str, *, scheme: str = "http") -> str:
    """The same path and query at the leader (``leader_http``: host:port or a base URL;
    ``scheme``: this cluster's, https when its members serve TLS)."""
    base = leader_http.rstrip("/")
    if "://" not in base:
        base = f"{scheme}://{base}"
    return base + raw_path


def prefers_redirect(request: web.BaseRequest) -> bool:
    """Whether the client sent ``Prefer: redirect`` (RFC 7240): it wants the 307, not a proxy."""
    for value in request.headers.getall("Prefer", []):
        for preference in value.split(","):
            token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if token == "redirect":
                return True
    return False


def wanted(request: web.BaseRequest) -> bool:
    """Whether a request that met NotLeader (with a known leader) is forwarded, rather than
    answered 307: not when it was forwarded once already, nor when the client asks for 307."""
    return FORWARDED_BY not in request.headers and not prefers_redirect(request)


def _failed(request: web.BaseRequest, leader_http: str, error: Exception) -> tuple[str, ApiError]:
    """The metric's result word and the problem for a forward that raised ``error``."""
    if isinstance(
        error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError | aiohttp.InvalidURL
    ):
        detail = (
            f"this node is not the leader and cannot connect to the leader at {leader_http} "
            f"({error}); nothing was written: retry with the same idempotency key"
        )
        return "unreachable", ApiError("unavailable", detail, headers={"Retry-After": "1"})
    what = "timed out" if isinstance(error, TimeoutError) else f"failed ({error!r})"
    if request.method in _SAFE_METHODS:
        detail = f"this node forwarded the read to the leader at {leader_http}, which {what}"
        return "broken", ApiError("unavailable", detail, headers={"Retry-After": "1"})
    detail = (
        f"this node forwarded the request to the leader at {leader_http}, which {what} after "
        f"the request may have been sent; it may or may not have been applied: retry with the "
        f"same idempotency key"
    )
    return "broken", ApiError("outcome_unknown", detail)


async def forward(request: web.Request, leader_http: str) -> web.Response:
    """Send ``request`` on to the leader once; its answer, or a problem raised as ApiError."""
    body = await read_body(request)
    headers: CIMultiDict[str] = CIMultiDict()
    for name in REQUEST_HEADERS:
        for value in request.headers.getall(name, []):
            headers.add(name, value)
    headers[FORWARDED_BY] = request.app[SERVICE].node_id
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        headers[REQUEST_ID] = request_id
    forwards = request.app[METRICS].forwards
    try:
        try:
            scheme = request.app[SETTINGS].scheme
            url = URL(leader_url(leader_http, request.raw_path, scheme=scheme), encoded=True)
        except ValueError as error:
            raise aiohttp.InvalidURL(leader_http, str(error)) from error
        async with request.app[CLIENT].request(
            request.method, url, data=body or None, headers=headers, allow_redirects=False
        ) as answer:
            payload = await answer.read()
    except (aiohttp.ClientError, TimeoutError) as error:
        result, problem = _failed(request, leader_http, error)
        forwards.labels(result).inc()
        log.warning("%s %s: forward to %s: %s", request.method, request.path, leader_http, problem)
        raise problem from None
    forwards.labels("answered").inc()
    relayed: CIMultiDict[str] = CIMultiDict()
    for name in RESPONSE_HEADERS:
        for value in answer.headers.getall(name, []):
            relayed.add(name, value)
    # A 307 from the target: it is not the leader either, and names the one it knows.
    named = answer.headers.get(LEADER)
    if named is not None:
        relayed[LEADER] = named
    elif answer.status != 307:
        relayed[LEADER] = leader_http
    return web.Response(status=answer.status, body=payload, headers=relayed)
