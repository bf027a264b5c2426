"""What the benchmark reads besides the answers: CPU and memory of the processes it started (from
/proc) and the leader's counters (from /metrics), as deltas over a measured window.

Reads only /proc/<pid>/ of PIDs it was given and the public /metrics route; never budgetd's
internals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["LeaderCounters", "Usage", "machine", "parse_metrics", "rss_bytes", "usage"]

_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    """What a process (with its reaped children: a node's snapshot writer) has used so far."""

    user_s: float
    system_s: float
    #: Page faults served without I/O: mostly a fresh page, zeroed by the kernel, as memory grows.
    minor_faults: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s


def usage(pid: int) -> Usage | None:
    """CPU seconds and minor faults of ``pid`` so far; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the command: state(0) ... minflt(7) cminflt(8) ... utime(11) stime(12) cutime(13)
    # cstime(14)
    return Usage(
        user_s=(int(fields[11]) + int(fields[13])) / _CLOCK_TICKS_PER_S,
        system_s=(int(fields[12]) + int(fields[14])) / _CLOCK_TICKS_PER_S,
        minor_faults=int(fields[7]) + int(fields[8]),
    )


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (VmRSS), None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{"name{label=value,...}": value}`` (labels sorted, ``node`` left
    out: a scrape reads one node)."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(
                f"{key}={value}" for key, value in sorted(sample.labels.items()) if key != "node"
            )
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@dataclass(frozen=True, slots=True)
class LeaderCounters:
    """The leader's counters the report uses, at one instant."""

    raft_commit_index: float
    entries_ok: float
    batch_ops_sum: float
    batch_ops_count: float
    batch_ops_buckets: tuple[tuple[float, float], ...]
    journal_syncs: float
    #: Seconds the leader spent syncing its journal (each ack and commit waits for a sync).
    journal_sync_s: float = 0.0
    raft_term: float = 0.0
    dumps_written: float = 0.0
    #: Seconds the leader's collector held the interpreter, and its pause histogram (all
    #: generations summed).
    gc_pause_s: float = 0.0
    gc_pause_buckets: tuple[tuple[float, float], ...] = ()

    @classmethod
    def of(cls, samples: dict[str, float]) -> LeaderCounters:
        buckets = []
        gc_buckets: dict[float, float] = {}
        gc_pause_s = 0.0
        for key, value in samples.items():
            if key.startswith("budgetd_proposer_batch_ops_bucket{"):
                bound = key.split("le=", 1)[1].rstrip("}")
                buckets.append((float(bound), value))
            elif key.startswith("budgetd_gc_pause_seconds_bucket{"):
                bound = float(key.split("le=", 1)[1].split(",")[0].rstrip("}"))
                gc_buckets[bound] = gc_buckets.get(bound, 0.0) + value
            elif key.startswith("budgetd_gc_pause_seconds_sum{"):
                gc_pause_s += value
        return cls(
            raft_commit_index=samples.get("budgetd_raft_commit_index", 0.0),
            entries_ok=samples.get("budgetd_proposer_entries_total{outcome=ok}", 0.0),
            batch_ops_sum=samples.get("budgetd_proposer_batch_ops_sum", 0.0),
            batch_ops_count=samples.get("budgetd_proposer_batch_ops_count", 0.0),
            batch_ops_buckets=tuple(sorted(buckets)),
            journal_syncs=samples.get("budgetd_journal_sync_seconds_count", 0.0),
            journal_sync_s=samples.get("budgetd_journal_sync_seconds_sum", 0.0),
            raft_term=samples.get("budgetd_raft_term", 0.0),
            dumps_written=samples.get("budgetd_snapshots_written_total", 0.0),
            gc_pause_s=gc_pause_s,
            gc_pause_buckets=tuple(sorted(gc_buckets.items())),
        )

    def delta(self, later: LeaderCounters, seconds: float) -> dict[str, Any]:
        """Rates and proposer batch sizes between this scrape and ``later``."""
        entries = later.batch_ops_count - self.batch_ops_count
        ops = later.batch_ops_sum - self.batch_ops_sum
        cumulative = _bucket_deltas(self.batch_ops_buckets, later.batch_ops_buckets)
        gc_pauses = _bucket_deltas(self.gc_pause_buckets, later.gc_pause_buckets)
        syncs = later.journal_syncs - self.journal_syncs
        sync_s = later.journal_sync_s - self.journal_sync_s
        return {
            "raft_entries_per_s": (later.raft_commit_index - self.raft_commit_index) / seconds,
            "proposer_entries_per_s": entries / seconds,
            "proposer_ops_per_entry_mean": ops / entries if entries else None,
            "proposer_ops_per_entry_p50_le": _bucket_quantile(cumulative, 0.5),
            "proposer_ops_per_entry_p99_le": _bucket_quantile(cumulative, 0.99),
            "journal_syncs_per_s": syncs / seconds,
            "journal_sync_ms_mean": 1000 * sync_s / syncs if syncs else None,
            "journal_sync_s_per_s": sync_s / seconds,
            "term_changes": later.raft_term - self.raft_term,
            "dumps_written": later.dumps_written - self.dumps_written,
            "gc_pause_s_per_s": (later.gc_pause_s - self.gc_pause_s) / seconds,
            "gc_pause_max_le": _bucket_quantile(gc_pauses, 1.0),  # bounds the longest pause
        }


def _bucket_deltas(
    before: tuple[tuple[float, float], ...], after: tuple[tuple[float, float], ...]
) -> list[tuple[float, float]]:
    """The cumulative bucket counts of a histogram between two scrapes."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def _bucket_quantile(cumulative: list[tuple[float, float]], share: float) -> float | None:
    """The upper bound of the histogram bucket holding the ``share`` quantile (None: empty)."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    total = cumulative[-1][1]
    for bound, count in cumulative:
        if count >= share * total:
            return bound
    return cumulative[-1][0]


def machine(data_dir: str) -> dict[str, Any]:
    """The machine a run measured: cores, CPU model, kernel, memory, the data dir's disk."""
    info: dict[str, Any] = {"nproc": os.cpu_count(), "kernel": os.uname().release}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            info["mem_total_bytes"] = int(meminfo.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    info["disk"] = _disk_of(data_dir)
    info["load_average_1m"] = os.getloadavg()[0]
    return info


def _disk_of(path: str) -> dict[str, Any]:
    """Mount source, file system type and (for a whole block device) rotational flag and model
    of the file system holding ``path``."""
    best = ("", "", "")
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                source, target, fstype = line.split()[:3]
                inside = real == target or real.startswith(target.rstrip("/") + "/")
                if inside and len(target) >= len(best[1]):
                    best = (source, target, fstype)
    except OSError:
        pass
    disk: dict[str, Any] = {"source": best[0], "mount": best[1], "fstype": best[2]}
    device = os.path.basename(best[0])
    block = f"/sys/block/{device}"
    for name, relative in (("rotational", "queue/rotational"), ("model", "device/model")):
        try:
            with open(f"{block}/{relative}") as handle:
                disk[name] = handle.read().strip()
        except OSError:
            pass
    return disk
