"""Result codes of ledger commands, and the order in which a command is judged.

Imports nothing. A command is checked in the order below; the first check that fails names the
result. A refusal is a value, never an exception.

1. ``invalid_request``        malformed command (types, ranges, ids, unknown fields)
2. (replay)                   the idempotency key was seen with the same body: original result
3. ``idempotency_key_reused`` the key was seen with a different body
4. ``limit_reached``          the idempotency key table is full
5. ``not_found``              no such campaign / reservation
   ``parent_not_found``       creating a campaign whose parent does not exist
6. ``version_conflict``       ``expected_version`` does not match the campaign's version
7. ``campaign_inactive``      the campaign or an ancestor is paused
8. ``outside_flight``         now is before ``start_ms`` or at/after ``end_ms`` (here or above)
9. ``reservation_closed``     the reservation was released or finally committed (or expired, for
                              release)
10. ``limit_reached``         a table is full (campaigns, open reservations) or a counter would
                              leave int64
11. ``budget_exhausted``      a daily or total cap, at some level, leaves less than the minimum
12. ``pacing_limited``        the pacing allowance (plus burst), at some level, leaves less than the
                              minimum

``set_limits`` (no idempotency key) is ok or ``invalid_request`` (`Limits.changed` says why).

Results with codes 5-9, 11 and 12 are remembered under their idempotency key, like successes: a
retry gets the same answer. Codes 1, 3 and 4 and 10 (limit_reached, a passing condition) write
nothing, not even the key.
"""

from typing import Final

OK: Final = "ok"
INVALID_REQUEST: Final = "invalid_request"
IDEMPOTENCY_KEY_REUSED: Final = "idempotency_key_reused"
LIMIT_REACHED: Final = "limit_reached"
NOT_FOUND: Final = "not_found"
PARENT_NOT_FOUND: Final = "parent_not_found"
VERSION_CONFLICT: Final = "version_conflict"
CAMPAIGN_INACTIVE: Final = "campaign_inactive"
OUTSIDE_FLIGHT: Final = "outside_flight"
RESERVATION_CLOSED: Final = "reservation_closed"
BUDGET_EXHAUSTED: Final = "budget_exhausted"
PACING_LIMITED: Final = "pacing_limited"

#: Every refusal code, in precedence order.
REFUSALS: Final = (
    INVALID_REQUEST,
    IDEMPOTENCY_KEY_REUSED,
    LIMIT_REACHED,
    NOT_FOUND,
    PARENT_NOT_FOUND,
    VERSION_CONFLICT,
    CAMPAIGN_INACTIVE,
    OUTSIDE_FLIGHT,
    RESERVATION_CLOSED,
    BUDGET_EXHAUSTED,
    PACING_LIMITED,
)

#: Refusals that write nothing (not even the idempotency key).
UNRECORDED: Final = frozenset({INVALID_REQUEST, IDEMPOTENCY_KEY_REUSED, LIMIT_REACHED})
