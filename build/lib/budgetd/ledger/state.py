"""The records the ledger keeps: campaigns, their day counters, reservations. Imports only the
ledger's own modules. Plain mutable objects with __slots__; only `budgetd.ledger.ledger` mutates
them."""

from zoneinfo import ZoneInfo

from budgetd.ledger.pacing import Plan

OPEN = 0
CLOSED = 1
EXPIRED = 2
STATE_NAMES = ("open", "closed", "expired")


class DayCounters:
    """One campaign's money on one local day.

    ``parent`` is the parent campaign's counters for the same day (a tree shares one time zone, so
    its days roll together). ``cap_micros`` is the highest daily cap in force during the day (None:
    uncapped at some point), the bound that I1 is checked against. A retired day is no longer
    reported; late spend against it lands on the current day instead.
    """

    __slots__ = (
        "cap_micros",
        "day",
        "held_micros",
        "late_commits",
        "overspend_micros",
        "parent",
        "retired",
        "spent_micros",
    )

    def __init__(self, day: int, cap_micros: int | None, parent: "DayCounters | None") -> None:
        self.day = day
        self.cap_micros = cap_micros
        self.parent = parent
        self.spent_micros = 0
        self.held_micros = 0
        self.overspend_micros = 0
        self.late_commits = 0
        self.retired = False


class Campaign:
    __slots__ = (
        "active",
        "burst_micros",
        "burst_ppm",
        "campaign_id",
        "children",
        "currency",
        "daily_budget_micros",
        "day_end_ms",
        "day_start_ms",
        "end_ms",
        "gated",
        "held_total_micros",
        "hourly_weights",
        "late_commits_total",
        "overspend_total_micros",
        "paced",
        "pacing_mode",
        "parent",
        "pass_through_ppm",
        "path",
        "plan",
        "previous_days",
        "seq",
        "spent_total_micros",
        "start_ms",
        "timezone",
        "today",
        "total_budget_micros",
        "total_cap_micros",
        "version",
        "zone",
    )

    def __init__(self, campaign_id: str, parent: "Campaign | None", seq: int, zone: ZoneInfo):
        self.campaign_id = campaign_id
        self.parent = parent
        self.seq = seq
        self.zone = zone
        #: This campaign and its ancestors, nearest first: every level a hold or spend touches.
        self.path: tuple[Campaign, ...] = (self,) if parent is None else (self, *parent.path)
        self.children: list[Campaign] = []
        self.currency = ""
        self.timezone = zone.key
        self.daily_budget_micros: int | None = None
        self.total_budget_micros: int | None = None
        self.start_ms: int | None = None
        self.end_ms: int | None = None
        self.pacing_mode = "asap"
        self.hourly_weights: tuple[int, ...] | None = None
        self.burst_ppm = 0
        self.burst_micros = 0
        self.active = True
        #: Paused, or with a flight: reservations here need the status and flight checks.
        self.gated = False
        #: A paced daily budget (any mode but asap): reservations need the allowance.
        self.paced = False
        self.version = 0
        self.pass_through_ppm = 0
        self.day_start_ms = 0
        self.day_end_ms = 0
        self.plan: Plan | None = None
        self.today = DayCounters(0, None, None)
        self.previous_days: list[DayCounters] = []
        self.spent_total_micros = 0
        self.held_total_micros = 0
        self.overspend_total_micros = 0
        self.late_commits_total = 0
        #: The highest total cap in force since the campaign was created (None: uncapped once).
        self.total_cap_micros: int | None = None

    def root(self) -> "Campaign":
        return self.path[-1]

    def subtree(self) -> "list[Campaign]":
        """This campaign and its descendants, parents before children, in creation order."""
        out = [self]
        index = 0
        while index < len(out):
            out.extend(out[index].children)
            index += 1
        return out


class Reservation:
    __slots__ = (
        "bidder_id",
        "campaign",
        "committed_micros",
        "counters",
        "ended_at_ms",
        "expires_at_ms",
        "granted_micros",
        "late",
        "pass_through_ppm",
        "reservation_id",
        "state",
    )

    def __init__(
        self,
        reservation_id: int,
        campaign: Campaign,
        bidder_id: str,
        granted_micros: int,
        expires_at_ms: int,
        counters: DayCounters,
        pass_through_ppm: int,
    ) -> None:
        self.reservation_id = reservation_id
        self.campaign = campaign
        self.bidder_id = bidder_id
        self.granted_micros = granted_micros
        self.committed_micros = 0
        self.expires_at_ms = expires_at_ms
        self.counters = counters
        self.pass_through_ppm = pass_through_ppm
        self.state = OPEN
        self.late = False
        self.ended_at_ms = 0

    @property
    def held_micros(self) -> int:
        if self.state != OPEN or self.committed_micros >= self.granted_micros:
            return 0
        return self.granted_micros - self.committed_micros
