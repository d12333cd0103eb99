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
reported. A run flagged ``generator_bound`` (or ``both_saturated``) is kept
(its numbers are real numbers about the generator, or about the pair) but the
point is marked everywhere it is shown. Both flags are decided again whenever
a folder is read (:func:`normalize_runs`), from the generator's and the
server's CPU columns, by :func:`bench.vocabulary.generator_limit`: the
generator alone cannot tell whether it was the limit, and a changed threshold
applies to every folder read after it.

:func:`load_results` is the one reader of a results folder (see
:mod:`bench.results` for the contract); it returns a :class:`Results` that the
plots, the comparison and the report all use, so they agree on what a folder
contains. What a folder's runs add up to, ``summary.json`` and its warnings, is
:mod:`bench.summary`.

Error handling: a folder without ``runs.csv`` raises :class:`NotAResultsFolder`
whose message names the folder and what a results folder contains. Missing
optional files (timeline, histograms, environment) give empty data, never an
error: a scenario interrupted early still has a readable folder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.format import format_param
from bench.histograms import merge_histograms
from bench.parameters import PARAMETERS, fast_clients
from bench.results import (
    CPU_BUSY_COLUMN,
    PARAMETER_COLUMNS,
    RUN_COLUMNS,
    lower_bound_column,
    read_environment,
    read_hlog,
    read_runs,
    read_summary,
    read_timeline,
)
from bench.vocabulary import BUSY_THRESHOLD_PCT, CONN_OUTCOMES, CONN_PENDING, CV_THRESHOLD, LIMIT_FACTS, limit_columns
from servers import registry

#: Metrics aggregated by default: the headline ones and what the report table shows.
DEFAULT_METRICS: tuple[str, ...] = (
    "req_per_s",
    "mb_per_s",
    "lat_p50_us",
    "lat_p90_us",
    "lat_p99_us",
    "lat_p999_us",
    "lat_max_us",
    "ttfb_p50_us",
    "ttfb_p99_us",
    "connect_p50_us",
    "connect_p99_us",
    "connect_max_us",
    *CONN_OUTCOMES,
    CONN_PENDING,
    "errors",
    "req_pending",
    "req_pending_oldest_s",
    "k_listen_overflows",
    "k_listen_drops",
    "k_reqq_full_drop",
    "k_syncookies_sent",
    "accept_queue_max",
    "mem_pss_peak_bytes",
    "mem_rss_peak_bytes",
    "mem_uss_peak_bytes",
    "procs_peak",
    "threads_peak",
    "fds_peak",
    "server_cpu_pct",
    "gen_cpu_pct_max",
    "lat_censored",
    "clients_served",
    "gen_runq_wait_pct_max",
    "gen_busy_pct_max",
    "server_runq_wait_pct",
    "runner_cpu_pct",
)

#: Metrics whose runs.csv value may be only a lower bound (flagged in the column
#: :func:`~bench.results.lower_bound_column` names); the point's median
#: then gets ``<metric>_lower_bound`` (see :func:`median_is_lower_bound`).
LOWER_BOUNDED_METRICS: tuple[str, ...] = tuple(m for m in DEFAULT_METRICS if lower_bound_column(m) in RUN_COLUMNS)

#: Metrics whose coefficient of variation decides whether a point is unstable.
STABILITY_METRICS: tuple[str, ...] = ("req_per_s", "lat_p50_us")


#: Below three values the range covers the median at 50% (n=2): too little to call an interval.
MIN_N_FOR_CI = 3

#: Confidence level the median interval aims for; reached from 6 repetitions on (see median_ci).
CI_TARGET = 0.95

#: Fewest repetitions whose range reaches CI_TARGET: 1 - 2 * 0.5**6 = 96.9%.
_N_FOR_TARGET = 6


#: Stats columns produced per metric by :func:`aggregate`.
STAT_FIELDS = ("n", "median", "min", "max", "ci_low", "ci_high", "ci_level", "cv", "unstable")

_BOOL_COLUMNS = ("generator_bound", "both_saturated", "sendfile", "cpu_work_short") + tuple(
    c for c in RUN_COLUMNS if c.endswith("_is_lower_bound")
)
# The parameters' own kinds: a flag is a bool column, a choice a text one (server.crash, preload_use ...).
_BOOL_COLUMNS += tuple(p.name for p in PARAMETERS if p.column and p.kind == "flag" and p.name not in _BOOL_COLUMNS)
_STRING_COLUMNS: tuple[str, ...] = (
    "run_id",
    "model",
    "service",
    "status",
    "error",
    "started_at",
    "mode",
    "mem_note",
    "server_cpus",
    "gen_cpus",
    "netns",
    "gen_engine",
    "point_label",
    "net_hosts",
    "net_links",
)
_STRING_COLUMNS += tuple(
    p.name for p in PARAMETERS if p.column and p.kind == "choice" and p.name not in _STRING_COLUMNS
)


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
    out: dict[str, Any] = {
        "n": n,
        "median": None,
        "min": None,
        "max": None,
        "ci_low": None,
        "ci_high": None,
        "ci_level": None,
        "cv": None,
        "unstable": False,
        "note": "",
    }
    if n == 0:
        out["note"] = "no successful measurement"
        return out
    out.update(median=float(np.median(arr)), min=float(arr.min()), max=float(arr.max()))
    notes = []
    if n >= MIN_N_FOR_CI:
        out["ci_low"], out["ci_high"], out["ci_level"] = median_ci(arr)
        if out["ci_level"] < CI_TARGET:
            notes.append(
                f"interval is the range, a {ci_label(out['ci_level'])} at n={n}; "
                f"{_N_FOR_TARGET} repetitions give {CI_TARGET:.0%}"
            )
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
    pairs = [(float(v), bool(b) if not _is_missing(b) else False) for v, b in zip(values, lower) if not _is_missing(v)]
    if not pairs:
        return False
    median = float(np.median([v for v, _ in pairs]))
    return any(b and v <= median for v, b in pairs)


# --------------------------------------------------------------------------
# Runs table


def normalize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Give a runs table every RUN_COLUMNS column with sane dtypes (booleans as bool, text as str).

    ``generator_bound`` and ``both_saturated`` are decided again
    (:func:`bench.vocabulary.limit_columns`) on every row that has the
    generator's CPU figures (``gen_busy_pct_max``); a row without them (an
    engine that does not measure its CPU) keeps what was written.
    """
    missing = [col for col in RUN_COLUMNS if col not in runs.columns]
    # added at once: one insert per column fragments the frame (pandas warns past 100)
    runs = (
        pd.concat([runs, pd.DataFrame(np.nan, index=runs.index, columns=missing)], axis=1) if missing else runs.copy()
    )
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
        measured = runs["gen_busy_pct_max"].notna()
        if measured.any():
            decided = [limit_columns(row) for row in runs.loc[measured, list(LIMIT_FACTS)].to_dict("records")]
            for col in ("generator_bound", "both_saturated"):
                runs[col] = runs[col].astype(object)
                runs.loc[measured, col] = [d[col] for d in decided]
    # one block per dtype: the assignments above leave a block per column (150), and every row
    # selection (a point's runs, a model's) then copies each: about 3.5x slower than consolidated
    return runs.copy()


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
    return runs.sort_values(["point", "repetition"]).groupby("point", as_index=False)[cols].first()


def point_label(params: Mapping[str, Any], swept: Sequence[str], service: str = "") -> str:
    """Human label of a point, e.g. ``clients=100`` or ``file, clients=100``.

    ``service`` is given when a folder holds several services (a scenario with
    ``service: [echo, file]`` has a point per service); ``all`` means the
    folder has a single point.
    """
    parts = ([service] if service else []) + [f"{p}={format_param(params.get(p))}" for p in swept]
    return ", ".join(parts) or "all"


def aggregate(runs: pd.DataFrame, metrics: Iterable[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """One row per model x point: parameters, run counts, and per metric the stats columns.

    Columns: ``model, point, service``, every parameter column, ``label``,
    ``n_runs, n_ok, n_failed, n_interrupted, n_generator_bound, n_both_saturated, n_busy``,
    ``unstable`` (any of :data:`STABILITY_METRICS` has CV above :data:`~bench.vocabulary.CV_THRESHOLD`),
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
        row: dict[str, Any] = {"model": model, "point": int(point), "service": group["service"].iloc[0]}
        row.update({c: prm.get(c) for c in PARAMETER_COLUMNS if c in prm})
        row["label"] = point_label(prm, swept, row["service"] if several_services else "")
        row.update(
            n_runs=len(group),
            n_ok=len(ok),
            n_failed=int((group["status"] == "failed").sum()),
            n_interrupted=int((group["status"] == "interrupted").sum()),
            n_generator_bound=int(group["generator_bound"].fillna(False).astype(bool).sum()),
            n_both_saturated=int(group["both_saturated"].fillna(False).astype(bool).sum()),
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
    served, clients = row.get("clients_served_median"), fast_clients(row)
    if served is None or clients is None or _is_missing(served) or _is_missing(clients) or served >= clients:
        return ""
    return f"served {served:.0f}/{clients:.0f}"


def unresolved_connects(row: Mapping[str, Any], suffix: str = "_median") -> float:
    """Connection attempts still in progress when the run ended (``conn_pending``; 0 if unknown)."""
    value = row.get(f"conn_pending{suffix}")
    return 0.0 if value is None or _is_missing(value) else float(value)


def where_phrase(label: str, service: str) -> str:
    """'at clients=10', 'on echo' or 'on echo at clients=10' for a point label."""
    if label == service:
        return f"on {service}"
    if label.startswith(f"{service}, "):
        return f"on {service} at {label[len(service) + 2 :]}"
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
    "req_per_s": "req/s",
    "mb_per_s": "MB/s",
    "lat_p50_us": "p50 latency",
    "lat_p99_us": "p99 latency",
    "lat_p90_us": "p90 latency",
    "lat_p999_us": "p99.9 latency",
    "connect_p99_us": "connect p99",
}


# --------------------------------------------------------------------------
# Reading a results folder


@dataclass
class Results:
    """Everything in one results folder, loaded once.

    ``runs`` and ``timeline`` are DataFrames with every contract column (empty
    cells are NaN); ``scenario`` and ``environment`` are plain dicts (empty if
    the file is missing); ``stored_summary`` is summary.json as the run wrote
    it, :func:`bench.summary.summary_of` what today's analysis makes of the runs.
    """

    path: Path
    runs: pd.DataFrame
    timeline: pd.DataFrame
    scenario: dict[str, Any]
    environment: dict[str, Any]
    _hist_cache: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.scenario.get("name") or self.path.name)

    @property
    def description(self) -> str:
        return str(self.scenario.get("description") or "").strip()

    #: Set on a one-service view of a folder that holds several (see :meth:`subset`).
    facet: str = ""
    #: summary.json as the run wrote it ({} if missing); :func:`bench.summary.summary_of` recomputes it.
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

    def subset(self, service: str) -> Results:
        """A view of the runs of one ``service`` only (figures are drawn per service)."""
        runs = self.runs[self.runs["service"] == service].reset_index(drop=True)
        ids = set(runs["run_id"])
        timeline = self.timeline[self.timeline["run_id"].isin(ids)].reset_index(drop=True)
        return Results(
            path=self.path,
            runs=runs,
            timeline=timeline,
            scenario=self.scenario,
            environment=self.environment,
            _hist_cache=self._hist_cache,
            facet=service if len(self.services) > 1 else "",
        )

    def facets(self) -> list[Results]:
        """One view per service when the folder holds several, else just this one.

        The views are made once and kept, so their statistics (``aggregate``) are
        computed once however many figures, findings and tables read them.
        """
        return list(self._facet_views)

    @cached_property
    def _facet_views(self) -> tuple[Results, ...]:
        return (self,) if len(self.services) <= 1 else tuple(self.subset(s) for s in self.services)

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

    ``summary=False`` skips reading summary.json (:func:`bench.summary.build_summary` writes it).

    Error handling: raises :class:`NotAResultsFolder` with a message naming the
    path and the fix when the folder or its ``runs.csv`` is missing or unreadable.
    """
    path = Path(results_dir)
    if not path.is_dir():
        raise NotAResultsFolder(
            f"{path} is not a folder; pass a results folder written by `bench run`, e.g. results/20250101T120000Z-quick"
        )
    runs_csv = path / "runs.csv"
    if not runs_csv.exists():
        raise NotAResultsFolder(
            f"{path} is not a sockbench results folder: it has no runs.csv (a results folder holds "
            "scenario.yaml, environment.json, runs.csv, timeline.csv, hist/); pass a folder "
            "written by `bench run`, e.g. results/20250101T120000Z-quick"
        )
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
