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
partition cuts. With ``dcs`` (WAN mode) node-to-node TCP is redirected there to a relay that
delays it per data-center pair (jepsen_lite.relay). Node processes get SIGKILL if the harness
dies (PR_SET_PDEATHSIG); namespaces left by a dead harness are deleted by the next sandbox.
With ``power_loss``, each node's data dir is a lazyfs mount (jepsen_lite.lazyfs), and
``power_off`` drops what the node never synced.
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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jepsen_lite._run import Refused, SandboxError, run
from jepsen_lite.canaries import module_name as canary_module
from jepsen_lite.http import NamespaceHttp, Response
from jepsen_lite.lazyfs import LazyMount, fuse_preflight, remove_stale_mounts
from jepsen_lite.net import TABLE, Net
from jepsen_lite.relay import WanRelay, check_dc

__all__ = [
    "HTTP_PORT",
    "NODES_MAX",
    "RAFT_PORT",
    "Node",
    "Refused",
    "Sandbox",
    "SandboxError",
    "libfaketime_path",
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
#: Where Debian's libfaketime (package ``libfaketime``, pulled in by ``faketime``) puts the
#: preloadable library, per multiarch triplet.
LIBFAKETIME_GLOB: Final = "/usr/lib/*/faketime/libfaketime.so.1"
LIBFAKETIME_PATHS: Final = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def libfaketime_path() -> str | None:
    """The preloadable libfaketime on this machine, or None."""
    found = [p for p in LIBFAKETIME_PATHS if os.path.exists(p)]
    found += sorted(str(p) for p in Path("/").glob(LIBFAKETIME_GLOB.lstrip("/")))
    return found[0] if found else None


#: How often the harness re-writes the clock file of a node whose clock runs at a rate.
DRIFT_STEP_S: Final = 0.1


def faketime_spec(offset_s: float) -> str:
    """The line libfaketime reads from FAKETIME_TIMESTAMP_FILE: an offset in seconds. No
    ``x`` speed factor: libfaketime 0.9.10 applies it to Python's GIL waits too, stalling a
    node for 0.5 s and more (x0.55) or for good (x2); rates are steps of the offset instead."""
    return f"{offset_s:+.3f}\n"


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
            f'dc = "{member.dc}"',
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
    dc: str = "jepsen"

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
    ``{"leader_fallback_ms": 2000}``); the budgetd defaults otherwise. ``canary`` starts every
    node as a deliberately broken budgetd (jepsen_lite.canaries); ``faketime`` preloads
    libfaketime so ``set_clock`` can move a node's wall clock (jepsen_lite.clock); ``power_loss``
    puts each node's data dir on lazyfs, for ``power_off``.

    ``dcs`` (node id → data center, every node) turns on WAN mode: each node's config names
    its ``dc``, and node-to-node TCP runs through a relay (jepsen_lite.relay) whose delays
    ``set_latency`` and ``clear_latency`` change during a run.
    """

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        raft: Mapping[str, int] | None = None,
        python: str = sys.executable,
        log_level: str = "info",
        dcs: Mapping[str, str] | None = None,
        canary: str | None = None,
        faketime: bool = False,
        power_loss: bool = False,
    ) -> None:
        if not 1 <= size <= NODES_MAX:
            raise ValueError(f"size must be in 1..{NODES_MAX}, got {size}")
        #: Every node starts through ``python -m jepsen_lite.canaries <canary>`` (a
        #: deliberately broken budgetd, jepsen_lite.canaries); None: plain ``budgetd``.
        self.canary = canary
        if canary is not None:
            canary_module(canary)  # UnknownMode (a ValueError) naming the known modes
        #: Nodes run with libfaketime preloaded, each reading its own clock file (set_clock).
        self.faketime = faketime
        self._libfaketime: str | None = None
        if faketime:
            self._libfaketime = libfaketime_path()
            if self._libfaketime is None:
                raise Refused(
                    "faketime=True needs libfaketime (libfaketime.so.1): "
                    "apt-get install -y faketime"
                )
        #: {node id: (offset_s, rate, when set)} as last set; absent means the real clock.
        self._clocks: dict[str, tuple[float, float, float]] = {}
        self._clock_lock = threading.Lock()
        self._drift_stop = threading.Event()
        self._drift: threading.Thread | None = None
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
        self.dcs = None if dcs is None else self._place(dcs)
        self._relay: WanRelay | None = None
        #: With ``power_loss``, each node's data dir is a lazyfs mount (jepsen_lite.lazyfs) over
        #: ``<root>/disks/<node>``, which holds only what the node synced.
        self.power_loss = power_loss
        self._mounts: dict[str, LazyMount] = {}
        if power_loss:
            self._mounts = {
                n.node_id: LazyMount(
                    self.root / "disks" / n.node_id,
                    self.root / n.node_id,
                    name=f"jl-lazyfs-{self.run_id}-{n.node_id}",
                    log=self.root / f"lazyfs-{n.node_id}.log",
                    python=python,
                )
                for n in self.nodes
            }

    def _ip(self, octet: int) -> str:
        return f"10.77.{self.subnet_octet}.{octet}"

    def _place(self, dcs: Mapping[str, str]) -> dict[str, str]:
        """Check ``dcs`` names every node and only nodes, and set each node's ``dc``."""
        extra = sorted(set(dcs) - set(self.node_ids))
        missing = sorted(set(self.node_ids) - set(dcs))
        if extra or missing:
            raise ValueError(f"dcs must name every node once: unknown {extra}, missing {missing}")
        for node in self.nodes:
            node.dc = check_dc(dcs[node.node_id])
        return {node_id: dcs[node_id] for node_id in self.node_ids}

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
        reason = preflight() or (fuse_preflight() if self.power_loss else None)
        if reason is not None:
            raise Refused(reason)
        remove_stale()
        remove_stale_mounts(_alive)
        self._add_namespace(self.control)
        self._ip_in(self.control, "link", "set", "lo", "up")
        run(["ip", "netns", "exec", self.control, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        for node in self.nodes:
            self._add_namespace(node.namespace)
            link = f"v-{node.node_id}"
            # Made in the control namespace, then the peer moved and renamed: `peer ... netns`
            # in one command fails inside a user namespace (iproute2 6.1).
            peer = f"p-{node.node_id}"
            self._ip_in(self.control, "link", "add", link, "type", "veth", "peer", "name", peer)
            self._ip_in(self.control, "link", "set", peer, "netns", node.namespace)
            self._ip_in(node.namespace, "link", "set", peer, "name", "eth0")
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
        if self.dcs is not None:
            self._install_relay(self.dcs)
        self._write_folder()

    def _install_relay(self, dcs: Mapping[str, str]) -> None:
        addresses = {node.node_id: node.ip for node in self.nodes}
        relay = WanRelay(self.control, self.control_ip, addresses, dcs, table=TABLE)
        self._relay = relay
        relay.install()
        self.net.on_apply(relay.set_cut)

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
        self._drift_stop.set()
        if self._drift is not None:
            self._drift.join()
        try:
            self.stop_all()
        except Exception as error:  # keep tearing down; report at the end
            problems.append(f"stopping nodes: {error}")
        for node_id, mount in self._mounts.items():
            try:
                mount.unmount()
            except Exception as error:
                problems.append(f"unmounting {node_id}'s lazyfs: {error}")
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._relay is not None:
            try:
                self._relay.close()
            except SandboxError as error:
                problems.append(str(error))
            self._relay = None
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
        mount = self._mounts.get(node_id)
        if mount is not None and mount.process is not None and not mount.serving:
            raise SandboxError(f"{node_id}'s lazyfs daemon exited; see {mount.log}")
        if mount is not None and mount.process is None:
            mount.mount()  # after a power cut: a fresh mount of what survived
        command = ["ip", "netns", "exec", node.namespace, *self._budgetd_argv(node)]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **self._faketime_environment(node)}
        self._write_clock(node_id)
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

    def _launcher(self) -> list[str]:
        """The command before budgetd's CLI arguments: budgetd, or a canary around it."""
        if self.canary is None:
            return [self.python, "-m", "budgetd"]
        return [self.python, "-m", "jepsen_lite.canaries", self.canary]

    # Clocks (libfaketime) -----------------------------------------------------------------------

    def clock_file(self, node_id: str) -> Path:
        return self.root / f"{self.node(node_id).node_id}.faketime"

    def _faketime_environment(self, node: Node) -> dict[str, str]:
        """libfaketime preloaded, reading the node's clock file on every call (no cache), the
        wall clock only: CLOCK_MONOTONIC stays real (FAKETIME_DONT_FAKE_MONOTONIC). Its
        "monotonic fix" (on by default with this glibc) stretches Python's GIL hand-over
        waits to 0.5 s and more, long enough to stall Raft heartbeats and churn elections
        on an idle cluster, so it is switched off (FAKETIME_FORCE_MONOTONIC_FIX=0)."""
        if self._libfaketime is None:
            return {}
        return {
            "LD_PRELOAD": self._libfaketime,
            "FAKETIME_TIMESTAMP_FILE": str(self.clock_file(node.node_id)),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_FORCE_MONOTONIC_FIX": "0",
        }

    def _write_clock(self, node_id: str) -> None:
        if not self.faketime:
            return
        with self._clock_lock:
            offset_s, _ = self._clock_now(node_id)
            path = self.clock_file(node_id)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(faketime_spec(offset_s), encoding="utf-8")
            tmp.replace(path)  # a reader sees the old line or the new one, never half of one

    def _clock_now(self, node_id: str) -> tuple[float, float]:
        offset_s, rate, since = self._clocks.get(node_id, (0.0, 1.0, 0.0))
        return offset_s + (rate - 1.0) * (time.time() - since), rate

    def _drift_forever(self) -> None:
        while not self._drift_stop.wait(DRIFT_STEP_S):
            for node_id in [n for n, c in list(self._clocks.items()) if c[1] != 1.0]:
                self._write_clock(node_id)

    def set_clock(self, node_id: str, *, offset_s: float, rate: float = 1.0) -> None:
        """From now on ``node_id``'s wall clock reads real time + ``offset_s`` and runs at
        ``rate`` × real speed: libfaketime re-reads the node's clock file on every call, and a
        harness thread re-writes it every DRIFT_STEP_S while a rate is not 1 (so the clock
        advances in steps: never backwards for rates > 0). No restart. Needs
        ``faketime=True``. Monotonic time is never faked (README: what is faked)."""
        if not self.faketime:
            raise SandboxError("set_clock needs Sandbox(..., faketime=True)")
        if not 0.0 < rate <= 10.0:
            raise ValueError(f"rate must be in (0, 10], got {rate}")
        self.node(node_id)
        with self._clock_lock:
            self._clocks[node_id] = (float(offset_s), float(rate), time.time())
        self._write_clock(node_id)
        if rate != 1.0 and self._drift is None:
            self._drift = threading.Thread(
                target=self._drift_forever, name="jl-clock-drift", daemon=True
            )
            self._drift.start()

    def reset_clock(self, node_id: str) -> None:
        """``node_id``'s wall clock back to real time at real speed."""
        if not self.faketime:
            raise SandboxError("reset_clock needs Sandbox(..., faketime=True)")
        self.node(node_id)
        with self._clock_lock:
            self._clocks.pop(node_id, None)
        self._write_clock(node_id)

    def clock(self, node_id: str) -> tuple[float, float]:
        """``(offset_s, rate)`` of ``node_id``'s wall clock now; (0.0, 1.0) for real time."""
        self.node(node_id)
        with self._clock_lock:
            return self._clock_now(node_id)

    def _budgetd_argv(self, node: Node) -> list[str]:
        """The node's command line inside its namespace."""
        return [
            *self._launcher(), "run",
            "--config", str(node.config), "--log-level", self.log_level,
        ]  # fmt: skip

    @property
    def mounts(self) -> Mapping[str, LazyMount]:
        """{node id: its lazyfs mount}; empty without ``power_loss``."""
        return dict(self._mounts)

    def power_off(self, node_id: str) -> None:
        """A power cut: kill -9 the node, then cut its lazyfs mount, so its data dir keeps only
        what it had fsynced (jepsen_lite.lazyfs's model). The node stays down; ``start`` mounts
        what survived and starts it. Needs ``Sandbox(..., power_loss=True)``."""
        mount = self._mounts.get(node_id)
        if mount is None:
            raise SandboxError("power_off needs Sandbox(..., power_loss=True)")
        self.kill(node_id)
        mount.power_off()

    def kill(self, node_id: str) -> None:
        """kill -9 by PID: no clean shutdown (a paused node dies too). ``start`` brings it back
        on the same data dir."""
        node = self.node(node_id)
        process = node.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_GRACE_S)
        node.paused = False

    def stop(self, node_id: str) -> None:
        """A clean stop by PID: SIGCONT (a paused node could not act on it) and SIGTERM, then
        SIGKILL after STOP_GRACE_S. ``start`` brings it back on the same data dir."""
        node = self.node(node_id)
        process = node.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
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

    # WAN mode -----------------------------------------------------------------------------------

    @property
    def relay(self) -> WanRelay:
        """The WAN relay; SandboxError unless the sandbox was built with ``dcs``."""
        if self._relay is None:
            raise SandboxError("no WAN relay: build the sandbox with dcs={node id: dc}")
        return self._relay

    def set_latency(
        self, dc_a: str, dc_b: str, *, one_way_ms: float, jitter_ms: float = 0.0
    ) -> None:
        """Hold every chunk of node-to-node TCP between ``dc_a`` and ``dc_b`` (both ways)
        ``one_way_ms`` ± ``jitter_ms`` from now on; ValueError for an unknown data center or a
        delay out of range."""
        self.relay.set_latency(
            dc_a, dc_b, one_way_s=one_way_ms / 1000.0, jitter_s=jitter_ms / 1000.0
        )

    def clear_latency(self) -> None:
        """No added delay on any link from now on."""
        self.relay.clear_latency()
