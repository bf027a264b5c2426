"""The WAN-latency fault: seeded one-way delays (and jitter) between every pair of data
centers, set on start and cleared on stop; plus the data-center layouts and WAN Raft timers its
sandboxes use. Imports no budgetd module (nor jepsen_lite.nemesis: the Fault protocol is
structural).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jepsen_lite.relay import DELAY_MS_MAX
from jepsen_lite.sandbox import NODES_MAX, Sandbox

__all__ = ["DC_NAMES", "WAN_RAFT", "WanLatency", "dc_layout"]

#: The data centers of a WAN sandbox, in the order nodes fill them.
DC_NAMES: Final = ("dc-a", "dc-b", "dc-c")
#: ``[raft]`` timers for cross-data-center round trips, as configs/dc5-node.toml sets them:
#: heartbeats well above the round trip, elections several round trips long.
WAN_RAFT: Final[Mapping[str, int]] = {
    "election_timeout_min_ms": 1000,
    "election_timeout_max_ms": 3000,
    "heartbeat_ms": 150,
    "leader_fallback_ms": 4000,
    "connection_timeout_ms": 3000,
    "reconnect_ms": 1000,
    "tick_ms": 5,
}


def dc_layout(size: int) -> dict[str, str]:
    """Node id → data center for ``size`` nodes spread as evenly as possible over DC_NAMES,
    larger groups first: 3 nodes 1+1+1, 5 nodes 2+2+1 (n1 n2 | n3 n4 | n5)."""
    if not 1 <= size <= NODES_MAX:
        raise ValueError(f"size must be in 1..{NODES_MAX}, got {size}")
    counts = [size // len(DC_NAMES) + (i < size % len(DC_NAMES)) for i in range(len(DC_NAMES))]
    names = [dc for dc, count in zip(DC_NAMES, counts, strict=True) for _ in range(count)]
    return {f"n{i}": dc for i, dc in enumerate(names, start=1)}


@dataclass
class WanLatency:
    """Fault ``wan-latency`` on a sandbox of ``size`` nodes laid out by ``dc_layout`` with
    WAN_RAFT timers (``sandbox_options``). ``start`` gives every pair of distinct data centers
    a one-way delay drawn from [``one_way_ms_min``, ``one_way_ms_max``] and a jitter from
    [0, ``jitter_share`` × that delay], rounded to 0.1 ms; ``stop`` clears every delay. Both
    may be called again after a failure half-way."""

    size: int = 5
    one_way_ms_min: float = 20.0
    one_way_ms_max: float = 80.0
    jitter_share: float = 0.25
    name: str = "wan-latency"
    sandbox_options: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.one_way_ms_min <= self.one_way_ms_max:
            raise ValueError(
                f"need 0 <= one_way_ms_min <= one_way_ms_max, got "
                f"{self.one_way_ms_min} and {self.one_way_ms_max}"
            )
        if not 0.0 <= self.jitter_share <= 1.0:
            raise ValueError(f"jitter_share must be in [0, 1], got {self.jitter_share}")
        if self.one_way_ms_max * (1.0 + self.jitter_share) > DELAY_MS_MAX:
            raise ValueError(f"one-way delay plus jitter above DELAY_MS_MAX={DELAY_MS_MAX} ms")
        self.sandbox_options = {"dcs": dc_layout(self.size), "raft": dict(WAN_RAFT)}

    def start(self, sandbox: Sandbox, rng: random.Random) -> dict[str, Any]:
        """Delay every inter-data-center link; the links set, as recorded in the history."""
        if sandbox.dcs is None:
            raise ValueError("wan-latency needs a sandbox built with its sandbox_options (dcs)")
        links = []
        for dc_a, dc_b in itertools.combinations(sorted(set(sandbox.dcs.values())), 2):
            one_way_ms = round(rng.uniform(self.one_way_ms_min, self.one_way_ms_max), 1)
            jitter_ms = round(rng.uniform(0.0, self.jitter_share * one_way_ms), 1)
            jitter_ms = min(jitter_ms, one_way_ms)
            sandbox.set_latency(dc_a, dc_b, one_way_ms=one_way_ms, jitter_ms=jitter_ms)
            links.append({"dcs": [dc_a, dc_b], "one_way_ms": one_way_ms, "jitter_ms": jitter_ms})
        return {"links": links}

    def stop(self, sandbox: Sandbox) -> dict[str, Any]:
        """Clear every delay (nodes are never stopped by this fault)."""
        sandbox.clear_latency()
        return {"links": []}
