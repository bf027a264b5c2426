"""The admin routes of the cluster: add and remove a member, take a snapshot. Admin only, checked
strictly before the service is called, and every service failure mapped like the log's."""

from __future__ import annotations

import msgpack
import pytest

from budgetd.codec import decode_snapshot
from budgetd.service import Conflict, NotFound, NotLeader, OutcomeUnknown, Unavailable

pytestmark = pytest.mark.usefixtures("seeded")

NEW = {"id": "n3", "raft_address": "127.0.0.1:7003", "http_address": "127.0.0.1:8003", "dc": "par"}


def _ids(reply) -> list[str]:
    return [member["id"] for member in reply.body["members"]]


# ----------------------------------------------------------------------------------------------
# Membership


async def test_add_a_member(api, service, fmt):
    reply = await api.call("POST", "/v1/cluster/members", NEW, fmt=fmt)
    assert reply.status == 200, reply.body
    assert _ids(reply) == ["n1", "n2", "n3"]
    added = reply.body["members"][2]
    assert {key: added[key] for key in NEW} == NEW
    assert service.membership_changes == [("add", "n3")]
    assert service.submits == []


@pytest.mark.parametrize("dc", [None, "absent"])
async def test_a_member_without_a_dc_is_in_the_default_one(api, dc):
    body = {**NEW, "dc": dc} if dc is None else {k: v for k, v in NEW.items() if k != "dc"}
    reply = await api.call("POST", "/v1/cluster/members", body)
    assert reply.status == 200
    assert reply.body["members"][2]["dc"] == "default"


async def test_adding_the_same_member_again_is_answered_at_once(api, service):
    first = await api.call("POST", "/v1/cluster/members", NEW)
    again = await api.call("POST", "/v1/cluster/members", NEW)
    assert (first.status, again.status) == (200, 200)
    assert again.body == first.body


@pytest.mark.parametrize(
    "body",
    [
        {**NEW, "id": "n2"},
        {**NEW, "raft_address": "127.0.0.1:7002"},
        {**NEW, "http_address": "127.0.0.1:8001"},
    ],
    ids=["id", "raft_address", "http_address"],
)
async def test_a_member_that_clashes_with_another_is_a_conflict(api, service, body):
    reply = await api.call("POST", "/v1/cluster/members", body)
    assert (reply.status, reply.body["code"]) == (409, "conflict"), reply.body
    assert reply.body["retryable"] is False
    assert _ids_of(service) == ["n1", "n2"]


def _ids_of(service) -> list[str]:
    return [member["id"] for member in service.members]


async def test_remove_a_member(api, service, fmt):
    reply = await api.call("DELETE", "/v1/cluster/members/n2", fmt=fmt)
    assert reply.status == 200, reply.body
    assert _ids(reply) == ["n1"]
    assert service.membership_changes == [("remove", "n2")]


async def test_removing_an_unknown_member_is_404(api, service, fmt):
    reply = await api.call("DELETE", "/v1/cluster/members/n9", fmt=fmt)
    assert (reply.status, reply.body["code"]) == (404, "not_found")
    assert "n9" in reply.body["detail"]
    # a retry of a removal that was applied says the same: the member is gone
    assert (await api.call("DELETE", "/v1/cluster/members/n2")).status == 200
    assert (await api.call("DELETE", "/v1/cluster/members/n2")).status == 404


async def test_the_node_decides_whether_the_leader_may_remove_itself(api, service):
    service.membership_error = Conflict("n1 leads: transfer leadership first")
    reply = await api.call("DELETE", "/v1/cluster/members/n1")
    assert (reply.status, reply.body["code"]) == (409, "conflict")
    assert "transfer leadership first" in reply.body["detail"]


# ----------------------------------------------------------------------------------------------
# Leadership transfer


async def test_transfer_leadership_to_a_named_member(api, service, fmt):
    reply = await api.call("POST", "/v1/cluster/leader", {"node_id": "n2"}, fmt=fmt)
    assert reply.status == 200, reply.body
    assert reply.body == {
        "leader_id": "n2",
        "previous_leader_id": "n1",
        "term": 4,
        "transferred": True,
    }
    assert service.membership_changes == [("transfer", "n2")]
    assert service.submits == []


@pytest.mark.parametrize("body", [{}, {"node_id": None}], ids=["absent", "null"])
async def test_transfer_leadership_to_any_member(api, service, body):
    reply = await api.call("POST", "/v1/cluster/leader", body)
    assert reply.status == 200 and reply.body["leader_id"] == "n2"
    assert service.membership_changes == [("transfer", "")]


async def test_transfer_leadership_to_an_unknown_member_is_404(api, service):
    reply = await api.call("POST", "/v1/cluster/leader", {"node_id": "n9"})
    assert (reply.status, reply.body["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    "body",
    [{"node_id": ""}, {"node_id": "a b"}, {"node_id": 3}, {"to": "n2"}, []],
    ids=["empty", "space", "int", "unknown-field", "array"],
)
async def test_a_bad_transfer_request_is_400_and_moves_nothing(api, service, body):
    reply = await api.call("POST", "/v1/cluster/leader", body)
    assert (reply.status, reply.body["code"]) == (400, "invalid_request"), reply.body
    assert service.membership_changes == []


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (Unavailable("n2 did not catch up", retry_after_s=1), 503, "unavailable"),
        (OutcomeUnknown("TimeoutNow sent, no new leader"), 504, "outcome_unknown"),
    ],
    ids=["not-caught-up", "no-new-leader"],
)
async def test_a_transfer_that_did_not_finish_is_retryable(api, service, error, status, code):
    service.membership_error = error
    reply = await api.call("POST", "/v1/cluster/leader", {"node_id": "n2"})
    assert (reply.status, reply.body["code"]) == (status, code)
    assert reply.body["retryable"] is True


# ----------------------------------------------------------------------------------------------
# Snapshot


async def test_snapshot_is_the_ledger_after_a_barrier(api, service):
    response = await api.client.get(
        "/v1/snapshot", headers={"Authorization": "Bearer admin-secret-token"}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/msgpack"
    index = service.applied_index()
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="budgetd-{index}.snapshot"'
    )
    assert service.barriers == 1
    ledger = decode_snapshot(await response.read())
    assert ledger.digest() == service.ledger.digest()
    assert ledger.campaign("acme:summer") is not None


async def test_snapshot_through_the_harness_is_documented(api):
    reply = await api.call("GET", "/v1/snapshot", fmt="msgpack")
    assert reply.status == 200 and reply.content_type == "application/msgpack"
    assert reply.body[0] == "budgetd.snapshot"


# ----------------------------------------------------------------------------------------------
# Rights


NOT_ADMIN = ["bidder", "acme-bidder", "reader", "multi"]
ADMIN_CALLS = [
    ("POST", "/v1/cluster/members", NEW),
    ("DELETE", "/v1/cluster/members/n2", None),
    ("GET", "/v1/snapshot", None),
    ("POST", "/v1/cluster/leader", {"node_id": "n2"}),
]
ADMIN_IDS = ["add", "remove", "snap", "leader"]


@pytest.mark.parametrize("token", NOT_ADMIN)
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=ADMIN_IDS)
async def test_admin_only(api, service, token, method, path, body):
    args = () if body is None else (body,)
    reply = await api.call(method, path, *args, token=token)
    assert (reply.status, reply.body["code"]) == (403, "forbidden"), reply.body
    assert service.membership_changes == [] and service.barriers == 0
    assert _ids_of(service) == ["n1", "n2"]


# ----------------------------------------------------------------------------------------------
# Validation: refused before the service hears of it


def _with(**changes):
    body = dict(NEW)
    for name, value in changes.items():
        if value is _DROP:
            del body[name]
        else:
            body[name] = value
    return body


_DROP = object()

BAD_MEMBERS = {
    "empty id": _with(id=""),
    "long id": _with(id="n" * 65),
    "id with a space": _with(id="n 3"),
    "id with a colon": _with(id="acme:n3"),
    "id with a slash": _with(id="a/b"),
    "number id": _with(id=3),
    "missing id": _with(id=_DROP),
    "no port": _with(raft_address="127.0.0.1"),
    "port 0": _with(raft_address="127.0.0.1:0"),
    "port 65536": _with(http_address="127.0.0.1:65536"),
    "six-digit port": _with(http_address="127.0.0.1:100000"),
    "empty host": _with(raft_address=":7003"),
    "a URL": _with(http_address="http://127.0.0.1:8003"),
    "a path": _with(http_address="127.0.0.1:8003/x"),
    "bare IPv6": _with(raft_address="::1:7003"),
    "space in host": _with(raft_address="my host:7003"),
    "missing raft_address": _with(raft_address=_DROP),
    "missing http_address": _with(http_address=_DROP),
    "null http_address": _with(http_address=None),
    "same address twice": _with(http_address=NEW["raft_address"]),
    "bad dc": _with(dc="par is"),
    "empty dc": _with(dc=""),
    "unknown field": _with(role="leader"),
    "array body": [NEW],
    "empty body": {},
}


@pytest.mark.parametrize("body", BAD_MEMBERS.values(), ids=BAD_MEMBERS.keys())
async def test_bad_member_bodies(api, service, body):
    reply = await api.call("POST", "/v1/cluster/members", body)
    assert (reply.status, reply.body["code"]) == (400, "invalid_request"), reply.body
    assert service.membership_changes == []


@pytest.mark.parametrize(
    "address",
    ["[::1]:7003", "[fe80::1]:7003", "node-3.dc.example.com:7003", "10.0.0.3:1", "h:65535"],
)
async def test_good_addresses(api, service, address):
    reply = await api.call("POST", "/v1/cluster/members", _with(raft_address=address))
    assert reply.status == 200, reply.body


async def test_a_msgpack_member_body(api, service):
    data = msgpack.packb(NEW)
    reply = await api.call(
        "POST", "/v1/cluster/members", data=data, content_type="application/msgpack"
    )
    assert reply.status == 200 and _ids(reply)[-1] == "n3"


@pytest.mark.parametrize("member_id", ["n%203", "n" * 65, "a:b", "%C3%A9"])
async def test_bad_member_id_in_the_path(api, service, member_id):
    reply = await api.call("DELETE", f"/v1/cluster/members/{member_id}")
    assert (reply.status, reply.body["code"]) == (400, "invalid_request"), reply.body
    assert service.membership_changes == []


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=ADMIN_IDS)
async def test_unknown_query_parameters(api, service, method, path, body):
    args = () if body is None else (body,)
    reply = await api.call(method, f"{path}?force=1", *args)
    assert (reply.status, reply.body["code"]) == (400, "invalid_request")
    assert service.membership_changes == [] and service.barriers == 0


async def test_an_oversized_member_body_is_413(api, service):
    reply = await api.call("POST", "/v1/cluster/members", _with(dc="x" * 20_000))
    assert (reply.status, reply.body["code"]) == (413, "payload_too_large")
    assert service.membership_changes == []


# ----------------------------------------------------------------------------------------------
# Service failures, mapped like the log's


FAILURES = [
    (Unavailable("another membership change is pending", retry_after_s=2), 503, "2"),
    (NotLeader("election under way", leader_http=None), 503, "1"),
    (OutcomeUnknown("the change was proposed; no answer in time"), 504, None),
]


@pytest.mark.parametrize(("error", "status", "retry_after"), FAILURES, ids=["busy", "nl", "unk"])
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=ADMIN_IDS)
async def test_service_failures(api, service, error, status, retry_after, method, path, body):
    service.membership_error = service.barrier_error = error
    args = () if body is None else (body,)
    reply = await api.call(method, path, *args)
    assert reply.status == status, reply.body
    assert error.detail in reply.body["detail"]
    assert reply.body["retryable"] is True
    assert reply.headers.get("Retry-After") == retry_after
    assert _ids_of(service) == ["n1", "n2"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=ADMIN_IDS)
async def test_not_leader_with_prefer_redirect_is_307(api, service, method, path, body):
    service.membership_error = service.barrier_error = NotLeader("f", leader_http="10.0.0.1:80")
    args = () if body is None else (body,)
    reply = await api.call(method, path, *args, headers={"Prefer": "redirect"})
    assert (reply.status, reply.body["code"]) == (307, "not_leader")
    assert reply.headers["Location"] == f"http://10.0.0.1:80{path}"


async def test_remove_not_found_from_the_service_is_404(api, service):
    service.membership_error = NotFound("n2 left already")
    reply = await api.call("DELETE", "/v1/cluster/members/n2")
    assert (reply.status, reply.body["code"], reply.body["detail"]) == (
        404,
        "not_found",
        "n2 left already",
    )
