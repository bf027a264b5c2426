"""Local days in IANA zones (`budgetd.ledger.calendar`): lengths, boundaries, segments, zone names.

The ledger rolls a campaign's day at local midnight, paces over the real length of that day and
splits it into 15-minute segments for traffic shaping. Every replica must compute the same
boundaries, so zones come from the pinned tzdata package, never from the host.
"""

import shutil
import zoneinfo
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from itertools import pairwise
from pathlib import Path

import pytest
import tzdata
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetd.ledger import TZDATA_VERSION, calendar
from budgetd.ledger.calendar import QUARTER_MS, day_bounds, local_day, quarter_hours, zone

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

#: Every zone name tzdata ships, from the package itself.
TZDATA_ZONES = sorted(resources.files("tzdata").joinpath("zones").read_text("utf-8").split())


def _ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """A UTC wall-clock instant in Unix milliseconds."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 1000


def _ordinal(year: int, month: int, day: int) -> int:
    return date(year, month, day).toordinal()


def _tz(name: str) -> zoneinfo.ZoneInfo:
    found = zone(name)
    assert found is not None, name
    return found


def _offset_ms(tz: zoneinfo.ZoneInfo, timestamp_ms: int) -> int:
    local = datetime.fromtimestamp(timestamp_ms / 1000, UTC).astimezone(tz)
    offset = local.utcoffset()
    assert offset is not None
    return offset // timedelta(milliseconds=1)


def _wall(tz: zoneinfo.ZoneInfo, timestamp_ms: int) -> datetime:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=timestamp_ms)).astimezone(tz)


# ------------------------------------------------------------------------------------------------
# Day lengths and starts on the days that matter


@pytest.mark.parametrize(
    ("name", "day", "start_utc", "length_ms"),
    [
        # New York, an ordinary day: local midnight is 04:00 UTC in summer time.
        ("America/New_York", (2026, 6, 1), (2026, 6, 1, 4, 0), DAY_MS),
        # Spring forward at 02:00: 23 h. Fall back at 02:00: 25 h.
        ("America/New_York", (2026, 3, 8), (2026, 3, 8, 5, 0), 23 * HOUR_MS),
        ("America/New_York", (2026, 11, 1), (2026, 11, 1, 4, 0), 25 * HOUR_MS),
        # Lord Howe moves its clocks by half an hour: 24.5 h in April, 23.5 h in October.
        ("Australia/Lord_Howe", (2026, 4, 5), (2026, 4, 4, 13, 0), 24 * HOUR_MS + HOUR_MS // 2),
        ("Australia/Lord_Howe", (2026, 10, 4), (2026, 10, 3, 13, 30), 23 * HOUR_MS + HOUR_MS // 2),
        # Kathmandu is +05:45 all year: midnight is 18:15 UTC the day before.
        ("Asia/Kathmandu", (2026, 6, 1), (2026, 5, 31, 18, 15), DAY_MS),
        ("Asia/Kathmandu", (2026, 12, 31), (2026, 12, 30, 18, 15), DAY_MS),
        # Beirut and Santiago put their clocks back at midnight: the evening before repeats.
        ("Asia/Beirut", (2026, 10, 24), (2026, 10, 23, 21, 0), 25 * HOUR_MS),
        ("Asia/Beirut", (2026, 10, 25), (2026, 10, 24, 22, 0), DAY_MS),
        ("America/Santiago", (2026, 4, 4), (2026, 4, 4, 3, 0), 25 * HOUR_MS),
        ("America/Santiago", (2026, 4, 5), (2026, 4, 5, 4, 0), DAY_MS),
        ("UTC", (2026, 6, 1), (2026, 6, 1, 0, 0), DAY_MS),
    ],
)
def test_day_starts_at_local_midnight_and_lasts_the_real_length(
    name: str,
    day: tuple[int, int, int],
    start_utc: tuple[int, int, int, int, int],
    length_ms: int,
) -> None:
    tz = _tz(name)
    start_ms, end_ms = day_bounds(tz, _ordinal(*day))
    assert start_ms == _ms(*start_utc)
    assert end_ms - start_ms == length_ms
    assert _wall(tz, start_ms).time() == datetime.min.time()
    assert local_day(tz, start_ms) == _ordinal(*day)
    assert local_day(tz, end_ms - 1) == _ordinal(*day)
    assert local_day(tz, end_ms) == _ordinal(*day) + 1


@pytest.mark.parametrize(
    ("name", "day", "jump_utc"),
    [
        # Beirut springs forward at 00:00 -> 01:00 (the last Sunday of March).
        ("Asia/Beirut", (2026, 3, 29), (2026, 3, 28, 22, 0)),
        # Santiago springs forward at 24:00 Saturday -> 01:00 Sunday (04:00 UTC).
        ("America/Santiago", (2026, 9, 6), (2026, 9, 6, 4, 0)),
        # Havana springs forward at 00:00 -> 01:00 (the second Sunday of March).
        ("America/Havana", (2026, 3, 8), (2026, 3, 8, 5, 0)),
    ],
)
def test_a_day_whose_midnight_does_not_exist_starts_at_the_jump(
    name: str, day: tuple[int, int, int], jump_utc: tuple[int, int, int, int, int]
) -> None:
    tz = _tz(name)
    ordinal = _ordinal(*day)
    start_ms, end_ms = day_bounds(tz, ordinal)
    jump_ms = _ms(*jump_utc)
    # The instant is a real transition: the offset grows by an hour exactly there.
    assert _offset_ms(tz, jump_ms) - _offset_ms(tz, jump_ms - 1) == HOUR_MS
    assert _wall(tz, jump_ms - 1).date() == date(*day) - timedelta(days=1)
    assert start_ms == jump_ms
    assert end_ms - start_ms == 23 * HOUR_MS
    assert _wall(tz, start_ms).hour == 1
    # The previous day ends where this one starts, and the jump instant belongs to this day.
    assert day_bounds(tz, ordinal - 1)[1] == start_ms
    assert local_day(tz, start_ms - 1) == ordinal - 1
    assert local_day(tz, start_ms) == ordinal
    # No segment of the day carries the skipped hour 0.
    hours = quarter_hours(tz, ordinal)
    assert len(hours) == 92
    assert 0 not in hours
    assert hours[0] == 1


# ------------------------------------------------------------------------------------------------
# Segments: the local hour of each quarter hour


@pytest.mark.parametrize(
    ("name", "day", "count", "per_hour"),
    [
        ("America/New_York", (2026, 6, 1), 96, {hour: 4 for hour in range(24)}),
        # 02:00-03:00 does not exist: no segment for hour 2.
        ("America/New_York", (2026, 3, 8), 92, {h: 4 for h in range(24) if h != 2}),
        # 01:00-02:00 happens twice: eight segments for hour 1.
        ("America/New_York", (2026, 11, 1), 100, {h: 8 if h == 1 else 4 for h in range(24)}),
        # 01:30-02:00 happens twice: six segments for hour 1.
        ("Australia/Lord_Howe", (2026, 4, 5), 98, {h: 6 if h == 1 else 4 for h in range(24)}),
        # 02:00-02:30 does not exist: two segments for hour 2.
        ("Australia/Lord_Howe", (2026, 10, 4), 94, {h: 2 if h == 2 else 4 for h in range(24)}),
        # +05:45: every quarter hour still starts on a local quarter hour.
        ("Asia/Kathmandu", (2026, 6, 1), 96, {hour: 4 for hour in range(24)}),
    ],
)
def test_quarter_hours_follow_the_local_clock(
    name: str, day: tuple[int, int, int], count: int, per_hour: dict[int, int]
) -> None:
    tz = _tz(name)
    ordinal = _ordinal(*day)
    start_ms, end_ms = day_bounds(tz, ordinal)
    hours = quarter_hours(tz, ordinal)
    assert len(hours) == count == (end_ms - start_ms) // QUARTER_MS
    assert Counter(hours) == Counter(per_hour)
    assert hours[0] == 0
    assert hours[-1] == 23
    for index, hour in enumerate(hours):
        wall = _wall(tz, start_ms + index * QUARTER_MS)
        assert wall.hour == hour
        assert wall.minute % 15 == 0


def test_quarter_hours_of_a_day_that_is_not_whole_quarters_cover_it_all() -> None:
    # Monrovia moved from -00:44:30 to UTC on 1972-01-07: a day of 23 h 15 min 30 s.
    tz = _tz("Africa/Monrovia")
    ordinal = _ordinal(1972, 1, 7)
    start_ms, end_ms = day_bounds(tz, ordinal)
    length_ms = end_ms - start_ms
    assert length_ms % QUARTER_MS != 0
    hours = quarter_hours(tz, ordinal)
    assert (len(hours) - 1) * QUARTER_MS < length_ms <= len(hours) * QUARTER_MS


# ------------------------------------------------------------------------------------------------
# Properties: days tile the timeline, and every instant lies in its own day

#: Zones with unusual offsets or transitions, plus a few ordinary ones.
ZONES = [
    "UTC",
    "America/New_York",
    "America/Santiago",
    "America/Havana",
    "America/St_Johns",
    "Asia/Beirut",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Apia",
    "Antarctica/Troll",
    "Europe/Dublin",
]

#: 1970 up to 2100: every timestamp the ledger meets in practice.
instants = st.integers(min_value=0, max_value=_ms(2100, 1, 1))


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(ZONES) | st.sampled_from(TZDATA_ZONES),
    timestamp_ms=instants,
)
def test_every_instant_lies_in_the_bounds_of_its_local_day(name: str, timestamp_ms: int) -> None:
    tz = _tz(name)
    day = local_day(tz, timestamp_ms)
    start_ms, end_ms = day_bounds(tz, day)
    assert start_ms <= timestamp_ms < end_ms
    assert type(start_ms) is int and type(end_ms) is int
    # Consecutive days tile the timeline: no gap, no overlap.
    assert day_bounds(tz, day + 1)[0] == end_ms
    assert day_bounds(tz, day - 1)[1] == start_ms
    assert local_day(tz, end_ms) == day + 1
    assert local_day(tz, start_ms - 1) == day - 1
    assert _wall(tz, timestamp_ms).date().toordinal() == day


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(ZONES), timestamp_ms=instants, days=st.integers(1, 40))
def test_a_run_of_days_tiles_exactly(name: str, timestamp_ms: int, days: int) -> None:
    tz = _tz(name)
    first = local_day(tz, timestamp_ms)
    bounds = [day_bounds(tz, day) for day in range(first, first + days)]
    for (_, end_ms), (next_start_ms, _) in pairwise(bounds):
        assert end_ms == next_start_ms
    total_ms = bounds[-1][1] - bounds[0][0]
    # Offsets change by at most a few hours over such a run (Apia skipped a whole day in 2011).
    assert abs(total_ms - days * DAY_MS) <= DAY_MS + 3 * HOUR_MS
    for day, (start_ms, end_ms) in zip(range(first, first + days), bounds, strict=True):
        if end_ms > start_ms:
            assert local_day(tz, start_ms) == day
            assert local_day(tz, end_ms - 1) == day


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(ZONES), timestamp_ms=st.integers(_ms(2000, 1, 1), _ms(2100, 1, 1)))
def test_quarter_hours_cover_the_day(name: str, timestamp_ms: int) -> None:
    """Since 2000 every offset in these zones is whole quarter hours, so each segment lies in
    one local hour (before, Kiritimati was at -10:40)."""
    tz = _tz(name)
    day = local_day(tz, timestamp_ms)
    start_ms, end_ms = day_bounds(tz, day)
    hours = quarter_hours(tz, day)
    assert len(hours) == -(-(end_ms - start_ms) // QUARTER_MS)
    assert all(type(hour) is int and 0 <= hour <= 23 for hour in hours)
    index = (timestamp_ms - start_ms) // QUARTER_MS
    assert hours[index] == _wall(tz, timestamp_ms).hour


# ------------------------------------------------------------------------------------------------
# Zone names


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "../UTC",
        "/etc/localtime",
        "",
        "Not/AZone",
        "A" * 200,
        "America/" + "A" * 192,
        "utc",
        "america/new_york",
        "America/New_York/",
        "/America/New_York",
        "America//New_York",
        "America/New York",
        "America/New_York\x00",
        "America/New_York\n",
        " UTC",
        "UTC ",
        "Amérique/Paris",
        "America",  # a folder of tzdata, not a zone
        "zone.tab",
        "tzdata.zi",
        "leapseconds",
        "__init__",
        "__init__.py",
        # On the host's /usr/share/zoneinfo, not in tzdata's list of zones:
        "posix/UTC",
        "right/UTC",
        "posixrules",
        "localtime",
    ],
)
def test_a_name_that_is_not_a_tzdata_zone_is_none(name: str) -> None:
    assert name not in TZDATA_ZONES
    assert zone(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "UTC",
        "Etc/UTC",
        "Etc/GMT+5",
        "Etc/GMT-14",
        "America/New_York",
        "America/Argentina/ComodRivadavia",
        "America/Port-au-Prince",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
    ],
)
def test_tzdata_zones_are_found_under_their_own_name(name: str) -> None:
    found = zone(name)
    assert found is not None
    assert found.key == name
    # One object per name, so that caches keyed on the zone are hit.
    assert zone(name) is found


def test_every_zone_tzdata_lists_can_be_loaded() -> None:
    assert len(TZDATA_ZONES) > 400
    missing = [name for name in TZDATA_ZONES if zone(name) is None]
    assert missing == []


def test_zone_data_is_the_pinned_tzdata_release() -> None:
    assert TZDATA_VERSION == tzdata.IANA_VERSION
    assert calendar.TZDATA_VERSION == tzdata.IANA_VERSION


def test_zones_come_from_the_tzdata_package_not_the_host(tmp_path: Path) -> None:
    """A host zone database that lies about New York must not change the ledger's days."""
    fake = tmp_path / "America"
    fake.mkdir()
    utc_file = resources.files("tzdata").joinpath("zoneinfo", "UTC")
    with utc_file.open("rb") as source, (fake / "New_York").open("wb") as target:
        shutil.copyfileobj(source, target)
    saved_path = zoneinfo.TZPATH
    zoneinfo.reset_tzpath(to=[str(tmp_path)])
    zone.cache_clear()
    try:
        host_new_york = zoneinfo.ZoneInfo.no_cache("America/New_York")
        assert datetime(2026, 1, 15, tzinfo=host_new_york).utcoffset() == timedelta(0)
        tz = zone("America/New_York")
        assert tz is not None
        assert _offset_ms(tz, _ms(2026, 1, 15, 12)) == -5 * HOUR_MS
        assert day_bounds(tz, _ordinal(2026, 3, 8)) == (
            _ms(2026, 3, 8, 5),
            _ms(2026, 3, 9, 4),
        )
    finally:
        zoneinfo.reset_tzpath(to=saved_path)
        zone.cache_clear()
