"""Crash windows, file formats, proposal deadlines and the stop on a broken invariant."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from pysyncobj import SyncObj
from pysyncobj.journal import FileJournal
from pysyncobj.monotonic import monotonic
from pysyncobj.transport import TCPTransport
from raft_helpers import Cluster, campaign_batch, has_campaign, propose, wait_for

from budgetd.ledger import Ledger
from budgetd.replication import EXIT_NODE_BROKEN, Outcome
from budgetd.replication.durability import (
    NEXT_APPEND_ENTRIES_ATTRIBUTE,
    DurableJournal,
    DurableSyncObj,
    DurableTransport,
    reconcile_journal,
    rewrite_journal,
)
from budgetd.replication.snapshot import (
    DumpError,
    DumpHeader,
    read_dump,
    read_header,
    write_dump,
)

HERE = Path(__file__).parent


def journal_entries(path: Path) -> list[tuple[bytes, int, int]]:
    journal = FileJournal(str(path))
    try:
        return [tuple(entry) for entry in journal[:]]
    finally:
        journal._destroy()


def entries(first: int, last: int, term: int = 1) -> list[tuple[bytes, int, int]]:
    return [(f"cmd{i}".encode(), i, term) for i in range(first, last + 1)]


class _StubSyncObj:
    """What DurableTransport asks of its SyncObj, recording the syncs."""

    ships_before_sync = DurableSyncObj.ships_before_sync

    def __init__(self, order: list[str], *, leader: bool) -> None:
        self.order = order
        self.leader = leader

    def _isLeader(self) -> bool:
        return self.leader

    def sync_journal(self) -> None:
        self.order.append("sync")


@pytest.mark.parametrize(
    ("message_type", "leader", "synced_first"),
    [
        ("next_node_idx", False, True),  # a follower's ack
        ("response_vote", False, True),  # a vote granted
        ("request_vote", False, True),  # a candidate's vote request (its log's last index)
        ("apply_command_response", True, True),
        ("append_entries", True, False),  # a leader ships, then syncs (Raft §10.2.1)
        ("append_entries", False, True),  # not from a leader: never early
    ],
)
def test_only_a_leaders_append_entries_leaves_before_the_journal_sync(
    monkeypatch: pytest.MonkeyPatch, message_type: str, leader: bool, synced_first: bool
) -> None:
    order: list[str] = []

    def send(self: TCPTransport, node: object, message: dict[str, object]) -> bool:
        order.append(f"send {message['type']}")
        return True

    monkeypatch.setattr(TCPTransport, "send", send)
    transport = DurableTransport.__new__(DurableTransport)
    transport._syncObj = _StubSyncObj(order, leader=leader)
    assert transport.send(object(), {"type": message_type, "term": 1})
    assert order == (["sync", f"send {message_type}"] if synced_first else [f"send {message_type}"])


def test_a_leader_syncs_right_after_shipping_and_defers_the_commit_notice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After `_SyncObj__sendAppendEntries` the journal is synced; after an apply, the
    append_entries pysyncobj asks for is not sent at once but due within one poll period."""
    order: list[str] = []
    monkeypatch.setattr(
        SyncObj, "_SyncObj__sendAppendEntries", lambda self: order.append("ship"), raising=True
    )
    monkeypatch.setattr(SyncObj, "_SyncObj__applyLogEntries", lambda self: True, raising=True)
    obj = DurableSyncObj.__new__(DurableSyncObj)
    monkeypatch.setattr(obj, "sync_journal", lambda: order.append("sync"), raising=False)
    monkeypatch.setattr(obj, "_isLeader", lambda: True, raising=False)
    obj._commit_notice_delay_s = 0.005
    obj._SyncObj__sendAppendEntries()  # type: ignore[attr-defined]
    assert order == ["ship", "sync"]
    far = monotonic() + 100.0
    setattr(obj, NEXT_APPEND_ENTRIES_ATTRIBUTE, far)
    before = monotonic()
    assert obj._SyncObj__applyLogEntries() is False  # type: ignore[attr-defined]
    due = getattr(obj, NEXT_APPEND_ENTRIES_ATTRIBUTE)
    assert before < due <= monotonic() + 0.005
    soon = monotonic() - 1.0  # a heartbeat already due stays due
    setattr(obj, NEXT_APPEND_ENTRIES_ATTRIBUTE, soon)
    assert obj._SyncObj__applyLogEntries() is False  # type: ignore[attr-defined]
    assert getattr(obj, NEXT_APPEND_ENTRIES_ATTRIBUTE) == soon


def test_compaction_replaces_the_journal_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    rewrite_journal(str(path), entries(1, 10))
    inner = FileJournal(str(path))
    journal = DurableJournal(inner, str(path))
    journal.setCurrentTerm(3, "127.0.0.1:1")
    journal.setRaftCommitIndex(9)
    inode = os.stat(path).st_ino
    journal.deleteEntriesTo(4)  # what log compaction calls
    assert [e[1] for e in journal[:]] == list(range(5, 11))
    assert not journal.dirty
    assert os.stat(path).st_ino != inode  # a new file, renamed into place: never half-written
    assert journal.getRaftCommitIndex() == 9 and journal.getCurrentTerm() == 3
    journal._destroy()
    assert journal_entries(path) == entries(5, 10)
    assert not (tmp_path / "raft.journal.rewrite").exists()
    reopened = FileJournal(str(path))
    assert reopened.getRaftCommitIndex() == 9 and reopened.getVotedForNodeId() == "127.0.0.1:1"
    reopened._destroy()


def test_reconcile_keeps_the_entries_after_a_dump(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    rewrite_journal(str(path), entries(1, 10))
    dump = entries(6, 7)
    assert reconcile_journal(str(path), prev=dump[0], last=dump[1])
    assert journal_entries(path) == entries(6, 10)
    assert not reconcile_journal(str(path), prev=dump[0], last=dump[1])  # already aligned
    # A dump whose last entry the journal holds with another term: pysyncobj's rule applies.
    other = entries(8, 9, term=2)
    assert not reconcile_journal(str(path), prev=other[0], last=other[1])
    # A dump beyond the journal's end (a snapshot install): nothing to keep.
    beyond = entries(20, 21)
    assert not reconcile_journal(str(path), prev=beyond[0], last=beyond[1])
    assert journal_entries(path) == entries(6, 10)


def test_a_dump_round_trips_and_foreign_bytes_are_refused(tmp_path: Path) -> None:
    ledger = Ledger()
    ledger.apply_batch(1, [{"op": "pulse"}])
    header = DumpHeader(last=(b"b", 8, 2), prev=(b"a", 7, 2), cluster=("h:1", "h:2"))
    from budgetd.codec import decode_snapshot, encode_snapshot

    size = write_dump(str(tmp_path / "d"), header, encode_snapshot(ledger))
    assert size == os.path.getsize(tmp_path / "d")
    assert read_header(str(tmp_path / "d")) == header
    read_back, data = read_dump(str(tmp_path / "d"), fsync=True)
    assert read_back == header
    assert decode_snapshot(data).digest() == ledger.digest()
    (tmp_path / "x").write_bytes(b"\x93\x01\x02\x03")
    with pytest.raises(DumpError):
        read_header(str(tmp_path / "x"))
    with pytest.raises(DumpError):
        read_dump(str(tmp_path / "x"))


def test_a_crash_between_dump_and_compaction_loses_no_entry(
    make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pysyncobj clears a journal that does not start at the dump; reconcile_journal cuts it
    instead, keeping the entries after the dump."""
    cluster = make_cluster(1)
    node = cluster.start("n1")
    cluster.leader()
    for i in range(5):
        assert propose(node, campaign_batch(f"early{i}")).outcome is Outcome.OK
    # The dump is written and renamed into place, then the node "crashes" before compacting.
    with monkeypatch.context() as patch:
        patch.setattr(DurableJournal, "deleteEntriesTo", lambda self, entry_to: None)
        node.request_snapshot()
        wait_for(lambda: node.status()["snapshot"]["written"] == 1, "the dump")
        for i in range(5):
            assert propose(node, campaign_batch(f"late{i}")).outcome is Outcome.OK
        digest, index = node.digest(), node.applied_index()
        dump_index = node.status()["snapshot"]["index"]
        cluster.stop("n1")
    journal = cluster.root / "n1" / "raft.journal"
    assert journal_entries(journal)[0][1] == 1 < dump_index  # not compacted

    node = cluster.start("n1")
    cluster.leader()
    wait_for(lambda: node.applied_index() >= index, "the journal replayed after the dump")
    assert node.digest() == digest
    assert all(has_campaign(node, f"late{i}") for i in range(5))
    assert journal_entries(journal)[0][1] == dump_index - 1


def test_a_proposal_nobody_answers_ends_unknown_once_and_close_ends_the_rest(
    make_cluster: Callable[..., Cluster],
) -> None:
    # A leader that lost its followers keeps believing it leads (for leader_fallback_ms).
    cluster = make_cluster(3, leader_fallback_ms=120_000)
    cluster.start_all()
    leader = cluster.leader()
    leader_id = leader.status()["node_id"]
    assert propose(leader, campaign_batch("a")).outcome is Outcome.OK
    for node_id in [n for n in cluster.nodes if n != leader_id]:
        cluster.stop(node_id)
    assert leader.is_leader()

    calls: list[tuple[Outcome, str]] = []
    leader.propose(campaign_batch("lost"), lambda o, r, why: calls.append((o, why)), timeout_s=0.2)
    wait_for(lambda: calls, "the deadline")
    assert calls == [(Outcome.UNKNOWN, "timeout")]

    closing: list[tuple[Outcome, str]] = []
    leader.propose(campaign_batch("pending"), lambda o, r, why: closing.append((o, why)))
    cluster.stop(leader_id)
    assert closing == [(Outcome.UNKNOWN, "closed")]
    after: list[tuple[Outcome, str]] = []
    leader.propose(campaign_batch("late"), lambda o, r, why: after.append((o, why)))
    assert after == [(Outcome.FAILED, "closed")]
    assert calls == [(Outcome.UNKNOWN, "timeout")]  # exactly once


@pytest.mark.parametrize(
    ("broken_part", "error"),
    [
        ("Ledger.apply_unrendered", "InvariantBroken('spent + held > cap')"),
        ("Ledger.apply_unrendered", "RuntimeError('a bug in the ledger')"),
        ("budgetd.replication.node.render_results", "RuntimeError('a bug in rendering')"),
    ],
)
def test_an_error_in_the_apply_path_stops_the_node(
    tmp_path: Path, broken_part: str, error: str
) -> None:
    script = textwrap.dedent(
        f"""
        import sys, threading
        sys.path.insert(0, {str(HERE)!r})
        from pathlib import Path
        from raft_helpers import campaign_batch, make_members, node_settings, wait_for
        import budgetd.replication.node
        from budgetd.ledger import InvariantBroken, Ledger
        from budgetd.replication import RaftNode

        def broken(*args):
            raise {error}

        {broken_part} = broken
        node = RaftNode(node_settings(Path({str(tmp_path)!r}), make_members(1), "n1", secret=False))
        node.start()
        wait_for(node.is_leader, "leadership")
        node.propose(campaign_batch("x"), lambda *args: print("callback ran", args))
        threading.Event().wait(60)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "BUDGETD_CLUSTER_SECRET"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == EXIT_NODE_BROKEN, done.stderr[-2000:]
    assert "stopping the node" in done.stderr
    assert "callback ran" not in done.stdout


class _Node:
    def __init__(self, address: str) -> None:
        self.id = address


def _raft_data() -> tuple[object, object, set[_Node]]:
    return (b"last", 8, 2), (b"prev", 7, 2), {_Node("h:2"), _Node("h:1")}


def test_the_dump_writer_renames_only_a_complete_fsynced_dump(tmp_path: Path) -> None:
    from pysyncobj import SERIALIZER_STATE

    from budgetd.replication.snapshot import SnapshotWriter

    ledger = Ledger()
    ledger.apply_batch(5, [{"op": "pulse"}])
    dump = tmp_path / "raft.dump"
    writer = SnapshotWriter(str(dump), lambda: ledger)
    assert writer.check() == SERIALIZER_STATE.NOT_SERIALIZING
    writer.serialize(str(dump) + ".tmp", _raft_data())
    assert not (tmp_path / "raft.dump.tmp").exists()  # pysyncobj's rename must find nothing
    state = wait_for(
        lambda: (s := writer.check()) != SERIALIZER_STATE.SERIALIZING and s, "the dump writer"
    )
    assert state == SERIALIZER_STATE.SUCCESS
    assert writer.check() == SERIALIZER_STATE.NOT_SERIALIZING
    header, data = read_dump(str(dump))
    assert (header.index, header.term, header.cluster) == (8, 2, ("h:1", "h:2"))
    from budgetd.codec import decode_snapshot

    assert decode_snapshot(data).digest() == ledger.digest()
    assert writer.info()["index"] == 8 and writer.info()["written"] == 1
    assert os.listdir(tmp_path) == ["raft.dump"]


def test_a_cancelled_dump_never_replaces_the_current_one(tmp_path: Path) -> None:
    from pysyncobj import SERIALIZER_STATE

    from budgetd.replication.snapshot import SnapshotWriter

    dump = tmp_path / "raft.dump"
    dump.write_bytes(b"the dump a leader just installed")
    writer = SnapshotWriter(str(dump), Ledger)
    writer.serialize(str(dump) + ".tmp", _raft_data())
    writer.cancel()  # whether the child had finished or not
    assert writer.check() == SERIALIZER_STATE.FAILED  # once, so that pysyncobj resets
    assert writer.check() == SERIALIZER_STATE.NOT_SERIALIZING
    assert dump.read_bytes() == b"the dump a leader just installed"
    assert os.listdir(tmp_path) == ["raft.dump"]


def test_a_dump_writer_dies_with_its_node(tmp_path: Path) -> None:
    """A ``kill -9`` of a node while its child writes a dump must not leave the child writing
    into the data dir (under a restarted node, or a directory being deleted)."""
    script = textwrap.dedent(
        f"""
        import os, sys, threading, time
        from budgetd.ledger import Ledger
        from budgetd.replication import snapshot

        def slow(ledger):
            time.sleep(60)
            return b""

        snapshot.encode_snapshot = slow
        writer = snapshot.SnapshotWriter({str(tmp_path / "raft.dump")!r}, Ledger)
        class Node:
            id = "h:1"
        writer.serialize("unused.tmp", ((b"l", 2, 1), (b"p", 1, 1), {{Node()}}))
        print(writer._job.pid, flush=True)
        threading.Event().wait(60)
        """
    )
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        writer_pid = int(node.stdout.readline())
    finally:
        node.kill()
        node.wait(10)

    def writer_gone() -> bool:
        try:
            with open(f"/proc/{writer_pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(writer_gone, "the orphaned dump writer to die")
