"""Clock faults on budgetd nodes through libfaketime (``Sandbox(..., faketime=True)``): skewed
and drifting wall clocks, and wall-clock jumps (across a local midnight too), each undone by
``stop``. Implements the Fault protocol structurally; imports no budgetd module and not
jepsen_lite.nemesis.

What is faked: each node's wall clock only (CLOCK_REALTIME: ``time.time``, the ledger's batch
stamps, the HTTP ``Date`` header). CLOCK_MONOTONIC and CLOCK_MONOTONIC_RAW stay real
(FAKETIME_DONT_FAKE_MONOTONIC), so Raft timers (pysyncobj reads MONOTONIC_RAW), request
timeouts and the proposer's sweep run on real time: real hosts' NTP steps and drift never move
them either. A rate is emulated by the harness stepping the offset every 0.1 s (libfaketime's
own speed factor stalls Python's threads: see Sandbox.set_clock).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from jepsen_lite.sandbox import Sandbox

__all__ = ["JUMPS", "ClockJump", "ClockSkew", "Target", "midnight_offset_s", "pick_nodes"]

#: Which node a jump hits: the current leader, a follower, or any running node.
Target = Literal["leader", "follower", "any"]
#: Kinds of jump ClockJump chooses from: (name, seconds; None for "just past the next / just
#: before the previous local midnight").
JUMPS: Final[tuple[tuple[str, float | None], ...]] = (
    ("forward-minutes", 17 * 60.0),
    ("back-minutes", -17 * 60.0),
    ("forward-hours", 5 * 3600.0),
    ("back-hours", -5 * 3600.0),
    ("forward-past-midnight", None),
    ("back-past-midnight", None),
)
#: How far past a midnight a midnight jump lands.
MIDNIGHT_MARGIN_S: Final = 30.0


def midnight_offset_s(
    timezone: str, *, forward: bool, now: float | None = None, margin_s: float = MIDNIGHT_MARGIN_S
) -> float:
    """The clock offset that puts ``now`` ``margin_s`` past the next local midnight of
    ``timezone`` (forward) or ``margin_s`` before the last one (back)."""
    zone = ZoneInfo(timezone)
    now = time.time() if now is None else now
    local = dt.datetime.fromtimestamp(now, zone)
    midnight = dt.datetime.combine(local.date(), dt.time(), zone)
    if forward:
        midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), zone)
        return midnight.timestamp() + margin_s - now
    return midnight.timestamp() - margin_s - now


def _running(sandbox: Sandbox) -> list[str]:
    return [node.node_id for node in sandbox.nodes if node.running and not node.paused]


def _leader(sandbox: Sandbox, among: Sequence[str]) -> str | None:
    for node_id in among:
        view = sandbox.view(node_id)
        if view is not None and view.get("leader_id") == node_id:
            return node_id
    return None


def pick_nodes(sandbox: Sandbox, rng: random.Random, target: Target) -> str:
    """One running node: the self-declared leader, a follower, or any (a random one when no
    leader answers)."""
    running = _running(sandbox) or sandbox.node_ids
    leader = _leader(sandbox, running) if target != "any" else None
    if target == "leader" and leader is not None:
        return leader
    if target == "follower" and leader is not None and len(running) > 1:
        return rng.choice([n for n in running if n != leader])
    return rng.choice(running)


def _reset_all(sandbox: Sandbox) -> dict[str, Any]:
    """Every node's clock back to real time (files only: never stops a node)."""
    reset = []
    for node_id in sandbox.node_ids:
        if sandbox.clock(node_id) != (0.0, 1.0):
            reset.append(node_id)
        sandbox.reset_clock(node_id)
    return {"reset": reset}


class ClockSkew:
    """``start``: between one and all nodes (chosen with ``rng``) get a wall-clock offset
    uniform in ±``max_offset_s`` and a rate log-uniform in [``rate_min``, ``rate_max``];
    ``stop``: every clock back to real time."""

    name = "clock-skew"
    sandbox_options: Mapping[str, Any] = {"faketime": True}

    def __init__(
        self, *, max_offset_s: float = 30.0, rate_min: float = 0.5, rate_max: float = 2.0
    ) -> None:
        if max_offset_s < 0:
            raise ValueError(f"max_offset_s must be ≥ 0, got {max_offset_s}")
        if not 0 < rate_min <= rate_max:
            raise ValueError(f"need 0 < rate_min ≤ rate_max, got {rate_min}, {rate_max}")
        self.max_offset_s = max_offset_s
        self.rate_min = rate_min
        self.rate_max = rate_max

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        ids = sandbox.node_ids
        chosen = sorted(rng.sample(ids, rng.randint(1, len(ids))))
        clocks: dict[str, dict[str, float]] = {}
        for node_id in chosen:
            offset_s = round(rng.uniform(-self.max_offset_s, self.max_offset_s), 3)
            rate = round(self.rate_min * (self.rate_max / self.rate_min) ** rng.random(), 4)
            sandbox.set_clock(node_id, offset_s=offset_s, rate=rate)
            clocks[node_id] = {"offset_s": offset_s, "rate": rate}
        return {"clocks": clocks}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        return _reset_all(sandbox)


class ClockJump:
    """``start``: one node's wall clock (``target``: leader, follower or any) jumps by one of
    ``kinds`` (JUMPS names, chosen with ``rng``): minutes or hours forward or back, or across
    the next / last local midnight of ``timezone`` (the campaigns' zone); ``stop`` jumps every
    clock back to real time."""

    name = "clock-jump"
    sandbox_options: Mapping[str, Any] = {"faketime": True}

    def __init__(
        self,
        *,
        target: Target = "any",
        timezone: str = "UTC",
        kinds: Sequence[str] | None = None,
    ) -> None:
        known = dict(JUMPS)
        self.kinds = tuple(kinds) if kinds is not None else tuple(known)
        unknown = [k for k in self.kinds if k not in known]
        if unknown or not self.kinds:
            raise ValueError(f"unknown jump kinds {unknown} (known: {', '.join(known)})")
        ZoneInfo(timezone)  # ZoneInfoNotFoundError for a zone that does not exist
        self.target = target
        self.timezone = timezone

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        node_id = pick_nodes(sandbox, rng, self.target)
        kind = rng.choice(self.kinds)
        offset_s = dict(JUMPS)[kind]
        if offset_s is None:
            offset_s = midnight_offset_s(self.timezone, forward=kind.startswith("forward"))
        offset_s = round(offset_s, 3)
        sandbox.set_clock(node_id, offset_s=offset_s)
        return {"node": node_id, "kind": kind, "offset_s": offset_s, "timezone": self.timezone}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        return _reset_all(sandbox)
