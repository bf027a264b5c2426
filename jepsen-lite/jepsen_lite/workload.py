"""The client and generator of a run: worker threads doing direct spends and reserve/commit
pairs on one small campaign tree, each op recorded in a History with its outcome; a sampler of
every node's ``/v1/cluster`` view; the final strong and local reads. Talks to budgetd only
over HTTP; imports no budgetd module.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from jepsen_lite.history import History, Op, Process, outcome
from jepsen_lite.http import NamespaceHttp, Response
from jepsen_lite.sandbox import Sandbox

__all__ = ["LEAF", "ROOT", "ClusterSample", "ClusterSampler", "Workload"]

ROOT: Final = "jl"
LEAF: Final = "jl:a"
#: Per worker thread; each op is one HTTP request.
WORKERS_MAX: Final = 8
OPS_MAX: Final = 5000
RESERVATION_TTL_MS: Final = 300_000
#: Setup writes are retried (same idempotency key) until this deadline.
SETUP_S: Final = 30.0

_TREE: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    (
        ROOT,
        {
            "currency": "USD",
            "timezone": "UTC",
            "total_budget_micros": 10**15,
            "pacing": {"mode": "asap"},
            "status": "active",
        },
    ),
    (LEAF, {"total_budget_micros": 10**15, "pacing": {"mode": "asap"}, "status": "active"}),
)


class Workload:
    """``workers`` threads, each a sequence of ops until ``ops_max`` ops in all have been
    invoked or ``duration_s`` has passed. An op goes to a random node; ops: ``spend`` (direct,
    on LEAF), ``reserve`` then, if it was granted, ``commit`` of what was granted (final)."""

    def __init__(
        self,
        sandbox: Sandbox,
        history: History,
        *,
        workers: int = 4,
        ops_max: int = 400,
        duration_s: float = 20.0,
        request_timeout_s: float = 4.0,
        pause_s: float = 0.02,
        seed: int = 0,
    ) -> None:
        if not 0 < workers <= WORKERS_MAX:
            raise ValueError(f"workers must be in 1..{WORKERS_MAX}, got {workers}")
        if not 0 < ops_max <= OPS_MAX:
            raise ValueError(f"ops_max must be in 1..{OPS_MAX}, got {ops_max}")
        self.sandbox = sandbox
        self.history = history
        self.workers = workers
        self.ops_max = ops_max
        self.duration_s = duration_s
        self.request_timeout_s = request_timeout_s
        self.pause_s = pause_s
        self.seed = seed
        self._http = NamespaceHttp(sandbox.control, sandbox.token, workers=workers)
        self._lock = threading.Lock()
        self._invoked = 0
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # Setup and final reads ----------------------------------------------------------------------

    def setup(self) -> None:
        """Create the campaign tree (through any node, retrying); raises if it cannot."""
        deadline = time.monotonic() + SETUP_S
        for campaign_id, body in _TREE:
            last: Response | None = None
            while True:
                node_id = self.sandbox.node_ids[0]
                last = self._send(
                    node_id, "PUT", f"/v1/campaigns/{campaign_id}", body, f"setup-{campaign_id}"
                )
                if last.status in (200, 201):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot create {campaign_id}: {last}")
                time.sleep(0.2)

    def read(self, node_id: str, campaign_id: str, *, consistency: str) -> int | None:
        """``spent_total_micros`` of ``campaign_id`` read through ``node_id``; None unless
        it answered 200."""
        path = f"/v1/campaigns/{campaign_id}?consistency={consistency}"
        got = self._http.request(
            self.sandbox.node(node_id).url + path, timeout_s=self.request_timeout_s
        )
        if got.status != 200 or not isinstance(got.body, dict):
            return None
        spent = got.body.get("spent_total_micros")
        return spent if isinstance(spent, int) else None

    def final_reads(self, *, consistency: str) -> dict[str, dict[str, int | None]]:
        """{node id: {campaign id: spent_total_micros or None}} for ROOT and LEAF."""
        return {
            node_id: {c: self.read(node_id, c, consistency=consistency) for c in (ROOT, LEAF)}
            for node_id in self.sandbox.node_ids
        }

    # Running ------------------------------------------------------------------------------------

    def start(self) -> None:
        for worker in range(self.workers):
            thread = threading.Thread(
                target=self._worker, args=(worker,), name=f"jl-worker-{worker}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def join(self) -> None:
        """Wait for every worker (each ends by ``ops_max``/``duration_s``)."""
        for thread in self._threads:
            thread.join()

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def close(self) -> None:
        self.stop()
        self._http.close()

    def _take(self) -> bool:
        with self._lock:
            if self._invoked >= self.ops_max:
                return False
            self._invoked += 1
            return True

    def _worker(self, worker: int) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        process: Process = worker
        deadline = time.monotonic() + self.duration_s
        serial = 0
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            serial += 1
            key = f"w{worker}-{serial}"
            amount = 1000 * rng.randint(1, 999)
            if rng.random() < 0.5:
                done = self._op(
                    process,
                    rng,
                    "spend",
                    {"campaign_id": LEAF, "amount_micros": amount, "key": key},
                    "POST",
                    f"/v1/campaigns/{LEAF}/spend",
                    {"amount_micros": amount, "bidder_id": f"jl-{worker}"},
                )
            else:
                done = self._op(
                    process,
                    rng,
                    "reserve",
                    {"campaign_id": LEAF, "amount_micros": amount, "key": key},
                    "POST",
                    "/v1/reservations",
                    {
                        "campaign_id": LEAF,
                        "amount_micros": amount,
                        "ttl_ms": RESERVATION_TTL_MS,
                        "bidder_id": f"jl-{worker}",
                    },
                )
                if done.type == "ok" and self._take():
                    rid = done.value["reservation_id"]
                    granted = int(done.value["granted_micros"])
                    process = self._retire(process, done)
                    done = self._op(
                        process,
                        rng,
                        "commit",
                        {
                            "campaign_id": LEAF,
                            "reservation_id": rid,
                            "amount_micros": granted,
                            "key": f"{key}-c",
                        },
                        "POST",
                        f"/v1/reservations/{rid}/commit",
                        {"amount_micros": granted, "final": True},
                    )
            process = self._retire(process, done)
            time.sleep(self.pause_s)

    def _retire(self, process: Process, done: Op) -> Process:
        """A new process id after an info (the Jepsen rule); the same one otherwise."""
        if done.type == "info" and isinstance(process, int):
            return process + self.workers
        return process

    def _op(
        self,
        process: Process,
        rng: random.Random,
        f: str,
        value: dict[str, Any],
        method: str,
        path: str,
        body: dict[str, Any],
    ) -> Op:
        node_id = rng.choice(self.sandbox.node_ids)
        invoked = self.history.invoke(process, f, value, node=node_id)
        response = self._send(node_id, method, path, body, str(value["key"]))
        result: dict[str, Any] = {"status": response.status}
        if isinstance(response.body, dict):
            for name in ("code", "reservation_id", "granted_micros", "committed_micros"):
                if name in response.body:
                    result[name] = response.body[name]
            if "replayed" in response.body:
                result["replayed"] = response.body["replayed"]
        error = response.error
        if error is None and not 200 <= (response.status or 0) < 300:
            error = str(result.get("code", response.status))
        return self.history.complete(invoked, outcome(response), result, error=error)

    def _send(
        self, node_id: str, method: str, path: str, body: dict[str, Any], key: str
    ) -> Response:
        return self._http.request(
            self.sandbox.node(node_id).url + path,
            method,
            body,
            headers={"Idempotency-Key": key},
            timeout_s=self.request_timeout_s,
        )


@dataclass(frozen=True)
class ClusterSample:
    """One node's answer to ``GET /v1/cluster`` at ``time_ns`` (the history's clock)."""

    time_ns: int
    node: str
    term: int
    leader_id: str | None
    applied_index: int


class ClusterSampler:
    """A thread that asks every node for its cluster view every ``interval_s`` (nodes that
    do not answer are skipped), until stopped."""

    def __init__(self, sandbox: Sandbox, history: History, *, interval_s: float = 0.2) -> None:
        self.sandbox = sandbox
        self.history = history
        self.interval_s = interval_s
        self.samples: list[ClusterSample] = []
        self._http = NamespaceHttp(sandbox.control, sandbox.token, workers=len(sandbox.nodes))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jl-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._http.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            futures = [
                self._http.submit(node.url + "/v1/cluster", timeout_s=1.0)
                for node in self.sandbox.nodes
            ]
            for node, future in zip(self.sandbox.nodes, futures, strict=True):
                self._record(node.node_id, future.result())
            self._stop.wait(self.interval_s)

    def _record(self, node_id: str, got: Response) -> None:
        if got.status != 200 or not isinstance(got.body, Mapping):
            return
        body = got.body
        self.samples.append(
            ClusterSample(
                time_ns=self.history.clock_ns(),
                node=node_id,
                term=int(body["term"]),
                leader_id=body.get("leader_id"),
                applied_index=int(body["applied_index"]),
            )
        )
