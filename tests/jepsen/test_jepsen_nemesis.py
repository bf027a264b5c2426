"""jepsen-lite's run plan without a cluster: the seeded nemesis schedule, the shapes of the
partition grudges, the fault registry and settings validation, and the reservation-lifecycle
checker (I5) with canary histories that must fail."""

from __future__ import annotations

import random
from itertools import combinations
from typing import Any

import pytest

from jepsen_lite.checkers import reservation_lifecycle
from jepsen_lite.generator import schedule
from jepsen_lite.history import History
from jepsen_lite.nemesis import REGISTRY, make_faults
from jepsen_lite.net import (
    complete_grudge,
    grudge_bridge,
    grudge_halves,
    grudge_isolate,
    grudge_majorities_ring,
    grudge_one,
    grudge_pairs,
)
from jepsen_lite.runner import Settings

pytestmark = pytest.mark.jepsen

FIVE = ["n1", "n2", "n3", "n4", "n5"]
THREE = ["n1", "n2", "n3"]


def sees(grudge: dict[str, frozenset[str]], node: str, nodes: list[str]) -> frozenset[str]:
    """The nodes ``node`` still hears from (itself included)."""
    return frozenset(nodes) - grudge[node]


# Schedule -----------------------------------------------------------------------------------


def test_same_seed_and_settings_give_the_same_schedule() -> None:
    faults = ["partition-leader", "kill", "pause"]
    first = schedule(42, faults, time_limit_s=90, interval_s=7, warmup_s=5)
    again = schedule(42, faults, time_limit_s=90, interval_s=7, warmup_s=5)
    other = schedule(43, faults, time_limit_s=90, interval_s=7, warmup_s=5)
    assert first == again
    assert first.steps != other.steps


def test_schedule_warms_up_alternates_and_heals_every_fault_at_the_time_limit() -> None:
    plan = schedule(7, ["kill", "pause"], time_limit_s=60, interval_s=10, warmup_s=5)
    fault_steps = plan.fault_steps
    assert fault_steps[0].at_s == 5  # nothing during warm-up
    assert [s.action for s in fault_steps] == ["start", "stop"] * (len(fault_steps) // 2)
    for start, stop in zip(fault_steps[::2], fault_steps[1::2], strict=True):
        assert start.fault == stop.fault and stop.at_s - start.at_s == 10
        assert start.seed is not None and stop.seed is None
    assert all(s.at_s <= 60 for s in fault_steps)
    assert [(s.fault, s.action, s.at_s) for s in plan.heal_steps] == [
        ("kill", "stop", 60),
        ("pause", "stop", 60),
    ]
    assert schedule(1, [], time_limit_s=30).steps == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_limit_s": 0}, "time limit"),
        ({"time_limit_s": 10, "interval_s": 0}, "interval"),
        ({"time_limit_s": 10, "warmup_s": 10}, "warm-up"),
    ],
)
def test_bad_schedule_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule(1, ["kill"], **kwargs)


# Grudges ------------------------------------------------------------------------------------


def test_complete_grudge_and_isolate() -> None:
    grudge = complete_grudge([["n1"], ["n2", "n3"]])
    assert grudge == {
        "n1": frozenset({"n2", "n3"}),
        "n2": frozenset({"n1"}),
        "n3": frozenset({"n1"}),
    }
    assert grudge_isolate(THREE, "n1") == grudge
    assert grudge_pairs(grudge) == {("n2", "n1"), ("n3", "n1"), ("n1", "n2"), ("n1", "n3")}


@pytest.mark.parametrize("seed", range(5))
def test_one_and_halves(seed: int) -> None:
    one = grudge_one(FIVE, random.Random(seed))
    isolated = [n for n in FIVE if len(one[n]) == 4]
    assert len(isolated) == 1 and all(one[n] == set(isolated) for n in FIVE if n not in isolated)
    halves = grudge_halves(FIVE, random.Random(seed))
    sides = {sees(halves, n, FIVE) for n in FIVE}
    assert sorted(len(side) for side in sides) == [2, 3]
    assert set.union(*map(set, sides)) == set(FIVE)


@pytest.mark.parametrize("seed", range(5))
def test_majorities_ring_every_node_sees_its_own_majority(seed: int) -> None:
    grudge = grudge_majorities_ring(FIVE, random.Random(seed))
    views = [sees(grudge, n, FIVE) for n in FIVE]
    assert all(len(view) == 3 for view in views)  # a majority of 5
    assert len(set(views)) == 5  # no two the same
    assert all(n in sees(grudge, n, FIVE) for n in FIVE)
    # Symmetric: a drops b exactly when b drops a.
    assert all((a in grudge[b]) == (b in grudge[a]) for a, b in combinations(FIVE, 2))


@pytest.mark.parametrize("seed", range(5))
def test_bridge_two_halves_and_one_node_that_sees_both(seed: int) -> None:
    grudge = grudge_bridge(FIVE, random.Random(seed))
    bridges = [n for n in FIVE if not grudge[n] and all(n not in grudge[m] for m in FIVE)]
    assert len(bridges) == 1
    bridge = bridges[0]
    others = [n for n in FIVE if n != bridge]
    sides = {sees(grudge, n, FIVE) - {bridge} for n in others}
    assert sorted(len(side) for side in sides) == [2, 2]
    assert all(bridge in sees(grudge, n, FIVE) for n in others)


def test_grudges_are_seeded() -> None:
    for shape in (grudge_one, grudge_halves, grudge_majorities_ring, grudge_bridge):
        assert shape(FIVE, random.Random(3)) == shape(FIVE, random.Random(3))
    with pytest.raises(ValueError, match="at least 3"):
        grudge_bridge(["n1", "n2"], random.Random(1))


# Registry and settings ----------------------------------------------------------------------


def test_registry_names_every_fault_and_refuses_unknown_ones() -> None:
    for name in (
        "partition-one",
        "partition-leader",
        "partition-halves",
        "partition-majorities-ring",
        "partition-bridge",
        "kill",
        "kill-minority",
        "kill-all",
        "pause",
        "pause-leader",
        "restart-all",
    ):
        (fault,) = make_faults([name])
        assert fault.name == name and fault.sandbox_options == {}
    assert all(REGISTRY[name]().name == name for name in REGISTRY)
    with pytest.raises(ValueError, match="unknown fault partition-moon; known: "):
        make_faults(["partition-moon"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 4}, "nodes must be 3 or 5"),
        ({"faults": ("nope",)}, "unknown fault nope"),
        ({"rate": 0}, "rate"),
        ({"workers": 99}, "workers"),
        ({"name": "../x"}, "test name"),
        ({"time_limit_s": 5, "warmup_s": 6}, "warm-up"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_built(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)


# Reservation lifecycle (I5) -----------------------------------------------------------------


class Script:
    """A hand-written history of reservations on one campaign."""

    def __init__(self) -> None:
        clock = iter(range(0, 10**12, 10**6))
        self.history = History(None, lambda: next(clock))
        self.serial = 0

    def op(self, f: str, value: dict[str, Any], type_: str, result: dict[str, Any]) -> None:
        self.serial += 1
        invoked = self.history.invoke(
            0, f, {"campaign_id": "c:a", "key": f"k{self.serial}", **value}
        )
        self.history.complete(invoked, type_, result)  # type: ignore[arg-type]

    def reserve(self, rid: int, granted: int, type_: str = "ok") -> None:
        result = {"reservation_id": rid, "granted_micros": granted} if type_ == "ok" else {}
        self.op("reserve", {"amount_micros": granted}, type_, result)

    def commit(self, rid: int, amount: int, *, final: bool, type_: str = "ok") -> None:
        value = {"reservation_id": rid, "amount_micros": amount, "final": final}
        self.op("commit", value, type_, {"status": 200})

    def release(self, rid: int, type_: str = "ok") -> None:
        self.op("release", {"reservation_id": rid, "amount_micros": 0}, type_, {"status": 200})


def test_lifecycle_valid_partial_commits_then_final_or_release() -> None:
    script = Script()
    script.reserve(1, 1000)
    script.commit(1, 300, final=False)
    script.commit(1, 700, final=True)
    script.reserve(2, 500)
    script.commit(2, 100, final=False)
    script.release(2)
    script.release(2, type_="fail")  # refused after it closed: fine
    result = reservation_lifecycle(script.history.ops)
    assert result.valid == "valid", result
    assert result.detail["reservations_closed"] == 2
    assert reservation_lifecycle(Script().history.ops).valid == "unknown"


def test_canary_commit_on_a_released_reservation_is_invalid() -> None:
    script = Script()
    script.reserve(1, 1000)
    script.release(1)
    script.commit(1, 100, final=False)
    result = reservation_lifecycle(script.history.ops)
    assert result.valid == "invalid"
    assert "closed reservation" in result.offending[0]["problem"]


def test_canary_committed_more_than_granted_is_invalid() -> None:
    script = Script()
    script.reserve(1, 1000)
    script.commit(1, 600, final=False)
    script.commit(1, 600, final=False)
    result = reservation_lifecycle(script.history.ops)
    assert result.valid == "invalid"
    assert result.offending[0]["committed_micros"] == 1200


def test_canary_two_final_ops_and_a_commit_on_nothing_are_invalid() -> None:
    script = Script()
    script.reserve(1, 1000)
    script.commit(1, 100, final=True)
    script.release(1)
    problems = [o["problem"] for o in reservation_lifecycle(script.history.ops).offending]
    assert "two final commits or releases acknowledged" in problems
    orphan = Script()
    orphan.reserve(1, 1000)
    orphan.commit(9, 100, final=True)
    assert reservation_lifecycle(orphan.history.ops).offending[0]["problem"] == (
        "no granted reservation"
    )
    # With a reserve whose answer was lost, the commit may be on the reservation it made.
    orphan.reserve(0, 500, type_="info")
    assert reservation_lifecycle(orphan.history.ops).valid == "valid"
