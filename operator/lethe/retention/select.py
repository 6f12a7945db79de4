"""Which entries a policy looks at: include/exclude globs and size filters.

Globs use wcmatch with ``GLOBSTAR`` (``**`` spans directories, including none:
``**/*.log`` matches ``a.log`` and ``x/y/a.log``) and ``DOTGLOB`` (``*``
matches names starting with a dot, as ``find`` does: a retention tool that
silently skipped ``.cache.tmp`` would surprise people). An empty include list
means "everything". Exclude always wins over include. Size bounds are
inclusive. The operator's own ``.lethe/`` files are never selected, whatever
the globs say (defence in depth: the storage layer already hides them).

Names compare under Unicode NFC: a key and a glob that look the same match,
whichever of them is composed (``ë``, U+00EB) or decomposed (``e`` + U+0308,
as macOS writes names to NFS and SMB shares). Only the comparison is
normalized: keys stay the storage's real names everywhere else (plan, ledger,
deletes). Two names that differ only in normalization are two objects, and a
glob written either way matches both.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Sequence
from typing import Any

from lethe.spec import Selection
from lethe.storage.base import INTERNAL_PREFIX

__all__ = ["Selector", "nfc"]


def nfc(text: str) -> str:
    """``text`` in Unicode NFC, for comparing a name with what a person typed.

    Never use the result to reach storage: it may not be the object's real name.
    Lone surrogates (POSIX names that are not UTF-8, see storage/posix.py) pass
    through unchanged. Runs once per listed entry: ASCII returns at once.
    """
    if text.isascii():
        return text
    return unicodedata.normalize("NFC", text)


def _path_forms(key: str) -> tuple[str, ...]:
    """``key`` and, for an S3 key that looks like an odd path (``a//b``, ``./keep/x``,
    ``a/../keep/x``, ``/x``), the forms a reader of the glob would take it for: an
    exclude protects a key if it matches any of them (globstar never matches ``.``
    or ``..`` segments). Only excludes use this: more forms only ever keep more."""
    if "//" not in key and "/." not in key and not key.startswith((".", "/")):
        return (key,)
    parts = [p for p in key.split("/") if p not in ("", ".")]
    return (key, "/".join(parts), "/".join(p for p in parts if p != ".."),
            posixpath.normpath("/" + key).lstrip("/"))


def _compile(patterns: Sequence[str]) -> Any:
    # wcmatch is imported only when a policy has globs: it is a twentieth of
    # `lethe apply`'s start-up, and an age-only policy never needs it.
    from wcmatch import glob

    return glob.compile([nfc(p) for p in patterns], flags=glob.GLOBSTAR | glob.DOTGLOB)


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
        if self._exclude is not None or self._include is not None:
            key = nfc(key)  # globs were compiled in NFC
        if self._exclude is not None and any(self._exclude.match(k) for k in _path_forms(key)):
            return "matches an exclude glob"
        if self._include is not None and not self._include.match(key):
            return "matches no include glob"
        if size is not None:
            if self._min is not None and size < self._min:
                return f"smaller than select.minSize ({size} < {self._min})"
            if self._max is not None and size > self._max:
                return f"larger than select.maxSize ({size} > {self._max})"
        return None
