"""jepsen-lite's run pictures from a hand-made history: the fault intervals, the timeline's
columns, colours and cap, and the two plots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jepsen_lite.history import History
from jepsen_lite.report import (
    TIMELINE_OPS_MAX,
    fault_intervals,
    latency_png,
    rate_png,
    timeline_html,
)

pytestmark = pytest.mark.jepsen

PNG = b"\x89PNG\r\n\x1a\n"


def history_with(client_ops: int) -> History:
    """``client_ops`` spends by two processes, 1 ms apart (ok, fail, info in turn), with a
    partition from the 100th op to the 300th and a kill started and never stopped."""
    clock = iter(range(0, 10**15, 10**6))
    history = History(None, lambda: next(clock))
    for serial in range(client_ops):
        if serial == 100:
            nemesis = history.invoke("nemesis", "partition-one:start", {})
            history.complete(nemesis, "info", {"drops_from": {"n1": ["n2", "n3"]}})
        if serial == 300:
            nemesis = history.invoke("nemesis", "partition-one:stop", {})
            history.complete(nemesis, "info", {"healed": True})
        if serial == 400:
            nemesis = history.invoke("nemesis", "kill:start", {})
            history.complete(nemesis, "info", {"killed": ["n2"]})
        invoked = history.invoke(serial % 2, "spend", {"key": f"k{serial}"}, node="n1")
        history.complete(invoked, ("ok", "fail", "info")[serial % 3])  # type: ignore[arg-type]
    return history


def test_fault_intervals_pair_starts_with_stops() -> None:
    intervals = fault_intervals(history_with(500).ops)
    assert [(i.fault, i.value) for i in intervals] == [
        ("partition-one", {"drops_from": {"n1": ["n2", "n3"]}}),
        ("kill", {"killed": ["n2"]}),
    ]
    partition, kill = intervals
    assert 0 < partition.start_s < partition.end_s < kill.start_s
    assert kill.end_s == pytest.approx((len(history_with(500).ops) - 1) / 1000)


def test_timeline_has_a_column_per_process_a_box_per_op_and_the_faults(tmp_path: Path) -> None:
    path = tmp_path / "timeline.html"
    timeline_html(history_with(500).ops, path, title="t")
    page = path.read_text()
    assert page.count('class="op"') == 500
    assert re.findall(r'class="head"[^>]*>([^<]*)<', page) == ["0", "1"]
    for colour in ("#6db36d", "#e07b7b", "#f0c05a"):  # ok, fail, info
        assert f"background:{colour}" in page
    assert page.count('class="fault"') == 2 and ">partition-one<" in page


def test_timeline_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "timeline.html"
    timeline_html(history_with(TIMELINE_OPS_MAX + 50).ops, path, title="t")
    page = path.read_text()
    assert page.count('class="op"') == TIMELINE_OPS_MAX
    assert f"the first {TIMELINE_OPS_MAX} of {TIMELINE_OPS_MAX + 50} ops" in page


def test_plots_are_pngs(tmp_path: Path) -> None:
    ops = history_with(500).ops
    latency_png(ops, tmp_path / "latency.png", title="t")
    rate_png(ops, tmp_path / "rate.png", title="t")
    assert (tmp_path / "latency.png").read_bytes()[:8] == PNG
    assert (tmp_path / "rate.png").read_bytes()[:8] == PNG
