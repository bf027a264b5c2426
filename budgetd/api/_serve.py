"""The API's listening socket: TLS (and client certificates), the cap on open connections, the
limits and timeout of a request head, and a problem object for a request that cannot be parsed.

Imports aiohttp, ssl and the api's own modules; never pysyncobj. `start` is what a node (and a
test that wants the real socket) calls; the app itself is `make_app`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from budgetd.api._problems import PROBLEMS, problem
from budgetd.api._wire import PROBLEM_JSON
from budgetd.settings import ApiSettings

__all__ = ["ApiSite", "client_ssl_context", "server_ssl_context", "start"]

log = logging.getLogger("budgetd.api")

#: Seconds an unread request body is still drained after the answer (see runner_kwargs).
_LINGER_S: Final = 1.0
#: Seconds a refused connection's answer may take to leave before the socket is dropped.
_REFUSED_LINGER_S: Final = 1.0


def server_ssl_context(settings: ApiSettings) -> ssl.SSLContext | None:
    """The HTTPS context of ``settings`` (None: plain HTTP): TLS 1.2 at least; with
    ``tls_client_ca_file``, a client certificate signed by it is required."""
    if settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.load_verify_locations(cafile=settings.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(settings: ApiSettings) -> ssl.SSLContext | None:
    """How this node speaks HTTPS to the leader when it forwards: verifies the leader's
    certificate (``tls_ca_file``, else the system's CAs) and, when members require client
    certificates, presents its own certificate."""
    if settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_client_ca_file is not None:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def _problem_bytes(status: int, code: str, detail: str, extra_headers: str = "") -> bytes:
    body = json.dumps(problem(code, detail), separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {PROBLEMS[code].title}\r\nContent-Type: {PROBLEM_JSON}\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Refused(asyncio.Protocol):
    """A connection beyond api.connections_max: 503 unavailable, then closed."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not derive from asyncio.WriteTransport).
        stream = cast(asyncio.Transport, transport)
        stream.write(self._answer)
        stream.close()  # flushes the answer first
        loop = asyncio.get_running_loop()
        loop.call_later(_REFUSED_LINGER_S, stream.abort)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read


#: Requests refused as unparseable since start-up (the first and every 1000th are logged).
_unparseable = 0


class _Handler(web.RequestHandler):
    """aiohttp's connection handler, answering a request it cannot parse with a problem (431
    for a request line or header beyond the limits, 400 otherwise) instead of plain text, and
    logging one line rather than a traceback (hostile input must not flood the log)."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        text = str(message or exc or "malformed request")[:200]
        if isinstance(exc, LineTooLong) or "Too many headers" in text:
            code = "request_header_too_large"
        else:
            code = "invalid_request"
        global _unparseable
        _unparseable += 1
        if _unparseable == 1 or _unparseable % 1000 == 0:  # a flood must not flood the log
            log.info(
                "refused an unparseable request from %s (%d so far): %s",
                request.remote,
                _unparseable,
                text,
            )
        body = json.dumps(problem(code, f"the request cannot be read: {text}"))
        response = web.Response(status=PROBLEMS[code].status, text=body, content_type=PROBLEM_JSON)
        response.force_close()
        return response


class _Protocols:
    """The protocol factory of the listening socket: aiohttp's handler, or `_Refused` beyond
    the connection cap."""

    def __init__(self, server: web.Server, settings: ApiSettings, kwargs: dict[str, Any]) -> None:
        self._server = server
        self._maximum = settings.connections_max
        self._kwargs = kwargs
        self._loop = asyncio.get_running_loop()
        detail = (
            f"this node has {settings.connections_max} open connections, its maximum "
            "(api.connections_max); nothing was read: retry on a kept-alive connection"
        )
        self._refusal = _problem_bytes(503, "unavailable", detail, "Retry-After: 1\r\n")
        self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._server.connections) >= self._maximum:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("refused %d connection(s): at api.connections_max", self.refused)
            return _Refused(self._refusal)
        return _Handler(self._server, loop=self._loop, **self._kwargs)


def runner_kwargs(settings: ApiSettings) -> dict[str, Any]:
    """aiohttp's per-connection limits from ``settings``: the keep-alive timeout doubles as the
    time a client has to send a whole request head (aiohttp closes a connection still waiting
    for one when it runs out; it is armed when the connection opens and after each answer)."""
    return {
        "keepalive_timeout": settings.header_timeout_ms / 1000,
        "max_line_size": settings.header_line_bytes_max,
        "max_field_size": settings.header_field_bytes_max,
        "max_headers": settings.headers_max,
        # After answering a request whose body was not read (413, 408), aiohttp reads on for
        # this long so the client sees the answer rather than a reset; its default, 10 s, would
        # let a slow client keep the connection busy well past api.body_timeout_ms.
        "lingering_time": _LINGER_S,
        "access_log": None,
    }


class ApiSite(web.BaseSite):
    """A TCP site whose connections go through `_Protocols`."""

    __slots__ = ("_host", "_port", "_settings", "bound_port", "protocols")

    def __init__(self, runner: web.AppRunner, host: str, port: int, settings: ApiSettings) -> None:
        super().__init__(runner, ssl_context=server_ssl_context(settings))
        self._host = host
        self._port = port
        self._settings = settings
        self.bound_port = port
        self.protocols: _Protocols | None = None

    @property
    def name(self) -> str:
        return f"{self._settings.scheme}://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.protocols = _Protocols(server, self._settings, runner_kwargs(self._settings))
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.protocols,
            self._host,
            self._port,
            ssl=self._ssl_context,
            # A TLS handshake gets no more time than a request head.
            ssl_handshake_timeout=(
                self._settings.header_timeout_ms / 1000 if self._ssl_context else None
            ),
            backlog=128,
            reuse_address=True,
        )
        if self._server.sockets:
            self.bound_port = self._server.sockets[0].getsockname()[1]


async def start(
    app: web.Application,
    settings: ApiSettings,
    host: str,
    port: int,
    *,
    access_log: logging.Logger | None = None,
) -> tuple[web.AppRunner, ApiSite]:
    """Serve ``app`` on host:port (port 0: any free one, see ``site.bound_port``). The caller
    stops it with ``await runner.cleanup()``. ``access_log``: one record per request there
    (none by default)."""
    runner = web.AppRunner(app, **{**runner_kwargs(settings), "access_log": access_log})
    await runner.setup()
    site = ApiSite(runner, host, port, settings)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site
