"""jepsen-lite's history and checkers without a cluster: the HTTP outcome taxonomy, the
history's process rules and file, and canaries that prove each checker can say invalid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite import History, Response, compose, load, outcome
from jepsen_lite.checkers import convergence, election_safety, no_lost_spend, write_results
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
