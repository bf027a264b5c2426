"""A naive reference model of `budgetd.ledger.Ledger`, for the stateful test in test_model.py.

Written from the documented semantics (DESIGN.md §1-2, §6; the docstrings of ledger.py, codes.py,
pacing.py), not from the ledger's code, and kept obviously right rather than fast: it keeps every
reservation, every spend and every overspend as a list entry and recomputes each sum with a loop
when it needs one. Imports nothing of budgetd.

Scope (what the test drives): campaigns without flights (no ``start_ms``/``end_ms``), pacing
``asap`` or ``even``, no traffic-shaped or front-loaded plans. The pass-through rate of a paced
campaign is not modelled (`UNMODELLED`); its grants are (even allowance plus burst, rounded down).

Results for refusals are ``{"code": ...}`` only: the detail text is the ledger's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

PPM = 1_000_000
#: Documented: an open reservation's hold is returned within 100 ms of expires_at_ms, at a batch
#: (ledger.py EXPIRY_BUCKET_MS; docs/ledger.md "expiry"); a commit or release checks exactly.
EXPIRY_BUCKET_MS = 100
#: Documented: idempotency keys are forgotten in groups of this width of ledger time, once all of a
#: group are older than the retention (ledger.py KEY_BUCKET_MS), at a pulse.
KEY_BUCKET_MS = 60_000
#: pacing.py: the controller runs once per control period of ledger time, at a pulse.
CONTROL_PERIOD_MS = 60_000
BURST_PPM_DEFAULT = 10_000
#: Closed days kept besides today (ledger.py PREVIOUS_DAYS_KEPT); older ones are retired.
PREVIOUS_DAYS_KEPT = 2

OK = "ok"
INVALID_REQUEST = "invalid_request"
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
LIMIT_REACHED = "limit_reached"
NOT_FOUND = "not_found"
PARENT_NOT_FOUND = "parent_not_found"
VERSION_CONFLICT = "version_conflict"
CAMPAIGN_INACTIVE = "campaign_inactive"
RESERVATION_CLOSED = "reservation_closed"
BUDGET_EXHAUSTED = "budget_exhausted"
PACING_LIMITED = "pacing_limited"
#: Refusals that write nothing, not even the idempotency key (codes.py).
UNRECORDED = (INVALID_REQUEST, IDEMPOTENCY_KEY_REUSED, LIMIT_REACHED)


class _Unmodelled:
    """A value the model does not predict (the pass-through rate of a paced campaign)."""

    def __repr__(self) -> str:
        return "UNMODELLED"


UNMODELLED: Any = _Unmodelled()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def local_date(zone_name: str, timestamp_ms: int) -> date:
    return (_EPOCH + timedelta(milliseconds=timestamp_ms)).astimezone(ZoneInfo(zone_name)).date()


def local_midnight_ms(zone_name: str, day: date) -> int:
    """The first instant of local date ``day`` (no zone used here skips a midnight)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone_name))
    return (midnight - _EPOCH) // timedelta(milliseconds=1)


@dataclass
class Campaign:
    campaign_id: str
    root_id: str
    timezone: str
    currency: str
    #: Index into the tree's list of days of the day this campaign was created on.
    first_day_index: int
    settings: dict[str, Any]
    version: int = 1
    #: The campaign's own pass-through rate in ppm, or UNMODELLED (paced campaigns).
    rate_ppm: Any = PPM
    #: Highest daily cap in force during each day (None: uncapped at some point that day).
    daily_cap_high: dict[date, int | None] = field(default_factory=dict)
    #: Highest total cap in force since creation (None: uncapped at some point).
    total_cap_high: int | None = None


@dataclass
class Reservation:
    reservation_id: int
    campaign_id: str
    bidder_id: str
    granted_micros: int
    expires_at_ms: int
    day: date
    pass_through_ppm: Any
    committed_micros: int = 0
    state: str = "open"  # open | closed | expired
    late: bool = False
    ended_at_ms: int = 0
    forgotten: bool = False


@dataclass
class Spend:
    campaign_id: str
    day: date
    amount_micros: int
    late: bool


@dataclass
class Limits:
    open_reservations_max: int
    ended_reservations_max: int
    idempotency_retention_ms: int
    ended_retention_ms: int


def _settings(op: dict[str, Any]) -> dict[str, Any]:
    """The settings a put_campaign body sets (a full replacement: omitted fields are absent)."""
    pacing = op.get("pacing") or {}
    return {
        "daily_budget_micros": op.get("daily_budget_micros"),
        "total_budget_micros": op.get("total_budget_micros"),
        "mode": pacing.get("mode", "asap"),
        "burst_ppm": pacing.get("burst_ppm", BURST_PPM_DEFAULT),
        "status": op.get("status", "active"),
    }


def body_of(op: dict[str, Any]) -> dict[str, Any]:
    """What makes two requests with one idempotency key "the same body" (defaults filled in)."""
    body = {name: value for name, value in op.items() if name != "idempotency_key"}
    if op["op"] == "reserve":
        body.setdefault("min_amount_micros", 1)
    elif op["op"] == "commit":
        body.setdefault("final", False)
    elif op["op"] == "put_campaign":
        body = {
            "op": "put_campaign",
            "campaign_id": op["campaign_id"],
            "expected_version": op.get("expected_version"),
            "currency": op.get("currency"),
            "timezone": op.get("timezone"),
            **_settings(op),
        }
    return body


class Reference:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.now_ms = 0
        self.campaigns: dict[str, Campaign] = {}
        #: Per root: every local day the tree has had as "today", in order.
        self.tree_days: dict[str, list[date]] = {}
        self.reservations: dict[int, Reservation] = {}
        self.next_reservation_id = 1
        #: Reservation ids in the order they ended (closed or expired).
        self.end_order: list[int] = []
        self.spends: list[Spend] = []
        #: (campaign_id, day, micros) and (campaign_id, micros).
        self.daily_overspends: list[tuple[str, date, int]] = []
        self.total_overspends: list[tuple[str, int]] = []
        #: key -> (body, result, ledger time the key was remembered at)
        self.keys: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {}
        self.next_control_ms = 0

    # ---------------------------------------------------------------------------------------
    # Sums, recomputed from scratch every time

    def subtree(self, campaign_id: str) -> list[str]:
        return [
            other
            for other in self.campaigns
            if other == campaign_id or other.startswith(campaign_id + ":")
        ]

    def path(self, campaign_id: str) -> list[str]:
        """The campaign and its ancestors, campaign first."""
        parts = campaign_id.split(":")
        return [":".join(parts[:n]) for n in range(len(parts), 0, -1)]

    def today(self, campaign_id: str) -> date:
        return self.tree_days[self.campaigns[campaign_id].root_id][-1]

    def kept_days(self, campaign_id: str) -> list[date]:
        """Today first, then the previous days still kept for this campaign."""
        campaign = self.campaigns[campaign_id]
        days = self.tree_days[campaign.root_id][campaign.first_day_index :]
        return list(reversed(days[-(PREVIOUS_DAYS_KEPT + 1) :]))

    def hold(self, reservation: Reservation) -> int:
        if reservation.state != "open":
            return 0
        return max(0, reservation.granted_micros - reservation.committed_micros)

    def spent(self, campaign_id: str, day: date | None = None) -> int:
        members = self.subtree(campaign_id)
        total = 0
        for spend in self.spends:
            if spend.campaign_id in members and (day is None or spend.day == day):
                total += spend.amount_micros
        return total

    def held(self, campaign_id: str, day: date | None = None) -> int:
        members = self.subtree(campaign_id)
        total = 0
        for reservation in self.reservations.values():
            if reservation.campaign_id in members and (day is None or reservation.day == day):
                total += self.hold(reservation)
        return total

    def late_commits(self, campaign_id: str, day: date | None = None) -> int:
        members = self.subtree(campaign_id)
        count = 0
        for spend in self.spends:
            if spend.late and spend.campaign_id in members and (day is None or spend.day == day):
                count += 1
        return count

    def overspend(self, campaign_id: str, day: date | None = None) -> int:
        """Daily overspend of one day, or (day None) total overspend, of one campaign level."""
        if day is None:
            return sum(micros for cid, micros in self.total_overspends if cid == campaign_id)
        return sum(
            micros for cid, d, micros in self.daily_overspends if cid == campaign_id and d == day
        )

    def open_count(self) -> int:
        return sum(1 for r in self.reservations.values() if r.state == "open")

    def rate_on_path(self, campaign_id: str) -> Any:
        rates = [self.campaigns[cid].rate_ppm for cid in self.path(campaign_id)]
        if any(rate is UNMODELLED for rate in rates):
            return UNMODELLED
        return min(rates)

    # ---------------------------------------------------------------------------------------
    # Commands

    def apply_batch(self, timestamp_ms: int, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.advance(timestamp_ms)
        return [self.apply_op(op) for op in ops]

    def advance(self, timestamp_ms: int) -> None:
        """Time moves to max(timestamp, now); expiries, then day roll-overs."""
        self.now_ms = max(self.now_ms, timestamp_ms)
        due = []
        for reservation in self.reservations.values():
            if reservation.state == "open":
                bucket_ms = -(-reservation.expires_at_ms // EXPIRY_BUCKET_MS) * EXPIRY_BUCKET_MS
                if bucket_ms <= self.now_ms:
                    due.append((bucket_ms, reservation.reservation_id))
        # In order of expiry (then of id): ended reservations are evicted oldest first.
        for _, reservation_id in sorted(due):
            self._end(self.reservations[reservation_id], "expired")
        for root_id, days in self.tree_days.items():
            day = local_date(self.campaigns[root_id].timezone, self.now_ms)
            if day != days[-1]:
                days.append(day)
                for campaign_id in self.subtree(root_id):
                    campaign = self.campaigns[campaign_id]
                    campaign.daily_cap_high[day] = campaign.settings["daily_budget_micros"]
                    campaign.rate_ppm = self._initial_rate(campaign)

    def apply_op(self, op: dict[str, Any]) -> dict[str, Any]:
        key = op.get("idempotency_key")
        body = body_of(op)
        if key is not None and key in self.keys:
            stored_body, result, _ = self.keys[key]
            if stored_body == body:
                return {**result, "replayed": True}
            return {"code": IDEMPOTENCY_KEY_REUSED}
        handler = {
            "reserve": self._reserve,
            "commit": self._commit,
            "release": self._release,
            "spend": self._spend,
            "put_campaign": self._put_campaign,
            "pulse": self._pulse,
        }[op["op"]]
        result = handler(op)
        if key is not None and result["code"] not in UNRECORDED:
            self.keys[key] = (body, result, self.now_ms - self.now_ms % KEY_BUCKET_MS)
        return result

    def _reserve(self, op: dict[str, Any]) -> dict[str, Any]:
        campaign_id = op["campaign_id"]
        amount = op["amount_micros"]
        minimum = op.get("min_amount_micros", 1)
        if campaign_id not in self.campaigns:
            return {"code": NOT_FOUND}
        path = self.path(campaign_id)
        if any(self.campaigns[cid].settings["status"] == "paused" for cid in path):
            return {"code": CAMPAIGN_INACTIVE}
        if self.open_count() >= self.limits.open_reservations_max:
            return {"code": LIMIT_REACHED}
        today = self.today(campaign_id)
        budget_room = amount
        pacing_room = amount
        for cid in path:
            settings = self.campaigns[cid].settings
            daily = settings["daily_budget_micros"]
            total = settings["total_budget_micros"]
            used_today = self.spent(cid, today) + self.held(cid, today)
            if daily is not None:
                budget_room = min(budget_room, daily - used_today)
            if total is not None:
                budget_room = min(budget_room, total - self.spent(cid) - self.held(cid))
            if settings["mode"] == "even":
                pacing_room = min(pacing_room, self._even_allowance(cid) - used_today)
        if budget_room < minimum:
            return {"code": BUDGET_EXHAUSTED}
        if pacing_room < minimum:
            return {"code": PACING_LIMITED}
        reservation = Reservation(
            reservation_id=self.next_reservation_id,
            campaign_id=campaign_id,
            bidder_id=op["bidder_id"],
            granted_micros=min(budget_room, pacing_room),
            expires_at_ms=self.now_ms + op["ttl_ms"],
            day=today,
            pass_through_ppm=self.rate_on_path(campaign_id),
        )
        self.next_reservation_id += 1
        self.reservations[reservation.reservation_id] = reservation
        return {
            "code": OK,
            "reservation_id": reservation.reservation_id,
            "granted_micros": reservation.granted_micros,
            "expires_at_ms": reservation.expires_at_ms,
            "pass_through_ppm": reservation.pass_through_ppm,
        }

    def _even_allowance(self, campaign_id: str) -> int:
        """Even pacing: the elapsed share of the day's budget, plus the burst, rounded down."""
        campaign = self.campaigns[campaign_id]
        daily = campaign.settings["daily_budget_micros"]
        today = self.today(campaign_id)
        start_ms = local_midnight_ms(campaign.timezone, today)
        end_ms = local_midnight_ms(campaign.timezone, today + timedelta(days=1))
        allowance = daily * (self.now_ms - start_ms) // (end_ms - start_ms)
        return allowance + daily * campaign.settings["burst_ppm"] // PPM

    def _expire_if_due(self, reservation: Reservation) -> None:
        """A commit or release checks the exact expiry time itself."""
        if reservation.state == "open" and self.now_ms >= reservation.expires_at_ms:
            self._end(reservation, "expired")

    def _commit(self, op: dict[str, Any]) -> dict[str, Any]:
        amount = op["amount_micros"]
        final = op.get("final", False)
        reservation = self.reservations.get(op["reservation_id"])
        if reservation is None or reservation.forgotten:
            return {"code": NOT_FOUND}
        if reservation.state == "closed":
            return {"code": RESERVATION_CLOSED}
        self._expire_if_due(reservation)
        late = reservation.state == "expired"
        covered = min(amount, self.hold(reservation))
        # The reservation changes first: overspend is measured once the commit has used the hold
        # (and a final commit has given back the rest).
        reservation.committed_micros += amount
        if late:
            reservation.late = True
        if final and reservation.state == "open":
            self._end(reservation, "closed")
        day = reservation.day
        if day not in self.kept_days(reservation.campaign_id):
            day = self.today(reservation.campaign_id)
        overspend = self._record_spend(
            reservation.campaign_id, day, amount, unreserved=amount - covered, late=late
        )
        return {
            "code": OK,
            "committed_micros": reservation.committed_micros,
            "remaining_micros": self.hold(reservation),
            "late": late,
            "overspend_micros": overspend,
        }

    def _record_spend(
        self, campaign_id: str, day: date, amount: int, *, unreserved: int, late: bool
    ) -> int:
        """Record the spend; at each level, the unreserved part above a cap is overspend."""
        self.spends.append(Spend(campaign_id, day, amount, late))
        largest = 0
        if unreserved == 0:
            return 0
        for cid in self.path(campaign_id):
            campaign = self.campaigns[cid]
            if day == self.today(cid):
                daily_cap = campaign.settings["daily_budget_micros"]
            else:
                daily_cap = campaign.daily_cap_high[day]
            if daily_cap is not None:
                over = min(unreserved, self.spent(cid, day) + self.held(cid, day) - daily_cap)
                if over > 0:
                    self.daily_overspends.append((cid, day, over))
                    largest = max(largest, over)
            total_cap = campaign.settings["total_budget_micros"]
            if total_cap is not None:
                over = min(unreserved, self.spent(cid) + self.held(cid) - total_cap)
                if over > 0:
                    self.total_overspends.append((cid, over))
                    largest = max(largest, over)
        return largest

    def _release(self, op: dict[str, Any]) -> dict[str, Any]:
        reservation = self.reservations.get(op["reservation_id"])
        if reservation is None or reservation.forgotten:
            return {"code": NOT_FOUND}
        self._expire_if_due(reservation)
        if reservation.state != "open":
            return {"code": RESERVATION_CLOSED}
        released = self.hold(reservation)
        self._end(reservation, "closed")
        return {"code": OK, "released_micros": released}

    def _end(self, reservation: Reservation, state: str) -> None:
        reservation.state = state
        reservation.ended_at_ms = self.now_ms
        self.end_order.append(reservation.reservation_id)
        kept = [rid for rid in self.end_order if not self.reservations[rid].forgotten]
        if len(kept) > self.limits.ended_reservations_max:
            self.reservations[kept[0]].forgotten = True

    def _spend(self, op: dict[str, Any]) -> dict[str, Any]:
        campaign_id = op["campaign_id"]
        if campaign_id not in self.campaigns:
            return {"code": NOT_FOUND}
        amount = op["amount_micros"]
        today = self.today(campaign_id)
        overspend = self._record_spend(campaign_id, today, amount, unreserved=amount, late=False)
        return {
            "code": OK,
            "recorded_micros": amount,
            "overspend_micros": overspend,
            "day": today.isoformat(),
        }

    def _initial_rate(self, campaign: Campaign) -> Any:
        if campaign.settings["mode"] != "asap":
            return UNMODELLED
        return PPM

    def _put_campaign(self, op: dict[str, Any]) -> dict[str, Any]:
        campaign_id = op["campaign_id"]
        settings = _settings(op)
        expected_version = op.get("expected_version")
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            if expected_version is not None:
                return {"code": VERSION_CONFLICT}
            parent_id = campaign_id.rpartition(":")[0]
            if parent_id:
                if parent_id not in self.campaigns:
                    return {"code": PARENT_NOT_FOUND}
                root = self.campaigns[self.campaigns[parent_id].root_id]
                for name in ("currency", "timezone"):
                    if op.get(name) not in (None, getattr(root, name)):
                        return {"code": INVALID_REQUEST}
                root_id, currency, timezone = root.campaign_id, root.currency, root.timezone
            else:
                root_id, currency, timezone = campaign_id, op["currency"], op["timezone"]
                self.tree_days[root_id] = [local_date(timezone, self.now_ms)]
            days = self.tree_days[root_id]
            campaign = Campaign(campaign_id, root_id, timezone, currency, len(days) - 1, settings)
            campaign.rate_ppm = self._initial_rate(campaign)
            # The campaign is created with its cap: it is in force the whole of its first day.
            campaign.daily_cap_high[days[-1]] = settings["daily_budget_micros"]
            self.campaigns[campaign_id] = campaign
            campaign.total_cap_high = settings["total_budget_micros"]
            return {"code": OK, "campaign_id": campaign_id, "version": 1, "created": True}
        if expected_version is not None and expected_version != campaign.version:
            return {"code": VERSION_CONFLICT}
        for name in ("currency", "timezone"):
            if op.get(name) not in (None, getattr(campaign, name)):
                return {"code": INVALID_REQUEST}
        if settings != campaign.settings:
            old = campaign.settings
            reshaped = old["mode"] != settings["mode"] or (
                (old["daily_budget_micros"] is None) != (settings["daily_budget_micros"] is None)
            )
            campaign.settings = settings
            campaign.version += 1
            today = self.today(campaign_id)
            campaign.daily_cap_high[today] = _higher_cap(
                campaign.daily_cap_high[today], settings["daily_budget_micros"]
            )
            campaign.total_cap_high = _higher_cap(
                campaign.total_cap_high, settings["total_budget_micros"]
            )
            if reshaped:
                campaign.rate_ppm = self._initial_rate(campaign)
        return {
            "code": OK,
            "campaign_id": campaign_id,
            "version": campaign.version,
            "created": False,
        }

    def _pulse(self, op: dict[str, Any]) -> dict[str, Any]:
        now = self.now_ms
        if now >= self.next_control_ms:
            for campaign_id, campaign in self.campaigns.items():
                daily = campaign.settings["daily_budget_micros"]
                if daily is None:
                    campaign.rate_ppm = PPM
                elif campaign.settings["mode"] == "asap":
                    today = self.today(campaign_id)
                    used = self.spent(campaign_id, today) + self.held(campaign_id, today)
                    campaign.rate_ppm = 0 if used >= daily else PPM
                else:
                    campaign.rate_ppm = UNMODELLED
            self.next_control_ms = now - now % CONTROL_PERIOD_MS + CONTROL_PERIOD_MS
        horizon = now - self.limits.idempotency_retention_ms - KEY_BUCKET_MS
        for key in [key for key, (_, _, bucket_ms) in self.keys.items() if bucket_ms <= horizon]:
            del self.keys[key]
        for reservation in self.reservations.values():
            ended = reservation.state != "open"
            if ended and reservation.ended_at_ms <= now - self.limits.ended_retention_ms:
                reservation.forgotten = True
        return {"code": OK, "now_ms": now}

    # ---------------------------------------------------------------------------------------
    # Reads, in the shape of Ledger.campaign / Ledger.reservation (the fields the model knows)

    def campaign_view(self, campaign_id: str) -> dict[str, Any]:
        campaign = self.campaigns[campaign_id]
        days = self.kept_days(campaign_id)
        today = days[0]
        available = None
        for cid in self.path(campaign_id):
            settings = self.campaigns[cid].settings
            for cap, used in (
                (settings["daily_budget_micros"], self.spent(cid, today) + self.held(cid, today)),
                (settings["total_budget_micros"], self.spent(cid) + self.held(cid)),
            ):
                if cap is not None and (available is None or cap - used < available):
                    available = cap - used
        return {
            "campaign_id": campaign_id,
            "daily_budget_micros": campaign.settings["daily_budget_micros"],
            "total_budget_micros": campaign.settings["total_budget_micros"],
            "status": campaign.settings["status"],
            "version": campaign.version,
            "day": today.isoformat(),
            "spent_today_micros": self.spent(campaign_id, today),
            "held_micros": self.held(campaign_id, today),
            "overspend_micros": self.overspend(campaign_id, today),
            "late_commits_today": self.late_commits(campaign_id, today),
            "available_micros": None if available is None else max(0, available),
            "spent_total_micros": self.spent(campaign_id),
            "held_total_micros": self.held(campaign_id),
            "overspend_total_micros": self.overspend(campaign_id),
            "late_commits_total": self.late_commits(campaign_id),
            "previous_days": [
                {
                    "day": day.isoformat(),
                    "spent_micros": self.spent(campaign_id, day),
                    "held_micros": self.held(campaign_id, day),
                    "overspend_micros": self.overspend(campaign_id, day),
                    "late_commits": self.late_commits(campaign_id, day),
                }
                for day in days[1:]
            ],
            "own_pass_through_ppm": campaign.rate_ppm,
            "pass_through_ppm": self.rate_on_path(campaign_id),
            "now_ms": self.now_ms,
        }

    def reservation_view(self, reservation_id: int) -> dict[str, Any] | None:
        reservation = self.reservations.get(reservation_id)
        if reservation is None or reservation.forgotten:
            return None
        state = reservation.state
        if state == "open" and self.now_ms >= reservation.expires_at_ms:
            state = "expired"
        return {
            "reservation_id": reservation.reservation_id,
            "campaign_id": reservation.campaign_id,
            "bidder_id": reservation.bidder_id,
            "granted_micros": reservation.granted_micros,
            "committed_micros": reservation.committed_micros,
            "held_micros": self.hold(reservation) if state == "open" else 0,
            "state": state,
            "expires_at_ms": reservation.expires_at_ms,
            "late": reservation.late,
            "pass_through_ppm": reservation.pass_through_ppm,
            "day": reservation.day.isoformat(),
        }


def _higher_cap(old: int | None, new: int | None) -> int | None:
    """The highest cap in force so far; None once the level was uncapped at some point."""
    if old is None or new is None:
        return None
    return max(old, new)
