"""jepsen-lite: budgetd's fault-injection harness. Real `budgetd run` processes, one network
namespace each, routed through a control namespace whose firewall cuts links on demand.

Talks to budgetd only through its CLI (`budgetd run`) and HTTP; imports no budgetd module.

Errors::

    SandboxError      the sandbox cannot be built, or a command inside it failed
    └── Refused       this machine cannot host a sandbox (not root, `ip` or `nft` missing);
                      the message is a one-line reason
    HarnessError      (jepsen_lite.runner) a run could not be carried out: no verdict

A whole test: jepsen_lite.runner (Settings, run, analyse) and the `jepsen-lite` command
(jepsen_lite.cli); faults in jepsen_lite.nemesis, the schedule in jepsen_lite.generator.
"""

from jepsen_lite.checkers import (
    Result,
    compose,
    convergence,
    election_safety,
    exactly_once,
    no_lost_spend,
    no_overspend,
    reservation_lifecycle,
    stale_reads,
    stats,
)
from jepsen_lite.history import History, Op, load, outcome
from jepsen_lite.http import NamespaceHttp, Response
from jepsen_lite.lazyfs import LazyMount
from jepsen_lite.net import Net
from jepsen_lite.powerloss import PowerLoss, PowerLossAll
from jepsen_lite.sandbox import Node, Refused, Sandbox, SandboxError, preflight
from jepsen_lite.wan import WanLatency
from jepsen_lite.workload import ClusterSampler, Workload

__all__ = [
    "ClusterSampler",
    "History",
    "LazyMount",
    "NamespaceHttp",
    "Net",
    "Node",
    "Op",
    "PowerLoss",
    "PowerLossAll",
    "Refused",
    "Response",
    "Result",
    "Sandbox",
    "SandboxError",
    "WanLatency",
    "Workload",
    "compose",
    "convergence",
    "election_safety",
    "exactly_once",
    "load",
    "no_lost_spend",
    "no_overspend",
    "outcome",
    "preflight",
    "reservation_lifecycle",
    "stale_reads",
    "stats",
]
