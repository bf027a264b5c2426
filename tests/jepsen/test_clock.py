"""Clock faults through libfaketime: a node's wall clock really moves (its HTTP Date header and
the ledger time it stamps), the faults choose and undo what they say, and a run with skewed,
drifting and jumping clocks on the leader and the followers keeps every checker valid.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite import ClusterSampler, History, Refused, Sandbox, SandboxError, Workload
from jepsen_lite import sandbox as sandbox_module
from jepsen_lite.checkers import (
    compose,
    write_results,
)
from jepsen_lite.clock import ClockJump, ClockSkew, midnight_offset_s
from jepsen_lite.workload import LEAF
from tests.jepsen.helpers import agreed_leader, needs_sandbox, settle, until

needs_libfaketime = pytest.mark.skipif(
    sandbox_module.libfaketime_path() is None,
    reason="libfaketime missing: apt-get install -y faketime",
)


def date_header(sandbox: Sandbox, node_id: str) -> float:
    """The node's clock as its HTTP Date header says (whole seconds)."""
    got = sandbox.request(node_id, "GET", "/healthz", timeout_s=2.0)
    assert got.status == 200, got
    date = {k.lower(): v for k, v in got.headers.items()}["date"]
    return email.utils.parsedate_to_datetime(date).timestamp()


# Without a sandbox --------------------------------------------------------------------------


def test_midnight_offsets_land_just_past_a_local_midnight() -> None:
    utc_late = dt.datetime(2026, 3, 7, 23, 59, 0, tzinfo=dt.UTC).timestamp()
    assert midnight_offset_s("UTC", forward=True, now=utc_late) == 60 + 30
    utc_early = dt.datetime(2026, 3, 8, 0, 10, 0, tzinfo=dt.UTC).timestamp()
    assert midnight_offset_s("UTC", forward=False, now=utc_early) == -(600 + 30)
    # 2026-03-08 02:00 is New York's spring-forward: that day has 23 hours.
    ny_morning = dt.datetime(2026, 3, 8, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    forward = midnight_offset_s("America/New_York", forward=True, now=ny_morning.timestamp())
    assert forward == 22 * 3600 + 30


def test_faults_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown jump kinds"):
        ClockJump(kinds=["sideways"])
    with pytest.raises(ValueError, match="rate_min"):
        ClockSkew(rate_min=2.0, rate_max=1.0)
    assert ClockSkew.sandbox_options == ClockJump.sandbox_options == {"faketime": True}


def test_faketime_refuses_clearly_without_libfaketime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "libfaketime_path", lambda: None)
    with pytest.raises(Refused, match="apt-get install -y faketime"):
        Sandbox(tmp_path, faketime=True)


def test_set_clock_needs_a_faketime_sandbox(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    with pytest.raises(SandboxError, match="faketime=True"):
        sandbox.set_clock("n1", offset_s=5.0)


# With a sandbox -----------------------------------------------------------------------------


@pytest.mark.jepsen
@needs_sandbox
@needs_libfaketime
def test_a_node_clock_moves_without_a_restart(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "cluster", size=1, faketime=True) as sandbox:
        until(lambda: agreed_leader(sandbox, ["n1"]), "n1 leading")
        pid = sandbox.node("n1").pid
        assert abs(date_header(sandbox, "n1") - time.time()) < 5

        # Twice the speed: the Date header runs ahead of real time.
        sandbox.set_clock("n1", offset_s=0.0, rate=2.0)
        real0, fake0 = time.time(), date_header(sandbox, "n1")
        until(lambda: time.time() - real0 >= 4.0, "4 s of real time", step_s=0.2)
        real1, fake1 = time.time(), date_header(sandbox, "n1")
        print(f"\nrate 2: real {real1 - real0:.1f} s, node clock {fake1 - fake0:.0f} s")
        assert fake1 - fake0 >= 1.5 * (real1 - real0) - 2

        # Two hours ahead: the Date header jumps; the ledger time the node stamps does not
        # (budgetd.stamps holds stamps to the pace of real time) and the skew is exported.
        sandbox.set_clock("n1", offset_s=7200.0)
        assert abs(date_header(sandbox, "n1") - (time.time() + 7200)) < 5
        body = {"currency": "USD", "timezone": "UTC", "daily_budget_micros": 10**9}
        put = sandbox.request(
            "n1", "PUT", "/v1/campaigns/clk", body, headers={"Idempotency-Key": "clk-1"}
        )
        assert put.status == 201, put
        read = sandbox.request("n1", "GET", "/v1/campaigns/clk")
        ledger_s = read.body["now_ms"] / 1000
        print(f"ledger time ahead of real by {ledger_s - time.time():.0f} s")
        assert ledger_s - time.time() < 60  # not the clock's 7,200 s
        metrics = sandbox.request("n1", "GET", "/metrics")
        skew = [
            float(line.split()[-1])
            for line in str(metrics.body).splitlines()
            if line.startswith("budgetd_clock_skew_seconds")
        ]
        assert skew and skew[0] > 7000, skew

        # Back to real time: the Date header follows; the ledger's clock never goes back.
        sandbox.reset_clock("n1")
        assert abs(date_header(sandbox, "n1") - time.time()) < 5
        again = sandbox.request("n1", "GET", "/v1/campaigns/clk")
        assert again.body["now_ms"] >= read.body["now_ms"]
        assert sandbox.node("n1").pid == pid  # never restarted


@pytest.mark.jepsen
@needs_sandbox
@needs_libfaketime
def test_checkers_hold_through_clock_skew_and_jumps(tmp_path: Path) -> None:
    started = time.monotonic()
    history = History(tmp_path / "history.jsonl")
    rng = random.Random(7)
    faults: list[dict[str, Any]] = []

    def fault(f: str, action: Any) -> None:
        invoked = history.invoke("nemesis", f, {})
        value = action()
        faults.append({"f": f, **value})
        history.complete(invoked, "info", value)

    with Sandbox(tmp_path / "cluster", faketime=True) as sandbox:
        try:
            ids = sandbox.node_ids
            until(lambda: agreed_leader(sandbox, ids), "one leader")
            workload = Workload(
                sandbox, history, workers=4, ops_max=2500, duration_s=26.0, pause_s=0.05
            )
            sampler = ClusterSampler(sandbox, history)
            skew = ClockSkew(max_offset_s=30.0, rate_min=0.5, rate_max=2.0)
            jumps = [
                ClockJump(target="leader", kinds=["forward-past-midnight"]),
                ClockJump(target="follower", kinds=["back-hours"]),
                ClockJump(target="leader", kinds=["back-past-midnight", "back-minutes"]),
            ]
            days: list[tuple[float, Any, Any]] = []

            def note_day() -> None:
                for node_id in ids:
                    state = workload.state(node_id, LEAF, consistency="strong")
                    if state is not None:
                        days.append((time.time(), state.get("day"), state.get("now_ms")))
                        return

            try:
                workload.setup()
                sampler.start()
                workload.start()
                time.sleep(2.0)
                note_day()
                # Skewed, drifting clocks across a leader change: the new leader's differs.
                fault("skew", lambda: skew.start(sandbox, rng))
                time.sleep(2.0)
                note_day()
                old = until(lambda: agreed_leader(sandbox, ids), "the leader to isolate")
                fault("isolate", lambda: (sandbox.net.isolate(old), {"node": old})[1])
                majority = [n for n in ids if n != old]
                until(lambda: agreed_leader(sandbox, majority), "a leader of the majority")
                time.sleep(1.0)
                note_day()
                fault("heal", lambda: (sandbox.net.heal(), {})[1])
                time.sleep(1.0)
                fault("clock-reset", lambda: skew.stop(sandbox))
                note_day()
                # Jumps on the leader and a follower, each undone 3 s later.
                for jump in jumps:
                    fault(jump.name, lambda jump=jump: jump.start(sandbox, rng))
                    time.sleep(3.0)
                    note_day()
                    fault("clock-reset", lambda jump=jump: jump.stop(sandbox))
                    time.sleep(1.5)
                    note_day()
                fault("skew", lambda: skew.start(sandbox, rng))
                time.sleep(3.0)
                fault("clock-reset", lambda: skew.stop(sandbox))
                workload.join()
                note_day()
                workload_s = time.monotonic() - started

                settled = settle(sandbox, workload, history, tmp_path)
            finally:
                sampler.stop()
                workload.close()
                history.close()
            ops = history.ops
            results = settled.checkers(ops, sampler.samples)
            counts = Counter(
                f"{op.f}:{op.type}" for op in ops if op.type != "invoke" and op.process != "nemesis"
            )
            final_leaf = (settled.strong.get(settled.leader) or {}).get(LEAF) or {}
            observed = {
                "ops": dict(sorted(counts.items())),
                "faults": faults,
                "leaf_days": [
                    {
                        "real_s_ago": round(time.time() - t, 1),
                        "day": d,
                        "now_ms": n,
                        "ahead_of_real_s": round(n / 1000 - t, 1) if n else None,
                    }
                    for t, d, n in days
                ],
                "leaf_final": {
                    k: final_leaf.get(k)
                    for k in ("day", "now_ms", "spent_today_micros", "previous_days")
                },
                "ledger_ahead_of_real_s": (
                    round(final_leaf["now_ms"] / 1000 - time.time(), 1)
                    if final_leaf.get("now_ms")
                    else None
                ),
                "terms": results["election_safety"].detail["terms"],
                "leaders": sorted({x.node for x in sampler.samples if x.leader_id == x.node}),
                "workload_s": round(workload_s, 1),
                "total_s": round(time.monotonic() - started, 1),
            }
            write_results(tmp_path / "results.json", results, observed=observed)
            print("\nOBSERVED clock run:", json.dumps(observed, default=str))
            print("RESULTS:", {name: r.valid for name, r in results.items()})
            assert {f["f"] for f in faults} >= {"skew", "clock-jump", "clock-reset", "isolate"}
            # Ledger time (stamped by whichever node led) never went backwards (DESIGN I6).
            stamps = [n for _, _, n in days]
            assert len(stamps) >= 5 and stamps == sorted(stamps), stamps
            # ...and no leader's jumped clock dragged it hours ahead (budgetd.stamps).
            assert observed["ledger_ahead_of_real_s"] is not None
            assert observed["ledger_ahead_of_real_s"] < 120, observed["leaf_final"]
            for name, result in results.items():
                assert result.valid == "valid", (name, result)
            assert compose(results) == "valid"
            assert all(sandbox.clock(n) == (0.0, 1.0) for n in ids)
            assert not sandbox.exited()
        except BaseException:
            print(sandbox.logs())
            raise
