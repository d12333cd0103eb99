"""The results folder: its layout, its columns, and writing it so nothing is lost.

A results folder is ``results/<UTC timestamp>-<scenario name>/`` and is never
overwritten. It is written as the scenario runs: a finished run is appended to
``runs.csv`` (and its timeline and histograms written) before the next run
starts, so Ctrl-C, a crashed server or a full disk loses at most the run in
progress.

Layout::

    scenario.yaml       the scenario as run, every default filled in
    environment.json    machine, kernel, sysctls, ulimits, versions, placement
    calibration.json    the latest `bench calibrate` when the scenario started, if any
    runs.csv            one row per model x point x repetition (RUN_COLUMNS)
    timeline.csv        one row per sample per run (TIMELINE_COLUMNS)
    hist/<run_id>.<kind>.hlog   HdrHistogram logs (standard log encoding)
    logs/<run_id>.stderr        the server's stderr (one line per connection error)
    logs/<run_id>.load-warnings.txt   the load generator's caveats about that run, if any
    COLUMNS.md          what every column of runs.csv and timeline.csv means (:func:`columns_markdown`)
    summary.json        versioned aggregate: points with median/min/max/CI

Units are in the column names: ``_us`` microseconds, ``_s`` seconds,
``_bytes`` bytes, ``_pct`` percent of one CPU (100 = one core busy).

Versions
--------
Every file above but the text ones (scenario.yaml, logs, COLUMNS.md) carries
its format version under one name, :data:`FORMAT_KEY`: a key of the JSON
files, a column of the CSV files, a field of the histogram logs' first
comment. This module writes them and is the one reader of them
(:func:`read_runs`, :func:`read_timeline`, :func:`read_environment`,
:func:`read_summary`, :func:`read_hlog`, :func:`read_calibration`); each
refuses a file of another version, or of none, with
:class:`FormatVersionError` naming the file, the version found and the one
supported (:data:`FORMAT_VERSIONS`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from bench.histograms import decode, merge_histograms
from bench.parameters import MIX_KINDS, PARAMETERS, SLOW_KINDS
from bench.vocabulary import (
    BOTH_SATURATED_RULE,
    CONN_OUTCOMES,
    CONN_PENDING,
    ERROR_COLUMNS,
    GENERATOR_BOUND_RULE,
    MIX_COLUMNS,
    SLOW_OUTCOMES,
    clients_column,
    slow_column,
)

#: The one name under which every file of a results folder, and a saved
#: calibration, carries its format version: a key of the JSON files, a column
#: of the CSV files (the same value on every row, so ``pandas.read_csv`` and
#: ``csv.DictReader`` read the files as before), a field of the histogram
#: logs' first comment line.
FORMAT_KEY = "format_version"

#: The format version of each kind of file this sockbench writes, and the
#: only one it reads (:func:`check_format`). Bump one whenever its file
#: changes shape or a field changes meaning. Version 1 of runs.csv,
#: timeline.csv and the histogram logs is the layout before they carried a
#: version; summary.json and the calibration had theirs under other keys.
FORMAT_VERSIONS: dict[str, int] = {
    # 3: the http status columns (http_2xx ... http_5xx); 4: server_died_s, server_restarts; 5: err_denied
    # (timeauth); 6: net_stage_frames, net_retrans_segs, net_rto_timeouts, net_tbf_overlimits, net_tbf_drops;
    # 7: load.mix's columns; 8: gen_source_addrs; 9: generator_bound needs the server's CPU too
    # (gen_busy_pct_max, both_saturated)
    "runs.csv": 9,
    "timeline.csv": 2,
    "summary.json": 3,  # 3: both_saturated beside generator_bound, which needs the server's CPU too
    "environment.json": 2,
    "calibration": 2,
    "histogram": 2,
}

#: The copy of the machine's calibration a results folder keeps (written by bench run when it starts).
CALIBRATION_FILE = "calibration.json"


def lower_bound_column(latency_column: str) -> str:
    """The flag column saying ``latency_column`` (e.g. ``lat_p99_us``) is only a lower bound."""
    return latency_column.removesuffix("_us") + "_is_lower_bound"


def load_stored_calibration(results_dir: Path) -> dict[str, Any] | None:
    """The calibration a results folder keeps (:data:`CALIBRATION_FILE`), or None when it has none.

    Error handling: one of another format version raises :class:`FormatVersionError` naming it.
    """
    return read_calibration(Path(results_dir) / CALIBRATION_FILE)


#: What each of :data:`~bench.vocabulary.SLOW_OUTCOMES` counts.
_SLOW_OUTCOME_TEXT = {
    "connected": "connections made",
    "connect_failed": "connection attempts that failed (refused, timed out, reset ...)",
    "closed": "connections the server ended (FIN or reset) while the client held them",
    "completed": "slow requests completed (slow_reader: whole replies read; slowloris: whole requests sent)",
}

#: Columns of runs.csv, in order, with their meaning. Readers must look
#: columns up by name; missing values are empty cells (NaN in pandas).
RUN_COLUMNS: dict[str, str] = {
    # identity
    "run_id": "unique within the folder: <model>-p<point>-r<repetition>",
    "model": "server model name (sequential, threading, forking, selectors, asyncio, c-reference)",
    "service": "echo or file",
    "point": "index of the sweep point (0-based); rows with equal point share every swept parameter",
    "point_label": "the swept parameters of the point as bench run prints them (e.g. 'clients=100'; '-' without a sweep)",
    "repetition": "1-based repetition number",
    "status": "ok | failed | interrupted",
    "error": "why a run failed (server exit status and stderr tail, or the exception)",
    "started_at": "UTC ISO-8601 time the measured window started",
    # swept / effective parameters (always present, swept or not): bench.parameters
    **{p.name: p.column for p in PARAMETERS if p.column},
    "cpu_work_iterations": "loop iterations per chunk the server ran for cpu_work_us (from its ready line)",
    "cpu_work_per_us": "the scenario's calibration: iterations per microsecond of CPU (environment.json has the rest)",
    "cpu_work_short": "True if the server's CPU in the window is less than requests x cpu_work_us (less tick tolerance)",
    "duration_s": "length of the measured window as scheduled (the scenario's duration): requests are counted "
    "by completion time inside [window start, window start + duration_s)",
    # throughput
    "requests": "requests completed successfully in the measured window (by the fast clients: load.mix's slow "
    "clients have columns of their own, as have their connections, which conn_* leave out)",
    "errors": "requests that failed in the window (sum of the err_* and http_3xx/4xx/5xx columns)",
    "req_per_s": "requests / duration_s",
    "mb_per_s": "payload bytes received by clients / duration_s / 1e6",
    # latency, microseconds: closed loop from the request sent, open loop from the request's scheduled
    # start (a request sent late counts its wait), to the last byte back. Percentiles count censored
    # requests (lat_censored) at the time they had waited, so each is a lower bound;
    # lat_*_is_lower_bound marks those that may be far off (see bench.loadgen.merge.LOWER_BOUND_RULE),
    # printed "p99 >= 1.0 s".
    "lat_p50_us": "latency, median; closed loop: request sent -> last byte back; open loop: scheduled start "
    "-> last byte back (a lower bound when censored requests count, see lat_censored)",
    "lat_p90_us": "latency, 90th percentile (measured as lat_p50_us says)",
    "lat_p99_us": "latency, 99th percentile",
    "lat_p999_us": "latency, 99.9th percentile",
    "lat_max_us": "latency, the longest request or wait in the window",
    "lat_mean_us": "mean over completed requests only (censored ones have no latency to average)",
    "lat_censored": "requests without a latency: timed out, unanswered at the window end, or (open loop) due "
    "and never sent; counted in the percentiles at the time they had waited",
    "lat_p50_is_lower_bound": "True if lat_p50_us is only a lower bound (too many censored requests)",
    "lat_p90_is_lower_bound": "True if lat_p90_us is only a lower bound",
    "lat_p99_is_lower_bound": "True if lat_p99_us is only a lower bound",
    "lat_p999_is_lower_bound": "True if lat_p999_us is only a lower bound",
    "lat_max_is_lower_bound": "True if the longest wait seen is a request that never finished",
    "ttfb_p50_us": "time to first byte of the reply, median",
    "ttfb_p99_us": "time to first byte of the reply, 99th percentile",
    "lat_uncorrected_p99_us": "open loop only: p99 measured from the actual (late) send, not the intended start",
    "late_starts": "open loop only: requests that started after their scheduled time",
    # connection attempts over the whole run (warmup included: bursts happen at the start)
    "conn_ok": "connection attempts that succeeded (warmup included)",
    "conn_refused": "connection attempts refused (ECONNREFUSED: nothing listening)",
    "conn_reset": "connection attempts reset by the server (ECONNRESET)",
    "conn_timeout": "connection attempts given up after load.connect_timeout (e.g. a full accept queue: SYN retries)",
    "conn_emfile": "connection attempts that failed for lack of file descriptors in the generator (EMFILE)",
    "conn_eaddrnotavail": "connection attempts that found no free local port (EADDRNOTAVAIL: TIME-WAIT exhaustion)",
    "conn_other": "connection attempts that failed otherwise (the load warnings name the errno)",
    "conn_pending": "attempts still in progress (e.g. in SYN retries) when the run ended",
    "connect_p50_us": "time from connect() to established, median (successful attempts)",
    "connect_p99_us": "time to connect, 99th percentile",
    "connect_max_us": "time to connect, the slowest attempt",
    # failures after connect, in the measured window
    "err_reset": "requests whose connection was lost with an error (ECONNRESET, EPIPE)",
    "err_timeout": "requests without a whole reply within load.request_timeout",
    "err_closed_early": "requests the server closed before the first reply byte",
    "err_short": "requests the server closed in the middle of the reply",
    "err_corrupt": "replies with wrong bytes, a wrong size, a bad header, a checksum mismatch or ERR",
    "err_denied": "timeauth: logins the server refused (its ERR 401 line): the generator's name or password is wrong",
    "http_3xx": "http: replies with a 3xx status (a failed request: the file was not sent)",
    "http_4xx": "http: replies with a 4xx status (403 outside the root, 404 missing ...): failed requests",
    "http_5xx": "http: replies with a 5xx status: failed requests",
    "http_2xx": "http: replies with a 2xx status and the file's length (and checksum where sampled): "
    "equals requests; empty for the other services",
    "req_pending": "requests sent but unanswered when the window closed (closed loop: up to one per client)",
    "req_pending_oldest_s": "how long the oldest of those had waited: near a whole run = a client the server ignores",
    # kernel counters: deltas over the measured window (snapshots when it opens and closes)
    "netns": "own = server and load ran in a network namespace of this run's own, so the k_* counters are "
    "this run's alone; shared = they count the whole namespace (not root)",
    # network: hosts and the link between them (bench.network); empty columns on loopback
    # (the link's rtt, jitter and rate are parameter columns above: net_rtt_ms, net_jitter_ms, net_rate_mbit)
    "net_hosts": "loopback = server and load on one loopback; namespaces = a server host and a client host "
    "(network namespaces) joined by a link with the conditions below",
    "net_links": "each direction's configuration: tbf rate, and bridge or delay stage",
    "net_base_rtt_us": "median of 20 one-byte TCP round trips client host -> server host timed before the run "
    "(includes the added rtt and the delay stage's own cost)",
    "net_base_rtt_min_us": "the fastest of those round trips",
    "net_stage_dropped": "frames the delay stage dropped (its 64 MiB per-direction buffer full, or a send failed)",
    "net_stage_cpu_s": "CPU seconds the delay stage used over the run (taken from the same cores as server and load)",
    "net_stage_frames": "frames the delay stage forwarded, both directions, over the whole run (with "
    "net_stage_cpu_s: its CPU per frame)",
    "k_listen_overflows": "TcpExt ListenOverflows delta",
    "k_listen_drops": "TcpExt ListenDrops delta",
    "k_reqq_full_drop": "TcpExt TCPReqQFullDrop delta",
    "k_reqq_full_do_cookies": "TcpExt TCPReqQFullDoCookies delta",
    "k_syncookies_sent": "TcpExt SyncookiesSent delta",
    "accept_queue_max": "largest sampled accept-queue depth of the listening socket",
    "net_retrans_segs": "Tcp RetransSegs delta over the window in the server's namespace: segments the server "
    "sent again (lost, or held past its retransmission timer, e.g. in a full queue on the link)",
    "net_rto_timeouts": "TcpExt TCPTimeouts delta: retransmission timers that expired (no ACK in time at all)",
    "net_tbf_overlimits": "times the link's tbf held a packet back for lack of tokens, both directions, over the "
    "whole run (the rate limit at work: the link, not the server, set the pace); empty without a rate",
    "net_tbf_drops": "packets the link's tbf dropped (its queue full), both directions, over the whole run",
    # server process tree (sampled)
    "mem_rss_peak_bytes": "largest sampled RSS summed over the server's process tree (counts shared pages once per "
    "process: forking overstates)",
    "mem_rss_mean_bytes": "mean of the sampled RSS sums",
    "mem_pss_peak_bytes": "largest sampled PSS summed over the tree (shared pages split between the processes); "
    "empty where PSS could not be read (see mem_note)",
    "mem_pss_mean_bytes": "mean of the sampled PSS sums",
    "mem_uss_peak_bytes": "largest sampled USS (memory no other process shares) summed over the tree",
    "mem_uss_mean_bytes": "mean of the sampled USS sums",
    "mem_note": "what could not be measured and why",
    "procs_peak": "most processes sampled in the server's tree",
    "threads_peak": "most threads sampled, summed over the tree",
    "fds_peak": "most open file descriptors sampled, summed over the tree",
    "server_cpu_user_s": "user CPU time of the server's tree in the measured window",
    "server_cpu_sys_s": "system (kernel) CPU time of the server's tree in the measured window",
    "server_cpu_pct": "server tree CPU time / window wall time * 100",
    "ctx_switches": "voluntary + involuntary, summed over the tree",
    "server_runq_wait_pct": "time the server's threads were runnable but waiting for a CPU, summed over the tree, "
    "percent of the window (100 = one thread always waiting)",
    # load.mix: the kinds of client; the columns above count the fast clients only
    **{
        clients_column(kind): f"{kind} clients of the run (load.mix shares of clients; fast: the rest)"
        for kind in MIX_KINDS
    },
    **{
        slow_column(kind, outcome): f"{kind} clients, whole run: {_SLOW_OUTCOME_TEXT[outcome]}"
        for kind in SLOW_KINDS
        for outcome in SLOW_OUTCOMES
    },
    # generator and machine
    "gen_workers": "load generator worker processes",
    "gen_source_addrs": "local addresses the generator's connections came from (16 to a 127.0.0.0/8 target so one "
    "address's ephemeral ports do not cap connections/s; 1 otherwise)",
    "clients_served": "clients that completed at least one request in the window (of `fast_clients`)",
    "gen_cpu_pct_max": "busiest generator worker, percent of one core",
    "gen_runq_wait_pct_max": "longest a generator worker waited on a run queue (runnable, no CPU), percent of the window",
    "gen_busy_pct_max": "busiest generator worker's CPU + run-queue wait, percent of the window",
    "generator_bound": f"True if the generator set the figures: {GENERATOR_BOUND_RULE} (decided from the "
    "gen_* and server_* columns, again whenever the folder is read)",
    "both_saturated": f"True if generator and server set the figures together: {BOTH_SATURATED_RULE} (decided "
    "like generator_bound)",
    "gen_engine": "load engine that measured: native (C, epoll), python (asyncio/uvloop), locust with its "
    "workers and hosts (e.g. 'locust, 2 workers on 2 hosts'), or wrk with what its latency leaves out",
    "runner_cpu_pct": "CPU of the runner process (its server monitor included) over the window, percent of one core; "
    "it runs on the generator's CPUs",
    "idle_busy_pct": "machine busy percent measured just before the run",
    "server_cpus": "CPUs the server was pinned to (e.g. '0'), empty if unpinned",
    "gen_cpus": "CPUs the generator was pinned to",
    "server_exit": "server exit status after stop (0 expected)",
    "server_died_s": "seconds into the measured window when the server was first found dead (negative: during the "
    "warm-up; empty: it lived to the stop); such a run is failed, its load figures measured up to the end",
    "server_restarts": "workers the server's parent re-forked from its start to its stop, warm-up included (prefork, reuseport: from its stop "
    "line); empty for the other models",
    FORMAT_KEY: "format version of runs.csv (bench.results.FORMAT_VERSIONS); bench refuses a file of another version",
}

#: One column of runs.csv per CPU of the machine, after ``gen_cpus``: that
#: CPU's busy percent during the measured window (``cpu0_busy_pct``, ...).
CPU_BUSY_COLUMN = "cpu{cpu}_busy_pct"


def cpu_busy_column(cpu: int) -> str:
    return CPU_BUSY_COLUMN.format(cpu=cpu)


def run_columns(n_cpus: int | None = None) -> dict[str, str]:
    """The columns of runs.csv on a machine of ``n_cpus`` CPUs (default: this one), in order, with meanings."""
    n_cpus = (os.cpu_count() or 1) if n_cpus is None else n_cpus
    out: dict[str, str] = {}
    for name, meaning in RUN_COLUMNS.items():
        out[name] = meaning
        if name == "gen_cpus":
            for cpu in range(n_cpus):
                out[cpu_busy_column(cpu)] = (
                    f"CPU {cpu}'s busy percent during the measured window (one column per CPU of the machine)"
                )
    return out


#: Measured columns of runs.csv: what a threshold (:mod:`bench.thresholds`) may
#: test. Identity, parameters and notes are not measurements.
METRIC_COLUMNS: tuple[str, ...] = (
    "requests",
    "errors",
    "req_per_s",
    "mb_per_s",
    "lat_p50_us",
    "lat_p90_us",
    "lat_p99_us",
    "lat_p999_us",
    "lat_max_us",
    "lat_mean_us",
    "lat_censored",
    "clients_served",
    "ttfb_p50_us",
    "ttfb_p99_us",
    "lat_uncorrected_p99_us",
    "late_starts",
    *CONN_OUTCOMES,
    CONN_PENDING,
    "connect_p50_us",
    "connect_p99_us",
    "connect_max_us",
    *ERROR_COLUMNS,
    "http_2xx",
    "req_pending",
    "req_pending_oldest_s",
    *MIX_COLUMNS,
    "k_listen_overflows",
    "k_listen_drops",
    "k_reqq_full_drop",
    "k_reqq_full_do_cookies",
    "k_syncookies_sent",
    "accept_queue_max",
    "net_retrans_segs",
    "net_rto_timeouts",
    "net_tbf_overlimits",
    "net_tbf_drops",
    "mem_rss_peak_bytes",
    "mem_rss_mean_bytes",
    "mem_pss_peak_bytes",
    "mem_pss_mean_bytes",
    "mem_uss_peak_bytes",
    "mem_uss_mean_bytes",
    "procs_peak",
    "threads_peak",
    "fds_peak",
    "server_cpu_user_s",
    "server_cpu_sys_s",
    "server_cpu_pct",
    "server_runq_wait_pct",
    "ctx_switches",
    "gen_cpu_pct_max",
    "gen_runq_wait_pct_max",
    "gen_busy_pct_max",
    "runner_cpu_pct",
)

#: Short names a threshold may use for the latency percentiles.
METRIC_ALIASES: dict[str, str] = {
    "p50": "lat_p50_us",
    "p90": "lat_p90_us",
    "p99": "lat_p99_us",
    "p999": "lat_p999_us",
    "max": "lat_max_us",
    "mean": "lat_mean_us",
}


def column_unit(name: str) -> str:
    """The unit a column's name carries (see the module doc): ``lat_p99_us`` -> ``"microseconds"``."""
    for suffix, unit in (
        ("_per_s", "per second"),
        ("_per_us", "per microsecond"),
        ("_us", "microseconds"),
        ("_ms", "milliseconds"),
        ("_mbit", "Mbit/s"),
        ("_s", "seconds"),
        ("_bytes", "bytes"),
        ("_pct", "percent of one CPU"),
    ):
        if name.endswith(suffix):
            return unit
    return ""


#: Columns of timeline.csv. One row per sample; ``t_s`` is seconds since the
#: measured window started (negative during warmup). Server samples fill the
#: mem/procs/accept columns, generator samples fill the req/latency columns.
TIMELINE_COLUMNS: dict[str, str] = {
    "run_id": "the run the sample belongs to (runs.csv run_id)",
    "source": "server | load",
    "t_s": "seconds since the measured window started (negative during warmup)",
    "req_per_s": "load: completed requests/s over the sample interval",
    "lat_p99_us": "load: p99 latency of requests completed in the interval",
    "mem_rss_bytes": "server: RSS summed over the process tree",
    "mem_pss_bytes": "server: PSS summed over the tree",
    "mem_uss_bytes": "server: USS summed over the tree",
    "procs": "server: processes in the tree",
    "threads": "server: threads, summed",
    "fds": "server: open files, summed",
    "server_cpu_pct": "server: CPU of the tree over the sample interval, percent of one core",
    "accept_queue": "listening socket's accept-queue depth",
    FORMAT_KEY: "format version of timeline.csv (bench.results.FORMAT_VERSIONS)",
}

#: The files :func:`columns_markdown` describes, and what one row of each is.
COLUMN_FILES = {"runs.csv": "one row per model x point x repetition", "timeline.csv": "one row per sample per run"}


def columns_markdown(runs: Mapping[str, str] | None = None, files: Iterable[str] = tuple(COLUMN_FILES)) -> str:
    """The data dictionary of a results folder (its COLUMNS.md, and what ``bench columns`` prints).

    Generated from :data:`RUN_COLUMNS` (or ``runs``, as :func:`run_columns`
    gives them for the folder's machine) and :data:`TIMELINE_COLUMNS`, so
    it cannot disagree with what is written.
    """
    tables = {"runs.csv": runs if runs is not None else run_columns(), "timeline.csv": TIMELINE_COLUMNS}
    versions = ", ".join(f"{name} {FORMAT_VERSIONS[name]}" for name in files)
    lines = [
        f"# Columns of a sockbench results folder (format versions: {versions})",
        "",
        "Look columns up by name. An empty cell is a value that was not measured or does not apply.",
        "Units are in the names: `_us` microseconds, `_s` seconds, `_bytes` bytes, `_pct` percent of one",
        "CPU (100 = one core busy), `_per_s` per second. Generated from bench/results.py.",
        "",
    ]
    for name in files:
        lines += [f"## {name}: {COLUMN_FILES[name]}", "", "| column | unit | meaning |", "| --- | --- | --- |"]
        lines += [
            f"| `{col}` | {column_unit(col)} | {meaning.replace('|', '/')} |" for col, meaning in tables[name].items()
        ]
        lines.append("")
    return "\n".join(lines)


#: Swept parameters a figure may use as its x axis, in order of preference (:mod:`bench.parameters`' order).
PARAMETER_COLUMNS = [p.name for p in PARAMETERS if p.column]


# --------------------------------------------------------------------------
# Writing


#: Histogram kinds a run may save, one .hlog file each.
HIST_KINDS = ("latency", "ttfb", "connect", "latency_uncorrected", "censored")


class DiskFull(OSError):
    """Raised when a result could not be written for lack of space; earlier results are intact."""


#: errno values that mean "no space left": a full disk or an exhausted quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Mode of every file written: readable by all, as a plain ``open()`` under the
#: usual umask gives (mkstemp alone would give 0600).
FILE_MODE = 0o644


def utc_stamp(now: _dt.datetime | None = None) -> str:
    """``20261201T210500Z``: the UTC time every fresh results, calibration and compare name starts with."""
    return (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


def fresh_path(root: Path, name: str, suffix: str = "", *, folder: bool = True) -> Path:
    """Create and return ``<root>/<name><suffix>``, or ``<name>-2<suffix>``, ``-3``... when taken; never reuses one.

    ``folder=False`` creates an empty file (mode 0644) instead of a folder,
    to be replaced whole by :func:`atomic_file`. Creating the name is the
    claim: two processes in the same second get two names.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in [""] + [f"-{i}" for i in range(2, 1000)]:
        path = root / f"{name}{n}{suffix}"
        try:
            if folder:
                path.mkdir()
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"could not find a free name for {name}{suffix} under {root}")


def new_results_dir(root: Path, scenario_name: str, now: _dt.datetime | None = None) -> Path:
    """Create and return a fresh ``<root>/<UTC timestamp>-<name>`` folder; never reuses one."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", scenario_name).strip("-") or "scenario"
    return fresh_path(root, f"{utc_stamp(now)}-{safe}")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 6)) if value == value else ""
    return value


def _append_atomically(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` whole or not at all.

    Error handling: on ENOSPC (or EDQUOT) the file is truncated back to its
    previous length, so the rows already there stay readable, and
    :class:`DiskFull` is raised.
    """
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                os.ftruncate(fd, size)
                raise DiskFull(exc.errno, f"disk full while writing {path}") from exc
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file renamed over it at the end: whole or not at all.

    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``. The temporary file lives in
    the same folder (a rename is atomic only within one filesystem), is
    flushed to disk before the rename, and gets mode 0644.

    Error handling: on ENOSPC/EDQUOT :class:`DiskFull` is raised. On any
    exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` keeps its previous content, or stays absent.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS and not isinstance(exc, DiskFull):
            raise DiskFull(exc.errno, f"disk full while writing {path}") from exc
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` via a temporary file and rename (never a half-written file)."""
    with atomic_file(path) as fh:
        fh.write(text)


class ResultsWriter:
    """Writes one results folder incrementally.

    Each :meth:`add_run` appends one complete row to ``runs.csv`` and the
    run's timeline rows, and writes its histogram logs, before returning: a
    finished run is on disk before the next one starts.

    Resource handling: files are opened per write and closed at once, so an
    interrupted scenario leaves nothing open and nothing half-written.
    """

    def __init__(self, path: Path, n_cpus: int | None = None):
        self.path = path
        #: runs.csv's columns on this machine (one cpu<N>_busy_pct per CPU)
        self.run_columns = run_columns(n_cpus)
        self.runs_csv = path / "runs.csv"
        self.timeline_csv = path / "timeline.csv"
        self.hist_dir = path / "hist"
        self.logs_dir = path / "logs"
        self.hist_dir.mkdir(exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        self.rows_written = 0
        self.write_text("COLUMNS.md", columns_markdown(self.run_columns))

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        """Write ``name`` (JSON); a file of :data:`FORMAT_VERSIONS` gets its :data:`FORMAT_KEY`."""
        write_json_file(self.path / name, data, name if name in FORMAT_VERSIONS else None)

    def write_text(self, name: str, text: str) -> None:
        write_text_atomically(self.path / name, text)

    @staticmethod
    def _csv_text(columns: Iterable[str], rows: Iterable[Mapping[str, Any]], header: bool) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in writer.fieldnames})
        return buf.getvalue()

    def add_run(
        self,
        row: Mapping[str, Any],
        timeline: Iterable[Mapping[str, Any]] = (),
        histograms: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist one run: histograms first, then timeline, then its runs.csv row (the commit point)."""
        run_id = row["run_id"]
        for kind, hist in (histograms or {}).items():
            if hist is not None and hist.get_total_count() > 0:
                write_text_atomically(self.hist_dir / f"{run_id}.{kind}.hlog", encode_hlog(hist, kind))
        rows = [dict(r, run_id=run_id, **{FORMAT_KEY: FORMAT_VERSIONS["timeline.csv"]}) for r in timeline]
        if rows:
            _append_atomically(
                self.timeline_csv, self._csv_text(TIMELINE_COLUMNS, rows, header=not self.timeline_csv.exists())
            )
        row = {**row, FORMAT_KEY: FORMAT_VERSIONS["runs.csv"]}
        _append_atomically(self.runs_csv, self._csv_text(self.run_columns, [row], header=not self.runs_csv.exists()))
        self.rows_written += 1


def hlog_comment(kind: str) -> str:
    """The first comment line of a histogram log: what it holds, its unit and its format version."""
    return f"[sockbench {kind} histogram, values in microseconds, {FORMAT_KEY} {FORMAT_VERSIONS['histogram']}]"


def encode_hlog(hist: Any, kind: str) -> str:
    """One histogram as an HdrHistogram log (format 1.2); values are microseconds."""
    from hdrh.log import HistogramLogWriter

    buf = io.StringIO()
    writer = HistogramLogWriter(buf)
    writer.output_comment(hlog_comment(kind))
    writer.output_log_format_version()
    writer.output_legend()
    start_ms = hist.get_start_time_stamp() or 1  # the writer treats 0 as "unset"
    end_ms = hist.get_end_time_stamp() or start_ms
    writer.output_interval_histogram(hist, start_ms / 1000.0, end_ms / 1000.0, max_value_unit_ratio=1.0)
    return buf.getvalue()


# --------------------------------------------------------------------------
# Reading: one typed reader per file, each checking the format version


class ResultsFileError(ValueError):
    """A file of a results folder (or a saved calibration) cannot be read; the message names it and why."""


class FormatVersionError(ResultsFileError):
    """A file is not of the format version this sockbench reads; the message names the file and both versions."""

    def __init__(self, path: Path, kind: str, found: Any):
        self.path, self.kind, self.found = Path(path), kind, found
        self.supported = FORMAT_VERSIONS[kind]
        what = (
            f"format version {found!r}"
            if found is not None
            else f"no {FORMAT_KEY} (written before sockbench versioned its files, or not by sockbench)"
        )
        super().__init__(
            f"{path}: {what}; this sockbench reads {kind} format version {self.supported} only. "
            f"Re-create it with this sockbench (bench run / bench calibrate), or read it with the "
            f"sockbench that wrote it"
        )


def check_format(path: Path, kind: str, found: Any) -> None:
    """Raise :class:`FormatVersionError` unless ``found`` is the version of ``kind`` this sockbench reads."""
    if found != FORMAT_VERSIONS[kind] or isinstance(found, bool):
        raise FormatVersionError(path, kind, found)


def write_json_file(path: Path, data: Mapping[str, Any], kind: str | None = None) -> None:
    """Write ``data`` as JSON atomically; with ``kind``, stamped with that kind's format version first."""
    if kind is not None:
        data = {FORMAT_KEY: FORMAT_VERSIONS[kind], **{k: v for k, v in data.items() if k != FORMAT_KEY}}
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json_file(path: Path, kind: str) -> dict[str, Any] | None:
    """A versioned JSON file of ``kind``, or None when it does not exist.

    Error handling: a file that is not a JSON object raises
    :class:`ResultsFileError`; one whose :data:`FORMAT_KEY` is missing or
    another version raises :class:`FormatVersionError` naming the file and
    the versions.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ResultsFileError(f"{path}: not valid JSON ({exc}); the file is damaged, re-create it") from None
    if not isinstance(data, dict):
        raise ResultsFileError(f"{path}: a JSON {type(data).__name__}, not the object sockbench writes")
    check_format(path, kind, data.get(FORMAT_KEY))
    return data


def read_environment(folder: Path) -> dict[str, Any]:
    """``environment.json`` of a results folder, in the layout of :func:`bench.environment.collect_environment`
    ({} when the folder has none); another version raises :class:`FormatVersionError`."""
    return read_json_file(Path(folder) / "environment.json", "environment.json") or {}


def read_summary(folder: Path) -> dict[str, Any]:
    """``summary.json`` of a results folder ({} when none was written); version-checked like the others."""
    return read_json_file(Path(folder) / "summary.json", "summary.json") or {}


def read_calibration(path: Path) -> dict[str, Any] | None:
    """A saved calibration (``latest.json``, a results folder's ``calibration.json``), or None when absent."""
    return read_json_file(path, "calibration")


def _check_csv_versions(path: Path, kind: str, frame: Any) -> None:
    if frame.empty and FORMAT_KEY not in frame.columns and not _has_rows(path):
        return  # a header-only or empty file holds no data to misread
    if FORMAT_KEY not in frame.columns:
        raise FormatVersionError(path, kind, None)
    found = sorted({str(v) for v in frame[FORMAT_KEY].tolist()})
    if found != [str(FORMAT_VERSIONS[kind])]:
        raise FormatVersionError(path, kind, found[0] if len(found) == 1 else found)


def _has_rows(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return sum(1 for line in fh if line.strip()) > 1
    except OSError:
        return False


def read_runs(folder: Path) -> Any:
    """``runs.csv`` as a pandas DataFrame (columns as written; an empty file gives no rows).

    Error handling: a missing or other :data:`FORMAT_KEY` raises
    :class:`FormatVersionError`; a damaged file raises ValueError naming it.
    """
    import pandas as pd

    path = Path(folder) / "runs.csv"
    try:
        runs = pd.read_csv(path, keep_default_na=True, low_memory=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} cannot be read as CSV ({exc}); the file is damaged, re-run the scenario") from None
    _check_csv_versions(path, "runs.csv", runs)
    return runs


def read_timeline(folder: Path) -> Any:
    """``timeline.csv`` as a DataFrame with every :data:`TIMELINE_COLUMNS` column (numbers as numbers);
    no rows when the folder has none. Version-checked like :func:`read_runs`."""
    import numpy as np
    import pandas as pd

    path = Path(folder) / "timeline.csv"
    try:
        df = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(TIMELINE_COLUMNS))
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=list(TIMELINE_COLUMNS))
    if path.exists():
        _check_csv_versions(path, "timeline.csv", df)
    for col in TIMELINE_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
        elif col not in ("run_id", "source"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["run_id"] = df["run_id"].astype(str)
    df["source"] = df["source"].astype(str)
    return df


_HLOG_VERSION = re.compile(rf"\b{FORMAT_KEY} (\S+?)\]?$")


def read_hlog(path: Path) -> Any | None:
    """Sum every interval of a histogram log into one histogram (values as recorded: microseconds).

    Error handling: a log without the version of :func:`hlog_comment`, or
    with another, raises :class:`FormatVersionError`; an unreadable or empty
    log gives None (the figure then says the histogram is missing).
    """
    hists = []
    found: Any = None
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line.startswith("#[sockbench") and found is None:
                    match = _HLOG_VERSION.search(line)
                    found = int(match.group(1)) if match and match.group(1).isdigit() else (match and match.group(1))
                    check_format(Path(path), "histogram", found)
                if not line or line.startswith("#") or line.startswith('"'):
                    continue
                if found is None:
                    check_format(Path(path), "histogram", None)
                if line.startswith("Tag="):
                    line = line.split(",", 1)[1]
                payload = line.rsplit(",", 1)[-1]
                hists.append(decode(payload))
    except (OSError, ValueError, TypeError) as exc:
        if isinstance(exc, FormatVersionError):
            raise
        return None
    return merge_histograms(hists)
