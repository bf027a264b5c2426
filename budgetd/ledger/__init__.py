"""The pure budget ledger: commands in, results out, state to plain data and back.

Stdlib only (plus tzdata's zone files); imports nothing else of budgetd. See `Ledger`.
"""

from budgetd.ledger import codes
from budgetd.ledger.calendar import TZDATA_VERSION
from budgetd.ledger.ledger import (
    STATE_FORMAT,
    DayFigures,
    InvariantBroken,
    Ledger,
    SnapshotError,
    render_results,
)
from budgetd.ledger.limits import INT64_MAX, Limits

__all__ = [
    "INT64_MAX",
    "STATE_FORMAT",
    "TZDATA_VERSION",
    "DayFigures",
    "InvariantBroken",
    "Ledger",
    "Limits",
    "SnapshotError",
    "codes",
    "render_results",
]
