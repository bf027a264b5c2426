"""Group commit: many concurrent requests become few log entries.

Owns batching, time stamping, outcome mapping, the bounded queue, request timeouts, pulses and
read barriers. Runs on the asyncio event loop; talks to the log only through `Log` (implemented by
`budgetd.replication.RaftNode`). Imports nothing of aiohttp, click or pysyncobj.

How a batch leaves: when fewer than ``inflight_batches_max`` entries are in flight, everything
queued (up to ``batch_ops_max`` ops and ``batch_bytes_max`` bytes) goes at once as one entry — so
an idle node answers with the latency of a single entry, and a busy one fills each entry while the
previous one is being replicated. Each entry carries one timestamp, stamped here (DESIGN I6).

Admission (DESIGN §5): ops accepted and not yet answered — queued, or in a log entry in flight —
are bounded by ``queue_ops_max``; a request that would pass it is refused at once with 503
unavailable and Retry-After (nothing proposed: safe to retry with the same keys), so overload
gets fast refusals instead of a queue that answers seconds later or not at all. A warning is
logged when a node starts refusing, at most once per ``_SHED_LOG_PERIOD_S``.

Outcomes (research/jepsen.md §7): the log says OK (results come back), FAILED (definitely not
applied → `Unavailable`) or UNKNOWN (`OutcomeUnknown`). A request not answered within
``request_timeout_ms`` is `OutcomeUnknown`; its entry may still be applied later, which is why
every mutating op carries an idempotency key. One sweep task ends the requests and entries past
their deadlines (no timer per request), and the log's callbacks, on its own thread, wake the event
loop once for all the entries that ended meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from budgetd.codec import encode_batch
from budgetd.distribution import Distribution
from budgetd.service import NotLeader, OutcomeUnknown, Unavailable
from budgetd.settings import ProposerSettings

__all__ = ["Clock", "Log", "LogOutcome", "Proposer", "SystemClock"]

log = logging.getLogger("budgetd.proposer")

#: Bucket bounds of the ops and the encoded bytes per log entry.
BATCH_OPS_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
BATCH_BYTES_BUCKETS: Final = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)

#: How often requests past their deadline and stuck in-flight entries are looked for (an entry's
#: callback may never come: research pysyncobj.md §1.3, a partitioned leader's writes wait until
#: the partition heals); at most a tenth of proposer.request_timeout_ms, so a request ends at most
#: 10 % after its deadline.
_SWEEP_PERIOD_S = 0.25
#: At most one warning per this many seconds while requests are refused for the admission bound.
_SHED_LOG_PERIOD_S = 10.0


class LogOutcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Log(Protocol):
    """The replicated log as the proposer needs it."""

    def propose(
        self, entry: bytes, callback: Callable[[LogOutcome, list[dict[str, Any]] | None, str], None]
    ) -> None:
        """Append ``entry``; ``callback`` runs later, on any thread, exactly once if at all."""
        ...

    def is_leader(self) -> bool: ...

    def leader_http(self) -> str | None:
        """The HTTP address of the current leader, if known."""
        ...

    def applied_index(self) -> int: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def monotonic_s(self) -> float: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_s(self) -> float:
        return time.monotonic()


@dataclass(slots=True)
class _Request:
    ops: list[dict[str, Any]]
    future: asyncio.Future[list[dict[str, Any]]]
    #: The event loop's time past which the request ends OutcomeUnknown.
    deadline_s: float


@dataclass(slots=True)
class _Entry:
    requests: list[_Request]
    deadline_s: float
    done: bool = False


@dataclass(slots=True)
class ProposerStats:
    entries_proposed: int = 0
    ops_proposed: int = 0
    entries_ok: int = 0
    entries_failed: int = 0
    entries_unknown: int = 0
    requests_timed_out: int = 0
    requests_rejected_queue_full: int = 0
    #: Ops of the requests refused for proposer.queue_ops_max.
    ops_rejected_queue_full: int = 0


class Proposer:
    """Turns `submit` and `barrier` calls into log entries. Create and use on one event loop."""

    def __init__(
        self, log_: Log, settings: ProposerSettings, *, clock: Clock | None = None
    ) -> None:
        self._log = log_
        self._settings = settings
        self._clock = clock or SystemClock()
        self._queue: deque[_Request] = deque()
        self._queued_ops = 0
        self._inflight: list[_Entry] = []
        #: Ops of the entries in ``_inflight``; with ``_queued_ops``, what the bound admits.
        self._inflight_ops = 0
        #: When the last shedding warning was logged, and the refusals since.
        self._shed_logged_s: float | None = None
        self._shed_since_log = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Entries the log has ended, handed over from its thread; the loop is woken once for
        #: all of them (``_wake_pending`` says a wake-up is on its way).
        self._ended: deque[tuple[_Entry, LogOutcome, list[dict[str, Any]] | None, str]] = deque()
        self._wake_pending = False
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = ProposerStats()
        #: Ops and encoded bytes of each log entry proposed.
        self.batch_ops = Distribution(BATCH_OPS_BUCKETS)
        self.batch_bytes = Distribution(BATCH_BYTES_BUCKETS)

    # -- public ---------------------------------------------------------------------------------

    async def submit(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply ``ops`` together in one entry; their results. See budgetd.service.Service."""
        return await self._enqueue(ops)

    def admit(self, ops: int) -> None:
        """Raise Unavailable (counted, and logged as shedding) when ``ops`` more would pass
        proposer.queue_ops_max now; `submit` runs the same check."""
        admitted_ops = self._queued_ops + self._inflight_ops
        if admitted_ops + ops > self._settings.queue_ops_max:
            self._shed(ops, admitted_ops)
            raise Unavailable(
                f"overloaded: {admitted_ops} ops are queued or in flight and {ops} more "
                f"would pass proposer.queue_ops_max ({self._settings.queue_ops_max}); nothing "
                "was proposed, retry later with the same idempotency keys",
                retry_after_s=1,
            )

    async def barrier(self) -> int:
        """An empty request through the log (sharing an entry with others); the applied index."""
        await self._enqueue([])
        return self._log.applied_index()

    async def start(self) -> None:
        """Start the pulse and sweep tasks (on the running loop); the sweep ends the requests
        past proposer.request_timeout_ms."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._pulse_forever(), name="budgetd-pulse"),
            asyncio.create_task(self._sweep_forever(), name="budgetd-sweep"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(Unavailable("the node is shutting down"))
        self._queued_ops = 0

    @property
    def queued_ops(self) -> int:
        return self._queued_ops

    @property
    def inflight_entries(self) -> int:
        return len(self._inflight)

    @property
    def inflight_ops(self) -> int:
        return self._inflight_ops

    # -- internals ------------------------------------------------------------------------------

    async def _enqueue(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self._log.is_leader():
            raise NotLeader("this node is not the leader", leader_http=self._log.leader_http())
        self.admit(len(ops))
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        deadline_s = loop.time() + self._settings.request_timeout_ms / 1000
        self._queue.append(_Request(ops, future, deadline_s))
        self._queued_ops += len(ops)
        self._flush()
        # A caller that goes away cancels the future: a request still queued is then dropped.
        return await future

    def _shed(self, ops: int, admitted_ops: int) -> None:
        """Count a refusal for the bound; warn when shedding starts, then at most once per
        ``_SHED_LOG_PERIOD_S``."""
        self.stats.requests_rejected_queue_full += 1
        self.stats.ops_rejected_queue_full += ops
        self._shed_since_log += 1
        now_s = self._clock.monotonic_s()
        if self._shed_logged_s is None or now_s - self._shed_logged_s >= _SHED_LOG_PERIOD_S:
            log.warning(
                "overloaded: refusing requests (503, Retry-After 1 s): %d ops queued or in "
                "flight, proposer.queue_ops_max %d; %d request(s) refused since the last warning",
                admitted_ops,
                self._settings.queue_ops_max,
                self._shed_since_log,
            )
            self._shed_logged_s = now_s
            self._shed_since_log = 0

    def _flush(self) -> None:
        settings = self._settings
        while self._queue and len(self._inflight) < settings.inflight_batches_max:
            requests: list[_Request] = []
            ops: list[dict[str, Any]] = []
            while self._queue:
                request = self._queue[0]
                if requests and len(ops) + len(request.ops) > settings.batch_ops_max:
                    break
                self._queue.popleft()
                self._queued_ops -= len(request.ops)
                if request.future.done():  # timed out or cancelled while queued
                    continue
                requests.append(request)
                ops.extend(request.ops)
            if not requests:
                continue
            entry_bytes = encode_batch(self._clock.now_ms(), ops, keep=True)
            while len(entry_bytes) > settings.batch_bytes_max and len(requests) > 1:
                # Too large: give back the second half of the requests for the next entry.
                keep = len(requests) // 2
                for request in reversed(requests[keep:]):
                    self._queue.appendleft(request)
                    self._queued_ops += len(request.ops)
                requests = requests[:keep]
                ops = [op for request in requests for op in request.ops]
                entry_bytes = encode_batch(self._clock.now_ms(), ops, keep=True)
            entry = _Entry(requests, self._clock.monotonic_s() + settings.request_timeout_ms / 1000)
            self._inflight.append(entry)
            self._inflight_ops += len(ops)
            self.stats.entries_proposed += 1
            self.stats.ops_proposed += len(ops)
            self.batch_ops.observe(len(ops))
            self.batch_bytes.observe(len(entry_bytes))
            loop = self._loop
            assert loop is not None

            def on_done(
                outcome: LogOutcome,
                results: list[dict[str, Any]] | None,
                reason: str,
                entry: _Entry = entry,
                loop: asyncio.AbstractEventLoop = loop,
            ) -> None:
                # Any thread. The loop clears _wake_pending before it takes the ended entries,
                # so an entry appended here is either taken by a wake-up still to come or
                # triggers one.
                self._ended.append((entry, outcome, results, reason))
                if not self._wake_pending:
                    self._wake_pending = True
                    with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                        loop.call_soon_threadsafe(self._take_ended)

            try:
                self._log.propose(entry_bytes, on_done)
            except Exception as error:
                log.warning("proposal failed before reaching the log: %r", error)
                self._finish(entry, LogOutcome.FAILED, None, f"not proposed: {error!r}")

    def _take_ended(self) -> None:
        """On the loop: end every entry the log has ended since the last wake-up, then fill the
        freed slots."""
        self._wake_pending = False
        ended = self._ended
        while ended:
            self._finish(*ended.popleft(), flush=False)
        self._flush()

    def _finish(
        self,
        entry: _Entry,
        outcome: LogOutcome,
        results: list[dict[str, Any]] | None,
        reason: str,
        *,
        flush: bool = True,
    ) -> None:
        if entry.done:
            return
        entry.done = True
        expected = sum(len(request.ops) for request in entry.requests)
        with contextlib.suppress(ValueError):
            self._inflight.remove(entry)
            self._inflight_ops -= expected
        if outcome is LogOutcome.OK and (results is None or len(results) != expected):
            log.error("entry applied with %s results for %d ops", results, expected)
            outcome, reason = LogOutcome.UNKNOWN, "the log returned results that do not match"
        if outcome is LogOutcome.OK:
            assert results is not None
            self.stats.entries_ok += 1
            start = 0
            for request in entry.requests:
                end = start + len(request.ops)
                if not request.future.done():
                    request.future.set_result(results[start:end])
                start = end
        else:
            if outcome is LogOutcome.FAILED:
                self.stats.entries_failed += 1
                error: Exception = Unavailable(f"not applied: {reason}", retry_after_s=1)
            else:
                self.stats.entries_unknown += 1
                error = OutcomeUnknown(f"outcome unknown: {reason}")
            for request in entry.requests:
                if not request.future.done():
                    request.future.set_exception(error)
        if flush:
            self._flush()

    async def _sweep_forever(self) -> None:
        timeout_ms = self._settings.request_timeout_ms
        period_s = min(_SWEEP_PERIOD_S, timeout_ms / 10_000)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period_s)
            self._expire_requests(loop.time())
            now = self._clock.monotonic_s()
            for entry in list(self._inflight):
                if entry.deadline_s <= now:
                    self._finish(entry, LogOutcome.UNKNOWN, None, "no callback from the log")

    def _expire_requests(self, now_s: float) -> None:
        """End OutcomeUnknown every request past its deadline, queued or in flight (its entry
        may still be applied later). The queue is in deadline order, as are an entry's
        requests."""
        expired: list[_Request] = []
        for entry in self._inflight:
            if entry.requests[0].deadline_s <= now_s:
                expired.extend(r for r in entry.requests if r.deadline_s <= now_s)
        for request in self._queue:
            if request.deadline_s > now_s:
                break
            expired.append(request)
        timeout_ms = self._settings.request_timeout_ms
        for request in expired:
            if not request.future.done():
                self.stats.requests_timed_out += 1
                request.future.set_exception(
                    OutcomeUnknown(f"no answer from the log within {timeout_ms} ms")
                )

    async def _pulse_forever(self) -> None:
        period_s = self._settings.pulse_interval_ms / 1000
        while True:
            await asyncio.sleep(period_s)
            if not self._log.is_leader():
                continue
            try:
                await self._enqueue([{"op": "pulse"}])
            except (NotLeader, Unavailable, OutcomeUnknown) as error:
                log.info("pulse not applied: %s", error.detail)
