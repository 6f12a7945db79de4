"""Open the backend a policy's target names."""

from __future__ import annotations

from lethe.spec import PosixTarget, S3Target
from lethe.storage.base import Storage

__all__ = ["open_storage"]


def open_storage(target: PosixTarget | S3Target, *,
                 credentials: tuple[str, str] | None = None) -> Storage:
    """``credentials`` is (access key id, secret key) read from a Secret; ``None``
    means the ambient identity (environment, pod identity, instance profile)."""
    if isinstance(target, PosixTarget):
        from lethe.storage.posix import PosixStorage

        return PosixStorage(target)
    from lethe.storage.s3 import S3Storage

    access, secret = credentials if credentials else (None, None)
    return S3Storage(target, access_key=access, secret_key=secret)
