"""scripts/bench_api.py: the HTTP path alone, over an instant service, answers both of its
workloads and prints the server's CPU per op; bad arguments start nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_API = ROOT / "scripts" / "bench_api.py"


def bench_api(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH_API), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize(("kind", "ops"), [("reserve", "640"), ("batch", "8000")])
def test_each_workload_reports_cpu_per_op(kind: str, ops: str) -> None:
    done = bench_api(kind, ops)
    assert done.returncode == 0, done.stderr
    match = re.fullmatch(
        rf"{kind} ops=(\d+) server_cpu_us_per_op=([\d.]+) ops_per_s=[\d,]+", done.stdout.strip()
    )
    assert match is not None, done.stdout
    assert int(match[1]) > 0 and float(match[2]) > 0


@pytest.mark.parametrize("args", [[], ["batch"], ["mix", "10"], ["batch", "lots"], ["batch", "0"]])
def test_bad_arguments_are_refused_in_one_line(args: list[str]) -> None:
    done = bench_api(*args)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("usage: bench_api.py")
    assert len(done.stderr.strip().splitlines()) == 1
