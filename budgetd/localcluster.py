"""A budgetd cluster of `budgetd run` processes on this machine: for `budgetd dev`, the cluster
tests and the benchmarks.

Owns the layout of such a cluster's folder (one config per node, the generated cluster secret and
token, the tokens file, one log per node) and the processes it starts — each stopped by its own
PID, never by name. Imports the api only for the tokens file format.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from budgetd.api import Tokens

__all__ = ["LocalCluster", "LocalNode", "free_ports", "local_config"]


#: Ports are drawn below the kernel's ephemeral range, so no outgoing connection of this or
#: another process can take one between the check and the node binding it.
_PORT_LOW: Final = 20_000
_EPHEMERAL_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago, drawn at random
    below the ephemeral range (another test process picking at the same time is unlikely to
    draw the same ones)."""
    high = max(_ephemeral_low() - 1, _PORT_LOW + 1_000)
    rng = random.SystemRandom()
    ports: list[int] = []
    for _ in range(100 * count):
        if len(ports) == count:
            return ports
        port = rng.randint(_PORT_LOW, high)
        if port in ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    raise OSError(f"no {count} free ports on 127.0.0.1 in {_PORT_LOW}..{high}")


def local_config(
    node_id: str,
    members: list[tuple[str, str, str]],
    *,
    raft: str = "",
    api: str = "",
    proposer: str = "",
) -> str:
    """The TOML of one node, paths relative to the config's folder: data in ``<node_id>/``, the
    secret in ``cluster-secret``, tokens in ``tokens.toml``. ``members`` are ``(id,
    raft_address, http_address)``; ``raft``, ``api`` and ``proposer`` are extra settings of
    those tables, as TOML lines."""
    lines = [
        f"# Written by budgetd: node {node_id} of a {len(members)}-node cluster on this machine.",
        "# configs/local-3.toml explains every setting.",
        "[node]",
        f'id = "{node_id}"',
        f'data_dir = "{node_id}"',
        "",
        "[cluster]",
        'secret_file = "cluster-secret"',
    ]
    for member_id, raft_address, http_address in members:
        lines += [
            "",
            "[[cluster.members]]",
            f'id = "{member_id}"',
            f'raft_address = "{raft_address}"',
            f'http_address = "{http_address}"',
            'dc = "local"',
        ]
    lines += ["", "[api]", 'tokens_file = "tokens.toml"', *([api] if api else []), ""]
    if raft:
        lines += ["[raft]", raft, ""]
    if proposer:
        lines += ["[proposer]", proposer, ""]
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)


@dataclass
class LocalNode:
    node_id: str
    raft_address: str
    http_address: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.http_address}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    root: Path
    nodes: list[LocalNode]
    token: str
    log_level: str = "info"
    #: How the nodes write their logs: json (one object a line) or console (for people).
    log_format: str = "json"
    _started: list[str] = field(default_factory=list)
    #: How to reach nodes that serve HTTPS (the CA, and a client certificate if required).
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def prepare(
        cls,
        root: Path,
        members: list[tuple[str, str, str]],
        *,
        size: int | None = None,
        token: str | None = None,
        raft: str = "",
        log_level: str = "info",
        api: str = "",
        proposer: str = "",
        scheme: str = "http",
    ) -> LocalCluster:
        """Write the folder for ``members``; the first ``size`` (default: all) form the initial
        cluster, each later one is configured to join them. Reuses an existing secret and token,
        so a cluster prepared again resumes from its data."""
        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        size = len(members) if size is None else size
        secret_path = root / "cluster-secret"
        if not secret_path.exists():
            _write_private(secret_path, secrets.token_urlsafe(32) + "\n")
        token_path = root / "token"
        if token is None:
            token = token_path.read_text().strip() if token_path.exists() else None
        token = token or secrets.token_urlsafe(24)
        _write_private(token_path, token + "\n")
        _write_private(
            root / "tokens.toml",
            Tokens.render_file([("local", token, ["admin", "bidder", "reader"])]),
        )
        nodes = []
        for index, (node_id, raft_address, http_address) in enumerate(members):
            listed = members[:size] if index < size else members[: index + 1]
            config = root / f"{node_id}.toml"
            config.write_text(local_config(node_id, listed, raft=raft, api=api, proposer=proposer))
            log = root / f"{node_id}.log"
            nodes.append(LocalNode(node_id, raft_address, http_address, config, log, scheme=scheme))
        return cls(root, nodes, token, log_level)

    @classmethod
    def on_free_ports(
        cls,
        root: Path,
        size: int,
        *,
        extra: int = 0,
        raft: str = "",
        api: str = "",
        proposer: str = "",
        scheme: str = "http",
    ) -> LocalCluster:
        """A cluster of ``size`` nodes (plus ``extra`` configured to join) on free ports."""
        ports = free_ports(2 * (size + extra))
        members = [
            (f"n{i + 1}", f"127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}")
            for i in range(size + extra)
        ]
        return cls.prepare(
            root, members, size=size, raft=raft, api=api, proposer=proposer, scheme=scheme
        )

    @property
    def token_path(self) -> Path:
        return self.root / "token"

    def node(self, node_id: str) -> LocalNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def start(self, node_id: str) -> LocalNode:
        node = self.node(node_id)
        if node.running:
            raise RuntimeError(f"{node_id} is already running")
        command = [sys.executable, "-m", "budgetd", "run", "--config", str(node.config)]
        with node.log.open("ab") as log_file:
            node.process = subprocess.Popen(
                [*command, "--log-level", self.log_level, "--log-format", self.log_format],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        return node

    def kill(self, node_id: str) -> None:
        """kill -9: no clean shutdown. Returns once the node and any child it forked (a dump
        writer, which dies with it) are gone, so its data dir is no longer written."""
        process = self.node(node_id).process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            _wait_session_gone(process.pid, timeout_s=10.0)

    def stop(self, node_id: str, timeout_s: float = 30.0) -> int:
        """SIGTERM one node (a clean shutdown, as a supervisor stops it) and wait for it to
        exit; its exit status. Raises RuntimeError if it is still running after ``timeout_s``."""
        process = self.node(node_id).process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{node_id} is not running")
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{node_id} did not stop within {timeout_s} s of SIGTERM") from None

    def pause(self, node_id: str) -> None:
        self._signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self._signal(node_id, signal.SIGCONT)

    def _signal(self, node_id: str, signum: signal.Signals) -> None:
        process = self.node(node_id).process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{node_id} is not running")
        process.send_signal(signum)

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every running node (resuming paused ones), then SIGKILL what is left."""
        running = [
            n.process for n in self.nodes if n.process is not None and n.process.poll() is None
        ]
        for process in running:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def exited(self) -> list[LocalNode]:
        """Started nodes whose process has ended."""
        return [n for n in self.nodes if n.process is not None and n.process.poll() is not None]

    def wait_ready(self, timeout_s: float) -> list[str]:
        """Poll /readyz of the running nodes until all answer 200; the ids still not ready."""
        deadline = time.monotonic() + timeout_s
        pending = {n.node_id for n in self.nodes if n.running}
        while pending and time.monotonic() < deadline:
            if self.exited():
                break
            for node_id in sorted(pending):
                try:
                    url = self.node(node_id).url + "/readyz"
                    with urllib.request.urlopen(
                        url, timeout=1, context=self.ssl_context
                    ) as response:
                        if response.status == 200:
                            pending.discard(node_id)
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.1)
        return sorted(pending)

    def logs(self, tail_chars: int = 4000) -> str:
        return "\n".join(
            f"--- {node.node_id} ({node.log}) ---\n{node.log.read_text()[-tail_chars:]}"
            for node in self.nodes
            if node.log.exists()
        )


def _wait_session_gone(session_id: int, *, timeout_s: float) -> None:
    """Wait until no live process is left in the session a node was started in."""
    deadline = time.monotonic() + timeout_s
    while _session_members(session_id) and time.monotonic() < deadline:
        time.sleep(0.01)


def _session_members(session_id: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, pgrp, session
        if fields[0] != "Z" and int(fields[3]) == session_id:
            members.append(int(entry))
    return members
