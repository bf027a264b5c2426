"""The proposer against a scripted log: batching, outcomes, limits, timeouts, pulses, barriers."""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from typing import Any

import pytest

from budgetd.codec import decode_batch
from budgetd.ledger import Ledger
from budgetd.proposer import LogOutcome, Proposer
from budgetd.service import NotLeader, OutcomeUnknown, Unavailable
from budgetd.settings import ProposerSettings

T0 = 1_780_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.ms = T0
        self.mono = 0.0

    def now_ms(self) -> int:
        return self.ms

    def monotonic_s(self) -> float:
        return self.mono


class ScriptedLog:
    """Holds proposed entries until the test applies, fails or drops them."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.entries: list[tuple[bytes, Any]] = []
        self.leader = True
        self.applied = 0
        self.auto = False

    def propose(self, entry: bytes, callback: Any) -> None:
        self.entries.append((entry, callback))
        if self.auto:
            self.apply_next()

    def is_leader(self) -> bool:
        return self.leader

    def leader_http(self) -> str | None:
        return None if self.leader else "127.0.0.1:8082"

    def applied_index(self) -> int:
        return self.applied

    def _pop(self) -> tuple[bytes, Any]:
        return self.entries.pop(0)

    def apply_next(self) -> list[dict[str, Any]]:
        entry, callback = self._pop()
        timestamp_ms, ops = decode_batch(entry)
        results = self.ledger.apply_batch(timestamp_ms, ops)
        self.applied += 1
        # pysyncobj calls back on its own thread.
        thread = threading.Thread(target=callback, args=(LogOutcome.OK, results, ""))
        thread.start()
        thread.join()
        return ops

    def end_next(self, outcome: LogOutcome) -> None:
        _, callback = self._pop()
        callback(outcome, None, "scripted")


def settings(**overrides: int) -> ProposerSettings:
    values = {"pulse_interval_ms": 3_600_000, "request_timeout_ms": 60_000} | overrides
    return ProposerSettings(**values)


def put(campaign_id: str) -> dict[str, Any]:
    return {
        "op": "put_campaign",
        "campaign_id": campaign_id,
        "currency": "USD",
        "timezone": "UTC",
        "daily_budget_micros": 1_000_000,
    }


def reserve(key: str, amount: int = 10) -> dict[str, Any]:
    return {
        "op": "reserve",
        "idempotency_key": key,
        "campaign_id": "acme",
        "amount_micros": amount,
        "ttl_ms": 60_000,
        "bidder_id": "b1",
    }


async def until(condition: Any, limit_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def test_an_idle_node_proposes_a_request_at_once_with_one_timestamp() -> None:
    log = ScriptedLog()
    clock = FakeClock()
    proposer = Proposer(log, settings(), clock=clock)
    task = asyncio.create_task(proposer.submit([put("acme")]))
    await until(lambda: len(log.entries) == 1)
    timestamp_ms, ops = decode_batch(log.entries[0][0])
    assert timestamp_ms == T0 and ops == [put("acme")]
    log.apply_next()
    assert (await task)[0]["code"] == "ok"


async def test_requests_queued_behind_inflight_entries_share_the_next_entry() -> None:
    log = ScriptedLog()
    proposer = Proposer(log, settings(inflight_batches_max=1))
    first = asyncio.create_task(proposer.submit([put("acme")]))
    await until(lambda: len(log.entries) == 1)
    others = [asyncio.create_task(proposer.submit([reserve(f"k{i}", 10 + i)])) for i in range(50)]
    await until(lambda: proposer.queued_ops == 50)
    assert len(log.entries) == 1, "nothing more may leave while the pipeline is full"
    log.apply_next()
    await first
    await until(lambda: len(log.entries) == 1)
    assert len(log.apply_next()) == 50, "the 50 queued requests travel in one entry"
    results = await asyncio.gather(*others)
    # Each caller gets its own result, in order.
    assert [r[0]["granted_micros"] for r in results] == [10 + i for i in range(50)]
    assert proposer.stats.entries_proposed == 2


async def test_entries_respect_the_ops_bound_and_keep_a_request_whole() -> None:
    log = ScriptedLog()
    log.auto = True
    log.ledger.apply_batch(T0, [put("acme")])
    proposer = Proposer(log, settings(batch_ops_max=4, inflight_batches_max=1))
    log.auto = False
    tasks = [
        asyncio.create_task(proposer.submit([reserve(f"a{i}"), reserve(f"b{i}"), reserve(f"c{i}")]))
        for i in range(4)
    ]
    await until(lambda: len(log.entries) == 1)
    sizes = []
    while len(sizes) < 4:
        await until(lambda: len(log.entries) == 1)
        sizes.append(len(log.apply_next()))
    await asyncio.gather(*tasks)
    assert sizes == [3, 3, 3, 3], "3-op requests never split, never exceed 4 ops together"


async def test_a_follower_refuses_with_the_leader_address() -> None:
    log = ScriptedLog()
    log.leader = False
    proposer = Proposer(log, settings())
    with pytest.raises(NotLeader) as raised:
        await proposer.submit([put("acme")])
    assert raised.value.leader_http == "127.0.0.1:8082"
    assert log.entries == []


async def test_the_bound_counts_ops_queued_and_in_flight_and_refuses_definitely() -> None:
    log = ScriptedLog()
    proposer = Proposer(log, settings(queue_ops_max=3, inflight_batches_max=1))
    first = asyncio.create_task(proposer.submit([put("acme")]))
    await until(lambda: len(log.entries) == 1)
    assert (proposer.queued_ops, proposer.inflight_ops) == (0, 1)
    queued = asyncio.create_task(proposer.submit([reserve("k1"), reserve("k2")]))
    await until(lambda: proposer.queued_ops == 2)
    with pytest.raises(Unavailable) as refused:
        await proposer.submit([reserve("k3")])
    assert refused.value.retry_after_s == 1
    with pytest.raises(Unavailable):  # the cheap check the API runs before validating a body
        proposer.admit(1)
    proposer.admit(0)
    assert "overloaded" in refused.value.detail
    assert (
        proposer.stats.requests_rejected_queue_full,
        proposer.stats.ops_rejected_queue_full,
    ) == (2, 2)
    log.apply_next()
    await first
    await until(lambda: len(log.entries) == 1)
    assert (proposer.queued_ops, proposer.inflight_ops) == (0, 2)
    # One op fits again (2 in flight + 1): the refused request, sent again, is admitted.
    again = asyncio.create_task(proposer.submit([reserve("k3")]))
    await until(lambda: proposer.queued_ops == 1)
    log.apply_next()
    assert len(await queued) == 2
    await until(lambda: len(log.entries) == 1)
    log.apply_next()
    assert (await again)[0]["code"] == "ok"
    assert (proposer.queued_ops, proposer.inflight_ops) == (0, 0)
    # The refused request reached no log entry: 1 + 2 ops, then the retry's 1.
    assert proposer.stats.ops_proposed == 4


async def test_a_request_larger_than_the_bound_is_refused_with_nothing_proposed() -> None:
    log = ScriptedLog()
    proposer = Proposer(log, settings(queue_ops_max=2))
    with pytest.raises(Unavailable):
        await proposer.submit([put("acme"), put("beta"), put("gamma")])
    assert log.entries == []
    assert proposer.stats.entries_proposed == 0


async def test_an_entry_that_ends_failed_or_unknown_frees_its_ops() -> None:
    log = ScriptedLog()
    proposer = Proposer(log, settings(queue_ops_max=2))
    task = asyncio.create_task(proposer.submit([put("acme"), put("beta")]))
    await until(lambda: len(log.entries) == 1)
    assert proposer.inflight_ops == 2
    with pytest.raises(Unavailable):
        await proposer.submit([put("gamma")])
    log.end_next(LogOutcome.UNKNOWN)
    with pytest.raises(OutcomeUnknown):
        await task
    assert proposer.inflight_ops == 0
    after = asyncio.create_task(proposer.submit([put("gamma")]))
    await until(lambda: len(log.entries) == 1)
    log.apply_next()
    assert (await after)[0]["code"] == "ok"


@pytest.mark.parametrize(
    ("outcome", "error"),
    [(LogOutcome.FAILED, Unavailable), (LogOutcome.UNKNOWN, OutcomeUnknown)],
)
async def test_log_outcomes_map_to_definite_or_unknown_failures(
    outcome: LogOutcome, error: type[Exception]
) -> None:
    log = ScriptedLog()
    proposer = Proposer(log, settings())
    task = asyncio.create_task(proposer.submit([put("acme")]))
    await until(lambda: len(log.entries) == 1)
    log.end_next(outcome)
    with pytest.raises(error):
        await task


async def test_an_unanswered_request_times_out_as_unknown_and_frees_its_slot() -> None:
    log = ScriptedLog()
    clock = FakeClock()
    proposer = Proposer(log, settings(request_timeout_ms=50, inflight_batches_max=1), clock=clock)
    await proposer.start()
    try:
        with pytest.raises(OutcomeUnknown):
            await proposer.submit([put("acme")])
        clock.mono += 1.0  # the entry's deadline has passed: the sweeper gives its slot back
        await until(lambda: proposer.inflight_entries == 0)
        log.entries.clear()
        task = asyncio.create_task(proposer.submit([put("acme")]))
        await until(lambda: len(log.entries) == 1)
        log.apply_next()
        assert (await task)[0]["code"] == "ok"
    finally:
        await proposer.close()


async def test_a_request_that_times_out_while_queued_is_never_proposed() -> None:
    log = ScriptedLog()
    clock = FakeClock()  # the held entry's own deadline does not pass: its slot stays taken
    proposer = Proposer(log, settings(request_timeout_ms=50, inflight_batches_max=1), clock=clock)
    await proposer.start()
    try:
        first = asyncio.create_task(proposer.submit([put("acme")]))
        await until(lambda: len(log.entries) == 1)
        with pytest.raises(OutcomeUnknown):
            await proposer.submit([put("beta")])  # queued behind the held entry
        log.apply_next()
        with pytest.raises(OutcomeUnknown):
            await first  # it too timed out before its entry was applied
        await until(lambda: proposer.inflight_entries == 0)
        assert proposer.queued_ops == 0 and log.entries == []
        assert proposer.stats.requests_timed_out == 2
        assert log.ledger.campaign("beta") is None
    finally:
        await proposer.close()


async def test_a_cancelled_caller_s_queued_request_is_not_proposed() -> None:
    log = ScriptedLog()
    proposer = Proposer(log, settings(inflight_batches_max=1))
    first = asyncio.create_task(proposer.submit([put("acme")]))
    await until(lambda: len(log.entries) == 1)
    gone = asyncio.create_task(proposer.submit([put("beta")]))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    log.apply_next()
    assert (await first)[0]["code"] == "ok"
    assert log.entries == [] and proposer.queued_ops == 0


async def test_entries_ended_together_are_all_answered() -> None:
    log = ScriptedLog()
    proposer = Proposer(log, settings(inflight_batches_max=3, batch_ops_max=1))
    tasks = [asyncio.create_task(proposer.submit([put(f"c{index}")])) for index in range(3)]
    await until(lambda: len(log.entries) == 3)
    callbacks = []
    for _ in range(3):
        entry, callback = log.entries.pop(0)
        callbacks.append(
            partial(callback, LogOutcome.OK, log.ledger.apply_batch(*decode_batch(entry)), "")
        )
    ender = threading.Thread(target=lambda: [callback() for callback in callbacks])
    ender.start()
    ender.join()  # three entries ended on the log's thread before the loop ran again
    results = await asyncio.gather(*tasks)
    assert [result[0]["code"] for result in results] == ["ok"] * 3
    assert proposer.inflight_entries == 0


async def test_barriers_ride_along_and_return_the_applied_index() -> None:
    log = ScriptedLog()
    proposer = Proposer(log, settings(inflight_batches_max=1))
    write = asyncio.create_task(proposer.submit([put("acme")]))
    await until(lambda: len(log.entries) == 1)
    reads = [asyncio.create_task(proposer.barrier()) for _ in range(10)]
    await asyncio.sleep(0)
    log.apply_next()
    await write
    await until(lambda: len(log.entries) == 1)
    assert log.apply_next() == [], "ten barriers cost one empty entry"
    assert await asyncio.gather(*reads) == [2] * 10


async def test_the_leader_proposes_pulses_on_schedule() -> None:
    log = ScriptedLog()
    log.auto = True
    proposer = Proposer(log, settings(pulse_interval_ms=10))
    await proposer.start()
    try:
        await until(lambda: log.applied >= 3)
    finally:
        await proposer.close()
    assert log.ledger.now_ms > 0, "pulses carry time into the ledger"
