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

from collections.abc import Sequence
from typing import Any

from lethe.spec import Selection
from lethe.storage.base import INTERNAL_PREFIX

__all__ = ["Selector"]


def _compile(patterns: Sequence[str]) -> Any:
    # wcmatch is imported only when a policy has globs: it is a twentieth of
    # `lethe apply`'s start-up, and an age-only policy never needs it.
    from wcmatch import glob

    return glob.compile(list(patterns), flags=glob.GLOBSTAR | glob.DOTGLOB)


class Selector:
    """A compiled :class:`~lethe.spec.Selection`; :meth:`why_not` explains a miss."""

    __slots__ = ("_exclude", "_include", "_max", "_min")

    def __init__(self, selection: Selection) -> None:
        self._include: Any = _compile(selection.include) if selection.include else None
        self._exclude: Any = _compile(selection.exclude) if selection.exclude else None
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
