"""The handlers of HTTP API v1 (DESIGN §5): parse, check, build ledger ops, await the service,
render. No money arithmetic: every amount is the ledger's, passed through.

Imports the api's own modules, aiohttp and the ledger's read views; never pysyncobj.
"""

from __future__ import annotations

import asyncio
import functools
import re
from typing import Any, Final

from aiohttp import web

from budgetd.api import _bodies as bodies
from budgetd.api._call import TARGET, Call, refusal
from budgetd.api._fastbody import FastBody
from budgetd.api._problems import ApiError, invalid, problem
from budgetd.api._wire import MSGPACK
from budgetd.ledger import Ledger, codes
from budgetd.ledger.limits import SETTABLE, Limits
from budgetd.ledger.pacing import PPM
from budgetd.settings import Member

#: A batch body decoded and checked by msgspec in one pass (the slow path words any error).
_FAST_BATCH: Final = FastBody(bodies.BATCH)
_LIST_PREFIX: Final = re.compile(r"[A-Za-z0-9_.:\-]{0,259}")


def _rate(ppm: int) -> float:
    """``pass_through_ppm`` as the share the client applies to bid requests."""
    return ppm / PPM


def _replayed(result: dict[str, Any]) -> bool:
    return bool(result.get("replayed", False))


# ----------------------------------------------------------------------------------------------
# Rendering ledger results and views


def render_campaign(view: dict[str, Any]) -> dict[str, Any]:
    pacing = dict(view["pacing"])
    pacing["pass_through_rate"] = _rate(pacing["pass_through_ppm"])
    return {**view, "pacing": pacing}


def render_reservation(view: dict[str, Any]) -> dict[str, Any]:
    return {**view, "pass_through_rate": _rate(view["pass_through_ppm"])}


def render_reserved(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "reservation_id": result["reservation_id"],
        "granted_micros": result["granted_micros"],
        "expires_at_ms": result["expires_at_ms"],
        "pass_through_ppm": result["pass_through_ppm"],
        "pass_through_rate": _rate(result["pass_through_ppm"]),
        "replayed": _replayed(result),
    }


def render_committed(reservation_id: int, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "committed_micros": result["committed_micros"],
        "remaining_micros": result["remaining_micros"],
        "late": result["late"],
        "overspend_micros": result["overspend_micros"],
        "replayed": _replayed(result),
    }


def render_released(reservation_id: int, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "released_micros": result["released_micros"],
        "replayed": _replayed(result),
    }


def render_spent(campaign_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "recorded_micros": result["recorded_micros"],
        "overspend_micros": result["overspend_micros"],
        "day": result["day"],
        "replayed": _replayed(result),
    }


def render_op_result(op: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One entry of a batch's results: the op's result with ``code: ok``, or a problem."""
    if result["code"] != codes.OK:
        return refusal(result).body()
    name = op["op"]
    if name == "reserve":
        # The hot op of a batch: the ledger's result (fresh, this request's alone) completed in
        # place with what `render_reserved` adds, rather than copied twice.
        result["pass_through_rate"] = _rate(result["pass_through_ppm"])
        result["replayed"] = _replayed(result)
        return result
    if name == "commit":
        body = render_committed(op["reservation_id"], result)
    elif name == "release":
        body = render_released(op["reservation_id"], result)
    else:
        assert name == "spend", name
        body = render_spent(op["campaign_id"], result)
    return {"code": codes.OK, **body}


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


# ----------------------------------------------------------------------------------------------
# Campaigns


def campaign_op(
    campaign_id: str,
    body: dict[str, Any],
    *,
    expected_version: int | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """The ``put_campaign`` op for a checked PUT body; refuses what needs no state to refuse."""
    settings = {name: value for name, value in body.items() if value is not None}
    if ":" not in campaign_id and not {"currency", "timezone"} <= settings.keys():
        raise invalid("a root campaign needs a currency and a timezone")
    start_ms, end_ms = settings.get("start_ms"), settings.get("end_ms")
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise invalid("start_ms must be before end_ms")
    if "pacing" in settings:
        pacing = {name: value for name, value in settings["pacing"].items() if value is not None}
        mode = pacing["mode"]
        weights = pacing.get("hourly_weights")
        if mode == "traffic_shaped" and (weights is None or not any(weights)):
            raise invalid("pacing mode traffic_shaped needs 24 hourly_weights, not all 0")
        if mode != "traffic_shaped" and weights is not None:
            raise invalid("pacing.hourly_weights belong to mode traffic_shaped only")
        if mode != "asap" and "daily_budget_micros" not in settings:
            raise invalid(f"pacing mode {mode} needs a daily_budget_micros")
        settings["pacing"] = pacing
    op: dict[str, Any] = {"op": "put_campaign", "campaign_id": campaign_id, **settings}
    if expected_version is not None:
        op["expected_version"] = expected_version
    if idempotency_key is not None:
        op["idempotency_key"] = idempotency_key
    return op


async def put_campaign(call: Call) -> web.Response:
    campaign_id = call.campaign_id()
    call.query()
    expected_version = call.if_match()
    idempotency_key = call.optional_idempotency_key()
    body = await call.body(bodies.CAMPAIGN_PUT)
    op = campaign_op(
        campaign_id, body, expected_version=expected_version, idempotency_key=idempotency_key
    )
    result = await call.submit_one(op)
    view, applied_index = await call.read(lambda ledger: ledger.campaign(campaign_id), strong=False)
    assert view is not None, f"campaign {campaign_id!r} is missing right after it was written"
    created = bool(result["created"])
    answer = {
        **render_campaign(view),
        "applied_index": applied_index,
        "created": created,
        "replayed": _replayed(result),
    }
    headers = _etag(view["version"])
    if created:
        headers["Location"] = f"/v1/campaigns/{campaign_id}"
    return call.respond(answer, status=201 if created else 200, headers=headers)


async def get_campaign(call: Call) -> web.Response:
    campaign_id = call.campaign_id()
    strong = call.strong(call.query(("consistency",)))
    call.require_read(campaign_id)
    view, applied_index = await call.read(
        lambda ledger: ledger.campaign(campaign_id), strong=strong
    )
    if view is None:
        raise ApiError(codes.NOT_FOUND, f"campaign {campaign_id!r} does not exist")
    answer = {**render_campaign(view), "applied_index": applied_index, "stale_ok": not strong}
    return call.respond(answer, headers=_etag(view["version"]))


async def list_campaigns(call: Call) -> web.Response:
    query = call.query(("prefix", "after", "limit", "consistency"))
    strong = call.strong(query)
    limit = call.list_limit(query)
    prefix = query.get("prefix", "")
    if not _LIST_PREFIX.fullmatch(prefix):
        raise invalid("prefix must be the start of a campaign id ([A-Za-z0-9_.:-], ≤ 259)")
    after = query.get("after")
    if after is not None:
        call.check(bodies.CAMPAIGN_ID, after, "after")
    caller = call.caller
    assert caller is not None
    if not caller.may_list(prefix):
        raise ApiError(
            "forbidden", f"token {caller.name!r} may not list campaigns under {prefix!r}"
        )

    def page(ledger: Ledger) -> tuple[list[dict[str, Any]], str | None]:
        ids = ledger.campaign_ids(prefix, after=after, limit=limit + 1)
        next_after = ids[limit - 1] if len(ids) > limit else None
        views = []
        for campaign_id in ids[:limit]:
            view = ledger.campaign(campaign_id)
            if view is not None and caller.may_read(campaign_id):
                views.append(render_campaign(view))
        return views, next_after

    (views, next_after), applied_index = await call.read(page, strong=strong)
    answer = {
        "campaigns": views,
        "next": next_after,
        "applied_index": applied_index,
        "stale_ok": not strong,
    }
    return call.respond(answer)


async def spend(call: Call) -> web.Response:
    campaign_id = call.campaign_id()
    call.query()
    key = call.idempotency_key()
    body = await call.body(bodies.SPEND)
    call.require_spend(campaign_id)
    op = {"op": "spend", "idempotency_key": key, "campaign_id": campaign_id, **body}
    result = await call.submit_one(op)
    return call.respond(render_spent(campaign_id, result))


# ----------------------------------------------------------------------------------------------
# Reservations


def _check_minimum(body: dict[str, Any], where: str = "") -> None:
    minimum = body.get("min_amount_micros")
    if minimum is not None and minimum > body["amount_micros"]:
        prefix = f"{where}." if where else ""
        raise invalid(f"{prefix}min_amount_micros must not exceed amount_micros")


async def _require_owner(call: Call, reservation_id: int) -> None:
    caller = call.caller
    assert caller is not None
    if not caller.needs_owner_check():
        return
    owners = await call.reservation_owners([reservation_id])
    if reservation_id not in owners:
        raise ApiError(codes.NOT_FOUND, f"reservation {reservation_id} does not exist")
    call.require_spend(owners[reservation_id])


async def reserve(call: Call) -> web.Response:
    call.query()
    key = call.idempotency_key()
    body = await call.body(bodies.RESERVE)
    _check_minimum(body)
    call.require_spend(body["campaign_id"])
    result = await call.submit_one({"op": "reserve", "idempotency_key": key, **body})
    location = {"Location": f"/v1/reservations/{result['reservation_id']}"}
    return call.respond(render_reserved(result), status=201, headers=location)


async def commit(call: Call) -> web.Response:
    reservation_id = call.reservation_id()
    call.query()
    key = call.idempotency_key()
    body = await call.body(bodies.COMMIT)
    await _require_owner(call, reservation_id)
    op = {"op": "commit", "idempotency_key": key, "reservation_id": reservation_id, **body}
    result = await call.submit_one(op)
    return call.respond(render_committed(reservation_id, result))


async def release(call: Call) -> web.Response:
    reservation_id = call.reservation_id()
    call.query()
    key = call.idempotency_key()
    await call.body(bodies.RELEASE)
    await _require_owner(call, reservation_id)
    op = {"op": "release", "idempotency_key": key, "reservation_id": reservation_id}
    result = await call.submit_one(op)
    return call.respond(render_released(reservation_id, result))


async def get_reservation(call: Call) -> web.Response:
    reservation_id = call.reservation_id()
    strong = call.strong(call.query(("consistency",)))
    view, applied_index = await call.read(
        lambda ledger: ledger.reservation(reservation_id), strong=strong
    )
    if view is None:
        raise ApiError(codes.NOT_FOUND, f"reservation {reservation_id} does not exist")
    call.require_read(view["campaign_id"])
    answer = {**render_reservation(view), "applied_index": applied_index, "stale_ok": not strong}
    return call.respond(answer)


async def _unknown_reservations(call: Call, ops: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """For a caller limited to prefixes: a not_found problem for each op on a reservation that
    does not exist (it never reaches the log); 403 for one outside the caller's prefixes."""
    caller = call.caller
    assert caller is not None
    wanted = [op["reservation_id"] for op in ops if "reservation_id" in op]
    if not caller.needs_owner_check() or not wanted:
        return {}
    owners = await call.reservation_owners(wanted)
    problems = {}
    for index, op in enumerate(ops):
        if "reservation_id" not in op:
            continue
        owner = owners.get(op["reservation_id"])
        if owner is None:
            detail = f"reservation {op['reservation_id']} does not exist"
            problems[index] = problem(codes.NOT_FOUND, detail)
        else:
            call.require_spend(owner, f"ops[{index}]")
    return problems


async def batch(call: Call) -> web.Response:
    call.query()
    checked = await call.fast_body(_FAST_BATCH)  # the common case: valid msgpack
    value = checked if checked is not None else await call.decoded_body()
    limit = call.settings.batch_ops_max
    raw_ops = value.get("ops") if type(value) is dict else None
    if type(raw_ops) is list and len(raw_ops) > limit:
        detail = f"a batch holds at most {limit} ops, got {len(raw_ops)}"
        raise ApiError("payload_too_large", detail)
    if type(raw_ops) is list:
        # An overloaded leader refuses before the slow path's validation (503, nothing written).
        call.service.admit(len(raw_ops))
    ops: list[dict[str, Any]] = (
        checked["ops"] if checked is not None else call.check(bodies.BATCH, value)["ops"]
    )
    caller = call.caller
    assert caller is not None
    allowed: set[str] = set()  # campaigns the caller may spend on, seen in this batch
    for index, op in enumerate(ops):
        if "min_amount_micros" in op:
            _check_minimum(op, f"ops[{index}]")
        campaign_id = op.get("campaign_id")
        if campaign_id is not None and campaign_id not in allowed:
            call.require_spend(campaign_id, f"ops[{index}]")
            allowed.add(campaign_id)
    results = await _unknown_reservations(call, ops)
    if not results:  # every op goes to the log
        submitted = await call.submit(ops)
        call.metrics.batch_ops.observe(len(ops))
        rendered = [render_op_result(op, result) for op, result in zip(ops, submitted, strict=True)]
        return call.respond({"results": rendered})
    pending = [index for index in range(len(ops)) if index not in results]
    if pending:
        submitted = await call.submit([ops[index] for index in pending])
        call.metrics.batch_ops.observe(len(pending))
        for index, result in zip(pending, submitted, strict=True):
            results[index] = render_op_result(ops[index], result)
    return call.respond({"results": [results[index] for index in range(len(ops))]})


# ----------------------------------------------------------------------------------------------
# Ledger limits

#: The limits PATCH may not change (fixed at run time, see budgetd.ledger.limits.SETTABLE).
FIXED_LIMITS: Final = frozenset(Limits().to_plain()) - frozenset(SETTABLE)
#: The tables `Ledger.stats` counts that a limit bounds.
_LIMITED_TABLES: Final = (
    "campaigns",
    "open_reservations",
    "ended_reservations",
    "idempotency_keys",
)


def _limits_view(ledger: Ledger) -> dict[str, Any]:
    stats = ledger.stats()
    return {
        "limits": ledger.limits.to_plain(),
        "usage": {name: stats[name] for name in _LIMITED_TABLES},
        "settable": list(SETTABLE),
        "now_ms": stats["now_ms"],
    }


async def get_limits(call: Call) -> web.Response:
    strong = call.strong(call.query(("consistency",)))
    view, applied_index = await call.read(_limits_view, strong=strong)
    return call.respond({**view, "applied_index": applied_index, "stale_ok": not strong})


async def patch_limits(call: Call) -> web.Response:
    """Change limits through the log (the ledger's ``set_limits``): every replica applies the
    change at the same log entry. Needs no idempotency key: setting the same values twice
    leaves the same limits."""
    call.query()
    value = await call.decoded_body()
    if type(value) is dict and (fixed := sorted(FIXED_LIMITS & value.keys())):
        raise invalid(
            f"{', '.join(fixed)}: fixed at run time (they bound the ops every node's API checks); "
            f"settable: {', '.join(SETTABLE)}"
        )
    changes: dict[str, Any] = call.check(bodies.LIMITS_PATCH, value)
    if not changes:
        raise invalid(f"name at least one limit to change: {', '.join(SETTABLE)}")
    call.request[TARGET] = ",".join(sorted(changes))
    result = await call.submit_one({"op": "set_limits", **changes})
    view, applied_index = await call.read(_limits_view, strong=False)
    # The limits this change left (a later change may already have applied on top of it).
    view["limits"] = result["limits"]
    return call.respond({**view, "applied_index": applied_index, "stale_ok": False})


# ----------------------------------------------------------------------------------------------
# Cluster, membership, snapshot, health


async def cluster(call: Call) -> web.Response:
    query = call.query(("digest",))
    freshness = query.get("digest", "cached")
    if freshness not in ("cached", "fresh", "last"):
        raise invalid(f"digest must be cached, fresh or last, got {freshness[:40]!r}")
    # Off the event loop: a fresh digest of a large ledger takes seconds (budgetd.node).
    status = await asyncio.get_running_loop().run_in_executor(
        None,
        functools.partial(
            call.service.cluster_status,
            fresh_digest=freshness == "fresh",
            refresh=freshness != "last",
        ),
    )
    return call.respond(status)


def _members(call: Call) -> web.Response:
    return call.respond({"members": call.service.cluster_status(refresh=False)["members"]})


async def add_member(call: Call) -> web.Response:
    call.query()
    body = await call.body(bodies.MEMBER_ADD)
    call.request[TARGET] = body["id"]
    if body["raft_address"] == body["http_address"]:
        raise invalid("raft_address and http_address must differ")
    member = Member(
        id=body["id"],
        raft_address=body["raft_address"],
        http_address=body["http_address"],
        dc=body.get("dc") or "default",
    )
    await call.service.add_member(member)
    return _members(call)


async def remove_member(call: Call) -> web.Response:
    member_id = call.member_id()
    call.query()
    await call.service.remove_member(member_id)
    return _members(call)


async def transfer_leader(call: Call) -> web.Response:
    call.query()
    body = await call.body(bodies.LEADER_TRANSFER)
    return call.respond(await call.service.transfer_leader(body.get("node_id")))


async def snapshot(call: Call) -> web.Response:
    call.query()
    data = await call.service.snapshot()
    filename = f"budgetd-{call.service.applied_index()}.snapshot"
    response = web.Response(body=data, content_type=MSGPACK)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


async def healthz(call: Call) -> web.Response:
    return call.respond({"status": "ok", "node_id": call.service.node_id})


async def readyz(call: Call) -> web.Response:
    ready, reason = call.service.ready()
    if not ready:
        raise ApiError("unavailable", reason or "not ready", headers={"Retry-After": "1"})
    return call.respond({"ready": True, "node_id": call.service.node_id})
