"""Power-loss faults: cut the power of one node, a minority, the leader, or every node at once,
then bring them back on what their disks kept (jepsen_lite.lazyfs's model).

Owns only the choice of victims and the order of power off and power on; the Sandbox does both
(`Sandbox.power_off`, `Sandbox.start`). Implements the Fault protocol structurally (no import of
jepsen_lite.nemesis); imports no budgetd module.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from jepsen_lite.sandbox import Sandbox, SandboxError

__all__ = ["RESTART_WAIT_S", "PowerLoss", "PowerLossAll", "Target"]

#: How long ``stop`` waits for every restarted node to answer HTTP.
RESTART_WAIT_S: Final = 30.0
#: ``one``: a random node; ``minority``: a random minority (at least one); ``leader``: the node
#: the most nodes name as leader (a random node if none does).
Target = Literal["one", "minority", "leader"]
_OPTIONS: Final[Mapping[str, Any]] = {"power_loss": True}


def _leader(sandbox: Sandbox) -> str | None:
    votes: dict[str, int] = {}
    for node in sandbox.nodes:
        if not node.running:
            continue
        view = sandbox.view(node.node_id)
        leader = view.get("leader_id") if view else None
        if isinstance(leader, str) and leader in sandbox.node_ids:
            votes[leader] = votes.get(leader, 0) + 1
    return max(sorted(votes), key=lambda n: votes[n]) if votes else None


def _power_on(sandbox: Sandbox, node_ids: list[str]) -> list[str]:
    """Start every node of ``node_ids`` that is down; wait until each answers HTTP."""
    started = [n for n in node_ids if not sandbox.node(n).running]
    for node_id in started:
        sandbox.start(node_id)
    deadline = time.monotonic() + RESTART_WAIT_S
    waiting = list(node_ids)
    while waiting:
        waiting = [n for n in waiting if sandbox.view(n) is None]
        if not waiting:
            break
        down = [n for n in waiting if not sandbox.node(n).running]
        if down or time.monotonic() > deadline:
            raise SandboxError(
                f"after power on, {', '.join(down or waiting)} "
                f"{'exited' if down else f'did not answer within {RESTART_WAIT_S:.0f} s'}"
            )
        time.sleep(0.1)
    return started


@dataclass
class PowerLoss:
    """Power off ``target`` nodes (kill -9 plus the loss of every unsynced write), and on
    ``stop`` power them on again."""

    target: Target = "one"
    name: str = "power-loss"
    sandbox_options: Mapping[str, Any] = field(default_factory=lambda: dict(_OPTIONS))
    victims: list[str] = field(default_factory=list)

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        ids = sandbox.node_ids
        if self.target == "leader":
            leader = _leader(sandbox)
            chosen = [leader] if leader is not None else [rng.choice(ids)]
        elif self.target == "minority":
            size = max(1, (len(ids) - 1) // 2)
            chosen = sorted(rng.sample(ids, rng.randint(1, size)))
        else:
            chosen = [rng.choice(ids)]
        self.victims = sorted(set(self.victims) | set(chosen))
        for node_id in chosen:
            sandbox.power_off(node_id)
        return {"target": self.target, "nodes": chosen}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        # Every node, not only this fault's victims: stop must leave all of them running.
        started = _power_on(sandbox, sandbox.node_ids)
        self.victims = []
        return {"nodes": started}


@dataclass
class PowerLossAll:
    """Every node loses power at once (all are frozen by SIGSTOP, then each is killed and its
    disk cut), then all come back: only what each node fsynced can hold acknowledged writes."""

    name: str = "power-loss-all"
    sandbox_options: Mapping[str, Any] = field(default_factory=lambda: dict(_OPTIONS))

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        ids = sandbox.node_ids
        for node_id in ids:  # freeze all first: none acts after the first one's cut
            if sandbox.node(node_id).running and not sandbox.node(node_id).paused:
                sandbox.pause(node_id)
        for node_id in ids:
            sandbox.power_off(node_id)
        return {"nodes": ids}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        return {"nodes": _power_on(sandbox, sandbox.node_ids)}
