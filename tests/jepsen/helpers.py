"""Waiting, leader and checker helpers shared by the jepsen-lite tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite import History, Op, Sandbox, Workload, preflight
from jepsen_lite.checkers import (
    WRITES,
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
from jepsen_lite.history import pairs
from jepsen_lite.workload import CAMPAIGNS, spent_of

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


def nemesis(history: History, f: str, value: dict[str, Any], action: Callable[[], object]) -> None:
    invoked = history.invoke("nemesis", f, value)
    action()
    history.complete(invoked, "info")  # a fault's effect is never certain


def resend_phase(
    workload: Workload, leader: str, ops: list[Op], tmp_path: Path
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int | None]]]:
    """I3's re-sends after heal: every ok write once, every info (or unfinished) write twice,
    each to the leader with its original key and body; the leader's strong totals around
    each round. Written to resends.jsonl."""
    oks = [i for i, c in pairs(ops) if i.f in WRITES and c is not None and c.type == "ok"]
    infos = [i for i, c in pairs(ops) if i.f in WRITES and (c is None or c.type == "info")]

    def totals() -> dict[str, int | None]:
        return {c: workload.read(leader, c, consistency="strong") for c in CAMPAIGNS}

    phases = {"before": totals()}
    resends = workload.resend(leader, oks, round_=1, limit_s=20.0)
    phases["after_ok"] = totals()
    resends += workload.resend(leader, infos, round_=1, limit_s=10.0)
    phases["after_info_1"] = totals()
    resends += workload.resend(leader, infos, round_=2, limit_s=10.0)
    phases["after_info_2"] = totals()
    rows = [asdict(r) for r in resends]
    with (tmp_path / "resends.jsonl").open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    return rows, phases


@dataclass(frozen=True)
class Settled:
    """What a hand-written run knows after heal: every node's view once they agree on one
    digest (or as they were after 20 s), the final states read strongly and locally from every
    node, the leader the writes were re-sent to, and the re-send phase (I3)."""

    final_views: dict[str, dict[str, Any] | None]
    strong: dict[str, dict[str, dict[str, Any] | None]]
    local: dict[str, dict[str, dict[str, Any] | None]]
    leader: str
    resends: list[dict[str, Any]]
    totals: dict[str, dict[str, int | None]]
    resend_s: float

    def checkers(self, ops: list[Op], samples: Iterable[Sample]) -> dict[str, Result]:
        return every_checker(
            ops,
            strong=self.strong,
            local=self.local,
            resends=self.resends,
            totals=self.totals,
            final_views=self.final_views,
            samples=samples,
        )


def converged_views(sandbox: Sandbox, ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """Every node's view once they all agree on one digest (up to 20 s); the last views read
    otherwise, for the convergence checker to judge."""

    def views() -> dict[str, dict[str, Any] | None] | None:
        got = {n: sandbox.view(n, fresh_digest=True) for n in ids}
        return got if convergence(got).valid == "valid" else None

    try:
        return until(views, "all nodes on one digest", limit_s=20.0)
    except AssertionError:
        return {n: sandbox.view(n, fresh_digest=True) for n in ids}


def settle(sandbox: Sandbox, workload: Workload, history: History, tmp_path: Path) -> Settled:
    """After heal: wait for one digest, read the final states, re-send every write (I3)."""
    ids = sandbox.node_ids
    final_views = converged_views(sandbox, ids)
    strong = workload.final_states(consistency="strong")
    local = workload.final_states(consistency="local")
    leader = until(lambda: agreed_leader(sandbox, ids), "a leader for the re-sends")
    started = time.monotonic()
    resends, totals = resend_phase(workload, leader, history.ops, tmp_path)
    return Settled(final_views, strong, local, leader, resends, totals, time.monotonic() - started)
