"""scripts/bench, the benchmark of record: its quick run against a real cluster writes the JSON,
markdown and plot it promises and finds the money conserved; bad options start nothing.

No figure is judged here (the machine is shared): only the structure and the checks the
benchmark makes itself.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"
RUN_TIMEOUT_S = 240


def bench(*args: str, timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BENCH), *args], capture_output=True, text=True, timeout=timeout_s, cwd=ROOT
    )


def test_quick_run_writes_every_figure_and_conserves_money(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = bench(
        "--quick",
        "--force",
        "--workloads", "mix,wallet",
        "--campaigns", "hot",
        "--concurrency", "1,4",
        "--no-failover",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "estimate: about" in done.stdout.splitlines()[3]  # the plan comes first

    [json_path] = out.glob("bench-*.json")
    assert json_path.with_suffix(".md").exists()
    assert json_path.with_suffix(".png").stat().st_size > 0
    result = json.loads(json_path.read_text())
    assert result["machine"]["nproc"] >= 1 and result["machine"]["kernel"]
    points = result["budgetd"]["3"]["points"]
    assert [(p["workload"], p["campaigns"], p["concurrency"]) for p in points] == [
        ("mix", "hot", 1),
        ("mix", "hot", 4),
        ("wallet", "hot", 1),
        ("wallet", "hot", 4),
    ]
    for point in points:
        assert point["conservation_holds"] is True, point["conservation"]
        assert point["errors"] == {} and point["unknown"] == 0
        assert point["runs"][0]["window_ops"] > 0
        for key in ("ops_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
            assert point[key] is not None
        assert set(point["cpu_s_per_s"]) >= {"n1", "n2", "n3"}
        assert all(rss and rss > 0 for rss in point["rss_bytes"].values())
    mix = points[1]
    assert {"reserve", "commit", "release"} >= set(mix["ops"]) >= {"reserve"}
    check = mix["conservation"][0]
    assert check["taken_micros"] == check["granted_less_released_micros"] > 0
    assert mix["leader"]["raft_entries_per_s"] > 0
    assert mix["leader"]["proposer_ops_per_entry_mean"] >= 1
    wallet = points[3]["wallet"]
    assert wallet["round_trips_per_1000_bids"] > 0
    last = wallet["last_run"]
    assert last["pending_commits"] == 0 and last["failed_wins"] == 0
    assert last["modes"] == {"closed": 4}

    markdown = json_path.with_suffix(".md").read_text()
    assert "## budgetd, 3 nodes" in markdown
    assert "| mix | hot | 4 |" in markdown
    assert "round trips / 1,000 bids" in markdown
    assert "BROKEN" not in markdown


@pytest.mark.parametrize(
    "args",
    [
        ["--nodes", "0"],
        ["--workloads", "reserve,nope"],
        ["--concurrency", "16,x"],
        ["--repeats", "2"],
        ["--batch-ops", "5000"],
        ["--bogus"],
    ],
)
def test_bad_options_exit_2_with_one_line_and_start_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    out = tmp_path / "never"
    done = bench(*args, "--out", str(out), timeout_s=60)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scripts/bench: "), done.stderr
    assert not out.exists()


def test_busy_machine_is_refused_with_what_was_seen(tmp_path: Path) -> None:
    out = tmp_path / "never"
    done = bench("--quick", "--load-max", "-1", "--out", str(out), timeout_s=60)
    assert done.returncode == 3
    assert "1-minute load average" in done.stderr and "--force" in done.stderr
    assert not out.exists()


def test_dry_run_prints_the_plan_and_an_estimate() -> None:
    done = bench("--dry-run", "--vs-etcd", "--nodes", "3,5", timeout_s=60)
    assert done.returncode == 0, done.stderr
    assert "nodes 3,5" in done.stdout and "etcd" in done.stdout
    assert "estimate: about" in done.stdout


def test_sigterm_stops_every_process_the_run_started(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.Popen(
        [str(BENCH), "--force", "--workloads", "reserve", "--campaigns", "hot",
         "--concurrency", "1", "--no-failover", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _children(run.pid) - {run.pid} and time.monotonic() < deadline:
            time.sleep(0.2)
        started = _descendants(run.pid)
        assert started, "the run started no process"
        time.sleep(2)  # into the cluster's start or the first window
        started |= _descendants(run.pid)
        run.terminate()
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr.strip().splitlines()[-1]
    deadline = time.monotonic() + 30  # a process may take a moment to exit after its parent
    while (left := [pid for pid in started if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, [_read(f"/proc/{pid}/cmdline") for pid in left]
    assert not list(out.glob(".bench-data-*"))


def _children(pid: int) -> set[int]:
    return {pid, *(int(p) for p in _read(f"/proc/{pid}/task/{pid}/children").split())}


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        current = pending.pop()
        for child in _children(current) - {current}:
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _alive(pid: int) -> bool:
    state = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()[:1]
    return bool(state) and state[0] != "Z"


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""
