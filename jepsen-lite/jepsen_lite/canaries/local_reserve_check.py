"""The leader decides reserves from a local snapshot outside the log; flagged by I1 no_overspend.

``Node.submit`` on the leader checks each reserve against a snapshot of its own ledger (taken
at most SNAPSHOT_MAX_AGE_S ago, not updated by its own grants) and, when the snapshot shows
room for the whole amount, marks the op; every replica's ledger then grants a marked reserve
unconditionally (caps lifted for that one decision). Concurrent reserves near a cap all pass
the stale check, so spent + held climbs past cap + reported overspend. Imports budgetd.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from budgetd.ledger import Ledger
from budgetd.node import Node

__all__ = ["CHECKER", "MARK", "SNAPSHOT_MAX_AGE_S", "apply", "room_of"]

CHECKER: Final = "no_overspend"
#: The field a leader adds to a reserve it decided locally (the ledger strips it).
MARK: Final = "canary_unchecked"
SNAPSHOT_MAX_AGE_S: Final = 1.0

log = logging.getLogger("jepsen_lite.canaries")

#: Set while the ledger applies a marked reserve (applies run on one tick thread).
_unchecked = False


def room_of(ledger: Ledger, campaign_id: str) -> int | None:
    """The smallest room (cap − spent − held, daily and total) on ``campaign_id`` and its
    ancestors, from the ledger's read views; None when the campaign does not exist."""
    parts = campaign_id.split(":")
    rooms: list[int] = []
    for depth in range(1, len(parts) + 1):
        view = ledger.campaign(":".join(parts[:depth]))
        if view is None:
            return None
        daily = view.get("daily_budget_micros")
        if daily is not None:
            rooms.append(daily - view["spent_today_micros"] - view["held_micros"])
        total = view.get("total_budget_micros")
        if total is not None:
            rooms.append(total - view["spent_total_micros"] - view["held_total_micros"])
    return min(rooms, default=None)


def apply() -> None:
    snapshots: dict[str, tuple[float, int | None]] = {}
    original_submit = Node.submit
    original_reserve: Callable[[Ledger, dict[str, Any]], Any] = Ledger._reserve
    original_decide: Callable[..., Any] = Ledger._decide_reserve

    def local_room(node: Node, campaign_id: str) -> int | None:
        now = time.monotonic()
        cached = snapshots.get(campaign_id)
        if cached is None or now - cached[0] >= SNAPSHOT_MAX_AGE_S:
            cached = (now, node.read(lambda ledger: room_of(ledger, campaign_id)))
            snapshots[campaign_id] = cached
        return cached[1]

    async def submit(self: Node, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.raft.is_leader():
            checked = []
            for op in ops:
                campaign_id, amount = op.get("campaign_id"), op.get("amount_micros")
                if op.get("op") == "reserve" and type(campaign_id) is str and type(amount) is int:
                    room = local_room(self, campaign_id)
                    if room is not None and room >= amount:
                        log.info(
                            "canary: reserve of %d on %s granted from a local snapshot "
                            "showing %d of room",
                            amount,
                            campaign_id,
                            room,
                        )
                        op = {**op, MARK: True}
                checked.append(op)
            ops = checked
        return await original_submit(self, ops)

    def reserve(self: Ledger, op: dict[str, Any]) -> Any:
        global _unchecked
        if MARK not in op:
            return original_reserve(self, op)
        _unchecked = True
        try:
            return original_reserve(self, {k: v for k, v in op.items() if k != MARK})
        finally:
            _unchecked = False

    def decide_reserve(self: Ledger, campaign: Any, amount: int, **kwargs: Any) -> Any:
        if not _unchecked:
            return original_decide(self, campaign, amount, **kwargs)
        caps = [(n, n.daily_budget_micros, n.total_budget_micros) for n in campaign.path]
        for node, _, _ in caps:
            node.daily_budget_micros = node.total_budget_micros = None
        try:
            return original_decide(self, campaign, amount, **kwargs)
        finally:
            for node, daily, total in caps:
                node.daily_budget_micros, node.total_budget_micros = daily, total

    Node.submit = submit  # type: ignore[method-assign]
    Ledger._reserve = reserve  # type: ignore[method-assign]
    Ledger._decide_reserve = decide_reserve  # type: ignore[method-assign]
