"""Bad input is refused with its documented code before anything reaches the log: after each of
these requests the scripted service has received no submit (and, for reads, no barrier)."""

from __future__ import annotations

import json

import msgpack
import pytest

pytestmark = pytest.mark.usefixtures("seeded")

INT64_MAX = 2**63 - 1
GOOD_RESERVE = {"campaign_id": "acme", "amount_micros": 1_000, "ttl_ms": 30_000, "bidder_id": "b"}


def refused(reply, service, code: str = "invalid_request", status: int = 400) -> dict:
    assert (reply.status, reply.body["code"]) == (status, code), reply.body
    assert service.submits == [], "a refused request reached the log"
    return reply.body


def with_(**changes):
    body = dict(GOOD_RESERVE)
    for name, value in changes.items():
        if value is _DROP:
            del body[name]
        else:
            body[name] = value
    return body


_DROP = object()

BAD_RESERVE_BODIES = {
    "unknown field": with_(colour="red"),
    "float money": with_(amount_micros=1.0),
    "fractional money": with_(amount_micros=1.5),
    "bool money": with_(amount_micros=True),
    "negative money": with_(amount_micros=-5),
    "zero money": with_(amount_micros=0),
    "string money": with_(amount_micros="1000"),
    "money beyond int64": with_(amount_micros=INT64_MAX + 1),
    "null money": with_(amount_micros=None),
    "missing money": with_(amount_micros=_DROP),
    "min above amount": with_(min_amount_micros=1_001),
    "min zero": with_(min_amount_micros=0),
    "bool ttl": with_(ttl_ms=False),
    "negative ttl": with_(ttl_ms=-1),
    "ttl beyond int64": with_(ttl_ms=2**64 - 1),
    "empty bidder": with_(bidder_id=""),
    "non-ascii bidder": with_(bidder_id="bïdder"),
    "control char bidder": with_(bidder_id="a\nb"),
    "long bidder": with_(bidder_id="b" * 129),
    "number bidder": with_(bidder_id=7),
    "five-level id": with_(campaign_id="a:b:c:d:e"),
    "id with a space": with_(campaign_id="ac me"),
    "empty segment": with_(campaign_id="acme::x"),
    "missing campaign": with_(campaign_id=_DROP),
    "array body": [GOOD_RESERVE],
    "string body": "reserve",
    "empty body": {},
}


@pytest.mark.parametrize("fmt_", ["json", "msgpack"])
@pytest.mark.parametrize("body", BAD_RESERVE_BODIES.values(), ids=BAD_RESERVE_BODIES.keys())
async def test_bad_reserve_bodies(api, service, body, fmt_):
    reply = await api.call("POST", "/v1/reservations", body, key="k", fmt=fmt_)
    refused(reply, service)


RAW_JSON = {
    "huge exponent": b'{"campaign_id":"acme","amount_micros":1e400,"ttl_ms":1,"bidder_id":"b"}',
    "NaN": b'{"campaign_id":"acme","amount_micros":NaN,"ttl_ms":1,"bidder_id":"b"}',
    "Infinity": b'{"campaign_id":"acme","amount_micros":Infinity,"ttl_ms":1,"bidder_id":"b"}',
    "exponent int": b'{"campaign_id":"acme","amount_micros":1e3,"ttl_ms":1,"bidder_id":"b"}',
    "5000 digits": b'{"campaign_id":"acme","amount_micros":' + b"9" * 5000 + b"}",
    "duplicate key": b'{"campaign_id":"acme","amount_micros":1,"amount_micros":2,'
    b'"ttl_ms":1,"bidder_id":"b"}',
    "truncated": b'{"campaign_id":"acme",',
    "not utf-8": b'{"campaign_id":"\xff"}',
    "trailing garbage": json.dumps(GOOD_RESERVE).encode() + b"x",
}


@pytest.mark.parametrize("data", RAW_JSON.values(), ids=RAW_JSON.keys())
async def test_bad_json(api, service, data):
    reply = await api.call(
        "POST", "/v1/reservations", data=data, content_type="application/json", key="k"
    )
    refused(reply, service)


RAW_MSGPACK = {
    "float": msgpack.packb(with_(amount_micros=1.0)),
    "bytes for a string": msgpack.packb(with_(bidder_id=b"b"), use_bin_type=True),
    "int key": msgpack.packb({1: 2}),
    "ext type": msgpack.packb(with_(amount_micros=msgpack.ExtType(5, b"x"))),
    "garbage": b"\xc1\xc1\xc1",
    "trailing data": msgpack.packb(GOOD_RESERVE) + b"\x01",
}


@pytest.mark.parametrize("data", RAW_MSGPACK.values(), ids=RAW_MSGPACK.keys())
async def test_bad_msgpack(api, service, data):
    reply = await api.call(
        "POST", "/v1/reservations", data=data, content_type="application/msgpack", key="k"
    )
    refused(reply, service)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_unsupported_content_type(api, service, content_type):
    data = json.dumps(GOOD_RESERVE).encode()
    reply = await api.call(
        "POST", "/v1/reservations", data=data, content_type=content_type, key="k"
    )
    assert "Content-Type" in refused(reply, service)["detail"]


# ----------------------------------------------------------------------------------------------
# Idempotency-Key


def _mutating_posts(rid: int) -> list[tuple[str, dict]]:
    return [
        ("/v1/reservations", GOOD_RESERVE),
        (f"/v1/reservations/{rid}/commit", {"amount_micros": 5}),
        (f"/v1/reservations/{rid}/release", {}),
        ("/v1/campaigns/acme/spend", {"amount_micros": 5, "bidder_id": "b"}),
    ]


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Idempotency-Key": ""},
        {"Idempotency-Key": "k" * 129},
        {"Idempotency-Key": "ключ"},
    ],
    ids=["missing", "empty", "too long", "not ascii"],
)
async def test_idempotency_key_is_required_and_checked(
    api, service, make_reservation, index, headers
):
    path, body = _mutating_posts(make_reservation())[index]
    reply = await api.call("POST", path, body, headers=headers)
    assert "Idempotency-Key" in refused(reply, service)["detail"]


async def test_idempotency_key_twice(api, service):
    reply = await api.client.post(
        "/v1/reservations",
        json=GOOD_RESERVE,
        headers=[
            ("Authorization", "Bearer admin-secret-token"),
            ("Idempotency-Key", "a"),
            ("Idempotency-Key", "b"),
        ],
    )
    assert reply.status == 400 and service.submits == []


# ----------------------------------------------------------------------------------------------
# Campaigns


BAD_PUT = {
    "unknown field": ({"currency": "USD", "timezone": "UTC", "colour": 1}, "acme"),
    "campaign_id in the body": ({"currency": "USD", "timezone": "UTC", "campaign_id": "x"}, "x"),
    "root without currency": ({"timezone": "UTC"}, "newroot"),
    "root without timezone": ({"currency": "USD"}, "newroot"),
    "lowercase currency": ({"currency": "usd", "timezone": "UTC"}, "newroot"),
    "unknown currency": ({"currency": "ABC", "timezone": "UTC"}, "newroot"),
    "unknown zone": ({"currency": "USD", "timezone": "Mars/Olympus"}, "newroot"),
    "float budget": ({"currency": "USD", "timezone": "UTC", "daily_budget_micros": 1e6}, "r"),
    "negative budget": ({"currency": "USD", "timezone": "UTC", "total_budget_micros": -1}, "r"),
    "string start": ({"currency": "USD", "timezone": "UTC", "start_ms": "now"}, "r"),
    "start after end": (
        {"currency": "USD", "timezone": "UTC", "start_ms": 10, "end_ms": 10},
        "r",
    ),
    "bad status": ({"currency": "USD", "timezone": "UTC", "status": "deleted"}, "r"),
    "pacing without mode": ({"currency": "USD", "timezone": "UTC", "pacing": {}}, "r"),
    "unknown pacing mode": ({"currency": "USD", "timezone": "UTC", "pacing": {"mode": "x"}}, "r"),
    "unknown pacing field": (
        {"currency": "USD", "timezone": "UTC", "pacing": {"mode": "asap", "x": 1}},
        "r",
    ),
    "even without a daily budget": (
        {"currency": "USD", "timezone": "UTC", "pacing": {"mode": "even"}},
        "r",
    ),
    "23 weights": (
        {
            "currency": "USD",
            "timezone": "UTC",
            "daily_budget_micros": 5,
            "pacing": {"mode": "traffic_shaped", "hourly_weights": [1] * 23},
        },
        "r",
    ),
    "all-zero weights": (
        {
            "currency": "USD",
            "timezone": "UTC",
            "daily_budget_micros": 5,
            "pacing": {"mode": "traffic_shaped", "hourly_weights": [0] * 24},
        },
        "r",
    ),
    "weights without traffic_shaped": (
        {
            "currency": "USD",
            "timezone": "UTC",
            "daily_budget_micros": 5,
            "pacing": {"mode": "even", "hourly_weights": [1] * 24},
        },
        "r",
    ),
    "burst above a million": (
        {"currency": "USD", "timezone": "UTC", "pacing": {"mode": "asap", "burst_ppm": 10**6 + 1}},
        "r",
    ),
    "malformed id in the path": ({"currency": "USD", "timezone": "UTC"}, "a:b:c:d:e"),
    "id with a bad character": ({"currency": "USD", "timezone": "UTC"}, "acme$"),
}


@pytest.mark.parametrize(("body", "campaign_id"), BAD_PUT.values(), ids=BAD_PUT.keys())
async def test_bad_put_campaign(api, service, body, campaign_id):
    refused(await api.call("PUT", f"/v1/campaigns/{campaign_id}", body), service)


@pytest.mark.parametrize(
    "if_match", ["abc", "0", "*", 'W/"1"', '"1', str(2**63), "1, 2", "-1", "1.0"]
)
async def test_bad_if_match(api, service, root, if_match):
    reply = await api.call("PUT", "/v1/campaigns/acme", root, headers={"If-Match": if_match})
    assert "If-Match" in refused(reply, service)["detail"]


async def test_bad_idempotency_key_on_put(api, service, root):
    reply = await api.call("PUT", "/v1/campaigns/acme", root, key="x" * 200)
    refused(reply, service)


# ----------------------------------------------------------------------------------------------
# Reservation ids, commit and spend bodies


@pytest.mark.parametrize("rid", ["abc", "0", "007", "-1", str(2**63), "1.5", "1e3", "%20"])
@pytest.mark.parametrize("action", ["commit", "release", None])
async def test_malformed_reservation_id(api, service, rid, action):
    if action is None:
        reply = await api.call("GET", f"/v1/reservations/{rid}")
    else:
        body = {"amount_micros": 1} if action == "commit" else {}
        reply = await api.call("POST", f"/v1/reservations/{rid}/{action}", body, key="k")
    assert "reservation id" in refused(reply, service)["detail"]
    assert service.barriers == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"amount_micros": 0},
        {"amount_micros": 5, "final": "yes"},
        {"amount_micros": 5, "final": 1},
        {"amount_micros": 5, "reservation_id": 1},
    ],
)
async def test_bad_commit_body(api, service, make_reservation, body):
    rid = make_reservation()
    refused(await api.call("POST", f"/v1/reservations/{rid}/commit", body, key="k"), service)


async def test_release_body_must_be_empty(api, service, make_reservation):
    rid = make_reservation()
    reply = await api.call("POST", f"/v1/reservations/{rid}/release", {"all": True}, key="k")
    refused(reply, service)


@pytest.mark.parametrize(
    "body",
    [{"amount_micros": 5}, {"amount_micros": 5.0, "bidder_id": "b"}, {"bidder_id": "b"}],
)
async def test_bad_spend_body(api, service, body):
    refused(await api.call("POST", "/v1/campaigns/acme/spend", body, key="k"), service)


async def test_unknown_query_parameter_on_a_post(api, service):
    reply = await api.call("POST", "/v1/reservations?dry_run=1", GOOD_RESERVE, key="k")
    refused(reply, service)


# ----------------------------------------------------------------------------------------------
# Sizes


async def test_oversized_body(api, service, settings):
    body = with_(bidder_id="b")
    data = json.dumps({**body, "padding": "x" * settings.body_bytes_max}).encode()
    reply = await api.call(
        "POST", "/v1/reservations", data=data, content_type="application/json", key="k"
    )
    refused(reply, service, "payload_too_large", 413)


async def test_oversized_chunked_body(api, service, settings):
    async def chunks():
        for _ in range(settings.body_bytes_max // 1024 + 2):
            yield b" " * 1024

    reply = await api.client.post(
        "/v1/batch",
        data=chunks(),
        headers={
            "Authorization": "Bearer admin-secret-token",
            "Content-Type": "application/json",
        },
    )
    assert reply.status == 413
    assert (await reply.json())["code"] == "payload_too_large"
    assert service.submits == []


def _op(index: int) -> dict:
    return {"op": "release", "idempotency_key": f"k{index}", "reservation_id": index + 1}


async def test_too_many_batch_ops(api, service, settings):
    ops = [_op(index) for index in range(settings.batch_ops_max + 1)]
    refused(await api.call("POST", "/v1/batch", {"ops": ops}), service, "payload_too_large", 413)


BAD_BATCHES = {
    "no ops": {"ops": []},
    "ops not a list": {"ops": {"op": "release"}},
    "missing ops": {},
    "unknown top-level field": {"ops": [_op(0)], "atomic": True},
    "pulse op": {"ops": [{"op": "pulse"}]},
    "put_campaign op": {"ops": [{"op": "put_campaign", "idempotency_key": "k"}]},
    "missing op": {"ops": [{"idempotency_key": "k", "reservation_id": 1}]},
    "missing key": {"ops": [{"op": "release", "reservation_id": 1}]},
    "bad key": {"ops": [{"op": "release", "idempotency_key": "", "reservation_id": 1}]},
    "string reservation id": {
        "ops": [{"op": "release", "idempotency_key": "k", "reservation_id": "1"}]
    },
    "field of another op": {
        "ops": [{"op": "release", "idempotency_key": "k", "reservation_id": 1, "amount_micros": 5}]
    },
    "one bad op among good ones": {
        "ops": [_op(0), {"op": "spend", "idempotency_key": "s", "campaign_id": "acme"}, _op(2)]
    },
    "min above amount": {
        "ops": [{"op": "reserve", "idempotency_key": "r", **with_(min_amount_micros=10**9)}]
    },
}


@pytest.mark.parametrize("body", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
async def test_bad_batch(api, service, body, fmt):
    refused(await api.call("POST", "/v1/batch", body, fmt=fmt), service)


@pytest.mark.parametrize("body", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
async def test_bad_batch_reads_the_same_in_msgpack_and_json(api, service, body):
    """A msgpack batch is checked in one pass by msgspec; what it refuses, the schema words."""
    as_json = refused(await api.call("POST", "/v1/batch", body, fmt="json"), service)
    as_msgpack = refused(await api.call("POST", "/v1/batch", body, fmt="msgpack"), service)
    assert as_msgpack["detail"] == as_json["detail"]


async def test_bad_batch_names_the_op(api, service):
    body = BAD_BATCHES["one bad op among good ones"]
    detail = refused(await api.call("POST", "/v1/batch", body), service)["detail"]
    assert detail.startswith("ops[1]")


# ----------------------------------------------------------------------------------------------
# Reads


BAD_READS = [
    "/v1/campaigns/acme?consistency=eventual",
    "/v1/campaigns/acme?consistency=",
    "/v1/campaigns/acme?consistency=strong&consistency=local",
    "/v1/campaigns/acme?fields=all",
    "/v1/campaigns/a:b:c:d:e",
    "/v1/campaigns?limit=0",
    "/v1/campaigns?limit=-1",
    "/v1/campaigns?limit=abc",
    "/v1/campaigns?limit=1.5",
    "/v1/campaigns?limit=51",
    "/v1/campaigns?limit=99999999999999999999",
    "/v1/campaigns?limit=",
    "/v1/campaigns?after=a:b:c:d:e",
    "/v1/campaigns?after=",
    "/v1/campaigns?prefix=ac%20me",
    "/v1/campaigns?prefix=a&prefix=b",
    "/v1/campaigns?cursor=acme",
    "/v1/reservations/1?consistency=STRONG",
    "/v1/cluster?verbose=1",
]


@pytest.mark.parametrize("path", BAD_READS)
async def test_bad_reads(api, service, path):
    refused(await api.call("GET", path, token="reader"), service)
    assert service.barriers == 0
