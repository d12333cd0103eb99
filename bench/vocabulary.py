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
* **generator-bound**: a load generator worker was short of CPU while the
  server had CPU to spare (:data:`GENERATOR_BOUND_RULE`): the figures measure
  the generator, and the server's own limit lies higher.
* **both-saturated**: a load generator worker was short of CPU and the
  server was saturated too, or the two shared CPUs
  (:data:`BOTH_SATURATED_RULE`): the figures are a joint limit of both, not
  the generator's alone; a faster generator might move them, or not.
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
#: window) more than this is short of CPU: its loop has no idle time left to
#: notice replies promptly. CPU alone misses a worker that is runnable but
#: kept off its CPU by another process (the server on a shared CPU, the
#: runner, another program): for the load offered, waiting for a CPU is as
#: much a generator limit as using one.
GENERATOR_BOUND_PCT = 90.0
#: A worker that waited on a run queue more than this percent of the window
#: is short of CPU too, however little CPU it got: it does not run flat out
#: (on each wake-up it handles what is ready and sleeps again), yet every
#: reply that arrives while it waits is time-stamped late and the next
#: request goes out late. Measured here: three spinning processes on a
#: worker's CPU gave it 22-33% CPU and 34-43% wait (CPU + wait only ~66%) at
#: a third of its usual throughput; a worker alone on an idle CPU waits ~1%.
RUNQ_WAIT_BOUND_PCT = 20.0
#: When the load generator is short of CPU, as the warnings state it. This
#: alone does not make a run generator-bound: a generator flat out against a
#: server that is flat out too measures them both (see :func:`generator_limit`).
GENERATOR_SHORT_RULE = (
    f"worker CPU + run-queue wait > {GENERATOR_BOUND_PCT:g}% of the window, "
    f"or run-queue wait > {RUNQ_WAIT_BOUND_PCT:g}%"
)
#: A server whose process tree used, or waited on a run queue for, this much
#: of the CPUs it may run on (CPU + run-queue wait, percent of those CPUs) is
#: saturated: it had no CPU left to answer faster, whatever the generator
#: did. The same 90% as the generator's: the monitor reads CPU in 10 ms
#: ticks, half a percent of a core over a 2 s window per process, and a server
#: that is flat out still idles a few percent between a reply and the next
#: request. Run-queue wait counts for the reason it counts for the
#: generator: a server kept off its CPU by another process had none to
#: spare either (it is summed over threads, so threads that wait for each
#: other count too; they only wait when the CPU is busy).
SERVER_SATURATED_PCT = 90.0
#: When the server is saturated, as the warnings state it.
SERVER_SATURATED_RULE = f"server tree CPU + run-queue wait >= {SERVER_SATURATED_PCT:g}% of the CPUs it is pinned to"
#: The generator-bound rule as the warnings state it.
GENERATOR_BOUND_RULE = (
    f"a load generator worker short of CPU ({GENERATOR_SHORT_RULE}) while the server, on CPUs of its "
    f"own, was not saturated (its CPU + run-queue wait < {SERVER_SATURATED_PCT:g}% of them)"
)
#: The both-saturated rule as the warnings state it.
BOTH_SATURATED_RULE = (
    f"a load generator worker short of CPU ({GENERATOR_SHORT_RULE}) while the server was saturated "
    f"({SERVER_SATURATED_RULE}) or shared its CPUs with the generator"
)


def generator_short_of_cpu(busy_pct: float | None, wait_pct: float | None) -> bool:
    """:data:`GENERATOR_SHORT_RULE` for the busiest worker: ``busy_pct`` its CPU + run-queue wait.

    ``busy_pct`` None: the worker's CPU was not measured (an engine that
    does not report it), and nothing says it was short. ``wait_pct`` None:
    the wait was not measured and counts 0.
    """
    if busy_pct is None or busy_pct != busy_pct:  # None or NaN: not measured
        return False
    wait = wait_pct if wait_pct is not None and wait_pct == wait_pct else 0.0
    return busy_pct > GENERATOR_BOUND_PCT or wait > RUNQ_WAIT_BOUND_PCT


def server_saturated(cpu_pct: float | None, wait_pct: float | None, n_cpus: int) -> bool | None:
    """:data:`SERVER_SATURATED_RULE` for a server tree on ``n_cpus`` CPUs; None when its CPU was not measured."""
    if cpu_pct is None or cpu_pct != cpu_pct:
        return None
    wait = wait_pct if wait_pct is not None and wait_pct == wait_pct else 0.0
    return cpu_pct + wait >= SERVER_SATURATED_PCT * n_cpus


def cpu_set(text: Any) -> frozenset[int]:
    """The CPUs of a runs.csv ``server_cpus`` / ``gen_cpus`` cell (``"0"``, ``"2,3"``); empty: unpinned."""
    if text is None or text != text:  # None or NaN
        return frozenset()
    # float first: a column pandas read as numbers gives "0.0" for CPU 0
    return frozenset(int(float(part)) for part in str(text).split(",") if part.strip())


def generator_limit(
    *,
    gen_busy_pct: float | None,
    gen_wait_pct: float | None,
    server_cpu_pct: float | None,
    server_wait_pct: float | None,
    server_cpus: frozenset[int],
    gen_cpus: frozenset[int],
) -> str | None:
    """Who set a run's figures when the generator was short of CPU: :data:`GENERATOR_BOUND`, :data:`BOTH_SATURATED` or None.

    None when no generator worker was short of CPU
    (:func:`generator_short_of_cpu` of the busiest: ``gen_busy_pct`` its
    CPU + run-queue wait, ``gen_wait_pct`` the longest wait). Otherwise the
    server decides. Both saturated when:

    * the server was saturated (:func:`server_saturated` on its pinned CPUs):
      it had nothing to spare, so the generator's shortage is not the whole
      story: the figures are the limit of the pair;
    * or the server shared CPUs with the generator (the ``shared``
      placement, or either of them unpinned): they took the CPU from each
      other, and neither alone is the limit.

    Generator-bound when the server, on CPUs of its own, was not saturated:
    it had CPU to spare and waited for the generator. Generator-bound too
    when the server's CPU was not measured (one monitor sample in the
    window): nothing clears the generator, so its shortage is taken at its
    word, as before the server's CPU was known.
    """
    if not generator_short_of_cpu(gen_busy_pct, gen_wait_pct):
        return None
    if not server_cpus or not gen_cpus or server_cpus & gen_cpus:
        return BOTH_SATURATED
    saturated = server_saturated(server_cpu_pct, server_wait_pct, len(server_cpus))
    return BOTH_SATURATED if saturated else GENERATOR_BOUND


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


#: The runs.csv columns :func:`run_generator_limit` reads.
LIMIT_FACTS = (
    "gen_busy_pct_max",
    "gen_runq_wait_pct_max",
    "server_cpu_pct",
    "server_runq_wait_pct",
    "server_cpus",
    "gen_cpus",
)


def run_generator_limit(row: Mapping[str, Any]) -> str | None:
    """:func:`generator_limit` of one runs.csv row (column names of :mod:`bench.results`)."""
    return generator_limit(
        gen_busy_pct=_number(row.get("gen_busy_pct_max")),
        gen_wait_pct=_number(row.get("gen_runq_wait_pct_max")),
        server_cpu_pct=_number(row.get("server_cpu_pct")),
        server_wait_pct=_number(row.get("server_runq_wait_pct")),
        server_cpus=cpu_set(row.get("server_cpus")),
        gen_cpus=cpu_set(row.get("gen_cpus")),
    )


def limit_columns(row: Mapping[str, Any]) -> dict[str, bool]:
    """runs.csv's ``generator_bound`` and ``both_saturated`` of one row, from its measured columns."""
    limit = run_generator_limit(row)
    return {"generator_bound": limit == GENERATOR_BOUND, "both_saturated": limit == BOTH_SATURATED}


# --------------------------------------------------------------------------
# Run statuses and point flags

#: runs.csv ``status`` values of a run without figures.
FAILED_STATUSES = ("failed", "interrupted")

FAILED, GENERATOR_BOUND, BOTH_SATURATED = "failed", "generator-bound", "both-saturated"
UNSTABLE, BUSY = "unstable", "busy"
#: Every point flag, in the order tables, tags and legends show them.
POINT_FLAGS = (FAILED, GENERATOR_BOUND, BOTH_SATURATED, UNSTABLE, BUSY)

#: What each flag means, for legends and notes; the numbers are the constants above.
FLAG_LABELS = {
    FAILED: "failed run (see report)",
    # short: a legend label wider than ~55 characters squeezes a one-panel figure's plot to a third
    GENERATOR_BOUND: "generator-bound (load generator short of CPU)",
    BOTH_SATURATED: "both saturated (generator and server at their limits)",
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
    if _count(row, "n_both_saturated"):
        flags.append(BOTH_SATURATED)
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
