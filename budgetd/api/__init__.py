"""budgetd's HTTP API v1 (DESIGN §5): aiohttp handlers in front of a `budgetd.service.Service`.

Parses and checks strictly, builds ledger ops, awaits the service, encodes JSON or msgpack,
answers errors as problem objects from one table; on a follower, forwards what needs the leader
to it (`_forward`). No money arithmetic; never imports pysyncobj.

    app = make_app(service, settings.api, Tokens.for_settings(settings.api.tokens_file))
"""

from budgetd.api._app import ROUTES, Access, Route, make_app
from budgetd.api._audit import AuditLog
from budgetd.api._problems import PROBLEMS, ProblemKind
from budgetd.api._serve import client_ssl_context, server_ssl_context
from budgetd.api._serve import start as start_api
from budgetd.api._tokens import (
    ADMIN,
    BIDDER,
    READER,
    ROLES,
    TokenEntry,
    Tokens,
    TokensError,
    TokensFile,
    hash_token,
)

__all__ = [
    "ADMIN",
    "BIDDER",
    "PROBLEMS",
    "READER",
    "ROLES",
    "ROUTES",
    "Access",
    "AuditLog",
    "ProblemKind",
    "Route",
    "TokenEntry",
    "Tokens",
    "TokensError",
    "TokensFile",
    "client_ssl_context",
    "hash_token",
    "make_app",
    "server_ssl_context",
    "start_api",
]
