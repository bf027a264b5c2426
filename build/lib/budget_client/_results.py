"""Typed results of the mutating calls (the "ok" outcomes), built from the server's bodies.

Owns the mapping from wire bodies to result values. Imports the stdlib only; never budgetd.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Committed", "Granted", "Released", "Spent", "result_for"]


@dataclass(frozen=True, slots=True)
class Granted:
    """A reservation (slice): ``granted_micros`` held for this bidder until ``expires_at_ms``."""

    reservation_id: int
    granted_micros: int
    expires_at_ms: int
    pass_through_ppm: int
    replayed: bool

    @property
    def pass_through_rate(self) -> float:
        return self.pass_through_ppm / 1_000_000


@dataclass(frozen=True, slots=True)
class Committed:
    reservation_id: int
    committed_micros: int
    remaining_micros: int
    late: bool
    overspend_micros: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class Released:
    reservation_id: int
    released_micros: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class Spent:
    campaign_id: str
    recorded_micros: int
    overspend_micros: int
    day: str
    replayed: bool


def _granted(body: Mapping[str, Any]) -> Granted:
    return Granted(
        int(body["reservation_id"]),
        int(body["granted_micros"]),
        int(body["expires_at_ms"]),
        int(body["pass_through_ppm"]),
        bool(body.get("replayed", False)),
    )


def _committed(body: Mapping[str, Any]) -> Committed:
    return Committed(
        int(body["reservation_id"]),
        int(body["committed_micros"]),
        int(body["remaining_micros"]),
        bool(body["late"]),
        int(body["overspend_micros"]),
        bool(body.get("replayed", False)),
    )


def _released(body: Mapping[str, Any]) -> Released:
    return Released(
        int(body["reservation_id"]),
        int(body["released_micros"]),
        bool(body.get("replayed", False)),
    )


def _spent(body: Mapping[str, Any]) -> Spent:
    return Spent(
        str(body["campaign_id"]),
        int(body["recorded_micros"]),
        int(body["overspend_micros"]),
        str(body["day"]),
        bool(body.get("replayed", False)),
    )


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Granted | Committed | Released | Spent]] = {
    "reserve": _granted,
    "commit": _committed,
    "release": _released,
    "spend": _spent,
}


def result_for(op: str, body: Mapping[str, Any]) -> Granted | Committed | Released | Spent:
    """The typed result of ``op`` (reserve, commit, release, spend) from its ok body."""
    return _BUILDERS[op](body)
