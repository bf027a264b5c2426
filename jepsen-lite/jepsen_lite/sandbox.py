"""The sandbox: N node network namespaces (``jl-<run>-n1``…) routed through one control
namespace (``jl-<run>-ctl``), and a real `budgetd run` process inside each node namespace.

Owns the namespaces, links, addresses and firewall table it creates, the cluster folder (one
config and data dir per node, the secret, the tokens file, one log per node) and the PIDs it
starts, each stopped by its own PID. Talks to budgetd only through its CLI and HTTP; imports
no budgetd module.

Topology (addresses exist only inside these namespaces; nothing touches the host's)::

    jl-<run>-n1  eth0 10.77.S.1/32 ──veth── n1 ┐
    jl-<run>-n2  eth0 10.77.S.2/32 ──veth── n2 ├ jl-<run>-ctl: 10.77.S.254 on every veth,
    jl-<run>-n3  eth0 10.77.S.3/32 ──veth── n3 ┘ forwarding on, nftables table ``inet jl``

Every node-to-node packet is routed through the control namespace, where jepsen_lite.net cuts
links; the harness talks to nodes from the control namespace (jepsen_lite.http), a path no
partition cuts. Node processes get SIGKILL if the harness dies (PR_SET_PDEATHSIG); namespaces
left by a dead harness are deleted by the next sandbox.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jepsen_lite._run import Refused, SandboxError, run
from jepsen_lite.http import NamespaceHttp, Response
from jepsen_lite.net import Net

__all__ = [
    "HTTP_PORT",
    "NODES_MAX",
    "RAFT_PORT",
    "Node",
    "Refused",
    "Sandbox",
    "SandboxError",
    "preflight",
    "remove_stale",
    "sandbox_namespaces",
]

NODES_MAX: Final = 16
RAFT_PORT: Final = 7080
HTTP_PORT: Final = 8080
#: Last octet of the control namespace's address on every link.
CONTROL_OCTET: Final = 254
#: Grace between SIGTERM and SIGKILL when stopping nodes.
STOP_GRACE_S: Final = 5.0
TOKEN_NAME: Final = "jepsen"

_PREFIX: Final = "jl-"
_RUN_NAME: Final = re.compile(r"^jl-(\d+)-[0-9a-f]{4}-")
_PR_SET_PDEATHSIG: Final = 1


def preflight(
    *, euid: int | None = None, which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """Why this machine cannot host a sandbox, in one line; None when it can."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return (
            "jepsen-lite needs root (CAP_NET_ADMIN) to build network namespaces; "
            "run as root, or under `unshare --user --map-root-user --net --mount --pid --fork`"
        )
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if which(tool) is None:
            return f"jepsen-lite needs `{tool}` on PATH: apt-get install -y {package}"
    return None


def sandbox_namespaces() -> list[str]:
    """Every ``jl-*`` network namespace on this machine (this and other runs)."""
    names = []
    for line in run(["ip", "netns", "list"]).splitlines():
        name = line.split(" ", 1)[0]
        if name.startswith(_PREFIX):
            names.append(name)
    return sorted(names)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete ``jl-*`` namespaces whose harness process is gone (or cannot be told from the
    name), first killing by PID any node process still inside; the names deleted."""
    removed = []
    for name in sandbox_namespaces():
        match = _RUN_NAME.match(name)
        if match and _alive(int(match.group(1))):
            continue
        _kill_namespace_pids(name)
        run(["ip", "netns", "delete", name])
        removed.append(name)
    return removed


def _kill_namespace_pids(namespace: str) -> None:
    for pid_text in run(["ip", "netns", "pids", namespace]).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_text), signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the harness thread that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _write_private(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)


def tokens_file(token: str) -> str:
    """The tokens file (budgetd's ``api.tokens_file``) with ``token`` holding every role."""
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    return (
        "# jepsen-lite: SHA-256 digest of the harness's bearer token, never the token.\n"
        "[[token]]\n"
        f'name = "{TOKEN_NAME}"\n'
        f'sha256 = "{digest}"\n'
        'roles = ["admin", "bidder", "reader"]\n'
    )


def node_config(node: Node, members: list[Node], *, raft: Mapping[str, int]) -> str:
    """The TOML of one node; paths are relative to the config's folder."""
    lines = [
        f"# jepsen-lite: node {node.node_id} in namespace {node.namespace}.",
        "[node]",
        f'id = "{node.node_id}"',
        f'data_dir = "{node.node_id}"',
        "",
        "[cluster]",
        'secret_file = "cluster-secret"',
    ]
    for member in members:
        lines += [
            "",
            "[[cluster.members]]",
            f'id = "{member.node_id}"',
            f'raft_address = "{member.raft_address}"',
            f'http_address = "{member.http_address}"',
            'dc = "jepsen"',
        ]
    lines += ["", "[api]", 'tokens_file = "tokens.toml"', "allow_plain_http = true", ""]
    if raft:
        lines += ["[raft]", *(f"{key} = {int(value)}" for key, value in raft.items()), ""]
    return "\n".join(lines)


@dataclass
class Node:
    node_id: str
    namespace: str
    ip: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def raft_address(self) -> str:
        return f"{self.ip}:{RAFT_PORT}"

    @property
    def http_address(self) -> str:
        return f"{self.ip}:{HTTP_PORT}"

    @property
    def url(self) -> str:
        return f"http://{self.http_address}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def pid_checked(self) -> int:
        if self.process is None:
            raise SandboxError(f"{self.node_id} was never started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Sandbox:
    """``size`` budgetd nodes, each in its own namespace, configured under ``root``.

    ``with Sandbox(root) as sandbox:`` builds the namespaces, writes the configs and starts
    every node; leaving the block (normally or by an exception) stops every node by PID and
    deletes every namespace it made. ``raft`` holds ``[raft]`` settings (e.g.
    ``{"leader_fallback_ms": 2000}``); the budgetd defaults otherwise.
    """

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        raft: Mapping[str, int] | None = None,
        python: str = sys.executable,
        log_level: str = "info",
    ) -> None:
        if not 1 <= size <= NODES_MAX:
            raise ValueError(f"size must be in 1..{NODES_MAX}, got {size}")
        self.root = root.resolve()
        self.run_id = f"{os.getpid()}-{secrets.token_hex(2)}"
        self.subnet_octet = 1 + secrets.randbelow(250)
        self.raft = dict(raft or {})
        self.python = python
        self.log_level = log_level
        self.token = secrets.token_urlsafe(24)
        self.control = f"{_PREFIX}{self.run_id}-ctl"
        self.control_ip = self._ip(CONTROL_OCTET)
        self.nodes = [
            Node(
                node_id=f"n{i}",
                namespace=f"{_PREFIX}{self.run_id}-n{i}",
                ip=self._ip(i),
                config=self.root / f"n{i}.toml",
                log=self.root / f"n{i}.log",
            )
            for i in range(1, size + 1)
        ]
        self.net = Net(self.control, {n.node_id: n.ip for n in self.nodes})
        self._namespaces: list[str] = []
        self._http: NamespaceHttp | None = None

    def _ip(self, octet: int) -> str:
        return f"10.77.{self.subnet_octet}.{octet}"

    # Life cycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        try:
            self.build()
            for node in self.nodes:
                self.start(node.node_id)
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def build(self) -> None:
        """Refuse (Refused) if the machine cannot host a sandbox; delete stale ``jl-*``
        namespaces; build the namespaces and links; write the cluster folder."""
        reason = preflight()
        if reason is not None:
            raise Refused(reason)
        remove_stale()
        self._add_namespace(self.control)
        self._ip_in(self.control, "link", "set", "lo", "up")
        run(["ip", "netns", "exec", self.control, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        for node in self.nodes:
            self._add_namespace(node.namespace)
            link = f"v-{node.node_id}"
            self._ip_in(
                self.control, "link", "add", link, "type", "veth",
                "peer", "name", "eth0", "netns", node.namespace,
            )  # fmt: skip
            self._ip_in(self.control, "addr", "add", f"{self.control_ip}/32", "dev", link)
            self._ip_in(self.control, "link", "set", link, "up")
            self._ip_in(self.control, "route", "add", f"{node.ip}/32", "dev", link)
            self._ip_in(node.namespace, "link", "set", "lo", "up")
            self._ip_in(node.namespace, "addr", "add", f"{node.ip}/32", "dev", "eth0")
            self._ip_in(node.namespace, "link", "set", "eth0", "up")
            self._ip_in(node.namespace, "route", "add", f"{self.control_ip}/32", "dev", "eth0")
            self._ip_in(
                node.namespace, "route", "add", f"{self._ip(0)}/24",
                "via", self.control_ip, "dev", "eth0",
            )  # fmt: skip
        self.net.install()
        self._write_folder()

    def _add_namespace(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self._namespaces.append(name)

    @staticmethod
    def _ip_in(namespace: str, *args: str) -> None:
        run(["ip", "-n", namespace, *args])

    def _write_folder(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_private(self.root / "cluster-secret", secrets.token_urlsafe(32) + "\n")
        _write_private(self.root / "token", self.token + "\n")
        _write_private(self.root / "tokens.toml", tokens_file(self.token))
        for node in self.nodes:
            node.config.write_text(node_config(node, self.nodes, raft=self.raft))

    def teardown(self) -> None:
        """Stop every node by PID (SIGTERM, then SIGKILL after STOP_GRACE_S), end the HTTP
        threads, delete every namespace this sandbox made. Safe to call twice; raises
        SandboxError at the end if something could not be removed."""
        problems: list[str] = []
        try:
            self.stop_all()
        except Exception as error:  # keep tearing down; report at the end
            problems.append(f"stopping nodes: {error}")
        if self._http is not None:
            self._http.close()
            self._http = None
        for name in reversed(self._namespaces):
            try:
                _kill_namespace_pids(name)
                run(["ip", "netns", "delete", name])
            except SandboxError as error:
                problems.append(str(error))
        self._namespaces.clear()
        if problems:
            raise SandboxError("teardown: " + "; ".join(problems))

    # Nodes --------------------------------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def node_ids(self) -> list[str]:
        return [node.node_id for node in self.nodes]

    def start(self, node_id: str) -> Node:
        """Start `budgetd run` for ``node_id`` inside its namespace (its data dir is kept, so
        a restarted node resumes)."""
        node = self.node(node_id)
        if node.running:
            raise SandboxError(f"{node_id} is already running")
        command = [
            "ip", "netns", "exec", node.namespace,
            self.python, "-m", "budgetd", "run",
            "--config", str(node.config), "--log-level", self.log_level,
        ]  # fmt: skip
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with node.log.open("ab") as log_file:
            node.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=self.root,
                preexec_fn=_die_with_parent,
            )
        node.paused = False
        return node

    def kill(self, node_id: str) -> None:
        """kill -9 by PID: no clean shutdown (a paused node dies too). ``start`` brings it back
        on the same data dir."""
        node = self.node(node_id)
        process = node.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_GRACE_S)
        node.paused = False

    def pause(self, node_id: str) -> None:
        """SIGSTOP by PID: the process freezes (raft timers, HTTP server and all)."""
        node = self._running(node_id)
        os.kill(node.pid_checked, signal.SIGSTOP)
        node.paused = True

    def resume(self, node_id: str) -> None:
        """SIGCONT by PID."""
        node = self._running(node_id)
        os.kill(node.pid_checked, signal.SIGCONT)
        node.paused = False

    def _running(self, node_id: str) -> Node:
        node = self.node(node_id)
        if not node.running:
            raise SandboxError(f"{node_id} is not running")
        return node

    def stop_all(self) -> None:
        running = [n.process for n in self.nodes if n.process is not None]
        running = [p for p in running if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_GRACE_S)

    def exited(self) -> list[Node]:
        """Started nodes whose process has ended."""
        return [n for n in self.nodes if n.process is not None and n.process.poll() is not None]

    def logs(self, tail_chars: int = 4000) -> str:
        return "\n".join(
            f"--- {node.node_id} ({node.log}) ---\n{node.log.read_text()[-tail_chars:]}"
            for node in self.nodes
            if node.log.exists()
        )

    # HTTP ---------------------------------------------------------------------------------------

    @property
    def http(self) -> NamespaceHttp:
        """HTTP from the control namespace, with the harness's token."""
        if self._http is None:
            if self.control not in self._namespaces:
                raise SandboxError("the sandbox is not built")
            self._http = NamespaceHttp(self.control, self.token)
        return self._http

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
        """One request to ``node_id``'s HTTP address."""
        url = self.node(node_id).url + path
        return self.http.request(
            url, method, body, headers=headers, follow=follow, timeout_s=timeout_s
        )

    def view(self, node_id: str, *, fresh_digest: bool = False) -> dict[str, Any] | None:
        """``GET /v1/cluster`` of ``node_id``; None unless it answered 200."""
        path = "/v1/cluster?digest=fresh" if fresh_digest else "/v1/cluster"
        response = self.request(node_id, "GET", path, timeout_s=2.0)
        if response.status != 200 or not isinstance(response.body, dict):
            return None
        return response.body
