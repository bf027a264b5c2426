"""What budgetd changes in pysyncobj 0.3.17 so that an acknowledged log entry is on disk.

Owns every patch of pysyncobj's behaviour, and nothing else. Imports pysyncobj and the stdlib only.

The rule (DESIGN §4): **a node acknowledges an entry to the leader, and the leader counts itself,
only after that entry is on its disk.** pysyncobj never syncs (research/pysyncobj.md §3): the
journal is an mmap written with no msync, the meta file is renamed without fsync. Here:

1. `DurableJournal` wraps the node's `FileJournal`. Every change (add, clear, truncation) marks it
   dirty; `sync()` makes a dirty journal durable (`datasync`: an fdatasync of the mapped file,
   which on Linux is what ``FileJournal.flush``'s msync of the whole shared mapping does, but
   without holding the interpreter lock) — one sync covers every entry appended since the last.
   ("msync" below means this sync.)
2. `DurableTransport` syncs a dirty journal before it sends any message to a peer — except a
   leader's ``append_entries`` (below). So a follower's ``next_node_idx`` (its ack) always
   follows the msync of what it acknowledges, and so do vote answers and a candidate's vote
   requests. Under load that is one msync per received batch, not per entry.
3. The journal also syncs before the commit index moves (`setRaftCommitIndex`, which pysyncobj
   calls after every change of ``__raftCommitIndex`` and before applying). That covers the leader
   counting itself, and a one-member cluster, which sends nothing and would otherwise commit and
   apply (and call back) entries that are only in the page cache.

Why a leader ships entries before they are on its own disk (Raft §10.2.1: the leader writes its
log in parallel with replicating it). An entry counts as committed once a majority holds it; the
leader counts itself. Its own copy need not be durable when it *ships* the entry, only before it
*acts* on a commit that counts it — and it acts only after `setRaftCommitIndex`, which syncs
first (3). A follower learns a commit index only from the leader, which sends one only after that
sync, so nothing is applied anywhere on the strength of the leader's page cache. If the leader
loses power before its sync, the entry is on at most the followers' disks and was never
acknowledged to a client: it is a plain uncommitted entry, which Raft may keep or drop. The
followers' side is unchanged: an ack still follows the msync of what it acknowledges. So
`DurableSyncObj` sends the leader's ``append_entries`` first and syncs right after (while the
followers receive, sync and answer), not before; the ack's round trip hides the leader's msync.

What a leader sends after applying (``appendEntriesUseBatch=False``): pysyncobj sends every
follower an ``append_entries`` after every apply, whose only news is the new commit index.
`DurableSyncObj` sends it at most one poll period (``autoTickPeriod``, raft.tick_ms) later
instead: the next entry shipped in the meantime carries the commit index anyway (under load the
notice costs nothing), and an idle leader answers its client before it pickles, encrypts and
sends the notice. A follower's applied index trails the leader's by at most that period plus a
round trip (it trailed by one round trip before).
4. Meta (term, vote, commit index) is written by `DurableMetaStorer`: write a temporary file,
   fsync it, rename it over the old one, fsync the directory. pysyncobj stores term and vote
   synchronously before any message that reflects them (0.3.17), so a vote is durable before
   it is granted.
5. Log compaction rewrote the journal *in place* (`FileJournal.deleteEntriesTo` = clear, then
   re-add every kept entry, moving the end-of-log header each time): a crash in the middle left
   a journal cut short, losing acknowledged entries. `DurableJournal.deleteEntriesTo` writes the
   kept entries to a new file, msyncs it, renames it over the journal and fsyncs the directory.
6. pysyncobj restarts from the dump only if the journal begins exactly with the dump's two last
   entries; otherwise it *clears the journal* (`__loadDumpFile`), which after a crash between
   writing a dump and compacting the journal throws away acknowledged entries that follow the
   dump. `reconcile_journal` (run before the node starts) cuts such a journal to begin at the
   dump instead, keeping what follows — the InstallSnapshot rule of the Raft paper.

The dump itself (budgetd.replication.snapshot) is fsynced before it is renamed into place, and a
dump received from the leader is fsynced (with its directory) before the journal is cleared.

pysyncobj internals this relies on (0.3.17; tests/replication/test_pysyncobj_internals.py fails
if any of them moves):

- ``SyncObj.__init__(selfNode, otherNodes, conf, ..., transportClass=...)`` builds the transport
  from ``transportClass(syncObj, selfNode, otherNodes)`` and keeps the journal in the private
  attribute ``_SyncObj__raftLog``, which is replaced here right after construction. That is only
  safe with ``autoTick=False`` (no tick has run yet; budgetd runs its own tick thread).
- SyncObj uses the journal only through ``add, clear, deleteEntriesFrom, deleteEntriesTo,
  __getitem__, __len__, _destroy, setRaftCommitIndex, getRaftCommitIndex, setCurrentTerm,
  getCurrentTerm, getVotedForNodeId, onOneSecondTimer``, and calls ``setRaftCommitIndex`` after
  every change of its commit index, before ``__applyLogEntries``.
- ``FileJournal`` keeps its file in ``_FileJournal__journalFile``, a ``ResizableFile`` that maps
  the whole of its open file ``_ResizableFile__f`` (``MAP_SHARED``) and reopens that file when it
  grows it; every entry and header is written through that mapping. ``FileJournal.flush()``
  msyncs the whole mapping; ``FileJournal(path)`` reads ``path`` and
  ``path + '.meta'``; its meta storer is the private ``_FileJournal__metaStorer``, a
  ``MetaStorer`` with ``getPath()`` and ``storeMeta(meta)``; meta is pickled with
  ``pysyncobj.pickle.dumps``.
- Every peer message SyncObj sends goes through ``TCPTransport.send(node, message)`` (handshake
  frames go straight to the connection; they acknowledge nothing), and the transport keeps its
  SyncObj in ``_syncObj``.
- ``SyncObj.__sendAppendEntries`` (``_SyncObj__sendAppendEntries``) is the only sender of
  ``append_entries`` and runs on the leader only; it sets ``__newAppendEntriesTime`` (the next
  heartbeat, ``_SyncObj__newAppendEntriesTime``) and each message carries ``commit_index``.
  ``SyncObj.__applyLogEntries`` (``_SyncObj__applyLogEntries``) returns whether an
  ``append_entries`` must go out now because entries were applied, and ``_onTick`` sends one when
  it says so or when the heartbeat is due.
- ``SyncObj.__onMessageReceived`` (``_SyncObj__onMessageReceived``) is the transport's message
  callback, looked up on the instance; given an ``append_entries`` whose ``prevLogIdx`` is below
  its last entry, it deletes every entry after ``prevLogIdx`` before appending
  (`DurableSyncObj.without_held_entries` trims what is already held).
- ``__loadDumpFile`` keeps the journal only when ``journal[0] == prev`` and ``journal[1] ==
  last`` of the dump's raft data.
- A follower stands for election once ``monotonic()`` passes ``_SyncObj__raftElectionDeadline``
  (`DurableSyncObj.postpone_election`, the one change here that is not about the disk).
- The leader keeps ``_SyncObj__raftMatchIndex`` and ``_SyncObj__lastResponseTime``, dicts keyed by
  peer node; budgetd only reads them (replication lag and quorum in `RaftNode`'s status).

Known limits (not fixed here): a power cut *during* an msync can leave a journal whose end-of-log
header points past records that never reached the disk; the node then fails to start (loudly:
the journal does not parse) and must be rebuilt from its peers. The journal is capped at 4 GiB
(pysyncobj's 32-bit offsets).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.journal import FileJournal, Journal, MetaStorer
from pysyncobj.monotonic import monotonic
from pysyncobj.pickle import dumps as _pickle_dumps
from pysyncobj.transport import TCPTransport

__all__ = [
    "ELECTION_DEADLINE_ATTRIBUTE",
    "JOURNAL_ATTRIBUTE",
    "JOURNAL_FILE_ATTRIBUTE",
    "LAST_RESPONSE_ATTRIBUTE",
    "MATCH_INDEX_ATTRIBUTE",
    "META_STORER_ATTRIBUTE",
    "NEXT_APPEND_ENTRIES_ATTRIBUTE",
    "OPEN_FILE_ATTRIBUTE",
    "PYSYNCOBJ_VERSION",
    "DurableJournal",
    "DurableMetaStorer",
    "DurableSyncObj",
    "DurableTransport",
    "datasync",
    "fsync_dir",
    "reconcile_journal",
    "rewrite_journal",
]

#: The only pysyncobj this module was written against (pyproject pins it too).
PYSYNCOBJ_VERSION = "0.3.17"
#: Where SyncObj keeps its journal (name-mangled private attribute).
JOURNAL_ATTRIBUTE = "_SyncObj__raftLog"
#: Where FileJournal keeps its meta storer (name-mangled private attribute).
META_STORER_ATTRIBUTE = "_FileJournal__metaStorer"
#: Where FileJournal keeps its mapped file, and where that ResizableFile keeps the open file.
JOURNAL_FILE_ATTRIBUTE = "_FileJournal__journalFile"
OPEN_FILE_ATTRIBUTE = "_ResizableFile__f"
#: When SyncObj's follower stands for election (name-mangled private attribute, monotonic s).
ELECTION_DEADLINE_ATTRIBUTE = "_SyncObj__raftElectionDeadline"
#: The leader's match index per peer node (name-mangled private dict: node -> index).
MATCH_INDEX_ATTRIBUTE = "_SyncObj__raftMatchIndex"
#: When the leader last heard from each peer node (name-mangled private dict: node -> monotonic s).
LAST_RESPONSE_ATTRIBUTE = "_SyncObj__lastResponseTime"
#: When the leader sends its next heartbeat (name-mangled private attribute, monotonic s).
NEXT_APPEND_ENTRIES_ATTRIBUTE = "_SyncObj__newAppendEntriesTime"

log = logging.getLogger(__name__)

Entry = tuple[bytes, int, int]


def datasync(journal: FileJournal) -> None:
    """Make every write through ``journal``'s mapping durable: fdatasync of the mapped file.

    On Linux an msync(MS_SYNC) of a shared mapping writes back the file's dirty pages in its
    range, as fdatasync does for the whole file (the mapping covers all of it), so this is as
    durable as ``FileJournal.flush``. The difference is the interpreter lock: ``mmap.flush``
    holds it through the msync, so every other thread of the node stopped for each sync (under
    64 clients of single reserves, 16-31 % of the leader's time); ``os.fdatasync`` releases it.
    The open file is looked up each time: ResizableFile reopens it when it grows the journal.
    """
    mapped = getattr(journal, JOURNAL_FILE_ATTRIBUTE)
    os.fdatasync(getattr(mapped, OPEN_FILE_ATTRIBUTE).fileno())


def fsync_dir(path: str) -> None:
    """fsync a directory, so that a file created or renamed in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableMetaStorer(MetaStorer):
    """pysyncobj's meta file (term, vote, commit index), written so that it survives power loss:
    temporary file, fsync, rename, fsync of the directory."""

    def storeMeta(self, meta: dict[str, Any]) -> None:
        path = self.getPath()
        tmp = path + ".tmp"
        with open(tmp, "wb") as file:
            file.write(_pickle_dumps(meta))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")


def _open_journal(path: str) -> FileJournal:
    journal = FileJournal(path)
    meta_storer = getattr(journal, META_STORER_ATTRIBUTE)
    setattr(journal, META_STORER_ATTRIBUTE, DurableMetaStorer(meta_storer.getPath()))
    return journal


def rewrite_journal(path: str, entries: Sequence[Entry]) -> None:
    """Replace the journal at ``path`` by one holding exactly ``entries``, atomically: a new file
    is written and msynced, then renamed over the old one, then the directory is fsynced. The
    meta file beside it is left as it is."""
    tmp = path + ".rewrite"
    if os.path.exists(tmp):
        os.unlink(tmp)
    fresh = FileJournal(tmp)
    try:
        for command, idx, term in entries:
            fresh.add(command, idx, term)
        fresh.flush()
    finally:
        fresh._destroy()
    for leftover in (tmp + ".meta", tmp + ".meta.tmp"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def reconcile_journal(path: str, *, last: Entry, prev: Entry) -> bool:
    """Make the journal at ``path`` begin with a dump's ``prev, last`` entries when it holds them.

    A crash after a dump reached the disk but before the journal was compacted leaves a journal
    that starts before the dump. pysyncobj would clear it on restart, and with it every entry
    after the dump. When the journal holds the dump's last entry (same index, same term), the
    entries before ``prev`` are cut instead and the rest is kept. Returns whether it rewrote.
    """
    if not os.path.exists(path):
        return False
    journal = FileJournal(path)
    try:
        entries: list[Entry] = [tuple(entry) for entry in journal[:]]
    finally:
        journal._destroy()
    if len(entries) >= 2 and entries[0] == prev and entries[1] == last:
        return False
    first_idx = entries[0][1] if entries else None
    if first_idx is None or not first_idx <= prev[1] < entries[-1][1]:
        return False  # pysyncobj's own rule applies: the dump replaces the journal
    offset = prev[1] - first_idx
    if entries[offset] != prev or entries[offset + 1] != last:
        log.warning(
            "journal %s disagrees with the dump at index %d; leaving it to pysyncobj", path, last[1]
        )
        return False
    log.warning(
        "journal %s starts at index %d, before the dump at %d (crash during compaction); "
        "cutting it to start at the dump and keeping %d later entries",
        path,
        first_idx,
        last[1],
        len(entries) - offset - 2,
    )
    rewrite_journal(path, entries[offset:])
    return True


class DurableJournal(Journal):
    """pysyncobj's journal with a dirty flag, an msync before acks and commits, durable meta and
    an atomic compaction. See the module docstring."""

    def __init__(
        self, inner: FileJournal, path: str, *, on_sync: Callable[[float], None] | None = None
    ) -> None:
        self._inner = inner
        self._path = path
        self._on_sync = on_sync
        meta_storer = getattr(inner, META_STORER_ATTRIBUTE)
        if not isinstance(meta_storer, DurableMetaStorer):
            setattr(inner, META_STORER_ATTRIBUTE, DurableMetaStorer(meta_storer.getPath()))
        # SyncObj.__init__ may have appended the first no-op already; sync at the first chance.
        self._dirty = True
        self.syncs = 0

    # --- durability

    @property
    def dirty(self) -> bool:
        return self._dirty

    def sync(self) -> None:
        """Sync the journal (`datasync`) if anything changed since the last sync; ``on_sync``
        hears how long that took, in seconds (with the wait to take the interpreter lock back)."""
        if not self._dirty:
            return
        started_s = time.perf_counter()
        datasync(self._inner)
        self._dirty = False
        self.syncs += 1
        if self._on_sync is not None:
            self._on_sync(time.perf_counter() - started_s)

    # --- the Journal interface SyncObj uses

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._inner.add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        self._inner.clear()
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self._inner.deleteEntriesFrom(entryFrom)
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the first ``entryTo`` entries (log compaction), by atomic file replacement."""
        kept: list[Entry] = list(self._inner[entryTo:])
        commit_index = self._inner.getRaftCommitIndex()
        rewrite_journal(self._path, kept)
        self._inner._destroy()
        self._inner = _open_journal(self._path)
        # Term and vote are stored on every change; the commit index at most once a second.
        self._inner.setRaftCommitIndex(commit_index)
        self._dirty = False

    def __getitem__(self, item: Any) -> Any:
        return self._inner[item]

    def __len__(self) -> int:
        return len(self._inner)

    def _destroy(self) -> None:
        self.sync()
        self._inner.onOneSecondTimer()  # store a commit index not yet written
        self._inner._destroy()

    def flush(self) -> None:
        self._dirty = True
        self.sync()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # Nothing is committed (so applied, so answered) before it is on this node's disk.
        self.sync()
        self._inner.setRaftCommitIndex(raftCommitIndex)

    def getRaftCommitIndex(self) -> int:
        return int(self._inner.getRaftCommitIndex())

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._inner.setCurrentTerm(term, votedForNodeId)

    def getCurrentTerm(self) -> int:
        return int(self._inner.getCurrentTerm())

    def getVotedForNodeId(self) -> Any:
        return self._inner.getVotedForNodeId()

    def onOneSecondTimer(self) -> None:
        self._inner.onOneSecondTimer()


class DurableTransport(TCPTransport):
    """pysyncobj's TCP transport, syncing the journal before any message leaves for a peer but a
    leader's ``append_entries`` (the leader syncs right after sending those, see the module
    docstring)."""

    def send(self, node: Any, message: Any) -> bool:
        sync_obj = self._syncObj
        if not sync_obj.ships_before_sync(message):
            sync_obj.sync_journal()
        return bool(super().send(node, message))


class DurableSyncObj(SyncObj):
    """A `SyncObj` whose acknowledgements and commits follow an msync of the journal.

    The configuration must have ``autoTick=False`` (the caller runs ``doTick`` on its own thread,
    started after this constructor returns) and both ``journalFile`` and ``fullDumpFile``.
    """

    def __init__(
        self,
        self_address: str,
        partner_addresses: Sequence[str],
        conf: Any,
        *,
        on_sync: Callable[[float], None] | None = None,
    ) -> None:
        if conf.autoTick:
            raise ValueError("DurableSyncObj needs autoTick=False: it patches before the 1st tick")
        if not conf.journalFile or not conf.fullDumpFile:
            raise ValueError("DurableSyncObj needs both journalFile and fullDumpFile")
        self._durable_journal: DurableJournal | None = None
        self._commit_notice_delay_s = 0.0
        super().__init__(
            self_address, list(partner_addresses), conf, transportClass=DurableTransport
        )
        raw = getattr(self, JOURNAL_ATTRIBUTE)
        if not isinstance(raw, FileJournal):
            raise TypeError(f"expected pysyncobj's FileJournal, found {type(raw).__name__}")
        self._durable_journal = DurableJournal(raw, conf.journalFile, on_sync=on_sync)
        setattr(self, JOURNAL_ATTRIBUTE, self._durable_journal)
        self._durable_journal.sync()
        fsync_dir(os.path.dirname(os.path.abspath(conf.journalFile)))
        # The commit-index-only append_entries after an apply waits at most this long.
        self._commit_notice_delay_s = float(conf.autoTickPeriod)

    def postpone_election(self) -> None:
        """Restart the election timer after a long pause of the tick thread (loading a large
        dump). Without it the node, unable to hear its leader meanwhile, would stand for
        election the moment it reconnects — and pysyncobj has no PreVote, so its higher term
        deposes a healthy leader."""
        setattr(self, ELECTION_DEADLINE_ATTRIBUTE, monotonic() + self.conf.raftMaxTimeout)

    def sync_journal(self) -> None:
        journal = self._durable_journal
        if journal is None:
            raise RuntimeError("a peer message before the durable journal was installed")
        journal.sync()

    def ships_before_sync(self, message: Any) -> bool:
        """Whether ``message`` may leave before the journal is synced: only a leader's
        ``append_entries``, which `_SyncObj__sendAppendEntries` follows with a sync."""
        return (
            isinstance(message, dict)
            and message.get("type") == "append_entries"
            and bool(self._isLeader())
        )

    def _SyncObj__sendAppendEntries(self) -> None:
        """pysyncobj's leader send of ``append_entries`` to every follower, then the sync of
        the entries shipped: it runs while the followers receive, sync and answer."""
        SyncObj._SyncObj__sendAppendEntries(self)
        self.sync_journal()

    def _SyncObj__applyLogEntries(self) -> bool:
        """pysyncobj's apply; the ``append_entries`` it asks for after applying (news: the
        commit index only) is deferred to the next heartbeat, due within one poll period."""
        if not SyncObj._SyncObj__applyLogEntries(self):
            return False
        if self._isLeader():
            due_s = monotonic() + self._commit_notice_delay_s
            if due_s < getattr(self, NEXT_APPEND_ENTRIES_ATTRIBUTE):
                setattr(self, NEXT_APPEND_ENTRIES_ATTRIBUTE, due_s)
        return False

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        """pysyncobj's handler of every peer message, given append_entries without the entries
        this follower already holds (`without_held_entries`)."""
        SyncObj._SyncObj__onMessageReceived(self, node, self.without_held_entries(message))

    def without_held_entries(self, message: Any) -> Any:
        """An ``append_entries`` of the current term trimmed of the leading entries this node
        already holds (same index, same term), so that pysyncobj never truncates them.

        pysyncobj (0.3.17) deletes every entry after ``prevLogIdx`` before it appends, even
        entries equal to the ones it is sent. A leader re-sends a range whenever an older ack
        moves its next index back (several append_entries are in flight under load), so a
        follower would delete entries it has acknowledged — durable entries a commit may
        have counted — and re-append them (or fewer, when the leader's batch is smaller than
        the deleted tail): a crash in between loses acknowledged entries, and every such
        repeat logs pysyncobj's "truncating already-applied log entries". Raft deletes only
        from the first conflicting entry (§5.3), which is what the trimmed message makes
        pysyncobj do. Anything else (another term, a chunked transmission, a snapshot, a
        ``prevLogIdx`` this node cannot match) passes unchanged.
        """
        if not (isinstance(message, dict) and message.get("type") == "append_entries"):
            return message
        entries = message.get("entries")
        if not entries or "transmission" in message or message.get("term") != self._getTerm():
            return message
        journal = self._durable_journal
        if journal is None or len(journal) == 0:
            return message
        first, last = journal[0][1], journal[-1][1]
        previous = message.get("prevLogIdx")
        if not isinstance(previous, int) or not first <= previous < last:
            return message
        if journal[previous - first][2] != message.get("prevLogTerm"):
            return message  # pysyncobj refuses it: the logs differ before these entries
        held = 0
        for _command, index, term in entries:
            if index > last or journal[index - first][2] != term:
                break
            held += 1
        if held == 0:
            return message
        if held < len(entries):
            # Append the rest after the last entry held; pysyncobj truncates from the first
            # conflicting entry, if any, as Raft does.
            _command, index, term = entries[held - 1]
            return {**message, "prevLogIdx": index, "prevLogTerm": term, "entries": entries[held:]}
        if entries[-1][1] == last or journal[-1][2] == message["term"]:
            # Every entry held. This node's log then matches the leader's up to its own last
            # entry: either that is the last one sent, or it has the leader's term and so came
            # from this leader (one leader per term; Log Matching covers what precedes it).
            # Acknowledge up to there without touching the log.
            return {**message, "prevLogIdx": last, "prevLogTerm": journal[-1][2], "entries": []}
        # Every entry held, but a tail of older terms follows them: pysyncobj's own path.
        return message
