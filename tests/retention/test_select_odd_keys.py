"""An exclude protects an S3 key that looks like an odd path (issue #14 item 6 made
such keys deletable): ``./keep/x``, ``a/../keep/x``, ``a//keep/x``, ``/keep/x``.
globstar never matches ``.`` or ``..`` segments, so the raw key alone slipped by."""

import pytest

from lethe.retention.select import Selector
from lethe.spec import Selection


@pytest.mark.parametrize("key", ["./keep/db.dump", "logs/../keep/x", "a//keep/x", "/keep/x",
                                 "keep/x", "x/keep/y", "./a/./keep/b"])
def test_exclude_protects_every_spelling(key: str) -> None:
    assert Selector(Selection(exclude=("**/keep/**",))).why_not(key, 1) is not None


@pytest.mark.parametrize("key", ["a/.hidden", "other/x", "./other/x", "a//b"])
def test_other_keys_stay_selected(key: str) -> None:
    assert Selector(Selection(exclude=("**/keep/**",))).why_not(key, 1) is None
