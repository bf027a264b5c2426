"""The error table (DESIGN §5) end to end: every ledger refusal, every service failure, and the
router's own errors, each answered as a problem object with its documented status."""

from __future__ import annotations

import pytest

from budgetd.api import PROBLEMS
from budgetd.ledger import Ledger, Limits, codes
from budgetd.service import NotLeader, OutcomeUnknown, Unavailable

pytestmark = pytest.mark.usefixtures("seeded")

#: DESIGN §5's table, plus the ledger's extra refusals, as the contract states them.
EXPECTED_STATUS = {
    "invalid_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "budget_exhausted": 409,
    "pacing_limited": 409,
    "campaign_inactive": 409,
    "reservation_closed": 409,
    "version_conflict": 409,
    "idempotency_key_reused": 409,
    "parent_not_found": 409,
    "outside_flight": 409,
    "limit_reached": 409,
    "payload_too_large": 413,
    "not_leader": 307,
    "unavailable": 503,
    "outcome_unknown": 504,
}
RETRYABLE = {"not_leader", "unavailable", "outcome_unknown"}


def test_the_table_holds_the_contract_and_every_ledger_refusal():
    for code, status in EXPECTED_STATUS.items():
        assert PROBLEMS[code].status == status, code
        assert PROBLEMS[code].retryable is (code in RETRYABLE), code
    assert set(codes.REFUSALS) <= set(PROBLEMS)
    extra = set(PROBLEMS) - set(EXPECTED_STATUS)
    assert extra == {
        "method_not_allowed",
        "internal_error",
        "conflict",
        "request_timeout",
        "rate_limited",
        "request_header_too_large",
    }
    assert (PROBLEMS["conflict"].status, PROBLEMS["conflict"].retryable) == (409, False)
    # The limits: a slow body and a token over its rate may succeed later; a huge header not.
    assert (PROBLEMS["request_timeout"].status, PROBLEMS["request_timeout"].retryable) == (
        408,
        True,
    )
    assert (PROBLEMS["rate_limited"].status, PROBLEMS["rate_limited"].retryable) == (429, True)
    assert PROBLEMS["request_header_too_large"].status == 431


def expect_problem(reply, code: str) -> dict:
    assert reply.status == PROBLEMS[code].status, (reply.status, reply.body)
    body = reply.body
    assert body["code"] == code, body
    assert body["status"] == reply.status
    assert body["type"] == f"urn:budgetd:problem:{code}"
    assert body["title"] == PROBLEMS[code].title
    assert body["retryable"] is PROBLEMS[code].retryable
    assert isinstance(body["detail"], str) and body["detail"]
    if "msgpack" not in reply.content_type:
        assert reply.content_type == "application/problem+json"
    return body


# ----------------------------------------------------------------------------------------------
# Ledger refusals


def _root(**overrides):
    return {
        "op": "put_campaign",
        "currency": "USD",
        "timezone": "UTC",
        "daily_budget_micros": 100_000_000,
        **overrides,
    }


async def test_budget_exhausted(api, service, reserve_body, fmt):
    service.seed([_root(campaign_id="tiny", daily_budget_micros=5)])
    body = {**reserve_body("tiny", 10), "min_amount_micros": 10}
    reply = await api.call("POST", "/v1/reservations", body, key="k", fmt=fmt)
    expect_problem(reply, "budget_exhausted")
    # the refusal is remembered under its key: a retry gets the same answer, marked replayed
    reply = await api.call("POST", "/v1/reservations", body, key="k", fmt=fmt)
    assert expect_problem(reply, "budget_exhausted")["replayed"] is True


async def test_pacing_limited(api, service, reserve_body):
    service.seed([_root(campaign_id="paced", pacing={"mode": "even"})])
    body = {**reserve_body("paced", 90_000_000), "min_amount_micros": 90_000_000}
    expect_problem(await api.call("POST", "/v1/reservations", body, key="k"), "pacing_limited")


async def test_campaign_inactive(api, service, reserve_body):
    service.seed([_root(campaign_id="asleep", status="paused")])
    reply = await api.call("POST", "/v1/reservations", reserve_body("asleep"), key="k")
    expect_problem(reply, "campaign_inactive")


async def test_outside_flight(api, service, reserve_body):
    service.seed([_root(campaign_id="later", start_ms=service.now_ms + 86_400_000)])
    reply = await api.call("POST", "/v1/reservations", reserve_body("later"), key="k")
    expect_problem(reply, "outside_flight")


async def test_reservation_closed(api, make_reservation):
    rid = make_reservation()
    path = f"/v1/reservations/{rid}/release"
    assert (await api.call("POST", path, {}, key="r1")).status == 200
    expect_problem(await api.call("POST", path, {}, key="r2"), "reservation_closed")
    reply = await api.call("POST", f"/v1/reservations/{rid}/commit", {"amount_micros": 1}, key="c")
    expect_problem(reply, "reservation_closed")


async def test_version_conflict(api, root):
    reply = await api.call("PUT", "/v1/campaigns/acme", root, headers={"If-Match": "7"})
    expect_problem(reply, "version_conflict")


async def test_idempotency_key_reused(api, reserve_body, fmt):
    assert (await api.call("POST", "/v1/reservations", reserve_body(), key="k")).status == 201
    reply = await api.call("POST", "/v1/reservations", reserve_body("acme", 2), key="k", fmt=fmt)
    expect_problem(reply, "idempotency_key_reused")


async def test_parent_not_found(api):
    reply = await api.call("PUT", "/v1/campaigns/nobody:child", {"daily_budget_micros": 5})
    expect_problem(reply, "parent_not_found")


async def test_limit_reached(api, service, reserve_body):
    service.ledger = Ledger(Limits(open_reservations_max=1))
    service.seed([_root(campaign_id="acme")])
    assert (await api.call("POST", "/v1/reservations", reserve_body(), key="a")).status == 201
    reply = await api.call("POST", "/v1/reservations", reserve_body(), key="b")
    expect_problem(reply, "limit_reached")


async def test_not_found(api, service, fmt):
    reply = await api.call("POST", "/v1/reservations/77/commit", {"amount_micros": 1}, key="c")
    expect_problem(reply, "not_found")
    reply = await api.call("POST", "/v1/campaigns/nobody/spend", _spend(), key="s", fmt=fmt)
    expect_problem(reply, "not_found")
    expect_problem(await api.call("GET", "/v1/campaigns/nobody", fmt=fmt), "not_found")
    expect_problem(await api.call("GET", "/v1/reservations/77", fmt=fmt), "not_found")


def _spend():
    return {"amount_micros": 5, "bidder_id": "b"}


async def test_the_ledgers_own_invalid_request_is_400(api, service, reserve_body):
    """ttl_ms above the ledger's (configurable) limit: the ledger refuses; nothing is written."""
    body = {**reserve_body(), "ttl_ms": 10**10}
    digest = service.ledger.digest()
    expect_problem(await api.call("POST", "/v1/reservations", body, key="k"), "invalid_request")
    assert service.ledger.digest() == digest


# ----------------------------------------------------------------------------------------------
# Service failures


def _mutations(rid: int) -> list[tuple[str, str, dict]]:
    return [
        ("PUT", "/v1/campaigns/acme", {"currency": "USD", "timezone": "UTC"}),
        (
            "POST",
            "/v1/reservations",
            {"campaign_id": "acme", "amount_micros": 5, "ttl_ms": 9, "bidder_id": "b"},
        ),
        ("POST", f"/v1/reservations/{rid}/commit", {"amount_micros": 5}),
        ("POST", f"/v1/reservations/{rid}/release", {}),
        ("POST", "/v1/campaigns/acme/spend", {"amount_micros": 5, "bidder_id": "b"}),
        (
            "POST",
            "/v1/batch",
            {"ops": [{"op": "release", "idempotency_key": "x", "reservation_id": rid}]},
        ),
    ]


_READS = ["/v1/campaigns/acme?consistency=strong", "/v1/campaigns?prefix=ac", "/v1/reservations/1"]


#: Without it a follower forwards the request to the leader (tests/api/test_api_forward.py).
PREFER_REDIRECT = {"Prefer": "redirect"}


@pytest.mark.parametrize("index", range(6))
async def test_not_leader_redirects_mutations_to_the_leader(api, service, make_reservation, index):
    method, path, body = _mutations(make_reservation())[index]
    service.submit_error = NotLeader("follower", leader_http="10.0.0.2:8080")
    reply = await api.call(method, path, body, key="k", headers=PREFER_REDIRECT)
    problem = expect_problem(reply, "not_leader")
    assert problem["leader"] == "10.0.0.2:8080"
    assert reply.headers["Location"] == f"http://10.0.0.2:8080{path}"
    assert reply.headers["X-Budgetd-Leader"] == "10.0.0.2:8080"
    assert reply.headers["Preference-Applied"] == "redirect"
    assert len(service.submits) == 1


@pytest.mark.parametrize("path", _READS)
async def test_not_leader_redirects_strong_reads_with_their_query(
    api, service, make_reservation, path
):
    make_reservation()
    service.barrier_error = NotLeader("follower", leader_http="http://leader.example:80/")
    reply = await api.call("GET", path, token="reader", headers=PREFER_REDIRECT)
    expect_problem(reply, "not_leader")
    assert reply.headers["Location"] == f"http://leader.example:80{path}"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/campaigns/acme?consistency=local",
        "/v1/campaigns?prefix=ac&consistency=local",
        "/v1/reservations/1?consistency=local",
    ],
)
async def test_local_reads_need_no_leader(api, service, make_reservation, path):
    make_reservation()
    service.barrier_error = NotLeader("follower", leader_http=None)
    reply = await api.call("GET", path, token="reader")
    assert reply.status == 200 and reply.body["stale_ok"] is True
    assert service.barriers == 0


@pytest.mark.parametrize(
    ("error", "code", "retry_after"),
    [
        (NotLeader("election under way", leader_http=None), "unavailable", "1"),
        (Unavailable("queue full", retry_after_s=3), "unavailable", "3"),
        (OutcomeUnknown("proposal timed out"), "outcome_unknown", None),
    ],
    ids=["no-leader", "unavailable", "unknown"],
)
@pytest.mark.parametrize("index", range(6))
async def test_service_failures(api, service, make_reservation, error, code, retry_after, index):
    method, path, body = _mutations(make_reservation())[index]
    service.submit_error = error
    problem = expect_problem(await api.call(method, path, body, key="k"), code)
    assert error.detail in problem["detail"]
    reply = await api.call(method, path, body, key="k", fmt="msgpack")
    expect_problem(reply, code)
    assert reply.headers.get("Retry-After") == retry_after


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Unavailable("no quorum"), "unavailable"),
        (OutcomeUnknown("barrier timed out"), "outcome_unknown"),
    ],
)
@pytest.mark.parametrize("path", _READS)
async def test_strong_read_failures(api, service, make_reservation, path, error, code):
    make_reservation()
    service.barrier_error = error
    expect_problem(await api.call("GET", path, token="reader"), code)


# ----------------------------------------------------------------------------------------------
# The router's errors, readiness, bugs


async def test_unknown_route_and_method(api, fmt):
    expect_problem(await api.call("GET", "/v2/campaigns", fmt=fmt), "not_found")
    reply = await api.call("DELETE", "/v1/campaigns/acme", fmt=fmt)
    expect_problem(reply, "method_not_allowed")
    assert set(reply.headers["Allow"].split(",")) == {"GET", "PUT"}


async def test_not_ready(api, service, fmt):
    service.ready_state = (False, "applying the log")
    reply = await api.call("GET", "/readyz", token=None, fmt=fmt)
    assert expect_problem(reply, "unavailable")["detail"] == "applying the log"
    assert reply.headers["Retry-After"] == "1"


async def test_a_bug_is_a_500_problem(api, service, caplog):
    service.read_error = RuntimeError("boom")
    reply = await api.call("GET", "/v1/campaigns/acme?consistency=local", token="reader")
    assert reply.status == 500 and reply.body["code"] == "internal_error"
    assert "boom" in caplog.text
