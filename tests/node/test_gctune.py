"""budgetd.gctune: a node's collector freezes the survivors of middle and old collections (so no
collection rescans the ledger), times every collection, and a settle reclaims frozen cycles.

Each test tunes this pytest process as a node would be, then puts the collector back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from budgetd import gctune


class _Linked:
    """A tracked object that can be part of a reference cycle (as a campaign and its parent)."""

    def __init__(self) -> None:
        self.other: _Linked | None = None


@pytest.fixture
def tuned() -> Iterator[gctune.NodeGc]:
    thresholds = gc.get_threshold()
    gctune.tune_for_node()
    gctune.node_gc.take_slowest()
    try:
        yield gctune.node_gc
    finally:
        gctune.node_gc.uninstall()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.collect()


def _count(figures: gctune.GcFigures, generation: int) -> int:
    return figures.pauses[generation].count


def test_survivors_of_a_middle_collection_are_frozen(tuned: gctune.NodeGc) -> None:
    before = tuned.figures()
    kept = [_Linked() for _ in range(10_000)]
    gc.collect(1)
    after = tuned.figures()
    assert after.frozen_objects >= before.frozen_objects + len(kept)
    assert _count(after, 1) == _count(before, 1) + 1
    assert sum(gc.get_count()) < 100  # nothing left for the collector to rescan


def test_a_young_collection_freezes_nothing(tuned: gctune.NodeGc) -> None:
    before = tuned.figures()
    kept = [_Linked() for _ in range(1_000)]
    gc.collect(0)
    after = tuned.figures()
    assert after.frozen_objects == before.frozen_objects
    assert _count(after, 0) == _count(before, 0) + 1
    assert len(kept) == 1_000


def test_frozen_objects_are_still_freed_by_reference_counting(tuned: gctune.NodeGc) -> None:
    kept = [_Linked() for _ in range(10_000)]
    gc.collect(1)
    frozen = gc.get_freeze_count()
    del kept
    assert gc.get_freeze_count() <= frozen - 10_000


def test_settle_reclaims_cycles_that_were_frozen(tuned: gctune.NodeGc) -> None:
    heads = []
    for _ in range(5_000):
        a, b = _Linked(), _Linked()
        a.other, b.other = b, a
        heads.append(a)
    gc.collect(1)
    frozen = gc.get_freeze_count()
    del heads, a, b
    assert gc.get_freeze_count() >= frozen - 1  # cycles: reference counting cannot free them
    gctune.settle()
    assert gc.get_freeze_count() <= frozen - 10_000


def test_a_threshold_crossing_runs_collections_that_the_watch_times(tuned: gctune.NodeGc) -> None:
    before = tuned.figures()
    young = gctune.NODE_THRESHOLDS[0]
    kept = [_Linked() for _ in range(young * 4)]  # past the young threshold several times
    after = tuned.figures()
    assert _count(after, 0) > _count(before, 0)
    assert _count(after, 1) > _count(before, 1)  # a middle one, whose survivors were frozen
    assert after.frozen_objects > before.frozen_objects
    slowest = tuned.take_slowest()
    assert slowest is not None and slowest[0] > 0 and slowest[1] in (0, 1, 2)
    assert tuned.take_slowest() is None  # reported once
    assert len(kept) == young * 4


def test_tuning_twice_installs_one_callback(tuned: gctune.NodeGc) -> None:
    gctune.tune_for_node()
    assert gc.callbacks.count(tuned._on_collection) == 1
