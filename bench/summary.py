"""What a results folder's runs add up to: ``summary.json`` and the warnings a reader must see first.

:mod:`bench.stats` reduces each point's repetitions to medians, intervals and
flags; this module gathers them for the whole folder into the document the
runner writes when a scenario ends (:func:`write_summary`) and the commands
write for a folder that lacks one (:func:`ensure_summary`):

* the points with their statistics, the run counts and the thresholds'
  verdicts (:func:`threshold_results`, see :mod:`bench.thresholds`);
* the **warnings**, one paragraph per kind (generator-bound, both saturated, latency lower
  bounds, unserved clients, unstable points, failed runs, a busy machine),
  each naming the runs or points it is about and what to do about it
  (:func:`summary_warnings`); the report and ``bench run`` show them first.

The flags and their thresholds are :mod:`bench.vocabulary`'s, so a warning
states the number the flag was decided by.

Error handling: :func:`ensure_summary` raises
:class:`bench.stats.NotAResultsFolder` for a path that is not a results
folder, before writing anything. Resource handling: summary.json is written
atomically (:func:`bench.results.atomic_file`); a full disk raises
:class:`bench.results.DiskFull`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.results import FORMAT_KEY, FORMAT_VERSIONS, PARAMETER_COLUMNS, atomic_file
from bench.stats import (
    DEFAULT_METRICS,
    LOWER_BOUNDED_METRICS,
    METRIC_LABELS,
    MIN_N_FOR_CI,
    STAT_FIELDS,
    Results,
    aggregate,
    first_line,
    load_results,
    lower_bound_names,
    served_phrase,
    where_phrase,
)
from bench.units import plural
from bench.vocabulary import (
    BOTH_SATURATED_RULE,
    BUSY_THRESHOLD_PCT,
    CV_THRESHOLD,
    FAILED_STATUSES,
    GENERATOR_BOUND_RULE,
)

#: Metrics always present in summary.json points, measured or not.
HEADLINE_METRICS = ("req_per_s", "mb_per_s", "lat_p50_us", "lat_p99_us")


def build_summary(results_dir: Path) -> dict[str, Any]:
    """The ``summary.json`` content of a results folder (see module doc for the statistics).

    Shape::

        {"format_version": 3, "generated_at": ISO time,
         "scenario": {"name", "description", "service"},
         "swept": [parameter, ...], "x": first swept parameter or null,
         "models": [...], "metrics": [...], "cv_threshold": 0.1,
         "runs": {"total", "ok", "failed", "interrupted", "generator_bound", "both_saturated", "busy"},
         "points": [{"model", "point", "label", "parameters": {...},
                     "runs", "ok", "failed", "interrupted", "generator_bound", "both_saturated", "busy",
                     "unstable": bool, "unstable_metrics": [...], "errors": [...],
                     "metrics": {metric: {n, median, min, max, ci_low, ci_high, cv, unstable, note,
                                          lower_bound (latency percentiles only)}}}],
         "warnings": ["generator-bound: ...", "both saturated: ...", "unstable: ...", "failed: ...",
                      "busy machine: ..."],
         "thresholds": [{"threshold", "model", "statistic", "passed", "checked", "failed",
                         "value", "value_text", "where", "failures": [...]}]}  (see bench.thresholds.check)
    """
    results = load_results(results_dir, summary=False)
    return summary_of(results)


def summary_of(results: Results) -> dict[str, Any]:
    agg = results.aggregate
    runs = results.runs
    swept = results.swept
    points = []
    for _, row in agg.iterrows():
        metrics = {}
        for metric in DEFAULT_METRICS:
            # every measured metric, and the headline ones even when unmeasured (with a note)
            if row[f"{metric}_n"] or metric in HEADLINE_METRICS:
                metrics[metric] = {f: _json_value(row[f"{metric}_{f}"]) for f in STAT_FIELDS}
                metrics[metric]["note"] = _metric_note(row, metric)
                if metric in LOWER_BOUNDED_METRICS:
                    metrics[metric]["lower_bound"] = bool(row[f"{metric}_lower_bound"])
        points.append(
            {
                "model": row["model"],
                "point": int(row["point"]),
                "label": row["label"],
                "parameters": {c: _json_value(row[c]) for c in PARAMETER_COLUMNS if c in row.index},
                "runs": int(row["n_runs"]),
                "ok": int(row["n_ok"]),
                "failed": int(row["n_failed"]),
                "interrupted": int(row["n_interrupted"]),
                "generator_bound": int(row["n_generator_bound"]),
                "both_saturated": int(row["n_both_saturated"]),
                "busy": int(row["n_busy"]),
                "unstable": bool(row["unstable"]),
                "unstable_metrics": [m for m in row["unstable_metrics"].split(",") if m],
                "errors": list(row["errors"]),
                "metrics": metrics,
            }
        )
    gb = runs["generator_bound"].fillna(False).astype(bool) if len(runs) else pd.Series([], dtype=bool)
    both = runs["both_saturated"].fillna(False).astype(bool) if len(runs) else pd.Series([], dtype=bool)
    return {
        FORMAT_KEY: FORMAT_VERSIONS["summary.json"],
        "generated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "scenario": {
            "name": results.name,
            "description": results.description,
            "service": results.service,
            "services": results.services,
        },
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
            "both_saturated": int(both.sum()),
            "busy": int((runs["idle_busy_pct"] > BUSY_THRESHOLD_PCT).sum()),
        },
        "points": points,
        "warnings": summary_warnings(results),
        "thresholds": threshold_results(results),
    }


def threshold_results(results: Results) -> list[dict[str, Any]]:
    """Each ``thresholds:`` entry of the scenario tested against the median over repetitions
    of each model at each point (see :mod:`bench.thresholds`), in file order."""
    from bench.thresholds import RUN_STATISTIC, Measured, Threshold, ThresholdError, check, from_entry

    checks: list[Threshold] = []
    unreadable: list[dict[str, Any]] = []
    for entry in results.scenario.get("thresholds") or []:
        try:
            checks.append(from_entry(entry))
        except ThresholdError as exc:  # written by another version of sockbench
            unreadable.append(
                {
                    "threshold": str(entry),
                    "model": None,
                    "statistic": RUN_STATISTIC,
                    "passed": False,
                    "checked": 0,
                    "failed": 0,
                    "value": None,
                    "value_text": f"cannot be read: {exc}",
                    "where": "",
                    "failures": [],
                }
            )
    if not checks:
        return unreadable
    agg = aggregate(
        results.runs, metrics=sorted({c.metric for c in checks if c.metric is not None})
    )  # metric None: compare's regressions only
    out = []
    for threshold in checks:
        measured = [
            Measured(
                row["model"],
                row["label"] or "",
                _json_value(row[f"{threshold.metric}_median"]),
                bool(row.get(f"{threshold.metric}_lower_bound", False)),
            )
            for row in agg.to_dict("records")
        ]
        out.append(check(threshold, measured, RUN_STATISTIC))
    return out + unreadable


def _metric_note(row: pd.Series, metric: str) -> str:
    n = row[f"{metric}_n"]
    if n == 0:
        return "not measured in any successful run"
    if n < MIN_N_FOR_CI:
        return f"no confidence interval: {int(n)} value{'s' if n != 1 else ''}, need {MIN_N_FOR_CI}"
    return ""


def summary_warnings(results: Results) -> list[str]:
    """Plain-language warnings: generator-bound, both saturated, unstable, failed/interrupted, busy machine, thin CIs."""
    agg, runs = results.aggregate, results.runs
    out: list[str] = []
    bound, joint, unstable, lower, unserved = [], [], [], [], []
    for _, row in agg.iterrows():
        where = f"{row['model']} {where_phrase(row['label'], row['service'])}"
        names = lower_bound_names(row)
        if names:
            lower.append(f"{where} ({', '.join(names)})")
        if served_phrase(row):
            unserved.append(f"{where} ({served_phrase(row)})")
        if row["n_generator_bound"]:
            bound.append(f"{where} ({row['n_generator_bound']} of {plural(row['n_runs'], 'run')})")
        if row["n_both_saturated"]:
            joint.append(f"{where} ({row['n_both_saturated']} of {plural(row['n_runs'], 'run')})")
        if row["unstable"]:
            parts = [
                f"{METRIC_LABELS.get(m, m)} {row[f'{m}_cv'] * 100:.0f}%"
                for m in row["unstable_metrics"].split(",")
                if m
            ]
            unstable.append(f"{where} ({', '.join(parts)} over {plural(row['n_ok'], 'repetition')})")
    # advise the native engine only where it did not already measure
    engines = set(runs["gen_engine"].dropna().astype(str).str.split(",").str[0]) if "gen_engine" in runs else set()
    native_too = "" if engines == {"native"} else ", or use the native engine (generator.engine: native)"
    if bound:
        out.append(
            f"generator-bound: {'; '.join(bound)}: {GENERATOR_BOUND_RULE}, so these figures measure the "
            "generator, not the server, whose limit lies higher; add generator workers (generator.workers) "
            f"or give the generator CPUs of its own{native_too}"
        )
    if joint:
        out.append(
            f"both saturated: {'; '.join(joint)}: {BOTH_SATURATED_RULE}, so these figures are a joint limit "
            "of generator and server: the server was at its limit too, and a faster generator may or may not "
            f"raise them; compare with the generator on CPUs of its own{native_too}"
        )
    if lower:
        out.append(
            f"latency lower bounds: {'; '.join(lower)}: more requests never completed (timed out, unanswered "
            "at the end, or never sent) than the share above that percentile, so it is at least the value "
            "shown (marked >=) and may be far higher"
        )
    if unserved:
        out.append(
            f"clients not served: {'; '.join(unserved)} (median over repetitions): the others completed no "
            "request in the window, so the latency figures describe only the clients served"
        )
    if unstable:
        out.append(
            f"unstable: {'; '.join(unstable)}: the coefficient of variation across repetitions exceeds "
            f"{CV_THRESHOLD * 100:.0f}%; trust these medians less, or run more repetitions on a quieter "
            "machine"
        )
    for _, run in runs[runs["status"].isin(FAILED_STATUSES)].iterrows():
        err = first_line(run["error"]) or "no error recorded"
        out.append(f"{run['status']}: run {run['run_id']} ({run['model']}, repetition {run['repetition']}): {err}")
    short = runs[runs["cpu_work_short"].fillna(False).astype(bool)] if len(runs) else runs
    if len(short):
        ids = ", ".join(short["run_id"].head(5)) + (", ..." if len(short) > 5 else "")
        out.append(
            f"CPU work not accounted for: in {len(short)} run{'s' if len(short) != 1 else ''} ({ids}) the "
            "server's CPU time was less than requests x cpu_work_us: the server did less work per request "
            "than the label says, or part of its CPU was not counted; do not read those runs as "
            "cpu_work_us of work per request"
        )
    busy = runs[runs["idle_busy_pct"] > BUSY_THRESHOLD_PCT]
    if len(busy):
        worst = busy["idle_busy_pct"].max()
        ids = ", ".join(busy["run_id"].head(5)) + (", ..." if len(busy) > 5 else "")
        out.append(
            f"busy machine: {len(busy)} run{'s' if len(busy) != 1 else ''} started with the "
            f"machine up to {worst:.0f}% busy (threshold {BUSY_THRESHOLD_PCT:.0f}%): {ids}; "
            "another process competes for the CPUs and can change results 2-4x"
        )
    thin = agg[(agg["n_ok"] > 0) & (agg["n_ok"] < MIN_N_FOR_CI)] if len(agg) else agg
    if len(thin):
        where = ", ".join(f"{r['model']} {where_phrase(r['label'], r['service'])}" for _, r in thin.head(4).iterrows())
        more = f" and {len(thin) - 4} more" if len(thin) > 4 else ""
        out.append(
            f"no confidence interval: fewer than {MIN_N_FOR_CI} successful repetitions at "
            f"{len(thin)} point{'s' if len(thin) != 1 else ''} ({where}{more}); their medians rest on "
            "one or two runs"
        )
    return out


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
