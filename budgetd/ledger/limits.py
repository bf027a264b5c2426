"""The ledger's named maxima and retention settings. Imports nothing of budgetd.

Every table the ledger keeps has a maximum here; beyond it a command is refused with
``limit_reached``, never a crash and never unbounded growth. The values are part of the replicated
state (they travel in snapshots): every replica must decide with the same numbers, so they change
only through the log (the ledger's ``set_limits`` op, checked by `Limits.changed`).
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
#: The least ``idempotency_retention_ms`` a run-time change may set: one hour. A request whose
#: outcome is unknown is safe to retry only while its key is remembered; clients retry within
#: seconds (budget_client: 10 s), and a bidder that restarts or waits out a failover replays its
#: unfinished requests within minutes. An hour leaves that a wide margin.
IDEMPOTENCY_RETENTION_MS_FLOOR: Final = 3_600_000
#: The least ``ended_retention_ms`` a run-time change may set: ten minutes. A commit that arrives
#: after its reservation expired (a late billing notice) is recorded against it only while the
#: reservation is kept; after that it is refused ``not_found``.
ENDED_RETENTION_MS_FLOOR: Final = 600_000
#: The limits a run-time change may set. The others (``batch_ops_max``, ``id_length_max``,
#: ``amount_micros_max``) bound the shape of ops that every node's API already checked and that
#: the proposer packs into one log entry: changing them at run time would refuse whole entries.
SETTABLE: Final = (
    "campaigns_max",
    "open_reservations_max",
    "ended_reservations_max",
    "idempotency_keys_max",
    "ttl_ms_max",
    "idempotency_retention_ms",
    "ended_retention_ms",
)


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

    def changed(self, changes: dict[str, object]) -> "Limits":
        """These limits with ``changes`` applied: the rules of a run-time change (``set_limits``).

        Raise ValueError, saying why, when ``changes`` is empty, names a limit that is not in
        `SETTABLE`, gives a value that is not a positive integer, or sets a retention below its
        floor or ``ttl_ms_max`` above a day. A limit may be set below what its table holds now:
        the table only stops growing (new entries are refused with ``limit_reached``) until it
        drains below the limit; nothing held is dropped because of it.
        """
        if not changes:
            raise ValueError("name at least one limit to change")
        unknown = sorted(str(name) for name in changes if name not in SETTABLE)
        if unknown:
            raise ValueError(
                f"unknown or fixed limit(s): {', '.join(unknown)} (settable: {', '.join(SETTABLE)})"
            )
        values = {**self.to_plain(), **changes}
        for name, floor in (
            ("idempotency_retention_ms", IDEMPOTENCY_RETENTION_MS_FLOOR),
            ("ended_retention_ms", ENDED_RETENTION_MS_FLOOR),
        ):
            value = changes.get(name)
            if type(value) is int and value < floor:
                raise ValueError(f"{name} must be at least {floor} ms, got {value}")
        return Limits(**values)  # type: ignore[arg-type]  # __post_init__ checks every value
