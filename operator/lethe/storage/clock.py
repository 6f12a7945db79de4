"""Clock safety: ages are measured by the storage's clock, not ours (issue 3, item 8).

Retention compares an object's mtime with "now". Both numbers must come from
the same clock, or a skewed operator node deletes young files (its clock runs
ahead) or keeps everything forever (it runs behind). The backends read the
storage's clock (:meth:`lethe.storage.base.Storage.now`: an S3 response's
``Date``, a probe file's mtime on POSIX); this module holds the pure decisions
made with it:

* :func:`check_skew` — refuse to start a run when the operator's clock and the
  storage's disagree by more than ``spec.safety.maxClockSkew``. A large skew
  means one of them is wrong and no age computed from them can be trusted.
* :func:`is_future` / :func:`split_future` — an entry whose mtime lies in the
  storage's future (clock trouble on whoever wrote it, or ``touch -d``) has no
  meaningful age. It is skipped and reported, never deleted and never counted
  as "young" in a way that could push others out under ``keepLast``.
* :class:`StorageClock` — the storage's time *during* a run: the storage's
  ``now()`` read once at the start, advanced by our monotonic clock. Reading
  ``now()`` once per entry would cost a request (S3) or a write (POSIX), and
  comparing against the start time alone would flag every file written during
  a long listing as "future".

No I/O here; everything takes its clock readings as arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from lethe.storage.base import Entry, StorageError

__all__ = [
    "FUTURE_TOLERANCE",
    "ClockSkewError",
    "StorageClock",
    "check_skew",
    "is_future",
    "split_future",
]

#: Slack for "in the future". S3 ``Date`` and ``LastModified`` have one-second
#: resolution (``Date`` is truncated, so an object written in the same second
#: can look up to 1 s newer than "now"), NFS servers round mtimes, and our
#: monotonic extrapolation drifts a little over a long run.
FUTURE_TOLERANCE = 5.0


class ClockSkewError(StorageError):
    """The operator's clock and the storage's disagree by more than allowed.

    Attributes carry the numbers so a runner can put them in a condition.
    """

    def __init__(self, message: str, *, storage_now: float, local_now: float,
                 max_skew: float) -> None:
        super().__init__(message)
        self.storage_now = storage_now
        self.local_now = local_now
        self.max_skew = max_skew
        self.skew = storage_now - local_now  # positive: storage is ahead


def check_skew(storage_now: float, local_now: float, max_skew: float, *,
               target: str = "the storage") -> None:
    """Raise :class:`ClockSkewError` when ``|storage_now - local_now| > max_skew``.

    ``max_skew`` is in seconds (``spec.safety.maxClockSkew``, default 300); a
    skew exactly equal to the bound is accepted. ``target`` only names the
    storage in the message (e.g. ``Storage.describe()``).
    """
    if max_skew < 0:
        raise ValueError(f"max_skew must not be negative, got {max_skew}")
    skew = storage_now - local_now
    if abs(skew) <= max_skew:
        return
    direction = "ahead of" if skew > 0 else "behind"
    raise ClockSkewError(
        f"clock of {target} is {abs(skew):.1f}s {direction} the operator's clock "
        f"(allowed: {max_skew:g}s); ages cannot be trusted, so the run was not started. "
        "Fix time synchronisation (NTP/chrony) on the operator's node or the storage "
        "server, or raise spec.safety.maxClockSkew if the skew is expected",
        storage_now=storage_now, local_now=local_now, max_skew=max_skew,
    )


def is_future(mtime: float, storage_now: float, *,
              tolerance: float = FUTURE_TOLERANCE) -> bool:
    """True when ``mtime`` is later than the storage's now plus ``tolerance``."""
    return mtime > storage_now + tolerance


def split_future(entries: Iterable[Entry], storage_now: float | Callable[[], float], *,
                 on_future: Callable[[Entry], None],
                 tolerance: float = FUTURE_TOLERANCE) -> Iterator[Entry]:
    """Stream ``entries``, diverting future-dated ones to ``on_future``.

    ``storage_now`` is a number, or a callable (e.g. :meth:`StorageClock.now`)
    asked once per entry so a long listing does not flag files written while it
    ran. Streaming, O(1) memory: the runner decides what to keep of the
    diverted entries (a count and a sample, typically).
    """
    if callable(storage_now):
        now_fn = storage_now
    else:
        fixed = float(storage_now)

        def now_fn() -> float:
            return fixed
    for entry in entries:
        if is_future(entry.mtime, now_fn(), tolerance=tolerance):
            on_future(entry)
        else:
            yield entry


@dataclass(frozen=True, slots=True)
class StorageClock:
    """The storage's clock, read once, then advanced with our monotonic clock.

    ``time.monotonic`` never jumps when NTP steps the wall clock, so the
    extrapolation stays valid for the length of a run.
    """

    storage_at_start: float
    monotonic_at_start: float

    @classmethod
    def capture(cls, storage_now: float, *, monotonic_now: float | None = None
                ) -> StorageClock:
        return cls(storage_now,
                   time.monotonic() if monotonic_now is None else monotonic_now)

    def now(self, *, monotonic_now: float | None = None) -> float:
        mono = time.monotonic() if monotonic_now is None else monotonic_now
        return self.storage_at_start + (mono - self.monotonic_at_start)
