"""Bearer tokens: the tokens file, 401 without a valid token, 403 for a role or a campaign prefix
the token does not have, and the public routes that need none."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from budgetd.api import TokenEntry, Tokens, TokensError, hash_token, make_app
from budgetd.settings import ApiSettings

pytestmark = pytest.mark.usefixtures("seeded")

# ----------------------------------------------------------------------------------------------
# The file


def test_render_load_and_authenticate(tmp_path: Path):
    text = Tokens.render_file(
        [
            ("ops", "s3cret-ops", ["admin"]),
            TokenEntry.from_plaintext("fra", "s3cret-fra", roles=["bidder"], prefixes=["acme"]),
        ]
    )
    assert "s3cret" not in text
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    tokens = Tokens.load(path)
    assert len(tokens) == 2
    ops = tokens.authenticate("s3cret-ops")
    fra = tokens.authenticate("s3cret-fra")
    assert ops is not None and ops.name == "ops" and ops.is_admin
    assert fra is not None and fra.prefixes == ("acme",) and not fra.is_admin
    assert tokens.authenticate("s3cret") is None
    assert tokens.authenticate("") is None
    assert tokens.authenticate("x" * 100_000) is None
    assert Tokens.for_settings(str(path)).authenticate("s3cret-ops") == ops
    assert len(Tokens.for_settings(None)) == 0


def test_a_hand_written_file(tmp_path: Path):
    digest = hashlib.sha256(b"hello").hexdigest()
    path = tmp_path / "tokens.toml"
    path.write_text(
        f"""
# the reporting job
[[token]]
name = "reports"
sha256 = "{digest}"
roles = ["reader"]
"""
    )
    entry = Tokens.load(path).authenticate("hello")
    assert entry is not None and entry.roles == frozenset({"reader"})
    assert hash_token("hello") == digest


_DIGEST = "0" * 64
BAD_FILES = {
    "unknown field": f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=["admin"]\nteam="x"\n',
    "unknown table": '[tokens]\nname="a"\n',
    "short digest": '[[token]]\nname="a"\nsha256="abc"\nroles=["admin"]\n',
    "uppercase digest": f'[[token]]\nname="a"\nsha256="{"A" * 64}"\nroles=["admin"]\n',
    "no roles": f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=[]\n',
    "unknown role": f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=["root"]\n',
    "repeated role": f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=["admin","admin"]\n',
    "missing name": f'[[token]]\nsha256="{_DIGEST}"\nroles=["admin"]\n',
    "bad name": f'[[token]]\nname="a b"\nsha256="{_DIGEST}"\nroles=["admin"]\n',
    "prefixes on admin": (
        f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=["admin","bidder"]\nprefixes=["x"]\n'
    ),
    "prefixes on reader": (
        f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=["reader"]\nprefixes=["x"]\n'
    ),
    "bad prefix": f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=["bidder"]\nprefixes=["a b"]\n',
    "same name twice": (
        f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=["admin"]\n'
        f'[[token]]\nname="a"\nsha256="{"1" * 64}"\nroles=["admin"]\n'
    ),
    "same digest twice": (
        f'[[token]]\nname="a"\nsha256="{_DIGEST}"\nroles=["admin"]\n'
        f'[[token]]\nname="b"\nsha256="{_DIGEST}"\nroles=["admin"]\n'
    ),
    "not toml": "[[token]\n",
}


@pytest.mark.parametrize("text", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_files_are_refused_at_load(tmp_path: Path, text: str):
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(TokensError, match=str(path)):
        Tokens.load(path)


def test_missing_file():
    with pytest.raises(TokensError, match="nowhere"):
        Tokens.load("/nowhere/tokens.toml")


# ----------------------------------------------------------------------------------------------
# 401


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Basic YWRtaW46eA==", "Bearer", "admin-secret-token", "Bearer  "],
    ids=["missing", "wrong", "basic", "empty", "no scheme", "blank"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/campaigns/acme"),
        ("GET", "/v1/campaigns"),
        ("GET", "/v1/reservations/1"),
        ("GET", "/v1/cluster"),
        ("PUT", "/v1/campaigns/acme"),
        ("POST", "/v1/reservations"),
        ("POST", "/v1/reservations/1/commit"),
        ("POST", "/v1/reservations/1/release"),
        ("POST", "/v1/campaigns/acme/spend"),
        ("POST", "/v1/batch"),
        ("POST", "/v1/cluster/members"),
        ("DELETE", "/v1/cluster/members/n2"),
        ("GET", "/v1/snapshot"),
    ],
)
async def test_unauthorized(api, service, authorization, method, path):
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = await api.call(method, path, {}, token=None, key="k", headers=headers)
    assert (reply.status, reply.body["code"]) == (401, "unauthorized")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert service.submits == [] and service.barriers == 0
    assert service.membership_changes == []


async def test_a_node_without_tokens_refuses_everyone(service):
    from aiohttp.test_utils import TestClient, TestServer

    app = make_app(service, ApiSettings(), Tokens.empty())
    async with TestClient(TestServer(app)) as client:
        response = await client.get(
            "/v1/campaigns/acme", headers={"Authorization": "Bearer admin-secret-token"}
        )
        assert response.status == 401
        assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_public_routes(api, path):
    assert (await api.call("GET", path, token=None)).status == 200


# ----------------------------------------------------------------------------------------------
# 403 by role


async def _write(api, make_reservation, route: str, token: str):
    rid = make_reservation()
    requests = {
        "put": ("PUT", "/v1/campaigns/acme", {"currency": "USD", "timezone": "UTC"}),
        "reserve": (
            "POST",
            "/v1/reservations",
            {"campaign_id": "acme", "amount_micros": 5, "ttl_ms": 9, "bidder_id": "b"},
        ),
        "commit": ("POST", f"/v1/reservations/{rid}/commit", {"amount_micros": 5}),
        "release": ("POST", f"/v1/reservations/{rid}/release", {}),
        "spend": ("POST", "/v1/campaigns/acme/spend", {"amount_micros": 5, "bidder_id": "b"}),
        "batch": (
            "POST",
            "/v1/batch",
            {"ops": [{"op": "release", "idempotency_key": "x", "reservation_id": rid}]},
        ),
    }
    method, path, body = requests[route]
    return await api.call(method, path, body, token=token, key="k")


WRITES = ["put", "reserve", "commit", "release", "spend", "batch"]
ALLOWED = {
    "admin": set(WRITES),
    "bidder": set(WRITES) - {"put"},
    "acme-bidder": set(WRITES) - {"put"},
    "multi": set(WRITES) - {"put"},
    "reader": set(),
}


@pytest.mark.parametrize("route", WRITES)
@pytest.mark.parametrize("token", ALLOWED)
async def test_write_rights_by_role(api, service, make_reservation, route, token):
    reply = await _write(api, make_reservation, route, token)
    if route in ALLOWED[token]:
        assert reply.status in (200, 201), reply.body
        assert len(service.submits) == 1
    else:
        assert (reply.status, reply.body["code"]) == (403, "forbidden")
        assert service.submits == []


@pytest.mark.parametrize("token", ["admin", "bidder", "acme-bidder", "reader", "multi"])
async def test_every_role_reads(api, make_reservation, token):
    rid = make_reservation("acme:summer")
    for path in (
        "/v1/campaigns/acme:summer",
        f"/v1/reservations/{rid}",
        "/v1/campaigns?prefix=acme:",
        "/v1/cluster",
    ):
        assert (await api.call("GET", path, token=token)).status == 200, (token, path)


# ----------------------------------------------------------------------------------------------
# 403 by prefix


async def test_prefix_bidder_reserves_and_spends_in_its_tree_only(api, service, reserve_body):
    ok = await api.call(
        "POST", "/v1/reservations", reserve_body("acme:summer"), token="acme-bidder", key="a"
    )
    assert ok.status == 201
    for campaign_id in ("globex", "acme2"):
        reply = await api.call(
            "POST", "/v1/reservations", reserve_body(campaign_id), token="acme-bidder", key="b"
        )
        assert (reply.status, reply.body["code"]) == (403, "forbidden")
        reply = await api.call(
            "POST",
            f"/v1/campaigns/{campaign_id}/spend",
            {"amount_micros": 1, "bidder_id": "b"},
            token="acme-bidder",
            key="c",
        )
        assert reply.status == 403
    assert len(service.submits) == 1


@pytest.mark.parametrize("action", ["commit", "release"])
async def test_prefix_bidder_commits_only_its_own_reservations(
    api, service, make_reservation, action
):
    theirs = make_reservation("globex")
    mine = make_reservation("acme:summer")
    body = {"amount_micros": 1} if action == "commit" else {}
    reply = await api.call(
        "POST", f"/v1/reservations/{theirs}/{action}", body, token="acme-bidder", key="k1"
    )
    assert (reply.status, reply.body["code"]) == (403, "forbidden")
    assert service.submits == []
    reply = await api.call(
        "POST", f"/v1/reservations/{mine}/{action}", body, token="acme-bidder", key="k2"
    )
    assert reply.status == 200
    assert len(service.submits) == 1


async def test_prefix_bidder_unknown_reservation_is_404_after_a_barrier(api, service):
    reply = await api.call(
        "POST", "/v1/reservations/4242/commit", {"amount_micros": 1}, token="acme-bidder", key="k"
    )
    assert (reply.status, reply.body["code"]) == (404, "not_found")
    assert service.submits == [] and service.barriers == 1


async def test_prefix_bidder_batch(api, service, make_reservation, reserve_body):
    theirs = make_reservation("globex")
    mine = make_reservation("acme")
    forbidden = [
        {"op": "reserve", "idempotency_key": "a", **reserve_body("globex")},
        {"op": "commit", "idempotency_key": "b", "reservation_id": theirs, "amount_micros": 1},
        {
            "op": "spend",
            "idempotency_key": "c",
            "campaign_id": "acme2",
            "amount_micros": 1,
            "bidder_id": "x",
        },
    ]
    for op in forbidden:
        reply = await api.call("POST", "/v1/batch", {"ops": [op]}, token="acme-bidder")
        assert (reply.status, reply.body["code"]) == (403, "forbidden"), op
        assert reply.body["detail"].startswith("ops[0]")
    assert service.submits == []
    ops = [
        {"op": "commit", "idempotency_key": "d", "reservation_id": mine, "amount_micros": 1},
        {"op": "release", "idempotency_key": "e", "reservation_id": 999_999},
        {"op": "reserve", "idempotency_key": "f", **reserve_body("acme:summer")},
    ]
    reply = await api.call("POST", "/v1/batch", {"ops": ops}, token="acme-bidder")
    assert reply.status == 200
    codes = [result["code"] for result in reply.body["results"]]
    assert codes == ["ok", "not_found", "ok"]
    assert service.submits == [[ops[0], ops[2]]]  # the unknown reservation never reached the log


async def test_prefix_bidder_reads(api, make_reservation):
    theirs = make_reservation("globex")
    for path in (
        "/v1/campaigns/globex",
        f"/v1/reservations/{theirs}",
        "/v1/campaigns",
        "/v1/campaigns?prefix=glob",
    ):
        reply = await api.call("GET", path, token="acme-bidder")
        assert (reply.status, reply.body["code"]) == (403, "forbidden"), path
    reply = await api.call("GET", "/v1/campaigns?prefix=acme", token="acme-bidder")
    assert reply.status == 200
    # "acme" covers acme and acme:*, not acme2, although acme2 starts with the string "acme"
    assert [c["campaign_id"] for c in reply.body["campaigns"]] == ["acme", "acme:summer"]
    # a reader role beside the bidder's prefixes reads everything
    reply = await api.call("GET", "/v1/campaigns/globex", token="multi")
    assert reply.status == 200
