"""The HTML report: self-contained, says what the data says, and renders in a real browser."""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.findings import compute_findings
from bench.format import fmt_bytes as fmt_mib
from bench.report import add_report_arguments, report_command, write_report
from bench.results import FORMAT_VERSIONS
from bench.stats import load_results
from bench.summary import summary_warnings

from conftest import CHROMIUM
from fake_results import write_fake_results

MODELS = ("sequential", "threading", "forking", "c-reference")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_results(
        tmp_path_factory.mktemp("report") / "r", models=MODELS, sweep=("clients", (1, 10, 50)), repetitions=3
    )


@pytest.fixture(scope="module")
def report(fake):
    return write_report(fake)


# --------------------------------------------------------------------------
# Content


@pytest.mark.slow
def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", text, flags=re.I)
    assert refs, "the report embeds figures"
    external = [r for r in refs if re.match(r"(?i)(https?:|//|ftp:)", r)]
    assert external == []
    assert all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text


@pytest.mark.slow
def test_the_stylesheet_is_package_data_inlined_whole(report):
    """bench/report.css is declared package data (an installed bench has it) and each report inlines all of it."""
    import tomllib

    css = Path(__file__).resolve().parent.parent / "bench" / "report.css"
    data = tomllib.loads((css.parent.parent / "pyproject.toml").read_text())
    assert "report.css" in data["tool"]["setuptools"]["package-data"]["bench"]
    text = report.read_text(encoding="utf-8")
    assert f"<style>{css.read_text(encoding='utf-8')}</style>" in text


@pytest.mark.slow
def test_report_embeds_decodable_figures(report):
    text = report.read_text(encoding="utf-8")
    svgs = re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", text)
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(svgs) >= 6 and pngs  # every question figure, some timelines
    assert all(base64.b64decode(s).lstrip().startswith((b"<?xml", b"<svg")) for s in svgs)
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)


@pytest.mark.slow
def test_report_shows_scenario_warnings_table_and_findings(fake, report):
    text = report.read_text(encoding="utf-8")
    assert "clients-sweep" in text and "How do the server models cope" in text  # name, teaching text
    for tag in ("generator-bound", "unstable", "failed", "busy"):
        assert f'class="tag {tag}"' in text, tag
    assert "Too many open files" in text  # the failed run's error
    assert "75% CI]" in text and "95% bootstrap" not in text  # 3 repetitions: the range, at its real level
    assert "Python 3.11.7" in text.replace("CPython 3.11.7", "Python 3.11.7")
    results = load_results(fake)
    forking = results.aggregate[(results.aggregate["model"] == "forking") & (results.aggregate["point"] == 2)].iloc[0]
    pss, rss = fmt_mib(forking["mem_pss_peak_bytes_median"]), fmt_mib(forking["mem_rss_peak_bytes_median"])
    assert "PSS over 41 processes" in text and f"summed RSS says {rss}" in text and pss in text


def test_findings_follow_the_data(fake, tmp_path):
    texts = [f.text for f in compute_findings(load_results(fake))]
    assert any("summed RSS says" in t for t in texts)
    assert any("timed out" in t and "sequential" in t for t in texts)
    assert any("took 1 s or more" in t for t in texts)
    assert any(t.startswith("sequential served") and "vs threading" in t for t in texts)
    # no forking, a backlog that holds every client: no memory, timeout or SYN-retry sentence
    calm = write_fake_results(
        tmp_path / "calm", models=("threading", "selectors"), sweep=("clients", (1, 50)), backlog=512, timeline=False
    )
    calm_texts = [f.text for f in compute_findings(load_results(calm))]
    assert calm_texts and not [t for t in calm_texts if "summed RSS" in t or "timed out" in t or "1 s or more" in t]


def test_report_command_rejects_a_non_results_folder(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    assert report_command(parser.parse_args([str(tmp_path)])) == 2
    err = capsys.readouterr().err
    assert "not a sockbench results folder" in err and "Traceback" not in err


# --------------------------------------------------------------------------
# Rendering in headless Chromium, driven over the DevTools protocol (pipe transport)


_LAUNCHER = """
import os, sys
cmd, out = int(sys.argv[1]), int(sys.argv[2])
os.dup2(cmd, 3)
os.dup2(out, 4)
os.close(cmd)
os.close(out)
os.execv(sys.argv[3], sys.argv[3:])
"""


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fd 3 in, fd 4 out).

    Resource handling: the browser runs in its own session (process group);
    :meth:`close` asks it to quit, then kills the group and reaps it.
    """

    def __init__(self, profile: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        # above 9, so that moving them to 3 and 4 never overwrites one of them by accident
        cmd_r, out_w = _above_nine(cmd_r), _above_nine(out_w)
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "--window-size=1280,2000",
            "about:blank",
        ]
        # a tiny launcher moves our pipe ends to fds 3 and 4, where Chromium expects them, and execs it
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(cmd_r), str(out_w), CHROMIUM, *flags],
            pass_fds=(cmd_r, out_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self._next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        return self._wait(lambda m: m.get("method") == method, timeout)

    def _wait(self, match, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "method" in msg:
                    self.events.append(msg)
                if match(msg):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._out_r], [], [], left)
            if ready:
                chunk = os.read(self._out_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the group we started
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        os.close(self._cmd_w)
        os.close(self._out_r)


_CHECK_IMAGES = """JSON.stringify(Array.from(document.images).map(i => {
  const r = i.getBoundingClientRect();
  return {src: i.src.slice(0, 24), complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
          rw: r.width, rh: r.height};
}))"""


@pytest.mark.needs_chromium
@pytest.mark.slow
def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = DevTools(tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": report.resolve().as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired", timeout=60)
        images = json.loads(
            browser.send("Runtime.evaluate", {"expression": _CHECK_IMAGES, "returnByValue": True}, session=session)[
                "result"
            ]["value"]
        )
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()

    assert len(images) >= 6
    not_shown = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0 and i["rw"] > 0 and i["rh"] > 0)]
    assert not_shown == []
    methods = [e["method"] for e in browser.events]
    assert "Runtime.exceptionThrown" not in methods
    errors = [
        e["params"]
        for e in browser.events
        if (e["method"] == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert"))
        or (e["method"] == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
    ]
    assert errors == []
    failed = [e["params"] for e in browser.events if e["method"] == "Network.loadingFailed"]
    assert failed == []
    fetched = [e["params"]["request"]["url"][:60] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
    assert [u for u in fetched if not u.startswith(("file:", "data:", "about:"))] == []
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")


def _calibration(
    *clients: int,
    rt_per_s: float = 200_000.0,
    host: str = "bench-host",
    created_at: str = "2025-01-01T11:00:00+00:00",
    busy: float = 1.0,
) -> dict:
    """A saved calibration (bench.calibration.persist layout) with a C-client ceiling at these connection counts."""
    return {
        "format_version": FORMAT_VERSIONS["calibration"],
        "message_bytes": 1024,
        "created_at": created_at,
        "quick": False,
        "machine": {"hostname": host, "busy_pct_before": busy},
        "echo": [
            {"clients": c, "placement": "split", "message_bytes": 1024, "rt_per_s": rt_per_s, "busy_pct_before": busy}
            for c in clients
        ],
        "connect": [],
        "bulk": {"tool": "iperf3", "points": []},
    }


@pytest.mark.slow
def test_calibrated_ceiling_gives_a_share_only_where_it_matches(fake):
    results = load_results(fake)
    agg = results.aggregate
    threading = agg[(agg["model"] == "threading") & (agg["point"] == 2)]["req_per_s_median"].iloc[0]
    texts = [f.text for f in compute_findings(results, _calibration(1, 10, 50))]
    ceiling = [t for t in texts if t.startswith("Against the calibrated ceiling (C client, 50 connections")]
    assert len(ceiling) == 1 and f"threading {threading / 200_000:.0%}" in ceiling[0]
    # the largest point (50 clients) not calibrated: no sentence rather than a stretched comparison
    assert not [t for t in compute_findings(results, _calibration(1, 10, 100)) if "calibrated ceiling" in t.text]
    # same host, same day, idle: its time and host are said, no caveat
    assert "measured 2025-01-01 11:00 UTC on bench-host)" in ceiling[0] and "with care" not in ceiling[0]


@pytest.mark.slow
def test_a_share_above_the_ceiling_names_the_busy_day_and_host_it_came_from(fake):
    results = load_results(fake)
    suspect = _calibration(50, rt_per_s=1_000.0, host="other-host", created_at="2024-06-01T09:00:00+00:00", busy=60)
    text = next(f.text for f in compute_findings(results, suspect) if "calibrated ceiling" in f.text)
    assert "%" in text and "Above 100%, the ceiling was not these runs' limit" in text
    for caveat in (
        "busy machine, up to 60% busy",
        "another host (other-host; runs on bench-host)",
        "another day (2024-06-01; runs 2025-01-01)",
    ):
        assert caveat in text, text
    # above the ceiling with nothing wrong with the calibration: it says the ceiling measured something else
    honest = next(
        f.text for f in compute_findings(results, _calibration(50, rt_per_s=1_000.0)) if "calibrated ceiling" in f.text
    )
    assert "measured something other than these runs" in honest


def test_the_report_uses_the_calibration_stored_with_the_results_not_the_current_folder(fake, tmp_path, monkeypatch):
    from bench.calibration.persist import RESULTS_COPY, save, store_with_results
    from bench.findings import load_calibration

    monkeypatch.chdir(tmp_path)
    save(_calibration(50, rt_per_s=123_456.0))  # results/calibration/latest.json of this folder
    assert load_calibration(fake) is None  # nothing stored with the results: no ceiling, not the cwd's
    folder = tmp_path / "copy"
    shutil.copytree(fake, folder)
    assert store_with_results(folder) == folder / RESULTS_COPY
    save(_calibration(50, rt_per_s=1.0))  # a later calibration must not change the stored one
    stored = load_calibration(folder)
    assert stored["echo"][0]["rt_per_s"] == 123_456.0 and stored["copied_at"]


def test_report_table_shows_share_of_ceiling(fake):
    from bench.report import _table_html

    results = load_results(fake)
    table = _table_html(results, _calibration(10))
    agg = results.aggregate
    threading = agg[(agg["model"] == "threading") & (agg["point"] == 1)]["req_per_s_median"].iloc[0]
    assert "% of ceiling" in table and f">{threading / 200_000:.0%}</td>" in table
    assert "% of ceiling" not in _table_html(results, None)


def test_forking_memory_growth_is_per_serving_process_not_per_client(tmp_path):
    # max_children=40: at 1,000 clients 41 processes serve them all; per client would understate each ~25x
    folder = write_fake_results(
        tmp_path / "mem",
        models=("threading", "selectors", "forking"),
        sweep=("clients", (10, 1000)),
        hlogs=False,
        timeline=False,
    )
    results = load_results(folder)
    agg = results.aggregate
    fork = agg[agg["model"] == "forking"].sort_values("clients")
    dm = fork["mem_pss_peak_bytes_median"].iloc[-1] - fork["mem_pss_peak_bytes_median"].iloc[0]
    dp = fork["procs_peak_median"].iloc[-1] - fork["procs_peak_median"].iloc[0]
    assert dp < 1000 - 10  # the cap, not the clients, decides how many processes there are
    text = next(f.text for f in compute_findings(results) if "PSS growth is per process" in f.text)
    assert (
        f"forking {fmt_mib(dm / dp)} per additional process "
        f"({fork['procs_peak_median'].iloc[-1]:,.0f} processes served 1,000 clients)"
    ) in text
    assert "forking" not in text.split("Where a process")[0]  # not among the per-client figures


def test_connection_attempts_are_a_median_of_per_run_totals(tmp_path):
    import pandas as pd

    folder = write_fake_results(
        tmp_path / "att",
        models=("threading", "selectors"),
        sweep=None,
        hlogs=False,
        timeline=False,
        failed=False,
        busy=False,
        generator_bound=False,
    )
    runs = pd.read_csv(folder / "runs.csv")
    sel = runs["model"] == "selectors"
    runs.loc[sel, "conn_ok"] = [0, 40, 20]
    runs.loc[sel, "conn_timeout"] = [30, 1, 2]  # totals 30, 41, 22: median 30; medians summed: 20 + 2 = 22
    runs.loc[sel, ["conn_refused", "conn_reset", "conn_other", "conn_emfile", "conn_eaddrnotavail", "conn_pending"]] = 0
    runs.to_csv(folder / "runs.csv", index=False)
    texts = [f.text for f in compute_findings(load_results(folder)) if "selectors:" in f.text]
    assert any("2 of 30 connection attempts timed out" in t for t in texts), texts


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml")), ids=lambda p: p.name
)
def test_scenario_descriptions_teach_without_quoting_measured_figures(path):
    # measured rates and counts belong to the findings of a run; a description that quotes one
    # ("about 14-15k/s", "up to 1001") is contradicted by the next machine or the next run.
    # A figure derived from the scenario's own settings (1 s / 200 us = 5000 requests/s) is teaching.
    import yaml

    text = yaml.safe_load(path.read_text(encoding="utf-8"))["description"]
    assert not re.search(r"\d[\d,.]*\s*k(?:/s|\b)", text), text
    assert not re.search(r"\bup to \d{3,}", text), text


@pytest.mark.slow
def test_report_marks_lower_bounds_and_unserved_clients(tmp_path):
    folder = write_fake_results(
        tmp_path / "r",
        models=("sequential", "asyncio"),
        sweep=("clients", (1, 100)),
        repetitions=1,
        lower_bound_p99=True,
        timeline=False,
    )
    from bench.report import render_report

    # both are words of the table and findings, which render_report writes; drawing the figures
    # (write_report) adds nothing these two look for (their marks: test_plots' lower-bounds test)
    html = render_report(load_results(folder))
    assert "≥ 2 s" in html  # asyncio's p99 at 100 clients (0.4 x a 5 s run)
    assert "served 1/100" in html


def test_findings_say_who_was_served_and_which_latencies_are_lower_bounds(tmp_path):
    folder = write_fake_results(
        tmp_path / "r",
        models=("sequential", "asyncio"),
        sweep=("clients", (1, 100)),
        repetitions=1,
        lower_bound_p99=True,
        timeline=False,
        hlogs=False,
    )
    texts = [f.text for f in compute_findings(load_results(folder))]
    assert any(t.startswith("sequential at clients=100 served 1/100 clients") and "p999 ≥ 5 s" in t for t in texts), (
        texts
    )
    assert any("asyncio's p99 latency at clients=100 is at least" in t and "≥ 2 s" in t for t in texts), texts


@pytest.mark.slow
def test_report_embeds_the_figure_files_already_drawn_without_drawing_them_again(tmp_path, monkeypatch):
    import bench.plots as plots
    from bench.report import _chosen_timelines

    folder = write_fake_results(tmp_path / "r", models=("threading", "c-reference"), repetitions=1)
    # the default formats hold every file the report embeds; of the timelines, the report embeds its chosen ones
    plots.plot_results(folder, timelines=_chosen_timelines(load_results(folder)))

    def no_drawing(*_args):
        raise AssertionError("drawn again")

    for name in plots.FIGURES:
        # a lesson's figure has no file in a folder that did not run the lesson, so the
        # report asks for it again; its builder then finds nothing to draw, as here
        monkeypatch.setitem(plots.FIGURES, name, (lambda *_a: None) if name in plots.LESSON_FIGURES else no_drawing)
    monkeypatch.setattr(plots, "timeline_figure", no_drawing)
    drawn = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (folder / "figures").rglob("*.*")}
    text = write_report(folder).read_text(encoding="utf-8")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (folder / "figures").rglob("*.*")} == drawn
    embedded = {base64.b64decode(s) for s in re.findall(r"data:image/(?:svg\+xml|png);base64,([A-Za-z0-9+/=]+)", text)}
    svgs = {data for path, (_m, data) in drawn.items() if path.suffix == ".svg" and path.parent.name == "figures"}
    assert svgs and svgs <= embedded  # byte for byte the files on disk
    assert "alt='Which model keeps throughput" in text  # the title stored in the file
    assert "could not be drawn" not in text


def test_report_shows_each_threshold_verdict_in_words_near_the_top(fake, tmp_path):
    import yaml

    from bench.report import render_report

    assert "id='thresholds'" not in render_report(load_results(fake))  # no thresholds: no section
    folder = tmp_path / "r"
    shutil.copytree(fake, folder, ignore=shutil.ignore_patterns("figures", "report.html"))
    scenario = yaml.safe_load((folder / "scenario.yaml").read_text())
    scenario["thresholds"] = ["req_per_s > 1", {"model": "threading", "check": "p99 < 1us"}]
    (folder / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    results = load_results(folder)
    text = render_report(results)
    section = text[text.index("<h2 id='thresholds'>") : text.index('<div class="description">')]  # first, near the top
    assert "Thresholds: 1 of 2 thresholds crossed" in section and "href='#thresholds'" in text
    passed, crossed = re.findall(r"<tr class='(pass|fail)'>(.*?)</tr>", section)
    assert passed[0] == "pass" and ">PASS<" in passed[1] and "<code>req_per_s &gt; 1</code>" in passed[1]
    assert crossed[0] == "fail" and ">FAIL<" in crossed[1] and "<code>threading: p99 &lt; 1us</code>" in crossed[1]
    agg = results.aggregate[results.aggregate["model"] == "threading"].dropna(subset=["lat_p99_us_median"])
    worst = agg.loc[agg["lat_p99_us_median"].idxmax()]
    assert f"(threading {worst['label']})" in crossed[1]  # where the worst value was measured
    assert f"{len(agg)} of {len(agg)} fail" in crossed[1] and "crossed by: threading" in crossed[1]


@pytest.mark.slow
def test_report_draws_missing_figures_once_and_is_readable_by_all(tmp_path):
    folder = write_fake_results(tmp_path / "r", models=("threading",), repetitions=1)
    path = write_report(folder)
    assert (folder / "figures" / "throughput.svg").is_file() and (folder / "figures" / "throughput.png").is_file()
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_bench_report_and_plot_write_a_missing_summary(tmp_path, capsys):
    from bench.plots import plot_command

    # no histograms or timelines: fewer figures to draw, and the summary is what is looked at
    folder = write_fake_results(tmp_path / "r", models=("threading",), repetitions=1, hlogs=False, timeline=False)
    (folder / "summary.json").unlink()
    assert report_command(argparse.Namespace(results_dir=folder)) == 0
    assert json.loads((folder / "summary.json").read_text())["format_version"] >= 1
    assert (folder / "summary.json").stat().st_mode & 0o777 == 0o644
    (folder / "summary.json").unlink()
    assert plot_command(argparse.Namespace(results_dir=folder, formats=["png"], timelines=False, point=None)) == 0
    assert (folder / "summary.json").is_file()
    assert "summary.json (it was missing)" in capsys.readouterr().out


def test_bench_report_markdown_prints_the_headline_table(fake, capsys, tmp_path):
    assert report_command(argparse.Namespace(results_dir=fake, markdown="-")) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("|")]
    agg = load_results(fake).aggregate
    assert len(rows) == 2 + len(agg)  # header, alignment, one row per model and point
    assert len({line.count("|") for line in rows}) == 1  # every row has the same cells
    for row in agg.to_dict("records"):
        assert f"`{row['model']}`" in text
    assert f"{agg['req_per_s_median'].max():,.0f}"[:3] in text
    assert all(w.split(":")[0] in text for w in summary_warnings(load_results(fake)))
    out = tmp_path / "pr.md"
    assert report_command(argparse.Namespace(results_dir=fake, markdown=str(out))) == 0
    assert out.read_text() == text and out.stat().st_mode & 0o777 == 0o644
