"""scripts/bench, the benchmark of record: its quick run against a real cluster writes the JSON,
markdown and plot it promises and finds the money conserved; with --vs-etcd it pairs each
budgetd run with an etcd run and reports the ratios of the pairs; bad options start nothing.

No figure is judged here (the machine is shared): only the structure, the checks the benchmark
makes itself, and the arithmetic of the paired ratios on made-up runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"
RUN_TIMEOUT_S = 240

sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import report  # noqa: E402
from benchlib.observe import LeaderCounters, parse_metrics  # noqa: E402

_Test = TypeVar("_Test", bound=Callable[..., Any])


def real(test: _Test) -> _Test:
    """Runs scripts/bench in a process of its own (the arithmetic tests need none)."""
    marked: _Test = pytest.mark.cluster(pytest.mark.slow(test))
    return marked


def bench(*args: str, timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BENCH), *args], capture_output=True, text=True, timeout=timeout_s, cwd=ROOT
    )


@real
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
        assert (
            set(point["system_s_per_s"]) == set(point["minor_faults_per_s"]) == {"n1", "n2", "n3"}
        )
        assert all(
            0 <= value <= point["cpu_s_per_s"][n] for n, value in point["system_s_per_s"].items()
        )
        assert all(value >= 0 for value in point["minor_faults_per_s"].values())
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
    assert "kernel per node" in markdown
    assert "round trips / 1,000 bids" in markdown
    assert "BROKEN" not in markdown


@real
@pytest.mark.parametrize(
    "args",
    [
        ["--nodes", "0"],
        ["--workloads", "reserve,nope"],
        ["--concurrency", "16,x"],
        ["--repeats", "2"],
        ["--batch-ops", "5000"],
        ["--bogus"],
        ["--vs-etcd", "--workloads", "mix"],
        ["--vs-etcd", "--campaigns", "cold"],
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


@real
def test_busy_machine_is_refused_with_what_was_seen(tmp_path: Path) -> None:
    out = tmp_path / "never"
    done = bench("--quick", "--load-max", "-1", "--out", str(out), timeout_s=60)
    assert done.returncode == 3
    assert "1-minute load average" in done.stderr and "--force" in done.stderr
    assert not out.exists()


@real
def test_dry_run_prints_the_plan_and_an_estimate() -> None:
    done = bench("--dry-run", "--vs-etcd", "--nodes", "3,5", timeout_s=60)
    assert done.returncode == 0, done.stderr
    assert "nodes 3,5" in done.stdout and "interleaved with budgetd's (3 nodes)" in done.stdout
    assert "estimate: about" in done.stdout


@real
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


@real
@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (etcd-server)")
def test_quick_vs_etcd_pairs_each_budgetd_run_with_an_etcd_run(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = bench(
        "--quick",
        "--force",
        "--vs-etcd",
        "--workloads", "reserve",
        "--campaigns", "hot",
        "--concurrency", "1,4",
        "--repeats", "2",
        "--no-failover",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [json_path] = out.glob("bench-*.json")
    result = json.loads(json_path.read_text())

    points = result["budgetd"]["3"]["points"]
    assert [(p["workload"], p["campaigns"], p["concurrency"]) for p in points] == [
        ("reserve", "hot", 1),
        ("reserve", "hot", 4),
    ]
    etcd = result["etcd"]
    assert etcd["interleaved"] is True and etcd["budgetd_nodes"] == 3
    assert etcd["conservation"]["holds"] is True, etcd["conservation"]
    for ours, theirs in zip(points, etcd["points"], strict=True):
        assert ours["conservation_holds"] is True, ours["conservation"]
        assert ours["concurrency"] == theirs["concurrency"]
        # Run i of each store is one pair, the first alternating; each side read the other's CPU.
        assert [r["first"] for r in ours["runs"]] == ["budgetd", "etcd"]
        assert [r["first"] for r in theirs["runs"]] == ["budgetd", "etcd"]
        assert set(ours["idle_cpu_s_per_s"]) == {"e0", "e1", "e2"}
        assert set(theirs["idle_cpu_s_per_s"]) == {"n1", "n2", "n3"}
        assert not set(ours["cpu_s_per_s"]) & {"e0", "e1", "e2"}
    for row in result["vs_etcd"]:
        assert row["pairs"] == 2 and row["first"] == ["budgetd", "etcd"]
        for key in ("ops_per_s", "p50_ms", "p99_ms"):
            pairs = row[f"{key}_paired_ratios"]
            assert len(pairs) == 2 and all(ratio > 0 for ratio in pairs)
            assert row[f"{key}_paired_ratio_min"] <= row[f"{key}_paired_ratio_median"]
            assert row[f"{key}_paired_ratio_median"] <= row[f"{key}_paired_ratio_max"]
            assert row[f"{key}_ratio_of_medians"] > 0
        assert row["idle_etcd_cpu_s_per_s_in_budgetd_windows"] >= 0
        assert row["idle_budgetd_cpu_s_per_s_in_etcd_windows"] >= 0

    markdown = json_path.with_suffix(".md").read_text()
    assert markdown.index("Paired ratios") < markdown.index("ratio of medians")
    assert "etcd conservation: granted" in markdown and "BROKEN" not in markdown


# -- the paired ratios, on made-up runs ---------------------------------------------------------


def _run(ops_per_s: float, p99_ms: float | None, *, first: str, idle: float) -> dict[str, Any]:
    """A run as Bench.point returns it, with only what the ratios read set to something."""
    return {
        "ops_per_s": ops_per_s,
        "requests_per_s": ops_per_s,
        "p50_ms": None if p99_ms is None else p99_ms / 4,
        "p95_ms": p99_ms,
        "p99_ms": p99_ms,
        "max_ms": p99_ms,
        "refused": {},
        "errors": {},
        "unknown": 0,
        "ops": {"reserve": int(ops_per_s)},
        "cpu_s_per_s": {},
        "rss_bytes": {},
        "idle_cpu_s_per_s": {"a": idle / 2, "b": idle / 2},
        "first": first,
    }


def _point(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return report.summarize(runs) | {"workload": "reserve", "campaigns": "hot", "concurrency": 64}


def test_pairs_alternate_which_store_goes_first() -> None:
    assert [report.pair_first(repeat) for repeat in range(5)] == [
        "budgetd", "etcd", "budgetd", "etcd", "budgetd",
    ]  # fmt: skip


def test_each_pair_gives_one_ratio_and_the_median_min_and_max_are_of_those() -> None:
    ours = [{"ops_per_s": 300.0}, {"ops_per_s": 200.0}, {"ops_per_s": 330.0}]
    theirs = [{"ops_per_s": 100.0}, {"ops_per_s": 100.0}, {"ops_per_s": 110.0}]
    assert report.pair_ratios(ours, theirs, "ops_per_s") == {
        "pairs": [3.0, 2.0, 3.0],
        "median": 3.0,
        "min": 2.0,
        "max": 3.0,
    }


def test_a_pair_without_a_figure_has_no_ratio_and_is_left_out() -> None:
    ours: list[dict[str, Any]] = [
        {"p99_ms": 10.0},
        {"p99_ms": None},
        {"p99_ms": 30.0},
        {"p99_ms": 5.0},
    ]
    theirs = [{"p99_ms": 100.0}, {"p99_ms": 50.0}, {"p99_ms": 0.0}, {"p99_ms": 20.0}]
    assert report.pair_ratios(ours, theirs, "p99_ms") == {
        "pairs": [0.1, None, None, 0.25],
        "median": 0.175,
        "min": 0.1,
        "max": 0.25,
    }
    none: list[dict[str, Any]] = [{"p99_ms": None}]
    assert report.pair_ratios(none, [{"p99_ms": 1.0}], "p99_ms") == {
        "pairs": [None],
        "median": None,
        "min": None,
        "max": None,
    }


def test_runs_that_are_not_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="not pairs"):
        report.pair_ratios([{"ops_per_s": 1.0}] * 3, [{"ops_per_s": 1.0}] * 2, "ops_per_s")


def test_paired_ratios_follow_the_pairs_where_the_ratio_of_medians_does_not() -> None:
    # The machine slows down over the run: both stores lose throughput, pair by pair, by the
    # same factor, so every pair says 3x; the medians of each side came from different pairs.
    ours = _point(
        [
            _run(3000.0, 30.0, first="budgetd", idle=0.02),
            _run(1500.0, 60.0, first="etcd", idle=0.04),
            _run(900.0, 90.0, first="budgetd", idle=0.01),
        ]
    )
    theirs = _point(
        [
            _run(1000.0, 300.0, first="budgetd", idle=0.1),
            _run(500.0, 600.0, first="etcd", idle=0.3),
            _run(300.0, 900.0, first="budgetd", idle=0.2),
        ]
    )
    row = report.ratio_row(ours, theirs, 3)
    assert row["pairs"] == 3 and row["budgetd_nodes"] == 3 and row["concurrency"] == 64
    assert row["first"] == ["budgetd", "etcd", "budgetd"]
    assert row["ops_per_s_paired_ratios"] == [3.0, 3.0, 3.0]
    assert row["ops_per_s_paired_ratio_median"] == 3.0
    assert (row["ops_per_s_paired_ratio_min"], row["ops_per_s_paired_ratio_max"]) == (3.0, 3.0)
    assert (row["ops_per_s_budgetd"], row["ops_per_s_etcd"]) == (1500.0, 500.0)
    assert row["p99_ms_paired_ratios"] == [0.1, 0.1, 0.1]
    assert row["p50_ms_paired_ratio_median"] == 0.1
    # Medians of each side, and their quotient, are still given.
    assert row["p99_ms_ratio_of_medians"] == 60.0 / 600.0
    assert row["idle_etcd_cpu_s_per_s_in_budgetd_windows"] == 0.02
    assert row["idle_etcd_cpu_s_per_s_in_budgetd_windows_max"] == 0.04
    assert row["idle_budgetd_cpu_s_per_s_in_etcd_windows"] == 0.2
    assert row["idle_budgetd_cpu_s_per_s_in_etcd_windows_max"] == 0.3


def test_drift_between_pairs_moves_the_ratio_of_medians_but_not_the_paired_median() -> None:
    # Pairs of 3x, 4x and 1x; the medians of the sides (2000 and 1000) come from different
    # pairs and say 2x.
    ours = _point(
        [
            _run(3000.0, 10.0, first="budgetd", idle=0.0),
            _run(2000.0, 10.0, first="etcd", idle=0.0),
            _run(1500.0, 10.0, first="budgetd", idle=0.0),
        ]
    )
    theirs = _point(
        [
            _run(1000.0, 10.0, first="budgetd", idle=0.0),
            _run(500.0, 10.0, first="etcd", idle=0.0),
            _run(1500.0, 10.0, first="budgetd", idle=0.0),
        ]
    )
    row = report.ratio_row(ours, theirs, 3)
    assert row["ops_per_s_paired_ratios"] == [3.0, 4.0, 1.0]
    assert row["ops_per_s_paired_ratio_median"] == 3.0
    assert row["ops_per_s_ratio_of_medians"] == 2.0


def test_ratios_take_the_paired_cluster_and_only_concurrencies_both_stores_measured() -> None:
    ours_64 = _point([_run(300.0, 3.0, first="budgetd", idle=0.0)] * 3)
    ours_16 = ours_64 | {"concurrency": 16}
    theirs = _point([_run(100.0, 9.0, first="budgetd", idle=0.0)] * 3)
    other = _point([_run(1.0, 1.0, first="budgetd", idle=0.0)] * 3)
    result = {
        "budgetd": {"3": {"points": [ours_16, ours_64]}, "5": {"points": [other]}},
        "etcd": {"budgetd_nodes": 3, "points": [theirs]},
    }
    [row] = report.ratios(result)
    assert row["concurrency"] == 64 and row["budgetd_nodes"] == 3
    assert row["ops_per_s_paired_ratio_median"] == 3.0
    assert row["p99_ms_paired_ratio_median"] == pytest.approx(1 / 3)


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


def _leader_scrape(
    *,
    term: int,
    dumps: int,
    pauses: dict[str, list[int]],
    pause_s: float,
    syncs: tuple[int, float] = (0, 0.0),
) -> str:
    """A leader's /metrics text with the series LeaderCounters reads; ``pauses``: cumulative
    bucket counts per generation over bounds 0.01, 0.1, +Inf; ``syncs``: journal msyncs and
    their seconds."""
    lines = [
        f'budgetd_raft_term{{node="n1"}} {term}',
        f'budgetd_journal_sync_seconds_count{{node="n1"}} {syncs[0]}',
        f'budgetd_journal_sync_seconds_sum{{node="n1"}} {syncs[1]}',
        f'budgetd_snapshots_written_total{{node="n1"}} {dumps}',
        "# TYPE budgetd_gc_pause_seconds histogram",
    ]
    for generation, counts in pauses.items():
        for bound, count in zip(("0.01", "0.1", "+Inf"), counts, strict=True):
            lines.append(
                f'budgetd_gc_pause_seconds_bucket{{generation="{generation}",le="{bound}",'
                f'node="n1"}} {count}'
            )
        lines.append(
            f'budgetd_gc_pause_seconds_count{{generation="{generation}",node="n1"}} {counts[-1]}'
        )
        lines.append(
            f'budgetd_gc_pause_seconds_sum{{generation="{generation}",node="n1"}} {pause_s}'
        )
    return "\n".join(lines) + "\n"


def _counters(**scrape: Any) -> LeaderCounters:
    return LeaderCounters.of(parse_metrics(_leader_scrape(**scrape)))


def test_a_window_reports_elections_dumps_collector_pauses_and_msyncs_of_the_leader() -> None:
    pauses_before = {"0": [5, 5, 5], "1": [1, 1, 1]}
    before = _counters(term=2, dumps=1, pauses=pauses_before, pause_s=0.5, syncs=(100, 0.02))
    pauses_after = {"0": [9, 10, 10], "1": [1, 1, 1]}
    after = _counters(term=3, dumps=2, pauses=pauses_after, pause_s=1.0, syncs=(300, 0.12))
    delta = before.delta(after, 2.0)
    assert delta["journal_syncs_per_s"] == 100
    assert delta["journal_sync_ms_mean"] == pytest.approx(0.5)  # 0.1 s over 200 msyncs
    assert delta["journal_sync_s_per_s"] == pytest.approx(0.05)
    assert delta["term_changes"] == 1
    assert delta["dumps_written"] == 1
    assert delta["gc_pause_s_per_s"] == pytest.approx(0.5)  # (1.0 - 0.5) x 2 generations / 2 s
    assert delta["gc_pause_max_le"] == 0.1  # 5 new pauses: 4 under 10 ms, 1 under 100 ms
    assert before.delta(before, 2.0)["gc_pause_max_le"] is None
    assert before.delta(before, 2.0)["journal_sync_ms_mean"] is None
