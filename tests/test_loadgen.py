"""Tests of the load generator (bench.loadgen) against tiny in-test servers.

The servers are tests/thread_servers.py's (threads with plain blocking
sockets, obviously right rather than fast), a listener that never accepts, and
a closed port. Every test here also checks that no load worker outlived it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from bench import histograms
from bench.loadgen import FileTarget, LoadGenError, LoadSpec, cli, driver, merge, run_load
from bench.loadgen import spec as specmod
from bench.loadgen.recording import WorkerStats
from bench.vocabulary import RUNQ_WAIT_BOUND_PCT, generator_short_of_cpu

from thread_servers import (
    ThreadServer,
    corrupt_echo_handler,
    corrupt_file_handler,
    echo_handler,
    file_handler,
    hold,
    reset_handler,
    stream_echo_handler,
)

pytestmark = pytest.mark.usefixtures("no_leftover_workers")

HAVE_UVLOOP = True
try:
    import uvloop  # noqa: F401
except ImportError:  # pragma: no cover
    HAVE_UVLOOP = False

LOOPS = ["asyncio"] + (["uvloop"] if HAVE_UVLOOP else [])


def spec(port: int, **kw: object) -> LoadSpec:
    base: dict[str, object] = dict(
        service="echo",
        host="127.0.0.1",
        port=port,
        clients=2,
        duration_s=1.0,
        connect_timeout_s=2.0,
        request_timeout_s=30.0,
        engine="python",
    )
    base.update(kw)
    return LoadSpec(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------- histograms


def test_index_of_matches_hdrh() -> None:
    ref = histograms.new_histogram()
    values = list(range(0, 5000)) + [10**k + d for k in range(4, 8) for d in range(-3000, 3000, 7)]
    for v in values + [histograms.HIGHEST_US]:
        assert histograms.index_of(v) == ref._counts_index_for(v), v
    assert histograms.index_of(10**9) == histograms.index_of(histograms.HIGHEST_US)  # clamped


def test_counts_equal_record_value() -> None:
    counts, ref = histograms.Counts(), histograms.new_histogram()
    for v in [0, 1, 7, 999, 1000, 1001, 123_456, 7_654_321, 59_000_000] * 3:
        counts.record(v)
        ref.record_value(v)
    h = counts.to_hdr()
    assert h.get_total_count() == ref.get_total_count() == 27
    for p in (1, 25, 50, 90, 99, 100):
        assert h.get_value_at_percentile(p) == ref.get_value_at_percentile(p)
    assert h.get_mean_value() == ref.get_mean_value()
    decoded = histograms.decode(histograms.encode(h))
    assert decoded.get_value_at_percentile(50) == ref.get_value_at_percentile(50)


def _report(
    stats: WorkerStats, index: int, cpu_pct: float, runq_wait_pct: float | None = None, clients_served: int = 1
) -> dict[str, object]:
    r = stats.to_json()
    r.update(
        ok=True,
        index=index,
        loop="asyncio",
        warnings=[],
        cpu_pct=cpu_pct,
        cpu_s=0.0,
        window_wall_s=1.0,
        start_late_s=0.0,
        connecting_at_end=0,
        pending_requests=0,
        pending_oldest_s=0.0,
        unstarted=0,
        loop_errors=0,
        loop_error_samples=[],
        clients_served=clients_served,
        runq_wait_pct=runq_wait_pct,
    )
    return r


def _window_stats(latencies_us: list[int], open_loop: bool = False) -> WorkerStats:
    """A worker's stats with one completion of each latency inside the window [10, 11)."""
    st = WorkerStats(run_start=10.0, window_start=10.0, window_end=11.0, interval=0.5, open_loop=open_loop)
    for i, v in enumerate(latencies_us):
        t_done = 10.0 + (i + 1) * 0.9 / len(latencies_us)
        st.complete(t_done - v / 1e6, t_done - v / 1e6, t_done, t_done, 100)
    return st


def test_censored_requests_make_percentiles_lower_bounds() -> None:
    # 980 requests of ~1 ms and 20 that never finish (10 timeouts found 2 s after their
    # start, 10 unanswered at the end, sent 0.5 s before it): 2% censored, far above
    # every completed latency. p50 and p90 are unmoved and exact; p99 and max are
    # lower bounds at the censored values.
    st = _window_stats([1000] * 980)
    for _ in range(10):
        st.timed_out(t_intended=8.4, t=10.4)
        st.censor_in_flight(t_intended=10.5)
    s = LoadSpec(service="echo", host="127.0.0.1", port=1, clients=20, duration_s=1.0)
    row = merge.merge_reports(s, [_report(st, 0, 10.0, clients_served=20)], window_start=1000.0).row
    assert row["lat_censored"] == 20 and row["err_timeout"] == 10 and row["requests"] == 980
    assert abs(row["lat_p50_us"] - 1000) <= 1 and not row["lat_p50_is_lower_bound"]
    assert not row["lat_p90_is_lower_bound"]
    assert row["lat_p99_is_lower_bound"] and abs(row["lat_p99_us"] - 500_000) <= 500
    assert row["lat_max_is_lower_bound"] and abs(row["lat_max_us"] - 2_000_000) <= 2000
    # A closed loop's requests in flight at the end that waited less than completed ones did
    # (0.5 ms against 1 ms) are balanced by those in flight at the start: not censored.
    # Requests never sent (open loop) are censored however short their wait, and with 5 of
    # 985 unknown, p99.9 (one request above its rank) and the maximum are lower bounds.
    st = _window_stats([1000] * 980)
    for _ in range(5):
        st.censor_in_flight(t_intended=11.0 - 0.0005)
    row = merge.merge_reports(s, [_report(st, 0, 10.0)], window_start=1000.0).row
    assert row["lat_censored"] == 0
    assert not any(row[specmod.lower_bound_column(c)] for c in merge.LATENCY_PERCENTILES)
    for _ in range(5):
        st.censor_unstarted(t_intended=11.0 - 0.0005)
    row = merge.merge_reports(s, [_report(st, 0, 10.0)], window_start=1000.0).row
    assert row["lat_censored"] == 5 and abs(row["lat_p99_us"] - 1000) <= 1
    assert [c for c in merge.LATENCY_PERCENTILES if row[specmod.lower_bound_column(c)]] == ["lat_p999_us", "lat_max_us"]
    assert row["clients_served"] == 1


def test_run_queue_wait_counts_toward_a_generator_short_of_cpu() -> None:
    s = LoadSpec(service="echo", host="127.0.0.1", port=1, clients=2, duration_s=1.0)
    for wait, short in ((35.0, True), (25.0, True), (10.0, False), (None, False)):
        cpu = 60.0 if wait != 25.0 else 10.0
        reports = [_report(_window_stats([1000]), 0, cpu, runq_wait_pct=wait)]
        result = merge.merge_reports(s, reports, window_start=1000.0)
        row = result.row
        assert row["gen_busy_pct_max"] == cpu + (wait or 0.0)
        assert generator_short_of_cpu(row["gen_busy_pct_max"], row["gen_runq_wait_pct_max"]) is short
        assert row["gen_runq_wait_pct_max"] == wait and result.worker_runq_wait_pct == [wait]
        assert any(f"waited {wait or 0:.0f}% of the window for a CPU" in w for w in result.warnings) is short


def test_merge_of_two_workers_gives_exact_counts_and_percentiles() -> None:
    # Worker A completes 1000 requests of 1..1000 us, worker B 1000 of 1001..2000 us,
    # all inside a window [10, 11); merged p50 must be ~1000 us, max ~2000 us.
    reports = []
    for w, base in enumerate((0, 1000)):
        st = WorkerStats(run_start=10.0, window_start=10.0, window_end=11.0, interval=0.5, open_loop=False)
        for i in range(1, 1001):
            t_done = 10.0 + i * 0.0009  # spread over both timeline intervals
            st.complete(t_done - (base + i) / 1e6, t_done - (base + i) / 1e6, t_done, t_done, 100)
        st.request_error("reset", 10.5)
        st.request_error("reset", 11.5)  # after the window: not counted
        st.connect_ok(0.0002)
        st.connect_failed("other", "EHOSTUNREACH")
        reports.append(_report(st, w, cpu_pct=50.0 if w == 0 else 95.0))
    s = LoadSpec(service="echo", host="127.0.0.1", port=1, clients=2, duration_s=1.0)
    result = merge.merge_reports(s, reports, window_start=1000.0)
    row = result.row
    assert tuple(row) == specmod.ROW_COLUMNS
    assert row["requests"] == 2000 and result.histograms["latency"].get_total_count() == 2000
    assert abs(row["lat_p50_us"] - 1000) <= 1 and abs(row["lat_max_us"] - 2000) <= 2
    assert abs(row["lat_p99_us"] - 1980) <= 2
    assert row["mb_per_s"] == pytest.approx(2000 * 100 / 1e6)
    assert row["err_reset"] == 2 and row["errors"] == 2
    assert row["conn_ok"] == 2 and row["conn_other"] == 2 and result.conn_other_errnos == {"EHOSTUNREACH": 2}
    assert row["gen_busy_pct_max"] == 95.0 and row["gen_cpu_pct_max"] == 95.0  # the busiest worker, B
    assert any("generator short of CPU: load worker 1" in w for w in result.warnings)
    assert sum(t["req_per_s"] * 0.5 for t in result.timeline) == pytest.approx(2000)
    assert result.window_end - result.window_start == pytest.approx(1.0)
    again = specmod.LoadResult.from_json(result.to_json())
    assert again.row == row and again.histograms["latency"].get_value_at_percentile(99) == row["lat_p99_us"]


# ----------------------------------------------------------------- exact counts and reply checks


@pytest.mark.parametrize("loop", LOOPS)
def test_echo_request_count_exact(server: Callable[..., ThreadServer], loop: str) -> None:
    srv = server(echo_handler, budget=400, message_bytes=1024)
    result = run_load(spec(srv.port, clients=4, workers=2, loop=loop))
    row = result.row
    assert srv.served == 400
    assert row["requests"] == 400, result.warnings
    assert row["errors"] == 0 and row["conn_ok"] == 4 == srv.accepted
    assert result.histograms["latency"].get_total_count() == 400
    assert row["mb_per_s"] * row["duration_s"] * 1e6 == pytest.approx(400 * 1024)
    assert sum(t["req_per_s"] * 0.5 for t in result.timeline if t["t_s"] >= 0) == pytest.approx(400)
    assert row["gen_workers"] == 2 and len(result.worker_cpu_pct) == 2 and result.loop == loop
    assert row["late_starts"] is None and row["lat_uncorrected_p99_us"] is None


def test_large_echo_messages_span_reads(server: Callable[..., ThreadServer]) -> None:
    srv = server(echo_handler, budget=30, message_bytes=200_000)
    result = run_load(spec(srv.port, message_bytes=200_000, workers=1))
    assert result.row["requests"] == 30 == srv.served and result.row["errors"] == 0


def test_warmup_is_not_counted(server: Callable[..., ThreadServer]) -> None:
    srv = server(stream_echo_handler)
    result = run_load(spec(srv.port, warmup_s=0.5, duration_s=0.5, workers=1, message_bytes=100))
    served_messages = srv.bytes_served // 100
    assert 0 < result.row["requests"] < served_messages
    warm = [t for t in result.timeline if t["t_s"] < 0]
    assert warm and sum(t["req_per_s"] for t in warm) > 0
    assert sum(t["req_per_s"] * 0.5 for t in result.timeline if t["t_s"] >= 0) == pytest.approx(result.row["requests"])


def test_reconnects_after_n_requests(server: Callable[..., ThreadServer]) -> None:
    srv = server(echo_handler, budget=100, message_bytes=1024)
    result = run_load(spec(srv.port, requests_per_connection=5, workers=1))
    assert result.row["requests"] == 100 and result.row["errors"] == 0
    assert srv.accepted >= 100 // 5
    assert result.row["conn_ok"] == srv.accepted


def test_corrupt_echo_is_detected(server: Callable[..., ThreadServer]) -> None:
    srv = server(corrupt_echo_handler, message_bytes=1024)
    row = run_load(spec(srv.port, duration_s=0.5, workers=1)).row
    assert row["requests"] == 0 and row["err_corrupt"] > 0


@pytest.fixture
def file_set(tmp_path: Path) -> dict[str, bytes]:
    contents = {"a.bin": os.urandom(10), "dir/b.bin": os.urandom(300_000), "empty": b""}
    for name, data in contents.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return contents


def _targets(files: dict[str, bytes]) -> list[FileTarget]:
    return [FileTarget(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in files.items()]


def test_file_service_count_exact_and_checksums(
    server: Callable[..., ThreadServer], file_set: dict[str, bytes]
) -> None:
    srv = server(file_handler, budget=60, files=file_set)
    result = run_load(spec(srv.port, service="file", files=_targets(file_set), clients=3, checksum_sample=1.0))
    row = result.row
    assert row["requests"] == 60 == srv.served and row["errors"] == 0
    assert row["mb_per_s"] * row["duration_s"] * 1e6 == pytest.approx(srv.bytes_served)


def test_corrupt_file_and_err_reply_are_detected(
    server: Callable[..., ThreadServer], file_set: dict[str, bytes]
) -> None:
    srv = server(corrupt_file_handler, files=file_set)
    targets = [t for t in _targets(file_set) if t.size == 300_000]
    row = run_load(spec(srv.port, service="file", files=targets, checksum_sample=1.0, duration_s=0.5, workers=1)).row
    assert row["requests"] == 0 and row["err_corrupt"] > 0
    missing = [FileTarget("nope.bin", 5, "")]
    result = run_load(spec(srv.port, service="file", files=missing, duration_s=0.5, workers=1))
    assert result.row["requests"] == 0 and result.row["err_corrupt"] > 0
    assert any("ERR 404" in w for w in result.warnings)


# ----------------------------------------------------------------- connection outcomes


def test_closed_port_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
        row = run_load(spec(s.getsockname()[1], duration_s=0.5, workers=1)).row
    assert row["conn_refused"] > 0 and row["conn_ok"] == 0 and row["requests"] == 0
    assert row["connect_p50_us"] is None


def test_full_accept_queue_times_out() -> None:
    # Linux drops SYNs once the accept queue (backlog + 1) is full instead of
    # refusing: the surplus clients' connects stall and hit the connect timeout.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        row = run_load(
            spec(
                s.getsockname()[1], clients=20, workers=1, duration_s=1.0, connect_timeout_s=0.3, request_timeout_s=0.5
            )
        ).row
    assert row["conn_timeout"] > 0 and row["conn_refused"] == 0 and row["requests"] == 0


def test_resetting_server_counts_resets(server: Callable[..., ThreadServer]) -> None:
    srv = server(reset_handler)
    row = run_load(spec(srv.port, duration_s=0.5, workers=1)).row
    assert row["conn_ok"] > 0 and row["err_reset"] > 0 and row["requests"] == 0


def test_unanswered_requests_are_counted_with_their_age(server: Callable[..., ThreadServer]) -> None:
    """A server that accepts and never answers: every client ends the window waiting, for about the whole run."""
    srv = server(lambda conn, _srv: hold(conn))
    row = run_load(spec(srv.port, clients=3, duration_s=1.0, warmup_s=0.3, workers=1)).row
    assert row["requests"] == 0 and row["err_timeout"] == 0  # the 30 s request timeout never fired
    assert row["req_pending"] == 3
    assert 1.0 <= row["req_pending_oldest_s"] < 10.0


def first_connection_only_handler(conn: socket.socket, srv: ThreadServer) -> None:
    """Answer (slowly) on the first connection accepted; never answer on the others."""
    with srv.lock:
        first = srv.accepted == 1
    if not first:
        return hold(conn)
    echo_handler(conn, srv)


@pytest.mark.slow
def test_percentiles_of_a_server_ignoring_clients_are_lower_bounds(server: Callable[..., ThreadServer]) -> None:
    # One client gets ~50 replies/s (20 ms each), three wait the whole second: 3 of ~50 requests
    # (~6%) censored near the run's length (the served client's request in flight at the end
    # is not: it waited less than completed ones), so p99 and the maximum are lower bounds
    # and only one client of four was served.
    srv = server(first_connection_only_handler, message_bytes=1024, delay_s=0.02)
    result = run_load(spec(srv.port, clients=4, duration_s=1.0, warmup_s=0.2, workers=1))
    row = result.row
    assert row["requests"] > 10 and row["lat_censored"] == 3 and row["clients_served"] == 1
    assert row["lat_p99_is_lower_bound"] and row["lat_max_is_lower_bound"] and not row["lat_p50_is_lower_bound"]
    assert row["lat_p99_us"] >= 1_000_000 > row["lat_p50_us"]
    assert any("served 1/4" in w for w in result.warnings)
    srv = server(first_connection_only_handler, message_bytes=1024, delay_s=0.02)
    table = _cli("echo", f"127.0.0.1:{srv.port}", "--clients", "4", "--duration", "1", "--workers", "1")
    assert table.returncode == 0, table.stderr
    assert "1 / 4" in table.stdout and re.search(r"p50 / p90 / p99 .* / >= [0-9,]+ us", table.stdout), table.stdout


def test_answered_requests_leave_nothing_old_pending(server: Callable[..., ThreadServer]) -> None:
    srv = server(echo_handler, message_bytes=1024)
    row = run_load(spec(srv.port, clients=2, duration_s=0.5, workers=1)).row
    assert row["requests"] > 0
    assert row["req_pending"] <= 2 and row["req_pending_oldest_s"] < 0.5


# ----------------------------------------------------------------- open loop


def test_open_loop_counts_late_starts_against_slow_server(server: Callable[..., ThreadServer]) -> None:
    # 2 connections, 20 ms per reply: at most ~100 replies/s against 400 scheduled.
    srv = server(echo_handler, message_bytes=1024, delay_s=0.02)
    result = run_load(spec(srv.port, mode="open", rate=400.0, clients=2, workers=1, duration_s=1.0))
    row = result.row
    assert row["late_starts"] > 0
    assert row["lat_p99_us"] > row["lat_uncorrected_p99_us"]
    assert "latency_uncorrected" in result.histograms
    assert any("never got a free connection" in w for w in result.warnings)
    # Most scheduled requests never started: their wait is censored and p99 is only a lower bound.
    assert row["lat_censored"] > row["requests"] and row["lat_p99_is_lower_bound"]
    assert any("p99" in w and "lower bound" in w for w in result.warnings)


def test_open_loop_offers_the_scheduled_rate(server: Callable[..., ThreadServer]) -> None:
    srv = server(stream_echo_handler)
    row = run_load(spec(srv.port, mode="open", rate=500.0, clients=4, workers=2, duration_s=1.0)).row
    assert 475 <= row["requests"] <= 501 and row["errors"] == 0


def test_open_loop_warns_of_coarse_timers_only_without_timerfd(server: Callable[..., ThreadServer]) -> None:
    from bench.loadgen.schedule import PreciseTimer

    loop = asyncio.new_event_loop()
    try:
        timer = PreciseTimer(loop, lambda: None)
        have_timerfd = timer.precise
        timer.close()
    finally:
        loop.close()
    srv = server(stream_echo_handler)
    warnings = run_load(spec(srv.port, mode="open", rate=200.0, clients=2, workers=1, duration_s=0.3)).warnings
    assert any("no timerfd" in w for w in warnings) == (not have_timerfd), warnings


def test_precise_timer_repeats_at_its_period_until_disarmed() -> None:
    from bench.loadgen.schedule import PreciseTimer

    loop = asyncio.new_event_loop()
    fired: list[float] = []
    timer = PreciseTimer(loop, lambda: fired.append(time.monotonic()))
    try:
        assert timer.precise  # Linux has timerfd: the open loop's periodic timer needs it
        start = time.monotonic()
        timer.arm(start + 0.01, 0.01)  # armed once, fires every 10 ms
        loop.run_until_complete(asyncio.sleep(0.105))
        n = len(fired)
        timer.disarm()
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        timer.close()
        loop.close()
    # 10 expiries; a busy machine may fold a few into one read, never add any
    assert 5 <= n <= 10 and fired[0] >= start + 0.01, fired
    assert len(fired) == n  # disarmed: no more


#: A competitor for one CPU: spins until killed, at most 30 s (bounded even if a test dies).
SPIN_PROGRAM = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
print("spinning", flush=True)
end = time.monotonic() + 30
while time.monotonic() < end:
    pass
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a CPU for the server and one for the worker")
def test_worker_waiting_for_its_cpu_is_short_of_cpu() -> None:
    """A worker sharing its CPU with spinning processes waits for it; the parent sees that in schedstat.

    The server (selectors model) has a CPU of its own and outpaces a worker
    that gets a quarter of one, so the worker is always runnable: it runs or
    waits, never idles, and only its wait shows that.
    """
    from servers.launch import run_server

    server_cpu, cpu = sorted(os.sched_getaffinity(0))[:2]
    competitors = []
    try:
        with run_server("selectors", "echo", cpus={server_cpu}) as srv:
            for _ in range(3):  # why 3: the worker gets ~25% of the CPU, far below the server's pace
                p = subprocess.Popen([sys.executable, "-c", SPIN_PROGRAM, str(cpu)], stdout=subprocess.PIPE, text=True)
                competitors.append(p)
                assert p.stdout is not None and p.stdout.readline().strip() == "spinning"
            result = run_load(spec(srv.port, host=srv.host, clients=8, duration_s=1.0, cpus={cpu}))
    finally:
        for p in competitors:
            p.kill()
            p.wait()
            p.stdout.close()  # type: ignore[union-attr]
    row = result.row
    assert row["gen_runq_wait_pct_max"] > RUNQ_WAIT_BOUND_PCT, row
    assert row["gen_cpu_pct_max"] < 60.0, row  # CPU alone would not have flagged it
    assert generator_short_of_cpu(row["gen_busy_pct_max"], row["gen_runq_wait_pct_max"]), row
    assert any("for a CPU" in w for w in result.warnings)


# ----------------------------------------------------------------- safety


def test_non_loopback_is_refused() -> None:
    with pytest.raises(ValueError, match="--allow-remote"):
        run_load(spec(9, host="192.0.2.1"))
    for host in ("localhost", "127.0.0.2", "::1"):
        assert specmod.resolve_target(host, 9, allow_remote=False)
    assert specmod.resolve_target("192.0.2.1", 9, allow_remote=True) == "192.0.2.1"


def test_bad_spec_is_rejected_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="clients"):
        run_load(spec(9, clients=0))
    with pytest.raises(ValueError, match="rate"):
        run_load(spec(9, mode="open"))
    with pytest.raises(ValueError, match="file target"):
        run_load(spec(9, service="file"))


def test_workers_reaped_after_keyboard_interrupt(server: Callable[..., ThreadServer]) -> None:
    srv = server(stream_echo_handler)
    seen: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        seen.append(len(psutil.Process().children()))
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_load(spec(srv.port, duration_s=20.0, workers=2))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert seen == [2]  # both workers were running when interrupted
    assert psutil.Process().children(recursive=True) == []


def test_workers_reaped_after_exception(server: Callable[..., ThreadServer], monkeypatch: pytest.MonkeyPatch) -> None:
    srv = server(stream_echo_handler)
    original = driver.WorkerPool.go
    pids: list[int] = []

    def go_then_fail(self: driver.WorkerPool, start_wall: float) -> None:
        original(self, start_wall)
        pids.extend(p.pid for p in self.procs)
        raise RuntimeError("boom")

    monkeypatch.setattr(driver.WorkerPool, "go", go_then_fail)
    with pytest.raises(RuntimeError, match="boom"):
        run_load(spec(srv.port, duration_s=20.0, workers=2))
    assert len(pids) == 2 and not any(psutil.pid_exists(p) for p in pids)


def test_worker_failure_is_reported() -> None:
    # A worker that fails mid-run is a LoadGenError naming the worker and the cause, not a hang.
    job = driver.plan_jobs(spec(9, workers=1, loop="asyncio"), "127.0.0.1")
    job[0]["spec"]["timeline_interval_s"] = "not a number"
    with driver.WorkerPool(job) as pool, pytest.raises(LoadGenError, match="load worker 0"):
        pool.start()
        pool.wait_ready(30.0)
        pool.go(time.time())
        pool.collect(time.monotonic() + 30.0)
    assert all(p.poll() is not None for p in pool.procs)


# ----------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.loadgen.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_json_and_table(server: Callable[..., ThreadServer]) -> None:
    srv = server(stream_echo_handler)
    out = _cli("echo", f"127.0.0.1:{srv.port}", "--clients", "2", "--duration", "0.5", "--workers", "1", "--json")
    assert out.returncode == 0, out.stderr
    result = specmod.LoadResult.from_json(out.stdout)
    assert result.row["requests"] > 0 and result.row["errors"] == 0
    table = _cli("echo", f"localhost:{srv.port}", "--clients", "1", "--duration", "300ms", "--rate", "100")
    assert table.returncode == 0, table.stderr
    assert "throughput" in table.stdout and "late starts" in table.stdout


def test_cli_files_root(server: Callable[..., ThreadServer], file_set: dict[str, bytes], tmp_path: Path) -> None:
    srv = server(file_handler, files=file_set)
    out = _cli(
        "file",
        f"127.0.0.1:{srv.port}",
        "--clients",
        "2",
        "--duration",
        "0.5",
        "--workers",
        "1",
        "--files-root",
        str(tmp_path),
        "--checksum-sample",
        "1",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)["row"]
    assert row["requests"] > 0 and row["errors"] == 0
    targets = cli.file_targets([], [], tmp_path)
    assert {t.name: t.sha256 for t in targets} == {n: hashlib.sha256(d).hexdigest() for n, d in file_set.items()}


@pytest.mark.parametrize(
    "args, message",
    [
        (["echo", "192.0.2.1:7", "--clients", "1", "--duration", "1"], "--allow-remote"),
        (["echo", "127.0.0.1:7", "--clients", "0", "--duration", "1"], "--clients"),
        (["echo", "127.0.0.1", "--clients", "1", "--duration", "1"], "HOST:PORT"),
        (["echo", "127.0.0.1:7", "--clients", "1", "--duration", "ten"], "not a duration"),
        (["file", "127.0.0.1:7", "--clients", "1", "--duration", "1", "--file", "a"], "--file-size"),
    ],
)
def test_cli_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    out = _cli(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


# ----------------------------------------------------------------- error classification and limits


def test_connect_errors_are_classified() -> None:
    import errno as e

    from bench.loadgen.clients import classify_connect_error

    assert classify_connect_error(ConnectionRefusedError(e.ECONNREFUSED, "x")) == ("refused", None)
    assert classify_connect_error(ConnectionResetError(e.ECONNRESET, "x")) == ("reset", None)
    assert classify_connect_error(TimeoutError()) == ("timeout", None)
    assert classify_connect_error(OSError(e.EMFILE, "x")) == ("emfile", None)
    assert classify_connect_error(OSError(e.EADDRNOTAVAIL, "x")) == ("eaddrnotavail", None)
    assert classify_connect_error(OSError(e.ENETUNREACH, "x")) == ("other", "ENETUNREACH")
    assert classify_connect_error(RuntimeError("odd")) == ("other", "RuntimeError")


def test_fd_exhaustion_counts_emfile(server: Callable[..., ThreadServer]) -> None:
    # A generator whose hard open-files limit is below its client count: the
    # worker raises its soft limit to the hard one, warns, and the surplus
    # connects fail with EMFILE, counted as such.
    srv = server(stream_echo_handler)
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64));"
        "from bench.loadgen import LoadSpec, run_load;"
        f"r = run_load(LoadSpec('echo', '127.0.0.1', {srv.port}, clients=120, duration_s=0.5, workers=1, engine='python'));"
        "print(r.to_json())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = specmod.LoadResult.from_json(out.stdout)
    assert result.row["conn_emfile"] > 0 and result.row["conn_ok"] > 0 and result.row["requests"] > 0
    assert any("hard limit is 64" in w for w in result.warnings)


def test_soft_open_files_limit_is_raised() -> None:
    code = (
        "import resource; soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE);"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard));"
        "from bench.loadgen.worker import raise_nofile; w = [];"
        "raise_nofile(min(hard, 5000), w); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard, len(w))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    soft, hard, warnings = (int(x) for x in out.stdout.split())
    assert soft == min(hard, 5000) and warnings == 0


def test_worker_report_survives_a_non_blocking_pipe() -> None:
    # A report bigger than the pipe, written to a pipe left non-blocking,
    # must arrive whole (the buffered text layer silently truncated it).
    from bench.loadgen.worker import write_all

    r, w = os.pipe()
    os.set_blocking(w, False)
    data = os.urandom(300_000)
    writer = threading.Thread(target=write_all, args=(w, data))
    writer.start()
    got = bytearray()
    try:
        time.sleep(0.05)  # let the writer fill the pipe first
        while len(got) < len(data):
            got += os.read(r, 65536)
        writer.join(5)
    finally:
        os.close(r)
        os.close(w)
    assert bytes(got) == data
