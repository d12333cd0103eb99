"""Thresholds and exit statuses for pipelines: real tiny runs, a real server, real sockets."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from bench.results import METRIC_ALIASES, METRIC_COLUMNS, RUN_COLUMNS
from bench.scenario import ScenarioError, parse_scenario
from bench.thresholds import EXIT_CROSSED, ThresholdError, parse_threshold
from servers.config import ServerOptions
from servers.launch import run_server

from fake_results import write_fake_results

REPO = Path(__file__).resolve().parent.parent


def bench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=90
    )


def test_metric_names_come_from_the_runs_columns():
    assert set(METRIC_COLUMNS) <= set(RUN_COLUMNS)
    assert set(METRIC_ALIASES.values()) <= set(METRIC_COLUMNS)


@pytest.mark.parametrize(
    "text, metric, op, value",
    [
        ("p99 < 5ms", "lat_p99_us", "<", 5000.0),
        ("req_per_s>20000", "req_per_s", ">", 20000.0),
        ("errors == 0", "errors", "==", 0.0),
        ("mem_pss_peak_bytes <= 64MiB", "mem_pss_peak_bytes", "<=", 64 * 2**20),
        ("server_cpu_pct < 150%", "server_cpu_pct", "<", 150.0),
        ("req_pending_oldest_s < 0.5", "req_pending_oldest_s", "<", 0.5),
    ],
)
def test_thresholds_are_read_in_the_columns_units(text, metric, op, value):
    t = parse_threshold(text)
    assert (t.metric, t.op, t.value, t.model) == (metric, op, pytest.approx(value), None)


@pytest.mark.parametrize(
    "text, says",
    [
        ("p99 < 5", "p99 is a time: give a unit, e.g. 5us or 5ms"),
        ("req_per_sec > 1", "did you mean req_per_s?"),
        ("req_per_sec > 1", "valid metrics: p50, p90, p99"),
        ("errors = 0", "'=' is not an operator; use '=='"),
        ("p99 <> 3ms", "'<>' is not an operator"),
        ("p99", "is not METRIC OPERATOR VALUE"),
        ("req_per_s > lots", "takes a plain number"),
        ("p99 < 5parsecs", "unknown duration unit"),
        ("regression < 10%", "belong to bench compare"),
    ],
)
def test_bad_thresholds_say_what_is_wrong_and_what_is_allowed(text, says):
    with pytest.raises(ThresholdError) as err:
        parse_threshold(text)
    assert says in str(err.value) and text in str(err.value)


def test_regression_thresholds():
    assert parse_threshold("regression < 10%", regression=True).metric is None
    assert parse_threshold("p99 regression <= 5%", regression=True).metric == "lat_p99_us"
    for bad, says in (
        ("regression > 10%", "upper bound"),
        ("regression < 10", "percentage"),
        ("p99 < 5ms", "bench compare tests regressions"),
    ):
        with pytest.raises(ThresholdError, match=says):
            parse_threshold(bad, regression=True)


SCENARIO = textwrap.dedent("""\
    name: tiny
    service: echo
    models: [selectors]
    duration: 400ms
    warmup: 100ms
    repetitions: 1
    placement: none
    load:
      clients: 2
      message_bytes: 64
    monitor:
      idle_wait: 500ms
      idle_threshold_pct: 100
    """)


def test_scenario_thresholds_are_validated_with_their_line():
    text = SCENARIO + textwrap.dedent("""\
        thresholds:
          - p99 < 5ms
          - {model: threading, check: "errors == 0"}
          - {model: selectors, chek: "errors == 0"}
          - req_per_sec > 1
        """)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "t.yaml")
    message = str(err.value)
    assert "t.yaml:18: thresholds[3]: 'req_per_sec > 1': unknown metric" in message
    assert "t.yaml:17: thresholds[2].chek: unknown field 'chek' (did you mean check?)" in message
    # the model is checked against the scenario's models once the rest is valid
    text = SCENARIO + 'thresholds:\n  - {model: threading, check: "errors == 0"}\n  - "asyncio: p50 < 1ms"\n'
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "t.yaml")
    assert "t.yaml:15: thresholds[0].model: 'threading' is not one of this scenario's models (selectors)" in str(
        err.value
    )
    assert "t.yaml:16: thresholds[1]: 'asyncio' is not one of" in str(err.value)
    ok = parse_scenario(
        SCENARIO + 'thresholds:\n  - {model: selectors, check: "errors == 0"}\n', "t.yaml", thresholds=["p99 < 1s"]
    )
    assert [(t.model, t.metric) for t in ok.threshold_checks()] == [("selectors", "errors"), (None, "lat_p99_us")]
    assert parse_scenario(ok.to_yaml()).thresholds == ok.thresholds


@pytest.mark.slow
def test_bench_run_exits_0_when_thresholds_pass_and_99_when_one_is_crossed(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SCENARIO + "thresholds:\n  - errors == 0\n")
    passing = bench("run", "tiny.yaml", "--no-plots", "--threshold", "req_per_s > 1", cwd=tmp_path)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "Thresholds (tested: median over the repetitions of each model at each point)" in passing.stdout
    assert "PASS  errors == 0: measured 0 (selectors all)" in passing.stdout
    assert "PASS  req_per_s > 1: measured " in passing.stdout
    crossed = bench("run", "tiny.yaml", "--no-plots", "--threshold", "p99 < 1us", cwd=tmp_path)
    assert crossed.returncode == EXIT_CROSSED, crossed.stdout + crossed.stderr
    assert "FAIL  p99 < 1us: measured " in crossed.stdout and "exit status 99" in crossed.stdout
    folders = sorted((tmp_path / "results").iterdir())
    summary = json.loads((folders[-1] / "summary.json").read_text())
    [errors, p99] = summary["thresholds"]
    assert errors["passed"] and errors["value"] == 0
    assert not p99["passed"] and p99["value"] > 1 and p99["where"] == "selectors all"
    assert "p99 < 1us" in (folders[-1] / "scenario.yaml").read_text()  # the run records what it tested
    bad = bench("run", "tiny.yaml", "--threshold", "p99 < 5", cwd=tmp_path)
    assert bad.returncode == 2 and "--threshold 'p99 < 5': thresholds[1]: 'p99 < 5': p99 is a time" in bad.stderr
    assert "Traceback" not in bad.stderr and len(list((tmp_path / "results").iterdir())) == 2


def corrupting_server(stop: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """An echo server on loopback that flips the first byte of every reply."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.05)

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client resets or goes quiet when its run ends
            while not stop.is_set() and (data := conn.recv(65536)):
                conn.sendall(bytes([data[0] ^ 0xFF]) + data[1:])

    def accept() -> None:
        workers = []
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(1)
            workers.append(threading.Thread(target=serve, args=(conn,), daemon=True))
            workers[-1].start()
        for w in workers:
            w.join(5)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return sock, thread


@pytest.mark.slow
def test_bench_load_exit_statuses():
    load = ("load", "echo", "--clients", "2", "--duration", "0.4", "--workers", "1", "--message-bytes", "64")
    with run_server("selectors", "echo", ServerOptions()) as server:
        target = f"127.0.0.1:{server.port}"
        ok = bench(*load[:2], target, *load[2:], "--threshold", "errors == 0", "--threshold", "req_per_s > 1")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "PASS  errors == 0: measured 0" in ok.stdout
        crossed = bench(*load[:2], target, *load[2:], "--threshold", "req_per_s > 1000000000")
        assert crossed.returncode == EXIT_CROSSED and "FAIL  req_per_s > 1000000000" in crossed.stdout
        assert bench(*load[:2], target, *load[2:], "--threshold", "threading: p99 < 1ms").returncode == 2
    # the server is gone: every connect is refused and nothing is measured
    dead = bench(*load[:2], target, *load[2:], "--connect-timeout", "0.2")
    assert dead.returncode == 1 and "no request completed in the window" in dead.stderr
    stop = threading.Event()
    sock, thread = corrupting_server(stop)
    try:
        corrupt = bench(*load[:2], f"127.0.0.1:{sock.getsockname()[1]}", *load[2:])
    finally:
        stop.set()
        thread.join(5)
        sock.close()
    assert corrupt.returncode == 1 and "replies were corrupt" in corrupt.stderr, corrupt.stdout + corrupt.stderr


@pytest.mark.slow
def test_bench_compare_exits_99_on_a_regression_past_the_threshold(tmp_path, capsys):
    from bench.cli import main

    fake = dict(
        models=("selectors", "asyncio"),
        sweep=("clients", (1, 10)),
        hlogs=False,
        timeline=False,
        summary=False,
        failed=False,
        generator_bound=False,
        busy=False,
    )
    base = write_fake_results(tmp_path / "a", **fake)
    slower = write_fake_results(tmp_path / "b", throughput_scale={"asyncio": 0.2}, **fake)

    def compare(*extra: str, pair=(base, slower)) -> tuple[int, str, str]:
        status = main(["compare", *map(str, pair), "--format", "svg", "-o", str(tmp_path / f"c{len(extra)}"), *extra])
        out, err = capsys.readouterr()
        return status, out, err

    assert compare()[0] == 0  # no threshold: a comparison reports, it does not judge
    status, out, _ = compare("--threshold", "req_per_s regression < 10%")
    assert status == EXIT_CROSSED and "FAIL  req_per_s regression < 10%: worst 80.0% (asyncio" in out
    assert "2 of 4 fail" in out
    status, out, _ = compare("--threshold", "regression < 10%", "--threshold", "p50 regression < 1%", pair=(base, base))
    assert status == 0 and "PASS  regression < 10%: worst 0.0%" in out
    status, _, err = compare("--threshold", "ctx_switches regression < 1%")
    assert status == 2 and "bench compare compares req_per_s" in err


def test_a_lower_bound_cannot_pass_an_upper_threshold():
    from bench.thresholds import Measured, check

    bounded = [Measured("threading", "clients=20", 1000.0, lower_bound=True), Measured("asyncio", "clients=20", 900.0)]
    upper = check(parse_threshold("p99 < 5ms"), bounded, "median")
    assert not upper["passed"] and upper["failed"] == 1
    assert upper["value_text"] == ">= 1 ms (a lower bound)" and upper["where"] == "threading clients=20"
    assert check(parse_threshold("p99 > 500us"), bounded, "median")["passed"]
