"""bench compare: ratios and significance on result sets with known differences; mismatches refused."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import yaml
from scipy.stats import ttest_ind

from bench.compare import ScenarioMismatch, add_compare_arguments, compare, compare_command, holm_adjust

from fake_results import STABLE_NOISE, write_fake_results

MODELS = ("threading", "selectors", "asyncio")
SWEEP = ("clients", (1, 10, 50))


def _fake(path, **kw):
    kw.setdefault("models", MODELS)
    kw.setdefault("sweep", SWEEP)
    return write_fake_results(
        path, hlogs=False, timeline=False, summary=False, failed=False, generator_bound=False, busy=False, **kw
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    a = _fake(root / "a")
    b = _fake(root / "b", throughput_scale={"asyncio": 1.25}, python_version="3.12.1")
    return a, b


def _rows(result, model, metric):
    t = result.table
    return t[(t["model"] == model) & (t["metric"] == metric)]


def test_ratios_match_the_known_differences(pair):
    result = compare(list(pair))
    assert result.labels == ["Python 3.11.7", "Python 3.12.1"]
    faster = _rows(result, "asyncio", "req_per_s")
    assert len(faster) == len(SWEEP[1])
    assert faster["ratio"].tolist() == pytest.approx([1.25] * 3)
    assert faster["significant"].all() and (faster["p_holm"] < 0.05).all()
    assert all(c.startswith("+25.0% better") for c in faster["change"])
    family = int(result.table["tested"].sum())
    assert family == len(result.table) == 27 and (result.table["family"] == family).all()
    assert all(
        t.startswith("significant: Welch t-test of means of req/s, 3 vs 3 runs,") and f"over {family} tests" in t
        for t in faster["test"]
    )
    # closed loop: latency = clients / throughput, so p50 falls to 1/1.25
    assert _rows(result, "asyncio", "lat_p50_us")["ratio"].tolist() == pytest.approx([0.8] * 3)
    same = _rows(result, "selectors", "req_per_s")
    assert same["ratio"].tolist() == pytest.approx([1.0] * 3)
    assert not same["significant"].any()
    assert all(t.startswith("not significant") for t in same["test"])
    assert not [c for c in result.table["change"] if c.endswith(("better", "worse")) and "(" in c]
    assert "Python 3.11.7 vs 3.12.1" in result.notes


def test_too_few_repetitions_are_not_tested(tmp_path, pair):
    single = _fake(tmp_path / "one", repetitions=1, throughput_scale=2.0)
    result = compare([pair[0], single])
    rows = _rows(result, "selectors", "req_per_s")
    # the single run is repetition 1, whose noise factor the baseline's mean does not have
    assert rows["ratio"].tolist() == pytest.approx([2.0 * STABLE_NOISE[0] / np.mean(STABLE_NOISE[:3])] * 3)
    assert rows["p_value"].isna().all() and not rows["significant"].any() and not rows["tested"].any()
    assert all(t == "untested: 3 vs 1 runs, the test needs 2 on each side" for t in rows["test"])
    # a doubling nobody could test is not called better
    assert all(c.endswith("(untested)") and "better" not in c for c in rows["change"])
    assert "repetitions: 3 vs 1" in result.notes


def test_different_points_are_refused_naming_the_difference(tmp_path, pair):
    other = _fake(tmp_path / "pts", sweep=("clients", (1, 10, 20)))
    with pytest.raises(ScenarioMismatch, match="points differ") as info:
        compare([pair[0], other])
    assert "clients=50" in str(info.value) and "clients=20" in str(info.value) and "--force" in str(info.value)
    forced = compare([pair[0], other], force=True)
    assert set(forced.table["point_label"]) == {"clients=1", "clients=10"}
    assert forced.mismatches


def test_different_service_or_sweep_is_refused(tmp_path, pair):
    files = _fake(tmp_path / "file", service="file")
    with pytest.raises(ScenarioMismatch, match="service differs: echo vs file"):
        compare([pair[0], files])
    backlog = _fake(tmp_path / "backlog", sweep=("backlog", (1, 5, 128)))
    with pytest.raises(ScenarioMismatch, match="swept parameters differ: clients vs backlog"):
        compare([pair[0], backlog])


def test_fixed_parameter_difference_is_allowed_and_labels_the_sets(tmp_path):
    a = _fake(tmp_path / "b5", backlog=5)
    b = _fake(tmp_path / "b128", backlog=128)
    result = compare([a, b])
    assert result.labels == ["backlog=5", "backlog=128"]
    assert "backlog: 5 vs 128" in result.notes


def test_compare_command_writes_table_and_figures(tmp_path, pair, capsys):
    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    out = tmp_path / "out"
    status = compare_command(parser.parse_args([str(pair[0]), str(pair[1]), "--output", str(out), "--format", "png"]))
    assert status == 0
    printed = capsys.readouterr().out
    assert "not significant" in printed and "1.250" in printed and "Holm-corrected over the 27 tests" in printed
    with open(out / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    asyncio_rps = [r for r in rows if r["model"] == "asyncio" and r["metric"] == "req_per_s"]
    assert [round(float(r["ratio"]), 6) for r in asyncio_rps] == [1.25] * 3
    for name in ("throughput", "latency", "ratios"):
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_compare_command_refuses_mismatch_with_a_clear_message(tmp_path, pair, capsys):
    files = _fake(tmp_path / "file", service="file")
    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    assert compare_command(parser.parse_args([str(pair[0]), str(files), "-o", str(tmp_path / "x")])) == 2
    err = capsys.readouterr().err
    assert "service differs" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_two_services_are_matched_point_by_point(tmp_path):
    kw = dict(models=("threading", "forking"), sweep=None, service=("echo", "file"))
    a = _fake(tmp_path / "qa", **kw)
    b = _fake(tmp_path / "qb", throughput_scale={"forking": 0.5}, **kw)
    result = compare([a, b])
    forking = result.table[result.table["model"] == "forking"]
    assert set(forking["point_label"]) == {"echo", "file"}
    assert set(forking[forking["service"] == "echo"]["metric"]) == {"req_per_s", "lat_p50_us", "lat_p99_us"}
    file_mb = forking[(forking["service"] == "file") & (forking["metric"] == "mb_per_s")]
    assert file_mb["ratio"].tolist() == pytest.approx([0.5])
    assert {"throughput_echo", "throughput_file", "ratios_echo", "ratios_file"} <= set(result.figures())


def test_holm_keeps_false_positives_at_five_percent_when_nothing_changed():
    # 72 tests of identical sets (many-clients size): uncorrected, ~3.6 fall under 0.05 by chance.
    rng = np.random.default_rng(7)
    raw_hits = holm_hits = 0
    for _ in range(200):
        ps = ttest_ind(rng.normal(100, 5, (72, 3)), rng.normal(100, 5, (72, 3)), axis=1, equal_var=False).pvalue
        ps = [float(p) for p in ps]
        raw_hits += sum(p < 0.05 for p in ps)
        holm_hits += any(p < 0.05 for p in holm_adjust(ps))
    assert raw_hits / 200 > 1.5  # what compare printed before: several "significant" per comparison
    assert holm_hits / 200 <= 0.08  # family-wise error rate kept near 5%


def test_holm_adjust_matches_the_textbook_steps():
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_differing_settings_are_named(tmp_path, pair):
    other = _fake(tmp_path / "long")
    scenario = yaml.safe_load((other / "scenario.yaml").read_text())
    scenario["duration_s"] = 10.0
    (other / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    env = json.loads((other / "environment.json").read_text())
    env["placement"]["policy"] = "none"
    env["packages"]["psutil"] = "6.0.0"
    (other / "environment.json").write_text(json.dumps(env))
    notes = compare([pair[0], other]).notes
    for expected in ("duration: 5 s vs 10 s", "placement: split vs none", "psutil: 5.9.8 vs 6.0.0"):
        assert expected in notes, notes
