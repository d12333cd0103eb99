"""The locust load engine: Locust's master and workers driving real servers, merged like any other workers.

Skipped without Locust (``pip install 'sockbench[locust]'``); the tests over
several client hosts are skipped without root (network namespaces). The
servers are the in-test ones of ``tests/thread_servers.py`` (a budget of
answers makes the count exact) and the project's own selectors model.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import textwrap

import pandas as pd
import pytest

from bench.loadgen import FileTarget, LoadGenError, LoadSpec, engines, locust_engine
from bench.loadgen.locust_engine import run_locust
from bench.scenario import ScenarioError, parse_scenario

from thread_servers import (
    closing_http_handler,
    corrupt_echo_handler,
    corrupt_file_handler,
    corrupt_http_handler,
    echo_handler,
    file_handler,
    http_handler,
)

pytestmark = [
    pytest.mark.skipif(
        not locust_engine.available(), reason="Locust is not installed: pip install 'sockbench[locust]'"
    ),
    pytest.mark.usefixtures("no_leftover_workers"),
]  # (conftest) every Locust process reaped
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="several client hosts are network namespaces: need root")


def locust_spec(port: int, **kw: object) -> LoadSpec:
    base: dict[str, object] = dict(
        service="echo",
        host="127.0.0.1",
        port=port,
        clients=4,
        duration_s=0.6,
        warmup_s=0.2,
        workers=2,
        message_bytes=256,
        connect_timeout_s=2.0,
        request_timeout_s=30.0,
        engine="locust",
    )
    base.update(kw)
    return LoadSpec(**base)  # type: ignore[arg-type]


def test_every_answer_the_server_gave_is_counted_once_by_both_locust_and_the_histograms(server):
    # 300 answers, then the server holds every connection: whatever is counted beyond 300 was made up.
    srv = server(echo_handler, budget=300, message_bytes=256)
    out = run_locust(locust_spec(srv.port, warmup_s=0.0))
    row = out.result.row
    assert srv.served == 300
    assert row["requests"] == 300 == sum(r["requests"] for r in out.reports)
    assert out.result.histograms["latency"].get_total_count() == 300
    fired = sum(r["locust_events"]["ok"] for r in out.reports)
    assert out.locust_totals == {"requests": 300, "failures": 0} and fired == 300
    assert row["errors"] == 0 and row["req_pending"] == 4  # every client waits on an answer that never comes
    assert row["gen_engine"] == "locust, 2 workers on 1 host" and row["gen_workers"] == 2
    assert [r["clients"] for r in out.reports] == [2, 2]


def test_wrong_echo_bytes_are_corrupt_in_both_locusts_failures_and_sockbenchs_errors(server):
    srv = server(corrupt_echo_handler, message_bytes=256)
    out = run_locust(locust_spec(srv.port, workers=1, clients=2, warmup_s=0.0, duration_s=0.5))
    row = out.result.row
    assert row["requests"] == 0 and row["err_corrupt"] > 0
    assert row["errors"] == row["err_corrupt"]
    failed = sum(r["locust_events"]["failed"] for r in out.reports)
    assert out.locust_totals["failures"] == failed >= row["err_corrupt"]  # Locust counts warmup-free whole run


@pytest.mark.parametrize("handler, corrupt", [(file_handler, False), (corrupt_file_handler, True)])
def test_file_replies_are_checked_for_size_and_sampled_sha256(server, handler, corrupt):
    data = os.urandom(50_000)
    srv = server(handler, files={"a.bin": data})
    target = FileTarget("a.bin", len(data), hashlib.sha256(data).hexdigest())
    out = run_locust(
        locust_spec(
            srv.port,
            service="file",
            files=[target],
            workers=1,
            clients=2,
            warmup_s=0.0,
            duration_s=0.5,
            checksum_sample=1.0,
        )
    )
    row = out.result.row
    if corrupt:  # same size, wrong bytes: only the checksum can tell
        assert row["requests"] == 0 and row["err_corrupt"] > 0
    else:
        assert row["requests"] > 0 and row["errors"] == 0
        assert row["mb_per_s"] == pytest.approx(row["requests"] * len(data) / 0.5 / 1e6)


def test_a_worker_that_never_connects_is_named_after_the_bound_and_the_printed_command_starts_one(server, monkeypatch):
    srv = server(echo_handler, message_bytes=256)
    monkeypatch.setattr(locust_engine, "CONNECT_TIMEOUT_S", 2.0)
    printed: list[str] = []
    with pytest.raises(LoadGenError, match=r"not connected within 2 s: missing remote worker 1; connected: none"):
        run_locust(locust_spec(srv.port, workers=None, clients=2), remote_workers=1, announce=printed.append)
    assert len(printed) == 1 and "--worker --master-host 127.0.0.1" in printed[0]

    # the printed command, run as the user would on the other host, makes the run complete
    started: list[subprocess.Popen[bytes]] = []

    def start_it(text: str) -> None:
        command = text.split(": ", 1)[1]
        started.append(
            subprocess.Popen(
                ["bash", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        )

    monkeypatch.setattr(locust_engine, "CONNECT_TIMEOUT_S", 30.0)
    try:
        out = run_locust(
            locust_spec(srv.port, workers=None, clients=2, duration_s=0.5, warmup_s=0.0),
            remote_workers=1,
            announce=start_it,
        )
    finally:
        for p in started:
            os.killpg(p.pid, 9)
            p.wait()
    assert out.result.row["requests"] > 0 and out.result.row["gen_engine"] == "locust, 1 worker on 1 host"


def test_without_locust_the_error_names_the_extra(monkeypatch):
    monkeypatch.setattr(engines, "locust_available", lambda: False)
    with pytest.raises(ValueError, match=r"pip install 'sockbench\[locust\]'"):
        engines.resolve("locust")
    with pytest.raises(ValueError, match=r"pip install 'sockbench\[locust\]'"):
        run_locust(locust_spec(9))


def test_bench_load_refuses_remote_workers_without_locust_and_a_master_beyond_loopback_without_allow_remote(capsys):
    from bench.loadgen.cli import main

    assert (
        main(
            ["echo", "127.0.0.1:9", "--clients", "1", "--duration", "1", "--remote-workers", "1", "--engine", "python"]
        )
        == 2
    )
    assert "--remote-workers and --master-bind are for --engine locust" in capsys.readouterr().err
    assert (
        main(
            [
                "echo",
                "127.0.0.1:9",
                "--clients",
                "1",
                "--duration",
                "1",
                "--master-bind",
                "198.18.7.7",
                "--engine",
                "locust",
            ]
        )
        == 2
    )
    assert "would listen on 198.18.7.7, not a loopback address: pass --allow-remote" in capsys.readouterr().err


def test_several_client_hosts_without_namespaces_or_a_worker_each_are_refused_with_the_fix():
    base = textwrap.dedent("""
        name: l
        service: echo
        models: [selectors]
        load: {clients: 2, message_bytes: 64, mode: open, rate: 100}
        generator: {engine: locust}
        """)
    several = base.replace("mode: open, rate: 100", "mode: closed").replace("engine: locust", "engine: python")
    with pytest.raises(ScenarioError, match="client_hosts.*needs network.hosts: namespaces"):
        parse_scenario(several + "network: {client_hosts: 2}\n")
    with pytest.raises(ScenarioError, match="client_hosts: more than 1 needs generator.workers"):
        parse_scenario(several + "network: {hosts: namespaces, client_hosts: 2}\n")
    with pytest.raises(ScenarioError, match="generator.workers: 1 worker.*set generator.workers to at least 3"):
        parse_scenario(
            several.replace("generator: {engine: python}", "generator: {engine: python, workers: 1}")
            + "network: {hosts: namespaces, client_hosts: 3}\n"
        )
    assert (
        parse_scenario(
            several.replace("generator: {engine: python}", "generator: {engine: python, workers: 2}")
            + "network: {hosts: namespaces, client_hosts: 2}\n"
        ).network.client_hosts
        == 2
    )


# --------------------------------------------------------------------------
# Several client hosts


@needs_root
def test_a_master_and_two_workers_on_two_client_hosts_drive_a_server_on_a_third(tmp_path):
    from bench.network import ClientHost
    from bench.network.hosts import SERVER_ADDRESS, client_address, namespace_hosts
    from servers.launch import ServerOptions, run_server

    with namespace_hosts("t-locust", client_hosts=2, measure=False) as made:
        with made.in_server():
            running = run_server("selectors", "echo", ServerOptions(host=SERVER_ADDRESS))
            srv = running.__enter__()
        try:
            hosts = [
                ClientHost(f"client host {k + 1}", client_address(k), lambda k=k: made.in_client(k)) for k in range(2)
            ]
            with made.in_client(0):  # the master runs on the first client host
                out = run_locust(locust_spec(srv.port, host=SERVER_ADDRESS, allow_remote=True), hosts=hosts)
        finally:
            running.__exit__(None, None, None)
    row = out.result.row
    # each worker ran on its own host: its connections came from that host's address
    # (in the order they connected: Locust numbers its workers so)
    assert sorted((r["host"], r["local_addresses"]) for r in out.reports) == [
        ("client host 1", ["198.18.0.2"]),
        ("client host 2", ["198.18.0.3"]),
    ]
    assert all(r["requests"] > 0 for r in out.reports)
    for column, key in (("requests", "requests"), ("clients_served", "clients_served")):
        assert row[column] == sum(r[key] for r in out.reports)
    for kind in ("reset", "timeout", "closed_early", "short", "corrupt"):
        assert row[f"err_{kind}"] == sum(r["errors"][kind] for r in out.reports) == 0
    fired = sum(r["locust_events"]["ok"] + r["locust_events"]["failed"] for r in out.reports)
    assert out.locust_totals["requests"] == fired >= row["requests"]  # Locust counts warmup and drain too
    assert row["gen_engine"] == "locust, 2 workers on 2 hosts"


@needs_root
def test_several_client_hosts_with_a_delay_each_reach_the_server_through_the_delay_stage():
    from bench.network.hosts import namespace_hosts, ours

    with namespace_hosts("t-two-delayed", rtt_s=0.004, client_hosts=2, measure=False) as made:
        assert made.staged and made.client_hosts == 2
        first, second = (made.measure_rtt(samples=5, host=k) for k in range(2))
    for rtts in (first, second):
        assert min(rtts) >= 4_000, (first, second)  # both hosts' frames wait in the stage, 2 ms each way
        assert sorted(rtts)[2] < 4_000 + 15_000, (first, second)  # loose: a Python stage on a shared machine
    assert made.stage_counters["a_to_b"]["forwarded"] > 0
    assert not [n for n in ours() if "-t-two-delayed-" in n]


@needs_root
def test_a_locust_run_over_two_client_hosts_is_a_row_of_runs_csv_like_any_other(tmp_path):
    from bench.network.hosts import ours, owner_tag
    from bench.runner import run_scenario

    scenario = parse_scenario(
        textwrap.dedent("""
        name: loc
        service: echo
        models: [selectors]
        load: {clients: 4, message_bytes: 512}
        duration: 600ms
        warmup: 200ms
        repetitions: 1
        placement: none
        generator: {engine: locust, workers: 2}
        monitor: {idle_wait: 1s, idle_threshold_pct: 100}
        network: {hosts: namespaces, client_hosts: 2}
        """)
    )
    results = run_scenario(scenario, results_root=tmp_path, finish=False)
    row = pd.read_csv(results / "runs.csv").iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["gen_engine"] == "locust, 2 workers on 2 hosts" and row["gen_workers"] == 2
    assert row["net_hosts"] == "namespaces" and row["requests"] > 0 and row["clients_served"] == 4
    assert row["lat_p99_us"] > 0 and row["conn_ok"] == 4
    assert not [n for n in ours() if owner_tag() in n and "-selectors-p0-r1-" in n]


@needs_root
def test_locust_workers_on_two_client_hosts_behind_a_swept_delay_each_see_their_point_s_round_trip(tmp_path):
    from bench.network.hosts import ours, owner_tag
    from bench.runner import run_scenario

    scenario = parse_scenario(
        textwrap.dedent("""
        name: loc-delayed
        service: echo
        models: [selectors]
        load: {clients: 4, message_bytes: 512}
        duration: 600ms
        warmup: 200ms
        repetitions: 1
        placement: none
        generator: {engine: locust, workers: 2}
        monitor: {idle_wait: 1s, idle_threshold_pct: 100}
        network: {hosts: namespaces, client_hosts: 2, rtt: [4ms, 20ms]}
        """)
    )
    results = run_scenario(scenario, results_root=tmp_path, finish=False)
    rows = pd.read_csv(results / "runs.csv").sort_values("net_rtt_ms")
    assert list(rows["status"]) == ["ok", "ok"], list(rows["error"])
    assert set(rows["gen_engine"]) == {"locust, 2 workers on 2 hosts"}
    assert list(rows["clients_served"]) == [4, 4]  # both hosts' clients got through the stage
    assert list(rows["lat_p50_us"] >= rows["net_rtt_ms"] * 1e3) == [True, True]
    # closed loop: 4 clients can do at most 4 requests per round trip
    assert (rows["req_per_s"] <= 4 / (rows["net_rtt_ms"] / 1e3)).all(), list(rows["req_per_s"])
    assert not [n for n in ours() if owner_tag() in n]


# --------------------------------------------------------------------------
# http


#: 4 KiB: several reads' worth of headers and body, small enough for thousands of requests a second.
HTTP_BODY = os.urandom(4096)
HTTP_TARGET = FileTarget("f4k", len(HTTP_BODY), hashlib.sha256(HTTP_BODY).hexdigest())


def http_locust_spec(port: int, files: list[FileTarget], **kw: object) -> LoadSpec:
    base: dict[str, object] = dict(
        service="http", files=files, workers=1, clients=3, warmup_s=0.0, duration_s=0.6, checksum_sample=1.0
    )
    base.update(kw)
    return locust_spec(port, **base)


@pytest.mark.parametrize("model", ["threading", "selectors"])
def test_http_on_a_project_server_is_all_2xx_over_one_keep_alive_connection_per_user(model, tmp_path):
    from servers.config import ServerOptions
    from servers.launch import run_server

    (tmp_path / "f4k").write_bytes(HTTP_BODY)
    with run_server(model, "http", ServerOptions(root=tmp_path)) as srv:
        out = run_locust(http_locust_spec(srv.port, [HTTP_TARGET], host=srv.host))
    row = out.result.row
    assert row["requests"] > 20, row
    assert row["http_2xx"] == row["requests"] and row["errors"] == 0, row
    assert (row["http_3xx"], row["http_4xx"], row["http_5xx"]) == (0, 0, 0)
    assert row["conn_ok"] == 3, row  # keep-alive: one connection per user for the whole run
    assert row["mb_per_s"] == pytest.approx(row["requests"] * len(HTTP_BODY) / 0.6 / 1e6)
    fired = sum(r["locust_events"]["ok"] + r["locust_events"]["failed"] for r in out.reports)
    assert out.locust_totals["requests"] == fired >= row["requests"] and out.locust_totals["failures"] == 0


def test_every_http_answer_the_server_gave_is_counted_once(server):
    # 200 answers, then the server holds every connection: whatever is counted beyond 200 was made up.
    srv = server(http_handler, budget=200, files={"a": HTTP_BODY, "b": HTTP_BODY[:100]})
    files = [FileTarget("a", len(HTTP_BODY), HTTP_TARGET.sha256), FileTarget("b", 100, "")]
    out = run_locust(http_locust_spec(srv.port, files, clients=2))
    row = out.result.row
    assert srv.served == 200
    assert row["requests"] == row["http_2xx"] == 200 == out.locust_totals["requests"]
    assert out.result.histograms["latency"].get_total_count() == 200
    assert srv.accepted == 2 and row["req_pending"] == 2  # one connection each; each waits on a held answer
    assert abs(srv.paths.count("/a") - srv.paths.count("/b")) <= 2  # in turn, each user from its own start


def test_a_missing_path_is_http_4xx_and_the_connection_is_kept(server):
    srv = server(http_handler, files={"a": HTTP_BODY})
    out = run_locust(http_locust_spec(srv.port, [FileTarget("missing", 10, "")], clients=2))
    row = out.result.row
    assert row["requests"] == 0 and row["http_2xx"] == 0
    assert row["http_4xx"] > 10 and row["errors"] == row["http_4xx"], row
    assert row["err_corrupt"] == 0 and row["err_reset"] == 0
    assert srv.accepted == 2  # a 404 is an answer: the connection carries the next request
    assert out.locust_totals["failures"] == out.locust_totals["requests"] >= row["http_4xx"]


def test_a_corrupt_http_body_is_corrupt_and_a_closing_server_is_followed(server):
    srv = server(corrupt_http_handler, files={"a": HTTP_BODY})
    target = FileTarget("a", len(HTTP_BODY), HTTP_TARGET.sha256)
    row = run_locust(http_locust_spec(srv.port, [target], checksum_sample=0.5)).result.row
    total = row["requests"] + row["err_corrupt"]
    assert total > 20, row
    # every 2nd reply is hashed; the others have the right length, so they pass unhashed
    assert 0.35 < row["err_corrupt"] / total < 0.65, row
    assert row["errors"] == row["err_corrupt"]

    closing = server(closing_http_handler, files={"a": HTTP_BODY})
    row = run_locust(http_locust_spec(closing.port, [target], clients=2)).result.row
    assert row["requests"] > 10 and row["errors"] == 0, row
    assert closing.accepted >= row["requests"]  # one connection per reply, each ended by the server


def test_open_loop_offers_the_rate_and_counts_latency_from_the_intended_send_time(server):
    srv = server(echo_handler, message_bytes=256)
    out = run_locust(locust_spec(srv.port, mode="open", rate=200.0, clients=4, duration_s=1.0))
    row = out.result.row
    # 200/s over 1 s, spread over 4 users on 2 workers: every due request sent and answered
    assert 180 <= row["requests"] <= 220 and row["errors"] == 0, row
    # ...but one due in the window's last millisecond can miss it: gevent's timers wake up to ~1 ms
    # late (below), and a send after the window's end is not a send in it (one in 200 here)
    assert sum(r["unstarted"] for r in out.reports) <= 1, row
    assert "latency_uncorrected" in out.result.histograms
    # gevent's millisecond timers: sends go out up to ~1 ms late, said and counted as the generator's
    assert any("millisecond timers" in w for w in out.result.warnings)
    assert out.result.schedule["started"] == 200 and 0 < out.result.schedule["send_lag_mean_us"] < 5000

    # One user at 100/s (due every 10 ms) on a server that takes 30 ms: requests queue behind each
    # other, so latency from the due time grows past the 30 ms a reply takes, starts are late, and
    # what never went out by the end is counted as unstarted.
    slow = server(echo_handler, message_bytes=256, delay_s=0.03)
    out = run_locust(locust_spec(slow.port, mode="open", rate=100.0, clients=1, workers=1, duration_s=1.0))
    row = out.result.row
    corrected = out.result.histograms["latency"]
    uncorrected = out.result.histograms["latency_uncorrected"]
    assert 20 <= row["requests"] <= 40, row  # ~33/s is what one connection gets through
    assert uncorrected.get_value_at_percentile(50) < 60_000  # us: the server's 30 ms, plus a busy machine
    assert corrected.get_value_at_percentile(50) > 150_000  # us: the queue behind the schedule
    unstarted = sum(r["unstarted"] for r in out.reports)
    assert row["late_starts"] > 10 and unstarted > 40 and row["lat_censored"] >= unstarted, row
    assert any("never got a free connection" in w for w in out.result.warnings)


def test_open_loop_on_locust_is_accepted_by_the_scenario_and_http_resolves_to_locust():
    scenario = parse_scenario(
        textwrap.dedent("""
        name: l
        service: echo
        models: [selectors]
        load: {clients: 2, message_bytes: 64, mode: open, rate: 100}
        generator: {engine: locust}
        """)
    )
    assert scenario.generator.engine == "locust"
    assert engines.resolve("locust", "http")[0] == "locust"


def test_a_service_the_locust_users_do_not_speak_is_refused_naming_the_ones_they_do():
    message = r"engine 'locust' does not drive the timeauth service \(its users speak echo, file, http\); use engine"
    with pytest.raises(ValueError, match=message):
        engines.resolve("locust", "timeauth")
    with pytest.raises(ValueError, match=message):
        run_locust(locust_spec(9, service="timeauth", login="alice:secret"))
