"""What the HTTP API needs from a node, and how a call that did not succeed ends.

Owns the boundary between `budgetd.api` and the replicated node (`budgetd.node`): the API sees
only `Service`; tests give it a scripted one. Imports only the stdlib, the ledger's types and
`budgetd.settings.Member`.

Every call ends ok, fail or unknown::

    ServiceError
    ├── NotLeader        definite: nothing was written; retry at ``leader_http`` (None: unknown yet)
    ├── Unavailable      definite: nothing was written (no quorum, queue full, a membership change
    │                    already pending); retry, same key
    ├── OutcomeUnknown   may or may not have been written; retry with the same idempotency key
    ├── NotFound         definite: no such member; nothing was changed
    └── Conflict         definite: the change contradicts the cluster's configuration; nothing was
                         changed, and the same request will not succeed until the cluster changes
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from budgetd.ledger import Ledger
from budgetd.settings import Member

__all__ = [
    "Conflict",
    "NotFound",
    "NotLeader",
    "OutcomeUnknown",
    "Service",
    "ServiceError",
    "Unavailable",
]

T = TypeVar("T")


class ServiceError(Exception):
    """A call to the service that did not produce ledger results."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotLeader(ServiceError):
    def __init__(self, detail: str, *, leader_http: str | None) -> None:
        super().__init__(detail)
        self.leader_http = leader_http


class Unavailable(ServiceError):
    def __init__(self, detail: str, *, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class OutcomeUnknown(ServiceError):
    pass


class NotFound(ServiceError):
    """No such member (``remove_member``); nothing was changed."""


class Conflict(ServiceError):
    """The change contradicts the cluster's configuration (a member id or address already used
    by another member; the leader removing itself where the node does not allow it)."""


class Service(Protocol):
    """A budgetd node as the API sees it. All methods are called on the event loop's thread."""

    @property
    def node_id(self) -> str: ...

    async def submit(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply ``ops`` through the log, in order, as part of one batch; their ledger results.

        Raises NotLeader when this node is not the leader (nothing proposed), Unavailable when
        the op was definitely not applied, OutcomeUnknown when it may have been.
        """
        ...

    def admit(self, ops: int) -> None:
        """Raise Unavailable (nothing proposed) when ``ops`` more operations would pass this
        node's admission bound now: a cheap check before a request's body is validated, so an
        overloaded leader refuses at little cost. `submit` checks again."""
        ...

    async def barrier(self) -> int:
        """Return once this node has applied every entry committed before the call (a no-op
        through the log); the applied index. Raises like `submit`. A deposed leader cannot pass a
        barrier, so a read after it is linearizable."""
        ...

    def read(self, reader: Callable[[Ledger], T]) -> T:
        """Run ``reader`` against this node's ledger, between two applied batches."""
        ...

    def applied_index(self) -> int: ...

    def cluster_status(self, *, fresh_digest: bool = False, refresh: bool = True) -> dict[str, Any]:
        """``{node_id, leader_id, term, commit_index, applied_index, digest, digest_index,
        members: [...]}`` (DESIGN §5 GET /v1/cluster). The digest hashes the whole state, so a
        node may serve one up to a few seconds old (``digest_index`` says which applied index it
        belongs to); ``fresh_digest`` asks for the digest of the state as applied now; without
        ``refresh`` no digest is computed at all (the last one, or "" before the first)."""
        ...

    def ready(self) -> tuple[bool, str]:
        """Whether this node knows a leader and has caught up; a reason when it is not."""
        ...

    async def add_member(self, member: Member) -> None:
        """Add ``member`` to the cluster; return once the new configuration is applied here.

        Idempotent by content: a member already present with the same addresses and dc returns
        at once, so a retry after OutcomeUnknown is safe. Raises NotLeader, Unavailable (with a
        detail that says so when another membership change is pending), OutcomeUnknown; Conflict
        when the id or an address is already used by a different member.
        """
        ...

    async def remove_member(self, member_id: str) -> None:
        """Remove the member ``member_id``; return once the new configuration is applied here.

        Raises NotFound for an id that is not a member (also on a retry of a removal that was
        applied), NotLeader, Unavailable, OutcomeUnknown like `add_member`; whether the leader
        may remove itself is the node's decision (Conflict when it may not).
        """
        ...

    async def transfer_leader(self, target_id: str | None) -> dict[str, Any]:
        """Move leadership to ``target_id`` (None: any caught-up follower); return once another
        node leads: ``{leader_id, previous_leader_id, term, transferred}`` (``transferred`` is
        false when ``target_id`` already leads). New writes on the leader fail with Unavailable
        meanwhile. Raises NotLeader, NotFound (no such member), Unavailable (the target did not
        catch up: nothing moved), OutcomeUnknown (TimeoutNow was sent, but the target did not
        take over in time; check `cluster_status`)."""
        ...

    async def snapshot(self) -> bytes:
        """A consistent snapshot of the ledger (`budgetd.codec.encode_snapshot`), taken after a
        barrier, between two applied batches. Raises like `barrier`. (The API names the file
        after `applied_index` read as this returns: at least the snapshot's own index.)"""
        ...
