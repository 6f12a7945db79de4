"""Consumer manifests (I4): entries leave the manifest before their files go.

A manifest is a small JSON file in the target that a consumer reads to find
data files: either a JSON array of keys, or an object whose ``files`` array
holds keys or objects with a ``path``. Keys are relative to the target root.
Other fields are preserved. The update is atomic (the backend's
``replace_object``: temp+fsync+rename, or a conditional PUT retried on
conflict), so a crash leaves either the old or the new manifest, and the old
one only ever references files that still exist.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from lethe.retention.select import nfc
from lethe.storage.base import ConflictError, Storage, StorageError

__all__ = ["ManifestError", "remove_entries"]

MAX_CONFLICT_RETRIES = 10


class ManifestError(StorageError):
    """The manifest could not be updated: the run must stop before deleting."""


def _entry_key(item: Any) -> str | None:
    if isinstance(item, str):
        return item[2:] if item.startswith("./") else item
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return _entry_key(item["path"])
    return None


def _listed(item: Any, keys: Collection[str]) -> bool:
    """Does the entry name one of ``keys`` (given in NFC)? Compared under NFC, and
    both as written and without a leading ``./``: S3 keys are opaque (``./x`` and
    ``x`` are two objects), so an entry either could mean leaves the manifest.
    Removing one entry too many is safe (I4); keeping a deleted key's is not."""
    key = _entry_key(item)
    if key is None:
        return False
    raw = item if isinstance(item, str) else item["path"]
    return nfc(key) in keys or nfc(raw) in keys


def _filter(doc: Any, keys: Collection[str], *, path: str) -> tuple[Any, int]:
    if isinstance(doc, list):
        kept = [it for it in doc if not _listed(it, keys)]
        return kept, len(doc) - len(kept)
    if isinstance(doc, dict) and isinstance(doc.get("files"), list):
        files, removed = _filter(doc["files"], keys, path=path)
        return {**doc, "files": files}, removed
    raise ManifestError(f"manifest {path}: expected a JSON array of keys or an object with a "
                        f"'files' array")


def remove_entries(*, storage: Storage, path: str, keys: Collection[str]) -> int:
    """Remove ``keys`` from the manifest at ``path``; return how many entries left it.

    Idempotent: keys already absent are fine (a resumed batch repeats this step).
    A missing manifest references nothing, so there is nothing to do.
    """
    keys = frozenset(nfc(k) for k in keys)
    for _ in range(MAX_CONFLICT_RETRIES):
        try:
            got = storage.read_object(path)
        except StorageError as e:
            raise ManifestError(f"manifest {path}: cannot read: {e}") from e
        if got is None:
            return 0
        data, token = got
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise ManifestError(f"manifest {path}: not valid JSON ({e}); fix or remove it") from e
        new, removed = _filter(doc, keys, path=path)
        if not removed:
            return 0
        body = json.dumps(new, indent=2, ensure_ascii=False).encode() + b"\n"
        try:
            storage.replace_object(path, body, if_match=token)
        except ConflictError:
            continue  # a consumer rewrote it meanwhile: re-read and filter again
        except StorageError as e:
            raise ManifestError(f"manifest {path}: cannot write: {e}") from e
        return removed
    raise ManifestError(f"manifest {path}: still conflicting after {MAX_CONFLICT_RETRIES} tries")


def referenced(*, storage: Storage, path: str) -> set[str]:
    """Keys the manifest references (for checks and the plan's own protection)."""
    got = storage.read_object(path)
    if got is None:
        return set()
    doc = json.loads(got[0])
    items = doc if isinstance(doc, list) else doc.get("files", []) if isinstance(doc, dict) else []
    return {k for k in (_entry_key(it) for it in items) if k is not None}
