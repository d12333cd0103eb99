"""bench compare: ratios and significance on result sets with known differences; mismatches refused."""

from __future__ import annotations

import argparse
import csv

import pytest

from bench.compare import ScenarioMismatch, add_compare_arguments, compare, compare_command
from fake_results import STABLE_NOISE, write_fake_results

MODELS = ("threading", "selectors", "asyncio")
SWEEP = ("clients", (1, 10, 50))


def _fake(path, **kw):
    kw.setdefault("models", MODELS)
    kw.setdefault("sweep", SWEEP)
    return write_fake_results(path, hlogs=False, timeline=False, summary=False, failed=False,
                              generator_bound=False, busy=False, **kw)


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
    assert faster["significant"].all()
    assert all(c.startswith("+25.0% better") for c in faster["change"])
    # closed loop: latency = clients / throughput, so p50 falls to 1/1.25
    assert _rows(result, "asyncio", "lat_p50_us")["ratio"].tolist() == pytest.approx([0.8] * 3)
    same = _rows(result, "selectors", "req_per_s")
    assert same["ratio"].tolist() == pytest.approx([1.0] * 3)
    assert not same["significant"].any()
    assert all(t.startswith("not significant") for t in same["test"])
    assert "Python 3.11.7 vs 3.12.1" in result.notes


def test_too_few_repetitions_are_not_tested(tmp_path, pair):
    single = _fake(tmp_path / "one", repetitions=1, throughput_scale=2.0)
    result = compare([pair[0], single])
    rows = _rows(result, "selectors", "req_per_s")
    # the single run is repetition 1, whose noise factor the baseline's median does not have
    assert rows["ratio"].tolist() == pytest.approx([2.0 * STABLE_NOISE[0]] * 3)
    assert rows["p_value"].isna().all() and not rows["significant"].any()
    assert all("too few repetitions to test (3 vs 1)" == t for t in rows["test"])


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
    assert "not significant" in printed and "1.250" in printed
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
