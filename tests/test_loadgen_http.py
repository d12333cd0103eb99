"""The load generator's http service: real servers, a corrupting in-test server, status classes, keep-alive."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.loadgen import FileTarget, LoadSpec, engines, run_load
from servers import registry
from servers.config import ServerOptions
from servers.launch import run_server

from thread_servers import (
    ThreadServer,
    batch3_http_handler,
    closing_http_handler,
    corrupt_http_handler,
    head_body_http_handler,
    http_handler,
    pipelining_http_handler,
    swapping_http_handler,
)

pytestmark = pytest.mark.usefixtures("no_leftover_workers")

#: 1 KiB: the scenario's file; small enough that a second of load is thousands of requests.
BODY = os.urandom(1024)
SHA = hashlib.sha256(BODY).hexdigest()


def http_spec(port: int, files: list[FileTarget], **kw: object) -> LoadSpec:
    base: dict[str, object] = dict(
        service="http",
        host="127.0.0.1",
        port=port,
        clients=3,
        duration_s=0.8,
        files=files,
        connect_timeout_s=2.0,
        request_timeout_s=10.0,
        engine="python",
        loop="asyncio",
        workers=1,
    )
    base.update(kw)
    return LoadSpec(**base)  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "f1k").write_bytes(BODY)
    yield tmp_path


@pytest.mark.parametrize("model", ["threading", "selectors"])
def test_good_run_counts_every_request_as_2xx_and_verifies_bytes(model: str, root: Path) -> None:
    with run_server(model, "http", ServerOptions(root=root)) as srv:
        result = run_load(http_spec(srv.port, [FileTarget("f1k", len(BODY), SHA)], checksum_sample=1.0, host=srv.host))
    row = result.row
    assert row["requests"] > 50, row
    assert row["http_2xx"] == row["requests"]
    assert row["errors"] == 0 and row["err_corrupt"] == 0, row
    assert (row["http_3xx"], row["http_4xx"], row["http_5xx"]) == (0, 0, 0)
    assert row["conn_ok"] == 3, row  # keep-alive: one connection per client for the whole run
    assert row["mb_per_s"] == pytest.approx(row["requests"] * len(BODY) / row["duration_s"] / 1e6)
    assert row["gen_engine"] == "python"


def test_missing_and_outside_paths_are_http_4xx_not_crashes(root: Path) -> None:
    outside = FileTarget("../" + root.name + "-elsewhere", 10, "")
    with run_server("selectors", "http", ServerOptions(root=root)) as srv:
        result = run_load(http_spec(srv.port, [FileTarget("missing", 10, ""), outside], host=srv.host))
    row = result.row
    assert row["requests"] == 0 and row["http_2xx"] == 0
    assert row["http_4xx"] > 10 and row["errors"] == row["http_4xx"], row
    assert row["err_corrupt"] == 0 and row["err_reset"] == 0, row


def test_keep_alive_reuses_one_connection_per_client(server: Callable[..., ThreadServer]) -> None:
    srv = server(http_handler, files={"a": BODY, "b": BODY[:100]})
    files = [FileTarget("a", len(BODY), SHA), FileTarget("b", 100, hashlib.sha256(BODY[:100]).hexdigest())]
    row = run_load(http_spec(srv.port, files, clients=2)).row
    assert row["requests"] > 50 and row["errors"] == 0, row
    assert srv.accepted == 2  # counted by the server: no reconnect in the whole run
    assert {"/a", "/b"} <= set(srv.paths)
    # round-robin from each client's own start: the two paths alternate on every connection
    assert abs(srv.paths.count("/a") - srv.paths.count("/b")) <= 2


def test_connection_close_from_the_server_is_followed_not_an_error(server: Callable[..., ThreadServer]) -> None:
    srv = server(closing_http_handler, files={"a": BODY})
    row = run_load(http_spec(srv.port, [FileTarget("a", len(BODY), SHA)], clients=2)).row
    assert row["requests"] > 20 and row["errors"] == 0, row
    # one connection per reply: each ended by the server after the reply it announced as the last
    assert srv.accepted >= row["requests"] and abs(row["conn_ok"] - srv.accepted) <= 2  # 2: connects cut by the end


def test_random_path_order_is_seeded_and_uses_every_path(server: Callable[..., ThreadServer]) -> None:
    srv = server(http_handler, files={"a": BODY, "b": BODY})
    files = [FileTarget("a", len(BODY), SHA), FileTarget("b", len(BODY), SHA)]
    row = run_load(http_spec(srv.port, files, clients=1, path_order="random")).row
    assert row["requests"] > 50 and row["errors"] == 0, row
    first = srv.paths[:40]
    assert {"/a", "/b"} == set(first)
    assert first != ["/a", "/b"] * 20 and first != ["/b", "/a"] * 20  # not round-robin


def test_corrupt_body_is_caught_on_the_sampled_fraction(server: Callable[..., ThreadServer]) -> None:
    srv = server(corrupt_http_handler, files={"a": BODY})
    row = run_load(http_spec(srv.port, [FileTarget("a", len(BODY), SHA)], checksum_sample=0.25)).row
    total = row["requests"] + row["err_corrupt"]
    assert total > 100, row
    # every 4th reply is hashed; the others have the right length, so they pass unhashed
    assert 0.15 < row["err_corrupt"] / total < 0.35, row
    assert row["http_2xx"] == row["requests"]


# ----------------------------------------------------------------- HEAD and pipelining

#: Models the HEAD and pipelining runs drive: http.server's parser, and h11 on each kind of loop.
HTTP_LOAD_MODELS = ["threading", "selectors"] + (["gevent"] if registry.unavailable("gevent") is None else [])


@pytest.mark.parametrize("model", ["threading", "selectors"])
def test_head_checks_the_length_and_carries_no_body(model: str, root: Path) -> None:
    with run_server(model, "http", ServerOptions(root=root)) as srv:
        row = run_load(http_spec(srv.port, [FileTarget("f1k", len(BODY), SHA)], method="HEAD", host=srv.host)).row
    assert row["requests"] > 50 and row["errors"] == 0, row
    assert row["http_2xx"] == row["requests"]
    assert row["mb_per_s"] == 0.0, row  # the head only: no file bytes delivered


def test_head_with_a_body_after_it_is_corrupt(server: Callable[..., ThreadServer]) -> None:
    srv = server(head_body_http_handler, files={"a": BODY})
    row = run_load(http_spec(srv.port, [FileTarget("a", len(BODY), SHA)], method="HEAD")).row
    assert row["err_corrupt"] > 10, row
    # each HEAD reply counts; its stray body is read as the next reply, which fails: one of each per
    # connection, until the run ends (3 connections: one reply each may end unfollowed)
    assert row["requests"] <= row["err_corrupt"] + 3, row


def test_wrong_content_length_on_head_is_corrupt(server: Callable[..., ThreadServer]) -> None:
    srv = server(pipelining_http_handler, files={"a": BODY})
    row = run_load(http_spec(srv.port, [FileTarget("a", len(BODY) + 1, "")], method="HEAD")).row
    assert row["requests"] == 0 and row["err_corrupt"] > 10, row


def test_pipelining_sends_every_request_of_a_batch_before_reading(server: Callable[..., ThreadServer]) -> None:
    """The server answers only once three whole requests are in: one at a time, nothing would complete."""
    srv = server(batch3_http_handler, files={"a": BODY})
    files = [FileTarget("a", len(BODY), SHA)]
    row = run_load(http_spec(srv.port, files, clients=2, pipeline=3, checksum_sample=1.0)).row
    assert row["requests"] > 50 and row["errors"] == 0, row
    assert row["conn_ok"] == 2 and srv.accepted == 2, row
    unpipelined = run_load(http_spec(srv.port, files, clients=2, request_timeout_s=0.3)).row
    assert unpipelined["requests"] == 0 and unpipelined["err_timeout"] > 0, unpipelined


def test_pipelined_replies_out_of_order_are_corrupt(server: Callable[..., ThreadServer]) -> None:
    srv = server(swapping_http_handler, files={"a": BODY, "b": BODY[:100]})
    files = [FileTarget("a", len(BODY), SHA), FileTarget("b", 100, hashlib.sha256(BODY[:100]).hexdigest())]
    row = run_load(http_spec(srv.port, files, clients=2, pipeline=2)).row
    assert row["requests"] == 0 and row["err_corrupt"] > 10, row  # each first reply is the other file's


def test_a_close_in_the_middle_of_a_batch_counts_the_rest_closed_early(server: Callable[..., ThreadServer]) -> None:
    srv = server(closing_http_handler, files={"a": BODY})
    row = run_load(http_spec(srv.port, [FileTarget("a", len(BODY), SHA)], clients=2, pipeline=3)).row
    assert row["requests"] > 10, row
    # each connection carries one reply ("Connection: close") of the three it asked for
    assert row["err_closed_early"] == pytest.approx(2 * row["requests"], abs=6), row
    assert row["err_corrupt"] == 0 and row["err_reset"] == 0, row


@pytest.mark.parametrize("model", HTTP_LOAD_MODELS)
def test_pipelining_against_real_servers(model: str, root: Path) -> None:
    (root / "f100").write_bytes(BODY[:100])
    files = [FileTarget("f1k", len(BODY), SHA), FileTarget("f100", 100, hashlib.sha256(BODY[:100]).hexdigest())]
    with run_server(model, "http", ServerOptions(root=root)) as srv:
        row = run_load(http_spec(srv.port, files, pipeline=4, checksum_sample=1.0, host=srv.host)).row
    assert row["requests"] > 50 and row["errors"] == 0, row
    assert row["http_2xx"] == row["requests"] and row["conn_ok"] == 3, row


def test_pipelining_needs_the_closed_loop() -> None:
    with pytest.raises(ValueError, match="pipeline 4 needs the closed loop"):
        run_load(http_spec(9, [FileTarget("a", 1, "")], pipeline=4, mode="open", rate=100.0))


def test_engines_lacking_a_setting_are_named() -> None:
    assert engines.lacking("native", {"method": "HEAD", "pipeline": 1}) == ["method HEAD"]
    assert engines.lacking("wrk", {"method": "GET", "pipeline": 8}) == ["pipeline 8"]
    assert engines.lacking("python", {"method": "HEAD", "pipeline": 8}) == []
    assert engines.resolve("python", "http", values={"method": "HEAD", "pipeline": 8})[0] == "python"


@pytest.mark.needs_cc
def test_auto_falls_back_to_python_for_a_setting_the_native_engine_lacks() -> None:
    engine, _command, note = engines.resolve("auto", "http", values={"pipeline": 4})
    assert engine == "python" and note == "load engine: python, because the native engine does not implement pipeline 4"
    assert (
        engines.resolve("auto", "http", values={"method": "GET", "pipeline": 1})[0] == "native"
    )  # defaults: nothing lacking
    with pytest.raises(ValueError, match="engine 'native' does not implement method HEAD"):
        engines.resolve("native", "http", values={"method": "HEAD"})


@pytest.mark.needs_cc
def test_auto_resolves_http_to_the_native_engine() -> None:
    assert engines.resolve("auto", "http")[0] == "native"
    assert engines.resolve("native", "http")[0] == "native"
    assert engines.resolve("locust", "http")[0] == "locust"
    with pytest.raises(ValueError, match=r"the timeauth service \(its users speak echo, file, http\)"):
        engines.resolve("locust", "timeauth")


def test_http_spec_needs_a_path() -> None:
    with pytest.raises(ValueError, match="at least one path"):
        run_load(http_spec(9, []))


# ----------------------------------------------------------------- scenarios

REPO = Path(__file__).resolve().parent.parent


def test_http_scenario_is_valid_and_needs_a_file_size() -> None:
    from bench.scenario import ScenarioError, parse_scenario

    text = (REPO / "scenarios" / "http.yaml").read_text()
    scenario = parse_scenario(text, "scenarios/http.yaml")
    assert scenario.services == ["http"] and scenario.load.file_bytes == 1024
    with pytest.raises(ScenarioError, match="file_bytes: required for the file and http services"):
        parse_scenario(text.replace("  file_bytes: 1KiB\n", ""), "http.yaml")
    assert parse_scenario(text + "generator:\n  engine: native\n", "http.yaml").generator.engine == "native"


def test_scenario_refuses_head_and_pipelining_where_they_cannot_run() -> None:
    from bench.scenario import ScenarioError, parse_scenario

    text = (REPO / "scenarios" / "http.yaml").read_text()
    swept = parse_scenario(text.replace("  file_bytes: 1KiB\n", "  file_bytes: 1KiB\n  method: [GET, HEAD]\n"))
    assert "method" in swept.swept and {p.load.method for p in swept.points()} == {"GET", "HEAD"}
    with pytest.raises(ScenarioError, match="load.method: HEAD needs engine python; generator.engine wrk"):
        parse_scenario(
            text.replace("  file_bytes: 1KiB\n", "  file_bytes: 1KiB\n  method: HEAD\n") + "generator:\n  engine: wrk\n"
        )
    with pytest.raises(ScenarioError, match="load.pipeline: a depth above 1 needs mode closed"):
        parse_scenario(
            text.replace("  file_bytes: 1KiB\n", "  file_bytes: 1KiB\n  pipeline: [1, 4]\n  mode: open\n  rate: 100\n")
        )
    with pytest.raises(ScenarioError, match="load.method: must be one of 'GET' or 'HEAD', not 'pipelined'"):
        parse_scenario(text.replace("  file_bytes: 1KiB\n", "  file_bytes: 1KiB\n  method: pipelined\n"))


@pytest.mark.needs_cc
def test_runner_runs_an_http_scenario_on_the_native_engine(tmp_path: Path) -> None:
    import pandas as pd

    from bench.runner import run_scenario
    from bench.scenario import parse_scenario

    text = (REPO / "scenarios" / "http.yaml").read_text()
    scenario = parse_scenario(
        text,
        "http.yaml",
        overrides=[
            "models=[selectors]",
            "load.clients=2",
            "duration=500ms",
            "warmup=100ms",
            "placement=none",
            "monitor.idle_wait=1s",
            "monitor.idle_threshold_pct=100",
        ],
    )
    warnings: list[str] = []
    runs = pd.read_csv(run_scenario(scenario, results_root=tmp_path, plots=False, warn=warnings.append) / "runs.csv")
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    row = runs.iloc[0]
    assert row["requests"] > 0 and row["http_2xx"] == row["requests"] and row["errors"] == 0
    assert row["gen_engine"] == "native" and row["file_bytes"] == 1024
    assert not any("load engine: python" in w for w in warnings)
