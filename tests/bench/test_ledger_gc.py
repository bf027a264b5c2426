"""scripts/bench_ledger.py --gc-pauses: every collector policy grows a ledger in its own process and
reports its pauses; a node's policy freezes (so its middle collections stay few and short, which
is not judged here: the machine is shared). Bad sizes start nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "scripts" / "bench_ledger.py"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LEDGER), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_every_policy_grows_the_ledger_and_reports_its_pauses(tmp_path: Path) -> None:
    done = bench("--gc-pauses", "60000", "--quick", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    [path] = tmp_path.glob("ledger-gc-*.json")
    rows = {row["policy"]: row for row in json.loads(path.read_text())["gc"]}
    assert set(rows) == {"python defaults", "100k/50/1k, no freezing", "node (budgetd.gctune)"}
    for row in rows.values():
        assert row["reservations"] == 60_000 and row["reserves_per_s"] > 0
        assert row["max_pause_ms"] >= 0 and 0 <= row["collecting_share"] < 1
    assert sum(rows["node (budgetd.gctune)"]["collections"]) > 0
    assert "node (budgetd.gctune)" in done.stdout


@pytest.mark.parametrize("size", ["10", "0", "99999999999", "lots"])
def test_a_bad_size_is_refused_in_one_line(size: str, tmp_path: Path) -> None:
    done = bench("--gc-pauses", size, "--out", str(tmp_path))
    assert done.returncode == 2
    assert "--gc-pauses" in done.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())
