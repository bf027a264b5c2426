"""Broken-store canaries: real budgetd nodes with one deliberate bug each (jepsen_lite.canaries)
must be flagged by their checker, and the same run on plain budgetd must not be.

One run shape serves every mode: 3 nodes, 4 workers of spends, reserve→commit pairs and strong
reads on the small ``jl`` tree (``jl:a``'s daily cap is reached), the leader isolated for a
while with strong-read probes through it once the majority has acknowledged new spends, heal,
then every write re-sent with its key (I3). The launcher's errors and the ack-before-fsync
patch (which only a power-loss fault can catch end to end) are checked without a sandbox.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite import History, Sandbox, Workload
from jepsen_lite.canaries import banner, modes
from jepsen_lite.checkers import (
    Result,
    exactly_once,
    no_lost_spend,
    no_overspend,
    stale_reads,
    write_results,
)
from jepsen_lite.workload import CAMPAIGNS, LEAF, LEAF_DAILY_MICROS, spent_of
from tests.jepsen.helpers import agreed_leader, needs_sandbox, nemesis, resend_phase, until

#: Each mode that a sandbox run must catch, and the checker that must say invalid.
CAUGHT_IN_A_RUN = {
    "local-reserve-check": "no_overspend",
    "no-idempotency": "exactly_once",
    "local-strong-reads": "stale_reads",
}
REPO = Path(__file__).resolve().parents[2]


def canary_run(tmp_path: Path, canary: str | None) -> dict[str, Result]:
    """The shared run shape; the checkers' results (also in tmp_path/results.json)."""
    history = History(tmp_path / "history.jsonl")
    with Sandbox(tmp_path / "cluster", canary=canary) as sandbox:
        try:
            ids = sandbox.node_ids
            until(lambda: agreed_leader(sandbox, ids), "one leader")
            if canary is not None:
                for node in sandbox.nodes:
                    until(lambda n=node: banner(canary) in n.log.read_text(), "the canary line")
            workload = Workload(
                sandbox, history, workers=4, ops_max=1500, duration_s=14.0, pause_s=0.02
            )
            try:
                workload.setup()
                # Concurrent reserves asking 4/3 of jl:a's daily cap, then the mixed workload.
                leader = until(lambda: agreed_leader(sandbox, ids), "the leader")
                amount = LEAF_DAILY_MICROS // 6
                workload.contend(leader, campaign_id=LEAF, amount_micros=amount, count=8)
                workload.start()
                time.sleep(3.0)
                old = until(lambda: agreed_leader(sandbox, ids), "the leader")
                isolated_at = len(history.ops)
                nemesis(history, "isolate", {"node": old}, lambda: sandbox.net.isolate(old))
                majority = [n for n in ids if n != old]
                until(lambda: agreed_leader(sandbox, majority), "a leader of the majority")

                def spends_acked_since() -> int:
                    return sum(
                        1 for op in history.ops[isolated_at:] if op.f == "spend" and op.type == "ok"
                    )

                until(lambda: spends_acked_since() >= 3, "spends acknowledged by the majority")
                # Strong reads through the isolated old leader: it must not answer them alone.
                for campaign_id in (*CAMPAIGNS, *CAMPAIGNS):
                    workload.read_op("probe", old, campaign_id)
                nemesis(history, "heal", {}, sandbox.net.heal)
                workload.join()
                leader = until(lambda: agreed_leader(sandbox, ids), "one leader after heal")
                strong = workload.final_states(consistency="strong")
                resends, totals = resend_phase(workload, leader, history.ops, tmp_path)
            finally:
                workload.close()
                history.close()
        except BaseException:
            print(sandbox.logs())
            raise
    ops = history.ops
    once = exactly_once(ops, resends, totals)
    results = {
        "no_overspend": no_overspend(ops, strong),
        "exactly_once": once,
        "stale_reads": stale_reads(ops),
        "no_lost_spend": no_lost_spend(ops, spent_of(strong), once.detail["applied"]),
    }
    write_results(tmp_path / "results.json", results, canary=canary)
    print(
        f"\nCANARY {canary}:",
        {name: r.valid for name, r in results.items()},
        json.dumps(
            {
                "budget_exhausted_refusals": results["no_overspend"].detail[
                    "budget_exhausted_refusals"
                ],
                "stale": results["stale_reads"].detail["stale"],
                "first_offending": {n: r.offending[:1] for n, r in results.items()},
            },
            default=str,
        )[:2000],
    )
    return results


pytestmark = pytest.mark.jepsen


@needs_sandbox
def test_plain_budgetd_passes_the_canary_run(tmp_path: Path) -> None:
    results = canary_run(tmp_path, None)
    for checker in CAUGHT_IN_A_RUN.values():
        assert results[checker].valid == "valid", (checker, results[checker])
    # The shape bites where the canaries need it to: the cap was reached, reads were checked.
    assert results["no_overspend"].detail["budget_exhausted_refusals"] > 0
    assert results["stale_reads"].detail["ok_reads"] > 0


@needs_sandbox
@pytest.mark.parametrize("mode", sorted(CAUGHT_IN_A_RUN))
def test_a_canary_is_flagged_by_its_checker(tmp_path: Path, mode: str) -> None:
    results = canary_run(tmp_path, mode)
    checker = CAUGHT_IN_A_RUN[mode]
    assert results[checker].valid == "invalid", (checker, results[checker].detail)
    assert results[checker].offending


# Without a sandbox --------------------------------------------------------------------------


def launcher(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jepsen_lite.canaries", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def test_every_mode_is_a_module_naming_its_checker() -> None:
    listed = launcher("--list")
    assert listed.returncode == 0, listed.stderr
    rows = dict(line.split("\t", 1) for line in listed.stdout.splitlines())
    caught_by_power_loss = {"ack-before-fsync", "forgets-directory-fsync"}
    assert rows.keys() == modes().keys() == {*CAUGHT_IN_A_RUN, *caught_by_power_loss}
    for mode, checker in {
        **CAUGHT_IN_A_RUN,
        **dict.fromkeys(caught_by_power_loss, "no_lost_spend"),
    }.items():
        assert checker in rows[mode], (mode, rows[mode])


def test_an_unknown_mode_is_one_line_and_exit_2() -> None:
    done = launcher("no-such-mode", "run", "--config", "n1.toml")
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "unknown canary mode 'no-such-mode'" in line and "local-reserve-check" in line


def test_no_mode_prints_the_usage_and_exits_2() -> None:
    done = launcher()
    assert done.returncode == 2
    assert "usage:" in done.stderr and "no-idempotency" in done.stderr


def test_a_mode_runs_budgetd_after_its_loud_line() -> None:
    done = launcher("no-idempotency", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == banner("no-idempotency")
    assert "budgetd" in done.stdout


def test_a_sandbox_refuses_an_unknown_canary_before_building(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown canary mode 'nope'"):
        Sandbox(tmp_path, canary="nope")
    assert not tmp_path.joinpath("cluster-secret").exists()


_COUNT_SYNCS = textwrap.dedent(
    """
    import json, os, socket, sys, threading, time
    from pathlib import Path
    from pysyncobj.journal import ResizableFile
    if sys.argv[2] == "patched":
        from jepsen_lite.canaries import ack_before_fsync
        ack_before_fsync.apply()
    from budgetd.codec import encode_batch
    from budgetd.replication import RaftNode
    from budgetd.settings import Member, NodeSettings

    counts = {"fsync": 0, "fdatasync": 0, "msync": 0}
    real_fsync, real_fdatasync, real_flush = os.fsync, os.fdatasync, ResizableFile.flush
    def fsync(fd):
        counts["fsync"] += 1
        return real_fsync(fd)
    def fdatasync(fd):
        counts["fdatasync"] += 1
        return real_fdatasync(fd)
    def flush(self):
        counts["msync"] += 1
        return real_flush(self)
    os.fsync, os.fdatasync, ResizableFile.flush = fsync, fdatasync, flush

    def port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    root = Path(sys.argv[1])
    (root / "secret").write_text("canary-secret\\n")
    member = Member("n1", f"127.0.0.1:{port()}", f"127.0.0.1:{port()}", "dc")
    node = RaftNode(NodeSettings("n1", str(root / "n1"), (member,), str(root / "secret")))
    node.start()
    deadline = time.monotonic() + 30
    while not node.is_leader():
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.01)
    outcomes = []
    for i in range(5):
        done = threading.Event()
        op = {"op": "put_campaign", "campaign_id": f"c{i}", "currency": "USD",
              "timezone": "UTC", "daily_budget_micros": 1_000_000}
        node.propose(encode_batch(1_780_000_000_000, [op]),
                     lambda outcome, results, reason: (outcomes.append(outcome.value), done.set()))
        assert done.wait(30), "no callback"
    node.close()
    print(json.dumps({**counts, "outcomes": outcomes}))
    """
)


def count_syncs(tmp_path: Path, variant: str) -> dict[str, Any]:
    root = tmp_path / variant
    root.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_SYNCS, str(root), variant],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counted: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return counted


def test_ack_before_fsync_removes_every_sync_of_an_acknowledged_entry(tmp_path: Path) -> None:
    plain = count_syncs(tmp_path, "plain")
    patched = count_syncs(tmp_path, "patched")
    print("\nSYNCS plain:", plain, "patched:", patched)
    assert plain["outcomes"] == patched["outcomes"] == ["ok"] * 5
    assert plain["fdatasync"] >= 5 and plain["fsync"] > 0
    assert patched["fdatasync"] == patched["msync"] == patched["fsync"] == 0
