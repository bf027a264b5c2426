"""A bounded bidder load for operations tests: spends and reserve-then-commit pairs, each with its
own idempotency key, retried with the same key across the nodes until a definite answer — what
budget_client does — while every answer that was not definite is counted by its kind.

Owns the load's bookkeeping and the exactly-once check; talks to the cluster only over HTTP
(tests.cluster.harness). No timing is asserted: the load stops after a number of operations or
when told to, whichever comes first.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.cluster.harness import Cluster, Response

#: What a retrying client may see while nodes stop, restart or hand over leadership: each is
#: documented as "nothing was written" (503) or "retry with the same key" (504), or is a node
#: that is down (the client tries the next one).
RETRYABLE = frozenset(
    {
        "503 unavailable",
        "503 not_leader",
        "307 not_leader",
        "504 outcome_unknown",
        "connection refused",
        "connection error",
    }
)

CAMPAIGN = {
    "currency": "USD",
    "timezone": "UTC",
    "total_budget_micros": 10**12,
    "pacing": {"mode": "asap"},
    "status": "active",
}


@dataclass
class Load:
    """Run with `start`; `stop` and `join`; then `check` against the cluster."""

    cluster: Cluster
    campaign_id: str = "acme"
    ops_max: int = 2_000
    attempts_max: int = 400
    #: Nodes the load does not send to (a paused node would hold each request until timeout).
    avoid: frozenset[str] = frozenset()
    errors: Counter[str] = field(default_factory=Counter)
    spends: dict[str, int] = field(default_factory=dict)
    commits: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def acknowledged(self) -> int:
        with self._lock:
            return len(self.spends) + len(self.commits)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bidder-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float = 300.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the load did not stop"

    def wait_for(self, acknowledged: int, limit_s: float = 120.0) -> None:
        """Block until at least ``acknowledged`` writes were acknowledged (or the load failed)."""
        deadline = time.monotonic() + limit_s
        while self.acknowledged < acknowledged and time.monotonic() < deadline:
            if self.failures or (self._thread is not None and not self._thread.is_alive()):
                break
            time.sleep(0.05)
        assert not self.failures, self.failures
        assert self.acknowledged >= acknowledged, f"only {self.acknowledged} writes acknowledged"

    def _run(self) -> None:
        try:
            for i in range(self.ops_max):
                if self._stop.is_set():
                    return
                amount = 1_000 + i
                if i % 3 == 2:
                    self._reserve_and_commit(i, amount)
                else:
                    body = {"amount_micros": amount, "bidder_id": "load"}
                    path = f"/v1/campaigns/{self.campaign_id}/spend"
                    if self._write("POST", path, body, f"spend-{i}").status == 200:
                        with self._lock:
                            self.spends[f"spend-{i}"] = amount
        except AssertionError as error:
            self.failures.append(str(error))

    def _reserve_and_commit(self, i: int, amount: int) -> None:
        body = {
            "campaign_id": self.campaign_id,
            "amount_micros": amount * 2,
            "ttl_ms": 600_000,
            "bidder_id": "load",
        }
        granted = self._write("POST", "/v1/reservations", body, f"reserve-{i}")
        if granted.status != 201:
            return
        reservation_id = int(granted.body["reservation_id"])
        commit = {"amount_micros": amount, "final": True}
        path = f"/v1/reservations/{reservation_id}/commit"
        if self._write("POST", path, commit, f"commit-{i}").status == 200:
            with self._lock:
                self.commits[reservation_id] = amount

    def _write(self, method: str, path: str, body: Any, key: str) -> Response:
        """The same key until a definite answer, trying every running node in turn."""
        for _ in range(self.attempts_max):
            for node in self.cluster.nodes:
                if node.process is None or node.node_id in self.avoid:
                    continue
                try:
                    response = self.cluster.request(
                        node.node_id,
                        method,
                        path,
                        body,
                        headers={"Idempotency-Key": key},
                        timeout_s=15,
                    )
                except urllib.error.URLError as error:
                    refused = isinstance(error.reason, ConnectionRefusedError)
                    self.errors["connection refused" if refused else "connection error"] += 1
                    continue
                except OSError:
                    self.errors["connection error"] += 1
                    continue
                if response.status in (200, 201):
                    return response
                code = response.body.get("code") if isinstance(response.body, dict) else None
                kind = f"{response.status} {code}"
                self.errors[kind] += 1
                if kind not in RETRYABLE:
                    self.failures.append(f"{key}: {response}")
                    return response
            time.sleep(0.05)
        raise AssertionError(f"no definite answer for {key} after {self.attempts_max} rounds")

    def check(self, node_ids: list[str]) -> None:
        """Every acknowledged spend and commit is in the state of every node, exactly once."""
        assert not self.failures, self.failures
        unexpected = set(self.errors) - RETRYABLE
        assert not unexpected, f"errors that are not documented as retryable: {self.errors}"
        expected_total = sum(self.spends.values()) + sum(self.commits.values())
        for node_id in node_ids:
            campaign = self.cluster.request(
                node_id, "GET", f"/v1/campaigns/{self.campaign_id}?consistency=local"
            )
            assert campaign.status == 200, campaign
            # Writes whose outcome the load never learned (none, unless it was stopped mid-
            # retry) could only add to the total; every acknowledged one must be there once.
            assert campaign.body["spent_total_micros"] == expected_total, (
                node_id,
                campaign.body["spent_total_micros"],
                expected_total,
            )
            for reservation_id, amount in self.commits.items():
                path = f"/v1/reservations/{reservation_id}?consistency=local"
                reservation = self.cluster.request(node_id, "GET", path)
                assert reservation.status == 200, reservation
                assert reservation.body["committed_micros"] == amount, reservation.body


def put_campaign(cluster: Cluster, campaign_id: str = "acme") -> None:
    for node in cluster.nodes:
        if node.running:
            response = cluster.request(
                node.node_id, "PUT", f"/v1/campaigns/{campaign_id}", CAMPAIGN, follow=True
            )
            assert response.status in (200, 201), response
            return
    raise AssertionError("no node is running")
