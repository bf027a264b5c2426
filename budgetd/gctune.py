"""Garbage-collector settings for a budgetd process. Imports only the stdlib (and budgetd's
stdlib-only `Distribution`).

The ledger holds millions of long-lived objects (one `Reservation` each, which the cyclic
collector must track) and makes few reference cycles. CPython's collector rescans every tracked
object of a generation when it collects it, holding the interpreter lock meanwhile: on a node
that does the Raft thread's work too, a pause over the election timeout deposes a leader.
Measured on the pure ledger (3M reserves, 2 vCPUs): with thresholds (100,000, 50, 1,000) a
middle-generation collection scanned about 5M survivors in one 0.9 s pause; with the defaults,
ops/s drop by about a quarter and snapshot decoding takes four times as long (full collections
rescan the whole ledger each time it grows by a quarter).

A node therefore:
- freezes (`gc.freeze`) what it has loaded, and again after every collection of the middle or
  old generation: survivors of two collections are long-lived, and are never rescanned.
  Reference counting still frees a frozen object; only a reference cycle among frozen objects is
  never reclaimed (`budgetd_gc_frozen_objects` shows the frozen set, which should follow the
  ledger's size);
- keeps the young generations small, so no collection scans more than about 60,000 objects;
- pauses the collector while it encodes or decodes a snapshot, and after installing one (which
  drops the old ledger, whose campaign tree holds cycles) collects everything once and freezes.

`node_gc.figures()` gives the pauses per generation and the frozen count (metrics);
`node_gc.take_slowest()` the slowest pause since it was last asked (the node's warning).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from budgetd.distribution import Distribution, DistributionSnapshot

__all__ = [
    "NODE_THRESHOLDS",
    "PAUSE_BOUNDS_S",
    "GcFigures",
    "node_gc",
    "paused",
    "settle",
    "tune_for_node",
]

#: (young, middle, old) thresholds used by a running node: a young collection after 20,000 net
#: new tracked objects, a middle one after 2 young ones (then its survivors are frozen).
NODE_THRESHOLDS: Final = (20_000, 2, 1_000)
#: Bucket bounds, in seconds, of the pause histogram.
PAUSE_BOUNDS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GENERATIONS: Final = 3


@dataclass(frozen=True, slots=True)
class GcFigures:
    """Collections of this process since `tune_for_node`: pause histogram per generation (index
    = generation) and the objects now frozen."""

    pauses: tuple[DistributionSnapshot, ...]
    frozen_objects: int


class NodeGc:
    """The collector's callback: times every collection, freezes survivors of the older
    generations. Installed once per process; the callback runs on whichever thread allocated."""

    def __init__(self) -> None:
        self._pauses = tuple(Distribution(PAUSE_BOUNDS_S) for _ in range(GENERATIONS))
        self._started = 0.0
        self._slowest: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self.installed = False

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self._on_collection)
            self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._on_collection)
            self.installed = False

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause_s = time.perf_counter() - self._started
        generation = info["generation"]
        self._pauses[generation].observe(pause_s)
        if generation >= 1:
            gc.freeze()  # the survivors (now all in the old generation) are long-lived
        with self._lock:
            if self._slowest is None or pause_s > self._slowest[0]:
                self._slowest = (pause_s, generation)

    def take_slowest(self) -> tuple[float, int] | None:
        """The slowest (pause seconds, generation) since the last call, and forget it."""
        with self._lock:
            slowest, self._slowest = self._slowest, None
        return slowest

    def figures(self) -> GcFigures:
        return GcFigures(
            pauses=tuple(d.snapshot() for d in self._pauses),
            frozen_objects=gc.get_freeze_count(),
        )


#: The process's collector watch (one per process, as the collector is).
node_gc: Final = NodeGc()


def tune_for_node() -> None:
    """Move everything allocated so far out of the collector's sight, keep the young generations
    small, and freeze the survivors of every later middle or old collection."""
    settle()
    gc.set_threshold(*NODE_THRESHOLDS)
    node_gc.install()


def settle() -> None:
    """Collect every generation, the frozen objects too, then freeze what is left: one full pause
    (about 0.3 s per million tracked objects), for after a snapshot is loaded or installed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block (reference counting still frees memory)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
