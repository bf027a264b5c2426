"""WAN links: every node-to-node TCP connection is redirected (nftables ``redirect`` in the
control namespace) to a userspace relay that holds each chunk for the one-way delay between the
two nodes' data centers, ± jitter, order kept per direction. Stdlib only; imports no budgetd
module.

Owns the relay thread (an asyncio loop in a thread that joined the control namespace with
setns(2)), its sockets, and the ``wan_*`` set and chains it adds to the sandbox's ``inet jl``
table. The relay learns a connection's real destination with SO_ORIGINAL_DST and its source
from the peer address; it connects to the destination itself (source: the control address —
pysyncobj names peers by the address they announce, never by the socket's).

Cuts (jepsen_lite.net) hold on relayed links as they do on routed ones: a new connection of a
cut pair is refused by nftables (``ct original`` addresses, TCP reset, as the forward chain
does), and ``set_cut`` resets both legs of every relayed connection of a cut pair (either
direction). Bytes are never dropped from a live connection: a connection is relayed whole, or
reset whole. A new connection's first bytes set out only after the round trip its handshake
would have taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from jepsen_lite._run import SandboxError, run

__all__ = [
    "CONNECTIONS_MAX",
    "DELAY_MS_MAX",
    "PIPE_BYTES_MAX",
    "RELAY_PORT",
    "Link",
    "WanRelay",
    "check_dc",
]

#: The relay's port on the control address (nothing else listens in the control namespace).
RELAY_PORT: Final = 7999
#: Relayed connections open at once; a connection beyond it is reset (counted).
CONNECTIONS_MAX: Final = 128
#: Bytes held per direction of one connection; the relay stops reading that side beyond it
#: (TCP flow control pushes back on the sender; nothing is dropped).
PIPE_BYTES_MAX: Final = 512 * 1024
#: Largest chunk read at once.
CHUNK_BYTES: Final = 64 * 1024
#: Largest one-way delay plus jitter a link may be given.
DELAY_MS_MAX: Final = 10_000
#: Connecting to the real destination (a local veth hop) may take this long.
CONNECT_TIMEOUT_S: Final = 5.0
#: Pause after a failed accept(2) before the next.
ACCEPT_RETRY_S: Final = 0.05
#: ``set_cut`` and ``close`` wait this long for the relay thread.
CONTROL_TIMEOUT_S: Final = 10.0

_SO_ORIGINAL_DST: Final = 80
_CLONE_NEWNET: Final = 0x40000000
_DC: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_dc(name: object) -> str:
    """``name`` if it is a data-center name budgetd takes ([A-Za-z0-9_.-]{1,64}); ValueError
    otherwise."""
    if not isinstance(name, str) or not _DC.fullmatch(name):
        raise ValueError(f"a data center name must match [A-Za-z0-9_.-]{{1,64}}, got {name!r}")
    return name


@dataclass(frozen=True)
class Link:
    """The delay of one data-center pair, each direction: a chunk is held ``one_way_s`` plus
    a uniform draw in [−``jitter_s``, +``jitter_s``] (never below 0, never overtaking the chunk
    before it)."""

    one_way_s: float
    jitter_s: float = 0.0


_NO_DELAY: Final = Link(0.0)


class _Reset(Exception):
    """A leg of the connection failed or was reset: reset the other leg too."""


@dataclass(eq=False)
class _Conn:
    source: str
    destination: str
    client: socket.socket
    accepted_at: float
    server: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    cut: bool = False


@dataclass(eq=False)
class _Pipe:
    """One direction of a connection: chunks with their release times, in order."""

    chunks: deque[tuple[float, bytes | None]] = field(default_factory=deque)
    held_bytes: int = 0
    last_release: float = 0.0
    #: No chunk sets out before this (loop time).
    not_before: float = 0.0
    readable: asyncio.Event = field(default_factory=asyncio.Event)
    space: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.space.set()


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """The (address, port) a redirected connection was sent to (SO_ORIGINAL_DST)."""
    raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0) rather than a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class WanRelay:
    """The relay of one sandbox: ``addresses`` maps node id to IPv4 address, ``dcs`` node id
    to data center; it listens on ``listen_ip``:``port`` inside ``namespace``.

    ``install()`` adds the nftables rules and starts the thread; ``close()`` ends it (every
    relayed connection reset). Every link starts without delay."""

    def __init__(
        self,
        namespace: str,
        listen_ip: str,
        addresses: Mapping[str, str],
        dcs: Mapping[str, str],
        *,
        table: str,
        port: int = RELAY_PORT,
        seed: int = 0,
    ) -> None:
        if set(addresses) != set(dcs):
            raise ValueError("every node needs a data center, and only nodes")
        self.namespace = namespace
        self.listen_ip = listen_ip
        self.addresses = dict(addresses)
        self.dcs = {node_id: check_dc(dc) for node_id, dc in dcs.items()}
        self.table = table
        self.port = port
        self._by_ip = {ip: node_id for node_id, ip in self.addresses.items()}
        self._rng = random.Random(seed)  # drawn only on the relay thread
        self._links: dict[frozenset[str], Link] = {}  # replaced whole, never mutated
        self._cut: frozenset[tuple[str, str]] = frozenset()
        self._conns: set[_Conn] = set()
        self._counts = {
            "accepted": 0,
            "accept_failed": 0,
            "refused_cut": 0,
            "refused_limit": 0,
            "refused_unknown": 0,
            "connect_failed": 0,
            "reset_by_cut": 0,
            "reset_by_peer": 0,
            "closed": 0,
            "bytes": 0,
        }
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: str | None = None

    # Harness side -------------------------------------------------------------------------------

    def rules(self) -> str:
        """The nft script that sends node-to-node TCP to the relay and refuses new relayed
        connections of cut pairs (the table's ``cut`` set, by original addresses)."""
        elements = ", ".join(sorted(self.addresses.values()))
        t = f"inet {self.table}"
        return (
            f"add set {t} wan_nodes {{ type ipv4_addr; }}\n"
            f"add element {t} wan_nodes {{ {elements} }}\n"
            f"add chain {t} wan_pre "
            "{ type nat hook prerouting priority dstnat; policy accept; }\n"
            f"add rule {t} wan_pre ip saddr @wan_nodes ip daddr @wan_nodes meta l4proto tcp "
            f"redirect to :{self.port}\n"
            f"add chain {t} wan_in "
            "{ type filter hook input priority filter; policy accept; }\n"
            f"add rule {t} wan_in ct original ip saddr . ct original ip daddr @cut "
            "meta l4proto tcp reject with tcp reset\n"
        )

    def install(self) -> None:
        """Start the relay thread (listening before this returns), then add the nft rules."""
        if self._thread is not None:
            raise SandboxError("the relay is already installed")
        self._thread = threading.Thread(
            target=self._main, name=f"wan-relay-{self.namespace}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(CONTROL_TIMEOUT_S):
            raise SandboxError("the WAN relay did not start")
        if self._start_error is not None:
            raise SandboxError(f"the WAN relay did not start: {self._start_error}")
        run(["ip", "netns", "exec", self.namespace, "nft", "-f", "-"], stdin=self.rules())

    def set_latency(self, dc_a: str, dc_b: str, *, one_way_s: float, jitter_s: float = 0.0) -> None:
        """Delay every chunk between ``dc_a`` and ``dc_b`` (both directions; the same name
        twice means inside that data center) from now on; chunks already held keep theirs."""
        self._check_running()
        known = set(self.dcs.values())
        for dc in (dc_a, dc_b):
            if dc not in known:
                raise ValueError(f"unknown data center {dc!r}; known: {', '.join(sorted(known))}")
        if not (one_way_s >= 0.0 and 0.0 <= jitter_s <= one_way_s):
            raise ValueError(
                f"need 0 <= jitter <= one-way delay, got one-way {one_way_s} s, jitter {jitter_s} s"
            )
        if (one_way_s + jitter_s) * 1000 > DELAY_MS_MAX:
            raise ValueError(f"one-way delay plus jitter above DELAY_MS_MAX={DELAY_MS_MAX} ms")
        links = dict(self._links)
        links[frozenset((dc_a, dc_b))] = Link(one_way_s, jitter_s)
        self._links = links

    def clear_latency(self) -> None:
        """No delay on any link from now on (held chunks keep theirs)."""
        self._links = {}

    @property
    def latencies(self) -> dict[tuple[str, str], Link]:
        """The delayed data-center pairs now, each pair sorted."""
        return {
            (min(pair), max(pair)): link for pair, link in self._links.items() if link.one_way_s
        }

    def set_cut(self, pairs: frozenset[tuple[str, str]]) -> None:
        """Cut pairs (directed, by node id) changed: reset every relayed connection between a
        cut pair (either direction), and refuse new ones, before this returns."""
        self._cut = frozenset(pairs)
        self._check_running()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._reset_cut(), loop)
        future.result(CONTROL_TIMEOUT_S)

    def _check_running(self) -> None:
        if self._thread is not None and not self._thread.is_alive():
            raise SandboxError("the WAN relay thread has stopped: node links are down")

    def stats(self) -> dict[str, int]:
        """Counters since install, plus ``open`` connections now."""
        return {**self._counts, "open": len(self._conns)}

    def close(self) -> None:
        """Reset every relayed connection and end the thread. Safe to call twice."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            thread.join(CONTROL_TIMEOUT_S)
            if thread.is_alive():
                raise SandboxError("the WAN relay thread did not stop")
        self._thread = None

    # Relay thread -------------------------------------------------------------------------------

    def _main(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
        except OSError as error:
            self._start_error = f"open namespace {self.namespace}: {error}"
            self._ready.set()
            return
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                self._start_error = f"setns {self.namespace}: {os.strerror(ctypes.get_errno())}"
                self._ready.set()
                return
        finally:
            os.close(fd)
        try:
            asyncio.run(self._serve_all())
        except Exception as error:  # surfaced to install() if it happened before ready
            if not self._ready.is_set():
                self._start_error = str(error)
                self._ready.set()
            raise

    async def _serve_all(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.listen_ip, self.port))
            listener.listen(CONNECTIONS_MAX)
            listener.setblocking(False)
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            self._ready.set()
            accepting = asyncio.create_task(self._accept(listener))
            await self._stopping.wait()
            accepting.cancel()
            await asyncio.gather(accepting, return_exceptions=True)
            tasks = [c.task for c in self._conns if c.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            listener.close()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, peer = await loop.sock_accept(listener)
            except OSError:  # e.g. out of file descriptors: the client is not accepted
                self._counts["accept_failed"] += 1
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            client.setblocking(False)
            try:
                destination_ip, destination_port = original_destination(client)
            except OSError:
                destination_ip, destination_port = "", 0
            source = self._by_ip.get(peer[0])
            destination = self._by_ip.get(destination_ip)
            if source is None or destination is None:
                self._counts["refused_unknown"] += 1
                _reset(client)
                continue
            if self._is_cut(source, destination):
                self._counts["refused_cut"] += 1
                _reset(client)
                continue
            if len(self._conns) >= CONNECTIONS_MAX:
                self._counts["refused_limit"] += 1
                _reset(client)
                continue
            self._counts["accepted"] += 1
            conn = _Conn(source, destination, client, loop.time())
            self._conns.add(conn)
            conn.task = asyncio.create_task(self._relay(conn, destination_ip, destination_port))

    def _is_cut(self, source: str, destination: str) -> bool:
        cut = self._cut
        return (source, destination) in cut or (destination, source) in cut

    async def _reset_cut(self) -> None:
        doomed = [c for c in self._conns if self._is_cut(c.source, c.destination)]
        for conn in doomed:
            conn.cut = True
            if conn.task is not None:
                conn.task.cancel()
        await asyncio.gather(*(c.task for c in doomed if c.task), return_exceptions=True)

    async def _relay(self, conn: _Conn, ip: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        graceful = False
        try:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setblocking(False)
            conn.server = server
            for sock in (conn.client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await asyncio.wait_for(loop.sock_connect(server, (ip, port)), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                self._counts["connect_failed"] += 1
                return
            up, down = _Pipe(), _Pipe()
            # The client's first bytes wait for the handshake it would have made across the
            # link (SYN there, SYN-ACK back), which the control namespace's kernel answered.
            handshake_s = self._delay(conn.source, conn.destination)
            handshake_s += self._delay(conn.destination, conn.source)
            up.not_before = conn.accepted_at + handshake_s
            tasks = [
                asyncio.create_task(self._read(up, conn.client, conn.source, conn.destination)),
                asyncio.create_task(self._send(up, server)),
                asyncio.create_task(self._read(down, server, conn.destination, conn.source)),
                asyncio.create_task(self._send(down, conn.client)),
            ]
            try:
                await asyncio.gather(*tasks)
                graceful = True
            except (_Reset, OSError):
                self._counts["reset_by_peer"] += 1
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            if conn.cut:
                self._counts["reset_by_cut"] += 1
        finally:
            self._conns.discard(conn)
            for sock in [s for s in (conn.client, conn.server) if s is not None]:
                if graceful:
                    sock.close()
                else:
                    _reset(sock)
            self._counts["closed"] += 1

    def _delay(self, source: str, destination: str) -> float:
        link = self._links.get(frozenset((self.dcs[source], self.dcs[destination])), _NO_DELAY)
        if not link.jitter_s:
            return link.one_way_s
        return max(0.0, link.one_way_s + self._rng.uniform(-link.jitter_s, link.jitter_s))

    async def _read(
        self, pipe: _Pipe, reader: socket.socket, source: str, destination: str
    ) -> None:
        """Read ``reader`` into ``pipe`` until EOF, each chunk stamped with its release time;
        raises _Reset if ``reader`` was reset."""
        loop = asyncio.get_running_loop()
        while True:
            while pipe.held_bytes >= PIPE_BYTES_MAX:
                pipe.space.clear()
                await pipe.space.wait()
            try:
                data = await loop.sock_recv(reader, CHUNK_BYTES)
            except OSError as error:
                raise _Reset(str(error)) from error
            sets_out = max(loop.time(), pipe.not_before)
            release = max(pipe.last_release, sets_out + self._delay(source, destination))
            pipe.last_release = release
            pipe.chunks.append((release, data or None))
            pipe.held_bytes += len(data)
            pipe.readable.set()
            if not data:
                return

    async def _send(self, pipe: _Pipe, writer: socket.socket) -> None:
        """Write ``pipe``'s chunks to ``writer``, each at its release time; at EOF half-close
        ``writer``. Raises _Reset if ``writer`` was reset."""
        loop = asyncio.get_running_loop()
        while True:
            while not pipe.chunks:
                pipe.readable.clear()
                await pipe.readable.wait()
            release, data = pipe.chunks[0]
            while (wait_s := release - loop.time()) > 0:
                await asyncio.sleep(wait_s)
            pipe.chunks.popleft()
            if data is None:
                with contextlib.suppress(OSError):
                    writer.shutdown(socket.SHUT_WR)
                return
            try:
                await loop.sock_sendall(writer, data)
            except OSError as error:
                raise _Reset(str(error)) from error
            pipe.held_bytes -= len(data)
            self._counts["bytes"] += len(data)
            pipe.space.set()
