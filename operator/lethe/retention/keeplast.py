"""``keepLast``: the N newest valid items, with a bounded min-heap of size N."""

from __future__ import annotations

import heapq

from lethe.retention.order import mtime_of

__all__ = ["NewestKeeper"]


class NewestKeeper:
    """Keeps the N greatest sort keys seen; O(N) memory whatever the listing size."""

    __slots__ = ("_heap", "count")

    def __init__(self, *, count: int) -> None:
        self.count = count
        #: (sort key, item id, size, arrival): arrival (newest of mtime and ctime) lets
        #: the size cap tell whether the minAge floor already protected the item.
        self._heap: list[tuple[bytes, str, int, float]] = []

    def offer(self, *, skey: bytes, item: str, size: int, arrival: float) -> None:
        if self.count <= 0:
            return
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, (skey, item, size, arrival))
        elif skey > self._heap[0][0]:
            heapq.heapreplace(self._heap, (skey, item, size, arrival))

    def kept(self) -> dict[str, tuple[bytes, int, float]]:
        """Item id -> (sort key, size, arrival) of the N newest."""
        return {item: (skey, size, arrival) for skey, item, size, arrival in self._heap}

    def would_keep(self, *, skey: bytes) -> bool:
        """Would an item unseen in pass 1 have been among the N newest?"""
        if self.count <= 0:
            return False
        return len(self._heap) < self.count or skey > self._heap[0][0]

    def newcomer_floor(self) -> float:
        """An mtime below which :meth:`would_keep` is surely False."""
        if self.count <= 0:
            return float("inf")
        if len(self._heap) < self.count:
            return float("-inf")
        return mtime_of(self._heap[0][0])

    def size(self) -> int:
        return len(self._heap)
