"""Pacing (`budgetd.ledger.pacing`): the allowance of every mode, traffic plans on real days,
the pass-through-rate controller, and the pacing bound as a bidder meets it through the ledger.

The allowance is money: it is checked against an exact reference in rational arithmetic, rounded
down to the micro, with budgets up to 2^63 - 1 where a float would be off.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from functools import cache
from itertools import accumulate

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from budgetd.ledger import INT64_MAX, Ledger, codes
from budgetd.ledger.calendar import QUARTER_MS, day_bounds, quarter_hours, zone
from budgetd.ledger.pacing import (
    ASAP,
    DEADBAND_PPM,
    EVEN,
    FLOOR_PPM,
    FRONTLOADED,
    HOURLY_WEIGHT_MAX,
    MODES,
    PPM,
    SLOW_START_PPM,
    TRAFFIC_SHAPED,
    Plan,
    allowance_micros,
    next_rate_ppm,
    traffic_plan,
)

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Day:
    zone_name: str
    ordinal: int
    start_ms: int
    end_ms: int
    hours: tuple[int, ...]

    @property
    def length_ms(self) -> int:
        return self.end_ms - self.start_ms


@cache
def _day(zone_name: str, year: int, month: int, day: int) -> Day:
    tz = zone(zone_name)
    assert tz is not None
    ordinal = date(year, month, day).toordinal()
    start_ms, end_ms = day_bounds(tz, ordinal)
    return Day(zone_name, ordinal, start_ms, end_ms, quarter_hours(tz, ordinal))


ORDINARY = _day("UTC", 2026, 6, 1)
NY_SPRING = _day("America/New_York", 2026, 3, 8)  # 23 h: 02:00-03:00 skipped
NY_FALL = _day("America/New_York", 2026, 11, 1)  # 25 h: 01:00-02:00 twice
LH_APRIL = _day("Australia/Lord_Howe", 2026, 4, 5)  # 24.5 h: 01:30-02:00 twice
LH_OCTOBER = _day("Australia/Lord_Howe", 2026, 10, 4)  # 23.5 h: 02:00-02:30 skipped
KATHMANDU = _day("Asia/Kathmandu", 2026, 6, 1)  # 24 h from 18:15 UTC
BEIRUT_SPRING = _day("Asia/Beirut", 2026, 3, 29)  # 23 h from 01:00 local (midnight skipped)
DAYS = [ORDINARY, NY_SPRING, NY_FALL, LH_APRIL, LH_OCTOBER, KATHMANDU, BEIRUT_SPRING]


@cache
def _minute_hours(day: Day) -> tuple[int, ...]:
    """The local wall-clock hour of each minute of a day, found minute by minute with zoneinfo:
    a reference for traffic plans that does not share the ledger's quarter-hour segments."""
    tz = zone(day.zone_name)
    count = -(-day.length_ms // MINUTE_MS)
    return tuple(
        (EPOCH + timedelta(milliseconds=day.start_ms + i * MINUTE_MS)).astimezone(tz).hour
        for i in range(count)
    )


class Reference:
    """The exact share of the daily budget each mode allows, as a fraction."""

    def __init__(self, day: Day, weights: Sequence[int] | None) -> None:
        self.day = day
        self.hours = _minute_hours(day)
        self.weights = weights
        # Weighted ms at the start of each minute: the integral of the local hour's weight.
        self.prefix = (
            [0, *accumulate(weights[hour] * MINUTE_MS for hour in self.hours)]
            if weights is not None
            else []
        )

    def weighted_ms(self, elapsed_ms: int) -> int:
        assert self.weights is not None
        whole, part = divmod(elapsed_ms, MINUTE_MS)
        total = self.prefix[whole]
        if part:
            total += self.weights[self.hours[whole]] * part
        return total

    def share(self, mode: str, now_ms: int) -> Fraction:
        day = self.day
        if mode == ASAP or now_ms >= day.end_ms:
            return Fraction(1)
        elapsed = max(0, now_ms - day.start_ms)
        length = day.length_ms
        if mode == FRONTLOADED:
            f = Fraction(elapsed, length)
            return f * (2 - f)
        if mode == TRAFFIC_SHAPED:
            total = self.weighted_ms(length)
            if total:
                return Fraction(self.weighted_ms(elapsed), total)
        return Fraction(elapsed, length)

    def allowance(self, mode: str, budget: int, now_ms: int) -> int:
        exact = self.share(mode, now_ms) * budget
        return exact.numerator // exact.denominator  # rounded down


def _plan(mode: str, day: Day, weights: Sequence[int] | None) -> Plan | None:
    if mode != TRAFFIC_SHAPED:
        return None
    assert weights is not None
    return traffic_plan(day.hours, tuple(weights), day_length_ms=day.length_ms)


def _allowance(
    mode: str, budget: int, day: Day, now_ms: int, weights: Sequence[int] | None = None
) -> int:
    return allowance_micros(
        mode,
        budget,
        start_ms=day.start_ms,
        end_ms=day.end_ms,
        now_ms=now_ms,
        plan=_plan(mode, day, weights),
    )


def _one_hot(hour: int) -> list[int]:
    return [1 if h == hour else 0 for h in range(24)]


# ------------------------------------------------------------------------------------------------
# Strategies

budgets = st.one_of(
    st.integers(1, 1_000),
    st.integers(1, 10**12),
    st.integers(1, INT64_MAX),
    st.just(INT64_MAX),
)
days = st.one_of(
    st.sampled_from(DAYS),
    st.builds(
        lambda name, ordinal: _day(name, *date.fromordinal(ordinal).timetuple()[:3]),
        st.sampled_from(["UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]),
        st.integers(date(2024, 1, 1).toordinal(), date(2030, 12, 31).toordinal()),
    ),
)
weight_values = st.one_of(st.integers(0, 3), st.integers(0, HOURLY_WEIGHT_MAX))
weight_lists = st.lists(weight_values, min_size=24, max_size=24).filter(lambda w: sum(w) > 0)


@st.composite
def day_and_instants(draw: st.DrawFn) -> tuple[Day, list[int]]:
    """A day and sorted instants around it, always including its edges."""
    day = draw(days)
    inside = st.integers(day.start_ms - HOUR_MS, day.end_ms + HOUR_MS)
    edges = [day.start_ms - 1, day.start_ms, day.start_ms + 1, day.end_ms - 1, day.end_ms]
    return day, sorted({*edges, *draw(st.lists(inside, min_size=1, max_size=30))})


# ------------------------------------------------------------------------------------------------
# The allowance, every mode


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(sorted(MODES)),
    budget=budgets,
    day_instants=day_and_instants(),
    weights=weight_lists,
)
def test_allowance_is_an_int_from_zero_to_the_budget_that_never_falls(
    mode: str, budget: int, day_instants: tuple[Day, list[int]], weights: list[int]
) -> None:
    day, instants = day_instants
    values = [_allowance(mode, budget, day, now, weights) for now in instants]
    for now, value in zip(instants, values, strict=True):
        assert type(value) is int
        assert 0 <= value <= budget
        if now >= day.end_ms or mode == ASAP:
            assert value == budget
        elif now <= day.start_ms:
            assert value == 0
    assert values == sorted(values), "the allowance fell during the day"


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(sorted(MODES)),
    budget=budgets,
    day_instants=day_and_instants(),
    weights=weight_lists,
)
def test_allowance_is_the_exact_share_rounded_down(
    mode: str, budget: int, day_instants: tuple[Day, list[int]], weights: list[int]
) -> None:
    """Integer arithmetic to the micro: floor(budget x share), even at budget 2^63 - 1."""
    day, instants = day_instants
    reference = Reference(day, weights)
    for now in instants:
        assert _allowance(mode, budget, day, now, weights) == reference.allowance(mode, budget, now)


@settings(max_examples=200, deadline=None)
@given(budget=budgets, day_instants=day_and_instants())
def test_even_never_exceeds_frontloaded(budget: int, day_instants: tuple[Day, list[int]]) -> None:
    day, instants = day_instants
    for now in instants:
        assert _allowance(EVEN, budget, day, now) <= _allowance(FRONTLOADED, budget, day, now)


@pytest.mark.parametrize("day", DAYS, ids=lambda day: f"{day.zone_name}-{day.ordinal}")
@pytest.mark.parametrize("budget", [1, 3, 4, 1_000_000, 999_999_999, INT64_MAX])
def test_frontloaded_allows_three_quarters_by_the_middle_of_the_day(day: Day, budget: int) -> None:
    middle_ms = day.start_ms + day.length_ms // 2
    assert day.length_ms % 2 == 0
    assert _allowance(FRONTLOADED, budget, day, middle_ms) == 3 * budget // 4
    assert _allowance(EVEN, budget, day, middle_ms) == budget // 2
    # A quarter in: f (2 - f) = 7/16.
    assert _allowance(FRONTLOADED, budget, day, day.start_ms + day.length_ms // 4) == (
        7 * budget // 16
    )


def test_a_float_would_be_wrong_at_int64_budgets() -> None:
    """The reference values here differ from what float arithmetic gives."""
    budget = INT64_MAX
    middle_ms = ORDINARY.start_ms + ORDINARY.length_ms // 2
    assert _allowance(EVEN, budget, ORDINARY, middle_ms) == 4_611_686_018_427_387_903
    assert int(budget * 0.5) != 4_611_686_018_427_387_903
    assert _allowance(FRONTLOADED, budget, ORDINARY, middle_ms) == 6_917_529_027_641_081_855
    one_ms_in = _allowance(EVEN, budget, ORDINARY, ORDINARY.start_ms + 1)
    assert one_ms_in == INT64_MAX // 86_400_000 == 106_751_991_167


# ------------------------------------------------------------------------------------------------
# traffic_shaped


@settings(max_examples=200, deadline=None)
@given(
    budget=budgets,
    day_instants=day_and_instants(),
    weight=st.integers(1, HOURLY_WEIGHT_MAX),
)
def test_equal_weights_are_exactly_even(
    budget: int, day_instants: tuple[Day, list[int]], weight: int
) -> None:
    """Equal weights shape nothing: the same micros as even at every instant, DST days too."""
    day, instants = day_instants
    weights = [weight] * 24
    for now in instants:
        assert _allowance(TRAFFIC_SHAPED, budget, day, now, weights) == _allowance(
            EVEN, budget, day, now
        )


@pytest.mark.parametrize("hour", range(24))
def test_all_weight_on_one_hour_allows_nothing_before_it_and_everything_after(hour: int) -> None:
    budget = 24_000_000
    day = ORDINARY
    weights = _one_hot(hour)
    hour_start_ms = day.start_ms + hour * HOUR_MS
    hour_end_ms = hour_start_ms + HOUR_MS
    for now in (day.start_ms, hour_start_ms - 1, hour_start_ms):
        assert _allowance(TRAFFIC_SHAPED, budget, day, now, weights) == 0
    assert _allowance(TRAFFIC_SHAPED, budget, day, hour_start_ms + HOUR_MS // 4, weights) == (
        budget // 4
    )
    for now in {hour_end_ms, hour_end_ms + 1, max(hour_end_ms, day.end_ms - 1), day.end_ms}:
        assert _allowance(TRAFFIC_SHAPED, budget, day, now, weights) == budget


def test_all_weight_on_one_hour_in_kathmandu_follows_local_time() -> None:
    budget = 1_000_000
    day = KATHMANDU
    weights = _one_hot(9)  # 09:00-10:00 +05:45 is 03:15-04:15 UTC
    nine_local_ms = day.start_ms + 9 * HOUR_MS
    assert _allowance(TRAFFIC_SHAPED, budget, day, nine_local_ms, weights) == 0
    assert _allowance(TRAFFIC_SHAPED, budget, day, nine_local_ms + HOUR_MS, weights) == budget


#: Total weighted ms of a day as a function of the 24 hourly weights.
PLAN_TOTALS = [
    (ORDINARY, lambda w: HOUR_MS * sum(w)),
    (KATHMANDU, lambda w: HOUR_MS * sum(w)),
    (NY_SPRING, lambda w: HOUR_MS * (sum(w) - w[2])),
    (NY_FALL, lambda w: HOUR_MS * (sum(w) + w[1])),
    (LH_APRIL, lambda w: HOUR_MS * sum(w) + HOUR_MS // 2 * w[1]),
    (LH_OCTOBER, lambda w: HOUR_MS * sum(w) - HOUR_MS // 2 * w[2]),
    (BEIRUT_SPRING, lambda w: HOUR_MS * (sum(w) - w[0])),
]


@pytest.mark.parametrize(
    ("day", "total_of"), PLAN_TOTALS, ids=[f"{d.zone_name}-{d.ordinal}" for d, _ in PLAN_TOTALS]
)
@settings(max_examples=50, deadline=None)
@given(weights=weight_lists)
def test_plan_total_counts_each_local_hour_as_often_as_it_happens(
    day: Day, total_of: Callable[[list[int]], int], weights: list[int]
) -> None:
    expected = total_of(weights)
    plan = traffic_plan(day.hours, tuple(weights), day_length_ms=day.length_ms)
    if expected == 0:
        assert plan is None
        return
    assert plan is not None
    cumulative, segment_weights, total = plan
    assert total == expected
    assert all(type(value) is int for value in (*cumulative, *segment_weights, total))
    assert len(cumulative) == len(segment_weights) == len(day.hours)
    assert cumulative[0] == 0
    assert cumulative[-1] + segment_weights[-1] * QUARTER_MS == total


#: Monrovia left -00:44:30 for UTC on 1972-01-07: a day of 23 h 15 min 30 s, not whole quarters.
MONROVIA = _day("Africa/Monrovia", 1972, 1, 7)


@pytest.mark.parametrize("day", [*DAYS, MONROVIA], ids=lambda day: f"{day.zone_name}-{day.ordinal}")
def test_with_unit_weights_the_plan_total_is_the_length_of_the_day(day: Day) -> None:
    plan = traffic_plan(day.hours, (1,) * 24, day_length_ms=day.length_ms)
    assert plan is not None
    assert plan[2] == day.length_ms


@settings(max_examples=100, deadline=None)
@given(budget=budgets, weights=weight_lists, data=st.data())
def test_a_skipped_hours_weight_drops_out(
    budget: int, weights: list[int], data: st.DataObject
) -> None:
    """On 2026-03-08 New York has no 02:00: weight on hour 2 changes nothing that day."""
    day = NY_SPRING
    without = [*weights]
    without[2] = 0
    if sum(without) == 0:
        without[3] = 1
        weights = [*without]
        weights[2] = HOURLY_WEIGHT_MAX
    assert _plan(TRAFFIC_SHAPED, day, weights) == _plan(TRAFFIC_SHAPED, day, without)
    now = data.draw(st.integers(day.start_ms, day.end_ms))
    assert _allowance(TRAFFIC_SHAPED, budget, day, now, weights) == _allowance(
        TRAFFIC_SHAPED, budget, day, now, without
    )


def test_weight_only_on_the_skipped_hour_falls_back_to_even() -> None:
    day = NY_SPRING
    weights = _one_hot(2)
    assert traffic_plan(day.hours, tuple(weights), day_length_ms=day.length_ms) is None
    for now in range(day.start_ms, day.end_ms, 17 * MINUTE_MS + 3):
        assert _allowance(TRAFFIC_SHAPED, 23_000_000, day, now, weights) == _allowance(
            EVEN, 23_000_000, day, now
        )


def test_a_repeated_hour_counts_twice() -> None:
    """On 2026-11-01 New York lives 01:00-02:00 twice; weight on hour 1 covers both."""
    budget = 10_000_000
    day = NY_FALL
    weights = _one_hot(1)
    assert _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + HOUR_MS, weights) == 0
    # The end of the first 01:00-02:00 (EDT): half of it.
    assert _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + 2 * HOUR_MS, weights) == (
        budget // 2
    )
    # The end of the second (EST): all of it.
    assert _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + 3 * HOUR_MS, weights) == budget
    # Hour 0 happens once: all of it after one hour.
    assert _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + HOUR_MS, _one_hot(0)) == budget


def test_lord_howe_half_hours_count_as_half() -> None:
    budget = 3_000_000
    # April: 01:00-02:00 then 01:30-02:00 again, 1.5 h of hour 1 in all.
    day = LH_APRIL
    weights = _one_hot(1)
    assert _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + 2 * HOUR_MS, weights) == (
        budget * 2 // 3
    )
    assert (
        _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + 2 * HOUR_MS + HOUR_MS // 2, weights)
        == budget
    )
    # October: 02:00-02:30 is skipped, only 02:30-03:00 carries hour 2's weight.
    day = LH_OCTOBER
    weights = _one_hot(2)
    assert _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + 2 * HOUR_MS, weights) == 0
    assert (
        _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + 2 * HOUR_MS + HOUR_MS // 4, weights)
        == budget // 2
    )
    assert (
        _allowance(TRAFFIC_SHAPED, budget, day, day.start_ms + 2 * HOUR_MS + HOUR_MS // 2, weights)
        == budget
    )


# ------------------------------------------------------------------------------------------------
# The pass-through-rate controller

rates = st.one_of(st.integers(0, PPM), st.sampled_from([0, 1, FLOOR_PPM, SLOW_START_PPM, PPM]))
amounts = st.one_of(st.integers(0, 10**9), st.integers(0, INT64_MAX))


@st.composite
def controller_inputs(draw: st.DrawFn) -> dict[str, int]:
    budget = draw(st.one_of(st.integers(1, 10**9), st.integers(1, INT64_MAX)))
    return {
        "budget_micros": budget,
        "plan_micros": draw(st.integers(0, budget)),
        "spent_micros": draw(st.one_of(st.integers(0, budget), amounts)),
        "used_micros": draw(st.one_of(st.integers(0, budget), amounts)),
    }


@settings(max_examples=500, deadline=None)
@given(rate=rates, inputs=controller_inputs())
def test_the_rate_stays_an_int_within_zero_and_one_million(
    rate: int, inputs: dict[str, int]
) -> None:
    new_rate = next_rate_ppm(rate, **inputs)
    assert type(new_rate) is int
    assert 0 <= new_rate <= PPM
    if inputs["used_micros"] < inputs["budget_micros"]:
        assert new_rate >= FLOOR_PPM


@settings(max_examples=200, deadline=None)
@given(rate=rates, inputs=controller_inputs(), extra=st.integers(0, INT64_MAX))
def test_an_exhausted_day_stops_bidding(rate: int, inputs: dict[str, int], extra: int) -> None:
    inputs["used_micros"] = inputs["budget_micros"] + extra
    assert next_rate_ppm(rate, **inputs) == 0


def _deadband(budget: int) -> int:
    return budget * DEADBAND_PPM // PPM


@st.composite
def day_so_far(draw: st.DrawFn, *, against_plan: str) -> dict[str, int]:
    """Consistent inputs of one controller step with daily room left (used < budget): spent
    ``over`` / ``under`` the plan beyond the deadband, or ``inside`` it."""
    budget = draw(st.one_of(st.integers(1, 10**9), st.integers(1, INT64_MAX)))
    band = _deadband(budget)
    if against_plan == "over":
        assume(band + 1 <= budget - 1)
        spent = draw(st.integers(band + 1, budget - 1))
        plan = draw(st.integers(0, spent - band - 1))
    elif against_plan == "under":
        assume(band + 1 <= budget)
        spent = draw(st.integers(0, budget - band - 1))
        plan = draw(st.integers(spent + band + 1, budget))
    else:
        plan = draw(st.integers(0, budget))
        low, high = max(0, plan - band), min(plan + band, budget - 1)
        assume(low <= high)
        spent = draw(st.sampled_from([low, high]) | st.integers(low, high))
    held = draw(st.integers(0, budget - 1 - spent))
    return {
        "budget_micros": budget,
        "plan_micros": plan,
        "spent_micros": spent,
        "used_micros": spent + held,
    }


@settings(max_examples=300, deadline=None)
@given(rate=rates, inputs=day_so_far(against_plan="over"))
def test_over_plan_beyond_the_deadband_slows_down_by_a_tenth(
    rate: int, inputs: dict[str, int]
) -> None:
    new_rate = next_rate_ppm(rate, **inputs)
    assert new_rate == max(FLOOR_PPM, rate * 9 // 10)
    assert FLOOR_PPM <= new_rate <= max(rate, FLOOR_PPM)


@settings(max_examples=300, deadline=None)
@given(rate=rates, inputs=day_so_far(against_plan="under"))
def test_under_plan_beyond_the_deadband_speeds_up_by_a_tenth(
    rate: int, inputs: dict[str, int]
) -> None:
    new_rate = next_rate_ppm(rate, **inputs)
    assert new_rate == min(PPM, max(FLOOR_PPM, rate * 11 // 10))
    assert max(FLOOR_PPM, rate) <= new_rate <= PPM


@settings(max_examples=300, deadline=None)
@given(rate=rates, inputs=day_so_far(against_plan="inside"))
def test_inside_the_deadband_the_rate_holds(rate: int, inputs: dict[str, int]) -> None:
    assert next_rate_ppm(rate, **inputs) == max(FLOOR_PPM, rate)


def test_the_controller_converges_to_full_rate_and_to_the_floor() -> None:
    budget = 100_000_000
    under = {"spent_micros": 0, "plan_micros": budget // 2, "budget_micros": budget}
    over = {"spent_micros": budget // 2, "plan_micros": 0, "budget_micros": budget}
    rate = SLOW_START_PPM
    for _ in range(25):
        rate = next_rate_ppm(rate, used_micros=0, **under)
    assert rate == PPM
    assert next_rate_ppm(rate, used_micros=0, **under) == PPM
    for _ in range(45):
        rate = next_rate_ppm(rate, used_micros=budget // 2, **over)
    assert rate == FLOOR_PPM
    assert next_rate_ppm(rate, used_micros=budget // 2, **over) == FLOOR_PPM
    # A stopped campaign (rate 0) that is under plan again starts from the floor, not from 0.
    assert next_rate_ppm(0, used_micros=0, **under) == FLOOR_PPM


# ------------------------------------------------------------------------------------------------
# End to end: the pacing bound as a bidder meets it through Ledger.apply_batch

BUDGET = 24_000_000
BURST_PPM = 10_000
STEP_WEIGHTS = [1, 1, 1, 1, 1, 1, 2, 4, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8, 6, 6, 4, 2, 1, 1]


@st.composite
def bidder_days(draw: st.DrawFn) -> tuple[str, Day, list[tuple[int, int, int, str]]]:
    mode = draw(st.sampled_from([EVEN, FRONTLOADED, TRAFFIC_SHAPED]))
    day = draw(st.sampled_from([ORDINARY, NY_SPRING, NY_FALL, LH_OCTOBER]))
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(1, 60 * MINUTE_MS),  # time to the next request
                st.integers(1, BUDGET // 40),  # asked
                st.integers(MINUTE_MS, 2 * HOUR_MS),  # ttl
                st.sampled_from(["commit", "commit_part", "hold", "release"]),
            ),
            min_size=30,  # most runs reach the end of the day
            max_size=150,
        )
    )
    return mode, day, steps


def _put(day: Day, mode: str) -> dict[str, object]:
    pacing: dict[str, object] = {"mode": mode, "burst_ppm": BURST_PPM}
    if mode == TRAFFIC_SHAPED:
        pacing["hourly_weights"] = STEP_WEIGHTS
    return {
        "op": "put_campaign",
        "campaign_id": "acme",
        "currency": "USD",
        "timezone": day.zone_name,
        "daily_budget_micros": BUDGET,
        "pacing": pacing,
    }


def _used(view: dict[str, object]) -> int:
    spent, held = view["spent_today_micros"], view["held_micros"]
    assert type(spent) is int and type(held) is int
    return spent + held


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=bidder_days())
def test_reserving_through_the_day_never_passes_the_allowance_plus_burst(
    case: tuple[str, Day, list[tuple[int, int, int, str]]],
) -> None:
    mode, day, steps = case
    ledger = Ledger()
    assert ledger.apply_batch(day.start_ms, [_put(day, mode)])[0]["code"] == codes.OK
    burst = BUDGET * BURST_PPM // PPM
    weights = STEP_WEIGHTS if mode == TRAFFIC_SHAPED else None
    now = day.start_ms
    for index, (gap_ms, asked, ttl_ms, then) in enumerate(steps):
        now = min(now + gap_ms, day.end_ms - 1)
        ledger.apply_batch(now, [])  # time moves: holds expire first
        before = ledger.campaign("acme")
        assert before is not None and before["day"] == date.fromordinal(day.ordinal).isoformat()
        allowance = _allowance(mode, BUDGET, day, now, weights)
        assert before["pacing"]["allowance_micros"] == allowance
        room = min(allowance + burst, BUDGET) - _used(before)
        key = f"r{index}"
        reserve = {
            "op": "reserve",
            "idempotency_key": key,
            "campaign_id": "acme",
            "amount_micros": asked,
            "ttl_ms": ttl_ms,
            "bidder_id": "b1",
        }
        [result] = ledger.apply_batch(now, [reserve])
        if BUDGET - _used(before) < 1:
            assert result["code"] == codes.BUDGET_EXHAUSTED
        elif room < 1:
            assert result["code"] == codes.PACING_LIMITED
        else:
            assert result["code"] == codes.OK
            assert result["granted_micros"] == min(asked, room)
            granted = result["granted_micros"]
            follow: list[dict[str, object]] = []
            rid = result["reservation_id"]
            if then == "commit":
                follow.append(_commit(key, rid, granted, final=True))
            elif then == "commit_part":
                follow.append(_commit(key, rid, max(1, granted // 2), final=False))
            elif then == "release":
                follow.append(
                    {"op": "release", "idempotency_key": f"{key}-l", "reservation_id": rid}
                )
            follow.append({"op": "pulse"})
            assert all(r["code"] == codes.OK for r in ledger.apply_batch(now, follow))
        after = ledger.campaign("acme")
        assert after is not None
        assert _used(after) <= after["pacing"]["allowance_micros"] + after["pacing"]["burst_micros"]
        assert after["pacing"]["burst_micros"] == burst
        assert 0 <= after["pacing"]["pass_through_ppm"] <= PPM
        ledger.check_invariants()

    # The last millisecond of the day: everything not yet spent or held can be reserved.
    last_ms = day.end_ms - 1
    ledger.apply_batch(last_ms, [])
    view = ledger.campaign("acme")
    assert view is not None
    rest = BUDGET - _used(view)
    reserve = {
        "op": "reserve",
        "idempotency_key": "last",
        "campaign_id": "acme",
        "amount_micros": BUDGET,
        "ttl_ms": MINUTE_MS,
        "bidder_id": "b1",
    }
    [result] = ledger.apply_batch(last_ms, [reserve])
    if rest:
        assert result["code"] == codes.OK
        assert result["granted_micros"] == rest
    view = ledger.campaign("acme")
    assert view is not None
    assert _used(view) == BUDGET
    more = {**reserve, "idempotency_key": "more", "amount_micros": 1}
    assert ledger.apply_batch(last_ms, [more])[0]["code"] == codes.BUDGET_EXHAUSTED


def _commit(key: str, reservation_id: object, amount: int, *, final: bool) -> dict[str, object]:
    return {
        "op": "commit",
        "idempotency_key": f"{key}-c",
        "reservation_id": reservation_id,
        "amount_micros": amount,
        "final": final,
    }


@pytest.mark.parametrize("day", [ORDINARY, NY_SPRING, NY_FALL, LH_APRIL])
def test_an_even_day_spent_in_small_steps_reaches_the_budget(day: Day) -> None:
    """A greedy bidder asking every 5 minutes is held to allowance + burst and spends it all."""
    ledger = Ledger()
    ledger.apply_batch(day.start_ms, [_put(day, EVEN)])
    burst = BUDGET * BURST_PPM // PPM
    step_ms = 5 * MINUTE_MS
    for index, now in enumerate([*range(day.start_ms, day.end_ms, step_ms), day.end_ms - 1]):
        key = f"k{index}"
        reserve = {
            "op": "reserve",
            "idempotency_key": key,
            "campaign_id": "acme",
            "amount_micros": BUDGET,
            "ttl_ms": MINUTE_MS,
            "bidder_id": "greedy",
        }
        spent_before = ledger.campaign("acme")["spent_today_micros"]  # type: ignore[index]
        [result] = ledger.apply_batch(now, [reserve])
        if result["code"] == codes.OK:
            commit = _commit(key, result["reservation_id"], result["granted_micros"], final=True)
            assert ledger.apply_batch(now, [commit])[0]["code"] == codes.OK
        else:
            assert spent_before == BUDGET
            assert result["code"] == codes.BUDGET_EXHAUSTED
        view = ledger.campaign("acme")
        assert view is not None
        even = BUDGET * (now - day.start_ms) // day.length_ms
        assert view["pacing"]["allowance_micros"] == even
        # Greedy: always exactly at the bound (or the budget).
        assert view["spent_today_micros"] == min(even + burst, BUDGET)
        assert view["held_micros"] == 0
    view = ledger.campaign("acme")
    assert view is not None
    assert view["spent_today_micros"] == BUDGET
    assert view["overspend_micros"] == 0
