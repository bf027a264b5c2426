"""The history of a run: an append-only list of ops, each an ``invoke`` and then one completion
(``ok`` it happened, ``fail`` it definitely did not, ``info`` unknown), stamped by one monotonic
clock, written line by line as ``history.jsonl``. Also the HTTP outcome taxonomy. Stdlib only.

An ``info`` retires the logical process that invoked it (research/jepsen.md §1.4): the op stays
concurrent with everything after it, so the worker carries on under a new process id.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

from jepsen_lite.http import Response

__all__ = ["COMPLETIONS", "History", "Op", "OpType", "Process", "load", "outcome", "pairs"]

OpType = Literal["invoke", "ok", "fail", "info"]
#: A worker's logical process (an int) or ``"nemesis"``.
Process = int | str
COMPLETIONS: Final = ("ok", "fail", "info")
#: Connection errors that prove the request never reached the server.
_NOT_SENT: Final = ("Connection refused", "No route to host", "Network is unreachable")


def outcome(response: Response) -> OpType:
    """ok, fail or info for a write's HTTP answer: 2xx ok; 503 (not written) and any other
    4xx (a refusal: 400, 409 business codes, 404…) fail; 504, 5xx, timeouts and connection
    errors after sending info. A connection refused or unreachable was never sent: fail."""
    status = response.status
    if status is None:
        error = response.error or ""
        return "fail" if any(reason in error for reason in _NOT_SENT) else "info"
    if 200 <= status < 300:
        return "ok"
    if status == 503 or 300 <= status < 500:
        return "fail"
    return "info"


@dataclass(frozen=True)
class Op:
    """One line of the history. ``value`` is the op's input at invoke and its result (or the
    input again) at completion; ``node`` is the node it was sent to."""

    index: int
    process: Process
    type: OpType
    f: str
    value: dict[str, Any]
    time_ns: int
    node: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Op:
        return cls(**raw)


@dataclass
class History:
    """Append-only; thread-safe. With ``path``, every op is also appended (and flushed) to
    that file as it happens, so a crashed run still leaves its history."""

    path: Path | None = None
    clock_ns: Callable[[], int] = time.monotonic_ns
    _ops: list[Op] = field(default_factory=list)
    _open: dict[int, Op] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _file: IO[str] | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self._file = self.path.open("a", encoding="utf-8")

    def invoke(
        self, process: Process, f: str, value: dict[str, Any], *, node: str | None = None
    ) -> Op:
        """Record an invoke; a process has at most one op open at a time."""
        with self._lock:
            for open_op in self._open.values():
                if open_op.process == process:
                    raise ValueError(f"process {process!r} already has op {open_op.index} open")
            op = self._append(process, "invoke", f, value, node, None)
            self._open[op.index] = op
            return op

    def complete(
        self,
        invoked: Op,
        type_: OpType,
        value: dict[str, Any] | None = None,
        *,
        error: str | None = None,
    ) -> Op:
        """Record the completion of ``invoked``: ok, fail or info."""
        if type_ not in COMPLETIONS:
            raise ValueError(f"a completion is ok, fail or info, not {type_!r}")
        with self._lock:
            if self._open.pop(invoked.index, None) is None:
                raise ValueError(f"op {invoked.index} is not open")
            merged = {**invoked.value, **(value or {})}
            return self._append(invoked.process, type_, invoked.f, merged, invoked.node, error)

    def _append(
        self,
        process: Process,
        type_: OpType,
        f: str,
        value: dict[str, Any],
        node: str | None,
        error: str | None,
    ) -> Op:
        op = Op(len(self._ops), process, type_, f, value, self.clock_ns(), node, error)
        self._ops.append(op)
        if self._file is not None:
            self._file.write(op.to_json() + "\n")
            self._file.flush()
        return op

    @property
    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def close(self) -> None:
        """Close the file; ops still open stay without a completion (as after a crash)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def load(path: Path) -> list[Op]:
    """The ops of a ``history.jsonl``."""
    with path.open(encoding="utf-8") as lines:
        return [Op.from_dict(json.loads(line)) for line in lines if line.strip()]


def pairs(ops: list[Op]) -> Iterator[tuple[Op, Op | None]]:
    """Each invoke with its completion (None if the history ends first), in invoke order."""
    pending: dict[Process, Op] = {}
    completed: dict[int, Op] = {}
    for op in ops:
        if op.type == "invoke":
            pending[op.process] = op
        elif op.process in pending:
            completed[pending.pop(op.process).index] = op
    for op in ops:
        if op.type == "invoke":
            yield op, completed.get(op.index)
