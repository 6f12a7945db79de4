"""``groupBy``: a directory (or S3 prefix) at a given depth is one item.

An entry whose key has more than ``depth`` components belongs to the group
named by its first ``depth`` components (``depth: 1``, ``2024-05-01/db.tar`` ->
group ``2024-05-01``). Entries at depth ``depth`` or shallower are not in any
group: they are *ungrouped* and always kept (rule ``ungrouped``), because a
policy that asks for groups is about backup sets, and a stray file beside them
is not one.

A group's item is made of its *selected* members: it is aged by the newest
selected member's mtime and sized by their total. Unselected members (an
``exclude`` inside a set) are never deleted. The validity marker, though, is
looked for among all members: ``COMPLETE`` need not be selected to count.

Pass 1 aggregates one :class:`GroupRecord` per group: O(number of groups)
memory, the one cost that grows with the listing (a group is far larger than a
record). The record also holds an order-independent digest of every member's
(key, fingerprint), so pass 2 can tell that a group changed since planning.
"""

from __future__ import annotations

import hashlib

__all__ = ["GroupRecord", "group_of", "member_digest"]

_MASK = (1 << 64) - 1


def group_of(key: str, depth: int) -> str | None:
    """The group an entry belongs to, or ``None`` if it is not deep enough."""
    parts = key.split("/", depth)
    if len(parts) <= depth:
        return None
    return "/".join(parts[:depth])


def member_digest(key: str, fingerprint: str) -> int:
    """64-bit hash of one member; summed mod 2**64, so order does not matter."""
    h = hashlib.blake2b(digest_size=8)
    h.update(key.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(fingerprint.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "big")


class GroupRecord:
    """What pass 1 learned about a group, and what pass 2 has seen of it since."""

    __slots__ = (
        "all_count", "all_newest", "arrival", "bytes2", "changed", "count2", "delete", "digest",
        "digest2", "entries2", "has_marker", "newest", "reason", "rule", "selected_count",
        "total",
    )

    def __init__(self) -> None:
        # pass 1: every member
        self.all_count = 0
        self.all_newest = float("-inf")
        self.digest = 0
        self.has_marker = False
        # pass 1: selected members (the item)
        self.selected_count = 0
        self.newest = float("-inf")
        #: newest arrival (max of mtime and ctime) of a selected member: minAge reads it
        self.arrival = float("-inf")
        self.total = 0
        # planned decision (set at seal for groups with selected members)
        self.delete = False
        self.rule = ""
        self.reason = ""
        # pass 2
        self.count2 = 0
        self.digest2 = 0
        self.changed = False
        self.entries2 = 0  # selected members decided
        self.bytes2 = 0

    def observe(self, *, key: str, fingerprint: str, mtime: float, size: int, selected: bool,
                marker: bool, arrival: float | None = None) -> None:
        self.all_count += 1
        self.all_newest = max(self.all_newest, mtime)
        self.digest = (self.digest + member_digest(key, fingerprint)) & _MASK
        self.has_marker = self.has_marker or marker
        if selected:
            self.selected_count += 1
            self.newest = max(self.newest, mtime)
            self.arrival = max(self.arrival, mtime if arrival is None else arrival)
            self.total += size

    def see_again(self, *, key: str, fingerprint: str, mtime: float) -> None:
        """Pass 2: a member arrives. Flags the group at once if it is visibly new."""
        self.count2 += 1
        self.digest2 = (self.digest2 + member_digest(key, fingerprint)) & _MASK
        if mtime > self.all_newest or self.count2 > self.all_count:
            self.changed = True

    def unchanged(self) -> bool:
        """Exactly the members (keys and fingerprints) that pass 1 saw."""
        return (not self.changed and self.count2 == self.all_count
                and self.digest2 == self.digest)
