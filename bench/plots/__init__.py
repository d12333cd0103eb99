"""``bench plot``: the figures of a results folder, one per question.

:func:`plot_results` writes into ``RESULTS_DIR/figures/``:

==========================  ==================================================
``throughput``              Which model keeps throughput as the parameter grows?
``latency``                 p50 and p99 against the parameter
``latency_spectrum``        percentile spectrum per model at one point
``connections``             connection outcomes (ok/timeout/reset/refused/other)
``connect_time``            connect-time CDF, where dropped SYNs show as steps at the SYN retry times
``memory``                  PSS beside summed RSS, processes, threads
``crashes``                 what survives a crashing handler (``server.crash`` runs only)
``copy_on_write``           USS over time per use of preloaded data (``server.preload_mib`` runs only)
``littles_law``             open loop, round trip swept: threads beside rate x RTT, requests in flight
``slow_clients``            load.mix: fast clients' throughput, p99 and share served, slow connections ended
``timelines/<run_id>``      one per run: throughput, p99, memory, tasks, queue
==========================  ==================================================

By default the question figures are written as PNG and SVG (the report
embeds the SVG, which stays sharp when zoomed) and the timelines, one per
run and so the many, as PNG only (what the report embeds): an SVG of every
timeline was most of the finish stage's time. Formats asked for explicitly
(``bench plot --format svg``, ``formats=``) apply to every figure, timelines
included. A figure the folder
has no data for (no histograms saved, no memory samples) is skipped, not
drawn empty. Figure building lives in :mod:`bench.plots.figures` and
:mod:`bench.plots.timeline`; :func:`build_figures` returns them unsaved for
the report.

Error handling: a path that is not a results folder gives a one-line error
naming the path (exit status 2), never a traceback. Resource handling: each
figure is saved and dropped at once; with no pyplot there is no global figure
list to leak.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bench.plots import figures as _figures
from bench.plots import lessons as _lessons
from bench.plots import style
from bench.plots.timeline import timeline_figure
from bench.results import DiskFull, atomic_file
from bench.stats import NotAResultsFolder, Results, load_results

#: name -> builder(results, spectrum_point, calibration) in the order the report shows them.
FIGURES: dict[str, Callable[[Results, int | None, Any], Figure | None]] = {
    "throughput": lambda r, _p, cal: _figures.throughput_figure(r, cal),
    "latency": lambda r, _p, _c: _figures.latency_figure(r),
    "latency_spectrum": lambda r, p, _c: _figures.spectrum_figure(r, p),
    "connections": lambda r, _p, _c: _figures.connections_figure(r),
    "connect_time": lambda r, _p, _c: _figures.connect_time_figure(r),
    "memory": lambda r, _p, _c: _figures.memory_figure(r),
    # one lesson each, drawn only for a folder that ran it
    "crashes": lambda r, _p, _c: _lessons.crash_figure(r),
    "copy_on_write": lambda r, _p, _c: _lessons.cow_figure(r),
    "littles_law": lambda r, _p, _c: _figures.littles_law_figure(r),  # an open-loop round-trip sweep
    "slow_clients": lambda r, _p, _c: _figures.slow_clients_figure(r),
}

#: The figures of single lessons (:mod:`bench.plots.lessons`; littles_law and slow_clients:
#: :mod:`bench.plots.figures`): a folder that did not run the lesson has none.
LESSON_FIGURES = ("crashes", "copy_on_write", "littles_law", "slow_clients")

__all__ = [
    "FIGURES",
    "LESSON_FIGURES",
    "FigureJob",
    "FiguresFailed",
    "add_plot_arguments",
    "build_figures",
    "figure_jobs",
    "plot_command",
    "plot_results",
    "save_figure",
    "timeline_figure",
]


#: The margin (inches) kept around what a question figure draws, when its margins are trimmed.
TIGHT_PAD_IN = 0.15

#: The formats of the question figures unless others are asked for.
FIGURE_FORMATS = ("png", "svg")
#: The formats of the per-run timelines unless others are asked for: PNG only (see the module docstring).
TIMELINE_FORMATS = ("png",)


def build_figures(results: Results, spectrum_point: int | None = None, calibration: Any = None) -> dict[str, Figure]:
    """Every per-question figure that the folder has data for, by name (not saved).

    A folder with several services (``service: [echo, file]``) gets each
    figure per service, named ``<figure>_<service>``: echo req/s and file
    MB/s do not share an axis. ``calibration`` (``bench calibrate``'s saved
    figures) adds the machine's ceiling to the throughput figure.
    """
    out = {}
    facets = results.facets()
    with style.settings():
        for name, build in FIGURES.items():
            for view in facets:
                fig = build(view, spectrum_point, calibration)
                if fig is not None:
                    out[f"{name}_{view.facet}" if view.facet else name] = fig
    return out


def save_figure(fig: Figure, base: Path, formats: Iterable[str], *, tight: bool = True) -> list[Path]:
    """Save ``fig`` as ``base.<fmt>`` for each format; returns the paths written.

    The layout and, with ``tight``, the trimmed margins are computed once,
    before the first format, and frozen for every format: each is then a
    single drawing. (Left to ``savefig``, a laid-out figure is drawn once
    for the layout and once more for the margins before it is drawn, for
    each format.) ``tight=False`` keeps the figure's own size: for figures
    placed by :func:`bench.plots.style.fixed_layout`, the many timelines.

    Error handling: each file is written whole or not at all
    (:func:`bench.results.atomic_file`); a full disk raises
    :class:`bench.results.DiskFull`.
    """
    paths = []
    base.parent.mkdir(parents=True, exist_ok=True)
    with style.settings():
        extra: dict[str, Any] = {}
        canvas = style.canvas(fig)  # PNGs of opaque figures in RGB
        engine = fig.get_layout_engine()
        if engine is not None:
            engine.execute(fig)  # the layout, once
            # None, not "none": "none" leaves a placeholder engine, for which savefig lays out again
            fig.set_layout_engine(None)
        if tight:
            extra["bbox_inches"] = fig.get_tightbbox(canvas.get_renderer()).padded(TIGHT_PAD_IN)
        for fmt in formats:
            path = base.with_suffix(f".{fmt}")
            # temp + rename: a full disk or Ctrl-C never leaves a truncated figure
            with atomic_file(path, "wb") as fh:
                fig.savefig(fh, format=fmt, metadata=_metadata(fmt, fig), **extra)
            paths.append(path)
    return paths


def _metadata(fmt: str, fig: Figure) -> dict[str, str | None]:
    # no creation date: re-plotting the same data gives byte-identical files.
    # The title (the question the figure answers) is what the report shows as its alt text.
    title = {"Title": fig.get_suptitle().split("\n")[0]} if fig.get_suptitle() else {}
    if fmt == "svg":
        return {"Date": None, **title}
    if fmt == "png":
        return {"Software": "sockbench", **title}
    return {}


#: At most this many processes draw figures at once (and never more than the usable CPUs):
#: each holds matplotlib and a copy of the results, ~100-150 MB.
MAX_PLOT_WORKERS = 8


@dataclasses.dataclass(frozen=True)
class FigureJob:
    """One figure to draw: a question figure (``name`` in :data:`FIGURES`) of a facet, or a run's timeline."""

    name: str
    facet: str = ""
    run_id: str = ""

    @property
    def base(self) -> str:
        """The file's path under ``figures/`` without its suffix: ``throughput_echo``, ``timelines/<run_id>``."""
        if self.run_id:
            return f"timelines/{self.run_id}"
        return f"{self.name}_{self.facet}" if self.facet else self.name


class FiguresFailed(Exception):
    """Some figures could not be drawn; the others are written. ``failures`` maps a figure to its error."""

    def __init__(self, written: list[Path], failures: dict[str, str]):
        first = next(iter(failures.items()))
        super().__init__(
            f"{len(failures)} figure{'' if len(failures) == 1 else 's'} could not be drawn "
            f"(first: {first[0]}: {first[1]})"
        )
        self.written = written
        self.failures = failures


def figure_jobs(results: Results, timelines: bool | Iterable[str] = True) -> list[FigureJob]:
    """The figures of ``results`` worth drawing, in the report's order (per-run timelines last).

    ``timelines`` is True (every run's), False (none) or the run ids to draw.
    A job whose figure has no data draws nothing.
    """
    jobs = [FigureJob(name, view.facet) for name in FIGURES for view in results.facets()]
    run_ids = results.runs["run_id"].tolist() if timelines is True else (timelines or ())
    jobs += [FigureJob("timeline", run_id=str(run_id)) for run_id in run_ids]
    return jobs


#: The folder being plotted, loaded once: set by :func:`plot_results` before the
#: workers fork, so they inherit it instead of reading the folder again.
_SOURCE: dict[str, tuple[Results, Any, dict[str, Results]]] = {}


#: The timeline figure this process draws the next timeline over (at most one), dropped with _SOURCE.
_TIMELINE: list[Figure] = []


def _source(results_dir: Path, loaded: Results | None = None) -> tuple[Results, Any, dict[str, Results]]:
    """(results, calibration, {facet: view}) of the folder (``loaded``: already read), each view's statistics computed once."""
    from bench.findings import load_calibration

    key = str(results_dir)
    if key not in _SOURCE:  # in plot_results, or in a worker that was not forked from it
        _SOURCE.clear()
        results = loaded if loaded is not None else load_results(results_dir)
        views = {view.facet: view for view in results.facets()}
        for view in views.values():
            view.aggregate  # noqa: B018 - computed before the workers fork, so each inherits it
        _SOURCE[key] = (results, load_calibration(results_dir), views)
    return _SOURCE[key]


def job_formats(job: FigureJob, formats: tuple[str, ...] | None) -> tuple[str, ...]:
    """The formats ``job`` is saved in: ``formats`` when given, else the default of its kind."""
    if formats is not None:
        return formats
    return TIMELINE_FORMATS if job.run_id else FIGURE_FORMATS


def draw_job(
    results_dir: Path, job: FigureJob, formats: tuple[str, ...] | None, spectrum_point: int | None = None
) -> list[Path]:
    """Draw one figure of ``results_dir`` into its ``figures/`` in every format
    (None: :func:`job_formats`' default); returns the files written."""
    formats = job_formats(job, formats)
    results, calibration, views = _source(results_dir)
    with style.settings():
        if job.run_id:
            try:  # drawn over the last timeline this process drew: see timeline_figure
                fig = timeline_figure(results, job.run_id, into=_TIMELINE[0] if _TIMELINE else None)
            except BaseException:
                _TIMELINE.clear()  # half drawn over: the next one starts afresh
                raise
            _TIMELINE[:] = [fig] if fig is not None else _TIMELINE
        else:
            fig = FIGURES[job.name](views[job.facet], spectrum_point, calibration)
        if fig is None:
            return []
        return save_figure(fig, Path(results_dir) / "figures" / job.base, formats, tight=not job.run_id)


def _worker_init() -> None:
    # The parent handles Ctrl-C, SIGTERM and SIGHUP: it lets the figures being
    # drawn finish (each is written whole) and stops handing out new ones.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def plot_workers(jobs: int) -> int:
    """How many processes draw ``jobs`` figures: one per usable CPU, at most :data:`MAX_PLOT_WORKERS`."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_PLOT_WORKERS, jobs))


def plot_results(
    results_dir: Path,
    formats: Iterable[str] | None = None,
    *,
    timelines: bool | Iterable[str] = True,
    spectrum_point: int | None = None,
    jobs: Sequence[FigureJob] | None = None,
    workers: int | None = None,
    on_figure: Callable[[int, int, FigureJob], None] | None = None,
    results: Results | None = None,
) -> list[Path]:
    """Write every figure of ``results_dir`` into ``results_dir/figures/``; return the files written.

    ``formats`` None writes :data:`FIGURE_FORMATS` for the question figures
    and :data:`TIMELINE_FORMATS` for the timelines; given, it applies to all.
    ``spectrum_point`` picks the point of the latency spectrum (default: the
    last, largest one). ``timelines=False`` skips the per-run timelines, a
    list of run ids draws only theirs; ``jobs`` gives the figures to draw
    instead (see :func:`figure_jobs`). The figures are drawn by
    :func:`plot_workers` processes at once (``workers`` overrides it; 1 draws
    in this process); ``on_figure(done, total, job)`` is called as each ends.
    ``results``, the folder already read (:func:`bench.stats.load_results`),
    is drawn from instead of reading it again, its statistics included.

    Error handling: a figure that fails is reported, not lost: the others are
    drawn, then :class:`FiguresFailed` names each failed one and its error. A
    full disk raises :class:`bench.results.DiskFull` once the figures being
    drawn have ended. Resource handling: the worker processes ignore stop
    signals; on one, the parent cancels the figures not started, waits for
    the ones being drawn (each written whole) and reaps the workers.
    """
    results_dir = Path(results_dir)
    formats = None if formats is None else tuple(formats)
    _SOURCE.clear()
    _TIMELINE.clear()
    try:
        results = _source(results_dir, results)[0]  # loaded before the workers fork
        todo = list(jobs) if jobs is not None else figure_jobs(results, timelines)
        return _draw_all(results_dir, todo, formats, spectrum_point, workers, on_figure)
    finally:
        _SOURCE.clear()  # the next call reads the folder afresh
        _TIMELINE.clear()


def _draw_all(
    results_dir: Path,
    todo: list[FigureJob],
    formats: tuple[str, ...] | None,
    spectrum_point: int | None,
    workers: int | None,
    on_figure: Callable[[int, int, FigureJob], None] | None,
) -> list[Path]:
    """:func:`plot_results` once the jobs are known."""
    workers = plot_workers(len(todo)) if workers is None else max(1, min(workers, len(todo) or 1))
    written: list[Path] = []
    failures: dict[str, str] = {}
    disk_full: DiskFull | None = None

    def done(job: FigureJob, call: Callable[[], list[Path]]) -> None:
        nonlocal disk_full
        try:
            written.extend(call())
        except DiskFull as exc:
            disk_full = disk_full or exc
        except Exception as exc:  # noqa: BLE001 - one figure's failure does not lose the others
            failures[job.base] = f"{type(exc).__name__}: {exc}"

    count = 0
    if workers == 1:
        for job in todo:
            if disk_full:
                break
            done(job, functools.partial(draw_job, results_dir, job, formats, spectrum_point))
            count += 1
            if on_figure:
                on_figure(count, len(todo), job)
    else:
        # fork: the workers inherit the loaded results and matplotlib instead of importing and reading again
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
            try:
                futures = {pool.submit(draw_job, results_dir, job, formats, spectrum_point): job for job in todo}
                for future in concurrent.futures.as_completed(futures):
                    done(futures[future], future.result)
                    count += 1
                    if on_figure:
                        on_figure(count, len(todo), futures[future])
                    if disk_full:
                        pool.shutdown(wait=True, cancel_futures=True)
                        break
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    if disk_full:
        raise disk_full
    if failures:
        raise FiguresFailed(written, failures)
    return written


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bench plot``."""
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a results folder written by `bench run`")
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=("png", "svg", "pdf"),
        help="figure format of every figure, timelines included; repeat for several "
        "(default: png and svg, timelines png only)",
    )
    parser.add_argument(
        "--point",
        type=int,
        default=None,
        help="point index for the latency spectrum (default: the last, largest point)",
    )
    parser.add_argument(
        "--no-timelines",
        dest="timelines",
        action="store_false",
        help="skip the per-run timeline figures (faster on big scenarios)",
    )


def plot_command(args: argparse.Namespace) -> int:
    """Run ``bench plot``; returns the exit status."""
    from bench.summary import ensure_summary

    try:
        if ensure_summary(args.results_dir):
            print(f"wrote {Path(args.results_dir) / 'summary.json'} (it was missing)")
        paths = plot_results(
            args.results_dir,
            tuple(args.formats) if args.formats else None,
            timelines=getattr(args, "timelines", True),
            spectrum_point=getattr(args, "point", None),
        )
    except NotAResultsFolder as exc:
        print(f"bench plot: {exc}", file=sys.stderr)
        return 2
    except DiskFull as exc:
        print(
            f"bench plot: {exc}; the figures written before it are whole. Free some space and run it again.",
            file=sys.stderr,
        )
        return 1
    except FiguresFailed as exc:
        for base, error in exc.failures.items():
            print(f"bench plot: {base}: {error}", file=sys.stderr)
        print(f"bench plot: {exc}; the other {len(exc.written)} files are written", file=sys.stderr)
        return 1
    main = [p for p in paths if p.parent.name == "figures"]
    print(
        f"wrote {len(paths)} figure files to {Path(args.results_dir) / 'figures'}"
        f" ({len(main)} summary figures, {len(paths) - len(main)} timeline files)"
    )
    for p in main:
        print(f"  {p}")
    return 0
