"""scripts/bench_floor.py: one short run of the floor, the whole stack and a real cluster writes
a figure for each; bad options start nothing. No figure is judged (the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FLOOR = ROOT / "scripts" / "bench_floor.py"


def floor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FLOOR), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_a_short_run_measures_every_variant_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    done = floor(
        "--requests", "100", "--force", "--variants", "floor,stack,pysyncobj,budgetd",
        "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert set(figures["p50_s"]) == {"floor", "stack", "pysyncobj", "budgetd"}
    assert all(len(values) == 3 for values in figures["p50_s_by_repeat"].values())
    assert all(value > 0 for value in figures["p50_s"].values())
    assert figures["msync_s"] > 0 and figures["round_trip_s"] > 0
    assert "| budgetd |" in done.stdout


@pytest.mark.parametrize(
    "args",
    [["--requests", "5"], ["--repeats", "2"], ["--variants", "floor,nope"], ["--variants", ","]],
)
def test_bad_options_exit_2_and_start_nothing(args: list[str]) -> None:
    done = floor(*args)
    assert done.returncode == 2
    assert "error:" in done.stderr
    assert "p50" not in done.stderr
