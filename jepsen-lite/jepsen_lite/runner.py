"""A test run end to end: settings in; a sandbox, the workloads and the nemesis schedule; heal,
quiet time, the I3 re-sends; every checker; a run directory out
(``store/<test>/<YYYYmmddTHHMMSS>/`` and ``store/latest``). Imports no budgetd module.

A run directory holds what was observed (``test.json``, ``history.jsonl``, ``final.json``,
``resends.jsonl``, ``samples.jsonl``, node logs) and what was concluded from it
(``results.json``, ``timeline.html``, ``latency.png``, ``rate.png``); ``analyse`` recomputes
the second from the first, so a stored run can be checked again.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from jepsen_lite import report
from jepsen_lite.bidders import BIDDER_CAMPAIGNS, BIDDERS_MAX, Bidders
from jepsen_lite.checkers import (
    WRITES,
    Result,
    Validity,
    compose,
    convergence,
    election_safety,
    exactly_once,
    no_lost_spend,
    no_overspend,
    reservation_lifecycle,
    stale_reads,
    stats,
    write_results,
)
from jepsen_lite.generator import Schedule, Step, schedule
from jepsen_lite.history import History, Op, load, pairs
from jepsen_lite.nemesis import Fault, current_leader, ensure_running, make_faults
from jepsen_lite.sandbox import Sandbox, SandboxError
from jepsen_lite.workload import CAMPAIGNS, OPS_MAX, WORKERS_MAX, ClusterSampler, Workload

__all__ = ["HarnessError", "RunOutcome", "Settings", "analyse", "git_revision", "run"]

#: How long a cluster may take to agree on a leader (start, after heal).
LEADER_S: Final = 30.0
#: After the quiet time, how long the nodes may take to converge before the final reads.
CONVERGE_S: Final = 20.0
NODE_COUNTS: Final = (3, 5)
#: The stats checker's floor of ok ops before the first fault, for warm-ups of at least
#: WARMUP_FOR_STATS_S.
OK_BEFORE_FAULT_MIN: Final = 10
WARMUP_FOR_STATS_S: Final = 2.0
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._,+-]{0,99}$")


class HarnessError(RuntimeError):
    """The run could not be carried out (no leader, sandbox failure…); no verdict."""


@dataclass(frozen=True)
class Settings:
    """One test: ``workers`` raw-HTTP client threads and ``bidders`` budget_client bidder
    threads, each pausing between ops so that together they send at most about ``rate`` ops
    per second."""

    faults: tuple[str, ...] = ()
    nodes: int = 3
    seed: int = 0
    time_limit_s: float = 60.0
    rate: float = 40.0
    workers: int = 4
    bidders: int = 2
    interval_s: float = 10.0
    warmup_s: float = 5.0
    quiet_s: float = 5.0
    canary: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.nodes not in NODE_COUNTS:
            raise ValueError(f"nodes must be 3 or 5, got {self.nodes}")
        if not 0 < self.rate <= 1000:
            raise ValueError(f"rate must be in (0, 1000] ops/s, got {self.rate}")
        if not 1 <= self.workers <= WORKERS_MAX:
            raise ValueError(f"workers must be in 1..{WORKERS_MAX}, got {self.workers}")
        if not 0 <= self.bidders <= BIDDERS_MAX:
            raise ValueError(f"bidders must be in 0..{BIDDERS_MAX}, got {self.bidders}")
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"a test name is letters, digits and ._,+- (got {self.name!r})")
        make_faults(self.faults)  # unknown names fail here, before anything is built
        self.plan()  # so do bad timings

    @property
    def test_name(self) -> str:
        if self.name:
            return self.name
        base = "+".join(self.faults) or "no-faults"
        return f"{base}-n{self.nodes}" + (f"-canary-{self.canary}" if self.canary else "")

    def plan(self) -> Schedule:
        return schedule(
            self.seed,
            self.faults,
            time_limit_s=self.time_limit_s,
            interval_s=self.interval_s,
            warmup_s=self.warmup_s,
            quiet_s=self.quiet_s,
        )


@dataclass(frozen=True)
class RunOutcome:
    path: Path
    valid: Validity
    error: str | None = None
    results: dict[str, Any] = field(default_factory=dict)


def git_revision() -> str | None:
    """The revision (``-dirty`` when the work tree has changes) of the checkout holding this
    package; None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def _new_run_dir(store: Path, test_name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    base = store / test_name
    base.mkdir(parents=True, exist_ok=True)
    for suffix in ["", *(f"-{i}" for i in range(1, 100))]:
        path = base / f"{stamp}{suffix}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise HarnessError(f"cannot make a run directory under {base}")


def _link_latest(store: Path, run_dir: Path) -> None:
    latest = store / "latest"
    temporary = store / f".latest-{run_dir.name}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_dir.relative_to(store))
    temporary.replace(latest)


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(row, sort_keys=True, default=str) + "\n" for row in rows)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _poll(condition: Callable[[], Any], limit_s: float, stop: threading.Event) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and not stop.is_set():
        got = condition()
        if got:
            return got
        time.sleep(0.1)
    return None


# Running ------------------------------------------------------------------------------------


def run(
    settings: Settings,
    store: Path,
    *,
    log: Callable[[str], None] = lambda line: None,
    stop: threading.Event | None = None,
) -> RunOutcome:
    """Carry out ``settings``: a new run directory under ``store``, ``store/latest`` pointing
    at it, and its verdict. A harness failure is a verdict of ``unknown`` with ``error``.
    ValueError, before anything is written, for options no fault or sandbox takes."""
    stop = stop or threading.Event()
    faults = make_faults(settings.faults)
    plan = settings.plan()
    options: dict[str, Any] = {}
    for fault in faults:
        for key, value in fault.sandbox_options.items():
            if key in options and options[key] != value:
                raise ValueError(f"faults disagree on the sandbox option {key!r}")
            options[key] = value
    if settings.canary is not None:
        options["canary"] = settings.canary
    try:  # the options are checked by the constructor, which builds nothing
        Sandbox(store / "unbuilt", size=settings.nodes, **options)
    except TypeError as refused:
        raise ValueError(f"this build's sandbox takes no option {sorted(options)}") from refused
    except ValueError as refused:
        raise ValueError(
            f"{refused} (faults: {', '.join(settings.faults) or 'none'}; nodes: {settings.nodes})"
        ) from refused
    store.mkdir(parents=True, exist_ok=True)
    run_dir = _new_run_dir(store, settings.test_name)
    _link_latest(store, run_dir)
    _write_json(
        run_dir / "test.json",
        {
            "name": settings.test_name,
            "settings": asdict(settings),
            "seed": settings.seed,
            "git_revision": git_revision(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "schedule": plan.to_dict(),
            "sandbox_options": options,
        },
    )
    log(f"run directory {run_dir}")
    history = History(run_dir / "history.jsonl")
    error: str | None = None
    try:
        sandbox = Sandbox(run_dir / "cluster", size=settings.nodes, **options)
        _link_logs(sandbox, run_dir / "logs")
        with sandbox:
            try:
                _drive(sandbox, history, faults, plan, settings, run_dir, log, stop)
            finally:
                history.close()
    except (HarnessError, SandboxError, RuntimeError, OSError) as failure:
        error = f"{type(failure).__name__}: {failure}"
        log(f"harness error: {error}")
    finally:
        history.close()
    results = analyse(run_dir, error=error)
    log(f"verdict: {results['valid']}")
    return RunOutcome(run_dir, results["valid"], error, results)


def _link_logs(sandbox: Sandbox, logs: Path) -> None:
    """``logs/n<i>.log``: links to the node logs (kept under ``cluster/``)."""
    logs.mkdir()
    for node in sandbox.nodes:
        (logs / node.log.name).symlink_to(Path("..") / node.log.relative_to(logs.parent))


def _nemesis(history: History, fault: Fault, step: Step, sandbox: Sandbox) -> None:
    """One nemesis op: invoke ``<fault>:<action>``, then info with what the fault returned
    (a fault's effect is never certain), or info with the error it raised."""
    value: dict[str, Any] = {"phase": step.phase, "at_s": step.at_s}
    if step.seed is not None:
        value["seed"] = step.seed
    invoked = history.invoke("nemesis", f"{fault.name}:{step.action}", value)
    try:
        if step.action == "start":
            got = fault.start(sandbox, random.Random(step.seed))
        else:
            got = fault.stop(sandbox)
    except Exception as failure:
        history.complete(invoked, "info", {}, error=f"{type(failure).__name__}: {failure}")
        return
    history.complete(invoked, "info", dict(got))


def _drive(
    sandbox: Sandbox,
    history: History,
    faults: list[Fault],
    plan: Schedule,
    settings: Settings,
    run_dir: Path,
    log: Callable[[str], None],
    stop: threading.Event,
) -> None:
    by_name = {fault.name: fault for fault in faults}
    if _poll(lambda: current_leader(sandbox), LEADER_S, stop) is None:
        raise HarnessError(f"no leader within {LEADER_S:.0f} s of start")
    ops_max = int(min(OPS_MAX, settings.rate * settings.time_limit_s * 2 + 100))
    # Each client thread waits threads/rate between ops: together at most about ``rate``.
    pause_s = (settings.workers + settings.bidders) / settings.rate
    workload = Workload(
        sandbox,
        history,
        workers=settings.workers,
        ops_max=ops_max,
        duration_s=settings.time_limit_s,
        pause_s=pause_s,
        seed=settings.seed,
    )
    bidders = Bidders(
        sandbox, history, bidders=settings.bidders, duration_s=settings.time_limit_s,
        pause_s=pause_s, seed=settings.seed,
    )  # fmt: skip
    sampler = ClusterSampler(sandbox, history)
    try:
        workload.setup()
        bidders.setup()
        sampler.start()
        started = time.monotonic()
        workload.start()
        bidders.start()
        log(f"workload started; {len(plan.fault_steps)} nemesis steps")
        for step in plan.steps:
            if stop.wait(max(0.0, started + step.at_s - time.monotonic())):
                break
            log(f"{step.at_s:7.1f} s  {step.fault}:{step.action}")
            _nemesis(history, by_name[step.fault], step, sandbox)
        workload.stop() if stop.is_set() else workload.join()
        bidders.stop() if stop.is_set() else bidders.join()
        if stop.is_set():
            raise HarnessError("stopped by a signal before the final reads")
        # Whatever the faults did, every link and node is back before the final reads.
        sandbox.net.heal()
        ensure_running(sandbox)
        log(f"healed; quiet for {settings.quiet_s:.0f} s")
        stop.wait(settings.quiet_s)
        ids = sandbox.node_ids
        # Every campaign the final reads and the re-send totals cover.
        campaigns = (*CAMPAIGNS, *(BIDDER_CAMPAIGNS if settings.bidders else ()))

        def converged() -> dict[str, Any] | None:
            views = {n: sandbox.view(n, fresh_digest=True) for n in ids}
            return views if convergence(views).valid == "valid" else None

        views = _poll(converged, CONVERGE_S, stop) or {
            n: sandbox.view(n, fresh_digest=True) for n in ids
        }
        states = {
            f"{n}/{consistency}": {
                c: workload.state(n, c, consistency=consistency) for c in campaigns
            }
            for consistency in ("strong", "local")
            for n in ids
        }
        leader = _poll(lambda: current_leader(sandbox), LEADER_S, stop)
        if leader is None:
            raise HarnessError(f"no leader within {LEADER_S:.0f} s after heal")
        log(f"re-sending writes through {leader}")
        resends, totals = _resend_phase(workload, leader, history.ops, campaigns)
        _write_json(
            run_dir / "final.json",
            {"views": views, "states": states, "totals": totals, "leader": leader},
        )
        _write_jsonl(run_dir / "resends.jsonl", resends)
    finally:
        sampler.stop()
        workload.close()
        bidders.close()
        _write_jsonl(run_dir / "samples.jsonl", [asdict(s) for s in sampler.samples])


def _resend_phase(
    workload: Workload, leader: str, ops: list[Op], campaigns: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int | None]]]:
    """I3: every ok write re-sent once, every info (or unfinished) one twice, to the leader
    with its original key and body; the leader's strong totals around each round."""
    writes = [(i, c) for i, c in pairs(ops) if i.f in WRITES and "request" in i.value]
    oks = [i for i, c in writes if c is not None and c.type == "ok"]
    infos = [i for i, c in writes if c is None or c.type == "info"]

    def totals() -> dict[str, int | None]:
        return {c: workload.read(leader, c, consistency="strong") for c in campaigns}

    phases = {"before": totals()}
    resends = workload.resend(leader, oks, round_=1, limit_s=20.0 + len(oks) / 40)
    phases["after_ok"] = totals()
    resends += workload.resend(leader, infos, round_=1, limit_s=10.0 + len(infos) / 40)
    phases["after_info_1"] = totals()
    resends += workload.resend(leader, infos, round_=2, limit_s=10.0 + len(infos) / 40)
    phases["after_info_2"] = totals()
    return [asdict(r) for r in resends], phases


# Analysis -----------------------------------------------------------------------------------


def _spent(states: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int | None]]:
    out: dict[str, dict[str, int | None]] = {}
    for reader, by_campaign in states.items():
        out[reader] = {}
        for campaign_id, body in by_campaign.items():
            value = body.get("spent_total_micros") if isinstance(body, dict) else None
            out[reader][campaign_id] = value if isinstance(value, int) else None
    return out


@dataclass(frozen=True)
class _Sample:
    time_ns: int
    node: str
    term: int
    leader_id: str | None
    applied_index: int


def check(run_dir: Path) -> dict[str, Result]:
    """Every checker over what ``run_dir`` recorded. A run that ended before its final reads
    gets ``unknown`` from the checkers that need them."""
    ops = load(run_dir / "history.jsonl")
    final_path = run_dir / "final.json"
    final = json.loads(final_path.read_text()) if final_path.exists() else {}
    states: dict[str, dict[str, Any]] = final.get("states", {})
    resends = _read_jsonl(run_dir / "resends.jsonl")
    samples = [_Sample(**row) for row in _read_jsonl(run_dir / "samples.jsonl")]
    test = json.loads((run_dir / "test.json").read_text())
    settings = test.get("settings", {})
    fs = ("spend", "reserve", "commit", "read", *(("release",) if settings.get("bidders") else ()))
    # Ok ops wanted before the first fault: only a run with a warm-up has a "before".
    before_min = OK_BEFORE_FAULT_MIN if settings.get("warmup_s", 0) >= WARMUP_FOR_STATS_S else 0
    once = exactly_once(ops, resends, final.get("totals", {}))
    return {
        "no_lost_spend": no_lost_spend(ops, _spent(states), once.detail["applied"]),
        "exactly_once": once,
        "stale_reads": stale_reads(ops),
        "no_overspend": no_overspend(ops, states),
        "reservation_lifecycle": reservation_lifecycle(ops),
        "stats": stats(ops, fs=fs, ok_before_fault_min=before_min),
        "convergence": convergence(final.get("views", {})),
        "election_safety": election_safety(samples),
    }


def analyse(run_dir: Path, *, error: str | None = None) -> dict[str, Any]:
    """Run every checker over ``run_dir``, write ``results.json`` and the pictures; the
    results document. ``error`` (a harness failure) makes the verdict unknown whatever the
    checkers say."""
    results = check(run_dir)
    test = json.loads((run_dir / "test.json").read_text())
    ops = load(run_dir / "history.jsonl")
    counts: dict[str, int] = {}
    for op in ops:
        if op.type != "invoke" and op.process != "nemesis":
            key = f"{op.f}:{op.type}"
            counts[key] = counts.get(key, 0) + 1
    valid: Validity = "unknown" if error is not None else compose(results)
    if error is not None and compose(results) == "invalid":
        valid = "invalid"  # a violation seen before the harness failed still stands
    summary = {
        "ops": dict(sorted(counts.items())),
        "nemesis": [
            {"f": op.f, "value": op.value, "error": op.error}
            for op in ops
            if op.process == "nemesis" and op.type != "invoke"
        ],
    }
    write_results(run_dir / "results.json", results, summary=summary, error=error)
    document: dict[str, Any] = json.loads((run_dir / "results.json").read_text())
    document["valid"] = valid
    _write_json(run_dir / "results.json", document)
    title = f"{test.get('name', run_dir.parent.name)} {run_dir.name}"
    report.timeline_html(ops, run_dir / "timeline.html", title=title)
    report.latency_png(ops, run_dir / "latency.png", title=title)
    report.rate_png(ops, run_dir / "rate.png", title=title)
    return document
