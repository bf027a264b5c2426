"""The etcd side of the budgetd benchmark: a durable 3-member etcd on loopback and the budget
"recipe" an ad platform would otherwise build on it.

One reserve = a linearizable read of the campaign's remaining budget (key ``budget/<campaign>``,
value its remaining micros) and a compare-and-swap transaction that, if the key's mod revision
is unchanged, writes the new remaining budget and the reservation record (``res/<id>``, value its
amount) together; a lost race reads and tries again (up to ``CAS_TRIES_MAX``), an exhausted budget
is a refusal. Spoken over etcd's JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``), so the load
generator is the same aiohttp code as budgetd's. etcd fsyncs its WAL before it answers (its
default; the script never passes ``--unsafe-no-fsync``).

Used by scripts/bench ``--vs-etcd`` (benchlib.loadgen drives it from the load-generator
processes); etcd comes from Debian's etcd-server package (`ensure_etcd` installs it with apt-get
when run as root).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from budgetd.localcluster import free_ports

CAS_TRIES_MAX = 64
START_TIMEOUT_S = 30.0
APT_TIMEOUT_S = 600.0


def ensure_etcd() -> str:
    """The path of the etcd binary; installs Debian's etcd-server with apt-get when it is missing
    and this runs as root. Raises SystemExit saying what to do otherwise."""
    binary = shutil.which("etcd")
    if binary is not None:
        return binary
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit("--vs-etcd needs etcd on PATH: apt-get install -y etcd-server (as root)")
    print("installing etcd-server with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "etcd-server"],
    ):
        subprocess.run(
            command, check=True, env=env, timeout=APT_TIMEOUT_S, stdout=subprocess.DEVNULL
        )
    binary = shutil.which("etcd")
    if binary is None:
        raise SystemExit("apt-get installed etcd-server but etcd is still not on PATH")
    return binary


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class EtcdCluster:
    """Three etcd members on loopback, each with its own data dir under ``root``; started and
    stopped by PID."""

    root: Path
    size: int = 3
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)

    def start(self) -> None:
        binary = ensure_etcd()
        ports = free_ports(2 * self.size)
        names = [f"e{i}" for i in range(self.size)]
        peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(self.size)]
        self.client_urls = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(self.size)]
        initial = ",".join(f"{name}={url}" for name, url in zip(names, peers, strict=True))
        for index, name in enumerate(names):
            data = self.root / name
            data.mkdir(parents=True, exist_ok=True)
            log = (self.root / f"{name}.log").open("wb")
            command = [
                binary,
                "--name", name,
                "--data-dir", str(data),
                "--listen-client-urls", self.client_urls[index],
                "--advertise-client-urls", self.client_urls[index],
                "--listen-peer-urls", peers[index],
                "--initial-advertise-peer-urls", peers[index],
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{os.getpid()}",
                "--log-level", "warn",
                "--quota-backend-bytes", str(4 * 1024**3),
            ]  # fmt: skip
            self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                async with session.post(
                    self.client_urls[0] + "/v3/kv/range", json={"key": _b64("ready")}
                ) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.1)
        raise SystemExit("etcd did not become ready:\n" + self.logs())

    async def leader_url(self, session: aiohttp.ClientSession) -> str:
        """The client URL of the member that leads (clients of the benchmark talk to it, as
        budgetd's do to budgetd's leader)."""
        for url in self.client_urls:
            async with session.post(url + "/v3/maintenance/status", json={}) as response:
                body = await response.json(content_type=None)
            if body.get("leader") == body.get("header", {}).get("member_id"):
                return url
        raise SystemExit("etcd has no leader")

    @property
    def pids(self) -> dict[str, int]:
        """Member name -> PID of the members started."""
        return {f"e{index}": process.pid for index, process in enumerate(self.processes)}

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-2000:] for path in sorted(self.root.glob("*.log"))
        )


@contextmanager
def etcd_cluster(root: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class EtcdBudgets:
    """The read-then-CAS budget recipe against one etcd member's JSON gateway."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.cas_conflicts = 0

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.url + path, data=json.dumps(body)) as response:
            payload: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"etcd {path} answered {response.status}: {payload}")
            return payload

    async def put_budget(self, campaign: str, remaining_micros: int) -> None:
        await self._post(
            "/v3/kv/put",
            {"key": _b64(f"budget/{campaign}"), "value": _b64(str(remaining_micros))},
        )

    async def remaining(self, campaign: str) -> tuple[int, int]:
        """(remaining micros, mod revision), read linearizably (etcd's default)."""
        body = await self._post("/v3/kv/range", {"key": _b64(f"budget/{campaign}")})
        kv = body["kvs"][0]
        return int(base64.b64decode(kv["value"])), int(kv["mod_revision"])

    async def reserve(self, campaign: str, reservation_id: str, amount_micros: int) -> bool:
        """True when granted, False when the budget is exhausted."""
        key = _b64(f"budget/{campaign}")
        for _ in range(CAS_TRIES_MAX):
            remaining, revision = await self.remaining(campaign)
            if remaining < amount_micros:
                return False
            body = await self._post(
                "/v3/kv/txn",
                {
                    "compare": [
                        {
                            "key": key,
                            "target": "MOD",
                            "result": "EQUAL",
                            "mod_revision": str(revision),
                        }
                    ],
                    "success": [
                        {
                            "request_put": {
                                "key": key,
                                "value": _b64(str(remaining - amount_micros)),
                            }
                        },
                        {
                            "request_put": {
                                "key": _b64(f"res/{reservation_id}"),
                                "value": _b64(str(amount_micros)),
                            }
                        },
                    ],
                },
            )
            if body.get("succeeded"):
                return True
            self.cas_conflicts += 1
        raise RuntimeError(f"reserve on {campaign}: {CAS_TRIES_MAX} lost races in a row")

    async def reserved_total(self) -> tuple[int, int]:
        """(number of reservation records, their summed micros), read through the log."""
        prefix = "res/"
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = await self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)})
        kvs = body.get("kvs", [])
        return len(kvs), sum(int(base64.b64decode(kv["value"])) for kv in kvs)
