#!/usr/bin/env python3
"""What a fresh page of memory costs this machine's kernel, as a process's memory grows.

    .venv/bin/python scripts/bench_fresh_pages.py              # 8 GiB in 256 MiB steps
    .venv/bin/python scripts/bench_fresh_pages.py --gib 1      # a quick look

A node that holds more open reservations grows its memory, and every new 4 KiB page costs one
minor page fault: the kernel finds a free page and zeroes it. On bare metal that is well under a
microsecond. On a virtual machine whose guest hands free memory back to the host (virtio-balloon
free page reporting), a page the host has taken back costs a fault in the host too, several
times more. This measures it directly, with nothing of budgetd involved: each step maps
``--step-mib`` of anonymous memory, copies into it twice (the first copy faults every page in,
the second copies the same bytes into resident pages), and reports the difference per page.

Prints one line per step and a summary (median fault cost over the first and the last quarter
of the steps), with the kernel's free-page-reporting counter where it has one; writes JSON to
bench-results/fresh-pages-<time>.json. Refuses to map more than half of MemAvailable.
"""

from __future__ import annotations

import argparse
import json
import mmap
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

PAGE_BYTES = mmap.PAGESIZE
MIB = 1 << 20
#: The kernel's count of free memory reported to the host (virtio-balloon), where it has one.
REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")
ROOT = Path(__file__).resolve().parent.parent


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, exit 2, nothing mapped (argparse would print the usage first)."""
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _reported_kib() -> int | None:
    try:
        return int(REPORTED_KIB.read_text().strip())
    except (OSError, ValueError):
        return None


def measure(total_bytes: int, step_bytes: int) -> list[dict[str, float]]:
    """One row per step: µs per page for the first copy (faults and copy), the second (copy
    only), and their difference (the fault)."""
    source = b"\x01" * step_bytes  # resident before the first step
    pages = step_bytes // PAGE_BYTES
    kept: list[mmap.mmap] = []
    rows: list[dict[str, float]] = []
    try:
        for step in range(total_bytes // step_bytes):
            area = mmap.mmap(-1, step_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            kept.append(area)
            started = time.perf_counter()
            area.write(source)
            first_s = time.perf_counter() - started
            area.seek(0)
            started = time.perf_counter()
            area.write(source)
            second_s = time.perf_counter() - started
            rows.append(
                {
                    "touched_gib": (step + 1) * step_bytes / (1 << 30),
                    "first_touch_us_per_page": first_s / pages * 1e6,
                    "copy_us_per_page": second_s / pages * 1e6,
                    "fault_us_per_page": (first_s - second_s) / pages * 1e6,
                }
            )
    finally:
        for area in kept:
            area.close()
    return rows


def summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
    quarter = max(1, len(rows) // 4)
    first = statistics.median(row["fault_us_per_page"] for row in rows[:quarter])
    last = statistics.median(row["fault_us_per_page"] for row in rows[-quarter:])
    return {
        "fault_us_per_page_first_quarter": first,
        "fault_us_per_page_last_quarter": last,
        "last_over_first": last / first if first > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="scripts/bench_fresh_pages.py",
        description="The cost of a fresh page of memory on this machine, as memory grows.",
    )
    parser.add_argument("--gib", type=float, default=8.0, help="memory to map in all (8)")
    parser.add_argument("--step-mib", type=int, default=256, help="memory per step (256)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    if not 1 <= args.step_mib <= 4096:
        parser.error("--step-mib must be from 1 to 4096")
    if not 0 < args.gib < 1024:  # also refuses nan and inf
        parser.error("--gib must be a number of GiB above 0")
    step_bytes = args.step_mib * MIB
    total_bytes = int(args.gib * (1 << 30))
    if total_bytes < step_bytes:
        parser.error("--gib must cover at least one step")
    available = _mem_available_bytes()
    if total_bytes + step_bytes > available // 2:
        parser.error(
            f"--gib {args.gib:g} (plus one step's source) is over half of MemAvailable "
            f"({available / (1 << 30):.1f} GiB)"
        )
    reported_before = _reported_kib()
    rows = measure(total_bytes, step_bytes)
    reported_after = _reported_kib()
    for row in rows:
        print(
            f"{row['touched_gib']:6.2f} GiB  first touch {row['first_touch_us_per_page']:6.2f}"
            f"  copy {row['copy_us_per_page']:5.2f}  fault {row['fault_us_per_page']:6.2f}"
            " us/page"
        )
    summary = summarize(rows)
    ratio = summary["last_over_first"]
    print(
        f"fault per {PAGE_BYTES // 1024} KiB page: {summary['fault_us_per_page_first_quarter']:.2f}"
        f" us over the first quarter, {summary['fault_us_per_page_last_quarter']:.2f} us over the"
        f" last ({ratio:.1f}x)"
        if ratio is not None
        else "fault cost: too small to compare"
    )
    if reported_before is not None and reported_after is not None:
        print(
            f"free page reporting: {(reported_after - reported_before) / (1 << 20):.2f} GiB "
            "handed to the host during the run"
        )
    result = {
        "page_bytes": PAGE_BYTES,
        "step_bytes": step_bytes,
        "steps": rows,
        "summary": summary,
        "reported_kib_before": reported_before,
        "reported_kib_after": reported_after,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fresh-pages-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
