"""How bytes reach a node: the Transport protocol and its aiohttp implementation.

Owns the HTTP session and the split of connection failures into "not sent" and "maybe sent".
Imports aiohttp and the stdlib only; never budgetd. Tests replace it with a scripted transport.
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

__all__ = ["AiohttpTransport", "RawResponse", "Transport", "TransportError", "tls_context"]


def tls_context(
    cafile: str | None = None, *, certfile: str | None = None, keyfile: str | None = None
) -> _ssl.SSLContext:
    """An HTTPS context for ``AsyncClient(ssl=...)``: verifies the nodes against ``cafile``
    (default: the system's CAs), TLS 1.2 at least; ``certfile``/``keyfile``: this bidder's
    client certificate, for nodes that require one (api.tls_client_ca_file)."""
    context = _ssl.create_default_context(_ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = _ssl.TLSVersion.TLSv1_2
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class TransportError(Exception):
    """No answer. ``sent`` False: the request never left (connection refused, connect timeout),
    so nothing can have been applied; True: it may have reached the node."""

    def __init__(self, detail: str, *, sent: bool) -> None:
        super().__init__(detail)
        self.sent = sent


class Transport(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> RawResponse: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """One aiohttp session; redirects are never followed here (the client follows them)."""

    def __init__(
        self,
        *,
        connections_max: int = 64,
        connect_timeout_s: float = 1.0,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        self._ssl = ssl
        self._connections_max = connections_max
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._connections_max, ssl=self._ssl if self._ssl is not None else True
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            # aiohttp re-sends a PUT or GET on a dropped keep-alive connection; every attempt
            # here is sent once and the client's retry loop decides what happens next.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._session = session
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> RawResponse:
        session = self._open()
        timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(timeout_s, self._connect_timeout_s)
        )
        try:
            async with session.request(
                method,
                url,
                headers=dict(headers),
                data=body,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                return RawResponse(response.status, dict(response.headers), raw)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            raise TransportError(f"{method} {url}: cannot connect ({error})", sent=False) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TransportError(f"{method} {url}: {error!r}", sent=True) from error

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
