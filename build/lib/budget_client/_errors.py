"""The exception tree of budget_client (drawn in the package docstring) and the problem object.

Owns every exception the library raises. Imports only the stdlib; never budgetd.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BudgetError", "ClientClosed", "OutcomeUnknown", "Refused", "Unavailable"]


class BudgetError(Exception):
    """Base of every error budget_client raises."""


class Refused(BudgetError):
    """A definite answer: the request was not applied, and sending it again will not change that.

    ``code`` is the server's stable code: the ledger's refusals (``budget_exhausted``,
    ``pacing_limited``, ``campaign_inactive``, ``reservation_closed``, ``version_conflict``,
    ``idempotency_key_reused``, ``outside_flight``, ``limit_reached``, ...), ``not_found``, or a
    request the API rejected (``invalid_request``, ``unauthorized``, ``forbidden``,
    ``payload_too_large``).
    """

    def __init__(self, code: str, detail: str = "", *, status: int = 0, problem: Any = None):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.status = status
        self.problem: dict[str, Any] = dict(problem) if isinstance(problem, dict) else {}


class OutcomeUnknown(BudgetError):
    """Retries ran out (attempts or deadline) and the request *may* have been applied.

    Always safe to send again with the same ``idempotency_key`` (None for reads).
    """

    def __init__(self, detail: str, *, idempotency_key: str | None = None, attempts: int = 0):
        super().__init__(detail)
        self.detail = detail
        self.idempotency_key = idempotency_key
        self.attempts = attempts


class Unavailable(OutcomeUnknown):
    """Retries ran out and *no* attempt can have been applied (503, or no connection made)."""


class ClientClosed(BudgetError):
    """The client or wallet was closed; nothing was sent."""
