"""The runner end to end: results on disk, Ctrl-C, a server that dies, no process left."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from bench.results import TIMELINE_COLUMNS, run_columns
from bench.runner import plan_runs, run_scenario, runner_pinned
from bench.scenario import parse_scenario
from bench.summary import write_summary
from servers import native, registry

from conftest import fill_disk

REPO = Path(__file__).resolve().parent.parent


def tiny_scenario(**overrides: str) -> str:
    fields = {
        "name": "tiny",
        "service": "echo",
        "models": "[threading, selectors]",
        "duration": "1s",
        "warmup": "200ms",
        "repetitions": "1",
        "placement": "none",
    }
    fields.update(overrides)
    body = "\n".join(f"{k}: {v}" for k, v in fields.items())
    return body + textwrap.dedent("""
        description: a tiny scenario for the runner's tests
        load:
          clients: 4
          message_bytes: 512
        monitor:
          idle_wait: 1s
          idle_threshold_pct: 100
        """)


def session_processes(sid: int) -> list[int]:
    """PIDs still alive in session ``sid`` (the one a test started its command in)."""
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def test_repetitions_are_interleaved_across_models():
    scenario = parse_scenario(tiny_scenario(repetitions="2"))
    order = [(p.repetition, p.model) for p in plan_runs(scenario)]
    assert order == [(1, "threading"), (1, "selectors"), (2, "threading"), (2, "selectors")]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell pinned from not")
def test_runner_and_threads_it_starts_are_pinned_during_a_run_and_restored_after():
    before = os.sched_getaffinity(0)
    target = {max(before)}
    seen: dict[str, set[int]] = {}
    with runner_pinned(target):
        seen["main"] = os.sched_getaffinity(0)
        t = threading.Thread(target=lambda: seen.update(started=os.sched_getaffinity(0)))
        t.start()
        t.join()
    assert seen == {"main": target, "started": target}
    assert os.sched_getaffinity(0) == before


@pytest.mark.slow
def test_run_writes_a_complete_results_folder(tmp_path, monkeypatch):
    from bench.calibration.persist import load_stored, save
    from bench.results import FORMAT_KEY, FORMAT_VERSIONS

    monkeypatch.chdir(tmp_path)  # the calibration of "this machine": results/calibration/latest.json here
    save({FORMAT_KEY: FORMAT_VERSIONS["calibration"], "created_at": "2026-01-01T00:00:00+00:00", "echo": []})
    scenario = parse_scenario(tiny_scenario())
    results = run_scenario(scenario, results_root=tmp_path)
    runs = pd.read_csv(results / "runs.csv")
    assert list(runs.columns) == list(run_columns())
    assert "| `cpu0_busy_pct` | percent of one CPU |" in (results / "COLUMNS.md").read_text()
    assert sorted(runs["model"]) == ["selectors", "threading"]
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    # every echo came back intact and the server was really measured
    assert (runs["requests"] > 0).all()
    assert (runs["err_corrupt"] == 0).all()
    assert (runs["conn_ok"] >= 4).all()
    assert (runs["mem_rss_peak_bytes"] > 1_000_000).all()
    assert (runs.loc[runs.model == "threading", "threads_peak"] >= 5).all()  # main + 4 handlers
    assert (runs.loc[runs.model == "selectors", "threads_peak"] == 1).all()
    assert (runs["server_exit"] == 0).all()
    # side metrics cover the run alone: its own network namespace (as root), per-CPU busy over the window
    assert (runs["netns"] == ("own" if os.geteuid() == 0 else "shared")).all()
    cpus = [f"cpu{cpu}_busy_pct" for cpu in range(os.cpu_count())]
    assert [c for c in runs.columns if c.endswith("_busy_pct") and c.startswith("cpu")] == cpus
    assert ((runs[cpus] >= 0) & (runs[cpus] <= 100)).all().all()
    assert runs["point_label"].tolist() == ["-"] * len(runs)  # nothing swept
    assert (runs["k_listen_overflows"] >= 0).all() and runs["accept_queue_max"].notna().all()
    assert (runs["runner_cpu_pct"] >= 0).all() and (runs["server_runq_wait_pct"] >= 0).all()
    assert (runs["gen_runq_wait_pct_max"] >= 0).all() and (runs["clients_served"] == 4).all()
    # auto picks the native engine where a compiler exists, and each run says which measured
    assert set(runs["gen_engine"]) == {"native" if native.available() else "python"}
    timeline = pd.read_csv(results / "timeline.csv")
    assert list(timeline.columns) == list(TIMELINE_COLUMNS)
    assert set(timeline["source"]) == {"server", "load"}
    assert (results / "hist" / f"{runs.run_id[0]}.latency.hlog").exists()
    summary = json.loads((results / "summary.json").read_text())
    assert summary["format_version"] >= 1
    assert (results / "scenario.yaml").read_text().startswith("#")
    env = json.loads((results / "environment.json").read_text())
    assert env["placement"]["policy"] == "none"
    assert (results / "report.html").exists()
    # the calibration in force when the runs started travels with them
    assert load_stored(results)["created_at"] == "2026-01-01T00:00:00+00:00"
    assert "load engine: " + runs["gen_engine"][0] in (results / "report.html").read_text()


def test_server_threads_sizes_the_pool_of_threadpool_alone(tmp_path):
    """A swept server.threads reaches threadpool's pool and not threading, which has no pool to size."""
    scenario = parse_scenario(tiny_scenario(models="[threading, threadpool]", server="{threads: [1, 3]}"))
    runs = pd.read_csv(run_scenario(scenario, results_root=tmp_path, plots=False) / "runs.csv")
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    peaks = {(row.model, row.threads): row.threads_peak for row in runs.itertuples()}
    # 4 clients: threading has a thread each at both points (plus main); threadpool has its pool (plus main)
    assert peaks == {("threading", 1): 5, ("threading", 3): 5, ("threadpool", 1): 2, ("threadpool", 3): 4}, peaks


@pytest.mark.slow
def test_a_server_killed_mid_run_is_recorded_as_failed(tmp_path):
    scenario = parse_scenario(tiny_scenario(models="[threading]", duration="4s"))
    me = psutil.Process()
    killed: list[int] = []

    def kill_server() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not killed:
            for child in me.children():
                try:
                    cmd = child.cmdline()
                except psutil.Error:
                    continue
                if cmd[1:3] == ["-m", "servers"]:
                    time.sleep(1.0)  # let the measured window start
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_server)
    killer.start()
    results = run_scenario(scenario, results_root=tmp_path, finish=False)
    killer.join()
    assert killed, "the test never found the server to kill"
    runs = pd.read_csv(results / "runs.csv")
    assert runs["status"].tolist() == ["failed"]
    assert runs["error"][0].startswith("server died during the run (signal 9, SIGKILL, ")
    # killed about a second after it started, inside the 4 s window: the row says when, to a sample
    assert -1.0 < runs["server_died_s"][0] < 4.0, runs["server_died_s"][0]


def server_children(proc: psutil.Process) -> list[psutil.Process]:
    """Servers (``python -m servers``) among ``proc``'s children."""
    found = []
    for child in proc.children():
        try:
            if child.cmdline()[1:3] == ["-m", "servers"]:
                found.append(child)
        except psutil.Error:
            continue
    return found


def wait_for_new_server(parent: psutil.Process, old: set[int], timeout_s: float = 20) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = [c for c in server_children(parent) if c.pid not in old]
        if fresh:
            return fresh[0]
        time.sleep(0.02)
    pytest.fail("no server was started")


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "sig, status, name",
    [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")],
)
@pytest.mark.slow
def test_a_stop_signal_mid_run_keeps_finished_runs_and_reaps_the_server(tmp_path, sig, status, name):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_scenario(repetitions="5", duration="1s"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(path), "--results", str(tmp_path / "out"), "--no-plots"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        bench = psutil.Process(proc.pid)
        lines = []
        first_server = wait_for_new_server(bench, set())
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("threading", "selectors")):
                break  # one run is finished and on disk
        else:
            pytest.fail("bench run ended before finishing a run:\n" + "".join(lines))
        server = wait_for_new_server(bench, {first_server.pid})
        server_sid = os.getsid(server.pid)  # its own session: our session check would miss it
        time.sleep(0.5)  # the load is running against it now
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == status, "".join(lines) + rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert f"Interrupted by {name}" in rest and "summary.json is written" in rest, rest
    (folder,) = (tmp_path / "out").iterdir()
    runs = pd.read_csv(folder / "runs.csv")
    assert (runs["status"] == "ok").sum() >= 1
    stopped = runs[runs["status"] == "interrupted"]
    assert stopped["error"].tolist() == [f"stopped by {name}"]
    assert len(runs) < 10  # it stopped early
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["format_version"] >= 1
    assert not psutil.pid_exists(server.pid) or server.status() == psutil.STATUS_ZOMBIE
    assert session_processes(server_sid) == []
    assert session_processes(proc.pid) == []


def test_c_reference_is_left_out_without_a_compiler(tmp_path, monkeypatch):
    from servers import native

    monkeypatch.setattr(native, "compiler", lambda: None)
    warnings: list[str] = []
    scenario = parse_scenario(tiny_scenario(models="[selectors, c-reference]", duration="0.5s"))
    results = run_scenario(scenario, results_root=tmp_path, finish=False, warn=warnings.append)
    runs = pd.read_csv(results / "runs.csv")
    assert runs["model"].tolist() == ["selectors"]
    assert any("c-reference left out" in w and "compiler" in w for w in warnings)


def _cpu_work_scenario(models: str) -> object:
    return parse_scenario(
        tiny_scenario(models=models, duration="700ms").replace("load:", "server:\n  cpu_work_us: 200\nload:")
    )


@pytest.mark.slow
def test_cpu_work_is_calibrated_once_and_recorded(tmp_path):
    results = run_scenario(_cpu_work_scenario("[forking, threading]"), results_root=tmp_path, finish=False)
    env = json.loads((results / "environment.json").read_text())
    calibration = env["cpu_work_calibration"]
    assert calibration["iterations_per_us"] > 0 and calibration["attempts"] >= 3
    runs = pd.read_csv(results / "runs.csv")
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    # every server ran the one count (its ready line says so), and its CPU accounts for it
    assert set(runs["cpu_work_iterations"]) == {round(calibration["iterations_per_us"] * 200)}
    assert not runs["cpu_work_short"].any(), runs[["model", "requests", "server_cpu_user_s", "server_cpu_sys_s"]]


@pytest.mark.slow
def test_a_run_doing_less_cpu_work_than_labelled_is_flagged(tmp_path, monkeypatch):
    from bench import cpuwork

    # A calibration 1000x too low: each "200 us" chunk runs a handful of iterations.
    real = cpuwork.calibrate
    monkeypatch.setattr(cpuwork, "calibrate", lambda cpus: dict(real(cpus), iterations_per_us=0.01))
    results = run_scenario(_cpu_work_scenario("[threading]"), results_root=tmp_path, finish=False)
    runs = pd.read_csv(results / "runs.csv")
    assert runs["cpu_work_short"].all() and (runs["cpu_work_iterations"] == 2).all()
    write_summary(results)
    summary = json.loads((results / "summary.json").read_text())
    assert any(w.startswith("CPU work not accounted for") for w in summary["warnings"]), summary["warnings"]


def test_a_second_ctrl_c_while_the_summary_is_written_keeps_it(tmp_path, monkeypatch, capsys):
    import bench.runner
    import bench.summary
    from bench import cli

    real_execute, real_summary = bench.runner.execute_run, bench.summary.write_summary
    summary_calls = []

    def execute_then_ctrl_c(*args, **kwargs):
        row = real_execute(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, right after a finished run
        return row

    def summary_with_ctrl_c(results_dir):
        summary_calls.append(results_dir)
        os.kill(os.getpid(), signal.SIGINT)  # the second one, while the summary is being written
        time.sleep(0.05)  # Python runs the handler between bytecodes: let it land here
        return real_summary(results_dir)

    monkeypatch.setattr(bench.runner, "execute_run", execute_then_ctrl_c)
    monkeypatch.setattr(bench.summary, "write_summary", summary_with_ctrl_c)
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_scenario(models="[selectors]", repetitions="3", duration="0.5s"))
    status = cli.main(["run", str(path), "--results", str(tmp_path / "out"), "--no-plots"])
    out = capsys.readouterr().out
    assert status == 130, out
    assert len(summary_calls) == 1
    (folder,) = (tmp_path / "out").iterdir()
    assert json.loads((folder / "summary.json").read_text())["format_version"] >= 1
    assert "before the results folder was written" not in out
    assert "1 finished run is saved" in out and "summary.json is written" in out, out
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.timeout(90)
@pytest.mark.slow
def test_a_killed_forking_server_is_recorded_as_died_and_bench_run_exits_1(tmp_path, capsys):
    from bench import cli

    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_scenario(models="[forking]", duration="3s"))
    killed: list[int] = []

    def kill_parent() -> None:
        server = wait_for_new_server(psutil.Process(), set())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(server.children()) < 4:
            time.sleep(0.05)  # one child per client: they outlive a SIGKILLed parent
        time.sleep(0.5)
        os.kill(server.pid, signal.SIGKILL)
        killed.append(server.pid)

    killer = threading.Thread(target=kill_parent)
    killer.start()
    status = cli.main(["run", str(path), "--results", str(tmp_path / "out"), "--no-plots"])
    killer.join()
    out = capsys.readouterr().out
    assert killed
    assert status == 1, out
    assert "1 run did not finish ok" in out
    (folder,) = (tmp_path / "out").iterdir()
    runs = pd.read_csv(folder / "runs.csv")
    assert runs["status"].tolist() == ["failed"]
    assert runs["error"][0].startswith("server died during the run (signal 9, SIGKILL, "), runs["error"][0]


@pytest.mark.slow
def test_a_full_disk_while_drawing_figures_is_reported_and_leaves_no_broken_figure(small_disk, monkeypatch, capsys):
    import bench.plots
    from bench import cli

    real_plot = bench.plots.plot_results

    def plot_on_a_full_disk(results_dir, *args, **kwargs):
        fill_disk(small_disk, leave=96 * 1024)  # room for a few figures, not all
        return real_plot(results_dir, *args, **kwargs)

    monkeypatch.setattr(bench.plots, "plot_results", plot_on_a_full_disk)
    path = small_disk.parent / "tiny.yaml"
    path.write_text(tiny_scenario(models="[selectors]", duration="0.5s"))
    status = cli.main(["run", str(path), "--results", str(small_disk / "out")])
    captured = capsys.readouterr()
    assert status == 1, captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    assert "disk full while writing" in captured.err and "free some space" in captured.err, captured.err
    (folder,) = (small_disk / "out").iterdir()
    assert pd.read_csv(folder / "runs.csv")["status"].tolist() == ["ok"]
    assert json.loads((folder / "summary.json").read_text())["format_version"] >= 1
    assert not list(folder.rglob("*.tmp")), "a temporary file was left behind"
    figures = list((folder / "figures").rglob("*.*"))
    assert figures, "no figure fitted: the test does not show that those written are whole"
    for figure in figures:  # whatever was drawn before the disk filled is whole
        data = figure.read_bytes()
        assert data.endswith(b"</svg>\n") if figure.suffix == ".svg" else data[-8:-4] == b"IEND", figure
        assert figure.stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_a_signal_while_the_server_is_stopped_waits_until_it_is_reaped(tmp_path, monkeypatch):
    from bench.runner import Interrupted
    from servers.launch import ServerProcess

    real_stop = ServerProcess.stop
    stopped: list[int] = []

    def stop_with_sigterm(self, *args, **kwargs):
        if not stopped:
            stopped.append(self.pid)
            os.kill(os.getpid(), signal.SIGTERM)  # lands while the server is being stopped
            time.sleep(0.05)  # Python runs the handler between bytecodes: let it land here
        return real_stop(self, *args, **kwargs)

    monkeypatch.setattr(ServerProcess, "stop", stop_with_sigterm)
    scenario = parse_scenario(tiny_scenario(models="[selectors]", repetitions="2", duration="0.5s"))
    with pytest.raises(Interrupted) as info:
        run_scenario(scenario, results_root=tmp_path, finish=False)
    assert info.value.signum == signal.SIGTERM
    runs = pd.read_csv(info.value.results_dir / "runs.csv")
    assert runs["status"].tolist() == ["ok"]  # the run had finished: it is kept whole, the next never starts
    assert runs["server_exit"].tolist() == [0]
    assert session_processes(stopped[0]) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the caller's handlers are back


def test_each_run_reports_its_phases_in_order_and_what_it_cost(tmp_path):
    scenario = parse_scenario(tiny_scenario(models="[selectors]", duration="0.5s"))
    seen: list[tuple[str | None, str, dict]] = []
    run_scenario(
        scenario,
        results_root=tmp_path,
        plots=False,
        on_phase=lambda plan, phase, info: seen.append((plan and plan.model, phase, dict(info))),
    )
    phases = [phase for _model, phase, _info in seen]
    assert phases == [
        "waiting for an idle machine",
        "starting server",
        "starting load generator",
        "warmup",
        "measuring",
        "stopping",
        "done",
        "writing summary",
        "finished",
    ]
    info = {phase: i for _m, phase, i in seen}
    assert info["warmup"]["window_end"] - info["warmup"]["window_start"] == pytest.approx(0.5)
    done = info["done"]
    # the run's wall time splits into the idle wait, the load and the overhead, none negative
    assert done["wall_s"] == pytest.approx(done["idle_wait_s"] + 0.2 + 0.5 + done["overhead_s"])
    assert 0 <= done["idle_wait_s"] and 0 < done["overhead_s"] < done["wall_s"]


@pytest.mark.slow
def test_a_generator_starved_by_a_saturated_server_is_not_called_generator_bound(tmp_path):
    """Server and generator pinned to one CPU (placement shared): each runs while the other waits.

    32 clients keep requests queued at the selectors server and replies
    queued at the (python) generator, so both are always runnable on the
    CPU they share: the generator is short of CPU, and so is the server.
    Before the server's CPU was taken into account this run was called
    generator-bound; it is both saturated: the figures are the one CPU's.
    """
    from bench import vocabulary

    scenario = parse_scenario(
        tiny_scenario(models="[selectors]", placement="shared", generator="{engine: python}").replace(
            "clients: 4", "clients: 32"
        )
    )
    results = run_scenario(scenario, results_root=tmp_path, plots=False)
    row = pd.read_csv(results / "runs.csv").iloc[0]
    assert row["status"] == "ok", row["error"]
    facts = row[list(vocabulary.LIMIT_FACTS)].to_dict()
    assert str(row["server_cpus"]) == str(row["gen_cpus"]), facts  # one CPU for both
    # the generator was short of CPU (the old rule's generator-bound); how busy the server looks
    # depends on what else runs on that CPU, and the decision does not: they shared it
    assert vocabulary.generator_short_of_cpu(row["gen_busy_pct_max"], row["gen_runq_wait_pct_max"]), facts
    assert not row["generator_bound"] and row["both_saturated"], facts
    summary = json.loads((results / "summary.json").read_text())
    assert summary["runs"]["both_saturated"] == 1 and summary["runs"]["generator_bound"] == 0
    assert any(w.startswith("both saturated: selectors") for w in summary["warnings"]), summary["warnings"]


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_server_loop_reaches_the_event_loop_models_alone(tmp_path):
    """server.loop: uvloop runs asyncio on uvloop, and selectors, which has no event loop, as always."""
    scenario = parse_scenario(tiny_scenario(models="[selectors, asyncio]", server="{loop: uvloop}"))
    warned: list[str] = []
    runs = pd.read_csv(run_scenario(scenario, results_root=tmp_path, plots=False, warn=warned.append) / "runs.csv")
    assert (runs["status"] == "ok").all(), runs["error"].tolist()
    assert warned == ["server.loop uvloop applies to asyncio only: selectors has no event loop and runs without it"]
    assert (runs["requests"] > 0).all()
    server = scenario.points()[0].server
    assert [registry.model(m).options_for(server).loop for m in ("selectors", "asyncio")] == ["asyncio", "uvloop"]
