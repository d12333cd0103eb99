"""Every file of a results folder carries its format version under one key, and a reader refuses any other.

A folder is written the real way (:class:`bench.results.ResultsWriter`,
:func:`bench.environment.collect_environment`, :func:`bench.summary.write_summary`,
:func:`bench.calibration.persist.store_with_results`); then one file at a
time is given another version, no version, or the layout it had before
files were versioned, and the error must name that file and both versions.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from bench.calibration.persist import RESULTS_COPY, load_stored, save, store_with_results
from bench.environment import collect_environment
from bench.histograms import new_histogram
from bench.report import add_report_arguments, report_command
from bench.results import (
    FORMAT_KEY,
    FORMAT_VERSIONS,
    FormatVersionError,
    ResultsWriter,
    hlog_comment,
    read_calibration,
    read_hlog,
)
from bench.stats import NotAResultsFolder, load_results
from bench.summary import write_summary


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "r"
    folder.mkdir()
    writer = ResultsWriter(folder, n_cpus=2)
    writer.write_json("environment.json", collect_environment({"policy": "split"}))
    hist = new_histogram()
    for v in (80, 90, 120):
        hist.record_value(v)
    for rep in (1, 2):
        writer.add_run(
            {
                "run_id": f"asyncio-p0-r{rep}",
                "model": "asyncio",
                "service": "echo",
                "point": 0,
                "point_label": "-",
                "repetition": rep,
                "status": "ok",
                "clients": 1,
                "req_per_s": 100.0 + rep,
                "duration_s": 1.0,
            },
            timeline=[{"source": "load", "t_s": 0.5, "req_per_s": 100.0}],
            histograms={"latency": hist},
        )
    write_summary(folder)
    cal_dir = tmp_path / "cal"
    save({FORMAT_KEY: FORMAT_VERSIONS["calibration"], "echo": []}, cal_dir)
    assert store_with_results(folder, cal_dir) is not None
    return folder


def test_every_file_carries_its_version_under_the_one_key(tmp_path):
    folder = _folder(tmp_path)
    for name in ("environment.json", "summary.json"):
        assert json.loads((folder / name).read_text())[FORMAT_KEY] == FORMAT_VERSIONS[name]
    assert json.loads((folder / RESULTS_COPY).read_text())[FORMAT_KEY] == FORMAT_VERSIONS["calibration"]
    for name in ("runs.csv", "timeline.csv"):
        header, *rows = (folder / name).read_text().splitlines()
        col = header.split(",").index(FORMAT_KEY)
        assert rows and {r.split(",")[col] for r in rows} == {str(FORMAT_VERSIONS[name])}
    hlog = folder / "hist" / "asyncio-p0-r1.latency.hlog"
    assert hlog.read_text().splitlines()[0] == "#" + hlog_comment("latency")
    results = load_results(folder)  # and everything reads back
    assert list(results.runs["req_per_s"]) == [101.0, 102.0] and results.environment[FORMAT_KEY]
    assert results.histogram("asyncio-p0-r1", "latency").get_total_count() == 3
    assert load_stored(folder)["echo"] == []


def _set_json(path: Path, value: object, key: str = FORMAT_KEY) -> None:
    data = json.loads(path.read_text())
    data.pop(FORMAT_KEY)
    if value is not None:
        data[key] = value
    path.write_text(json.dumps(data))


def _set_csv(path: Path, value: str | None) -> None:
    header, *rows = path.read_text().splitlines()
    col = header.split(",").index(FORMAT_KEY)
    lines = [header.split(","), *[r.split(",") for r in rows]]
    for cells in lines:
        if value is None:
            del cells[col]
        elif cells is not lines[0]:
            cells[col] = value
    path.write_text("\n".join(",".join(c) for c in lines) + "\n")


@pytest.mark.parametrize(
    "name, change, found",
    [
        ("runs.csv", lambda p: _set_csv(p, "1"), "format version '1'"),
        ("runs.csv", lambda p: _set_csv(p, None), f"no {FORMAT_KEY}"),  # the layout before versions
        ("timeline.csv", lambda p: _set_csv(p, "3"), "format version '3'"),
        ("environment.json", lambda p: _set_json(p, 1, "environment_version"), f"no {FORMAT_KEY}"),  # the old layout
        ("environment.json", lambda p: _set_json(p, 99), "format version 99"),
        ("summary.json", lambda p: _set_json(p, 1, "results_version"), f"no {FORMAT_KEY}"),  # the old layout
    ],
)
def test_a_file_of_another_version_is_refused_naming_it_and_both_versions(tmp_path, name, change, found):
    folder = _folder(tmp_path)
    change(folder / name)
    with pytest.raises(NotAResultsFolder) as err:
        load_results(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / name}: {found}")
    assert f"reads {name} format version {FORMAT_VERSIONS[name]} only" in message


def test_an_old_histogram_log_and_an_old_calibration_are_refused(tmp_path):
    folder = _folder(tmp_path)
    hlog = folder / "hist" / "asyncio-p0-r1.latency.hlog"
    hlog.write_text(hlog.read_text().replace(f", {FORMAT_KEY} {FORMAT_VERSIONS['histogram']}]", "]"))
    with pytest.raises(FormatVersionError, match=re.escape(f"{hlog}: no {FORMAT_KEY}")):
        read_hlog(hlog)
    _set_json(folder / RESULTS_COPY, 1, "version")  # the layout before versions shared one key
    with pytest.raises(FormatVersionError) as err:
        read_calibration(folder / RESULTS_COPY)
    assert (err.value.path, err.value.found, err.value.supported) == (
        folder / RESULTS_COPY,
        None,
        FORMAT_VERSIONS["calibration"],
    )


def test_bench_report_on_an_old_folder_says_which_file_and_exits_2(tmp_path, capsys):
    folder = _folder(tmp_path)
    _set_csv(folder / "runs.csv", None)
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    assert report_command(parser.parse_args([str(folder)])) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'runs.csv'}: no {FORMAT_KEY}" in err and f"format version {FORMAT_VERSIONS['runs.csv']}" in err
