"""The wallet: one campaign's budget slices held by one bidder, spent locally without I/O.

Owns the local arithmetic (slices, holds, wins), refill sizing, the batching of wins into
commits, release on close and the spool. Talks to the cluster only through AsyncClient.batch.
Imports the stdlib and this package only; never budgetd.

Money on the wallet's side of a slice: ``granted = available + open holds + won`` where ``won``
is committed or pending. ``try_hold`` moves price from available to a hold; ``win`` moves the
clearing price to won and the rest back to available; ``loss`` (or the hold timeout) moves all of
it back. Nothing is ever taken from a slice past its stop time (WalletSettings.expiry_margin_ms),
so with the cluster unreachable a wallet spends at most what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random as _random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ._client import AsyncClient, RetryPolicy
from ._errors import ClientClosed, OutcomeUnknown, Refused
from ._results import Committed, Granted, Spent
from ._spool import Spool

__all__ = ["Hold", "Wallet", "WalletSettings", "WalletState"]

log = logging.getLogger("budget_client.wallet")

#: Refusals of a commit after which the win is recorded as direct spend instead (docs/ledger.md:
#: "A commit on a released or finally committed reservation is refused with reservation_closed;
#: the caller records it as direct spend instead"; not_found: the reservation was pruned).
_FALL_BACK_TO_SPEND: Final = frozenset({"reservation_closed", "not_found"})
#: Refusals of a reserve that mean "no money now": wait refuse_backoff_ms before asking again.
_NO_MONEY: Final = frozenset(
    {"budget_exhausted", "pacing_limited", "campaign_inactive", "outside_flight", "limit_reached"}
)
_KEY_BASE_MAX: Final = 100
_RATE_SAMPLES_MAX: Final = 4096

_OPEN: Final = 0
_WON: Final = 1
_RETURNED: Final = 2
_TIMED_OUT: Final = 3


@dataclass(frozen=True, slots=True)
class WalletSettings:
    """Every knob of a wallet, with its bound; units last in each name."""

    bidder_id: str
    #: Lifetime asked for each slice.
    ttl_ms: int = 30_000
    #: Stop spending a slice this long before its expiry, counted on this process's monotonic
    #: clock from the moment its reserve request was first sent (never later than the grant's
    #: arrival). Covers clock-rate differences, ledger time running ahead, and the last flush.
    expiry_margin_ms: int = 3_000
    #: A slice is sized to about this much of the recent spend rate (plus what is on hold) ...
    refill_horizon_s: float = 10.0
    #: ... within these bounds; the first slice is slice_min_micros.
    slice_min_micros: int = 1_000_000
    slice_max_micros: int = 1_000_000_000
    #: Refill when the available money falls below this share of the target size, or when the
    #: newest slice has less than this share of its usable lifetime left.
    low_water_ratio: float = 0.5
    #: Live slices at most (a refill waits while this many are live).
    slices_max: int = 4
    #: The spend rate is measured over this window.
    rate_window_s: float = 10.0
    #: A hold with no win or loss after this long is given back (a later win becomes spend).
    hold_timeout_ms: int = 2_000
    #: The background task's tick: every flush_interval_ms it gives back timed-out holds, turns
    #: new wins into ops (written to the spool, if any) and asks for a refill when due ...
    flush_interval_ms: int = 50
    #: ... and sends the waiting wins once the oldest has waited send_interval_ms, or at once
    #: when flush_wins_max wait or a refill or release goes anyway (one round trip carries all).
    #: A win's money is already held in its slice, so waiting spends nothing twice; it keeps
    #: the round trips of a wallet near 1000 / send_interval_ms per second.
    send_interval_ms: int = 250
    flush_wins_max: int = 500
    #: Ops per /v1/batch request (the server's api.batch_ops_max is 1000 by default).
    batch_ops_max: int = 1000
    #: Wins waiting for their commit at most; past it try_hold refuses (stop bidding).
    pending_wins_max: int = 100_000
    #: After a reserve refused for money (budget_exhausted, pacing_limited, ...), wait this long.
    refuse_backoff_ms: int = 1_000
    #: Apply the campaign's pass_through_rate in try_hold.
    apply_pass_through: bool = True
    #: One background round trip gives up after this long (then the next tick retries it).
    sync_deadline_s: float = 2.0
    #: Optional spool file of wins not yet committed (see budget_client._spool), fsynced per
    #: flush unless spool_fsync is False.
    spool_path: str | None = None
    spool_fsync: bool = True
    #: close() waits at most this long for open holds to end before giving them back.
    close_drain_s: float = 2.0

    def __post_init__(self) -> None:
        assert 1 <= len(self.bidder_id) <= 128, "bidder_id is 1-128 characters"
        assert self.ttl_ms > self.expiry_margin_ms >= 0, "ttl_ms must exceed expiry_margin_ms"
        assert 1 <= self.slice_min_micros <= self.slice_max_micros
        assert 0 < self.low_water_ratio <= 1
        assert 1 <= self.slices_max <= 64
        assert 1 <= self.flush_wins_max <= self.pending_wins_max
        assert 1 <= self.batch_ops_max <= 1000
        assert self.flush_interval_ms >= 1 and self.hold_timeout_ms >= 1
        assert self.send_interval_ms >= 0


@dataclass(frozen=True, slots=True)
class WalletState:
    """What a wallet reports. ``mode``: starting, online (the last round trip succeeded),
    offline (it failed: spending only what is held), closing, closed."""

    mode: str
    held_micros: int  #: held from the ledger and not spent: available + on hold
    available_micros: int  #: may still be taken by try_hold (live slices only)
    on_hold_micros: int  #: in open holds
    spent_locally_micros: int  #: won since start
    pending_commits: int  #: wins not yet acknowledged by the cluster
    pending_micros: int
    committed_micros: int  #: wins acknowledged (commit or direct spend)
    failed_wins: int  #: wins the cluster refused for good (bad request, reused key)
    slices: int  #: live slices
    pass_through_rate: float
    last_sync_s: float | None  #: monotonic time of the last successful round trip
    round_trips: int  #: /v1/batch requests sent


class _Slice:
    __slots__ = (
        "available_micros",
        "expires_at_ms",
        "granted_micros",
        "holds_open",
        "released",
        "reservation_id",
        "stop_s",
        "won_count",
        "won_micros",
    )

    def __init__(self, grant: Granted, stop_s: float) -> None:
        self.reservation_id = grant.reservation_id
        self.granted_micros = grant.granted_micros
        self.available_micros = grant.granted_micros
        self.expires_at_ms = grant.expires_at_ms
        self.stop_s = stop_s
        self.holds_open = 0
        self.released = False
        #: Wins without a billing id against this slice since the last round of upkeep: they
        #: become one commit (the hot path adds to these instead of queueing each win).
        self.won_count = 0
        self.won_micros = 0


class Hold:
    """Money set aside for one bid: end it with Wallet.win or Wallet.loss."""

    __slots__ = ("amount_micros", "created_s", "slice", "state")

    def __init__(self, slice_: _Slice, amount_micros: int, created_s: float) -> None:
        self.slice = slice_
        self.amount_micros = amount_micros
        self.created_s = created_s
        self.state = _OPEN

    @property
    def is_open(self) -> bool:
        return self.state == _OPEN

    @property
    def reservation_id(self) -> int:
        return self.slice.reservation_id


def _key_base(billing_id: str) -> str:
    if len(billing_id) <= _KEY_BASE_MAX and billing_id.isascii() and billing_id.isprintable():
        return billing_id
    return hashlib.sha256(billing_id.encode()).hexdigest()


class Wallet:
    """One campaign's budget for one bidder. Create, ``await start()``, then call try_hold / win
    / loss from the event loop's thread (they do no I/O and never await); ``await close()``."""

    def __init__(
        self,
        client: AsyncClient,
        campaign_id: str,
        settings: WalletSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._client = client
        self.campaign_id = campaign_id
        self.settings = settings
        self._clock = clock
        self._random = random
        self._key_prefix = f"{settings.bidder_id[:40]}.{secrets.token_hex(5)}"
        self._seq = 0
        self._slices: list[_Slice] = []
        self._slice: _Slice | None = None  # where try_hold looks first
        self._holds: deque[Hold] = deque()
        self._rate = 1.0
        #: Wins with no op yet: (reservation id, None for direct spend; amount; billing id; the
        #: slice's granted micros). Plain values only, so the collector can stop tracking them.
        #: Wins without a billing id are counted on their slice instead, while its sum fits in
        #: granted_micros (wins above their hold can overflow it).
        self._wins: list[tuple[int | None, int, str | None, int]] = []
        self._won_slices: list[_Slice] = []  # slices with won_count > 0
        self._anonymous_wins = 0  # the sum of their won_count
        self._backlog: dict[str, dict[str, Any]] = {}  # ops to send, by idempotency key
        self._backlog_since_s: float | None = None  # when the oldest unsent win op was made
        #: Wins carried by each backlog op that carries more than one (merged anonymous wins).
        self._op_wins: dict[str, int] = {}
        self._won_total_micros = 0
        self._committed_micros = 0
        self._failed_wins = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=_RATE_SAMPLES_MAX)
        self._refill: tuple[dict[str, Any], float] | None = None  # reserve op, first sent at
        self._refill_blocked_until_s = 0.0
        self._mode = "starting"
        self._last_sync_s: float | None = None
        self._round_trips = 0
        self._spool = (
            Spool(settings.spool_path, fsync=settings.spool_fsync) if settings.spool_path else None
        )
        self._policy = RetryPolicy(
            attempts_max=4,
            backoff_base_s=0.02,
            backoff_max_s=0.2,
            deadline_s=settings.sync_deadline_s,
            attempt_timeout_s=settings.sync_deadline_s,
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()

    # -- the hot path: no I/O, no awaits --------------------------------------------------------

    def try_hold(self, price_micros: int) -> Hold | None:
        """A hold of ``price_micros`` if this bid may go out, else None: the pass-through draw
        failed, or no live slice has the money (and none will until a refill arrives)."""
        rate = self._rate
        if rate < 1.0 and self._random() >= rate:
            return None
        now = self._clock()
        s = self._slice
        if s is not None and s.available_micros >= price_micros and now < s.stop_s:
            s.available_micros -= price_micros
            s.holds_open += 1
            hold = Hold(s, price_micros, now)
            self._holds.append(hold)
            return hold
        return self._try_hold_other(price_micros, now)

    def _try_hold_other(self, price_micros: int, now: float) -> Hold | None:
        if self._mode in ("closing", "closed") or price_micros <= 0:
            return None
        pending = len(self._wins) + self._anonymous_wins + len(self._backlog)
        if pending >= self.settings.pending_wins_max:
            return None
        for s in self._slices:
            if not s.released and now < s.stop_s and s.available_micros >= price_micros:
                self._slice = s
                s.available_micros -= price_micros
                s.holds_open += 1
                hold = Hold(s, price_micros, now)
                self._holds.append(hold)
                return hold
        if self._refill is None:
            self._wake.set()  # nothing fits: ask for a refill now
        return None

    def win(self, hold: Hold, clearing_price_micros: int, *, billing_id: str | None = None) -> None:
        """The bid won at ``clearing_price_micros``: that becomes spend (committed in the next
        flush), the rest of the hold goes back. ``billing_id`` (e.g. OpenRTB's) makes the
        commit idempotent across retries, repeated notices and restarts. A hold that timed out
        is recorded as direct spend. A second win of the same hold is ignored."""
        if self._mode == "closed":
            raise ClientClosed("the wallet is closed: record this win with record_late")
        state = hold.state
        if state == _OPEN:
            hold.state = _WON
            s = hold.slice
            s.holds_open -= 1
            if clearing_price_micros < hold.amount_micros:
                s.available_micros += hold.amount_micros - clearing_price_micros
            if billing_id is None and s.won_micros + clearing_price_micros <= s.granted_micros:
                if not s.won_count:
                    self._won_slices.append(s)
                s.won_count += 1
                s.won_micros += clearing_price_micros
                self._anonymous_wins += 1
            else:
                self._wins.append(
                    (s.reservation_id, clearing_price_micros, billing_id, s.granted_micros)
                )
        elif state == _WON:
            return
        else:  # given back already (timeout or loss): its money may be spent again elsewhere
            hold.state = _WON
            self._wins.append((None, clearing_price_micros, billing_id, 0))
        self._won_total_micros += clearing_price_micros
        if len(self._wins) + self._anonymous_wins >= self.settings.flush_wins_max:
            self._wake.set()

    def loss(self, hold: Hold) -> None:
        """The bid lost (or was not sent): the whole hold goes back to its slice."""
        if hold.state == _OPEN:
            hold.state = _RETURNED
            s = hold.slice
            s.holds_open -= 1
            s.available_micros += hold.amount_micros

    # -- background ------------------------------------------------------------------------------

    async def start(self, *, background: bool = True) -> None:
        """Replay the spool, take the first slice (if the cluster answers), and start the
        background task (refill, flush, hold timeouts). ``background=False``: the caller drives
        ``sync()`` itself (tests, benchmarks)."""
        if self._spool is not None:
            for op in self._spool.open():
                self._backlog[str(op["idempotency_key"])] = op
        await self.sync()
        if background:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        interval_s = self.settings.flush_interval_ms / 1000
        while self._mode not in ("closing", "closed"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval_s)
            self._wake.clear()
            if self._mode in ("closing", "closed"):
                break
            await self._tick()

    async def _tick(self) -> None:
        """What the background task does every flush_interval_ms."""
        async with self._sync_lock:
            await self._sync_once(refill=self._mode not in ("closing", "closed"), hold_wins=True)

    async def sync(self) -> None:
        """One round of upkeep: give back timed-out holds, retire dead slices, and send the
        wins, a refill if due and releases of spent slices in /v1/batch requests."""
        async with self._sync_lock:
            await self._sync_once(refill=self._mode not in ("closing", "closed"))

    async def _sync_once(
        self, *, refill: bool, release_all: bool = False, hold_wins: bool = False
    ) -> None:
        """``hold_wins``: keep the wins back (spooled) unless send_interval_ms has passed since
        the oldest was taken, flush_wins_max wait, or a refill or release is sent anyway."""
        now = self._clock()
        self._sweep(now)
        self._sample(now)
        self._take_wins()
        if self._backlog_since_s is None and self._backlog:
            self._backlog_since_s = now
        ops = list(self._backlog.values())
        reserve_op: dict[str, Any] | None = None
        if refill and self._refill is None and self._wants_refill(now):
            target = self._target_micros(now)
            reserve_op = {
                "op": "reserve",
                "idempotency_key": self._new_key("r"),
                "campaign_id": self.campaign_id,
                "amount_micros": target,
                "ttl_ms": self.settings.ttl_ms,
                "bidder_id": self.settings.bidder_id,
            }
            self._refill = (reserve_op, now)
        elif refill and self._refill is not None:
            reserve_op = self._refill[0]
        releases = self._releases(now, release_all=release_all)
        if (
            hold_wins
            and ops
            and reserve_op is None
            and not releases
            and len(ops) < self.settings.flush_wins_max
            and self._backlog_since_s is not None
            and now - self._backlog_since_s < self.settings.send_interval_ms / 1000
        ):
            ops = []  # not yet: they wait in the backlog (and the spool)
        all_ops = ops + ([reserve_op] if reserve_op else []) + releases
        if not all_ops:
            self._mode_ok(now)
            return
        limit = self.settings.batch_ops_max
        for start in range(0, len(all_ops), limit):
            chunk = all_ops[start : start + limit]
            sent_at = self._clock()
            try:
                self._round_trips += 1
                results = await self._client.batch(chunk, retry=self._policy)
            except OutcomeUnknown as error:
                log.info("wallet %s: cluster not reached: %s", self.campaign_id, error)
                if self._mode in ("starting", "online"):
                    self._mode = "offline"
                return
            done: list[str] = []
            for op, result in zip(chunk, results, strict=True):
                if self._settle(op, result, sent_at):
                    done.append(str(op["idempotency_key"]))
            if self._spool is not None and done:
                self._spool.done(done)
        self._backlog_since_s = now if self._backlog else None
        self._mode_ok(self._clock())

    def _mode_ok(self, now: float) -> None:
        self._last_sync_s = now
        if self._mode in ("starting", "offline"):
            self._mode = "online"

    def _settle(self, op: dict[str, Any], result: object, sent_at: float) -> bool:
        """Act on one op's answer; True when it was a win's op, now answered for good."""
        kind = op["op"]
        if isinstance(result, OutcomeUnknown):
            return False  # stays where it is: the same key next round
        if kind == "reserve":
            assert self._refill is not None and self._refill[0] is op
            first_sent_s = self._refill[1]
            self._refill = None
            if isinstance(result, Granted):
                self._add_slice(result, first_sent_s)
            elif isinstance(result, Refused):
                if result.code in _NO_MONEY:
                    self._refill_blocked_until_s = sent_at + self.settings.refuse_backoff_ms / 1000
                else:
                    log.warning("wallet %s: reserve refused: %s", self.campaign_id, result)
                    self._refill_blocked_until_s = sent_at + self.settings.refuse_backoff_ms / 1000
            return False
        if kind == "release":
            for s in self._slices:
                if s.reservation_id == op["reservation_id"]:
                    s.released = True
            self._slices = [s for s in self._slices if not s.released]
            return False
        # a win (or several merged): commit or spend
        key = op["idempotency_key"]
        del self._backlog[key]
        wins = self._op_wins.pop(key, 1) if self._op_wins else 1
        if type(result) is Committed or type(result) is Spent:
            self._committed_micros += op["amount_micros"]
        elif (
            isinstance(result, Refused) and kind == "commit" and result.code in _FALL_BACK_TO_SPEND
        ):
            spend = self._spend_op(key[2:], int(op["amount_micros"]))
            spend_key = str(spend["idempotency_key"])
            self._backlog[spend_key] = spend
            if wins > 1:
                self._op_wins[spend_key] = wins
            if self._spool is not None:
                self._spool.written([spend])
        else:
            self._failed_wins += wins
            log.error("wallet %s: win refused for good: %s %s", self.campaign_id, op, result)
        return True

    def _add_slice(self, grant: Granted, first_sent_s: float) -> None:
        lifetime_s = (self.settings.ttl_ms - self.settings.expiry_margin_ms) / 1000
        s = _Slice(grant, first_sent_s + lifetime_s)
        self._rate = grant.pass_through_ppm / 1_000_000 if self.settings.apply_pass_through else 1.0
        if any(x.reservation_id == s.reservation_id for x in self._slices):
            return  # a replayed grant already held
        self._slices.append(s)
        if self._slice is None or self._slice.available_micros <= 0:
            self._slice = s

    @staticmethod
    def _commit_op(base: str, reservation_id: int, amount_micros: int) -> dict[str, Any]:
        return {
            "op": "commit",
            "idempotency_key": "w:" + base,
            "reservation_id": reservation_id,
            "amount_micros": amount_micros,
        }

    def _spend_op(self, base: str, amount_micros: int) -> dict[str, Any]:
        return {
            "op": "spend",
            "idempotency_key": "s:" + base,
            "campaign_id": self.campaign_id,
            "amount_micros": amount_micros,
            "bidder_id": self.settings.bidder_id,
        }

    def _new_key(self, kind: str) -> str:
        self._seq += 1
        return f"{kind}:{self._key_prefix}.{self._seq}"

    def _take_wins(self) -> None:
        """Give each new win its op and key; write them to the spool before they are sent.

        A win with a billing id gets its own op, keyed by it. Wins without one against the same
        slice become one commit of their sum (one op, one key, one ledger entry), at most the
        slice's granted_micros per commit: `win` counts them on the slice while they fit, and
        the rare overflow (wins above their hold) is merged here the same way. The ledger
        counts the same spend either way."""
        if not self._wins and not self._won_slices:
            return
        backlog = self._backlog
        op_wins = self._op_wins
        new_ops = []
        won_slices, self._won_slices, self._anonymous_wins = self._won_slices, [], 0
        for s in won_slices:
            self._seq += 1
            op = self._commit_op(f"{self._key_prefix}.{self._seq}", s.reservation_id, s.won_micros)
            key = op["idempotency_key"]
            if s.won_count > 1:
                op_wins[key] = s.won_count
            s.won_count = s.won_micros = 0
            backlog[key] = op
            new_ops.append(op)
        merged: dict[int, dict[str, Any]] = {}  # reservation id -> this round's overflow commit
        wins, self._wins = self._wins, []
        for reservation_id, amount, billing_id, granted in wins:
            if billing_id is None and reservation_id is not None:
                merged_op = merged.get(reservation_id)
                if merged_op is not None and merged_op["amount_micros"] + amount <= granted:
                    merged_op["amount_micros"] += amount
                    key = merged_op["idempotency_key"]
                    op_wins[key] = op_wins.get(key, 1) + 1
                    continue
            if billing_id is not None:
                base = _key_base(billing_id)
            else:
                self._seq += 1
                base = f"{self._key_prefix}.{self._seq}"
            if reservation_id is not None:
                op = self._commit_op(base, reservation_id, amount)
                if billing_id is None:
                    merged[reservation_id] = op
            else:
                op = self._spend_op(base, amount)
            key = op["idempotency_key"]
            if key in backlog:
                continue  # the same billing id twice: one win
            backlog[key] = op
            new_ops.append(op)
        if self._spool is not None:
            self._spool.written(new_ops)
            self._spool.compact(list(self._backlog.values()))

    def _sweep(self, now: float) -> None:
        """Drop ended holds from the front of the queue; give back those past the timeout."""
        holds = self._holds
        popleft = holds.popleft
        timeout_s = self.settings.hold_timeout_ms / 1000
        while holds:
            hold = holds[0]
            if hold.state:  # not _OPEN: ended already
                popleft()
            elif now - hold.created_s >= timeout_s:
                popleft()
                hold.state = _TIMED_OUT
                hold.slice.holds_open -= 1
                hold.slice.available_micros += hold.amount_micros
            else:
                break

    def _sample(self, now: float) -> None:
        samples = self._samples
        samples.append((now, self._won_total_micros))
        while len(samples) > 2 and now - samples[0][0] > self.settings.rate_window_s:
            samples.popleft()

    def spend_rate_micros_per_s(self) -> float:
        """Won micros per second over the rate window (0 until two samples exist)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, w0), (t1, w1) = self._samples[0], self._samples[-1]
        return (w1 - w0) / (t1 - t0) if t1 > t0 else 0.0

    def _target_micros(self, now: float) -> int:
        on_hold = sum(h.amount_micros for h in self._holds if h.state == _OPEN)
        want = int(self.spend_rate_micros_per_s() * self.settings.refill_horizon_s) + on_hold
        return max(self.settings.slice_min_micros, min(self.settings.slice_max_micros, want))

    def _wants_refill(self, now: float) -> bool:
        if now < self._refill_blocked_until_s:
            return False
        live = [s for s in self._slices if not s.released and now < s.stop_s]
        if len(live) >= self.settings.slices_max:
            return False
        if not live:
            return True
        available = sum(s.available_micros for s in live)
        if available < self.settings.low_water_ratio * self._target_micros(now):
            return True
        lifetime_s = (self.settings.ttl_ms - self.settings.expiry_margin_ms) / 1000
        newest_stop_s = max(s.stop_s for s in live)
        return newest_stop_s - now < self.settings.low_water_ratio * lifetime_s

    def _releases(self, now: float, *, release_all: bool) -> list[dict[str, Any]]:
        """Release ops for slices past their stop time (or all, on close) with no open hold."""
        out = []
        for s in self._slices:
            if s.released or s.holds_open > 0:
                continue
            if release_all or now >= s.stop_s:
                if s is self._slice:
                    self._slice = None
                out.append(
                    {
                        "op": "release",
                        "idempotency_key": f"x:{self._key_prefix}.{s.reservation_id}",
                        "reservation_id": s.reservation_id,
                    }
                )
        return out

    # -- late notices, state, close ------------------------------------------------------------

    async def record_late(self, amount_micros: int, *, billing_id: str) -> Spent:
        """A billing notice whose hold is gone (e.g. after a restart): direct spend at once,
        idempotent by billing id (the same key a wallet's fallback would use)."""
        return await self._client.record_spend(
            self.campaign_id,
            amount_micros,
            bidder_id=self.settings.bidder_id,
            idempotency_key="s:" + _key_base(billing_id),
        )

    def state(self) -> WalletState:
        now = self._clock()
        live = [s for s in self._slices if not s.released]
        on_hold = sum(h.amount_micros for h in self._holds if h.state == _OPEN)
        available = sum(s.available_micros for s in live if now < s.stop_s)
        pending_ops = [op for op in self._backlog.values() if op["op"] in ("commit", "spend")]
        pending = (
            len(self._wins)
            + self._anonymous_wins
            + sum(self._op_wins.get(op["idempotency_key"], 1) for op in pending_ops)
        )
        pending_micros = (
            sum(win[1] for win in self._wins)
            + sum(s.won_micros for s in self._won_slices)
            + sum(int(op["amount_micros"]) for op in pending_ops)
        )
        return WalletState(
            mode=self._mode,
            held_micros=available + on_hold,
            available_micros=available,
            on_hold_micros=on_hold,
            spent_locally_micros=self._won_total_micros,
            pending_commits=pending,
            pending_micros=pending_micros,
            committed_micros=self._committed_micros,
            failed_wins=self._failed_wins,
            slices=sum(1 for s in live if now < s.stop_s),
            pass_through_rate=self._rate,
            last_sync_s=self._last_sync_s,
            round_trips=self._round_trips,
        )

    async def close(self) -> WalletState:
        """Stop holding, wait (close_drain_s at most) for open holds, give back the rest, send
        every win and release every slice. If the cluster cannot be reached, ``pending_commits``
        of the result says so: call close() again later; unsent wins stay in the spool (if any)
        for the next wallet on that spool."""
        if self._mode != "closed":
            self._mode = "closing"
            self._slice = None
            self._wake.set()
            if self._task is not None:
                await self._task
                self._task = None
            drain_deadline = self._clock() + self.settings.close_drain_s
            for _ in range(1000):
                if not any(h.state == _OPEN for h in self._holds):
                    break
                if self._clock() >= drain_deadline:
                    break
                await asyncio.sleep(0.01)
            for hold in list(self._holds):
                self.loss(hold)
        async with self._sync_lock:
            for _ in range(3):
                await self._sync_once(refill=False, release_all=True)
                if not self._backlog and not any(not s.released for s in self._slices):
                    break
        self._mode = "closed"
        if self._spool is not None and not self._backlog:
            self._spool.close([])
        return self.state()

    async def __aenter__(self) -> Wallet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
