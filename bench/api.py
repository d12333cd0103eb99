"""sockbench from Python: load a scenario, run it, read results as pandas DataFrames.

For notebooks and scripts; the command line is built on the same pieces.
The worked example is docs/api.md (a test runs its code)::

    from bench import api

    scenario = api.load_scenario("scenarios/quick.yaml", ["duration=2s", "repetitions=1"])
    results = api.run(scenario)                  # the same runs bench run makes
    results = api.load_results("results/20250101T120000Z-quick")   # or an earlier folder
    results.runs                                 # DataFrame: one row per run (bench columns)
    results.timeline                             # DataFrame: one row per sample
    results.summary                              # dict: summary.json's content
    results.histogram("threading-p0-r1")         # the run's latency HdrHistogram, or None

Error handling: :func:`load_scenario` raises :class:`bench.scenario.ScenarioError`
(its ``str()`` lists every problem with file, line and field);
:func:`load_results` raises :class:`bench.stats.NotAResultsFolder`; :func:`run`
raises :class:`bench.runner.ScenarioRefused` for a scenario this machine
cannot run and :class:`bench.runner.Interrupted` on Ctrl-C (the folder keeps
every finished run). Resource handling: every server and worker a run starts
is stopped and reaped before :func:`run` returns or raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from bench.scenario import Scenario, ScenarioError
from bench.scenario import load_scenario as _load_scenario
from bench.stats import NotAResultsFolder
from bench.stats import Results as _StatsResults
from bench.stats import load_results as _load_results
from bench.summary import summary_of

__all__ = ["Results", "load_scenario", "run", "load_results", "Scenario", "ScenarioError", "NotAResultsFolder"]


def load_scenario(path: str | Path, overrides: Sequence[str] = (), thresholds: Sequence[str] = ()) -> Scenario:
    """Read and validate a scenario file; ``overrides`` are ``--set`` texts (``"duration=2s"``),
    ``thresholds`` ``--threshold`` texts (``"p99 < 5ms"``)."""
    return _load_scenario(path, overrides, thresholds)


class Results:
    """One results folder: ``runs`` and ``timeline`` DataFrames, ``summary`` dict, histograms.

    ``runs`` has every column of runs.csv (``bench columns`` says what each
    means; empty cells are NaN), ``timeline`` every column of timeline.csv.
    ``summary`` is computed from the runs with today's analysis (the same
    shape as summary.json, thresholds included); ``stored_summary`` is
    summary.json as the run wrote it.
    """

    def __init__(self, results: _StatsResults):
        self._results = results

    def __repr__(self) -> str:
        return f"<sockbench Results {self.path}: {len(self.runs)} runs, models {', '.join(self.models)}>"

    @property
    def path(self) -> Path:
        return self._results.path

    @property
    def runs(self) -> pd.DataFrame:
        return self._results.runs

    @property
    def timeline(self) -> pd.DataFrame:
        return self._results.timeline

    @cached_property
    def summary(self) -> dict[str, Any]:
        return summary_of(self._results)

    @property
    def stored_summary(self) -> dict[str, Any]:
        return self._results.stored_summary

    @property
    def models(self) -> list[str]:
        return self._results.models

    @property
    def aggregate(self) -> pd.DataFrame:
        """One row per model and point: run counts and ``<metric>_<median|min|max|ci_low|...>``."""
        return self._results.aggregate

    def histogram(self, run: str | pd.Series | dict, kind: str = "latency") -> Any | None:
        """The HdrHistogram (``hdrh``) of one run, values in microseconds, or None if it was not saved.

        ``run`` is a ``run_id`` or a row of :attr:`runs`; ``kind`` is
        ``latency``, ``ttfb``, ``connect`` or ``latency_uncorrected``. Read a
        percentile with ``.get_value_at_percentile(99.9)``.
        """
        run_id = run if isinstance(run, str) else str(run["run_id"])
        if run_id not in set(self.runs["run_id"]):
            raise KeyError(
                f"no run {run_id!r} in {self.path}; runs: {', '.join(self.runs['run_id'][:5])}"
                + (" ..." if len(self.runs) > 5 else "")
            )
        return self._results.histogram(run_id, kind)

    def merged_histogram(self, model: str, point: int, kind: str = "latency") -> Any | None:
        """The sum of the histograms of every successful repetition of ``model`` at ``point``."""
        return self._results.merged_histogram(self._results.runs_at(model, point)["run_id"], kind)


def load_results(results_dir: str | Path) -> Results:
    """Read a results folder written by ``bench run`` (or :func:`run`)."""
    return Results(_load_results(results_dir))


def run(
    scenario: Scenario | str | Path,
    *,
    results_root: str | Path = "results",
    plots: bool = False,
    on_run: Callable[[Any, dict[str, Any], int, int], None] | None = None,
) -> Results:
    """Run ``scenario`` (a :class:`Scenario` or a path) as ``bench run`` does and return its results.

    The results folder is created under ``results_root``; ``plots`` also
    draws the figures and the report (slow; off by default in a notebook,
    where you draw your own). ``on_run(plan, row, done, total)`` is called
    after each run.
    """
    from bench.runner import run_scenario

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    folder = run_scenario(scenario, results_root=Path(results_root), on_run=on_run, plots=plots)
    return load_results(folder)
