"""The results folder: its layout, its columns, and writing it so nothing is lost.

A results folder is ``results/<UTC timestamp>-<scenario name>/`` and is never
overwritten. It is written as the scenario runs: a finished run is appended to
``runs.csv`` (and its timeline and histograms written) before the next run
starts, so Ctrl-C, a crashed server or a full disk loses at most the run in
progress.

Layout::

    scenario.yaml       the scenario as run, every default filled in
    environment.json    machine, kernel, sysctls, ulimits, versions, placement
    runs.csv            one row per model x point x repetition (RUN_COLUMNS)
    timeline.csv        one row per sample per run (TIMELINE_COLUMNS)
    hist/<run_id>.<kind>.hlog   HdrHistogram logs (standard log encoding)
    summary.json        versioned aggregate: points with median/min/max/CI

Units are in the column names: ``_us`` microseconds, ``_s`` seconds,
``_bytes`` bytes, ``_pct`` percent of one CPU (100 = one core busy).
"""

from __future__ import annotations

#: Bumped whenever a column changes meaning or a file changes shape.
RESULTS_VERSION = 1

#: Columns of runs.csv, in order, with their meaning. Readers must look
#: columns up by name; missing values are empty cells (NaN in pandas).
RUN_COLUMNS: dict[str, str] = {
    # identity
    "run_id": "unique within the folder: <model>-p<point>-r<repetition>",
    "model": "server model name (sequential, threading, forking, selectors, asyncio, c-reference)",
    "service": "echo or file",
    "point": "index of the sweep point (0-based); rows with equal point share every swept parameter",
    "repetition": "1-based repetition number",
    "status": "ok | failed | interrupted",
    "error": "why a run failed (server exit status and stderr tail, or the exception)",
    "started_at": "UTC ISO-8601 time the measured window started",
    # swept / effective parameters (always present, swept or not)
    "clients": "concurrent client connections",
    "message_bytes": "echo message size",
    "file_bytes": "file size requested (file service)",
    "backlog": "listen backlog given to the server",
    "max_children": "ForkingMixIn.max_children",
    "cpu_work_us": "server CPU burn per chunk",
    "sendfile": "True if the server used sendfile",
    "requests_per_connection": "0 = one connection for the whole run; N = reconnect every N requests",
    "mode": "closed | open",
    "rate": "open loop: total requests/s scheduled (empty for closed loop)",
    "duration_s": "measured window length actually achieved",
    # throughput
    "requests": "requests completed successfully in the measured window",
    "errors": "requests that failed in the window (sum of err_* columns)",
    "req_per_s": "requests / duration_s",
    "mb_per_s": "payload bytes received by clients / duration_s / 1e6",
    # latency of complete requests (request sent -> last byte back), microseconds
    "lat_p50_us": "", "lat_p90_us": "", "lat_p99_us": "", "lat_p999_us": "", "lat_max_us": "", "lat_mean_us": "",
    "ttfb_p50_us": "time to first byte of the reply, median",
    "ttfb_p99_us": "time to first byte of the reply, 99th percentile",
    "lat_uncorrected_p99_us": "open loop only: p99 measured from the actual (late) send, not the intended start",
    "late_starts": "open loop only: requests that started after their scheduled time",
    # connection attempts over the whole run (warmup included: bursts happen at the start)
    "conn_ok": "", "conn_refused": "", "conn_reset": "", "conn_timeout": "", "conn_emfile": "",
    "conn_eaddrnotavail": "", "conn_other": "",
    "connect_p50_us": "", "connect_p99_us": "", "connect_max_us": "",
    # failures after connect, in the measured window
    "err_reset": "", "err_timeout": "", "err_closed_early": "", "err_short": "", "err_corrupt": "",
    # kernel counters: deltas over the run, for the whole network namespace
    "k_listen_overflows": "TcpExt ListenOverflows delta",
    "k_listen_drops": "TcpExt ListenDrops delta",
    "k_reqq_full_drop": "TcpExt TCPReqQFullDrop delta",
    "k_reqq_full_do_cookies": "TcpExt TCPReqQFullDoCookies delta",
    "k_syncookies_sent": "TcpExt SyncookiesSent delta",
    "accept_queue_max": "largest sampled accept-queue depth of the listening socket",
    # server process tree (sampled)
    "mem_rss_peak_bytes": "", "mem_rss_mean_bytes": "",
    "mem_pss_peak_bytes": "empty where PSS could not be read (see mem_note)", "mem_pss_mean_bytes": "",
    "mem_uss_peak_bytes": "", "mem_uss_mean_bytes": "",
    "mem_note": "what could not be measured and why",
    "procs_peak": "", "threads_peak": "", "fds_peak": "",
    "server_cpu_user_s": "", "server_cpu_sys_s": "",
    "server_cpu_pct": "server tree CPU time / window wall time * 100",
    "ctx_switches": "voluntary + involuntary, summed over the tree",
    # generator and machine
    "gen_workers": "load generator worker processes",
    "gen_cpu_pct_max": "busiest generator worker, percent of one core",
    "generator_bound": "True if a generator worker used more than 90% of a core",
    "idle_busy_pct": "machine busy percent measured just before the run",
    "server_cpus": "CPUs the server was pinned to (e.g. '0'), empty if unpinned",
    "gen_cpus": "CPUs the generator was pinned to",
    "cpu_busy_pct": "per-CPU busy percent during the window, e.g. '0:98.5 1:64.0'",
    "server_exit": "server exit status after stop (0 expected)",
}

#: Columns of timeline.csv. One row per sample; ``t_s`` is seconds since the
#: measured window started (negative during warmup). Server samples fill the
#: mem/procs/accept columns, generator samples fill the req/latency columns.
TIMELINE_COLUMNS: dict[str, str] = {
    "run_id": "",
    "source": "server | load",
    "t_s": "",
    "req_per_s": "load: completed requests/s over the sample interval",
    "lat_p99_us": "load: p99 latency of requests completed in the interval",
    "mem_rss_bytes": "", "mem_pss_bytes": "", "mem_uss_bytes": "",
    "procs": "", "threads": "", "fds": "",
    "server_cpu_pct": "",
    "accept_queue": "listening socket's accept-queue depth",
}

#: Swept parameters a figure may use as its x axis, in order of preference.
PARAMETER_COLUMNS = [
    "clients", "message_bytes", "file_bytes", "backlog", "cpu_work_us", "max_children",
    "requests_per_connection", "rate", "sendfile", "mode",
]
