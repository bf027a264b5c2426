"""`RaftNode`: one budgetd replica — the ledger behind pysyncobj, with its tick thread.

Owns the one replicated entry point (apply an encoded batch to the ledger), the ledger lock,
proposals and their outcomes, membership changes and the node's Raft status. Imports the ledger,
the codec, settings and pysyncobj; never aiohttp or click.

Threads: pysyncobj does all its work — sockets, Raft, applying entries, calling back — on one
tick thread, which this class runs itself (``autoTick=False``): it installs the durability patch
before the first tick (no state-definition race, research/pysyncobj.md §1.1: pysyncobj never
sees the ledger, which lives here and is saved by our own serializer) and lets `close` stop and
join it. Every public method may be called from any thread (the asyncio thread, typically).
Callbacks run on the tick thread: keep them short (``loop.call_soon_threadsafe``).

Followers do not forward. `propose` on a node that is not the leader fails at once with
``not_leader`` (definite: nothing was submitted) and the HTTP layer forwards or redirects using
`leader_id`. pysyncobj's own forwarding sends one unbatched message per command and drops it
silently when the link is down (research §1.3), so it is used only in the race where leadership
is lost between the check and the tick — and its outcomes are mapped like any other.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import heapq
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar

from pysyncobj import FAIL_REASON, SyncObjException, replicated
from pysyncobj.monotonic import monotonic
from pysyncobj.node import TCPNode

from budgetd import gctune
from budgetd.codec import CodecError, decode_batch, decode_snapshot
from budgetd.distribution import Distribution, DistributionSnapshot
from budgetd.ledger import InvariantBroken, Ledger, codes, render_results
from budgetd.replication.config import build_conf, data_files, entry_bytes_max
from budgetd.replication.durability import (
    LAST_RESPONSE_ATTRIBUTE,
    MATCH_INDEX_ATTRIBUTE,
    DurableSyncObj,
    fsync_dir,
    reconcile_journal,
)
from budgetd.replication.snapshot import DumpError, SnapshotWriter, read_dump, read_header
from budgetd.settings import Member, NodeSettings

#: A node whose data dir holds no log and no dump yet starts from this snapshot, if present.
SEED_SNAPSHOT: Final = "seed.snapshot"

__all__ = [
    "EXIT_NODE_BROKEN",
    "SEED_SNAPSHOT",
    "MembershipCallback",
    "Outcome",
    "PeerStats",
    "ProposalCallback",
    "RaftNode",
    "RaftStats",
    "ReplicationError",
]

#: Exit status of a node stopped by a broken invariant or an error in the apply path (EX_SOFTWARE).
EXIT_NODE_BROKEN: Final = 70

#: A warning is logged when the term changes this many times within the window (then at most
#: once per window).
TERM_CHURN_CHANGES: Final = 3
TERM_CHURN_WINDOW_S: Final = 10.0

#: How long close() waits for the tick thread.
CLOSE_TIMEOUT_S: Final = 30.0

#: The ops a ledger answers again from their idempotency key.
REPLAYABLE_OPS: Final = ("commit", "put_campaign", "release", "reserve", "spend")
#: Bucket bounds (seconds) of the journal msync timings.
SYNC_BUCKETS_S: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReplicationError(RuntimeError):
    """The node cannot start (address taken, unreadable dump) or was used before `start`."""


class Outcome(enum.Enum):
    """How a proposal ended (research/jepsen.md §7).

    OK: applied; the results are the ledger's. FAILED: definitely not applied — safe to report as
    a failure. UNKNOWN: may or may not be applied — retry with the same idempotency keys.
    """

    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


ProposalCallback = Callable[[Outcome, "list[dict[str, Any]] | None", str], None]
MembershipCallback = Callable[[Outcome, str], None]

_DEFINITE_FAILURES: Final = {
    FAIL_REASON.QUEUE_FULL: "queue_full",
    FAIL_REASON.MISSING_LEADER: "missing_leader",
    FAIL_REASON.NOT_LEADER: "not_leader",
    FAIL_REASON.DISCARDED: "discarded",
    FAIL_REASON.REQUEST_DENIED: "request_denied",
}
_UNKNOWN_OUTCOMES: Final = {
    FAIL_REASON.LEADER_CHANGED: "leader_changed",
    FAIL_REASON.UNKNOWN_OUTCOME: "unknown_outcome",
}
_ROLES: Final = {0: "follower", 1: "candidate", 2: "leader"}


def outcome_of(fail_reason: Any) -> tuple[Outcome, str]:
    """pysyncobj's FAIL_REASON as an outcome and a reason; anything unexpected is UNKNOWN."""
    if fail_reason == FAIL_REASON.SUCCESS:
        return Outcome.OK, "ok"
    if fail_reason in _DEFINITE_FAILURES:
        return Outcome.FAILED, _DEFINITE_FAILURES[fail_reason]
    if fail_reason in _UNKNOWN_OUTCOMES:
        return Outcome.UNKNOWN, _UNKNOWN_OUTCOMES[fail_reason]
    return Outcome.UNKNOWN, f"fail_reason_{fail_reason!r}"


def _stop_node(message: str) -> NoReturn:
    """A broken invariant (or a bug in the apply path) stops the node: never skip an entry, and
    never raise into pysyncobj, which would apply the same entry again forever."""
    log.critical("stopping the node: %s", message, exc_info=True)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # best effort on the way out
            handler.flush()
    os._exit(EXIT_NODE_BROKEN)


class _Replica(DurableSyncObj):
    """The SyncObj with budgetd's one replicated method. State lives in RaftNode, not here."""

    def __init__(
        self,
        self_address: str,
        partners: list[str],
        conf: Any,
        apply: Callable[[tuple[Any, ...], dict[str, Any]], Any],
        on_sync: Callable[[float], None] | None = None,
    ) -> None:
        self._budgetd_apply = apply
        super().__init__(self_address, partners, conf, on_sync=on_sync)

    @replicated
    def apply_entry(self, *args: Any, **kwargs: Any) -> Any:
        """Apply one log entry: an encoded batch (budgetd.codec); the result goes to the
        proposer's callback only. Tolerates any arguments: an exception here would make
        pysyncobj apply the entry again forever."""
        return self._budgetd_apply(args, kwargs)


@dataclass(slots=True)
class _Pending:
    deliver: Callable[[Outcome, list[dict[str, Any]] | None, str], None]
    deadline: float


@dataclass(frozen=True, slots=True)
class _View:
    """Raft state as the tick thread last saw it (collections are not safe to read elsewhere)."""

    role: str = "stopped"
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    leader_address: str | None = None
    peers: tuple[tuple[str, bool], ...] = ()
    ready: bool = False
    #: Leader only: entries each peer is behind the commit index (None: not the leader).
    peer_lag: tuple[tuple[str, int], ...] | None = None
    #: Leader only: a majority (itself included) answered within the quorum window.
    quorum: bool | None = None


@dataclass(frozen=True, slots=True)
class PeerStats:
    member_id: str | None
    raft_address: str
    connected: bool
    #: Entries behind the leader's commit index, as the leader knows it (None on a follower).
    lag_entries: int | None


@dataclass(frozen=True, slots=True)
class RaftStats:
    """What `budgetd.metrics` reads at scrape time; cheap to build (no hashing, no ledger walk)."""

    role: str
    term: int
    commit_index: int
    applied_index: int
    leader_known: bool
    quorum: bool | None
    peers: tuple[PeerStats, ...]
    snapshot: dict[str, Any]
    journal_bytes: int
    #: When the dump file was last written or installed (None: no dump yet).
    dump_mtime_s: float | None
    data_dir_free_bytes: int
    data_dir_size_bytes: int
    sync_seconds: DistributionSnapshot
    last_apply_s: float
    entries_applied: int
    replayed_ops: dict[str, int]


def _fork_digest(ledger: Ledger) -> tuple[int, int] | None:
    """Fork a child that hashes ``ledger`` as it is at the fork and writes the hex digest to a
    pipe: ``(pid, read end)``, or None when the fork fails. Call with the ledger lock held."""
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child: no logging, no lock, nothing inherited but the pipe
        code = 1
        try:
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
            os.write(write_fd, Ledger.digest_of(ledger.export_state()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _wait_digest(pid: int, read_fd: int) -> str | None:
    """The digest the child ``pid`` writes to ``read_fd``, or None if it failed."""
    chunks: list[bytes] = []
    try:
        while chunk := os.read(read_fd, 256):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    digest = b"".join(chunks).decode("ascii", "replace")
    ok = os.waitstatus_to_exitcode(status) == 0 and len(digest) == 64
    return digest if ok else None


def _refusal(detail: str) -> list[dict[str, Any]]:
    """The result of a log entry that is not a batch: one refusal, whatever the batch held."""
    return [{"code": codes.INVALID_REQUEST, "detail": detail}]


@dataclass(frozen=True, slots=True)
class _Applied:
    """What applying an entry returns to pysyncobj: the ledger's unrendered results. pysyncobj
    hands it only to the callback of the node that proposed the entry, which renders it
    (`_on_raft_result`); every other node skips the rendering, about a sixth of its apply."""

    ops: Any
    results: list[Any]


class RaftNode:
    """One replica of the budget ledger. See the module docstring for threads and forwarding."""

    def __init__(self, settings: NodeSettings) -> None:
        self._settings = settings
        self._me = settings.me
        self._files = data_files(settings)
        # Measured on the tick thread, read by `stats` (metrics) on any thread.
        self._sync_seconds = Distribution(SYNC_BUCKETS_S)
        self._last_apply_s = 0.0
        self._entries_applied = 0
        #: Called on the tick thread with the stamp of every entry applied (budgetd.stamps).
        self.observe_time: Callable[[int], None] | None = None
        # Every op kind an idempotency key can answer: the dict never grows, so `stats` may copy
        # it from another thread.
        self._replayed_ops = dict.fromkeys(REPLAYABLE_OPS, 0)
        # A leader counts a peer towards its quorum when it answered within this window.
        self._quorum_window_s = settings.raft.election_timeout_max_ms / 1000
        self._entry_bytes_max = entry_bytes_max(settings)
        self._tick_s = settings.raft.tick_ms / 1000
        self._timeout_s = settings.proposer.request_timeout_ms / 1000
        # The ledger, and what guards it: applies (tick thread) and reads (any thread).
        self._lock = threading.Lock()
        self._ledger = Ledger()
        self._ledger_index = 0  # Raft index of the last entry applied to (or loaded into) it
        self._digest_cache: tuple[int, str] | None = None
        self._writer = SnapshotWriter(
            self._files.dump,
            lambda: self._ledger,
            on_written=lambda **fields: self._event("snapshot_taken", **fields),
        )
        # Raises SettingsError here, before anything binds, when the settings are unsafe.
        self._conf = build_conf(
            settings,
            serializer=self._writer.serialize,
            deserializer=self._load_dump,
            serialize_checker=self._writer.check,
            on_state_changed=self._on_state_changed,
        )
        self._members: dict[str, Member] = {m.raft_address: m for m in settings.members}
        self._replica: _Replica | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # The first tick loads the dump found at start; a later load is an install from a leader.
        self._first_tick_done = False
        self._role = "follower"
        self._view = _View()
        # Proposals and membership changes awaiting an outcome; guarded by _pending_lock.
        self._pending_lock = threading.Lock()
        self._accepting = False
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._tokens = itertools.count(1)
        self._membership_busy = False
        # Set while this leader hands leadership over: new proposals fail at once (definite).
        self._transferring = False
        # Outcomes reached off the tick thread, delivered by it.
        self._deferred: deque[Callable[[], None]] = deque()
        # When this node saw the term change lately, and when it last warned of it.
        self._term_changes: deque[float] = deque(maxlen=TERM_CHURN_CHANGES * 4)
        self._churn_warned_s: float | None = None

    # ------------------------------------------------------------------------------------------
    # Life cycle

    def start(self) -> None:
        """Open the journal and dump, bind the Raft port, start the tick thread.

        Raises ReplicationError when the port cannot be bound or the dump is unreadable."""
        if self._replica is not None:
            raise ReplicationError("node already started")
        files = self._files
        os.makedirs(files.data_dir, exist_ok=True)
        fsync_dir(os.path.dirname(files.data_dir) or "/")
        for stale in self._writer.stale_paths():
            log.info("removing %s, left by an interrupted dump", stale)
            os.unlink(stale)
        self._seed_from_snapshot()
        if os.path.exists(files.dump):
            try:
                header = read_header(files.dump)
            except (OSError, DumpError) as error:
                raise ReplicationError(f"cannot read the dump {files.dump}: {error}") from error
            reconcile_journal(files.journal, last=header.last, prev=header.prev)
        partners = [m.raft_address for m in self._settings.peers]
        try:
            self._replica = _Replica(
                self._me.raft_address,
                partners,
                self._conf,
                self._apply,
                on_sync=self._sync_seconds.observe,
            )
        except SyncObjException as error:
            raise ReplicationError(
                f"cannot bind the Raft port at {self._conf.bindAddress}: {error.errorCode}"
            ) from error
        with self._pending_lock:
            self._accepting = True
        self._refresh_view()
        self._thread = threading.Thread(
            target=self._run, name=f"raft-tick-{self._me.id}", daemon=True
        )
        self._thread.start()
        log.info("raft node %s started at %s", self._me.id, self._conf.bindAddress)

    def _seed_from_snapshot(self) -> None:
        """A node with no journal and no dump yet starts from ``<data_dir>/seed.snapshot`` when
        it is there (``budgetd snapshot restore``): every node of a cluster must be seeded from
        the same file before any of them starts. The file is renamed once used."""
        files = self._files
        seed = os.path.join(files.data_dir, SEED_SNAPSHOT)
        if not os.path.exists(seed) or os.path.exists(files.journal) or os.path.exists(files.dump):
            return
        try:
            with open(seed, "rb") as file:
                self._ledger = decode_snapshot(file.read())
        except (OSError, CodecError) as error:
            raise ReplicationError(f"cannot start from {seed}: {error}") from error
        os.replace(seed, seed + ".used")
        fsync_dir(files.data_dir)
        log.info("node %s starts from the seed snapshot %s", self._me.id, seed)

    def close(self) -> None:
        """Stop the tick thread, flush the journal, close the port. Proposals still waiting end
        UNKNOWN ("closed"). Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        if thread is threading.current_thread():
            return  # called from a callback: the loop ends after this tick
        thread.join(CLOSE_TIMEOUT_S)
        if thread.is_alive():
            log.error(
                "raft tick thread of %s did not stop within %s s", self._me.id, CLOSE_TIMEOUT_S
            )

    def _run(self) -> None:
        replica = self._replica
        assert replica is not None
        while not self._stopping.is_set():
            try:
                replica.doTick(self._tick_s)
            except Exception:
                log.exception("raft tick failed")
                self._stopping.wait(self._tick_s)
            self._first_tick_done = True
            self._expire()
            self._drain_deferred()
            self._refresh_view()
        self._writer.cancel()
        try:
            replica.destroy()  # autoTick off: closes the transport and the journal, now
        except Exception:
            log.exception("closing the raft node failed")
        with self._pending_lock:
            self._accepting = False
            pending = list(self._pending.values())
            self._pending.clear()
            self._deadlines.clear()
        for item in pending:
            self._invoke(functools.partial(item.deliver, Outcome.UNKNOWN, None, "closed"))
        self._drain_deferred()
        self._role = "stopped"
        self._view = _View()
        log.info("raft node %s closed", self._me.id)

    # ------------------------------------------------------------------------------------------
    # The replicated apply (tick thread)

    def _apply(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Applied | list[dict[str, Any]]:
        try:
            replica = self._replica
            index = replica.raftLastApplied + 1 if replica is not None else self._ledger_index + 1
            if len(args) != 1 or kwargs or type(args[0]) is not bytes:
                with self._lock:
                    self._ledger_index = index
                return _refusal("the log entry is not one encoded batch")
            try:
                timestamp_ms, ops = decode_batch(args[0])
            except CodecError as error:
                with self._lock:
                    self._ledger_index = index
                return _refusal(f"the log entry is not a budgetd batch: {error}")
            started_s = time.perf_counter()
            with self._lock:
                results = self._ledger.apply_unrendered(timestamp_ms, ops)
                self._ledger_index = index
            self._last_apply_s = time.perf_counter() - started_s
            if self.observe_time is not None:
                self.observe_time(timestamp_ms)
            self._entries_applied += 1
            if isinstance(ops, list) and len(ops) == len(results):
                for op, result in zip(ops, results, strict=True):
                    if result[0] == "replay" and isinstance(op, dict):  # answered from its key
                        kind = op.get("op")
                        if kind in self._replayed_ops:
                            self._replayed_ops[kind] += 1
            return _Applied(ops, results)
        except InvariantBroken:
            _stop_node("a ledger invariant is broken")
        except BaseException:
            _stop_node("unexpected error while applying a log entry")

    def _load_dump(self, path: str) -> tuple[Any, Any, list[TCPNode]]:
        """pysyncobj's deserializer: at start, and when the leader installs a snapshot."""
        try:
            self._writer.cancel()  # an older dump of ours must not overwrite this one later
            header, ledger_bytes = read_dump(path, fsync=True)
            ledger = decode_snapshot(ledger_bytes)
        except BaseException:
            _stop_node(f"cannot load the dump {path}")
        with self._lock:
            self._ledger = ledger
            self._ledger_index = header.index
            self._digest_cache = None
        self._writer.note_loaded(
            header, size_bytes=os.path.getsize(path), installed=self._first_tick_done
        )
        if self._replica is not None:
            self._replica.postpone_election()
        if self._first_tick_done:
            if gctune.node_gc.installed:  # the old ledger's campaign tree holds cycles
                gctune.settle()
            self._event(
                "snapshot_installed",
                snapshot_index=header.index,
                snapshot_term=header.term,
                size_bytes=os.path.getsize(path),
            )
        else:
            log.info("loaded the dump at index %d (term %d)", header.index, header.term)
        me = self._me.raft_address
        return header.last, header.prev, [TCPNode(a) for a in header.cluster if a != me]

    # ------------------------------------------------------------------------------------------
    # Proposals

    def propose(
        self,
        entry: bytes,
        callback: ProposalCallback,
        *,
        timeout_s: float | None = None,
    ) -> None:
        """Propose one log entry (``budgetd.codec.encode_batch`` bytes).

        ``callback(outcome, results, reason)`` runs exactly once, on the tick thread: OK with the
        ledger's results (computed on this node when it applies the entry), FAILED or UNKNOWN
        with ``results=None`` and a reason. Not the leader: FAILED "not_leader". No answer from
        pysyncobj within ``timeout_s`` (default proposer.request_timeout_ms): UNKNOWN "timeout".
        After close(): FAILED "closed", at once on the caller's thread.
        """
        if type(entry) is not bytes:
            raise TypeError("a log entry is bytes (budgetd.codec.encode_batch)")

        def deliver(outcome: Outcome, results: list[dict[str, Any]] | None, reason: str) -> None:
            callback(outcome, results, reason)

        if len(entry) > self._entry_bytes_max:
            detail = f"entry_too_large: {len(entry)} bytes > {self._entry_bytes_max}"
            self._submit_refused(deliver, detail)
            return
        self._submit(
            deliver,
            timeout_s,
            lambda replica, cb: replica.apply_entry(entry, callback=cb),
        )

    def _submit_refused(self, deliver: Callable[..., None], reason: str) -> None:
        if self._replica is None:
            raise ReplicationError("node not started")
        with self._pending_lock:
            accepting = self._accepting
            if accepting:
                self._deferred.append(functools.partial(deliver, Outcome.FAILED, None, reason))
        if not accepting:
            deliver(Outcome.FAILED, None, "closed")

    def _submit(
        self,
        deliver: Callable[[Outcome, list[dict[str, Any]] | None, str], None],
        timeout_s: float | None,
        send: Callable[[Any, Callable[[Any, Any], None]], None],
    ) -> None:
        replica = self._replica
        if replica is None:
            raise ReplicationError("node not started")
        if not replica._isLeader():
            self._submit_refused(deliver, "not_leader")
            return
        if self._transferring:
            self._submit_refused(deliver, "leadership_transfer")
            return
        token = next(self._tokens)
        deadline = time.monotonic() + (self._timeout_s if timeout_s is None else timeout_s)
        with self._pending_lock:
            if not self._accepting:
                accepted = False
            else:
                accepted = True
                self._pending[token] = _Pending(deliver=deliver, deadline=deadline)
                heapq.heappush(self._deadlines, (deadline, token))
        if not accepted:
            deliver(Outcome.FAILED, None, "closed")
            return
        # A full wake-up pipe in pysyncobj means the tick thread is awake and will see it.
        with contextlib.suppress(BlockingIOError):
            send(replica, functools.partial(self._on_raft_result, token))

    def _on_raft_result(self, token: int, result: Any, fail_reason: Any) -> None:
        outcome, reason = outcome_of(fail_reason)
        if outcome is not Outcome.OK:
            result = None
        elif type(result) is _Applied:  # right after the apply, on the tick thread
            try:
                result = render_results(result.ops, result.results)
            except BaseException:  # raising into pysyncobj would make it apply the entry again
                _stop_node("unexpected error while rendering the results of a log entry")
        self._finish(token, outcome, result, reason)

    def _finish(
        self, token: int, outcome: Outcome, results: list[dict[str, Any]] | None, reason: str
    ) -> None:
        with self._pending_lock:
            pending = self._pending.pop(token, None)
        if pending is None:
            return  # already ended (timeout)
        call = functools.partial(pending.deliver, outcome, results, reason)
        if threading.current_thread() is self._thread:
            self._invoke(call)
        else:
            self._deferred.append(call)  # QUEUE_FULL is reported on the proposing thread

    def _expire(self) -> None:
        now = time.monotonic()
        expired: list[_Pending] = []
        with self._pending_lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, token = heapq.heappop(self._deadlines)
                pending = self._pending.pop(token, None)
                if pending is not None:
                    expired.append(pending)
        for pending in expired:
            self._invoke(functools.partial(pending.deliver, Outcome.UNKNOWN, None, "timeout"))

    def _drain_deferred(self) -> None:
        while self._deferred:
            self._invoke(self._deferred.popleft())

    @staticmethod
    def _invoke(call: Callable[[], None]) -> None:
        # A raising callback must not reach pysyncobj: it would re-apply the entry.
        try:
            call()
        except Exception:
            log.exception("a proposal callback raised")

    # ------------------------------------------------------------------------------------------
    # Membership

    def add_member(self, member: Member, callback: MembershipCallback) -> None:
        """Add ``member`` to the cluster (pysyncobj dynamic membership), on the leader.

        One change at a time: pysyncobj 0.3.17 applies a membership change when it is appended,
        not when it commits, and its own "one change at a time" check never fires (its
        ``__changeClusterIDx`` is never set). So wait for the callback of one change before the
        next; this node refuses a second one while the first is pending (FAILED
        "membership_change_pending"), and after an UNKNOWN outcome check `status()` first.
        Start the new node (its settings list every member, itself included) before or after
        this call; it catches up by entries or by a snapshot install. Other nodes learn the new
        member's http address and dc from their own settings only.
        """
        view = self._view
        if member.raft_address == self._me.raft_address or any(
            address == member.raft_address for address, _ in view.peers
        ):
            self._membership_refused(callback, "already_member")
            return
        self._change_membership(
            callback,
            on_ok=lambda: self._members.__setitem__(member.raft_address, member),
            send=lambda replica, cb: replica.addNodeToCluster(member.raft_address, callback=cb),
        )

    def remove_member(self, member_id: str, callback: MembershipCallback) -> None:
        """Remove the member ``member_id``, on the leader; same one-at-a-time rule as add_member.
        The leader cannot remove itself (FAILED "cannot_remove_self")."""
        if member_id == self._me.id:
            self._membership_refused(callback, "cannot_remove_self")
            return
        address = next((a for a, m in self._members.items() if m.id == member_id), None)
        if address is None or all(address != peer for peer, _ in self._view.peers):
            self._membership_refused(callback, "unknown_member")
            return
        self._change_membership(
            callback,
            on_ok=lambda: None,
            send=lambda replica, cb: replica.removeNodeFromCluster(address, callback=cb),
        )

    def _membership_refused(self, callback: MembershipCallback, reason: str) -> None:
        self._submit_refused(lambda outcome, _results, why: callback(outcome, why), reason)

    def _change_membership(
        self,
        callback: MembershipCallback,
        *,
        on_ok: Callable[[], None],
        send: Callable[[Any, Callable[[Any, Any], None]], None],
    ) -> None:
        with self._pending_lock:
            busy = self._membership_busy
            self._membership_busy = True
        if busy:
            self._membership_refused(callback, "membership_change_pending")
            return

        def deliver(outcome: Outcome, _results: Any, reason: str) -> None:
            with self._pending_lock:
                self._membership_busy = False
            if outcome is Outcome.OK:
                on_ok()
            callback(outcome, reason)

        self._submit(deliver, None, send)

    # ------------------------------------------------------------------------------------------
    # Leadership transfer (budgetd.node.Node.transfer_leader runs the steps)

    def hold_proposals(self, hold: bool) -> None:
        """While held, every new proposal (membership changes, barriers and pulses included)
        fails at once with FAILED "leadership_transfer": definitely not submitted. A leader
        handing over holds them so that its log stops growing and the target can match it."""
        with self._pending_lock:
            self._transferring = hold

    def proposals_pending(self) -> int:
        """Proposals submitted and not yet ended (applied, failed or timed out)."""
        with self._pending_lock:
            return len(self._pending)

    def send_timeout_now(self, member_id: str | None, callback: MembershipCallback) -> None:
        """Ask pysyncobj (0.3.17, ``SyncObj.transferLeadership``) to send Raft's TimeoutNow to
        ``member_id`` (None: the connected follower with the highest match index), on the tick
        thread: the target stands for election at once, with a term above the leader's.

        ``callback(outcome, reason)`` runs once on the tick thread: OK "sent" (only sent: the
        caller watches the leader change); FAILED "target_not_ready" while the target is not
        connected or its match index is below this leader's last log index (pysyncobj refuses
        then, so the target never campaigns with a log shorter than the leader's), "not_leader",
        "unknown_member" or "closed"."""
        address = None
        if member_id is not None:
            address = next((a for a, m in self._members.items() if m.id == member_id), None)
            if address is None or all(address != peer for peer, _ in self._view.peers):
                self._membership_refused(callback, "unknown_member")
                return

        def send() -> None:
            replica = self._replica
            if replica is None or not replica._isLeader():
                callback(Outcome.FAILED, "not_leader")
                return
            result: list[Any] = []
            replica.transferLeadership(address, callback=lambda _r, err: result.append(err))
            if result and result[0] == FAIL_REASON.SUCCESS:
                callback(Outcome.OK, "sent")
            elif result and result[0] == FAIL_REASON.NOT_LEADER:
                callback(Outcome.FAILED, "not_leader")
            else:
                callback(Outcome.FAILED, "target_not_ready")

        with self._pending_lock:
            accepting = self._accepting
            if accepting:
                self._deferred.append(send)
        if not accepting:
            callback(Outcome.FAILED, "closed")

    # ------------------------------------------------------------------------------------------
    # Reads and status

    def read(self, fn: Callable[[Ledger], T]) -> T:
        """``fn(ledger)`` between two applied entries. A local read: it may be stale (use a
        barrier through the log for a strong read, DESIGN I4). ``fn`` must not change the ledger."""
        with self._lock:
            return fn(self._ledger)

    def digest(self) -> str:
        return self.digest_with_index()[1]

    def digest_with_index(self) -> tuple[int, str]:
        """``(applied index, digest)`` (`Ledger.digest`), computed once per applied entry, in a
        forked child (copy-on-write, as the dump is written): the ledger lock is held only for
        the fork, so applies and heartbeats go on. Exporting and hashing in the process held the
        lock for 2.4 s of 5 at 1,200,000 open reservations, long enough to start elections. The
        caller's thread waits for the child (seconds on a large ledger): never call this on the
        event loop. Falls back to hashing here when the fork fails."""
        with self._lock:
            cache = self._digest_cache
            if cache is not None and cache[0] == self._ledger_index:
                return cache
            index = self._ledger_index
            child = _fork_digest(self._ledger)
            state = self._ledger.export_state() if child is None else None
        digest = _wait_digest(*child) if child is not None else None
        if digest is None:
            if state is None:
                log.warning("the digest child failed; hashing in the process")
                with self._lock:
                    index = self._ledger_index
                    state = self._ledger.export_state()
            digest = Ledger.digest_of(state)
        self._digest_cache = (index, digest)
        return index, digest

    def is_leader(self) -> bool:
        """Whether this node believes it leads. A deposed leader believes so for up to
        raft.leader_fallback_ms (research/pysyncobj.md §1.4): never decide on it alone."""
        replica = self._replica
        if replica is None or self._thread is None or self._stopping.is_set():
            return False
        return bool(replica._isLeader())

    def leader_id(self) -> str | None:
        """The member id of the leader this node knows, or None (no leader, or an address that
        no member in this node's settings or additions has)."""
        replica = self._replica
        leader = replica._getLeader() if replica is not None else None
        if leader is None:
            return None
        member = self._members.get(leader.address)
        return member.id if member is not None else None

    def leader_member(self) -> Member | None:
        """The leader's member entry (for its http address), or None."""
        leader_id = self.leader_id()
        return next((m for m in self._members.values() if m.id == leader_id), None)

    def applied_index(self) -> int:
        """The Raft log index of the last entry this node applied (no-ops included)."""
        replica = self._replica
        return int(replica.raftLastApplied) if replica is not None else 0

    def request_snapshot(self) -> None:
        """Write a dump (and compact the log) at the next tick, whatever the thresholds."""
        replica = self._replica
        if replica is None:
            raise ReplicationError("node not started")
        replica.forceLogCompaction()

    def status(self) -> dict[str, Any]:
        """Raft status for GET /v1/cluster (the digest is separate: it costs a hash)."""
        view = self._view
        leader_id = None
        if view.leader_address is not None:
            leader = self._members.get(view.leader_address)
            leader_id = leader.id if leader is not None else None
        members = [self._member_status(self._me.raft_address, view.role, healthy=True)]
        for address, connected in view.peers:
            role = "leader" if address == view.leader_address else "follower"
            members.append(self._member_status(address, role, healthy=connected))
        return {
            "node_id": self._me.id,
            "role": view.role,
            "term": view.term,
            "commit_index": view.commit_index,
            "applied_index": view.applied_index,
            "leader_id": leader_id,
            "leader_raft_address": view.leader_address,
            "ready": view.ready,
            "quorum": view.quorum,
            "members": members,
            "snapshot": self._writer.info(),
        }

    def _member_status(self, address: str, role: str, *, healthy: bool) -> dict[str, Any]:
        member = self._members.get(address)
        return {
            "id": member.id if member is not None else None,
            "raft_address": address,
            "http_address": member.http_address if member is not None else None,
            "dc": member.dc if member is not None else None,
            "role": role,
            "healthy": healthy,
        }

    # ------------------------------------------------------------------------------------------
    # Tick-thread bookkeeping

    def _on_state_changed(self, old: int, new: int) -> None:
        self._role = _ROLES.get(new, "unknown")
        log.debug("raft node %s: %s -> %s", self._me.id, _ROLES.get(old, old), _ROLES.get(new, new))

    def _event(self, event: str, **fields: Any) -> None:
        """One structured log line for a change of this node's state (budgetd.logs renders the
        fields), with the node's id, term and indexes."""
        view = self._view
        log.info(
            event,
            extra={
                "node_id": self._me.id,
                "term": view.term,
                "commit_index": view.commit_index,
                "applied_index": view.applied_index,
                **fields,
            },
        )

    def _refresh_view(self) -> None:
        replica = self._replica
        if replica is None:
            return
        leader = replica._getLeader()
        other_nodes = list(replica.otherNodes)
        peers = tuple(
            sorted((node.address, bool(replica.isNodeConnected(node))) for node in other_nodes)
        )
        commit_index = int(replica.raftCommitIndex)
        peer_lag: tuple[tuple[str, int], ...] | None = None
        quorum: bool | None = None
        if self._role == "leader":
            match_index = getattr(replica, MATCH_INDEX_ATTRIBUTE)
            last_response = getattr(replica, LAST_RESPONSE_ATTRIBUTE)
            peer_lag = tuple(
                sorted(
                    (node.address, max(0, commit_index - int(match_index.get(node, 0))))
                    for node in other_nodes
                )
            )
            heard_after = monotonic() - self._quorum_window_s
            answered = sum(1 for node in other_nodes if last_response.get(node, 0) > heard_after)
            quorum = answered + 1 > (len(other_nodes) + 1) / 2
        old = self._view
        new = _View(
            role=self._role,
            term=int(replica.raftCurrentTerm),
            commit_index=commit_index,
            applied_index=int(replica.raftLastApplied),
            leader_address=leader.address if leader is not None else None,
            peers=peers,
            ready=bool(replica.isReady()),
            peer_lag=peer_lag,
            quorum=quorum,
        )
        self._view = new
        if old.role != "stopped":
            self._log_changes(old, new)

    def _log_changes(self, old: _View, new: _View) -> None:
        """The events of one tick: role, leader, quorum and membership changes; a warning when
        terms change fast (elections that depose leaders over and over: a starved node)."""
        if new.term != old.term and old.term:
            self._note_term_change(new.term)
        if new.role != old.role:
            self._event(f"became_{new.role}", previous_role=old.role)
        if new.leader_address != old.leader_address:
            self._event(
                "leader_changed",
                leader_id=self._member_id(new.leader_address),
                previous_leader_id=self._member_id(old.leader_address),
            )
        if new.role == "leader" and old.role == "leader" and new.quorum != old.quorum:
            self._event("quorum_regained" if new.quorum else "quorum_lost")
        old_peers = {address for address, _ in old.peers}
        new_peers = {address for address, _ in new.peers}
        for address in sorted(new_peers - old_peers):
            self._event("member_added", member_id=self._member_id(address), raft_address=address)
        for address in sorted(old_peers - new_peers):
            self._event("member_removed", member_id=self._member_id(address), raft_address=address)

    def _note_term_change(self, term: int) -> None:
        now = time.monotonic()
        changes = self._term_changes
        changes.append(now)
        while changes and changes[0] < now - TERM_CHURN_WINDOW_S:
            changes.popleft()
        if len(changes) < TERM_CHURN_CHANGES:
            return
        if self._churn_warned_s is not None and now - self._churn_warned_s < TERM_CHURN_WINDOW_S:
            return
        self._churn_warned_s = now
        log.warning(
            "terms_changing_fast: %d term changes in %.0f s (now term %d): elections keep "
            "deposing leaders; look for a starved node (CPU, GIL, disk) or a flapping network",
            len(changes),
            TERM_CHURN_WINDOW_S,
            term,
            extra={"node_id": self._me.id, "term": term},
        )

    def _member_id(self, address: str | None) -> str | None:
        member = None if address is None else self._members.get(address)
        return None if member is None else member.id

    def stats(self) -> RaftStats:
        """This node's Raft, disk and apply figures, for metrics (any thread, no ledger lock)."""
        view = self._view
        lag = dict(view.peer_lag or ())
        files = self._files
        try:
            journal_bytes = os.path.getsize(files.journal)
        except OSError:
            journal_bytes = 0
        try:
            dump_mtime_s: float | None = os.path.getmtime(files.dump)
        except OSError:
            dump_mtime_s = None
        try:
            disk = os.statvfs(files.data_dir)
            free_bytes = disk.f_bavail * disk.f_frsize
            size_bytes = disk.f_blocks * disk.f_frsize
        except OSError:
            free_bytes = size_bytes = 0
        return RaftStats(
            role=view.role,
            term=view.term,
            commit_index=view.commit_index,
            applied_index=view.applied_index,
            leader_known=view.leader_address is not None,
            quorum=view.quorum,
            peers=tuple(
                PeerStats(
                    member_id=self._member_id(address),
                    raft_address=address,
                    connected=connected,
                    lag_entries=lag.get(address) if view.peer_lag is not None else None,
                )
                for address, connected in view.peers
            ),
            snapshot=self._writer.info(),
            journal_bytes=journal_bytes,
            dump_mtime_s=dump_mtime_s,
            data_dir_free_bytes=free_bytes,
            data_dir_size_bytes=size_bytes,
            sync_seconds=self._sync_seconds.snapshot(),
            last_apply_s=self._last_apply_s,
            entries_applied=self._entries_applied,
            replayed_ops=dict(self._replayed_ops),
        )
