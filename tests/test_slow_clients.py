"""Slow clients (``load.mix``): against real servers, and the checks of a mix.

The server tests start a model with ``run_server`` and drive it with the
python engine: fast clients beside slow readers, slowloris senders or idle
connections. A bounded pool (threadpool at 2 threads) hands its threads to
the slow clients and starves the fast ones; an event loop (selectors) keeps
serving them; an idle timeout frees what idle connections hold, and ends a
slowloris whose bytes come further apart than it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.loadgen import LoadSpec, driver, engines, run_load
from bench.loadgen.spec import validate
from bench.parameters import SLOW_KINDS, mix_counts
from bench.runner import RunPlan, _load_spec
from bench.scenario import ScenarioError, load_scenario
from bench.vocabulary import MIX_COLUMNS, slow_column
from servers.config import ServerOptions
from servers.launch import run_server

pytestmark = pytest.mark.usefixtures("no_leftover_workers")

MINIMAL = """\
name: t
service: echo
models: [threading]
load:
  message_bytes: 1KiB
"""


def load(port: int, **kw: object) -> LoadSpec:
    base: dict[str, object] = dict(
        service="echo",
        host="127.0.0.1",
        port=port,
        clients=4,
        warmup_s=0.5,
        duration_s=1.5,
        connect_timeout_s=2.0,
        request_timeout_s=0.5,
        requests_per_connection=5,
        engine="python",
        workers=1,
    )
    base.update(kw)
    return LoadSpec(**base)  # type: ignore[arg-type]


def scenario_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return str(info.value)


# ----------------------------------------------------------------- against real servers


@pytest.mark.parametrize("model", ["threadpool", "selectors"])
def test_slow_readers_starve_the_fast_clients_of_a_pool_but_not_of_an_event_loop(model: str) -> None:
    options = ServerOptions(backlog=64, **({"threads": 2} if model == "threadpool" else {}))
    with run_server(model, "echo", options) as server:
        row = run_load(load(server.port, slow_reader=0.5)).row
    assert (row["fast_clients"], row["slow_reader_clients"]) == (2, 2)
    assert row[slow_column("slow_reader", "connected")] == 2
    # 16 MiB at 10 KiB/s takes 27 minutes: no slow reader finished, none was cut off
    assert row[slow_column("slow_reader", "completed")] == 0
    assert row[slow_column("slow_reader", "closed")] == 0
    if model == "threadpool":
        # both threads sit in sendall to a slow reader: the fast clients wait in the accept queue and time out
        assert row["clients_served"] == 0 and row["requests"] == 0
        assert row["err_timeout"] > 0
    else:
        assert row["clients_served"] == 2
        assert row["requests"] > 100 and row["errors"] == 0


@pytest.mark.parametrize("idle_timeout", [0.5, 0.0])
def test_an_idle_timeout_frees_the_threads_idle_clients_hold(idle_timeout: float) -> None:
    options = ServerOptions(backlog=64, threads=2, idle_timeout=idle_timeout)
    with run_server("threadpool", "echo", options) as server:
        row = run_load(load(server.port, idle=0.5, warmup_s=1.0)).row
    assert row["idle_clients"] == 2
    if idle_timeout:
        # closed by the server, and (as a keep-alive connection) not opened again: the fast clients get the threads
        assert row[slow_column("idle", "closed")] == 2
        assert row["clients_served"] == 2 and row["requests"] > 50
    else:
        assert row[slow_column("idle", "closed")] == 0
        assert row["clients_served"] == 0


@pytest.mark.parametrize("idle_timeout", [0.5, 0.0])
def test_a_slowloris_slower_than_the_idle_timeout_is_closed_by_the_server(idle_timeout: float) -> None:
    options = ServerOptions(idle_timeout=idle_timeout)
    with run_server("selectors", "echo", options) as server:
        row = run_load(load(server.port, clients=2, slowloris=0.5, slowloris_interval_s=1.0, warmup_s=0.0)).row
    closed = row[slow_column("slowloris", "closed")]
    if idle_timeout:
        # a byte, then 1 s of silence: closed after 0.5 s, reconnected, closed again ...
        assert closed >= 1 and row[slow_column("slowloris", "connected")] >= closed
    else:
        assert closed == 0 and row[slow_column("slowloris", "connected")] == 1
    assert row["clients_served"] == 1 and row["errors"] == 0


def test_a_slowloris_on_the_file_service_is_ended_by_the_request_timeout(tmp_path: Path) -> None:
    name = "a-file-with-a-long-name-for-slowloris"
    (tmp_path / name).write_bytes(b"x" * 100)
    options = ServerOptions(root=tmp_path, request_timeout=0.5, idle_timeout=5.0)
    from bench.loadgen import FileTarget

    with run_server("threading", "file", options) as server:
        spec = load(
            server.port,
            service="file",
            files=[FileTarget(name, 100, "")],
            clients=2,
            slowloris=0.5,
            slowloris_interval_s=0.05,
            warmup_s=0.0,
        )
        row = run_load(spec).row
    # 38 bytes a twentieth of a second apart take ~1.9 s: the 0.5 s request timeout ends every try first
    assert row[slow_column("slowloris", "closed")] >= 1
    assert row[slow_column("slowloris", "completed")] == 0
    assert row["requests"] > 0


# ----------------------------------------------------------------- the mix's checks


def test_mix_counts_round_each_kind_and_never_exceed_the_clients() -> None:
    assert mix_counts(20, {"slow_reader": 0.1}) == {"fast": 18, "slow_reader": 2, "slowloris": 0, "idle": 0}
    assert mix_counts(10, dict.fromkeys(SLOW_KINDS, 1 / 3)) == {"fast": 0, "slow_reader": 4, "slowloris": 3, "idle": 3}
    assert mix_counts(3, {"idle": 0.1}) == {"fast": 3, "slow_reader": 0, "slowloris": 0, "idle": 0}
    assert mix_counts(4, {"idle": 0.5, "slowloris": 0.5}) == {"fast": 0, "slow_reader": 0, "slowloris": 2, "idle": 2}


def test_workers_share_every_kind_and_the_totals_evenly() -> None:
    jobs = driver.plan_jobs(load(1, clients=6, slow_reader=0.5, workers=2), "127.0.0.1")
    assert [(j["clients"], j["mix"]) for j in jobs] == [(2, {"slow_reader": 1}), (1, {"slow_reader": 2})]
    plain = driver.plan_jobs(load(1, clients=5, workers=2), "127.0.0.1")
    assert [(j["clients"], j["mix"]) for j in plain] == [(3, {}), (2, {})]


def test_auto_runs_slow_clients_on_python_saying_why_and_other_engines_refuse() -> None:
    engine, _, note = engines.resolve("auto", "echo", slow=True)
    assert engine == "python" and "only the python engine runs slow clients" in note
    for other in ("native", "locust", "wrk"):
        with pytest.raises(ValueError, match=f"engine '{other}' has no slow clients"):
            engines.resolve(other, "echo", slow=True)


def test_a_spec_with_too_many_slow_clients_or_the_http_service_is_refused() -> None:
    with pytest.raises(ValueError, match="add up to 1.2"):
        validate(load(1, slow_reader=0.7, idle=0.5))
    with pytest.raises(ValueError, match="slow_reader must be within 0..1"):
        validate(load(1, slow_reader=1.5))
    with pytest.raises(ValueError, match="speak the echo and file services only, not http"):
        validate(load(1, service="http", idle=0.5, files=[]))


def test_scenario_mix_sweeps_and_its_columns_are_in_the_row(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(MINIMAL + "  clients: 20\n  mix: {slow_reader: [0, 10%, 0.5], idle: 5%}\n")
    s = load_scenario(path)
    assert s.swept == ["slow_reader"]
    assert [p.columns()["slow_reader"] for p in s.points()] == [0.0, 0.1, 0.5]
    assert {p.columns()["idle"] for p in s.points()} == {0.05}
    assert [p.label() for p in s.points()][1] == "slow_reader=0.1"
    assert set(MIX_COLUMNS) >= {"fast_clients", "idle_closed", "slowloris_completed"}
    spec = _load_spec(s, RunPlan("threading", s.points()[1], 1), "127.0.0.1", 7, None, {})
    assert (spec.slow_reader, spec.idle, spec.slowloris, spec.slow_read_rate) == (0.1, 0.05, 0.0, 10 * 1024)
    assert spec.mix() == {"fast": 17, "slow_reader": 2, "slowloris": 0, "idle": 1}


def test_scenario_mix_errors_name_the_field_and_the_kinds(tmp_path: Path) -> None:
    unknown = scenario_error(tmp_path, MINIMAL + "  mix: {fast: 50%}\n")
    assert (
        "load.mix.fast" in unknown
        and "slow_reader, slowloris, idle" in unknown
        and "fast clients are the rest" in unknown
    )
    too_many = scenario_error(tmp_path, MINIMAL + "  mix: {slow_reader: [10%, 80%], idle: 30%}\n")
    assert "load.mix" in too_many and "110%" in too_many and "at most 100%" in too_many
    out_of_range = scenario_error(tmp_path, MINIMAL + "  mix: {idle: 120%}\n")
    assert "load.mix.idle" in out_of_range and "1" in out_of_range
    not_a_share = scenario_error(tmp_path, MINIMAL + "  mix: {idle: lots}\n")
    assert "load.mix.idle" in not_a_share and "0.1 or 10%" in not_a_share
    native = scenario_error(tmp_path, MINIMAL + "  mix: {idle: 10%}\ngenerator: {engine: native}\n")
    assert "generator.engine" in native and "no slow clients" in native
    http = scenario_error(tmp_path, MINIMAL.replace("echo", "http") + "  file_bytes: 1KiB\n  mix: {slowloris: 10%}\n")
    assert "load.mix" in http and "echo and file services only" in http
