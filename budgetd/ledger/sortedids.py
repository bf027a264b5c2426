"""The ledger's sorted index of campaign ids. Imports only the stdlib.

A list of sorted chunks (each at most 2 × CHUNK_IDS ids) and the last id of each: adding an id
moves at most one chunk and the list of chunk ends, so its cost grows with √n instead of n (one
flat sorted list moved half of all ids on every new campaign); reading from an id is a bisection
and then a walk.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = ["CHUNK_IDS", "SortedIds"]

#: Ids a chunk holds after a split (a chunk splits in two when it passes twice this).
CHUNK_IDS: Final = 512


class SortedIds:
    """A sorted set of strings that only grows: ``add``, ``len``, and iteration from a bound."""

    __slots__ = ("_chunks", "_ends", "_size")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        ordered = sorted(set(ids))
        self._chunks = [ordered[i : i + CHUNK_IDS] for i in range(0, len(ordered), CHUNK_IDS)]
        self._ends = [chunk[-1] for chunk in self._chunks]
        self._size = len(ordered)

    def __len__(self) -> int:
        return self._size

    def add(self, value: str) -> None:
        """Insert ``value`` (which must not be present yet)."""
        chunks, ends = self._chunks, self._ends
        if not chunks:
            chunks.append([value])
            ends.append(value)
            self._size = 1
            return
        index = bisect_left(ends, value)
        if index == len(ends):
            index -= 1
        chunk = chunks[index]
        insort(chunk, value)
        self._size += 1
        if len(chunk) > 2 * CHUNK_IDS:
            chunks[index : index + 1] = [chunk[:CHUNK_IDS], chunk[CHUNK_IDS:]]
            ends[index : index + 1] = [chunk[CHUNK_IDS - 1], chunk[-1]]
        else:
            ends[index] = chunk[-1]

    def from_(self, value: str, *, inclusive: bool) -> Iterator[str]:
        """The ids from ``value`` on, in order: ``>= value`` if ``inclusive``, else ``> value``."""
        chunks, ends = self._chunks, self._ends
        index = bisect_left(ends, value)
        if index == len(ends):
            return
        chunk = chunks[index]
        start = bisect_left(chunk, value) if inclusive else bisect_right(chunk, value)
        yield from chunk[start:] if start else chunk
        for later in range(index + 1, len(chunks)):
            yield from chunks[later]

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
            yield from chunk
