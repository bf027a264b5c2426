"""The wallet's optional on-disk spool of won-but-not-yet-committed spend.

Owns the spool file format: JSON lines, append-only, one record per line —
``{"w": op}`` when a win's op (commit or spend, with its idempotency key) is about to be sent,
``{"d": key}`` once the cluster answered it definitely. On open, the ops written and not done are
the backlog to resend with the same keys; the file is then rewritten to just that backlog
(write to a temporary file, fsync, rename, fsync the folder). Imports the stdlib only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

__all__ = ["Spool"]

#: Rewrite the file once this many records were appended since the last rewrite.
SPOOL_RECORDS_MAX: Final = 200_000


class Spool:
    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._file: Any = None
        self._records = 0

    def open(self) -> list[dict[str, Any]]:
        """The backlog left by an earlier run, oldest first; the file is compacted to it."""
        backlog: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            with self.path.open("r", encoding="utf-8") as file:
                for line in file:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break  # a torn last line from a crash mid-write: nothing after it
                    if "w" in record:
                        op = record["w"]
                        backlog[str(op["idempotency_key"])] = op
                    elif "d" in record:
                        backlog.pop(str(record["d"]), None)
        self._rewrite(list(backlog.values()))
        return list(backlog.values())

    def _rewrite(self, ops: list[dict[str, Any]]) -> None:
        if self._file is not None:
            self._file.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            for op in ops:
                file.write(json.dumps({"w": op}, separators=(",", ":")) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        self._file = self.path.open("a", encoding="utf-8")
        self._records = len(ops)

    def written(self, ops: list[dict[str, Any]]) -> None:
        """Record ops about to be sent; durable (fsync) before this returns, if so configured."""
        self._append([{"w": op} for op in ops])

    def done(self, keys: list[str]) -> None:
        """Record ops answered definitely. Not synced: losing it only means a replayed resend."""
        self._append([{"d": key} for key in keys], sync=False)

    def _append(self, records: list[dict[str, Any]], *, sync: bool = True) -> None:
        if not records:
            return
        assert self._file is not None, "spool not open"
        self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._file.flush()
        if sync and self._fsync:
            os.fsync(self._file.fileno())
        self._records += len(records)

    def compact(self, backlog: list[dict[str, Any]]) -> None:
        """Rewrite the file to ``backlog`` when it has grown past SPOOL_RECORDS_MAX records."""
        if self._records > SPOOL_RECORDS_MAX:
            self._rewrite(backlog)

    def close(self, backlog: list[dict[str, Any]]) -> None:
        self._rewrite(backlog)
        if self._file is not None:
            self._file.close()
            self._file = None
