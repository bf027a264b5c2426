"""The store ignores idempotency keys: every re-send applies again; flagged by I3 exactly_once
(and I2 no_lost_spend's exact total).

``Ledger._remember`` does nothing, so no key is ever found and a retry with the same
Idempotency-Key spends (or reserves) a second time, answering ``replayed: false``. Imports
budgetd.
"""

from __future__ import annotations

from typing import Any, Final

from budgetd.ledger import Ledger

__all__ = ["CHECKER", "apply"]

CHECKER: Final = "exactly_once"


def apply() -> None:
    def remember(self: Ledger, key: str, fingerprint: tuple[Any, ...], result: Any) -> None:
        return None

    Ledger._remember = remember  # type: ignore[method-assign]
