"""The summary table printed by bench run fits the terminal and never cuts a number or a model name."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from bench.cli import _summary_rows, _summary_tables
from bench.format import fmt_time_us as _fmt_us
from bench.format import fmt_whole as _fmt_rate
from bench.stats import load_results

from fake_results import write_fake_results


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    # a swept parameter and 3 repetitions: point labels, confidence intervals and flags are all present
    return write_fake_results(tmp_path_factory.mktemp("summary") / "r", sweep=("clients", (1, 10, 100)), repetitions=3)


def render(folder, width: int) -> str:
    out = io.StringIO()
    console = Console(width=width, file=out, color_system=None)
    for table in _summary_tables(folder, console.width):
        console.print(table)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.slow
def test_summary_fits_the_terminal_and_keeps_every_value_whole(fake, width):
    text = render(fake, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text
    cells = {word for line in lines for word in line.replace("│", " ").replace("┃", " ").split()}
    agg = load_results(fake).aggregate
    for row in agg.to_dict("records"):
        assert row["model"] in cells
        assert _fmt_rate(row["req_per_s_median"]) in cells  # a whole number, never "14,9..."
        assert _fmt_us(row["lat_p99_us_median"]).split()[0] in cells
    for row in _summary_rows(fake):  # every value of every column is somewhere, whole
        for column, value in row.items():
            if column not in ("flags", "point"):
                assert value in text, (column, value)


def test_a_wide_terminal_gets_one_table_with_one_line_headers(fake):
    text = render(fake, 240)
    assert text.count("┏") == 1 and "connects timed out/pending" in text


def test_no_plots_still_writes_the_summary_and_prints_every_warning(tmp_path, capsys):
    from bench import cli

    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(
        "name: tiny\nservice: echo\nmodels: [selectors]\nduration: 300ms\nwarmup: 100ms\n"
        "repetitions: 1\nplacement: none\nload:\n  clients: 2\n  message_bytes: 64\n"
        "monitor:\n  idle_wait: 0.2s\n  idle_threshold_pct: 100\n"
    )
    assert cli.main(["run", str(scenario), "--results", str(tmp_path / "out"), "--no-plots"]) == 0
    folder = next((tmp_path / "out").iterdir())
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["warnings"], "one repetition: no confidence interval, a warning"
    out = capsys.readouterr().out
    for warning in summary["warnings"]:
        assert " ".join(warning.split()[:4]) in " ".join(out.split())
    assert not (folder / "figures").exists() and not (folder / "report.html").exists()
