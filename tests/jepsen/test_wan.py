"""WAN mode: node-to-node TCP through the control namespace's relay, with per data-center-pair
one-way delays. The delay is real (round trips grow by at least twice the one-way delay, the
physical bound), bytes keep their order under jitter, cuts refuse and reset relayed links,
an isolated leader is replaced, and a 5-node 2+2+1 run with the leader's data center cut off
and healed under seeded latency keeps every checker valid. Observations are printed (run with -s).
"""

from __future__ import annotations

import json
import random
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite import ClusterSampler, History, NamespaceHttp, Sandbox, SandboxError, Workload
from jepsen_lite.checkers import (
    compose,
    write_results,
)
from jepsen_lite.relay import CONNECTIONS_MAX, Link
from jepsen_lite.wan import WAN_RAFT, WanLatency, dc_layout
from tests.jepsen.helpers import agreed_leader, needs_sandbox, nemesis, settle, until

ECHO_PORT = 9000
ROUNDS = 8


def test_layouts_and_options_are_checked() -> None:
    assert dc_layout(3) == {"n1": "dc-a", "n2": "dc-b", "n3": "dc-c"}
    assert dc_layout(5) == {"n1": "dc-a", "n2": "dc-a", "n3": "dc-b", "n4": "dc-b", "n5": "dc-c"}
    fault = WanLatency(size=5)
    assert fault.name == "wan-latency"
    assert fault.sandbox_options == {"dcs": dc_layout(5), "raft": dict(WAN_RAFT)}
    with pytest.raises(ValueError, match="one_way_ms_min"):
        WanLatency(one_way_ms_min=50, one_way_ms_max=10)
    with pytest.raises(ValueError, match="missing"):
        Sandbox(Path("/nonexistent"), size=3, dcs={"n1": "dc-a", "n2": "dc-a"})
    with pytest.raises(ValueError, match="unknown"):
        Sandbox(Path("/nonexistent"), size=2, dcs={"n1": "a", "n2": "a", "n9": "b"})
    with pytest.raises(ValueError, match="data center name"):
        Sandbox(Path("/nonexistent"), size=1, dcs={"n1": "dc a"})
    plain = Sandbox(Path("/nonexistent"), size=1)
    with pytest.raises(SandboxError, match="no WAN relay"):
        plain.set_latency("dc-a", "dc-b", one_way_ms=10)


# Echo across the relay ----------------------------------------------------------------------------


class Echo:
    """A TCP echo server on ``node_id``'s address (inside its namespace), one thread per
    connection, until closed."""

    def __init__(self, sandbox: Sandbox, node_id: str) -> None:
        self.node = sandbox.node(node_id)
        self._runner = NamespaceHttp(self.node.namespace, "unused")
        self._listener = self._runner.submit_call(self._listen).result()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.node.ip, ECHO_PORT))
        listener.listen(16)
        return listener

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(5.0)
        self._runner.close()


@contextmanager
def in_namespace(sandbox: Sandbox, node_id: str) -> Iterator[Callable[[Callable[[], Any]], Any]]:
    """Run calls on a thread inside ``node_id``'s namespace (sockets made there leave from
    that node's address)."""
    runner = NamespaceHttp(sandbox.node(node_id).namespace, "unused")
    try:
        yield lambda call: runner.submit_call(call).result()
    finally:
        runner.close()


def round_trips(conn: socket.socket, rounds: int = ROUNDS) -> list[float]:
    times = []
    for index in range(rounds):
        started = time.monotonic()
        conn.sendall(bytes([index]))
        assert conn.recv(16) == bytes([index])
        times.append(time.monotonic() - started)
    return times


def first_answer(server: tuple[str, int]) -> float:
    """Seconds from connect() to the first echoed byte on a new connection."""
    started = time.monotonic()
    with socket.create_connection(server, timeout=10) as conn:
        conn.sendall(b"h")
        assert conn.recv(16) == b"h"
    return time.monotonic() - started


@needs_sandbox
@pytest.mark.jepsen
def test_relay_delays_keeps_order_and_cuts_hold(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "cluster", size=3, dcs=dc_layout(3))
    sandbox.build()  # links only: no budgetd process is needed to test them
    try:
        echo = Echo(sandbox, "n2")
        server = (sandbox.node("n2").ip, ECHO_PORT)
        with in_namespace(sandbox, "n1") as on_n1:
            conn = on_n1(lambda: socket.create_connection(server, timeout=10))
            with conn:
                before = round_trips(conn)
                sandbox.set_latency("dc-a", "dc-b", one_way_ms=40)
                delayed = round_trips(conn)
                fresh = on_n1(lambda: first_answer(server))
                # Jitter never reorders: a burst of numbered chunks comes back as sent.
                sandbox.set_latency("dc-a", "dc-b", one_way_ms=30, jitter_ms=20)
                burst = b"".join(i.to_bytes(4, "big") for i in range(2000))
                for start in range(0, len(burst), 400):
                    conn.sendall(burst[start : start + 400])
                echoed = b""
                while len(echoed) < len(burst):
                    echoed += conn.recv(65536)
                jittered = round_trips(conn)
                assert sandbox.relay.latencies == {("dc-a", "dc-b"): Link(0.030, 0.020)}

                # A cut resets the relayed connection, and refuses a new one, until healed.
                sandbox.net.isolate("n1")
                with pytest.raises(OSError):
                    conn.sendall(b"x")
                    if not conn.recv(16):
                        raise ConnectionResetError("closed")
            with pytest.raises(ConnectionRefusedError):
                on_n1(lambda: socket.create_connection(server, timeout=10))
            sandbox.net.heal()
            with on_n1(lambda: socket.create_connection(server, timeout=10)) as again:
                healed = round_trips(again, 2)
            sandbox.clear_latency()
            assert sandbox.relay.latencies == {}
        relay = sandbox.relay.stats()
        echo.close()
    finally:
        sandbox.teardown()
    print(
        "\nOBSERVED echo RTT ms:",
        json.dumps(
            {
                "none": [round(t * 1000, 1) for t in before],
                "40ms_one_way": [round(t * 1000, 1) for t in delayed],
                "40ms_new_connection": round(fresh * 1000, 1),
                "30±20ms": [round(t * 1000, 1) for t in jittered],
                "relay": relay,
            }
        ),
    )
    # Each direction is held at least the one-way delay: a round trip at least twice it.
    assert min(delayed) >= 2 * 0.040
    # A new connection pays its handshake's round trip before the first one.
    assert fresh >= 4 * 0.040
    assert statistics.median(delayed) > statistics.median(before)
    assert min(jittered) >= 2 * 0.010
    assert min(healed) >= 2 * 0.010
    assert echoed == burst
    assert relay["reset_by_cut"] >= 1


@needs_sandbox
@pytest.mark.jepsen
def test_relay_resets_connections_beyond_its_limit_and_recovers(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "cluster", size=2, dcs={"n1": "dc-a", "n2": "dc-b"})
    sandbox.build()
    try:
        echo = Echo(sandbox, "n2")
        server = (sandbox.node("n2").ip, ECHO_PORT)
        with in_namespace(sandbox, "n1") as on_n1:

            def connect() -> socket.socket:
                return socket.create_connection(server, timeout=10)

            held = [on_n1(connect) for _ in range(CONNECTIONS_MAX)]
            for conn in held:
                round_trips(conn, 1)  # every one of them is relayed
            extra = on_n1(connect)  # the kernel accepts it; the relay resets it
            with extra, pytest.raises(ConnectionResetError):
                extra.sendall(b"x")
                if not extra.recv(16):
                    raise ConnectionResetError("closed without an answer")
            at_limit = sandbox.relay.stats()
            held.pop().close()
            until(lambda: sandbox.relay.stats()["open"] < CONNECTIONS_MAX, "a free slot")
            with on_n1(connect) as again:
                round_trips(again, 1)
            for conn in held:
                conn.close()
        echo.close()
    finally:
        sandbox.teardown()
    assert at_limit["open"] == CONNECTIONS_MAX
    assert at_limit["refused_limit"] == 1


@needs_sandbox
@pytest.mark.jepsen
def test_fault_sets_seeded_latencies_and_clears_them(tmp_path: Path) -> None:
    fault = WanLatency(size=3)
    sandbox = Sandbox(tmp_path / "cluster", size=3, **fault.sandbox_options)
    sandbox.build()
    try:
        first = fault.start(sandbox, random.Random(7))
        again = fault.start(sandbox, random.Random(7))
        set_now = sandbox.relay.latencies
        stopped = fault.stop(sandbox)
        cleared = sandbox.relay.latencies
        stopped_twice = fault.stop(sandbox)
    finally:
        sandbox.teardown()
    assert first == again
    assert [link["dcs"] for link in first["links"]] == [
        ["dc-a", "dc-b"],
        ["dc-a", "dc-c"],
        ["dc-b", "dc-c"],
    ]
    for link in first["links"]:
        assert 20.0 <= link["one_way_ms"] <= 80.0
        assert 0.0 <= link["jitter_ms"] <= 0.25 * link["one_way_ms"]
        got = set_now[tuple(link["dcs"])]
        assert got == Link(link["one_way_ms"] / 1000, link["jitter_ms"] / 1000)
    assert stopped == stopped_twice == {"links": []}
    assert cleared == {}


# Raft through the relay ---------------------------------------------------------------------------


def set_all(sandbox: Sandbox, one_way_ms: float) -> None:
    assert sandbox.dcs is not None
    dcs = sorted(set(sandbox.dcs.values()))
    for i, dc_a in enumerate(dcs):
        for dc_b in dcs[i + 1 :]:
            sandbox.set_latency(dc_a, dc_b, one_way_ms=one_way_ms)


@needs_sandbox
@pytest.mark.jepsen
def test_isolated_leader_is_replaced_under_wan_latency(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "cluster", size=3, dcs=dc_layout(3), raft=WAN_RAFT) as sandbox:
        try:
            ids = sandbox.node_ids
            set_all(sandbox, 25)
            old = until(lambda: agreed_leader(sandbox, ids), "one leader")
            sandbox.net.isolate(old)
            rest = [n for n in ids if n != old]
            new = until(lambda: agreed_leader(sandbox, rest), "a leader among the others")
            sandbox.net.heal()
            after = until(lambda: agreed_leader(sandbox, ids), "one leader after heal")
            relay = sandbox.relay.stats()
        except BaseException:
            print(sandbox.logs())
            raise
    print("\nOBSERVED:", json.dumps({"old": old, "new": new, "after": after, "relay": relay}))
    assert new != old
    assert after in ids
    # The old leader's open Raft connections ran through the relay, which reset them.
    assert relay["reset_by_cut"] >= 1


def leader_reserves(sandbox: Sandbox, leader: str, count: int, tag: str) -> list[float]:
    """``count`` reserves sent one after another to ``leader``; seconds of each 201."""
    seconds = []
    for index in range(count):
        got = sandbox.request(
            leader,
            "POST",
            "/v1/reservations",
            {"campaign_id": "wan", "amount_micros": 1000, "ttl_ms": 60_000, "bidder_id": "wan"},
            headers={"Idempotency-Key": f"{tag}-{index}"},
        )
        if got.status == 201:
            seconds.append(got.elapsed_s)
    return seconds


def quantiles_ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1),
    }


@needs_sandbox
@pytest.mark.jepsen
def test_reserve_latency_through_the_leader_grows_with_wan_delay(tmp_path: Path) -> None:
    one_way_ms = 30.0
    count = 60
    with Sandbox(tmp_path / "cluster", size=5, dcs=dc_layout(5), raft=WAN_RAFT) as sandbox:
        try:
            ids = sandbox.node_ids
            leader = until(lambda: agreed_leader(sandbox, ids), "one leader")
            view = sandbox.view(leader)
            assert view is not None
            assert {m["id"]: m["dc"] for m in view["members"]} == dc_layout(5)
            campaign = {
                "currency": "USD",
                "timezone": "UTC",
                "total_budget_micros": 10**12,
                "pacing": {"mode": "asap"},
                "status": "active",
            }
            until(
                lambda: (
                    sandbox.request(leader, "PUT", "/v1/campaigns/wan", campaign).status
                    in (200, 201)
                ),
                "the campaign",
            )
            flat = leader_reserves(sandbox, leader, count, "flat")
            set_all(sandbox, one_way_ms)
            wan = leader_reserves(sandbox, leader, count, "wan")
            still = agreed_leader(sandbox, ids)
        except BaseException:
            print(sandbox.logs())
            raise
    observed = {
        "leader": leader,
        "dc": dc_layout(5)[leader],
        "0ms": quantiles_ms(flat),
        f"{one_way_ms:g}ms": quantiles_ms(wan),
    }
    print("\nOBSERVED reserve through the leader, 5 nodes 2+2+1:", json.dumps(observed))
    assert still == leader, "the leader changed during the measurement"
    assert len(flat) >= count // 2 and len(wan) >= count // 2
    # A majority of 3 always includes another data center: a commit needs one WAN round trip.
    assert min(wan) >= 2 * one_way_ms / 1000
    assert statistics.median(wan) > statistics.median(flat)


def fault_op(
    history: History,
    f: str,
    action: Callable[[Sandbox, random.Random], dict[str, Any]],
    sandbox: Sandbox,
) -> dict[str, Any]:
    """A fault's start or stop as a nemesis op whose value is what the fault returned."""
    invoked = history.invoke("nemesis", f, {})
    value = action(sandbox, random.Random(11))
    history.complete(invoked, "info", value)
    return value


@needs_sandbox
@pytest.mark.jepsen
def test_five_nodes_leader_dc_cut_off_and_healed_under_wan_latency(tmp_path: Path) -> None:
    started = time.monotonic()
    fault = WanLatency(size=5)
    history = History(tmp_path / "history.jsonl")
    with Sandbox(tmp_path / "cluster", size=5, **fault.sandbox_options) as sandbox:
        try:
            ids = sandbox.node_ids
            dcs = fault.sandbox_options["dcs"]
            until(lambda: agreed_leader(sandbox, ids), "one leader")
            workload = Workload(
                sandbox, history, workers=4, ops_max=900, duration_s=22.0, pause_s=0.05
            )
            sampler = ClusterSampler(sandbox, history)
            try:
                workload.setup()
                sampler.start()
                workload.start()
                time.sleep(2.0)  # ok ops before the first fault (stats)
                latency = fault_op(history, "wan-latency-start", fault.start, sandbox)
                time.sleep(3.0)
                # Cut off the leader's data center, so the rest must elect across the WAN.
                before = until(lambda: agreed_leader(sandbox, ids), "the leader")
                inside = [n for n in ids if dcs[n] == dcs[before]]
                others = [n for n in ids if n not in inside]
                nemesis(
                    history,
                    "partition",
                    {"groups": [inside, others]},
                    lambda: sandbox.net.partition([inside, others]),
                )
                during = until(lambda: agreed_leader(sandbox, others), "a leader outside it")
                time.sleep(4.0)
                nemesis(history, "heal", {}, sandbox.net.heal)
                workload.join()
                workload_s = time.monotonic() - started

                settled = settle(sandbox, workload, history, tmp_path)
                fault_op(history, "wan-latency-stop", lambda s, _: fault.stop(s), sandbox)
                relay = sandbox.relay.stats()
            finally:
                sampler.stop()
                workload.close()
                history.close()
            ops = history.ops
            results = settled.checkers(ops, sampler.samples)
            counts = Counter(
                f"{op.f}:{op.type}" for op in ops if op.type != "invoke" and op.process != "nemesis"
            )
            observed = {
                "ops": dict(sorted(counts.items())),
                "cut_dc": dcs[before],
                "leader_before": before,
                "leader_during": during,
                "links": latency["links"],
                "terms": results["election_safety"].detail["terms"],
                "relay": relay,
                "workload_s": round(workload_s, 1),
                "total_s": round(time.monotonic() - started, 1),
            }
            write_results(tmp_path / "results.json", results, observed=observed)
            print("\nOBSERVED WAN run:", json.dumps(observed))
            print("RESULTS:", {name: r.valid for name, r in results.items()})
            assert results["stale_reads"].detail["ok_reads"] > 0
            assert counts["reserve:ok"] > 0 and relay["bytes"] > 0
            for name, result in results.items():
                assert result.valid == "valid", (name, result)
            assert compose(results) == "valid"
        except BaseException:
            print(sandbox.logs())
            raise
