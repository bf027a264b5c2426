"""The shapes of every request and response body of HTTP API v1, in the `_schema` language.

Request schemas are what handlers check bodies with; response schemas document what handlers
return (and the tests hold the handlers to them). Imports the stdlib and the ledger's constants
(patterns, pacing modes, currencies, zones): no arithmetic, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Final

from budgetd.api._schema import (
    AnyOf,
    Array,
    Boolean,
    Choice,
    Integer,
    Nullable,
    Number,
    Object,
    Schema,
    String,
    Tagged,
)
from budgetd.ledger import INT64_MAX
from budgetd.ledger.calendar import zone
from budgetd.ledger.currencies import ISO_4217
from budgetd.ledger.limits import (
    ENDED_RETENTION_MS_FLOOR,
    IDEMPOTENCY_RETENTION_MS_FLOOR,
    SETTABLE,
    TTL_MS_CEILING,
    Limits,
)
from budgetd.ledger.pacing import HOURLY_WEIGHT_MAX, PPM

#: A campaign id: 1-4 ``:``-separated segments (docs/ledger.md).
CAMPAIGN_ID_PATTERN: Final = r"[A-Za-z0-9_.\-]{1,64}(?::[A-Za-z0-9_.\-]{1,64}){0,3}"
#: Idempotency keys and bidder ids: 1-128 printable ASCII characters.
TOKEN_PATTERN: Final = r"[ -~]{1,128}"
#: A reservation id in a path: a positive decimal integer without leading zeros.
RESERVATION_ID_PATTERN: Final = r"[1-9][0-9]{0,18}"
#: A cluster member's id, and its data center (budgetd.settings checks the same).
MEMBER_ID_PATTERN: Final = r"[A-Za-z0-9_.\-]{1,64}"
#: ``host:port``: a name or IPv4 address, or ``[IPv6]``; the port is checked to be 1-65535.
ADDRESS_PATTERN: Final = r"(?:[A-Za-z0-9_.\-]{1,253}|\[[0-9A-Fa-f:]{2,39}\]):[0-9]{1,5}"
PACING_MODES: Final = ("asap", "even", "frontloaded", "traffic_shaped")
STATUSES: Final = ("active", "paused")
RESERVATION_STATES: Final = ("open", "closed", "expired")
BATCH_OPS: Final = ("reserve", "commit", "release", "spend")


def _is_zone(name: str) -> bool:
    return zone(name) is not None


def _is_port(address: str) -> bool:
    return 1 <= int(address.rpartition(":")[2]) <= 65535


# ----------------------------------------------------------------------------------------------
# Scalars

MICROS: Final = Integer(1, INT64_MAX, "money in integer micros (1 unit = 1,000,000)")
MICROS_OR_ZERO: Final = Integer(0, INT64_MAX, "money in integer micros")
SIGNED_MICROS: Final = Integer(-INT64_MAX - 1, INT64_MAX, "money in integer micros")
TIME_MS: Final = Integer(0, INT64_MAX, "Unix time in milliseconds")
TTL_MS: Final = Integer(
    1, TTL_MS_CEILING, "lifetime in milliseconds (at most a day; the ledger's limit applies)"
)
COUNT: Final = Integer(0, INT64_MAX)
INDEX: Final = Integer(0, INT64_MAX, "a Raft log index")
PPM_VALUE: Final = Integer(0, PPM, "parts per million")
RATE: Final = Number(0.0, 1.0, "pass_through_ppm / 1e6: the share of bid requests to bid on")
CAMPAIGN_ID: Final = String(
    CAMPAIGN_ID_PATTERN,
    "campaign id, levels joined by ':'",
    meaning="1-4 ':'-separated segments of [A-Za-z0-9_.-]{1,64}",
)
IDEMPOTENCY_KEY: Final = String(
    TOKEN_PATTERN, "1-128 printable ASCII characters", meaning="1-128 printable ASCII characters"
)
BIDDER_ID: Final = String(
    TOKEN_PATTERN, "1-128 printable ASCII characters", meaning="1-128 printable ASCII characters"
)
RESERVATION_ID: Final = Integer(1, INT64_MAX, "reservation id")
CURRENCY: Final = String(
    "[A-Z]{3}",
    "ISO 4217 code; fixed for the tree, set on the root",
    meaning="an ISO 4217 currency code such as 'USD'",
    accept=ISO_4217.__contains__,
)
TIMEZONE: Final = String(
    r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,2}",
    "IANA time zone; fixed for the tree, set on the root",
    meaning="an IANA time zone such as 'America/New_York'",
    accept=_is_zone,
)
DAY: Final = String(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "local calendar day, YYYY-MM-DD")
MEMBER_ID: Final = String(
    MEMBER_ID_PATTERN, "cluster member id", meaning="1-64 characters of [A-Za-z0-9_.-]"
)
DC: Final = String(MEMBER_ID_PATTERN, "data center", meaning="1-64 characters of [A-Za-z0-9_.-]")
ADDRESS: Final = String(
    ADDRESS_PATTERN,
    "host:port (a name, an IPv4 address or [IPv6]; port 1-65535)",
    meaning="host:port with a port from 1 to 65535, such as '10.0.0.4:7001'",
    accept=_is_port,
)

# ----------------------------------------------------------------------------------------------
# Requests

PACING: Final = Object(
    {
        "mode": Choice(PACING_MODES),
        "hourly_weights": Nullable(
            Array(Integer(0, HOURLY_WEIGHT_MAX), 24, 24),
            "traffic_shaped only: 24 weights, one per local hour, not all 0",
        ),
        "burst_ppm": Integer(0, PPM, "share of the daily budget reservable ahead of the plan"),
    },
    required=frozenset({"mode"}),
    name="Pacing",
)

CAMPAIGN_PUT: Final = Object(
    {
        "currency": CURRENCY,
        "timezone": TIMEZONE,
        "daily_budget_micros": Nullable(MICROS),
        "total_budget_micros": Nullable(MICROS),
        "start_ms": Nullable(TIME_MS, "flight start, inclusive"),
        "end_ms": Nullable(TIME_MS, "flight end, exclusive"),
        "pacing": PACING,
        "status": Choice(STATUSES),
    },
    name="CampaignPut",
    description=(
        "Full replacement of the campaign's settings; omitted optional fields become absent. "
        "A root campaign needs currency and timezone; a child may omit or repeat them."
    ),
)

_RESERVE_FIELDS: Final[Mapping[str, Schema]] = {
    "campaign_id": CAMPAIGN_ID,
    "amount_micros": MICROS,
    "min_amount_micros": Integer(1, INT64_MAX, "refuse below this grant (default 1)"),
    "ttl_ms": TTL_MS,
    "bidder_id": BIDDER_ID,
}
_RESERVE_REQUIRED: Final = frozenset({"campaign_id", "amount_micros", "ttl_ms", "bidder_id"})
_COMMIT_FIELDS: Final[Mapping[str, Schema]] = {
    "amount_micros": MICROS,
    "final": Boolean("release whatever is still held and close the reservation"),
}
_SPEND_FIELDS: Final[Mapping[str, Schema]] = {"amount_micros": MICROS, "bidder_id": BIDDER_ID}

RESERVE: Final = Object(_RESERVE_FIELDS, _RESERVE_REQUIRED, name="ReserveRequest")
COMMIT: Final = Object(_COMMIT_FIELDS, frozenset({"amount_micros"}), name="CommitRequest")
RELEASE: Final = Object({}, name="ReleaseRequest", description="an empty object (or no body)")
SPEND: Final = Object(_SPEND_FIELDS, frozenset(_SPEND_FIELDS), name="SpendRequest")


def _op(name: str, fields: Mapping[str, Schema], required: frozenset[str], title: str) -> Object:
    return Object(
        {"op": Choice((name,)), "idempotency_key": IDEMPOTENCY_KEY, **fields},
        frozenset({"op", "idempotency_key"}) | required,
        name=title,
    )


BATCH_OP: Final = Tagged(
    "op",
    {
        "reserve": _op("reserve", _RESERVE_FIELDS, _RESERVE_REQUIRED, "ReserveOp"),
        "commit": _op(
            "commit",
            {"reservation_id": RESERVATION_ID, **_COMMIT_FIELDS},
            frozenset({"reservation_id", "amount_micros"}),
            "CommitOp",
        ),
        "release": _op(
            "release",
            {"reservation_id": RESERVATION_ID},
            frozenset({"reservation_id"}),
            "ReleaseOp",
        ),
        "spend": _op(
            "spend",
            {"campaign_id": CAMPAIGN_ID, **_SPEND_FIELDS},
            frozenset({"campaign_id", *_SPEND_FIELDS}),
            "SpendOp",
        ),
    },
    name="BatchOp",
)
BATCH: Final = Object(
    {
        "ops": Array(
            BATCH_OP, 1, None, "at most the node's api.batch_ops_max (default 1000) operations"
        )
    },
    frozenset({"ops"}),
    name="BatchRequest",
)

MEMBER_ADD: Final = Object(
    {
        "id": MEMBER_ID,
        "raft_address": ADDRESS,
        "http_address": ADDRESS,
        "dc": Nullable(DC, "data center; 'default' when absent"),
    },
    frozenset({"id", "raft_address", "http_address"}),
    name="MemberAdd",
    description="A node to add to the cluster; start it first with the new member list.",
)

LEADER_TRANSFER: Final = Object(
    {"node_id": Nullable(MEMBER_ID, "the member to lead; null or absent: any caught-up follower")},
    frozenset(),
    name="LeaderTransfer",
    description="Move leadership to another member (POST /v1/cluster/leader).",
)

_LIMIT_MEANINGS: Final[Mapping[str, str]] = {
    "campaigns_max": "campaigns the ledger holds at most",
    "open_reservations_max": "reservations open (holding money) at once at most",
    "ended_reservations_max": "ended reservations kept for reads and late commits at most",
    "idempotency_keys_max": "idempotency keys remembered at most",
    "batch_ops_max": "ops in one log entry at most (fixed at run time)",
    "id_length_max": "characters of an idempotency key or bidder id at most (fixed at run time)",
    "amount_micros_max": "largest amount of one op, in micros (fixed at run time)",
    "ttl_ms_max": "longest reservation ttl_ms (at most a day)",
    "idempotency_retention_ms": "how long an idempotency key is remembered, in ledger time",
    "ended_retention_ms": "how long an ended reservation is kept, in ledger time",
}
_LIMIT_FLOORS: Final[Mapping[str, int]] = {
    "idempotency_retention_ms": IDEMPOTENCY_RETENTION_MS_FLOOR,
    "ended_retention_ms": ENDED_RETENTION_MS_FLOOR,
}
_LIMIT_CEILINGS: Final[Mapping[str, int]] = {"ttl_ms_max": TTL_MS_CEILING}

LIMITS_PATCH: Final = Object(
    {
        name: Integer(
            _LIMIT_FLOORS.get(name, 1),
            _LIMIT_CEILINGS.get(name, INT64_MAX),
            _LIMIT_MEANINGS[name],
        )
        for name in SETTABLE
    },
    name="LimitsPatch",
    description=(
        "The limits to change, and only those (at least one); the others keep their values. A "
        "limit below what its table holds now refuses new entries (limit_reached) until the "
        "table drains below it; nothing held is dropped. A lowered retention forgets what is "
        "older at the next pulses. batch_ops_max, id_length_max and amount_micros_max are fixed."
    ),
)

# ----------------------------------------------------------------------------------------------
# Responses (open objects: a client must ignore fields it does not know)


def _response(
    name: str, fields: Mapping[str, Schema], *, optional: frozenset[str] = frozenset()
) -> Object:
    return Object(dict(fields), frozenset(fields) - optional, name=name, closed=False)


_READ_FIELDS: Final[Mapping[str, Schema]] = {
    "applied_index": INDEX,
    "stale_ok": Boolean("true: read from this node's state without a log round trip"),
}
_WRITE_FIELDS: Final[Mapping[str, Schema]] = {
    "replayed": Boolean("true: a retry of an earlier request; this is the original result"),
}

PACING_STATE: Final = _response(
    "PacingState",
    {
        "mode": Choice(PACING_MODES),
        "hourly_weights": Nullable(Array(Integer(0, HOURLY_WEIGHT_MAX), 24, 24)),
        "burst_ppm": PPM_VALUE,
        "burst_micros": MICROS_OR_ZERO,
        "allowance_micros": Nullable(MICROS_OR_ZERO, "null without a daily budget"),
        "own_pass_through_ppm": PPM_VALUE,
        "pass_through_ppm": Integer(0, PPM, "smallest rate on the path to the root"),
        "pass_through_rate": RATE,
    },
)
PREVIOUS_DAY: Final = _response(
    "PreviousDay",
    {
        "day": DAY,
        "spent_micros": MICROS_OR_ZERO,
        "held_micros": MICROS_OR_ZERO,
        "overspend_micros": MICROS_OR_ZERO,
        "late_commits": COUNT,
    },
)
_CAMPAIGN_STATE_FIELDS: Final[Mapping[str, Schema]] = {
    "campaign_id": CAMPAIGN_ID,
    "parent_id": Nullable(CAMPAIGN_ID),
    "currency": CURRENCY,
    "timezone": TIMEZONE,
    "daily_budget_micros": Nullable(MICROS),
    "total_budget_micros": Nullable(MICROS),
    "start_ms": Nullable(TIME_MS),
    "end_ms": Nullable(TIME_MS),
    "status": Choice(STATUSES),
    "version": Integer(1, INT64_MAX, "bumped by every change of the settings; use in If-Match"),
    "pacing": PACING_STATE,
    "day": DAY,
    "day_start_ms": TIME_MS,
    "day_end_ms": TIME_MS,
    "spent_today_micros": MICROS_OR_ZERO,
    "held_micros": MICROS_OR_ZERO,
    "overspend_micros": MICROS_OR_ZERO,
    "late_commits_today": COUNT,
    "available_micros": Nullable(MICROS_OR_ZERO, "null when no level has a cap"),
    "spent_total_micros": MICROS_OR_ZERO,
    "held_total_micros": MICROS_OR_ZERO,
    "overspend_total_micros": MICROS_OR_ZERO,
    "late_commits_total": COUNT,
    "previous_days": Array(PREVIOUS_DAY),
    "now_ms": TIME_MS,
}
CAMPAIGN_STATE: Final = _response("CampaignState", _CAMPAIGN_STATE_FIELDS)
CAMPAIGN: Final = _response("Campaign", {**_CAMPAIGN_STATE_FIELDS, **_READ_FIELDS})
CAMPAIGN_WRITTEN: Final = _response(
    "CampaignWritten",
    {
        **_CAMPAIGN_STATE_FIELDS,
        "applied_index": INDEX,
        "created": Boolean("true when this request created the campaign"),
        **_WRITE_FIELDS,
    },
)
CAMPAIGN_LIST: Final = _response(
    "CampaignList",
    {
        "campaigns": Array(CAMPAIGN_STATE),
        "next": Nullable(
            String(CAMPAIGN_ID_PATTERN), "pass as ?after= for the next page; null on the last"
        ),
        **_READ_FIELDS,
    },
)
RESERVATION: Final = _response(
    "Reservation",
    {
        "reservation_id": RESERVATION_ID,
        "campaign_id": CAMPAIGN_ID,
        "bidder_id": BIDDER_ID,
        "granted_micros": MICROS,
        "committed_micros": MICROS_OR_ZERO,
        "held_micros": MICROS_OR_ZERO,
        "state": Choice(RESERVATION_STATES),
        "expires_at_ms": TIME_MS,
        "late": Boolean("a commit arrived after expiry"),
        "pass_through_ppm": PPM_VALUE,
        "pass_through_rate": RATE,
        "day": DAY,
        **_READ_FIELDS,
    },
)
RESERVATION_GRANTED: Final = _response(
    "ReservationGranted",
    {
        "reservation_id": RESERVATION_ID,
        "granted_micros": MICROS,
        "expires_at_ms": TIME_MS,
        "pass_through_ppm": PPM_VALUE,
        "pass_through_rate": RATE,
        **_WRITE_FIELDS,
    },
)
COMMITTED: Final = _response(
    "CommitResult",
    {
        "reservation_id": RESERVATION_ID,
        "committed_micros": MICROS_OR_ZERO,
        "remaining_micros": MICROS_OR_ZERO,
        "late": Boolean("the reservation had expired: recorded in full as unreserved spend"),
        "overspend_micros": MICROS_OR_ZERO,
        **_WRITE_FIELDS,
    },
)
RELEASED: Final = _response(
    "ReleaseResult",
    {"reservation_id": RESERVATION_ID, "released_micros": MICROS_OR_ZERO, **_WRITE_FIELDS},
)
SPENT: Final = _response(
    "SpendResult",
    {
        "campaign_id": CAMPAIGN_ID,
        "recorded_micros": MICROS,
        "overspend_micros": MICROS_OR_ZERO,
        "day": DAY,
        **_WRITE_FIELDS,
    },
)
PROBLEM: Final = _response(
    "Problem",
    {
        "type": String(r"urn:budgetd:problem:[a-z_]+"),
        "title": String(r".+"),
        "status": Integer(300, 599),
        "code": String(r"[a-z_]+", "the stable, machine-readable error code"),
        "detail": String(r"[\s\S]*"),
        "retryable": Boolean("true: may succeed if retried with the same idempotency key"),
        "leader": String(r".+", "not_leader only: the leader's HTTP address"),
    },
    optional=frozenset({"leader"}),
)


def _batch_result(name: str, result: Object) -> Object:
    return _response(name, {"code": Choice(("ok",)), **result.properties})


BATCH_RESULT: Final = _response(
    "BatchResult",
    {
        "results": Array(
            AnyOf(
                (
                    _batch_result("ReserveOpResult", RESERVATION_GRANTED),
                    _batch_result("CommitOpResult", COMMITTED),
                    _batch_result("ReleaseOpResult", RELEASED),
                    _batch_result("SpendOpResult", SPENT),
                    PROBLEM,
                )
            ),
            description="one per op, in order: the op's result (code ok) or a problem",
        )
    },
)
_UNLISTED: Final = (
    "; null when this node's settings do not list the member (added later through another "
    "node: only its raft address is replicated)"
)
MEMBER: Final = _response(
    "Member",
    {
        "id": Nullable(String(MEMBER_ID_PATTERN), "member id" + _UNLISTED),
        "raft_address": String(r".+"),
        "http_address": Nullable(String(r".+"), "where clients reach it" + _UNLISTED),
        "dc": Nullable(String(r".+"), "data center" + _UNLISTED),
        "role": String(r".+", "leader, follower, candidate or unknown"),
        "healthy": Boolean(),
    },
)
CLUSTER: Final = _response(
    "Cluster",
    {
        "node_id": String(r".+"),
        "leader_id": Nullable(String(r".+")),
        "term": COUNT,
        "commit_index": INDEX,
        "applied_index": INDEX,
        "digest": String(r"[0-9a-f]*", "SHA-256 of this node's ledger state"),
        "digest_index": INDEX,
        "members": Array(MEMBER),
    },
)
MEMBERS: Final = _response(
    "Members", {"members": Array(MEMBER, description="the configuration after the change")}
)
LEADER: Final = _response(
    "Leader",
    {
        "leader_id": String(r".+", "the member that leads now"),
        "previous_leader_id": String(r".+", "the member that led when the request arrived"),
        "term": COUNT,
        "transferred": Boolean("false: the named member already led; nothing changed"),
    },
)
LIMIT_VALUES: Final = _response(
    "LimitValues",
    {
        name: Integer(1, INT64_MAX, _LIMIT_MEANINGS[name])
        for name in (field.name for field in fields(Limits))  # every limit, settable or not
    },
)
LIMIT_USAGE: Final = _response(
    "LimitUsage",
    {
        "campaigns": COUNT,
        "open_reservations": COUNT,
        "ended_reservations": COUNT,
        "idempotency_keys": COUNT,
    },
)
LIMITS: Final = _response(
    "Limits",
    {
        "limits": LIMIT_VALUES,
        "usage": LIMIT_USAGE,
        "settable": Array(Choice(SETTABLE), description="the limits PATCH may change"),
        "now_ms": Integer(0, INT64_MAX, "the ledger's clock"),
        **_READ_FIELDS,
    },
)
HEALTH: Final = _response("Health", {"status": Choice(("ok",)), "node_id": String(r".+")})
READY: Final = _response("Ready", {"ready": Boolean(), "node_id": String(r".+")})
