"""Follower forwarding: a follower sends a request that needs the leader on to it, once, and
relays the answer with X-Budgetd-Leader, so plain curl works against any node. Each failure ends
as the caller can act on safely: not connected → 503 (not sent); broken after it may have been
sent → 503 for a GET, 504 outcome_unknown otherwise. ``Prefer: redirect`` and an already forwarded
request get the 307 instead.

Two apps in one test: the leader is the ``api`` fixture (the seeded ledger), the follower comes
from ``start_follower`` (an empty ledger), so an answer's content shows which node produced it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from budgetd.api import _forward
from budgetd.codec import decode_snapshot
from budgetd.service import NotLeader

pytestmark = pytest.mark.usefixtures("seeded")

RESERVE = {"campaign_id": "acme", "amount_micros": 1_000, "ttl_ms": 5_000, "bidder_id": "b"}


def address_of(api) -> str:
    return f"{api.client.host}:{api.client.port}"


@pytest.fixture
async def follower(api, start_follower):
    """n2, following the leader ``api``."""
    return await start_follower(address_of(api))


# ----------------------------------------------------------------------------------------------
# The leader answers through the follower


async def test_a_write_through_a_follower_is_answered_by_the_leader(api, follower, seeded, fmt):
    reply = await follower.call("POST", "/v1/reservations", RESERVE, key="via-n2", fmt=fmt)
    assert reply.status == 201, reply.body
    assert reply.headers["X-Budgetd-Leader"] == address_of(api)
    assert reply.headers["Location"] == f"/v1/reservations/{reply.body['reservation_id']}"
    assert seeded.ledger.campaign("acme")["held_micros"] == 1_000
    assert len(follower.service.submits) == 1  # the attempt that met NotLeader
    assert len(seeded.submits) == 1
    # a retry through the follower with the same key is the leader's replay
    again = await follower.call("POST", "/v1/reservations", RESERVE, key="via-n2", fmt=fmt)
    assert (again.status, again.body["replayed"]) == (201, True)
    assert again.body["reservation_id"] == reply.body["reservation_id"]
    assert seeded.ledger.campaign("acme")["held_micros"] == 1_000


async def test_a_put_keeps_if_match_and_gets_the_etag(follower, root):
    reply = await follower.call("PUT", "/v1/campaigns/initech", root)
    assert (reply.status, reply.headers["ETag"]) == (201, '"1"')
    changed = {**root, "daily_budget_micros": 7}
    stale = await follower.call("PUT", "/v1/campaigns/initech", changed, headers={"If-Match": "9"})
    assert (stale.status, stale.body["code"]) == (409, "version_conflict")
    assert stale.content_type == "application/problem+json"
    fresh = await follower.call("PUT", "/v1/campaigns/initech", changed, headers={"If-Match": "1"})
    assert (fresh.status, fresh.headers["ETag"]) == (200, '"2"')


async def test_a_strong_read_keeps_its_query_and_a_local_read_stays_here(api, follower):
    path = "/v1/campaigns?prefix=acme:&limit=1&consistency=strong"
    reply = await follower.call("GET", path, token="reader")
    assert reply.status == 200
    assert [c["campaign_id"] for c in reply.body["campaigns"]] == ["acme:summer"]
    assert reply.headers["X-Budgetd-Leader"] == address_of(api)
    # the follower's own (empty) ledger answers a local read: nothing is forwarded
    local = await follower.call("GET", "/v1/campaigns/acme?consistency=local", token="reader")
    assert (local.status, local.body["code"]) == (404, "not_found")
    assert "X-Budgetd-Leader" not in local.headers


async def test_a_refusal_of_the_leader_is_relayed(follower, service):
    body = {**RESERVE, "amount_micros": 10**12, "min_amount_micros": 10**12}
    reply = await follower.call("POST", "/v1/reservations", body, key="big", fmt="msgpack")
    assert (reply.status, reply.body["code"]) == (409, "budget_exhausted")
    assert reply.content_type == "application/msgpack"


async def test_admin_routes_through_a_follower(api, follower, seeded):
    member = {"id": "n3", "raft_address": "127.0.0.1:7003", "http_address": "127.0.0.1:8003"}
    reply = await follower.call("POST", "/v1/cluster/members", member)
    assert reply.status == 200 and seeded.membership_changes == [("add", "n3")]
    reply = await follower.call("DELETE", "/v1/cluster/members/n3")
    assert reply.status == 200 and [m["id"] for m in reply.body["members"]] == ["n1", "n2"]

    response = await follower.client.get(
        "/v1/snapshot", headers={"Authorization": "Bearer admin-secret-token"}
    )
    assert response.status == 200
    assert response.headers["X-Budgetd-Leader"] == address_of(api)
    assert response.headers["Content-Disposition"].startswith('attachment; filename="budgetd-')
    assert decode_snapshot(await response.read()).digest() == seeded.ledger.digest()


async def test_the_follower_checks_the_request_first(follower, service):
    """Refused at the follower: nothing crosses to the leader."""
    reply = await follower.call("POST", "/v1/reservations", {**RESERVE, "ttl_ms": "x"}, key="k")
    assert reply.status == 400
    reply = await follower.call("POST", "/v1/reservations", RESERVE, key="k", token="reader")
    assert reply.status == 403
    assert service.submits == [] and follower.service.submits == []


# ----------------------------------------------------------------------------------------------
# 307 instead


@pytest.mark.parametrize(
    "headers",
    [
        {"Prefer": "redirect"},
        {"Prefer": "respond-async, wait=5, Redirect"},
        {"Prefer": "handling=strict", "prefer": "redirect"},
        {"X-Budgetd-Forwarded-By": "n3"},
    ],
    ids=["prefer", "among-others", "second-header", "already-forwarded"],
)
async def test_prefer_redirect_or_an_already_forwarded_request_gets_307(
    api, follower, service, headers
):
    reply = await follower.call("POST", "/v1/reservations", RESERVE, key="k", headers=headers)
    assert (reply.status, reply.body["code"]) == (307, "not_leader")
    assert reply.headers["Location"] == f"http://{address_of(api)}/v1/reservations"
    assert reply.headers["X-Budgetd-Leader"] == address_of(api)
    assert service.submits == []


async def test_a_forward_is_one_hop_at_most(api, follower, service):
    """The node n2 believes leads believes n4 does: it answers 307 to n2 (the request carries
    X-Budgetd-Forwarded-By), and n2 relays that 307 rather than forwarding again."""
    service.submit_error = NotLeader("n1 follows n4", leader_http="127.0.0.1:9")
    reply = await follower.call("POST", "/v1/reservations", RESERVE, key="k")
    assert (reply.status, reply.body["code"]) == (307, "not_leader")
    assert reply.headers["Location"] == "http://127.0.0.1:9/v1/reservations"
    assert reply.headers["X-Budgetd-Leader"] == "127.0.0.1:9"
    assert len(service.submits) == 1


# ----------------------------------------------------------------------------------------------
# What crosses, each way


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in leader that records each request and answers with extra headers."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        return web.Response(
            status=202,
            body=b'{"ok":true}',
            headers={
                "Content-Type": "application/json",
                "ETag": '"4"',
                "Retry-After": "3",
                "Set-Cookie": "session=leader",
                "Server-Timing": "apply;dur=1",
                "X-Internal": "secret",
            },
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield f"{server.host}:{server.port}", seen
    finally:
        await server.close()


async def test_only_the_listed_headers_cross(echo, start_follower):
    address, seen = echo
    follower = await start_follower(address)
    response = await follower.client.put(
        "/v1/campaigns/acme",
        data=b'{"currency":"USD","timezone":"UTC"}',
        headers={
            "Authorization": "Bearer admin-secret-token",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": "put-1",
            "If-Match": '"3"',
            "Cookie": "client=1",
            "X-Custom": "no",
        },
    )
    assert response.status == 202
    assert await response.read() == b'{"ok":true}'
    [request] = seen
    assert (request["method"], request["raw_path"]) == ("PUT", "/v1/campaigns/acme")
    assert request["body"] == b'{"currency":"USD","timezone":"UTC"}'
    sent = request["headers"]
    for name, value in {
        "Authorization": "Bearer admin-secret-token",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Idempotency-Key": "put-1",
        "If-Match": '"3"',
        "X-Budgetd-Forwarded-By": "n2",
    }.items():
        assert sent[name] == value, name
    assert "Cookie" not in sent and "X-Custom" not in sent
    relayed = response.headers
    assert (relayed["ETag"], relayed["Retry-After"]) == ('"4"', "3")
    assert relayed["Content-Type"] == "application/json"
    assert relayed["X-Budgetd-Leader"] == address
    for name in ("Set-Cookie", "Server-Timing", "X-Internal"):
        assert name not in relayed, name


async def test_the_path_and_query_cross_byte_for_byte(echo, start_follower):
    address, seen = echo
    follower = await start_follower(address)
    path = "/v1/campaigns?prefix=acme%3As&limit=2&consistency=strong"
    url = URL(f"http://{follower.client.host}:{follower.client.port}{path}", encoded=True)
    headers = {"Authorization": "Bearer reader-secret-token"}
    async with follower.client.session.get(url, headers=headers) as response:
        assert response.status == 202
    assert seen[0]["raw_path"] == path


# ----------------------------------------------------------------------------------------------
# Failures


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/v1/reservations", RESERVE), ("GET", "/v1/campaigns/acme", None)],
    ids=["post", "get"],
)
async def test_an_unreachable_leader_is_503_not_sent(start_follower, method, path, body):
    follower = await start_follower(f"127.0.0.1:{_closed_port()}")
    args = () if body is None else (body,)
    reply = await follower.call(method, path, *args, key="k")
    assert (reply.status, reply.body["code"]) == (503, "unavailable"), reply.body
    assert reply.headers["Retry-After"] == "1"
    assert "cannot connect" in reply.body["detail"]
    assert "X-Budgetd-Leader" not in reply.headers
    metrics = await (await follower.client.get("/metrics")).text()
    assert 'budgetd_http_forwards_total{result="unreachable"} 1.0' in metrics


async def test_a_leader_address_that_is_no_url_is_503(start_follower):
    follower = await start_follower("http://[not-an-address")
    reply = await follower.call("POST", "/v1/reservations", RESERVE, key="k")
    assert (reply.status, reply.body["code"]) == (503, "unavailable"), reply.body


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_leader() -> AsyncIterator[Callable[[Behaviour], Awaitable[tuple[str, list[int]]]]]:
    """A stand-in leader at the TCP level: reads each request in full, counts it, then does
    what the test says (close at once, or never answer)."""
    servers: list[asyncio.Server] = []

    async def start(behaviour: Behaviour) -> tuple[str, list[int]]:
        requests: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            requests.append(len(head) + length)
            await behaviour(reader, writer)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}", requests

    yield start
    for server in servers:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the follower gives up and closes
    writer.close()


MUTATIONS = [
    ("POST", "/v1/reservations", RESERVE),
    ("PUT", "/v1/campaigns/acme", {"currency": "USD", "timezone": "UTC"}),
    ("DELETE", "/v1/cluster/members/n2", None),
]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS, ids=["post", "put", "delete"])
async def test_a_mutation_whose_connection_breaks_after_sending_is_504(
    raw_leader, start_follower, method, path, body
):
    address, requests = await raw_leader(_hang_up)
    follower = await start_follower(address)
    args = () if body is None else (body,)
    reply = await follower.call(method, path, *args, key="k")
    assert (reply.status, reply.body["code"]) == (504, "outcome_unknown"), reply.body
    assert "may or may not have been applied" in reply.body["detail"]
    # sent once: aiohttp's own retry of PUT and DELETE on a dropped connection is off
    assert len(requests) == 1


async def test_a_read_whose_connection_breaks_is_503(raw_leader, start_follower):
    address, requests = await raw_leader(_hang_up)
    follower = await start_follower(address)
    reply = await follower.call("GET", "/v1/campaigns/acme", token="reader")
    assert (reply.status, reply.body["code"]) == (503, "unavailable"), reply.body
    assert reply.headers["Retry-After"] == "1"
    assert len(requests) == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/reservations", RESERVE, 504),
        ("GET", "/v1/campaigns/acme", None, 503),
    ],
    ids=["post", "get"],
)
async def test_a_leader_that_never_answers(
    raw_leader, start_follower, monkeypatch, method, path, body, status
):
    monkeypatch.setattr(_forward, "FORWARD_TIMEOUT_S", 0.2)
    address, requests = await raw_leader(_never_answer)
    follower = await start_follower(address)
    args = () if body is None else (body,)
    reply = await follower.call(method, path, *args, key="k")
    assert reply.status == status, reply.body
    assert "timed out" in reply.body["detail"]
    assert len(requests) == 1


async def test_the_request_id_is_echoed_and_crosses_to_the_leader(echo, start_follower):
    address, seen = echo
    follower = await start_follower(address)
    headers = {"Authorization": "Bearer admin-secret-token", "Content-Type": "application/json"}
    body = b'{"currency":"USD","timezone":"UTC"}'
    given = await follower.client.put(
        "/v1/campaigns/acme", data=body, headers={**headers, "X-Request-Id": "bid-42.a"}
    )
    made = await follower.client.put("/v1/campaigns/acme", data=body, headers=headers)
    garbage = await follower.client.put(
        "/v1/campaigns/acme", data=body, headers={**headers, "X-Request-Id": "no spaces <>"}
    )
    assert given.headers["X-Request-Id"] == "bid-42.a"
    sent = [{name.lower(): value for name, value in r["headers"].items()} for r in seen]
    assert sent[0]["x-request-id"] == "bid-42.a"
    for response, headers_sent in ((made, sent[1]), (garbage, sent[2])):
        request_id = response.headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
        assert headers_sent["x-request-id"] == request_id
    assert made.headers["X-Request-Id"] != garbage.headers["X-Request-Id"]
