"""One figure per run: what happened second by second.

Five panels share the time axis (seconds since the measured window started;
the warmup, at negative times, is shaded): throughput and p99 latency as the
load generator saw them, server memory (PSS, summed RSS and USS), processes and
threads, and the listening socket's accept-queue depth next to the backlog
it may not exceed. A run that failed, was generator-bound or belongs to an
unstable point says so in its title, in the flag's legend marker.

Timelines are many (one per model x point x repetition), so they go to
``figures/timelines/`` and the report embeds only a selection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.format import format_param
from bench.plots import style
from bench.stats import Results, first_line, where_phrase
from bench.vocabulary import BOTH_SATURATED, FAILED, FAILED_STATUSES, GENERATOR_BOUND, UNSTABLE

MIB = 2**20
#: The panels of a timeline, one under the other: throughput, p99, memory, processes and threads, accept queue.
PANELS = 5
#: Second line of a panel (summed RSS, threads): dark grey, so it never passes for another model.
SECOND = "#555555"


def run_flags(results: Results, run: pd.Series) -> list[str]:
    flags = []
    if run.get("generator_bound") is True:
        flags.append(GENERATOR_BOUND)
    if run.get("both_saturated") is True:
        flags.append(BOTH_SATURATED)
    agg = results.aggregate
    # the one column looked up: selecting the whole rows copies every statistic's column
    unstable = agg.loc[(agg["model"] == run["model"]) & (agg["point"] == run["point"]), "unstable"]
    if len(unstable) and bool(unstable.iloc[0]):
        flags.append(UNSTABLE)
    if run.get("status") in FAILED_STATUSES:
        flags.append(FAILED)
    return flags


def timeline_figure(results: Results, run_id: str, into: Figure | None = None) -> Figure | None:
    """The timeline of ``run_id``, or None when the run left no timeline samples.

    ``into``, a figure an earlier call returned, is drawn over instead of
    making a new one: its panels and their ticks are kept and everything
    drawn on them is replaced (:func:`_wipe`), giving the same image as a
    new figure. Making five panels and their ticks costs about as much as
    drawing them, and a scenario has a timeline per run.
    """
    tl = results.timeline[results.timeline["run_id"] == run_id]
    if tl.empty:
        return None
    runs = results.runs[results.runs["run_id"] == run_id]
    run = runs.iloc[0] if len(runs) else pd.Series({"model": run_id, "point": -1, "repetition": 0})
    load = _at_bucket_middle(tl[tl["source"] == "load"].sort_values("t_s"))
    server = tl[tl["source"] == "server"].sort_values("t_s")
    model = str(run.get("model", ""))
    colour = style.model_colour(model)
    # a fixed layout (style.fixed_layout): the panels are always these five, one under the other
    if into is not None:
        fig = into
        _wipe(fig)
        axes = np.array(fig.axes).reshape(PANELS, 1)
    else:
        fig, axes = style.new_figure(PANELS, 1, width=style.PANEL_W + 3.0, height=9.0, sharex=True, layout=None)
    ax_x, ax_lat, ax_mem, ax_proc, ax_q = axes[:, 0]

    _line(ax_x, load, "req_per_s", colour, "throughput")
    ax_x.set_ylabel("requests/s")
    style.count_axis(ax_x, [])
    ax_x.set_ylim(bottom=0)

    if load["lat_p99_us"].notna().any():
        _line(ax_lat, load, "lat_p99_us", colour, "p99")
        # log only when p99 moves by more than 10x (a stall); otherwise linear reads better
        log = style.spans_decades(load["lat_p99_us"].tolist(), 10)
        style.time_axis(ax_lat, "y", load["lat_p99_us"].tolist(), log=log)
        if not log:
            ax_lat.set_ylim(bottom=0)
    ax_lat.set_ylabel("p99 latency")

    mib = server[["t_s"]].assign(
        pss=server["mem_pss_bytes"] / MIB, rss=server["mem_rss_bytes"] / MIB, uss=server["mem_uss_bytes"] / MIB
    )
    _line(ax_mem, mib, "pss", colour, "PSS")
    _line(ax_mem, mib, "rss", SECOND, "summed RSS", linestyle="--")
    _line(ax_mem, mib, "uss", colour, "USS (unshared)", linestyle=":")
    ax_mem.set_ylabel("memory (MiB)")
    ax_mem.set_ylim(bottom=0)

    _line(ax_proc, server, "procs", colour, "processes", drawstyle="steps-post")
    _line(ax_proc, server, "threads", SECOND, "threads", linestyle="--", drawstyle="steps-post")
    ax_proc.set_ylabel("count")
    ax_proc.set_ylim(bottom=0)
    ax_proc.yaxis.set_major_locator(MaxNLocator(integer=True))  # processes come whole

    _line(ax_q, server, "accept_queue", colour, "accept queue", drawstyle="steps-post")
    backlog = style.finite_or_none(run.get("backlog"))
    if backlog is not None:
        # Linux holds up to backlog + 1 established connections in the accept queue
        ax_q.axhline(
            backlog + 1, color="#aa0000", linestyle=":", linewidth=1.2, label=f"full (backlog {backlog:g} + 1)"
        )
    ax_q.set_ylabel("accept queue\n(connections)")
    ax_q.set_ylim(bottom=0)
    ax_q.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_q.set_xlabel("time since the measured window started (s)")

    t_min = float(tl["t_s"].min())
    flags = run_flags(results, run)
    flag_handles = style.flag_handles(flags)
    for i, ax in enumerate(axes[:, 0]):
        if t_min < 0:
            ax.axvspan(t_min, 0, color="#eeeeee", zorder=0)
        handles, _labels = ax.get_legend_handles_labels()
        if i == 0:
            handles += flag_handles  # the run's flags head the legend column
        if handles:  # beside the panel, never over the data
            ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax_x.text(
        t_min if t_min < 0 else 0,
        0.02,
        " warmup" if t_min < 0 else "",
        transform=ax_x.get_xaxis_transform(),
        fontsize=8,
        color="#777777",
    )

    subtitle = f"{model} {_point_text(results, run)}, repetition {run.get('repetition', '?')}"
    if "failed" in flags:
        subtitle += f" - {run.get('status', 'failed').upper()}: {first_line(run.get('error', ''))[:90]}"
    elif flags:
        subtitle += " - " + ", ".join(flags)
    style.titles(fig, f"What happened during run {run_id}?", subtitle)
    style.fixed_layout(fig, list(axes[:, 0]))
    return fig


def _wipe(fig: Figure) -> None:
    """Take off ``fig`` everything :func:`timeline_figure` draws, leaving the panels as a new figure has them."""
    title = fig.get_suptitle()
    for text in list(fig.texts):
        if text.get_text() != title:  # the suptitle is set again, in place; the subtitle goes
            text.remove()
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.patches, *ax.collections, *ax.texts]:
            artist.remove()
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
        ax.set_yscale("linear")  # the default locator and formatter back, as each panel sets its own
        ax.relim()  # no data left: the next run's limits are its own
        ax.set_autoscale_on(True)  # set_ylim(bottom=0) turned the y autoscaling off


def _at_bucket_middle(load: pd.DataFrame) -> pd.DataFrame:
    """Load rows drawn at the middle of their bucket.

    A load row's ``t_s`` is the *start* of the interval its rate and p99
    cover, while a server row's is the moment it was sampled; drawn at the
    start, throughput would lead the server's curves by half a bucket (0.25 s
    at the default 0.5 s). The bucket width is the spacing of the rows.
    """
    if len(load) < 2:
        return load
    width = float(np.median(np.diff(load["t_s"].to_numpy(dtype=float))))
    return load.assign(t_s=load["t_s"] + width / 2) if width > 0 else load


def _point_text(results: Results, run: pd.Series) -> str:
    """'at clients=10', 'on echo' or 'at 20 clients' for the run's point."""
    rows = results.points[results.points["point"] == run.get("point")]
    label = rows["label"].iloc[0] if len(rows) else ""
    if label in ("", "all"):
        clients = run.get("clients")
        return f"at {format_param(clients)} clients" if clients == clients and clients is not None else ""
    return where_phrase(label, str(run.get("service", "")))


def _line(ax: Any, df: pd.DataFrame, col: str, colour: str, label: str, **kw: Any) -> None:
    data = df[["t_s", col]].dropna()
    if data.empty:
        return
    ax.plot(data["t_s"], data[col], color=colour, label=label, linewidth=1.5, **kw)
