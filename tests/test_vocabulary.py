"""The vocabulary's constants are what every table, legend and warning says.

The labels are not compared with a copy of their text: the package is copied,
a threshold in ``bench/vocabulary.py`` is changed there, and the labels
produced by that copy must state the new numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import vocabulary
from bench.plots import figures
from bench.results import RUN_COLUMNS
from bench.stats import DEFAULT_METRICS

from fake_results import write_fake_results

ROOT = Path(__file__).resolve().parent.parent

_LABELS = """
import json, sys
from pathlib import Path

import pytest
from bench import vocabulary
from bench.plots.style import FLAGS
from bench.results import RUN_COLUMNS
from bench.stats import load_results
from bench.summary import summary_warnings
from bench.report import _table_html
results = load_results(Path(sys.argv[1]))
print(json.dumps({
    "legend": FLAGS["unstable"][0],
    "column": RUN_COLUMNS["generator_bound"],
    "warnings": summary_warnings(results),
    "table": _table_html(results, None),
    "flag_labels": vocabulary.FLAG_LABELS,
}))
"""


def _labels(tree: Path, folder: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _LABELS, str(folder)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_labels_print_the_constants(tmp_path):
    folder = tmp_path / "results"
    write_fake_results(folder)
    tree = tmp_path / "tree"
    tree.mkdir()
    for package in ("bench", "servers"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
    source = (tree / "bench" / "vocabulary.py").read_text()
    for old, new in (
        ("CV_THRESHOLD = 0.10", "CV_THRESHOLD = 0.12"),
        ("BUSY_THRESHOLD_PCT = 5.0", "BUSY_THRESHOLD_PCT = 4.0"),
        ("GENERATOR_BOUND_PCT = 90.0", "GENERATOR_BOUND_PCT = 85.0"),
    ):
        assert old in source, f"bench/vocabulary.py no longer says {old!r}: update this test"
        source = source.replace(old, new)
    (tree / "bench" / "vocabulary.py").write_text(source)

    before, after = _labels(ROOT, folder), _labels(tree, folder)
    assert "CV > 10%" in before["legend"] and "CV > 12%" in after["legend"]
    assert "> 90%" in before["column"] and "> 85%" in after["column"]
    assert "more than 10%" in before["table"] and "more than 12%" in after["table"]
    said, now = "\n".join(before["warnings"]), "\n".join(after["warnings"])
    assert "threshold 5%" in said and "threshold 4%" in now
    assert "> 90% of the window" in said and "> 85% of the window" in now
    assert "over 4% busy" in after["flag_labels"]["busy"]


def test_outcomes_have_one_owner():
    """runs.csv, the aggregated metrics and the connections figure all cover exactly the vocabulary's outcomes."""
    assert set(vocabulary.CONN_OUTCOMES) <= set(RUN_COLUMNS) and vocabulary.CONN_PENDING in RUN_COLUMNS
    assert set(vocabulary.CONN_OUTCOMES) <= set(DEFAULT_METRICS)
    drawn = [column for _name, columns, _colour, _hatch in figures.OUTCOMES for column in columns]
    assert sorted(drawn) == sorted([*vocabulary.CONN_OUTCOMES, vocabulary.CONN_PENDING])


def test_point_flags():
    row = {"n_failed": 0, "n_interrupted": 1, "n_generator_bound": 2, "unstable": True, "n_busy": 0}
    assert vocabulary.point_flags(row) == [vocabulary.FAILED, vocabulary.GENERATOR_BOUND, vocabulary.UNSTABLE]
    assert vocabulary.point_flags({"n_busy": 1, "n_failed": float("nan")}) == [vocabulary.BUSY]
    assert figures.row_flags(row) == [vocabulary.GENERATOR_BOUND, vocabulary.UNSTABLE, vocabulary.FAILED]
    joint = {"n_both_saturated": 2, "unstable": True}
    assert vocabulary.point_flags(joint) == [vocabulary.BOTH_SATURATED, vocabulary.UNSTABLE]
    assert figures.row_flags(joint) == [vocabulary.BOTH_SATURATED, vocabulary.UNSTABLE]


def _run_row(**overrides):
    """A runs.csv row of a split placement (server on CPU 0, generator on CPU 1), nobody short of CPU."""
    row = {
        "gen_busy_pct_max": 40.0,
        "gen_runq_wait_pct_max": 1.0,
        "server_cpu_pct": 50.0,
        "server_runq_wait_pct": 2.0,
        "server_cpus": "0",
        "gen_cpus": "1",
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({}, None),  # nobody short of CPU
        ({"gen_busy_pct_max": 97.0}, vocabulary.GENERATOR_BOUND),  # the generator flat out, the server idling
        ({"gen_busy_pct_max": 60.0, "gen_runq_wait_pct_max": 35.0}, vocabulary.GENERATOR_BOUND),  # kept off its CPU
        ({"gen_busy_pct_max": 97.0, "server_cpu_pct": 99.0}, vocabulary.BOTH_SATURATED),  # both flat out
        # the server waited for its CPU (another process on it): it had none to spare either
        ({"gen_busy_pct_max": 97.0, "server_cpu_pct": 60.0, "server_runq_wait_pct": 35.0}, vocabulary.BOTH_SATURATED),
        ({"gen_busy_pct_max": 97.0, "server_cpus": "0,1"}, vocabulary.BOTH_SATURATED),  # CPUs overlap
        # a server on two CPUs of its own is saturated at 90% of both, not of one
        (
            {"gen_busy_pct_max": 97.0, "server_cpu_pct": 150.0, "server_cpus": "0,1", "gen_cpus": "2,3"},
            vocabulary.GENERATOR_BOUND,
        ),
        (
            {"gen_busy_pct_max": 97.0, "server_cpu_pct": 185.0, "server_cpus": "0,1", "gen_cpus": "2,3"},
            vocabulary.BOTH_SATURATED,
        ),
        ({"gen_busy_pct_max": 97.0, "server_cpus": "0", "gen_cpus": "0"}, vocabulary.BOTH_SATURATED),  # shared
        ({"gen_busy_pct_max": 97.0, "server_cpus": "", "gen_cpus": ""}, vocabulary.BOTH_SATURATED),  # unpinned
        ({"gen_busy_pct_max": 97.0, "server_cpu_pct": None}, vocabulary.GENERATOR_BOUND),  # server not measured
        ({"gen_busy_pct_max": None}, None),  # an engine that does not measure its CPU
        ({"gen_busy_pct_max": 97.0, "server_cpus": 0.0, "gen_cpus": 1}, vocabulary.GENERATOR_BOUND),  # CSV numbers
    ],
)
def test_generator_limit_decides_from_both_sides(overrides, expected):
    row = _run_row(**overrides)
    assert vocabulary.run_generator_limit(row) == expected
    columns = vocabulary.limit_columns(row)
    assert columns == {
        "generator_bound": expected == vocabulary.GENERATOR_BOUND,
        "both_saturated": expected == vocabulary.BOTH_SATURATED,
    }


def test_the_thresholds_sit_at_their_edges():
    edge = vocabulary.GENERATOR_BOUND_PCT
    assert not vocabulary.generator_short_of_cpu(edge, 0.0) and vocabulary.generator_short_of_cpu(edge + 0.1, 0.0)
    wait = vocabulary.RUNQ_WAIT_BOUND_PCT
    assert not vocabulary.generator_short_of_cpu(wait, wait) and vocabulary.generator_short_of_cpu(wait + 1, wait + 1)
    server = vocabulary.SERVER_SATURATED_PCT
    assert vocabulary.server_saturated(server, 0.0, 1) and not vocabulary.server_saturated(server - 0.1, 0.0, 1)
    assert vocabulary.server_saturated(float("nan"), 0.0, 1) is None
    assert "both saturated" in vocabulary.FLAG_LABELS[vocabulary.BOTH_SATURATED]
    assert vocabulary.point_flags({"n_both_saturated": 1}) == [vocabulary.BOTH_SATURATED]
