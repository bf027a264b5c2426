"""Every route's happy path, in JSON and in msgpack, against a real ledger behind the scripted
service: what reaches the log, and what the caller gets back."""

from __future__ import annotations

import json

import msgpack
import pytest

from budgetd.api import _bodies as bodies
from budgetd.api._fastbody import FastBody
from budgetd.api._handlers import render_op_result, render_reserved

pytestmark = pytest.mark.usefixtures("seeded")


async def test_put_campaign_creates_then_updates_with_if_match(api, service, root, fmt):
    reply = await api.call("PUT", "/v1/campaigns/initech", root, fmt=fmt)
    assert reply.status == 201
    assert reply.headers["Location"] == "/v1/campaigns/initech"
    assert reply.headers["ETag"] == '"1"'
    assert reply.body["created"] is True and reply.body["replayed"] is False
    assert reply.body["version"] == 1
    assert reply.body["daily_budget_micros"] == 100_000_000
    assert reply.body["applied_index"] == service.applied_index()
    assert service.submits == [[{"op": "put_campaign", "campaign_id": "initech", **root}]]

    changed = {**root, "daily_budget_micros": 50_000_000}
    reply = await api.call(
        "PUT", "/v1/campaigns/initech", changed, fmt=fmt, headers={"If-Match": '"1"'}
    )
    assert reply.status == 200
    assert (reply.body["version"], reply.body["created"]) == (2, False)
    assert reply.headers["ETag"] == '"2"'
    assert service.submits[-1][0]["expected_version"] == 1

    # an unchanged body keeps the version: PUT is idempotent by itself
    reply = await api.call("PUT", "/v1/campaigns/initech", changed, fmt=fmt)
    assert (reply.status, reply.body["version"]) == (200, 2)


async def test_put_child_inherits_currency_and_passes_nulls_as_absent(api, service, fmt):
    body = {"daily_budget_micros": 5_000_000, "total_budget_micros": None, "end_ms": None}
    reply = await api.call("PUT", "/v1/campaigns/acme:winter", body, fmt=fmt, key="put-1")
    assert reply.status == 201
    assert reply.body["currency"] == "USD" and reply.body["parent_id"] == "acme"
    assert service.submits == [
        [
            {
                "op": "put_campaign",
                "campaign_id": "acme:winter",
                "daily_budget_micros": 5_000_000,
                "idempotency_key": "put-1",
            }
        ]
    ]


async def test_put_traffic_shaped_pacing(api, root, fmt):
    weights = [0] * 6 + [5] * 12 + [1] * 6
    body = {**root, "pacing": {"mode": "traffic_shaped", "hourly_weights": weights}}
    reply = await api.call("PUT", "/v1/campaigns/shaped", body, fmt=fmt)
    assert reply.status == 201
    assert reply.body["pacing"]["mode"] == "traffic_shaped"
    assert reply.body["pacing"]["hourly_weights"] == weights


@pytest.mark.parametrize("consistency", [None, "strong", "local"])
async def test_get_campaign(api, service, fmt, consistency):
    query = "" if consistency is None else f"?consistency={consistency}"
    reply = await api.call("GET", f"/v1/campaigns/acme:summer{query}", token="reader", fmt=fmt)
    assert reply.status == 200
    body = reply.body
    assert body["campaign_id"] == "acme:summer"
    assert body["daily_budget_micros"] == 20_000_000
    assert body["available_micros"] == 20_000_000
    assert body["day"] == "2026-03-08"
    assert body["pacing"]["pass_through_rate"] == body["pacing"]["pass_through_ppm"] / 1e6
    assert body["applied_index"] == service.applied_index()
    assert reply.headers["ETag"] == f'"{body["version"]}"'
    strong = consistency != "local"
    assert body["stale_ok"] is (not strong)
    assert service.barriers == (1 if strong else 0)
    assert service.submits == []


async def test_strong_read_sees_the_write_before_it(api, service, reserve_body):
    await api.call("POST", "/v1/reservations", reserve_body("acme:summer", 3_000_000), key="r1")
    reply = await api.call("GET", "/v1/campaigns/acme", token="reader")
    assert reply.body["held_micros"] == 3_000_000
    assert reply.body["available_micros"] == 97_000_000
    assert reply.body["applied_index"] >= 2


async def test_list_campaigns_pages_with_a_cursor(api, service, fmt):
    service.seed(
        [
            {"op": "put_campaign", "campaign_id": f"acme:c{index}", "daily_budget_micros": 10**6}
            for index in range(5)
        ]
    )
    seen = []
    after = None
    pages = 0
    while True:
        query = "prefix=acme:&limit=2" + (f"&after={after}" if after else "")
        reply = await api.call("GET", f"/v1/campaigns?{query}", token="reader", fmt=fmt)
        assert reply.status == 200
        assert reply.body["stale_ok"] is False
        seen += [campaign["campaign_id"] for campaign in reply.body["campaigns"]]
        pages += 1
        after = reply.body["next"]
        if after is None:
            break
    assert seen == ["acme:c0", "acme:c1", "acme:c2", "acme:c3", "acme:c4", "acme:summer"]
    assert pages == 3


async def test_list_campaigns_defaults_and_local(api, service):
    reply = await api.call("GET", "/v1/campaigns?consistency=local", token="reader")
    assert [c["campaign_id"] for c in reply.body["campaigns"]] == [
        "acme",
        "acme2",
        "acme:summer",
        "globex",
    ]
    assert reply.body["next"] is None and reply.body["stale_ok"] is True
    assert service.barriers == 0


async def test_reserve(api, service, reserve_body, fmt):
    body = {**reserve_body("acme:summer", 5_000_000), "min_amount_micros": 1_000}
    reply = await api.call("POST", "/v1/reservations", body, key="bid-42", fmt=fmt, token="bidder")
    assert reply.status == 201
    rid = reply.body["reservation_id"]
    assert reply.headers["Location"] == f"/v1/reservations/{rid}"
    assert reply.body["granted_micros"] == 5_000_000
    assert reply.body["expires_at_ms"] == service.now_ms + 30_000
    assert reply.body["pass_through_rate"] == reply.body["pass_through_ppm"] / 1e6 == 1.0
    assert reply.body["replayed"] is False
    assert service.submits == [[{"op": "reserve", "idempotency_key": "bid-42", **body}]]


async def test_reserve_grants_what_is_left(api, reserve_body):
    reply = await api.call(
        "POST", "/v1/reservations", reserve_body("acme:summer", 50_000_000), key="k"
    )
    assert (reply.status, reply.body["granted_micros"]) == (201, 20_000_000)


async def test_commit_partial_then_final(api, service, make_reservation, fmt):
    rid = make_reservation("acme", 4_000_000)
    path = f"/v1/reservations/{rid}/commit"
    reply = await api.call("POST", path, {"amount_micros": 1_000_000}, key="c1", fmt=fmt)
    assert reply.status == 200
    assert reply.body == {
        "reservation_id": rid,
        "committed_micros": 1_000_000,
        "remaining_micros": 3_000_000,
        "late": False,
        "overspend_micros": 0,
        "replayed": False,
    }
    reply = await api.call(
        "POST", path, {"amount_micros": 500_000, "final": True}, key="c2", fmt=fmt
    )
    assert (reply.body["committed_micros"], reply.body["remaining_micros"]) == (1_500_000, 0)
    assert service.submits[-1] == [
        {
            "op": "commit",
            "idempotency_key": "c2",
            "reservation_id": rid,
            "amount_micros": 500_000,
            "final": True,
        }
    ]


async def test_late_commit_is_recorded(api, service, make_reservation):
    rid = make_reservation("acme", 1_000_000)
    service.now_ms += 60_000
    reply = await api.call(
        "POST", f"/v1/reservations/{rid}/commit", {"amount_micros": 700_000}, key="late"
    )
    assert (reply.status, reply.body["late"]) == (200, True)


async def test_release(api, service, make_reservation, fmt):
    rid = make_reservation("acme", 2_000_000)
    reply = await api.call("POST", f"/v1/reservations/{rid}/release", {}, key="rel", fmt=fmt)
    assert reply.status == 200
    assert reply.body == {"reservation_id": rid, "released_micros": 2_000_000, "replayed": False}
    assert service.submits == [[{"op": "release", "idempotency_key": "rel", "reservation_id": rid}]]


async def test_release_without_a_body(api, make_reservation):
    rid = make_reservation()
    reply = await api.call("POST", f"/v1/reservations/{rid}/release", key="rel")
    assert (reply.status, reply.body["released_micros"]) == (200, 1_000_000)


async def test_spend(api, service, fmt):
    body = {"amount_micros": 250_000, "bidder_id": "fra-1"}
    reply = await api.call("POST", "/v1/campaigns/acme:summer/spend", body, key="s1", fmt=fmt)
    assert reply.status == 200
    assert reply.body == {
        "campaign_id": "acme:summer",
        "recorded_micros": 250_000,
        "overspend_micros": 0,
        "day": "2026-03-08",
        "replayed": False,
    }
    assert service.submits == [
        [{"op": "spend", "idempotency_key": "s1", "campaign_id": "acme:summer", **body}]
    ]


async def test_get_reservation(api, service, make_reservation, fmt):
    rid = make_reservation("acme:summer", 2_000_000)
    reply = await api.call("GET", f"/v1/reservations/{rid}", token="reader", fmt=fmt)
    assert reply.status == 200
    body = reply.body
    assert (body["reservation_id"], body["campaign_id"], body["bidder_id"]) == (
        rid,
        "acme:summer",
        "fra-1",
    )
    assert (body["granted_micros"], body["committed_micros"], body["state"]) == (
        2_000_000,
        0,
        "open",
    )
    assert body["late"] is False and body["stale_ok"] is False
    assert body["pass_through_rate"] == body["pass_through_ppm"] / 1e6
    service.now_ms += 30_000
    service.seed([{"op": "pulse"}])  # the leader's pulse carries time to the ledger
    reply = await api.call("GET", f"/v1/reservations/{rid}?consistency=local", token="reader")
    assert (reply.body["state"], reply.body["stale_ok"]) == ("expired", True)


async def test_batch_is_one_log_entry_with_results_in_order(
    api, service, make_reservation, reserve_body, fmt
):
    rid = make_reservation("acme", 3_000_000)
    ops = [
        {"op": "reserve", "idempotency_key": "b1", **reserve_body("acme:summer", 2_000_000)},
        {"op": "commit", "idempotency_key": "b2", "reservation_id": rid, "amount_micros": 10},
        {"op": "reserve", "idempotency_key": "b3", **reserve_body("acme:summer", 10**12)},
        {"op": "release", "idempotency_key": "b4", "reservation_id": rid},
        {
            "op": "spend",
            "idempotency_key": "b5",
            "campaign_id": "globex",
            "amount_micros": 7,
            "bidder_id": "x",
        },
        {"op": "release", "idempotency_key": "b6", "reservation_id": 999},
    ]
    fast = FastBody(bodies.BATCH)
    assert fast.decode(msgpack.packb({"ops": ops})) == {"ops": ops}  # msgpack: the fast path
    reply = await api.call("POST", "/v1/batch", {"ops": ops}, token="bidder", fmt=fmt)
    assert reply.status == 200
    assert service.submits == [ops]
    results = reply.body["results"]
    assert [result["code"] for result in results] == [
        "ok",
        "ok",
        "ok",
        "ok",
        "ok",
        "not_found",
    ]
    assert results[0]["granted_micros"] == 2_000_000
    assert results[0]["pass_through_rate"] == 1.0
    assert results[1] == {
        "code": "ok",
        "reservation_id": rid,
        "committed_micros": 10,
        "remaining_micros": 2_999_990,
        "late": False,
        "overspend_micros": 0,
        "replayed": False,
    }
    assert results[2]["granted_micros"] == 18_000_000  # what the 20/day child had left
    assert results[3]["released_micros"] == 2_999_990
    assert results[4]["recorded_micros"] == 7
    assert results[5]["status"] == 404 and results[5]["retryable"] is False


async def test_batch_refusal_in_a_slot(api, service, reserve_body):
    service.seed([{"op": "put_campaign", "campaign_id": "tiny", **{**_tiny()}}])
    ops = [
        {"op": "reserve", "idempotency_key": "t1", **reserve_body("tiny", 5)},
        {"op": "reserve", "idempotency_key": "t2", **reserve_body("tiny", 5)},
    ]
    reply = await api.call("POST", "/v1/batch", {"ops": ops}, token="bidder")
    first, second = reply.body["results"]
    assert first["granted_micros"] == 5
    assert second["code"] == "budget_exhausted" and second["status"] == 409
    assert second["type"] == "urn:budgetd:problem:budget_exhausted"


def _tiny():
    return {
        "currency": "USD",
        "timezone": "UTC",
        "daily_budget_micros": 5,
        "pacing": {"mode": "asap"},
    }


async def test_retry_with_the_same_key_returns_the_original(api, service, reserve_body, fmt):
    first = await api.call("POST", "/v1/reservations", reserve_body(), key="same", fmt=fmt)
    again = await api.call("POST", "/v1/reservations", reserve_body(), key="same", fmt=fmt)
    assert again.status == 201
    assert again.body["reservation_id"] == first.body["reservation_id"]
    assert again.body["replayed"] is True
    assert service.ledger.campaign("acme")["held_micros"] == 1_000_000


async def test_cluster(api, fmt):
    reply = await api.call("GET", "/v1/cluster", token="reader", fmt=fmt)
    assert reply.status == 200
    assert reply.body["leader_id"] == "n1"
    assert [member["id"] for member in reply.body["members"]] == ["n1", "n2"]
    assert len(reply.body["digest"]) == 64
    assert reply.body["digest_index"] == reply.body["applied_index"]


async def test_cluster_digest_freshness_is_chosen_by_the_caller(api, service):
    assert (await api.call("GET", "/v1/cluster", token="reader")).status == 200
    assert service.fresh_digests == 0
    assert (await api.call("GET", "/v1/cluster?digest=fresh", token="reader")).status == 200
    assert service.fresh_digests == 1
    assert service.unrefreshed_views == 0
    assert (await api.call("GET", "/v1/cluster?digest=last", token="reader")).status == 200
    assert service.fresh_digests == 1 and service.unrefreshed_views == 1
    bad = await api.call("GET", "/v1/cluster?digest=now", token="reader")
    assert bad.status == 400 and bad.body["code"] == "invalid_request"
    assert "cached, fresh or last" in bad.body["detail"]


async def test_health_and_ready_need_no_token(api, fmt):
    reply = await api.call("GET", "/healthz", token=None, fmt=fmt)
    assert (reply.status, reply.body) == (200, {"status": "ok", "node_id": "n1"})
    reply = await api.call("GET", "/readyz", token=None, fmt=fmt)
    assert (reply.status, reply.body) == (200, {"ready": True, "node_id": "n1"})


async def test_openapi_is_served(api):
    reply = await api.call("GET", "/openapi.json", token=None)
    assert reply.status == 200 and reply.body["openapi"] == "3.1.0"
    assert "/v1/reservations" in reply.body["paths"]


async def test_json_and_msgpack_mix(api, reserve_body):
    """A msgpack body with a JSON answer, and the other way round."""
    reply = await api.call(
        "POST",
        "/v1/reservations",
        data=msgpack.packb(reserve_body()),
        content_type="application/msgpack",
        key="m1",
    )
    assert (reply.status, reply.content_type) == (201, "application/json")
    reply = await api.call(
        "POST",
        "/v1/reservations",
        data=json.dumps(reserve_body()).encode(),
        content_type="application/json",
        key="m2",
        headers={"Accept": "application/json;q=0.5, application/msgpack"},
    )
    assert (reply.status, reply.content_type) == (201, "application/msgpack")


@pytest.mark.parametrize("replayed", [False, True])
def test_a_batch_reserve_result_is_the_single_reserve_body_with_its_code(replayed):
    """The batch completes the ledger's reserve result in place; it must read as the single-op
    route's body with ``code: ok`` first."""
    result = {
        "code": "ok",
        "reservation_id": 7,
        "granted_micros": 1_500,
        "expires_at_ms": 1_772_949_660_000,
        "pass_through_ppm": 250_000,
    }
    if replayed:
        result["replayed"] = True
    expected = {"code": "ok", **render_reserved(dict(result))}
    rendered = render_op_result({"op": "reserve"}, dict(result))
    assert rendered == expected
    assert rendered["replayed"] is replayed and rendered["pass_through_rate"] == 0.25
