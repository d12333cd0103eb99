"""Repetition statistics and the results-folder reader shared by plots, compare and report.

A point (one model at one set of swept parameters) is run several times. This
module reduces those repetitions to what a reader can trust:

* the **median**, not the mean: one run disturbed by a cron job or a page
  cache miss moves the mean but barely the median;
* **min and max**, shown as a band in figures, so the spread is never hidden;
* an **exact order-statistic confidence interval of the median**: for ``n``
  sorted values the interval ``[x(k), x(n+1-k)]`` covers the true median with
  probability ``1 - 2 P(Binomial(n, 1/2) <= k - 1)`` whatever the
  distribution (:func:`median_ci`, ``scipy.stats.binom``). The widest ``k``
  reaching :data:`CI_TARGET` (95%) is used when ``n`` allows it (``n >= 6``);
  below that the interval is the range ``[min, max]`` and its real level is
  lower: 75% at 3 repetitions, 87.5% at 4, 93.75% at 5. The level is stored
  beside the bounds (``ci_level``) and every table prints it ("75% CI"),
  never a bare "95%". A bootstrap is not used: with a handful of values every
  resampled median is an observed value, so it returns the range and calls it
  95%. Below :data:`MIN_N_FOR_CI` values no interval is given (``None``) and
  the summary says so, rather than printing a fake one;
* the **coefficient of variation** (sample standard deviation / mean). Like
  pyperf's stability check, a point whose CV exceeds 10% is flagged
  *unstable*. The check looks at throughput and median latency
  (:data:`STABILITY_METRICS`): in a closed loop they move together, in an
  open loop the throughput is fixed by the schedule and only latency can show
  the noise. Tail latency (p99) is not checked: it legitimately varies more.

Failed and interrupted runs never enter the statistics; they are counted and
reported. A run flagged ``generator_bound`` is kept (its numbers are real
numbers about the generator) but the point is marked everywhere it is shown.

:func:`load_results` is the one reader of a results folder (see
:mod:`bench.results` for the contract); it returns a :class:`Results` that the
plots, the comparison and the report all use, so they agree on what a folder
contains. :func:`build_summary` / :func:`write_summary` produce
``summary.json``, which the runner writes at the end of a scenario.

Error handling: a folder without ``runs.csv`` raises :class:`NotAResultsFolder`
whose message names the folder and what a results folder contains. Missing
optional files (timeline, histograms, environment) give empty data, never an
error: a scenario interrupted early still has a readable folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.loadgen.spec import lower_bound_column
from bench.results import (CPU_BUSY_COLUMN, FORMAT_KEY, FORMAT_VERSIONS, PARAMETER_COLUMNS, RUN_COLUMNS,
                           TIMELINE_COLUMNS, atomic_file, merge_histograms, read_environment, read_hlog, read_runs,
                           read_summary, read_timeline)
from bench.units import plural
from servers import registry

#: Metrics aggregated by default: the headline ones and what the report table shows.
DEFAULT_METRICS: tuple[str, ...] = (
    "req_per_s", "mb_per_s", "lat_p50_us", "lat_p90_us", "lat_p99_us", "lat_p999_us", "lat_max_us",
    "ttfb_p50_us", "ttfb_p99_us", "connect_p50_us", "connect_p99_us", "connect_max_us",
    "conn_ok", "conn_refused", "conn_reset", "conn_timeout", "conn_emfile", "conn_eaddrnotavail",
    "conn_other", "conn_pending", "errors", "req_pending", "req_pending_oldest_s", "k_listen_overflows", "k_listen_drops", "k_reqq_full_drop",
    "k_syncookies_sent", "accept_queue_max",
    "mem_pss_peak_bytes", "mem_rss_peak_bytes", "mem_uss_peak_bytes",
    "procs_peak", "threads_peak", "fds_peak", "server_cpu_pct", "gen_cpu_pct_max",
    "lat_censored", "clients_served", "gen_runq_wait_pct_max", "server_runq_wait_pct", "runner_cpu_pct",
)

#: Metrics whose runs.csv value may be only a lower bound (flagged in the column
#: :func:`~bench.loadgen.spec.lower_bound_column` names); the point's median
#: then gets ``<metric>_lower_bound`` (see :func:`median_is_lower_bound`).
LOWER_BOUNDED_METRICS: tuple[str, ...] = tuple(m for m in DEFAULT_METRICS if lower_bound_column(m) in RUN_COLUMNS)

#: Metrics whose coefficient of variation decides whether a point is unstable.
STABILITY_METRICS: tuple[str, ...] = ("req_per_s", "lat_p50_us")

#: pyperf's threshold: above 10% relative standard deviation, results are not reproducible enough.
CV_THRESHOLD = 0.10

#: Below three values the range covers the median at 50% (n=2): too little to call an interval.
MIN_N_FOR_CI = 3

#: Confidence level the median interval aims for; reached from 6 repetitions on (see median_ci).
CI_TARGET = 0.95

#: Fewest repetitions whose range reaches CI_TARGET: 1 - 2 * 0.5**6 = 96.9%.
_N_FOR_TARGET = 6

#: A machine busier than this (percent) just before a run skews it (see machine facts: 2-4x).
BUSY_THRESHOLD_PCT = 5.0

#: Metrics always present in summary.json points, measured or not.
_HEADLINE_METRICS = ("req_per_s", "mb_per_s", "lat_p50_us", "lat_p99_us")

#: Stats columns produced per metric by :func:`aggregate`.
STAT_FIELDS = ("n", "median", "min", "max", "ci_low", "ci_high", "ci_level", "cv", "unstable")

_BOOL_COLUMNS = ("generator_bound", "sendfile", "cpu_work_short") + tuple(
    c for c in RUN_COLUMNS if c.endswith("_is_lower_bound"))
_STRING_COLUMNS = ("run_id", "model", "service", "status", "error", "started_at", "mode",
                   "mem_note", "server_cpus", "gen_cpus", "netns", "gen_engine", "point_label",
                   "net_hosts", "net_links")


#: The per-CPU columns (bench.results.CPU_BUSY_COLUMN); how many depends on the machine.
_CPU_BUSY = re.compile(CPU_BUSY_COLUMN.format(cpu=r"\d+"))


class NotAResultsFolder(ValueError):
    """The path given is not a folder written by ``bench run`` (the message says what is missing)."""


# --------------------------------------------------------------------------
# One point


def summarize_point(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max, order-statistic CI of the median (with its level) and CV of one point.

    NaN values (a metric the run could not measure) are ignored. Returns a dict
    with ``n, median, min, max, ci_low, ci_high, ci_level, cv, unstable, note``
    (``ci_level`` is the interval's exact confidence, e.g. 0.75 at n=3); fields
    that cannot be computed are ``None`` and ``note`` says why (no values,
    fewer than 3 for the interval, fewer than 2 or a zero mean for the CV).
    """
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    out: dict[str, Any] = {"n": n, "median": None, "min": None, "max": None, "ci_low": None,
                           "ci_high": None, "ci_level": None, "cv": None, "unstable": False, "note": ""}
    if n == 0:
        out["note"] = "no successful measurement"
        return out
    out.update(median=float(np.median(arr)), min=float(arr.min()), max=float(arr.max()))
    notes = []
    if n >= MIN_N_FOR_CI:
        out["ci_low"], out["ci_high"], out["ci_level"] = median_ci(arr)
        if out["ci_level"] < CI_TARGET:
            notes.append(f"interval is the range, a {ci_label(out['ci_level'])} at n={n}; "
                         f"{_N_FOR_TARGET} repetitions give {CI_TARGET:.0%}")
    else:
        notes.append(f"no confidence interval: {n} value{'s' if n != 1 else ''}, need {MIN_N_FOR_CI}")
    mean = float(arr.mean())
    if n >= 2 and mean != 0.0:
        out["cv"] = float(arr.std(ddof=1) / abs(mean))
        out["unstable"] = bool(out["cv"] > CV_THRESHOLD)
    elif n < 2:
        notes.append("no CV from a single value")
    out["note"] = "; ".join(notes)
    return out


def median_ci(values: Sequence[float], target: float = CI_TARGET) -> tuple[float, float, float]:
    """Exact distribution-free interval of the median: ``(low, high, confidence level)``.

    For ``n`` sorted values, the number below the true median is
    Binomial(n, 1/2), so ``[x(k), x(n+1-k)]`` misses it with probability
    ``2 P(B <= k-1)``. The narrowest such interval whose level is at least
    ``target`` is returned; when even the range (k=1) falls short, the range
    and its achieved level ``1 - 2 * 0.5**n`` are returned, so a caller
    always prints the level it actually has.
    """
    from scipy.stats import binom

    arr = np.sort(np.asarray(values, dtype=float))
    n = int(arr.size)
    if n == 0:
        raise ValueError("median_ci needs at least one value")
    k = 1
    while k + 1 <= (n + 1) // 2 and 1.0 - 2.0 * binom.cdf(k, n, 0.5) >= target:
        k += 1
    level = float(1.0 - 2.0 * binom.cdf(k - 1, n, 0.5))
    return float(arr[k - 1]), float(arr[n - k]), level


def ci_label(level: Any) -> str:
    """How a table names an interval of this level: "75% CI", "96.9% CI" (one decimal when not whole)."""
    pct = float(level) * 100.0
    return f"{pct:.0f}% CI" if abs(pct - round(pct)) < 0.05 else f"{pct:.1f}% CI"


def median_is_lower_bound(values: Sequence[float], lower: Sequence[Any]) -> bool:
    """Is the median of ``values`` only a lower bound, given which values are (``lower``)?

    Raising a value above the median leaves the median where it is; raising
    one at or below it may lift it. So the median is a lower bound when any
    repetition whose value is a lower bound lies at or below the median.
    NaN values are left out, as in :func:`summarize_point`.
    """
    pairs = [(float(v), bool(b) if not _is_missing(b) else False)
             for v, b in zip(values, lower) if not _is_missing(v)]
    if not pairs:
        return False
    median = float(np.median([v for v, _ in pairs]))
    return any(b and v <= median for v, b in pairs)


# --------------------------------------------------------------------------
# Runs table


def normalize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Give a runs table every RUN_COLUMNS column with sane dtypes (booleans as bool, text as str)."""
    runs = runs.copy()
    for col in RUN_COLUMNS:
        if col not in runs.columns:
            runs[col] = np.nan
    for col in _BOOL_COLUMNS:
        runs[col] = runs[col].map(_to_bool)
    for col in _STRING_COLUMNS:
        runs[col] = runs[col].map(lambda v: "" if _is_missing(v) else str(v))
    for col in [*RUN_COLUMNS, *(c for c in runs.columns if _CPU_BUSY.fullmatch(str(c)))]:
        if col in _BOOL_COLUMNS or col in _STRING_COLUMNS:
            continue
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    if len(runs):
        runs["point"] = runs["point"].fillna(-1).astype(int)
        runs["repetition"] = runs["repetition"].fillna(0).astype(int)
    return runs


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _to_bool(v: Any) -> Any:
    if _is_missing(v) or v == "":
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return bool(v)
    return str(v).strip().lower() in ("true", "1", "yes")


def swept_parameters(runs: pd.DataFrame) -> list[str]:
    """Parameter columns that take more than one value across points, in PARAMETER_COLUMNS order."""
    swept = []
    for col in PARAMETER_COLUMNS:
        if col in runs.columns and runs[col].dropna().nunique() > 1:
            swept.append(col)
    return swept


def point_parameters(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per point index: the service and the value of every parameter column at that point."""
    cols = ["service"] + [c for c in PARAMETER_COLUMNS if c in runs.columns]
    if runs.empty:
        return pd.DataFrame(columns=["point", *cols])
    return (runs.sort_values(["point", "repetition"])
            .groupby("point", as_index=False)[cols].first())


def point_label(params: Mapping[str, Any], swept: Sequence[str], service: str = "") -> str:
    """Human label of a point, e.g. ``clients=100`` or ``file, clients=100``.

    ``service`` is given when a folder holds several services (a scenario with
    ``service: [echo, file]`` has a point per service); ``all`` means the
    folder has a single point.
    """
    parts = ([service] if service else []) + [f"{p}={format_param(params.get(p))}" for p in swept]
    return ", ".join(parts) or "all"


def format_param(v: Any) -> str:
    """A parameter value as a user types it: 100 not 100.0, True, 'closed'."""
    if _is_missing(v):
        return "-"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def aggregate(runs: pd.DataFrame, metrics: Iterable[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """One row per model x point: parameters, run counts, and per metric the stats columns.

    Columns: ``model, point, service``, every parameter column, ``label``,
    ``n_runs, n_ok, n_failed, n_interrupted, n_generator_bound, n_busy``,
    ``unstable`` (any of :data:`STABILITY_METRICS` has CV > 10%),
    ``unstable_metrics`` (comma-separated), ``errors`` (list of error strings
    of failed runs), and ``<metric>_<stat>`` for stat in :data:`STAT_FIELDS`;
    for :data:`LOWER_BOUNDED_METRICS` also ``<metric>_lower_bound``.
    Only ``status == ok`` runs enter the statistics.
    """
    runs = normalize_runs(runs)
    metrics = [m for m in metrics]
    swept = swept_parameters(runs)
    params = point_parameters(runs)
    several_services = runs["service"].nunique() > 1
    rows = []
    for (model, point), group in runs.groupby(["model", "point"], sort=False):
        ok = group[group["status"] == "ok"]
        prm = params[params["point"] == point].iloc[0].to_dict() if len(params) else {}
        row: dict[str, Any] = {"model": model, "point": int(point),
                               "service": group["service"].iloc[0]}
        row.update({c: prm.get(c) for c in PARAMETER_COLUMNS if c in prm})
        row["label"] = point_label(prm, swept, row["service"] if several_services else "")
        row.update(
            n_runs=len(group),
            n_ok=len(ok),
            n_failed=int((group["status"] == "failed").sum()),
            n_interrupted=int((group["status"] == "interrupted").sum()),
            n_generator_bound=int(group["generator_bound"].fillna(False).astype(bool).sum()),
            n_busy=int((group["idle_busy_pct"] > BUSY_THRESHOLD_PCT).sum()),
            errors=[e for e in group.loc[group["status"] != "ok", "error"] if e],
        )
        unstable = []
        for metric in metrics:
            values = ok[metric].tolist() if metric in ok.columns else []
            s = summarize_point(values)
            for f in STAT_FIELDS:
                row[f"{metric}_{f}"] = s[f]
            if metric in STABILITY_METRICS and s["unstable"]:
                unstable.append(metric)
            if metric in LOWER_BOUNDED_METRICS:
                row[f"{metric}_lower_bound"] = median_is_lower_bound(values, ok[lower_bound_column(metric)].tolist())
        row["unstable"] = bool(unstable)
        row["unstable_metrics"] = ",".join(unstable)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["_order"] = df["model"].map(model_order_key)
    df = df.sort_values(["_order", "point"]).drop(columns="_order").reset_index(drop=True)
    return df


def model_order_key(model: str) -> tuple[int, str]:
    """Sort key that puts models in registry order (the figures' order), unknown ones last."""
    return registry.order_key(model)


# --------------------------------------------------------------------------
# Summary


def build_summary(results_dir: Path) -> dict[str, Any]:
    """The ``summary.json`` content of a results folder (see module doc for the statistics).

    Shape::

        {"format_version": 2, "generated_at": ISO time,
         "scenario": {"name", "description", "service"},
         "swept": [parameter, ...], "x": first swept parameter or null,
         "models": [...], "metrics": [...], "cv_threshold": 0.1,
         "runs": {"total", "ok", "failed", "interrupted", "generator_bound", "busy"},
         "points": [{"model", "point", "label", "parameters": {...},
                     "runs", "ok", "failed", "interrupted", "generator_bound", "busy",
                     "unstable": bool, "unstable_metrics": [...], "errors": [...],
                     "metrics": {metric: {n, median, min, max, ci_low, ci_high, cv, unstable, note,
                                          lower_bound (latency percentiles only)}}}],
         "warnings": ["generator-bound: ...", "unstable: ...", "failed: ...", "busy machine: ..."],
         "thresholds": [{"threshold", "model", "statistic", "passed", "checked", "failed",
                         "value", "value_text", "where", "failures": [...]}]}  (see bench.thresholds.check)
    """
    results = load_results(results_dir, summary=False)
    return _summary_from(results)


def _summary_from(results: "Results") -> dict[str, Any]:
    agg = results.aggregate
    runs = results.runs
    swept = results.swept
    points = []
    for _, row in agg.iterrows():
        metrics = {}
        for metric in DEFAULT_METRICS:
            # every measured metric, and the headline ones even when unmeasured (with a note)
            if row[f"{metric}_n"] or metric in _HEADLINE_METRICS:
                metrics[metric] = {f: _json_value(row[f"{metric}_{f}"]) for f in STAT_FIELDS}
                metrics[metric]["note"] = _metric_note(row, metric)
                if metric in LOWER_BOUNDED_METRICS:
                    metrics[metric]["lower_bound"] = bool(row[f"{metric}_lower_bound"])
        points.append({
            "model": row["model"], "point": int(row["point"]), "label": row["label"],
            "parameters": {c: _json_value(row[c]) for c in PARAMETER_COLUMNS if c in row.index},
            "runs": int(row["n_runs"]), "ok": int(row["n_ok"]), "failed": int(row["n_failed"]),
            "interrupted": int(row["n_interrupted"]), "generator_bound": int(row["n_generator_bound"]),
            "busy": int(row["n_busy"]), "unstable": bool(row["unstable"]),
            "unstable_metrics": [m for m in row["unstable_metrics"].split(",") if m],
            "errors": list(row["errors"]), "metrics": metrics,
        })
    gb = runs["generator_bound"].fillna(False).astype(bool) if len(runs) else pd.Series([], dtype=bool)
    return {
        FORMAT_KEY: FORMAT_VERSIONS["summary.json"],
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "scenario": {"name": results.name, "description": results.description, "service": results.service,
                     "services": results.services},
        "swept": swept,
        "x": swept[0] if swept else None,
        "models": results.models,
        "metrics": list(DEFAULT_METRICS),
        "cv_threshold": CV_THRESHOLD,
        "runs": {
            "total": int(len(runs)),
            "ok": int((runs["status"] == "ok").sum()),
            "failed": int((runs["status"] == "failed").sum()),
            "interrupted": int((runs["status"] == "interrupted").sum()),
            "generator_bound": int(gb.sum()),
            "busy": int((runs["idle_busy_pct"] > BUSY_THRESHOLD_PCT).sum()),
        },
        "points": points,
        "warnings": summary_warnings(results),
        "thresholds": threshold_results(results),
    }


def threshold_results(results: "Results") -> list[dict[str, Any]]:
    """Each ``thresholds:`` entry of the scenario tested against the median over repetitions
    of each model at each point (see :mod:`bench.thresholds`), in file order."""
    from bench.thresholds import RUN_STATISTIC, Measured, ThresholdError, check, from_entry

    checks, unreadable = [], []
    for entry in results.scenario.get("thresholds") or []:
        try:
            checks.append(from_entry(entry))
        except ThresholdError as exc:  # written by another version of sockbench
            unreadable.append({"threshold": str(entry), "model": None, "statistic": RUN_STATISTIC,
                               "passed": False, "checked": 0, "failed": 0, "value": None,
                               "value_text": f"cannot be read: {exc}", "where": "", "failures": []})
    if not checks:
        return unreadable
    agg = aggregate(results.runs, metrics=sorted({c.metric for c in checks}))
    out = []
    for threshold in checks:
        measured = [Measured(row["model"], row["label"] or "", _json_value(row[f"{threshold.metric}_median"]),
                             bool(row.get(f"{threshold.metric}_lower_bound", False)))
                    for row in agg.to_dict("records")]
        out.append(check(threshold, measured, RUN_STATISTIC))
    return out + unreadable


def _metric_note(row: pd.Series, metric: str) -> str:
    n = row[f"{metric}_n"]
    if n == 0:
        return "not measured in any successful run"
    if n < MIN_N_FOR_CI:
        return f"no confidence interval: {int(n)} value{'s' if n != 1 else ''}, need {MIN_N_FOR_CI}"
    return ""


def summary_warnings(results: "Results") -> list[str]:
    """Plain-language warnings: generator-bound, unstable, failed/interrupted, busy machine, thin CIs."""
    agg, runs = results.aggregate, results.runs
    out: list[str] = []
    bound, unstable, lower, unserved = [], [], [], []
    for _, row in agg.iterrows():
        where = f"{row['model']} {where_phrase(row['label'], row['service'])}"
        names = lower_bound_names(row)
        if names:
            lower.append(f"{where} ({', '.join(names)})")
        if served_phrase(row):
            unserved.append(f"{where} ({served_phrase(row)})")
        if row["n_generator_bound"]:
            bound.append(f"{where} ({row['n_generator_bound']} of {plural(row['n_runs'], 'run')})")
        if row["unstable"]:
            parts = [f"{METRIC_LABELS.get(m, m)} {row[f'{m}_cv'] * 100:.0f}%"
                     for m in row["unstable_metrics"].split(",") if m]
            unstable.append(f"{where} ({', '.join(parts)} over {plural(row['n_ok'], 'repetition')})")
    if bound:
        out.append(f"generator-bound: {'; '.join(bound)}: a load generator worker was short of CPU "
                   "(CPU + run-queue wait > 90% of the window, or wait > 20%), so these figures may measure the generator, not the server; add generator workers "
                   "(generator.workers) or give the generator its own CPU")
    if lower:
        out.append(f"latency lower bounds: {'; '.join(lower)}: more requests never completed (timed out, unanswered "
                   "at the end, or never sent) than the share above that percentile, so it is at least the value "
                   "shown (marked >=) and may be far higher")
    if unserved:
        out.append(f"clients not served: {'; '.join(unserved)} (median over repetitions): the others completed no "
                   "request in the window, so the latency figures describe only the clients served")
    if unstable:
        out.append(f"unstable: {'; '.join(unstable)}: the coefficient of variation across repetitions exceeds "
                   f"{CV_THRESHOLD * 100:.0f}%; trust these medians less, or run more repetitions on a quieter "
                   "machine")
    for _, run in runs[runs["status"].isin(["failed", "interrupted"])].iterrows():
        err = first_line(run["error"]) or "no error recorded"
        out.append(f"{run['status']}: run {run['run_id']} ({run['model']}, repetition "
                   f"{run['repetition']}): {err}")
    short = runs[runs["cpu_work_short"].fillna(False).astype(bool)] if len(runs) else runs
    if len(short):
        ids = ", ".join(short["run_id"].head(5)) + (", ..." if len(short) > 5 else "")
        out.append(f"CPU work not accounted for: in {len(short)} run{'s' if len(short) != 1 else ''} ({ids}) the "
                   "server's CPU time was less than requests x cpu_work_us: the server did less work per request "
                   "than the label says, or part of its CPU was not counted; do not read those runs as "
                   "cpu_work_us of work per request")
    busy = runs[runs["idle_busy_pct"] > BUSY_THRESHOLD_PCT]
    if len(busy):
        worst = busy["idle_busy_pct"].max()
        ids = ", ".join(busy["run_id"].head(5)) + (", ..." if len(busy) > 5 else "")
        out.append(f"busy machine: {len(busy)} run{'s' if len(busy) != 1 else ''} started with the "
                   f"machine up to {worst:.0f}% busy (threshold {BUSY_THRESHOLD_PCT:.0f}%): {ids}; "
                   "another process competes for the CPUs and can change results 2-4x")
    thin = agg[(agg["n_ok"] > 0) & (agg["n_ok"] < MIN_N_FOR_CI)] if len(agg) else agg
    if len(thin):
        where = ", ".join(f"{r['model']} {where_phrase(r['label'], r['service'])}" for _, r in thin.head(4).iterrows())
        more = f" and {len(thin) - 4} more" if len(thin) > 4 else ""
        out.append(f"no confidence interval: fewer than {MIN_N_FOR_CI} successful repetitions at "
                   f"{len(thin)} point{'s' if len(thin) != 1 else ''} ({where}{more}); their medians rest on "
                   "one or two runs")
    return out


def lower_bound_names(row: Mapping[str, Any]) -> list[str]:
    """Short names ("p99", "max") of the latency medians of an aggregate row that are only lower bounds."""
    return [m.removeprefix("lat_").removesuffix("_us") for m in LOWER_BOUNDED_METRICS if is_lower_bound(row, m)]


def is_lower_bound(row: Mapping[str, Any], metric: str) -> bool:
    """True if ``metric``'s median in an aggregate row (or its value in a runs.csv row) is only a lower bound."""
    flag = row.get(f"{metric}_lower_bound", row.get(lower_bound_column(metric)))
    return _to_bool(flag) is True


def bound_mark(row: Mapping[str, Any], metric: str, mark: str = ">= ") -> str:
    """``mark`` to print before ``metric``'s value when it is only a lower bound (see :func:`is_lower_bound`), else ""."""
    return mark if metric in LOWER_BOUNDED_METRICS and is_lower_bound(row, metric) else ""


def served_phrase(row: Mapping[str, Any]) -> str:
    """``"served 1/20"`` when fewer clients than offered completed a request (median over repetitions), else ""."""
    served, clients = row.get("clients_served_median"), row.get("clients")
    if served is None or clients is None or _is_missing(served) or _is_missing(clients) or served >= clients:
        return ""
    return f"served {served:.0f}/{clients:.0f}"


#: Outcome columns of connection attempts (runs.csv), each attempt counted in exactly one.
CONN_OUTCOMES = ("conn_ok", "conn_refused", "conn_reset", "conn_timeout", "conn_emfile", "conn_eaddrnotavail",
                 "conn_other")


def unresolved_connects(row: Mapping[str, Any], suffix: str = "_median") -> float:
    """Connection attempts still in progress when the run ended (``conn_pending``; 0 if unknown)."""
    value = row.get(f"conn_pending{suffix}")
    return 0.0 if value is None or _is_missing(value) else float(value)


def where_phrase(label: str, service: str) -> str:
    """'at clients=10', 'on echo' or 'on echo at clients=10' for a point label."""
    if label == service:
        return f"on {service}"
    if label.startswith(f"{service}, "):
        return f"on {service} at {label[len(service) + 2:]}"
    return "overall" if label == "all" else f"at {label}"


def first_line(text: Any) -> str:
    """An error text on one line: its first line and, if different, its last (the stderr tail's end).

    Errors carry a stderr tail whose last line is usually the exception that
    killed the server; the first line says what the runner saw.
    """
    if _is_missing(text):
        return ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0].rstrip(':')}: ... {lines[-1]}"


#: Short names of metrics for sentences and table headers.
METRIC_LABELS: dict[str, str] = {
    "req_per_s": "req/s", "mb_per_s": "MB/s", "lat_p50_us": "p50 latency", "lat_p99_us": "p99 latency",
    "lat_p90_us": "p90 latency", "lat_p999_us": "p99.9 latency", "connect_p99_us": "connect p99",
}


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def write_summary(results_dir: Path) -> Path:
    """Write ``summary.json`` into ``results_dir`` atomically (temporary file + rename); return its path.

    Resource handling: :func:`bench.results.atomic_file` keeps the temporary
    file in the same folder and removes it if writing fails; a full disk
    raises :class:`bench.results.DiskFull`.
    """
    results_dir = Path(results_dir)
    summary = build_summary(results_dir)
    target = results_dir / "summary.json"
    with atomic_file(target) as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
        fh.write("\n")
    return target


def ensure_summary(results_dir: Path) -> bool:
    """Write ``summary.json`` if the folder has none (a run stopped before it, an older folder); True if written.

    Raises :class:`NotAResultsFolder` for a path that is not a results folder.
    """
    results_dir = Path(results_dir)
    if (results_dir / "summary.json").is_file():
        return False
    load_results(results_dir)  # a path that is not a results folder raises NotAResultsFolder, before any write
    write_summary(results_dir)
    return True


# --------------------------------------------------------------------------
# Reading a results folder


@dataclass
class Results:
    """Everything in one results folder, loaded once.

    ``runs`` and ``timeline`` are DataFrames with every contract column (empty
    cells are NaN); ``scenario`` and ``environment`` are plain dicts (empty if
    the file is missing); ``summary`` is summary.json, or computed on the fly
    when that file is missing or from another results version.
    """

    path: Path
    runs: pd.DataFrame
    timeline: pd.DataFrame
    scenario: dict[str, Any]
    environment: dict[str, Any]
    _summary: dict[str, Any] | None = field(default=None, repr=False)
    _hist_cache: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.scenario.get("name") or self.path.name)

    @property
    def description(self) -> str:
        return str(self.scenario.get("description") or "").strip()

    #: Set on a one-service view of a folder that holds several (see :meth:`subset`).
    facet: str = ""
    #: summary.json as the run wrote it ({} if missing); :attr:`summary` is recomputed.
    stored_summary: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def services(self) -> list[str]:
        """Services in the folder, echo first (a scenario may run both)."""
        found = [s for s in self.runs["service"].unique() if s] if len(self.runs) else []
        if not found:
            declared = self.scenario.get("service") or "echo"
            found = declared if isinstance(declared, list) else [str(declared)]
        return sorted(found, key=lambda s: (s != "echo", s))

    @property
    def service(self) -> str:
        """The folder's service (the first one when it holds several)."""
        return self.services[0]

    def subset(self, service: str) -> "Results":
        """A view of the runs of one ``service`` only (figures are drawn per service)."""
        runs = self.runs[self.runs["service"] == service].reset_index(drop=True)
        ids = set(runs["run_id"])
        timeline = self.timeline[self.timeline["run_id"].isin(ids)].reset_index(drop=True)
        return Results(path=self.path, runs=runs, timeline=timeline, scenario=self.scenario,
                       environment=self.environment, _hist_cache=self._hist_cache,
                       facet=service if len(self.services) > 1 else "")

    def facets(self) -> list["Results"]:
        """One view per service when the folder holds several, else just this one."""
        if len(self.services) <= 1:
            return [self]
        return [self.subset(s) for s in self.services]

    @cached_property
    def swept(self) -> list[str]:
        return swept_parameters(self.runs)

    @property
    def x_param(self) -> str | None:
        """The parameter figures use as x axis: the first swept one, or None (bar charts)."""
        return self.swept[0] if self.swept else None

    @cached_property
    def models(self) -> list[str]:
        return sorted({m for m in self.runs["model"] if m}, key=model_order_key)

    @cached_property
    def aggregate(self) -> pd.DataFrame:
        return aggregate(self.runs)

    @cached_property
    def points(self) -> pd.DataFrame:
        """One row per point: index, parameters, label."""
        df = point_parameters(self.runs)
        several = df["service"].nunique() > 1
        df["label"] = [point_label(r, self.swept, r["service"] if several else "") for r in df.to_dict("records")]
        return df

    @property
    def summary(self) -> dict[str, Any]:
        """The summary computed from the runs (the same shape as summary.json).

        Computed, not read back: a report re-run after an upgrade says what
        today's analysis says about the same runs. ``stored_summary`` holds
        summary.json as written by the run.
        """
        if self._summary is None:
            self._summary = _summary_from(self)
        return self._summary

    @property
    def warnings(self) -> list[str]:
        return list(self.summary.get("warnings", []))

    def hist_path(self, run_id: str, kind: str) -> Path:
        return self.path / "hist" / f"{run_id}.{kind}.hlog"

    def histogram(self, run_id: str, kind: str) -> Any | None:
        """The run's HdrHistogram of ``kind`` (values in microseconds), or None if not saved."""
        key = (run_id, kind)
        if key not in self._hist_cache:
            path = self.hist_path(run_id, kind)
            self._hist_cache[key] = read_hlog(path) if path.exists() else None
        return self._hist_cache[key]

    def merged_histogram(self, run_ids: Iterable[str], kind: str) -> Any | None:
        """The sum of several runs' histograms (e.g. all repetitions of a point), or None."""
        hists = [h for h in (self.histogram(r, kind) for r in run_ids) if h is not None]
        return merge_histograms(hists)

    def runs_at(self, model: str, point: int, ok_only: bool = True) -> pd.DataFrame:
        df = self.runs[(self.runs["model"] == model) & (self.runs["point"] == point)]
        return df[df["status"] == "ok"] if ok_only else df


def load_results(results_dir: Path | str, *, summary: bool = True) -> Results:
    """Read a results folder written by ``bench run`` (see :mod:`bench.results`).

    ``summary=False`` skips reading summary.json (:func:`build_summary` writes it).

    Error handling: raises :class:`NotAResultsFolder` with a message naming the
    path and the fix when the folder or its ``runs.csv`` is missing or unreadable.
    """
    path = Path(results_dir)
    if not path.is_dir():
        raise NotAResultsFolder(f"{path} is not a folder; pass a results folder written by "
                                "`bench run`, e.g. results/20250101T120000Z-quick")
    runs_csv = path / "runs.csv"
    if not runs_csv.exists():
        raise NotAResultsFolder(
            f"{path} is not a sockbench results folder: it has no runs.csv (a results folder holds "
            "scenario.yaml, environment.json, runs.csv, timeline.csv, hist/); pass a folder "
            "written by `bench run`, e.g. results/20250101T120000Z-quick")
    try:
        runs = read_runs(path)
        timeline = read_timeline(path)
        environment = read_environment(path)
        stored = read_summary(path) if summary else {}
    except ValueError as exc:  # FormatVersionError included: it names the file and the versions
        raise NotAResultsFolder(str(exc)) from None
    runs = normalize_runs(runs)
    scenario = _read_yaml(path / "scenario.yaml")
    results = Results(path=path, runs=runs, timeline=timeline, scenario=scenario, environment=environment)
    results.stored_summary = stored
    return results


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


