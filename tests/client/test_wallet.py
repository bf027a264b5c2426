"""The wallet against a scripted in-memory ledger, with a hand-moved clock and an injected random
source: local arithmetic, pass-through, flushing, refill sizing, expiry margin, offline mode,
hold timeouts, the reservation_closed fallback, release on close and the spool."""

from __future__ import annotations

from pathlib import Path

from budget_client import AsyncClient, RetryPolicy, TransportError, Wallet, WalletSettings
from tests.client.scripted import Clock, FakeLedger, ScriptedTransport


def make(ledger: FakeLedger, clock: Clock | None = None, *, draws=None, **settings):
    clock = clock or Clock()
    transport = ScriptedTransport(handler=ledger.handle)
    client = AsyncClient(
        ["127.0.0.1:1"],
        "t",
        transport=transport,
        clock=clock,
        sleep=clock.sleep,
        random=lambda: 0.0,
        retry=RetryPolicy(attempts_max=2, deadline_s=1),
    )
    options = {
        "bidder_id": "fra-1",
        "slice_min_micros": 1_000,
        "slice_max_micros": 50_000,
        **settings,
    }
    source = iter(draws) if draws is not None else None
    wallet = Wallet(
        client,
        "acme",
        WalletSettings(**options),
        clock=clock,
        random=(lambda: next(source)) if source else (lambda: 0.0),
    )
    return wallet, transport, clock


def conserved(wallet: Wallet, ledger: FakeLedger) -> None:
    """Per slice: granted = available + on hold + won; and the ledger never exceeds budget."""
    state = wallet.state()
    assert ledger.spent_micros + ledger.held_micros <= ledger.budget_micros
    assert state.held_micros + state.spent_locally_micros <= sum(
        r.granted_micros for r in ledger.reservations.values()
    )


async def test_holds_come_from_the_slice_and_wins_and_losses_settle_them():
    ledger = FakeLedger(budget_micros=10_000)
    wallet, _, _ = make(ledger)
    await wallet.start(background=False)
    assert wallet.state().available_micros == 1_000  # the first slice is slice_min
    a, b = wallet.try_hold(400), wallet.try_hold(400)
    assert a is not None and b is not None
    assert wallet.try_hold(400) is None  # 200 left: never more than held
    wallet.win(a, 150, billing_id="imp-1")
    wallet.loss(b)
    state = wallet.state()
    assert state.available_micros == 850 and state.on_hold_micros == 0
    assert state.spent_locally_micros == 150 and state.pending_commits == 1
    conserved(wallet, ledger)


async def test_wins_are_flushed_as_commits_keyed_by_billing_id_in_one_batch():
    ledger = FakeLedger(budget_micros=10_000)
    wallet, _, _ = make(ledger)
    await wallet.start(background=False)
    for i in range(5):
        hold = wallet.try_hold(100)
        assert hold is not None
        wallet.win(hold, 60, billing_id=f"imp-{i}")
    before = len(ledger.batches)
    await wallet.sync()
    assert len(ledger.batches) == before + 1
    commits = [op for op in ledger.batches[-1] if op["op"] == "commit"]
    assert [op["idempotency_key"] for op in commits] == [f"w:imp-{i}" for i in range(5)]
    assert ledger.spent_micros == 300
    state = wallet.state()
    assert state.pending_commits == 0 and state.committed_micros == 300


async def test_pass_through_rate_decides_with_the_injected_random_source():
    ledger = FakeLedger(budget_micros=10_000, pass_through_ppm=250_000)
    wallet, _, _ = make(ledger, draws=[0.1, 0.3, 0.24, 0.25, 0.9])
    await wallet.start(background=False)
    outcomes = [wallet.try_hold(10) is not None for _ in range(5)]
    assert outcomes == [True, False, True, False, False]
    assert wallet.state().pass_through_rate == 0.25


async def test_refill_is_sized_from_the_recent_spend_rate_within_bounds():
    ledger = FakeLedger(budget_micros=10**9)
    wallet, _, clock = make(
        ledger,
        slice_min_micros=1_000,
        slice_max_micros=30_000,
        refill_horizon_s=10.0,
        ttl_ms=60_000,
    )
    await wallet.start(background=False)
    for _ in range(5):  # 200 micros/s of wins for 5 s
        clock.now_s += 1.0
        hold = wallet.try_hold(200)
        assert hold is not None
        wallet.win(hold, 200)
        await wallet.sync()
    asks = [
        op["amount_micros"] for batch in ledger.batches for op in batch if op["op"] == "reserve"
    ]
    assert asks[0] == 1_000
    assert asks[-1] == 2_000  # 200 micros/s × 10 s
    assert ledger.held_micros + ledger.spent_micros <= ledger.budget_micros
    clock.now_s += 1.0
    for _ in range(100):
        hold = wallet.try_hold(1_000)
        if hold is None:
            break
        wallet.win(hold, 1_000)
    await wallet.sync()
    asks = [
        op["amount_micros"] for batch in ledger.batches for op in batch if op["op"] == "reserve"
    ]
    assert asks[-1] <= 30_000


async def test_a_slice_stops_at_its_expiry_minus_the_margin_measured_from_the_request():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, transport, clock = make(ledger, ttl_ms=10_000, expiry_margin_ms=2_000, slices_max=1)
    await wallet.start(background=False)  # sent at t=1000
    transport.fail = lambda sent: TransportError("down", sent=False)  # cluster unreachable
    clock.now_s = 1000.0 + 7.999
    assert wallet.try_hold(10) is not None
    clock.now_s = 1000.0 + 8.0
    assert wallet.try_hold(10) is None
    await wallet.sync()
    assert wallet.state().mode == "offline"
    assert wallet.try_hold(10) is None


async def test_offline_the_wallet_spends_exactly_what_it_holds_and_commits_later():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, transport, _ = make(ledger, slices_max=1)
    await wallet.start(background=False)
    transport.fail = lambda sent: TransportError("down", sent=True)
    taken = 0
    for i in range(50):
        hold = wallet.try_hold(100)
        if hold is None:
            break
        wallet.win(hold, 100, billing_id=f"b{i}")
        taken += 100
        await wallet.sync()
    assert taken == 1_000  # the whole slice and not a micro more
    state = wallet.state()
    assert state.mode == "offline" and state.pending_micros == 1_000
    transport.fail = None
    await wallet.sync()
    assert ledger.spent_micros == 1_000 and wallet.state().pending_commits == 0
    assert wallet.state().mode == "online"


async def test_a_timed_out_hold_goes_back_and_its_late_win_becomes_direct_spend():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, _, clock = make(ledger, hold_timeout_ms=500)
    await wallet.start(background=False)
    hold = wallet.try_hold(300)
    assert hold is not None
    clock.now_s += 0.5
    await wallet.sync()
    assert wallet.state().available_micros == 1_000
    wallet.win(hold, 200, billing_id="late-1")
    await wallet.sync()
    spends = [op for b in ledger.batches for op in b if op["op"] == "spend"]
    assert [(op["idempotency_key"], op["amount_micros"]) for op in spends] == [("s:late-1", 200)]


async def test_a_commit_refused_reservation_closed_falls_back_to_spend_with_the_billing_key():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, _, _ = make(ledger)
    await wallet.start(background=False)
    hold = wallet.try_hold(300)
    assert hold is not None
    ledger.reservations[hold.reservation_id].state = "closed"  # e.g. released by an operator
    wallet.win(hold, 250, billing_id="imp-9")
    await wallet.sync()
    await wallet.sync()
    keys = [op["idempotency_key"] for b in ledger.batches for op in b if op["op"] != "reserve"]
    assert keys == ["w:imp-9", "s:imp-9"]
    assert ledger.spent_micros == 250 and wallet.state().committed_micros == 250


async def test_a_lost_answer_is_resent_with_the_same_keys_and_counted_once():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, transport, _ = make(ledger)
    await wallet.start(background=False)
    hold = wallet.try_hold(300)
    assert hold is not None
    wallet.win(hold, 100, billing_id="imp-1")
    applied_then_lost = []

    def lose(sent):
        if not applied_then_lost:
            ledger.handle(sent)
            applied_then_lost.append(sent)
            return TransportError("reset after send", sent=True)
        return None

    transport.fail = lose
    await wallet.sync()
    transport.fail = None
    await wallet.sync()
    assert ledger.spent_micros == 100
    assert wallet.state().committed_micros == 100


async def test_close_flushes_and_releases_everything():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, _, _ = make(ledger, close_drain_s=0)
    await wallet.start(background=False)
    won, open_hold = wallet.try_hold(300), wallet.try_hold(200)
    assert won is not None and open_hold is not None
    wallet.win(won, 300)
    state = await wallet.close()
    assert state.mode == "closed" and state.pending_commits == 0
    assert ledger.spent_micros == 300 and ledger.held_micros == 0
    assert all(r.state == "closed" for r in ledger.reservations.values())


async def test_the_spool_carries_unsent_wins_across_a_restart(tmp_path: Path):
    spool = str(tmp_path / "acme.spool")
    ledger = FakeLedger(budget_micros=10**6)
    wallet, transport, _ = make(ledger, spool_path=spool)
    await wallet.start(background=False)
    transport.fail = lambda sent: TransportError("down", sent=True)
    for i in range(3):
        hold = wallet.try_hold(100)
        assert hold is not None
        wallet.win(hold, 90, billing_id=f"imp-{i}")
    await wallet.sync()  # spooled, not acknowledged; then the process "dies"
    assert ledger.spent_micros == 0
    again, _, _ = make(ledger, spool_path=spool)
    await again.start(background=False)
    assert ledger.spent_micros == 270
    await again.close()
    assert Path(spool).read_text() == ""


async def test_wins_without_billing_id_on_one_slice_go_as_one_commit_and_count_as_wins():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, _, _ = make(ledger, slice_min_micros=1_000, slice_max_micros=1_000)
    await wallet.start(background=False)
    for _ in range(4):
        hold = wallet.try_hold(200)
        assert hold is not None
        wallet.win(hold, 150)
    keyed = wallet.try_hold(200)
    assert keyed is not None
    wallet.win(keyed, 100, billing_id="imp-1")
    assert wallet.state().pending_commits == 5
    await wallet.sync()
    commits = [op for op in ledger.batches[-1] if op["op"] == "commit"]
    assert sorted(op["amount_micros"] for op in commits) == [100, 600]
    assert "w:imp-1" in {op["idempotency_key"] for op in commits}
    state = wallet.state()
    assert state.pending_commits == 0 and state.committed_micros == 700
    assert ledger.spent_micros == 700


async def test_each_round_of_anonymous_wins_is_a_new_commit_of_that_round_s_sum():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, _, _ = make(ledger, slice_min_micros=1_000, slice_max_micros=1_000)
    await wallet.start(background=False)
    keys = []
    for round_wins in ([120, 80], [50, 40, 30]):
        for clearing in round_wins:
            hold = wallet.try_hold(150)
            assert hold is not None
            wallet.win(hold, clearing)
        state = wallet.state()
        assert state.pending_commits == len(round_wins)
        assert state.pending_micros == sum(round_wins)
        await wallet.sync()
        commits = [op for op in ledger.batches[-1] if op["op"] == "commit"]
        assert [op["amount_micros"] for op in commits] == [sum(round_wins)]
        keys.append(commits[0]["idempotency_key"])
    assert keys[0] != keys[1]
    state = wallet.state()
    assert state.pending_commits == 0 and state.pending_micros == 0
    assert state.committed_micros == ledger.spent_micros == 320
    conserved(wallet, ledger)


async def test_a_merged_commit_never_exceeds_its_slice_and_falls_back_to_spend_whole():
    ledger = FakeLedger(budget_micros=10**6)
    wallet, _, _ = make(ledger, slice_min_micros=1_000, slice_max_micros=1_000)
    await wallet.start(background=False)
    holds = [wallet.try_hold(250) for _ in range(4)]
    assert all(hold is not None for hold in holds)
    for hold in holds:
        wallet.win(hold, 400)  # above the hold: the ledger records the excess as overspend
    rid = holds[0].reservation_id
    ledger.reservations[rid].state = "closed"  # e.g. released by an operator
    await wallet.sync()
    first = [op for op in ledger.batches[-1] if op["op"] == "commit"]
    assert [op["amount_micros"] for op in first] == [800, 800]  # each at most granted (1,000)
    await wallet.sync()
    spends = [op for op in ledger.batches[-1] if op["op"] == "spend"]
    assert sorted(op["amount_micros"] for op in spends) == [800, 800]
    assert {op["idempotency_key"][2:] for op in spends} == {
        op["idempotency_key"][2:] for op in first
    }
    state = wallet.state()
    assert state.pending_commits == 0 and state.committed_micros == 1_600
    assert ledger.spent_micros == 1_600


async def test_the_background_tick_spools_wins_at_once_and_sends_them_after_send_interval(
    tmp_path: Path,
):
    spool = tmp_path / "acme.spool"
    ledger = FakeLedger(budget_micros=10**6)
    wallet, _, clock = make(
        ledger,
        spool_path=str(spool),
        send_interval_ms=250,
        flush_wins_max=3,
        slice_min_micros=10_000,
    )
    await wallet.start(background=False)
    sent = len(ledger.batches)
    hold = wallet.try_hold(100)
    assert hold is not None
    wallet.win(hold, 80, billing_id="imp-1")
    await wallet._tick()
    assert len(ledger.batches) == sent and '"w:imp-1"' in spool.read_text()
    clock.now_s += 0.2
    await wallet._tick()
    assert len(ledger.batches) == sent and wallet.state().pending_commits == 1
    clock.now_s += 0.05
    await wallet._tick()
    assert len(ledger.batches) == sent + 1 and ledger.spent_micros == 80
    for i in range(3):  # flush_wins_max wins go at once
        hold = wallet.try_hold(100)
        assert hold is not None
        wallet.win(hold, 50, billing_id=f"imp-{i + 2}")
    await wallet._tick()
    assert len(ledger.batches) == sent + 2 and ledger.spent_micros == 230
    assert wallet.state().pending_commits == 0
