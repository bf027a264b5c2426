"""The ledger's named maxima and retention settings. Imports nothing of budgetd.

Every table the ledger keeps has a maximum here; beyond it a command is refused with
``limit_reached``, never a crash and never unbounded growth. The values are part of the replicated
state (they travel in snapshots): every replica must decide with the same numbers.
"""

from dataclasses import asdict, dataclass, fields
from typing import Final

INT64_MAX: Final = 2**63 - 1

#: A campaign id has at most this many levels (``a:b:c:d``).
CAMPAIGN_DEPTH_MAX: Final = 4
#: The latest batch timestamp the ledger accepts: 9999-12-28T00:00Z, so that every local day
#: (and the next one) still has a date. Later int64 values are refused, never a crash.
TIMESTAMP_MS_MAX: Final = 253_402_041_600_000
#: No reservation may live longer than a day (see Limits.ttl_ms_max).
TTL_MS_CEILING: Final = 86_400_000
#: A campaign id segment is at most this long.
SEGMENT_LENGTH_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Maxima and retentions; the defaults suit a production node with a few GiB of memory."""

    campaigns_max: int = 1_000_000
    open_reservations_max: int = 5_000_000
    #: Ended (closed or expired) reservations kept for reads and late commits; oldest go first.
    ended_reservations_max: int = 1_000_000
    idempotency_keys_max: int = 20_000_000
    #: Operations in one batch (one log entry).
    batch_ops_max: int = 10_000
    #: Idempotency keys and bidder ids, in characters.
    id_length_max: int = 128
    amount_micros_max: int = INT64_MAX
    ttl_ms_max: int = 86_400_000
    #: How long an idempotency key is remembered, in ledger time (at least 48 h in production).
    idempotency_retention_ms: int = 48 * 3_600_000
    #: How long an ended reservation stays readable and accepts late commits.
    ended_retention_ms: int = 3_600_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"limit {field.name} must be a positive integer, got {value!r}")
        if self.amount_micros_max > INT64_MAX:
            raise ValueError("amount_micros_max must fit in int64")
        if self.ttl_ms_max > TTL_MS_CEILING:
            # A reservation holds against the day it was granted in; the ledger keeps that day
            # (today and two before) only while no slice can outlive it.
            raise ValueError(f"ttl_ms_max must be at most {TTL_MS_CEILING} (one day)")

    def to_plain(self) -> dict[str, int]:
        return asdict(self)
