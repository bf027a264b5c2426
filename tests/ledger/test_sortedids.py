"""The sorted campaign-id index against a plain sorted list: every add, every read from a bound,
across chunk splits."""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st

from budgetd.ledger.sortedids import CHUNK_IDS, SortedIds

IDS = st.text(alphabet="ab:;c0", min_size=1, max_size=6)


def check(index: SortedIds, plain: list[str], bounds: list[str]) -> None:
    assert list(index) == plain and len(index) == len(plain)
    for bound in bounds:
        assert list(index.from_(bound, inclusive=True)) == plain[bisect_left(plain, bound) :]
        assert list(index.from_(bound, inclusive=False)) == plain[bisect_right(plain, bound) :]


@settings(max_examples=200, deadline=None)
@given(st.lists(IDS, unique=True, max_size=60), st.lists(IDS, max_size=8))
def test_adds_in_any_order_read_back_sorted_from_any_bound(ids: list[str], bounds: list[str]):
    index = SortedIds()
    for value in ids:
        index.add(value)
    check(index, sorted(ids), bounds + ids[:3] + [""])
    assert list(SortedIds(ids)) == sorted(ids)


def test_chunks_split_and_keep_the_order():
    count = 5 * CHUNK_IDS
    ids = [f"c{(i * 7919) % count:06d}" for i in range(count)]  # a scrambled order
    index = SortedIds(ids[: CHUNK_IDS // 2])
    for value in ids[CHUNK_IDS // 2 :]:
        index.add(value)
    plain = sorted(ids)
    check(index, plain, [plain[0], plain[CHUNK_IDS], plain[2 * CHUNK_IDS + 1], plain[-1], "d"])
    assert list(SortedIds().from_("a", inclusive=True)) == []
