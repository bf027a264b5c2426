"""Asked for it with ``Prefer: redirect``, a follower answers 307 with the leader's address; a
curl -L style client that re-sends the same method, body and headers to Location gets its answer
from the leader. (Without it the follower forwards: tests/api/test_api_forward.py.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from budgetd.api import make_app
from budgetd.service import NotLeader
from budgetd.settings import ApiSettings


@dataclass
class Pair:
    follower: TestServer
    leader: TestServer


@pytest.fixture
async def pair(seeded, tokens) -> AsyncIterator[Pair]:
    leader = TestServer(make_app(seeded, ApiSettings(), tokens))
    await leader.start_server()
    follower_service = type(seeded)(node_id="n2")
    follower_service.submit_error = NotLeader(
        "n2 follows n1", leader_http=f"{leader.host}:{leader.port}"
    )
    follower_service.barrier_error = follower_service.submit_error
    follower = TestServer(make_app(follower_service, ApiSettings(), tokens))
    await follower.start_server()
    try:
        yield Pair(follower, leader)
    finally:
        await follower.close()
        await leader.close()


async def curl_location(
    method: str, url: str, *, body: Any = None, headers: dict[str, str], hops_max: int = 3
) -> tuple[int, Any, list[str]]:
    """Like ``curl -L --location-trusted``: follow 307 with the same method, body and headers."""
    data = None if body is None else json.dumps(body).encode()
    visited = [url]
    async with aiohttp.ClientSession() as session:
        for _ in range(hops_max + 1):
            async with session.request(
                method, url, data=data, headers=headers, allow_redirects=False
            ) as response:
                payload = await response.json(content_type=None)
                if response.status != 307:
                    return response.status, payload, visited
                assert payload["code"] == "not_leader"
                url = response.headers["Location"]
                visited.append(url)
    raise AssertionError(f"more than {hops_max} redirects: {visited}")


HEADERS = {
    "Authorization": "Bearer admin-secret-token",
    "Content-Type": "application/json",
    "Prefer": "redirect",
}


async def test_a_write_through_a_follower_lands_on_the_leader(pair, seeded):
    body = {"campaign_id": "acme", "amount_micros": 1_000, "ttl_ms": 5_000, "bidder_id": "b"}
    status, payload, visited = await curl_location(
        "POST",
        str(pair.follower.make_url("/v1/reservations")),
        body=body,
        headers={**HEADERS, "Idempotency-Key": "via-follower"},
    )
    assert status == 201, payload
    assert payload["granted_micros"] == 1_000
    assert visited[1] == f"http://{pair.leader.host}:{pair.leader.port}/v1/reservations"
    assert seeded.ledger.campaign("acme")["held_micros"] == 1_000


async def test_a_put_keeps_its_method_and_body(pair, seeded):
    body = {"currency": "USD", "timezone": "UTC", "daily_budget_micros": 7}
    status, payload, _ = await curl_location(
        "PUT", str(pair.follower.make_url("/v1/campaigns/initech")), body=body, headers=HEADERS
    )
    assert (status, payload["daily_budget_micros"]) == (201, 7)


async def test_a_strong_read_keeps_its_query(pair):
    url = str(pair.follower.make_url("/v1/campaigns?prefix=acme:&limit=1&consistency=strong"))
    status, payload, visited = await curl_location("GET", url, headers=HEADERS)
    assert status == 200
    assert [c["campaign_id"] for c in payload["campaigns"]] == ["acme:summer"]
    assert visited[1].endswith("/v1/campaigns?prefix=acme:&limit=1&consistency=strong")
