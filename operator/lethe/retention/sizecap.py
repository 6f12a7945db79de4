"""``maxTotalSize`` with bounded memory and an exact cutoff.

The rule: among the items that would otherwise be kept, delete the oldest
unprotected ones until the kept total is at most the cap. The result is one
*cutoff* in the planner's total order (mtime, then key): every unprotected
candidate at or below it is deleted. Finding it exactly means finding a
weighted quantile, which no single bounded pass can do in general, so:

1. **Pass 1** feeds every candidate into (a) an exact map ``sort key -> size``
   that is dropped once it outgrows ``exact_limit``, and (b) a histogram over
   mtime with power-of-two bin widths: it starts at 2**-20 s and doubles (merging
   neighbour bins) whenever it holds more than ``bins`` bins. The final width is
   the smallest one that fits every candidate, so the histogram does not depend
   on listing order. Each bin holds count, bytes, min and max sort key.
2. At :meth:`SizeCap.resolve`, protected items (``keepLast``, calendar) are
   subtracted again (they are known exactly then). If the exact map survived,
   the cutoff is read off it. Otherwise the bins are walked from the oldest;
   if the boundary falls into a bin holding one candidate, that is exact too.
3. Otherwise the cutoff lies inside one bin ``[min, max]``: a **refinement
   pass** re-reads the listing and looks only at candidates inside it: an exact
   map again (usually enough), or a finer grid of ``bins`` bins over the bytes of
   the sort keys just after the common prefix of ``min`` and ``max``. Each pass
   narrows the interval by about a factor ``bins``; real listings need at most
   one extra pass, and only when more than ``exact_limit`` candidates exist.

Memory is O(exact_limit + bins) at every step.
"""

from __future__ import annotations

import math

from lethe.retention.order import SORT_KEY_MAX

__all__ = ["SizeCap"]

_START_SHIFT = -20  # first bin width: 2**-20 s (about a microsecond)


class _Bin:
    __slots__ = ("count", "hi", "lo", "total")

    def __init__(self, skey: bytes, size: int) -> None:
        self.count = 1
        self.total = size
        self.lo = skey
        self.hi = skey

    def add(self, skey: bytes, size: int) -> None:
        self.count += 1
        self.total += size
        if skey < self.lo:
            self.lo = skey
        if skey > self.hi:
            self.hi = skey

    def merge(self, other: _Bin) -> None:
        self.count += other.count
        self.total += other.total
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)


def _window(skey: bytes, cp: int) -> int:
    return int.from_bytes(skey[cp:cp + 8].ljust(8, b"\0"), "big")


class SizeCap:
    """Finds the exact ``maxTotalSize`` cutoff; see the module docstring."""

    def __init__(self, *, cap: int, exact_limit: int, bins: int) -> None:
        self.cap = cap
        self.exact_limit = max(1, exact_limit)
        self.bins = max(2, bins)
        #: Bytes of items that are kept whatever the cap says.
        self.protected_total = 0
        self._exact: dict[bytes, int] | None = {}
        self._hist: dict[int, _Bin] = {}
        self._shift = _START_SHIFT
        #: After resolution: delete unprotected candidates with sort key <= cutoff.
        self.cutoff: bytes | None = None
        self.done = False
        self.refinement_passes = 0
        # refinement state
        self._lo = b""
        self._hi = b""
        self._need = 0
        self._cp = 0
        self._lo_w = 0
        self._span = 1
        self._rexact: dict[bytes, int] | None = None
        self._grid: dict[int, _Bin] = {}

    # -- pass 1 -----------------------------------------------------------------

    def _bin_index(self, mtime: float) -> int:
        return math.floor(math.ldexp(mtime, -self._shift))

    def add(self, *, skey: bytes, mtime: float, size: int) -> None:
        """A candidate: neither age-protected nor older than ``maxAge``."""
        if self._exact is not None:
            self._exact[skey] = size
            if len(self._exact) > self.exact_limit:
                self._exact = None
        idx = self._bin_index(mtime)
        b = self._hist.get(idx)
        if b is None:
            self._hist[idx] = _Bin(skey, size)
            while len(self._hist) > self.bins:
                self._coarsen()
        else:
            b.add(skey, size)

    def _coarsen(self) -> None:
        self._shift += 1
        merged: dict[int, _Bin] = {}
        for idx, b in self._hist.items():
            m = merged.get(idx >> 1)
            if m is None:
                merged[idx >> 1] = b
            else:
                m.merge(b)
        self._hist = merged

    def withdraw(self, *, skey: bytes, mtime: float, size: int) -> None:
        """A candidate turned out protected (``keepLast``/calendar): undo :meth:`add`."""
        if self._exact is not None:
            self._exact.pop(skey, None)
        idx = self._bin_index(mtime)
        b = self._hist.get(idx)
        if b is not None:
            b.count -= 1
            b.total -= size
            if b.count <= 0:
                del self._hist[idx]

    def protect(self, size: int) -> None:
        self.protected_total += size

    # -- resolution ---------------------------------------------------------------

    def resolve(self) -> bool:
        """Finish pass 1. True when the cutoff is known; False: a refinement pass is due."""
        total = sum(b.total for b in self._hist.values())
        excess = self.protected_total + total - self.cap
        if excess <= 0:
            return self._finish(None)
        if self._exact is not None:
            return self._finish_exact(self._exact, excess, SORT_KEY_MAX)
        return self._walk(sorted(self._hist.items()), excess, SORT_KEY_MAX)

    def _finish(self, cutoff: bytes | None) -> bool:
        self.cutoff = cutoff
        self.done = True
        self._exact = None
        self._hist = {}
        self._rexact = None
        self._grid = {}
        return True

    def _finish_exact(self, exact: dict[bytes, int], need: int, fallback: bytes) -> bool:
        acc = 0
        cutoff: bytes | None = None
        for skey in sorted(exact):
            if acc >= need:
                break
            acc += exact[skey]
            cutoff = skey
        # Not enough even when all are deleted: in pass 1 that means every candidate
        # goes; in a refinement pass (the listing changed meanwhile) the whole interval.
        return self._finish(cutoff if acc >= need else fallback)

    def _walk(self, bins: list[tuple[int, _Bin]], need: int, fallback: bytes) -> bool:
        acc = 0
        for _, b in bins:
            if acc + b.total >= need:
                if b.count == 1 or b.lo == b.hi:
                    # One candidate (bounds may be loose, but only it lies in them),
                    # or identical sort keys that cannot be told apart.
                    return self._finish(b.hi)
                self._start_refinement(b.lo, b.hi, need - acc)
                return False
            acc += b.total
        return self._finish(fallback)

    def _start_refinement(self, lo: bytes, hi: bytes, need: int) -> None:
        self._lo, self._hi, self._need = lo, hi, need
        cp = 0
        while cp < min(len(lo), len(hi)) and lo[cp] == hi[cp]:
            cp += 1
        self._cp = cp
        self._lo_w = _window(lo, cp)
        self._span = max(1, _window(hi, cp) - self._lo_w + 1)
        self._rexact = {}
        self._grid = {}
        self._exact = None
        self._hist = {}

    # -- refinement passes --------------------------------------------------------

    def in_interval(self, skey: bytes) -> bool:
        return not self.done and self._lo <= skey <= self._hi

    def refine(self, *, skey: bytes, size: int) -> None:
        """A candidate inside the current interval, seen in a refinement pass."""
        if self._rexact is not None:
            self._rexact[skey] = size
            if len(self._rexact) > self.exact_limit:
                self._rexact = None
        idx = (_window(skey, self._cp) - self._lo_w) * self.bins // self._span
        b = self._grid.get(idx)
        if b is None:
            self._grid[idx] = _Bin(skey, size)
        else:
            b.add(skey, size)

    def resolve_refinement(self) -> bool:
        """Finish a refinement pass; True when the cutoff is known."""
        self.refinement_passes += 1
        if self._rexact is not None:
            return self._finish_exact(self._rexact, self._need, self._hi)
        return self._walk(sorted(self._grid.items()), self._need, self._hi)

    def footprint(self) -> int:
        """Number of retained records (for the memory-boundedness test)."""
        return (len(self._exact or ()) + len(self._hist) + len(self._rexact or ())
                + len(self._grid))
