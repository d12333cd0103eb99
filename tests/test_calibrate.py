"""``bench calibrate``: the pieces alone, a quick whole run, and a run without a C compiler.

Only functional assertions: figures are positive and consistent with each
other, files hold what was returned; no assertion on speed (the machine is
shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench.calibration import cli, measure, persist, render
from bench.results import FORMAT_KEY, FORMAT_VERSIONS, ResultsFileError

try:
    import bench.loadgen  # noqa: F401

    HAVE_LOADGEN = True
except ImportError:
    HAVE_LOADGEN = False


def _no_children_left() -> None:
    children = psutil.Process().children(recursive=True)
    assert children == [], f"processes left behind: {children}"


def _check_saved(result: dict, out: Path) -> None:
    saved = Path(result["saved_as"])
    assert saved.parent == out and saved.name != "latest.json"
    on_disk = json.loads(saved.read_text())
    assert on_disk == json.loads((out / "latest.json").read_text())
    assert persist.load_latest(out) == on_disk
    assert on_disk == {k: v for k, v in result.items() if k != "saved_as"}


@pytest.mark.needs_cc
@pytest.mark.slow
def test_quick_calibration_with_c_programs(tmp_path: Path) -> None:
    lines: list[str] = []
    result = measure.calibrate(tmp_path, quick=True, progress=lines.append)
    _no_children_left()
    assert result["quick"] and result["c_programs"]["available"]
    places = measure.placements()
    expected_points = {(clients, place.name) for clients, place in measure._echo_points(places)}
    assert {(r["clients"], r["placement"]) for r in result["echo"]} == expected_points
    for row in result["echo"]:
        assert "error" not in row, row
        assert row["rt_per_s"] > 0 and row["round_trips"] > 0 and row["errors"] == 0
        assert row["p50_us"] <= row["p99_us"]
    if HAVE_LOADGEN:
        assert {(r["clients"], r["placement"]) for r in result["generator"]} == expected_points
        c_by_point = {(r["clients"], r["placement"]): r for r in result["echo"]}
        for row in result["generator"]:
            assert "error" not in row, row
            c = c_by_point[(row["clients"], row["placement"])]
            assert row["c_rt_per_s"] == c["rt_per_s"]
            # each round's ratio is taken within the round; the row gives their median and range
            assert len(row["rounds"]) == len(c["rounds"]) == measure.QUICK_ROUNDS == result["rounds"]
            ratios = []
            for g_r, c_r in zip(row["rounds"], c["rounds"]):
                assert g_r["round"] == c_r["round"] and g_r["order"] == c_r["order"]
                ratios.append(g_r["rt_per_s"] / c_r["rt_per_s"])
                assert g_r["rt_ratio"] == pytest.approx(ratios[-1])
            assert row["rt_ratio"] == pytest.approx(float(np.median(ratios)))
            assert row["rt_ratio_range"] == pytest.approx([min(ratios), max(ratios)])
            # the order alternates: the C client first in round 1, last in round 2
            assert [r["order"] for r in row["rounds"]] == [
                "c then generator then python",
                "python then generator then c",
            ]
            assert row["engine"] == "native"  # the default engine where the C programs build
        # the python engine is measured in the same rounds, beside the same C client figures
        python_rows = result["generator_python"]
        assert {(r["clients"], r["placement"]) for r in python_rows} == expected_points
        assert all(r["engine"] == "python" and "error" not in r and r["rt_per_s"] > 0 for r in python_rows)
        goal = result["goal"]
        assert goal["verdict"] in ("PASS", "MISS")
        assert goal["reliable"] is False and "quick mode (0.3 s windows)" in goal["unreliable_because"]
    assert {r["placement"] for r in result["connect"]} == set(places)
    for row in result["connect"]:
        assert row["mode"] == "connect" and row["rt_per_s"] > 0
    assert result["bulk"]["tool"]
    assert all(p["gbit_per_s"] > 0 for p in result["bulk"]["points"])
    assert any("C client" in line for line in lines) and any("bulk" in line for line in lines)
    _check_saved(result, tmp_path)


@pytest.mark.slow
def test_without_a_compiler_c_parts_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    iperf3 = shutil.which("iperf3")
    if iperf3:  # keep iperf3 reachable; cc, gcc and clang are not
        (bin_dir / "iperf3").symlink_to(iperf3)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CC", raising=False)
    out = tmp_path / "out"
    result = measure.calibrate(out, quick=True)
    _no_children_left()
    assert result["c_programs"]["available"] is False
    assert "no C compiler" in result["c_programs"]["note"]
    assert any("no C compiler" in note for note in result["notes"])
    assert result["echo"] == [] and result["generator"] == [] and result["connect"] == []
    assert result["goal"]["verdict"] == "NOT MEASURED"
    assert result["bulk"]["points"] and all(p["gbit_per_s"] > 0 for p in result["bulk"]["points"])
    assert result["bulk"]["tool"].startswith("iperf") == bool(iperf3)
    _check_saved(result, out)


def test_python_bulk_pair(tmp_path: Path) -> None:
    place = next(iter(measure.placements().values()))
    r = measure.measure_bulk(place, 0.3, measure.PYTHON_BULK_TOOL)
    _no_children_left()
    assert r["bytes"] > 0 and r["duration_s"] > 0
    assert r["gbit_per_s"] == pytest.approx(r["bytes"] * 8 / r["duration_s"] / 1e9)


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")
def test_iperf3_bulk() -> None:
    place = next(iter(measure.placements().values()))
    assert measure.bulk_tool().startswith("iperf 3")
    r = measure.measure_bulk(place, 1.0, measure.bulk_tool())
    _no_children_left()
    assert r["gbit_per_s"] > 0 and r["bytes"] > 0


def _gen_row(clients: int, place: str, rt_ratio: float | None, p50_ratio: float | None) -> dict:
    return {"clients": clients, "placement": place, "rt_ratio": rt_ratio, "p50_ratio": p50_ratio}


@pytest.mark.parametrize(
    ("rt", "p50", "verdict"),
    [(0.95, 1.05, "PASS"), (0.85, 1.05, "MISS"), (0.95, 1.2, "MISS"), (None, 1.0, "NOT MEASURED")],
)
def test_goal_verdict(rt: float | None, p50: float | None, verdict: str) -> None:
    rows = [_gen_row(1, "split", 2.0, p50), _gen_row(1, "shared", 0.1, 9.0), _gen_row(100, "split", rt, 3.0)]
    for row in rows:
        row["n_rounds"] = measure.ROUNDS
    goal = measure.goal_verdict({"generator": rows})
    assert goal["verdict"] == verdict and goal["placement"] == "split"
    assert goal["rt_ratio_at_100"] == rt and goal["p50_ratio_at_1"] == p50
    assert goal["reliable"] == (verdict != "NOT MEASURED"), goal["unreliable_because"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"quick": True}, "quick mode"),
        ({"rounds": 1}, "1 round (at least 3 needed)"),
        ({"generator_bound": True}, "generator-bound"),
        ({"errors": 3}, "errors"),
        ({"busy": 40.0}, "busy machine (up to 40%"),
        ({"range": [0.85, 0.95]}, "both sides of the goal"),
    ],
)
def test_goal_is_not_reliable_when_a_flag_is_set(change: dict, reason: str) -> None:
    g100 = {
        "clients": 100,
        "placement": "split",
        "rt_ratio": 0.92,
        "rt_ratio_range": change.get("range", [0.91, 0.93]),
        "n_rounds": change.get("rounds", 3),
        "generator_bound": change.get("generator_bound", False),
        "errors": change.get("errors", 0),
        "busy_pct_before": change.get("busy", 1.0),
    }
    g1 = {"clients": 1, "placement": "split", "p50_ratio": 1.0, "p50_ratio_range": [0.98, 1.02], "n_rounds": 3}
    cal = {"generator": [g100, g1], "echo": [], "quick": change.get("quick", False)}
    goal = measure.goal_verdict(cal)
    assert goal["verdict"] == "PASS"  # the medians pass; whether to believe it is the other question
    assert goal["reliable"] is False and any(reason in why for why in goal["unreliable_because"])
    line = render.goal_line(goal)
    assert "PASS" in line and "NOT RELIABLE" in line and reason in line
    assert "rounds 0.8" in line or "rounds 0.9" in line  # the spread is printed


def test_combine_rounds_gives_median_range_and_keeps_failed_rounds() -> None:
    rounds = [
        {"round": 1, "rt_per_s": 10.0, "errors": 0, "label": "x r1", "busy_pct_before": 1.0},
        {"round": 2, "error": "boom", "label": "x r2", "busy_pct_before": 9.0},
        {"round": 3, "rt_per_s": 14.0, "errors": 2, "label": "x r3", "busy_pct_before": 0.0},
    ]
    row = measure.combine_rounds(rounds, ("rt_per_s",))
    assert row["rt_per_s"] == 12.0 and row["rt_per_s_range"] == [10.0, 14.0]
    assert row["n_rounds"] == 2 and row["failed_rounds"] == 1 and row["errors"] == 2
    assert row["busy_pct_before"] == 9.0 and row["label"] == "x" and row["rounds"] == rounds


def test_ratio_and_echo_ceiling() -> None:
    assert measure.ratio(90, 100) == pytest.approx(0.9)
    assert measure.ratio(None, 100) is None and measure.ratio(5, 0) is None
    cal = {
        "echo": [
            {"clients": 1, "placement": "split", "rt_per_s": 5.0},
            {"clients": 1, "placement": "shared", "error": "boom"},
        ]
    }
    assert persist.echo_ceiling(cal, 1)["rt_per_s"] == 5.0
    assert persist.echo_ceiling(cal, 1, "shared") is None
    assert persist.echo_ceiling(None, 1) is None


def test_load_latest_missing_or_corrupt(tmp_path: Path) -> None:
    assert persist.load_latest(tmp_path) is None
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(ResultsFileError, match="latest.json: not valid JSON"):
        persist.load_latest(tmp_path)
    assert persist.store_with_results(tmp_path, tmp_path) is None  # bench run goes on without a ceiling


def test_save_keeps_both_of_two_saves_in_one_second(tmp_path: Path) -> None:
    first = persist.save({FORMAT_KEY: FORMAT_VERSIONS["calibration"], "n": 1}, tmp_path)
    second = persist.save({FORMAT_KEY: FORMAT_VERSIONS["calibration"], "n": 2}, tmp_path)
    assert first != second and first.exists() and second.exists()
    assert persist.load_latest(tmp_path)["n"] == 2


def test_placements_are_distinct_cpus() -> None:
    places = measure.placements()
    shared = places["shared"]
    assert shared.server_cpus == shared.client_cpus
    if len(os.sched_getaffinity(0)) >= 2:
        split = places["split"]
        assert split.server_cpus.isdisjoint(split.client_cpus)


@pytest.mark.parametrize("cpus", [[0, 1], [0, 1, 2, 3], list(range(64))])
def test_placements_mean_what_bench_run_means(cpus: list[int]) -> None:
    from bench.placement import placement_cpus

    places = measure.placements(cpus)
    for name in ("split", "shared"):
        assert (set(places[name].server_cpus), set(places[name].client_cpus)) == placement_cpus(name, cpus)
    assert list(measure.placements([5])) == ["shared"]  # one CPU: nothing to split


def test_run_rejects_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--duration", "0"])
    assert cli.run(args) == 2
    assert "--duration" in capsys.readouterr().err


def test_render_prints_tables_and_goal(tmp_path: Path) -> None:
    from rich.console import Console

    cal = {
        "message_bytes": 1024,
        "echo": [{"clients": 1, "placement": "split", "rt_per_s": 17000.0, "p50_us": 55.0, "p99_us": 80.0}],
        "generator": [
            {
                "clients": 1,
                "placement": "split",
                "rt_per_s": 16000.0,
                "p50_us": 58.0,
                "rt_ratio": 16 / 17,
                "p50_ratio": 58 / 55,
                "gen_cpu_pct_max": 40.0,
                "loop": "uvloop",
            }
        ],
        "connect": [],
        "bulk": {"tool": "iperf 3.12", "points": [{"placement": "split", "gbit_per_s": 30.0}]},
        "placements": {"split": {"description": "server on CPU 0, client on CPU 1"}},
        "goal": {"verdict": "NOT MEASURED", "placement": "split"},
        "notes": ["a note"],
        "rounds": 3,
    }
    console = Console(record=True, width=100)
    render.render(cal, console)
    text = console.export_text()
    assert "17,000" in text and "16,000" in text and "0.94" in text and "30.0 Gbit/s" in text
    assert "NOT MEASURED" in text and "a note" in text and "iperf 3.12" in text
