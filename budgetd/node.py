"""One running budgetd node: the replicated ledger, the proposer and the HTTP API, wired together.

Owns start-up and shutdown order and the `Service` the API talks to. Imports the replication
layer, the proposer and the api; the api itself never sees pysyncobj.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

from budgetd import gctune
from budgetd.api import AuditLog, Tokens, TokensFile, make_app, start_api
from budgetd.codec import encode_snapshot
from budgetd.ledger import Ledger
from budgetd.proposer import LogOutcome, Proposer
from budgetd.replication import Outcome, RaftNode
from budgetd.service import Conflict, NotFound, NotLeader, OutcomeUnknown, Unavailable
from budgetd.settings import Member, NodeSettings

__all__ = ["Node", "serve"]

log = logging.getLogger("budgetd.node")

#: GET /v1/cluster reuses a digest this young: hashing the state costs seconds at 1,000,000
#: reservations, and monitors poll the route (``?digest=fresh`` computes one now).
DIGEST_MAX_AGE_S = 10.0
T = TypeVar("T")

_OUTCOMES = {Outcome.OK: LogOutcome.OK, Outcome.FAILED: LogOutcome.FAILED}


class _RaftLog:
    """The replicated log as the proposer sees it."""

    def __init__(self, raft: RaftNode) -> None:
        self._raft = raft

    def propose(
        self,
        entry: bytes,
        callback: Callable[[LogOutcome, list[dict[str, Any]] | None, str], None],
    ) -> None:
        def done(outcome: Outcome, results: list[dict[str, Any]] | None, reason: str) -> None:
            callback(_OUTCOMES.get(outcome, LogOutcome.UNKNOWN), results, reason)

        self._raft.propose(entry, done)

    def is_leader(self) -> bool:
        return self._raft.is_leader()

    def leader_http(self) -> str | None:
        leader = self._raft.leader_member()
        return None if leader is None else leader.http_address

    def applied_index(self) -> int:
        return self._raft.applied_index()


class Node:
    """A budgetd node; implements `budgetd.service.Service` for the API."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.raft = RaftNode(settings)
        self.proposer = Proposer(_RaftLog(self.raft), settings.proposer)
        self._digest: tuple[float, int, str] | None = None

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    async def submit(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self.proposer.submit(ops)

    async def barrier(self) -> int:
        return await self.proposer.barrier()

    def read(self, reader: Callable[[Ledger], T]) -> T:
        return self.raft.read(reader)

    def applied_index(self) -> int:
        return self.raft.applied_index()

    def cluster_status(self, *, fresh_digest: bool = False) -> dict[str, Any]:
        status = dict(self.raft.status())
        now = time.monotonic()
        if fresh_digest or self._digest is None or now - self._digest[0] >= DIGEST_MAX_AGE_S:
            index, digest = self.raft.digest_with_index()
            self._digest = (now, index, digest)
        _, status["digest_index"], status["digest"] = self._digest
        status["proposer"] = {
            "queued_ops": self.proposer.queued_ops,
            "inflight_entries": self.proposer.inflight_entries,
            "entries_proposed": self.proposer.stats.entries_proposed,
            "ops_proposed": self.proposer.stats.ops_proposed,
        }
        return status

    def ready(self) -> tuple[bool, str]:
        status = self.raft.status()
        if status.get("leader_id") is None:
            return False, "no leader known"
        if status.get("applied_index", 0) < status.get("commit_index", 0):
            return False, "applying the log"
        return True, "ready"

    async def add_member(self, member: Member) -> None:
        for known in self.raft.status()["members"]:
            if known["id"] == member.id or known["raft_address"] == member.raft_address:
                if (known["id"], known["raft_address"]) == (member.id, member.raft_address):
                    return  # already a member: a retry after an unknown outcome
                raise Conflict(f"member id or raft address already used by {known['id']!r}")
        await self._membership(lambda done: self.raft.add_member(member, done))

    async def remove_member(self, member_id: str) -> None:
        if member_id == self.node_id:
            raise Conflict("the leader cannot remove itself; remove it from another leader")
        if not any(m["id"] == member_id for m in self.raft.status()["members"]):
            raise NotFound(f"no member {member_id!r}")
        await self._membership(lambda done: self.raft.remove_member(member_id, done))

    async def _membership(self, start: Callable[[Callable[[Outcome, str], None]], None]) -> None:
        if not self.raft.is_leader():
            raise NotLeader("membership changes go to the leader", leader_http=self._leader_http())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Outcome, str]] = loop.create_future()

        def done(outcome: Outcome, reason: str) -> None:
            def resolve() -> None:
                if not future.done():
                    future.set_result((outcome, reason))

            loop.call_soon_threadsafe(resolve)

        start(done)
        timeout_s = self.settings.proposer.request_timeout_ms / 1000
        try:
            outcome, reason = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise OutcomeUnknown("the membership change was not confirmed in time") from None
        if outcome is Outcome.OK:
            return
        if reason == "unknown_member":
            raise NotFound(reason)
        if reason in ("cannot_remove_self", "already_member"):
            raise Conflict(reason)
        if outcome is Outcome.FAILED:
            raise Unavailable(f"membership not changed: {reason}", retry_after_s=1)
        raise OutcomeUnknown(f"membership change outcome unknown: {reason}")

    async def snapshot(self) -> bytes:
        await self.barrier()
        return self.raft.read(encode_snapshot)

    def _leader_http(self) -> str | None:
        leader = self.raft.leader_member()
        return None if leader is None else leader.http_address


async def serve(settings: NodeSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run a node until SIGINT/SIGTERM (or ``stop``); shut down in order. SIGHUP reads the
    tokens file again."""
    api = settings.api
    tokens = TokensFile.load(api.tokens_file) if api.tokens_file else TokensFile(Tokens([]))
    audit = AuditLog(api.audit_log)
    node = Node(settings)
    node.raft.start()
    gctune.tune_for_node()
    await node.proposer.start()
    app = make_app(node, api, tokens, audit=audit)
    host, _, port = (settings.http_bind or settings.me.http_address).rpartition(":")
    runner, _site = await start_api(app, api, host.strip("[]"), int(port))
    log.info("node %s serving %s on %s:%s", settings.node_id, api.scheme.upper(), host, port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, tokens.reload)
    try:
        await stop.wait()
    finally:
        log.info("node %s stopping", settings.node_id)
        await runner.cleanup()
        await node.proposer.close()
        node.raft.close()
        audit.close()
