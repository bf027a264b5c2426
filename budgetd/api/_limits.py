"""Requests per token per second: a token bucket per token name, on an injectable clock.

Owns the rate each caller gets and the Retry-After of a refusal. Imports only the stdlib and the
api's token entries; no aiohttp, so tests drive time by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from budgetd.api._tokens import TOKENS_MAX, TokenEntry

__all__ = ["RateLimiter"]

#: Buckets kept at once: names of removed tokens are dropped past this (a named maximum).
BUCKETS_MAX: Final = 2 * TOKENS_MAX


class RateLimiter:
    """``admit(caller)``: None when the request may go on, else the whole seconds to wait."""

    def __init__(
        self, *, rate_per_s: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        assert rate_per_s >= 1 and burst >= 1, (rate_per_s, burst)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        #: name → (level, last refill, rate, burst)
        self._buckets: dict[str, tuple[float, float, int, int]] = {}

    def admit(self, caller: TokenEntry) -> int | None:
        rate = caller.rate_per_s or self.rate_per_s
        burst = caller.burst or self.burst
        now = self._clock()
        bucket = self._buckets.get(caller.name)
        if bucket is None or bucket[2:] != (rate, burst):
            if bucket is None and len(self._buckets) >= BUCKETS_MAX:
                self._buckets.clear()
            level = float(burst)
        else:
            level = min(float(burst), bucket[0] + max(0.0, now - bucket[1]) * rate)
        if level >= 1.0:
            self._buckets[caller.name] = (level - 1.0, now, rate, burst)
            return None
        self._buckets[caller.name] = (level, now, rate, burst)
        return max(1, math.ceil((1.0 - level) / rate))
