"""The wrk load engine: ``bench load http --engine wrk`` against real servers, its parser, its refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.loadgen import FileTarget, LoadSpec, run_load, wrk_engine
from servers.config import ServerOptions
from servers.launch import run_server

from thread_servers import ThreadServer, http_handler

pytestmark = pytest.mark.skipif(
    wrk_engine.program() is None, reason="needs Debian's wrk (apt-get install wrk) for the wrk load engine"
)

ROOT = Path(__file__).resolve().parents[1]
#: 1 KiB: a second of load is thousands of requests.
BODY = os.urandom(1024)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "f1k").write_bytes(BODY)
    yield tmp_path


def bench_load(port: int, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bench", "load", "http", f"127.0.0.1:{port}", "--engine", "wrk"]
    argv += ["--clients", "4", "--duration", "1", "--path", path, "--file-size", "1024", "--json", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


def test_wrk_against_threading_server_measures_requests_and_latency(root: Path) -> None:
    with run_server("threading", "http", ServerOptions(root=root)) as srv:
        done = bench_load(srv.port, "f1k")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)["row"]
    assert row["gen_engine"] == wrk_engine.ENGINE_LABEL and "connect waits not counted" in row["gen_engine"]
    assert row["requests"] > 0 and row["req_per_s"] > 0, row
    assert row["lat_p50_us"] <= row["lat_p90_us"] <= row["lat_p99_us"], row
    assert row["errors"] == 0 and row["err_timeout"] == 0 and row["conn_other"] == 0, row
    assert row["lat_p999_us"] is None and row["http_2xx"] is None  # wrk does not print them: left empty
    assert row["lat_p50_us"] <= row["lat_max_us"] and row["lat_mean_us"] > 0, row


def test_path_that_404s_counts_every_reply_as_an_error(root: Path) -> None:
    with run_server("threading", "http", ServerOptions(root=root)) as srv:
        done = bench_load(srv.port, "missing")
    assert done.returncode == 1, done.stderr  # nothing completed: bench load says nothing was measured
    assert "no request completed" in done.stderr
    row = json.loads(done.stdout)["row"]
    assert row["requests"] == 0 and row["errors"] > 0, row  # every 404 is a non-2xx reply: an error


def test_parser_reads_a_real_wrk_run(root: Path) -> None:
    spec = LoadSpec(
        service="http", host="127.0.0.1", port=1, clients=3, duration_s=1, files=[FileTarget("missing", 0, "")]
    )
    with run_server("threading", "http", ServerOptions(root=root)) as srv:
        spec.port = srv.port
        ok = subprocess.run(
            wrk_engine.command(spec, "127.0.0.1", 1)[:-1] + [f"http://127.0.0.1:{srv.port}/f1k"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        missing = subprocess.run(wrk_engine.command(spec, "127.0.0.1", 1), capture_output=True, text=True, timeout=30)
    good, bad = wrk_engine.parse(ok.stdout), wrk_engine.parse(missing.stdout)
    assert good["requests"] == good["wrk_total"] > 0 and good["errors"] == 0, ok.stdout
    assert good["req_per_s"] == pytest.approx(good["wrk_total"] / good["duration_s"])
    assert 0.9 < good["duration_s"] < 1.5, ok.stdout
    assert 0 < good["lat_p50_us"] <= good["lat_p90_us"] <= good["lat_p99_us"], ok.stdout
    assert "lat_p999_us" not in good  # wrk prints 50/75/90/99 only
    # Avg and Max of its Thread Stats' Latency line: the same histogram as the percentiles
    assert 0 < good["lat_mean_us"] <= good["lat_max_us"] and good["lat_p99_us"] <= good["lat_max_us"], ok.stdout
    assert bad["requests"] == 0 and bad["errors"] == bad["wrk_status_errors"] == bad["wrk_total"] > 0, missing.stdout
    with pytest.raises(wrk_engine.LoadGenError, match="cannot read wrk's output"):
        wrk_engine.parse("Running 1s test @ http://127.0.0.1:1/\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "open", "rate": 100.0}, "closed loop only"),
        ({"method": "HEAD"}, "engine 'wrk' does not implement method HEAD; use engine python"),
        ({"pipeline": 4}, "engine 'wrk' does not implement pipeline 4; use engine python"),
        ({"duration_s": 0.5}, "whole seconds: duration 0.5"),
        ({"service": "file", "files": [FileTarget("a", 1, "")]}, "http service only"),
    ],
)
def test_refuses_what_wrk_cannot_do(change: dict[str, object], message: str) -> None:
    base: dict[str, object] = dict(
        service="http", host="127.0.0.1", port=9, clients=2, duration_s=1.0, files=[FileTarget("a", 1, "")]
    )
    base.update(change)
    with pytest.raises(ValueError, match=message):
        wrk_engine.run_wrk(LoadSpec(**base))  # type: ignore[arg-type]


#: A name with characters a URL keeps and a Lua string must hold as they are (a quote, parentheses).
ODD_NAME = "it's(1)2.bin"


@pytest.mark.parametrize("order", ["round-robin", "random"])
def test_a_list_of_paths_is_requested_through_a_lua_script_then_removed(
    order: str, server: Callable[..., ThreadServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = server(http_handler, files={"a": BODY, "b": BODY[:100], ODD_NAME: BODY[:10]})
    files = [FileTarget("a", len(BODY), ""), FileTarget("b", 100, ""), FileTarget(ODD_NAME, 10, "")]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the script is written, watched below
    # one connection: the order the server sees is the order wrk's one thread went through the list
    spec = LoadSpec("http", "127.0.0.1", srv.port, clients=1, duration_s=1, files=files, path_order=order, engine="wrk")
    row = run_load(spec).row
    assert row["gen_engine"].startswith("wrk") and row["requests"] > 30 and row["errors"] == 0, row
    targets = ["/a", "/b", "/it's(1)2.bin"]
    counts = {path: srv.paths.count(path) for path in targets}
    assert sum(counts.values()) == len(srv.paths), set(srv.paths)  # nothing but the list
    # in turn from some path (wrk asks the script for one request more before it starts, to check it)
    in_turn = any(srv.paths[:30] == (targets[i:] + targets[:i]) * 10 for i in range(3))
    if order == "round-robin":
        assert in_turn and max(counts.values()) - min(counts.values()) <= 1, (srv.paths[:30], counts)
    else:
        assert not in_turn and min(counts.values()) / max(counts.values()) > 0.5, (srv.paths[:30], counts)
    assert list(scratch.iterdir()) == []  # the Lua script is gone


def test_the_lua_script_is_removed_when_wrk_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    files = [FileTarget("a", 1, ""), FileTarget("b", 1, "")]
    spec = LoadSpec("http", "127.0.0.1", 9, clients=1, duration_s=1, files=files, engine="wrk")
    monkeypatch.setattr(wrk_engine, "EXIT_GRACE_S", -100.0)  # a deadline already past: wrk is killed
    with pytest.raises(wrk_engine.LoadGenError, match="did not finish within its deadline"):
        run_load(spec)
    assert list(scratch.iterdir()) == []


#: wrk's output as printed (two runs of 100 connections against the threading http server: one
#: consistent, one whose mean latency exceeds what 100 connections can produce at its rate).
WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:50133/f1k
  1 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   {mean}  306.28ms   1.99s    89.51%
    Req/Sec     2.23k   543.66     3.15k    70.00%
  Latency Distribution
     50%   24.76ms
     75%   78.50ms
     90%  478.84ms
     99%    1.54s
  4428 requests in 2.01s, 4.90MB read
Requests/sec:   2198.23
Transfer/sec:      2.43MB
"""


def test_a_mean_beyond_littles_law_is_warned_about() -> None:
    bad = wrk_engine.parse(WRK_OUTPUT.format(mean="139.45ms"))
    assert bad["lat_mean_us"] == 139450.0 and bad["lat_max_us"] == 1990000.0
    warning = wrk_engine.little_excess(100, bad)
    assert warning is not None and "3.1x what 100 connections at 2,198 req/s allow" in warning, warning
    assert wrk_engine.little_excess(100, wrk_engine.parse(WRK_OUTPUT.format(mean="44.10ms"))) is None
