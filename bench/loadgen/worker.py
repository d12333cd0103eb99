"""A load generator worker process: ``python -m bench.loadgen.worker READY_FD``.

One worker runs one event loop driving its share of the clients. The parent
(:mod:`bench.loadgen.driver`) starts one per CPU and talks to each like so:

1. parent -> stdin, line 1: the *job* as JSON (the :class:`~bench.loadgen.spec.LoadSpec`
   as a dict, plus this worker's client count, first client index, rate
   share, CPU, the resolved address and the seed of the echo message, and
   ``mix``: its slow clients of each kind, besides ``clients`` fast ones);
2. the worker sets itself up (CPU affinity, open-files limit, event loop)
   and writes one byte to ``READY_FD``, a pipe inherited from the parent;
3. parent -> stdin, line 2: ``{"start_wall": T}``, a ``time.time()`` shared
   by all workers; the worker converts it to its monotonic clock once and
   starts its clients at that instant, so every worker's warmup and measured
   window line up;
4. at the end of the window the worker sends nothing new, gives replies in
   flight up to :data:`DRAIN_S` to arrive (they no longer count), closes its
   connections with a FIN and writes exactly ONE JSON document on stdout (its counters,
   histograms in HdrHistogram base64, timeline, CPU), then exits 0. On any
   error it writes ``{"ok": false, "error": ...}`` instead and exits 1.

Nothing else is written on stdout: ``sys.stdout`` is pointed at stderr while
the worker runs, so a stray print cannot corrupt the result.

The report
----------
What any worker (this one, or another engine speaking the same protocol)
must put in its JSON document; :mod:`bench.loadgen.merge` reads exactly these
fields. Times are seconds, latencies integer microseconds, counts integers;
"in the window" means the event happened in ``[window_start, window_end)``.

``ok``, ``index``, ``loop``
    true; the job's ``index``; the name of what drove the clients (event loop
    or engine).
``requests``, ``payload_bytes``
    requests completed whole and correct in the window, and their reply bytes.
``histograms``
    HdrHistograms (1 us .. 60 s, 3 digits: :mod:`bench.histograms`)
    in base64 V2 encoding: ``latency`` (completed in the window, from the
    intended start), ``ttfb`` (send to first reply byte), ``connect``
    (successful connects, whole run), ``censored`` (requests with no
    latency, each at the time it is known to have waited, from its intended
    start: timed out in the window at the time the timeout was found; sent and
    unanswered at the window end, if it had waited longer than every request
    completed in the window, at ``window_end - t_intended``; open loop, due
    and never sent at ``window_end - t_intended``: see
    :mod:`bench.loadgen.recording`), and in open loop
    ``latency_uncorrected`` (from the actual send).
``clients_served``
    clients with at least one request completed in the window.
``source_addrs``
    local addresses the connections came from (the job's ``source_ips``, or
    1: the kernel's choice).
``errors``
    ``{reset, timeout, closed_early, short, corrupt, http_3xx, http_4xx,
    http_5xx}`` in the window (:data:`bench.vocabulary.REQUEST_ERRORS`; a
    report may leave out kinds it cannot see); every timeout is also
    in ``censored``.
``connects``, ``other_errnos``
    ``{ok, refused, reset, timeout, emfile, eaddrnotavail, other}`` over the
    whole run, and errno names behind ``other``.
``pending_requests``, ``pending_oldest_s``
    requests sent and unanswered at the window end, and the oldest one's age.
``unstarted``, ``late_starts``
    open loop: requests due and never sent (0 in closed loop); requests in
    the window that went out more than 1 ms after their due time.
``connecting_at_end``
    connects still in progress at the end.
``mix`` (optional)
    the slow clients of ``load.mix``: ``{kind: {outcome: n}}`` over the whole
    run (:data:`bench.parameters.SLOW_KINDS`, :data:`bench.vocabulary.SLOW_OUTCOMES`);
    every other field counts the fast clients only.
``cpu_pct``, ``cpu_s``, ``window_wall_s``
    the worker's own CPU over the window, in percent of one core.
``start_late_s``
    how late the worker started after the shared start.
``timeline``
    ``{k0, n: [...], lat: [{index: count}, ...]}``: completions per
    ``timeline_interval_s`` bucket aligned on the window start (bucket ``k0``
    first, negative in warmup), with their latency histogram indices.
``notes``, ``err_replies``, ``warnings``, ``coarse_timer``, ``loop_errors``, ``loop_error_samples``
    rare events (``{idle_lost: n}``), ``{ERR reply text: n}``, the worker's
    own caveats, whether open loop ran on coarse timers, and errors inside the
    worker itself (count and up to 3 texts).
``engine``, ``wake_lag_max_s``, ``late_starts_generator`` (optional)
    which engine ran (``python`` or ``native``); open loop: the largest lag of
    a release wake-up past a due time, and the late starts of requests that
    had a free connection waiting (the generator's lateness, not the server's).
``wakeups``, ``send_lag_mean_s``, ``send_lag_n`` (optional)
    open loop: wake-ups that released requests (one per batch), and the mean
    of send time minus due time over the ``send_lag_n`` requests due in the
    window, the generator's part of their corrected latency
    (:mod:`bench.loadgen.schedule`, "What the horizon costs").
``waits``, ``lazy_waits``, ``rx_timestamps``, ``rx_timestamps_missing``, ``rx_timestamps_clamped`` (optional)
    native engine only: blocking waits of its loop in the window (each a
    sleep and a wake-up, whatever woke it), those that slept through replies
    to read them at the next release, whether replies were timed by the
    kernel's receive timestamps, and reads that came without one or with one
    outside [sent, read] (kept inside).

The native engine (``bench/loadgen/c/loadgen.c``) writes the same document,
except that its histograms are ``{counts index: count}`` objects in the same
index scheme instead of base64 (:func:`bench.loadgen.merge.merge_histograms`
takes either); a field added here is added there too.

Run-queue wait is not reported by the worker: the parent reads
``/proc/<pid>/schedstat`` of every worker at the window's start and end
(:mod:`bench.loadgen.driver`), so it is measured the same way for any engine.

CPU
---
The worker measures its own CPU over the measured window:
``time.process_time()`` delta / wall-time delta, in percent of one core. A
worker with no idle time is short of CPU; the parent says so, counting
run-queue wait too (:data:`bench.vocabulary.GENERATOR_SHORT_RULE`), and the
runner, which knows the server's CPU as well, decides whether the generator
or both set the figures (:func:`bench.vocabulary.generator_limit`).

Resource handling
-----------------
Every worker stops by itself at the end of its window. As a backstop against
a wedged loop, ``signal.alarm`` kills it ``job["grace_s"]`` seconds after
the planned end (the parent's :data:`~bench.loadgen.driver.WORKER_GRACE_S`);
the parent enforces its own, longer, hard timeout too. If the
parent goes away before sending the start line, stdin reaches EOF and the
worker exits without running.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from time import monotonic
from typing import Any

from bench.loadgen.clients import Client, Shared, SlowClient
from bench.loadgen.recording import WorkerStats
from bench.loadgen.schedule import ClosedLoop, OpenLoop

#: File descriptors a worker needs besides one per client: stdio, the ready
#: pipe, epoll and the loop's self-pipe, plus sockets still closing while
#: their replacements connect.
FD_SLACK = 64
#: Read buffer for echo: 64 KiB holds any usual message in one read and stays
#: below glibc's mmap threshold (measured here: a 256 KiB read buffer
#: reallocated per recv cost asyncio 3x throughput; ours is allocated once).
ECHO_BUFFER = 64 * 1024
#: Read buffer for the file service: 256 KiB cuts the callbacks per MiB of
#: body fourfold; allocated once per worker, so its size costs nothing per read.
FILE_BUFFER = 256 * 1024
#: How many unexpected loop errors are kept verbatim for the warnings.
MAX_KEPT_ERRORS = 3
#: End of run: how long replies in flight may take to arrive before the
#: connections are closed (see :mod:`bench.loadgen.clients`, Resource
#: handling); a healthy server answers in microseconds, one that never
#: answers must not hold the run.
DRAIN_S = 0.2
#: How often the drain checks whether every reply has arrived.
DRAIN_POLL_S = 0.002


def pick_loop(name: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """Resolve ``auto|asyncio|uvloop`` to (the loop's name, a loop factory or None for asyncio's)."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise RuntimeError(
                    "uvloop was asked for but is not installed: pip install uvloop, or use --loop asyncio"
                ) from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def raise_nofile(needed: int, warnings: list[str]) -> None:
    """Raise the soft RLIMIT_NOFILE toward the hard limit if ``needed`` fds exceed it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed <= soft:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        warnings.append(
            f"a worker needs {needed} open files for its clients but the hard limit is {hard}: "
            f"connects beyond it fail with EMFILE (conn_emfile); raise it (ulimit -Hn) or use more workers"
        )


async def _sweep(clients: list[Client], period: float) -> None:
    """Fail requests that exceeded the request timeout, checking every ``period`` seconds."""
    while True:
        await asyncio.sleep(period)
        now = monotonic()
        for c in clients:
            c.check_timeout(now)


async def run_clients(job: dict[str, Any], run_start: float) -> dict[str, Any]:
    """Drive this worker's clients from ``run_start`` (monotonic) to the window end; return its report."""
    spec = job["spec"]
    loop = asyncio.get_running_loop()
    loop_errors: list[str] = []

    def on_error(_loop: Any, context: dict[str, Any]) -> None:
        loop_errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    loop.set_exception_handler(on_error)
    window_start = run_start + spec["warmup_s"]
    window_end = window_start + spec["duration_s"]
    # A worker whose clients are all slow ones (load.mix) has no schedule to keep.
    open_loop = spec["mode"] == "open" and job["clients"] > 0
    stats = WorkerStats(run_start, window_start, window_end, spec["timeline_interval_s"], open_loop)
    shared = Shared(
        loop, stats, job["ip"], spec["port"], job, ECHO_BUFFER if spec["service"] == "echo" else FILE_BUFFER
    )
    clients = [Client(shared, job["client_offset"] + i) for i in range(job["clients"])]
    run_s = spec["warmup_s"] + spec["duration_s"]
    slow = [SlowClient(shared, kind, run_s) for kind, n in (job.get("mix") or {}).items() for _ in range(n)]
    dispatcher: ClosedLoop | OpenLoop
    if open_loop:
        dispatcher = OpenLoop(loop, stats, job["rate"], run_start + job["phase_s"], window_end)
    else:
        dispatcher = ClosedLoop()
    shared.dispatcher = dispatcher

    await asyncio.sleep(max(0.0, run_start - monotonic()))
    start_late = monotonic() - run_start
    cpu_mark: dict[str, float] = {}

    def mark_window_start() -> None:
        cpu_mark["cpu"], cpu_mark["wall"] = time.process_time(), monotonic()

    if spec["warmup_s"] > 0:
        loop.call_later(max(0.0, window_start - monotonic()), mark_window_start)
    else:
        mark_window_start()
    for c in clients:
        c.start()
    for sc in slow:
        sc.start()
    if isinstance(dispatcher, OpenLoop):
        dispatcher.start()
    # Check timeouts ten times per timeout (10% detection error), between
    # every 10 ms and every 1 s so 10k clients cost little.
    period = min(1.0, max(0.01, spec["request_timeout_s"] / 10))
    sweeper = loop.create_task(_sweep(clients, period))

    await asyncio.sleep(max(0.0, window_end - monotonic()))
    # The window-start mark ran before this: its timer is due earlier and the
    # loop runs timers in deadline order.
    cpu_end, wall_end = time.process_time(), monotonic()
    shared.stopping = True
    # Read before stop(): closing the timer releases its timerfd, after which
    # it no longer says whether it had one.
    coarse_timer = isinstance(dispatcher, OpenLoop) and not dispatcher.timer.precise
    if isinstance(dispatcher, OpenLoop):
        dispatcher.stop()
    connecting = sum(1 for c in clients if c.connecting)
    # Requests sent and not yet answered when the window closes: a closed loop
    # always has some in flight, but an old one is a client the server ignores
    # (e.g. accepted by SYN cookies, or queued behind a busy sequential server).
    now = monotonic()
    busy = [c.conn for c in clients if c.conn is not None and c.conn.busy]
    waiting = [now - conn.t_sent for conn in busy]
    for conn in busy:
        stats.censor_in_flight(conn.t_int)
    if isinstance(dispatcher, OpenLoop):  # due and never sent: censored from their due time
        for i in range(dispatcher.started, dispatcher.released):
            stats.censor_unstarted(dispatcher.t0 + i * dispatcher.interval)
    served = sum(1 for c in clients if c.completed)
    drain_end = now + DRAIN_S
    while monotonic() < drain_end and any(c.conn is not None and c.conn.busy for c in clients):
        await asyncio.sleep(DRAIN_POLL_S)
    for c in clients:
        c.stop()
    for sc in slow:
        sc.stop()
    sweeper.cancel()
    tasks = [c.task for c in clients if c.task is not None] + [c.task for c in slow if c.task is not None]
    await asyncio.gather(sweeper, *tasks, return_exceptions=True)
    await asyncio.sleep(0)  # let closed transports deliver connection_lost

    wall = max(1e-9, wall_end - cpu_mark["wall"])
    report = stats.to_json()
    report.update(
        cpu_s=cpu_end - cpu_mark["cpu"],
        window_wall_s=wall,
        cpu_pct=100.0 * (cpu_end - cpu_mark["cpu"]) / wall,
        start_late_s=start_late,
        connecting_at_end=connecting,
        clients_served=served,
        source_addrs=max(1, len(shared.sources)),
        pending_requests=len(waiting),
        pending_oldest_s=max(waiting, default=0.0),
        unstarted=dispatcher.unstarted(),
        wake_lag_max_s=dispatcher.lag_max if isinstance(dispatcher, OpenLoop) else 0.0,
        late_starts_generator=dispatcher.late_generator if isinstance(dispatcher, OpenLoop) else 0,
        wakeups=dispatcher.wakeups if isinstance(dispatcher, OpenLoop) else 0,
        send_lag_mean_s=(
            dispatcher.send_lag_sum / dispatcher.send_lag_n
            if isinstance(dispatcher, OpenLoop) and dispatcher.send_lag_n
            else 0.0
        ),
        send_lag_n=dispatcher.send_lag_n if isinstance(dispatcher, OpenLoop) else 0,
        coarse_timer=coarse_timer,
        mix=shared.slow_counts,
        loop_errors=len(loop_errors),
        loop_error_samples=loop_errors[:MAX_KEPT_ERRORS],
    )
    return report


def run_job(job: dict[str, Any], ready_fd: int | None) -> dict[str, Any]:
    """Set up, signal readiness, wait for the start line, run, and return the report."""
    spec = job["spec"]
    warnings: list[str] = []
    if job.get("cpu") is not None:
        os.sched_setaffinity(0, {job["cpu"]})
    raise_nofile(job["clients"] + sum((job.get("mix") or {}).values()) + FD_SLACK, warnings)
    loop_name, factory = pick_loop(spec["loop"])
    if ready_fd is not None:
        os.write(ready_fd, b"r")
        os.close(ready_fd)
    line = sys.stdin.readline()
    if not line:
        raise RuntimeError("the parent closed stdin before sending the start time")
    start_wall = float(json.loads(line)["start_wall"])
    run_start = monotonic() + (start_wall - time.time())
    until_end = max(0.0, start_wall - time.time()) + spec["warmup_s"] + spec["duration_s"]
    signal.alarm(math.ceil(until_end + job["grace_s"]))
    with asyncio.Runner(loop_factory=factory) as runner:
        report = runner.run(run_clients(job, run_start))
    signal.alarm(0)
    report.update(ok=True, index=job["index"], engine="python", loop=loop_name, warnings=warnings)
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring for the protocol."""
    argv = sys.argv[1:] if argv is None else argv
    ready_fd = int(argv[0]) if argv else None
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        job = json.loads(sys.stdin.readline())
        result = run_job(job, ready_fd)
    except BaseException as exc:  # noqa: BLE001 - report every failure as the one JSON document
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    out.flush()
    write_all(out.fileno(), json.dumps(result).encode())
    return 0 if result.get("ok") else 1


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, blocking until the parent has read it.

    Why not ``sys.stdout.write``: if anything in the process has left the
    pipe non-blocking, a report larger than the pipe (64 KiB; a long run's
    timeline is several times that) is silently cut at a pipe-full boundary
    by the buffered text layer, and the process still exits 0. Observed
    here. So the fd is put back in blocking mode and written with ``os.write``
    until every byte is out.
    """
    os.set_blocking(fd, True)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    raise SystemExit(main())
