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

A list of paths
---------------
One path is the URL's. Several (``bench load --path a --path b``, or
``--files-root DIR``) are a Lua script given with ``-s``
(:func:`lua_script`), written to a temporary file for the run (warm-up
included) and removed after it, whatever happens. It requests the same
paths in the same way as the python engine, with one difference of grain:
wrk asks a script for the next request per *thread*, not per connection,
so ``path_order: round-robin`` goes through the list in turn per wrk thread,
each thread from its own starting path as each python client does (wrk asks
the first thread's script for one request more before the run, to check it,
so that thread starts one path later), and ``random`` draws from Lua's generator seeded with the thread's number
(repeatable, but not the python engine's sequence). Over a run every path
gets the same share either way. wrk calls the script's ``request()`` for
every request then, which costs it CPU it does not spend for one path.

What goes into the row (:func:`parse`)
--------------------------------------
- ``requests``: wrk's total less its ``Non-2xx or 3xx responses`` (wrk counts
  a status above 399 as an error); those go to ``errors``. wrk does not split
  them by class, so ``http_2xx`` .. ``http_5xx`` stay empty.
- ``duration_s``: wrk's own run time, total requests / ``Requests/sec`` (the
  ``in 1.01s`` it prints is rounded); ``req_per_s`` = ``requests`` / that.
- ``lat_p50_us``, ``lat_p90_us``, ``lat_p99_us``: wrk's ``Latency
  Distribution`` (it prints 50/75/90/99, three significant figures);
  ``lat_mean_us`` and ``lat_max_us``: the ``Avg`` and ``Max`` of its
  ``Latency`` line (the same histogram). p99.9 is not printed and stays
  empty, as do TTFB and connect times.
- What wrk's latency is: per request, from the moment wrk writes it to the
  moment it has parsed the whole reply, closed loop, recorded in one
  histogram of 1 us buckets over all threads: the same meaning as the other
  engines' closed-loop latency *for the requests it counts*. Two things of
  wrk's own make it differ from theirs on the same server. Its connections
  are new in the measured window (the warm-up is a separate run), and wrk
  times no connect: a connection whose SYN the kernel dropped, or one
  established by a SYN cookie and not yet accepted, sends its first request
  late or waits for its first reply for seconds. Against a listen backlog
  smaller than the clients (socketserver's default is 5) most of the
  connections can spend the window that way, and wrk's percentiles then
  describe the few connections that got in early: a low p50 (a lightly
  loaded server) and a p99 at the kernel's SYN retry (about 1 s). This is
  what made wrk's p50 at 100 connections several times lower than the
  python engine's in ``benchmarks/wrk_vs_sockbench.py`` (whose connections
  were established in its warm-up, inside the same run): the parse was
  right, the connections were not all there. With a backlog above the
  clients every connection is served, and wrk's mean comes to within a few
  percent of Little's law for a closed loop (clients / req/s) and its p50
  to the python engine's. ``gen_engine`` says this in short
  (:data:`ENGINE_LABEL`). wrk's own count and histogram disagree, though:
  on the threading server right after another engine's run, wrk's mean came
  out 1.8-3 times clients / req/s, more than that many connections with one
  request each can produce in a run that starts and ends them, while the
  python engine's mean in the same runs stayed within 10% of it. A Lua
  ``done()`` that adds up the counts of wrk's latency histogram found it
  holding 3-11% more samples than wrk's ``requests in`` total on a fresh
  threading or selectors server, and 23% more (the extra ones long)
  after another engine's run: wrk's percentiles and mean describe a
  population that is not the requests it counts, and its req/s comes from
  the count. Why, in wrk 4.1.0's code, was not found. Adding the histogram
  up from Lua costs a scan of the buckets per distinct value, too slow to do
  on every run, so what is caught is its symptom: a mean more than 10%
  beyond Little's law carries a warning (:func:`little_excess`; it fired,
  for one, on a fresh selectors server at 4 connections with a list of
  paths: 1.4x). A pipelined wrk (``pipeline.lua``) would record
  one latency per batch, which is why ``pipeline`` above 1 is refused.
- ``Socket errors: connect, read, write, timeout``: ``timeout`` means what
  ``err_timeout`` means (no reply within the request timeout) and goes there;
  wrk's ``connect`` (any failed connect) goes to ``conn_other``; ``read`` and
  ``write`` (a failed socket call, a reset among them, or a reply wrk could
  not parse) match no single class and are counted in ``errors`` only. Each
  non-zero class is also named in the warnings.

Error handling
--------------
``wrk`` missing: :class:`ValueError` naming the package (:data:`MISSING`).
Open loop, ``method: HEAD`` or ``pipeline`` above 1 (wrk's parser, not
told a reply answers a HEAD, waits for the body its Content-Length
announces; and wrk records one latency per pipelined batch, not one per
reply as the python engine does), or a duration that is not whole seconds:
:class:`ValueError` naming the fix. wrk exiting non-zero, past its
deadline, or printing what :func:`parse` cannot read: :class:`LoadGenError`
with its output.

Resource handling
-----------------
wrk is started in a session of its own and stopped and reaped on every exit
path (KeyboardInterrupt included) by :func:`servers.processes.popen_killer`.
The Lua script of a list of paths is removed in a ``finally`` once both wrk
runs are over.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
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
#: The ``Latency`` line of wrk's ``Thread Stats`` table: Avg, Stdev, Max (and +/- Stdev, not read).
_LATENCY = re.compile(r"^\s+Latency\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)", re.M)
#: ``gen_engine`` of a wrk row: what its latency leaves out, where the report names the engine.
ENGINE_LABEL = "wrk (new connections in the window; latency from each request's write, connect waits not counted)"


def program() -> str | None:
    """The path of ``wrk`` here, or None."""
    return engines.wrk_program()


def check(spec: LoadSpec) -> None:
    """Raise :class:`ValueError` if the wrk engine cannot run ``spec`` (before anything starts)."""
    engines.resolve(
        "wrk", spec.service, values=engines.spec_values(spec)
    )  # wrk installed, service http, GET, no pipelining
    if spec.mode != "closed":
        raise ValueError(
            "engine 'wrk' runs closed loop only (wrk has no request rate; --rate is for open loop): "
            "use mode closed, or engine python/native for open loop"
        )
    for name, value in (("duration", spec.duration_s), ("warmup", spec.warmup_s)):
        if value != int(value):
            raise ValueError(f"engine 'wrk' takes whole seconds: {name} {value!r} s; use e.g. {max(1, round(value))}")


def threads(spec: LoadSpec) -> int:
    """wrk's ``-t``: one per generator CPU, at most one per client."""
    cpus = len(spec.cpus) if spec.cpus else len(os.sched_getaffinity(0))
    return max(1, min(spec.workers or cpus, spec.clients))


def command(spec: LoadSpec, ip: str, seconds: int, script: str | None = None) -> list[str]:
    """The wrk command line for a run of ``seconds`` against ``ip`` (``script``: the Lua file of a path list)."""
    host = f"[{ip}]" if ":" in ip else ip
    url = f"http://{host}:{spec.port}{request_target(spec.files[0].name).decode('ascii')}"
    timeout = max(1, math.ceil(spec.request_timeout_s))
    path = program() or "wrk"
    argv = [path, "-t", str(threads(spec)), "-c", str(spec.clients), "-d", f"{seconds}s"]
    argv += ["--timeout", f"{timeout}s", "--latency"]
    if script is not None:
        argv += ["-s", script]
    return argv + [url]


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal (quotes, backslashes and anything not printable ASCII escaped)."""
    out: list[str] = []
    for ch in text:
        if ch in '"\\' or not (" " <= ch <= "~"):
            out.extend(f"\\{byte:03d}" for byte in ch.encode("utf-8"))  # 3 digits: a digit may follow
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def lua_script(spec: LoadSpec) -> str:
    """The Lua script that has wrk request ``spec``'s paths in its ``path_order`` (see the module docstring)."""
    targets = ", ".join(_lua_string(request_target(f.name).decode("ascii")) for f in spec.files)
    return f"""-- sockbench: the paths of one run, for wrk -s (bench/loadgen/wrk_engine.py).
local paths = {{{targets}}}
local order = {_lua_string(spec.path_order)}
local made = 0

-- In wrk's main Lua state, once per thread before it starts: number the threads.
function setup(thread)
  thread:set("sockbench_thread", made)
  made = made + 1
end

-- In each thread's own state: its requests, formatted once, and where it starts.
function init(args)
  requests = {{}}
  for i, path in ipairs(paths) do
    requests[i] = wrk.format("GET", path)
  end
  position = sockbench_thread % #requests
  math.randomseed(sockbench_thread + 1)
end

function request()
  if order == "random" then
    return requests[math.random(#requests)]
  end
  position = position % #requests + 1
  return requests[position]
end
"""


@contextlib.contextmanager
def script_file(spec: LoadSpec) -> Iterator[str | None]:
    """The path of a temporary Lua script for ``spec``'s paths (None for one path), removed on exit."""
    if len(spec.files) == 1:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="sockbench-wrk-", suffix=".lua")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(lua_script(spec))
        yield path
    finally:
        os.unlink(path)


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
    latency = _LATENCY.search(text)
    if latency is not None:
        mean, mean_unit, _stdev, _stdev_unit, most, most_unit = latency.groups()
        values["lat_mean_us"] = round(float(mean) * TIME_UNITS[mean_unit], 1)
        values["lat_max_us"] = round(float(most) * TIME_UNITS[most_unit], 1)
    for pct, number, unit in _PERCENTILE.findall(text):
        if pct in PERCENTILE_COLUMNS:
            values[PERCENTILE_COLUMNS[pct]] = round(float(number) * TIME_UNITS[unit], 1)
    return values


def little_excess(clients: int, parsed: dict[str, Any]) -> str | None:
    """A warning when wrk's mean latency is more than closed-loop Little's law allows, else None.

    With ``clients`` connections each carrying one request at a time, at
    most ``clients`` requests are in flight, so the mean latency is at most
    ``clients / (total req/s)`` (less by the time a connection spends between
    a reply and its next request). wrk's own figures broke that bound, on
    the threading http server right after another engine's run, by 1.8-3x
    while the python engine's stayed within 10% (see the module docstring):
    then wrk's latencies and its count do not describe the same requests.
    """
    total, duration, mean = parsed.get("wrk_total"), parsed.get("duration_s"), parsed.get("lat_mean_us")
    if not total or not duration or mean is None:
        return None
    bound_us = clients * duration / total * 1e6
    # 10%: wrk prints the mean and the rate to 3-4 significant figures and its
    # run time is rounded; a real excess here was 1.8-3x.
    if mean <= bound_us * 1.1:
        return None
    return (
        f"wrk: its mean latency {mean / 1e3:,.1f} ms is {mean / bound_us:.1f}x what {clients} connections "
        f"at {total / duration:,.0f} req/s allow in a closed loop ({bound_us / 1e3:,.1f} ms, Little's law): "
        "its latencies and its request count disagree; do not read this run's percentiles"
    )


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
    with script_file(spec) as script:
        if spec.warmup_s:
            _run(spec, command(spec, ip, int(spec.warmup_s), script), int(spec.warmup_s))
        seconds = int(spec.duration_s)
        argv = command(spec, ip, seconds, script)
        start = time.time()
        if on_window is not None:
            on_window(start, start + seconds)
        parsed = parse(_run(spec, argv, seconds))
    row = row_from(spec, parsed, ENGINE_LABEL)
    warnings = [
        "engine wrk: no p99.9, TTFB or connect times, no split of error replies by status class "
        "(wrk does not print them)"
    ]
    if spec.warmup_s:
        warnings.append(
            f"engine wrk: warm-up was a separate {int(spec.warmup_s)} s wrk run; the window's connections are new "
            "(a connection still connecting, e.g. behind a listen backlog smaller than the clients, is in no percentile)"
        )
    for kind, n in parsed["wrk_socket_errors"].items():
        if n:
            warnings.append(f"wrk socket errors: {n} {kind}")
    if parsed["wrk_status_errors"]:
        warnings.append(
            f"wrk: {parsed['wrk_status_errors']} replies with a status above 399, counted as errors; "
            "wrk's latency percentiles include them"
        )
    inconsistent = little_excess(spec.clients, parsed)
    if inconsistent is not None:
        warnings.append(inconsistent)
    return LoadResult(
        row=row,
        histograms={},
        timeline=[],
        window_start=start,
        window_end=start + (row["duration_s"] or seconds),
        loop="wrk",
        warnings=warnings,
    )
