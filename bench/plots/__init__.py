"""``bench plot``: the figures of a results folder, one per question.

:func:`plot_results` writes into ``RESULTS_DIR/figures/``:

==========================  ==================================================
``throughput``              Which model keeps throughput as the parameter grows?
``latency``                 p50 and p99 against the parameter
``latency_spectrum``        percentile spectrum per model at one point
``connections``             connection outcomes (ok/timeout/reset/refused/other)
``connect_time``            connect-time CDF, where dropped SYNs show as steps at the SYN retry times
``memory``                  PSS beside summed RSS, processes, threads
``timelines/<run_id>``      one per run: throughput, p99, memory, tasks, queue
==========================  ==================================================

each in every requested format (PNG and SVG by default). A figure the folder
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
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import matplotlib
from matplotlib.figure import Figure

from bench.plots import figures as _figures
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
}

#: SVG ids are salted with a constant so the same data gives the same file (diffable, cacheable).
_RC = {"svg.hashsalt": "sockbench", "svg.fonttype": "path", "font.size": 9}

__all__ = ["FIGURES", "add_plot_arguments", "build_figures", "plot_command", "plot_results",
           "save_figure", "timeline_figure"]


def build_figures(results: Results, spectrum_point: int | None = None, calibration: Any = None) -> dict[str, Figure]:
    """Every per-question figure that the folder has data for, by name (not saved).

    A folder with several services (``service: [echo, file]``) gets each
    figure per service, named ``<figure>_<service>``: echo req/s and file
    MB/s do not share an axis. ``calibration`` (``bench calibrate``'s saved
    figures) adds the machine's ceiling to the throughput figure.
    """
    out = {}
    facets = results.facets()
    with matplotlib.rc_context(_RC):
        for name, build in FIGURES.items():
            for view in facets:
                fig = build(view, spectrum_point, calibration)
                if fig is not None:
                    out[f"{name}_{view.facet}" if view.facet else name] = fig
    return out


def save_figure(fig: Figure, base: Path, formats: Iterable[str], *, tight: bool = True) -> list[Path]:
    """Save ``fig`` as ``base.<fmt>`` for each format; returns the paths written.

    The layout is computed for the first format and frozen for the others
    (it is the slow part of saving). ``tight=False`` skips trimming the
    margins, which costs one more draw: used for the many timelines.

    Error handling: each file is written whole or not at all
    (:func:`bench.results.atomic_file`); a full disk raises
    :class:`bench.results.DiskFull`.
    """
    paths = []
    base.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(_RC):
        for i, fmt in enumerate(formats):
            path = base.with_suffix(f".{fmt}")
            extra = {"bbox_inches": "tight", "pad_inches": 0.15} if tight else {}
            # temp + rename: a full disk or Ctrl-C never leaves a truncated figure
            with atomic_file(path, "wb") as fh:
                fig.savefig(fh, format=fmt, metadata=_metadata(fmt), **extra)
            if i == 0:
                fig.set_layout_engine("none")  # positions stay as laid out for the first format
            paths.append(path)
    return paths


def _metadata(fmt: str) -> dict[str, str | None]:
    # no creation date: re-plotting the same data gives byte-identical files
    if fmt == "svg":
        return {"Date": None}
    if fmt == "png":
        return {"Software": "sockbench"}
    return {}


def plot_results(results_dir: Path, formats: Iterable[str] = ("png", "svg"), *, timelines: bool = True,
                 spectrum_point: int | None = None) -> list[Path]:
    """Write every figure of ``results_dir`` into ``results_dir/figures/``; return the files written.

    ``spectrum_point`` picks the point of the latency spectrum (default: the
    last, largest one). ``timelines=False`` skips the per-run timelines,
    which are the slow part on large scenarios.
    """
    from bench.findings import load_calibration

    results = load_results(results_dir)
    formats = tuple(formats)
    calibration = load_calibration(results_dir)
    out_dir = Path(results_dir) / "figures"
    written: list[Path] = []
    with matplotlib.rc_context(_RC):
        for name, fig in build_figures(results, spectrum_point, calibration).items():
            written += save_figure(fig, out_dir / name, formats)
        if timelines:
            for run_id in results.runs["run_id"]:
                fig = timeline_figure(results, run_id)
                if fig is not None:
                    written += save_figure(fig, out_dir / "timelines" / run_id, formats, tight=False)
    return written


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bench plot``."""
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a results folder written by `bench run`")
    parser.add_argument("--format", dest="formats", action="append", choices=("png", "svg", "pdf"),
                        help="figure format; repeat for several (default: png and svg)")
    parser.add_argument("--point", type=int, default=None,
                        help="point index for the latency spectrum (default: the last, largest point)")
    parser.add_argument("--no-timelines", dest="timelines", action="store_false",
                        help="skip the per-run timeline figures (faster on big scenarios)")


def plot_command(args: argparse.Namespace) -> int:
    """Run ``bench plot``; returns the exit status."""
    try:
        paths = plot_results(args.results_dir, tuple(args.formats or ("png", "svg")),
                             timelines=getattr(args, "timelines", True), spectrum_point=getattr(args, "point", None))
    except NotAResultsFolder as exc:
        print(f"bench plot: {exc}", file=sys.stderr)
        return 2
    except DiskFull as exc:
        print(f"bench plot: {exc}; the figures written before it are whole. Free some space and run it again.",
              file=sys.stderr)
        return 1
    main = [p for p in paths if p.parent.name == "figures"]
    print(f"wrote {len(paths)} figure files to {Path(args.results_dir) / 'figures'}"
          f" ({len(main)} summary figures, {len(paths) - len(main)} timeline files)")
    for p in main:
        print(f"  {p}")
    return 0
