"""Figures: files written for a results folder, flags marked, one colour per model, bars for one point."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET

import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle

from bench.plots import (
    FIGURES,
    LESSON_FIGURES,
    FigureJob,
    add_plot_arguments,
    build_figures,
    plot_command,
    plot_results,
)
from bench.plots.style import FLAGS, model_colour
from bench.stats import load_results

from fake_results import write_fake_results

MODELS = ("sequential", "threading", "forking", "c-reference")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_results(
        tmp_path_factory.mktemp("plots") / "r", models=MODELS, sweep=("clients", (1, 10, 50)), repetitions=3
    )


@pytest.fixture(scope="module")
def figures(fake):
    return build_figures(load_results(fake))


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


@pytest.mark.slow
def test_plot_results_writes_every_figure_as_png_and_svg_and_timelines_as_png(tmp_path):
    # small on purpose: the timelines are the slow part
    fake = write_fake_results(
        tmp_path / "r", models=("forking", "c-reference"), sweep=("clients", (1, 50)), repetitions=2
    )
    paths = plot_results(fake)
    names = {p.name for p in paths if p.parent.name == "figures"}
    assert names == {f"{n}.{ext}" for n in FIGURES if n not in LESSON_FIGURES for ext in ("png", "svg")}
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 10_000, p  # a real figure, not an empty canvas
        if p.suffix == ".png":
            assert data.startswith(PNG_MAGIC)
        else:
            assert ET.fromstring(data).tag.endswith("svg")
    runs = load_results(fake).runs
    ok_runs = set(runs.loc[runs["status"] == "ok", "run_id"])
    timelines = {p.stem for p in paths if p.parent.name == "timelines" and p.suffix == ".png"}
    assert timelines == ok_runs  # the failed run left no timeline samples
    assert not [p for p in paths if p.parent.name == "timelines" and p.suffix != ".png"]  # PNG only by default
    # formats asked for apply to the timelines too
    run_id = sorted(ok_runs)[0]
    asked = plot_results(fake, ("svg",), jobs=[FigureJob("timeline", run_id=run_id)])
    assert [p.name for p in asked] == [f"{run_id}.svg"]
    assert ET.fromstring(asked[0].read_bytes()).tag.endswith("svg")


def test_flags_are_marked_with_a_legend_entry(figures):
    expected = {FLAGS[f][0] for f in ("generator-bound", "unstable", "failed")}
    for name in ("throughput", "latency", "memory", "connections", "connect_time"):
        assert expected <= set(_legend_texts(figures[name])), name
    # the failed point (forking, 50 clients) carries an X marker at its x
    ax = figures["throughput"].axes[0]
    xs = [x for line in ax.get_lines() if line.get_marker() == "X" for x in line.get_xdata()]
    assert 50.0 in xs


def test_no_flag_entries_when_nothing_is_flagged(tmp_path):
    folder = write_fake_results(
        tmp_path / "clean",
        models=("threading", "selectors"),
        sweep=("clients", (1, 10)),
        failed=False,
        generator_bound=False,
        unstable=False,
        busy=False,
    )
    figs = build_figures(load_results(folder))
    flag_labels = {label for label, _ in FLAGS.values()}
    assert not flag_labels & set(_legend_texts(figs["throughput"]))
    assert {"threading", "selectors"} <= set(_legend_texts(figs["throughput"]))


def test_a_model_keeps_its_colour_in_every_figure(figures):
    for name in ("throughput", "latency", "memory"):
        fig = figures[name]
        by_label = {
            h.get_label(): to_hex(h.get_color())
            for legend in fig.legends
            for h in legend.legend_handles
            if h.get_label() in MODELS
        }
        assert by_label == {m: to_hex(model_colour(m)) for m in MODELS}, name
    assert len({model_colour(m) for m in MODELS}) == len(MODELS)


def test_titles_ask_the_question_and_axes_have_units(figures):
    fig = figures["throughput"]
    assert fig.get_suptitle().startswith("Which model keeps throughput as clients grow?")
    ax = fig.axes[0]
    assert "requests/s" in ax.get_ylabel() and "clients" in ax.get_xlabel()
    assert ax.get_xscale() == "log"  # 1..50 clients span more than a decade
    assert "MiB" in " ".join(t.get_text() for t in figures["memory"].axes[0].get_yticklabels())


def test_single_point_gives_bar_charts(tmp_path):
    folder = write_fake_results(
        tmp_path / "one", models=("sequential", "forking", "asyncio"), sweep=None, repetitions=2, failed=False
    )
    fig = build_figures(load_results(folder))["throughput"]
    bars = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_height() > 0]
    assert len(bars) == 3
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["sequential", "forking", "asyncio"]


def test_several_services_get_a_figure_each(tmp_path):
    folder = write_fake_results(
        tmp_path / "two",
        models=("threading", "c-reference"),
        sweep=None,
        service=("echo", "file"),
        repetitions=2,
        timeline=False,
    )
    figs = build_figures(load_results(folder))
    assert {"throughput_echo", "throughput_file", "memory_echo", "memory_file"} <= set(figs)
    assert "MB/s" in figs["throughput_file"].axes[0].get_ylabel()
    assert "(file service)" in figs["throughput_file"].get_suptitle()


def test_plot_command_rejects_a_folder_without_runs(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_plot_arguments(parser)
    assert plot_command(parser.parse_args([str(tmp_path)])) == 2
    err = capsys.readouterr().err
    assert "not a sockbench results folder" in err and "Traceback" not in err


def test_a_grid_sweep_draws_a_line_per_model_and_other_value(tmp_path):
    folder = write_fake_results(
        tmp_path / "grid",
        models=("threading", "selectors"),
        sweep=("clients", (1, 10)),
        sweep2=("backlog", (5, 128)),
        repetitions=2,
        hlogs=False,
        timeline=False,
    )
    results = load_results(folder)
    assert results.swept == ["clients", "backlog"]
    fig = build_figures(results)["throughput"]
    labels = set(_legend_texts(fig))
    assert {
        "threading (backlog=5)",
        "threading (backlog=128)",
        "selectors (backlog=5)",
        "selectors (backlog=128)",
    } <= labels
    lines = [line for line in fig.axes[0].get_lines() if line.get_xdata().size == 2]
    assert len(lines) == 4 and len({line.get_linestyle() for line in lines}) == 2


def _flag_marks(ax, flag: str) -> list[tuple[float, float]]:
    """Where ``flag``'s marker is drawn on ``ax`` (told from a model's own marker by its size)."""
    style = FLAGS[flag][1]
    return [
        (x, y)
        for line in ax.get_lines()
        if line.get_marker() == style["marker"] and line.get_markersize() == style["markersize"]
        for x, y in zip(line.get_xdata(), line.get_ydata())
    ]


def test_process_and_thread_counts_carry_no_throughput_flags(figures):
    # generator-bound (square) and unstable (circle) qualify throughput, not how many processes served it
    memory = figures["memory"]
    pss, _rss, procs, threads = memory.axes[:4]
    assert _flag_marks(pss, "generator-bound") and _flag_marks(pss, "unstable")
    for ax in (procs, threads):
        assert _flag_marks(ax, "generator-bound") == [] and _flag_marks(ax, "unstable") == []
        assert _flag_marks(ax, "failed")  # a failed run still is marked: fewer repetitions behind the count


def test_timeline_draws_each_load_bucket_at_its_middle(fake):
    from bench.plots.timeline import timeline_figure

    results = load_results(fake)
    run_id = results.runs.loc[results.runs["status"] == "ok", "run_id"].iloc[0]
    load = results.timeline[(results.timeline["run_id"] == run_id) & (results.timeline["source"] == "load")]
    fig = timeline_figure(results, run_id)
    throughput = next(line for line in fig.axes[0].get_lines() if line.get_label() == "throughput")
    # a rate over [t, t + 0.5 s) is drawn at t + 0.25 s, where the server's samples of that time are
    assert list(throughput.get_xdata()) == pytest.approx(sorted(load["t_s"] + 0.25))


def test_open_loop_latency_is_described_from_the_scheduled_start(tmp_path):
    import pandas as pd

    folder = write_fake_results(
        tmp_path / "open", models=("threading", "selectors"), sweep=("clients", (1, 10)), hlogs=False, timeline=False
    )
    runs = pd.read_csv(folder / "runs.csv")
    runs["mode"] = "open"
    runs.to_csv(folder / "runs.csv", index=False)
    texts = [t.get_text() for t in build_figures(load_results(folder))["latency"].texts]
    assert any("open loop: scheduled start -> last byte" in t for t in texts), texts
    assert not any("request sent ->" in t for t in texts)


def test_lower_bounds_and_clients_served_are_drawn(tmp_path):
    folder = write_fake_results(
        tmp_path / "r",
        models=("sequential", "asyncio"),
        sweep=("clients", (1, 100)),
        repetitions=1,
        failed=False,
        generator_bound=False,
        unstable=False,
        busy=False,
        lower_bound_p99=True,
    )
    figs = build_figures(load_results(folder))
    latency = figs["latency"]
    assert FLAGS["lower-bound"][0] in _legend_texts(latency)
    p99_axes = latency.axes[1]
    marks = [
        x
        for line in p99_axes.get_lines()
        if line.get_marker() == FLAGS["lower-bound"][1]["marker"]
        for x in line.get_xdata()
    ]
    assert marks == [100.0]  # asyncio's p99 at 100 clients only
    for name in ("throughput", "latency"):
        texts = [t.get_text() for ax in figs[name].axes for t in ax.texts]
        assert "served 1/100" in texts, name


@pytest.mark.slow
def test_a_figure_that_fails_is_named_and_the_others_are_written(tmp_path, monkeypatch):
    # Two workers, so the failure crosses a process boundary as it does after `bench run`.
    import bench.plots as plots

    folder = write_fake_results(tmp_path / "r", models=("threading", "c-reference"), repetitions=1)

    def broken(_results, _point, _calibration):
        raise RuntimeError("no axis today")

    monkeypatch.setitem(plots.FIGURES, "memory", broken)  # the forked workers inherit it
    seen = []
    with pytest.raises(plots.FiguresFailed) as caught:
        plot_results(
            folder,
            ("png",),
            timelines=False,
            workers=2,
            on_figure=lambda done, total, job: seen.append((done, total, job.base)),
        )
    assert caught.value.failures == {"memory": "RuntimeError: no axis today"}
    assert {p.name for p in caught.value.written} == {
        f"{n}.png" for n in FIGURES if n != "memory" and n not in LESSON_FIGURES
    }
    assert sorted(d for d, _t, _b in seen) == list(range(1, len(FIGURES) + 1))  # every figure reported once
    assert {t for _d, t, _b in seen} == {len(FIGURES)}
    status = plot_command(argparse.Namespace(results_dir=folder, formats=["png"], timelines=False, point=None))
    assert status == 1


def test_the_littles_law_figure_puts_threads_beside_rate_x_rtt_for_a_round_trip_sweep(tmp_path):
    import pandas as pd

    from bench.plots.figures import littles_law_figure

    folder = write_fake_results(tmp_path / "r", models=("threading", "selectors"), sweep=("clients", (1, 50)))
    runs = pd.read_csv(folder / "runs.csv")
    runs["net_rtt_ms"] = runs["clients"].astype(float)  # the sweep becomes the round trip, as over a link
    runs["clients"], runs["mode"], runs["rate"] = 64, "open", 1000.0
    runs["req_per_s"], runs["lat_mean_us"] = 1000.0, runs["net_rtt_ms"] * 1e3
    runs.to_csv(folder / "runs.csv", index=False)
    results = load_results(folder, summary=False)
    assert littles_law_figure(load_results(write_fake_results(tmp_path / "plain"), summary=False)) is None
    fig = littles_law_figure(results)
    assert fig is not None
    left, right = fig.axes[:2]
    law = [line for line in right.lines if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in law] == [[1.0, 50.0]]  # 1000/s x 1 ms, x 50 ms
    measured = [list(line.get_ydata()) for line in right.lines if line.get_linestyle() == "-"]
    assert [1.0, 50.0] in measured  # req/s x mean latency of each model
    assert "rate x RTT (Little's law)" in _legend_texts(fig)


def test_the_slow_clients_figure_is_drawn_only_for_a_folder_with_slow_clients(tmp_path, figures):
    assert "slow_clients" not in figures
    fake = write_fake_results(
        tmp_path / "r",
        models=("threading", "selectors"),
        sweep=("slow_reader", (0.0, 0.1, 0.5)),
        repetitions=2,
        hlogs=False,
        timeline=False,
    )
    fig = build_figures(load_results(fake))["slow_clients"]
    titles = [ax.get_title() for ax in fig.axes]
    assert "fast clients served in the window (%)" in titles and "fast clients' p99 latency (log scale)" in titles
    assert {"threading", "selectors"} <= set(_legend_texts(fig))
    assert fig.axes[0].get_xlabel() == "slow_reader clients (share of all clients)"


def test_each_format_is_one_drawing_after_one_layout(fake, tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    from bench.plots import save_figure
    from bench.plots.timeline import timeline_figure

    results = load_results(fake)
    draws: list[str] = []
    layouts: list[str] = []
    real_draw, real_layout = Figure.draw, ConstrainedLayoutEngine.execute
    monkeypatch.setattr(Figure, "draw", lambda self, renderer: (draws.append(""), real_draw(self, renderer))[1])
    monkeypatch.setattr(
        ConstrainedLayoutEngine, "execute", lambda self, fig: (layouts.append(""), real_layout(self, fig))[1]
    )
    fig = build_figures(results)["throughput"]
    paths = save_figure(fig, tmp_path / "throughput", ("png", "svg"))
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert (len(draws), len(layouts)) == (2, 1)  # left to savefig: 4 (a dry run for layout and margins per format)
    draws.clear(), layouts.clear()
    run_id = results.runs.loc[results.runs["status"] == "ok", "run_id"].iloc[0]
    save_figure(timeline_figure(results, run_id), tmp_path / "timeline", ("png",), tight=False)
    assert (len(draws), len(layouts)) == (1, 0)


def test_a_timeline_laid_out_once_keeps_every_label_inside_and_apart(fake):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from bench.plots.timeline import timeline_figure

    results = load_results(fake)
    runs = results.runs
    # the generator-bound run: the longest legend label, beside the top panel
    run_id = runs.loc[runs["generator_bound"] == True, "run_id"].iloc[0]  # noqa: E712
    fig = timeline_figure(results, run_id)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # inches to pixels
    assert drawn.x0 >= 0 and drawn.y0 >= 0 and drawn.x1 <= width and drawn.y1 <= height  # nothing cut off
    legend = max((ax.get_legend().get_window_extent(renderer) for ax in fig.axes), key=lambda b: b.width)
    assert legend.x1 <= width
    titles = min(t.get_window_extent(renderer).y0 for t in fig.texts if t.get_text().strip())
    assert fig.axes[0].get_tightbbox(renderer).y1 < titles  # the top panel below the titles
    for upper, lower in zip(fig.axes, fig.axes[1:]):
        # a panel's highest tick label stays under the panel above it
        assert lower.yaxis.get_tightbbox(renderer).y1 < upper.bbox.y0


def test_a_timeline_drawn_over_another_is_the_same_image_as_a_new_one(tmp_path):
    import numpy as np
    from PIL import Image

    from bench.plots import save_figure
    from bench.plots.timeline import timeline_figure

    folder = write_fake_results(tmp_path / "r", models=("sequential", "threading", "c-reference"), repetitions=2)
    results = load_results(folder)
    # generator-bound, unstable and plain runs of three models at four points, each with its own limits.
    # The first repetition has every one of them (the unstable flag needs the second repetition in the
    # folder, not drawn); the second repeats the same kinds with other noise and doubled the drawing.
    first = results.runs[results.runs["repetition"] == 1]["run_id"]
    run_ids = [r for r in first if (results.timeline["run_id"] == r).any()]
    assert len(run_ids) == 12 and {"c-reference-p3-r1", "threading-p2-r1"} <= set(run_ids)

    def pixels(fig, name):
        path = save_figure(fig, tmp_path / name, ("png",), tight=False)[0]
        return np.asarray(Image.open(path).convert("RGB"), dtype=int)

    fresh = {run_id: pixels(timeline_figure(results, run_id), f"new-{run_id}") for run_id in run_ids}
    fig = None
    for run_id in run_ids[::-1] + run_ids:  # each drawn over a different predecessor
        fig = timeline_figure(results, run_id, into=fig)
        # anything left over from the run before (a line, a legend, a log axis, a limit) would differ by far
        # more than the one level of anti-aliasing that float rounding of the panels' positions can make
        assert np.abs(pixels(fig, f"over-{run_id}") - fresh[run_id]).max() <= 1, run_id


def test_an_opaque_figure_is_written_as_an_rgb_png_of_the_same_image(fake, tmp_path):
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from bench.plots import save_figure

    fig = build_figures(load_results(fake))["throughput"]
    path = save_figure(fig, tmp_path / "throughput", ("png",), tight=False)[0]
    with Image.open(path) as ours:
        assert ours.mode == "RGB"
        assert ours.info["Title"] == fig.get_suptitle().split("\n")[0] and ours.info["Software"] == "sockbench"
        rgb = np.asarray(ours)
    theirs = io.BytesIO()  # matplotlib's own PNG of the same figure: RGBA, every pixel opaque
    FigureCanvasAgg(fig).print_png(theirs)
    with Image.open(theirs) as image:
        rgba = np.asarray(image)
    assert rgba.shape[2] == 4 and rgba[..., 3].min() == 255
    assert np.array_equal(rgb, rgba[..., :3])
    fig.patch.set_alpha(0.0)  # a transparent figure keeps its alpha channel
    with Image.open(save_figure(fig, tmp_path / "clear", ("png",), tight=False)[0]) as clear:
        assert clear.mode == "RGBA"


def test_plot_results_draws_from_a_folder_already_read(fake, tmp_path, monkeypatch):
    import shutil

    import bench.plots

    folder = tmp_path / "r"
    shutil.copytree(fake, folder, ignore=shutil.ignore_patterns("figures"))
    results = load_results(folder)

    def read_again(_path):
        raise AssertionError("the folder was read again")

    monkeypatch.setattr(bench.plots, "load_results", read_again)
    paths = plot_results(folder, ("png",), timelines=False, workers=1, results=results)
    assert {p.name for p in paths} >= {"throughput.png", "latency.png", "memory.png"}
