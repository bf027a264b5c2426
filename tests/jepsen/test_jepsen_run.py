"""One jepsen-lite run end to end: 3 real nodes, spends, reserve/commit and strong reads from 4
workers while the nemesis isolates the leader for 5 s, heals, pauses the new leader (SIGSTOP)
for 4 s and resumes it (then strong reads through it at once), then kills -9 a node and
restarts it. After heal every write is re-sent with its key (I3), and every checker — I1 no
overspend, I2 no lost spend (exact once I3 resolved the info ops), I3 exactly once, I4 stale
reads, I5 convergence, election safety, stats — must say valid. The run leaves
history.jsonl and results.json in the test's tmp dir; observations are printed (run with -s).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from jepsen_lite import ClusterSampler, History, Sandbox, Workload
from jepsen_lite.checkers import (
    compose,
    write_results,
)
from jepsen_lite.workload import CAMPAIGNS
from tests.jepsen.helpers import agreed_leader, needs_sandbox, nemesis, settle, until

pytestmark = pytest.mark.jepsen


@needs_sandbox
def test_checkers_hold_through_isolation_pause_and_kill_9(tmp_path: Path) -> None:
    started = time.monotonic()
    history = History(tmp_path / "history.jsonl")
    with Sandbox(tmp_path / "cluster") as sandbox:
        try:
            ids = sandbox.node_ids
            until(lambda: agreed_leader(sandbox, ids), "one leader")
            workload = Workload(
                sandbox, history, workers=4, ops_max=2500, duration_s=24.0, pause_s=0.05
            )
            sampler = ClusterSampler(sandbox, history)
            try:
                workload.setup()
                sampler.start()
                workload.start()
                time.sleep(2.0)
                old = until(lambda: agreed_leader(sandbox, ids), "the leader")
                nemesis(history, "isolate", {"node": old}, lambda: sandbox.net.isolate(old))
                time.sleep(5.0)
                nemesis(history, "heal", {}, sandbox.net.heal)
                time.sleep(2.0)
                paused = until(lambda: agreed_leader(sandbox, ids), "a leader to pause")
                nemesis(history, "pause", {"node": paused}, lambda: sandbox.pause(paused))
                time.sleep(4.0)
                nemesis(history, "resume", {"node": paused}, lambda: sandbox.resume(paused))
                # Strong reads through the resumed (deposed) leader at once.
                for campaign_id in (*CAMPAIGNS, *CAMPAIGNS):
                    workload.read_op("probe", paused, campaign_id)
                time.sleep(2.0)
                victim = agreed_leader(sandbox, ids) or ids[-1]
                nemesis(history, "kill", {"node": victim}, lambda: sandbox.kill(victim))
                time.sleep(3.0)
                nemesis(history, "start", {"node": victim}, lambda: sandbox.start(victim))
                workload.join()
                workload_s = time.monotonic() - started

                sandbox.net.heal()
                settled = settle(sandbox, workload, history, tmp_path)
            finally:
                sampler.stop()
                workload.close()
                history.close()
            ops = history.ops
            results = settled.checkers(ops, sampler.samples)
            once = results["exactly_once"]
            counts = Counter(
                f"{op.f}:{op.type}" for op in ops if op.type != "invoke" and op.process != "nemesis"
            )
            probes = Counter(
                f"{op.type}:{op.error or op.value.get('status')}"
                for op in ops
                if op.process == "probe" and op.type != "invoke"
            )
            observed = {
                "ops": dict(sorted(counts.items())),
                "processes": len({op.process for op in ops}),
                "isolated": old,
                "paused": paused,
                "killed": victim,
                "probe_reads_on_resumed": dict(probes),
                "samples": len(sampler.samples),
                "terms": results["election_safety"].detail["terms"],
                "stale_reads": results["stale_reads"].detail,
                "no_overspend": results["no_overspend"].detail,
                "exactly_once": {
                    k: v for k, v in once.detail.items() if k not in ("applied", "totals")
                },
                "totals": once.detail["totals"],
                "no_lost_spend": {
                    k: results["no_lost_spend"].detail[k]
                    for k in ("ok_ops", "info_ops", "info_resolved", "exact")
                },
                "ok_before_first_fault": results["stats"].detail["ok_before_first_fault"],
                "workload_s": round(workload_s, 1),
                "resend_s": round(settled.resend_s, 1),
                "total_s": round(time.monotonic() - started, 1),
            }
            write_results(tmp_path / "results.json", results, observed=observed)
            print("\nOBSERVED run:", json.dumps(observed))
            print("RESULTS:", {name: r.valid for name, r in results.items()})
            assert (tmp_path / "history.jsonl").stat().st_size > 0
            # Non-vacuous: caps were reached, reads were checked, info ops were resolved.
            assert results["no_overspend"].detail["budget_exhausted_refusals"] > 0
            assert results["stale_reads"].detail["ok_reads"] > 0
            assert results["no_lost_spend"].detail["exact"], results["no_lost_spend"].detail
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
