"""Admission control through the HTTP API: a /v1/batch that would pass proposer.queue_ops_max is
refused at once with 503 unavailable and Retry-After, writes nothing, and is accepted when sent
again (same keys) once the work ahead of it is answered. A real Proposer behind the app, over a
log that holds its entries until the test applies them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from budgetd.api import Tokens, make_app
from budgetd.proposer import Proposer
from budgetd.settings import ApiSettings, ProposerSettings
from tests.api.conftest import Harness, ScriptedService
from tests.node.test_proposer import ScriptedLog

#: Ops of the held work plus one more batch pass this; one batch alone fits.
QUEUE_OPS_MAX = 30
BATCH_OPS = 20
WAIT_S = 5.0


class ProposingService(ScriptedService):
    """The scripted service, but submits go through a real Proposer over a `ScriptedLog` that
    applies to this service's ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.log = ScriptedLog()
        self.log.ledger = self.ledger
        self.proposer = Proposer(
            self.log,
            ProposerSettings(
                queue_ops_max=QUEUE_OPS_MAX,
                inflight_batches_max=1,
                pulse_interval_ms=3_600_000,
                request_timeout_ms=60_000,
            ),
        )

    def admit(self, ops: int) -> None:
        self.proposer.admit(ops)

    async def submit(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.submits.append(ops)
        return await self.proposer.submit(ops)


@pytest.fixture
async def held_api(tokens: Tokens) -> AsyncIterator[Harness]:
    service = ProposingService()
    service.seed(
        [
            {
                "op": "put_campaign",
                "campaign_id": "acme",
                "currency": "USD",
                "timezone": "UTC",
                "daily_budget_micros": 10**12,
                "status": "active",
            }
        ]
    )
    settings = ApiSettings(body_bytes_max=65_536, batch_ops_max=BATCH_OPS)
    async with TestClient(TestServer(make_app(service, settings, tokens))) as client:
        yield Harness(client, service)


def _batch(prefix: str) -> dict[str, Any]:
    ops = [
        {
            "op": "reserve",
            "idempotency_key": f"{prefix}-{i}",
            "campaign_id": "acme",
            "amount_micros": 1_000,
            "ttl_ms": 60_000,
            "bidder_id": "b1",
        }
        for i in range(BATCH_OPS)
    ]
    return {"ops": ops}


async def _until(condition: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def test_a_batch_past_the_bound_is_refused_at_once_writes_nothing_and_may_be_retried(
    held_api: Harness,
) -> None:
    service = held_api.service
    assert isinstance(service, ProposingService)
    first = asyncio.create_task(held_api.call("POST", "/v1/batch", _batch("a"), token="bidder"))
    await _until(lambda: len(service.log.entries) == 1)

    refused = await held_api.call("POST", "/v1/batch", _batch("b"), token="bidder")

    assert refused.status == 503
    assert refused.content_type.startswith("application/problem+json")
    assert refused.body["code"] == "unavailable" and refused.body["retryable"] is True
    assert "overloaded" in refused.body["detail"]
    assert "proposer.queue_ops_max" in refused.body["detail"]
    assert refused.headers["Retry-After"] == "1"
    # Refused before validation: the refused batch was never submitted, nothing of it reached
    # the log or the ledger, and the held one is not applied.
    assert len(service.submits) == 1
    assert len(service.log.entries) == 1
    assert service.proposer.stats.ops_proposed == BATCH_OPS
    assert service.ledger.export_state()["reservations"] == []
    assert service.proposer.stats.requests_rejected_queue_full == 1
    # The cluster view still answers while the proposer is full.
    view = await held_api.call("GET", "/v1/cluster", token="reader")
    assert view.status == 200

    service.log.apply_next()
    assert (await first).status == 200
    retry = asyncio.create_task(held_api.call("POST", "/v1/batch", _batch("b"), token="bidder"))
    await _until(lambda: len(service.log.entries) == 1)
    service.log.apply_next()
    reply = await retry
    assert reply.status == 200
    assert [r["code"] for r in reply.body["results"]] == ["ok"] * BATCH_OPS
    assert len(service.ledger.export_state()["reservations"]) == 2 * BATCH_OPS
