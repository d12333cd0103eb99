"""The time estimate: computed from the overheads recorded on this machine, learned, and robust to a bad file."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bench.estimate import (
    DEFAULT_FINISH_FIXED_S,
    DEFAULT_FINISH_PER_RUN_S,
    DEFAULT_OVERHEAD_S,
    KEEP,
    VERSION,
    History,
    estimate,
    fmt_duration,
)


def plans(*models: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(model=m) for m in models]


def test_estimate_adds_the_recorded_overheads_idle_waits_and_finish_stage(tmp_path):
    history = History(path=tmp_path / "t.json")
    for overhead in (1.0, 2.0, 9.0):  # median 2.0: one slow stop does not move it
        history.record_run("forking", overhead, idle_wait_s=0.0)
    history.record_run("threading", 0.5, idle_wait_s=6.0)
    history.record_finish(runs=10, seconds=30.0)  # 3 s per run
    est = estimate(
        plans("forking", "threading", "asyncio"),
        warmup_s=0.5,
        duration_s=2.0,
        plots=True,
        history=history,
        idle_wait_max_s=20.0,
    )
    assert est.measuring_s == pytest.approx(3 * 2.5)
    # asyncio has no history of its own: the median of every recorded run (1.0, 2.0, 9.0, 0.5) = 1.5
    assert est.overhead_s == pytest.approx(2.0 + 0.5 + 1.5)
    assert est.idle_wait_s == pytest.approx(3 * 6.0 / 4)  # the mean wait per run
    assert est.finish_s == pytest.approx(3 * 3.0)
    assert est.total_s == pytest.approx(7.5 + 4.0 + 4.5 + 9.0)
    assert est.learned and "from the last runs" in est.text() and "up to 20 s" in est.text()
    # the idle waits no history foresees: the bound for CPUs that stay busy, said beside the estimate
    assert est.worst_s == pytest.approx(est.total_s - 4.5 + 3 * 20.0)
    assert f"up to {fmt_duration(est.worst_s)} if the CPUs stay busy" in est.text()
    assert "stay busy" not in estimate(plans("forking"), 0.5, 2.0, plots=True, history=history).text()
    assert estimate(plans("forking"), 0.5, 2.0, plots=False, history=history).finish_s == 0


def test_without_a_history_the_defaults_are_used_and_said(tmp_path):
    est = estimate(plans("threading", "selectors"), 1.0, 1.0, plots=True, history=History.load(tmp_path / "none.json"))
    assert est.overhead_s == 2 * DEFAULT_OVERHEAD_S and est.idle_wait_s == 0
    assert est.finish_s == DEFAULT_FINISH_FIXED_S + 2 * DEFAULT_FINISH_PER_RUN_S
    assert not est.learned and "first guess" in est.text()


def test_history_round_trips_and_stays_bounded(tmp_path):
    path = tmp_path / "cache" / "timings.json"
    history = History.load(path)
    for i in range(KEEP + 10):
        history.record_run("selectors", float(i), idle_wait_s=0.1)
    history.record_finish(22, 12.5)
    assert history.save() == ""
    data = json.loads(path.read_text())
    assert data["version"] == VERSION and len(data["overhead_s"]["selectors"]) == KEEP
    again = History.load(path)
    assert again.overhead_s["selectors"][-1] == KEEP + 9 and again.finish == [[22.0, 12.5]] and not again.note
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"version": 99}),
        json.dumps([1, 2]),
        json.dumps({"version": VERSION, "overhead_s": {"x": ["slow"]}}),
        json.dumps({"version": VERSION, "idle_wait_s": [-5]}),
    ],
)
def test_a_corrupted_history_is_ignored_with_a_note_and_replaced(tmp_path, content):
    path = tmp_path / "timings.json"
    path.write_text(content)
    history = History.load(path)
    assert "ignored" in history.note and str(path) in history.note
    assert not history.learned
    history.record_run("threading", 1.0, 0.0)
    assert history.save() == "" and History.load(path).overhead_s == {"threading": [1.0]}


def test_an_unwritable_history_costs_a_note_not_a_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    note = History(path=blocker / "sub" / "timings.json").save()
    assert "not saved" in note


def test_durations_read_as_people_say_them():
    assert [fmt_duration(s) for s in (0, 0.2, 4.4, 65, 3725)] == ["0 s", "0.2 s", "4 s", "1 min 05 s", "1 h 02 min"]
