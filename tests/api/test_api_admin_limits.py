"""GET and PATCH /v1/admin/limits: admin only, a change goes through the log as the ledger's
``set_limits`` op, bad input is a problem that writes nothing, every call is audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from budgetd.api import AuditLog, make_app
from budgetd.ledger import Limits
from budgetd.ledger.limits import (
    ENDED_RETENTION_MS_FLOOR,
    IDEMPOTENCY_RETENTION_MS_FLOOR,
    SETTABLE,
    TTL_MS_CEILING,
)
from tests.api.conftest import Harness

PATH = "/v1/admin/limits"


async def test_get_shows_every_limit_the_usage_and_what_may_change(api, seeded) -> None:
    reply = await api.call("GET", PATH)
    assert reply.status == 200, reply.body
    assert reply.body["limits"] == Limits().to_plain()
    stats = seeded.ledger.stats()
    assert reply.body["usage"] == {
        name: stats[name]
        for name in ("campaigns", "open_reservations", "ended_reservations", "idempotency_keys")
    }
    assert reply.body["usage"]["campaigns"] >= 1
    assert reply.body["settable"] == list(SETTABLE)
    assert reply.body["stale_ok"] is False
    local = await api.call("GET", PATH + "?consistency=local")
    assert local.status == 200 and local.body["stale_ok"] is True


async def test_patch_changes_the_named_limits_through_the_log(api, seeded, fmt) -> None:
    body = {"idempotency_keys_max": 12_345, "idempotency_retention_ms": 2 * 3_600_000}
    reply = await api.call("PATCH", PATH, body, fmt=fmt)
    assert reply.status == 200, reply.body
    expected = {**Limits().to_plain(), **body}
    assert reply.body["limits"] == expected
    assert seeded.submits[-1] == [{"op": "set_limits", **body}]
    assert seeded.ledger.limits.to_plain() == expected
    assert (await api.call("GET", PATH)).body["limits"] == expected
    # The same change again: the same limits (no idempotency key needed).
    again = await api.call("PATCH", PATH, body, fmt=fmt)
    assert again.status == 200 and again.body["limits"] == expected


async def test_a_limit_below_usage_is_accepted_and_refuses_new_growth(api, seeded) -> None:
    held = seeded.ledger.stats()["campaigns"]
    reply = await api.call("PATCH", PATH, {"campaigns_max": 1})
    assert reply.status == 200 and reply.body["usage"]["campaigns"] == held > 1
    root = {"currency": "USD", "timezone": "UTC"}
    refused = await api.call("PUT", "/v1/campaigns/newco", root)
    assert refused.status == 409 and refused.code == "limit_reached"


@pytest.mark.parametrize("token", ["bidder", "reader", "acme-bidder"])
@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_only_admin_may_read_or_change_limits(api, seeded, token, method) -> None:
    body = {"campaigns_max": 5} if method == "PATCH" else None
    before = seeded.ledger.digest()
    reply = (
        await api.call(method, PATH, body, token=token)
        if body
        else await api.call(method, PATH, token=token)
    )
    assert reply.status == 403 and reply.code == "forbidden"
    assert seeded.submits == [] and seeded.ledger.digest() == before
    anonymous = await api.call(method, PATH, token=None)
    assert anonymous.status == 401


BAD_BODIES: dict[str, Any] = {
    "empty patch": {},
    "unknown field": {"idempotency_keys_maximum": 10},
    "fixed limit": {"batch_ops_max": 10},
    "string": {"campaigns_max": "10"},
    "float": {"campaigns_max": 10.5},
    "bool": {"campaigns_max": True},
    "null": {"campaigns_max": None},
    "zero": {"idempotency_keys_max": 0},
    "negative": {"open_reservations_max": -5},
    "beyond int64": {"campaigns_max": 2**63},
    "ttl above a day": {"ttl_ms_max": TTL_MS_CEILING + 1},
    "retention below the floor": {"idempotency_retention_ms": IDEMPOTENCY_RETENTION_MS_FLOOR - 1},
    "ended retention below the floor": {"ended_retention_ms": ENDED_RETENTION_MS_FLOOR - 1},
    "one good and one bad": {"campaigns_max": 10, "ended_reservations_max": 0},
    "not an object": [{"campaigns_max": 10}],
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_input_is_a_problem_and_writes_nothing(api, seeded, body) -> None:
    before = seeded.ledger.digest()
    reply = await api.call("PATCH", PATH, body)
    assert reply.status == 400, reply.body
    assert reply.code == "invalid_request" and reply.body["detail"]
    assert reply.content_type.startswith("application/problem+json")
    assert seeded.submits == []
    assert seeded.ledger.digest() == before and seeded.ledger.limits == Limits()


async def test_a_fixed_limit_is_named_as_fixed(api, seeded) -> None:
    reply = await api.call("PATCH", PATH, {"batch_ops_max": 10, "campaigns_max": 10})
    assert reply.status == 400 and "batch_ops_max: fixed at run time" in reply.body["detail"]
    assert seeded.submits == []


async def test_no_body_and_an_unknown_query_are_refused(api, seeded) -> None:
    assert (await api.call("PATCH", PATH)).status == 400
    reply = await api.call("PATCH", PATH + "?force=1", {"campaigns_max": 10})
    assert reply.status == 400 and "force" in reply.body["detail"]
    assert seeded.submits == []


async def test_the_ledger_checks_a_change_the_api_let_through(api, seeded) -> None:
    """Defence in depth: a set_limits op that reached the log with a bad value is refused there,
    and the API answers the ledger's refusal."""
    seeded.ledger.limits = Limits()
    op = {"op": "set_limits", "idempotency_retention_ms": 1}
    [result] = await seeded.submit([op])
    assert result["code"] == "invalid_request"
    assert seeded.ledger.limits == Limits()


async def test_a_change_is_audited_with_the_limits_it_names(
    service, settings, tokens, tmp_path: Path, seeded
) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    async with TestClient(TestServer(make_app(service, settings, tokens, audit=audit))) as client:
        api = Harness(client, service)
        body = {"ttl_ms_max": 60_000, "campaigns_max": 10}
        assert (await api.call("PATCH", PATH, body)).status == 200
        assert (await api.call("PATCH", PATH, {"ttl_ms_max": 0})).status == 400
        assert (await api.call("PATCH", PATH, body, token="bidder")).status == 403
        assert (await api.call("GET", PATH)).status == 200
    audit.close()
    found = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["method"], r["route"], r["status"]) for r in found] == [
        ("PATCH", PATH, 200),
        ("PATCH", PATH, 400),
        ("PATCH", PATH, 403),
        ("GET", PATH, 200),
    ]
    assert found[0]["target"] == "campaigns_max,ttl_ms_max"
    assert found[0]["token_name"] == "admin" and found[2]["token_name"] == "bidder"
