"""The pictures of a run: ``timeline.html`` (one column per process, a box per op coloured by
its outcome, nemesis intervals marked), ``latency.png`` and ``rate.png`` (matplotlib, Agg
backend) with fault intervals shaded. Reads a history; imports no budgetd module.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

try:
    import matplotlib
except ImportError as missing:  # the node's image leaves it out
    raise ImportError(
        "jepsen-lite's reports need matplotlib: pip install 'budgetd[jepsen]'"
    ) from missing

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use(): the backend is chosen first

from jepsen_lite.history import Op, Process, pairs

__all__ = ["Interval", "fault_intervals", "latency_png", "rate_png", "timeline_html"]

#: Ops drawn in the timeline at most (the first ones).
TIMELINE_OPS_MAX: Final = 10_000
#: Height of the timeline in pixels per second of run, bounded so a long run stays readable.
PX_PER_S_MAX: Final = 60.0
TIMELINE_PX_MAX: Final = 30_000.0
COLOURS: Final = {"ok": "#6db36d", "fail": "#e07b7b", "info": "#f0c05a", None: "#b0b0b0"}
_MARKERS: Final = {"ok": "o", "fail": "x", "info": "^"}


@dataclass(frozen=True)
class Interval:
    """A fault in force from ``start_s`` to ``end_s`` (seconds from the first op)."""

    fault: str
    start_s: float
    end_s: float
    value: dict[str, object]


def _origin(ops: Sequence[Op]) -> int:
    return ops[0].time_ns if ops else 0


def fault_intervals(ops: Sequence[Op]) -> list[Interval]:
    """Each nemesis ``<fault>:start`` paired with the next ``<fault>:stop`` (a start never
    stopped lasts until the last op)."""
    origin = _origin(ops)
    end_of_run = (ops[-1].time_ns - origin) / 1e9 if ops else 0.0
    opened: dict[str, tuple[float, dict[str, object]]] = {}
    intervals = []
    for invoked, completion in pairs(list(ops)):
        if invoked.process != "nemesis" or ":" not in invoked.f:
            continue
        fault, action = invoked.f.rsplit(":", 1)
        at = (invoked.time_ns - origin) / 1e9
        if action == "start":
            value = dict(completion.value) if completion is not None else {}
            opened[fault] = (at, value)
        elif action == "stop" and fault in opened:
            start, value = opened.pop(fault)
            done = completion.time_ns if completion is not None else invoked.time_ns
            intervals.append(Interval(fault, start, (done - origin) / 1e9, value))
    intervals += [Interval(f, s, end_of_run, v) for f, (s, v) in opened.items()]
    return sorted(intervals, key=lambda i: i.start_s)


def _process_order(process: Process) -> tuple[int, str]:
    if process == "nemesis":
        return (0, "")
    if isinstance(process, int):
        return (1, f"{process:08d}")
    return (2, str(process))


def timeline_html(ops: Sequence[Op], path: Path, *, title: str) -> None:
    """One column per process, time downwards, a box per op from invoke to completion."""
    origin = _origin(ops)
    all_pairs = [p for p in pairs(list(ops)) if p[0].process != "nemesis"]
    shown = all_pairs[:TIMELINE_OPS_MAX]
    end_s = max(((ops[-1].time_ns - origin) / 1e9 if ops else 0.0), 1.0)
    scale = min(PX_PER_S_MAX, TIMELINE_PX_MAX / end_s)
    processes = sorted({invoked.process for invoked, _ in shown}, key=_process_order)
    column = {process: index for index, process in enumerate(processes)}
    width = 70
    left = 60
    boxes = []
    for invoked, completion in shown:
        start = (invoked.time_ns - origin) / 1e9
        stop = (completion.time_ns - origin) / 1e9 if completion is not None else end_s
        kind = completion.type if completion is not None else None
        detail = {"invoke": invoked.value, "completion": None}
        if completion is not None:
            detail["completion"] = {
                "type": completion.type,
                "error": completion.error,
                "value": {k: v for k, v in completion.value.items() if k != "result"},
            }
        tip = html.escape(
            f"op {invoked.index} {invoked.f} via {invoked.node} [{start:.3f}–{stop:.3f} s]\n"
            + json.dumps(detail, sort_keys=True, default=str)[:600]
        )
        top = start * scale
        height = max(2.0, (stop - start) * scale)
        boxes.append(
            f'<div class="op" title="{tip}" style="left:{left + column[invoked.process] * width}px;'
            f'top:{top + 40:.1f}px;height:{height:.1f}px;background:{COLOURS[kind]}">'
            f"{html.escape(invoked.f) if height >= 12 else ''}</div>"
        )
    bands = []
    for interval in fault_intervals(ops):
        top = interval.start_s * scale + 40
        height = max(2.0, (interval.end_s - interval.start_s) * scale)
        tip = html.escape(json.dumps(interval.value, sort_keys=True, default=str)[:600])
        bands.append(
            f'<div class="fault" title="{tip}" style="top:{top:.1f}px;height:{height:.1f}px">'
            f"{html.escape(interval.fault)}</div>"
        )
    heads = "".join(
        f'<div class="head" style="left:{left + column[p] * width}px">{html.escape(str(p))}</div>'
        for p in processes
    )
    ticks = "".join(
        f'<div class="tick" style="top:{second * scale + 40:.1f}px">{second} s</div>'
        for second in range(0, int(end_s) + 1, max(1, int(end_s) // 60 or 1))
    )
    note = ""
    if len(all_pairs) > len(shown):
        note = f" — the first {len(shown)} of {len(all_pairs)} ops"
    page_height = end_s * scale + 80
    page_width = left + len(processes) * width + 20
    document = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 11px sans-serif; margin: 0; }}
#t {{ position: relative; height: {page_height:.0f}px; width: {max(page_width, 400)}px; }}
.op {{ position: absolute; width: {width - 6}px; overflow: hidden; border-radius: 2px;
      box-sizing: border-box; border: 1px solid rgba(0,0,0,.25); font-size: 9px; }}
.fault {{ position: absolute; left: 0; right: 0; background: rgba(120,120,220,.15);
         border-top: 2px solid #7878dc; color: #4848a0; padding-left: 2px; }}
.head {{ position: absolute; top: 0; height: 36px; width: {width - 6}px; background: #fff;
        font-weight: bold; padding-top: 20px; z-index: 2; }}
.tick {{ position: absolute; left: 2px; color: #888; border-top: 1px dotted #ccc;
        width: 100%; }}
#legend {{ position: fixed; right: 8px; top: 4px; background: #fff; z-index: 3; }}
</style></head><body>
<div id="legend">{html.escape(title)}{html.escape(note)} —
<span style="background:{COLOURS["ok"]}">ok</span>
<span style="background:{COLOURS["fail"]}">fail</span>
<span style="background:{COLOURS["info"]}">info</span>
<span style="background:{COLOURS[None]}">open</span>
<span style="background:rgba(120,120,220,.3)">fault</span></div>
<div id="t">{heads}{ticks}{"".join(bands)}{"".join(boxes)}</div>
</body></html>
"""
    path.write_text(document, encoding="utf-8")


def _shade(axes: plt.Axes, intervals: Sequence[Interval]) -> None:
    names = sorted({interval.fault for interval in intervals})
    labelled: set[str] = set()
    for interval in intervals:
        colour = f"C{(names.index(interval.fault) % 8) + 2}"
        label = None if interval.fault in labelled else interval.fault
        labelled.add(interval.fault)
        axes.axvspan(interval.start_s, interval.end_s, color=colour, alpha=0.15, label=label)


def latency_png(ops: Sequence[Op], path: Path, *, title: str) -> None:
    """Latency (ms, log scale) of every client op at its invoke time, by op type and
    outcome; fault intervals shaded."""
    origin = _origin(ops)
    series: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for invoked, completion in pairs(list(ops)):
        if invoked.process == "nemesis" or completion is None:
            continue
        xs, ys = series[(invoked.f, completion.type)]
        xs.append((invoked.time_ns - origin) / 1e9)
        ys.append(max((completion.time_ns - invoked.time_ns) / 1e6, 0.01))
    figure, axes = plt.subplots(figsize=(12, 6))
    try:
        _shade(axes, fault_intervals(ops))
        fs = sorted({f for f, _ in series})
        for (f, kind), (xs, ys) in sorted(series.items()):
            axes.scatter(
                xs,
                ys,
                s=6,
                marker=_MARKERS.get(kind, "o"),
                color=f"C{fs.index(f) % 10}",
                alpha=0.6,
                label=f"{f} {kind}",
            )
        axes.set_yscale("log")
        axes.set_xlabel("time since the first op (s)")
        axes.set_ylabel("latency (ms)")
        axes.set_title(f"{title}: latency")
        axes.legend(loc="upper left", fontsize=7, ncol=3, markerscale=2)
        figure.tight_layout()
        figure.savefig(path, dpi=90)
    finally:
        plt.close(figure)


def rate_png(ops: Sequence[Op], path: Path, *, title: str) -> None:
    """Completions per second (1 s bins) by op type and outcome; fault intervals shaded."""
    origin = _origin(ops)
    end_s = int((ops[-1].time_ns - origin) / 1e9) + 1 if ops else 1
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * end_s)
    for invoked, completion in pairs(list(ops)):
        if invoked.process == "nemesis" or completion is None:
            continue
        second = min(int((completion.time_ns - origin) / 1e9), end_s - 1)
        counts[(invoked.f, completion.type)][second] += 1
    figure, axes = plt.subplots(figsize=(12, 5))
    try:
        _shade(axes, fault_intervals(ops))
        fs = sorted({f for f, _ in counts})
        styles = {"ok": "-", "fail": ":", "info": "--"}
        for (f, kind), per_second in sorted(counts.items()):
            axes.plot(
                range(end_s),
                per_second,
                styles.get(kind, "-"),
                color=f"C{fs.index(f) % 10}",
                linewidth=1,
                label=f"{f} {kind}",
            )
        axes.set_xlabel("time since the first op (s)")
        axes.set_ylabel("ops completed per second")
        axes.set_title(f"{title}: throughput")
        axes.legend(loc="upper left", fontsize=7, ncol=3)
        figure.tight_layout()
        figure.savefig(path, dpi=90)
    finally:
        plt.close(figure)
