"""`Distribution`: fixed-bucket counts of observed values — what a histogram metric needs, kept by
the code that observes (proposer, replication) without a metrics library.

Imports only the stdlib. `budgetd.metrics` turns a `snapshot` into a Prometheus histogram at
scrape time; the observing code never sees prometheus_client.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

__all__ = ["Distribution", "DistributionSnapshot"]


@dataclass(frozen=True, slots=True)
class DistributionSnapshot:
    """Cumulative counts: ``buckets[i]`` = (upper bound, observations <= bound); the last bound is
    +Inf and its count is ``count``."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


class Distribution:
    """Counts per bucket, a total and a sum. `observe` may run on any thread."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be distinct and increasing")
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> DistributionSnapshot:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return DistributionSnapshot(tuple(cumulative), running, total)
