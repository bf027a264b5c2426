"""The budget ledger: every reservation, commit, release, spend and pacing decision of budgetd.

A pure, deterministic state machine. It owns all money arithmetic, pacing, expiry, day roll-over,
idempotency and the campaign hierarchy; it imports nothing of budgetd outside this package and no
third-party code (zones come from tzdata's files). No clock, no I/O, no randomness, no logging:
time enters only as the timestamp of a batch, and the ledger's clock never goes backwards.

Input is plain decoded data (dicts, lists, str, int, bool, None), as a codec produces it; every
field is checked again here. Output is plain data too. A refusal is a result; a broken invariant
raises `InvariantBroken`, and a node that sees one must stop.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable
from heapq import heappop, heappush
from typing import Any, Final, NamedTuple

from budgetd.ledger import pacing
from budgetd.ledger.calendar import (
    TZDATA_VERSION,
    day_bounds,
    iso_day,
    local_day,
    quarter_hours,
    zone,
)
from budgetd.ledger.codes import (
    BUDGET_EXHAUSTED,
    CAMPAIGN_INACTIVE,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_REQUEST,
    LIMIT_REACHED,
    NOT_FOUND,
    OK,
    OUTSIDE_FLIGHT,
    PACING_LIMITED,
    PARENT_NOT_FOUND,
    RESERVATION_CLOSED,
    VERSION_CONFLICT,
)
from budgetd.ledger.currencies import ISO_4217
from budgetd.ledger.limits import (
    CAMPAIGN_DEPTH_MAX,
    INT64_MAX,
    SEGMENT_LENGTH_MAX,
    TIMESTAMP_MS_MAX,
    Limits,
)
from budgetd.ledger.pacing import ASAP, PPM, TRAFFIC_SHAPED, allowance_micros
from budgetd.ledger.sortedids import SortedIds
from budgetd.ledger.state import CLOSED, EXPIRED, OPEN, STATE_NAMES, Campaign, DayCounters
from budgetd.ledger.state import Reservation as _Reservation

__all__ = [
    "STATE_FORMAT",
    "DayFigures",
    "InvariantBroken",
    "Ledger",
    "SnapshotError",
    "render_results",
]

#: Version of the plain state layout produced by `Ledger.export_state`.
STATE_FORMAT: Final = 1

#: Closed days each campaign keeps (and reports) besides today.
PREVIOUS_DAYS_KEPT: Final = 2
#: Open reservations expire within this granularity after ``expires_at_ms`` (a commit or release
#: checks the exact time itself).
EXPIRY_BUCKET_MS: Final = 100
#: Idempotency keys are forgotten in groups this wide, once all are older than the retention.
KEY_BUCKET_MS: Final = 60_000
#: A pulse forgets at most this many idempotency keys and ended reservations, oldest first. At
#: the default pulse interval (1 s) that is five times the highest keyed-op rate measured (about
#: 48,000 ops/s, docs/performance.md); it keeps one apply near 0.1 s instead of seconds when a
#: lowered retention (or ledger time jumping after an outage) makes millions due at once: the
#: rest go at the next pulses.
PRUNE_PER_PULSE_MAX: Final = 250_000

_SEGMENT = rf"[A-Za-z0-9_.\-]{{1,{SEGMENT_LENGTH_MAX}}}"
_CAMPAIGN_ID: Final = re.compile(rf"{_SEGMENT}(?::{_SEGMENT}){{0,{CAMPAIGN_DEPTH_MAX - 1}}}")

Result = tuple[Any, ...]
Rendered = dict[str, Any]
Op = dict[str, Any]


class DayFigures(NamedTuple):
    """One campaign's money today as of `Ledger.now_ms` (a parent's figures include its
    subtree's: every hold and spend touches every level of the path)."""

    campaign_id: str
    currency: str
    spent_today_micros: int
    held_micros: int
    #: What every level of the path still allows today and in total (None: uncapped).
    available_micros: int | None
    overspend_micros: int
    late_commits_today: int
    daily_budget_micros: int | None
    #: The pacing plan's allowance by now (None: no paced daily budget, i.e. asap or uncapped).
    plan_micros: int | None


class InvariantBroken(AssertionError):
    """The ledger's state contradicts one of its invariants: stop the node, never continue."""


class SnapshotError(ValueError):
    """A plain state handed to `Ledger.from_state` is not one this ledger can restore."""


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_token(value: object, length_max: int) -> bool:
    return (
        type(value) is str
        and 0 < len(value) <= length_max
        and value.isascii()
        and value.isprintable()
    )


def _invalid(detail: str) -> Result:
    return (INVALID_REQUEST, detail)


def _unknown_fields(op: Op, allowed: frozenset[str]) -> Result | None:
    if op.keys() <= allowed:
        return None
    extra = sorted(str(name) for name in op.keys() - allowed)
    return _invalid(f"unknown field(s): {', '.join(extra)}")


def _render_refusal(result: Result) -> Rendered:
    return {"code": result[0], "detail": result[1]}


#: The names of the fields of each op's `ok` result, in the order its handler returns them.
_OK_FIELDS: Final = {
    "reserve": ("reservation_id", "granted_micros", "expires_at_ms", "pass_through_ppm"),
    "commit": ("committed_micros", "remaining_micros", "late", "overspend_micros"),
    "release": ("released_micros",),
    "spend": ("recorded_micros", "overspend_micros", "day"),
    "put_campaign": ("campaign_id", "version", "created"),
    "pulse": ("now_ms",),
    "set_limits": ("limits",),
}


Render = Callable[[Result], Rendered]


def _renderer(fields: tuple[str, ...]) -> Render:
    """What renders the results of an op whose ``ok`` result holds ``fields`` after its code: a
    refusal as its code and detail, an ok result as one member per field (a result of another
    length is a ValueError). For the sizes the ops have, a dict display, about a quarter of the
    cost of ``dict(zip(...))``."""
    if len(fields) == 1:
        [a] = fields

        def render1(result: Result) -> Rendered:
            if result[0] != OK:
                return _render_refusal(result)
            code, value_a = result
            return {"code": code, a: value_a}

        return render1
    if len(fields) == 3:
        a, b, c = fields

        def render3(result: Result) -> Rendered:
            if result[0] != OK:
                return _render_refusal(result)
            code, value_a, value_b, value_c = result
            return {"code": code, a: value_a, b: value_b, c: value_c}

        return render3
    if len(fields) == 4:
        a, b, c, d = fields

        def render4(result: Result) -> Rendered:
            if result[0] != OK:
                return _render_refusal(result)
            code, value_a, value_b, value_c, value_d = result
            return {"code": code, a: value_a, b: value_b, c: value_c, d: value_d}

        return render4
    names = ("code", *fields)

    def render(result: Result) -> Rendered:
        if result[0] != OK:
            return _render_refusal(result)
        return dict(zip(names, result, strict=True))

    return render


#: Each op's renderer, by op name.
_RENDERERS: Final = {name: _renderer(fields) for name, fields in _OK_FIELDS.items()}


def render_results(ops: object, results: list[Result]) -> list[Rendered]:
    """The results `Ledger.apply_unrendered` returned for ``ops``, rendered: each a dict with
    its ``code`` and either the op's fields (``ok``) or a ``detail``; an answer from an
    idempotency key also has ``replayed: true``. Reads no ledger state."""
    if type(ops) is not list:  # the batch itself was refused: one result
        return [_render_refusal(result) for result in results]
    rendered: list[Rendered] = []
    append = rendered.append
    renderers = _RENDERERS
    for op, result in zip(ops, results, strict=True):
        name = op.get("op") if type(op) is dict else None
        render = renderers.get(name) if type(name) is str else None
        if render is None:
            append(_render_refusal(result))
        elif result[0] == "replay":
            body = render(result[1])
            body["replayed"] = True
            append(body)
        else:
            append(render(result))
    return rendered


_PUT_FIELDS: Final = frozenset(
    {
        "op",
        "idempotency_key",
        "expected_version",
        "campaign_id",
        "currency",
        "timezone",
        "daily_budget_micros",
        "total_budget_micros",
        "start_ms",
        "end_ms",
        "pacing",
        "status",
    }
)
_PACING_FIELDS: Final = frozenset({"mode", "hourly_weights", "burst_ppm"})
_RESERVE_FIELDS: Final = frozenset(
    {
        "op",
        "idempotency_key",
        "campaign_id",
        "amount_micros",
        "min_amount_micros",
        "ttl_ms",
        "bidder_id",
    }
)
_COMMIT_FIELDS: Final = frozenset(
    {"op", "idempotency_key", "reservation_id", "amount_micros", "final"}
)
_RELEASE_FIELDS: Final = frozenset({"op", "idempotency_key", "reservation_id"})
_SPEND_FIELDS: Final = frozenset(
    {"op", "idempotency_key", "campaign_id", "amount_micros", "bidder_id"}
)
_PULSE_FIELDS: Final = frozenset({"op"})
_STATUSES: Final = {"active": True, "paused": False}


class Ledger:
    """The whole replicated state of one budgetd cluster, and the only code that changes it.

    Commands go in through `apply_batch`; reads (`campaign`, `reservation`, `campaign_ids`,
    `stats`) change nothing. `export_state` / `from_state` and `digest` serve snapshots and
    replica comparison.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._now_ms = 0
        self._campaigns: dict[str, Campaign] = {}
        self._campaign_ids_sorted = SortedIds()
        self._campaign_seq = 0
        self._roll_heap: list[tuple[int, int, str]] = []
        self._reservations: dict[int, _Reservation] = {}
        self._open_reservations = 0
        self._next_reservation_id = 1
        self._expiry_buckets: dict[int, list[int]] = {}
        self._expiry_heap: list[int] = []
        self._ended: deque[int] = deque()
        #: key -> the request's fingerprint followed by its result, in one flat tuple (one
        #: object per key instead of three: keys outlive reservations by days).
        self._keys: dict[str, tuple[Any, ...]] = {}
        self._key_buckets: deque[tuple[int, list[str]]] = deque()
        self._next_control_ms = 0
        handlers: dict[str, Callable[[Op], Result]] = {
            "reserve": self._reserve,
            "commit": self._commit,
            "release": self._release,
            "spend": self._spend,
            "put_campaign": self._put_campaign,
            "pulse": self._pulse,
            "set_limits": self._set_limits,
        }
        self._handlers = handlers

    # ------------------------------------------------------------------------------------------
    # Commands

    @property
    def now_ms(self) -> int:
        """The ledger's clock: the largest batch timestamp applied so far."""
        return self._now_ms

    def apply_batch(self, timestamp_ms: object, ops: object) -> list[Rendered]:
        """Apply ``ops`` in order at ``timestamp_ms``; one rendered result per op, in order
        (`apply_unrendered`, then `render_results`).

        Time first moves to ``max(timestamp_ms, now_ms)``: reservations whose time is up expire and
        days that ended roll over, before any op is judged.
        """
        return render_results(ops, self.apply_unrendered(timestamp_ms, ops))

    def apply_unrendered(self, timestamp_ms: object, ops: object) -> list[Result]:
        """`apply_batch` without the rendering: each op's result as a tuple, its code first, or
        ``("replay", result)`` for an answer from its idempotency key. Only the node that
        proposed an entry has anybody to answer; the others skip `render_results`."""
        if type(ops) is not list:
            return [_invalid("a batch is a list of operations")]
        if len(ops) > self.limits.batch_ops_max:
            detail = f"a batch holds at most {self.limits.batch_ops_max} operations, got {len(ops)}"
            return [(LIMIT_REACHED, detail)] * len(ops)
        if not _is_int(timestamp_ms, 0, TIMESTAMP_MS_MAX):
            detail = (
                f"the batch timestamp must be an integer of Unix milliseconds from 0 to "
                f"{TIMESTAMP_MS_MAX}"
            )
            return [_invalid(detail)] * len(ops)
        assert type(timestamp_ms) is int
        self._advance(timestamp_ms)
        handlers = self._handlers
        results: list[Result] = []
        append = results.append
        for op in ops:
            if type(op) is not dict:
                append(_invalid("an operation must be a map"))
                continue
            name = op.get("op")
            handler = handlers.get(name) if type(name) is str else None
            if handler is None:
                append(_invalid(f"unknown op {name!r}"))
                continue
            append(handler(op))
        return results

    def _advance(self, timestamp_ms: int) -> None:
        if timestamp_ms > self._now_ms:
            self._now_ms = timestamp_ms
        now = self._now_ms
        heap = self._expiry_heap
        if heap and heap[0] <= now:
            reservations = self._reservations
            while heap and heap[0] <= now:
                for reservation_id in self._expiry_buckets.pop(heappop(heap)):
                    reservation = reservations.get(reservation_id)
                    if reservation is not None and reservation.state == OPEN:
                        self._expire(reservation)
        rolls = self._roll_heap
        while rolls and rolls[0][0] <= now:
            _, seq, root_id = heappop(rolls)
            root = self._campaigns[root_id]
            day = local_day(root.zone, now)
            for node in root.subtree():
                self._open_day(node, day)
            heappush(rolls, (root.day_end_ms, seq, root_id))

    def _replay_or_reuse(self, entry: tuple[Any, ...], fingerprint: tuple[Any, ...]) -> Result:
        size = len(fingerprint)
        if entry[:size] == fingerprint:
            return ("replay", entry[size:])
        return (
            IDEMPOTENCY_KEY_REUSED,
            "this idempotency key was used before with a different request",
        )

    def _remember(self, key: str, fingerprint: tuple[Any, ...], result: Result) -> None:
        self._keys[key] = fingerprint + result
        bucket_ms = self._now_ms - self._now_ms % KEY_BUCKET_MS
        buckets = self._key_buckets
        if buckets and buckets[-1][0] == bucket_ms:
            buckets[-1][1].append(key)
        else:
            buckets.append((bucket_ms, [key]))

    def _keys_full(self) -> Result | None:
        if len(self._keys) < self.limits.idempotency_keys_max:
            return None
        return (LIMIT_REACHED, f"{self.limits.idempotency_keys_max} idempotency keys are held")

    def _lookup_campaign(self, campaign_id: object) -> Campaign | Result:
        campaign = self._campaigns.get(campaign_id) if type(campaign_id) is str else None
        if campaign is not None:
            return campaign
        if type(campaign_id) is not str or not _CAMPAIGN_ID.fullmatch(campaign_id):
            return _invalid(
                "campaign_id must be 1-4 ':'-separated segments of [A-Za-z0-9_.-]{1,64}"
            )
        return (NOT_FOUND, f"campaign {campaign_id!r} does not exist")

    # reserve ----------------------------------------------------------------------------------

    def _reserve(self, op: Op) -> Result:
        limits = self.limits
        if len(op) > 6 and (bad := _unknown_fields(op, _RESERVE_FIELDS)):
            return bad
        key: Any = op.get("idempotency_key")
        amount: Any = op.get("amount_micros")
        minimum: Any = op.get("min_amount_micros", 1)
        ttl_ms: Any = op.get("ttl_ms")
        bidder_id: Any = op.get("bidder_id")
        if not _is_token(key, limits.id_length_max):
            return _invalid(
                f"idempotency_key must be 1-{self.limits.id_length_max} printable ASCII characters"
            )
        if not _is_int(amount, 1, limits.amount_micros_max):
            return _invalid(
                f"amount_micros must be an integer from 1 to {self.limits.amount_micros_max}"
            )
        if not _is_int(minimum, 1, amount):
            return _invalid("min_amount_micros must be an integer from 1 to amount_micros")
        if not _is_int(ttl_ms, 1, limits.ttl_ms_max):
            return _invalid(f"ttl_ms must be an integer from 1 to {limits.ttl_ms_max}")
        if not _is_token(bidder_id, limits.id_length_max):
            return _invalid(
                f"bidder_id must be 1-{self.limits.id_length_max} printable ASCII characters"
            )
        found = self._lookup_campaign(op.get("campaign_id"))
        if type(found) is tuple and found[0] is INVALID_REQUEST:
            return found
        # The fingerprint is kept for the key's whole retention: share the campaign's own id and
        # one interned bidder id instead of holding the decoded copies.
        bidder_id = sys.intern(bidder_id)
        campaign_id = found.campaign_id if type(found) is Campaign else op["campaign_id"]
        fingerprint = ("reserve", campaign_id, amount, minimum, ttl_ms, bidder_id)
        entry = self._keys.get(key)
        if entry is not None:
            return self._replay_or_reuse(entry, fingerprint)
        if full := self._keys_full():
            return full
        if type(found) is tuple:
            result: Result = found
        else:
            assert type(found) is Campaign
            result = self._decide_reserve(
                found, amount, minimum=minimum, ttl_ms=ttl_ms, bidder_id=bidder_id
            )
        if result[0] is not LIMIT_REACHED:
            self._remember(key, fingerprint, result)
        return result

    def _decide_reserve(
        self, campaign: Campaign, amount: int, *, minimum: int, ttl_ms: int, bidder_id: str
    ) -> Result:
        now = self._now_ms
        budget_room = amount
        pacing_room = amount
        rate_ppm = PPM
        inactive: Campaign | None = None
        outside: Campaign | None = None
        for node in campaign.path:
            if node.gated:
                if not node.active:
                    inactive = node
                start_ms = node.start_ms
                end_ms = node.end_ms
                if (start_ms is not None and now < start_ms) or (
                    end_ms is not None and now >= end_ms
                ):
                    outside = node
            daily = node.daily_budget_micros
            if daily is not None:
                today = node.today
                used = today.spent_micros + today.held_micros
                if daily - used < budget_room:
                    budget_room = daily - used
                if node.paced:
                    allowed = allowance_micros(
                        node.pacing_mode,
                        daily,
                        start_ms=node.day_start_ms,
                        end_ms=node.day_end_ms,
                        now_ms=now,
                        plan=node.plan,
                    )
                    if allowed + node.burst_micros - used < pacing_room:
                        pacing_room = allowed + node.burst_micros - used
            total = node.total_budget_micros
            if total is not None:
                room = total - node.spent_total_micros - node.held_total_micros
                if room < budget_room:
                    budget_room = room
            if node.pass_through_ppm < rate_ppm:
                rate_ppm = node.pass_through_ppm
        root = campaign.path[-1]
        if inactive is not None:
            return (CAMPAIGN_INACTIVE, f"campaign {inactive.campaign_id!r} is paused")
        if outside is not None:
            return (OUTSIDE_FLIGHT, f"now is outside the flight of {outside.campaign_id!r}")
        if self._open_reservations >= self.limits.open_reservations_max:
            return (LIMIT_REACHED, f"{self.limits.open_reservations_max} reservations are open")
        if budget_room < minimum:
            return (BUDGET_EXHAUSTED, f"{max(budget_room, 0)} micros left under the caps")
        if pacing_room < minimum:
            return (PACING_LIMITED, f"{max(pacing_room, 0)} micros allowed by pacing now")
        granted = budget_room if budget_room < pacing_room else pacing_room
        if root.spent_total_micros + root.held_total_micros + granted > INT64_MAX:
            return (LIMIT_REACHED, "the campaign tree's counters would leave int64")
        reservation_id = self._next_reservation_id
        self._next_reservation_id = reservation_id + 1
        expires_at_ms = now + ttl_ms
        self._reservations[reservation_id] = _Reservation(
            reservation_id,
            campaign,
            bidder_id,
            granted,
            expires_at_ms,
            campaign.today,
            rate_ppm,
        )
        self._open_reservations += 1
        for node in campaign.path:
            node.today.held_micros += granted
            node.held_total_micros += granted
        bucket_ms = -(-expires_at_ms // EXPIRY_BUCKET_MS) * EXPIRY_BUCKET_MS
        bucket = self._expiry_buckets.get(bucket_ms)
        if bucket is None:
            self._expiry_buckets[bucket_ms] = [reservation_id]
            heappush(self._expiry_heap, bucket_ms)
        else:
            bucket.append(reservation_id)
        return (OK, reservation_id, granted, expires_at_ms, rate_ppm)

    # commit / release / expire -----------------------------------------------------------------

    def _commit(self, op: Op) -> Result:
        if len(op) > 4 and (bad := _unknown_fields(op, _COMMIT_FIELDS)):
            return bad
        key: Any = op.get("idempotency_key")
        reservation_id: Any = op.get("reservation_id")
        amount: Any = op.get("amount_micros")
        final: Any = op.get("final", False)
        if not _is_token(key, self.limits.id_length_max):
            return _invalid(
                f"idempotency_key must be 1-{self.limits.id_length_max} printable ASCII characters"
            )
        if not _is_int(reservation_id, 1, INT64_MAX):
            return _invalid("reservation_id must be a positive integer")
        if not _is_int(amount, 1, self.limits.amount_micros_max):
            return _invalid(
                f"amount_micros must be an integer from 1 to {self.limits.amount_micros_max}"
            )
        if type(final) is not bool:
            return _invalid("final must be a boolean")
        fingerprint = ("commit", reservation_id, amount, final)
        entry = self._keys.get(key)
        if entry is not None:
            return self._replay_or_reuse(entry, fingerprint)
        if full := self._keys_full():
            return full
        result = self._decide_commit(reservation_id, amount, final=final)
        if result[0] is not LIMIT_REACHED:
            self._remember(key, fingerprint, result)
        return result

    def _decide_commit(self, reservation_id: int, amount: int, *, final: bool) -> Result:
        reservation = self._reservations.get(reservation_id)
        if reservation is None:
            return (NOT_FOUND, f"reservation {reservation_id} does not exist (or was forgotten)")
        if reservation.state == CLOSED:
            return (RESERVATION_CLOSED, f"reservation {reservation_id} was closed")
        now = self._now_ms
        if reservation.state == OPEN and now >= reservation.expires_at_ms:
            self._expire(reservation)
        late = reservation.state == EXPIRED
        hold = reservation.held_micros
        covered = amount if amount < hold else hold
        excess = amount - covered
        released = hold - covered if final else 0
        campaign = reservation.campaign
        counters = reservation.counters
        if counters.retired:
            counters = campaign.today
        root = campaign.root() if excess else campaign
        if excess and root.spent_total_micros + root.held_total_micros + excess > INT64_MAX:
            return (LIMIT_REACHED, "the campaign tree's counters would leave int64")
        reservation.committed_micros += amount
        if late:
            reservation.late = True
        overspend = self._record_spend(
            campaign,
            counters,
            amount,
            unreserved_micros=excess,
            held_released_micros=covered + released,
            late=late,
        )
        if final and reservation.state == OPEN:
            reservation.state = CLOSED
            self._end(reservation)
        return (OK, reservation.committed_micros, reservation.held_micros, late, overspend)

    def _record_spend(
        self,
        campaign: Campaign,
        counters: DayCounters,
        amount: int,
        *,
        unreserved_micros: int,
        held_released_micros: int,
        late: bool,
    ) -> int:
        """Add ``amount`` of spend at every level; return the largest overspend it caused.

        Overspend grows only by unreserved spend, by the part of it that lands above a cap:
        ``min(unreserved, spent + held - cap)`` when positive. So at every level and day
        ``spent + held <= cap + overspend`` (I1).
        """
        overspend_max = 0
        node: Campaign | None = campaign
        day: DayCounters | None = counters
        while node is not None and day is not None:
            day.held_micros -= held_released_micros
            day.spent_micros += amount
            node.held_total_micros -= held_released_micros
            node.spent_total_micros += amount
            if late:
                day.late_commits += 1
                node.late_commits_total += 1
            if unreserved_micros:
                cap = node.daily_budget_micros if day is node.today else day.cap_micros
                if cap is not None:
                    over = min(unreserved_micros, day.spent_micros + day.held_micros - cap)
                    if over > 0:
                        day.overspend_micros += over
                        overspend_max = max(overspend_max, over)
                cap = node.total_budget_micros
                if cap is not None:
                    used = node.spent_total_micros + node.held_total_micros
                    over = min(unreserved_micros, used - cap)
                    if over > 0:
                        node.overspend_total_micros += over
                        overspend_max = max(overspend_max, over)
            if day.held_micros < 0 or node.held_total_micros < 0:
                raise InvariantBroken(f"negative hold on {node.campaign_id!r}")
            node = node.parent
            day = day.parent
        if node is not None or day is not None:
            raise InvariantBroken(
                f"day counters of {campaign.campaign_id!r} do not follow the tree"
            )
        return overspend_max

    def _release(self, op: Op) -> Result:
        if len(op) > 3 and (bad := _unknown_fields(op, _RELEASE_FIELDS)):
            return bad
        key: Any = op.get("idempotency_key")
        reservation_id: Any = op.get("reservation_id")
        if not _is_token(key, self.limits.id_length_max):
            return _invalid(
                f"idempotency_key must be 1-{self.limits.id_length_max} printable ASCII characters"
            )
        if not _is_int(reservation_id, 1, INT64_MAX):
            return _invalid("reservation_id must be a positive integer")
        fingerprint = ("release", reservation_id)
        entry = self._keys.get(key)
        if entry is not None:
            return self._replay_or_reuse(entry, fingerprint)
        if full := self._keys_full():
            return full
        result = self._decide_release(reservation_id)
        self._remember(key, fingerprint, result)
        return result

    def _decide_release(self, reservation_id: int) -> Result:
        reservation = self._reservations.get(reservation_id)
        if reservation is None:
            return (NOT_FOUND, f"reservation {reservation_id} does not exist (or was forgotten)")
        if reservation.state == OPEN and self._now_ms >= reservation.expires_at_ms:
            self._expire(reservation)
        if reservation.state != OPEN:
            state = STATE_NAMES[reservation.state]
            return (RESERVATION_CLOSED, f"reservation {reservation_id} is {state}")
        released = reservation.held_micros
        self._unhold(reservation, released)
        reservation.state = CLOSED
        self._end(reservation)
        return (OK, released)

    def _unhold(self, reservation: _Reservation, amount: int) -> None:
        node: Campaign | None = reservation.campaign
        day: DayCounters | None = reservation.counters
        while node is not None and day is not None:
            day.held_micros -= amount
            node.held_total_micros -= amount
            if day.held_micros < 0 or node.held_total_micros < 0:
                raise InvariantBroken(f"negative hold on {node.campaign_id!r}")
            node = node.parent
            day = day.parent

    def _expire(self, reservation: _Reservation) -> None:
        self._unhold(reservation, reservation.held_micros)
        reservation.state = EXPIRED
        self._end(reservation)

    def _end(self, reservation: _Reservation) -> None:
        reservation.ended_at_ms = self._now_ms
        self._open_reservations -= 1
        ended = self._ended
        ended.append(reservation.reservation_id)
        if len(ended) > self.limits.ended_reservations_max:
            del self._reservations[ended.popleft()]
            if len(ended) > self.limits.ended_reservations_max:  # shrinking to a lowered limit
                del self._reservations[ended.popleft()]

    # spend ------------------------------------------------------------------------------------

    def _spend(self, op: Op) -> Result:
        if len(op) > 5 and (bad := _unknown_fields(op, _SPEND_FIELDS)):
            return bad
        key: Any = op.get("idempotency_key")
        amount: Any = op.get("amount_micros")
        bidder_id: Any = op.get("bidder_id")
        if not _is_token(key, self.limits.id_length_max):
            return _invalid(
                f"idempotency_key must be 1-{self.limits.id_length_max} printable ASCII characters"
            )
        if not _is_int(amount, 1, self.limits.amount_micros_max):
            return _invalid(
                f"amount_micros must be an integer from 1 to {self.limits.amount_micros_max}"
            )
        if not _is_token(bidder_id, self.limits.id_length_max):
            return _invalid(
                f"bidder_id must be 1-{self.limits.id_length_max} printable ASCII characters"
            )
        found = self._lookup_campaign(op.get("campaign_id"))
        if type(found) is tuple and found[0] is INVALID_REQUEST:
            return found
        bidder_id = sys.intern(bidder_id)
        campaign_id = found.campaign_id if type(found) is Campaign else op["campaign_id"]
        fingerprint = ("spend", campaign_id, amount, bidder_id)
        entry = self._keys.get(key)
        if entry is not None:
            return self._replay_or_reuse(entry, fingerprint)
        if full := self._keys_full():
            return full
        if type(found) is tuple:
            result: Result = found
        else:
            assert type(found) is Campaign
            root = found.root()
            if root.spent_total_micros + root.held_total_micros + amount > INT64_MAX:
                return (LIMIT_REACHED, "the campaign tree's counters would leave int64")
            overspend = self._record_spend(
                found,
                found.today,
                amount,
                unreserved_micros=amount,
                held_released_micros=0,
                late=False,
            )
            result = (OK, amount, overspend, iso_day(found.today.day))
        self._remember(key, fingerprint, result)
        return result

    # campaigns --------------------------------------------------------------------------------

    def _put_campaign(self, op: Op) -> Result:
        limits = self.limits
        if bad := _unknown_fields(op, _PUT_FIELDS):
            return bad
        campaign_id: Any = op.get("campaign_id")
        key: Any = op.get("idempotency_key")
        expected_version: Any = op.get("expected_version")
        currency: Any = op.get("currency")
        timezone: Any = op.get("timezone")
        daily: Any = op.get("daily_budget_micros")
        total: Any = op.get("total_budget_micros")
        start_ms: Any = op.get("start_ms")
        end_ms: Any = op.get("end_ms")
        status: Any = op.get("status", "active")
        settings: Any = op.get("pacing")
        if type(campaign_id) is not str or not _CAMPAIGN_ID.fullmatch(campaign_id):
            return _invalid(
                "campaign_id must be 1-4 ':'-separated segments of [A-Za-z0-9_.-]{1,64}"
            )
        if key is not None and not _is_token(key, limits.id_length_max):
            return _invalid(
                f"idempotency_key must be 1-{self.limits.id_length_max} printable ASCII characters"
            )
        if expected_version is not None and not _is_int(expected_version, 1, INT64_MAX):
            return _invalid("expected_version must be a positive integer")
        if currency is not None and (type(currency) is not str or currency not in ISO_4217):
            return _invalid("currency must be an ISO 4217 code such as 'USD'")
        if timezone is not None and (type(timezone) is not str or zone(timezone) is None):
            return _invalid("timezone must be an IANA time zone such as 'America/New_York'")
        for name, value in (("daily_budget_micros", daily), ("total_budget_micros", total)):
            if value is not None and not _is_int(value, 1, limits.amount_micros_max):
                return _invalid(
                    f"{name} must be an integer from 1 to {limits.amount_micros_max}, or absent"
                )
        for name, value in (("start_ms", start_ms), ("end_ms", end_ms)):
            if value is not None and not _is_int(value, 0, INT64_MAX):
                return _invalid(f"{name} must be a non-negative int64 of milliseconds or absent")
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            return _invalid("start_ms must be before end_ms")
        if type(status) is not str or status not in _STATUSES:
            return _invalid("status must be 'active' or 'paused'")
        parsed = _parse_pacing(settings, daily_budget_micros=daily)
        if parsed[0] is INVALID_REQUEST:
            return parsed
        _, mode, weights, burst_ppm = parsed
        settings = (daily, total, start_ms, end_ms, mode, weights, burst_ppm, status)
        identity = ("put_campaign", campaign_id, expected_version, currency, timezone)
        fingerprint = identity + settings
        if key is not None:
            entry = self._keys.get(key)
            if entry is not None:
                return self._replay_or_reuse(entry, fingerprint)
            if full := self._keys_full():
                return full
        campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            result = self._create_campaign(campaign_id, expected_version, currency, timezone)
            if result[0] is INVALID_REQUEST or result[0] is LIMIT_REACHED:
                return result
            campaign = self._campaigns.get(campaign_id)
            if campaign is not None:
                self._apply_settings(campaign, *settings, fresh=True)
        else:
            result = self._update_campaign(campaign, expected_version, currency, timezone, settings)
            if result[0] is INVALID_REQUEST:
                return result
        if key is not None:
            self._remember(key, fingerprint, result)
        return result

    def _create_campaign(
        self,
        campaign_id: str,
        expected_version: int | None,
        currency: str | None,
        timezone: str | None,
    ) -> Result:
        if expected_version is not None:
            return (VERSION_CONFLICT, f"campaign {campaign_id!r} does not exist yet")
        parent_id, _, _ = campaign_id.rpartition(":")
        parent = None
        if parent_id:
            parent = self._campaigns.get(parent_id)
            if parent is None:
                return (PARENT_NOT_FOUND, f"parent campaign {parent_id!r} does not exist")
            root = parent.root()
            if currency is not None and currency != root.currency:
                return _invalid(f"a child's currency is its root's ({root.currency})")
            if timezone is not None and timezone != root.timezone:
                return _invalid(f"a child's timezone is its root's ({root.timezone})")
            currency = root.currency
            tz = root.zone
        else:
            if currency is None or timezone is None:
                return _invalid("a root campaign needs a currency and a timezone")
            found_zone = zone(timezone)
            assert found_zone is not None
            tz = found_zone
        if len(self._campaigns) >= self.limits.campaigns_max:
            return (LIMIT_REACHED, f"{self.limits.campaigns_max} campaigns exist")
        self._campaign_seq += 1
        campaign = Campaign(campaign_id, parent, self._campaign_seq, tz)
        campaign.currency = currency
        campaign.version = 1
        self._campaigns[campaign_id] = campaign
        self._campaign_ids_sorted.add(campaign_id)
        if parent is None:
            self._open_day(campaign, local_day(tz, self._now_ms), first=True)
            heappush(self._roll_heap, (campaign.day_end_ms, campaign.seq, campaign_id))
        else:
            parent.children.append(campaign)
            self._open_day(campaign, parent.today.day, first=True)
        return (OK, campaign_id, 1, True)

    def _update_campaign(
        self,
        campaign: Campaign,
        expected_version: int | None,
        currency: str | None,
        timezone: str | None,
        settings: tuple[Any, ...],
    ) -> Result:
        if expected_version is not None and expected_version != campaign.version:
            return (
                VERSION_CONFLICT,
                f"campaign {campaign.campaign_id!r} is at version {campaign.version}",
            )
        if currency is not None and currency != campaign.currency:
            return _invalid(f"currency cannot change (it is {campaign.currency})")
        if timezone is not None and timezone != campaign.timezone:
            return _invalid(f"timezone cannot change (it is {campaign.timezone})")
        if settings != _settings_of(campaign):
            self._apply_settings(campaign, *settings)
            campaign.version += 1
        return (OK, campaign.campaign_id, campaign.version, False)

    def _apply_settings(
        self,
        campaign: Campaign,
        daily: int | None,
        total: int | None,
        start_ms: int | None,
        end_ms: int | None,
        mode: str,
        weights: tuple[int, ...] | None,
        burst_ppm: int,
        status: str,
        *,
        fresh: bool = False,
    ) -> None:
        """Set a campaign's settings; ``fresh`` for a campaign created in this command."""
        reshaped = fresh or (
            mode != campaign.pacing_mode
            or weights != campaign.hourly_weights
            or (daily is None) != (campaign.daily_budget_micros is None)
        )
        campaign.daily_budget_micros = daily
        campaign.total_budget_micros = total
        campaign.start_ms = start_ms
        campaign.end_ms = end_ms
        campaign.pacing_mode = mode
        campaign.hourly_weights = weights
        campaign.burst_ppm = burst_ppm
        campaign.burst_micros = 0 if daily is None else daily * burst_ppm // PPM
        campaign.active = _STATUSES[status]
        campaign.gated = not campaign.active or start_ms is not None or end_ms is not None
        campaign.paced = daily is not None and mode != ASAP
        today = campaign.today
        if fresh:
            today.cap_micros = daily
            campaign.total_cap_micros = total
        else:
            today.cap_micros = _cap_high(today.cap_micros, daily)
            campaign.total_cap_micros = _cap_high(campaign.total_cap_micros, total)
        if reshaped:
            campaign.plan = _plan_of(campaign)
            campaign.pass_through_ppm = _initial_rate_ppm(campaign)

    def _open_day(self, campaign: Campaign, day: int, *, first: bool = False) -> None:
        """Start local day ``day`` for one campaign (its parent's day is already open)."""
        if not first:
            previous = campaign.previous_days
            previous.insert(0, campaign.today)
            while len(previous) > PREVIOUS_DAYS_KEPT:
                previous.pop().retired = True
        parent_day = None if campaign.parent is None else campaign.parent.today
        campaign.today = DayCounters(day, campaign.daily_budget_micros, parent_day)
        campaign.day_start_ms, campaign.day_end_ms = day_bounds(campaign.zone, day)
        campaign.plan = _plan_of(campaign)
        campaign.pass_through_ppm = _initial_rate_ppm(campaign)

    # pulse ------------------------------------------------------------------------------------

    def _pulse(self, op: Op) -> Result:
        if bad := _unknown_fields(op, _PULSE_FIELDS):
            return bad
        now = self._now_ms
        if now >= self._next_control_ms:
            self._control()
            self._next_control_ms = now - now % pacing.CONTROL_PERIOD_MS + pacing.CONTROL_PERIOD_MS
        self._prune(now)
        return (OK, now)

    def _control(self) -> None:
        now = self._now_ms
        for campaign in self._campaigns.values():
            daily = campaign.daily_budget_micros
            if daily is None:
                campaign.pass_through_ppm = PPM
                continue
            today = campaign.today
            used = today.spent_micros + today.held_micros
            if campaign.pacing_mode == ASAP:
                campaign.pass_through_ppm = 0 if used >= daily else PPM
                continue
            plan_micros = allowance_micros(
                campaign.pacing_mode,
                daily,
                start_ms=campaign.day_start_ms,
                end_ms=campaign.day_end_ms,
                now_ms=now,
                plan=campaign.plan,
            )
            campaign.pass_through_ppm = pacing.next_rate_ppm(
                campaign.pass_through_ppm,
                spent_micros=today.spent_micros,
                plan_micros=plan_micros,
                budget_micros=daily,
                used_micros=used,
            )

    def _prune(self, now: int) -> None:
        keys = self._keys
        buckets = self._key_buckets
        room = PRUNE_PER_PULSE_MAX
        horizon = now - self.limits.idempotency_retention_ms - KEY_BUCKET_MS
        while buckets and buckets[0][0] <= horizon and room > 0:
            bucket_ms, bucket = buckets[0]
            if len(bucket) > room:  # a group larger than what is left: its oldest keys only
                for key in bucket[:room]:
                    del keys[key]
                buckets[0] = (bucket_ms, bucket[room:])
                room = 0
                break
            buckets.popleft()
            for key in bucket:
                del keys[key]
            room -= len(bucket)
        ended = self._ended
        reservations = self._reservations
        horizon = now - self.limits.ended_retention_ms
        while ended and reservations[ended[0]].ended_at_ms <= horizon and room > 0:
            del reservations[ended.popleft()]
            room -= 1

    # limits -----------------------------------------------------------------------------------

    def _set_limits(self, op: Op) -> Result:
        """Change the settable limits named in ``op`` (the others stay), from this batch on.

        A limit set below what its table holds refuses new growth only; a retention change
        applies to what is already kept, at the next pulses (`_prune`).
        """
        try:
            limits = self.limits.changed({name: op[name] for name in op if name != "op"})
        except ValueError as error:
            return _invalid(str(error))
        self.limits = limits
        return (OK, limits.to_plain())

    # ------------------------------------------------------------------------------------------
    # Reads (change nothing)

    def campaign(self, campaign_id: str) -> Rendered | None:
        """Settings and live state of one campaign as of `now_ms`, or None."""
        campaign = self._campaigns.get(campaign_id)
        if campaign is None:
            return None
        now = self._now_ms
        today = campaign.today
        daily = campaign.daily_budget_micros
        allowance = None
        if daily is not None:
            allowance = allowance_micros(
                campaign.pacing_mode,
                daily,
                start_ms=campaign.day_start_ms,
                end_ms=campaign.day_end_ms,
                now_ms=now,
                plan=campaign.plan,
            )
        available: int | None = None
        rate_ppm = PPM
        node: Campaign | None = campaign
        while node is not None:
            for cap, used in (
                (node.daily_budget_micros, node.today.spent_micros + node.today.held_micros),
                (node.total_budget_micros, node.spent_total_micros + node.held_total_micros),
            ):
                if cap is not None and (available is None or cap - used < available):
                    available = cap - used
            rate_ppm = min(rate_ppm, node.pass_through_ppm)
            node = node.parent
        return {
            "campaign_id": campaign.campaign_id,
            "parent_id": None if campaign.parent is None else campaign.parent.campaign_id,
            "currency": campaign.currency,
            "timezone": campaign.timezone,
            "daily_budget_micros": daily,
            "total_budget_micros": campaign.total_budget_micros,
            "start_ms": campaign.start_ms,
            "end_ms": campaign.end_ms,
            "status": "active" if campaign.active else "paused",
            "version": campaign.version,
            "pacing": {
                "mode": campaign.pacing_mode,
                "hourly_weights": (
                    None if campaign.hourly_weights is None else list(campaign.hourly_weights)
                ),
                "burst_ppm": campaign.burst_ppm,
                "burst_micros": campaign.burst_micros,
                "allowance_micros": allowance,
                "own_pass_through_ppm": campaign.pass_through_ppm,
                "pass_through_ppm": rate_ppm,
            },
            "day": iso_day(today.day),
            "day_start_ms": campaign.day_start_ms,
            "day_end_ms": campaign.day_end_ms,
            "spent_today_micros": today.spent_micros,
            "held_micros": today.held_micros,
            "overspend_micros": today.overspend_micros,
            "late_commits_today": today.late_commits,
            "available_micros": None if available is None else max(0, available),
            "spent_total_micros": campaign.spent_total_micros,
            "held_total_micros": campaign.held_total_micros,
            "overspend_total_micros": campaign.overspend_total_micros,
            "late_commits_total": campaign.late_commits_total,
            "previous_days": [
                {
                    "day": iso_day(day.day),
                    "spent_micros": day.spent_micros,
                    "held_micros": day.held_micros,
                    "overspend_micros": day.overspend_micros,
                    "late_commits": day.late_commits,
                }
                for day in campaign.previous_days
            ],
            "now_ms": now,
        }

    def reservation(self, reservation_id: int) -> Rendered | None:
        """One reservation as of `now_ms` (open past its expiry reads as expired), or None."""
        reservation = self._reservations.get(reservation_id)
        if reservation is None:
            return None
        state = reservation.state
        if state == OPEN and self._now_ms >= reservation.expires_at_ms:
            state = EXPIRED
        return {
            "reservation_id": reservation.reservation_id,
            "campaign_id": reservation.campaign.campaign_id,
            "bidder_id": reservation.bidder_id,
            "granted_micros": reservation.granted_micros,
            "committed_micros": reservation.committed_micros,
            "held_micros": reservation.held_micros if state == OPEN else 0,
            "state": STATE_NAMES[state],
            "expires_at_ms": reservation.expires_at_ms,
            "late": reservation.late,
            "pass_through_ppm": reservation.pass_through_ppm,
            "day": iso_day(reservation.counters.day),
        }

    def campaign_ids(
        self, prefix: str = "", *, after: str | None = None, limit: int = 100
    ) -> list[str]:
        """Campaign ids starting with ``prefix``, sorted, after ``after``, at most ``limit``."""
        ids = self._campaign_ids_sorted
        if after is not None and after >= prefix:
            found = ids.from_(after, inclusive=False)
        else:
            found = ids.from_(prefix, inclusive=True)
        out: list[str] = []
        for campaign_id in found:
            if len(out) >= limit or not campaign_id.startswith(prefix):
                break
            out.append(campaign_id)
        return out

    def root_campaign_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        """Ids of campaigns without a parent (advertisers), sorted, after ``after``, at most
        ``limit``; pages through a large ledger a bounded piece at a time."""
        ids = self._campaign_ids_sorted
        found = ids.from_(after or "", inclusive=after is None)
        out: list[str] = []
        while len(out) < limit:
            campaign_id = next(found, None)
            if campaign_id is None:
                break
            if ":" in campaign_id:  # a child: skip its whole subtree at once
                found = ids.from_(campaign_id.partition(":")[0] + ";", inclusive=True)
                continue
            out.append(campaign_id)
        return out

    def day_figures(self, campaign_ids: Iterable[str]) -> list[DayFigures]:
        """Today's figures of each of ``campaign_ids`` that exists (others are left out)."""
        out: list[DayFigures] = []
        now = self._now_ms
        for campaign_id in campaign_ids:
            campaign = self._campaigns.get(campaign_id)
            if campaign is None:
                continue
            today = campaign.today
            daily = campaign.daily_budget_micros
            plan = None
            if campaign.paced and daily is not None:
                plan = allowance_micros(
                    campaign.pacing_mode,
                    daily,
                    start_ms=campaign.day_start_ms,
                    end_ms=campaign.day_end_ms,
                    now_ms=now,
                    plan=campaign.plan,
                )
            available: int | None = None
            for node in campaign.path:
                for cap, used in (
                    (node.daily_budget_micros, node.today.spent_micros + node.today.held_micros),
                    (node.total_budget_micros, node.spent_total_micros + node.held_total_micros),
                ):
                    if cap is not None and (available is None or cap - used < available):
                        available = cap - used
            out.append(
                DayFigures(
                    campaign_id,
                    campaign.currency,
                    today.spent_micros,
                    today.held_micros,
                    None if available is None else max(0, available),
                    today.overspend_micros,
                    today.late_commits,
                    daily,
                    plan,
                )
            )
        return out

    def stats(self) -> dict[str, int]:
        """Table sizes, for metrics and limits."""
        return {
            "now_ms": self._now_ms,
            "campaigns": len(self._campaigns),
            "open_reservations": self._open_reservations,
            "ended_reservations": len(self._ended),
            "idempotency_keys": len(self._keys),
            "next_reservation_id": self._next_reservation_id,
        }

    # ------------------------------------------------------------------------------------------
    # Invariants

    def check_invariants(self) -> None:
        """Recompute every derived counter and check I1 at every level; raise InvariantBroken.

        O(size of the state): for tests and benchmarks; a running node does not call it.
        """
        held_by_day: dict[int, int] = {}
        held_by_campaign: dict[str, int] = {}
        open_count = 0
        for reservation in self._reservations.values():
            hold = reservation.held_micros
            if reservation.state == OPEN:
                open_count += 1
                if reservation.counters.retired:
                    raise InvariantBroken(
                        f"open reservation {reservation.reservation_id} on a retired day"
                    )
            node: Campaign | None = reservation.campaign
            day: DayCounters | None = reservation.counters
            while node is not None and day is not None:
                held_by_day[id(day)] = held_by_day.get(id(day), 0) + hold
                held_by_campaign[node.campaign_id] = (
                    held_by_campaign.get(node.campaign_id, 0) + hold
                )
                node = node.parent
                day = day.parent
        if open_count != self._open_reservations:
            raise InvariantBroken(
                f"{open_count} open reservations, counted {self._open_reservations}"
            )
        for campaign in self._campaigns.values():
            for day in [campaign.today, *campaign.previous_days]:
                if day.held_micros != held_by_day.get(id(day), 0):
                    raise InvariantBroken(f"{campaign.campaign_id!r} day {day.day}: held drifted")
                if day.cap_micros is not None and (
                    day.spent_micros + day.held_micros > day.cap_micros + day.overspend_micros
                ):
                    raise InvariantBroken(f"{campaign.campaign_id!r} day {day.day}: I1 broken")
                children_spent = 0
                for child in campaign.children:
                    child_day = child.today if day is campaign.today else _same_day(child, day.day)
                    if child_day is not None:
                        if child_day.parent is not day:
                            raise InvariantBroken(f"{child.campaign_id!r}: day links broken")
                        children_spent += child_day.spent_micros
                if children_spent > day.spent_micros:
                    raise InvariantBroken(f"{campaign.campaign_id!r}: children spent more than it")
            if campaign.held_total_micros != held_by_campaign.get(campaign.campaign_id, 0):
                raise InvariantBroken(f"{campaign.campaign_id!r}: total held drifted")
            cap = campaign.total_cap_micros
            used = campaign.spent_total_micros + campaign.held_total_micros
            if cap is not None and used > cap + campaign.overspend_total_micros:
                raise InvariantBroken(f"{campaign.campaign_id!r}: I1 broken for the total cap")
            if (
                sum(child.spent_total_micros for child in campaign.children)
                > campaign.spent_total_micros
            ):
                raise InvariantBroken(
                    f"{campaign.campaign_id!r}: children spent more than it in total"
                )
        if len(self._campaign_ids_sorted) != len(self._campaigns):
            raise InvariantBroken("the sorted campaign index drifted")

    # ------------------------------------------------------------------------------------------
    # Snapshots

    def export_state(self) -> dict[str, Any]:
        """The whole state as plain data (lists, tuples, str, int, bool, None), in a stable order.

        Idempotency entries are exported as the tuples they are; everything else as lists.
        """
        return {
            "format": STATE_FORMAT,
            "tzdata": TZDATA_VERSION,
            "limits": self.limits.to_plain(),
            "now_ms": self._now_ms,
            "campaign_seq": self._campaign_seq,
            "next_reservation_id": self._next_reservation_id,
            "next_control_ms": self._next_control_ms,
            "campaigns": [_export_campaign(c) for c in self._campaigns.values()],
            "reservations": [_export_reservation(r) for r in self._reservations.values()],
            "ended": list(self._ended),
            "idempotency": [[bucket_ms, list(keys)] for bucket_ms, keys in self._key_buckets],
            "idempotency_entries": list(self._keys.values()),
        }

    def digest(self) -> str:
        """SHA-256 of the state: equal on any two replicas that applied the same batches."""
        return self.digest_of(self.export_state())

    @staticmethod
    def digest_of(state: dict[str, Any]) -> str:
        """`digest` of a state already exported (so a caller can export under a lock and hash
        outside it)."""
        hasher = hashlib.sha256()
        for name, value in state.items():
            hasher.update(f"\n#{name}\n".encode())
            for item in value if type(value) is list else [value]:
                hasher.update(repr(item).encode())
                hasher.update(b"\n")
        return hasher.hexdigest()

    @classmethod
    def from_state(cls, state: Any) -> Ledger:
        """Rebuild a ledger from `export_state` output; raise SnapshotError if it is not one."""
        try:
            return cls._from_state(state)
        except SnapshotError:
            raise
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            AssertionError,
            OverflowError,
        ) as error:
            raise SnapshotError(f"not a ledger state: {error!r}") from error

    @classmethod
    def _from_state(cls, state: Any) -> Ledger:
        if type(state) is not dict or state.get("format") != STATE_FORMAT:
            raise SnapshotError(f"unsupported ledger state format {state.get('format')!r}")
        if type(state.get("tzdata")) is not str:
            raise SnapshotError("the state does not say which tzdata release made it")
        ledger = cls(Limits(**state["limits"]))
        ledger._now_ms = _plain_int(state["now_ms"], "now_ms", high=TIMESTAMP_MS_MAX)
        ledger._campaign_seq = _plain_int(state["campaign_seq"], "campaign_seq")
        ledger._next_reservation_id = _plain_int(
            state["next_reservation_id"], "next_reservation_id"
        )
        ledger._next_control_ms = _plain_int(state["next_control_ms"], "next_control_ms")
        campaigns = ledger._campaigns
        for row in state["campaigns"]:
            campaign = _import_campaign(row, campaigns)
            campaigns[campaign.campaign_id] = campaign
            if campaign.parent is None:
                heappush(
                    ledger._roll_heap, (campaign.day_end_ms, campaign.seq, campaign.campaign_id)
                )
            else:
                campaign.parent.children.append(campaign)
        ledger._campaign_ids_sorted = SortedIds(campaigns)
        for row in state["reservations"]:
            reservation = _import_reservation(row, campaigns)
            ledger._reservations[reservation.reservation_id] = reservation
            if reservation.state == OPEN:
                ledger._open_reservations += 1
                bucket_ms = -(-reservation.expires_at_ms // EXPIRY_BUCKET_MS) * EXPIRY_BUCKET_MS
                bucket = ledger._expiry_buckets.get(bucket_ms)
                if bucket is None:
                    ledger._expiry_buckets[bucket_ms] = [reservation.reservation_id]
                    heappush(ledger._expiry_heap, bucket_ms)
                else:
                    bucket.append(reservation.reservation_id)
        ledger._ended = deque(int(rid) for rid in state["ended"])
        for rid in ledger._ended:
            if ledger._reservations[rid].state == OPEN:
                raise SnapshotError(f"reservation {rid} is listed as ended but is open")
        key_order: list[str] = []
        for bucket_ms, keys in state["idempotency"]:
            ledger._key_buckets.append((int(bucket_ms), list(keys)))
            key_order.extend(keys)
        entries = state["idempotency_entries"]
        if len(entries) != len(key_order):
            raise SnapshotError("idempotency keys and entries differ in number")
        ledger._keys = {key: _freeze(entry) for key, entry in zip(key_order, entries, strict=True)}
        for key, entry in ledger._keys.items():
            _check_key_entry(key, entry)
        return ledger


# ----------------------------------------------------------------------------------------------
# Helpers


def _plain_int(value: object, name: str, *, high: int = INT64_MAX) -> int:
    if not _is_int(value, 0, high):
        raise SnapshotError(f"{name} must be an integer from 0 to {high}, got {value!r}")
    assert type(value) is int
    return value


def _parse_pacing(settings: object, *, daily_budget_micros: object) -> Result:
    if settings is None:
        settings = {"mode": ASAP}
    if type(settings) is not dict:
        return _invalid("pacing must be a map with a mode")
    if not settings.keys() <= _PACING_FIELDS:
        extra = sorted(str(name) for name in settings.keys() - _PACING_FIELDS)
        return _invalid(f"unknown pacing field(s): {', '.join(extra)}")
    mode: Any = settings.get("mode", ASAP)
    weights: Any = settings.get("hourly_weights")
    burst_ppm: Any = settings.get("burst_ppm", pacing.BURST_PPM_DEFAULT)
    if type(mode) is not str or mode not in pacing.MODES:
        return _invalid("pacing.mode must be one of asap, even, frontloaded, traffic_shaped")
    if mode != ASAP and daily_budget_micros is None:
        return _invalid(f"pacing mode {mode} needs a daily_budget_micros")
    if mode == TRAFFIC_SHAPED:
        if (
            type(weights) not in (list, tuple)
            or len(weights) != 24
            or not all(_is_int(weight, 0, pacing.HOURLY_WEIGHT_MAX) for weight in weights)
            or sum(weights) == 0
        ):
            return _invalid(
                f"pacing.hourly_weights must be 24 integers from 0 to {pacing.HOURLY_WEIGHT_MAX}, "
                "not all 0"
            )
        weights = tuple(weights)
    elif weights is not None:
        return _invalid("pacing.hourly_weights belong to mode traffic_shaped only")
    if not _is_int(burst_ppm, 0, PPM):
        return _invalid("pacing.burst_ppm must be an integer from 0 to 1000000")
    return (OK, mode, weights, burst_ppm)


def _settings_of(campaign: Campaign) -> tuple[Any, ...]:
    return (
        campaign.daily_budget_micros,
        campaign.total_budget_micros,
        campaign.start_ms,
        campaign.end_ms,
        campaign.pacing_mode,
        campaign.hourly_weights,
        campaign.burst_ppm,
        "active" if campaign.active else "paused",
    )


def _cap_high(old: int | None, new: int | None) -> int | None:
    if old is None or new is None:
        return None
    return max(old, new)


def _plan_of(campaign: Campaign) -> pacing.Plan | None:
    if campaign.pacing_mode != TRAFFIC_SHAPED or campaign.hourly_weights is None:
        return None
    return pacing.traffic_plan(
        quarter_hours(campaign.zone, campaign.today.day),
        campaign.hourly_weights,
        day_length_ms=campaign.day_end_ms - campaign.day_start_ms,
    )


def _initial_rate_ppm(campaign: Campaign) -> int:
    if campaign.daily_budget_micros is None or campaign.pacing_mode == ASAP:
        return PPM
    return pacing.SLOW_START_PPM


def _same_day(campaign: Campaign, day: int) -> DayCounters | None:
    for counters in campaign.previous_days:
        if counters.day == day:
            return counters
    return None


#: How many fields each op's fingerprint has (the op name first), for checking restored keys.
_FINGERPRINT_LENGTH: Final = {
    "reserve": 6,
    "commit": 4,
    "release": 2,
    "spend": 4,
    "put_campaign": 13,
}


def _check_key_entry(key: object, entry: object) -> None:
    if type(key) is not str or type(entry) is not tuple or not entry:
        raise SnapshotError(f"idempotency entry {key!r} is not a key and an array")
    size = _FINGERPRINT_LENGTH.get(entry[0]) if type(entry[0]) is str else None
    if size is None or len(entry) <= size:
        raise SnapshotError(f"idempotency entry {key!r} has no fingerprint of a known op")
    code = entry[size]
    expected = 1 + len(_OK_FIELDS[entry[0]]) if code == OK else 2
    if len(entry) - size != expected:
        raise SnapshotError(f"idempotency entry {key!r} has a result of the wrong shape")


def _freeze(value: Any) -> Any:
    if type(value) is list:
        return tuple(_freeze(item) for item in value)
    return value


def _export_days(campaign: Campaign) -> list[list[Any]]:
    return [
        [
            day.day,
            day.cap_micros,
            day.spent_micros,
            day.held_micros,
            day.overspend_micros,
            day.late_commits,
        ]
        for day in (campaign.today, *campaign.previous_days)
    ]


def _export_campaign(campaign: Campaign) -> list[Any]:
    return [
        campaign.campaign_id,
        campaign.seq,
        campaign.currency,
        campaign.timezone,
        campaign.daily_budget_micros,
        campaign.total_budget_micros,
        campaign.start_ms,
        campaign.end_ms,
        campaign.pacing_mode,
        None if campaign.hourly_weights is None else list(campaign.hourly_weights),
        campaign.burst_ppm,
        campaign.active,
        campaign.version,
        campaign.pass_through_ppm,
        campaign.spent_total_micros,
        campaign.held_total_micros,
        campaign.overspend_total_micros,
        campaign.late_commits_total,
        campaign.total_cap_micros,
        _export_days(campaign),
    ]


def _import_campaign(row: list[Any], campaigns: dict[str, Campaign]) -> Campaign:
    (
        campaign_id,
        seq,
        currency,
        timezone,
        daily,
        total,
        start_ms,
        end_ms,
        mode,
        weights,
        burst_ppm,
        active,
        version,
        rate_ppm,
        spent_total,
        held_total,
        overspend_total,
        late_total,
        total_cap,
        days,
    ) = row
    parent_id = campaign_id.rpartition(":")[0]
    parent = campaigns[parent_id] if parent_id else None
    tz = zone(timezone)
    if tz is None:
        raise SnapshotError(f"unknown time zone {timezone!r} (tzdata {TZDATA_VERSION})")
    campaign = Campaign(campaign_id, parent, seq, tz)
    campaign.currency = currency
    campaign.daily_budget_micros = daily
    campaign.total_budget_micros = total
    campaign.start_ms = start_ms
    campaign.end_ms = end_ms
    campaign.pacing_mode = mode
    campaign.hourly_weights = None if weights is None else tuple(weights)
    campaign.burst_ppm = burst_ppm
    campaign.burst_micros = 0 if daily is None else daily * burst_ppm // PPM
    campaign.active = active
    campaign.gated = not active or start_ms is not None or end_ms is not None
    campaign.paced = daily is not None and mode != ASAP
    campaign.version = version
    campaign.spent_total_micros = spent_total
    campaign.held_total_micros = held_total
    campaign.overspend_total_micros = overspend_total
    campaign.late_commits_total = late_total
    campaign.total_cap_micros = total_cap
    counters = []
    for index, (day, cap, spent, held, overspend, late) in enumerate(days):
        parent_day = None
        if parent is not None:
            parent_day = parent.today if index == 0 else _same_day(parent, day)
            if parent_day is None or parent_day.day != day:
                raise SnapshotError(f"{campaign_id!r}: day {day} has no parent day")
        entry = DayCounters(day, cap, parent_day)
        entry.spent_micros = spent
        entry.held_micros = held
        entry.overspend_micros = overspend
        entry.late_commits = late
        counters.append(entry)
    campaign.today = counters[0]
    campaign.previous_days = counters[1:]
    campaign.day_start_ms, campaign.day_end_ms = day_bounds(tz, campaign.today.day)
    campaign.plan = _plan_of(campaign)
    campaign.pass_through_ppm = rate_ppm
    return campaign


def _export_reservation(reservation: _Reservation) -> list[Any]:
    return [
        reservation.reservation_id,
        reservation.campaign.campaign_id,
        reservation.bidder_id,
        reservation.granted_micros,
        reservation.committed_micros,
        reservation.expires_at_ms,
        reservation.counters.day,
        reservation.state,
        reservation.late,
        reservation.ended_at_ms,
        reservation.pass_through_ppm,
    ]


def _import_reservation(row: list[Any], campaigns: dict[str, Campaign]) -> _Reservation:
    (rid, campaign_id, bidder_id, granted, committed, expires, day, state, late, ended_at, rate) = (
        row
    )
    campaign = campaigns[campaign_id]
    counters = campaign.today if campaign.today.day == day else _same_day(campaign, day)
    if counters is None:
        if state == OPEN:
            raise SnapshotError(f"open reservation {rid} refers to a day no longer kept")
        counters = DayCounters(day, None, None)
        counters.retired = True
    reservation = _Reservation(
        rid, campaign, sys.intern(bidder_id), granted, expires, counters, rate
    )
    reservation.committed_micros = committed
    reservation.state = state
    reservation.late = late
    reservation.ended_at_ms = ended_at
    return reservation
