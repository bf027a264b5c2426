"""`budgetd` with syncs turned into no-ops, the broken stores tests/jepsen/test_power_loss.py's
power loss must catch. ``python tests/jepsen/never_syncs.py MODE run --config ...`` (then
budgetd's own arguments), MODE one of:

- ``all``: os.fsync, os.fdatasync and the journal's msync (pysyncobj's ResizableFile.flush,
  which budgetd.replication.durability calls) do nothing: the node acknowledges writes that are
  only in memory;
- ``directories``: only the fsyncs of directories (budgetd's ``fsync_dir``) do nothing: file
  contents are synced, but a new or renamed file's name never is.
"""

from __future__ import annotations

import os
import sys

import pysyncobj.journal

import budgetd.replication.durability
import budgetd.replication.node
import budgetd.replication.snapshot
from budgetd.cli import main

MODES = ("all", "directories")


def _no_sync(*args: object) -> None:
    """What a store that never syncs does instead."""


if __name__ == "__main__":
    mode = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    if mode not in MODES:
        sys.exit(f"never_syncs.py: MODE must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "all":
        os.fsync = _no_sync
        os.fdatasync = _no_sync
        pysyncobj.journal.ResizableFile.flush = _no_sync
    for module in (
        budgetd.replication.durability,
        budgetd.replication.node,
        budgetd.replication.snapshot,
    ):
        module.fsync_dir = _no_sync  # type: ignore[attr-defined]
    sys.exit(main(prog_name="budgetd"))
