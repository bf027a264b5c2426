"""Pacing: how much of a daily budget may be spent by a moment of the local day, and the
pass-through-rate controller. Pure integer arithmetic; imports nothing of budgetd but the calendar.

allowance(t) rounds down (pacing rounds down what may be spent):

- ``asap``:           the whole daily budget at once.
- ``even``:           proportional to the elapsed share of the local day (real time, so a 25 h day
                      spreads the budget over 25 h).
- ``frontloaded``:    ``B * f * (2 - f)`` for elapsed share ``f``: twice even's rate at midnight,
                      falling to zero at the day's end (75 % of the budget by noon).
- ``traffic_shaped``: 24 non-negative hourly weights, one per local wall-clock hour. Each 15-minute
                      segment of the real day carries its local hour's weight; the allowance is the
                      weighted share of the day elapsed. A skipped hour (spring forward) drops out,
                      a repeated hour (fall back) counts twice, and the day still totals the budget.
                      If every hour that exists that day has weight 0 the plan falls back to even.

A reservation may not push ``spent_today + held_today`` above ``allowance(t) + burst`` where
``burst = daily_budget * burst_ppm / 1e6`` (rounded down): the first slices of the day fit.

The controller (LinkedIn-style multiplicative steps, with slow start) runs once per control period
of ledger time, at a pulse. For each campaign with a paced daily budget it compares the actual
spend of the day with the plan ``allowance(t)``:

- own daily room exhausted (spent + held >= daily budget)      -> rate 0
- spent > plan + deadband                                       -> rate * 0.9, at least the floor
- spent < plan - deadband                                       -> rate * 1.1, at most 1,
                                                                   at least the floor
- otherwise                                                     -> unchanged

The deadband is 1 % of the daily budget; the floor is 1 %; each day starts at 10 % (slow start).
``asap`` campaigns and campaigns without a daily budget stay at 1 (0 once their own daily room is
gone). Rates are integers in parts per million. A bidder applies the smallest rate on the path from
the campaign to its root.
"""

from typing import Final

from budgetd.ledger.calendar import QUARTER_MS

ASAP: Final = "asap"
EVEN: Final = "even"
FRONTLOADED: Final = "frontloaded"
TRAFFIC_SHAPED: Final = "traffic_shaped"
MODES: Final = frozenset({ASAP, EVEN, FRONTLOADED, TRAFFIC_SHAPED})

PPM: Final = 1_000_000
BURST_PPM_DEFAULT: Final = 10_000
SLOW_START_PPM: Final = 100_000
FLOOR_PPM: Final = 10_000
DEADBAND_PPM: Final = 10_000
CONTROL_PERIOD_MS: Final = 60_000
HOURLY_WEIGHT_MAX: Final = 1_000_000

#: A traffic-shaped day: (weighted ms elapsed at the start of each segment, weight of each
#: segment, weighted ms of the whole day).
Plan = tuple[tuple[int, ...], tuple[int, ...], int]


def traffic_plan(
    hours: tuple[int, ...], weights: tuple[int, ...], *, day_length_ms: int
) -> Plan | None:
    """The plan of one day from its segments' local hours; None when the day's weights sum to 0."""
    cumulative: list[int] = []
    segment_weights: list[int] = []
    total = 0
    for index, hour in enumerate(hours):
        weight = weights[hour]
        cumulative.append(total)
        segment_weights.append(weight)
        length_ms = min(QUARTER_MS, day_length_ms - index * QUARTER_MS)
        total += weight * length_ms
    if total == 0:
        return None
    return tuple(cumulative), tuple(segment_weights), total


def allowance_micros(
    mode: str,
    budget_micros: int,
    *,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    plan: Plan | None,
) -> int:
    """How much of ``budget_micros`` the plan allows to be spent by ``now_ms`` (rounded down)."""
    if mode == ASAP or now_ms >= end_ms:
        return budget_micros
    length_ms = end_ms - start_ms
    elapsed_ms = now_ms - start_ms
    if elapsed_ms <= 0:
        return 0
    if mode == FRONTLOADED:
        return budget_micros * elapsed_ms * (2 * length_ms - elapsed_ms) // (length_ms * length_ms)
    if mode == TRAFFIC_SHAPED and plan is not None:
        cumulative, segment_weights, total = plan
        index = elapsed_ms // QUARTER_MS
        weighted = cumulative[index] + segment_weights[index] * (elapsed_ms - index * QUARTER_MS)
        return budget_micros * weighted // total
    return budget_micros * elapsed_ms // length_ms


def next_rate_ppm(
    rate_ppm: int, *, spent_micros: int, plan_micros: int, budget_micros: int, used_micros: int
) -> int:
    """One controller step for a paced campaign (see the module docstring)."""
    if used_micros >= budget_micros:
        return 0
    deadband = budget_micros * DEADBAND_PPM // PPM
    if spent_micros > plan_micros + deadband:
        return max(FLOOR_PPM, rate_ppm * 9 // 10)
    if spent_micros < plan_micros - deadband:
        return min(PPM, max(FLOOR_PPM, rate_ppm * 11 // 10))
    return max(FLOOR_PPM, rate_ppm)
