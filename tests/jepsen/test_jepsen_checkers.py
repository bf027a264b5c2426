"""jepsen-lite's history and checkers without a cluster: the HTTP outcome taxonomy, the
history's process rules and file, and canaries that prove each checker can say invalid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite import History, Response, compose, load, outcome
from jepsen_lite.checkers import (
    convergence,
    election_safety,
    exactly_once,
    no_lost_spend,
    no_overspend,
    stale_reads,
    stats,
    write_results,
)
from jepsen_lite.workload import ClusterSample

pytestmark = pytest.mark.jepsen


def answer(status: int | None, error: str | None = None) -> Response:
    return Response(status, None, {}, 0.01, error)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (answer(200), "ok"),
        (answer(201), "ok"),
        (answer(400), "fail"),
        (answer(409), "fail"),
        (answer(404), "fail"),
        (answer(503), "fail"),
        (answer(504), "info"),
        (answer(500), "info"),
        (answer(None, "timed out"), "info"),
        (answer(None, "[Errno 104] Connection reset by peer"), "info"),
        (answer(None, "Remote end closed connection without response"), "info"),
        (answer(None, "[Errno 111] Connection refused"), "fail"),
    ],
)
def test_outcome_taxonomy(response: Response, expected: str) -> None:
    assert outcome(response) == expected


def spend_history(tmp_path: Path | None = None) -> History:
    """Three spends on acme:a: two ok (1000, 20), one info (300); one refused (5000)."""
    clock = iter(range(0, 10**9, 10))
    history = History(None if tmp_path is None else tmp_path / "h.jsonl", lambda: next(clock))
    for process, key, amount, type_ in (
        (0, "k1", 1000, "ok"),
        (1, "k2", 300, "info"),
        (0, "k3", 5000, "fail"),
        (2, "k4", 20, "ok"),
    ):
        value = {"campaign_id": "acme:a", "amount_micros": amount, "key": key}
        invoked = history.invoke(process, "spend", value, node="n1")
        history.complete(invoked, type_, {"status": 200})  # type: ignore[arg-type]
    return history


def test_history_is_written_as_it_happens_and_reads_back(tmp_path: Path) -> None:
    history = spend_history(tmp_path)
    history.close()
    ops = load(tmp_path / "h.jsonl")
    assert ops == history.ops
    types = [op.type for op in ops]
    assert types == ["invoke", "ok", "invoke", "info", "invoke", "fail", "invoke", "ok"]
    assert [op.time_ns for op in ops] == sorted(op.time_ns for op in ops)
    assert json.loads((tmp_path / "h.jsonl").read_text().splitlines()[1])["process"] == 0


def test_a_process_has_one_open_op_and_completions_are_ok_fail_or_info() -> None:
    history = History()
    first = history.invoke(0, "spend", {"key": "a"})
    with pytest.raises(ValueError, match="already has op"):
        history.invoke(0, "spend", {"key": "b"})
    with pytest.raises(ValueError, match="ok, fail or info"):
        history.complete(first, "invoke")
    history.complete(first, "info")
    with pytest.raises(ValueError, match="not open"):
        history.complete(first, "ok")


def test_no_lost_spend_valid_between_ok_and_ok_plus_info() -> None:
    ops = spend_history().ops
    for spent in (1020, 1320):  # the info spend applied or not
        result = no_lost_spend(ops, {"n1": {"acme": spent, "acme:a": spent}})
        assert result.valid == "valid", result
    assert no_lost_spend(ops, {"n1": {"acme:a": None}}).valid == "unknown"


def test_canary_an_acknowledged_spend_missing_from_the_final_state_is_invalid() -> None:
    ops = spend_history().ops
    # n2 lost the acknowledged spend k4 (20 micros): 1000 is below the 1020 acknowledged.
    result = no_lost_spend(ops, {"n1": {"acme:a": 1020}, "n2": {"acme:a": 1000}})
    assert result.valid == "invalid"
    assert result.offending[0] == {"where": "n2/acme:a", "lost_micros": 20}
    assert result.offending[1]["value"]["key"] == "k4"  # the ok op of exactly the deficit


def test_more_spend_than_ok_plus_info_is_invalid() -> None:
    result = no_lost_spend(spend_history().ops, {"n1": {"acme:a": 1320 + 5000}})
    assert result.valid == "invalid"
    assert result.offending == [{"where": "n1/acme:a", "unexpected_micros": 5000}]


def test_convergence() -> None:
    same = {"applied_index": 7, "digest": "ab"}
    assert convergence({"n1": same, "n2": same}).valid == "valid"
    assert convergence({"n1": same, "n2": {**same, "digest": "cd"}}).valid == "invalid"
    assert convergence({"n1": same, "n2": {**same, "applied_index": 8}}).valid == "invalid"
    assert convergence({"n1": same, "n2": None}).valid == "unknown"


def sample(time_ns: int, node: str, term: int, leader: str | None) -> ClusterSample:
    return ClusterSample(time_ns, node, term, leader, applied_index=0)


def test_election_safety() -> None:
    fine = [sample(1, "n1", 2, "n1"), sample(2, "n2", 2, "n1"), sample(3, "n2", 3, "n2")]
    assert election_safety(fine).valid == "valid"
    # A follower's stale hint is not a second leader.
    assert election_safety([*fine, sample(4, "n3", 3, "n1")]).valid == "valid"
    two = election_safety([*fine, sample(5, "n3", 3, "n3")])
    assert two.valid == "invalid"
    assert two.offending == [{"term": 3, "leaders": {"n2": 3, "n3": 5}}]
    assert election_safety([sample(1, "n1", 1, None)]).valid == "unknown"


def test_results_compose_invalid_over_unknown_over_valid(tmp_path: Path) -> None:
    valid = convergence({"n1": {"applied_index": 1, "digest": "a"}})
    unknown = convergence({"n1": None})
    invalid = convergence({"n1": {"applied_index": 1, "digest": "a"}, "n2": {"digest": "b"}})
    assert compose({"a": valid, "b": unknown}) == "unknown"
    assert compose({"a": valid, "b": unknown, "c": invalid}) == "invalid"
    write_results(tmp_path / "results.json", {"a": valid, "b": invalid}, ops=3)
    written: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())
    assert written["valid"] == "invalid" and written["ops"] == 3
    assert written["checkers"]["b"]["valid"] == "invalid"


# The checkers added with the pause nemesis: valid on a good history, invalid on a crafted bad one.


def write(
    history: History,
    process: int | str,
    f: str,
    key: str,
    amount: int,
    type_: str,
    result: dict[str, Any] | None = None,
    campaign: str = "acme:a",
) -> None:
    value = {"campaign_id": campaign, "amount_micros": amount, "key": key}
    invoked = history.invoke(process, f, value, node="n1")
    completion: dict[str, Any] = {"status": 200 if type_ == "ok" else None}
    if result is not None:
        completion["result"] = result
        completion.update({k: v for k, v in result.items() if k == "granted_micros"})
    history.complete(invoked, type_, completion)  # type: ignore[arg-type]


def read(history: History, process: int | str, spent: int, campaign: str = "acme") -> None:
    invoked = history.invoke(process, "read", {"campaign_id": campaign}, node="n2")
    history.complete(invoked, "ok", {"status": 200, "spent_total_micros": spent})


def test_stale_reads_valid_between_acknowledged_and_invoked() -> None:
    history = History()
    write(history, 0, "spend", "k1", 100, "ok")
    read(history, 1, 100)  # sees k1
    write(history, 0, "spend", "k2", 50, "info")  # maybe applied
    read(history, 1, 150)
    read(history, 1, 100)
    write(history, 0, "spend", "k3", 7, "fail")  # never applied
    read(history, 1, 150)
    result = stale_reads(history.ops)
    assert result.valid == "valid", result
    assert result.detail["ok_reads"] == 4
    assert stale_reads(spend_history().ops).valid == "unknown"  # no read at all


def test_canary_a_read_missing_an_acknowledged_spend_is_a_stale_read() -> None:
    history = History()
    write(history, 0, "spend", "k1", 100, "ok")
    write(history, 0, "commit", "k2", 30, "ok")
    read(history, 1, 100)  # k2 (30) was acknowledged before this read was invoked
    result = stale_reads(history.ops)
    assert result.valid == "invalid"
    assert result.detail["stale"] == 1 and result.offending[0]["missing_micros"] == 30


def test_canary_a_read_of_spend_nobody_sent_is_invalid() -> None:
    history = History()
    write(history, 0, "spend", "k1", 100, "ok")
    write(history, 0, "spend", "k2", 5, "fail")
    read(history, 1, 105)  # the failed spend cannot have been applied
    result = stale_reads(history.ops)
    assert result.valid == "invalid" and result.offending[0]["unexpected_micros"] == 5


def campaign_state(**fields: Any) -> dict[str, Any]:
    state = {
        "daily_budget_micros": 1000,
        "spent_today_micros": 900,
        "held_micros": 100,
        "overspend_micros": 0,
        "total_budget_micros": 10**6,
        "spent_total_micros": 900,
        "held_total_micros": 100,
        "overspend_total_micros": 0,
        "previous_days": [
            {"day": "2024-01-01", "spent_micros": 1200, "held_micros": 0, "overspend_micros": 200}
        ],
    }
    return {**state, **fields}


def test_no_overspend_counts_reported_overspend() -> None:
    history = History()
    write(history, 0, "reserve", "r1", 500, "ok", {"granted_micros": 300})
    states = {
        "n1": {"acme:a": campaign_state()},
        # 1100 spent against a cap of 1000 is fine: 100 of it is reported overspend.
        "n2": {"acme:a": campaign_state(spent_today_micros=1100, overspend_micros=200)},
    }
    assert no_overspend(history.ops, states).valid == "valid"
    assert no_overspend(history.ops, {"n1": {"acme:a": None}}).valid == "unknown"


@pytest.mark.parametrize(
    "bad",
    [
        campaign_state(spent_today_micros=1001),  # today: 1101 > 1000 + 0
        campaign_state(held_total_micros=10**6),  # total over its cap, nothing reported
        campaign_state(
            previous_days=[
                {"day": "d", "spent_micros": 1300, "held_micros": 0, "overspend_micros": 200}
            ]
        ),
    ],
)
def test_canary_unreported_overspend_is_invalid(bad: dict[str, Any]) -> None:
    result = no_overspend([], {"n1": {"acme:a": bad}})
    assert result.valid == "invalid", result
    assert result.offending[0]["unreported_micros"] > 0


def test_canary_a_reserve_granted_more_than_asked_or_a_read_over_cap_is_invalid() -> None:
    history = History()
    write(history, 0, "reserve", "r1", 500, "ok", {"granted_micros": 501})
    result = no_overspend(history.ops, {"n1": {"acme:a": campaign_state()}})
    assert result.valid == "invalid" and result.offending[0]["asked"] == 500
    history = History()
    invoked = history.invoke(0, "read", {"campaign_id": "acme:a"}, node="n2")
    history.complete(invoked, "ok", campaign_state(held_micros=101))
    assert no_overspend(history.ops, {"n1": {"acme:a": campaign_state()}}).valid == "invalid"


SPEND_OK: dict[str, Any] = {
    "campaign_id": "acme:a",
    "recorded_micros": 100,
    "overspend_micros": 0,
    "day": "d",
}


def once_history() -> History:
    """k1 spend ok (100), k2 spend info (40, applied), k3 commit info (7, not applied)."""
    history = History()
    write(history, 0, "spend", "k1", 100, "ok", {**SPEND_OK, "replayed": False})
    write(history, 0, "spend", "k2", 40, "info")
    write(history, 1, "commit", "k3", 7, "info")
    return history


def resend(key: str, round_: int, replayed: bool, status: int = 200, **body: Any) -> dict[str, Any]:
    f = "commit" if key == "k3" else "spend"
    return {
        "key": key,
        "f": f,
        "campaign_id": "acme:a",
        "round": round_,
        "status": status,
        "body": {**body, "replayed": replayed},
        "earlier_attempt_maybe_applied": False,
    }


def good_resends() -> list[dict[str, Any]]:
    return [
        resend("k1", 1, True, **SPEND_OK),
        resend("k2", 1, True, recorded_micros=40),
        resend("k2", 2, True, recorded_micros=40),
        resend("k3", 1, False, committed_micros=7),
        resend("k3", 2, True, committed_micros=7),
    ]


GOOD_TOTALS = {"before": {"acme": 140}, "after_ok": {"acme": 140}}
GOOD_TOTALS |= {"after_info_1": {"acme": 147}, "after_info_2": {"acme": 147}}


def test_exactly_once_resolves_info_ops_and_makes_no_lost_spend_exact() -> None:
    ops = once_history().ops
    result = exactly_once(ops, good_resends(), GOOD_TOTALS)
    assert result.valid == "valid", result
    assert result.detail["applied"] == {"k2": True, "k3": False}
    exact = no_lost_spend(ops, {"n1": {"acme": 140}}, result.detail["applied"])
    assert exact.valid == "valid" and exact.detail["exact"]
    # Unresolved, 147 would pass as "maybe"; resolved, it is 7 micros nobody applied.
    assert no_lost_spend(ops, {"n1": {"acme": 147}}).valid == "valid"
    wrong = no_lost_spend(ops, {"n1": {"acme": 147}}, result.detail["applied"])
    assert wrong.valid == "invalid" and wrong.offending[0]["unexpected_micros"] == 7
    missing = [r for r in good_resends() if r["round"] == 1]
    assert exactly_once(ops, missing, GOOD_TOTALS).valid == "unknown"


@pytest.mark.parametrize(
    ("change", "totals"),
    [
        # An ok write whose re-send is applied again instead of replayed.
        ({0: resend("k1", 1, False, **SPEND_OK)}, GOOD_TOTALS),
        # Replayed, but not the original answer.
        ({0: resend("k1", 1, True, **{**SPEND_OK, "overspend_micros": 1})}, GOOD_TOTALS),
        # The key was forgotten: the re-send is refused.
        ({0: resend("k1", 1, False, status=409, code="idempotency_key_reused")}, GOOD_TOTALS),
        # An info write applied by its first re-send and again by its second.
        ({4: resend("k3", 2, False, committed_micros=7)}, GOOD_TOTALS),
        # Re-sending the ok writes spent again.
        ({}, {**GOOD_TOTALS, "after_ok": {"acme": 240}}),
        # The second info round spent again.
        ({}, {**GOOD_TOTALS, "after_info_2": {"acme": 154}}),
        # The first info round spent what a replay (k2) claimed was already there.
        ({}, {**GOOD_TOTALS, "after_info_1": {"acme": 187}, "after_info_2": {"acme": 187}}),
    ],
)
def test_canary_a_second_application_is_not_exactly_once(
    change: dict[int, dict[str, Any]], totals: dict[str, dict[str, int | None]]
) -> None:
    resends = good_resends()
    for index, replacement in change.items():
        resends[index] = replacement
    result = exactly_once(once_history().ops, resends, totals)
    assert result.valid == "invalid", result


def nemesis_op(history: History) -> None:
    history.complete(history.invoke("nemesis", "kill", {"node": "n1"}), "info")


def test_stats_non_vacuous() -> None:
    history = History()
    write(history, 0, "spend", "k1", 1, "ok")
    write(history, 0, "reserve", "k2", 1, "ok", {"granted_micros": 1})
    write(history, 0, "commit", "k3", 1, "ok")
    read(history, 1, 3)
    nemesis_op(history)
    assert stats(history.ops, ok_before_fault_min=4).valid == "valid"
    assert stats([]).valid == "unknown"


def test_canary_stats_invalid_without_an_ok_per_type_or_before_the_fault() -> None:
    history = History()
    write(history, 0, "spend", "k1", 1, "ok")
    write(history, 0, "reserve", "k2", 1, "fail")
    nemesis_op(history)
    write(history, 0, "commit", "k3", 1, "ok")
    read(history, 1, 2)
    result = stats(history.ops, ok_before_fault_min=2)
    assert result.valid == "invalid"
    assert {"f": "reserve", "problem": "no ok op"} in result.offending
    assert result.offending[-1] == {"problem": "too few ok ops before the first fault", "ok": 1}
