"""One running budgetd node: the replicated ledger, the proposer and the HTTP API, wired together.

Owns start-up and shutdown order and the `Service` the API talks to. Imports the replication
layer, the proposer and the api; the api itself never sees pysyncobj.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from budgetd import gctune
from budgetd.api import AuditLog, Tokens, TokensFile, make_app, start_api
from budgetd.codec import encode_snapshot
from budgetd.ledger import Ledger
from budgetd.metrics import ProposerFigures, node_registry
from budgetd.proposer import LogOutcome, Proposer, SystemClock
from budgetd.replication import Outcome, RaftNode, RaftStats
from budgetd.service import Conflict, NotFound, NotLeader, OutcomeUnknown, Unavailable
from budgetd.settings import Member, NodeSettings
from budgetd.stamps import StampClock

__all__ = ["Node", "serve"]

log = logging.getLogger("budgetd.node")

#: How often the node looks at its collector's pauses, and the pause it warns of.
GC_WATCH_S = 10.0
GC_PAUSE_WARN_S = 0.1

#: GET /v1/cluster reuses a digest this young: hashing the state costs seconds at 1,000,000
#: reservations, and monitors poll the route (``?digest=fresh`` computes one now).
DIGEST_MAX_AGE_S = 10.0
#: ...and, refreshed in the background, one at least this many times as old as it took to compute:
#: hashing a large ledger stays under a tenth of a core however often the route is polled.
DIGEST_AGE_PER_COST = 10.0
#: A leadership transfer waits this long at most for the proposals in flight to end and the
#: target to match the leader's log (a healthy follower does in a round trip). With the wait
#: for the election (2 × raft.election_timeout_max_ms) a transfer ends within the follower's
#: forward timeout (budgetd.api._forward.FORWARD_TIMEOUT_S) for election timeouts up to 3 s.
TRANSFER_CATCH_UP_S_MAX = 3.0
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
        #: Stamps log entries with the wall clock held to the pace of real time.
        self.stamps = StampClock(SystemClock())
        self.raft.observe_time = self.stamps.observe
        self.proposer = Proposer(_RaftLog(self.raft), settings.proposer, clock=self.stamps)
        self._digest: tuple[float, int, str] | None = None
        #: One background digest computation at a time (GET /v1/cluster, see cluster_status).
        self._digest_lock = threading.Lock()
        self._digest_refreshing = False
        self._digest_cost_s = 0.0
        self._transferring = False

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    async def submit(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self.proposer.submit(ops)

    async def barrier(self) -> int:
        return await self.proposer.barrier()

    def admit(self, ops: int) -> None:
        self.proposer.admit(ops)

    def read(self, reader: Callable[[Ledger], T]) -> T:
        return self.raft.read(reader)

    def applied_index(self) -> int:
        return self.raft.applied_index()

    def cluster_status(self, *, fresh_digest: bool = False, refresh: bool = True) -> dict[str, Any]:
        """Raft status, proposer figures and a digest. With ``fresh_digest`` (or before the first
        digest) the digest is computed now, which takes seconds on a large ledger: the API calls
        this off the event loop. Otherwise the last digest is answered at once (``digest_index``
        says which state it is of) and one older than DIGEST_MAX_AGE_S is recomputed in the
        background, one computation at a time. Without ``refresh`` nothing is computed: the last
        digest, or "" (index 0) before the first (for pollers that only want the view, such as
        a leader lookup: a digest costs a core for seconds on a large ledger)."""
        status = dict(self.raft.status())
        if fresh_digest or (refresh and self._digest is None):
            self._compute_digest()
        elif refresh and self._digest is not None:
            age_max_s = max(DIGEST_MAX_AGE_S, DIGEST_AGE_PER_COST * self._digest_cost_s)
            if time.monotonic() - self._digest[0] >= age_max_s:
                self._refresh_digest()
        _, status["digest_index"], status["digest"] = self._digest or (0.0, 0, "")
        status["proposer"] = {
            "queued_ops": self.proposer.queued_ops,
            "inflight_entries": self.proposer.inflight_entries,
            "inflight_ops": self.proposer.inflight_ops,
            "entries_proposed": self.proposer.stats.entries_proposed,
            "ops_proposed": self.proposer.stats.ops_proposed,
        }
        return status

    def _compute_digest(self) -> None:
        started = time.monotonic()
        index, digest = self.raft.digest_with_index()
        self._digest_cost_s = time.monotonic() - started
        # Aged from when it was computed: a digest that takes longer than DIGEST_MAX_AGE_S must
        # not be recomputed by every poll.
        self._digest = (time.monotonic(), index, digest)

    def _refresh_digest(self) -> None:
        with self._digest_lock:
            if self._digest_refreshing:
                return
            self._digest_refreshing = True

        def refresh() -> None:
            try:
                self._compute_digest()
            except Exception:
                log.exception("computing the ledger digest failed")
            finally:
                with self._digest_lock:
                    self._digest_refreshing = False

        threading.Thread(target=refresh, name="budgetd-digest", daemon=True).start()

    def ready(self) -> tuple[bool, str]:
        """Ready (GET /readyz) when this node knows a leader, a leader still hears a majority,
        it has caught up with the leader once since it started, and it is at most
        api.ready_lag_entries_max entries behind the commit index it knows."""
        stats = self.raft.stats()
        if not stats.leader_known:
            return False, "no leader known"
        if stats.quorum is False:
            return False, "this leader has not heard from a majority of the members"
        if not self.raft.status()["ready"]:
            return False, "catching up with the leader's log"
        behind = stats.commit_index - stats.applied_index
        if behind > self.settings.api.ready_lag_entries_max:
            return False, f"applying the log: {behind} committed entries not applied yet"
        return True, "ready"

    def raft_stats(self) -> RaftStats:
        return self.raft.stats()

    def proposer_stats(self) -> ProposerFigures:
        proposer = self.proposer
        stats = proposer.stats
        return ProposerFigures(
            queued_ops=proposer.queued_ops,
            inflight_entries=proposer.inflight_entries,
            entries_ok=stats.entries_ok,
            entries_failed=stats.entries_failed,
            entries_unknown=stats.entries_unknown,
            requests_timed_out=stats.requests_timed_out,
            requests_rejected_queue_full=stats.requests_rejected_queue_full,
            batch_ops=proposer.batch_ops.snapshot(),
            batch_bytes=proposer.batch_bytes.snapshot(),
            clock_skew_ms=self.stamps.skew_ms,
            stamps_held=self.stamps.stamps_held,
            inflight_ops=proposer.inflight_ops,
            ops_rejected_queue_full=stats.ops_rejected_queue_full,
        )

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

    async def transfer_leader(self, target_id: str | None) -> dict[str, Any]:
        """Hand leadership to ``target_id`` (None: the most caught-up connected follower).

        The steps, on the leader: (1) hold new proposals (they fail at once: 503, nothing
        written); (2) let the proposals in flight end and (3) ask pysyncobj to send Raft's
        TimeoutNow, which it does only once the target's match index equals this leader's last
        log index — retried until then; (2) and (3) together up to TRANSFER_CATCH_UP_S_MAX (or
        request_timeout_ms if shorter);
        (4) the target stands for election at once with a higher term and, holding the longest
        log, wins; this leader steps down on its vote request; (5) wait up to twice
        election_timeout_max_ms for another leader, then accept proposals again (as a
        follower they go to the new leader). Raft's own rules keep every committed entry
        whatever happens: if the target dies after TimeoutNow, this leader either stays leader
        (the target never campaigned: 504, nothing moved) or has stepped down and the others
        elect a leader after an election timeout, as after any crash (504, naming who leads).
        """
        if not self.raft.is_leader():
            raise NotLeader(
                "leadership transfers start at the leader", leader_http=self._leader_http()
            )
        me = self.node_id
        members = {m["id"]: m for m in self.raft.status()["members"]}
        if target_id == me:
            return self._transfer_result(me)
        if target_id is not None and target_id not in members:
            raise NotFound(f"no member {target_id!r}")
        raft = self.settings.raft
        if self._transferring:
            raise Unavailable("a leadership transfer is already in progress", retry_after_s=1)
        catch_up_s = min(self.settings.proposer.request_timeout_ms / 1000, TRANSFER_CATCH_UP_S_MAX)
        election_s = 2 * raft.election_timeout_max_ms / 1000
        poll_s = max(raft.tick_ms, 10) / 1000
        loop = asyncio.get_running_loop()
        self._transferring = True
        self.raft.hold_proposals(True)
        try:
            deadline = loop.time() + catch_up_s
            while self.raft.proposals_pending() and loop.time() < deadline:
                await asyncio.sleep(poll_s)
            while True:
                outcome, reason = await self._send_timeout_now(target_id)
                if outcome is Outcome.OK:
                    break
                if reason == "not_leader":
                    raise NotLeader("this node lost leadership", leader_http=self._leader_http())
                if reason == "unknown_member":
                    raise NotFound(f"{target_id!r} is not a connected member")
                if reason != "target_not_ready" or loop.time() >= deadline:
                    who = f"{target_id} did not match" if target_id else "no follower matched"
                    raise Unavailable(
                        f"leadership not moved: {who} the leader's log within {catch_up_s:g} s "
                        f"({reason})",
                        retry_after_s=1,
                    )
                await asyncio.sleep(poll_s)
            deadline = loop.time() + election_s
            while loop.time() < deadline:
                leader = self.raft.leader_id()
                if leader is not None and leader != me and not self.raft.is_leader():
                    if target_id is None or leader == target_id:
                        return self._transfer_result(leader, previous=me)
                    raise OutcomeUnknown(
                        f"leadership moved to {leader}, not to {target_id} (did it stop?)"
                    )
                await asyncio.sleep(poll_s)
        finally:
            self.raft.hold_proposals(False)
            self._transferring = False
        still = "still leads" if self.raft.is_leader() else "stepped down; no leader yet"
        raise OutcomeUnknown(
            f"TimeoutNow sent to {target_id or 'a follower'} but no other leader within "
            f"{election_s:g} s; {me} {still}"
        )

    async def _send_timeout_now(self, target_id: str | None) -> tuple[Outcome, str]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Outcome, str]] = loop.create_future()

        def done(outcome: Outcome, reason: str) -> None:
            def resolve() -> None:
                if not future.done():
                    future.set_result((outcome, reason))

            loop.call_soon_threadsafe(resolve)

        self.raft.send_timeout_now(target_id, done)
        return await future

    def _transfer_result(self, leader_id: str, previous: str | None = None) -> dict[str, Any]:
        status = self.raft.status()
        return {
            "leader_id": leader_id,
            "previous_leader_id": previous or leader_id,
            "term": status["term"],
            "transferred": previous is not None,
        }

    async def snapshot(self) -> bytes:
        await self.barrier()
        return self.raft.read(encode_snapshot)

    def _leader_http(self) -> str | None:
        leader = self.raft.leader_member()
        return None if leader is None else leader.http_address


async def serve(
    settings: NodeSettings, *, stop: asyncio.Event | None = None, access_log: bool = False
) -> None:
    """Run a node until SIGINT/SIGTERM (or ``stop``); shut down in order. SIGHUP reads the
    tokens file again. ``access_log``: one record per HTTP request on the ``aiohttp.access``
    logger (off by default)."""
    api = settings.api
    tokens = TokensFile.load(api.tokens_file) if api.tokens_file else TokensFile(Tokens([]))
    audit = AuditLog(api.audit_log)
    node = Node(settings)
    node.raft.start()
    gctune.tune_for_node()
    await node.proposer.start()
    registry = node_registry(node, settings.node_id, settings.metrics)
    app = make_app(node, api, tokens, registry=registry, audit=audit)
    host, _, port = (settings.http_bind or settings.me.http_address).rpartition(":")
    runner, _site = await start_api(
        app,
        api,
        host.strip("[]"),
        int(port),
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
    )
    log.info(
        "node_started",
        extra={
            "node_id": settings.node_id,
            "http_address": f"{host}:{port}",
            "scheme": api.scheme,
            "raft_address": settings.me.raft_address,
            **_indexes(node),
        },
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, tokens.reload)
    gc_watch = asyncio.create_task(_watch_gc(settings.node_id))
    try:
        await stop.wait()
    finally:
        gc_watch.cancel()
        log.info("node_stopping", extra={"node_id": settings.node_id, **_indexes(node)})
        await runner.cleanup()
        await node.proposer.close()
        node.raft.close()
        audit.close()


async def _watch_gc(node_id: str) -> None:
    """Warn, at most every GC_WATCH_S, of the slowest collector pause over GC_PAUSE_WARN_S."""
    while True:
        await asyncio.sleep(GC_WATCH_S)
        slowest = gctune.node_gc.take_slowest()
        if slowest is None or slowest[0] < GC_PAUSE_WARN_S:
            continue
        pause_s, generation = slowest
        log.warning(
            "gc_pause: a generation-%d garbage collection held the interpreter for %.0f ms "
            "(Raft and HTTP waited); %d objects frozen",
            generation,
            pause_s * 1000,
            gc.get_freeze_count(),
            extra={"node_id": node_id, "pause_ms": round(pause_s * 1000), "generation": generation},
        )


def _indexes(node: Node) -> dict[str, int]:
    stats = node.raft.stats()
    return {
        "term": stats.term,
        "commit_index": stats.commit_index,
        "applied_index": stats.applied_index,
    }
