"""Which entries a policy looks at: include/exclude globs and size filters.

Globs use wcmatch with ``GLOBSTAR`` (``**`` spans directories, including none:
``**/*.log`` matches ``a.log`` and ``x/y/a.log``) and ``DOTGLOB`` (``*``
matches names starting with a dot, as ``find`` does: a retention tool that
silently skipped ``.cache.tmp`` would surprise people). An empty include list
means "everything". Exclude always wins over include. Size bounds are
inclusive. The operator's own ``.lethe/`` files are never selected, whatever
the globs say (defence in depth: the storage layer already hides them).
"""

from __future__ import annotations

from typing import Any

from wcmatch import glob

from lethe.spec import Selection
from lethe.storage.base import INTERNAL_PREFIX

__all__ = ["GLOB_FLAGS", "Selector"]

GLOB_FLAGS = glob.GLOBSTAR | glob.DOTGLOB


class Selector:
    """A compiled :class:`~lethe.spec.Selection`; :meth:`why_not` explains a miss."""

    __slots__ = ("_exclude", "_include", "_max", "_min")

    def __init__(self, selection: Selection) -> None:
        self._include: Any = (
            glob.compile(list(selection.include), flags=GLOB_FLAGS) if selection.include else None
        )
        self._exclude: Any = (
            glob.compile(list(selection.exclude), flags=GLOB_FLAGS) if selection.exclude else None
        )
        self._min = selection.minSize
        self._max = selection.maxSize

    def matches_key(self, key: str) -> bool:
        """The glob half only (groups use it to ask about a marker file)."""
        return self.why_not(key, None) is None

    def selected(self, key: str, size: int) -> bool:
        return self.why_not(key, size) is None

    def why_not(self, key: str, size: int | None) -> str | None:
        """``None`` if selected, else a short reason (shown in plans)."""
        if key.startswith(INTERNAL_PREFIX):
            return "internal .lethe/ file"
        if self._exclude is not None and self._exclude.match(key):
            return "matches an exclude glob"
        if self._include is not None and not self._include.match(key):
            return "matches no include glob"
        if size is not None:
            if self._min is not None and size < self._min:
                return f"smaller than select.minSize ({size} < {self._min})"
            if self._max is not None and size > self._max:
                return f"larger than select.maxSize ({size} > {self._max})"
        return None
