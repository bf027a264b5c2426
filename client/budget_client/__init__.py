"""budget_client — the bidder library of budgetd (DESIGN §7). Depends on aiohttp and msgpack
only; never imports budgetd.

- ``AsyncClient`` / ``Client`` (sync facade): the whole HTTP API, leader discovery, bounded
  retries with the same idempotency key, typed results.
- ``Wallet``: one campaign's budget slices held locally; ``try_hold`` / ``win`` / ``loss`` with no
  I/O, a background task that refills, flushes wins as batched commits and releases on close.

Every call ends ok (a typed result), refused, or unknown. The exceptions::

    BudgetError                 base of everything raised here
    ├── Refused                 definite: not applied, and resending will not change that;
    │                           .code is the server's code (budget_exhausted, pacing_limited,
    │                           reservation_closed, not_found, invalid_request, forbidden, ...)
    ├── OutcomeUnknown          retries ran out (attempts or deadline): it MAY have been applied;
    │   │                       always safe to resend with the same .idempotency_key
    │   └── Unavailable         ... and no attempt can have been applied (503 / no connection)
    └── ClientClosed            the client or wallet is closed; nothing was sent

In ``AsyncClient.batch`` results, per-op refusals and unknowns are returned as values of these
types, not raised. Not retried: every Refused, and 500 internal_error (raised as OutcomeUnknown).
"""

from ._client import AsyncClient, BatchResult, RetryPolicy
from ._errors import BudgetError, ClientClosed, OutcomeUnknown, Refused, Unavailable
from ._results import Committed, Granted, Released, Spent
from ._sync import Client
from ._transport import AiohttpTransport, RawResponse, Transport, TransportError, tls_context
from ._wallet import Hold, Wallet, WalletSettings, WalletState

__all__ = [
    "AiohttpTransport",
    "AsyncClient",
    "BatchResult",
    "BudgetError",
    "Client",
    "ClientClosed",
    "Committed",
    "Granted",
    "Hold",
    "OutcomeUnknown",
    "RawResponse",
    "Refused",
    "Released",
    "RetryPolicy",
    "Spent",
    "Transport",
    "TransportError",
    "Unavailable",
    "Wallet",
    "WalletSettings",
    "WalletState",
    "tls_context",
]
