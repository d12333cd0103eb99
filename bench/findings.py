"""Findings: sentences computed from a results folder, each with its numbers.

The report states what the data shows in plain sentences, for example
"forking held 20 connections in 24.5 MiB PSS over 21 processes; summed RSS
says 155 MiB". Every sentence is computed here from the medians of the
repetitions, and a sentence appears **only when the data supports it**: no
memory sentence without both PSS and RSS, no SYN-retry sentence unless
connects really took a second or more, no ranking with a single model.
Flagged points are named as such inside the sentence (a generator-bound
ceiling is "at least" that high, a both-saturated one a joint limit; an
unstable median is said to be unstable).

Each checker is a small function ``(view, ctx) -> list[Finding]`` over one
service of the folder; :func:`compute_findings` runs them all. Checkers never
raise on odd data: a value that is missing simply produces no sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.format import fmt_bytes, fmt_rate, fmt_time_us, format_param
from bench.histograms import recorded
from bench.results import load_stored_calibration
from bench.stats import Results, bound_mark, lower_bound_names, served_phrase, unresolved_connects
from bench.vocabulary import BUSY_THRESHOLD_PCT, CONN_OUTCOMES, CONN_PENDING, syn_retry_times
from servers.registry import CEILING_MODELS, is_ceiling_reference

#: A connect this slow (microseconds) was a dropped SYN retried by the client, not a slow accept:
#: the first retransmission comes after 1 s; 0.9 s leaves room for timer slack.
SYN_RETRY_US = 900_000
#: p99 / p50 above this is worth a sentence: most requests are fast, a few wait much longer.
TAIL_RATIO = 3.0
#: summed RSS / PSS above this is worth a sentence about shared pages.
RSS_PSS_RATIO = 1.3
#: Below this relative change, "grew" and "fell" are noise: say "stayed".
FLAT = 0.25
#: At most this many sentences of one repetitive kind (connection failures, SYN retries).
MAX_PER_KIND = 4
#: A ceiling measured more than this many hours from the runs is "another day": the machine may have changed.
CALIBRATION_AGE_H = 24.0


@dataclass(frozen=True)
class Finding:
    """One sentence about the data. ``topic`` groups them (throughput, memory, connections, ...)."""

    topic: str
    text: str


# --------------------------------------------------------------------------
# Formatting


def _n(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _int(v: Any) -> str:
    f = _n(v)
    return "-" if not math.isfinite(f) else f"{f:,.0f}"


# --------------------------------------------------------------------------
# Context of one service view


@dataclass
class _Ctx:
    view: Results
    agg: pd.DataFrame
    metric: str  # req_per_s or mb_per_s
    unit: str
    largest: int | None  # point index of the largest x (or the single point)

    @property
    def syn_retries(self) -> list[float]:
        """Seconds after the first SYN at which this run's kernel retransmits it."""
        return syn_retry_times(self.view.environment.get("sysctls", {}))

    def where(self, point: int) -> str:
        """'at clients=100' / 'at 20 clients' / 'on file at 20 clients'."""
        rows = self.view.points[self.view.points["point"] == point]
        prefix = f"on {self.view.facet}, " if self.view.facet else ""
        if self.view.swept and len(rows):
            return f"{prefix}at {rows['label'].iloc[0]}"
        clients = self.row_value(point, "clients")
        return f"{prefix}at {format_param(clients)} clients" if math.isfinite(_n(clients)) else prefix.rstrip(", ")

    def row_value(self, point: int, column: str) -> Any:
        rows = self.view.points[self.view.points["point"] == point]
        return rows[column].iloc[0] if len(rows) and column in rows else math.nan

    def row(self, model: str, point: int) -> pd.Series | None:
        rows = self.agg[(self.agg["model"] == model) & (self.agg["point"] == point)]
        return rows.iloc[0] if len(rows) else None

    def at(self, point: int) -> pd.DataFrame:
        return self.agg[self.agg["point"] == point]

    def fixed(self) -> str:
        """' (backlog=128)': the other swept parameters a trend was read at, empty without a grid."""
        if self.largest is None or len(self.view.swept) < 2:
            return ""
        return (
            " (" + ", ".join(f"{p}={format_param(self.row_value(self.largest, p))}" for p in self.view.swept[1:]) + ")"
        )

    def line(self, model: str) -> pd.DataFrame:
        """``model``'s rows along the x parameter, the other swept parameters fixed as at the largest point.

        In a grid (clients x backlog) a trend is only a trend along one line:
        mixing backlog 5 and 128 would compare unlike with unlike.
        """
        rows = self.agg[self.agg["model"] == model]
        x = self.view.x_param
        if x is None:
            return rows
        if self.largest is not None:
            for other in self.view.swept[1:]:
                value = self.row_value(self.largest, other)
                rows = rows[rows[other].map(format_param) == format_param(value)]
        return rows.sort_values(x)


def largest_point(view: Results) -> int | None:
    """The point with the largest x value (the last point when nothing is swept): where findings look."""
    pts = view.points
    if pts.empty:
        return None
    x = view.x_param
    if x and pd.api.types.is_numeric_dtype(pts[x]):
        return int(pts.sort_values([x, "point"])["point"].iloc[-1])
    return int(pts["point"].max())


def _flag_note(row: pd.Series) -> str:
    notes = []
    if row.get("n_generator_bound", 0):
        notes.append("generator-bound")
    if row.get("n_both_saturated", 0):
        notes.append("generator and server both saturated")
    if row.get("unstable", False):
        notes.append("unstable")
    if served_phrase(row):
        notes.append(served_phrase(row) + " clients")
    return f" ({', '.join(notes)})" if notes else ""


# --------------------------------------------------------------------------
# Checkers


def _throughput_ranking(ctx: _Ctx) -> list[Finding]:
    if ctx.largest is None:
        return []
    rows = ctx.at(ctx.largest)
    rows = _contenders(rows[rows[f"{ctx.metric}_median"].notna()])
    if len(rows) < 2:
        return []
    rows = rows.sort_values(f"{ctx.metric}_median", ascending=False)
    best, worst = rows.iloc[0], rows.iloc[-1]
    b, w = best[f"{ctx.metric}_median"], worst[f"{ctx.metric}_median"]
    text = (
        f"{ctx.where(ctx.largest).capitalize()}, {best['model']} served the most: "
        f"{fmt_rate(b, ctx.unit)}{_flag_note(best)} (median of {int(best['n_ok'])}); {worst['model']} the least: "
        f"{fmt_rate(w, ctx.unit)}{_flag_note(worst)}, {w / b:.2f}x of it."
    )
    return [Finding("throughput", text)]


def _contenders(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without the machine's ceiling (a reference, not a contender)."""
    return rows[~rows["model"].map(is_ceiling_reference).astype(bool)]


def _ceiling(ctx: _Ctx) -> list[Finding]:
    if ctx.largest is None:
        return []
    ref = next((row for name in CEILING_MODELS if (row := ctx.row(name, ctx.largest)) is not None), None)
    if ref is None or not math.isfinite(_n(ref[f"{ctx.metric}_median"])):
        return []
    rows = ctx.at(ctx.largest)
    rows = _contenders(rows[rows[f"{ctx.metric}_median"].notna()])
    if rows.empty:
        return []
    c = ref[f"{ctx.metric}_median"]
    parts = ", ".join(
        f"{r['model']} {r[f'{ctx.metric}_median'] / c:.0%}"
        for _, r in rows.sort_values(f"{ctx.metric}_median", ascending=False).iterrows()
    )
    if ref["n_generator_bound"]:
        lead = (
            f"{ref['model']} served {fmt_rate(c, ctx.unit)} {ctx.where(ctx.largest)}, but the load generator "
            f"was saturated in {int(ref['n_generator_bound'])} of its runs, so the machine's ceiling is at "
            f"least that; as a share of it"
        )
    elif ref.get("n_both_saturated", 0):
        lead = (
            f"{ref['model']} served {fmt_rate(c, ctx.unit)} {ctx.where(ctx.largest)}, with the load generator "
            f"and the server both saturated in {int(ref['n_both_saturated'])} of its runs: a joint limit of the "
            f"two, the machine's ceiling for this generator; as a share of it"
        )
    else:
        lead = f"{ref['model']}, the machine's ceiling, served {fmt_rate(c, ctx.unit)} {ctx.where(ctx.largest)}; as a share of it"
    return [Finding("ceiling", f"{lead}: {parts}.")]


def _sequential(ctx: _Ctx) -> list[Finding]:
    out = []
    if ctx.largest is not None:
        seq, thr = ctx.row("sequential", ctx.largest), ctx.row("threading", ctx.largest)
        if seq is not None and thr is not None:
            s, t = _n(seq[f"{ctx.metric}_median"]), _n(thr[f"{ctx.metric}_median"])
            if math.isfinite(s) and math.isfinite(t) and t > 0:
                out.append(
                    Finding(
                        "throughput",
                        f"sequential served {fmt_rate(s, ctx.unit)} {ctx.where(ctx.largest)} "
                        f"vs threading {fmt_rate(t, ctx.unit)} ({s / t:.2f}x).",
                    )
                )
    x = ctx.view.x_param
    if x == "clients":
        rows = ctx.line("sequential")
        vals = rows[f"{ctx.metric}_median"].dropna()
        if len(vals) >= 2 and vals.min() > 0 and vals.max() / vals.min() < 1 + FLAT:
            lo, hi = fmt_rate(vals.min(), ctx.unit), fmt_rate(vals.max(), ctx.unit)
            span = f"at about {lo}" if lo == hi else f"between {lo} and {hi}"
            out.append(
                Finding(
                    "throughput",
                    (
                        f"sequential stayed {span} "
                        f"from {format_param(rows['clients'].iloc[0])} to {format_param(rows['clients'].iloc[-1])} clients: "
                        "it serves one connection at a time, so more clients add no throughput."
                    ),
                )
            )
    return out


def _scaling(ctx: _Ctx) -> list[Finding]:
    x = ctx.view.x_param
    if x != "clients":
        return []
    parts = []
    lo_c = hi_c = None
    for model in ctx.view.models:
        rows = ctx.line(model)
        rows = rows[rows[f"{ctx.metric}_median"].notna()]
        if len(rows) < 2:
            continue
        a, b = rows[f"{ctx.metric}_median"].iloc[0], rows[f"{ctx.metric}_median"].iloc[-1]
        if a > 0:
            parts.append(f"{model} {b / a:.1f}x")
            lo_c, hi_c = rows["clients"].iloc[0], rows["clients"].iloc[-1]
    if len(parts) < 2:
        return []
    return [
        Finding(
            "throughput",
            f"From {format_param(lo_c)} to {format_param(hi_c)} clients{ctx.fixed()}, "
            f"throughput changed: {', '.join(parts)}.",
        )
    ]


def _memory(ctx: _Ctx) -> list[Finding]:
    out = []
    for model in ctx.view.models:
        rows = ctx.agg[ctx.agg["model"] == model]
        rows = rows[rows["procs_peak_median"] > 1] if "procs_peak_median" in rows else rows.iloc[0:0]
        rows = rows[rows["mem_pss_peak_bytes_median"].notna() & rows["mem_rss_peak_bytes_median"].notna()]
        if rows.empty:
            continue
        row = rows.sort_values(["procs_peak_median", "point"]).iloc[-1]
        pss, rss = row["mem_pss_peak_bytes_median"], row["mem_rss_peak_bytes_median"]
        if not (pss > 0 and rss / pss > RSS_PSS_RATIO):
            continue
        procs = _int(row["procs_peak_median"])
        held = _n(row.get("conn_ok_median"))
        per_conn = _n(row.get("requests_per_connection"))
        if math.isfinite(held) and per_conn == 0:
            lead = f"{model} held {held:,.0f} connections in {fmt_bytes(pss)} PSS over {procs} processes"
        else:
            lead = f"{model} used {fmt_bytes(pss)} PSS over {procs} processes"
        out.append(
            Finding(
                "memory",
                (
                    f"{lead} ({ctx.where(int(row['point']))}); summed RSS says {fmt_bytes(rss)}, {rss / pss:.1f}x as much: "
                    "it counts the pages the processes share copy-on-write once per process."
                ),
            )
        )
    return out


def _memory_per_client(ctx: _Ctx) -> list[Finding]:
    """PSS growth per added client, or per added process where processes serve the clients (forking).

    A forking server with max_children=40 serves 1,000 clients with 41
    processes: its growth divided by clients would understate what each
    serving process costs ~25x, so it is divided by the processes added.
    """
    if ctx.view.x_param != "clients":
        return []
    per_client, per_process = [], []
    for model in ctx.view.models:
        rows = ctx.line(model)
        rows = rows[rows["mem_pss_peak_bytes_median"].notna()]
        if len(rows) < 2:
            continue
        first, last = rows.iloc[0], rows.iloc[-1]
        dc = last["clients"] - first["clients"]
        dm = last["mem_pss_peak_bytes_median"] - first["mem_pss_peak_bytes_median"]
        dp = _n(last.get("procs_peak_median")) - _n(first.get("procs_peak_median"))
        if math.isfinite(dp) and dp >= 1:
            per_process.append((dm / dp, model, _n(last.get("procs_peak_median")), _n(last["clients"])))
        elif dc > 0:
            per_client.append((dm / dc, model))
    if len(per_client) + len(per_process) < 2:
        return []
    where = ctx.fixed().replace(" (", ", ").rstrip(")")
    sentences = []
    if per_client:
        text = ", ".join(f"{model} {fmt_bytes(max(0.0, per))}" for per, model in sorted(per_client))
        sentences.append(
            f"Each additional client cost, in PSS (largest minus smallest point, per client{where}): {text}."
        )
    if per_process:
        text = ", ".join(
            f"{model} {fmt_bytes(max(0.0, per))} per additional process ({procs:,.0f} processes "
            f"served {clients:,.0f} clients)"
            for per, model, procs, clients in sorted(per_process)
        )
        sentences.append(
            f"Where a process serves each connection, the PSS growth is per process added (largest "
            f"minus smallest point{where}): {text}."
        )
    return [Finding("memory", " ".join(sentences))]


def _max_children(ctx: _Ctx) -> list[Finding]:
    out = []
    rows = ctx.agg[ctx.agg["model"] == "forking"]
    for _, row in rows.sort_values("point", ascending=False).iterrows():
        clients, mc, procs = _n(row.get("clients")), _n(row.get("max_children")), _n(row.get("procs_peak_max"))
        if all(map(math.isfinite, (clients, mc, procs))) and clients > mc and procs <= mc + 1:
            out.append(
                Finding(
                    "processes",
                    (
                        f"forking never ran more than {procs:.0f} processes {ctx.where(int(row['point']))} "
                        f"(max_children={mc:.0f} plus the parent) although {clients:.0f} clients connected: "
                        "at the limit ForkingMixIn waits for a child to exit before it accepts again."
                    ),
                )
            )
            break
    return out


def _threads(ctx: _Ctx) -> list[Finding]:
    if ctx.largest is None:
        return []
    row = ctx.row("threading", ctx.largest)
    if row is None:
        return []
    threads, procs, clients = (
        _n(row.get("threads_peak_median")),
        _n(row.get("procs_peak_median")),
        _n(row.get("clients")),
    )
    if not all(map(math.isfinite, (threads, clients))) or clients < 2 or threads < clients:
        return []
    return [
        Finding(
            "threads",
            (
                f"threading ran {threads:.0f} threads in {_int(procs)} process{'es' if procs != 1 else ''} "
                f"{ctx.where(ctx.largest)}: one thread per connection (plus the main one)."
            ),
        )
    ]


def _connection_failures(ctx: _Ctx) -> list[Finding]:
    items = []
    for _, row in ctx.agg.iterrows():
        timeout, reset, refused = (_n(row.get(f"conn_{k}_median")) for k in ("timeout", "reset", "refused"))
        pending = unresolved_connects(row)
        bad = [
            (v, what)
            for v, what in (
                (timeout, "timed out"),
                (reset, "were reset"),
                (refused, "were refused"),
                (pending, "were still waiting to connect when the run ended"),
            )
            if math.isfinite(v) and v > 0
        ]
        if not bad:
            continue
        attempts = connection_attempts(ctx.view, row["model"], int(row["point"]))
        what = "; ".join(f"{v:,.0f} of {attempts:,.0f} connection attempts {w}" for v, w in bad)
        backlog = _n(row.get("backlog"))
        lead = f"{ctx.where(int(row['point'])).capitalize()}"
        if math.isfinite(backlog) and "backlog" not in lead:
            lead += f" (backlog {backlog:.0f})"
        text = f"{lead}, {row['model']}: {what} (median per run)"
        overflows = _n(row.get("k_listen_overflows_median"))
        if math.isfinite(overflows) and overflows > 0:
            text += f"; ListenOverflows rose by {overflows:,.0f} during the window ({_counter_scope(ctx, row)})"
        if refused > 0:
            text += "; a refusal means nothing was listening: Linux does not refuse on a full queue"
        items.append((sum(v for v, _ in bad), Finding("connections", text + ".")))
    items.sort(key=lambda t: -t[0])
    out = [f for _, f in items[:MAX_PER_KIND]]
    if len(items) > MAX_PER_KIND:
        out.append(
            Finding(
                "connections",
                f"Connection attempts failed at {len(items) - MAX_PER_KIND} more model "
                "and point combinations (see the table).",
            )
        )
    return out


def connection_attempts(view: Results, model: str, point: int) -> float:
    """Median over the point's runs of each run's connection attempts (every outcome, pending included).

    Summed per run, then the median: a sum of per-outcome medians mixes
    different runs and need not be any run's total.
    """
    runs = view.runs_at(model, point)
    cols = [c for c in (*CONN_OUTCOMES, CONN_PENDING) if c in runs.columns]
    if runs.empty or not cols:
        return math.nan
    return float(runs[cols].fillna(0).sum(axis=1).median())


def _counter_scope(ctx: _Ctx, row: pd.Series) -> str:
    """Whose sockets a kernel counter of this point counted: the runs' own namespaces, or everyone's."""
    runs = ctx.view.runs_at(row["model"], int(row["point"]))
    if len(runs) and (runs["netns"] == "own").all():
        return "this server's network namespace alone"
    return "namespace-wide: other sockets on the machine count too"


def _syn_retries(ctx: _Ctx) -> list[Finding]:
    items = []
    for _, row in ctx.agg.iterrows():
        ids = ctx.view.runs_at(row["model"], int(row["point"]))["run_id"]
        hist = ctx.view.merged_histogram(ids, "connect")
        if hist is None:
            continue
        total = hist.get_total_count()
        slow = sum(count for value, count in recorded(hist) if value >= SYN_RETRY_US)
        if slow:
            items.append((slow / total, row, slow, total, hist.get_max_value()))
    items.sort(key=lambda t: -t[0])
    out = []
    for share, row, slow, total, mx in items[:MAX_PER_KIND]:
        # name only the retransmissions (this kernel's schedule) the data reached
        reached = [t for t in ctx.syn_retries if t * 1e6 <= mx * 1.05] or ctx.syn_retries[:1]
        retries = ", ".join(f"{t:g}" for t in reached) + " s"
        out.append(
            Finding(
                "connections",
                (
                    f"{ctx.where(int(row['point'])).capitalize()}, {slow:,} of {total:,} connects of {row['model']} "
                    f"({share:.0%}, all repetitions) took 1 s or more, the slowest {fmt_time_us(mx)}: SYNs dropped by a full "
                    f"listen queue and retransmitted by the client after {retries}."
                ),
            )
        )
    return out


def _tail(ctx: _Ctx) -> list[Finding]:
    if ctx.largest is None:
        return []
    rows = ctx.at(ctx.largest)
    rows = rows[(rows["lat_p50_us_median"] > 0) & rows["lat_p99_us_median"].notna()]
    if rows.empty:
        return []
    ratio = rows["lat_p99_us_median"] / rows["lat_p50_us_median"]
    i = ratio.idxmax()
    if ratio[i] < TAIL_RATIO:
        return []
    row = rows.loc[i]
    at_least = "at least " if bound_mark(row, "lat_p99_us") else ""
    return [
        Finding(
            "latency",
            (
                f"{row['model']}'s p99 latency {ctx.where(ctx.largest)} is {at_least}{ratio[i]:.1f}x its median "
                f"({bound_mark(row, 'lat_p99_us', '≥ ')}{fmt_time_us(row['lat_p99_us_median'])} vs "
                f"{fmt_time_us(row['lat_p50_us_median'])}): most requests are quick, one in a hundred waits much longer."
            ),
        )
    ]


def _unserved(ctx: _Ctx) -> list[Finding]:
    """A model that served only some clients: its latency is theirs; the others' wait is censored."""
    out = []
    for _, row in ctx.agg.iterrows():
        served = served_phrase(row)
        if not served or is_ceiling_reference(row["model"]):
            continue
        bounds = [f"{name} ≥ {fmt_time_us(row[f'lat_{name}_us_median'])}" for name in lower_bound_names(row)]
        out.append(
            Finding(
                "latency",
                (
                    f"{row['model']} {ctx.where(int(row['point']))} {served} clients: the others completed no request "
                    f"in the window, so its latency percentiles describe only the clients served and count the others' "
                    f"requests at the wait they had reached" + (f" ({', '.join(bounds)})" if bounds else "") + "."
                ),
            )
        )
    return out[:3]  # why 3: the pattern is clear from a few points; the table flags every one


def _run_medians(ctx: _Ctx, column: str) -> pd.Series:
    """The median of a runs.csv ``column`` over each point's successful runs (all models), by point."""
    runs = ctx.view.runs
    if column not in runs:
        return pd.Series(dtype=float)
    ok = runs[runs["status"] == "ok"]
    return pd.to_numeric(ok[column], errors="coerce").groupby(ok["point"]).median().dropna()


def _link(ctx: _Ctx) -> list[Finding]:
    """The link between the hosts: the round trip measured over it beside the one added, per point."""
    runs = ctx.view.runs
    if "net_hosts" not in runs or not (runs["net_hosts"] == "namespaces").any():
        return []
    base = _run_medians(ctx, "net_base_rtt_us")
    added = _run_medians(ctx, "net_rtt_ms")
    parts = []
    for point, measured in base.items():
        rtt_ms = _n(added.get(point))
        if not math.isfinite(rtt_ms):
            continue
        over = f"{fmt_time_us(measured - rtt_ms * 1e3)} over the {format_param(rtt_ms)} ms added" if rtt_ms else ""
        parts.append(f"{fmt_time_us(measured)} at {format_param(rtt_ms)} ms added" + (f" ({over})" if over else ""))
    if not parts:
        return []
    cpu, frames = _run_medians(ctx, "net_stage_cpu_s"), _run_medians(ctx, "net_stage_frames")
    stage = ""
    per_frame = [cpu[p] / frames[p] * 1e6 for p in cpu.index if p in frames.index and frames[p] > 0]
    if per_frame:
        stage = (
            f"; the delay stage, a process of its own on the same CPUs, used {min(per_frame):.0f}-"
            f"{max(per_frame):.0f} µs of CPU per frame it forwarded"
        )
    return [
        Finding(
            "network",
            "Round trip between the client and server hosts, measured before each run (median): "
            + "; ".join(parts)
            + stage
            + ".",
        )
    ]


def _littles_law(ctx: _Ctx) -> list[Finding]:
    """Open loop with the round trip swept: requests in flight (req/s x mean latency) against rate x RTT."""
    if ctx.view.x_param != "net_rtt_ms":
        return []
    runs = ctx.view.runs
    ok = runs[(runs["status"] == "ok") & (runs["mode"] == "open")]
    if ok.empty or ok["rate"].isna().all():
        return []
    rate = float(ok["rate"].dropna().iloc[0])
    in_flight = (ok["req_per_s"] * ok["lat_mean_us"] / 1e6).groupby(ok["net_rtt_ms"]).median().dropna()
    if len(in_flight) < 2:
        return []
    measured = ", ".join(f"{v:.1f}" for v in in_flight.to_numpy())
    predicted = ", ".join(format_param(round(rate * rtt / 1e3, 1)) for rtt in in_flight.index)
    rtts = ", ".join(format_param(v) for v in in_flight.index)
    text = (
        f"Little's law: at {format_param(rate)} requests/s, the requests in flight (req/s x mean latency, medians "
        f"over every model's runs) were {measured} at {rtts} ms added round trip; rate x RTT predicts {predicted}."
    )
    threading = ctx.line("threading")
    if not threading.empty and threading["threads_peak_median"].notna().all():
        held = sorted({int(v) for v in threading["threads_peak_median"]})
        held_text = "-".join(str(v) for v in (held[0], held[-1])) if len(held) > 1 else str(held[0])
        text += (
            f" threading held {held_text} threads at every round trip: a thread per connection, "
            "whether its connection has a request in flight or not."
        )
    return [Finding("network", text)]


def _link_counters(ctx: _Ctx) -> list[Finding]:
    """A rate-limited link: how often tbf held packets back, what it dropped, what the server retransmitted."""
    runs = ctx.view.runs
    if "net_tbf_overlimits" not in runs or runs["net_tbf_overlimits"].isna().all():
        return []
    ok = runs[runs["status"] == "ok"]
    held = pd.to_numeric(ok["net_tbf_overlimits"], errors="coerce").median()
    drops = pd.to_numeric(ok["net_tbf_drops"], errors="coerce").median()
    retrans = pd.to_numeric(ok["net_retrans_segs"], errors="coerce").median() if "net_retrans_segs" in ok else math.nan
    rate = pd.to_numeric(ok["net_rate_mbit"], errors="coerce").dropna()
    if not math.isfinite(_n(held)) or rate.empty:
        return []
    text = (
        f"On the {format_param(rate.iloc[0])} Mbit/s link the rate limit held packets back {_int(held)} times per "
        f"run (median) and dropped {_int(drops)}"
    )
    if math.isfinite(_n(retrans)):
        text += f"; the server retransmitted {_int(retrans)} segments in the window"
    if _n(held) > 0 and _n(drops) == 0:
        text += (
            ": the link queued instead of dropping, so TCP's window and the server's full send buffer, not "
            "loss, slowed the server: every client reads at the link's pace, a slow reader"
        )
    return [Finding("network", text + ".")]


CHECKERS: list[Callable[[_Ctx], list[Finding]]] = [
    _throughput_ranking,
    _ceiling,
    _sequential,
    _scaling,
    _tail,
    _unserved,
    _memory,
    _memory_per_client,
    _threads,
    _max_children,
    _connection_failures,
    _syn_retries,
    _link,
    _littles_law,
    _link_counters,
]


def compute_findings(results: Results, calibration: Any = None) -> list[Finding]:
    """Every finding the data supports, service by service, in a stable order."""
    out: list[Finding] = []
    for view in results.facets():
        agg = view.aggregate
        if agg.empty:
            continue
        file_service = view.service == "file" and agg["mb_per_s_median"].notna().any()
        ctx = _Ctx(
            view=view,
            agg=agg,
            metric="mb_per_s" if file_service else "req_per_s",
            unit="MB/s" if file_service else "req/s",
            largest=largest_point(view),
        )
        for check in CHECKERS:
            try:
                out += check(ctx)
            except (KeyError, ValueError, TypeError, ZeroDivisionError, IndexError):
                continue  # odd data gives no sentence, never a broken report
        out += _calibration(ctx, calibration)
    return out


# --------------------------------------------------------------------------
# Calibration (bench.calibration, optional)


@dataclass(frozen=True)
class Ceiling:
    """The machine's ceiling matching one point: compare ``metric`` (req_per_s or mb_per_s) with ``value``."""

    value: float
    metric: str
    label: str


def load_calibration(results_dir: Any) -> dict[str, Any] | None:
    """The calibration stored with a results folder (``calibration.json``, copied by ``bench run``), or None.

    Never the current folder's ``results/calibration/latest.json``: that one
    may come from another day, host or placement than the runs.
    """
    try:
        return load_stored_calibration(results_dir)
    except Exception:  # noqa: BLE001 - a broken calibration file must not break the report
        return None


def calibration_context(calibration: Any, results: Results) -> tuple[str, list[str]]:
    """('measured 2026-12-01 21:05 UTC on host h', caveats) of a calibration against these runs.

    Caveats name what makes the ceiling a weaker yardstick for these runs: a
    busy machine while calibrating, quick mode, another host, another day.
    """
    import datetime as _dt

    if not isinstance(calibration, dict):
        return "", []
    machine = calibration.get("machine") or {}
    host = machine.get("hostname")
    when = _parse_time(calibration.get("created_at"))
    said = "measured " + (when.strftime("%Y-%m-%d %H:%M UTC") if when else "at an unrecorded time")
    said += f" on {host}" if host else " on an unrecorded host"
    caveats = []
    rows = [
        *(calibration.get("echo") or []),
        *(calibration.get("connect") or []),
        *((calibration.get("bulk") or {}).get("points") or []),
    ]
    busiest = max(
        [_n(r.get("busy_pct_before")) for r in rows if isinstance(r, dict)] + [_n(machine.get("busy_pct_before"))],
        default=math.nan,
    )
    if math.isfinite(busiest) and busiest >= BUSY_THRESHOLD_PCT:
        caveats.append(f"the ceiling run was on a busy machine, up to {busiest:.0f}% busy")
    if calibration.get("quick"):
        caveats.append("the ceiling run was in quick mode (0.3 s windows)")
    run_host = results.environment.get("hostname")
    if host and run_host and host != run_host:
        caveats.append(f"the ceiling run was on another host ({host}; runs on {run_host})")
    elif not host:
        caveats.append("the ceiling run's host is not recorded")
    run_time = _parse_time(results.environment.get("timestamp"))
    if when and run_time and abs(run_time - when) > _dt.timedelta(hours=CALIBRATION_AGE_H):
        caveats.append(f"the ceiling run was on another day ({when:%Y-%m-%d}; runs {run_time:%Y-%m-%d})")
    return said, caveats


def _parse_time(text: Any) -> Any:
    import datetime as _dt

    try:
        moment = _dt.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


def results_placement(results: Results) -> str:
    """The CPU placement policy the runs used (environment.json), e.g. 'split'."""
    placement = results.environment.get("placement")
    policy = placement.get("policy") if isinstance(placement, dict) else placement
    return str(policy or "split")


def ceiling_for(
    calibration: Any, service: str, params: dict[str, Any] | pd.Series, placement: str = "split"
) -> Ceiling | None:
    """The calibrated ceiling that matches a point exactly, or None (never a stretched guess).

    * echo, one connection per client for the run: the C client's round
      trips/s at the same number of connections and message size;
    * echo, one request per connection: the C client's connect+request+close rate;
    * file: one loopback TCP stream's bulk throughput, as MB/s.

    Ceilings were measured with the ``split`` or ``shared`` placement; a run
    with another policy (unpinned) is compared with ``split`` and the label
    says so.
    """
    if not isinstance(calibration, dict):
        return None
    places = {
        r.get("placement") for key in ("echo", "connect") for r in calibration.get(key) or [] if isinstance(r, dict)
    }
    use = placement if placement in places else "split"
    note = "" if use == placement else f"; runs were {placement}"
    clients, size = _n(params.get("clients")), _n(params.get("message_bytes"))
    per_conn = _n(params.get("requests_per_connection"))
    if service == "echo" and size == _n(calibration.get("message_bytes")):
        if per_conn == 0:
            for row in calibration.get("echo") or []:
                if (
                    isinstance(row, dict)
                    and _n(row.get("clients")) == clients
                    and row.get("placement") == use
                    and "error" not in row
                    and _n(row.get("rt_per_s")) > 0
                ):
                    return Ceiling(
                        float(row["rt_per_s"]), "req_per_s", f"C client, {clients:.0f} connections, {use}{note}"
                    )
        elif per_conn == 1:
            for row in calibration.get("connect") or []:
                if (
                    isinstance(row, dict)
                    and row.get("placement") == use
                    and "error" not in row
                    and _n(row.get("rt_per_s")) > 0
                ):
                    slots = _n(row.get("connections"))
                    inflight = f", {slots:.0f} cycles in flight" if math.isfinite(slots) else ""
                    other = f"; runs had {clients:.0f} clients" if math.isfinite(clients) and clients != slots else ""
                    return Ceiling(
                        float(row["rt_per_s"]), "req_per_s", f"C connect+request+close{inflight}, {use}{note}{other}"
                    )
    if service == "file":
        bulk = calibration.get("bulk") or {}
        for row in bulk.get("points") or [] if isinstance(bulk, dict) else []:
            if isinstance(row, dict) and row.get("placement") == use and _n(row.get("gbit_per_s")) > 0:
                mb = float(row["gbit_per_s"]) * 1e9 / 8 / 1e6  # Gbit/s -> MB/s (decimal, like mb_per_s)
                many = f"; runs had {clients:.0f} connections" if math.isfinite(clients) and clients > 1 else ""
                return Ceiling(mb, "mb_per_s", f"one TCP stream ({bulk.get('tool') or 'bulk'}), {use}{note}{many}")
    return None


def _calibration(ctx: _Ctx, calibration: Any) -> list[Finding]:
    if calibration is None or ctx.largest is None:
        return []
    rows = ctx.at(ctx.largest)
    if rows.empty:
        return []
    ceiling = ceiling_for(calibration, ctx.view.service, rows.iloc[0], results_placement(ctx.view))
    if ceiling is None:
        return []
    col = f"{ceiling.metric}_median"
    rows = rows[rows[col].notna()]
    if rows.empty:
        return []
    unit = "MB/s" if ceiling.metric == "mb_per_s" else "req/s"
    shares = rows[col] / ceiling.value
    parts = ", ".join(
        f"{r['model']} {r[col] / ceiling.value:.0%}" for _, r in rows.sort_values(col, ascending=False).iterrows()
    )
    said, caveats = calibration_context(calibration, ctx.view)
    text = (
        f"Against the calibrated ceiling ({ceiling.label}: {fmt_rate(ceiling.value, unit)}; {said}) "
        f"{ctx.where(ctx.largest)}: {parts}."
    )
    if caveats:
        text += " Read these shares with care: " + "; ".join(caveats) + "."
    if (shares > 1.0).any():
        text += " Above 100%, the ceiling was not these runs' limit: " + (
            "see above."
            if caveats
            else "it measured something other than these runs (see its label), "
            "or the machine changed between the calibration and the runs."
        )
    return [Finding("ceiling", text)]


def findings_by_topic(findings: Iterable[Finding]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in findings:
        out.setdefault(f.topic, []).append(f.text)
    return out
