"""Figures of single lessons, drawn only for a folder that ran them.

``crashes``
    What survives a crashing handler? Per crash kind, throughput and failed
    requests of every model against how often the handler crashes, each
    point marked where the server died (and when) and, for the models whose
    parent re-forks workers, how many it re-forked. Drawn from every run,
    failed ones included: a server that died mid-run is the measurement
    here, not a broken run (its row keeps what the load generator counted up
    to the end of the window).
``copy_on_write``
    How much of the preloaded data does each process copy? The server
    tree's USS (the pages only its processes have) over the run, per model,
    one panel per use of the preloaded data (``server.preload_use`` and
    ``preload_freeze``): a line that climbs is children copying pages they
    were given shared.

Both return None for a folder without the option (no ``crash`` other than
none, no ``preload_mib``), so every other folder is unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.format import format_param
from bench.plots import style
from bench.stats import Results
from servers.config import CRASH_KINDS, PRELOAD_USES
from servers.registry import order_key

MIB = 2**20

#: The mark of a point whose server died in at least one repetition.
DIED_MARK: dict[str, Any] = {"marker": "X", "markersize": 11, "markerfacecolor": "white", "markeredgewidth": 2}


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs.columns else pd.Series([None] * len(runs), index=runs.index)


def crash_figure(results: Results) -> Figure | None:
    """What survives a crashing handler? (see the module docstring); None without crashing runs."""
    runs = results.runs
    kinds = [k for k in CRASH_KINDS[1:] if (_column(runs, "crash") == k).any()]
    if not kinds:
        return None
    models = sorted(runs["model"].unique(), key=order_key)
    fig, axes = style.new_figure(
        3,
        len(kinds),
        width=3.6 * len(kinds) + 2.2,
        height=2 * style.PANEL_H + 0.35 * len(models) + 1.4,
        sharex=True,
        sharey="row",
        height_ratios=[1, 1, 0.12 * len(models) + 0.2],
    )
    baseline = runs[~_column(runs, "crash").isin(kinds)]
    for c, kind in enumerate(kinds):
        ax_x, ax_err, ax_fate = axes[0, c], axes[1, c], axes[2, c]
        ax_x.set_title(f"--crash {kind}", fontsize=10)
        of_kind = runs[runs["crash"] == kind]
        for row, model in enumerate(models):
            mine = of_kind[of_kind["model"] == model]
            if mine.empty:
                continue
            colour = style.model_colour(model)
            line = style.model_style(model)
            base = baseline[baseline["model"] == model]["req_per_s"].dropna()
            if len(base):
                ax_x.axhline(float(base.median()), color=colour, linestyle=":", linewidth=1)
            by_every = mine.groupby("crash_every", sort=True)
            xs = np.array([float(e) for e, _g in by_every])
            for ax, metric in ((ax_x, "req_per_s"), (ax_err, "errors")):
                ys = np.array([float(g[metric].median()) for _e, g in by_every])
                ax.plot(xs, ys, **line)
            for every, group in by_every:
                died = _column(group, "server_died_s").dropna()
                restarts = _column(group, "server_restarts").dropna()
                if len(died):
                    ax_fate.plot([float(every)], [row], color=colour, linestyle="none", **DIED_MARK)
                    text = f"died {float(died.median()):+.1f} s"
                else:
                    ax_fate.plot([float(every)], [row], color=colour, marker="o", markersize=7, linestyle="none")
                    text = f"{float(restarts.median()):.0f} re-forked" if len(restarts) and restarts.max() > 0 else ""
                if text:
                    ax_fate.annotate(
                        text, (float(every), row), textcoords="offset points", xytext=(7, -3), fontsize=7, color=colour
                    )
        for ax in (ax_x, ax_err, ax_fate):
            ax.set_xscale("log")
        ax_x.set_ylim(bottom=0)
        ax_err.set_ylim(bottom=0)
        ax_fate.set_ylim(len(models) - 0.5, -0.5)
        ax_fate.set_yticks(range(len(models)), models, fontsize=8)
        ax_fate.grid(False, axis="y")
        ax_fate.set_xlabel("requests per crash (per process)")
    axes[0, 0].set_ylabel("requests/s")
    axes[1, 0].set_ylabel("failed requests\nin the window")
    axes[2, 0].set_ylabel("the server")
    handles: list[Any] = style.model_handles(models)
    handles += [
        Line2D([], [], color="#555555", linestyle="none", marker="o", markersize=7, label="server alive at the stop"),
        Line2D([], [], color="#555555", linestyle="none", label="server died (s into the window)", **DIED_MARK),
        Line2D([], [], color="#555555", linestyle=":", label="the same model without crashes"),
    ]
    style.legend_right(fig, handles)
    reps = int(runs["repetition"].max()) if len(runs) else 0
    style.titles(
        fig,
        "What survives a crashing handler?",
        f"median of {reps} repetition(s) per point, every run counted (a dead server's too, its requests/s "
        "over the whole window); failed requests: the err_* columns (resets, connections closed early, "
        "timeouts); a negative death time is in the warm-up",
    )
    return fig


def cow_figure(results: Results) -> Figure | None:
    """How much of the preloaded data does each process copy? (see the module docstring); None without a preload."""
    runs = results.runs
    preload = pd.to_numeric(_column(runs, "preload_mib"), errors="coerce").fillna(0)
    runs = runs[preload > 0]
    if runs.empty or results.timeline.empty:
        return None
    server = results.timeline[results.timeline["source"] == "server"]
    uses = [
        (use, freeze)
        for use in PRELOAD_USES
        for freeze in (False, True)
        if ((runs["preload_use"] == use) & (runs["preload_freeze"].astype(bool) == freeze)).any()
    ]
    models = sorted(runs["model"].unique(), key=order_key)
    ncols = min(3, len(uses))
    nrows = -(-len(uses) // ncols)
    fig, axes = style.new_figure(
        nrows, ncols, width=3.6 * ncols + 2.2, height=style.PANEL_H * nrows + 0.8, sharex=True, sharey=True
    )
    peak = 0.0
    for i, (use, freeze) in enumerate(uses):
        ax = axes[i // ncols, i % ncols]
        ax.set_title(f"{use}{', gc.freeze()' if freeze else ''}", fontsize=10)
        chosen = runs[(runs["preload_use"] == use) & (runs["preload_freeze"].astype(bool) == freeze)]
        for model in models:
            mine = chosen[chosen["model"] == model].sort_values("repetition")
            if mine.empty:
                continue
            samples = server[server["run_id"] == mine["run_id"].iloc[0]]
            samples = samples[["t_s", "mem_uss_bytes", "mem_pss_bytes"]].dropna()
            if samples.empty:
                continue
            colour = style.model_colour(model)
            uss, pss = samples["mem_uss_bytes"] / MIB, samples["mem_pss_bytes"] / MIB
            peak = max(peak, float(uss.max()), float(pss.max()))
            ax.plot(samples["t_s"], uss, color=colour, linewidth=1.8)
            ax.plot(samples["t_s"], pss, color=colour, linewidth=1.0, linestyle="--")
        ax.axvline(0, color="#999999", linewidth=0.8)
    for ax in axes.flat[len(uses) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("server tree (MiB)")
    for ax in axes[-1, :]:
        ax.set_xlabel("time since the measured window started (s)")
    for ax in axes.flat:
        ax.set_ylim(0, peak * 1.1 or 1)
    handles: list[Any] = style.model_handles(models)
    handles += [
        Line2D([], [], color="#555555", linewidth=1.8, label="USS (pages no other process shares)"),
        Line2D([], [], color="#555555", linewidth=1.0, linestyle="--", label="PSS (shared pages divided)"),
    ]
    style.legend_right(fig, handles)
    mib_text = ", ".join(format_param(v) for v in sorted(set(pd.to_numeric(runs["preload_mib"]))))
    style.titles(
        fig,
        "How much of the preloaded data does each process copy?",
        f"{mib_text} MiB built before the fork; USS and PSS summed over the server's processes, first "
        "repetition of each point; warm-up left of 0. A process alone (forking's parent before its clients "
        "connect and after they leave) shares nothing: its whole copy counts as USS then",
    )
    return fig
