"""Local days in IANA time zones, as integer Unix milliseconds. Stdlib only, plus tzdata's files.

Zones are read from the pinned ``tzdata`` package, never from the host's /usr/share/zoneinfo, so
every replica computes the same day boundaries. Everything here is a pure function of its
arguments (results are cached).
"""

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import Final
from zoneinfo import ZoneInfo

import tzdata

#: The IANA release of the zone data every decision is made with.
TZDATA_VERSION: Final[str] = tzdata.IANA_VERSION

#: Width of one pacing plan segment. Every UTC offset in use is a multiple of 15 minutes.
QUARTER_MS: Final = 900_000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_ZONE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}")


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    text = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(text.split())


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    """The zone called ``name``, or None when tzdata has no such zone."""
    if len(name) > 64 or not _ZONE_NAME.fullmatch(name) or name not in _zone_names():
        return None
    path = resources.files("tzdata").joinpath("zoneinfo", *name.split("/"))
    with path.open("rb") as tzfile:
        return ZoneInfo.from_file(tzfile, key=name)


def _to_local(tz: ZoneInfo, timestamp_ms: int) -> datetime:
    return (_EPOCH + timedelta(milliseconds=timestamp_ms)).astimezone(tz)


def local_day(tz: ZoneInfo, timestamp_ms: int) -> int:
    """The proleptic Gregorian ordinal of the local date at ``timestamp_ms``."""
    return _to_local(tz, timestamp_ms).date().toordinal()


def _midnight_ms(tz: ZoneInfo, day: int) -> int:
    d = date.fromordinal(day)
    # A local midnight that does not exist (clocks jump at 00:00) resolves, with fold=0, to the
    # instant of the jump; an ambiguous one to its first occurrence. Either is the day's start.
    return (datetime(d.year, d.month, d.day, tzinfo=tz) - _EPOCH) // _ONE_MS


@lru_cache(maxsize=65536)
def day_bounds(tz: ZoneInfo, day: int) -> tuple[int, int]:
    """``(start_ms, end_ms)`` of local day ``day``: 23, 24 or 25 hours (or 23.5, 24.5...)."""
    return _midnight_ms(tz, day), _midnight_ms(tz, day + 1)


@lru_cache(maxsize=4096)
def quarter_hours(tz: ZoneInfo, day: int) -> tuple[int, ...]:
    """The local wall-clock hour (0-23) at the start of each 15-minute segment of the day.

    Segment i covers ``[start + i * QUARTER_MS, min(start + (i + 1) * QUARTER_MS, end))``. On a
    day when clocks go forward the skipped hour has no segment; when they go back, the repeated
    hour has twice as many.
    """
    start_ms, end_ms = day_bounds(tz, day)
    count = -(-(end_ms - start_ms) // QUARTER_MS)
    return tuple(_to_local(tz, start_ms + i * QUARTER_MS).hour for i in range(count))


def iso_day(day: int) -> str:
    return date.fromordinal(day).isoformat()
