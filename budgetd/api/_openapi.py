"""The OpenAPI 3.1 document of HTTP API v1, built from the api's own schemas.

Owns budgetd/api/openapi.json: regenerate it on purpose with ``python -m budgetd.api._openapi``
and read the diff (``--check`` fails if the file is stale; tests run the same check). Operations
are listed here by hand, apart from the route table, so a test comparing the two means something.
Imports the api's schema modules, the forwarding constants and the stdlib.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from budgetd.api import _bodies as bodies
from budgetd.api._forward import FORWARD_TIMEOUT_S, FORWARDED_BY, LEADER
from budgetd.api._problems import PROBLEMS
from budgetd.api._schema import Object, Schema, components

PATH: Final = Path(__file__).with_name("openapi.json")

_BODY_TYPES: Final = ("application/json", "application/msgpack")
_PROBLEM_TYPES: Final = ("application/problem+json", "application/msgpack")


def _content(schema: Schema, types: tuple[str, ...] = _BODY_TYPES) -> dict[str, Any]:
    return {media: {"schema": schema.json_schema()} for media in types}


def _ok(description: str, schema: Object, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _content(schema)}
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


def _problems(*codes: str) -> dict[str, Any]:
    """References to the shared problem responses for the statuses of ``codes`` (and 500)."""
    statuses = sorted({PROBLEMS[code].status for code in (*codes, "internal_error")})
    return {str(status): {"$ref": f"#/components/responses/Problem{status}"} for status in statuses}


def _problem_responses() -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code, kind in PROBLEMS.items():
        by_status.setdefault(kind.status, []).append(code)
    headers = {
        307: {
            "Location": "the same request at the leader: follow it (curl -L, method kept)",
            LEADER: "the leader's HTTP address",
            "Preference-Applied": "redirect, when the request asked for it",
        },
        401: {"WWW-Authenticate": 'Bearer realm="budgetd"'},
        405: {"Allow": "the methods the path allows"},
        429: {"Retry-After": "seconds until this token's rate admits a request again"},
        503: {"Retry-After": "seconds to wait before retrying with the same idempotency key"},
    }
    notes = {
        307: (
            ". Only when the request carries `Prefer: redirect` or was already forwarded once "
            f"(`{FORWARDED_BY}`); otherwise a follower forwards the request to the leader itself"
        ),
        408: ". The body did not arrive within api.body_timeout_ms; nothing was written",
        429: (
            ". The token is over its request rate (api.rate_per_s, or its own rate_per_s in the "
            "tokens file); nothing was written"
        ),
        431: ". The request line or a header is beyond the node's limits; nothing was read",
        503: (
            ". Also: the node is at api.connections_max open connections (then the connection "
            "is closed), or a follower could not connect to the leader to forward the request (not "
            "sent), or a forwarded GET failed"
        ),
        504: (
            ". Also: a follower forwarded a request other than GET and the connection to the "
            "leader failed after it may have been sent, or no answer came within "
            f"{FORWARD_TIMEOUT_S:g} s"
        ),
    }
    responses = {}
    for status in sorted(by_status):
        codes = ", ".join(f"`{code}`" for code in by_status[status])
        response: dict[str, Any] = {
            "description": f"a problem with code {codes}{notes.get(status, '')}",
            "content": _content(bodies.PROBLEM, _PROBLEM_TYPES),
        }
        if status in headers:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in headers[status].items()
            }
        responses[f"Problem{status}"] = response
    return responses


_PARAMETERS: Final = {
    "CampaignId": {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": bodies.CAMPAIGN_ID.json_schema(),
    },
    "ReservationId": {
        "name": "rid",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^(?:{bodies.RESERVATION_ID_PATTERN})$"},
        "description": "a positive int64",
    },
    "Consistency": {
        "name": "consistency",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["strong", "local"], "default": "strong"},
        "description": (
            "strong: after a barrier through the log (reflects every acknowledged write); "
            "local: this node's state at once, stale_ok true"
        ),
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
        "schema": bodies.IDEMPOTENCY_KEY.json_schema(),
        "description": "the same on every retry of this request; kept at least 48 h",
    },
    "OptionalIdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": bodies.IDEMPOTENCY_KEY.json_schema(),
    },
    "Prefer": {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": (
            "redirect: a follower answers 307 not_leader with the leader's address instead of "
            "forwarding the request (for clients that talk to the leader directly)"
        ),
    },
    "MemberId": {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": bodies.MEMBER_ID.json_schema(),
    },
    "IfMatch": {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": '^"?[1-9][0-9]{0,18}"?$'},
        "description": "apply only if the campaign is at this version (its ETag)",
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


_READ_ERRORS: Final = ("invalid_request", "unauthorized", "forbidden", "not_found")
_SERVICE_ERRORS: Final = ("not_leader", "unavailable", "outcome_unknown")
_WRITE_ERRORS: Final = (
    "invalid_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "budget_exhausted",
    "payload_too_large",
    *_SERVICE_ERRORS,
)


_ADMIN_ERRORS: Final = ("invalid_request", "unauthorized", "forbidden", *_SERVICE_ERRORS)
_METHODS: Final = ("get", "put", "post", "patch", "delete")


def _operations() -> dict[str, dict[str, Any]]:
    """Every operation; each that needs a token also takes ``Prefer`` (any may be forwarded)."""
    paths = _paths()
    for item in paths.values():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            # What the listening socket and the middlewares may answer on any operation.
            extra = ["request_header_too_large", "unavailable"]
            if operation.get("security") != []:
                operation.setdefault("parameters", []).append(_ref("Prefer"))
                extra.append("rate_limited")
            if "requestBody" in operation:
                extra.append("request_timeout")
            responses = {**operation["responses"], **_problems(*extra)}
            operation["responses"] = dict(sorted(responses.items()))
    return paths


def _paths() -> dict[str, dict[str, Any]]:
    public: list[dict[str, list[str]]] = []
    return {
        "/v1/campaigns/{id}": {
            "parameters": [_ref("CampaignId")],
            "put": {
                "operationId": "putCampaign",
                "summary": "Create or replace a campaign's settings (admin). Parent must exist.",
                "parameters": [_ref("IfMatch"), _ref("OptionalIdempotencyKey")],
                "requestBody": {"required": True, "content": _content(bodies.CAMPAIGN_PUT)},
                "responses": {
                    "200": _ok("updated (or unchanged)", bodies.CAMPAIGN_WRITTEN, ETag="version"),
                    "201": _ok(
                        "created", bodies.CAMPAIGN_WRITTEN, ETag="version", Location="its URL"
                    ),
                    **_problems(*_WRITE_ERRORS),
                },
            },
            "get": {
                "operationId": "getCampaign",
                "summary": "Settings and live state of a campaign.",
                "parameters": [_ref("Consistency")],
                "responses": {
                    "200": _ok("the campaign", bodies.CAMPAIGN, ETag="version"),
                    **_problems(*_READ_ERRORS, *_SERVICE_ERRORS),
                },
            },
        },
        "/v1/campaigns": {
            "get": {
                "operationId": "listCampaigns",
                "summary": "Campaigns by id, in order, a page at a time.",
                "parameters": [
                    {
                        "name": "prefix",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:\\-]{0,259}$"},
                        "description": "only ids starting with this string",
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "schema": bodies.CAMPAIGN_ID.json_schema(),
                        "description": "the previous page's next",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "default": 100},
                        "description": "at most the node's api.list_limit_max (default 1000)",
                    },
                    _ref("Consistency"),
                ],
                "responses": {
                    "200": _ok("a page of campaigns", bodies.CAMPAIGN_LIST),
                    **_problems(*_READ_ERRORS, *_SERVICE_ERRORS),
                },
            },
        },
        "/v1/campaigns/{id}/spend": {
            "parameters": [_ref("CampaignId")],
            "post": {
                "operationId": "spend",
                "summary": "Record spend with no reservation (late billing notice). Never "
                "refused for budget, pause or flight.",
                "parameters": [_ref("IdempotencyKey")],
                "requestBody": {"required": True, "content": _content(bodies.SPEND)},
                "responses": {
                    "200": _ok("recorded", bodies.SPENT),
                    **_problems(*_WRITE_ERRORS),
                },
            },
        },
        "/v1/reservations": {
            "post": {
                "operationId": "reserve",
                "summary": "Hold a slice of a campaign's budget: min(asked, what every level and "
                "pacing allow), refused below min_amount_micros.",
                "parameters": [_ref("IdempotencyKey")],
                "requestBody": {"required": True, "content": _content(bodies.RESERVE)},
                "responses": {
                    "201": _ok("granted", bodies.RESERVATION_GRANTED, Location="its URL"),
                    **_problems(*_WRITE_ERRORS),
                },
            },
        },
        "/v1/reservations/{rid}": {
            "parameters": [_ref("ReservationId")],
            "get": {
                "operationId": "getReservation",
                "summary": "One reservation (kept 1 h after it ends).",
                "parameters": [_ref("Consistency")],
                "responses": {
                    "200": _ok("the reservation", bodies.RESERVATION),
                    **_problems(*_READ_ERRORS, *_SERVICE_ERRORS),
                },
            },
        },
        "/v1/reservations/{rid}/commit": {
            "parameters": [_ref("ReservationId")],
            "post": {
                "operationId": "commit",
                "summary": "Record spend against a reservation; final releases the rest.",
                "parameters": [_ref("IdempotencyKey")],
                "requestBody": {"required": True, "content": _content(bodies.COMMIT)},
                "responses": {
                    "200": _ok("committed", bodies.COMMITTED),
                    **_problems(*_WRITE_ERRORS),
                },
            },
        },
        "/v1/reservations/{rid}/release": {
            "parameters": [_ref("ReservationId")],
            "post": {
                "operationId": "release",
                "summary": "Return a reservation's uncommitted remainder and end it.",
                "parameters": [_ref("IdempotencyKey")],
                "requestBody": {"required": False, "content": _content(bodies.RELEASE)},
                "responses": {
                    "200": _ok("released", bodies.RELEASED),
                    **_problems(*_WRITE_ERRORS),
                },
            },
        },
        "/v1/batch": {
            "post": {
                "operationId": "batch",
                "summary": "Many reserve/commit/release/spend ops in one round trip and one log "
                "entry; each op carries its own idempotency_key.",
                "requestBody": {"required": True, "content": _content(bodies.BATCH)},
                "responses": {
                    "200": _ok("one result or problem per op, in order", bodies.BATCH_RESULT),
                    **_problems(
                        "invalid_request",
                        "unauthorized",
                        "forbidden",
                        "payload_too_large",
                        *_SERVICE_ERRORS,
                    ),
                },
            },
        },
        "/v1/cluster": {
            "get": {
                "operationId": "cluster",
                "summary": "This node's view of the cluster.",
                "parameters": [
                    {
                        "name": "digest",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "enum": ["cached", "fresh", "last"],
                            "default": "cached",
                        },
                        "description": (
                            "cached: the last digest (digest_index names its applied index), "
                            "recomputed in the background when older than 10 s; fresh: hash "
                            "the state as applied now (costs seconds on a large state); last: "
                            'the last digest, never computing one ("" and index 0 before '
                            "the first): for pollers that want the view only"
                        ),
                    }
                ],
                "responses": {
                    "200": _ok("status", bodies.CLUSTER),
                    **_problems("invalid_request", "unauthorized"),
                },
            },
        },
        "/v1/cluster/members": {
            "post": {
                "operationId": "addMember",
                "summary": "Add a node to the cluster (admin); answers once the new configuration "
                "is applied. Idempotent by content: the same member again answers 200 at once. "
                "One membership change at a time: 503 while another is pending.",
                "requestBody": {"required": True, "content": _content(bodies.MEMBER_ADD)},
                "responses": {
                    "200": _ok("the members after the change", bodies.MEMBERS),
                    **_problems(*_ADMIN_ERRORS, "conflict", "payload_too_large"),
                },
            },
        },
        "/v1/cluster/members/{id}": {
            "parameters": [_ref("MemberId")],
            "delete": {
                "operationId": "removeMember",
                "summary": "Remove a node from the cluster (admin); answers once the new "
                "configuration is applied. 404 when it is not a member (also on a retry of a "
                "removal that was applied).",
                "responses": {
                    "200": _ok("the members after the change", bodies.MEMBERS),
                    **_problems(*_ADMIN_ERRORS, "not_found", "conflict"),
                },
            },
        },
        "/v1/cluster/leader": {
            "post": {
                "operationId": "transferLeader",
                "summary": "Move leadership to node_id (admin; null: the most caught-up "
                "follower), e.g. before stopping the leader for maintenance. The leader holds "
                "new writes (503 unavailable, nothing written), waits until the target's log "
                "matches its own, sends it Raft's TimeoutNow and answers once another node "
                "leads. 503: the target did not catch up, nothing moved; 504 outcome_unknown: "
                "TimeoutNow was sent but the target did not take over in time (GET /v1/cluster "
                "says who leads). Needs no idempotency key: asking again for the member that "
                "already leads answers 200 with transferred false.",
                "requestBody": {"required": False, "content": _content(bodies.LEADER_TRANSFER)},
                "responses": {
                    "200": _ok("the member that leads now", bodies.LEADER),
                    **_problems(*_ADMIN_ERRORS, "not_found", "payload_too_large"),
                },
            },
        },
        "/v1/snapshot": {
            "get": {
                "operationId": "snapshot",
                "summary": "A consistent snapshot of the ledger, taken after a barrier through "
                "the log (admin): budgetd's msgpack snapshot format, for backup and restore.",
                "responses": {
                    "200": {
                        "description": "the snapshot",
                        "headers": {
                            "Content-Disposition": {
                                "description": 'attachment; filename="budgetd-<applied index>'
                                '.snapshot"',
                                "schema": {"type": "string"},
                            }
                        },
                        "content": {
                            "application/msgpack": {
                                "schema": {
                                    "type": "string",
                                    "contentMediaType": "application/msgpack",
                                }
                            }
                        },
                    },
                    **_problems(*_ADMIN_ERRORS),
                },
            },
        },
        "/v1/admin/limits": {
            "get": {
                "operationId": "getLimits",
                "summary": "The ledger's limits, what their tables hold now, and which limits "
                "PATCH may change (admin).",
                "parameters": [_ref("Consistency")],
                "responses": {
                    "200": _ok("the limits", bodies.LIMITS),
                    **_problems(*_ADMIN_ERRORS),
                },
            },
            "patch": {
                "operationId": "setLimits",
                "summary": "Change some of the ledger's limits (admin), through the log: every "
                "replica applies the change at the same log entry, and snapshots keep it. Send "
                "only the limits to change. Needs no idempotency key: the same change again "
                "leaves the same limits. A limit below what its table holds refuses new growth "
                "only; a retention is at least its floor (idempotency_retention_ms 1 h, "
                "ended_retention_ms 10 min) and ttl_ms_max at most a day.",
                "requestBody": {"required": True, "content": _content(bodies.LIMITS_PATCH)},
                "responses": {
                    "200": _ok("the limits after the change", bodies.LIMITS),
                    **_problems(*_ADMIN_ERRORS, "payload_too_large"),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers.",
                "security": public,
                "responses": {"200": _ok("alive", bodies.HEALTH)},
            },
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: knows a leader (a leader: still hears a majority), has "
                "caught up with the leader once since it started, and is at most "
                "api.ready_lag_entries_max committed entries from applying; else 503.",
                "security": public,
                "responses": {"200": _ok("ready", bodies.READY), **_problems("unavailable")},
            },
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, text format 0.0.4.",
                "security": public,
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": public,
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            },
        },
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document, as plain data in a stable order."""
    schemas = components(
        bodies.CAMPAIGN_PUT,
        bodies.RESERVE,
        bodies.COMMIT,
        bodies.RELEASE,
        bodies.SPEND,
        bodies.BATCH,
        bodies.MEMBER_ADD,
        bodies.LEADER_TRANSFER,
        bodies.LIMITS_PATCH,
        bodies.CAMPAIGN,
        bodies.CAMPAIGN_WRITTEN,
        bodies.CAMPAIGN_LIST,
        bodies.RESERVATION,
        bodies.RESERVATION_GRANTED,
        bodies.COMMITTED,
        bodies.RELEASED,
        bodies.SPENT,
        bodies.BATCH_RESULT,
        bodies.CLUSTER,
        bodies.MEMBERS,
        bodies.LEADER,
        bodies.LIMITS,
        bodies.HEALTH,
        bodies.READY,
        bodies.PROBLEM,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "budgetd",
            "version": "1",
            "description": (
                "Budget and pacing store for real-time bidders (DESIGN §5). Bodies are JSON or "
                "msgpack (Content-Type, Accept). Money is integer micros; times are Unix ms. "
                "Errors are problem objects {type, title, status, code, detail, retryable}. "
                "Every mutating POST needs an Idempotency-Key header (batch: per op; "
                "POST /v1/cluster/members is idempotent by content and needs none); a retry "
                "with the same key returns the original result. Any node answers any request: "
                "a follower that meets a request needing the leader forwards it there once "
                f"(adding {FORWARDED_BY}) and relays the answer with {LEADER}: the leader's "
                "address. Forwarding keeps the outcome rules: a forward that could not connect "
                "is 503 (not sent); one that broke after it may have been sent is 503 for a GET "
                "and 504 outcome_unknown otherwise. With Prefer: redirect (or on a request "
                "already forwarded) a follower answers 307 not_leader to the leader instead "
                "(curl -L --location-trusted keeps the Authorization header)."
            ),
        },
        "security": [{"bearer": []}],
        "paths": _operations(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "roles: admin (everything), bidder (reserve, commit, "
                    "release, spend, batch, reads; optionally limited to campaign prefixes), "
                    "reader (reads)",
                }
            },
            "parameters": _PARAMETERS,
            "responses": _problem_responses(),
            "schemas": schemas,
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if openapi.json is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if PATH.read_text(encoding="utf-8") != text:
            print(f"{PATH} is stale: run python -m budgetd.api._openapi", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
