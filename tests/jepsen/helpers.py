"""Waiting and leader helpers shared by the jepsen-lite tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from jepsen_lite import Sandbox, preflight

WAIT_S = 30.0
#: Why the sandbox cannot run here (not root, no ip/nft), or None.
REASON = preflight()
needs_sandbox = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def until(
    condition: Callable[[], Any], what: str, limit_s: float = WAIT_S, step_s: float = 0.1
) -> Any:
    """Poll ``condition`` until it is truthy (its value), or fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(step_s)
    raise AssertionError(f"timed out after {limit_s} s waiting for {what} (last: {last!r})")


def agreed_leader(sandbox: Sandbox, among: list[str]) -> str | None:
    """The leader every node in ``among`` names, if they all name the same one of them."""
    views = [sandbox.view(node_id) for node_id in among]
    leaders = {view.get("leader_id") if view else None for view in views}
    if len(leaders) == 1:
        leader = leaders.pop()
        if leader in among:
            return str(leader)
    return None
