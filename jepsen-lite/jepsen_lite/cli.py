"""The `jepsen-lite` command: run a test in private namespaces, list the stored runs, show
one, check one again. Owns argument parsing, the namespace wrapper and one-line errors;
imports no budgetd module.

Exit status of ``run`` and ``check``: 0 valid, 1 invalid, 2 unknown or a harness error (also
for bad options, with a one-line message).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import click

from jepsen_lite.sandbox import preflight

__all__ = ["main", "namespace_command"]

#: Set in the environment of the re-executed command: it is inside its own namespaces.
INSIDE_ENV: Final = "JEPSEN_LITE_NAMESPACED"
STORE_ENV: Final = "JEPSEN_LITE_STORE"
EXIT: Final = {"valid": 0, "invalid": 1, "unknown": 2}
_UNSHARE_COMMON: Final = ("--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child")
_PR_SET_PDEATHSIG: Final = 1


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"jepsen-lite: {message}", err=True)
    sys.exit(code)


# The namespace wrapper ----------------------------------------------------------------------


def namespace_command(euid: int | None = None) -> list[str]:
    """The ``unshare`` prefix that gives a run its own network, mount and PID namespaces (as
    root), or also a user namespace mapping the caller to root (otherwise). Raises
    click.ClickException with what is missing when neither can work here."""
    euid = os.geteuid() if euid is None else euid
    if shutil.which("unshare") is None:
        raise click.ClickException(
            "`unshare` is missing (apt-get install -y util-linux); "
            "or pass --no-unshare to run in the current namespaces"
        )
    if euid == 0:
        return ["unshare", *_UNSHARE_COMMON]
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "true"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        why = probe.stderr.strip().splitlines()[-1:] or [f"exit {probe.returncode}"]
        raise click.ClickException(
            "not root and user namespaces are not available "
            f"(`unshare --user --map-root-user` failed: {why[0]}); run as root, or enable "
            "them (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)"
        )
    return ["unshare", "--user", "--map-root-user", *_UNSHARE_COMMON]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when this process dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid …: comm may hold spaces and parentheses; split after the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _run_in_namespaces(argv: Sequence[str]) -> NoReturn:
    """Run this command again under ``unshare`` and wait for it. Its ``unshare`` dies with this
    process (and takes every process of the run with it: ``--kill-child``, then the PID
    namespace); SIGTERM is passed on to the run, which then stops early (``unshare`` itself
    ignores SIGTERM); Ctrl-C reaches the run through the terminal."""
    prefix = namespace_command()
    command = [*prefix, sys.executable, "-m", "jepsen_lite", *argv]
    environment = {**os.environ, INSIDE_ENV: "1"}
    try:
        child = subprocess.Popen(command, env=environment, preexec_fn=_die_with_parent)
    except OSError as error:
        _fail(f"cannot run {' '.join(prefix)}: {error}")

    def forward(signum: int, _frame: object) -> None:
        for pid in _children(child.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = child.wait()
    sys.exit(code if code >= 0 else EXIT["unknown"])


def _private_run_dir() -> None:
    """Inside the new mount namespace: a tmpfs on /run, so ``ip netns`` keeps its namespace
    files there and they vanish with this namespace."""
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "mode=0755", "jepsen-lite-run", "/run"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        _fail(f"cannot mount a private /run: {done.stderr.strip() or done.returncode}")


# Commands -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get(STORE_ENV, "store"),
    show_default="store (or $JEPSEN_LITE_STORE)",
    help="Where runs are kept.",
)
@click.pass_context
def cli(context: click.Context, store: Path) -> None:
    """jepsen-lite: budgetd's fault-injection tests."""
    # Absolute: a run links its logs to the sandbox's resolved paths.
    context.obj = store.resolve()


def _csv(_context: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    from jepsen_lite.nemesis import REGISTRY

    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise click.BadParameter(
            f"unknown fault {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}"
        )
    return names


@cli.command()
@click.option(
    "--faults", default="", callback=_csv, help="Comma-separated fault names (see `faults`)."
)
@click.option("--nodes", default=3, show_default=True, type=click.Choice(["3", "5"]))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option(
    "--time-limit", default=60.0, show_default=True, type=click.FloatRange(1, 86_400), help="s"
)
@click.option(
    "--rate", default=40.0, show_default=True, type=click.FloatRange(0.1, 1000), help="ops/s"
)
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 8))
@click.option("--bidders", default=2, show_default=True, type=click.IntRange(0, 8))
@click.option(
    "--interval", default=10.0, show_default=True, type=click.FloatRange(0.5, 3600), help="s"
)
@click.option("--warmup", default=5.0, show_default=True, type=click.FloatRange(0, 3600))
@click.option("--quiet", default=5.0, show_default=True, type=click.FloatRange(0, 3600))
@click.option("--canary", default=None, help="Run a deliberately broken store (must fail).")
@click.option("--name", default=None, help="Test name (default: from the faults).")
@click.option(
    "--unshare/--no-unshare",
    default=True,
    show_default=True,
    help="Run inside private network, mount and PID namespaces (nothing leaks if killed).",
)
@click.pass_obj
def run(
    store: Path,
    faults: tuple[str, ...],
    nodes: str,
    seed: int,
    time_limit: float,
    rate: float,
    workers: int,
    bidders: int,
    interval: float,
    warmup: float,
    quiet: float,
    canary: str | None,
    name: str | None,
    unshare: bool,
) -> None:
    """Run one test; exit 0 valid, 1 invalid, 2 unknown or harness error."""
    from jepsen_lite.runner import Settings
    from jepsen_lite.runner import run as run_test

    try:
        settings = Settings(
            faults=faults,
            nodes=int(nodes),
            seed=seed,
            time_limit_s=time_limit,
            rate=rate,
            workers=workers,
            bidders=bidders,
            interval_s=interval,
            warmup_s=warmup,
            quiet_s=quiet,
            canary=canary,
            name=name,
        )
    except ValueError as error:
        _fail(str(error))
    if unshare and os.environ.get(INSIDE_ENV) != "1":
        _run_in_namespaces(sys.argv[1:])
    if unshare:
        _private_run_dir()
    reason = preflight()
    if reason is not None:
        _fail(reason)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        outcome = run_test(settings, store, log=lambda line: click.echo(line, err=True), stop=stop)
    except (ValueError, TypeError) as error:  # e.g. a canary or option this build lacks
        _fail(str(error))
    _print_summary(outcome.path, outcome.results)
    sys.exit(EXIT[outcome.valid])


@cli.command()
def faults() -> None:
    """The fault names `run --faults` takes."""
    from jepsen_lite.nemesis import REGISTRY

    for name in sorted(REGISTRY):
        fault = REGISTRY[name]()
        doc = (type(fault).__doc__ or "").strip().split(".")[0]
        click.echo(f"{name:28} {getattr(fault, 'description', doc)}")


def _runs(store: Path) -> list[Path]:
    if not store.is_dir():
        return []
    found = [path.parent for path in store.glob("*/*/test.json")]
    return sorted(found, key=lambda path: (path.name, path.parent.name))


def _resolve(store: Path, run_name: str) -> Path:
    for candidate in (Path(run_name), store / run_name):
        if (candidate / "test.json").exists():
            return candidate.resolve()
    raise click.ClickException(f"no run {run_name!r} (looked in {store} and the current dir)")


def _verdict(path: Path) -> str:
    results = path / "results.json"
    if not results.exists():
        return "incomplete"
    return str(json.loads(results.read_text()).get("valid", "unknown"))


def _table(runs: list[Path]) -> None:
    """A markdown table: one row per finished run, its faults, nodes, client ops by outcome
    and every checker's verdict."""
    documents = {
        path: json.loads((path / "results.json").read_text())
        for path in runs
        if (path / "results.json").exists()
    }
    checkers = sorted({name for d in documents.values() for name in d.get("checkers", {})})
    click.echo(
        "| run | faults | canary | nodes | ok / fail / info | verdict | "
        + " | ".join(checkers)
        + " |"
    )
    click.echo("|" + " --- |" * (6 + len(checkers)))
    for path, document in documents.items():
        settings = json.loads((path / "test.json").read_text()).get("settings", {})
        outcomes = dict.fromkeys(("ok", "fail", "info"), 0)
        for key, count in document.get("summary", {}).get("ops", {}).items():
            outcome = key.rsplit(":", 1)[-1]
            if outcome in outcomes:
                outcomes[outcome] += count
        verdicts = [document.get("checkers", {}).get(n, {}).get("valid", "-") for n in checkers]
        click.echo(
            f"| {path.parent.name}/{path.name} | {', '.join(settings.get('faults', [])) or '-'} "
            f"| {settings.get('canary') or '-'} | {settings.get('nodes')} "
            f"| {outcomes['ok']} / {outcomes['fail']} / {outcomes['info']} "
            f"| {document.get('valid')} | " + " | ".join(verdicts) + " |"
        )


@cli.command(name="list")
@click.option("--table", is_flag=True, help="A markdown table of ops and checker verdicts.")
@click.pass_obj
def list_runs(store: Path, table: bool) -> None:
    """Every stored run with its verdict, oldest first."""
    runs = _runs(store)
    if not runs:
        click.echo(f"no runs in {store}")
        return
    if table:
        _table(runs)
        return
    for path in runs:
        test = json.loads((path / "test.json").read_text())
        settings = test.get("settings", {})
        click.echo(
            f"{path.parent.name}/{path.name}  {_verdict(path):10} "
            f"faults={','.join(settings.get('faults', [])) or '-'} "
            f"nodes={settings.get('nodes')} seed={test.get('seed')} "
            f"time_limit={settings.get('time_limit_s')}s"
        )


def _print_summary(path: Path, results: dict[str, Any]) -> None:
    test = json.loads((path / "test.json").read_text())
    click.echo(f"run       {path}")
    click.echo(
        f"test      {test.get('name')}  seed={test.get('seed')}  git={test.get('git_revision')}"
    )
    click.echo(f"verdict   {results.get('valid')}")
    if results.get("error"):
        click.echo(f"error     {results['error']}")
    for name, checker in sorted(results.get("checkers", {}).items()):
        click.echo(f"  {name:22} {checker['valid']}")
        for offending in checker.get("offending", [])[:2]:
            click.echo(f"      {json.dumps(offending, sort_keys=True, default=str)[:300]}")
    ops = results.get("summary", {}).get("ops", {})
    if ops:
        click.echo("ops       " + " ".join(f"{k}={v}" for k, v in sorted(ops.items())))
    nemesis = results.get("summary", {}).get("nemesis", [])
    click.echo(f"nemesis   {len(nemesis)} ops")
    click.echo(f"timeline  {path / 'timeline.html'}")


@cli.command()
@click.argument("run_name", default="latest", metavar="[RUN]")
@click.option("--open", "open_", is_flag=True, help="Print the timeline's path; open it too.")
@click.pass_obj
def show(store: Path, run_name: str, open_: bool) -> None:
    """The results of RUN (default: latest; a path or <test>/<stamp>)."""
    path = _resolve(store, run_name)
    results_path = path / "results.json"
    if not results_path.exists():
        raise click.ClickException(f"{path} has no results.json (the run did not finish)")
    if open_:
        timeline = path / "timeline.html"
        click.echo(str(timeline))
        opener = shutil.which("xdg-open")
        if opener is not None:
            subprocess.Popen(
                [opener, str(timeline)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        return
    _print_summary(path, json.loads(results_path.read_text()))


@cli.command()
@click.argument("run_name", default="latest", metavar="[RUN]")
@click.pass_obj
def check(store: Path, run_name: str) -> None:
    """Run every checker again over RUN's recorded history and final reads (rewrites its
    results.json and pictures); exit 0 valid, 1 invalid, 2 unknown."""
    from jepsen_lite.runner import analyse

    path = _resolve(store, run_name)
    if not (path / "history.jsonl").exists():
        raise click.ClickException(f"{path} has no history.jsonl")
    previous = path / "results.json"
    error = json.loads(previous.read_text()).get("error") if previous.exists() else None
    results = analyse(path, error=error)
    _print_summary(path, results)
    sys.exit(EXIT[str(results["valid"])])


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: click's errors become one line on stderr and exit status 2."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted")
    except click.ClickException as error:
        _fail(error.format_message())
    except KeyboardInterrupt:
        _fail("interrupted")
    sys.exit(0)
