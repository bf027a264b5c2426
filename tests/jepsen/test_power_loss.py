"""Power loss: lazyfs (jepsen_lite.lazyfs) keeps only what was synced, one test per rule of its
model; a real 3-node budgetd keeps every acknowledged spend when all nodes lose power at once;
and the same run against a budgetd whose syncs are no-ops loses acknowledged spends (the fault
bites).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jepsen_lite import History, Sandbox, Workload
from jepsen_lite.checkers import Result, convergence, no_lost_spend, stats, write_results
from jepsen_lite.lazyfs import LazyMount, fuse_preflight, lazy_mounts, remove_stale_mounts
from jepsen_lite.powerloss import PowerLoss, PowerLossAll
from jepsen_lite.workload import CAMPAIGNS
from tests.jepsen.helpers import REASON, agreed_leader, converged_views, until

pytestmark = pytest.mark.jepsen

FUSE_REASON = REASON or fuse_preflight()
needs_power_loss = pytest.mark.skipif(FUSE_REASON is not None, reason=FUSE_REASON or "")
#: Launches budgetd with its syncs, or its directory syncs, turned into no-ops.


# The file system ---------------------------------------------------------------------------------


@pytest.fixture
def lazy(tmp_path: Path) -> Iterator[LazyMount]:
    mount = LazyMount(
        tmp_path / "disk",
        tmp_path / "mnt",
        name=f"jl-lazyfs-{os.getpid()}-test",
        log=tmp_path / "lazyfs.log",
    )
    mount.mount()
    try:
        yield mount
    finally:
        mount.unmount()


def fsync(path: Path) -> None:
    """fsync a file or a directory."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, *, sync: bool) -> None:
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        if sync:
            os.fsync(file.fileno())


def power_cycle(mount: LazyMount) -> None:
    mount.power_off()
    assert not mount.mounted
    mount.mount()


def durable_file(mount: LazyMount, name: str, data: bytes) -> Path:
    """A file whose name and ``data`` are both durable."""
    path = mount.mountpoint / name
    write(path, data, sync=True)
    fsync(mount.mountpoint)
    return path


@needs_power_loss
def test_reads_see_every_write_and_power_off_drops_the_unsynced_ones(lazy: LazyMount) -> None:
    path = durable_file(lazy, "f", b"synced")
    write(path, b"written, never synced", sync=False)
    assert path.read_bytes() == b"written, never synced"
    with path.open("ab") as file:
        file.truncate(3)
    assert path.read_bytes() == b"wri"
    power_cycle(lazy)
    assert path.read_bytes() == b"synced"


@needs_power_loss
@pytest.mark.parametrize("sync", [os.fsync, os.fdatasync])
def test_contents_are_durable_at_fsync_of_the_file(lazy: LazyMount, sync: Any) -> None:
    path = durable_file(lazy, "f", b"v1")
    with path.open("r+b") as file:
        file.write(b"v2 and longer")
        file.flush()
        sync(file.fileno())
        file.write(b" plus a tail never synced")
    power_cycle(lazy)
    assert path.read_bytes() == b"v2 and longer"
    assert (lazy.backing / "f").read_bytes() == b"v2 and longer"


@needs_power_loss
@pytest.mark.parametrize("how", ["msync", "fdatasync"])
def test_a_shared_mmap_is_durable_at_msync_or_fdatasync_of_its_file(
    lazy: LazyMount, how: str
) -> None:
    """The journal's writes go through a shared mapping; a node syncs them with fdatasync of the
    file (budgetd.replication.durability.datasync), which must keep them as msync does."""
    path = durable_file(lazy, "journal", bytes(3 * mmap.PAGESIZE))
    file = path.open("r+b")
    mapped = mmap.mmap(file.fileno(), 0)
    mapped[0:6] = b"synced"
    if how == "msync":
        mapped.flush()  # msync(MS_SYNC)
    else:
        os.fdatasync(file.fileno())
    mapped[mmap.PAGESIZE : mmap.PAGESIZE + 5] = b"dirty"
    mapped[2 * mmap.PAGESIZE : 2 * mmap.PAGESIZE + 5] = b"dirty"
    assert path.read_bytes()[mmap.PAGESIZE : mmap.PAGESIZE + 5] == b"dirty"
    power_cycle(lazy)  # with the file still mapped, as a running store has it
    mapped.close()
    with contextlib.suppress(OSError):
        file.close()  # ENOTCONN: its mount is gone
    data = path.read_bytes()
    assert data[0:6] == b"synced"
    assert data[mmap.PAGESIZE :] == bytes(2 * mmap.PAGESIZE)


@needs_power_loss
def test_a_new_name_is_durable_at_fsync_of_its_directory(lazy: LazyMount) -> None:
    write(lazy.mountpoint / "synced-file-only", b"contents", sync=True)
    write(lazy.mountpoint / "both", b"contents", sync=True)
    fsync(lazy.mountpoint)
    write(lazy.mountpoint / "after-the-directory", b"contents", sync=True)
    power_cycle(lazy)
    assert sorted(os.listdir(lazy.mountpoint)) == ["both", "synced-file-only"]
    assert (lazy.mountpoint / "both").read_bytes() == b"contents"


@needs_power_loss
def test_a_durable_name_brings_the_contents_of_the_last_fsync(lazy: LazyMount) -> None:
    write(lazy.mountpoint / "never-synced", b"contents", sync=False)
    path = lazy.mountpoint / "synced-once"
    write(path, b"first", sync=True)
    with path.open("ab") as file:
        file.write(b" second")
    fsync(lazy.mountpoint)
    power_cycle(lazy)
    assert (lazy.mountpoint / "never-synced").read_bytes() == b""
    assert path.read_bytes() == b"first"


@needs_power_loss
def test_a_rename_is_durable_at_fsync_of_the_directory(lazy: LazyMount) -> None:
    target = durable_file(lazy, "meta", b"old")
    # The store's pattern: write a temporary file, fsync it, rename it over the old one ...
    tmp = lazy.mountpoint / "meta.tmp"
    write(tmp, b"new", sync=True)
    os.replace(tmp, target)
    assert target.read_bytes() == b"new"
    power_cycle(lazy)
    assert sorted(os.listdir(lazy.mountpoint)) == ["meta"]
    assert target.read_bytes() == b"old"
    # ... and fsync the directory.
    write(tmp, b"new", sync=True)
    os.replace(tmp, target)
    fsync(lazy.mountpoint)
    power_cycle(lazy)
    assert sorted(os.listdir(lazy.mountpoint)) == ["meta"]
    assert target.read_bytes() == b"new"


@needs_power_loss
def test_a_rename_between_directories_needs_both_synced(lazy: LazyMount) -> None:
    (lazy.mountpoint / "a").mkdir()
    (lazy.mountpoint / "b").mkdir()
    fsync(lazy.mountpoint)
    durable = lazy.mountpoint / "a" / "f"
    write(durable, b"contents", sync=True)
    fsync(lazy.mountpoint / "a")
    os.replace(durable, lazy.mountpoint / "b" / "f")
    fsync(lazy.mountpoint / "b")
    power_cycle(lazy)  # both names are durable now (a rename is not atomic here)
    assert (lazy.mountpoint / "a" / "f").read_bytes() == b"contents"
    assert (lazy.mountpoint / "b" / "f").read_bytes() == b"contents"
    os.unlink(lazy.mountpoint / "a" / "f")
    fsync(lazy.mountpoint / "a")
    power_cycle(lazy)
    assert os.listdir(lazy.mountpoint / "a") == []
    assert (lazy.mountpoint / "b" / "f").read_bytes() == b"contents"


@needs_power_loss
def test_an_unlink_is_durable_at_fsync_of_the_directory(lazy: LazyMount) -> None:
    path = durable_file(lazy, "f", b"contents")
    path.unlink()
    assert not path.exists()
    power_cycle(lazy)
    assert path.read_bytes() == b"contents"
    path.unlink()
    fsync(lazy.mountpoint)
    power_cycle(lazy)
    assert not path.exists()
    assert os.listdir(lazy.backing) == []


@needs_power_loss
def test_an_unlinked_open_file_works_until_closed(lazy: LazyMount) -> None:
    path = durable_file(lazy, "f", b"contents")
    with path.open("r+b") as file:
        path.unlink()
        os.ftruncate(file.fileno(), 3)
        file.seek(0, os.SEEK_END)
        file.write(b"+")
        file.flush()
        os.fsync(file.fileno())  # its durable name is still there: the unlink is not synced
        file.seek(0)
        assert file.read() == b"con+"
    assert not path.exists()
    power_cycle(lazy)
    assert path.read_bytes() == b"con+"


@needs_power_loss
def test_a_new_directory_is_durable_with_its_parent(lazy: LazyMount) -> None:
    directory = lazy.mountpoint / "d"
    directory.mkdir()
    write(directory / "f", b"contents", sync=True)
    fsync(directory)  # not the root
    power_cycle(lazy)
    assert os.listdir(lazy.mountpoint) == []
    directory.mkdir()
    write(directory / "f", b"contents", sync=True)
    fsync(directory)
    fsync(lazy.mountpoint)
    power_cycle(lazy)
    assert (lazy.mountpoint / "d" / "f").read_bytes() == b"contents"


@needs_power_loss
def test_a_dead_harness_s_mount_is_detached_by_the_next_one(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    mount = LazyMount(
        tmp_path / "disk", tmp_path / "mnt", name=f"jl-lazyfs-{dead_pid}-stale",
        log=tmp_path / "lazyfs.log",
    )  # fmt: skip
    mount.mount()
    assert mount.process is not None
    os.kill(mount.process.pid, signal.SIGKILL)  # the harness and its daemon die
    mount.process.wait()
    assert mount.mounted

    def alive(pid: int) -> bool:
        return pid != dead_pid

    assert remove_stale_mounts(alive) == [str(tmp_path / "mnt")]
    assert not mount.mounted


HARNESS = """
import json, sys, time
from pathlib import Path
from jepsen_lite import Sandbox
sandbox = Sandbox(Path(sys.argv[1]), size=1, power_loss=True).__enter__()
daemons = [m.process.pid for m in sandbox.mounts.values()]
print(json.dumps({"run_id": sandbox.run_id, "daemons": daemons}), flush=True)
time.sleep(600)
"""


@needs_power_loss
def test_a_killed_harness_s_mounts_are_detached_by_the_next_sandbox(tmp_path: Path) -> None:
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(tmp_path / "old")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert harness.stdout is not None
        started = json.loads(harness.stdout.readline())
    finally:
        harness.send_signal(signal.SIGKILL)
        harness.wait(10)

    def daemons_alive() -> bool:
        return any(Path(f"/proc/{pid}").exists() for pid in started["daemons"])

    until(lambda: not daemons_alive(), "the lazyfs daemons to die with their harness")
    left = [m for m, name in lazy_mounts() if started["run_id"] in name]
    assert left == [str(tmp_path / "old" / "n1")]  # a dead mount outlives its harness...
    sandbox = Sandbox(tmp_path / "new", size=1, power_loss=True)
    try:
        sandbox.build()  # ...until the next sandbox detaches it
        assert not [m for m, name in lazy_mounts() if started["run_id"] in name]
    finally:
        sandbox.teardown()


# A real cluster ----------------------------------------------------------------------------------


def spent_after(sandbox: Sandbox) -> dict[str, dict[str, int | None]]:
    """{node: {campaign: spent_total_micros}} by strong reads; a campaign the node answers 404
    for (its creation was lost) has spent nothing; None when it gave no answer."""
    spent: dict[str, dict[str, int | None]] = {}
    for node_id in sandbox.node_ids:
        spent[node_id] = {}
        for campaign_id in CAMPAIGNS:
            got = sandbox.request(node_id, "GET", f"/v1/campaigns/{campaign_id}?consistency=strong")
            value = got.body.get("spent_total_micros") if isinstance(got.body, dict) else None
            if got.status == 404:
                value = 0
            spent[node_id][campaign_id] = value if isinstance(value, int) else None
    return spent


Fault = PowerLoss | PowerLossAll


def acknowledged(history: History, *, more_than: int) -> None:
    """Wait until more than ``more_than`` further ops are acknowledged."""
    wanted = sum(op.type == "ok" for op in history.ops) + more_than + 1
    until(
        lambda: sum(op.type == "ok" for op in history.ops) >= wanted,
        f"{wanted} acknowledged ops before the power cut",
    )


def power_loss_run(
    tmp_path: Path,
    *,
    canary: str | None = None,
    faults: tuple[Fault, ...] = (PowerLossAll(),),
    raft: dict[str, int] | None = None,
    duration_s: float = 16.0,
    seed: int = 7,
) -> tuple[dict[str, Result], dict[str, Any]]:
    """Spends and reserve/commit from 4 workers on 3 nodes. For each fault in turn: once 40 more
    ops are acknowledged, it cuts the power (all nodes at once for PowerLossAll), 1 s later the
    nodes come back, and the workload goes on. Then the checkers: I2 no lost spend,
    convergence and stats."""
    started = time.monotonic()
    history = History(tmp_path / "history.jsonl")
    rng = random.Random(seed)
    options = {k: v for fault in faults for k, v in fault.sandbox_options.items()}
    with Sandbox(tmp_path / "cluster", raft=raft, canary=canary, **options) as sandbox:
        try:
            ids = sandbox.node_ids
            until(lambda: agreed_leader(sandbox, ids), "one leader")
            workload = Workload(
                sandbox, history, workers=4, ops_max=4000, duration_s=duration_s, pause_s=0.02,
                seed=seed,
            )  # fmt: skip
            cuts = []
            try:
                workload.setup()
                workload.start()
                for fault in faults:
                    acknowledged(history, more_than=39)
                    invoked = history.invoke("nemesis", fault.name, {})
                    cut = fault.start(sandbox, rng)
                    history.complete(invoked, "info", cut)
                    time.sleep(1.0)  # the power stays off this long
                    invoked = history.invoke("nemesis", "power-on", {})
                    history.complete(invoked, "info", fault.stop(sandbox))
                    cuts.append({**cut, "back_after_s": round(time.monotonic() - started, 1)})
                workload.join()
            finally:
                workload.close()
                history.close()
            until(lambda: agreed_leader(sandbox, ids), "a leader after the power cut")
            final_views = converged_views(sandbox, ids)
            final = spent_after(sandbox)
            assert not {n: m.errors() for n, m in sandbox.mounts.items() if m.errors()}
        except BaseException:
            print(sandbox.logs())
            raise
    ops = history.ops
    results = {
        "no_lost_spend": no_lost_spend(ops, final),
        "convergence": convergence(final_views),
        "stats": stats(ops),
    }
    counts = Counter(f"{op.f}:{op.type}" for op in ops if op.type != "invoke")
    observed = {
        "ops": dict(sorted(counts.items())),
        "final": final,
        "no_lost_spend": {
            k: results["no_lost_spend"].detail[k] for k in ("ok_ops", "info_ops", "exact")
        },
        "first_offending": results["no_lost_spend"].offending[:3],
        "ok_before_first_fault": results["stats"].detail["ok_before_first_fault"],
        "cuts": cuts,
        "total_s": round(time.monotonic() - started, 1),
    }
    write_results(tmp_path / "results.json", results, observed=observed)
    print("\nOBSERVED:", json.dumps(observed))
    return results, observed


@needs_power_loss
def test_acknowledged_spends_survive_power_loss_of_every_node(tmp_path: Path) -> None:
    results, observed = power_loss_run(tmp_path)
    assert results["stats"].valid == "valid", results["stats"]
    assert results["stats"].detail["ok_before_first_fault"] >= 40
    # Non-vacuous: acknowledged spends and commits to lose, and load after the restart.
    assert results["no_lost_spend"].detail["ok_ops"] > 40
    assert observed["ops"].get("spend:ok", 0) > 0 and observed["ops"].get("commit:ok", 0) > 0
    assert results["no_lost_spend"].valid == "valid", results["no_lost_spend"]
    assert results["convergence"].valid == "valid", results["convergence"]


@needs_power_loss
def test_acknowledged_spends_survive_power_cuts_of_leader_and_minority_with_snapshots(
    tmp_path: Path,
) -> None:
    """The leader, then a minority, then every node lose power, with a snapshot (full dump and
    journal compaction) every 40 log entries, so cuts also land around dumps and rewrites."""
    faults = (PowerLoss("leader"), PowerLoss("minority"), PowerLossAll())
    results, observed = power_loss_run(
        tmp_path, faults=faults, raft={"snapshot_entries": 40}, duration_s=26.0, seed=11
    )
    assert [cut["target"] for cut in observed["cuts"][:2]] == ["leader", "minority"]
    disks = tmp_path / "cluster" / "disks"
    assert all((disks / n / "raft.dump").stat().st_size > 0 for n in ("n1", "n2", "n3"))
    assert results["stats"].valid == "valid", results["stats"]
    assert results["no_lost_spend"].detail["ok_ops"] > 120
    assert results["no_lost_spend"].valid == "valid", results["no_lost_spend"]
    assert results["convergence"].valid == "valid", results["convergence"]


@needs_power_loss
@pytest.mark.parametrize("canary", ["ack-before-fsync", "forgets-directory-fsync"])
def test_power_loss_catches_a_store_that_acknowledges_before_fsync(
    tmp_path: Path, canary: str
) -> None:
    """The same run, with every node a canary (jepsen_lite.canaries): budgetd whose journal
    syncs, meta and directory fsyncs do nothing (``ack-before-fsync``), so it acknowledges
    writes that are only in memory (the page cache, here lazyfs's memory); or whose directory
    fsyncs alone do nothing (``forgets-directory-fsync``), so the journal's contents are synced
    but its name never is. A kill -9
    would notice neither — the page cache survives it — but after the power cut no node's disk
    holds the journal (its name was never made durable): the cluster comes back empty and every
    spend acknowledged before the cut is gone. One run per store suffices: the run waits for 40
    acknowledged ops before cutting the power, and nothing the store does without those syncs
    can reach the disk."""
    results, _ = power_loss_run(tmp_path, canary=canary)
    assert results["stats"].detail["ok_before_first_fault"] >= 40
    lost = results["no_lost_spend"]
    assert lost.valid == "invalid", lost
    assert any("lost_micros" in item for item in lost.offending), lost.offending


@needs_power_loss
def test_sandbox_unmounts_on_error_and_a_node_restarts_on_what_it_synced(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="on purpose"),
        Sandbox(tmp_path / "cluster", size=1, power_loss=True) as sandbox,
    ):
        until(lambda: agreed_leader(sandbox, ["n1"]), "n1 leading")
        campaign = {
            "currency": "USD",
            "timezone": "UTC",
            "daily_budget_micros": 10**9,
            "total_budget_micros": 10**12,
            "pacing": {"mode": "asap"},
            "status": "active",
        }
        created = sandbox.request(
            "n1", "PUT", "/v1/campaigns/jl", campaign, headers={"Idempotency-Key": "create-jl"}
        )
        assert created.status in (200, 201), created
        sandbox.power_off("n1")
        assert not sandbox.node("n1").running
        sandbox.start("n1")
        read = until(
            lambda: (
                sandbox.request("n1", "GET", "/v1/campaigns/jl?consistency=strong").status == 200
            ),
            "the acknowledged campaign after power on",
        )
        assert read
        run_mounts = [m for m, name in lazy_mounts() if sandbox.run_id in name]
        assert len(run_mounts) == 1
        raise RuntimeError("on purpose")
    assert not [m for m, name in lazy_mounts() if sandbox.run_id in name]
