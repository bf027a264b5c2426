"""Waiting, leader and checker helpers shared by the jepsen-lite tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from jepsen_lite import Op, Sandbox, preflight
from jepsen_lite.checkers import (
    Result,
    Sample,
    convergence,
    election_safety,
    exactly_once,
    no_lost_spend,
    no_overspend,
    stale_reads,
    stats,
)
from jepsen_lite.workload import spent_of

WAIT_S = 30.0
#: Why the sandbox cannot run here (not root, no ip/nft), or None.
REASON = preflight()
needs_sandbox = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def until(
    condition: Callable[[], Any], what: str, limit_s: float = WAIT_S, step_s: float = 0.1
) -> Any:
    """Poll ``condition`` until it is truthy (its value), or fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(step_s)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what} (last: {last!r})")


def agreed_leader(sandbox: Sandbox, among: list[str]) -> str | None:
    """The leader every node in ``among`` names, if they all name the same one of them."""
    views = [sandbox.view(node_id) for node_id in among]
    leaders = {view.get("leader_id") if view else None for view in views}
    if len(leaders) == 1:
        leader = leaders.pop()
        if leader in among:
            return str(leader)
    return None


def every_checker(
    ops: list[Op],
    *,
    strong: Mapping[str, Any],
    local: Mapping[str, Any],
    resends: list[dict[str, Any]],
    totals: dict[str, dict[str, int | None]],
    final_views: Mapping[str, Mapping[str, Any] | None],
    samples: Iterable[Sample],
) -> dict[str, Result]:
    """The seven checkers of a hand-written run (the runner's own are in jepsen_lite.runner):
    ``strong``/``local`` are the final states read from every node, ``resends`` and ``totals``
    what the I3 re-send phase saw."""
    states = {f"{n}/strong": v for n, v in strong.items()} | {
        f"{n}/local": v for n, v in local.items()
    }
    once = exactly_once(ops, resends, totals)
    return {
        "no_lost_spend": no_lost_spend(ops, spent_of(states), once.detail["applied"]),
        "exactly_once": once,
        "stale_reads": stale_reads(ops),
        "no_overspend": no_overspend(ops, states),
        "stats": stats(ops),
        "convergence": convergence(final_views),
        "election_safety": election_safety(samples),
    }
