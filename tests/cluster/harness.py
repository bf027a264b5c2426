"""Real budgetd clusters for tests: separate `budgetd run` processes on 127.0.0.1.

Every process is started here and stopped here, by its PID. Waits are bounded polls on a
condition; no test asserts on timing.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budgetd.api import Tokens
from budgetd.cli import local_config

WAIT_S = 60.0


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def until(condition: Callable[[], Any], what: str, limit_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + limit_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class NodeProcess:
    node_id: str
    raft_address: str
    http_address: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.http_address}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    root: Path
    nodes: list[NodeProcess]
    token: str
    stopped: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, root: Path, size: int = 3, *, extra: int = 0) -> Cluster:
        """``size`` members started now; ``extra`` more configured as outsiders for joins."""
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * (size + extra))
        specs = [
            (f"n{i + 1}", f"127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}")
            for i in range(size + extra)
        ]
        (root / "cluster-secret").write_text(secrets.token_urlsafe(24))
        token = secrets.token_urlsafe(16)
        (root / "tokens.toml").write_text(
            Tokens.render_file([("test", token, ["admin", "bidder", "reader"])])
        )
        nodes = []
        for index, (node_id, raft_address, http_address) in enumerate(specs):
            members = specs[:size] if index < size else specs[: index + 1]
            config = root / f"{node_id}.toml"
            config.write_text(local_config(node_id, members))
            nodes.append(
                NodeProcess(node_id, raft_address, http_address, config, root / f"{node_id}.log")
            )
        cluster = cls(root, nodes, token)
        for node in nodes[:size]:
            cluster.start(node.node_id)
        return cluster

    def node(self, node_id: str) -> NodeProcess:
        return next(node for node in self.nodes if node.node_id == node_id)

    def start(self, node_id: str) -> None:
        node = self.node(node_id)
        assert not node.running
        with node.log.open("ab") as log_file:
            node.process = subprocess.Popen(
                [sys.executable, "-m", "budgetd", "run", "--config", str(node.config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.stopped.discard(node_id)

    def kill(self, node_id: str) -> None:
        """kill -9: no clean shutdown."""
        node = self.node(node_id)
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        self.stopped.add(node_id)

    def pause(self, node_id: str) -> None:
        process = self.node(node_id).process
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        process = self.node(node_id).process
        assert process is not None
        process.send_signal(signal.SIGCONT)

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(5)

    def logs(self) -> str:
        return "\n".join(
            f"--- {node.node_id} ---\n{node.log.read_text()[-4000:]}"
            for node in self.nodes
            if node.log.exists()
        )

    # HTTP ---------------------------------------------------------------------------------------

    def request(
        self,
        node_id: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        follow: bool = False,
        timeout_s: float = 10.0,
    ) -> Response:
        """One HTTP request to a node; with ``follow``, 307/308 redirects are followed with the
        same method and body (as curl -L does)."""
        url = self.node(node_id).url + path
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        opener = urllib.request.build_opener(NoRedirect())
        for _ in range(5):
            request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
            try:
                with opener.open(request, timeout=timeout_s) as answer:
                    response = Response(answer.status, _decode(answer.read()), dict(answer.headers))
            except urllib.error.HTTPError as error:
                response = Response(error.code, _decode(error.read()), dict(error.headers))
            if not (follow and response.status in (307, 308) and "Location" in response.headers):
                return response
            url = response.headers["Location"]
        return response

    def cluster_view(self, node_id: str) -> dict[str, Any]:
        response = self.request(node_id, "GET", "/v1/cluster", timeout_s=2)
        assert response.status == 200, response
        return dict(response.body)

    def leader(self, among: list[str] | None = None) -> str:
        """Wait until the running nodes agree on one leader; its id."""
        candidates = among or [n.node_id for n in self.nodes if n.running]

        def agreed() -> str | None:
            views = [self.cluster_view(node_id) for node_id in candidates]
            leaders = {view.get("leader_id") for view in views}
            if len(leaders) == 1 and None not in leaders:
                leader = leaders.pop()
                if leader in candidates:
                    return str(leader)
            return None

        return str(until(agreed, f"one leader among {candidates}"))

    def wait_converged(self, node_ids: list[str] | None = None) -> str:
        """Wait until the nodes report the same applied index and digest; the digest."""
        ids = node_ids or [n.node_id for n in self.nodes if n.running]

        def same() -> str | None:
            views = [self.cluster_view(node_id) for node_id in ids]
            digests = {view["digest"] for view in views}
            applied = {view["applied_index"] for view in views}
            if len(digests) == 1 and len(applied) == 1:
                return str(digests.pop())
            return None

        return str(until(same, f"nodes {ids} to converge"))


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw
