"""The one table mapping error codes to HTTP (DESIGN §5), and the problem objects built from it.

Owns every status an error can have. Imports only the stdlib and the ledger's result codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from budgetd.ledger import codes

__all__ = ["PROBLEMS", "ApiError", "ProblemKind", "invalid", "problem"]


@dataclass(frozen=True, slots=True)
class ProblemKind:
    status: int
    title: str
    #: Whether the same request, with the same idempotency key, may succeed if sent again.
    retryable: bool


_CONFLICT: Final = 409

#: Every error code the API answers with: code → (HTTP status, title, retryable).
PROBLEMS: Final[Mapping[str, ProblemKind]] = MappingProxyType(
    {
        codes.INVALID_REQUEST: ProblemKind(400, "Invalid request", False),
        "unauthorized": ProblemKind(401, "Unauthorized", False),
        "forbidden": ProblemKind(403, "Forbidden", False),
        codes.NOT_FOUND: ProblemKind(404, "Not found", False),
        "method_not_allowed": ProblemKind(405, "Method not allowed", False),
        codes.BUDGET_EXHAUSTED: ProblemKind(_CONFLICT, "Budget exhausted", False),
        codes.PACING_LIMITED: ProblemKind(_CONFLICT, "Pacing limited", False),
        codes.CAMPAIGN_INACTIVE: ProblemKind(_CONFLICT, "Campaign inactive", False),
        codes.RESERVATION_CLOSED: ProblemKind(_CONFLICT, "Reservation closed", False),
        codes.VERSION_CONFLICT: ProblemKind(_CONFLICT, "Version conflict", False),
        codes.IDEMPOTENCY_KEY_REUSED: ProblemKind(_CONFLICT, "Idempotency key reused", False),
        codes.PARENT_NOT_FOUND: ProblemKind(_CONFLICT, "Parent campaign not found", False),
        codes.OUTSIDE_FLIGHT: ProblemKind(_CONFLICT, "Outside the campaign's flight", False),
        codes.LIMIT_REACHED: ProblemKind(_CONFLICT, "Limit reached", False),
        "conflict": ProblemKind(_CONFLICT, "Conflicts with the cluster's configuration", False),
        "request_timeout": ProblemKind(408, "Request timeout", True),
        "payload_too_large": ProblemKind(413, "Payload too large", False),
        "rate_limited": ProblemKind(429, "Too many requests", True),
        "request_header_too_large": ProblemKind(431, "Request header fields too large", False),
        "not_leader": ProblemKind(307, "Not the leader", True),
        "internal_error": ProblemKind(500, "Internal error", False),
        "unavailable": ProblemKind(503, "Unavailable", True),
        "outcome_unknown": ProblemKind(504, "Outcome unknown", True),
    }
)

_TYPE_PREFIX: Final = "urn:budgetd:problem:"


def problem(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The problem object (RFC 9457 members plus ``code`` and ``retryable``) for ``code``."""
    kind = PROBLEMS[code]
    body: dict[str, Any] = {
        "type": _TYPE_PREFIX + code,
        "title": kind.title,
        "status": kind.status,
        "code": code,
        "detail": detail,
        "retryable": kind.retryable,
    }
    body.update(extra)
    return body


class ApiError(Exception):
    """A request answered with a problem; raised anywhere below a handler, encoded once."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        assert code in PROBLEMS, code
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    @property
    def status(self) -> int:
        return PROBLEMS[self.code].status

    def body(self) -> dict[str, Any]:
        return problem(self.code, self.detail, **self.extra)


def invalid(detail: str) -> ApiError:
    return ApiError(codes.INVALID_REQUEST, detail)
