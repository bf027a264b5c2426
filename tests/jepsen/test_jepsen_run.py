"""One jepsen-lite run end to end: 3 real nodes, spends and reserve/commit from 4 workers while
the nemesis isolates the leader for 5 s, heals, then kills -9 a node and restarts it; then the
no-lost-spend, convergence and election-safety checkers must all say valid. The run leaves
history.jsonl and results.json in the test's tmp dir; observations are printed (run with -s).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite import ClusterSampler, History, Sandbox, Workload, preflight
from jepsen_lite.checkers import (
    Result,
    compose,
    convergence,
    election_safety,
    no_lost_spend,
    write_results,
)

pytestmark = pytest.mark.jepsen

REASON = preflight()
needs_sandbox = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def until(condition: Callable[[], Any], what: str, limit_s: float = 30.0) -> Any:
    deadline = time.monotonic() + limit_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what} (last: {last!r})")


def leader_of(sandbox: Sandbox, among: list[str]) -> str | None:
    views = [sandbox.view(node_id) for node_id in among]
    leaders = {view.get("leader_id") if view else None for view in views}
    if len(leaders) == 1 and (leader := leaders.pop()) in among:
        return str(leader)
    return None


def nemesis(history: History, f: str, value: dict[str, Any], action: Callable[[], None]) -> None:
    invoked = history.invoke("nemesis", f, value)
    action()
    history.complete(invoked, "info")  # a fault's effect is never certain


@needs_sandbox
def test_no_lost_spend_through_isolation_and_kill_9(tmp_path: Path) -> None:
    started = time.monotonic()
    history = History(tmp_path / "history.jsonl")
    with Sandbox(tmp_path / "cluster") as sandbox:
        try:
            ids = sandbox.node_ids
            until(lambda: leader_of(sandbox, ids), "one leader")
            workload = Workload(
                sandbox, history, workers=4, ops_max=2500, duration_s=22.0, pause_s=0.05
            )
            sampler = ClusterSampler(sandbox, history)
            try:
                workload.setup()
                sampler.start()
                workload.start()
                time.sleep(2.0)
                old = until(lambda: leader_of(sandbox, ids), "the leader")
                nemesis(history, "isolate", {"node": old}, lambda: sandbox.net.isolate(old))
                time.sleep(5.0)
                nemesis(history, "heal", {}, sandbox.net.heal)
                time.sleep(3.0)
                victim = leader_of(sandbox, ids) or ids[-1]
                nemesis(history, "kill", {"node": victim}, lambda: sandbox.kill(victim))
                time.sleep(3.0)
                nemesis(history, "start", {"node": victim}, lambda: sandbox.start(victim))
                workload.join()
                workload_s = time.monotonic() - started

                sandbox.net.heal()

                def views() -> dict[str, dict[str, Any] | None] | None:
                    got = {n: sandbox.view(n, fresh_digest=True) for n in ids}
                    ok = convergence(got).valid == "valid"
                    return got if ok else None

                try:
                    final_views = until(views, "all nodes on one digest", limit_s=20.0)
                except AssertionError:
                    final_views = {n: sandbox.view(n, fresh_digest=True) for n in ids}
                strong = workload.final_reads(consistency="strong")
                local = workload.final_reads(consistency="local")
            finally:
                sampler.stop()
                workload.close()
                history.close()
            ops = history.ops
            results: dict[str, Result] = {
                "no_lost_spend": no_lost_spend(
                    ops,
                    {f"{n}/strong": v for n, v in strong.items()}
                    | {f"{n}/local": v for n, v in local.items()},
                ),
                "convergence": convergence(final_views),
                "election_safety": election_safety(sampler.samples),
            }
            counts = Counter(
                f"{op.f}:{op.type}" for op in ops if op.type != "invoke" and op.process != "nemesis"
            )
            observed = {
                "ops": dict(sorted(counts.items())),
                "processes": len({op.process for op in ops}),
                "isolated": old,
                "killed": victim,
                "samples": len(sampler.samples),
                "terms": results["election_safety"].detail["terms"],
                "final_strong": strong,
                "workload_s": round(workload_s, 1),
                "total_s": round(time.monotonic() - started, 1),
            }
            write_results(tmp_path / "results.json", results, observed=observed)
            print("\nOBSERVED run:", json.dumps(observed))
            print("RESULTS:", {name: r.valid for name, r in results.items()})
            assert (tmp_path / "history.jsonl").stat().st_size > 0
            # Non-vacuous: both kinds of spend were acknowledged.
            assert counts["spend:ok"] > 0 and counts["commit:ok"] > 0, counts
            for name, result in results.items():
                assert result.valid == "valid", (name, result)
            assert compose(results) == "valid"
        except BaseException:
            print(sandbox.logs())
            raise


@needs_sandbox
def test_pause_resume_kill_start_by_pid(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "cluster") as sandbox:
        node = sandbox.node("n2")
        until(lambda: sandbox.view("n2"), "n2 answering")
        pid = node.pid
        sandbox.pause("n2")
        frozen = sandbox.request("n2", "GET", "/v1/cluster", timeout_s=1.0)
        assert frozen.status is None and node.running and node.paused, frozen
        sandbox.resume("n2")
        until(lambda: sandbox.view("n2"), "n2 answering after SIGCONT")
        sandbox.kill("n2")
        assert not node.running
        refused = sandbox.request("n2", "GET", "/v1/cluster", timeout_s=1.0)
        assert refused.status is None and "refused" in (refused.error or ""), refused
        sandbox.start("n2")
        assert node.pid != pid
        view = until(lambda: sandbox.view("n2"), "n2 answering after restart")
        assert view["node_id"] == "n2"
