"""``bench compare DIR_A DIR_B [...]``: one scenario across result sets.

Typical questions: Python 3.11 against 3.12, backlog 5 against 128, sendfile
on against off. The first folder is the baseline *A*; every other folder *B*
is compared with it, model by model and point by point, on throughput
(req/s, and MB/s for the file service) and on p50 and p99 latency:

* the **ratio** B/A of the **means** over repetitions, and a **test of
  those means**: Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``)
  over the per-repetition values. The ratio and the test are about the same
  statistic. Means rather than the medians of the report, because medians
  would call for Mann-Whitney U, and with 3 against 3 repetitions the
  smallest two-sided p-value it can reach is 0.1: it could never call
  anything significant. Welch does not assume equal variances (a noisier
  set is common). The medians are kept in comparison.csv for reference;
* a **correction for multiple comparisons**: one comparison runs a test per
  model x point x metric (72 on many-clients), and at the 5% level 3-4 of
  them would be "significant" by chance when nothing changed. Holm's
  step-down correction over the whole family of tests of the comparison
  keeps the chance of any false "significant" at 5%; the table gives the raw
  and the Holm-adjusted p-value and the family size;
* what was tested, said in each row (test, statistic, repetitions on each
  side), and **"untested"** said plainly where no test was possible (fewer
  than two successful repetitions on either side, no variation at all): the
  change is then printed without "better" or "worse", as is a change that
  did not pass the test.

Scenarios must match to be compared: the same service, the same swept
parameters and the same points. A mismatch is refused with a message that
names each difference, unless ``force`` (``--force``), in which case points
are matched by their parameter values and what cannot be matched is listed.
Differences that are the point of the comparison (a non-swept parameter such
as the backlog, the Python version) are reported and used as labels, and so
are settings that may explain a difference without being the point of it
(:func:`settings_differences`): duration, warmup, repetitions, placement,
generator workers and loop, Python, kernel and package versions, sockbench
commit, host.

Error handling: a folder that is not a results folder, or mismatched
scenarios, give a one-line error and exit status 2. Resource handling: the
output folder is created fresh (never overwritten), figures are built without
pyplot and dropped after saving.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings as _warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.format import format_param, formatter_for
from bench.results import PARAMETER_COLUMNS, atomic_file, fresh_path, utc_stamp, write_text_atomically
from bench.stats import NotAResultsFolder, Results, load_results
from bench.units import plural

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType

#: Metrics compared, with the direction that counts as better.
METRICS: dict[str, tuple[str, bool]] = {
    "req_per_s": ("req/s", True),
    "mb_per_s": ("MB/s", True),
    "lat_p50_us": ("p50", False),
    "lat_p99_us": ("p99", False),
}
#: Significance level of the family of tests (Holm-corrected); the conventional 5%.
ALPHA = 0.05
#: What each row's test is, for the table and the figure.
TEST_NAME = "Welch t-test of means"
#: Line styles of result sets A, B, C, ... in overlay figures (colour stays the model's).
SET_STYLES: list[LineStyleType] = ["-", "--", ":", "-."]


class ScenarioMismatch(ValueError):
    """The result sets ran different scenarios; the message names each difference."""


@dataclass
class ComparisonResult:
    """The comparison of result sets: labels, the ratio table, notes, and figure builders.

    ``table`` has one row per other set x model x point x metric with columns
    ``set, baseline, model, point_label, <swept params>, metric, a_mean,
    b_mean, ratio`` (of the means), ``a_median, b_median, n_a, n_b,
    tested, p_value, p_holm, family, significant, change, test, verdict``.
    """

    dirs: list[Path]
    labels: list[str]
    results: list[Results] = field(repr=False)
    table: pd.DataFrame
    swept: list[str]
    notes: list[str]  # differences that are allowed (non-swept params, environment)
    mismatches: list[str]  # differences that needed --force

    facet: str = ""  # set on a one-service view (see figures)

    def figures(self) -> dict[str, Figure]:
        """Overlay figures (throughput, latency) and the ratio figure, per service when there are several."""
        from bench.plots import style

        services = self.results[0].services
        views = (
            [self]
            if len(services) == 1
            else [
                dataclasses.replace(
                    self,
                    results=[r.subset(svc) for r in self.results],
                    table=self.table[self.table["service"] == svc] if len(self.table) else self.table,
                    swept=self.results[0].subset(svc).swept,
                    facet=svc,
                )
                for svc in services
            ]
        )
        out: dict[str, Figure | None] = {}
        with style.settings():
            for v in views:
                suffix = f"_{v.facet}" if v.facet else ""
                out["throughput" + suffix] = _overlay_figure(
                    v, style, ["mb_per_s" if v.service == "file" else "req_per_s"]
                )
                out["latency" + suffix] = _overlay_figure(v, style, ["lat_p50_us", "lat_p99_us"])
                out["ratios" + suffix] = _ratio_figure(v, style)
        return {k: fig for k, fig in out.items() if fig is not None}

    @property
    def service(self) -> str:
        return self.results[0].service

    def write(self, out_dir: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
        """Write comparison.csv and the overlay figures into ``out_dir`` (created); return the files."""
        from bench.plots import save_figure

        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        csv_path = out_dir / "comparison.csv"
        with atomic_file(csv_path) as fh:
            self.table.to_csv(fh, index=False)
        written.append(csv_path)
        for name, fig in self.figures().items():
            written += save_figure(fig, out_dir / name, formats)
        notes = out_dir / "README.txt"
        write_text_atomically(
            notes,
            "\n".join(
                [
                    "bench compare",
                    *[f"  {lab}: {d}" for lab, d in zip(self.labels, self.dirs)],
                    "",
                    *[f"note: {n}" for n in self.notes],
                    *[f"forced past: {m}" for m in self.mismatches],
                ]
            )
            + "\n",
        )
        written.append(notes)
        return written


# --------------------------------------------------------------------------
# Matching scenarios


def _point_keys(results: Results, swept: Sequence[str]) -> dict[tuple, int]:
    """(service, swept-parameter values...) -> point index: what makes two points the same point."""
    keys = {}
    for row in results.points.to_dict("records"):
        keys[(row.get("service"), *(format_param(row.get(p)) for p in swept))] = int(row["point"])
    return keys


def scenario_differences(results: Sequence[Results]) -> tuple[list[str], list[str]]:
    """(mismatches that block a comparison, allowed differences worth saying) between result sets."""
    a = results[0]
    blocking, allowed = [], []
    for b in results[1:]:
        pair = f"{a.path.name} vs {b.path.name}"
        if a.services != b.services:
            blocking.append(f"service differs: {' and '.join(a.services)} vs {' and '.join(b.services)} ({pair})")
        if a.swept != b.swept:
            blocking.append(
                f"swept parameters differ: {', '.join(a.swept) or 'none'} vs {', '.join(b.swept) or 'none'} ({pair})"
            )
        else:
            ka, kb = _point_keys(a, a.swept), _point_keys(b, b.swept)
            if list(ka) != list(kb):
                several = len({k[0] for k in (*ka, *kb)}) > 1
                only_a = [_key_text(k, a.swept, several) for k in ka if k not in kb]
                only_b = [_key_text(k, a.swept, several) for k in kb if k not in ka]
                what = "; ".join(
                    filter(
                        None,
                        [
                            f"only in {a.path.name}: {', '.join(only_a)}" if only_a else "",
                            f"only in {b.path.name}: {', '.join(only_b)}" if only_b else "",
                        ],
                    )
                )
                blocking.append(f"points differ: {what or 'same values in another order'} ({pair})")
        ma, mb = set(a.models), set(b.models)
        if ma != mb:
            allowed.append(
                f"models differ, compared on the common ones: only in {a.path.name}: "
                f"{', '.join(sorted(ma - mb)) or '-'}; only in {b.path.name}: {', '.join(sorted(mb - ma)) or '-'}"
            )
        for p in PARAMETER_COLUMNS:
            if p in a.swept or p in b.swept:
                continue
            va, vb = _fixed_value(a, p), _fixed_value(b, p)
            if va != vb:
                allowed.append(f"{p}: {va} vs {vb}")
        pa, pb = python_version(a), python_version(b)
        if pa and pb and pa != pb:
            allowed.append(f"Python {pa} vs {pb}")
        allowed += settings_differences(a, b)
    return blocking, list(dict.fromkeys(allowed))


def run_settings(results: Results) -> dict[str, str]:
    """Settings of a result set that shape its figures without being a point's parameter."""
    sc, env = results.scenario, results.environment

    def get(d: Any, *path: str) -> Any:
        for k in path:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    reps = int(results.runs["repetition"].max()) if len(results.runs) else None
    placement = get(env, "placement", "policy") or sc.get("placement")
    packages = get(env, "packages") or {}
    out = {
        "duration": _seconds(sc.get("duration", sc.get("duration_s"))),
        "warmup": _seconds(sc.get("warmup", sc.get("warmup_s"))),
        "repetitions": "" if reps is None else str(reps),
        "placement": str(placement or ""),
        "generator workers": str(get(sc, "generator", "workers") or ""),
        "generator loop": str(get(sc, "generator", "loop") or ""),
        "kernel": str(get(env, "platform", "kernel_release") or ""),
        "sockbench commit": str(get(env, "sockbench", "commit") or "")[:12],
        "host": str(env.get("hostname") or ""),
        "kernel counters": str(env.get("kernel_counters") or ""),
    }
    out.update({name: str(v) for name, v in packages.items() if v})
    return out


def _seconds(v: Any) -> str:
    return "" if v is None else f"{float(v):g} s" if isinstance(v, (int, float)) else str(v)


def settings_differences(a: Results, b: Results) -> list[str]:
    """'duration: 5 s vs 10 s', ... for every setting recorded on both sides that differs."""
    sa, sb = run_settings(a), run_settings(b)
    return [f"{name}: {sa[name]} vs {sb[name]}" for name in sa if sa[name] and sb.get(name) and sa[name] != sb[name]]


def _key_text(key: tuple, swept: Sequence[str], with_service: bool = True) -> str:
    """'clients=10', or 'file, clients=10' when the folders hold several services."""
    parts = ([str(key[0])] if with_service else []) + [f"{p}={v}" for p, v in zip(swept, key[1:])]
    return ", ".join(parts) or "all"


def _fixed_value(results: Results, param: str) -> str:
    values = results.runs[param].dropna().unique() if param in results.runs else []
    return ", ".join(format_param(v) for v in values) or "-"


def python_version(results: Results) -> str:
    """The Python version recorded in environment.json (``python.version``), or "" when none was."""
    python = results.environment.get("python")
    version = python.get("version") if isinstance(python, dict) else None
    return version.split()[0] if isinstance(version, str) and version else ""


def make_labels(results: Sequence[Results]) -> list[str]:
    """A short label per set: what differs (Python version, a fixed parameter), else the folder name."""
    pythons = [python_version(r) for r in results]
    labels = [""] * len(results)
    if len(set(pythons)) == len(results) and all(pythons):
        labels = [f"Python {p}" for p in pythons]
    else:
        swept = set().union(*(r.swept for r in results))
        differing = [
            p
            for p in PARAMETER_COLUMNS
            if p not in swept and len({_fixed_value(r, p) for r in results}) == len(results)
        ]
        if differing:
            labels = [", ".join(f"{p}={_fixed_value(r, p)}" for p in differing[:2]) for r in results]
    if len(set(labels)) != len(labels) or not all(labels):
        labels = [r.path.name for r in results]
    if len(set(labels)) != len(labels):
        labels = [f"{chr(65 + i)}: {lab}" for i, lab in enumerate(labels)]
    return labels


# --------------------------------------------------------------------------
# The comparison


def compare(dirs: list[Path], force: bool = False) -> ComparisonResult:
    """Compare every folder of ``dirs[1:]`` with ``dirs[0]``.

    Error handling: raises :class:`NotAResultsFolder` for a folder that is not
    one, :class:`ScenarioMismatch` for different scenarios unless ``force``,
    and ValueError for fewer than two folders.
    """
    if len(dirs) < 2:
        raise ValueError("bench compare needs at least two results folders (the first is the baseline)")
    results = [load_results(Path(d)) for d in dirs]
    blocking, allowed = scenario_differences(results)
    if blocking and not force:
        raise ScenarioMismatch(
            "the result sets ran different scenarios: "
            + "; ".join(blocking)
            + ". Compare runs of the same scenario, or pass --force to compare "
            "the points they share"
        )
    labels = make_labels(results)
    swept = results[0].swept
    metrics = [m for m in METRICS if m != "mb_per_s" or "file" in results[0].services]
    rows = []
    base = results[0]
    base_keys = _point_keys(base, swept)
    several = len(base.services) > 1
    for label, other in zip(labels[1:], results[1:]):
        other_keys = _point_keys(other, swept) if other.swept == swept else {}
        for model in [m for m in base.models if m in other.models]:
            for key, pa in base_keys.items():
                if key not in other_keys:
                    continue
                pb = other_keys[key]
                if base.runs_at(model, pa, ok_only=False).empty and other.runs_at(model, pb, ok_only=False).empty:
                    continue  # the model does not run at this point (c-reference has no file service)
                va, vb = base.runs_at(model, pa), other.runs_at(model, pb)
                for metric in metrics:
                    if metric == "mb_per_s" and key[0] != "file":
                        continue  # MB/s is the file service's throughput; echo compares req/s
                    rows.append(
                        _compare_metric(
                            label,
                            labels[0],
                            model,
                            key,
                            swept,
                            metric,
                            va[metric].to_numpy(dtype=float),
                            vb[metric].to_numpy(dtype=float),
                            several,
                        )
                    )
    table = holm(pd.DataFrame(rows))
    return ComparisonResult(
        dirs=[Path(d) for d in dirs],
        labels=labels,
        results=results,
        table=table,
        swept=swept,
        notes=allowed,
        mismatches=blocking,
    )


def _compare_metric(
    label: str,
    base_label: str,
    model: str,
    key: tuple,
    swept: Sequence[str],
    metric: str,
    a: np.ndarray,
    b: np.ndarray,
    with_service: bool = False,
) -> dict[str, Any]:
    """One row of the table before the correction (:func:`holm` fills ``p_holm``, the verdict)."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    name, _ = METRICS[metric]
    row: dict[str, Any] = {
        "set": label,
        "baseline": base_label,
        "model": model,
        "service": key[0],
        "point_label": _key_text(key, swept, with_service),
    }
    row.update({p: v for p, v in zip(swept, key[1:])})
    mean_a = float(np.mean(a)) if a.size else math.nan
    mean_b = float(np.mean(b)) if b.size else math.nan
    ratio = mean_b / mean_a if a.size and b.size and mean_a != 0 else math.nan
    p_value, why_untested = significance(a, b)
    row.update(
        metric=metric,
        metric_label=name,
        a_mean=mean_a,
        b_mean=mean_b,
        ratio=ratio,
        a_median=float(np.median(a)) if a.size else math.nan,
        b_median=float(np.median(b)) if b.size else math.nan,
        n_a=int(a.size),
        n_b=int(b.size),
        tested=p_value is not None,
        p_value=p_value,
        untested_reason=why_untested,
    )
    return row


def significance(a: np.ndarray, b: np.ndarray) -> tuple[float | None, str]:
    """Welch's t-test of two sets of repetitions: (p-value, "") or (None, why it could not be tested)."""
    if a.size < 2 or b.size < 2:
        return None, f"{a.size} vs {b.size} runs, the test needs 2 on each side"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        if a[0] == b[0]:
            return 1.0, ""
        return None, "no variation within either set"
    from scipy.stats import ttest_ind

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        p = float(ttest_ind(a, b, equal_var=False).pvalue)
    if not math.isfinite(p):
        return None, "the test gave no p-value"
    return p, ""


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): reject where adjusted < alpha.

    Sorted ascending, the i-th smallest (0-based) of m is multiplied by
    ``m - i``; a running maximum keeps the adjusted values monotone, and
    they are capped at 1.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm(table: pd.DataFrame) -> pd.DataFrame:
    """Correct the tested rows of ``table`` as one family (Holm) and write each row's verdict."""
    if table.empty:
        return table
    table = table.copy()
    tested = table["tested"].to_numpy(dtype=bool)
    family = int(tested.sum())
    table["p_holm"] = math.nan
    if family:
        table.loc[tested, "p_holm"] = holm_adjust(table.loc[tested, "p_value"].astype(float).tolist())
    table["family"] = family
    table["significant"] = tested & (table["p_holm"].to_numpy(dtype=float) < ALPHA)
    texts = [_verdict(r, family) for r in table.to_dict("records")]
    table["change"] = [c for c, _ in texts]
    table["test"] = [t for _, t in texts]
    table["verdict"] = [f"{c}, {t}" for c, t in texts]
    return table.drop(columns="untested_reason")


def _verdict(row: dict[str, Any], family: int) -> tuple[str, str]:
    """(change text, test text): 'better'/'worse' only for a difference that passed the corrected test."""
    _, higher_better = METRICS[row["metric"]]
    ratio = row["ratio"]
    change_text = "-"
    if math.isfinite(ratio):
        change = ratio - 1.0
        better = (change > 0) == higher_better
        # under half a percent the direction is noise in the last digit, not better or worse
        direction = "" if abs(change) < 0.005 else (" better" if better else " worse")
        if not row["significant"]:
            direction = " (untested)" if not row["tested"] else " (not significant)"
        change_text = f"{change:+.1%}{direction}"
    runs = f"{row['n_a']} vs {row['n_b']} runs"
    if not row["tested"]:
        return change_text, f"untested: {row['untested_reason']}"
    verdict = "significant" if row["significant"] else "not significant"
    return change_text, (
        f"{verdict}: {TEST_NAME} of {row['metric_label']}, {runs}, p={row['p_value']:.2g}, "
        f"Holm p={row['p_holm']:.2g} over {plural(family, 'test')}"
    )


# --------------------------------------------------------------------------
# Figures


def _set_series(
    cmp: ComparisonResult, res: Results, model: str, metric: str
) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
    agg = res.aggregate
    rows = agg[agg["model"] == model]
    x_param = cmp.swept[0] if cmp.swept else None
    if x_param:
        rows = rows.sort_values(x_param)
    xs = list(rows[x_param]) if x_param else [0]
    return (
        xs,
        rows[f"{metric}_median"].to_numpy(dtype=float),
        rows[f"{metric}_min"].to_numpy(dtype=float),
        rows[f"{metric}_max"].to_numpy(dtype=float),
    )


def _overlay_figure(cmp: ComparisonResult, style: Any, metrics: Sequence[str]) -> Figure | None:
    from bench.plots.figures import PARAM_TEXT, axis_key, make_x_axis

    models = [m for m in cmp.results[0].models if all(m in r.models for r in cmp.results)]
    if not models:
        return None
    n = len(metrics)
    fig, axes = style.new_figure(1, n, width=style.PANEL_W * n + 2.6, sharey=n > 1)
    x_param = cmp.swept[0] if cmp.swept else None
    xa = make_x_axis(x_param, pd.concat([r.points[x_param] for r in cmp.results]).dropna()) if x_param else None
    values: list[float] = []
    for ax, metric in zip(axes.flat, metrics):
        for si, res in enumerate(cmp.results):
            for mi, model in enumerate(models):
                xs, med, lo, hi = _set_series(cmp, res, model, metric)
                if xa:
                    pos = np.array([xa.pos(axis_key(v)) for v in xs])
                else:
                    pos = np.array([mi + (si - (len(cmp.results) - 1) / 2) * 0.8 / len(cmp.results)])
                kw = style.model_style(model)
                # the model keeps colour and marker; the set is told by line style and a hollow marker
                kw.update(linestyle=SET_STYLES[si % len(SET_STYLES)])
                if si > 0:
                    kw.update(markerfacecolor="white")
                ax.plot(pos, med, zorder=3, **kw)
                if xa:
                    ax.fill_between(pos, lo, hi, color=kw["color"], alpha=0.10, linewidth=0)
                else:
                    ax.errorbar(pos, med, yerr=[med - lo, hi - med], color=kw["color"], capsize=3, linestyle="none")
                values += [v for v in np.concatenate([lo, hi]) if np.isfinite(v)]
        if xa:
            xa.apply(ax)
        else:
            ax.set_xticks(range(len(models)), models, rotation=20, ha="right")
        name, _ = METRICS[metric]
        ax.set_title(
            {
                "req_per_s": "throughput",
                "mb_per_s": "throughput",
                "lat_p50_us": "median (p50) latency",
                "lat_p99_us": "p99 latency",
            }[metric],
            fontsize=10,
        )
    for ax, metric in zip(axes.flat, metrics):
        if metric.startswith("lat_"):
            style.time_axis(ax, "y", values)
        else:
            style.count_axis(ax, values)
    first = metrics[0]
    axes[0, 0].set_ylabel(
        {"req_per_s": "throughput (requests/s)", "mb_per_s": "throughput (MB/s)"}.get(
            first, "request latency (log scale)"
        )
    )
    handles = style.model_handles(models)
    handles += [
        Line2D(
            [],
            [],
            color="#555555",
            linestyle=SET_STYLES[i % 4],
            marker="o",
            markerfacecolor="#555555" if i == 0 else "white",
            label=f"{chr(65 + i)}: {lab}",
        )
        for i, lab in enumerate(cmp.labels)
    ]
    style.legend_right(fig, handles)
    what = "throughput" if not first.startswith("lat_") else "latency"
    grow = PARAM_TEXT.get(x_param, ("", ""))[0] if x_param else ""
    style.titles(
        fig,
        f"Does {what} change between {' and '.join(cmp.labels)}?" + _facet(cmp),
        (
            f"median over repetitions, band = min-max; line style = result set {grow}".strip()
            if xa
            else "median over repetitions, whisker = min-max; filled = A, hollow = B (and later sets)"
        ),
    )
    return fig


def _facet(cmp: ComparisonResult) -> str:
    return f" ({cmp.facet} service)" if cmp.facet else ""


def _ratio_figure(cmp: ComparisonResult, style: Any) -> Figure | None:
    """B/A ratio of throughput per model and point; filled = significant, hollow = not."""
    from bench.plots.figures import PARAM_TEXT, axis_key, make_x_axis

    t = cmp.table
    metric = "mb_per_s" if cmp.service == "file" else "req_per_s"
    if t.empty or not (t["metric"] == metric).any():
        return None
    t = t[(t["metric"] == metric) & t["ratio"].notna()]
    if t.empty:
        return None
    x_param = cmp.swept[0] if cmp.swept else None
    fig, axes = style.new_figure(1, 1, width=style.PANEL_W + 3.0)
    ax = axes[0, 0]
    xa = make_x_axis(x_param, t[x_param]) if x_param else None
    models = [m for m in cmp.results[0].models if m in set(t["model"])]
    sets = list(dict.fromkeys(t["set"]))
    for si, set_label in enumerate(sets):
        for mi, model in enumerate(models):
            rows = t[(t["set"] == set_label) & (t["model"] == model)]
            if rows.empty:
                continue
            if xa:
                pos = np.array([xa.pos(axis_key(v)) for v in rows[x_param]])
            else:
                pos = np.array([mi + si * 0.15])
            colour = style.model_colour(model)
            ax.plot(pos, rows["ratio"], color=colour, linestyle=SET_STYLES[(si + 1) % 4], linewidth=1.2, zorder=2)
            sig = rows["significant"].to_numpy(dtype=bool)
            ax.plot(
                pos[sig],
                rows["ratio"].to_numpy()[sig],
                linestyle="none",
                marker=style.model_marker(model),
                markersize=8,
                color=colour,
                zorder=3,
            )
            ax.plot(
                pos[~sig],
                rows["ratio"].to_numpy()[~sig],
                linestyle="none",
                marker=style.model_marker(model),
                markersize=8,
                markerfacecolor="white",
                markeredgecolor=colour,
                zorder=3,
            )
    ax.axhline(1.0, color="#333333", linewidth=1, zorder=1)
    if xa:
        xa.apply(ax)
    else:
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right")
    ax.set_ylabel(f"{METRICS[metric][0]} ratio (set / {cmp.labels[0]})")
    handles = style.model_handles(models) + [
        Line2D([], [], marker="o", color="#555555", linestyle="none", label="significant (Holm p < 0.05)"),
        Line2D(
            [],
            [],
            marker="o",
            color="#555555",
            markerfacecolor="white",
            linestyle="none",
            label="not significant / untested",
        ),
    ]
    style.legend_right(fig, handles)
    grow = PARAM_TEXT.get(x_param, ("", ""))[0] if x_param else ""
    style.titles(
        fig,
        f"How much does throughput change against {cmp.labels[0]}?" + _facet(cmp),
        " ".join(filter(None, ["ratio of the means per model", grow])) + f"; above 1 = more "
        f"{'MB/s' if metric == 'mb_per_s' else 'requests/s'} than {cmp.labels[0]}; {TEST_NAME} over "
        "repetitions, Holm-corrected",
    )
    return fig


# --------------------------------------------------------------------------
# Command line


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bench compare``."""
    parser.add_argument(
        "dirs",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="results folders; the first is the baseline the others are compared with",
    )
    parser.add_argument(
        "--force", action="store_true", help="compare even if the scenarios differ (only the points they share)"
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        help="folder for the table (CSV) and figures (default: results/compare-<UTC time>/)",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=("png", "svg", "pdf"),
        help="figure format; repeat for several (default: png and svg)",
    )
    from bench.thresholds import add_threshold_argument

    add_threshold_argument(parser, regression=True)


def default_output_dir(root: Path = Path("results")) -> Path:
    """A fresh ``<root>/compare-<UTC time>`` folder, created (never reuses one)."""
    return fresh_path(root, f"compare-{utc_stamp()}")


def compare_command(args: argparse.Namespace) -> int:
    """Run ``bench compare``: print the table, write CSV and figures; returns the exit status."""
    from bench.thresholds import EXIT_CROSSED, ThresholdError, parse_threshold, print_results

    if len(args.dirs) < 2:
        print("bench compare: give at least two results folders (the first is the baseline)", file=sys.stderr)
        return 2
    try:
        thresholds = [parse_threshold(text, regression=True) for text in args.thresholds]
    except ThresholdError as exc:
        print(f"bench compare: --threshold {exc}", file=sys.stderr)
        return 2
    for t in thresholds:
        if t.metric is not None and t.metric not in METRICS:
            print(
                f"bench compare: --threshold {t.text!r}: bench compare compares {', '.join(METRICS)}; "
                f"name one of them or none ('regression < 10%')",
                file=sys.stderr,
            )
            return 2
    try:
        result = compare(args.dirs, force=args.force)
    except (NotAResultsFolder, ScenarioMismatch) as exc:
        print(f"bench compare: {exc}", file=sys.stderr)
        return 2
    out_dir = args.output or default_output_dir()
    print_table(result)
    paths = result.write(out_dir, tuple(args.formats or ("png", "svg")))
    print(f"wrote {plural(len(paths), 'file')} to {out_dir}")
    if not print_results([check_regression(t, result.table) for t in thresholds], print):
        print(f"bench compare: a threshold was crossed (exit status {EXIT_CROSSED})", file=sys.stderr)
        return EXIT_CROSSED
    return 0


def regression_pct(metric: str, ratio: float) -> float | None:
    """How much worse B is than A, in percent of A (0 for no change or an improvement); None if unknown."""
    if not math.isfinite(ratio):
        return None
    _, higher_better = METRICS[metric]
    return max(0.0, (1.0 - ratio) * 100 if higher_better else (ratio - 1.0) * 100)


def check_regression(threshold: Any, table: pd.DataFrame) -> dict[str, Any]:
    """Test a ``regression < N%`` threshold against every row of the comparison (or its metric's)."""
    from bench.thresholds import REGRESSION_STATISTIC, Measured, check

    rows = table.to_dict("records") if not table.empty else []
    measured = [
        Measured(
            r["model"], f"{r['point_label']} {r['metric_label']} ({r['set']})", regression_pct(r["metric"], r["ratio"])
        )
        for r in rows
        if threshold.metric in (None, r["metric"])
    ]
    return check(threshold, measured, REGRESSION_STATISTIC)


def print_table(result: ComparisonResult, file: Any = None) -> None:
    """The ratio table with rich (plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout)
    if not console.is_terminal:
        console.width = 160  # a file or a pipe has no width to respect; don't fold the table
    for i, (label, d) in enumerate(zip(result.labels, result.dirs)):
        console.print(f"{chr(65 + i)}{' (baseline)' if i == 0 else ''}: {label}  [dim]{d}[/dim]")
    for note in result.notes:
        console.print(f"[dim]differs: {note}[/dim]")
    for m in result.mismatches:
        console.print(f"[yellow]forced past a mismatch: {m}[/yellow]")
    if result.table.empty:
        console.print("no common model and point to compare")
        return
    for set_label, t in result.table.groupby("set", sort=False):
        family = int(t["family"].iloc[0]) if len(t) else 0
        tests = (
            f"{TEST_NAME}, Holm-corrected over the {plural(family, 'test')} of this comparison"
            if family
            else "nothing could be tested"
        )
        table = Table(title=f"B = {set_label} against A = {result.labels[0]} (mean over repetitions; {tests})")
        for col, kw in (
            ("model", {"no_wrap": True}),
            ("point", {"no_wrap": True}),
            ("metric", {}),
            ("A mean", {"justify": "right"}),
            ("B mean", {"justify": "right"}),
            ("B/A", {"justify": "right"}),
            ("change", {"no_wrap": True}),
            ("test", {}),
        ):
            table.add_column(col, **kw)
        for _, r in t.iterrows():
            fmt = formatter_for(r["metric"])
            style = "" if not r["significant"] else ("green" if r["change"].endswith("better") else "red")
            table.add_row(
                r["model"],
                r["point_label"],
                r["metric_label"],
                fmt(r["a_mean"]),
                fmt(r["b_mean"]),
                "-" if not math.isfinite(r["ratio"]) else f"{r['ratio']:.3f}",
                r["change"],
                r["test"],
                style=style,
            )
        console.print(table)
