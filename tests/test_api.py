"""bench.api: the worked example of docs/api.md, executed as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench import api

from fake_results import write_fake_results

REPO = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), re.S)


def test_the_docs_have_both_examples():
    assert len(BLOCKS) == 2 and "api.load_results(" in BLOCKS[0] and "api.run(" in BLOCKS[1]


def test_reading_example_runs_against_a_results_folder(tmp_path, capsys):
    folder = write_fake_results(tmp_path / "fake", models=("threading", "selectors"), sweep=("clients", (1, 10)))
    code = BLOCKS[0].replace('"results/20250101T120000Z-clients-sweep"', repr(str(folder)))
    assert code != BLOCKS[0]
    exec(compile(code, "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert f"<sockbench Results {folder}: 12 runs, models threading, selectors>" in out
    assert "fastest: selectors at clients=10:" in out
    assert re.search(r"threading-p0-r1: p99\.9 = \d+ us over \d+ requests", out)
    assert "cpu0_busy_pct" in out and "mem_pss_bytes" in out and "warning:" in out


def test_histogram_of_an_unknown_run_names_the_runs(tmp_path):
    results = api.load_results(write_fake_results(tmp_path / "f", models=("threading",), sweep=None))
    with pytest.raises(KeyError, match="no run 'nope'.*runs: threading-p0-r1"):
        results.histogram("nope")
    with pytest.raises(api.NotAResultsFolder):
        api.load_results(tmp_path / "missing")


@pytest.mark.slow
def test_running_example_runs_a_real_scenario(tmp_path, monkeypatch, capsys):
    (tmp_path / "scenarios").mkdir()
    shutil.copy(REPO / "scenarios" / "quick.yaml", tmp_path / "scenarios")
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[1], "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    [folder] = (tmp_path / "results").iterdir()
    assert f"results/{folder.name}" in out and "[('errors == 0', True)]" in out
    results = api.load_results(folder)
    assert sorted(results.runs["model"]) == ["asyncio", "selectors"]
    assert (results.runs["requests"] > 0).all() and (folder / "COLUMNS.md").is_file()
    assert results.histogram(results.runs.iloc[0]).get_total_count() == results.runs.iloc[0]["requests"]
