"""`budgetd` with every sync turned into a no-op: os.fsync, os.fdatasync and the journal's msync
(pysyncobj's ResizableFile.flush, which budgetd.replication.durability calls) do nothing, so the
node acknowledges writes that are only in memory. The broken store that
tests/jepsen/test_power_loss.py's power loss must catch; run as
``python tests/jepsen/never_syncs.py run --config ...`` (budgetd's own arguments).
"""

from __future__ import annotations

import os
import sys

import pysyncobj.journal

from budgetd.cli import main


def _no_sync(*args: object) -> None:
    """What a store that never syncs does instead."""


if __name__ == "__main__":
    os.fsync = _no_sync
    os.fdatasync = _no_sync
    pysyncobj.journal.ResizableFile.flush = _no_sync
    sys.exit(main(prog_name="budgetd"))
