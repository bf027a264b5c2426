"""The load-generator processes of scripts/bench: each one an asyncio loop (uvloop when
importable) with its own aiohttp session, driving its share of a point's concurrency against
budgetd (HTTP/msgpack, or budget_client's wallets) or etcd (benchlib.etcd's recipe).

A process is started with the spawn method and answers commands sent over a pipe (`serve`): a
command is a dict with ``cmd`` and its fields, the answer a dict. Every loop stops at its
deadline and after a bounded number of ops; every request has a timeout. Talks to budgetd only
through its HTTP API and budget_client's public API.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final

import aiohttp
import msgpack

from benchlib.etcd import EtcdBudgets
from budget_client import AsyncClient, Wallet, WalletSettings

__all__ = ["AMOUNT_MICROS", "TTL_MS", "TTL_MS_FILL", "serve"]

MSGPACK: Final = "application/msgpack"
#: Every reserve asks this much; campaigns have budget for far more than any run takes.
AMOUNT_MICROS: Final = 1_000
#: Reservations of the sweep outlive any run, so none expires while the money is being counted.
TTL_MS: Final = 3_600_000
#: Reservations of the open-reservation pre-fill: the longest TTL the ledger accepts.
TTL_MS_FILL: Final = 86_400_000
#: Ops one coroutine sends in one point at most (the deadline normally comes first).
OPS_PER_WORKER_MAX: Final = 5_000_000
REQUEST_TIMEOUT_S: Final = 10.0
#: Concurrent requests of a set-up step (campaign creation, pre-fill) per process.
SETUP_CONCURRENCY: Final = 128
SETUP_TRIES_MAX: Final = 5
#: The mix workload's shares: reserve, commit (half of a reservation of this process, not
#: final), release (of another one); the rest of the ops.
MIX_RESERVE: Final = 0.70
MIX_COMMIT: Final = 0.25
#: Wallet bidders: share of bids won, and clearing price as a share of the bid price.
WIN_SHARE: Final = 0.2
CLEARING_RATIO: Final = 0.7
BID_TICK_S: Final = 0.01
#: One bid in this many has its try_hold + win/loss timed.
BID_SAMPLE_EVERY: Final = 16


def serve(conn: Connection, index: int) -> None:
    """The process's entry point: answer commands until ``exit`` (or the pipe closes)."""
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
        loop_name = "uvloop"
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
        loop_name = "asyncio"
    runner(_serve(conn, index, loop_name))


async def _serve(conn: Connection, index: int, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=2_048, limit_per_host=2_048)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        worker = _Worker(session, index, loop_name)
        while True:
            try:
                message: dict[str, Any] = await loop.run_in_executor(None, conn.recv)
            except EOFError:
                return
            command = message["cmd"]
            if command == "exit":
                conn.send({"ok": True})
                return
            try:
                answer = await getattr(worker, f"do_{command}")(message)
            except Exception as exc:
                answer = {"failed": f"{type(exc).__name__}: {exc}"}
            conn.send(answer)


@dataclass
class _Tally:
    """What one process saw in one point."""

    start_at: float
    end_at: float
    latencies_s: list[float] = field(default_factory=list)
    window_ops: int = 0
    window_requests: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    unknown: int = 0
    granted_micros: int = 0
    released_micros: int = 0
    committed_micros: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def done(self, started: float, finished: float, ops: int = 1) -> None:
        if self.start_at <= finished <= self.end_at:
            self.latencies_s.append(finished - started)
            self.window_ops += ops
            self.window_requests += 1

    def answer(self) -> dict[str, Any]:
        return {
            "latencies_s": self.latencies_s,
            "window_ops": self.window_ops,
            "window_requests": self.window_requests,
            "ops": dict(self.ops),
            "refused": dict(self.refused),
            "errors": dict(self.errors),
            "unknown": self.unknown,
            "granted_micros": self.granted_micros,
            "released_micros": self.released_micros,
            "committed_micros": self.committed_micros,
            **self.extra,
        }


def _decode(response_type: str, data: bytes) -> Any:
    if not data:
        return {}
    if "json" in response_type:
        return json.loads(data)
    return msgpack.unpackb(data)


class _Worker:
    def __init__(self, session: aiohttp.ClientSession, index: int, loop_name: str) -> None:
        self.session = session
        self.index = index
        self.loop_name = loop_name
        self.keys = itertools.count()

    # -- budgetd over HTTP ----------------------------------------------------------------------

    async def _call(
        self, message: dict[str, Any], method: str, path: str, body: Any, *, key: str | None
    ) -> tuple[int, Any]:
        status, answer, _retry_after_s = await self._call_for_retry(
            message, method, path, body, key=key
        )
        return status, answer

    async def _call_for_retry(
        self, message: dict[str, Any], method: str, path: str, body: Any, *, key: str | None
    ) -> tuple[int, Any, float | None]:
        """``(status, decoded answer, Retry-After in seconds if given)``."""
        headers = {
            "Authorization": f"Bearer {message['token']}",
            "Content-Type": MSGPACK,
            "Accept": MSGPACK,
        }
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.session.request(
            method, message["url"] + path, data=msgpack.packb(body), headers=headers
        ) as response:
            answer = _decode(response.content_type, await response.read())
            retry_after = response.headers.get("Retry-After", "")
            retry_after_s = float(retry_after) if retry_after.isdigit() else None
            return response.status, answer, retry_after_s

    def _key(self, message: dict[str, Any]) -> str:
        return f"{message['tag']}-{self.index}-{next(self.keys)}"

    async def _budgetd_op(
        self, tally: _Tally, message: dict[str, Any], path: str, body: Any, ops: int = 1
    ) -> dict[str, Any] | None:
        """One request: its answer when 2xx, None otherwise (tallied as a refusal, an unknown
        outcome or an error). Ops and latency count the requests the ledger decided (2xx, and
        409: refused by the ledger through the log); a 429 or 503 did nothing and is counted as
        refused only, after which this worker waits out its Retry-After (within the window), as
        budget_client does."""
        started = time.monotonic()
        try:
            status, answer, retry_after_s = await self._call_for_retry(
                message, "POST", path, body, key=self._key(message)
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
            tally.unknown += 1  # it may have been applied
            return None
        finished = time.monotonic()
        if 200 <= status < 300 or status == 409:
            tally.done(started, finished, ops)
        if 200 <= status < 300:
            return answer
        code = answer.get("code", str(status)) if isinstance(answer, dict) else str(status)
        if status in (409, 429, 503):
            tally.refused[code] += 1  # nothing written
            if status != 409 and retry_after_s:
                await asyncio.sleep(min(retry_after_s, max(0.0, tally.end_at - finished)))
        else:
            tally.errors[f"{status} {code}"] += 1
            if status >= 500:
                tally.unknown += 1
        return None

    async def do_put_campaigns(self, message: dict[str, Any]) -> dict[str, Any]:
        """PUT every (id, body) of ``campaigns``; retried on 503/504 and lost connections (a PUT
        is idempotent)."""
        queue = deque(message["campaigns"])

        async def put_one(campaign_id: str, body: dict[str, Any]) -> None:
            for _ in range(SETUP_TRIES_MAX):
                try:
                    status, answer = await self._call(
                        message, "PUT", f"/v1/campaigns/{campaign_id}", body, key=None
                    )
                except (aiohttp.ClientError, OSError, TimeoutError):
                    await asyncio.sleep(0.2)
                    continue
                if status in (200, 201):
                    return
                if status not in (503, 504):
                    raise RuntimeError(f"PUT {campaign_id} answered {status}: {answer}")
                await asyncio.sleep(0.2)
            raise RuntimeError(f"PUT {campaign_id}: no answer after {SETUP_TRIES_MAX} tries")

        async def loop() -> None:
            while queue:
                campaign_id, body = queue.popleft()
                await put_one(campaign_id, body)

        await asyncio.gather(*(loop() for _ in range(SETUP_CONCURRENCY)))
        return {"put": len(message["campaigns"])}

    async def do_prefill(self, message: dict[str, Any]) -> dict[str, Any]:
        """``count`` reserves of ``campaigns`` campaigns through /v1/batch, long TTL."""
        remaining = [message["count"]]
        tally = _Tally(0.0, 0.0)
        ops_per_request = message["batch_ops"]
        prefix, campaigns = message["campaign_prefix"], message["campaigns"]
        rng = random.Random(message["seed"])

        async def loop() -> None:
            while remaining[0] > 0:
                size = min(ops_per_request, remaining[0])
                remaining[0] -= size
                ops = [
                    _reserve_op(self._key(message), prefix, rng.randrange(campaigns), TTL_MS_FILL)
                    for _ in range(size)
                ]
                await self._batch(tally, message, ops)

        await asyncio.gather(*(loop() for _ in range(SETUP_CONCURRENCY // 4)))
        return tally.answer() | {"latencies_s": []}

    async def _batch(
        self,
        tally: _Tally,
        message: dict[str, Any],
        ops: list[dict[str, Any]],
        open_: deque[tuple[int, int]] | None = None,
    ) -> None:
        """One /v1/batch request; granted reservations go to ``open_`` when given."""
        answer = await self._budgetd_op(tally, message, "/v1/batch", {"ops": ops}, len(ops))
        if answer is None:
            return
        for op, result in zip(ops, answer["results"], strict=True):
            code = result.get("code", "ok")
            if code == "ok" and op["op"] == "reserve":
                tally.ops["reserve"] += 1
                tally.granted_micros += int(result["granted_micros"])
                if open_ is not None:
                    open_.append((int(result["reservation_id"]), int(result["granted_micros"])))
            elif code == "ok":
                tally.ops[op["op"]] += 1
                tally.released_micros += int(result["released_micros"])
            elif code == "outcome_unknown":
                tally.unknown += 1
                tally.errors[code] += 1
            else:
                tally.refused[code] += 1

    async def do_run(self, message: dict[str, Any]) -> dict[str, Any]:
        """One point: ``concurrency`` coroutines of ``workload`` until ``end_at``, counting what
        completes between ``start_at`` and ``end_at``."""
        tally = _Tally(message["start_at"], message["end_at"])
        workload = message["workload"]
        rng = random.Random(message["seed"])
        if workload == "wallet":
            await self._wallets(tally, message, rng)
        else:
            one = {
                "reserve": self._reserve,
                "mix": self._mix,
                "batch": self._batch_reserves,
                "batch-reserve": self._batch_reserves,
                "etcd_reserve": self._etcd_reserve,
            }[workload]
            state: dict[str, Any] = {"open": deque()}
            if workload == "etcd_reserve":
                state["budgets"] = EtcdBudgets(self.session, message["url"])

            async def loop() -> None:
                for _ in range(OPS_PER_WORKER_MAX):
                    if time.monotonic() >= tally.end_at:
                        return
                    await one(tally, message, rng, state)

            await asyncio.gather(*(loop() for _ in range(message["concurrency"])))
            if workload == "etcd_reserve":
                tally.extra["cas_conflicts"] = state["budgets"].cas_conflicts
        tally.extra["loop"] = self.loop_name
        return tally.answer()

    async def _reserve(
        self, tally: _Tally, message: dict[str, Any], rng: random.Random, state: dict[str, Any]
    ) -> None:
        body = _reserve_body(message["campaign_prefix"], rng.randrange(message["campaigns"]))
        answer = await self._budgetd_op(tally, message, "/v1/reservations", body)
        if answer is not None:
            tally.ops["reserve"] += 1
            tally.granted_micros += int(answer["granted_micros"])
            state["open"].append((int(answer["reservation_id"]), int(answer["granted_micros"])))

    async def _mix(
        self, tally: _Tally, message: dict[str, Any], rng: random.Random, state: dict[str, Any]
    ) -> None:
        pick = rng.random()
        open_: deque[tuple[int, int]] = state["open"]
        if pick < MIX_RESERVE or not open_:
            await self._reserve(tally, message, rng, state)
            return
        reservation_id, granted = open_.popleft()
        if pick < MIX_RESERVE + MIX_COMMIT:
            amount = max(1, granted // 2)
            path = f"/v1/reservations/{reservation_id}/commit"
            answer = await self._budgetd_op(tally, message, path, {"amount_micros": amount})
            if answer is not None:
                tally.ops["commit"] += 1
                tally.committed_micros += amount
        else:
            path = f"/v1/reservations/{reservation_id}/release"
            answer = await self._budgetd_op(tally, message, path, {})
            if answer is not None:
                tally.ops["release"] += 1
                tally.released_micros += int(answer["released_micros"])

    async def _batch_reserves(
        self, tally: _Tally, message: dict[str, Any], rng: random.Random, state: dict[str, Any]
    ) -> None:
        """One request of ``batch_ops`` ops: for ``batch``, releases of up to half of them
        (reservations this process took in earlier requests, so open reservations stay bounded)
        and reserves for the rest; for ``batch-reserve``, reserves only (they stay open)."""
        prefix, campaigns = message["campaign_prefix"], message["campaigns"]
        open_: deque[tuple[int, int]] = state["open"]
        size = message["batch_ops"]
        keep_open = message["workload"] == "batch-reserve"
        releases = 0 if keep_open else min(size // 2, len(open_))
        ops = [
            {"op": "release", "idempotency_key": self._key(message), "reservation_id": rid}
            for rid, _ in (open_.popleft() for _ in range(releases))
        ]
        ops += [
            _reserve_op(self._key(message), prefix, rng.randrange(campaigns), TTL_MS)
            for _ in range(size - releases)
        ]
        await self._batch(tally, message, ops, None if keep_open else open_)

    async def _etcd_reserve(
        self, tally: _Tally, message: dict[str, Any], rng: random.Random, state: dict[str, Any]
    ) -> None:
        campaign = f"{message['campaign_prefix']}:c{rng.randrange(message['campaigns'])}"
        started = time.monotonic()
        try:
            granted = await state["budgets"].reserve(campaign, self._key(message), AMOUNT_MICROS)
        except RuntimeError as exc:
            if "lost races" not in str(exc):
                tally.errors[str(exc)[:60]] += 1
                tally.unknown += 1
                return
            tally.refused["cas_lost_races"] += 1
            tally.done(started, time.monotonic())
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
            tally.unknown += 1
            return
        tally.done(started, time.monotonic())
        if granted:
            tally.ops["reserve"] += 1
            tally.granted_micros += AMOUNT_MICROS
        else:
            tally.refused["budget_exhausted"] += 1

    async def do_etcd_budgets(self, message: dict[str, Any]) -> dict[str, Any]:
        budgets = EtcdBudgets(self.session, message["url"])
        for campaign in message["campaigns"]:
            await budgets.put_budget(campaign, message["budget_micros"])
        return {"put": len(message["campaigns"])}

    async def do_etcd_audit(self, message: dict[str, Any]) -> dict[str, Any]:
        """What etcd says was taken: remaining budgets summed, and the reservation records."""
        budgets = EtcdBudgets(self.session, message["url"])
        remaining = 0
        for campaign in message["campaigns"]:
            remaining += (await budgets.remaining(campaign))[0]
        records, records_micros = await budgets.reserved_total()
        return {"remaining_micros": remaining, "records": records, "records_micros": records_micros}

    # -- budget_client wallets ------------------------------------------------------------------

    async def _wallets(self, tally: _Tally, message: dict[str, Any], rng: random.Random) -> None:
        """``concurrency`` bidders, each a Wallet on one campaign offered ``bid_rate_per_s`` bid
        requests a second (a bid request not served within its tick is dropped, as an exchange's
        deadline would), WIN_SHARE of held bids won at CLEARING_RATIO of the price."""
        client = AsyncClient(message["endpoints"], message["token"], key_prefix=message["tag"])
        prefix, campaigns = message["campaign_prefix"], message["campaigns"]
        wallets = [
            Wallet(
                client,
                f"{prefix}:c{(self.index * 7919 + i) % campaigns}",
                WalletSettings(bidder_id=f"{message['tag']}-{self.index}-{i}"),
            )
            for i in range(message["concurrency"])
        ]
        await asyncio.gather(*(wallet.start() for wallet in wallets))
        rate = float(message["bid_rate_per_s"])
        counts: Counter[str] = Counter()
        trips: dict[str, int] = {}

        async def bidder(wallet: Wallet, seed: int) -> None:
            local = random.Random(seed)
            last = time.monotonic()
            owed = 0.0
            sample = 0
            while (now := time.monotonic()) < tally.end_at:
                await asyncio.sleep(BID_TICK_S)
                now = time.monotonic()
                owed = min(owed + rate * (now - last), rate * BID_TICK_S * 4)
                last = now
                bids = int(owed)
                owed -= bids
                in_window = tally.start_at <= now <= tally.end_at
                for _ in range(bids):
                    price = local.randrange(500, 3_000)
                    sample += 1
                    timed = sample % BID_SAMPLE_EVERY == 0
                    began = time.perf_counter() if timed else 0.0
                    hold = wallet.try_hold(price)
                    if hold is None:
                        outcome = "no_bid"
                    elif local.random() < WIN_SHARE:
                        wallet.win(hold, int(price * CLEARING_RATIO))
                        outcome = "won"
                    else:
                        wallet.loss(hold)
                        outcome = "lost"
                    if in_window:
                        counts[outcome] += 1
                        if timed:
                            tally.latencies_s.append(time.perf_counter() - began)

        async def snapshot(at: float, name: str) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            trips[name] = sum(wallet.state().round_trips for wallet in wallets)

        await asyncio.gather(
            snapshot(tally.start_at, "start"),
            snapshot(tally.end_at, "end"),
            *(bidder(wallet, rng.randrange(2**32)) for wallet in wallets),
        )
        states = await asyncio.gather(*(wallet.close() for wallet in wallets))
        await client.close()
        bids = sum(counts.values())
        tally.window_ops = bids
        tally.window_requests = bids
        tally.committed_micros = sum(state.committed_micros for state in states)
        tally.extra["wallet"] = {
            "bids": bids,
            "bids_held": counts["won"] + counts["lost"],
            "wins": counts["won"],
            "no_bids": counts["no_bid"],
            "round_trips_in_window": trips.get("end", 0) - trips.get("start", 0),
            "round_trips": sum(state.round_trips for state in states),
            "committed_micros": tally.committed_micros,
            "spent_locally_micros": sum(state.spent_locally_micros for state in states),
            "pending_commits": sum(state.pending_commits for state in states),
            "failed_wins": sum(state.failed_wins for state in states),
            "modes": dict(Counter(state.mode for state in states)),
        }


def _reserve_body(prefix: str, campaign: int) -> dict[str, Any]:
    return {
        "campaign_id": f"{prefix}:c{campaign}",
        "amount_micros": AMOUNT_MICROS,
        "ttl_ms": TTL_MS,
        "bidder_id": f"bench-{campaign % 64}",
    }


def _reserve_op(key: str, prefix: str, campaign: int, ttl_ms: int) -> dict[str, Any]:
    return {
        "op": "reserve",
        "idempotency_key": key,
        **_reserve_body(prefix, campaign),
        "ttl_ms": ttl_ms,
    }
