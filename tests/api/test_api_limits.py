"""The API's limits against hostile clients: requests per token (429 with Retry-After, nothing
written), a request head too large (431 problem), a slow head (slowloris: closed), a slow body
(408, nothing written), too many connections (503 and closed), and the named maxima of every
[api] limit checked at start-up.

The socket tests serve the app through `budgetd.api.start_api`, the same path a node takes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from budgetd.api import TokenEntry, Tokens, make_app, start_api
from budgetd.settings import ApiSettings
from tests.api.conftest import TOKENS, Harness, reserve_body

pytestmark = pytest.mark.usefixtures("seeded")

#: Bound on every wait for the server to act (never a timing assertion).
WAIT_S = 20.0


# ----------------------------------------------------------------------------------------------
# Requests per token


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
async def limited(service, settings, tokens) -> AsyncIterator[tuple[Harness, Clock]]:
    clock = Clock()
    entries = [
        TokenEntry.from_plaintext("admin", TOKENS["admin"], roles=["admin"]),
        TokenEntry.from_plaintext("bidder", TOKENS["bidder"], roles=["bidder"]),
        replace(
            TokenEntry.from_plaintext("reader", TOKENS["reader"], roles=["reader"]),
            rate_per_s=1,
            burst=1,
        ),
    ]
    app = make_app(
        service,
        replace(settings, rate_per_s=2, rate_burst=3),
        Tokens.from_entries(entries),
        clock=clock,
    )
    async with TestClient(TestServer(app)) as client:
        yield Harness(client, service), clock


async def test_a_token_over_its_rate_gets_429_with_retry_after_and_nothing_is_written(
    limited, service
) -> None:
    api, clock = limited
    for index in range(3):  # the burst
        reply = await api.call(
            "POST", "/v1/reservations", reserve_body(), token="bidder", key=f"k{index}"
        )
        assert reply.status == 201, reply.body
    written = len(service.submits)
    reply = await api.call("POST", "/v1/reservations", reserve_body(), token="bidder", key="k3")
    assert reply.status == 429
    assert reply.body["code"] == "rate_limited" and reply.body["retryable"] is True
    assert reply.headers["Retry-After"] == "1"
    assert "bidder" in reply.body["detail"]
    assert len(service.submits) == written, "a refused request reached the log"
    # Other tokens have their own bucket.
    assert (await api.call("GET", "/v1/campaigns/acme", token="admin")).status == 200
    # Half a second at 2/s refills one request, and the retry with the same key goes through.
    clock.now_s += 0.5
    reply = await api.call("POST", "/v1/reservations", reserve_body(), token="bidder", key="k3")
    assert reply.status == 201
    assert (
        await api.call("POST", "/v1/reservations", reserve_body(), token="bidder", key="k4")
    ).status == 429


async def test_a_token_s_own_rate_from_the_tokens_file_overrides_the_default(limited) -> None:
    api, clock = limited
    assert (await api.call("GET", "/v1/campaigns/acme", token="reader")).status == 200
    reply = await api.call("GET", "/v1/campaigns/acme", token="reader")
    assert (reply.status, reply.headers["Retry-After"]) == (429, "1")
    clock.now_s += 1.0
    assert (await api.call("GET", "/v1/campaigns/acme", token="reader")).status == 200


async def test_unauthenticated_requests_are_not_counted_against_a_token(limited) -> None:
    api, _ = limited
    for _ in range(5):
        assert (await api.call("GET", "/v1/campaigns/acme", token="wrong")).status == 401
        assert (await api.call("GET", "/healthz", token=None)).status == 200
    assert (await api.call("GET", "/v1/campaigns/acme", token="bidder")).status == 200


def test_the_tokens_file_carries_a_token_s_rate(tmp_path) -> None:
    entry = replace(
        TokenEntry.from_plaintext("fast", "t", roles=["bidder"]), rate_per_s=50_000, burst=99
    )
    path = tmp_path / "tokens.toml"
    path.write_text(Tokens.render_file([entry]))
    [loaded] = [Tokens.load(path).authenticate("t")]
    assert loaded is not None and (loaded.rate_per_s, loaded.burst) == (50_000, 99)
    path.write_text(Tokens.render_file([entry]).replace("burst = 99", "burst = 0"))
    with pytest.raises(ValueError, match="burst must be an integer from 1"):
        Tokens.load(path)


# ----------------------------------------------------------------------------------------------
# The socket: request heads, slow clients, connections

Served = Callable[..., Awaitable[tuple[int, web.AppRunner]]]


@pytest.fixture
async def serve(service, settings, tokens) -> AsyncIterator[Served]:
    runners: list[web.AppRunner] = []

    async def start(**changes: Any) -> tuple[int, web.AppRunner]:
        api_settings = replace(settings, **changes)
        app = make_app(service, api_settings, tokens)
        runner, site = await start_api(app, api_settings, "127.0.0.1", 0)
        runners.append(runner)
        return site.bound_port, runner

    yield start
    for runner in runners:
        await runner.cleanup()


async def _exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` raw; the answer's status, headers and body (read to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), WAIT_S)
    finally:
        writer.close()
    return _parse(raw)


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _problem(status: int, headers: dict[str, str], body: bytes, code: str) -> dict[str, Any]:
    assert headers["content-type"].startswith("application/problem+json"), headers
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (status, code), problem
    return problem


async def test_a_header_beyond_the_limit_gets_431_problem(serve) -> None:
    port, _ = await serve(header_field_bytes_max=1_024)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4_096 + b"\r\n\r\n"
    status, headers, body = await _exchange(port, request)
    assert status == 431
    _problem(status, headers, body, "request_header_too_large")


async def test_a_request_line_beyond_the_limit_gets_431_problem(serve) -> None:
    port, _ = await serve(header_line_bytes_max=1_024)
    request = b"GET /v1/campaigns/" + b"a" * 4_096 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, headers, body = await _exchange(port, request)
    _problem(status, headers, body, "request_header_too_large")


async def test_too_many_headers_get_431_problem(serve) -> None:
    port, _ = await serve(headers_max=10)
    lines = b"".join(b"X-H%d: v\r\n" % index for index in range(20))
    status, headers, body = await _exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"
    )
    _problem(status, headers, body, "request_header_too_large")


async def test_garbage_instead_of_http_gets_400_problem(serve) -> None:
    port, _ = await serve()
    status, headers, body = await _exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n")
    _problem(status, headers, body, "invalid_request")


async def test_a_slowloris_head_is_closed_without_an_answer(serve) -> None:
    port, _ = await serve(header_timeout_ms=300)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        index = 0
        while loop.time() < deadline:  # one header line every 50 ms, never the blank line
            try:
                writer.write(b"X-Slow-%d: v\r\n" % index)
                await writer.drain()
                closed = await asyncio.wait_for(reader.read(1024), 0.05)
                break
            except TimeoutError:
                index += 1
            except ConnectionError:
                closed = b""
                break
        assert closed == b"", f"the slow client still connected after {index} lines ({closed!r})"
    finally:
        writer.close()


async def test_a_slow_body_gets_408_and_nothing_is_written(serve, service) -> None:
    port, _ = await serve(body_timeout_ms=300)
    head = (
        "POST /v1/reservations HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKENS['bidder']}\r\nIdempotency-Key: slow-1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    status, headers, body = await _exchange(port, head + b'{"campaign_id": "acme"')
    _problem(status, headers, body, "request_timeout")
    assert service.submits == []


async def test_connections_beyond_the_maximum_get_503_and_are_closed(serve) -> None:
    port, runner = await serve(connections_max=2)
    server = runner.server
    assert server is not None
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while len(server.connections) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert len(server.connections) == 2
    status, headers, body = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    problem = _problem(status, headers, body, "unavailable")
    assert headers["retry-after"] == "1" and "api.connections_max" in problem["detail"]
    # A held connection still works, and once one closes a new one is accepted.
    reader, writer = held[0]
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), WAIT_S)).startswith(b"HTTP/1.1 200")
    for _, other in held:
        other.close()
    while server.connections and loop.time() < deadline:
        await asyncio.sleep(0.01)
    status, _, _ = await _exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200


async def test_the_limits_have_safe_defaults() -> None:
    defaults = ApiSettings()
    assert defaults.connections_max >= 1_000
    assert 1_000 <= defaults.header_timeout_ms <= 60_000
    assert 1_000 <= defaults.body_timeout_ms <= 60_000
    assert defaults.rate_burst >= defaults.rate_per_s >= 10_000
    assert defaults.header_line_bytes_max <= 16_384 and defaults.headers_max <= 200


def test_an_unread_body_is_not_drained_for_long_after_the_answer() -> None:
    """aiohttp drains an unread body for 10 s after the answer by default: a client refused 408
    (or 413) could keep trickling its body and hold the connection that long."""
    from budgetd.api._serve import runner_kwargs

    assert runner_kwargs(ApiSettings())["lingering_time"] <= 1.0
