"""Ledger time for new log entries: the leader's wall clock, held to the pace of real time.

Time is data (docs/ledger.md): the proposing node stamps each log entry once, and the ledger
keeps the largest stamp it has applied. A leader whose wall clock jumps ahead — an NTP step, a
VM restored from a snapshot, an operator's typo — would otherwise pin ledger time hours in the
future for good: reservations expiring hours late, days rolling at the wrong real time, pacing
starved, idempotency keys pruned early. So a stamp follows the wall clock only inside a band
around the *anchor*, the last stamp this node saw applied while it agreed with real time,
advanced by this node's monotonic clock (which no wall-clock step moves):

    anchor + elapsed × (1 − drift)  ≤  stamp  ≤  anchor + elapsed × (1 + drift) + slack

A wall clock outside the band is followed at the band's edge (ledger time keeps moving, at most
``drift`` faster or slower than real time, until the clocks agree again) and counted as skew.

An applied stamp becomes the anchor when it agrees within ``trust_ms`` with this node's wall
clock or with the current anchor's projection, or when it advanced like real time since the
stamp applied before it (at least ``STREAM_S`` ago: the live stream of a leader, whatever this
node's own wall clock says); so stamps replayed from the journal at start-up (old, applied in a
burst) and entries a lagging follower catches up on never hold time back. With no anchor — a
whole cluster starting after an outage — the wall clock is trusted as it is, which is what lets
ledger time jump over the outage; docs/operations.md asks for NTP-synced clocks for that reason,
and budgetd_clock_skew_seconds shows a node whose clock disagrees.

Imports only the stdlib; the clock is injected (tests move time by hand).
"""

from __future__ import annotations

import logging
import threading
from typing import Final, Protocol

__all__ = [
    "DRIFT_PPM",
    "SLACK_MS",
    "STREAM_S",
    "STREAM_SLACK_MS",
    "TRUST_MS",
    "Clock",
    "StampClock",
]

#: How much faster or slower than real time a stamp may move ledger time (10 %).
DRIFT_PPM: Final = 100_000
#: Room above the band for replication and apply delays between a stamp and its anchor.
SLACK_MS: Final = 1_000
#: An applied stamp within this of the local wall clock (or of the anchor's projection) is
#: trusted as the new anchor.
TRUST_MS: Final = 5_000
#: Two applied stamps at least this far apart in real time, which advanced like real time
#: between them (within the drift, plus ``STREAM_SLACK_MS``), are a leader's live stream.
STREAM_S: Final = 0.5
STREAM_SLACK_MS: Final = 200


log = logging.getLogger("budgetd.stamps")


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def monotonic_s(self) -> float: ...


class StampClock:
    """The proposer's clock (``now_ms`` stamps entries); ``observe`` is called with the stamp of
    every entry applied. Safe to use from the apply thread and the event loop at once."""

    def __init__(
        self,
        clock: Clock,
        *,
        drift_ppm: int = DRIFT_PPM,
        slack_ms: int = SLACK_MS,
        trust_ms: int = TRUST_MS,
    ) -> None:
        if not 0 <= drift_ppm < 1_000_000 or slack_ms < 0 or trust_ms < 0:
            raise ValueError("drift_ppm must be in [0, 1e6); slack_ms and trust_ms >= 0")
        self._clock = clock
        self._drift = drift_ppm / 1_000_000
        self._slack_ms = slack_ms
        self._trust_ms = trust_ms
        self._lock = threading.Lock()
        #: (ledger ms, monotonic s) of the anchor; None until a stamp is trusted.
        self._anchor: tuple[int, float] | None = None
        #: (ledger ms, monotonic s) of the last stamp applied, trusted or not.
        self._seen: tuple[int, float] | None = None
        #: Wall clock minus the last stamp handed out, in ms (0 while they agree).
        self.skew_ms = 0
        #: Stamps that did not follow the wall clock (it was outside the band).
        self.stamps_held = 0

    def monotonic_s(self) -> float:
        return self._clock.monotonic_s()

    def now_ms(self) -> int:
        """The stamp for a new log entry."""
        wall = self._clock.now_ms()
        with self._lock:
            anchor = self._anchor
            if anchor is None:
                self.skew_ms = 0
                return wall
            anchor_ms, anchor_s = anchor
            elapsed_ms = max(0.0, (self._clock.monotonic_s() - anchor_s) * 1000)
            low = anchor_ms + int(elapsed_ms * (1 - self._drift))
            high = anchor_ms + int(elapsed_ms * (1 + self._drift)) + self._slack_ms
            stamp = min(max(wall, low), high)
            held = stamp != wall
            if held and not self.skew_ms:
                log.warning(
                    "clock_skew: the wall clock is %+d ms off the pace of real time since the "
                    "last trusted stamp; stamps follow real time until it agrees again",
                    wall - stamp,
                )
            elif not held and self.skew_ms:
                log.warning("clock_skew_ended: stamps follow the wall clock again")
            self.skew_ms = wall - stamp
            self.stamps_held += held
            return stamp

    def observe(self, timestamp_ms: int) -> None:
        """An entry stamped ``timestamp_ms`` was just applied here."""
        now_s = self._clock.monotonic_s()
        wall = self._clock.now_ms()
        with self._lock:
            anchor_ms = self._anchor_for(timestamp_ms, now_s=now_s, wall=wall)
            if anchor_ms is not None:
                self._anchor = (anchor_ms, now_s)
            seen = self._seen
            if seen is None or now_s - seen[1] >= STREAM_S or timestamp_ms < seen[0]:
                self._seen = (timestamp_ms, now_s)

    def _anchor_for(self, timestamp_ms: int, *, now_s: float, wall: int) -> int | None:
        """The anchor a stamp applied now gives, or None when it is not trusted. A stamp
        trusted for agreeing with the wall clock anchors as it is; one trusted for following
        the anchor's pace anchors no further than the drift allows, so the slack never adds
        up from one entry to the next."""
        if abs(timestamp_ms - wall) <= self._trust_ms:
            return timestamp_ms
        if self._anchor is not None:
            anchor_ms, anchor_s = self._anchor
            elapsed_ms = (now_s - anchor_s) * 1000
            if abs(timestamp_ms - (anchor_ms + elapsed_ms)) <= self._trust_ms:
                low = anchor_ms + int(elapsed_ms * (1 - self._drift))
                high = anchor_ms + int(elapsed_ms * (1 + self._drift))
                return min(max(timestamp_ms, low), high)
        if self._seen is not None:
            seen_ms, seen_s = self._seen
            real_ms = (now_s - seen_s) * 1000
            if now_s - seen_s >= STREAM_S:
                moved_ms = timestamp_ms - seen_ms
                if abs(moved_ms - real_ms) <= real_ms * self._drift + STREAM_SLACK_MS:
                    return timestamp_ms
        return None

    @property
    def anchored(self) -> bool:
        return self._anchor is not None
