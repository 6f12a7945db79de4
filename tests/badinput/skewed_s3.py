"""``python tests/badinput/skewed_s3.py OFFSET [moto_server args…]``: moto_server on a
clock that is OFFSET seconds off (negative: behind).

This is the one way to get an S3 server whose clock disagrees with ours on a
single machine without libfaketime: the server process's ``time.time`` and
``datetime.now``/``utcnow`` are shifted before moto and werkzeug are imported.
So the server lies consistently, as a skewed server does: the HTTP ``Date``
header (what ``S3Storage.now`` reads) and every ``LastModified`` it stamps.
Everything else — HTTP, signing, XML, the S3 semantics — is the real server.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time

OFFSET = float(sys.argv[1])
_real_time = time.time


def _shifted_time() -> float:
    return _real_time() + OFFSET


class _ShiftedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> _ShiftedDatetime:
        return super().now(tz) + _dt.timedelta(seconds=OFFSET)

    @classmethod
    def utcnow(cls) -> _ShiftedDatetime:
        return super().utcnow() + _dt.timedelta(seconds=OFFSET)


time.time = _shifted_time
_dt.datetime = _ShiftedDatetime  # type: ignore[misc]

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[2:])
