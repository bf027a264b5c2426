"""A node's full dump (snapshot): its msgpack format, and writing it without stopping Raft.

Owns the dump file. Imports budgetd.codec, the ledger's type, msgpack and pysyncobj's serializer
states; never the API or the CLI.

Format (msgpack, never pickle)::

    ["budgetd.raft-dump", 1, last, prev, [raft address, ...], <budgetd.codec snapshot bytes>]

``last`` and ``prev`` are pysyncobj's two log entries at the dump point, each ``[command bytes,
index, term]``; the addresses are the cluster's members when the dump was taken (pysyncobj takes
them as the membership after a restart). The ledger's bytes come last, so the header can be read
without the state.

Why a forked child (research/pysyncobj.md §2.4): with a custom serializer pysyncobj calls it
synchronously on the tick thread, and a ledger of 100,000 reservations takes about 0.25 s to
encode (1,000,000: 9 s, scripts/bench_ledger.py) — long enough to stop heartbeats and start
elections. A ledger is a graph of mutable Python objects, so a consistent copy needs either a
stop of the world or copy-on-write: `SnapshotWriter.serialize` forks (the fork itself is the only
pause of the tick thread), the child encodes the ledger as it was at the fork, writes and
fsyncs a temporary file and exits; `SnapshotWriter.check` (pysyncobj's ``serializeChecker``,
polled every tick) reaps it and, on the tick thread, renames the file into place and fsyncs the
directory before reporting success — after which pysyncobj compacts its journal. Memory: the
child's reads touch the objects' reference counts, so up to the ledger's size is copied while a
dump is written.

Measured (2 vCPUs, one node, 1,000 campaigns): 100,000 open reservations — an 11 MB dump, the
fork pauses the tick thread 3 ms, the child takes 0.2-0.3 s; 500,000 — 56 MB, 22 ms, 1.75 s.
Proposals kept committing in 6-30 ms meanwhile (one-tick latency is 5 ms), with single slower
ones (up to 80 ms) right after the fork (copy-on-write faults) and at the rename. Loading a dump
(start, or a snapshot install) decodes on the tick thread: a one-node restart with 500,000
reservations took 5.7 s until it led again (dump load plus journal replay).

The protocol with pysyncobj's `Serializer` (0.3.17) this relies on: ``serialize`` calls the
serializer with ``<dump>.tmp`` and then renames ``<dump>.tmp`` over the dump; the serializer
never creates that file, so the rename fails, and pysyncobj swallows the error and waits for the
checker (pinned by tests/replication/test_pysyncobj_internals.py). A dump sent by the leader
(snapshot install) is renamed into place by pysyncobj and then read by the deserializer, which
fsyncs it first; a dump of our own still being written is cancelled then, so it cannot overwrite
the newer one.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack
from pysyncobj import SERIALIZER_STATE

from budgetd.codec import encode_snapshot
from budgetd.ledger import Ledger
from budgetd.replication.durability import fsync_dir

__all__ = ["DUMP_TAG", "DUMP_VERSION", "DumpError", "DumpHeader", "SnapshotWriter", "read_dump"]

DUMP_TAG: Final = "budgetd.raft-dump"
DUMP_VERSION: Final = 1
_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>

log = logging.getLogger(__name__)

Entry = tuple[bytes, int, int]


class DumpError(ValueError):
    """A file that is not a budgetd dump of a version this build reads."""


@dataclass(frozen=True, slots=True)
class DumpHeader:
    last: Entry
    prev: Entry
    cluster: tuple[str, ...]

    @property
    def index(self) -> int:
        return self.last[1]

    @property
    def term(self) -> int:
        return self.last[2]


def _entry(value: Any) -> Entry:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or type(value[0]) is not bytes
        or type(value[1]) is not int
        or type(value[2]) is not int
    ):
        raise DumpError(f"not a log entry: {value!r:.80}")
    return (value[0], value[1], value[2])


def _header(items: list[Any]) -> DumpHeader:
    if len(items) < 5 or items[0] != DUMP_TAG:
        raise DumpError("not a budgetd dump")
    if items[1] != DUMP_VERSION:
        raise DumpError(f"dump version {items[1]!r} is not {DUMP_VERSION}")
    cluster = items[4]
    if not isinstance(cluster, list | tuple) or not all(type(a) is str for a in cluster):
        raise DumpError("dump cluster is not a list of addresses")
    return DumpHeader(last=_entry(items[2]), prev=_entry(items[3]), cluster=tuple(cluster))


def read_header(path: str) -> DumpHeader:
    """The header of the dump at ``path``, without reading the ledger's bytes."""
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        unpacker = msgpack.Unpacker(file, raw=False, max_buffer_size=max(size, 1024))
        try:
            length = unpacker.read_array_header()
            if length != 6:
                raise DumpError("not a budgetd dump")
            return _header([unpacker.unpack() for _ in range(5)])
        except (ValueError, msgpack.UnpackException, msgpack.OutOfData) as error:
            raise DumpError(f"{path}: {error}") from error


def read_dump(path: str, *, fsync: bool = False) -> tuple[DumpHeader, bytes]:
    """The header and the ledger snapshot bytes of the dump at ``path``. With ``fsync``, the file
    and its directory are fsynced first (a dump just received from the leader)."""
    with open(path, "rb") as file:
        if fsync:
            os.fsync(file.fileno())
        data = file.read()
    if fsync:
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    try:
        items = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as error:
        raise DumpError(f"{path}: not msgpack: {error}") from error
    if type(items) is not list or len(items) != 6 or type(items[5]) is not bytes:
        raise DumpError(f"{path}: not a budgetd dump")
    return _header(items), items[5]


def _bin_header(length: int) -> bytes:
    """msgpack's bin 32 header (msgpack.Packer has none): the ledger's bytes follow it as they
    are, without a copy into one packed buffer."""
    return b"\xc6" + struct.pack(">I", length)


def write_dump(path: str, header: DumpHeader, ledger_snapshot: bytes) -> int:
    """Write a dump to ``path`` and fsync it (no rename); the number of bytes written."""
    packer = msgpack.Packer(use_bin_type=True)
    with open(path, "wb") as file:
        file.write(packer.pack_array_header(6))
        file.write(packer.pack(DUMP_TAG))
        file.write(packer.pack(DUMP_VERSION))
        file.write(packer.pack(list(header.last)))
        file.write(packer.pack(list(header.prev)))
        file.write(packer.pack(list(header.cluster)))
        file.write(_bin_header(len(ledger_snapshot)))
        file.write(ledger_snapshot)
        file.flush()
        os.fsync(file.fileno())
        return file.tell()


def _die_with(parent_pid: int) -> None:
    """SIGKILL this process when the thread that forked it dies (Linux PR_SET_PDEATHSIG), and
    exit now if that already happened: a writer left behind by a ``kill -9`` of its node would
    otherwise go on writing into the data dir under a restarted node, or one being deleted."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _child(tmp: str, header: DumpHeader, ledger: Ledger, parent_pid: int) -> None:
    """Body of the forked writer. Never returns."""
    code = 1
    try:
        _die_with(parent_pid)
        # Nothing inherited is needed, and an inherited listening socket would keep the Raft
        # port bound if the parent died while this child still runs.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        write_dump(tmp, header, encode_snapshot(ledger))
        code = 0
    except BaseException:  # the exit code reports it; no logging after a fork
        code = 1
    finally:
        os._exit(code)


@dataclass(slots=True)
class _Job:
    pid: int
    tmp: str
    header: DumpHeader
    started: float
    fork_s: float


class SnapshotWriter:
    """pysyncobj's ``serializer`` + ``serializeChecker`` for one node's dump file.

    All methods run on the tick thread, except `info`, which any thread may call.
    """

    def __init__(
        self,
        dump_path: str,
        ledger_now: Callable[[], Ledger],
        *,
        on_written: Callable[..., None] | None = None,
    ) -> None:
        """``on_written(snapshot_index=, size_bytes=, duration_s=, fork_ms=)`` hears of each dump
        moved into place (on the tick thread); without it the writer logs a line itself."""
        self._path = dump_path
        self._on_written = on_written
        self._ledger_now = ledger_now
        self._job: _Job | None = None
        self._report: int | None = None
        self._sequence = 0
        self._info: dict[str, Any] = {
            "index": None,
            "term": None,
            "bytes": None,
            "written": 0,
            "failed": 0,
            "installed": 0,
            "writing": False,
            "last_fork_ms": None,
            "last_duration_ms": None,
            "last_at_unix_ms": None,
        }

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def _update(self, **changes: Any) -> None:
        self._info = {**self._info, **changes}

    def stale_paths(self) -> list[str]:
        """Leftovers of an interrupted dump (safe to delete before the node starts)."""
        directory = os.path.dirname(self._path) or "."
        base = os.path.basename(self._path)
        return [
            os.path.join(directory, name)
            for name in os.listdir(directory)
            if name.startswith(base + ".writing-") or name in (base + ".tmp", base + ".1.tmp")
        ]

    def note_loaded(self, header: DumpHeader, *, size_bytes: int, installed: bool) -> None:
        self._update(
            index=header.index,
            term=header.term,
            bytes=size_bytes,
            installed=self._info["installed"] + (1 if installed else 0),
        )

    def serialize(self, pysyncobj_tmp: str, raft_data: Any) -> None:
        """Start writing a dump at the entries in ``raft_data`` = (last, prev, cluster nodes)."""
        # pysyncobj renames this path over the dump as soon as we return: it must not exist.
        if os.path.exists(pysyncobj_tmp):
            os.unlink(pysyncobj_tmp)
        if self._job is not None:
            return
        try:
            last, prev, nodes = raft_data
            header = DumpHeader(
                last=_entry(last), prev=_entry(prev), cluster=tuple(sorted(n.id for n in nodes))
            )
            self._sequence += 1
            tmp = f"{self._path}.writing-{os.getpid()}-{self._sequence}"
            ledger = self._ledger_now()
            started = time.monotonic()
            parent_pid = os.getpid()
            pid = os.fork()
        except Exception:
            log.exception("could not start writing a dump")
            self._report = SERIALIZER_STATE.FAILED
            return
        if pid == 0:
            _child(tmp, header, ledger, parent_pid)
        fork_s = time.monotonic() - started
        self._job = _Job(pid=pid, tmp=tmp, header=header, started=started, fork_s=fork_s)
        self._update(writing=True, last_fork_ms=round(fork_s * 1000, 3))

    def check(self) -> int:
        """pysyncobj's serializeChecker: SERIALIZING while the child runs; SUCCESS once, after
        the dump is renamed into place and its directory fsynced; FAILED once on failure."""
        job = self._job
        if job is None:
            report, self._report = self._report, None
            return SERIALIZER_STATE.NOT_SERIALIZING if report is None else report
        try:
            pid, status = os.waitpid(job.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = job.pid, -1
        if pid == 0:
            return int(SERIALIZER_STATE.SERIALIZING)
        self._job = None
        exit_code = os.waitstatus_to_exitcode(status) if status != -1 else -1
        if exit_code == 0:
            try:
                os.replace(job.tmp, self._path)
                fsync_dir(os.path.dirname(os.path.abspath(self._path)))
                size = os.path.getsize(self._path)
            except OSError:
                log.exception("could not move the new dump into place")
            else:
                duration_s = time.monotonic() - job.started
                self._update(
                    index=job.header.index,
                    term=job.header.term,
                    bytes=size,
                    written=self._info["written"] + 1,
                    writing=False,
                    last_duration_ms=round(duration_s * 1000, 3),
                    last_at_unix_ms=int(time.time() * 1000),
                )
                if self._on_written is not None:
                    self._on_written(
                        snapshot_index=job.header.index,
                        size_bytes=size,
                        duration_s=round(duration_s, 6),
                        fork_ms=round(job.fork_s * 1000, 3),
                    )
                else:
                    log.info(
                        "dump at index %d written: %d bytes in %.3f s (fork %.1f ms)",
                        job.header.index,
                        size,
                        duration_s,
                        job.fork_s * 1000,
                    )
                return int(SERIALIZER_STATE.SUCCESS)
        else:
            log.error("the dump writer exited with %s", exit_code)
        self._discard(job.tmp)
        self._update(writing=False, failed=self._info["failed"] + 1)
        return int(SERIALIZER_STATE.FAILED)

    def cancel(self) -> None:
        """Stop a dump being written (a newer one was installed, or the node is closing)."""
        job = self._job
        if job is None:
            return
        self._job = None
        try:
            os.kill(job.pid, signal.SIGKILL)
            os.waitpid(job.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self._discard(job.tmp)
        self._report = SERIALIZER_STATE.FAILED  # pysyncobj waits for one SUCCESS or FAILED
        self._update(writing=False)

    @staticmethod
    def _discard(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
