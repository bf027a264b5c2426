"""The client and generator of a run: worker threads doing direct spends and reserve/commit
pairs on one small campaign tree, each op recorded in a History with its outcome; a sampler of
every node's ``/v1/cluster`` view; the final strong and local reads. Talks to budgetd only
over HTTP; imports no budgetd module.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jepsen_lite.history import History, Op, Process, outcome
from jepsen_lite.http import NamespaceHttp, Response
from jepsen_lite.sandbox import Sandbox

__all__ = [
    "CAMPAIGNS",
    "LEAF",
    "LEAF_B",
    "LEAVES",
    "ROOT",
    "ClusterSample",
    "ClusterSampler",
    "Resend",
    "Workload",
]

ROOT: Final = "jl"
LEAF: Final = "jl:a"
#: Per worker thread; each op is one HTTP request.
WORKERS_MAX: Final = 8
OPS_MAX: Final = 50_000
RESERVATION_TTL_MS: Final = 300_000
#: Setup writes are retried (same idempotency key) until this deadline.
SETUP_S: Final = 30.0

#: A small daily cap on LEAF, so reserves there run into ``budget_exhausted`` (and direct
#: spends into overspend) during a run; LEAF_B's cap is never reached, so reserves keep going.
LEAF_DAILY_MICROS: Final = 60_000_000
LEAF_B: Final = "jl:b"
LEAVES: Final = (LEAF, LEAF_B)
CAMPAIGNS: Final = (ROOT, *LEAVES)
#: Ops that write (and are re-sent by ``resend``).
WRITES: Final = ("spend", "reserve", "commit")
#: Resends in flight at once, and the attempts per resend while the answer is not an answer.
RESEND_WORKERS: Final = 12
RESEND_ATTEMPTS: Final = 3

_TREE: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    (
        ROOT,
        {
            "currency": "USD",
            "timezone": "UTC",
            "daily_budget_micros": 10**13,
            "total_budget_micros": 10**15,
            "pacing": {"mode": "asap"},
            "status": "active",
        },
    ),
    (
        LEAF,
        {
            "daily_budget_micros": LEAF_DAILY_MICROS,
            "total_budget_micros": 10**15,
            "pacing": {"mode": "asap"},
            "status": "active",
        },
    ),
    (
        LEAF_B,
        {
            "daily_budget_micros": 10**12,
            "total_budget_micros": 10**15,
            "pacing": {"mode": "asap"},
            "status": "active",
        },
    ),
)
#: The fields of a campaign read kept in a ``read`` op (I1 is checked on every ok read).
READ_FIELDS: Final = (
    "spent_total_micros",
    "held_total_micros",
    "overspend_total_micros",
    "total_budget_micros",
    "spent_today_micros",
    "held_micros",
    "overspend_micros",
    "daily_budget_micros",
    "day",
)


@dataclass(frozen=True)
class Resend:
    """One re-send of a history op with its original Idempotency-Key, method, path and body:
    ``round`` 1 or 2, the answer (``status`` None when none came), the attempts it took and
    whether an attempt before the last one may have reached the server (then a ``replayed``
    answer cannot tell the original application from that attempt's)."""

    key: str
    f: str
    campaign_id: str
    amount_micros: int
    original: str
    round: int
    status: int | None
    body: Any
    attempts: int
    earlier_attempt_maybe_applied: bool
    error: str | None = None


class Workload:
    """``workers`` threads, each a sequence of ops until ``ops_max`` ops in all have been
    invoked or ``duration_s`` has passed. An op goes to a random node; ops: ``spend`` (direct,
    on a random leaf), ``reserve`` then, if it was granted, ``commit`` of what was granted
    (final), and ``read`` (a strong campaign read, ``read_share`` of the ops, any campaign).

    Write ops keep their request (``method``, ``path``, ``body``) in the invoke's value and the
    whole 2xx answer as ``result`` in the completion's, so ``resend`` can repeat them."""

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
        read_share: float = 0.15,
        seed: int = 0,
    ) -> None:
        if not 0 < workers <= WORKERS_MAX:
            raise ValueError(f"workers must be in 1..{WORKERS_MAX}, got {workers}")
        if not 0 < ops_max <= OPS_MAX:
            raise ValueError(f"ops_max must be in 1..{OPS_MAX}, got {ops_max}")
        if not 0.0 <= read_share < 1.0:
            raise ValueError(f"read_share must be in [0, 1), got {read_share}")
        self.sandbox = sandbox
        self.history = history
        self.workers = workers
        self.ops_max = ops_max
        self.duration_s = duration_s
        self.request_timeout_s = request_timeout_s
        self.pause_s = pause_s
        self.read_share = read_share
        self.seed = seed
        # Room beyond the workers for probes (``read_op`` from the nemesis side).
        self._http = NamespaceHttp(sandbox.control, sandbox.token, workers=min(workers + 4, 16))
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

    def state(self, node_id: str, campaign_id: str, *, consistency: str) -> dict[str, Any] | None:
        """The campaign read through ``node_id``; None unless it answered 200."""
        path = f"/v1/campaigns/{campaign_id}?consistency={consistency}"
        got = self._http.request(
            self.sandbox.node(node_id).url + path, timeout_s=self.request_timeout_s
        )
        if got.status != 200 or not isinstance(got.body, dict):
            return None
        return got.body

    def read(self, node_id: str, campaign_id: str, *, consistency: str) -> int | None:
        """``spent_total_micros`` of ``campaign_id`` read through ``node_id``; None unless
        it answered 200."""
        body = self.state(node_id, campaign_id, consistency=consistency)
        spent = None if body is None else body.get("spent_total_micros")
        return spent if isinstance(spent, int) else None

    def final_states(self, *, consistency: str) -> dict[str, dict[str, dict[str, Any] | None]]:
        """{node id: {campaign id: its read or None}} for every campaign."""
        return {
            node_id: {c: self.state(node_id, c, consistency=consistency) for c in CAMPAIGNS}
            for node_id in self.sandbox.node_ids
        }

    def final_reads(self, *, consistency: str) -> dict[str, dict[str, int | None]]:
        """{node id: {campaign id: spent_total_micros or None}} for every campaign."""
        return spent_of(self.final_states(consistency=consistency))

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
            leaf = rng.choice(LEAVES)
            dice = rng.random()
            if dice < self.read_share:
                self.read_op(process, rng.choice(self.sandbox.node_ids), rng.choice(CAMPAIGNS))
                time.sleep(self.pause_s)
                continue
            if dice < self.read_share + (1.0 - self.read_share) / 2:
                done = self._op(
                    process,
                    rng,
                    "spend",
                    {"campaign_id": leaf, "amount_micros": amount, "key": key},
                    "POST",
                    f"/v1/campaigns/{leaf}/spend",
                    {"amount_micros": amount, "bidder_id": f"jl-{worker}"},
                )
            else:
                done = self._op(
                    process,
                    rng,
                    "reserve",
                    {"campaign_id": leaf, "amount_micros": amount, "key": key},
                    "POST",
                    "/v1/reservations",
                    {
                        "campaign_id": leaf,
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
                            "campaign_id": leaf,
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

    def contend(
        self, node_id: str, *, campaign_id: str, amount_micros: int, count: int
    ) -> list[Op]:
        """``count`` reserves of ``amount_micros`` on ``campaign_id``, released at once (a
        thread each, processes ``contend-<i>``) to ``node_id``: concurrent requests on one cap,
        which a store deciding outside the log grants past the cap. Their completions."""
        if not 0 < count <= WORKERS_MAX:
            raise ValueError(f"count must be in 1..{WORKERS_MAX}, got {count}")
        start = threading.Barrier(count)
        done: list[Op] = []

        def one(i: int) -> None:
            key = f"contend-{i}"
            start.wait()
            done.append(
                self._op(
                    key,
                    random.Random(i),
                    "reserve",
                    {"campaign_id": campaign_id, "amount_micros": amount_micros, "key": key},
                    "POST",
                    "/v1/reservations",
                    {
                        "campaign_id": campaign_id,
                        "amount_micros": amount_micros,
                        "ttl_ms": RESERVATION_TTL_MS,
                        "bidder_id": key,
                    },
                    node_id=node_id,
                )
            )

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return done

    def _retire(self, process: Process, done: Op) -> Process:
        """A new process id after an info (the Jepsen rule); the same one otherwise."""
        if done.type == "info" and isinstance(process, int):
            return process + self.workers
        return process

    def read_op(self, process: Process, node_id: str, campaign_id: str) -> Op:
        """A strong read (the default consistency) of ``campaign_id`` through ``node_id``,
        recorded as a ``read`` op: ok with READ_FIELDS on a 200, fail otherwise (a read
        changes nothing, so an unanswered one is not indeterminate)."""
        invoked = self.history.invoke(process, "read", {"campaign_id": campaign_id}, node=node_id)
        got = self._http.request(
            self.sandbox.node(node_id).url + f"/v1/campaigns/{campaign_id}",
            timeout_s=self.request_timeout_s,
        )
        if got.status == 200 and isinstance(got.body, dict):
            fields = {name: got.body.get(name) for name in READ_FIELDS}
            return self.history.complete(invoked, "ok", {"status": 200, **fields})
        code = got.body.get("code") if isinstance(got.body, dict) else None
        error = got.error or str(code or got.status)
        return self.history.complete(invoked, "fail", {"status": got.status}, error=error)

    def _op(
        self,
        process: Process,
        rng: random.Random,
        f: str,
        value: dict[str, Any],
        method: str,
        path: str,
        body: dict[str, Any],
        *,
        node_id: str | None = None,
    ) -> Op:
        node_id = node_id or rng.choice(self.sandbox.node_ids)
        request = {"method": method, "path": path, "body": body}
        invoked = self.history.invoke(process, f, {**value, "request": request}, node=node_id)
        response = self._send(node_id, method, path, body, str(value["key"]))
        result: dict[str, Any] = {"status": response.status}
        if isinstance(response.body, dict):
            for name in ("code", "reservation_id", "granted_micros", "committed_micros"):
                if name in response.body:
                    result[name] = response.body[name]
            if "replayed" in response.body:
                result["replayed"] = response.body["replayed"]
            if 200 <= (response.status or 0) < 300:
                result["result"] = response.body
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

    # Re-sending (I3) ----------------------------------------------------------------------------

    def resend(self, node_id: str, ops: list[Op], *, round_: int, limit_s: float) -> list[Resend]:
        """Re-send every op in ``ops`` (invokes of WRITES carrying their ``request``) to
        ``node_id`` with its original key, method, path and body, RESEND_WORKERS at a time.
        An attempt without an answer (no status, 503, 504, other 5xx) is retried up to
        RESEND_ATTEMPTS times while ``limit_s`` lasts."""
        deadline = time.monotonic() + limit_s
        http = NamespaceHttp(self.sandbox.control, self.sandbox.token, workers=RESEND_WORKERS)
        try:
            futures = [
                http.submit_call(self._resend_one(http, node_id, op, round_, deadline))
                for op in ops
            ]
            return [future.result() for future in futures]
        finally:
            http.close()

    def _resend_one(
        self, http: NamespaceHttp, node_id: str, op: Op, round_: int, deadline: float
    ) -> Callable[[], Resend]:
        request = op.value["request"]
        key = str(op.value["key"])
        url = self.sandbox.node(node_id).url + str(request["path"])

        def call() -> Resend:
            got = Response(None, None, {}, 0.0, "deadline passed before sending")
            attempts = 0
            maybe_applied = False
            while attempts < RESEND_ATTEMPTS and time.monotonic() < deadline:
                if attempts and outcome(got) == "info":
                    maybe_applied = True
                attempts += 1
                got = http.request_here(
                    url,
                    str(request["method"]),
                    request["body"],
                    headers={"Idempotency-Key": key},
                    timeout_s=self.request_timeout_s,
                )
                if got.status is not None and got.status < 500:
                    break
                time.sleep(0.2)
            return Resend(
                key=key,
                f=op.f,
                campaign_id=str(op.value["campaign_id"]),
                amount_micros=int(op.value["amount_micros"]),
                original=str(op.index),
                round=round_,
                status=got.status,
                body=got.body,
                attempts=attempts,
                earlier_attempt_maybe_applied=maybe_applied,
                error=got.error,
            )

        return call


def spent_of(
    states: Mapping[str, Mapping[str, Mapping[str, Any] | None]],
) -> dict[str, dict[str, int | None]]:
    """{reader: {campaign: spent_total_micros or None}} of {reader: {campaign: read}}."""
    spent: dict[str, dict[str, int | None]] = {}
    for reader, by_campaign in states.items():
        spent[reader] = {}
        for campaign_id, body in by_campaign.items():
            value = None if body is None else body.get("spent_total_micros")
            spent[reader][campaign_id] = value if isinstance(value, int) else None
    return spent


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
