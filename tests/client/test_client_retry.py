"""AsyncClient against a scripted transport: leader discovery and hints, which failures are
retried (always with the same idempotency key), backoff with jitter, attempts and deadline."""

from __future__ import annotations

import pytest

from budget_client import (
    AsyncClient,
    Committed,
    Granted,
    OutcomeUnknown,
    Refused,
    RetryPolicy,
    TransportError,
    Unavailable,
)
from tests.client.scripted import Clock, ScriptedTransport, answer, problem

GRANT = {
    "reservation_id": 7,
    "granted_micros": 500,
    "expires_at_ms": 99,
    "pass_through_ppm": 250_000,
    "pass_through_rate": 0.25,
    "replayed": False,
}
ENDPOINTS = ["127.0.0.1:1", "http://127.0.0.1:2/", "127.0.0.1:3"]


def make(script, *, policy: RetryPolicy | None = None, draw: float = 0.5, **kw):
    clock = Clock()
    transport = ScriptedTransport(script)
    client = AsyncClient(
        ENDPOINTS,
        "tok",
        transport=transport,
        clock=clock,
        sleep=clock.sleep,
        random=lambda: draw,
        retry=policy,
        **kw,
    )
    return client, transport, clock


async def reserve(client: AsyncClient, key: str | None = "k1") -> Granted:
    return await client.reserve("acme", 500, ttl_ms=1000, bidder_id="b", idempotency_key=key)


async def test_a_follower_hint_is_followed_and_the_leader_remembered():
    leader = "127.0.0.1:3"
    client, transport, _ = make(
        [problem("not_leader", 307, leader=leader), answer(201, GRANT), answer(201, GRANT)]
    )
    granted = await reserve(client)
    assert granted == Granted(7, 500, 99, 250_000, False)
    assert [s.url for s in transport.sent] == [
        "http://127.0.0.1:1/v1/reservations",
        "http://127.0.0.1:3/v1/reservations",
    ]
    assert client.leader == "http://127.0.0.1:3"
    await reserve(client, "k2")
    assert transport.sent[-1].url == "http://127.0.0.1:3/v1/reservations"


async def test_every_request_asks_for_redirects_speaks_msgpack_and_carries_the_token():
    client, transport, _ = make([answer(201, GRANT)])
    await reserve(client)
    headers = transport.sent[0].headers
    assert headers["Prefer"] == "redirect"
    assert headers["Authorization"] == "Bearer tok"
    assert headers["Content-Type"] == headers["Accept"] == "application/msgpack"
    assert headers["Idempotency-Key"] == "k1"
    assert transport.sent[0].body == {
        "campaign_id": "acme",
        "amount_micros": 500,
        "ttl_ms": 1000,
        "bidder_id": "b",
    }


async def test_json_on_request():
    client, transport, _ = make([answer(201, GRANT)], wire="json")
    await reserve(client)
    assert transport.sent[0].headers["Content-Type"] == "application/json"


async def test_a_forwarded_answer_teaches_the_leader():
    client, _, _ = make([answer(201, GRANT, {"X-Budgetd-Leader": "127.0.0.1:2"})])
    await reserve(client)
    assert client.leader == "http://127.0.0.1:2"


async def test_unavailable_then_unknown_are_retried_with_the_same_key_and_jittered_backoff():
    client, transport, clock = make(
        [problem("unavailable", 503), problem("outcome_unknown", 504), answer(201, GRANT)]
    )
    assert (await reserve(client)).reservation_id == 7
    assert [s.headers["Idempotency-Key"] for s in transport.sent] == ["k1"] * 3
    # full jitter: draw × min(max, base × 2^attempt); draw is 0.5, base 0.05
    assert clock.slept_s == [0.025, 0.05]


async def test_a_generated_key_is_kept_across_retries():
    client, transport, _ = make([problem("unavailable", 503), answer(201, GRANT)])
    await reserve(client, key=None)
    keys = {s.headers["Idempotency-Key"] for s in transport.sent}
    assert len(keys) == 1


async def test_only_503s_give_unavailable_after_the_attempts_run_out():
    policy = RetryPolicy(attempts_max=3, deadline_s=100)
    client, transport, clock = make([problem("unavailable", 503)] * 3, policy=policy)
    with pytest.raises(Unavailable) as caught:
        await reserve(client)
    assert caught.value.idempotency_key == "k1"
    assert caught.value.attempts == 3 and len(transport.sent) == 3
    assert len(clock.slept_s) == 2


async def test_a_504_makes_the_final_outcome_unknown_not_unavailable():
    policy = RetryPolicy(attempts_max=3, deadline_s=100)
    client, _, _ = make(
        [problem("outcome_unknown", 504), problem("unavailable", 503), problem("unavailable", 503)],
        policy=policy,
    )
    with pytest.raises(OutcomeUnknown) as caught:
        await reserve(client)
    assert type(caught.value) is OutcomeUnknown


async def test_a_connection_that_broke_after_sending_is_unknown_and_rotates_endpoints():
    policy = RetryPolicy(attempts_max=3, deadline_s=100)
    client, transport, _ = make(
        [
            TransportError("reset", sent=True),
            TransportError("refused", sent=False),
            TransportError("refused", sent=False),
        ],
        policy=policy,
    )
    with pytest.raises(OutcomeUnknown) as caught:
        await reserve(client)
    assert type(caught.value) is OutcomeUnknown
    assert [s.url.split("/v1")[0] for s in transport.sent] == [
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
    ]


async def test_a_dead_leader_is_forgotten_and_rediscovered():
    client, transport, _ = make(
        [
            problem("not_leader", 307, leader="127.0.0.1:2"),
            answer(201, GRANT),
            TransportError("refused", sent=False),
            problem("not_leader", 307, leader="127.0.0.1:3"),
            answer(201, GRANT),
        ]
    )
    await reserve(client, "a")
    assert client.leader == "http://127.0.0.1:2"
    await reserve(client, "b")
    assert client.leader == "http://127.0.0.1:3"
    assert transport.sent[-1].url == "http://127.0.0.1:3/v1/reservations"


async def test_refusals_are_not_retried_and_carry_the_ledger_code():
    client, transport, _ = make([problem("budget_exhausted", 409)])
    with pytest.raises(Refused) as caught:
        await reserve(client)
    assert caught.value.code == "budget_exhausted" and caught.value.status == 409
    assert len(transport.sent) == 1


async def test_the_deadline_stops_retrying_before_the_attempts_run_out():
    policy = RetryPolicy(attempts_max=50, backoff_base_s=1.0, backoff_max_s=1.0, deadline_s=3.0)
    client, transport, clock = make([problem("unavailable", 503)] * 50, policy=policy, draw=0.9)
    with pytest.raises(Unavailable):
        await reserve(client)
    assert len(transport.sent) == 4  # at 0, 0.9, 1.8, 2.7 s; the next wait would pass 3 s
    assert clock.now_s - 1000.0 < 3.0


async def test_not_leader_hops_are_bounded():
    hop = problem("not_leader", 307, leader="127.0.0.1:2")
    policy = RetryPolicy(attempts_max=2, redirects_max=2, deadline_s=100)
    client, transport, _ = make([hop] * 6, policy=policy)
    with pytest.raises(Unavailable):
        await reserve(client)
    assert len(transport.sent) == 6


async def test_batch_results_are_values_in_order():
    results = [
        {
            "code": "ok",
            "reservation_id": 7,
            "committed_micros": 5,
            "remaining_micros": 0,
            "late": True,
            "overspend_micros": 0,
            "replayed": False,
        },
        {
            "type": "urn:budgetd:problem:reservation_closed",
            "title": "t",
            "status": 409,
            "code": "reservation_closed",
            "detail": "",
            "retryable": False,
        },
    ]
    client, transport, _ = make([answer(200, {"results": results})])
    out = await client.batch(
        [
            {"op": "commit", "reservation_id": 7, "amount_micros": 5, "idempotency_key": "c1"},
            {"op": "commit", "reservation_id": 8, "amount_micros": 5},
        ]
    )
    assert out[0] == Committed(7, 5, 0, True, 0, False)
    assert isinstance(out[1], Refused) and out[1].code == "reservation_closed"
    ops = transport.sent[0].body["ops"]
    assert ops[0]["idempotency_key"] == "c1" and ops[1]["idempotency_key"]
    assert "Idempotency-Key" not in transport.sent[0].headers


async def test_a_strong_read_answered_directly_names_the_leader_but_cluster_status_does_not():
    client, _, _ = make([answer(200, {"node_id": "n1"}), answer(200, {"campaign_id": "acme"})])
    await client.cluster_status()
    assert client.leader is None
    await client.get_campaign("acme")
    assert client.leader == "http://127.0.0.1:2"


async def test_a_rate_limited_or_slow_request_is_retried_with_the_same_key():
    client, transport, _ = make(
        [problem("rate_limited", 429), problem("request_timeout", 408), answer(201, GRANT)]
    )
    assert (await reserve(client)).reservation_id == 7
    assert [s.headers["Idempotency-Key"] for s in transport.sent] == ["k1"] * 3
