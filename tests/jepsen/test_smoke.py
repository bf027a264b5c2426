"""The jepsen-lite smoke matrix: each fault kind once, with a fixed seed chosen so the run meets
every variant of it (every partition shape on 5 nodes; kill -9 of one, the leader, a minority
and all; pause of one and of the leader; rolling and all-at-once restarts; clock skew and a
leader's clock jump; power loss of the leader and of every node; WAN latency with the leader
isolated), and every checker must say valid. The restart run goes through the `jepsen-lite`
command (so inside its own namespaces); a stored run whose history is made to show a spend the
cluster never counted, and a run against a deliberately broken store (a canary), must make the
command exit 1.

About 9 minutes in all; each run writes its run directory under the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite.history import load
from jepsen_lite.nemesis import PARTITIONS
from jepsen_lite.runner import Settings, run
from tests.jepsen.helpers import needs_sandbox, until

pytestmark = pytest.mark.jepsen

REPO = Path(__file__).resolve().parents[2]
ALL_PARTITIONS = tuple(f"partition-{kind}" for kind in PARTITIONS)
#: (settings, what the nemesis ops must have shown: the value field and every value of it).
MATRIX: dict[str, tuple[Settings, str, set[str]]] = {
    "partitions": (
        Settings(
            faults=ALL_PARTITIONS,
            nodes=5,
            seed=5,
            time_limit_s=48,
            interval_s=4,
            warmup_s=4,
            quiet_s=3,
            workers=3,
            bidders=2,
        ),
        "partition",
        set(PARTITIONS),
    ),
    "kill": (
        Settings(faults=("kill",), seed=2, time_limit_s=45, interval_s=5, warmup_s=4, quiet_s=3),
        "target",
        {"one", "leader", "minority", "all"},
    ),
    "pause": (
        Settings(faults=("pause",), seed=0, time_limit_s=40, interval_s=5, warmup_s=4, quiet_s=3),
        "target",
        {"one", "leader"},
    ),
    "clock": (
        Settings(
            faults=("clock-skew", "clock-jump-leader"),
            seed=1,
            time_limit_s=40,
            interval_s=5,
            warmup_s=4,
            quiet_s=3,
        ),
        "_f",
        {"clock-skew:start", "clock-jump-leader:start"},
    ),
    "power-loss": (
        Settings(
            faults=("power-loss-leader", "power-loss-all"),
            seed=1,
            time_limit_s=40,
            interval_s=5,
            warmup_s=4,
            quiet_s=3,
        ),
        "_f",
        {"power-loss-leader:start", "power-loss-all:start"},
    ),
    "wan": (
        Settings(
            faults=("wan-latency-3", "partition-leader"),
            seed=1,
            time_limit_s=40,
            interval_s=5,
            warmup_s=4,
            quiet_s=3,
        ),
        "_f",
        {"wan-latency-3:start", "partition-leader:start"},
    ),
}
RESTART_ARGS = [
    "--faults", "restart-all", "--seed", "0", "--time-limit", "40", "--interval", "6",
    "--warmup", "4", "--quiet", "3", "--nodes", "3",
]  # fmt: skip


def nemesis_values(ops_path: Path) -> list[dict[str, Any]]:
    return [
        {**op.value, "_f": op.f, "_error": op.error}
        for op in load(ops_path)
        if op.process == "nemesis" and op.type != "invoke"
    ]


def assert_all_valid(results: dict[str, Any]) -> None:
    verdicts = {name: c["valid"] for name, c in results["checkers"].items()}
    assert results["valid"] == "valid", json.dumps(
        {n: c for n, c in results["checkers"].items() if c["valid"] != "valid"}, default=str
    )[:4000]
    assert set(verdicts.values()) == {"valid"}, verdicts
    assert results["error"] is None


@needs_sandbox
@pytest.mark.parametrize("case", sorted(MATRIX))
def test_fault_kind_keeps_every_checker_valid(case: str, tmp_path: Path) -> None:
    settings, field, variants = MATRIX[case]
    outcome = run(settings, tmp_path / "store", log=print)
    assert_all_valid(outcome.results)
    values = nemesis_values(outcome.path / "history.jsonl")
    assert not [v for v in values if v["_error"]], values
    seen = {v[field] for v in values if v["_f"].endswith(":start")}
    assert seen == variants, seen
    checkers = outcome.results["checkers"]
    # Non-vacuous: money ran out, reservations went through their life, reads were checked.
    assert checkers["no_overspend"]["detail"]["budget_exhausted_refusals"] > 0
    assert checkers["reservation_lifecycle"]["detail"]["reservations_closed"] > 0
    assert checkers["stale_reads"]["detail"]["ok_reads"] > 0
    for name in ("test.json", "history.jsonl", "results.json", "timeline.html"):
        assert (outcome.path / name).stat().st_size > 0, name
    for name in ("latency.png", "rate.png"):
        assert (outcome.path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    logs = sorted((outcome.path / "logs").iterdir())
    assert [p.name for p in logs] == [f"n{i}.log" for i in range(1, settings.nodes + 1)]
    assert all(p.stat().st_size > 0 for p in logs)
    assert (tmp_path / "store" / "latest").resolve() == outcome.path.resolve()


def jepsen_lite(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run from the store's parent, given the store as a relative path (as a user
    typing ``--store runs`` does)."""
    path = os.pathsep.join(str(REPO / p) for p in ("jepsen-lite", "client", "."))
    environment = {**os.environ, "PYTHONPATH": path}
    environment.pop("JEPSEN_LITE_NAMESPACED", None)
    return subprocess.run(
        [sys.executable, "-m", "jepsen_lite", "--store", store.name, *args],
        cwd=store.parent,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )


@needs_sandbox
def test_cli_restarts_every_node_then_a_failing_checker_exits_1(tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = jepsen_lite(store, "run", *RESTART_ARGS)
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = (store / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    assert_all_valid(results)
    values = nemesis_values(run_dir / "history.jsonl")
    assert {v["mode"] for v in values if v["_f"] == "restart-all:start"} == {
        "rolling",
        "all-at-once",
    }
    listed = jepsen_lite(store, "list")
    assert listed.returncode == 0 and f"{run_dir.name}  valid" in listed.stdout, listed
    shown = jepsen_lite(store, "show", "--open")
    assert shown.stdout.strip().splitlines()[0] == str(run_dir / "timeline.html")

    # A spend acknowledged in the history that the cluster never counted: I2 must fail it.
    ops = load(run_dir / "history.jsonl")
    last = ops[-1]
    value = {"campaign_id": "jl:a", "amount_micros": 7_000_000, "key": "never-sent"}
    forged = [
        {"index": last.index + 1, "process": 999, "type": "invoke", "f": "spend",
         "value": value, "time_ns": last.time_ns + 1, "node": "n1", "error": None},
        {"index": last.index + 2, "process": 999, "type": "ok", "f": "spend",
         "value": {**value, "status": 200}, "time_ns": last.time_ns + 2, "node": "n1",
         "error": None},
    ]  # fmt: skip
    with (run_dir / "history.jsonl").open("a", encoding="utf-8") as history:
        history.writelines(json.dumps(op) + "\n" for op in forged)
    checked = jepsen_lite(store, "check")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "verdict   invalid" in checked.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["checkers"]["no_lost_spend"]["valid"] == "invalid"
    assert results["checkers"]["no_lost_spend"]["offending"][0]["lost_micros"] == 7_000_000


def test_cli_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["run", "--faults", "partition-moon"], "unknown fault partition-moon"),
        (["run", "--nodes", "4"], "'4' is not one of '3', '5'"),
        (["run", "--time-limit", "5", "--warmup", "9"], "warm-up must be in"),
        (["show", "nope"], "no run 'nope'"),
        # A canary this build's sandbox does not know is refused before anything is built.
        (["run", "--no-unshare", "--canary", "no-such-canary"], "canary"),
    ):
        done = jepsen_lite(tmp_path / "store", *args)
        assert done.returncode == 2, (args, done)
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
        assert done.stderr.startswith("jepsen-lite: ")
    assert not (tmp_path / "store").exists()  # bad input writes nothing


def test_namespace_command_as_root_and_without_unshare(monkeypatch: pytest.MonkeyPatch) -> None:
    from click import ClickException

    from jepsen_lite import cli

    assert cli.namespace_command(euid=0) == [
        "unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
    ]  # fmt: skip
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    with pytest.raises(ClickException, match=r"`unshare` is missing \(apt-get install"):
        cli.namespace_command(euid=0)


def processes_with(text: str) -> dict[int, str]:
    """{pid: its network namespace} of every process whose command line contains ``text``
    (read from /proc; nothing is signalled)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found[int(entry.name)] = os.readlink(entry / "ns" / "net")
        except OSError:
            continue  # gone meanwhile
    return found


def net_namespaces_in_use() -> set[str]:
    inodes = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                inodes.add(os.readlink(entry / "ns" / "net"))
            except OSError:
                continue
    return inodes


@needs_sandbox
def test_sigterm_stops_a_run_early_with_verdict_unknown(tmp_path: Path) -> None:
    store = tmp_path / "store"
    path = os.pathsep.join(str(REPO / p) for p in ("jepsen-lite", "client", "."))
    environment = {**os.environ, "PYTHONPATH": path}
    environment.pop("JEPSEN_LITE_NAMESPACED", None)
    command = [sys.executable, "-m", "jepsen_lite", "--store", str(store), "run"]
    harness = subprocess.Popen(
        [*command, "--faults", "pause", "--time-limit", "300"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        until(lambda: (store / "latest" / "history.jsonl").exists(), "the run to start")
        until(
            lambda: any(op.f == "read" for op in load(store / "latest" / "history.jsonl")),
            "the workload to start",
        )
        harness.send_signal(signal.SIGTERM)
        output, _ = harness.communicate(timeout=120)
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait(10)
    assert harness.returncode == 2, output
    assert "stopped by a signal before the final reads" in output
    results = json.loads((store / "latest" / "results.json").read_text())
    assert results["valid"] == "unknown"
    assert not processes_with(str(store))


@needs_sandbox
def test_a_sigkilled_run_leaves_no_process_or_namespace(tmp_path: Path) -> None:
    store = tmp_path / "store"
    path = os.pathsep.join(str(REPO / p) for p in ("jepsen-lite", "client", "."))
    environment = {**os.environ, "PYTHONPATH": path}
    environment.pop("JEPSEN_LITE_NAMESPACED", None)
    command = [sys.executable, "-m", "jepsen_lite", "--store", str(store), "run"]
    harness = subprocess.Popen(
        [*command, "--faults", "kill", "--time-limit", "60"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        nodes = until(
            lambda: (found := processes_with(f"--config {store}")) and len(found) == 3 and found,
            "three nodes running inside the run's namespaces",
        )
        namespaces = set(nodes.values())
        assert len(namespaces) == 3  # one network namespace per node
    finally:
        harness.send_signal(signal.SIGKILL)  # the command; its `unshare` dies with it
        harness.wait(10)
    until(lambda: not processes_with(str(store)), "every process of the run to be gone")
    until(lambda: not namespaces & net_namespaces_in_use(), "the run's namespaces to be gone")
    assert not (
        Path("/run/netns").exists()
        and any(p.name.startswith("jl-1-") for p in Path("/run/netns").iterdir())
    )  # the run's namespace files lived on its private /run


@needs_sandbox
def test_cli_run_against_a_broken_store_exits_1(tmp_path: Path) -> None:
    """A store that ignores idempotency keys (canary no-idempotency) applies the re-sends of
    the resolve phase again: exactly_once must say invalid and the command exit 1."""
    store = tmp_path / "store"
    done = jepsen_lite(
        store, "run", "--canary", "no-idempotency", "--faults", "partition-leader",
        "--seed", "3", "--time-limit", "20", "--interval", "5", "--warmup", "3", "--quiet", "2",
    )  # fmt: skip
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 1, done.stderr[-3000:]
    results = json.loads(((store / "latest").resolve() / "results.json").read_text())
    assert results["valid"] == "invalid"
    assert results["checkers"]["exactly_once"]["valid"] == "invalid"
