#!/usr/bin/env python3
"""The floor under one idle durable write on this machine, and what each layer of budgetd's stack
adds to it, measured in one run.

    .venv/bin/python scripts/bench_floor.py                 # 3 repeats of 1,500 requests a variant
    .venv/bin/python scripts/bench_floor.py --requests 3000 --repeats 5 --json out.json

Every variant is a 3-process "cluster" on loopback answering one client that sends one request at
a time, each request durable on the leader and on one follower before its answer (the same rule
budgetd follows, DESIGN §4): the leader sends the entry to both followers, appends it to its own
mmap'd journal and msyncs it while they append and msync theirs, and answers once its own sync
and the first follower's acknowledgement are in. The variants add, one by one, what budgetd's
stack does on that path:

- ``floor``: raw HTTP/1.1 over asyncio streams (uvloop), frames of raw bytes, one thread;
- ``+frames``: each node-to-node message pickled, zlib-compressed and Fernet-encrypted, as
  pysyncobj's transport does with a cluster secret;
- ``+thread``: the leader's replication on a second thread (budgetd's Raft tick thread), one
  hand-off to it and one back to the event loop per request;
- ``+aiohttp``: the leader's HTTP served by aiohttp instead of raw streams;
- ``stack``: all three together: the cost of the libraries before any of budgetd's own work;
- ``pysyncobj``: pysyncobj's Raft itself (budgetd's `DurableSyncObj`: msync before acks and
  commits, a tick thread, the cluster secret, budgetd's Raft timers) replicating each request's
  body as one entry, behind a bare aiohttp handler: no ledger, no proposer, no API layer;
- ``budgetd``: a real durable 3-node budgetd cluster (`budgetd.localcluster`), one reserve per
  request, with the same client.

Also printed: the median msync of a 300-byte append (the disk's part) and the median loopback
round trip between two asyncio processes (the network's part). Medians of the repeats' medians;
the variants alternate within each repeat, so the machine's other load hits them alike. Refuses to
run when the 1-minute load average is above --load-max (0.5) unless --force.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import multiprocessing as mp
import os
import pickle
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENTRY_BYTES = 300
JOURNAL_BYTES = 64 << 20
VARIANTS = ("floor", "+frames", "+thread", "+aiohttp", "stack", "pysyncobj", "budgetd")
_FRAME = struct.Struct("<I")
_SECRET = b"bench-floor-cluster-secret-0123456789"


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Journal:
    """An append-only mmap'd file synced with msync, like pysyncobj's journal under budgetd."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, JOURNAL_BYTES)
        self._map = mmap.mmap(self._fd, JOURNAL_BYTES)
        self._offset = 4096

    def append_and_sync(self, data: bytes) -> None:
        end = self._offset + _FRAME.size + len(data)
        if end > JOURNAL_BYTES:
            self._offset, end = 4096, 4096 + _FRAME.size + len(data)
        self._map[self._offset : end] = _FRAME.pack(len(data)) + data
        self._map[0:8] = struct.pack("<Q", end)  # the header page, as pysyncobj's journal has
        self._offset = end
        self._map.flush()


class Frames:
    """Node-to-node framing: raw bytes, or pysyncobj's pickle + zlib + Fernet."""

    def __init__(self, secured: bool) -> None:
        self._secured = secured
        if secured:
            from pysyncobj.encryptor import getEncryptor

            self._fernet = getEncryptor(_SECRET.decode())

    def encode(self, message: dict[str, Any]) -> bytes:
        """A frame for ``message`` (raw: its entry's bytes, or one byte for an answer)."""
        if self._secured:
            data = self._fernet.encrypt_at_time(
                zlib.compress(pickle.dumps(message), 3), int(time.monotonic())
            )
        else:
            entries = message.get("entries")
            data = entries[0][0] if entries else b"\x01"
        return _FRAME.pack(len(data)) + data

    def decode(self, data: bytes) -> bytes:
        """The entry a frame carries (empty for an answer)."""
        if self._secured:
            message = pickle.loads(zlib.decompress(self._fernet.decrypt(data)))
            entries = message.get("entries")
            return bytes(entries[0][0]) if entries else b""
        return data if len(data) > 1 else b""


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    return await reader.readexactly(size)


def _append_message(entry: bytes, index: int) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": 3,
        "commit_index": index - 1,
        "entries": [(entry, index, 3)],
        "prevLogIdx": index - 1,
        "prevLogTerm": 3,
    }


# ------------------------------------------------------------------------------------------------
# Follower and leader processes


def _serve_frames(port: int, ready: Any, answer: Callable[[bytes], bytes]) -> None:
    """Serve ``port`` until terminated: each frame read is answered with ``answer(frame)``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with_socket_options(writer)
        try:
            while True:
                writer.write(answer(await _read_frame(reader)))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    _event_loop().run_until_complete(main())


def _stop(processes: list[Any]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()


def _follower(port: int, data_dir: str, secured: bool, ready: Any) -> None:
    journal = Journal(Path(data_dir) / "journal")
    frames = Frames(secured)
    ack = {"type": "next_node_idx", "next_node_idx": 1}

    def answer(frame: bytes) -> bytes:
        journal.append_and_sync(frames.decode(frame))
        return frames.encode(ack)

    _serve_frames(port, ready, answer)


def with_socket_options(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Replicator:
    """The leader's replication: send to both followers, sync its own journal, wait for the
    first acknowledgement. Runs on the event loop, or on a thread of its own (``threaded``)."""

    def __init__(self, ports: list[int], data_dir: str, secured: bool, threaded: bool) -> None:
        self._ports = ports
        self._journal = Journal(Path(data_dir) / "journal")
        self._frames = Frames(secured)
        self._threaded = threaded
        self._index = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connect(self) -> None:
        for port in self._ports:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            with_socket_options(writer)
            self._links.append((reader, writer))

    def start(self) -> None:
        if not self._threaded:
            self._loop = asyncio.get_running_loop()
            return
        started = threading.Event()

        def run() -> None:
            loop = _event_loop()
            self._loop = loop
            loop.run_until_complete(self._connect())
            started.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        started.wait()

    async def connect(self) -> None:
        if not self._threaded:
            await self._connect()

    async def _replicate(self, entry: bytes) -> None:
        self._index += 1
        data = self._frames.encode(_append_message(entry, self._index))
        for _reader, writer in self._links:
            writer.write(data)
        self._journal.append_and_sync(entry)
        acks = [asyncio.ensure_future(_read_frame(reader)) for reader, _writer in self._links]
        done, pending = await asyncio.wait(acks, return_when=asyncio.FIRST_COMPLETED)
        self._frames.decode(next(iter(done)).result())
        await asyncio.gather(*pending)  # one request at a time: drain the slower answer too

    async def replicate(self, entry: bytes) -> None:
        if not self._threaded:
            await self._replicate(entry)
            return
        assert self._loop is not None
        answer = asyncio.get_running_loop().create_future()
        here = asyncio.get_running_loop()

        def done(task: asyncio.Future[None]) -> None:
            here.call_soon_threadsafe(answer.set_result, None)

        def submit() -> None:
            asyncio.ensure_future(self._replicate(entry)).add_done_callback(done)

        self._loop.call_soon_threadsafe(submit)
        await answer


async def _serve_aiohttp(handle: Callable[..., Any], http_port: int, ready: Any) -> None:
    """POST /v1/reservations served by aiohttp with ``handle``, until the process ends."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/v1/reservations", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    ready.set()
    await asyncio.Event().wait()


_RESPONSE = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
)


def _leader(http_port: int, ports: list[int], data_dir: str, variant: str, ready: Any) -> None:
    secured = variant in ("+frames", "stack")
    threaded = variant in ("+thread", "stack")
    served_by_aiohttp = variant in ("+aiohttp", "stack")
    loop = _event_loop()
    asyncio.set_event_loop(loop)
    replicator = _Replicator(ports, data_dir, secured, threaded)
    granted = 0

    async def reserve(body: bytes) -> bytes:
        nonlocal granted
        request = json.loads(body)
        await replicator.replicate(body)
        granted += int(request["amount_micros"])
        return json.dumps({"code": "ok", "granted_micros": request["amount_micros"]}).encode()

    async def serve_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with_socket_options(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                answer = await reserve(await reader.readexactly(length))
                writer.write(_RESPONSE % (len(answer), answer))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        replicator.start()
        await replicator.connect()
        if served_by_aiohttp:
            from aiohttp import web

            async def handle(request: web.Request) -> web.Response:
                answer = await reserve(await request.read())
                return web.Response(status=201, body=answer, content_type="application/json")

            await _serve_aiohttp(handle, http_port, ready)
        else:
            server = await asyncio.start_server(serve_raw, "127.0.0.1", http_port)
            ready.set()
            async with server:
                await server.serve_forever()

    loop.run_until_complete(main())


# ------------------------------------------------------------------------------------------------
# The client and the measurements


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def drive(
    http_port: int, requests: int, headers: Callable[[int], bytes], body: bytes
) -> list[float]:
    """One request at a time over one keep-alive connection, each sent in one write; returns
    the latencies in seconds (the first tenth, the warm-up, dropped)."""
    sock = socket.create_connection(("127.0.0.1", http_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latencies = []
    buffer = b""
    try:
        for index in range(requests):
            request = headers(index) + b"Content-Length: %d\r\n\r\n" % len(body) + body
            started = time.perf_counter()
            sock.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(65536)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201")):
                raise RuntimeError(f"request refused: {head[:200]!r}")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(buffer) < length:
                buffer += sock.recv(65536)
            buffer = buffer[length:]
            latencies.append(time.perf_counter() - started)
    finally:
        sock.close()
    return latencies[requests // 10 :]


_BODY = json.dumps(
    {"campaign_id": "floor", "amount_micros": 1000, "ttl_ms": 60000, "bidder_id": "b1"}
).encode()


def _plain_headers(_index: int) -> bytes:
    return (
        b"POST /v1/reservations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    )


def run_variant(variant: str, requests: int, root: Path) -> list[float]:
    ctx = mp.get_context("spawn")
    http_port, *ports = _free_ports(3)
    processes = []
    try:
        for index, port in enumerate(ports):
            ready = ctx.Event()
            folder = root / f"{variant}-f{index}"
            folder.mkdir(parents=True, exist_ok=True)
            process = ctx.Process(
                target=_follower, args=(port, str(folder), variant in ("+frames", "stack"), ready)
            )
            process.start()
            processes.append(process)
            if not ready.wait(30):
                raise RuntimeError("a follower did not start")
        ready = ctx.Event()
        folder = root / f"{variant}-leader"
        folder.mkdir(parents=True, exist_ok=True)
        leader = ctx.Process(target=_leader, args=(http_port, ports, str(folder), variant, ready))
        leader.start()
        processes.append(leader)
        if not ready.wait(30):
            raise RuntimeError("the leader did not start")

        return drive(http_port, requests, _plain_headers, _BODY)
    finally:
        _stop(processes)


def _raft_node(
    index: int, raft_ports: list[int], http_port: int, data_dir: str, ready: Any
) -> None:
    """One member of the ``pysyncobj`` variant: a DurableSyncObj whose replicated method
    counts entries, ticked on its own thread; POST answers 201 once its entry is applied here
    (503 when this node is not the leader)."""
    from aiohttp import web
    from pysyncobj import SyncObjConf, replicated

    from budgetd.replication.durability import DurableSyncObj

    class Counter(DurableSyncObj):  # type: ignore[misc]
        def __init__(self, me: str, peers: list[str], conf: Any) -> None:
            super().__init__(me, peers, conf)
            self.applied = 0

        @replicated  # type: ignore[misc]
        def add(self, entry: bytes) -> int:
            self.applied += 1
            return len(entry)

    addresses = [f"127.0.0.1:{port}" for port in raft_ports]
    me = addresses[index]
    conf = SyncObjConf(
        password=_SECRET.decode(),
        bindAddress=me,
        autoTick=False,
        autoTickPeriod=0.005,
        maxBindRetries=1,
        appendEntriesUseBatch=False,
        raftMinTimeout=0.4,
        raftMaxTimeout=1.4,
        appendEntriesPeriod=0.05,
        leaderFallbackTimeout=2.0,
        connectionTimeout=1.5,
        connectionRetryTime=0.5,
        journalFile=str(Path(data_dir) / "raft.journal"),
        fullDumpFile=str(Path(data_dir) / "raft.dump"),
        commandsWaitLeader=False,
    )
    node = Counter(me, [a for a in addresses if a != me], conf)

    def tick() -> None:
        while True:
            node.doTick(0.005)

    threading.Thread(target=tick, daemon=True).start()
    loop = _event_loop()
    asyncio.set_event_loop(loop)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if not node._isLeader():
            return web.Response(status=503, text="not the leader")
        answer: asyncio.Future[int] = loop.create_future()

        def done(result: Any, error: Any) -> None:
            loop.call_soon_threadsafe(answer.set_result, result)

        node.add(body, callback=done)
        size = await answer
        return web.Response(
            status=201, body=b'{"code":"ok","bytes":%d}' % size, content_type="application/json"
        )

    loop.run_until_complete(_serve_aiohttp(handle, http_port, ready))


def run_pysyncobj(requests: int, root: Path) -> list[float]:
    """The ``pysyncobj`` variant: three members, the client on the leader's HTTP port."""
    ctx = mp.get_context("spawn")
    ports = _free_ports(6)
    raft_ports, http_ports = ports[:3], ports[3:]
    processes = []
    try:
        for index in range(3):
            ready = ctx.Event()
            folder = root / f"pysyncobj-n{index}-{time.monotonic_ns()}"
            folder.mkdir(parents=True)
            process = ctx.Process(
                target=_raft_node, args=(index, raft_ports, http_ports[index], str(folder), ready)
            )
            process.start()
            processes.append(process)
            if not ready.wait(30):
                raise RuntimeError("a pysyncobj member did not start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for port in http_ports:
                try:
                    drive(port, 1, _plain_headers, _BODY)
                except (OSError, RuntimeError):
                    continue
                return drive(port, requests, _plain_headers, _BODY)
            time.sleep(0.2)
        raise RuntimeError("the pysyncobj members elected no leader within 30 s")
    finally:
        _stop(processes)


class BudgetdCluster:
    """A durable 3-node budgetd cluster with one campaign, for the ``budgetd`` variant."""

    def __init__(self, root: Path) -> None:
        from budgetd.localcluster import LocalCluster

        self.cluster = LocalCluster.on_free_ports(root / "budgetd", 3)
        for node in self.cluster.nodes:
            self.cluster.start(node.node_id)
        try:
            self.cluster.wait_ready(60)
            self.leader_port = self._leader_port()
            campaign = json.dumps(
                {
                    "currency": "USD",
                    "timezone": "UTC",
                    "total_budget_micros": 10**15,
                    "pacing": {"mode": "asap"},
                    "status": "active",
                }
            ).encode()
            self._call("PUT", "/v1/campaigns/floor", campaign, "floor-campaign")
        except BaseException:
            self.cluster.stop_all()
            raise
        self._sent = 0

    def _call(self, method: str, path: str, body: bytes, key: str | None) -> bytes:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.leader_port, timeout=10)
        headers = {"Authorization": f"Bearer {self.cluster.token}"}
        if key:
            headers["Idempotency-Key"] = key
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body or None, headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return data

    def _leader_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for node in self.cluster.nodes:
                self.leader_port = int(node.http_address.rsplit(":", 1)[1])
                try:
                    view = json.loads(self._call("GET", "/v1/cluster", b"", None))
                except (OSError, RuntimeError):
                    continue
                leader = view.get("leader_id")
                if leader:
                    address = self.cluster.node(leader).http_address
                    return int(address.rsplit(":", 1)[1])
            time.sleep(0.2)
        raise RuntimeError("no leader within 30 s")

    def measure(self, requests: int) -> list[float]:
        first = self._sent
        self._sent += requests
        token = self.cluster.token.encode()

        def headers(index: int) -> bytes:
            return (
                b"POST /v1/reservations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nAuthorization: Bearer " + token + b"\r\n"
                b"Idempotency-Key: floor-%d\r\n" % (first + index)
            )

        return drive(self.leader_port, requests, headers, _BODY)

    def close(self) -> None:
        self.cluster.stop_all()


def sync_median(root: Path, count: int = 2000) -> float:
    journal = Journal(root / "sync-probe")
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        journal.append_and_sync(os.urandom(ENTRY_BYTES))
        timings.append(time.perf_counter() - started)
    return statistics.median(timings[count // 10 :])


def _echo(port: int, ready: Any) -> None:
    _serve_frames(port, ready, lambda frame: _FRAME.pack(len(frame)) + frame)


def round_trip_median(count: int = 3000) -> float:
    ctx = mp.get_context("spawn")
    (port,) = _free_ports(1)
    ready = ctx.Event()
    process = ctx.Process(target=_echo, args=(port, ready))
    process.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the echo process did not start")
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        frame = _FRAME.pack(ENTRY_BYTES) + os.urandom(ENTRY_BYTES)
        timings = []
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(frame)
            received = 0
            while received < len(frame):
                received += len(sock.recv(65536))
            timings.append(time.perf_counter() - started)
        sock.close()
        return statistics.median(timings[count // 10 :])
    finally:
        _stop([process])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per variant run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (min 3)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"which to run, of {','.join(VARIANTS)} (default: all)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--load-max", type=float, default=0.5)
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    args = parser.parse_args(argv)
    if args.requests < 100 or args.requests > 100_000:
        parser.error("--requests must be between 100 and 100000")
    if args.repeats < 3 or args.repeats > 20:
        parser.error("--repeats must be between 3 and 20")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        parser.error(f"--variants: of {','.join(VARIANTS)}; got {args.variants!r}")
    variants = tuple(v for v in VARIANTS if v in variants)
    load = os.getloadavg()[0]
    if load > args.load_max and not args.force:
        print(
            f"bench_floor: the 1-minute load average is {load:.2f} > --load-max "
            f"{args.load_max:g}; the figures would measure the other load (--force to run anyway)",
            file=sys.stderr,
        )
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    medians: dict[str, list[float]] = {variant: [] for variant in variants}
    cluster = None
    try:
        sync_s = sync_median(root)
        rtt_s = round_trip_median()
        if "budgetd" in variants:
            cluster = BudgetdCluster(root)
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else tuple(reversed(variants))
            for variant in order:
                if variant == "budgetd":
                    assert cluster is not None
                    latencies = cluster.measure(args.requests)
                elif variant == "pysyncobj":
                    latencies = run_pysyncobj(args.requests, root)
                else:
                    latencies = run_variant(variant, args.requests, root)
                medians[variant].append(statistics.median(latencies))
                print(
                    f"  repeat {repeat + 1} {variant:9s} p50 {medians[variant][-1] * 1e3:.3f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(root, ignore_errors=True)
    figures = {variant: statistics.median(values) for variant, values in medians.items()}
    reference = "budgetd" if "budgetd" in figures else variants[0]
    print(f"load average (1 min) at start: {load:.2f}; {args.repeats} repeats x {args.requests}")
    print(f"msync of a {ENTRY_BYTES}-byte append, median: {sync_s * 1e6:.0f} us")
    print(f"loopback round trip between two asyncio processes, median: {rtt_s * 1e6:.0f} us")
    print()
    print(f"| variant | idle durable write p50 | of {reference}'s |")
    print("| --- | --- | --- |")
    for variant in variants:
        print(
            f"| {variant} | {figures[variant] * 1e3:.3f} ms | "
            f"{figures[variant] / figures[reference]:.2f}× |"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "load_average_1m": load,
                    "requests": args.requests,
                    "repeats": args.repeats,
                    "msync_s": sync_s,
                    "round_trip_s": rtt_s,
                    "p50_s": figures,
                    "p50_s_by_repeat": medians,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
