"""Bidder workers built on the project's client library ``budget_client`` (its blocking
``Client``): reservations with partial and final commits and releases, direct spends and strong
reads on a small campaign tree whose daily caps run out during a run. Each worker thread enters
the control namespace first, so the client's own loop thread and sockets live there too. Every
call is one op in the History, recorded as the raw-HTTP workload records it. Imports no budgetd
module (budget_client never does either).

budget_client's outcomes map to the history's: a typed result is ok; ``Refused`` (definite)
is fail; ``Unavailable`` (no attempt can have been applied) is fail; ``OutcomeUnknown`` and
anything unexpected after sending is info, and retires the worker's process. An op's ``node``
is the leader the client knew when it was invoked (None before it learnt one): the client
picks and follows nodes itself.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Final
from urllib.parse import quote

from budget_client import (
    BudgetError,
    Client,
    Committed,
    Granted,
    OutcomeUnknown,
    Refused,
    Released,
    RetryPolicy,
    Spent,
    Unavailable,
)
from jepsen_lite.history import History, Op
from jepsen_lite.http import enter_namespace
from jepsen_lite.sandbox import Sandbox
from jepsen_lite.workload import READ_FIELDS

__all__ = ["BIDDERS_MAX", "BIDDER_CAMPAIGNS", "BIDDER_LEAVES", "BIDDER_ROOT", "Bidders"]

BIDDERS_MAX: Final = 8
BIDDER_ROOT: Final = "jlb"
BIDDER_LEAVES: Final = ("jlb:x", "jlb:y", "jlb:z")
BIDDER_CAMPAIGNS: Final = (BIDDER_ROOT, *BIDDER_LEAVES)
#: Daily caps: x runs out within seconds, y within minutes (the ledger then refuses reserves
#: with ``budget_exhausted``; direct spends go on and are reported as overspend); z never, so
#: reservations keep going through their whole life until the end of a long run.
LEAF_DAILY_MICROS: Final = (40_000_000, 400_000_000, 10**12)
RESERVATION_TTL_MS: Final = 300_000
#: One call's bounds: short, so a fault shows as fail/info rather than a stalled worker.
RETRY: Final = RetryPolicy(attempts_max=3, deadline_s=4.0, attempt_timeout_s=2.0)
SETUP_S: Final = 30.0
#: Share of a bidder's steps that are strong reads, direct spends; the rest reservations.
READ_SHARE: Final = 0.15
SPEND_SHARE: Final = 0.2


def _tree() -> list[tuple[str, dict[str, Any]]]:
    common = {"total_budget_micros": 10**15, "pacing": {"mode": "asap"}, "status": "active"}
    root = {"currency": "USD", "timezone": "UTC", "daily_budget_micros": 10**13, **common}
    tree = [(BIDDER_ROOT, root)]
    for leaf, cap in zip(BIDDER_LEAVES, LEAF_DAILY_MICROS, strict=True):
        tree.append((leaf, {"daily_budget_micros": cap, **common}))
    return tree


class Bidders:
    """``bidders`` threads, each with its own ``budget_client.Client`` on every node, doing
    bidder steps until ``duration_s`` has passed (or ``stop``)."""

    def __init__(
        self,
        sandbox: Sandbox,
        history: History,
        *,
        bidders: int = 2,
        duration_s: float = 20.0,
        pause_s: float = 0.05,
        seed: int = 0,
    ) -> None:
        if not 0 <= bidders <= BIDDERS_MAX:
            raise ValueError(f"bidders must be in 0..{BIDDERS_MAX}, got {bidders}")
        self.sandbox = sandbox
        self.history = history
        self.bidders = bidders
        self.duration_s = duration_s
        self.pause_s = pause_s
        self.seed = seed
        self.endpoints = [node.http_address for node in sandbox.nodes]
        self._node_of_url = {node.url: node.node_id for node in sandbox.nodes}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    # Life cycle ---------------------------------------------------------------------------------

    def _in_namespace(self, name: str, body: Callable[[], None]) -> threading.Thread:
        def target() -> None:
            try:
                enter_namespace(self.sandbox.control)
                body()
            except Exception as error:  # a worker's death is reported, never silent
                self.errors.append(f"{name}: {type(error).__name__}: {error}")

        return threading.Thread(target=target, name=name, daemon=True)

    def setup(self) -> None:
        """Create the bidders' campaign tree (with budget_client, retrying); raises if it
        cannot within SETUP_S."""
        if not self.bidders:
            return
        thread = self._in_namespace("jl-bidder-setup", self._setup)
        thread.start()
        thread.join()
        if self.errors:
            raise RuntimeError("bidder setup failed: " + "; ".join(self.errors))

    def _setup(self) -> None:
        deadline = time.monotonic() + SETUP_S
        with Client(self.endpoints, self.sandbox.token, retry=RETRY) as client:
            for campaign_id, settings in _tree():
                while True:
                    try:
                        client.put_campaign(
                            campaign_id, settings, idempotency_key=f"setup-{campaign_id}"
                        )
                        break
                    except BudgetError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)

    def start(self) -> None:
        for index in range(self.bidders):
            thread = self._in_namespace(f"jl-bidder-{index}", self._worker_body(index))
            self._threads.append(thread)
            thread.start()

    def node_of(self, url: str | None) -> str | None:
        """The node id of a leader URL the client learnt (None: not known yet)."""
        return None if url is None else self._node_of_url.get(url.rstrip("/"))

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def close(self) -> None:
        self.stop()

    # One bidder ---------------------------------------------------------------------------------

    def _worker_body(self, index: int) -> Callable[[], None]:
        def body() -> None:
            with Client(
                self.endpoints, self.sandbox.token, retry=RETRY, key_prefix=f"b{index}"
            ) as client:
                _Bidder(self, client, index).run()

        return body


class _Bidder:
    def __init__(self, owner: Bidders, client: Client, index: int) -> None:
        self.owner = owner
        self.client = client
        self.index = index
        self.rng = random.Random(owner.seed * 1000 + 500 + index)
        self.generation = 0
        self.serial = 0
        self.bidder_id = f"jlb-{index}"

    @property
    def process(self) -> str:
        return f"b{self.index}" if not self.generation else f"b{self.index}.{self.generation}"

    def _key(self, suffix: str = "") -> str:
        return f"b{self.index}-{self.serial}{suffix}"

    def run(self) -> None:
        owner = self.owner
        deadline = time.monotonic() + owner.duration_s
        while not owner._stop.is_set() and time.monotonic() < deadline:
            self.serial += 1
            dice = self.rng.random()
            leaf = self.rng.choice(BIDDER_LEAVES)
            if dice < READ_SHARE:
                self.read(self.rng.choice(BIDDER_CAMPAIGNS))
            elif dice < READ_SHARE + SPEND_SHARE:
                self.spend(leaf, 1000 * self.rng.randint(1, 999))
            else:
                self.lifecycle(leaf)
            owner._stop.wait(owner.pause_s)

    # Ops ----------------------------------------------------------------------------------------

    def _call(
        self, f: str, value: dict[str, Any], call: Callable[[], Any], *, write: bool = True
    ) -> tuple[Op, Any]:
        """Invoke, call, complete: ok with the result, fail on a definite refusal (or, for a
        read, on any error), info when it may have been applied."""
        node = self.owner.node_of(self.client.leader)
        invoked = self.owner.history.invoke(self.process, f, value, node=node)
        try:
            got = call()
        except Refused as refused:
            completion = {"status": refused.status, "code": refused.code}
            return self.owner.history.complete(
                invoked, "fail", completion, error=refused.code
            ), None
        except Unavailable as unavailable:
            return self.owner.history.complete(
                invoked, "fail", {"status": None}, error=f"unavailable: {unavailable.detail}"
            ), None
        except (OutcomeUnknown, Exception) as unknown:
            if not write:
                return self.owner.history.complete(
                    invoked, "fail", {"status": None}, error=f"{type(unknown).__name__}"
                ), None
            detail = unknown.detail if isinstance(unknown, OutcomeUnknown) else repr(unknown)
            done = self.owner.history.complete(
                invoked, "info", {"status": None}, error=f"unknown: {detail}"[:300]
            )
            self.generation += 1  # an info retires the process (Jepsen's rule)
            return done, None
        return self.owner.history.complete(invoked, "ok", _result_value(got)), got

    def read(self, campaign_id: str) -> None:
        def call() -> dict[str, Any]:
            return dict(self.client.get_campaign(campaign_id, consistency="strong"))

        node = self.owner.node_of(self.client.leader)
        invoked = self.owner.history.invoke(
            self.process, "read", {"campaign_id": campaign_id}, node=node
        )
        try:
            body = call()
        except BudgetError as error:
            code = error.code if isinstance(error, Refused) else type(error).__name__
            self.owner.history.complete(invoked, "fail", {"status": None}, error=code)
            return
        fields = {name: body.get(name) for name in READ_FIELDS}
        self.owner.history.complete(invoked, "ok", {"status": 200, **fields})

    def spend(self, campaign_id: str, amount: int) -> None:
        key = self._key("-s")
        body = {"amount_micros": amount, "bidder_id": self.bidder_id}
        path = f"/v1/campaigns/{quote(campaign_id, safe=':')}/spend"
        value = {
            "campaign_id": campaign_id,
            "amount_micros": amount,
            "key": key,
            "request": {"method": "POST", "path": path, "body": body},
        }
        self._call(
            "spend",
            value,
            lambda: self.client.record_spend(
                campaign_id, amount, bidder_id=self.bidder_id, idempotency_key=key
            ),
        )

    def lifecycle(self, campaign_id: str) -> None:
        """Reserve; then one of: commit all (final), partial commits then a final one,
        partial commits then release, release at once. Stops at the first op that is not ok
        (the reservation's state is then unknown to this bidder, or it is closed)."""
        amount = 1000 * self.rng.randint(100, 3000)
        key = self._key("-r")
        body = {
            "campaign_id": campaign_id,
            "amount_micros": amount,
            "ttl_ms": RESERVATION_TTL_MS,
            "bidder_id": self.bidder_id,
        }
        value = {
            "campaign_id": campaign_id,
            "amount_micros": amount,
            "key": key,
            "request": {"method": "POST", "path": "/v1/reservations", "body": body},
        }
        _, granted = self._call(
            "reserve",
            value,
            lambda: self.client.reserve(
                campaign_id,
                amount,
                ttl_ms=RESERVATION_TTL_MS,
                bidder_id=self.bidder_id,
                idempotency_key=key,
            ),
        )
        if not isinstance(granted, Granted):
            return
        rid = granted.reservation_id
        remaining = granted.granted_micros
        plan = self.rng.choice(("final", "partial-final", "partial-release", "release"))
        partials = self.rng.randint(1, 2) if plan.startswith("partial") else 0
        for step in range(partials):
            part = (remaining // 1000) * 1000 * self.rng.randint(1, 4) // 10
            if part <= 0:
                break
            if not self.commit(campaign_id, rid=rid, amount=part, final=False, suffix=f"-c{step}"):
                return
            remaining -= part
        if plan.endswith("release") or remaining < 1000:
            self.release(campaign_id, rid)
        else:
            use = self.rng.randint(1, remaining // 1000) * 1000
            self.commit(campaign_id, rid=rid, amount=use, final=True, suffix="-cf")

    def commit(self, campaign_id: str, *, rid: int, amount: int, final: bool, suffix: str) -> bool:
        key = self._key(suffix)
        body: dict[str, Any] = {"amount_micros": amount}
        if final:
            body["final"] = True
        value = {
            "campaign_id": campaign_id,
            "reservation_id": rid,
            "amount_micros": amount,
            "final": final,
            "key": key,
            "request": {"method": "POST", "path": f"/v1/reservations/{rid}/commit", "body": body},
        }
        done, _ = self._call(
            "commit",
            value,
            lambda: self.client.commit(rid, amount, final=final, idempotency_key=key),
        )
        return done.type == "ok"

    def release(self, campaign_id: str, rid: int) -> None:
        key = self._key("-rel")
        value = {
            "campaign_id": campaign_id,
            "reservation_id": rid,
            "amount_micros": 0,
            "key": key,
            "request": {"method": "POST", "path": f"/v1/reservations/{rid}/release", "body": {}},
        }
        self._call("release", value, lambda: self.client.release(rid, idempotency_key=key))


#: Fields the client adds to a typed result that the server's answer need not carry.
_CLIENT_FIELDS: Final = {"commit": ("reservation_id",), "release": ("reservation_id",)}


def _result_value(got: Any) -> dict[str, Any]:
    """The completion value of an ok call: status, the result's fields, and ``result`` (the
    answer's fields as the server sent them, for the exactly-once comparison)."""
    if not isinstance(got, Granted | Committed | Released | Spent):
        return {"status": 200}
    fields = asdict(got)
    kind = {Granted: "reserve", Committed: "commit", Released: "release", Spent: "spend"}[type(got)]
    result = {k: v for k, v in fields.items() if k not in _CLIENT_FIELDS.get(kind, ())}
    if kind == "spend":
        result.pop("campaign_id", None)
    value: dict[str, Any] = {"status": 200, "result": result, "replayed": got.replayed}
    for name in ("reservation_id", "granted_micros", "committed_micros", "released_micros"):
        if name in fields:
            value[name] = fields[name]
    return value
