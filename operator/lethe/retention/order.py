"""The one total order on items that every rule uses, plus small formatting helpers.

Every rule that picks "the newest" or "the oldest" (``keepLast``, the calendar
rules, ``maxTotalSize``) compares items by the same key: modification time
first, then the item's key. Two items with the same mtime are ordered by key
(the lexicographically *larger* key counts as newer), so a plan never depends
on the order in which the listing arrived.

The order is encoded as a byte string (:func:`sort_key`) rather than a tuple
because the size-cap refinement (``sizecap.py``) needs to cut intervals of the
order into bins, and byte strings can be cut uniformly: 8 order-preserving
bytes of the IEEE-754 mtime, then the UTF-8 key. UTF-8 preserves code-point
order and keys never contain NUL, so bytes order == (mtime, key) order.
"""

from __future__ import annotations

import math
import struct

__all__ = ["SORT_KEY_MAX", "fmt_bytes", "fmt_duration", "mtime_of", "sort_key"]

_DOUBLE = struct.Struct(">d")
_SIGN = 1 << 63
_MASK = (1 << 64) - 1
#: Greater than every :func:`sort_key` (an encoded mtime starts below 0xFFF1).
SORT_KEY_MAX = b"\xff" * 9


def _encode_mtime(mtime: float) -> bytes:
    """8 bytes whose lexicographic order equals the numeric order of ``mtime``."""
    x = float(mtime) + 0.0  # -0.0 -> 0.0 so equal floats encode equally
    if math.isnan(x):
        x = 0.0
    bits = int.from_bytes(_DOUBLE.pack(x), "big")
    bits = (~bits & _MASK) if bits & _SIGN else (bits | _SIGN)
    return bits.to_bytes(8, "big")


def sort_key(mtime: float, key: str) -> bytes:
    """The position of an item in the newest-last total order."""
    return _encode_mtime(mtime) + key.encode("utf-8", "surrogatepass")


def mtime_of(skey: bytes) -> float:
    """Inverse of the mtime half of :func:`sort_key` (used for bin arithmetic)."""
    bits = int.from_bytes(skey[:8], "big")
    bits = (bits & ~_SIGN & _MASK) if bits & _SIGN else (~bits & _MASK)
    x: float = _DOUBLE.unpack(bits.to_bytes(8, "big"))[0]
    return x


def fmt_duration(seconds: float) -> str:
    """``93784`` -> ``1d2h3min4s``: the same units the policy is written in."""
    s = int(seconds)
    if s < 0:
        return "-" + fmt_duration(-s)
    if s == 0:
        return "0s"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return "".join(f"{q}{u}" for q, u in ((d, "d"), (h, "h"), (m, "min"), (s, "s")) if q)


def fmt_bytes(n: int) -> str:
    """Binary units, matching the quantities (``500Gi``) policies use."""
    value = float(n)
    for unit in ("B", "Ki", "Mi", "Gi", "Ti", "Pi"):
        if abs(value) < 1024 or unit == "Pi":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"  # pragma: no cover
