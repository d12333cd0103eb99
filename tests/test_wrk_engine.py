"""The wrk load engine: ``bench load http --engine wrk`` against real servers, its parser, its refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loadgen import FileTarget, LoadSpec, wrk_engine
from servers.config import ServerOptions
from servers.launch import run_server

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
    assert row["gen_engine"] == "wrk"
    assert row["requests"] > 0 and row["req_per_s"] > 0, row
    assert row["lat_p50_us"] <= row["lat_p90_us"] <= row["lat_p99_us"], row
    assert row["errors"] == 0 and row["err_timeout"] == 0 and row["conn_other"] == 0, row
    assert row["lat_p999_us"] is None and row["http_2xx"] is None  # wrk does not print them: left empty


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
    assert bad["requests"] == 0 and bad["errors"] == bad["wrk_status_errors"] == bad["wrk_total"] > 0, missing.stdout
    with pytest.raises(wrk_engine.LoadGenError, match="cannot read wrk's output"):
        wrk_engine.parse("Running 1s test @ http://127.0.0.1:1/\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "open", "rate": 100.0}, "closed loop only"),
        ({"files": [FileTarget("a", 1, ""), FileTarget("b", 1, "")]}, "one path"),
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
