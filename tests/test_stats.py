"""Repetition statistics, aggregation, summary.json and the results-folder reader."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.results import FORMAT_KEY, FORMAT_VERSIONS, RUN_COLUMNS
from bench.stats import (
    NotAResultsFolder,
    aggregate,
    ci_label,
    load_results,
    median_ci,
    summarize_point,
)
from bench.summary import build_summary, summary_of, summary_warnings, write_summary

from fake_results import write_fake_results

MODELS = ("sequential", "threading", "forking", "c-reference")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_results(
        tmp_path_factory.mktemp("stats") / "r", models=MODELS, sweep=("clients", (1, 10, 50)), hlogs=False
    )


# --------------------------------------------------------------------------
# summarize_point


def test_median_min_max_cv_of_known_values():
    s = summarize_point([10.0, 12.0, 11.0])
    assert (s["n"], s["median"], s["min"], s["max"]) == (3, 11.0, 10.0, 12.0)
    assert s["cv"] == pytest.approx(1.0 / 11.0)  # sample std 1, mean 11
    assert s["unstable"] is False
    assert s["ci_low"] <= 11.0 <= s["ci_high"]
    assert 10.0 <= s["ci_low"] and s["ci_high"] <= 12.0


def test_cv_above_ten_percent_is_unstable():
    s = summarize_point([70.0, 100.0, 130.0])
    assert s["cv"] == pytest.approx(0.3)
    assert s["unstable"] is True


def test_no_ci_below_three_values_and_it_says_so():
    s = summarize_point([5.0, 7.0])
    assert s["ci_low"] is None and s["ci_high"] is None
    assert "no confidence interval" in s["note"]
    assert s["median"] == 6.0 and s["cv"] is not None
    one = summarize_point([5.0])
    assert one["cv"] is None and one["ci_low"] is None and one["unstable"] is False


def test_nan_values_are_ignored_and_empty_gives_nothing():
    s = summarize_point([1.0, float("nan"), 3.0, 2.0])
    assert s["n"] == 3 and s["median"] == 2.0
    empty = summarize_point([float("nan")])
    assert empty["n"] == 0 and empty["median"] is None and "no successful" in empty["note"]


def test_ci_at_three_repetitions_is_the_range_and_says_75_percent():
    s = summarize_point([10.0, 12.0, 11.0])
    assert (s["ci_low"], s["ci_high"]) == (10.0, 12.0)
    assert s["ci_level"] == pytest.approx(0.75)  # 1 - 2 * 0.5**3
    assert "75% CI" in s["note"] and "6 repetitions" in s["note"]
    assert summarize_point([1.0, 2.0, 3.0, 4.0])["ci_level"] == pytest.approx(0.875)


@pytest.mark.parametrize("n", [6, 9, 12, 30, 101])
def test_order_statistic_ci_reaches_95_percent_and_its_coverage_is_real(n):
    # Level from the binomial; coverage checked by simulation on a skewed distribution.
    from scipy.stats import binom

    lo, hi, level = median_ci(np.arange(float(n)))
    k = int(lo) + 1
    assert level >= 0.95 and hi == n - k
    assert 1.0 - 2.0 * binom.cdf(k, n, 0.5) < 0.95 or k == (n + 1) // 2  # the narrowest such interval
    rng = np.random.default_rng(1)
    samples = rng.exponential(size=(4000, n))
    true_median = np.log(2.0)
    lows, highs = np.sort(samples, axis=1)[:, k - 1], np.sort(samples, axis=1)[:, n - k]
    coverage = np.mean((lows <= true_median) & (true_median <= highs))
    assert coverage == pytest.approx(level, abs=0.02)


def test_ci_is_reproducible_and_narrower_than_the_range_with_many_values():
    values = list(np.arange(1.0, 31.0))
    a, b = summarize_point(values), summarize_point(values)
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])
    assert 1.0 < a["ci_low"] < 15.5 < a["ci_high"] < 30.0
    assert a["ci_level"] >= 0.95 and a["note"] == ""


def test_ci_label_prints_the_level():
    assert ci_label(0.75) == "75% CI" and ci_label(0.96875) == "96.9% CI"


def test_identical_values_give_a_point_interval():
    s = summarize_point([4.0, 4.0, 4.0])
    assert (s["ci_low"], s["ci_high"], s["cv"]) == (4.0, 4.0, 0.0)


# --------------------------------------------------------------------------
# aggregate and summary


def _row(agg: pd.DataFrame, model: str, point: int) -> pd.Series:
    rows = agg[(agg["model"] == model) & (agg["point"] == point)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_aggregate_counts_runs_and_flags(fake):
    runs = load_results(fake).runs
    agg = aggregate(runs)
    assert len(agg) == len(MODELS) * 3
    forking = _row(agg, "forking", 2)
    assert (forking["n_runs"], forking["n_ok"], forking["n_failed"]) == (3, 2, 1)
    assert any("Too many open files" in e for e in forking["errors"])
    assert forking["req_per_s_n"] == 2 and pd.isna(forking["req_per_s_ci_low"])
    assert _row(agg, "c-reference", 2)["n_generator_bound"] == 1
    assert _row(agg, "c-reference", 1)["n_generator_bound"] == 0
    threading = _row(agg, "threading", 2)
    assert threading["unstable"] and "req_per_s" in threading["unstable_metrics"]
    assert not _row(agg, "threading", 1)["unstable"]
    assert _row(agg, "sequential", 0)["n_busy"] == 1
    assert list(agg["model"].unique()) == list(MODELS)  # registry order


def test_aggregate_median_is_the_middle_repetition(fake):
    runs = load_results(fake).runs
    agg = aggregate(runs)
    rows = runs[(runs["model"] == "threading") & (runs["point"] == 1)].sort_values("req_per_s")
    middle = rows["req_per_s"].iloc[1]
    row = _row(agg, "threading", 1)
    assert row["req_per_s_median"] == middle
    assert row["req_per_s_min"] == rows["req_per_s"].iloc[0]
    assert row["req_per_s_max"] == rows["req_per_s"].iloc[2]
    assert row["clients"] == 10 and row["label"] == "clients=10"


def test_summary_has_version_points_and_warnings(fake):
    summary = build_summary(fake)
    assert summary[FORMAT_KEY] == FORMAT_VERSIONS["summary.json"]
    assert summary["swept"] == ["clients"] and summary["x"] == "clients"
    assert len(summary["points"]) == len(MODELS) * 3
    assert summary["runs"]["failed"] == 1 and summary["runs"]["generator_bound"] == 1
    kinds = {w.split(":", 1)[0] for w in summary["warnings"]}
    assert {"generator-bound", "unstable", "failed", "busy machine", "no confidence interval"} <= kinds
    failed = [w for w in summary["warnings"] if w.startswith("failed")]
    assert "forking-p2-r2" in failed[0] and "Too many open files" in failed[0]
    point = next(p for p in summary["points"] if p["model"] == "threading" and p["point"] == 2)
    assert point["unstable"] and point["metrics"]["req_per_s"]["cv"] > 0.10


def test_write_summary_is_atomic_valid_json(fake):
    path = write_summary(fake)
    assert path == fake / "summary.json"
    data = json.loads(path.read_text())  # allow_nan=False when written: strict JSON
    assert data[FORMAT_KEY] == FORMAT_VERSIONS["summary.json"]
    assert not [p for p in fake.iterdir() if p.name.endswith(".tmp")]


def test_no_busy_warning_on_an_idle_machine(tmp_path):
    folder = write_fake_results(
        tmp_path / "r",
        models=("selectors",),
        sweep=("clients", (1, 10)),
        busy=False,
        failed=False,
        generator_bound=False,
        unstable=False,
        hlogs=False,
        timeline=False,
    )
    assert summary_warnings(load_results(folder)) == []


def test_load_results_rejects_what_is_not_a_results_folder(tmp_path):
    with pytest.raises(NotAResultsFolder, match="not a folder"):
        load_results(tmp_path / "missing")
    with pytest.raises(NotAResultsFolder, match="no runs.csv"):
        load_results(tmp_path)


def test_load_results_tolerates_missing_columns_and_files(tmp_path):
    v = FORMAT_VERSIONS["runs.csv"]
    (tmp_path / "runs.csv").write_text(
        "run_id,model,service,point,repetition,status,clients,req_per_s,format_version\n"
        f"a-p0-r1,asyncio,echo,0,1,ok,5,100,{v}\n"
        f"a-p0-r2,asyncio,echo,0,2,ok,5,120,{v}\n"
    )
    results = load_results(tmp_path)
    assert results.timeline.empty and results.environment == {} and results.histogram("a-p0-r1", "latency") is None
    row = results.aggregate.iloc[0]
    assert row["req_per_s_median"] == 110 and pd.isna(row["lat_p99_us_median"])
    assert summary_of(results)["points"][0]["metrics"]["lat_p99_us"]["note"].startswith("not measured")


def test_several_services_label_points_with_their_service(tmp_path):
    folder = write_fake_results(
        tmp_path / "q",
        models=("sequential", "asyncio"),
        sweep=None,
        service=("echo", "file"),
        repetitions=2,
        hlogs=False,
        timeline=False,
    )
    results = load_results(folder)
    assert results.services == ["echo", "file"]
    assert set(results.aggregate["label"]) == {"echo", "file"}
    assert [v.facet for v in results.facets()] == ["echo", "file"]
    assert set(results.subset("file").runs["service"]) == {"file"}


def test_column_descriptions_say_what_the_numbers_are():
    # duration_s is the scheduled window (requests are counted by completion time inside it), not a measurement
    assert "achieved" not in RUN_COLUMNS["duration_s"] and "as scheduled" in RUN_COLUMNS["duration_s"]
    # open-loop latency runs from the scheduled start, not from the (possibly late) send
    assert "open loop: scheduled start" in RUN_COLUMNS["lat_p50_us"]


# --------------------------------------------------------------------------
# Latencies that are only lower bounds


def test_median_is_a_lower_bound_only_when_a_bound_can_move_it():
    from bench.stats import median_is_lower_bound

    assert not median_is_lower_bound([1.0, 2.0, 3.0], [False, False, False])
    assert not median_is_lower_bound([1.0, 2.0, 9.0], [False, False, True])  # above the median: cannot move it
    assert median_is_lower_bound([1.0, 2.0, 9.0], [False, True, False])
    assert median_is_lower_bound([5.0, 5.0, 5.0], [True, True, True])
    assert not median_is_lower_bound([float("nan"), 2.0], [True, False])


def test_lower_bounds_and_unserved_clients_reach_the_aggregate_and_summary(tmp_path):
    folder = write_fake_results(
        tmp_path / "r",
        models=("sequential", "asyncio"),
        sweep=("clients", (1, 100)),
        hlogs=False,
        timeline=False,
        lower_bound_p99=True,
    )
    results = load_results(folder)
    agg = results.aggregate.set_index(["model", "clients"])
    assert agg.loc[("asyncio", 100), "lat_p99_us_lower_bound"]
    assert not agg.loc[("asyncio", 1), "lat_p99_us_lower_bound"]
    assert agg.loc[("sequential", 100), "lat_max_us_lower_bound"]
    assert agg.loc[("sequential", 100), "clients_served_median"] == 1
    point = next(
        p for p in summary_of(results)["points"] if p["model"] == "asyncio" and p["parameters"]["clients"] == 100
    )
    assert point["metrics"]["lat_p99_us"]["lower_bound"] is True
    text = " ".join(summary_warnings(results))
    assert "latency lower bounds: sequential at clients=100 (p999, max); asyncio at clients=100 (p99)" in text
    assert "clients not served: sequential" in text and "served 1/100" in text


def _with_limit_facts(folder, **facts):
    """Give the generator-bound run of a fake folder (c-reference at the last point, repetition 1) these facts."""
    path = folder / "runs.csv"
    runs = pd.read_csv(path)
    runs["server_cpus"] = runs["server_cpus"].astype(object)
    runs["gen_cpus"] = runs["gen_cpus"].astype(object)
    bound = runs["generator_bound"] == True  # noqa: E712
    assert bound.sum() == 1
    for col, value in facts.items():
        runs.loc[bound, col] = value
    runs.to_csv(path, index=False)
    return runs.loc[bound, "run_id"].iloc[0]


def test_generator_bound_and_both_saturated_are_decided_again_on_load(tmp_path, monkeypatch):
    """runs.csv says generator-bound; its facts say the server was flat out too: the folder reads both saturated."""
    from bench import vocabulary
    from bench.cli import _summary_rows
    from bench.findings import compute_findings
    from bench.report import _flag_tags

    folder = write_fake_results(tmp_path / "r", models=MODELS, sweep=("clients", (1, 10, 50)), hlogs=False)
    facts = dict(gen_busy_pct_max=97.0, gen_runq_wait_pct_max=2.0, server_cpu_pct=95.0, server_runq_wait_pct=1.0)
    run_id = _with_limit_facts(folder, **facts, server_cpus="0", gen_cpus="1")
    results = load_results(folder)
    run = results.runs.set_index("run_id").loc[run_id]
    assert run["both_saturated"] is True and run["generator_bound"] is False
    ref = _row(results.aggregate, "c-reference", 2)
    assert (ref["n_both_saturated"], ref["n_generator_bound"]) == (1, 0)
    summary = summary_of(results)
    assert summary["runs"]["both_saturated"] == 1 and summary["runs"]["generator_bound"] == 0
    joint = [w for w in summary["warnings"] if w.startswith("both saturated:")]
    assert len(joint) == 1 and "c-reference at clients=50 (1 of 3 runs)" in joint[0]
    assert not any(w.startswith("generator-bound:") for w in summary["warnings"])
    assert (vocabulary.BOTH_SATURATED, "both saturated 1/3") in _flag_tags(ref)
    cells = next(r for r in _summary_rows(folder) if r["model"] == "c-reference" and r["point"] == "clients=50")
    assert "both saturated" in cells["flags"] and "generator-bound" not in cells["flags"]
    said = " ".join(f.text for f in compute_findings(results))
    assert "both saturated in 1 of its runs: a joint limit" in said, said

    # the same facts under another threshold: the rule is applied when the folder is read, not when it was written
    monkeypatch.setattr(vocabulary, "SERVER_SATURATED_PCT", 99.0)
    again = load_results(folder).runs.set_index("run_id").loc[run_id]
    assert again["generator_bound"] is True and again["both_saturated"] is False


def test_a_server_with_cpu_to_spare_leaves_the_run_generator_bound(tmp_path):
    folder = write_fake_results(tmp_path / "r", models=MODELS, sweep=("clients", (1, 10, 50)), hlogs=False)
    run_id = _with_limit_facts(
        folder, gen_busy_pct_max=97.0, gen_runq_wait_pct_max=2.0, server_cpu_pct=45.0, server_cpus="0", gen_cpus="1"
    )
    run = load_results(folder).runs.set_index("run_id").loc[run_id]
    assert run["generator_bound"] is True and run["both_saturated"] is False


@pytest.mark.parametrize(("engine", "advised"), [("native", False), ("python", True)])
def test_the_limit_warnings_advise_the_native_engine_only_where_it_did_not_measure(tmp_path, engine, advised):
    folder = write_fake_results(tmp_path / "r", models=MODELS, sweep=("clients", (1, 10, 50)), hlogs=False)
    _with_limit_facts(
        folder, gen_busy_pct_max=97.0, gen_runq_wait_pct_max=2.0, server_cpu_pct=95.0, server_runq_wait_pct=1.0
    )
    path = folder / "runs.csv"
    runs = pd.read_csv(path)
    runs["gen_engine"] = engine
    runs.to_csv(path, index=False)
    (joint,) = [w for w in summary_warnings(load_results(folder)) if w.startswith("both saturated:")]
    assert ("native engine" in joint) is advised, joint
