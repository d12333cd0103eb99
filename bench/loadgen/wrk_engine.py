"""The ``wrk`` load engine: Debian's ``wrk`` drives the http service, closed loop.

``generator.engine: wrk`` (``bench load --service http --engine wrk``) runs
`wrk <https://github.com/wg/wrk>`_ instead of sockbench's own workers, as a
reference point: a well-known C HTTP benchmark's figures next to the python
engine's, against the same server. What it can say is what wrk prints, so
the row is thinner than the other engines' and says so.

How a run goes
--------------
``wrk -t T -c C -d D --timeout S --latency http://HOST:PORT/PATH``, with C
the run's clients (one connection each, kept alive), T the generator CPUs
(at most C: a wrk thread owns whole connections), S the request timeout in
whole seconds (rounded up). wrk has no warm-up of its own, so a warm-up is a
second wrk run of ``warmup`` seconds just before, discarded: the measured
window then holds no warm-up requests, but its connections are new (the
server's caches and the kernel's are warm; a connect per client falls in the
window). wrk takes whole seconds only, so ``duration`` and ``warmup`` must be
whole seconds.

What goes into the row (:func:`parse`)
--------------------------------------
- ``requests``: wrk's total less its ``Non-2xx or 3xx responses`` (wrk counts
  a status above 399 as an error); those go to ``errors``. wrk does not split
  them by class, so ``http_2xx`` .. ``http_5xx`` stay empty.
- ``duration_s``: wrk's own run time, total requests / ``Requests/sec`` (the
  ``in 1.01s`` it prints is rounded); ``req_per_s`` = ``requests`` / that.
- ``lat_p50_us``, ``lat_p90_us``, ``lat_p99_us``: wrk's ``Latency
  Distribution`` (it prints 50/75/90/99, three significant figures). p99.9,
  mean and max are not printed as percentiles and stay empty, as do TTFB and
  connect times. wrk's latency is from send to full reply in closed loop, the
  same meaning as the other engines' closed-loop latency.
- ``Socket errors: connect, read, write, timeout``: ``timeout`` means what
  ``err_timeout`` means (no reply within the request timeout) and goes there;
  wrk's ``connect`` (any failed connect) goes to ``conn_other``; ``read`` and
  ``write`` (a failed socket call, a reset among them, or a reply wrk could
  not parse) match no single class and are counted in ``errors`` only. Each
  non-zero class is also named in the warnings.

Error handling
--------------
``wrk`` missing: :class:`ValueError` naming the package (:data:`MISSING`).
Open loop, a list of more than one path, or a duration that is not whole
seconds: :class:`ValueError` naming the fix. wrk exiting non-zero, past its
deadline, or printing what :func:`parse` cannot read: :class:`LoadGenError`
with its output.

Resource handling
-----------------
wrk is started in a session of its own and stopped and reaped on every exit
path (KeyboardInterrupt included) by :func:`servers.processes.popen_killer`.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.loadgen import engines
from bench.loadgen.errors import LoadGenError
from bench.loadgen.spec import ROW_COLUMNS, LoadResult, LoadSpec, request_target, resolve_target, validate
from servers.processes import popen_killer

#: How long past its duration wrk may take to print and exit: it waits up to its
#: own timeout for the last replies; 10 s more covers a start on a saturated machine.
EXIT_GRACE_S = 10.0
#: wrk's unit suffixes for latency and their factor to microseconds.
TIME_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
#: The percentiles wrk's ``--latency`` prints that are also row columns.
PERCENTILE_COLUMNS = {"50": "lat_p50_us", "90": "lat_p90_us", "99": "lat_p99_us"}

_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.M)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_STATUS = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)


def program() -> str | None:
    """The path of ``wrk`` here, or None."""
    return engines.wrk_program()


def check(spec: LoadSpec) -> None:
    """Raise :class:`ValueError` if the wrk engine cannot run ``spec`` (before anything starts)."""
    engines.resolve("wrk", spec.service)  # wrk installed, service http
    if spec.mode != "closed":
        raise ValueError(
            "engine 'wrk' runs closed loop only (wrk has no request rate; --rate is for open loop): "
            "use mode closed, or engine python/native for open loop"
        )
    if len(spec.files) != 1:
        raise ValueError(
            f"engine 'wrk' requests one path, got {len(spec.files)} ({', '.join(f.name for f in spec.files[:5])}); "
            "give one --path, or use engine python for a list of paths"
        )
    for name, value in (("duration", spec.duration_s), ("warmup", spec.warmup_s)):
        if value != int(value):
            raise ValueError(f"engine 'wrk' takes whole seconds: {name} {value!r} s; use e.g. {max(1, round(value))}")


def threads(spec: LoadSpec) -> int:
    """wrk's ``-t``: one per generator CPU, at most one per client."""
    cpus = len(spec.cpus) if spec.cpus else len(os.sched_getaffinity(0))
    return max(1, min(spec.workers or cpus, spec.clients))


def command(spec: LoadSpec, ip: str, seconds: int) -> list[str]:
    """The wrk command line for a run of ``seconds`` against ``ip``."""
    host = f"[{ip}]" if ":" in ip else ip
    url = f"http://{host}:{spec.port}{request_target(spec.files[0].name).decode('ascii')}"
    timeout = max(1, math.ceil(spec.request_timeout_s))
    path = program() or "wrk"
    return [path, "-t", str(threads(spec)), "-c", str(spec.clients), "-d", f"{seconds}s"] + [
        "--timeout",
        f"{timeout}s",
        "--latency",
        url,
    ]


def _run(spec: LoadSpec, argv: list[str], seconds: int) -> str:
    cpus = spec.cpus

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=pin,  # noqa: PLW1509 - only sched_setaffinity, before exec
    )
    with popen_killer(popen):
        try:
            out, err = popen.communicate(timeout=seconds + max(1, math.ceil(spec.request_timeout_s)) + EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            raise LoadGenError(f"wrk did not finish within its deadline: {' '.join(argv)}") from None
    if popen.returncode != 0:
        raise LoadGenError(f"wrk exited with status {popen.returncode}: {(err or out).strip()[-2000:]}")
    return out


def parse(text: str) -> dict[str, Any]:
    """wrk's output as row values (see the module docstring); :class:`LoadGenError` if it is not wrk's."""
    total, rate = _TOTAL.search(text), _RATE.search(text)
    if total is None or rate is None:
        raise LoadGenError(f"cannot read wrk's output (no request total or Requests/sec): {text.strip()[-2000:]}")
    socket_errors = _SOCKET.search(text)
    connect, read, write, timeout = (int(n) for n in socket_errors.groups()) if socket_errors else (0, 0, 0, 0)
    status_match = _STATUS.search(text)
    status = int(status_match.group(1)) if status_match else 0
    total_n, rate_v = int(total.group(1)), float(rate.group(1))
    duration = total_n / rate_v if rate_v > 0 else None
    requests = total_n - status
    values: dict[str, Any] = {
        "duration_s": duration,
        "requests": requests,
        "errors": status + read + write + timeout,
        "req_per_s": requests / duration if duration else 0.0,
        "err_timeout": timeout,
        "conn_other": connect,
        "wrk_total": total_n,
        "wrk_status_errors": status,
        "wrk_socket_errors": {"connect": connect, "read": read, "write": write, "timeout": timeout},
    }
    for pct, number, unit in _PERCENTILE.findall(text):
        if pct in PERCENTILE_COLUMNS:
            values[PERCENTILE_COLUMNS[pct]] = round(float(number) * TIME_UNITS[unit], 1)
    return values


def row_from(spec: LoadSpec, parsed: dict[str, Any], engine_note: str) -> dict[str, Any]:
    """A full row (:data:`ROW_COLUMNS`): what wrk measured, None for all it does not."""
    row: dict[str, Any] = dict.fromkeys(ROW_COLUMNS)
    row.update({k: v for k, v in parsed.items() if k in row})
    if row["duration_s"] is None:
        row["duration_s"] = spec.duration_s
    row["gen_workers"] = threads(spec)
    row["gen_source_addrs"] = 1  # wrk connects from the kernel's choice of address
    row["gen_engine"] = engine_note
    return row


def run_wrk(spec: LoadSpec, on_window: Callable[[float, float], None] | None = None) -> LoadResult:
    """Run ``spec`` with wrk (a discarded warm-up run first if ``warmup_s``) and return its result."""
    validate(spec)
    check(spec)
    ip = resolve_target(spec.host, spec.port, spec.allow_remote)
    if spec.warmup_s:
        _run(spec, command(spec, ip, int(spec.warmup_s)), int(spec.warmup_s))
    seconds = int(spec.duration_s)
    argv = command(spec, ip, seconds)
    start = time.time()
    if on_window is not None:
        on_window(start, start + seconds)
    parsed = parse(_run(spec, argv, seconds))
    row = row_from(spec, parsed, "wrk")
    warnings = [
        "engine wrk: no p99.9, max, mean, TTFB or connect times, no split of error replies by status class "
        "(wrk does not print them)"
    ]
    if spec.warmup_s:
        warnings.append(
            f"engine wrk: warm-up was a separate {int(spec.warmup_s)} s wrk run; the window's connections are new"
        )
    for kind, n in parsed["wrk_socket_errors"].items():
        if n:
            warnings.append(f"wrk socket errors: {n} {kind}")
    if parsed["wrk_status_errors"]:
        warnings.append(
            f"wrk: {parsed['wrk_status_errors']} replies with a status above 399, counted as errors; "
            "wrk's latency percentiles include them"
        )
    return LoadResult(
        row=row,
        histograms={},
        timeline=[],
        window_start=start,
        window_end=start + (row["duration_s"] or seconds),
        loop="wrk",
        warnings=warnings,
    )
