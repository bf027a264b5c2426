"""budgetd's msync/fsync-before-ack turned into no-ops, so a node acknowledges entries only in
its page cache; only a power-loss fault (kill -9 and drop every write not synced) can flag it,
through I2 no_lost_spend (acknowledged spend gone after the restart).

What stops syncing (budgetd.replication.durability): the journal's sync (`datasync`, the
fdatasync `DurableJournal.sync` calls, and ``FileJournal.flush``, the msync of the compaction
rewrite and of a journal's close), the meta file's fsync
(`DurableMetaStorer.storeMeta` writes, renames, never fsyncs) and the directory fsyncs
(``fsync_dir`` where durability, the replica node and the snapshot writer call it). The ack
and commit order stays as it is: the acks simply precede durability. Imports budgetd and pysyncobj.
"""

from __future__ import annotations

import os
from typing import Any, Final

from pysyncobj.journal import FileJournal
from pysyncobj.pickle import dumps as pickle_dumps

from budgetd.replication import durability, snapshot
from budgetd.replication import node as replica_node

__all__ = ["CHECKER", "apply"]

CHECKER: Final = "no_lost_spend"


def apply() -> None:
    def flush(self: FileJournal) -> None:
        return None  # no msync: the entries stay in the page cache

    def datasync(journal: FileJournal) -> None:
        return None  # no fdatasync either

    def store_meta(self: durability.DurableMetaStorer, meta: dict[str, Any]) -> None:
        path = self.getPath()
        tmp = path + ".tmp"
        with open(tmp, "wb") as file:
            file.write(pickle_dumps(meta))
        os.replace(tmp, path)  # no fsync of the file or of its directory

    def fsync_dir(path: str) -> None:
        return None

    FileJournal.flush = flush
    durability.datasync = datasync
    durability.DurableMetaStorer.storeMeta = store_meta  # type: ignore[method-assign]
    durability.fsync_dir = fsync_dir
    replica_node.fsync_dir = fsync_dir
    snapshot.fsync_dir = fsync_dir
