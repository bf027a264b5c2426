"""Scripted stand-ins for the network and time: a transport that answers from a script or from a
tiny in-memory ledger, a clock moved by hand, a sleep that only moves that clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from budget_client import RawResponse, TransportError

MSGPACK = "application/msgpack"


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: Any


class Clock:
    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s
        self.slept_s: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        self.slept_s.append(delay_s)
        self.now_s += delay_s


def answer(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> RawResponse:
    all_headers = {"Content-Type": MSGPACK, **(headers or {})}
    raw = b"" if body is None else msgpack.packb(body)
    return RawResponse(status, all_headers, raw)


def problem(code: str, status: int, **extra: Any) -> RawResponse:
    retryable = code in ("unavailable", "outcome_unknown", "not_leader")
    body = {
        "type": f"urn:budgetd:problem:{code}",
        "title": code,
        "status": status,
        "code": code,
        "detail": f"scripted {code}",
        "retryable": retryable,
        **extra,
    }
    headers = {}
    if code == "not_leader":
        headers = {"Location": f"http://{extra['leader']}/x", "X-Budgetd-Leader": extra["leader"]}
    return answer(status, body, headers)


Step = RawResponse | TransportError | Callable[[Sent], RawResponse]


class ScriptedTransport:
    """Answers each request with the next step of ``script`` (or ``handler`` once it is empty)."""

    def __init__(
        self, script: list[Step] | None = None, handler: Callable[[Sent], RawResponse] | None = None
    ) -> None:
        self.script = list(script or [])
        self.handler = handler
        self.sent: list[Sent] = []
        self.fail: Callable[[Sent], TransportError | None] | None = None

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout_s: float,
    ) -> RawResponse:
        kind = headers.get("Content-Type", "")
        decoded = None
        if body:
            decoded = msgpack.unpackb(body) if kind == MSGPACK else json.loads(body)
        sent = Sent(method, url, dict(headers), decoded)
        self.sent.append(sent)
        if self.fail is not None:
            error = self.fail(sent)
            if error is not None:
                raise error
        if self.script:
            step = self.script.pop(0)
        else:
            assert self.handler is not None, f"unscripted request {sent}"
            step = self.handler
        if isinstance(step, TransportError):
            raise step
        if isinstance(step, RawResponse):
            return step
        return step(sent)

    async def close(self) -> None:
        pass


@dataclass
class Reservation:
    campaign_id: str
    granted_micros: int
    held_micros: int
    expires_at_ms: int
    state: str = "open"


@dataclass
class FakeLedger:
    """Just enough of the ledger's batch semantics (docs/ledger.md) to test the wallet: one
    campaign budget, reservations, commits (partial, late), releases, direct spend, and
    idempotency by key (replays return the original result)."""

    budget_micros: int
    now_ms: int = 1_000_000
    pass_through_ppm: int = 1_000_000
    spent_micros: int = 0
    held_micros: int = 0
    reservations: dict[int, Reservation] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)

    def handle(self, sent: Sent) -> RawResponse:
        assert sent.url.endswith("/v1/batch"), sent.url
        ops = sent.body["ops"]
        self.batches.append(ops)
        return answer(200, {"results": [self.apply(op) for op in ops]})

    def apply(self, op: dict[str, Any]) -> dict[str, Any]:
        key = op["idempotency_key"]
        if key in self.results:
            return {**self.results[key], "replayed": True}
        result = getattr(self, "_" + op["op"])(op)
        self.results[key] = result
        return result

    def _refusal(self, code: str) -> dict[str, Any]:
        return {
            "type": "urn:budgetd:problem:" + code,
            "title": code,
            "status": 409,
            "code": code,
            "detail": "",
            "retryable": False,
        }

    def _reserve(self, op: dict[str, Any]) -> dict[str, Any]:
        room = self.budget_micros - self.spent_micros - self.held_micros
        granted = min(op["amount_micros"], room)
        if granted < op.get("min_amount_micros", 1):
            return self._refusal("budget_exhausted")
        rid = len(self.reservations) + 1
        self.reservations[rid] = Reservation(
            op["campaign_id"], granted, granted, self.now_ms + op["ttl_ms"]
        )
        self.held_micros += granted
        return {
            "code": "ok",
            "reservation_id": rid,
            "granted_micros": granted,
            "expires_at_ms": self.now_ms + op["ttl_ms"],
            "pass_through_ppm": self.pass_through_ppm,
            "pass_through_rate": self.pass_through_ppm / 1e6,
            "replayed": False,
        }

    def _commit(self, op: dict[str, Any]) -> dict[str, Any]:
        r = self.reservations.get(op["reservation_id"])
        if r is None:
            return self._refusal("not_found")
        if r.state == "closed":
            return self._refusal("reservation_closed")
        within = min(r.held_micros, op["amount_micros"])
        r.held_micros -= within
        self.held_micros -= within
        self.spent_micros += op["amount_micros"]
        return {
            "code": "ok",
            "reservation_id": op["reservation_id"],
            "committed_micros": op["amount_micros"],
            "remaining_micros": r.held_micros,
            "late": False,
            "overspend_micros": 0,
            "replayed": False,
        }

    def _release(self, op: dict[str, Any]) -> dict[str, Any]:
        r = self.reservations[op["reservation_id"]]
        released = r.held_micros if r.state == "open" else 0
        self.held_micros -= released
        r.held_micros = 0
        r.state = "closed"
        return {
            "code": "ok",
            "reservation_id": op["reservation_id"],
            "released_micros": released,
            "replayed": False,
        }

    def _spend(self, op: dict[str, Any]) -> dict[str, Any]:
        self.spent_micros += op["amount_micros"]
        return {
            "code": "ok",
            "campaign_id": op["campaign_id"],
            "recorded_micros": op["amount_micros"],
            "overspend_micros": 0,
            "day": "2026-01-01",
            "replayed": False,
        }
