"""Clock safety helpers (pure functions)."""

from __future__ import annotations

import pytest

from lethe.storage.base import Entry, StorageError
from lethe.storage.clock import (
    FUTURE_TOLERANCE,
    ClockSkewError,
    StorageClock,
    check_skew,
    is_future,
    split_future,
)


def _e(key: str, mtime: float) -> Entry:
    return Entry(key=key, size=1, mtime=mtime, fingerprint=f"{key}:{mtime}")


def test_skew_within_bound_passes() -> None:
    check_skew(1000.0, 1000.0, 300)
    check_skew(1300.0, 1000.0, 300)  # exactly the bound is accepted
    check_skew(700.0, 1000.0, 300)


@pytest.mark.parametrize(("storage", "local", "word"), [(1301.0, 1000.0, "ahead of"),
                                                        (699.0, 1000.0, "behind")])
def test_skew_beyond_bound_raises_with_clear_message(storage: float, local: float,
                                                     word: str) -> None:
    with pytest.raises(ClockSkewError) as info:
        check_skew(storage, local, 300, target="s3://b/p/")
    err = info.value
    assert isinstance(err, StorageError)
    msg = str(err)
    assert "s3://b/p/" in msg and word in msg and "maxClockSkew" in msg and "301.0s" in msg
    assert err.skew == storage - local and err.max_skew == 300


def test_negative_bound_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        check_skew(0, 0, -1)


def test_is_future_uses_tolerance() -> None:
    assert not is_future(100 + FUTURE_TOLERANCE, 100)
    assert is_future(100 + FUTURE_TOLERANCE + 0.001, 100)
    assert is_future(101, 100, tolerance=0)
    assert not is_future(50, 100)


def test_split_future_streams_and_diverts() -> None:
    future: list[Entry] = []
    entries = [_e("old", 10), _e("future", 1000), _e("now", 100)]
    kept = list(split_future(iter(entries), 100.0, on_future=future.append))
    assert [e.key for e in kept] == ["old", "now"]
    assert [e.key for e in future] == ["future"]


def test_split_future_asks_a_callable_clock_per_entry() -> None:
    clock = iter([100.0, 2000.0])
    future: list[Entry] = []
    kept = list(split_future([_e("a", 1000), _e("b", 1000)], lambda: next(clock),
                             on_future=future.append))
    # "a" is future at t=100; by the time "b" is seen, the storage clock has advanced.
    assert [e.key for e in future] == ["a"] and [e.key for e in kept] == ["b"]


def test_storage_clock_advances_with_monotonic_time() -> None:
    c = StorageClock.capture(5000.0, monotonic_now=10.0)
    assert c.now(monotonic_now=10.0) == 5000.0
    assert c.now(monotonic_now=70.5) == 5060.5
    real = StorageClock.capture(5000.0)
    assert 5000.0 <= real.now() < 5001.0
