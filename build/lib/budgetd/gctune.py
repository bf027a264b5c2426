"""Garbage-collector settings for a budgetd process. Imports only the stdlib.

The ledger holds millions of long-lived objects (reservations, idempotency entries) and makes few
reference cycles; CPython's default cyclic collector would rescan them again and again (measured by
scripts/bench_ledger.py: with the defaults, ops/s drop by about a quarter and snapshot decoding
takes four times as long). A node therefore freezes what it has loaded, collects young objects
less often, and pauses the collector while it encodes or decodes a snapshot.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

#: (young, middle, old) thresholds used by a running node.
NODE_THRESHOLDS: Final = (100_000, 50, 1_000)


def tune_for_node() -> None:
    """Move everything allocated so far out of the collector's sight and raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*NODE_THRESHOLDS)


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block (reference counting still frees memory)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
