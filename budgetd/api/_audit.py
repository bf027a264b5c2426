"""The audit log: one JSON line per admin action (and per refused call of an admin route), append
only, flushed per record, so an operator can answer "who changed this, from where, when".

Owns the record's fields. Imports only the stdlib. Never records a token, only its name.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

__all__ = ["REQUEST_ID", "AuditLog"]

log = logging.getLogger("budgetd.api")

#: The header whose value (if any) is recorded as the request id.
REQUEST_ID: Final = "X-Request-Id"
#: Longest text kept of a client-supplied field (request id, target id).
_TEXT_MAX: Final = 128


def _clip(value: str | None) -> str | None:
    if value is None:
        return None
    return "".join(ch if ch.isprintable() else "?" for ch in value[:_TEXT_MAX])


class AuditLog:
    """An append-only JSON lines file (created 0600). ``path`` None: records go nowhere."""

    def __init__(self, path: str | Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = None if path is None else Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")

    def record(
        self,
        *,
        token_name: str | None,
        remote: str | None,
        request_id: str | None,
        method: str,
        route: str,
        target: str | None,
        status: int,
    ) -> None:
        if self._file is None:
            return
        entry: dict[str, Any] = {
            "time_ms": int(self._clock() * 1000),
            "token_name": token_name,
            "remote": remote,
            "request_id": _clip(request_id),
            "method": method,
            "route": route,
            "target": _clip(target),
            "status": status,
        }
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n"
        with self._lock:
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as error:  # a full disk must not stop the API; say so loudly
                log.error("audit log %s: %s; record lost: %s", self.path, error, line.strip())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
