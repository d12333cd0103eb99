"""The figures of one results folder, one per question.

Every function here takes a :class:`bench.stats.Results` and returns a
:class:`matplotlib.figure.Figure` (or ``None`` when the folder has nothing to
answer that question with, e.g. no connect histograms). Saving is the
caller's business (:func:`bench.plots.plot_results` writes files, the report
embeds them), so one figure is built once and never depends on the disk.

Reading the data:

* lines show the **median** over successful repetitions and a band from
  **min to max**; nothing is smoothed or fitted;
* the x axis is the first swept parameter (:attr:`Results.x_param`); other
  swept parameters become separate lines with their own line style; when
  nothing is swept the figure is a bar chart over models instead;
* flags (generator-bound, unstable, failed) are drawn at the point they
  concern, with a legend entry (see :mod:`bench.plots.style`), on every panel
  whose value they qualify: process and thread counts carry only "failed".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from bench.format import fmt_bytes, format_param
from bench.histograms import merge_histograms, recorded
from bench.parameters import SLOW_KINDS, axis_text, fast_clients
from bench.plots import style
from bench.stats import (
    DEFAULT_METRICS,
    LOWER_BOUNDED_METRICS,
    Results,
    aggregate,
    is_lower_bound,
    served_phrase,
)
from bench.vocabulary import (
    BOTH_SATURATED,
    FAILED,
    GENERATOR_BOUND,
    UNSTABLE,
    point_flags,
    slow_column,
    syn_retry_times,
)
from servers import registry

#: Words for the swept parameter, used in titles ("as clients grow") and x labels (from bench.parameters).
PARAM_TEXT: dict[str, tuple[str, str]] = axis_text()
_BYTE_PARAMS = ("message_bytes", "file_bytes")
#: The failure outcomes of a connection attempt, stacked in this order (greys and hatches:
#: they must not be mistaken for model colours).
OUTCOMES: list[tuple[str, Sequence[str], str, str]] = [
    ("ok", ("conn_ok",), "#d9d9d9", ""),
    ("timeout", ("conn_timeout",), "#404040", "//"),
    ("reset", ("conn_reset",), "#8c8c8c", "xx"),
    ("refused", ("conn_refused",), "#ffffff", ".."),
    ("other", ("conn_other", "conn_emfile", "conn_eaddrnotavail"), "#ffffff", "\\\\"),
    ("still connecting at the end", ("conn_pending",), "#fff3c4", "oo"),
]


# --------------------------------------------------------------------------
# The x axis


@dataclass
class XAxis:
    """How the swept parameter maps to positions on the x axis."""

    param: str | None
    values: list[Any]  # distinct parameter values in point order
    positions: dict[Any, float]
    scale: str  # linear | log | symlog | category

    def pos(self, value: Any) -> float:
        return self.positions[axis_key(value)]

    def apply(self, ax: Axes) -> None:
        if self.param is None:
            return
        if self.scale == "log":
            ax.set_xscale("log")
        elif self.scale == "symlog":
            positive = [v for v in self.positions.values() if v > 0]
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1)
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(self.positions.values()))))
        labels = {self.positions[axis_key(v)]: param_value_text(self.param, v) for v in self.values}
        ax.xaxis.set_major_formatter(FuncFormatter(lambda p, _i: labels.get(p, "")))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if self.scale == "category":
            lo, hi = min(self.positions.values()), max(self.positions.values())
            ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_xlabel(PARAM_TEXT.get(self.param, (None, self.param))[1])


def axis_key(v: Any) -> Any:
    """A parameter value as a plain Python key: 100.0 -> 100, numpy scalars -> int, bool (positions on an axis)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def param_value_text(param: str, v: Any) -> str:
    if param in _BYTE_PARAMS:
        try:
            return fmt_bytes(float(v)).replace(".0 ", " ")
        except (TypeError, ValueError):
            pass
    return format_param(v)


def x_axis(results: Results) -> XAxis:
    param = results.x_param
    if param is None:
        return XAxis(None, [], {}, "category")
    return make_x_axis(param, results.points[param].dropna().unique())


def make_x_axis(param: str, raw_values: Iterable[Any]) -> XAxis:
    """Positions and scale for the values a parameter takes (log when they span decades)."""
    values = list(dict.fromkeys(axis_key(v) for v in raw_values))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        values = sorted(values)
        positive = [v for v in values if v > 0]
        spread = len(positive) > 1 and max(positive) / min(positive) >= 20  # >~1.3 decades: log reads better
        if spread and len(positive) == len(values):
            scale = "log"
        elif spread:
            scale = "symlog"
        else:
            scale = "linear"
        return XAxis(param, values, {v: float(v) for v in values}, scale)
    return XAxis(param, values, {v: float(i) for i, v in enumerate(values)}, "category")


def grow_phrase(results: Results) -> str:
    """ "as clients grow" for a sweep; "at 20 clients" (the fixed load) for a single point."""
    if results.x_param is not None:
        return PARAM_TEXT.get(results.x_param, (f"as {results.x_param} changes", ""))[0]
    runs = results.runs
    clients = runs["clients"].dropna().unique() if len(runs) else []
    return f"at {format_param(clients[0])} clients" if len(clients) == 1 else ""


def _question(results: Results, sweep_text: str, single_text: str) -> str:
    """The figure's question: the sweep wording for lines, the single-point wording for bars."""
    return (sweep_text if results.x_param else single_text).format(grow_phrase(results))


# --------------------------------------------------------------------------
# Series: one line per model (and per combination of other swept parameters)


@dataclass
class Series:
    model: str
    label: str
    rows: pd.DataFrame  # aggregate rows, sorted along x
    linestyle: str


def series(results: Results) -> list[Series]:
    agg = results.aggregate
    if agg.empty:
        return []
    others = results.swept[1:]
    styles = ["-", "--", ":", "-."]
    out = []
    combos = [()] if not others else list(agg[others].drop_duplicates().itertuples(index=False, name=None))
    for model in results.models:
        for i, combo in enumerate(combos):
            rows = agg[agg["model"] == model]
            for p, v in zip(others, combo):
                rows = rows[rows[p] == v]
            if rows.empty:
                continue
            if results.x_param:
                rows = rows.sort_values(results.x_param)
            suffix = ", ".join(f"{p}={format_param(v)}" for p, v in zip(others, combo))
            ls = "--" if registry.is_ceiling_reference(model) and not others else styles[i % len(styles)]
            out.append(Series(model, f"{model} ({suffix})" if suffix else model, rows, ls))
    return out


def row_flags(row: pd.Series) -> list[str]:
    """The point's flags a figure marks, in drawing order (a busy machine is said in the warnings, not drawn)."""
    flags = point_flags(row)
    return [flag for flag in (GENERATOR_BOUND, BOTH_SATURATED, UNSTABLE, FAILED) if flag in flags]


def all_flags(results: Results) -> set[str]:
    return {f for _, r in results.aggregate.iterrows() for f in row_flags(r)}


#: Metrics beside which a point says how many clients were served ("served 1/20"):
#: throughput and latency describe only the clients that completed requests.
SERVED_METRICS = ("req_per_s", "mb_per_s") + LOWER_BOUNDED_METRICS


def metric_flags(row: pd.Series, metric: str, base: Callable[[pd.Series], list[str]] | None = None) -> list[str]:
    """``base`` (default :func:`row_flags`) plus the flags of this metric's value (a latency only a lower bound)."""
    return (base or row_flags)(row) + (
        ["lower-bound"] if metric in LOWER_BOUNDED_METRICS and is_lower_bound(row, metric) else []
    )


def _draw_point_marks(
    ax: Axes,
    x: float,
    y: float | None,
    row: pd.Series,
    metric: str,
    slot: int,
    base: Callable[[pd.Series], list[str]] | None = None,
) -> None:
    style.draw_flags(ax, x, y, metric_flags(row, metric, base), slot)
    if metric in SERVED_METRICS:
        style.draw_served(ax, x, y, served_phrase(row))


def _series_handles(ss: Sequence[Series]) -> list[Any]:
    handles: list[Any] = []
    for s in ss:
        kw = style.model_style(s.model)
        kw["linestyle"] = s.linestyle
        handles.append(Line2D([], [], label=s.label, **kw))
    return handles


def _metric_lines(
    ax: Axes,
    results: Results,
    xa: XAxis,
    metric: str,
    scale: Callable[[np.ndarray], np.ndarray] = lambda a: a,
    flags: Callable[[pd.Series], list[str]] | None = None,
) -> list[float]:
    """Median line + min-max band + flags of ``metric`` for every series; returns the plotted values."""
    flags = flags or row_flags
    plotted: list[float] = []
    for slot, s in enumerate(series(results)):
        x = np.array([xa.pos(axis_key(v)) for v in s.rows[xa.param]])
        med = scale(s.rows[f"{metric}_median"].to_numpy(dtype=float))
        lo = scale(s.rows[f"{metric}_min"].to_numpy(dtype=float))
        hi = scale(s.rows[f"{metric}_max"].to_numpy(dtype=float))
        kw = style.model_style(s.model)
        kw["linestyle"] = s.linestyle
        ax.plot(x, med, zorder=3, **kw)
        ax.fill_between(x, lo, hi, color=kw["color"], alpha=0.15, linewidth=0, zorder=2)
        plotted += [v for v in np.concatenate([lo, hi]) if np.isfinite(v)]
        for xi, yi, (_, row) in zip(x, med, s.rows.iterrows()):
            _draw_point_marks(ax, xi, yi if np.isfinite(yi) else None, row, metric, slot, flags)
    return plotted


def _metric_bars(
    ax: Axes,
    results: Results,
    metric: str,
    scale: Callable[[np.ndarray], np.ndarray] = lambda a: a,
    flags: Callable[[pd.Series], list[str]] | None = None,
) -> list[float]:
    """Single point: one bar per model (median) with a min-max error bar, plus flags."""
    flags = flags or row_flags
    agg = results.aggregate
    plotted: list[float] = []
    for i, model in enumerate(results.models):
        rows = agg[agg["model"] == model]
        if rows.empty:
            continue
        row = rows.iloc[0]
        med = float(scale(np.array([row[f"{metric}_median"]], dtype=float))[0])
        lo = float(scale(np.array([row[f"{metric}_min"]], dtype=float))[0])
        hi = float(scale(np.array([row[f"{metric}_max"]], dtype=float))[0])
        colour = style.model_colour(model)
        if np.isfinite(med):
            ax.bar(
                [i],
                [med],
                color=colour,
                width=0.7,
                zorder=3,
                hatch="//" if registry.is_ceiling_reference(model) else None,
                edgecolor="white",
            )
            ax.errorbar([i], [med], yerr=[[med - lo], [hi - med]], color="#333333", capsize=4, zorder=4)
            plotted += [lo, hi]
        _draw_point_marks(ax, i, hi if np.isfinite(hi) else None, row, metric, 0, flags)
    ax.set_xticks(range(len(results.models)), results.models, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(results.models) - 0.4)
    return plotted


def _draw_metric(
    ax: Axes,
    results: Results,
    metric: str,
    scale: Callable[[np.ndarray], np.ndarray] = lambda a: a,
    flags: Callable[[pd.Series], list[str]] | None = None,
) -> list[float]:
    if results.x_param is None:
        return _metric_bars(ax, results, metric, scale, flags)
    xa = x_axis(results)
    values = _metric_lines(ax, results, xa, metric, scale, flags)
    xa.apply(ax)
    return values


def _legend(fig: Figure, results: Results, extra: Sequence[Any] = ()) -> None:
    """Models (lines only: bars are labelled on the axis), extra entries, then the flags present."""
    handles = _series_handles(series(results)) if results.x_param is not None else []
    style.legend_right(fig, handles + list(extra) + style.flag_handles(all_flags(results)))


def _reps_note(results: Results) -> str:
    reps = int(results.runs["repetition"].max()) if len(results.runs) else 0
    if results.x_param is None:
        return f"bar = median of {reps} repetition{'s' if reps != 1 else ''}; whisker = min-max"
    return f"line = median of {reps} repetition{'s' if reps != 1 else ''}; band = min-max"


def _titles(results: Results, fig: Figure, question: str, subtitle: str = "") -> None:
    """The question (with the service when the folder holds several) and its reading note."""
    question = " ".join(question.split()).replace(" ?", "?")
    if results.facet:
        question = f"{question} ({results.facet} service)"
    style.titles(fig, question, subtitle)


def _has(results: Results, metric: str) -> bool:
    col = f"{metric}_median"
    return col in results.aggregate.columns and results.aggregate[col].notna().any()


# --------------------------------------------------------------------------
# Figures


def _draw_ceilings(ax: Axes, results: Results, metric: str, calibration: Any) -> list[float]:
    """Grey bars at the calibrated ceiling of each point that has one (``bench calibrate``)."""
    from bench.findings import ceiling_for, results_placement

    if calibration is None:
        return []
    xa = x_axis(results)
    placement = results_placement(results)
    drawn = []
    for row in results.points.to_dict("records"):
        c = ceiling_for(calibration, results.service, row, placement)
        if c is None or c.metric != metric:
            continue
        if xa.param is None:
            ax.axhline(c.value, color="#777777", linestyle=(0, (6, 3)), linewidth=1.2, zorder=1)
        else:
            ax.plot(
                [xa.pos(axis_key(row[xa.param]))],
                [c.value],
                marker="_",
                markersize=26,
                markeredgewidth=2.5,
                color="#777777",
                linestyle="none",
                zorder=2,
            )
        drawn.append(c.value)
    return drawn


def throughput_figure(results: Results, calibration: Any = None) -> Figure | None:
    """Which model keeps throughput as the parameter grows? (req/s, or MB/s for files)."""
    if results.aggregate.empty:
        return None
    file_service = results.service == "file" and _has(results, "mb_per_s")
    metric = "mb_per_s" if file_service else "req_per_s"
    fig, axes = style.new_figure(width=style.PANEL_W + 2.6)
    ax = axes[0, 0]
    values = _draw_metric(ax, results, metric)
    ceilings = _draw_ceilings(ax, results, metric, calibration)
    values += ceilings
    if file_service:
        ax.set_ylabel("throughput (MB/s, payload received)")
        question = _question(results, "Which model moves the most data {}?", "Which model moves the most data {}?")
    else:
        ax.set_ylabel("throughput (requests/s)")
        question = _question(results, "Which model keeps throughput {}?", "Which model serves the most requests {}?")
    style.count_axis(ax, values)
    if not style.spans_decades(values, 30):
        ax.set_ylim(bottom=0)
    _titles(results, fig, question, _reps_note(results))
    extra = (
        [
            Line2D(
                [],
                [],
                color="#777777",
                marker="_",
                markersize=16,
                markeredgewidth=2.5,
                linestyle="none",
                label="machine ceiling (bench calibrate)",
            )
        ]
        if ceilings
        else []
    )
    _legend(fig, results, extra)
    return fig


def latency_basis(results: Results) -> str:
    """From when to when a latency runs: the request sent (closed loop), or its scheduled start (open loop)."""
    modes = {m for m in results.runs["mode"] if m} if "mode" in results.runs else set()
    closed, opened = "request sent -> last byte of the reply", "scheduled start -> last byte of the reply"
    if modes == {"open"}:
        return f"open loop: {opened} (a request sent late counts its wait)"
    if "open" in modes:
        return f"closed loop: {closed}; open loop: {opened}"
    return closed


def latency_figure(results: Results) -> Figure | None:
    """How does latency (p50 and p99) change with the parameter?"""
    if not (_has(results, "lat_p50_us") or _has(results, "lat_p99_us")):
        return None
    fig, axes = style.new_figure(1, 2, width=2 * style.PANEL_W + 2.0, sharey=True)
    values: list[float] = []
    for ax, metric, name in (
        (axes[0, 0], "lat_p50_us", "median (p50)"),
        (axes[0, 1], "lat_p99_us", "99th percentile (p99)"),
    ):
        values += _draw_metric(ax, results, metric)
        ax.set_title(f"{name} request latency", fontsize=10)
    for ax in axes.flat:
        style.time_axis(ax, "y", values)
    axes[0, 0].set_ylabel("request latency (log scale)")
    _titles(
        results,
        fig,
        _question(results, "How does latency change {}?", "Which model answers fastest {}?"),
        _reps_note(results) + "; " + latency_basis(results),
    )
    lower = any(is_lower_bound(r, m) for _, r in results.aggregate.iterrows() for m in ("lat_p50_us", "lat_p99_us"))
    _legend(fig, results, style.flag_handles({"lower-bound"}) if lower else [])
    return fig


def default_spectrum_point(results: Results) -> int | None:
    """The point the percentile spectrum shows by default: the largest (last) one."""
    if results.points.empty:
        return None
    return int(results.points["point"].max())


def _point_label(results: Results, point: int) -> str:
    """'clients=100' for a swept point; '20 clients' when nothing is swept."""
    rows = results.points[results.points["point"] == point]
    label = rows["label"].iloc[0] if len(rows) else f"point {point}"
    if label in ("all", results.facet) and len(rows):
        clients = rows["clients"].iloc[0]
        return f"{format_param(clients)} clients" if clients == clients else "the single point"
    return label


def spectrum_figure(results: Results, point: int | None = None, kind: str = "latency") -> Figure | None:
    """HdrHistogram-style percentile spectrum per model at one point (x: 1/(1-p) on a log axis)."""
    if point is None or point not in set(results.points["point"]):
        point = default_spectrum_point(results)  # a point of another service falls back too
    if point is None:
        return None
    curves = []
    censored_any = False
    for model in results.models:
        ids = results.runs_at(model, point)["run_id"].tolist()
        hist = results.merged_histogram(ids, kind)
        censored = results.merged_histogram(ids, "censored") if kind == "latency" else None
        if censored is not None and censored.get_total_count():
            # requests that never completed, at the wait they had reached: left out, the
            # spectrum would drop exactly the slowest requests
            hist = merge_histograms([h for h in (hist, censored) if h is not None])
            censored_any = True
        if hist is not None:
            curves.append((model, hist, len(ids)))
    if not curves:
        return None
    fig, axes = style.new_figure(width=style.PANEL_W + 2.6, height=style.PANEL_H + 0.4)
    ax = axes[0, 0]
    max_x = 10.0
    all_y: list[float] = []
    agg = results.aggregate
    for slot, (model, hist, _n) in enumerate(curves):
        xs, ys = _spectrum(hist)
        all_y += list(ys)
        kw = style.model_style(model)
        kw.update(marker=None)
        ax.plot(xs, ys, zorder=3, **kw)
        max_x = max(max_x, xs[-1])
        uncorrected = results.merged_histogram(results.runs_at(model, point)["run_id"], "latency_uncorrected")
        if kind == "latency" and uncorrected is not None:
            ux, uy = _spectrum(uncorrected)
            ax.plot(ux, uy, color=kw["color"], linestyle=":", linewidth=1.2, zorder=3)
        row = agg[(agg["model"] == model) & (agg["point"] == point)]
        if len(row):
            p99 = hist.get_value_at_percentile(99.0)
            style.draw_flags(
                ax,
                100.0,
                p99,
                metric_flags(row.iloc[0], "lat_p99_us") if kind == "latency" else row_flags(row.iloc[0]),
                slot,
            )
            if kind == "latency":
                style.draw_served(ax, 100.0, p99, served_phrase(row.iloc[0]))
    ticks = [10.0**k for k in range(0, int(np.ceil(np.log10(max_x))) + 1)]
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: _percentile_label(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(ticks) > 6:  # long labels like 99.9999% collide beyond six decades
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_xlim(1, ticks[-1])
    ax.set_xlabel("percentile (log scale of 1/(1-p): each step right is 10x rarer)")
    style.time_axis(ax, "y", all_y)
    ax.set_ylabel(f"{'request latency' if kind == 'latency' else kind} (log scale)")
    handles = [Line2D([], [], label=m, **{**style.model_style(m), "marker": None}) for m, _, _ in curves]
    if any(results.hist_path(r, "latency_uncorrected").exists() for r in results.runs["run_id"]):
        handles.append(
            Line2D([], [], color="#555555", linestyle=":", label="uncorrected (open loop: from actual send)")
        )
    handles += style.flag_handles(
        {
            f
            for m, _, _ in curves
            for _, r in agg[(agg["model"] == m) & (agg["point"] == point)].iterrows()
            for f in (metric_flags(r, "lat_p99_us") if kind == "latency" else row_flags(r))
        }
    )
    style.legend_right(fig, handles)
    reps = max(n for _, _, n in curves)
    _titles(
        results,
        fig,
        f"How is latency spread at {_point_label(results, point)}?",
        f"percentile spectrum, {reps} repetition{'s' if reps != 1 else ''} merged; "
        "flat = predictable, a late climb = rare slow requests"
        + ("; requests that never completed count at the wait they reached (a lower bound)" if censored_any else ""),
    )
    return fig


def _spectrum(hist: Any) -> tuple[np.ndarray, np.ndarray]:
    """(1/(1-p), value) pairs up to the percentile the sample count supports, plus the max."""
    total = hist.get_total_count()
    top = max(1.0, np.log10(max(total, 10)))  # beyond 1/total the percentile is just the max
    ks = np.arange(0.0, top + 1e-9, 0.05)  # 20 points per decade: smooth without bloating SVGs
    pcts = [100.0 * (1.0 - 10.0**-k) for k in ks]
    values = hist.get_percentile_to_value_dict(pcts)
    xs = list(10.0**ks)
    ys = [max(values[p], hist.get_min_value(), 1) for p in pcts]
    xs.append(10.0 ** (top + 0.3))
    ys.append(hist.get_max_value())
    return np.array(xs), np.array(ys, dtype=float)


def _percentile_label(x: float) -> str:
    if x <= 1.0:
        return "0%"
    k = int(round(np.log10(x)))
    p = 100.0 * (1 - 10.0**-k)
    return f"{p:.{max(0, k - 2)}f}%"


def connections_figure(results: Results) -> Figure | None:
    """Do connection attempts get through? Stacked outcome shares per point, one panel per model."""
    runs = results.runs[results.runs["status"] == "ok"]
    if runs.empty or runs[[c for _, cols, _, _ in OUTCOMES for c in cols]].isna().all().all():
        return None
    models = results.models
    xa = x_axis(results)
    agg = results.aggregate
    # a sweep: one panel per model, a bar per point; a single point: one panel, a bar per model
    panels = [(m, agg[agg["model"] == m].sort_values("point")) for m in models] if xa.param else [(None, agg)]
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    width = 4.3 * ncols + 2.4 if xa.param else 1.0 * len(models) + 4.5
    fig, axes = style.new_figure(nrows, ncols, width=width, height=3.3 * nrows + 0.8, sharey=True)
    any_failure = False
    for i, (model, rows) in enumerate(panels):
        ax = axes.flat[i]
        labels, bottoms, positions = [], None, np.arange(len(rows))
        shares = []
        for _, row in rows.iterrows():
            counts = [sum(np.nan_to_num(row.get(f"{c}_median", np.nan)) for c in cols) for _, cols, _, _ in OUTCOMES]
            total = sum(counts)
            shares.append([100.0 * c / total if total else 0.0 for c in counts])
            any_failure |= total > 0 and counts[0] < total
            labels.append(param_value_text(xa.param, row[xa.param]) if xa.param else row["model"])
        shares_arr = np.array(shares) if shares else np.zeros((0, len(OUTCOMES)))
        bottoms = np.zeros(len(rows))
        for j, (_name, _, colour, hatch) in enumerate(OUTCOMES):
            ax.bar(
                positions,
                shares_arr[:, j],
                bottom=bottoms,
                color=colour,
                hatch=hatch,
                edgecolor="#333333",
                linewidth=0.6,
                width=0.7,
                zorder=3,
            )
            bottoms += shares_arr[:, j]
        for pos, (_, row), sh in zip(positions, rows.iterrows(), shares_arr):
            failed = 100.0 - sh[0]
            if failed >= 0.5:
                ax.text(pos, 101, f"{failed:.0f}%\nnot ok", ha="center", va="bottom", fontsize=7)
            style.draw_flags(ax, float(pos), None if row["n_ok"] == 0 else 50.0, row_flags(row), 0)
        ax.set_ylim(0, 118)  # room for the "N% failed" labels above full bars
        if model is not None:
            ax.set_xticks(positions, labels, fontsize=8)
            ax.set_title(model, color=style.model_colour(model), fontweight="bold", fontsize=10)
            param = xa.param or ""  # set: there is a panel per model only along a swept parameter
            ax.set_xlabel(PARAM_TEXT.get(param, ("", param))[1], fontsize=8)
        else:
            ax.set_xticks(positions, labels, rotation=20, ha="right")
            for tick, name in zip(ax.get_xticklabels(), labels):
                tick.set_color(style.model_colour(name))
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    for r in range(nrows):
        axes[r, 0].set_ylabel("connection attempts (%)")
    handles: list[Any] = [Patch(facecolor=c, hatch=h, edgecolor="#333333", label=n) for n, _, c, h in OUTCOMES]
    handles += style.flag_handles(all_flags(results))
    style.legend_right(fig, handles)
    sub = (
        "share of connect attempts per run by outcome (median over repetitions); on Linux a full "
        "listen queue drops SYNs: timeouts, not refusals"
    )
    if not any_failure:
        sub = "every connection attempt succeeded at every point; " + sub
    _titles(results, fig, _question(results, "Do connections get through {}?", "Do connections get through {}?"), sub)
    return fig


def _chosen_points(results: Results, most: int = 4) -> list[int]:
    points = sorted(int(p) for p in results.points["point"])
    if len(points) <= most:
        return points
    idx = np.linspace(0, len(points) - 1, most).round().astype(int)
    return [points[i] for i in sorted(set(idx))]


def connect_time_figure(results: Results) -> Figure | None:
    """How long does connecting take? CDF of connect time over all attempts, per point."""
    points = _chosen_points(results)
    panels = []
    for point in points:
        curves = []
        for model in results.models:
            ok = results.runs_at(model, point)
            hist = results.merged_histogram(ok["run_id"], "connect")
            if hist is None:
                continue
            attempts = sum(np.nansum(ok[c].to_numpy(dtype=float)) for _, cols, _, _ in OUTCOMES for c in cols)
            curves.append((model, hist, attempts))
        if curves:
            panels.append((point, curves))
    if not panels:
        return None
    ncols = min(2, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = style.new_figure(
        nrows, ncols, width=5.2 * ncols + 2.6, height=3.4 * nrows + 0.9, sharex=True, sharey=True
    )
    agg = results.aggregate
    retries = syn_retry_times(results.environment.get("sysctls", {}))
    lo, hi = np.inf, 0.0
    for ax, (point, curves) in zip(axes.flat, panels):
        for slot, (model, hist, attempts) in enumerate(curves):
            xs, ys = _cdf(hist, attempts)
            ax.step(xs, ys, where="post", zorder=3, **{**style.model_style(model), "marker": None})
            lo, hi = min(lo, xs[0]), max(hi, xs[-1])
            row = agg[(agg["model"] == model) & (agg["point"] == point)]
            if len(row):
                style.draw_flags(ax, xs[-1], ys[-1], row_flags(row.iloc[0]), slot)
        # where the client retransmits a dropped SYN, from this run's sysctls
        labelled = 0.0
        for i, t in enumerate(retries[:4]):
            ax.axvline(t * 1e6, color="#999999", linestyle=":", linewidth=1, zorder=1)
            if t >= 2 * labelled:  # on a log axis closer marks would print over each other
                ax.text(
                    t * 1e6,
                    2,
                    ("SYN retry\n" if i == 0 else "") + f"{t:g} s",
                    fontsize=7,
                    color="#555555",
                    ha="left",
                    va="bottom",
                )
                labelled = t
        ax.set_title(_point_label(results, point), fontsize=10)
        ax.set_ylim(0, 104)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    xlim = (max(1.0, lo / 2), max(hi * 2, 1e7))  # always show the first SYN retry marks
    for ax in axes.flat:
        style.time_axis(ax, "x", xlim)
        ax.set_xlim(*xlim)
    for r in range(nrows):
        axes[r, 0].set_ylabel("attempts connected within t (%)")
    for c in range(ncols):
        axes[nrows - 1, c].set_xlabel("connect time t (log scale)")
    models = [m for m in results.models if any(m == mm for _, cs in panels for mm, _, _ in cs)]
    handles = [Line2D([], [], label=m, **{**style.model_style(m), "marker": None}) for m in models]
    style.legend_right(fig, handles + style.flag_handles(all_flags(results)))
    _titles(
        results,
        fig,
        "How long does connecting take?",
        "cumulative share of all connect attempts; a curve ending below 100% = attempts that "
        "never connected; steps at the dotted lines = dropped SYNs retransmitted by the client "
        f"({', '.join(f'{t:g}' for t in retries[:4])} s after the first, on this kernel)",
    )
    return fig


def _cdf(hist: Any, attempts: float) -> tuple[np.ndarray, np.ndarray]:
    """Connect-time CDF as a share of all attempts (timeouts keep it below 100%)."""
    xs, counts = [], []
    for value, count in recorded(hist):
        xs.append(max(1.0, float(value)))
        counts.append(count)
    total = hist.get_total_count()
    reached = total / attempts if attempts and attempts >= total else 1.0
    cum = np.cumsum(counts) / total * 100.0 * reached
    return np.concatenate([[xs[0]], xs]), np.concatenate([[0.0], cum])


def memory_figure(results: Results) -> Figure | None:
    """How much memory does each model need? PSS and summed RSS side by side, processes, threads."""
    if not (_has(results, "mem_pss_peak_bytes") or _has(results, "mem_rss_peak_bytes")):
        return None
    fig, axes = style.new_figure(2, 2, width=2 * style.PANEL_W + 2.2, height=2 * style.PANEL_H + 0.6)
    mem_values: list[float] = []
    for ax, metric, name in (
        (axes[0, 0], "mem_pss_peak_bytes", "PSS (shared pages split between processes)"),
        (axes[0, 1], "mem_rss_peak_bytes", "summed RSS (shared pages counted per process)"),
    ):
        mem_values += _draw_metric(ax, results, metric)
        ax.set_title(f"peak {name}", fontsize=10)
        if not _has(results, metric):
            ax.text(
                0.5,
                0.5,
                f"{metric} not measured\n{_mem_note(results)}",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=9,
                color="#aa0000",
            )
    for ax in (axes[0, 0], axes[0, 1]):
        style.bytes_axis(ax, mem_values)  # the same limits on both: PSS and RSS read against one scale
    axes[0, 0].set_ylabel("server memory, whole process tree")
    counts: list[float] = []
    for ax, metric, name in ((axes[1, 0], "procs_peak", "processes"), (axes[1, 1], "threads_peak", "threads")):
        # A generator-bound or unstable throughput says nothing about how many processes served it:
        # only a failed run (fewer repetitions behind the count) is marked on the counts.
        counts += _draw_metric(ax, results, metric, flags=lambda row: [f for f in row_flags(row) if f == "failed"])
        ax.set_title(f"peak {name} in the server's tree", fontsize=10)
        ax.set_ylabel(f"{name} (count)")
    for ax in (axes[1, 0], axes[1, 1]):
        style.count_axis(ax, counts)
        if not style.spans_decades(counts, 30):
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # no 2.5 processes
    _legend(fig, results)
    _titles(
        results,
        fig,
        _question(results, "How much memory does each model need {}?", "How much memory does each model need {}?"),
        _reps_note(results) + "; PSS is the honest total for forked processes, summed RSS "
        "double-counts their shared pages",
    )
    return fig


def _mem_note(results: Results) -> str:
    notes = [n for n in results.runs["mem_note"].unique() if n]
    return notes[0][:80] if notes else ""


# --------------------------------------------------------------------------
# Little's law: concurrency against the round trip at a fixed offered rate


#: The parameter the Little's law figure reads along: the round trip the link adds (bench.parameters).
RTT_PARAM = "net_rtt_ms"


def _in_flight(results: Results) -> pd.DataFrame:
    """Per model and point, the median over successful runs of req/s x mean latency: requests in flight (L = X W)."""
    runs = results.runs
    ok = runs[(runs["status"] == "ok") & runs["lat_mean_us"].notna() & runs["req_per_s"].notna()].copy()
    ok["in_flight"] = ok["req_per_s"] * ok["lat_mean_us"] / 1e6
    return ok.groupby(["model", RTT_PARAM], as_index=False)["in_flight"].median()


def littles_law_figure(results: Results) -> Figure | None:
    """How many threads and processes does a fixed offered rate need as the round trip grows?

    Drawn for an open-loop folder whose first swept parameter is the link's
    round trip: beside each model's peak threads (summed over its process
    tree, so a forked child counts as its one thread) the line rate x RTT,
    the requests in flight Little's law predicts, and on the right the
    requests in flight measured (each run's req/s x mean latency, the
    latency counted from the scheduled start).
    """
    if results.x_param != RTT_PARAM or "rate" not in results.points or results.points["rate"].isna().all():
        return None
    if not _has(results, "threads_peak"):
        return None
    rate = float(results.points["rate"].dropna().iloc[0])
    xa = x_axis(results)
    rtts = np.array(sorted(float(v) for v in xa.values))
    predicted = rate * rtts / 1e3
    fig, axes = style.new_figure(1, 2, width=2 * style.PANEL_W + 2.2, sharey=True)
    counts = _draw_metric(
        axes[0, 0], results, "threads_peak", flags=lambda row: [f for f in row_flags(row) if f == "failed"]
    )
    axes[0, 0].set_title("peak threads in the server's tree", fontsize=10)
    axes[0, 0].set_ylabel("count (threads, or requests)")
    measured = _in_flight(results)
    agg = results.aggregate
    for slot, model in enumerate(results.models):
        rows = measured[measured["model"] == model].sort_values(RTT_PARAM)
        if rows.empty:
            continue
        kw = style.model_style(model)
        xs = [xa.pos(axis_key(v)) for v in rows[RTT_PARAM]]
        axes[0, 1].plot(xs, rows["in_flight"], zorder=3, **kw)
        counts += [v for v in rows["in_flight"] if np.isfinite(v) and v > 0]
        # a generator-bound or unstable point qualifies the latency, so the requests in flight too
        for x, rtt, value in zip(xs, rows[RTT_PARAM], rows["in_flight"]):
            point = agg[(agg["model"] == model) & (agg[RTT_PARAM] == rtt)]
            if len(point):
                style.draw_flags(axes[0, 1], x, value, row_flags(point.iloc[0]), slot)
    axes[0, 1].set_title("requests in flight, measured: req/s x mean latency", fontsize=10)
    xa.apply(axes[0, 1])
    law = Line2D([], [], color="#000000", linestyle=(0, (5, 3)), linewidth=1.6, label="rate x RTT (Little's law)")
    for ax in axes.flat:
        ax.plot(
            [xa.pos(axis_key(v)) for v in xa.values],
            predicted,
            color="#000000",
            linestyle=(0, (5, 3)),
            linewidth=1.6,
            zorder=4,
        )
    counts += [float(v) for v in predicted if v > 0]
    for ax in axes.flat:
        ax.set_yscale("log")
        style.count_axis(ax, counts + [1.0])
    _legend(fig, results, [law])
    _titles(
        results,
        fig,
        f"How many threads does {format_param(rate)} requests/s need as the round trip grows?",
        _reps_note(results) + f"; dashed: {format_param(rate)}/s x the added round trip, the requests "
        "in flight L = rate x time in the system; a thread per connection holds every connection, busy or not",
    )
    return fig


# --------------------------------------------------------------------------
# Slow clients (load.mix)

#: The per-run numbers the slow-clients figure adds to the medians: the share of the fast clients
#: served, and the slow clients' connections the server ended (see :func:`slow_clients_figure`).
_MIX_METRICS = ("fast_served_pct", "slow_closed")


def _has_slow_clients(results: Results) -> bool:
    runs = results.runs
    return any(kind in runs.columns and runs[kind].fillna(0).astype(float).gt(0).any() for kind in SLOW_KINDS)


def _mix_view(results: Results) -> Results:
    """``results`` with :data:`_MIX_METRICS` computed per run and their medians in the aggregate."""
    runs = results.runs.copy()
    fast = pd.Series([fast_clients(row) for row in runs.to_dict("records")], index=runs.index, dtype=float)
    runs["fast_served_pct"] = 100.0 * runs["clients_served"].astype(float) / fast.where(fast > 0)
    closed = [slow_column(kind, "closed") for kind in SLOW_KINDS if slow_column(kind, "closed") in runs.columns]
    runs["slow_closed"] = runs[closed].astype(float).sum(axis=1, min_count=1) if closed else np.nan
    view = dataclasses.replace(results, runs=runs)
    # Seeded into the cached property: the medians of the usual metrics and of these two.
    view.__dict__["aggregate"] = aggregate(runs, [*DEFAULT_METRICS, *_MIX_METRICS])
    return view


def slow_clients_figure(results: Results) -> Figure | None:
    """Do the fast clients keep being served as slow clients (load.mix) take a share of the connections?

    Four panels over the slow share (or whatever is swept): the fast
    clients' throughput and p99 latency (the usual columns, which count the
    fast clients only), the share of the fast clients that completed a request
    in the window, and the slow clients' connections the server ended (an
    idle or request timeout, or a server out of patience). Drawn only for a
    folder with slow clients.
    """
    if results.aggregate.empty or not _has_slow_clients(results):
        return None
    view = _mix_view(results)
    fig, axes = style.new_figure(2, 2, width=2 * style.PANEL_W + 2.4)
    throughput = _draw_metric(axes[0, 0], view, "req_per_s")
    style.count_axis(axes[0, 0], throughput)
    axes[0, 0].set_ylim(bottom=0)
    axes[0, 0].set_title("fast clients' throughput (requests/s)", fontsize=10)
    latency = _draw_metric(axes[0, 1], view, "lat_p99_us")
    style.time_axis(axes[0, 1], "y", latency)
    axes[0, 1].set_title("fast clients' p99 latency (log scale)", fontsize=10)
    _draw_metric(axes[1, 0], view, "fast_served_pct")
    axes[1, 0].set_ylim(-5, 105)
    axes[1, 0].set_title("fast clients served in the window (%)", fontsize=10)
    closed = _draw_metric(axes[1, 1], view, "slow_closed")
    # whole connections, linear (0 is the telling value): integer ticks, and an axis up to 1 at least when none was ended
    axes[1, 1].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1, 1].set_ylim(0, max([1.0, *(v for v in closed if np.isfinite(v))]) * 1.05)
    axes[1, 1].set_title("slow clients' connections the server ended", fontsize=10)
    _titles(
        view,
        fig,
        _question(view, "Do the fast clients keep being served {}?", "Are the fast clients served {}?"),
        _reps_note(view) + "; fast clients: the closed/open-loop clients, every reply checked; "
        "slow ones: load.mix (slow readers, slowloris, idle)",
    )
    lower = any(is_lower_bound(r, "lat_p99_us") for _, r in view.aggregate.iterrows())
    _legend(fig, view, style.flag_handles({"lower-bound"}) if lower else [])
    return fig
