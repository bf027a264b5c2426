"""scripts/bench_fresh_pages.py: measures the fault cost of fresh pages step by step and writes
its JSON; bad arguments get one line, exit 2, and map nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_fresh_pages.py"


def fresh_pages(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_a_small_run_reports_every_step_and_writes_json(tmp_path: Path) -> None:
    done = fresh_pages("--gib", "0.25", "--step-mib", "64", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stdout.splitlines() if line.strip().endswith("us/page")]
    assert len(steps) == 4
    [path] = tmp_path.glob("fresh-pages-*.json")
    result = json.loads(path.read_text())
    assert [row["touched_gib"] for row in result["steps"]] == [0.0625, 0.125, 0.1875, 0.25]
    for row in result["steps"]:
        assert row["first_touch_us_per_page"] > 0 and row["copy_us_per_page"] > 0
    assert set(result["summary"]) == {
        "fault_us_per_page_first_quarter",
        "fault_us_per_page_last_quarter",
        "last_over_first",
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--gib", "0"],
        ["--gib", "nan"],
        ["--gib", "-1"],
        ["--gib", "lots"],
        ["--step-mib", "0"],
        ["--gib", "0.01"],
        ["--gib", "1000"],
        ["--bogus"],
    ],
)
def test_bad_arguments_are_refused_in_one_line(args: list[str], tmp_path: Path) -> None:
    done = fresh_pages(*args, "--out", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("scripts/bench_fresh_pages.py: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
