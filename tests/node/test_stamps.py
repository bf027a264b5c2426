"""budgetd.stamps: a leader's wall clock stamps log entries only at the pace of real time."""

from __future__ import annotations

import pytest

from budgetd.stamps import DRIFT_PPM, SLACK_MS, StampClock

HOUR_MS = 3_600_000
START_MS = 1_790_000_000_000  # 2026-09-21


class HandClock:
    """A wall clock and a monotonic clock that move only when told."""

    def __init__(self) -> None:
        self.wall_ms = START_MS
        self.mono_s = 1_000.0

    def now_ms(self) -> int:
        return self.wall_ms

    def monotonic_s(self) -> float:
        return self.mono_s

    def tick(self, seconds: float) -> None:
        self.wall_ms += int(seconds * 1000)
        self.mono_s += seconds


def leader(clock: HandClock) -> StampClock:
    """A stamp clock anchored by its own live entries, one second apart."""
    stamps = StampClock(clock)
    for _ in range(3):
        stamps.observe(stamps.now_ms())
        clock.tick(1.0)
    assert stamps.anchored
    return stamps


def test_without_an_anchor_the_wall_clock_is_trusted_as_it_is() -> None:
    clock = HandClock()
    stamps = StampClock(clock)
    clock.wall_ms += 2 * HOUR_MS  # e.g. the whole cluster restarts after an outage
    assert stamps.now_ms() == clock.wall_ms
    assert stamps.skew_ms == 0 and stamps.stamps_held == 0


def test_a_forward_jump_of_the_wall_clock_moves_stamps_at_most_drift_faster() -> None:
    clock = HandClock()
    stamps = leader(clock)
    anchor = stamps.now_ms()
    stamps.observe(anchor)
    clock.wall_ms += 12 * HOUR_MS  # the leader's clock jumps 12 h ahead
    for _ in range(60):
        clock.tick(1.0)
        stamp = stamps.now_ms()
        stamps.observe(stamp)  # the leader applies its own entries
    elapsed_ms = 60_000
    # The slack is room for one entry's delays; it never adds up from entry to entry.
    assert stamp <= anchor + elapsed_ms * (1 + DRIFT_PPM / 1e6) + SLACK_MS
    assert stamp >= anchor + elapsed_ms
    assert stamps.skew_ms > 11 * HOUR_MS and stamps.stamps_held == 60
    clock.wall_ms -= 12 * HOUR_MS  # the clock is set right: stamps follow it again...
    clock.tick(1.0)
    ahead_ms = stamps.now_ms() - clock.wall_ms
    assert 0 < ahead_ms <= elapsed_ms * DRIFT_PPM / 1e6 + SLACK_MS  # ...once real time,
    for _ in range(80):  # at the drift's pace, has caught up with the stamps handed out
        clock.tick(1.0)
        stamps.observe(stamps.now_ms())
    assert stamps.now_ms() == clock.wall_ms and stamps.skew_ms == 0


def test_a_wall_clock_that_falls_behind_does_not_freeze_time() -> None:
    clock = HandClock()
    stamps = leader(clock)
    anchor = stamps.now_ms()
    stamps.observe(anchor)
    clock.wall_ms -= HOUR_MS
    clock.tick(10.0)
    stamp = stamps.now_ms()
    assert stamp >= anchor + 10_000 * (1 - DRIFT_PPM / 1e6)
    assert stamps.skew_ms < -HOUR_MS + 20_000


def test_stamps_replayed_from_the_journal_never_become_the_anchor() -> None:
    clock = HandClock()
    stamps = StampClock(clock)
    for index in range(5_000):  # yesterday's entries, applied in a burst at start-up
        stamps.observe(START_MS - 24 * HOUR_MS + index * 1_000)
        clock.mono_s += 0.0002
    assert not stamps.anchored
    assert stamps.now_ms() == clock.wall_ms


def test_a_follower_whose_own_clock_is_wrong_anchors_on_the_leaders_live_stream() -> None:
    clock = HandClock()
    clock.wall_ms += 12 * HOUR_MS  # this node's clock is 12 h ahead
    stamps = StampClock(clock)
    leader_ms = START_MS
    for _ in range(3):  # the leader's pulses arrive a second apart
        stamps.observe(leader_ms)
        clock.tick(1.0)
        leader_ms += 1_000
    assert stamps.anchored
    stamp = stamps.now_ms()  # it becomes leader: its stamps follow real time, not its clock
    assert leader_ms - 1_000 <= stamp <= leader_ms + 1_000 * DRIFT_PPM // 1_000_000 + SLACK_MS
    assert stamps.skew_ms > 11 * HOUR_MS


def test_a_lagging_follower_catching_up_keeps_its_anchor() -> None:
    clock = HandClock()
    stamps = leader(clock)
    clock.tick(600.0)  # partitioned for ten minutes, then it applies the backlog at once
    for index in range(1_000):
        stamps.observe(START_MS + 5_000 + index * 500)
        clock.mono_s += 0.0001
    stamp = stamps.now_ms()
    assert stamp == clock.wall_ms  # the anchor it kept agrees with its (right) wall clock


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="drift_ppm"):
        StampClock(HandClock(), drift_ppm=1_000_000)
