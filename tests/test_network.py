"""Test hosts in network namespaces: made and always removed, a delay that is really there, a rate that limits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from bench.network import hosts as nethosts
from bench.network.hosts import NetworkError, namespace_hosts, ours, remove_stale, require_root
from bench.runner import ScenarioRefused, run_scenario
from bench.scenario import ScenarioError, load_scenario, parse_scenario

REPO = Path(__file__).resolve().parent.parent

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def _stage_pids() -> list[int]:
    """Delay stages started by this test process (children, any depth)."""
    return [p.pid for p in psutil.Process().children(recursive=True) if "bench.network.delay" in " ".join(p.cmdline())]


# --------------------------------------------------------------------------
# Made and removed


@needs_root
def test_the_hosts_exist_inside_the_block_and_are_gone_after_it_even_after_an_error():
    names = set(nethosts.namespace_names("t-made").values())
    with pytest.raises(RuntimeError, match="inside"):
        with namespace_hosts("t-made", rtt_s=0.002) as hosts:
            assert names <= set(ours())
            assert len(_stage_pids()) == 1
            # the server host's address answers from the client host only through the link
            assert hosts.measure_rtt(samples=3)
            raise RuntimeError("inside")
    assert not names & set(ours())
    assert _stage_pids() == []


@needs_root
def test_a_sigkilled_runner_leaves_its_namespaces_and_the_next_run_removes_them():
    code = textwrap.dedent("""
        import sys, time
        from bench.network.hosts import namespace_hosts
        with namespace_hosts("t-killed", rtt_s=0.002, measure=False):
            print("up", flush=True)
            time.sleep(60)
        """)
    runner = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO))
    )
    try:
        assert runner.stdout.readline() == b"up\n"
        stage = [c for c in psutil.Process(runner.pid).children() if "bench.network.delay" in " ".join(c.cmdline())]
        owner = nethosts.owner_tag(runner.pid)
    finally:
        runner.kill()
        runner.wait()
        runner.stdout.close()
    left = [n for n in ours() if n.startswith(f"{nethosts.PREFIX}-{owner}-")]
    assert len(left) == 3  # SIGKILL: nothing could clean up
    assert len(stage) == 1
    psutil.wait_procs(stage, timeout=5)  # PR_SET_PDEATHSIG: the kernel killed the stage with its runner
    assert not psutil.pid_exists(stage[0].pid) or psutil.Process(stage[0].pid).status() == psutil.STATUS_ZOMBIE
    # Any run that starts cleans up stale namespaces, so another root process
    # on the machine may have removed some of these already: this call must
    # remove the rest, and none may be left.
    still = set(left) & set(ours())
    removed = remove_stale()
    assert still <= set(removed)
    assert not set(left) & set(ours())


@needs_root
def test_namespaces_of_a_runner_still_alive_are_left_alone():
    with namespace_hosts("t-alive", measure=False):
        mine = [n for n in ours() if "-t-alive-" in n]
        assert len(mine) == 3
        assert not set(mine) & set(remove_stale())
        assert set(mine) <= set(ours())


def test_without_root_the_error_says_what_is_needed_and_the_alternative():
    with pytest.raises(NetworkError, match=r"needs root.*uid 1000.*hosts: loopback"):
        require_root(euid=1000)


def test_bench_run_refuses_a_namespaces_scenario_without_root_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    scenario = parse_scenario(_scenario("network: {hosts: namespaces, rtt: 5ms}"))
    with pytest.raises(ScenarioRefused, match="needs root"):
        run_scenario(scenario, results_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# The conditions are really there


@needs_root
def test_the_delay_stage_adds_the_configured_round_trip():
    with namespace_hosts("t-rtt", measure=False) as bare:
        base = sorted(bare.measure_rtt(samples=10))[5]
    with namespace_hosts("t-rtt", rtt_s=0.020, measure=False) as delayed:
        rtts = delayed.measure_rtt(samples=10)
    assert min(rtts) >= 20_000  # never faster than the delay: each frame waits its 10 ms each way
    # loose: the stage is Python on a shared 2-CPU machine
    assert sorted(rtts)[5] < 20_000 + base + 15_000, rtts


@needs_root
def test_jitter_lengthens_the_delay_within_its_range():
    with namespace_hosts("t-jitter", rtt_s=0.004, jitter_s=0.004, measure=False) as hosts:
        rtts = hosts.measure_rtt(samples=20)
    assert min(rtts) >= 4_000
    assert max(rtts) > min(rtts) + 500  # the draws differ
    assert sorted(rtts)[10] < 4_000 + 2 * 4_000 + 10_000, rtts


@needs_root
def test_the_rate_limit_holds_in_both_directions():
    rate = 20_000_000
    with namespace_hosts("t-rate", rate_bit=rate, measure=False) as hosts:
        assert hosts.read_tbf() == {"overlimits": 0, "drops": 0}  # nothing sent yet
        up = hosts.measure_bulk(1_500_000, upload=True)
        down = hosts.measure_bulk(1_500_000, upload=False)
    # the limit held packets back (TCP sends faster than 20 Mbit/s here) and queued rather than dropped
    assert hosts.tbf_counters["overlimits"] > 0 and hosts.tbf_counters["drops"] == 0, hosts.tbf_counters
    assert hosts.columns()["net_tbf_overlimits"] == hosts.tbf_counters["overlimits"]
    for measured in (up, down):
        assert measured < rate * 1.1, (up, down)  # tbf's rate (+10% for its bucket and timing)
        assert measured > rate * 0.5, (up, down)  # and the link still carries data near it


# --------------------------------------------------------------------------
# The scenario and a whole run


def _scenario(network: str) -> str:
    return (
        textwrap.dedent("""
        name: net
        service: echo
        models: [selectors]
        load: {clients: 4, message_bytes: 512}
        duration: 1s
        warmup: 200ms
        repetitions: 1
        placement: none
        monitor: {idle_wait: 1s, idle_threshold_pct: 100}
        """)
        + network
        + "\n"
    )


@pytest.mark.parametrize(
    "network, message",
    [
        ("network: {hosts: namespaces, loss: 1%}", "loss is not supported"),
        ("network: {rtt: 10ms}", "needs network.hosts: namespaces"),
        ("network: {hosts: namespaces, rate: 100Mb}", "unknown bit rate unit 'Mb'"),
        ("network: {hosts: wan}", "loopback"),
    ],
)
def test_bad_network_sections_are_refused_with_the_fix(tmp_path, network, message):
    path = tmp_path / "s.yaml"
    path.write_text(_scenario(network))
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


@pytest.mark.parametrize("name", ["rtt-10ms", "rate-limited"])
def test_shipped_network_scenarios_validate_and_write_back_the_same(name):
    scenario = load_scenario(REPO / "scenarios" / f"{name}.yaml")
    assert scenario.network.hosts == "namespaces"
    assert parse_scenario(scenario.to_yaml()).network == scenario.network


@needs_root
def test_a_run_over_a_delayed_link_records_the_link_and_its_round_trip(tmp_path):
    import pandas as pd

    scenario = parse_scenario(_scenario("network: {hosts: namespaces, rtt: 6ms, rate: 50Mbit}"))
    results = run_scenario(scenario, results_root=tmp_path, finish=False)
    row = pd.read_csv(results / "runs.csv").iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["net_hosts"] == "namespaces" and row["netns"] == "own"
    assert row["net_rtt_ms"] == 6.0 and row["net_rate_mbit"] == 50.0
    assert "tbf 50Mbit" in row["net_links"] and "delay stage 3ms" in row["net_links"]
    assert 6_000 <= row["net_base_rtt_us"] < 30_000
    assert row["net_stage_dropped"] == 0 and row["net_stage_cpu_s"] > 0
    # the server was on the far side of the link: no round trip faster than the delay
    assert row["requests"] > 0 and row["lat_p50_us"] >= 6_000
    assert row["accept_queue_max"] >= 0  # the monitor found the listener in the server's namespace
    assert not [n for n in ours() if "-selectors-p0-r1-" in n and nethosts.owner_tag() in n]


def test_rtt_jitter_and_rate_sweep_like_any_parameter_and_fill_their_columns_in_the_link_s_units():
    scenario = parse_scenario(
        _scenario("network: {hosts: namespaces, rtt: [1ms, 50ms], jitter: 500us, rate: [10Mbit, 1Gbit]}")
    )
    assert scenario.swept == ["net_rtt_ms", "net_rate_mbit"]
    columns = [(p.columns()["net_rtt_ms"], p.columns()["net_rate_mbit"]) for p in scenario.points()]
    assert columns == [(1.0, 10.0), (1.0, 1000.0), (50.0, 10.0), (50.0, 1000.0)]  # ms and Mbit/s
    assert {p.columns()["net_jitter_ms"] for p in scenario.points()} == {0.5}
    # the runner builds each point's link from the point, in the scenario's units (s, bit/s)
    assert [(p.network.rtt, p.network.rate) for p in scenario.points()][1] == (0.001, 1_000_000_000)
    assert scenario.run_count() == 4
    assert parse_scenario(scenario.to_yaml()).points() == scenario.points()


def test_a_link_sweep_on_loopback_is_refused_and_loopback_leaves_the_link_columns_empty():
    with pytest.raises(ScenarioError, match="network.rtt: needs network.hosts: namespaces"):
        parse_scenario(_scenario("network: {rtt: [1ms, 10ms]}"))
    point = parse_scenario(_scenario("")).points()[0]
    assert {point.columns()[c] for c in ("net_rtt_ms", "net_jitter_ms", "net_rate_mbit")} == {None}


@needs_root
def test_a_swept_rtt_gives_each_point_its_own_link_and_removes_every_namespace(tmp_path):
    import pandas as pd

    scenario = parse_scenario(_scenario("network: {hosts: namespaces, rtt: [2ms, 20ms]}"))
    results = run_scenario(scenario, results_root=tmp_path, finish=False)
    rows = pd.read_csv(results / "runs.csv").sort_values("net_rtt_ms")
    assert list(rows["status"]) == ["ok", "ok"], list(rows["error"])
    assert list(rows["net_rtt_ms"]) == [2.0, 20.0]
    near, far = rows["net_base_rtt_us"]
    assert 2_000 <= near < 20_000 <= far  # each run measured its own point's link
    assert list(rows["lat_p50_us"] >= rows["net_rtt_ms"] * 1e3) == [True, True]
    assert (rows["net_stage_frames"] > 0).all() and (rows["net_retrans_segs"] >= 0).all()
    assert not [n for n in ours() if nethosts.owner_tag() in n]


@needs_root
def test_native_and_python_workers_start_on_the_client_hosts_in_turn():
    import functools

    from bench.loadgen.driver import WorkerPool
    from bench.network import ClientHost

    with namespace_hosts("t-workers", client_hosts=2, measure=False) as made:
        hosts = [
            ClientHost(f"client host {k + 1}", nethosts.client_address(k), functools.partial(made.in_client, k))
            for k in range(2)
        ]
        # a program that only waits: where it was started is the point, not the worker contract
        with WorkerPool([{}, {}, {}], [sys.executable, "-c", "import time; time.sleep(30)"], hosts) as pool:
            pool.start()
            started_in = [os.stat(f"/proc/{p.pid}/ns/net").st_ino for p in pool.procs]
        expected = [os.stat(nethosts.NETNS_DIR / made.names[role]).st_ino for role in ("cli", "cli2", "cli")]
    assert started_in == expected


@needs_root
def test_a_native_engine_run_from_two_client_hosts_through_the_delay_stage(tmp_path):
    import pandas as pd

    scenario = parse_scenario(
        _scenario("generator: {engine: native, workers: 2}\nnetwork: {hosts: namespaces, client_hosts: 2, rtt: 4ms}")
    )
    results = run_scenario(scenario, results_root=tmp_path, finish=False)
    row = pd.read_csv(results / "runs.csv").iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["gen_engine"] == "native, 2 workers on 2 hosts" and row["clients_served"] == 4
    assert row["lat_p50_us"] >= 4_000
    assert not [n for n in ours() if nethosts.owner_tag() in n]


@pytest.mark.parametrize(
    "text, bits", [("100Mbit", 100_000_000), ("1.5Gbit", 1_500_000_000), ("64kbit", 64_000), (2_000_000, 2_000_000)]
)
def test_bit_rates_parse_and_write_back_exactly(text, bits):
    from bench.units import format_bitrate, parse_bitrate

    assert parse_bitrate(text) == bits
    assert parse_bitrate(format_bitrate(bits)) == bits
