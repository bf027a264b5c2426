"""Fixtures for the HTTP API tests: a scripted Service backed by a real in-process Ledger, the
app under aiohttp's test client, and a harness that checks every response against the OpenAPI
document (status documented for the route, body conforming to its schema).

The scripted service records every submit and barrier, so a test can assert that a refused
request wrote nothing; its hooks raise NotLeader / Unavailable / OutcomeUnknown on demand. Its
membership is a list of member dicts changed at once (no log), with the node's checks: an id or an
address used by another member is a Conflict, an unknown id a NotFound.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer

from budgetd.api import TokenEntry, Tokens, make_app
from budgetd.api._openapi import PATH as OPENAPI_PATH
from budgetd.codec import decode_batch, encode_batch, encode_snapshot
from budgetd.ledger import Ledger, Limits
from budgetd.service import Conflict, NotFound, NotLeader, ServiceError
from budgetd.settings import ApiSettings, Member

#: 2026-03-08 06:00 UTC.
T0_MS = 1_772_949_600_000

#: Plain tokens by the name tests use for them.
TOKENS = {
    "admin": "admin-secret-token",
    "bidder": "bidder-secret-token",
    "acme-bidder": "acme-bidder-secret-token",
    "reader": "reader-secret-token",
    "multi": "bidder-and-reader-token",
}
ENTRIES = [
    TokenEntry.from_plaintext("admin", TOKENS["admin"], roles=["admin"]),
    TokenEntry.from_plaintext("bidder", TOKENS["bidder"], roles=["bidder"]),
    TokenEntry.from_plaintext(
        "acme-bidder", TOKENS["acme-bidder"], roles=["bidder"], prefixes=["acme"]
    ),
    TokenEntry.from_plaintext("reader", TOKENS["reader"], roles=["reader"]),
    TokenEntry.from_plaintext(
        "multi", TOKENS["multi"], roles=["bidder", "reader"], prefixes=["acme"]
    ),
]

ROOT = {
    "currency": "USD",
    "timezone": "UTC",
    "daily_budget_micros": 100_000_000,
    "total_budget_micros": 1_000_000_000,
    "pacing": {"mode": "asap"},
    "status": "active",
}


def _member(member_id: str, dc: str) -> Member:
    number = member_id.removeprefix("n")
    return Member(
        id=member_id,
        raft_address=f"127.0.0.1:700{number}",
        http_address=f"127.0.0.1:800{number}",
        dc=dc,
    )


def member_view(member: Member, role: str) -> dict[str, Any]:
    return {
        "id": member.id,
        "raft_address": member.raft_address,
        "http_address": member.http_address,
        "dc": member.dc,
        "role": role,
        "healthy": True,
    }


class ScriptedService:
    """`budgetd.service.Service` over a real Ledger: submit = apply_batch at ``now_ms``, through
    the batch codec like a real log entry. Set ``submit_error`` / ``barrier_error`` /
    ``membership_error`` to make the next calls raise; ``ready_state`` for /readyz. A snapshot
    passes a barrier first, as the node's does."""

    def __init__(self, limits: Limits | None = None, *, node_id: str = "n1") -> None:
        self._node_id = node_id
        self.ledger = Ledger(limits)
        self.now_ms = T0_MS
        self.index = 0
        self.submits: list[list[dict[str, Any]]] = []
        self.barriers = 0
        self.admitted_ops = 0
        self.submit_error: ServiceError | None = None
        self.barrier_error: ServiceError | None = None
        self.read_error: Exception | None = None
        self.ready_state: tuple[bool, str] = (True, "ready")
        self.membership_error: ServiceError | None = None
        self.membership_changes: list[tuple[str, str]] = []
        self.fresh_digests = 0
        self.unrefreshed_views = 0
        self.members = [
            member_view(_member("n1", "fra"), "leader"),
            member_view(_member("n2", "ams"), "follower"),
        ]

    @property
    def node_id(self) -> str:
        return self._node_id

    def seed(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply ``ops`` directly (not counted as a submit); every one must succeed."""
        results = self.ledger.apply_batch(self.now_ms, copy.deepcopy(ops))
        assert all(result["code"] == "ok" for result in results), results
        self.index += 1
        return results

    async def submit(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.submits.append(copy.deepcopy(ops))
        if self.submit_error is not None:
            raise self.submit_error
        timestamp_ms, decoded = decode_batch(encode_batch(self.now_ms, ops))
        results = self.ledger.apply_batch(timestamp_ms, decoded)
        self.index += 1
        return results

    def admit(self, ops: int) -> None:
        self.admitted_ops += ops

    async def barrier(self) -> int:
        self.barriers += 1
        if self.barrier_error is not None:
            raise self.barrier_error
        self.index += 1
        return self.index

    def read(self, reader: Callable[[Ledger], Any]) -> Any:
        if self.read_error is not None:
            raise self.read_error
        return reader(self.ledger)

    def applied_index(self) -> int:
        return self.index

    def cluster_status(self, *, fresh_digest: bool = False, refresh: bool = True) -> dict[str, Any]:
        self.fresh_digests += fresh_digest
        self.unrefreshed_views += not refresh
        return {
            "node_id": self._node_id,
            "leader_id": "n1",
            "term": 3,
            "commit_index": self.index,
            "applied_index": self.index,
            "digest": self.ledger.digest(),
            "digest_index": self.index,
            "members": copy.deepcopy(self.members),
        }

    async def add_member(self, member: Member) -> None:
        self.membership_changes.append(("add", member.id))
        if self.membership_error is not None:
            raise self.membership_error
        wanted = member_view(member, "follower")
        for present in self.members:
            same = {key: present[key] for key in ("id", "raft_address", "http_address", "dc")}
            if same == {key: wanted[key] for key in same}:
                return
            for key in ("id", "raft_address", "http_address"):
                if present[key] == wanted[key]:
                    raise Conflict(f"member {present['id']} already has {key} {wanted[key]}")
        self.members.append(wanted)
        self.index += 1

    async def remove_member(self, member_id: str) -> None:
        self.membership_changes.append(("remove", member_id))
        if self.membership_error is not None:
            raise self.membership_error
        kept = [member for member in self.members if member["id"] != member_id]
        if len(kept) == len(self.members):
            raise NotFound(f"{member_id!r} is not a member of the cluster")
        self.members = kept
        self.index += 1

    async def transfer_leader(self, target_id: str | None) -> dict[str, Any]:
        self.membership_changes.append(("transfer", target_id or ""))
        if self.membership_error is not None:
            raise self.membership_error
        ids = [member["id"] for member in self.members]
        if target_id is not None and target_id not in ids:
            raise NotFound(f"no member {target_id!r}")
        leader = target_id or next(i for i in ids if i != self._node_id)
        return {
            "leader_id": leader,
            "previous_leader_id": self._node_id,
            "term": 4,
            "transferred": leader != self._node_id,
        }

    async def snapshot(self) -> bytes:
        await self.barrier()
        return encode_snapshot(self.ledger)

    def ready(self) -> tuple[bool, str]:
        return self.ready_state

    @property
    def submitted_ops(self) -> list[dict[str, Any]]:
        return [op for ops in self.submits for op in ops]


# ----------------------------------------------------------------------------------------------
# A checker for the subset of JSON Schema the document uses


class Nonconforming(AssertionError):
    pass


def _type_ok(kind: str, value: Any) -> bool:
    return {
        "null": value is None,
        "boolean": type(value) is bool,
        "integer": type(value) is int,
        "number": type(value) in (int, float),
        "string": type(value) is str,
        "array": type(value) is list,
        "object": type(value) is dict,
    }[kind]


def conform(doc: dict[str, Any], schema: dict[str, Any], value: Any, path: str = "$") -> None:
    """Raise Nonconforming unless ``value`` satisfies ``schema`` (refs resolved in ``doc``)."""
    if "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        conform(doc, node, value, path)
        return
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        errors = []
        matched = 0
        for option in options:
            try:
                conform(doc, option, value, path)
                matched += 1
            except Nonconforming as error:
                errors.append(str(error))
        if matched == 0 or ("oneOf" in schema and matched != 1):
            raise Nonconforming(f"{path}: {matched} options match: {errors}")
        return
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(kind, value) for kind in kinds):
            raise Nonconforming(f"{path}: {value!r} is not {kinds}")
    if value is None:
        return
    if "enum" in schema and value not in schema["enum"]:
        raise Nonconforming(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        raise Nonconforming(f"{path}: {value!r} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise Nonconforming(f"{path}: {value!r} > {schema['maximum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise Nonconforming(f"{path}: {value!r} does not match {schema['pattern']}")
    if type(value) is list:
        if len(value) < schema.get("minItems", 0):
            raise Nonconforming(f"{path}: too few items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise Nonconforming(f"{path}: too many items")
        for index, item in enumerate(value):
            conform(doc, schema.get("items", {}), item, f"{path}[{index}]")
    if type(value) is dict:
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise Nonconforming(f"{path}: misses {name}")
        for name, item in value.items():
            if name in properties:
                conform(doc, properties[name], item, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                raise Nonconforming(f"{path}: unexpected field {name}")


# ----------------------------------------------------------------------------------------------
# The harness


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any
    content_type: str

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


_UNSET: Any = object()


@dataclass
class Harness:
    client: TestClient
    service: ScriptedService
    doc: dict[str, Any] = field(default_factory=lambda: json.loads(OPENAPI_PATH.read_text()))

    async def call(
        self,
        method: str,
        path: str,
        body: Any = _UNSET,
        *,
        token: str | None = "admin",
        key: str | None = None,
        fmt: str = "json",
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> Reply:
        """One request. ``fmt`` msgpack: body sent and answer asked as msgpack. ``data`` sends
        raw bytes. ``token`` names a token of TOKENS (None: no Authorization header)."""
        sent: dict[str, str] = {}
        if token is not None:
            sent["Authorization"] = f"Bearer {TOKENS.get(token, token)}"
        if key is not None:
            sent["Idempotency-Key"] = key
        if fmt == "msgpack":
            sent["Accept"] = "application/msgpack"
        if body is not _UNSET:
            if fmt == "msgpack":
                data = msgpack.packb(body, use_bin_type=True)
                sent["Content-Type"] = "application/msgpack"
            else:
                data = json.dumps(body).encode()
                sent["Content-Type"] = "application/json"
        if content_type is not None:
            sent["Content-Type"] = content_type
        sent.update(headers or {})
        response = await self.client.request(
            method, path, data=data, headers=sent, allow_redirects=False
        )
        raw = await response.read()
        ctype = response.headers.get("Content-Type", "")
        if "msgpack" in ctype:
            decoded: Any = msgpack.unpackb(raw, raw=False)
        elif "json" in ctype:
            decoded = json.loads(raw)
        else:
            decoded = raw.decode()
        reply = Reply(response.status, response.headers, decoded, ctype)
        self.check_documented(method, path, reply)
        if "msgpack" in sent.get("Accept", "") and path not in ("/metrics", "/openapi.json"):
            assert ctype == "application/msgpack", (path, ctype)
        return reply

    def check_documented(self, method: str, path: str, reply: Reply) -> None:
        """The reply's status is documented for the route, and its body matches the schema."""
        bare = path.split("?")[0]
        for template, item in self.doc["paths"].items():
            pattern = re.sub(r"\\\{[a-z]+\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, bare) and method.lower() in item:
                operation = item[method.lower()]
                break
        else:
            assert reply.status in (404, 405), f"{method} {path} is not documented"
            return
        responses = operation["responses"]
        assert str(reply.status) in responses, (
            f"{method} {path} answered {reply.status}, not documented: {reply.body}"
        )
        response = responses[str(reply.status)]
        if "$ref" in response:
            response = self.doc["components"]["responses"][response["$ref"].split("/")[-1]]
        content = response.get("content", {})
        media = reply.content_type.split(";")[0].strip()
        assert media in content or media == "text/plain", (media, list(content))
        if media in content and isinstance(reply.body, dict):
            conform(self.doc, content[media]["schema"], reply.body)


@pytest.fixture
def service() -> ScriptedService:
    return ScriptedService()


@pytest.fixture
def settings() -> ApiSettings:
    return ApiSettings(body_bytes_max=16_384, batch_ops_max=20, list_limit_max=50)


@pytest.fixture
def tokens() -> Tokens:
    return Tokens.from_entries(ENTRIES)


@pytest.fixture
async def api(
    service: ScriptedService, settings: ApiSettings, tokens: Tokens
) -> AsyncIterator[Harness]:
    app = make_app(service, settings, tokens)
    async with TestClient(TestServer(app)) as client:
        yield Harness(client, service)


@pytest.fixture
async def start_follower(
    settings: ApiSettings, tokens: Tokens
) -> AsyncIterator[Callable[[str], Awaitable[Harness]]]:
    """Start a second node, n2, in the same test, with its own app and client: every call of
    its service that needs the leader (submit, barrier, membership, snapshot) raises NotLeader
    naming ``leader_http``; its ledger is empty."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(leader_http: str) -> Harness:
            service = ScriptedService(node_id="n2")
            error = NotLeader("n2 follows n1", leader_http=leader_http)
            service.submit_error = service.barrier_error = service.membership_error = error
            client = TestClient(TestServer(make_app(service, settings, tokens)))
            await stack.enter_async_context(client)
            return Harness(client, service)

        yield start


@pytest.fixture
def seeded(service: ScriptedService) -> ScriptedService:
    """acme (root, USD, UTC, 100/day, 1000 total), acme:summer (20/day), globex (EUR)."""
    service.seed(
        [
            {"op": "put_campaign", "campaign_id": "acme", **ROOT},
            {
                "op": "put_campaign",
                "campaign_id": "acme:summer",
                "daily_budget_micros": 20_000_000,
            },
            {"op": "put_campaign", "campaign_id": "acme2", **ROOT},
            {"op": "put_campaign", "campaign_id": "globex", **ROOT, "currency": "EUR"},
        ]
    )
    return service


def reserve_body(campaign_id: str = "acme", amount_micros: int = 1_000_000) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "amount_micros": amount_micros,
        "ttl_ms": 30_000,
        "bidder_id": "fra-1",
    }


@pytest.fixture
def make_reservation(seeded: ScriptedService) -> Callable[..., int]:
    counter = iter(range(1, 1_000_000))

    def make(campaign_id: str = "acme", amount_micros: int = 1_000_000) -> int:
        [result] = seeded.seed(
            [
                {
                    "op": "reserve",
                    "idempotency_key": f"seed-{next(counter)}",
                    **reserve_body(campaign_id, amount_micros),
                }
            ]
        )
        return int(result["reservation_id"])

    return make


@pytest.fixture
def root() -> dict[str, Any]:
    """A valid PUT body for a root campaign."""
    return copy.deepcopy(ROOT)


@pytest.fixture(name="reserve_body")
def _reserve_body() -> Callable[..., dict[str, Any]]:
    return reserve_body


@pytest.fixture(params=["json", "msgpack"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)
