"""Merging worker reports into one :class:`~bench.loadgen.spec.LoadResult`.

Counters add up. Histograms are decoded from their base64 transport form and
added bucket by bucket (:func:`bench.histograms.merge`), so merged
percentiles are exact at the histogram's precision, never an average of
per-worker percentiles. The timeline is merged per interval the same way:
workers send ``{counts index: count}`` per interval and the merged interval's
p99 comes from the summed buckets.

Latency percentiles count the *censored* requests too (timeouts, requests
pending at the window end, open-loop requests never started; see
:mod:`bench.loadgen.recording`), at the time they are known to have waited.
That makes each percentile a lower bound of the true one; it is *marked* as
one (``lat_pNN_is_lower_bound``) by :data:`LOWER_BOUND_RULE`.

Everything a reader should know but cannot see in the numbers becomes a
warning string: a generator worker short of CPU (:data:`GENERATOR_SHORT_RULE`; whether
that made the run generator-bound is decided where the server's CPU is known too,
:func:`bench.vocabulary.generator_limit`), percentiles that are lower bounds,
clients never served, workers that started late, connects or scheduled requests left over at
the end, ERR replies, files whose checksum could not be verified, and errors
inside the generator itself.
"""

from __future__ import annotations

from typing import Any

from bench import histograms
from bench.loadgen.spec import ROW_COLUMNS, LoadResult, LoadSpec, lower_bound_column
from bench.parameters import SLOW_KINDS
from bench.vocabulary import (
    CONNECT_OUTCOMES,
    GENERATOR_SHORT_RULE,
    REQUEST_ERRORS,
    SLOW_OUTCOMES,
    clients_column,
    error_column,
    generator_short_of_cpu,
    slow_column,
)

#: Workers starting later than this after the shared start make the windows
#: disagree by more than timer noise; said in a warning.
START_LATE_WARN_S = 0.05
#: When a latency percentile is printed as a lower bound ("p99 >= 1.0 s").
#: Censored requests are counted at the time they had waited so far, so the
#: true percentile can only be higher than the one printed. How much higher
#: is bounded as long as the censored requests are no more than the share of
#: all requests above the percentile's rank ((1-p) of them): even if every
#: one of them waited forever, the request at that rank would be a completed
#: one, so the true value lies between the printed one and that completed
#: request's latency (the same value when the censored requests waited
#: longer than it, as timeouts and ignored clients do). With more censored
#: requests than that, nothing bounds it from above: it is marked. The
#: maximum is marked whenever any request was censored.
LOWER_BOUND_RULE = "censored requests > requests above the percentile's rank (1-p of all)"
#: Latency columns and their percentiles; each has a ``_is_lower_bound`` flag column.
LATENCY_PERCENTILES = {
    "lat_p50_us": 50.0,
    "lat_p90_us": 90.0,
    "lat_p99_us": 99.0,
    "lat_p999_us": 99.9,
    "lat_max_us": 100.0,
}


def _sum_dicts(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def merge_histograms(reports: list[dict[str, Any]]) -> dict[str, histograms.HdrHistogram]:
    """Decode and add up each kind of histogram over all worker reports."""
    kinds = sorted({k for r in reports for k in r["histograms"]})
    return {
        k: histograms.merge([_histogram(r["histograms"][k]) for r in reports if k in r["histograms"]]) for k in kinds
    }


def _histogram(sent: str | dict[str, int]) -> histograms.HdrHistogram:
    """A worker's histogram: HdrHistogram base64 (python engine) or ``{counts index: count}`` (native)."""
    return histograms.sparse_to_hdr(sent) if isinstance(sent, dict) else histograms.decode(sent)


def merge_timeline(
    reports: list[dict[str, Any]], interval: float, warmup_s: float, duration_s: float
) -> list[dict[str, Any]]:
    """One row per interval from warmup start to window end: t_s, req_per_s, lat_p99_us."""
    n_by_k: dict[int, int] = {}
    lat_by_k: dict[int, dict[int, int]] = {}
    for r in reports:
        tl = r["timeline"]
        for j, (n, lat) in enumerate(zip(tl["n"], tl["lat"])):
            k = tl["k0"] + j
            n_by_k[k] = n_by_k.get(k, 0) + n
            merged = lat_by_k.setdefault(k, {})
            for idx, c in lat.items():
                merged[int(idx)] = merged.get(int(idx), 0) + c
    rows = []
    for k in sorted(n_by_k):
        lo = max(k * interval, -warmup_s)
        hi = min((k + 1) * interval, duration_s)
        if hi <= lo:
            continue
        rows.append(
            {
                "t_s": round(k * interval, 6),
                "req_per_s": n_by_k[k] / (hi - lo),
                "lat_p99_us": histograms.sparse_percentile(lat_by_k[k], 99.0),
            }
        )
    return rows


def _busy_pct(report: dict[str, Any]) -> float:
    """One worker's CPU + run-queue wait, percent of the window (wait 0 where not measured)."""
    return report["cpu_pct"] + (report.get("runq_wait_pct") or 0.0)


def _short_of_cpu(report: dict[str, Any]) -> bool:
    """:data:`GENERATOR_SHORT_RULE` for one worker's report."""
    return generator_short_of_cpu(_busy_pct(report), report.get("runq_wait_pct"))


def _censoring_warnings(spec: LoadSpec, row: dict[str, Any]) -> list[str]:
    out = []
    lower = [col for col in LATENCY_PERCENTILES if row[lower_bound_column(col)]]
    if lower:
        total = row["requests"] + row["lat_censored"]
        names = ", ".join(col.removeprefix("lat_").removesuffix("_us") for col in lower)
        out.append(
            f"latency {names} only lower bounds: {row['lat_censored']:,} of {total:,} requests "
            f"({100 * row['lat_censored'] / total:.1f}%) never completed (timed out, unanswered at the end"
            + (", or never sent" if spec.mode == "open" else "")
            + "); printed as '>='"
        )
    served = row["clients_served"]
    fast = spec.mix()["fast"]
    which = " fast" if fast < spec.clients else ""  # load.mix: the slow clients are not served this way
    if 0 < served < fast:
        out.append(
            f"served {served}/{fast}{which} clients: the others completed no request in the window; "
            f"the completed latencies are those of the {served} served"
        )
    elif not served and fast:
        out.append(f"served 0/{fast}{which} clients: no client completed a request in the window")
    return out


def _warnings(
    spec: LoadSpec, reports: list[dict[str, Any]], notes: dict[str, int], err_replies: dict[str, int]
) -> list[str]:
    out: list[str] = []
    if not sum(r["requests"] for r in reports) and spec.mix()["fast"]:
        out.append("no request completed in the measured window: see the connect outcomes and errors")
    for r in reports:
        out.extend(r.get("warnings", []))
        if _short_of_cpu(r):
            wait = r.get("runq_wait_pct")
            out.append(
                f"generator short of CPU: load worker {r['index']} used {r['cpu_pct']:.0f}% of a core"
                + (f" and waited {wait:.0f}% of the window for a CPU" if wait is not None else "")
                + f" ({GENERATOR_SHORT_RULE}); unless the server was saturated too, the figures show the "
                f"generator's limit, not the server's. "
                f"Give the generator more CPUs of its own (--workers/--cpus) or fewer clients per worker"
            )
        if r["start_late_s"] > START_LATE_WARN_S:
            out.append(f"load worker {r['index']} started {r['start_late_s'] * 1000:.0f} ms late (busy machine)")
        if r["loop_errors"]:
            out.append(
                f"load worker {r['index']} hit {r['loop_errors']} unexpected errors in its event loop "
                f"(a generator bug; figures suspect): {'; '.join(r['loop_error_samples'])}"
            )
    if any(r.get("coarse_timer") for r in reports):
        out.append(
            "open loop ran on the event loop's millisecond timers (no timerfd): requests went out up to "
            "~1 ms after their due time, and that delay is in the corrected latency"
        )
    connecting = sum(r["connecting_at_end"] for r in reports)
    if connecting:
        out.append(
            f"{connecting} connection attempts were still in progress when the run ended "
            f"(column conn_pending); connect timeout {spec.connect_timeout_s} s"
        )
    unstarted = sum(r["unstarted"] for r in reports)
    # A handful released in the last instant with every connection busy is
    # normal; more than 0.1% of the schedule means the queue really grew.
    few = max(1.0, 0.001 * (spec.rate or 0.0) * spec.duration_s)
    lag_max = max((r.get("wake_lag_max_s", 0.0) for r in reports), default=0.0)
    late_generator = sum(r.get("late_starts_generator", 0) for r in reports)
    if unstarted > few:
        out.append(
            f"open loop: {unstarted} scheduled requests never got a free connection before the end; "
            f"the server (or {spec.clients} connections) could not keep up with {spec.rate} requests/s; "
            f"they are counted in the latency percentiles at the time they had waited (censored)"
            + (f"; the generator's own wake-ups were up to {lag_max * 1000:.1f} ms late too" if late_generator else "")
        )
    if late_generator > few:
        out.append(
            f"open loop: {late_generator} requests started late although a connection was free: the generator "
            f"woke up to {lag_max * 1000:.1f} ms after their due time (a busy generator CPU), so that part of the "
            f"corrected latency is the generator's, not the server's"
        )
    if notes.get("idle_lost"):
        out.append(f"{notes['idle_lost']} idle connections were closed by the server between requests")
    for text, n in sorted(err_replies.items()):
        out.append(f"{n} file replies were errors ({text!r}); counted in err_corrupt")
    unknown = [f.name for f in spec.files if not f.sha256] if spec.service == "file" else []
    if unknown:
        out.append(f"checksums not verified for {len(unknown)} file(s) with unknown SHA-256 (size still checked)")
    return out


def _mix_columns(spec: LoadSpec, reports: list[dict[str, Any]]) -> dict[str, int]:
    """load.mix's columns: the clients of each kind, and each slow kind's outcomes summed over the workers."""
    row = {clients_column(kind): n for kind, n in spec.mix().items()}
    for kind in SLOW_KINDS:
        for outcome in SLOW_OUTCOMES:
            row[slow_column(kind, outcome)] = sum(r.get("mix", {}).get(kind, {}).get(outcome, 0) for r in reports)
    return row


def censored_percentiles(
    latency: histograms.HdrHistogram, censored: histograms.HdrHistogram, names: dict[str, float]
) -> tuple[dict[str, int | None], dict[str, bool]]:
    """Percentiles of completed and censored requests together, and which are lower bounds.

    See :data:`LOWER_BOUND_RULE`. Returns ``({column: value}, {column: is_lower_bound})``.
    """
    both = histograms.merge([latency, censored])
    values = _pcts(both, names)
    total, n_censored = both.get_total_count(), censored.get_total_count()
    flags = {}
    for col, p in names.items():
        rank = max(int(p * total / 100 + 0.5), 1)  # hdrh's rank of percentile p
        flags[col] = values[col] is not None and n_censored > total - rank
    return values, flags


def _pcts(h: histograms.HdrHistogram, names: dict[str, float]) -> dict[str, int | None]:
    values = histograms.percentiles(h, list(names.values()))
    return {col: values[p] for col, p in names.items()}


def schedule_figures(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The generator's own open-loop figures over all workers (:attr:`LoadResult.schedule`).

    ``wakeups``: release wake-ups in the window; ``started``: requests due in
    the window that were sent; ``send_lag_mean_us``: their mean send time -
    due time (the generator's part of the corrected latency,
    :mod:`bench.loadgen.schedule`);
    ``wake_lag_max_us``; and where the native engine ran, ``waits`` (its
    loop's sleeps in the window), ``lazy_waits`` (those that slept through
    replies) and ``rx_timestamps`` (replies timed by the kernel).
    """
    n = sum(r.get("send_lag_n", 0) for r in reports)
    lag = sum(r.get("send_lag_mean_s", 0.0) * r.get("send_lag_n", 0) for r in reports)
    out: dict[str, Any] = {
        "wakeups": sum(r.get("wakeups", 0) for r in reports),
        "started": n,
        "send_lag_mean_us": round(1e6 * lag / n, 1) if n else None,
        "wake_lag_max_us": round(1e6 * max((r.get("wake_lag_max_s", 0.0) for r in reports), default=0.0), 1),
    }
    if any("waits" in r for r in reports):
        out["waits"] = sum(r.get("waits", 0) for r in reports)
        out["lazy_waits"] = sum(r.get("lazy_waits", 0) for r in reports)
        out["rx_timestamps"] = all(r.get("rx_timestamps", False) for r in reports)
    return out


def merge_reports(spec: LoadSpec, reports: list[dict[str, Any]], window_start: float) -> LoadResult:
    """Combine worker reports (see :mod:`bench.loadgen.worker`) into a :class:`LoadResult`."""
    hists = merge_histograms(reports)
    errors = _sum_dicts([r["errors"] for r in reports])
    connects = _sum_dicts([r["connects"] for r in reports])
    requests = sum(r["requests"] for r in reports)
    payload = sum(r["payload_bytes"] for r in reports)
    duration = spec.duration_s
    cpu = [round(r["cpu_pct"], 1) for r in reports]
    open_loop = spec.mode == "open"
    lat = hists["latency"]
    row: dict[str, Any] = {
        "duration_s": duration,
        "requests": requests,
        "errors": sum(errors.get(k, 0) for k in REQUEST_ERRORS),
        "req_per_s": requests / duration,
        "mb_per_s": payload / duration / 1e6,
    }
    censored = hists.get("censored") or histograms.new_histogram()
    values, lower = censored_percentiles(lat, censored, LATENCY_PERCENTILES)
    row.update(values)
    row["lat_mean_us"] = round(lat.get_mean_value(), 1) if lat.get_total_count() else None
    row["lat_censored"] = censored.get_total_count()
    row.update({lower_bound_column(col): flag for col, flag in lower.items()})
    row.update(_pcts(hists["ttfb"], {"ttfb_p50_us": 50.0, "ttfb_p99_us": 99.0}))
    if open_loop:
        row["lat_uncorrected_p99_us"] = _pcts(hists["latency_uncorrected"], {"p": 99.0})["p"]
        row["late_starts"] = sum(r["late_starts"] for r in reports)
    else:
        row["lat_uncorrected_p99_us"] = None
        row["late_starts"] = None
    for outcome in CONNECT_OUTCOMES:
        row[f"conn_{outcome}"] = connects[outcome]
    row["conn_pending"] = sum(r["connecting_at_end"] for r in reports)
    row.update(_pcts(hists["connect"], {"connect_p50_us": 50.0, "connect_p99_us": 99.0, "connect_max_us": 100.0}))
    # A report without a kind (an engine that cannot see it, e.g. locust's users: no http) counted none of it.
    for kind in REQUEST_ERRORS:
        row[error_column(kind)] = errors.get(kind, 0)
    # Every completed HTTP request had a 2xx status (any other is a failure); blank for other services.
    row["http_2xx"] = requests if spec.service == "http" else None
    row["req_pending"] = sum(r.get("pending_requests", 0) for r in reports)
    row["req_pending_oldest_s"] = round(max((r.get("pending_oldest_s", 0.0) for r in reports), default=0.0), 3)
    row["clients_served"] = sum(r["clients_served"] for r in reports)
    row.update(_mix_columns(spec, reports))
    row["gen_workers"] = len(reports)
    row["gen_source_addrs"] = max((r.get("source_addrs", 1) for r in reports), default=1)
    row["gen_cpu_pct_max"] = max(cpu) if cpu else None
    waits = [r["runq_wait_pct"] for r in reports if r.get("runq_wait_pct") is not None]
    row["gen_runq_wait_pct_max"] = round(max(waits), 1) if waits else None
    row["gen_busy_pct_max"] = round(max(_busy_pct(r) for r in reports), 1) if cpu else None
    row["gen_engine"] = ",".join(sorted({r.get("engine", "python") for r in reports}))
    assert tuple(row) == ROW_COLUMNS, "row columns drifted from ROW_COLUMNS"
    loops = sorted({r["loop"] for r in reports})
    return LoadResult(
        row=row,
        histograms=hists,
        timeline=merge_timeline(reports, spec.timeline_interval_s, spec.warmup_s, duration),
        window_start=window_start,
        window_end=window_start + duration,
        conn_other_errnos=_sum_dicts([r["other_errnos"] for r in reports]),
        worker_cpu_pct=cpu,
        worker_runq_wait_pct=[
            None if r.get("runq_wait_pct") is None else round(r["runq_wait_pct"], 1) for r in reports
        ],
        loop=",".join(loops),
        schedule=schedule_figures(reports) if open_loop else {},
        warnings=_warnings(
            spec, reports, _sum_dicts([r["notes"] for r in reports]), _sum_dicts([r["err_replies"] for r in reports])
        )
        + _censoring_warnings(spec, row),
    )
