"""The nemesis: the Fault protocol every fault keeps, the faults of the network and the
processes (partitions with Jepsen's grudges, kill -9, pause, restart of every node) and the
registry of fault names a run is given. Imports no budgetd module.

A fault module of its own (clock, disk, WAN…) keeps the protocol structurally, without
importing this module; ``REGISTRY`` maps its name to a factory and is a plain dict.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final, Protocol

from jepsen_lite import net
from jepsen_lite.clock import ClockJump, ClockSkew
from jepsen_lite.powerloss import PowerLoss, PowerLossAll
from jepsen_lite.sandbox import Sandbox, SandboxError
from jepsen_lite.wan import WanLatency

__all__ = [
    "KILL_TARGETS",
    "PARTITIONS",
    "PAUSE_TARGETS",
    "REGISTRY",
    "Fault",
    "Kill",
    "Partition",
    "Pause",
    "RestartAll",
    "current_leader",
    "ensure_running",
    "make_faults",
]

#: How long a restarted node may take to answer ``/v1/cluster`` before the next one goes down.
NODE_UP_S: Final = 20.0
#: The partition shapes (Jepsen's grudges; ``leader`` isolates the current leader).
PARTITIONS: Final = ("one", "leader", "halves", "majorities-ring", "bridge")
KILL_TARGETS: Final = ("one", "leader", "minority", "all")
PAUSE_TARGETS: Final = ("one", "leader")
RESTART_MODES: Final = ("rolling", "all-at-once")


class Fault(Protocol):
    """One kind of fault. ``start`` injects it (targets chosen with ``rng``) and returns a
    JSON-able value for the history; ``stop`` undoes it and leaves every node running and
    reachable. Both are safe to call after a previous call failed half-way."""

    name: str
    #: Keyword arguments this fault needs passed to Sandbox(...) when the run builds it.
    sandbox_options: Mapping[str, Any]

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]: ...

    def stop(self, sandbox: Sandbox) -> dict[str, Any]: ...


# Helpers ------------------------------------------------------------------------------------


def current_leader(sandbox: Sandbox) -> str | None:
    """The node claiming leadership (its own id as ``leader_id``) with the highest term, among
    the running, unpaused nodes; None when no node claims it."""
    best: tuple[int, str] | None = None
    for node in sandbox.nodes:
        if not node.running or node.paused:
            continue
        view = sandbox.view(node.node_id)
        if view is None or view.get("leader_id") != node.node_id:
            continue
        term = int(view.get("term", 0))
        if best is None or term > best[0]:
            best = (term, node.node_id)
    return None if best is None else best[1]


def _target(sandbox: Sandbox, rng: random.Random, mode: str) -> tuple[str, dict[str, Any]]:
    """One node: the leader (``mode == "leader"``; a random node when none claims it, noted in
    the value) or a random one."""
    nodes = sandbox.node_ids
    if mode == "leader":
        leader = current_leader(sandbox)
        if leader is not None:
            return leader, {"leader": leader}
        return rng.choice(nodes), {"leader": None}
    return rng.choice(nodes), {}


def wait_up(sandbox: Sandbox, node_id: str, limit_s: float = NODE_UP_S) -> bool:
    """Poll until ``node_id`` answers ``/v1/cluster``; whether it did within ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if sandbox.node(node_id).running and sandbox.view(node_id) is not None:
            return True
        time.sleep(0.1)
    return False


def ensure_running(sandbox: Sandbox) -> dict[str, list[str]]:
    """Resume every paused node and start every node whose process is not running; the ids
    of each."""
    resumed, started = [], []
    for node in sandbox.nodes:
        if node.running and node.paused:
            sandbox.resume(node.node_id)
            resumed.append(node.node_id)
        elif not node.running:
            sandbox.start(node.node_id)
            started.append(node.node_id)
    return {"resumed": resumed, "started": started}


# Partitions ---------------------------------------------------------------------------------


class Partition:
    """Cut the links a grudge names (``kind`` in PARTITIONS); ``stop`` heals every link."""

    def __init__(self, kind: str) -> None:
        if kind not in PARTITIONS:
            raise ValueError(f"unknown partition {kind!r}; one of {', '.join(PARTITIONS)}")
        self.kind = kind
        self.name = f"partition-{kind}"
        self.description = {
            "one": "isolate a random node",
            "leader": "isolate the leader (highest term claiming it)",
            "halves": "random halves: a minority against a majority",
            "majorities-ring": "every node sees a majority, no two the same (5 nodes)",
            "bridge": "two halves and one node that sees both (5 nodes)",
        }[kind]
        self.sandbox_options: Mapping[str, Any] = {}

    def grudge(self, sandbox: Sandbox, rng: random.Random) -> tuple[net.Grudge, dict[str, Any]]:
        nodes = sandbox.node_ids
        if self.kind == "leader":
            node, extra = _target(sandbox, rng, "leader")
            return net.grudge_isolate(nodes, node), extra
        shapes: dict[str, Callable[[list[str], random.Random], net.Grudge]] = {
            "one": net.grudge_one,
            "halves": net.grudge_halves,
            "majorities-ring": net.grudge_majorities_ring,
            "bridge": net.grudge_bridge,
        }
        return shapes[self.kind](nodes, rng), {}

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        grudge, extra = self.grudge(sandbox, rng)
        sandbox.net.apply_grudge(grudge)
        drops = {node: sorted(sources) for node, sources in sorted(grudge.items()) if sources}
        return {"partition": self.kind, "drops_from": drops, **extra}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        sandbox.net.heal()
        return {"healed": True}


# Processes ----------------------------------------------------------------------------------


class Kill:
    """kill -9 of ``target`` (one, leader, minority, all; ``None``: drawn from KILL_TARGETS at
    each start); ``stop`` starts every node that is not running, on its own data dir."""

    def __init__(self, target: str | None = None) -> None:
        if target is not None and target not in KILL_TARGETS:
            raise ValueError(f"unknown kill target {target!r}; one of {', '.join(KILL_TARGETS)}")
        self.target = target
        self.name = "kill" if target is None else f"kill-{target}"
        self.description = f"kill -9 {target or 'one, the leader, a minority or all'}; restart"
        self.sandbox_options: Mapping[str, Any] = {}

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        target = self.target or rng.choice(KILL_TARGETS)
        nodes = sandbox.node_ids
        extra: dict[str, Any] = {}
        if target in ("one", "leader"):
            node, extra = _target(sandbox, rng, target)
            victims = [node]
        elif target == "minority":
            victims = sorted(rng.sample(nodes, (len(nodes) - 1) // 2 or 1))
        else:
            victims = list(nodes)
        for node_id in victims:
            sandbox.kill(node_id)
        return {"target": target, "killed": victims, **extra}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        return ensure_running(sandbox)


class Pause:
    """SIGSTOP of one node or the leader (``None``: drawn at each start); ``stop`` sends
    SIGCONT to every paused node (and starts any that is not running)."""

    def __init__(self, target: str | None = None) -> None:
        if target is not None and target not in PAUSE_TARGETS:
            raise ValueError(f"unknown pause target {target!r}; one of {', '.join(PAUSE_TARGETS)}")
        self.target = target
        self.name = "pause" if target is None else f"pause-{target}"
        self.description = f"SIGSTOP {target or 'one node or the leader'}; SIGCONT"
        self.sandbox_options: Mapping[str, Any] = {}

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        target = self.target or rng.choice(PAUSE_TARGETS)
        node, extra = _target(sandbox, rng, target)
        if not sandbox.node(node).running:
            raise SandboxError(f"{node} is not running")
        sandbox.pause(node)
        return {"target": target, "paused": node, **extra}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        return ensure_running(sandbox)


class RestartAll:
    """A clean restart (SIGTERM, then start on the same data dir) of every node: ``rolling``
    (one at a time, each answering again before the next) or ``all-at-once``; ``None`` draws
    the mode at each start. The restart happens in ``start``; ``stop`` makes sure every node
    runs."""

    def __init__(self, mode: str | None = None) -> None:
        if mode is not None and mode not in RESTART_MODES:
            raise ValueError(f"unknown restart mode {mode!r}; one of {', '.join(RESTART_MODES)}")
        self.mode = mode
        self.name = "restart-all" if mode is None else f"restart-{mode}"
        self.description = f"restart every node ({mode or 'rolling or all at once'})"
        self.sandbox_options: Mapping[str, Any] = {}

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        mode = self.mode or rng.choice(RESTART_MODES)
        nodes = sandbox.node_ids
        order = list(nodes)
        late: list[str] = []
        if mode == "rolling":
            rng.shuffle(order)
            for node_id in order:
                sandbox.stop(node_id)
                sandbox.start(node_id)
                if not wait_up(sandbox, node_id):
                    late.append(node_id)
        else:
            for node_id in order:
                sandbox.stop(node_id)
            for node_id in order:
                sandbox.start(node_id)
        return {"mode": mode, "order": order, "not_up_in_time": late}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        return ensure_running(sandbox)


# Registry -----------------------------------------------------------------------------------


def _named(fault: Fault, name: str) -> Fault:
    """``fault`` under the registry name of its variant (the history records it by name)."""
    fault.name = name
    return fault


#: Fault name → factory. A fault module registers itself with ``REGISTRY[name] = factory``.
REGISTRY: dict[str, Callable[[], Fault]] = {
    **{f"partition-{kind}": partial(Partition, kind) for kind in PARTITIONS},
    "kill": Kill,
    **{f"kill-{target}": partial(Kill, target) for target in KILL_TARGETS},
    "pause": Pause,
    **{f"pause-{target}": partial(Pause, target) for target in PAUSE_TARGETS},
    "restart-all": RestartAll,
    **{f"restart-{mode}": partial(RestartAll, mode) for mode in RESTART_MODES},
    # Clocks (libfaketime; only the wall clock moves): skew and drift, jumps of minutes, hours
    # or across a local midnight, on any node or on the leader.
    "clock-skew": ClockSkew,
    "clock-jump": ClockJump,
    "clock-jump-leader": lambda: _named(ClockJump(target="leader"), "clock-jump-leader"),
    # Power loss (lazyfs: every write a node did not fsync is gone).
    "power-loss": PowerLoss,
    **{
        f"power-loss-{target}": partial(PowerLoss, target, name=f"power-loss-{target}")
        for target in ("minority", "leader")
    },
    "power-loss-all": PowerLossAll,
    # Latency between data centers (a relay in the control namespace): 5 nodes 2+2+1, or 3 nodes
    # in three data centers.
    "wan-latency": WanLatency,
    "wan-latency-3": partial(WanLatency, 3, name="wan-latency-3"),
}


def make_faults(names: list[str] | tuple[str, ...]) -> list[Fault]:
    """One fault per name, in order; ValueError naming the unknown ones and the known ones."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ValueError(
            f"unknown fault {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"a fault is named twice: {', '.join(names)}")
    return [REGISTRY[name]() for name in names]
