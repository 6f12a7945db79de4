"""The controller's pure parts: cron slots, tenancy (I10), kstatus conditions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lethe.controller.config import parse_config
from lethe.controller.schedule import due_slot, next_run
from lethe.controller.status import conditions
from lethe.controller.tenancy import check_target
from lethe.spec import parse_policy


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_slot_due_within_deadline_runs_once() -> None:
    d = due_slot(schedule="0 3 * * *", tz="UTC", now=ts("2026-01-02T03:00:30"),
                 last_slot=None, since=ts("2026-01-01T00:00:00"), deadline=300)
    assert d.slot == "2026-01-02T03:00:00Z" and d.missed == 1
    again = due_slot(schedule="0 3 * * *", tz="UTC", now=ts("2026-01-02T03:01:00"),
                     last_slot=d.slot, since=ts("2026-01-01T00:00:00"), deadline=300)
    assert again.slot is None and again.missed == 0


def test_slot_beyond_deadline_is_missed_not_run_late() -> None:
    d = due_slot(schedule="0 3 * * *", tz="UTC", now=ts("2026-01-02T05:00:00"),
                 last_slot="2026-01-01T03:00:00Z", since=0, deadline=300)
    assert d.slot is None and d.missed == 1 and d.last_missed == "2026-01-02T03:00:00Z"


def test_new_policy_does_not_run_past_slots() -> None:
    d = due_slot(schedule="*/5 * * * *", tz="UTC", now=ts("2026-01-02T03:02:00"),
                 last_slot=None, since=ts("2026-01-02T03:01:00"), deadline=300)
    assert d.slot is None and d.missed == 0


def test_time_zone_of_the_schedule() -> None:
    nxt = next_run(schedule="0 3 * * *", tz="Europe/Berlin", now=ts("2026-07-01T00:00:00"))
    assert nxt.astimezone(dt.UTC).hour == 1  # 03:00 CEST is 01:00 UTC


def _policy(path: str, ns: str = "team") -> object:
    return parse_policy({"kind": "RetentionPolicy", "metadata": {"name": "p", "namespace": ns},
                         "spec": {"target": {"posix": {"path": path}},
                                  "rules": {"maxAge": "1d"}}})


def test_tenancy_roots_symlinks_and_data_dir(tmp_path: Path) -> None:
    root, data = tmp_path / "data", tmp_path / "state"
    (root / "media").mkdir(parents=True)
    data.mkdir()
    (root / "escape").symlink_to(tmp_path)
    cfg = parse_config(["--allowed-roots", str(root), "--data-dir", str(data),
                        "--namespace-roots", f"media={root / 'media'}"], env={})
    assert check_target(policy=_policy(str(root / "logs")), config=cfg) is None  # type: ignore[arg-type]
    assert "outside" in check_target(policy=_policy("/etc"), config=cfg)  # type: ignore[arg-type,operator]
    assert "outside" in check_target(policy=_policy(f"{root}/../other"), config=cfg)  # type: ignore[arg-type,operator]
    assert check_target(policy=_policy(str(root / "escape")), config=cfg)  # type: ignore[arg-type]
    assert check_target(policy=_policy(str(root / "media/x"), "media"), config=cfg) is None  # type: ignore[arg-type]
    assert "namespace" in check_target(policy=_policy(str(root / "logs"), "media"), config=cfg)  # type: ignore[arg-type,operator]
    cfg2 = parse_config(["--allowed-roots", str(tmp_path), "--data-dir", str(data)], env={})
    assert "data directory" in check_target(policy=_policy(str(data / "raft")), config=cfg2)  # type: ignore[arg-type,operator]


@pytest.mark.parametrize(("kw", "ready", "stalled"), [
    ({}, "True", "False"),
    ({"reconciling": "run x"}, "False", "False"),
    ({"stalled": ("SafetyBrake", "too many")}, "False", "True"),
])
def test_conditions_follow_kstatus(kw: dict[str, object], ready: str, stalled: str) -> None:
    cs = {c["type"]: c for c in conditions(previous=None, generation=4, now=0.0, **kw)}  # type: ignore[arg-type]
    assert cs["Ready"]["status"] == ready and cs["Stalled"]["status"] == stalled
    assert all(c["observedGeneration"] == 4 for c in cs.values())


def test_transition_time_moves_only_on_change() -> None:
    first = conditions(previous=None, generation=1, now=100.0)
    same = conditions(previous=first, generation=2, now=200.0)
    assert [c["lastTransitionTime"] for c in same] == [c["lastTransitionTime"] for c in first]
    flipped = conditions(previous=first, generation=2, now=200.0, stalled=("X", "y"))
    ready = next(c for c in flipped if c["type"] == "Ready")
    assert ready["lastTransitionTime"] != first[0]["lastTransitionTime"]
