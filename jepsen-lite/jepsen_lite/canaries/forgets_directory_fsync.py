"""budgetd that syncs file contents but never the directories holding them, so a new or renamed
file's name (the journal, a dump, the meta file) is never durable; only a power-loss fault whose
model makes names durable at their directory's fsync (jepsen_lite.lazyfs) can flag it, through
I2 no_lost_spend (after the cut no disk holds the journal: acknowledged spend is gone).

What stops syncing: ``fsync_dir`` wherever budgetd.replication's durability layer, replica node
and snapshot writer call it. File fsyncs and the journal's msync are untouched. Imports budgetd.
"""

from __future__ import annotations

from typing import Final

from budgetd.replication import durability, snapshot
from budgetd.replication import node as replica_node

__all__ = ["CHECKER", "apply"]

CHECKER: Final = "no_lost_spend"


def apply() -> None:
    def fsync_dir(path: str) -> None:
        return None  # the name stays in memory until a power cut forgets it

    durability.fsync_dir = fsync_dir
    replica_node.fsync_dir = fsync_dir
    snapshot.fsync_dir = fsync_dir
