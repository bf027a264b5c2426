"""The pysyncobj internals budgetd.replication relies on, and the ordering they buy.

Part 1 fails when a pysyncobj upgrade moves anything budgetd/replication/durability.py or
snapshot.py depends on: the pinned version, the files' contents, the private attributes, the
signatures, and facts read from the source (which journal methods SyncObj calls, that every peer
message goes through the transport, that the commit index is handed to the journal before
entries are applied, how a dump is renamed and matched).

Part 2 records, in process, every journal append, every msync, every message sent and every
apply of real clusters, and checks the rule of DESIGN §4 on the trace: a follower's ack and a
vote follow an msync of what they answer for, and no node applies an entry that is not on its
disk. A leader ships entries before its own msync (durability.py: Raft §10.2.1), and the trace
shows it does. The same checker run on plain pysyncobj must find violations — otherwise it
would prove nothing.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import inspect
import os
import re
import textwrap
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pysyncobj
import pytest
from pysyncobj import FAIL_REASON, SERIALIZER_STATE, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import FileJournal, Journal, MetaStorer, ResizableFile
from pysyncobj.serializer import Serializer
from pysyncobj.transport import TCPTransport
from raft_helpers import Cluster, campaign_batch, free_port, propose, wait_for

from budgetd.replication import Outcome, RaftNode
from budgetd.replication import durability as durability_module
from budgetd.replication.durability import (
    ELECTION_DEADLINE_ATTRIBUTE,
    JOURNAL_ATTRIBUTE,
    JOURNAL_FILE_ATTRIBUTE,
    LAST_RESPONSE_ATTRIBUTE,
    MATCH_INDEX_ATTRIBUTE,
    META_STORER_ATTRIBUTE,
    NEXT_APPEND_ENTRIES_ATTRIBUTE,
    OPEN_FILE_ATTRIBUTE,
    PYSYNCOBJ_VERSION,
    DurableJournal,
    DurableMetaStorer,
    DurableSyncObj,
    DurableTransport,
)

PACKAGE_DIR = Path(pysyncobj.__file__).parent

#: sha256 of the pysyncobj 0.3.17 files whose internals budgetd relies on. When one changes,
#: re-read budgetd/replication/durability.py and snapshot.py against the new source (every
#: internal is named in their docstrings), re-run these tests, then update the hash.
SOURCE_SHA256 = {
    "syncobj.py": "e8bdf06797085d734df86e24ab4802fe87893dff77268565ec036f7ad4a1cfe4",
    "journal.py": "9cf1eaf6acc704581a4cf7d3de330a404403913107adc91c929778b7e3f35edf",
    "serializer.py": "4d39fde2f15000ad8f507ec229ebd4f6a86371b6f84d4dc1439a9cccd52857ee",
    "transport.py": "0c9d89f9c4781ec9772df8011d7975a1a4a1a5f541357e12eae85a813e92b50b",
    "tcp_connection.py": "7784ed8da031369fe36f805cb186a2e94a3bd6f10fed2dd59c8cc3713fd6331c",
    "config.py": "fbbc7ff9f18e4d15a7fd563376e42f5bd192956879d4b810b056d5248b955698",
}

SYNCOBJ_SOURCE = (PACKAGE_DIR / "syncobj.py").read_text()


# ----------------------------------------------------------------------------------------------
# Part 1: the internals are where durability.py expects them


def test_pysyncobj_is_the_pinned_version() -> None:
    assert importlib.metadata.version("pysyncobj") == PYSYNCOBJ_VERSION == "0.3.17"
    from pysyncobj.version import VERSION

    assert VERSION == PYSYNCOBJ_VERSION


@pytest.mark.parametrize("name", sorted(SOURCE_SHA256))
def test_the_relied_on_sources_are_unchanged(name: str) -> None:
    digest = hashlib.sha256((PACKAGE_DIR / name).read_bytes()).hexdigest()
    assert digest == SOURCE_SHA256[name], (
        f"pysyncobj/{name} changed: re-check budgetd/replication/durability.py and snapshot.py"
    )


def test_syncobj_uses_the_journal_only_through_what_durable_journal_wraps() -> None:
    used = set(re.findall(r"self\.__raftLog\.(\w+)", SYNCOBJ_SOURCE))
    assert used == {
        "add",
        "clear",
        "deleteEntriesFrom",
        "deleteEntriesTo",
        "_destroy",
        "setRaftCommitIndex",
        "getRaftCommitIndex",
        "setCurrentTerm",
        "getCurrentTerm",
        "getVotedForNodeId",
        "onOneSecondTimer",
    }
    for name in used | {"__getitem__", "__len__"}:
        assert name in DurableJournal.__dict__, f"DurableJournal does not wrap {name}"
        assert callable(getattr(FileJournal, name))
    # The only other uses are indexing and len().
    rest = re.sub(r"self\.__raftLog\.\w+", "", SYNCOBJ_SOURCE)
    assert set(re.findall(r"self\.__raftLog(\W)", rest)) <= {"[", ")", " ", "\n"}
    assert "self.__raftLog = createJournal(self.__conf.journalFile)" in SYNCOBJ_SOURCE


def test_every_peer_message_goes_through_the_transport() -> None:
    sends = re.findall(r"([\w.]+)\.send\(", SYNCOBJ_SOURCE)
    assert sends and set(sends) == {"self.__transport"}
    assert list(inspect.signature(TCPTransport.send).parameters) == ["self", "node", "message"]
    assert "self._syncObj = syncObj" in inspect.getsource(TCPTransport.__init__)
    init = inspect.signature(SyncObj.__init__).parameters
    assert list(init)[:4] == ["self", "selfNode", "otherNodes", "conf"]
    assert "transportClass" in init
    assert "transportClass(self, self.__selfNode, self.__otherNodes)" in SYNCOBJ_SOURCE


def test_append_entries_leave_from_one_leader_method_that_durable_sync_obj_wraps() -> None:
    """DurableSyncObj syncs after `_SyncObj__sendAppendEntries` and defers the send that
    `_SyncObj__applyLogEntries` asks for to the next heartbeat: both must be what SyncObj calls,
    and the heartbeat time the attribute it reads."""
    tree = ast.parse(SYNCOBJ_SOURCE)
    syncobj = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SyncObj")
    builders = {
        function.name
        for function in syncobj.body
        if isinstance(function, ast.FunctionDef)
        and "'type': 'append_entries'" in ast.get_source_segment(SYNCOBJ_SOURCE, function)  # type: ignore[operator]
    }
    assert builders == {"__sendAppendEntries"}
    assert hasattr(SyncObj, "_SyncObj__sendAppendEntries")
    assert hasattr(SyncObj, "_SyncObj__applyLogEntries")
    tick = inspect.getsource(SyncObj._onTick)
    assert "needSendAppendEntries = self.__applyLogEntries()" in tick
    assert (
        "if monotonicTime() > self.__newAppendEntriesTime or needSendAppendEntries:\n"
        "                self.__sendAppendEntries()"
    ) in tick
    send = inspect.getsource(SyncObj._SyncObj__sendAppendEntries)  # type: ignore[attr-defined]
    assert send.count("self.__newAppendEntriesTime = monotonicTime() +") == 1
    assert send.count("'commit_index': self.__raftCommitIndex,") == 3
    assert NEXT_APPEND_ENTRIES_ATTRIBUTE == "_SyncObj__newAppendEntriesTime"
    assert "from .monotonic import monotonic as monotonicTime" in SYNCOBJ_SOURCE


def test_leadership_transfer_is_the_timeout_now_that_raft_node_expects() -> None:
    """RaftNode.send_timeout_now and Node.transfer_leader rely on pysyncobj 0.3.17's
    transferLeadership: denied (synchronously, through the callback) unless the target's match
    index equals the leader's last log index; on success it only sends TimeoutNow, which a
    follower obeys only from the leader it knows, by standing for election at once."""
    assert list(inspect.signature(SyncObj.transferLeadership).parameters) == [
        "self",
        "node",
        "callback",
    ]
    source = inspect.getsource(SyncObj.transferLeadership)
    assert "if self.__raftMatchIndex.get(node, 0) != self.__getCurrentLogIndex():" in source
    assert "self.__callErrCallback(FAIL_REASON.REQUEST_DENIED, callback)" in source
    assert "callback(None, FAIL_REASON.SUCCESS)" in source
    assert "'type': 'timeout_now'" in source
    received = inspect.getsource(SyncObj._SyncObj__onMessageReceived)  # type: ignore[attr-defined]
    assert (
        "if message['term'] >= self.__raftCurrentTerm and node == self.__raftLeader:\n"
        "                self.__raftElectionDeadline = 0"
    ) in received


def _functions_assigning_commit_index() -> dict[str, list[ast.AST]]:
    tree = ast.parse(SYNCOBJ_SOURCE)
    syncobj = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SyncObj")
    found: dict[str, list[ast.AST]] = {}
    for function in syncobj.body:
        if not isinstance(function, ast.FunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == "__raftCommitIndex" for t in node.targets
            ):
                found.setdefault(function.name, []).append(node)
    return found


def test_the_commit_index_reaches_the_journal_before_entries_are_applied() -> None:
    """DurableJournal syncs in setRaftCommitIndex: every later change of the commit index must
    be followed by that call, in the same function, before anything is applied."""
    found = _functions_assigning_commit_index()
    assert set(found) == {"__init__", "_onTick", "__onMessageReceived", "__loadDumpFile"}
    lines = SYNCOBJ_SOURCE.splitlines()
    for name, assignments in found.items():
        if name == "__init__":
            continue  # read back from the journal's meta
        for assignment in assignments:
            after = "\n".join(lines[assignment.lineno : assignment.lineno + 12])  # type: ignore[attr-defined]
            assert "self.__raftLog.setRaftCommitIndex(" in after, (name, assignment.lineno)  # type: ignore[attr-defined]
    tick = inspect.getsource(SyncObj._onTick)
    assert tick.index("self.__raftLog.setRaftCommitIndex(") < tick.index(
        "self.__applyLogEntries()\n\n        if self.__raftState == _RAFT_STATE.LEADER"
    )


def test_the_journal_internals_are_where_durability_expects_them(tmp_path: Path) -> None:
    journal = FileJournal(str(tmp_path / "j"))
    try:
        storer = getattr(journal, META_STORER_ATTRIBUTE)
        assert isinstance(storer, MetaStorer)
        assert storer.getPath() == str(tmp_path / "j") + ".meta"
        assert list(inspect.signature(MetaStorer.storeMeta).parameters) == ["self", "meta"]
        assert "self.__metaStorer.storeMeta(self.__meta)" in inspect.getsource(
            FileJournal.setCurrentTerm
        )
        assert "self.__journalFile.flush()" in inspect.getsource(FileJournal.flush)
        assert "self.__mm.flush()" in inspect.getsource(ResizableFile.flush)
        # datasync: the journal's file is the mapped one, and is reopened when it grows.
        mapped = getattr(journal, JOURNAL_FILE_ATTRIBUTE)
        assert isinstance(mapped, ResizableFile)
        assert getattr(mapped, OPEN_FILE_ATTRIBUTE).name == str(tmp_path / "j")
        assert "mmap.mmap(self.__f.fileno(), 0)" in inspect.getsource(ResizableFile)
        assert "self.__f = open(self.__fileName, 'r+b')" in inspect.getsource(ResizableFile)
        assert issubclass(FileJournal, Journal)
    finally:
        journal._destroy()


def durable_conf(tmp_path: Path, address: str) -> SyncObjConf:
    """What a `DurableSyncObj` needs: no auto tick, a journal and a dump file."""
    return SyncObjConf(
        autoTick=False,
        journalFile=str(tmp_path / "journal"),
        fullDumpFile=str(tmp_path / "dump"),
        bindAddress=address,
        maxBindRetries=1,
    )


def test_a_durable_sync_obj_replaces_journal_meta_storer_and_transport(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    conf = durable_conf(tmp_path, address)
    obj = DurableSyncObj(address, [], conf)
    try:
        journal = getattr(obj, JOURNAL_ATTRIBUTE)
        assert isinstance(journal, DurableJournal)
        assert isinstance(journal._inner, FileJournal)
        assert isinstance(getattr(journal._inner, META_STORER_ATTRIBUTE), DurableMetaStorer)
        assert isinstance(obj._SyncObj__transport, DurableTransport)
        assert not journal.dirty  # the constructor's first no-op is already synced
        deadline = getattr(obj, ELECTION_DEADLINE_ATTRIBUTE)
        assert isinstance(deadline, float)
        obj.postpone_election()
        assert getattr(obj, ELECTION_DEADLINE_ATTRIBUTE) > deadline
        assert "self.__raftElectionDeadline < monotonicTime()" in SYNCOBJ_SOURCE
        for name in ("doTick", "destroy", "forceLogCompaction", "addNodeToCluster"):
            assert callable(getattr(obj, name))
        # The leader's per-peer bookkeeping that replication lag and quorum are read from.
        assert isinstance(getattr(obj, MATCH_INDEX_ATTRIBUTE), dict)
        assert isinstance(getattr(obj, LAST_RESPONSE_ATTRIBUTE), dict)
        assert "self.__raftMatchIndex[node] = currentNodeIdx" in SYNCOBJ_SOURCE
        assert "if self.__lastResponseTime[node] > deadline:" in SYNCOBJ_SOURCE
        obj.doTick(0.0)
    finally:
        obj.destroy()
    with pytest.raises(ValueError, match="autoTick"):
        DurableSyncObj(address, [], SyncObjConf(autoTick=True))


def test_the_dump_protocol_is_the_one_snapshot_py_expects(tmp_path: Path) -> None:
    """Serializer.serialize calls the serializer, then renames <dump>.tmp over the dump; our
    serializer never creates that file, pysyncobj swallows the failed rename, and the checker's
    state rules until it says SUCCESS or FAILED."""
    dump = tmp_path / "dump"
    dump.write_bytes(b"the previous dump")
    calls: list[tuple[str, Any]] = []
    state = [SERIALIZER_STATE.SERIALIZING]
    serializer = Serializer(
        str(dump),
        1024,
        True,
        lambda name, data: calls.append((name, data)),
        lambda name: None,
        lambda: state[0],
    )
    serializer.serialize((None, "last", "prev", "cluster"), 41)
    assert calls == [(str(dump) + ".tmp", ("last", "prev", "cluster"))]
    assert dump.read_bytes() == b"the previous dump"
    assert serializer.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 41)
    assert serializer.getTransmissionData("peer") is None  # no dump sent while one is written
    state[0] = SERIALIZER_STATE.SUCCESS
    assert serializer.checkSerializing() == (SERIALIZER_STATE.SUCCESS, 41)
    assert serializer.getTransmissionData("peer") is not None
    load = inspect.getsource(SyncObj._SyncObj__loadDumpFile)
    assert "self.__raftLog[0] != data[2]" in load and "self.__raftLog[1] != data[1]" in load
    assert "(None,) + self.__deserializer(self.__fileName)" in inspect.getsource(
        Serializer.deserialize
    )


def test_fail_reasons_and_serializer_states_are_the_mapped_ones() -> None:
    assert (
        FAIL_REASON.SUCCESS,
        FAIL_REASON.QUEUE_FULL,
        FAIL_REASON.MISSING_LEADER,
        FAIL_REASON.DISCARDED,
        FAIL_REASON.NOT_LEADER,
        FAIL_REASON.LEADER_CHANGED,
        FAIL_REASON.REQUEST_DENIED,
        FAIL_REASON.UNKNOWN_OUTCOME,
    ) == (0, 1, 2, 3, 4, 5, 6, 7)
    assert (
        SERIALIZER_STATE.NOT_SERIALIZING,
        SERIALIZER_STATE.SERIALIZING,
        SERIALIZER_STATE.SUCCESS,
        SERIALIZER_STATE.FAILED,
    ) == (0, 1, 2, 3)


def test_the_replica_has_exactly_one_replicated_method(tmp_path: Path) -> None:
    from raft_helpers import make_members, node_settings

    node = RaftNode(node_settings(tmp_path, make_members(1), "n1", secret=False))
    node.start()
    try:
        assert node._replica is not None
        assert set(node._replica._methodToID) == {"apply_entry_v0"}
    finally:
        node.close()


# ----------------------------------------------------------------------------------------------
# Part 2: the ordering, recorded


class Trace:
    """Events of all nodes of this process, in the order they happened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, int]] = []
        self.journal_owner: dict[int, str] = {}
        self.address_owner: dict[str, str] = {}

    def record(self, kind: str, owner: str, index: int) -> None:
        with self.lock:
            self.events.append((kind, owner, index))


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> Iterator[Trace]:
    """Wrap FileJournal (appends, msyncs), the journal's sync and TCPTransport.send (what goes
    out)."""
    recorder = Trace()
    original_init, original_add = FileJournal.__init__, FileJournal.add
    original_flush, original_send = FileJournal.flush, TCPTransport.send
    original_datasync = durability_module.datasync
    journals: list[FileJournal] = []  # keep them alive: ids must not be reused

    def owner_of(path: str) -> str:
        return os.path.dirname(os.path.abspath(path))

    def init(self: FileJournal, journal_file: str) -> None:
        original_init(self, journal_file)
        journals.append(self)
        recorder.journal_owner[id(self)] = owner_of(journal_file)

    def add(self: FileJournal, command: bytes, idx: int, term: int) -> None:
        recorder.record("append", recorder.journal_owner[id(self)], idx)
        original_add(self, command, idx, term)

    def flush(self: FileJournal) -> None:
        original_flush(self)
        recorder.record("msync", recorder.journal_owner[id(self)], 0)

    def datasync(journal: FileJournal) -> None:
        original_datasync(journal)
        recorder.record("msync", recorder.journal_owner[id(journal)], 0)

    def send(self: TCPTransport, node: Any, message: Any) -> bool:
        owner = recorder.address_owner.get(self._selfNode.address, self._selfNode.address)
        if isinstance(message, dict):
            if message.get("type") == "next_node_idx" and message.get("success"):
                recorder.record("ack", owner, message["next_node_idx"] - 1)
            if message.get("type") == "append_entries" and message.get("entries"):
                recorder.record("ship", owner, message["entries"][-1][1])
            if message.get("type") == "response_vote":
                recorder.record("vote", owner, 2**63)  # answers for the whole log
        return bool(original_send(self, node, message))

    monkeypatch.setattr(FileJournal, "__init__", init)
    monkeypatch.setattr(FileJournal, "add", add)
    monkeypatch.setattr(FileJournal, "flush", flush)
    monkeypatch.setattr(durability_module, "datasync", datasync)
    monkeypatch.setattr(TCPTransport, "send", send)
    yield recorder


def record_applies(monkeypatch: pytest.MonkeyPatch, trace: Trace) -> None:
    original = RaftNode._apply

    def apply(self: RaftNode, args: Any, kwargs: Any) -> Any:
        assert self._replica is not None
        trace.record("apply", self._files.data_dir, self._replica.raftLastApplied + 1)
        return original(self, args, kwargs)

    monkeypatch.setattr(RaftNode, "_apply", apply)


def violations(
    events: list[tuple[str, str, int]], *, early_ok: frozenset[str] = frozenset()
) -> tuple[list[str], dict[str, int]]:
    """Check DESIGN §4 on a trace. An ack of index i, a vote, a shipment of entries up to i, or
    an apply of entry i is a violation when this node appended an entry at index <= i after its
    last msync — unless its kind is in ``early_ok``, which is then counted as ``early <kind>``."""
    unsynced: dict[str, set[int]] = defaultdict(set)
    found: list[str] = []
    counts: dict[str, int] = defaultdict(int)
    for position, (kind, owner, index) in enumerate(events):
        counts[kind] += 1
        if kind == "append":
            unsynced[owner].add(index)
        elif kind == "msync":
            unsynced[owner].clear()
        else:
            early = sorted(i for i in unsynced[owner] if i <= index)
            if early and kind in early_ok:
                counts[f"early {kind}"] += 1
            elif early:
                found.append(f"#{position} {kind} {index} on {owner}: unsynced {early}")
    return found, counts


def test_acks_votes_and_applies_follow_an_msync_and_shipments_need_not(
    make_cluster: Callable[..., Cluster], trace: Trace, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_applies(monkeypatch, trace)
    cluster = make_cluster(3, snapshot_entries=15)
    for member in cluster.members:
        trace.address_owner[member.raft_address] = str(cluster.root / member.id)
    cluster.start_all()
    for i in range(40):
        assert cluster.propose_acked(campaign_batch(f"c{i}")).outcome is Outcome.OK
    cluster.wait_same_digest()
    single = make_cluster(1)
    trace.address_owner[single.members[0].raft_address] = str(single.root / "n1")
    solo = single.start("n1")
    single.leader()
    for i in range(10):
        assert propose(solo, campaign_batch(f"s{i}")).outcome is Outcome.OK
    cluster.close()
    single.close()

    found, counts = violations(list(trace.events), early_ok=frozenset({"ship"}))
    print(f"trace counts: {dict(counts)}")
    assert not found, "\n".join(found[:20])
    # Not vacuous: followers acked and voted, the leader shipped, everyone applied.
    assert counts["ack"] >= 40 and counts["ship"] >= 40 and counts["apply"] >= 3 * 40 + 10
    assert counts["vote"] >= 1
    # The leader did not wait for its own msync before shipping (it syncs while followers do).
    assert counts["early ship"] >= 40
    acked_by = {owner for kind, owner, _ in trace.events if kind == "ack"}
    assert len(acked_by) >= 2
    assert str(single.root / "n1") in {o for k, o, _ in trace.events if k == "apply"}


class _Counter(SyncObj):
    def __init__(self, address: str, partners: list[str], conf: SyncObjConf) -> None:
        self.total = 0
        super().__init__(address, partners, conf)

    @replicated
    def add(self, amount: int) -> int:
        self.total += amount
        return self.total


def test_plain_pysyncobj_fails_the_same_check(tmp_path: Path, trace: Trace) -> None:
    """The control: without budgetd's patch, acks, shipments and applies precede any msync."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = []
    for address in addresses:
        data_dir = tmp_path / address.replace(":", "_")
        data_dir.mkdir()
        trace.address_owner[address] = str(data_dir)
        conf = SyncObjConf(
            journalFile=str(data_dir / "journal"),
            fullDumpFile=str(data_dir / "dump"),
            appendEntriesUseBatch=False,
            bindAddress=address,
            raftMinTimeout=0.3,
            raftMaxTimeout=0.6,
            appendEntriesPeriod=0.05,
            connectionRetryTime=0.2,
            connectionTimeout=1.0,
            autoTickPeriod=0.005,
        )
        nodes.append(_Counter(address, [a for a in addresses if a != address], conf))
    try:
        leader = wait_for(lambda: next((n for n in nodes if n._isLeader()), None), "a leader")
        for _ in range(10):
            assert leader.add(1, sync=True, timeout=10) is not None
        wait_for(lambda: all(n.total == 10 for n in nodes), "every node applied")
    finally:
        for node in nodes:
            node.destroy_synchronous()
    found, counts = violations(list(trace.events))
    assert counts["ack"] >= 10
    kinds = {line.split()[1] for line in found}
    assert {"ack", "ship"} <= kinds, textwrap.shorten(str(found), 300)
    assert durability_module.PYSYNCOBJ_VERSION  # the module under test is importable alongside


def test_a_follower_keeps_the_entries_a_repeated_append_entries_sends_again(
    tmp_path: Path,
) -> None:
    """pysyncobj deletes everything after ``prevLogIdx`` before appending, even entries equal to
    the ones sent; the durable node trims what it holds, so only a conflict deletes (Raft §5.3)
    and a repeat never takes acknowledged entries off the disk."""
    address, leader_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    conf = durable_conf(tmp_path, address)
    # What the trimming relies on: the handler is looked up on the instance, and truncates
    # after prevLogIdx whenever it holds more.
    assert "setOnMessageReceivedCallback(self.__onMessageReceived)" in SYNCOBJ_SOURCE
    assert "self.__deleteEntriesFrom(prevLogIdx + 1)" in SYNCOBJ_SOURCE
    obj = DurableSyncObj(address, [leader_address], conf)
    sent: list[dict[str, Any]] = []
    obj._SyncObj__transport.send = lambda node, message: sent.append(message) or True
    leader = next(iter(obj._SyncObj__otherNodes))
    journal = getattr(obj, JOURNAL_ATTRIBUTE)
    deletes: list[int] = []
    delete = journal.deleteEntriesFrom
    journal.deleteEntriesFrom = lambda position: deletes.append(position) or delete(position)

    def append(term: int, prev: tuple[int, int], *entries: tuple[bytes, int, int]) -> int:
        obj._SyncObj__onMessageReceived(
            leader,
            {"type": "append_entries", "term": term, "commit_index": 1, "entries": list(entries),
             "prevLogIdx": prev[0], "prevLogTerm": prev[1]},
        )  # fmt: skip
        answer = sent.pop()
        assert answer["type"] == "next_node_idx" and answer["success"], answer
        return int(answer["next_node_idx"])

    def log() -> list[tuple[int, int]]:
        return [(entry[1], entry[2]) for entry in journal]

    try:
        a, b, c = (b"a", 2, 1), (b"b", 3, 1), (b"c", 4, 1)
        assert append(1, (1, 0), a, b, c) == 5
        # The leader re-sends from an older next index, in a smaller batch.
        assert append(1, (1, 0), a) == 5
        assert append(1, (2, 1), b) == 5
        assert append(1, (1, 0), a, b, c) == 5
        assert log() == [(1, 0), (2, 1), (3, 1), (4, 1)] and deletes == []
        assert append(1, (1, 0), a, b, c, (b"d", 5, 1)) == 6  # the new one only is appended
        assert deletes == []
        # A new leader (term 2) whose log differs from index 3: deleted from there, as Raft does.
        assert append(2, (5, 1)) == 6
        x = (b"x", 3, 2)
        assert append(2, (1, 0), a, x) == 4
        assert log() == [(1, 0), (2, 1), (3, 2)] and len(deletes) == 1
        # Held entries followed by a tail of an older term: pysyncobj's own path (nothing
        # beyond the entries sent is acknowledged).
        obj._SyncObj__onMessageReceived(leader, {"type": "append_entries", "term": 3,
                                                 "commit_index": 1, "prevLogIdx": 3,
                                                 "prevLogTerm": 2, "entries": []})  # fmt: skip
        sent.clear()
        assert append(3, (1, 0), a) == 3
    finally:
        obj.destroy()
