"""The one place that turns a node's settings into pysyncobj's `SyncObjConf`.

Owns every pysyncobj option budgetd sets, and why. Imports budgetd.settings and pysyncobj; never
the API, the CLI or the ledger.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pysyncobj import SyncObjConf
from pysyncobj.encryptor import HAS_CRYPTO

from budgetd.settings import NodeSettings, SettingsError

__all__ = [
    "RAFT_QUEUE_ENTRIES_MAX",
    "DataFiles",
    "build_conf",
    "data_files",
    "entry_bytes_max",
]

#: Log entries waiting in pysyncobj's submit queue on one node; beyond it a proposal fails with
#: QUEUE_FULL. Each entry is a whole batch of operations, and the proposer keeps only
#: `ProposerSettings.inflight_batches_max` in flight, so this is a safety net, not a tuning knob.
RAFT_QUEUE_ENTRIES_MAX: Final = 1_000

#: Room for pysyncobj's framing of a command (type byte, pickled method id and argument tuple).
_COMMAND_OVERHEAD_BYTES: Final = 4_096

_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", "[::]", ""})

#: How long pysyncobj trusts a resolved peer name (its default is 600 s). A member addressed by
#: a DNS name whose address changes (a Kubernetes pod rescheduled behind its stable name) is
#: dialled at the new address within this time; a name that does not resolve yet (a pod not
#: created yet) is asked again after the fail time (default 30 s).
DNS_CACHE_S: Final = 5.0
DNS_FAIL_CACHE_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class DataFiles:
    """The files of one node under its data_dir."""

    data_dir: str
    #: pysyncobj's journal (mmap, one record per log entry); its term, vote and commit index live
    #: beside it in ``<journal>.meta``.
    journal: str
    #: The full dump (snapshot): msgpack, see budgetd.replication.snapshot.
    dump: str


def data_files(settings: NodeSettings) -> DataFiles:
    data_dir = os.path.abspath(settings.data_dir)
    return DataFiles(
        data_dir=data_dir,
        journal=os.path.join(data_dir, "raft.journal"),
        dump=os.path.join(data_dir, "raft.dump"),
    )


def entry_bytes_max(settings: NodeSettings) -> int:
    """The largest encoded batch a node proposes: the proposer's ``batch_bytes_max``."""
    return settings.proposer.batch_bytes_max


def _seconds(milliseconds: int) -> float:
    return milliseconds / 1000.0


def _bind_address(settings: NodeSettings) -> str:
    address = settings.raft_bind or settings.me.raft_address
    host, _, port = address.rpartition(":")
    if host in _WILDCARD_HOSTS:
        raise SettingsError(
            f"raft bind address {address!r} is a wildcard: the Raft port speaks pickle, so it "
            "binds to one configured address only (set node.raft_bind or the member's "
            "raft_address to a specific IP)"
        )
    if host.startswith("["):
        raise SettingsError(
            f"raft address {address!r}: pysyncobj 0.3.17 splits host:port on the last ':' and "
            "cannot use a bracketed IPv6 address"
        )
    if not port.isdigit():
        raise SettingsError(f"raft bind address {address!r} has no port")
    return address


def build_conf(
    settings: NodeSettings,
    *,
    serializer: Callable[[str, Any], None],
    deserializer: Callable[[str], Any],
    serialize_checker: Callable[[], int],
    on_state_changed: Callable[[int, int], None] | None = None,
) -> SyncObjConf:
    """pysyncobj's configuration for this node.

    Raises `SettingsError` when the settings cannot make a safe node: several members and no
    cluster secret, a wildcard bind address, or timers pysyncobj would reject with a bare assert.
    """
    raft = settings.raft
    files = data_files(settings)
    secret = settings.cluster_secret()
    if len(settings.members) > 1 and secret is None:
        # settings.parse refuses this too; a NodeSettings built by hand must not slip past.
        raise SettingsError(
            "a cluster of several members needs a cluster secret (cluster.secret_file or "
            "BUDGETD_CLUSTER_SECRET): pysyncobj unpickles every frame, so an open Raft port is "
            "remote code execution"
        )
    if secret is not None and not HAS_CRYPTO:
        raise SettingsError(
            "a cluster secret needs the 'cryptography' package (pysyncobj's password uses Fernet)"
        )
    if raft.heartbeat_ms * 3 >= raft.election_timeout_min_ms:
        raise SettingsError("raft.heartbeat_ms must be under a third of election_timeout_min_ms")
    if raft.election_timeout_min_ms >= raft.election_timeout_max_ms:
        raise SettingsError("raft.election_timeout_min_ms must be below election_timeout_max_ms")
    if raft.connection_timeout_ms < raft.election_timeout_max_ms:
        raise SettingsError(
            "raft.connection_timeout_ms must be at least raft.election_timeout_max_ms "
            "(pysyncobj requires connectionTimeout >= raftMaxTimeout)"
        )
    if raft.leader_fallback_ms <= raft.heartbeat_ms:
        raise SettingsError("raft.leader_fallback_ms must exceed raft.heartbeat_ms")
    if raft.snapshot_entries < 2:
        raise SettingsError("raft.snapshot_entries must be at least 2")

    conf = SyncObjConf(
        # --- security: the port unpickles what it reads (research/pysyncobj.md §2.3).
        # Fernet-authenticated frames; a peer without the secret is disconnected before any
        # unpickling. A one-member cluster may run without it (nothing listens for peers then
        # but the port is still bound to one address only).
        password=secret,
        # Never 0.0.0.0 (pysyncobj's default since PR #151): one configured address.
        bindAddress=_bind_address(settings),
        # --- ticking: budgetd runs the tick loop itself (budgetd.replication.node), so that the
        # durability wrapper is installed before the first tick and close() can stop and join it.
        autoTick=False,
        # doTick's poll timeout: how long the tick thread sleeps when nothing happens. Commands
        # wake it at once through pysyncobj's pipe notifier (appendEntriesUseBatch=False). It also
        # bounds how long the leader holds back the commit-index-only append_entries after an
        # apply (budgetd.replication.durability).
        autoTickPeriod=_seconds(raft.tick_ms),
        # With autoTick off the constructor spins on bind until it succeeds; one attempt makes
        # a node whose address is taken fail at start instead.
        maxBindRetries=1,
        # --- latency: ship each entry at once (p50 ~0.7 ms instead of one heartbeat period,
        # research §5/§7); throughput comes from the proposer's group commit, many operations
        # per entry (DESIGN §4).
        appendEntriesUseBatch=False,
        # An entry at or above this size is sent in pysyncobj's chunked "transmission" mode,
        # whose last-chunk test compares against the raw command length, not the pickled
        # entry's (syncobj.py:1281), so an entry a few bytes under a multiple of the chunk size
        # is never reassembled. Proposals are capped at proposer.batch_bytes_max
        # (`entry_bytes_max`), so a chunk size above that keeps every entry whole.
        appendEntriesBatchSizeBytes=entry_bytes_max(settings) + _COMMAND_OVERHEAD_BYTES,
        # --- timers, from settings.raft (milliseconds there, seconds here).
        raftMinTimeout=_seconds(raft.election_timeout_min_ms),
        raftMaxTimeout=_seconds(raft.election_timeout_max_ms),
        appendEntriesPeriod=_seconds(raft.heartbeat_ms),
        # A leader that has not heard from a majority this long steps down (default 30 s is the
        # window in which a deposed leader keeps answering as leader, research §1.4).
        leaderFallbackTimeout=_seconds(raft.leader_fallback_ms),
        connectionTimeout=_seconds(raft.connection_timeout_ms),
        # Only the side with the larger address string redials, this often (research §4).
        connectionRetryTime=_seconds(raft.reconnect_ms),
        # Peer names are resolved again after a few seconds, not ten minutes (DNS_CACHE_S).
        dnsCacheTime=DNS_CACHE_S,
        dnsFailCacheTime=DNS_FAIL_CACHE_S,
        # --- persistence: always a journal AND a full dump (a journal alone wedges the node
        # after the first compaction, research §3.2 S1).
        journalFile=files.journal,
        fullDumpFile=files.dump,
        logCompactionMinEntries=raft.snapshot_entries,
        logCompactionMinTime=_seconds(raft.snapshot_interval_ms),
        # All nodes compact at about the same index; staggering by time windows would let the
        # in-memory log grow past snapshot_entries. Off.
        logCompactionSplit=False,
        # Our own msgpack dump (never pickle for the ledger), written in a forked child and
        # reported through serialize_checker (budgetd.replication.snapshot). useFork is moot:
        # pysyncobj never forks when a serializer is given.
        serializer=serializer,
        deserializer=deserializer,
        serializeChecker=serialize_checker,
        useFork=False,
        # --- membership and commands.
        # add_member/remove_member (one change at a time, see RaftNode.add_member).
        dynamicMembershipChange=True,
        # A node without a leader fails a command at once (MISSING_LEADER, definite) instead of
        # queueing it with no deadline.
        commandsWaitLeader=False,
        commandsQueueSize=RAFT_QUEUE_ENTRIES_MAX,
        onStateChanged=on_state_changed,
    )
    conf.validate()
    return conf
