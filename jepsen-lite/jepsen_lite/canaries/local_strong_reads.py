"""``consistency=strong`` reads served from local state without a barrier; flagged by
stale_reads under an isolate-leader partition (the old leader keeps answering).

``Call.read`` ignores ``strong``: no barrier through the log, so a follower or a deposed
leader answers from whatever it has applied. Imports budgetd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

from budgetd.api._call import Call
from budgetd.ledger import Ledger

__all__ = ["CHECKER", "apply"]

CHECKER: Final = "stale_reads"
T = TypeVar("T")


def apply() -> None:
    original = Call.read

    async def read(self: Call, reader: Callable[[Ledger], T], *, strong: bool) -> tuple[T, int]:
        return await original(self, reader, strong=False)

    Call.read = read  # type: ignore[method-assign]
