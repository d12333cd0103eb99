"""``bench report RESULTS_DIR``: one self-contained HTML file a reader can open offline.

``results_dir/report.html`` holds, in order: the scenario's name, what was
run, the ``thresholds:`` verdicts (PASS/FAIL, the worst value and where), the
scenario's teaching text, the warnings (generator-bound points, a busy
machine, failed and unstable points), the findings (sentences computed from the data
by :mod:`bench.findings`), the headline table (per model and point: req/s
median with its order-statistic confidence interval of the median and that
interval's real level (75% at 3 repetitions), p50, p99, connection outcomes, PSS
and RSS peaks, processes/threads, flags, and the share of the calibrated
ceiling where a calibration exists), the figures, a selection of run
timelines, and the environment.

Self-contained means: every figure is embedded as a ``data:`` URI (SVG for
the question figures, which stay sharp when zoomed, PNG for the timelines,
which are many), the CSS is inline, there is no script and no external
reference (the stylesheet is package data, ``bench/report.css``, copied into
each report), so the file renders the same from a mail attachment, a USB stick
or a browser without network. Figure SVGs are embedded as images rather
than inline ``<svg>`` elements so their internal ids can never collide.

Error handling: a path that is not a results folder gives a one-line error
(exit status 2). A figure that cannot be drawn is left out with a note in its
place rather than failing the report. Resource handling: the figures are
drawn once, into ``figures/`` (by :func:`bench.plots.plot_results`, which
``bench run`` calls first; the report draws only those missing), and embedded
from those files; the report is written atomically (temporary file, then
rename, mode 0644), so a reader never sees half a report.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import json
import math
import re
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from bench.findings import Finding, compute_findings, findings_by_topic, load_calibration
from bench.format import fmt_bytes, fmt_rate, fmt_time_us
from bench.results import write_text_atomically
from bench.stats import (
    METRIC_LABELS,
    NotAResultsFolder,
    Results,
    bound_mark,
    ci_label,
    load_results,
    lower_bound_names,
    served_phrase,
    unresolved_connects,
)
from bench.summary import summary_warnings, threshold_results
from bench.vocabulary import (
    BOTH_SATURATED,
    BUSY,
    CV_THRESHOLD,
    FAILED,
    FAILED_STATUSES,
    GENERATOR_BOUND,
    UNSTABLE,
    point_flags,
)

#: At most this many run timelines are embedded (the rest are in figures/timelines/).
MAX_TIMELINES = 12

#: How to read each figure (its title already states the question).
FIGURE_CAPTIONS = {
    "throughput": "Higher is better. c-reference (black: a hatched bar, or a dashed line when a parameter is swept), where present, is a C epoll server: "
    "the most this machine and this load generator reach.",
    "latency": "Lower is better. p50: the typical request; p99: the slowest one in a hundred.",
    "latency_spectrum": "Read along the x axis: the value above 99% is the latency 99 requests in 100 beat. "
    "Every repetition's histogram at this point merged.",
    "connections": "Every connect attempt of a run by outcome. On Linux a full accept queue silently drops "
    "SYNs, so an overloaded listener shows timeouts, not refusals.",
    "connect_time": "How many attempts had connected by time t. Steps at the dotted lines (whole seconds) are SYNs "
    "the kernel dropped and the client sent again; a curve that ends below 100% never connected.",
    "memory": "PSS splits each shared page between the processes that map it: the honest total for a process "
    "tree. Summed RSS counts a shared page once per process, so it overstates forking.",
    "slow_clients": "The fast clients only (the slow ones of load.mix hold connections and are counted apart): "
    "a model that keeps serving them keeps its throughput, its p99 and its share served as slow clients are added.",
}

_TOPIC_TITLES = {
    "throughput": "Throughput",
    "ceiling": "Against the ceiling",
    "latency": "Latency",
    "memory": "Memory",
    "threads": "Threads",
    "processes": "Processes",
    "connections": "Connections",
}


def _css() -> str:
    """The report's stylesheet (``bench/report.css``, package data), inlined into every report."""
    return resources.files("bench").joinpath("report.css").read_text(encoding="utf-8")


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


# --------------------------------------------------------------------------
# Sections


def _description_html(text: str) -> str:
    """The scenario's teaching text: blank lines separate paragraphs, '- ' lines become a list."""
    if not text.strip():
        return ""
    out: list[str] = []
    items: list[str] = []
    para: list[str] = []

    def flush_para() -> None:
        if para:
            out.append(f"<p>{_e(' '.join(para))}</p>")
            para.clear()

    def flush_items() -> None:
        if items:
            out.append("<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush_para()
            flush_items()
        elif line.startswith(("- ", "* ")):
            flush_para()
            items.append(line[2:])
        elif items and raw.startswith((" ", "\t")):
            items[-1] += " " + line  # continuation of a list item
        else:
            flush_items()
            para.append(line)
    flush_para()
    flush_items()
    return f'<div class="description">{"".join(out)}</div>'


def _meta_html(results: Results) -> str:
    parts, machine = _meta_parts(results)
    measured = f"<br>measured with {_e(machine)} (see <a href='#environment'>environment</a>)" if machine else ""
    return f'<p class="meta">{_e(" · ".join(parts))}{measured}<br>folder: <code>{_e(results.path)}</code></p>'


def _meta_parts(results: Results) -> tuple[list[str], str]:
    """What was run (runs by status, models, services, swept, repetitions) and on what machine."""
    runs = results.runs
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    reps = int(runs["repetition"].max()) if len(runs) else 0
    swept = ", ".join(results.swept) or "nothing (a single load level)"
    services = " and ".join(results.services)
    parts = [
        f"{len(runs)} runs ({', '.join(f'{v} {k}' for k, v in counts.items()) or 'none'})",
        f"models: {', '.join(results.models)}",
        f"service: {services}",
        f"swept: {swept}",
        f"up to {reps} repetitions per point",
    ]
    measured_by = sorted({e for e in runs.get("gen_engine", []) if isinstance(e, str) and e})
    if measured_by:
        parts.append(f"load engine: {', '.join(measured_by)}")
    env = results.environment
    machine = ", ".join(
        str(v)
        for v in (
            " ".join(filter(None, [_get(env, "python", "implementation"), _get(env, "python", "version")])),
            f"Linux {_get(env, 'platform', 'kernel_release')}" if _get(env, "platform", "kernel_release") else None,
            f"{_get(env, 'cpu', 'logical')} CPUs" if _get(env, "cpu", "logical") else None,
            f"placement {_get(env, 'placement', 'policy')}" if _get(env, "placement", "policy") else None,
        )
        if v
    )
    return parts, machine


def _warning_kind(text: str) -> str:
    return text.split(":", 1)[0].strip().replace(" ", "-") if ":" in text else "warning"


def _thresholds_html(results: Results) -> str:
    """The ``thresholds:`` verdicts, as summary.json holds them (:func:`bench.summary.threshold_results`).

    Each row says PASS or FAIL in words as well as in colour, the worst
    value measured and where, and how many values were tested; a failing
    threshold lists the values that crossed it. Empty when the scenario has
    no thresholds.
    """
    verdicts = threshold_results(results)
    if not verdicts:
        return ""
    failed = sum(1 for v in verdicts if not v["passed"])
    head = (
        f"{failed} of {len(verdicts)} threshold{'' if len(verdicts) == 1 else 's'} crossed"
        if failed
        else f"all {len(verdicts)} threshold{'' if len(verdicts) == 1 else 's'} passed"
    )
    rows = []
    for v in verdicts:
        verdict = "pass" if v["passed"] else "fail"
        where = f" ({v['where']})" if v["where"] else ""
        if not v["checked"]:
            measured, tally = v["value_text"], "nothing measured"
        else:
            measured = f"{'worst ' if v['checked'] > 1 else ''}{v['value_text']}{where}"
            tally = f"{v['failed']} of {v['checked']} fail" if v["failed"] else f"{v['checked']} checked"
        crossed = ""
        if v["failures"]:
            more = v["failed"] - len(v["failures"])
            crossed = (
                "<br><span class='ci'>crossed by: "
                + _e(
                    ", ".join(
                        " ".join(p for p in (f["model"], f["where"], f["value_text"]) if p) for f in v["failures"]
                    )
                )
                + (f" and {more} more" if more > 0 else "")
                + "</span>"
            )
        rows.append(
            f"<tr class='{verdict}'><td class='text'><span class='verdict {verdict}'>{verdict.upper()}</span></td>"
            f"<td class='text'><code>{_e(v['threshold'])}</code></td>"
            f"<td class='text'>{_e(measured)}{crossed}</td><td>{_e(tally)}</td></tr>"
        )
    statistic = verdicts[0]["statistic"]
    return (
        f"<h2 id='thresholds'>Thresholds: {head}</h2>"
        f"<p class='note'>Each tested against the {_e(statistic)}.</p>"
        "<div class='tablewrap'><table class='thresholds'><thead><tr><th class='text'>verdict</th>"
        "<th class='text'>threshold</th><th class='text'>measured</th><th>values</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _warnings_html(results: Results) -> str:
    warnings = summary_warnings(results)
    if not warnings:
        return (
            "<h2 id='warnings'>Warnings</h2><p class='note'>None: no failed, generator-bound or unstable "
            "point, and the machine was idle before every run.</p>"
        )
    items = []
    for w in warnings:
        kind = _warning_kind(w)
        label = {"busy-machine": "busy"}.get(kind, kind)
        body = w.split(":", 1)[1].strip() if ":" in w else w
        items.append(f'<li class="{_e(label)}"><span class="tag {_e(label)}">{_e(label)}</span>{_e(body)}</li>')
    failed = results.runs[results.runs["status"].isin(FAILED_STATUSES)]
    details = ""
    if len(failed):
        blocks = "".join(
            f"<h3>{_e(r['run_id'])} ({_e(r['status'])})</h3><pre>{_e(r['error'] or 'no error recorded')}</pre>"
            for _, r in failed.iterrows()
        )
        details = f"<details><summary>Errors of failed runs, in full ({len(failed)})</summary>{blocks}</details>"
    return f"<h2 id='warnings'>Warnings</h2><ul class='warnings'>{''.join(items)}</ul>{details}"


def _findings_html(findings: Sequence[Finding]) -> str:
    if not findings:
        return (
            "<h2 id='findings'>Findings</h2><p class='note'>The data supports no finding sentence "
            "(too few successful runs).</p>"
        )
    parts = [
        "<h2 id='findings'>Findings</h2>",
        "<p class='note'>Computed from the medians over repetitions; each appears only when the data supports it.</p>",
    ]
    for topic, texts in findings_by_topic(findings).items():
        parts.append(
            f"<h3>{_e(_TOPIC_TITLES.get(topic, topic.title()))}</h3><ul class='findings'>"
            + "".join(f"<li>{_e(t)}</li>" for t in texts)
            + "</ul>"
        )
    return "".join(parts)


# --------------------------------------------------------------------------
# Headline table


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ci_text(row: pd.Series, metric: str) -> str:
    lo, hi = _num(row.get(f"{metric}_ci_low")), _num(row.get(f"{metric}_ci_high"))
    level = _num(row.get(f"{metric}_ci_level"))
    if math.isfinite(lo) and math.isfinite(hi) and math.isfinite(level):
        return f"[{fmt_rate(lo, '')}–{fmt_rate(hi, '')}, {ci_label(level)}]"
    n = int(_num(row.get(f"{metric}_n")) or 0) if math.isfinite(_num(row.get(f"{metric}_n"))) else 0
    return f"no CI (n={n})" if n else ""


def _conn_text(row: pd.Series) -> str:
    parts = []
    for key, name in (("ok", "ok"), ("timeout", "timeout"), ("reset", "reset"), ("refused", "refused")):
        v = _num(row.get(f"conn_{key}_median"))
        if math.isfinite(v) and (v > 0 or key == "ok"):
            parts.append(f"{v:,.0f} {name}")
    other = sum(
        v for v in (_num(row.get(f"conn_{k}_median")) for k in ("other", "emfile", "eaddrnotavail")) if math.isfinite(v)
    )
    if other:
        parts.append(f"{other:,.0f} other")
    pending = unresolved_connects(row)
    if pending:
        parts.append(f"{pending:,.0f} still connecting at the end")
    return ", ".join(parts) or "-"


def _flags_html(row: pd.Series) -> str:
    return " ".join(f'<span class="tag {k}">{_e(t)}</span>' for k, t in _flag_tags(row))


def _flag_tags(row: pd.Series) -> list[tuple[str, str]]:
    """(kind, text) of each flag of an aggregate row: failed, generator-bound, both saturated, unstable, busy machine,
    served, bounds."""
    tags = []
    flags = point_flags(row)
    if FAILED in flags:
        bad = int(row["n_failed"] + row["n_interrupted"])
        tags.append((FAILED, f"failed {bad}/{int(row['n_runs'])}"))
    if GENERATOR_BOUND in flags:
        tags.append((GENERATOR_BOUND, f"generator-bound {int(row['n_generator_bound'])}/{int(row['n_runs'])}"))
    if BOTH_SATURATED in flags:
        tags.append((BOTH_SATURATED, f"both saturated {int(row['n_both_saturated'])}/{int(row['n_runs'])}"))
    if UNSTABLE in flags:
        cvs = [f"{METRIC_LABELS.get(m, m)} CV {row[f'{m}_cv']:.0%}" for m in row["unstable_metrics"].split(",") if m]
        tags.append((UNSTABLE, "unstable: " + ", ".join(cvs)))
    if BUSY in flags:
        tags.append((BUSY, f"busy machine {int(row['n_busy'])}/{int(row['n_runs'])}"))
    if served_phrase(row):
        tags.append(("failed", served_phrase(row)))
    if lower_bound_names(row):
        tags.append(("unstable", "≥: " + ", ".join(lower_bound_names(row)) + " lower bound"))
    return tags


def _calibration_text(results: Results, calibration: Any) -> str:
    """When and where the stored ceiling was measured, and what makes it a weaker yardstick for these runs."""
    from bench.findings import calibration_context

    said, caveats = calibration_context(calibration, results)
    return said + (" (" + "; ".join(caveats) + ")" if caveats else "")


def _table_html(results: Results, calibration: Any) -> str:
    from bench.findings import ceiling_for, results_placement
    from bench.plots.style import model_colour

    out = [
        "<h2 id='table'>Headline table</h2>",
        "<p class='note'>Medians over successful repetitions; [confidence interval of the median, with its "
        "confidence level]: an exact order-statistic interval, which at fewer than 6 repetitions is the "
        "range of the runs and covers the true median less often (75% at 3 repetitions, 87.5% at 4). "
        f"A point is <em>unstable</em> when req/s or p50 varies more than {CV_THRESHOLD:.0%} "
        '(coefficient of variation) across repetitions. Connections: attempts per run by outcome; "still '
        'connecting" counts clients whose only connect had no outcome when the run ended (SYN retries). '
        "Memory: peak over the server's whole process tree. Latency counts requests that never completed "
        "(timed out, unanswered at the end, never sent) at the time they had waited; ≥ marks a percentile that "
        "is only a lower bound because more of them than the share above it never completed. "
        "<em>served k/n</em>: only k of the n clients completed a request."
        + (
            " % of ceiling: the median against the calibrated ceiling measured by <code>bench calibrate</code> "
            "for the same point (hover for which), stored with these results when they ran: "
            f"{_e(_calibration_text(results, calibration))}."
            if calibration is not None
            else ""
        )
        + "</p>",
    ]
    for view in results.facets():
        agg = view.aggregate
        if agg.empty:
            continue
        file_service = view.service == "file"
        metric = "mb_per_s" if file_service else "req_per_s"
        placement = results_placement(results)
        ceilings = (
            {
                int(r["point"]): ceiling_for(calibration, view.service, r, placement)
                for _, r in agg.drop_duplicates("point").iterrows()
            }
            if calibration is not None
            else {}
        )
        show_ceiling = any(ceilings.values())
        one_point = agg["point"].nunique() == 1  # then the point column says nothing
        head = (
            ["model"]
            + ([] if one_point else ["point"])
            + [
                "MB/s" if file_service else "req/s",
                "p50",
                "p99",
                "connections",
                "PSS peak",
                "RSS peak",
                "procs / threads",
            ]
        )
        if show_ceiling:
            head.append("% of ceiling")
        head.append("flags")
        rows_html = []
        for _, row in agg.iterrows():
            med = _num(row[f"{metric}_median"])
            value = (
                f"{fmt_rate(med, '')} <span class='ci'>{_e(_ci_text(row, metric))}</span>"
                if math.isfinite(med)
                else "-"
            )
            cells = [
                f"<td class='text'><span class='swatch' style='background:{model_colour(row['model'])}'></span>{_e(row['model'])}</td>",
                *([] if one_point else [f"<td class='text'>{_e(row['label'])}</td>"]),
                f"<td>{value}</td>",
                f"<td>{_e(bound_mark(row, 'lat_p50_us', '≥ ') + fmt_time_us(row['lat_p50_us_median']))}</td>",
                f"<td>{_e(bound_mark(row, 'lat_p99_us', '≥ ') + fmt_time_us(row['lat_p99_us_median']))}</td>",
                f"<td class='text'>{_e(_conn_text(row))}</td>",
                f"<td>{_e(fmt_bytes(row['mem_pss_peak_bytes_median']))}</td>",
                f"<td>{_e(fmt_bytes(row['mem_rss_peak_bytes_median']))}</td>",
                f"<td>{_e(_count(row['procs_peak_median']))} / {_e(_count(row['threads_peak_median']))}</td>",
            ]
            if show_ceiling:
                found = ceilings.get(int(row["point"]))
                reached = _num(row.get(f"{found.metric}_median")) if found else math.nan
                share = f"{reached / found.value:.0%}" if found and math.isfinite(reached) else "-"
                cells.append(f"<td title='{_e(found.label) if found else 'no matching calibration'}'>{_e(share)}</td>")
            cells.append(f"<td class='flags'>{_flags_html(row)}</td>")
            cls = "failedrow" if row["n_ok"] == 0 else ("flagged" if _flags_html(row) else "")
            rows_html.append(f"<tr class='{cls}'>{''.join(cells)}</tr>")
        title = f"<h3>{_e(view.facet)} service</h3>" if view.facet else ""
        header = "".join(
            f"<th class='{'text' if h in ('model', 'point', 'connections', 'flags') else ''}'>{_e(h)}</th>"
            for h in head
        )
        out.append(
            f"{title}<div class='tablewrap'><table><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(rows_html)}</tbody></table></div>"
        )
    return "".join(out)


def _count(v: Any) -> str:
    f = _num(v)
    return f"{f:,.0f}" if math.isfinite(f) else "-"


# --------------------------------------------------------------------------
# Figures


def _file_data_uri(path: Path) -> tuple[str, int, int, str]:
    """A figure file written by :func:`bench.plots.plot_results` as (data: URI, width px, height px, title)."""
    data = path.read_bytes()
    if path.suffix == ".png":
        width, height, title = _png_header(data)
        mime = "image/png"
    else:
        head = data[:4096].decode("utf-8", "replace")
        size = re.search(r'<svg[^>]*?width="([\d.]+)pt"[^>]*?height="([\d.]+)pt"', head, re.S)
        # the SVG's size is in points; the report lays it out in CSS pixels (96 per inch, 72 points)
        width, height = (
            (round(float(size.group(1)) * 96 / 72), round(float(size.group(2)) * 96 / 72)) if size else (0, 0)
        )
        match = re.search(r"<dc:title>(.*?)</dc:title>", head, re.S)
        title = html.unescape(match.group(1)) if match else ""
        mime = "image/svg+xml"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", width, height, title


def _png_header(data: bytes) -> tuple[int, int, str]:
    """Width and height (IHDR) and the ``Title`` text chunk of a PNG, read from its chunks before the image data."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0, ""
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    pos = 8
    while pos + 8 <= len(data):  # each chunk: length (4), type (4), data, CRC (4)
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind in (b"IDAT", b"IEND"):
            break
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt" and body.startswith(b"Title\x00"):
            return width, height, body[6:].decode("latin-1")
        pos += 12 + length
    return width, height, ""


def draw_missing_figures(results: Results) -> tuple[dict[str, Path], str]:
    """The figure files the report embeds, drawing those not yet in ``figures/``: ({base: path}, a note or "").

    The question figures are embedded as SVG (sharp when zoomed), the chosen
    timelines as PNG (many, so small). A figure already on disk is not drawn
    again; the missing ones are drawn in the formats ``bench plot`` draws by default.
    """
    from bench.plots import FiguresFailed, figure_jobs, plot_results

    figures_dir = Path(results.path) / "figures"
    jobs = figure_jobs(results, timelines=_chosen_timelines(results))
    wanted = {job: figures_dir / f"{job.base}.{'png' if job.run_id else 'svg'}" for job in jobs}
    missing = [job for job, path in wanted.items() if not path.is_file()]
    note = ""
    if missing:
        try:
            plot_results(results.path, jobs=missing, results=results)
        except FiguresFailed as exc:
            note = "; ".join(f"{base}: {error}" for base, error in exc.failures.items())
    return {job.base: path for job, path in wanted.items() if path.is_file()}, note


def _figures_html(results: Results, files: dict[str, Path], note: str = "") -> str:
    from bench.plots import FIGURES

    out = [
        "<h2 id='figures'>Figures</h2>",
        "<p class='note'>The same figures are in <code>figures/</code> as PNG and SVG. Markers: hollow square = "
        "generator-bound, hollow diamond = generator and server both saturated, "
        f"pink circle = unstable (CV &gt; {CV_THRESHOLD:.0%}), X = failed run.</p>",
    ]
    if note:
        out.append(f"<p class='note'>Some figures could not be drawn: {_e(note)}</p>")
    shown = 0
    for name in FIGURES:
        for view in results.facets():
            base = f"{name}_{view.facet}" if view.facet else name
            if base not in files:
                continue
            uri, w, h, question = _file_data_uri(files[base])
            shown += 1
            out.append(
                f"<figure id='fig-{_e(base)}'><img src='{uri}' width='{w}' height='{h}' alt='{_e(question or name)}'>"
                f"<figcaption>{_e(FIGURE_CAPTIONS.get(name, ''))} <code>figures/{_e(base)}.svg</code>"
                f"</figcaption></figure>"
            )
    if not shown:
        out.append("<p class='note'>No figure: no successful run.</p>")
    return "".join(out)


def _chosen_timelines(results: Results) -> list[str]:
    """Run ids worth a timeline in the report: every flagged run, then one per model at each facet's largest point."""
    runs = results.runs
    with_tl = set(results.timeline["run_id"])
    chosen: list[str] = []
    flagged = runs[
        (runs["generator_bound"] == True)  # noqa: E712
        | (runs["both_saturated"] == True)  # noqa: E712
        | runs["status"].isin(FAILED_STATUSES)
    ]
    chosen += [r for r in flagged["run_id"] if r in with_tl]
    for view in results.facets():
        if view.points.empty:
            continue
        from bench.findings import largest_point

        point = largest_point(view)
        assert point is not None  # view.points is not empty
        for model in view.models:
            ids = view.runs_at(model, point)["run_id"].tolist()
            ids = [i for i in ids if i in with_tl]
            if ids:
                chosen.append(ids[0])
    return list(dict.fromkeys(chosen))[:MAX_TIMELINES]


def _timelines_html(results: Results, files: dict[str, Path]) -> str:
    ids = [run_id for run_id in _chosen_timelines(results) if f"timelines/{run_id}" in files]
    if not ids:
        return ""
    total = results.timeline["run_id"].nunique()
    blocks = []
    for run_id in ids:
        uri, w, h, _title = _file_data_uri(files[f"timelines/{run_id}"])
        blocks.append(
            f"<figure><img src='{uri}' width='{w}' height='{h}' alt='timeline of {_e(run_id)}' "
            f"style='max-width:{min(w, 1000)}px'><figcaption>Run {_e(run_id)}</figcaption></figure>"
        )
    return (
        f"<h2 id='timelines'>Run timelines</h2><p class='note'>{len(blocks)} of {total} runs: every flagged run, "
        f"then one run per model at the largest point. All runs: <code>figures/timelines/</code> "
        f"(<code>bench plot</code>).</p><details open><summary>Timelines</summary>{''.join(blocks)}</details>"
    )


# --------------------------------------------------------------------------
# Environment


def _get(d: Any, *path: str) -> Any:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _counter_scope_text(env: dict[str, Any]) -> str:
    """Whose sockets the k_* counters count, as environment.json recorded it."""
    scope = env.get("kernel_counters")
    if scope == "own network namespace per run":
        return "each run's own: server and load ran in a network namespace of their own"
    return "namespace-wide: they also count other sockets of the machine's network namespace"


def _environment_html(results: Results, calibration: Any) -> str:
    env = results.environment
    if not env:
        return "<h2 id='environment'>Environment</h2><p class='note'>environment.json is missing.</p>"
    sysctls = env.get("sysctls") or env.get("sysctl") or {}
    placement = env.get("placement") or {}
    rows = [
        (
            "Python",
            " ".join(
                filter(
                    None, [str(_get(env, "python", "implementation") or ""), str(_get(env, "python", "version") or "")]
                )
            ),
        ),
        ("kernel", _get(env, "platform", "kernel_release") or _get(env, "platform", "kernel")),
        (
            "CPU",
            f"{_get(env, 'cpu', 'model') or '?'} × {_get(env, 'cpu', 'logical') or _get(env, 'cpu', 'count') or '?'}",
        ),
        ("memory", fmt_bytes(env.get("memory_total_bytes")) if env.get("memory_total_bytes") else None),
        (
            "CPU placement",
            ", ".join(f"{k}={v}" for k, v in placement.items()) if isinstance(placement, dict) else placement,
        ),
        (
            "listen queue sysctls",
            ", ".join(
                f"{k.rsplit('.', 1)[-1]}={v}"
                for k, v in sysctls.items()
                if any(s in k for s in ("somaxconn", "syncookies", "abort_on_overflow", "max_syn_backlog"))
            ),
        ),
        (
            "load average",
            ", ".join(map(str, env["load_average"]))
            if isinstance(env.get("load_average"), list)
            else env.get("load_average"),
        ),
        (
            "sockbench",
            " ".join(str(v) for v in (_get(env, "sockbench", "version"), _get(env, "sockbench", "commit")) if v)
            + (" (uncommitted changes)" if _get(env, "sockbench", "dirty") else ""),
        ),
        ("host", env.get("hostname")),
        ("kernel counters (k_*)", _counter_scope_text(env)),
        (
            "calibration",
            f"stored with these results, {_calibration_text(results, calibration)}: the table shows % of ceiling"
            if calibration is not None
            else "none stored with these results: run bench calibrate before bench run to see each model against "
            "the machine's ceiling",
        ),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows if v not in (None, "", "?"))
    raw = json.dumps(env, indent=2, sort_keys=True, default=str)
    return (
        f"<h2 id='environment'>Environment</h2><dl class='env'>{dl}</dl>"
        f"<details><summary>environment.json</summary><pre>{_e(raw)}</pre></details>"
    )


# --------------------------------------------------------------------------
# The report


def render_report(
    results: Results, calibration: Any = None, figures: dict[str, Path] | None = None, figures_note: str = ""
) -> str:
    """The report's HTML text, embedding the figure files ``figures`` ({base: path}, see :func:`draw_missing_figures`)."""
    figures = figures or {}
    findings = compute_findings(results, calibration)
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"<h1>{_e(results.name)}</h1>",
        _meta_html(results),
        _thresholds_html(results),  # first after the heading: what a pipeline's reader looks for
        _description_html(results.description),
        _warnings_html(results),
        _findings_html(findings),
        _table_html(results, calibration),
        _figures_html(results, figures, figures_note),
        _timelines_html(results, figures),
        _environment_html(results, calibration),
        f"<footer>sockbench report, generated {generated}. Regenerate with <code>bench report "
        f"{_e(results.path)}</code>.</footer>",
    ]
    links = [("thresholds", "thresholds")] if results.scenario.get("thresholds") else []
    nav = (
        "<p class='meta'>"
        + " · ".join(
            f"<a href='#{a}'>{t}</a>"
            for a, t in (
                *links,
                ("warnings", "warnings"),
                ("findings", "findings"),
                ("table", "table"),
                ("figures", "figures"),
                ("timelines", "timelines"),
                ("environment", "environment"),
            )
        )
        + "</p>"
    )
    sections.insert(2, nav)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"  # an empty icon: browsers would otherwise fetch favicon.ico
        f"<title>{_e(results.name)}: sockbench report</title><style>{_css()}</style></head><body>"
        + "\n".join(s for s in sections if s)
        + "</body></html>\n"
    )


def write_report(results_dir: Path, results: Results | None = None) -> Path:
    """Write ``results_dir/report.html`` (atomically) and return its path.

    The figures are embedded from ``figures/``; those not drawn yet are drawn first.
    ``results``, the folder already read (with its summary.json), is used instead of reading it again.
    """
    results_dir = Path(results_dir)
    results = results if results is not None else load_results(results_dir)
    figures, note = draw_missing_figures(results)
    text = render_report(results, load_calibration(results.path), figures, note)
    target = results_dir / "report.html"
    write_text_atomically(target, text)  # whole or not at all, mode 0644 like every result file
    return target


# --------------------------------------------------------------------------
# Markdown, for a pull request comment


def _md(text: Any) -> str:
    """A Markdown table cell: pipes escaped, on one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


def render_markdown(results: Results) -> str:
    """A summary and the headline table in GitHub Markdown (as hyperfine's ``--export-markdown``).

    The same figures as the HTML report's table: medians over the successful
    repetitions with their confidence interval, p50, p99, connection
    outcomes, PSS peak and the flags; then every warning.
    """
    parts, machine = _meta_parts(results)
    out = [f"### sockbench: {_md(results.name)}", "", " · ".join(parts) + (f"; {machine}" if machine else ""), ""]
    for view in results.facets():
        agg = view.aggregate
        if agg.empty:
            continue
        metric = "mb_per_s" if view.service == "file" else "req_per_s"
        one_point = agg["point"].nunique() == 1
        head = (
            ["model"]
            + ([] if one_point else ["point"])
            + ["MB/s" if view.service == "file" else "req/s", "p50", "p99", "connections", "PSS peak", "flags"]
        )
        if view.facet:
            out += [f"**{_md(view.facet)} service**", ""]
        out += [
            "| " + " | ".join(head) + " |",
            "|" + "|".join(":---" if h in ("model", "point", "connections", "flags") else "---:" for h in head) + "|",
        ]
        for _, row in agg.iterrows():
            med = _num(row[f"{metric}_median"])
            value = f"{fmt_rate(med, '')} {_ci_text(row, metric)}".strip() if math.isfinite(med) else "-"
            cells = (
                [f"`{row['model']}`"]
                + ([] if one_point else [row["label"]])
                + [
                    value,
                    bound_mark(row, "lat_p50_us", "≥ ") + fmt_time_us(row["lat_p50_us_median"]),
                    bound_mark(row, "lat_p99_us", "≥ ") + fmt_time_us(row["lat_p99_us_median"]),
                    _conn_text(row),
                    fmt_bytes(row["mem_pss_peak_bytes_median"]),
                    ", ".join(t for _k, t in _flag_tags(row)) or "",
                ]
            )
            out.append("| " + " | ".join(_md(c) for c in cells) + " |")
        out.append("")
    warnings = summary_warnings(results)
    if warnings:
        out += ["**Warnings**", ""] + [f"- {' '.join(str(w).split())}" for w in warnings] + [""]
    out.append(
        f"Medians over successful repetitions, [confidence interval of the median, its level]. "
        f"Full report: `bench report {results.path}`."
    )
    return "\n".join(out) + "\n"


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bench report``."""
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a results folder written by `bench run`")
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        nargs="?",
        const="-",
        default=None,
        help="write a summary and the headline table as Markdown (for a pull request comment) "
        "to FILE, or to standard output without FILE, instead of the HTML report",
    )


def report_command(args: argparse.Namespace) -> int:
    """Run ``bench report``; returns the exit status."""
    from bench.summary import ensure_summary

    try:
        markdown = getattr(args, "markdown", None)
        if ensure_summary(args.results_dir):
            print(
                f"wrote {Path(args.results_dir) / 'summary.json'} (it was missing)",
                file=sys.stderr if markdown == "-" else sys.stdout,
            )
        if markdown is not None:
            text = render_markdown(load_results(args.results_dir))
            if markdown == "-":
                sys.stdout.write(text)
            else:
                write_text_atomically(Path(markdown), text)
                print(f"wrote {markdown}")
            return 0
        path = write_report(args.results_dir)
    except NotAResultsFolder as exc:
        print(f"bench report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bench report: {exc.filename or args.results_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained: open it in any browser)")
    return 0
