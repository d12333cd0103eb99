"""The words bench uses about a run, and the numbers behind them: one owner each.

A run ends with every connection attempt in exactly one *outcome*; a point
(one model at one sweep point, over its repetitions) may carry *flags* that
say how far to trust its figures; and each flag is decided by a *threshold*.
The summary table, the report, the figures, the findings and the warnings in
summary.json all speak of these, so they are named once, here, and every
label that mentions a threshold prints the constant: change the number and
every sentence that states it changes with it.

The flags, in the order they are shown:

* **failed**: a run of the point failed or was interrupted; its figures are
  missing from the medians.
* **generator-bound**: a load generator worker was short of CPU
  (:data:`GENERATOR_BOUND_RULE`): the figures may measure the generator.
* **unstable**: a stability metric's coefficient of variation across the
  repetitions exceeds :data:`CV_THRESHOLD` (pyperf's rule).
* **busy**: the machine was busier than :data:`BUSY_THRESHOLD_PCT` just
  before a run: another process may have skewed it.

The kernel's SYN retransmission schedule (:func:`syn_retry_times`) lives
here too: it is where connect times pile up, and the findings and the
figures mark it from the sysctls a results folder records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.parameters import MIX_KINDS, SLOW_KINDS

# --------------------------------------------------------------------------
# Connection outcomes

#: How a connection attempt of the load generator ends, each attempt in exactly one
#: ("other" keeps the errno names aside, in the run's warnings).
CONNECT_OUTCOMES = ("ok", "refused", "reset", "timeout", "emfile", "eaddrnotavail", "other")
#: Their runs.csv columns, in the same order.
CONN_OUTCOMES = tuple(f"conn_{outcome}" for outcome in CONNECT_OUTCOMES)
#: The outcomes that are a failed attempt.
CONN_FAILURES = tuple(c for c in CONN_OUTCOMES if c != "conn_ok")
#: Attempts neither succeeded nor failed when the run ended (not an outcome: it has none yet).
CONN_PENDING = "conn_pending"

# --------------------------------------------------------------------------
# Request outcomes

#: How a request after connect fails (each failed request in exactly one); runs.csv ``err_<kind>``.
#: ``denied``: a timeauth login the server refused with its error line (the reply was right, the login wrong).
REQUEST_FAILURES = ("reset", "timeout", "closed_early", "short", "corrupt", "denied")
#: HTTP replies by status class (runs.csv columns of the same names). A 2xx is a request that
#: completed (checked like a file reply); any other class is a request failure of its own kind.
HTTP_STATUS_CLASSES = ("http_2xx", "http_3xx", "http_4xx", "http_5xx")
#: The status classes that are a failed request.
HTTP_FAILURES = HTTP_STATUS_CLASSES[1:]
#: Every kind of request failure the load generator counts.
REQUEST_ERRORS = REQUEST_FAILURES + HTTP_FAILURES


def error_column(kind: str) -> str:
    """The runs.csv column counting request failures of ``kind``: ``err_reset`` ..., ``http_4xx``."""
    return kind if kind in HTTP_FAILURES else f"err_{kind}"


#: The runs.csv columns of :data:`REQUEST_ERRORS`, in the same order (they sum to ``errors``).
ERROR_COLUMNS = tuple(error_column(kind) for kind in REQUEST_ERRORS)

# --------------------------------------------------------------------------
# Slow clients (load.mix)

#: What happens to the connections of the slow kinds of client (bench.parameters.SLOW_KINDS), counted
#: over the whole run per kind: connections made, connects that failed, connections the server ended
#: (a FIN or a reset while the client still held it: a timeout, or a server out of patience), and
#: slow requests completed (a slow reader read its whole reply; a slowloris sent its whole request).
SLOW_OUTCOMES = ("connected", "connect_failed", "closed", "completed")


def slow_column(kind: str, outcome: str) -> str:
    """The runs.csv column counting ``outcome`` of the slow clients of ``kind``: ``slow_reader_closed``."""
    return f"{kind}_{outcome}"


def clients_column(kind: str) -> str:
    """The runs.csv column with the number of clients of ``kind`` (``fast_clients``, ``idle_clients``)."""
    return f"{kind}_clients"


#: The runs.csv columns of load.mix, in order: the clients of each kind, then each slow kind's outcomes.
MIX_COLUMNS = (
    *(clients_column(kind) for kind in MIX_KINDS),
    *(slow_column(kind, outcome) for kind in SLOW_KINDS for outcome in SLOW_OUTCOMES),
)


# --------------------------------------------------------------------------
# Thresholds

#: pyperf's threshold: above 10% relative standard deviation, results are not reproducible enough.
CV_THRESHOLD = 0.10
#: A machine busier than this (percent of its CPUs) just before a run skews it (a spinning process
#: changed results 2-4x): the point is flagged busy, a calibration gets a caveat, calibrate waits.
BUSY_THRESHOLD_PCT = 5.0
#: A worker that ran *or waited to run* (CPU + run-queue wait, percent of the
#: window) more than this is the likely bottleneck: its loop has no idle time
#: left to notice replies promptly. CPU alone misses a worker that is runnable
#: but kept off its CPU by another process (the server on a shared CPU, the
#: runner, another program): for the load offered, waiting for a CPU is as
#: much a generator limit as using one.
GENERATOR_BOUND_PCT = 90.0
#: A worker that waited on a run queue more than this percent of the window
#: is flagged too, however little CPU it got: it does not run flat out (on
#: each wake-up it handles what is ready and sleeps again), yet every reply
#: that arrives while it waits is time-stamped late and the next request
#: goes out late. Measured here: three spinning processes on a worker's CPU
#: gave it 22-33% CPU and 34-43% wait (CPU + wait only ~66%) at a third of
#: its usual throughput; a worker alone on an idle CPU waits ~1%.
RUNQ_WAIT_BOUND_PCT = 20.0
#: The generator-bound rule as the warnings state it.
GENERATOR_BOUND_RULE = (
    f"worker CPU + run-queue wait > {GENERATOR_BOUND_PCT:g}% of the window, "
    f"or run-queue wait > {RUNQ_WAIT_BOUND_PCT:g}%"
)

# --------------------------------------------------------------------------
# Run statuses and point flags

#: runs.csv ``status`` values of a run without figures.
FAILED_STATUSES = ("failed", "interrupted")

FAILED, GENERATOR_BOUND, UNSTABLE, BUSY = "failed", "generator-bound", "unstable", "busy"
#: Every point flag, in the order tables, tags and legends show them.
POINT_FLAGS = (FAILED, GENERATOR_BOUND, UNSTABLE, BUSY)

#: What each flag means, for legends and notes; the numbers are the constants above.
FLAG_LABELS = {
    FAILED: "failed run (see report)",
    GENERATOR_BOUND: "generator-bound (load generator short of CPU)",
    UNSTABLE: f"unstable (CV > {CV_THRESHOLD:.0%} across repetitions)",
    BUSY: f"busy machine (over {BUSY_THRESHOLD_PCT:g}% busy before a run)",
}


def _count(row: Mapping[str, Any], key: str) -> int:
    try:
        value = row.get(key, 0)
        return int(value) if value == value else 0  # NaN (a column missing from an old summary) counts 0
    except (TypeError, ValueError):
        return 0


def point_flags(row: Mapping[str, Any]) -> list[str]:
    """The flags of one aggregated point (a row of ``Results.aggregate``), in :data:`POINT_FLAGS` order."""
    flags = []
    if _count(row, "n_failed") or _count(row, "n_interrupted"):
        flags.append(FAILED)
    if _count(row, "n_generator_bound"):
        flags.append(GENERATOR_BOUND)
    if bool(row.get(UNSTABLE, False)):
        flags.append(UNSTABLE)
    if _count(row, "n_busy"):
        flags.append(BUSY)
    return flags


# --------------------------------------------------------------------------
# Kernel timings

#: Linux's initial retransmission timeout for a SYN (TCP_TIMEOUT_INIT), seconds.
SYN_INITIAL_RTO_S = 1.0


def syn_retry_times(sysctls: Mapping[str, int | None]) -> list[float]:
    """Seconds after its first SYN at which a Linux client retransmits a dropped SYN.

    The first ``tcp_syn_linear_timeouts`` retransmissions (a sysctl of newer
    kernels; absent = 0) wait the initial 1 s RTO each, later ones double it,
    for ``tcp_syn_retries`` retransmissions (default 6; kernels with linear
    timeouts may allow that many more, which only adds later marks). Kernels
    without linear timeouts give 1, 3, 7, 15 ... s; with 4 linear timeouts,
    1, 2, 3, 4, 5, 7 ... s. These are where connect times pile up when a full
    accept queue drops SYNs.
    """
    linear = sysctls.get("net.ipv4.tcp_syn_linear_timeouts") or 0
    retries = sysctls.get("net.ipv4.tcp_syn_retries")
    retries = 6 if retries is None else retries  # the kernel's default tcp_syn_retries
    times, t, rto = [], 0.0, SYN_INITIAL_RTO_S
    for i in range(retries):
        t += rto
        times.append(t)
        if i >= linear:
            rto *= 2
    return times
