"""The nemesis schedule of a run, drawn from one ``random.Random(seed)``: warm-up without
faults, then a fault started and stopped every ``interval_s`` until the time limit, then every
fault's stop (heal), quiet time, final reads. Pure and stdlib only; imports no budgetd module.

The same seed and settings give the same schedule, including the seed each fault's ``start``
gets for choosing its targets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

__all__ = ["Schedule", "Step", "schedule"]

#: Upper bound on a run's time limit (one day), so a typo cannot schedule forever.
TIME_LIMIT_MAX_S: Final = 86_400.0

Action = Literal["start", "stop"]
Phase = Literal["fault", "heal"]


@dataclass(frozen=True)
class Step:
    """At ``at_s`` seconds after the workload started: ``action`` of ``fault``. A start
    carries ``seed``, the seed of the Random its targets are drawn from; ``phase`` is
    ``heal`` for the stops after the time limit."""

    at_s: float
    fault: str
    action: Action
    phase: Phase = "fault"
    seed: int | None = None


@dataclass(frozen=True)
class Schedule:
    seed: int
    faults: tuple[str, ...]
    warmup_s: float
    interval_s: float
    time_limit_s: float
    quiet_s: float
    steps: tuple[Step, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def fault_steps(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.phase == "fault")

    @property
    def heal_steps(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.phase == "heal")


def schedule(
    seed: int,
    faults: Sequence[str],
    *,
    time_limit_s: float,
    interval_s: float = 10.0,
    warmup_s: float = 5.0,
    quiet_s: float = 5.0,
) -> Schedule:
    """Warm-up ``[0, warmup_s)`` without faults; then, from ``warmup_s``, a fault drawn from
    ``faults`` is started, stopped ``interval_s`` later, and the next one started another
    ``interval_s`` later, as long as the stop falls within ``time_limit_s``; at
    ``time_limit_s`` every fault's stop (heal). ``quiet_s`` is kept for the runner (recovery
    time before the final reads). No faults: only warm-up and workload."""
    if not 0 < time_limit_s <= TIME_LIMIT_MAX_S:
        raise ValueError(f"time limit must be in (0, {TIME_LIMIT_MAX_S:.0f}] s, got {time_limit_s}")
    if interval_s <= 0:
        raise ValueError(f"nemesis interval must be > 0 s, got {interval_s}")
    if not 0 <= warmup_s < time_limit_s:
        raise ValueError(f"warm-up must be in [0, time limit), got {warmup_s}")
    if quiet_s < 0:
        raise ValueError(f"quiet time must be >= 0 s, got {quiet_s}")
    if len(set(faults)) != len(faults):
        raise ValueError(f"a fault is named twice: {', '.join(faults)}")
    rng = random.Random(seed)
    names = tuple(faults)
    steps: list[Step] = []
    at = warmup_s
    while names and at + interval_s <= time_limit_s:
        fault = rng.choice(names)
        steps.append(Step(round(at, 3), fault, "start", "fault", rng.getrandbits(32)))
        steps.append(Step(round(at + interval_s, 3), fault, "stop", "fault"))
        at += 2 * interval_s
    steps += [Step(round(time_limit_s, 3), fault, "stop", "heal") for fault in names]
    return Schedule(seed, names, warmup_s, interval_s, time_limit_s, quiet_s, tuple(steps))
