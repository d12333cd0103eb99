"""A crashing handler (``--crash``) and preloaded data (``--preload-mib``), on real servers.

What survives each kind of crash is the registry's fact
(:attr:`servers.registry.Model.process_crash`); these tests hold the
running servers to it: a raise ends its connection only, ``exit`` and
``segfault`` end the handling process (one connection in forking, a worker
that prefork re-forks, everything in a single-process server). The
copy-on-write tests measure the USS of a forked child after it used the
preloaded data: only writes (reference counts, the collector's headers)
copy pages.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator

import pandas as pd
import psutil
import pytest

from bench.plots.lessons import cow_figure, crash_figure
from bench.runner import run_scenario
from bench.scenario import ScenarioError, parse_scenario
from bench.stats import load_results
from servers import cli, registry
from servers.config import ServerOptions
from servers.launch import ServerProcess, run_server

from conftest import one_quick
from fake_results import write_fake_results

#: Generous for a busy 2-CPU machine: a round trip on loopback takes well under a millisecond.
IO_TIMEOUT_S = 10.0

#: The request each crashing test server fails at (the first two are answered).
CRASH_AT = 3

KINDS = ("raise", "exit", "segfault")
SURVIVAL_MODELS = ("threading", "forking", "selectors", "prefork")


def echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        if not chunk:
            break
        got += chunk
    return got


def connection_ends(sock: socket.socket) -> bool:
    """True when the server closes or resets ``sock`` (rather than answering) within the timeout."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


@contextlib.contextmanager
def client(server: ServerProcess) -> Iterator[socket.socket]:
    sock = socket.create_connection(server.address, timeout=IO_TIMEOUT_S)
    try:
        yield sock
    finally:
        sock.close()


def wait_exit(server: ServerProcess, timeout_s: float = IO_TIMEOUT_S) -> int | None:
    deadline = time.monotonic() + timeout_s
    while server.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.popen.poll()


def expected_scope(model: str, kind: str) -> str:
    """What the registry says a crash of ``kind`` in ``model``'s handler takes down."""
    return "connection" if kind == "raise" else registry.model(model).process_crash


@pytest.mark.parametrize(("model", "kind"), one_quick([(m, k) for k in KINDS for m in SURVIVAL_MODELS]))
def test_a_crashing_handler_takes_down_what_the_registry_says(model: str, kind: str) -> None:
    options = ServerOptions(crash=kind, crash_every=CRASH_AT, workers=2 if model == "prefork" else 0)
    with run_server(model, "echo", options) as server:
        with client(server) as sock:
            for i in range(CRASH_AT - 1):
                assert echo(sock, b"%d" % i) == b"%d" % i, server.stderr_tail()
            assert connection_ends(sock), f"request {CRASH_AT} was answered: {server.stderr_tail()}"
        scope = expected_scope(model, kind)
        if scope == "server":
            status = wait_exit(server)
            assert status == (1 if kind == "exit" else -signal.SIGSEGV), server.stderr_tail()
            assert f"crashing: --crash {kind} at request {CRASH_AT}" in server.stderr_tail()
            return
        assert server.alive(), server.stderr_tail()
        if scope == "worker":  # the parent sees its worker die and forks another
            deadline = time.monotonic() + IO_TIMEOUT_S
            while "(restart 1)" not in server.stderr_tail() and time.monotonic() < deadline:
                time.sleep(0.02)
            died = "exit status 1" if kind == "exit" else "killed by SIGSEGV"
            assert f"died ({died})" in server.stderr_tail()
        with client(server) as again:  # the server serves a new connection from its first request on
            assert echo(again, b"alive") == b"alive", server.stderr_tail()
        if kind == "raise":
            assert f"HandlerCrash: --crash raise at request {CRASH_AT}" in server.stderr_tail()
        assert server.stop() == 0, server.stderr_tail()
        if model == "prefork":
            assert server.stopped == {"event": "stopped", "worker_restarts": 0 if kind == "raise" else 1}
        assert server.extra_stdout == b""


@pytest.mark.slow
@pytest.mark.parametrize("model", [m for m in registry.HANDLER_OPTION_MODELS if m not in SURVIVAL_MODELS])
def test_every_model_survives_a_handler_that_raises(model: str) -> None:
    if registry.unavailable(model):
        pytest.skip(registry.unavailable(model))
    with run_server(model, "echo", ServerOptions(crash="raise", crash_every=CRASH_AT)) as server:
        with client(server) as sock:
            for i in range(CRASH_AT - 1):
                assert echo(sock, b"%d" % i) == b"%d" % i
            assert connection_ends(sock)
        with client(server) as again:
            assert echo(again, b"alive") == b"alive", server.stderr_tail()
        assert server.stop() == 0, server.stderr_tail()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--crash", "exit"], "--crash exit needs --crash-every N"),
        (["--crash-every", "5"], "--crash-every 5 counts requests between crashes of a kind: add --crash"),
        (["--crash", "boom", "--crash-every", "1"], "invalid choice: 'boom' (choose from 'none', 'raise', 'exit'"),
        (["--crash-every", "-1", "--crash", "raise"], "-1 is below the minimum 0"),
        (["--preload-use", "read"], "--preload-use says how the preloaded data is used: add --preload-mib N"),
        (["--preload-freeze"], "--preload-freeze says how the preloaded data is used"),
        (["--preload-mib", "100000"], "100000 is above the maximum 16384"),
        (["--preload-mib", "1", "--preload-use", "touch"], "invalid choice: 'touch'"),
    ],
)
def test_bad_crash_and_preload_options_are_refused_with_the_fix(argv: list[str], says: str, capsys) -> None:
    assert cli.main(["threading", "echo", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert says in err, err
    assert "Traceback" not in err


def test_the_c_ceiling_refuses_the_handler_options(capsys) -> None:
    assert cli.main(["c-reference", "echo", "--crash", "raise", "--crash-every", "1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--crash acts in sockbench's Python handlers, which 'c-reference' does not run" in err, err


SCENARIO = """
name: crashy
service: echo
models: [{models}]
server: {server}
load:
  clients: 2
  message_bytes: 512
duration: 1s
warmup: 200ms
repetitions: 1
placement: none
monitor:
  idle_wait: 0s
"""


@pytest.mark.parametrize(
    ("models", "server", "says"),
    [
        ("threading", "{crash: raise}", "server.crash_every: crash needs crash_every"),
        ("threading", "{crash_every: 10}", "server.crash: crash_every counts requests between crashes"),
        ("threading", "{preload_use: read}", "server.preload_use: says how preloaded data is used"),
        ("threading, c-reference", "{crash: exit, crash_every: 5}", "c-reference does not run sockbench's Python"),
        ("threading", "{crash: explode, crash_every: 5}", "server.crash"),
    ],
)
def test_a_scenario_with_a_crash_or_preload_missing_its_partner_is_refused(models: str, server: str, says: str) -> None:
    with pytest.raises(ScenarioError) as error:
        parse_scenario(SCENARIO.format(models=models, server=server))
    assert says in str(error.value), str(error.value)


def test_a_sweep_of_crash_kinds_has_one_point_without_crashes() -> None:
    scenario = parse_scenario(
        SCENARIO.format(models="threading", server="{crash: [none, raise], crash_every: [100, 10]}")
    )
    servers = {(p.server.crash, p.server.crash_every) for p in scenario.points()}
    assert servers == {("none", 0), ("raise", 100), ("raise", 10)}, servers


@pytest.mark.slow
def test_the_runner_records_a_server_its_handler_killed_and_prefork_restarts(tmp_path) -> None:
    # exit at the 300th request: a few milliseconds into the run for threading, which dies;
    # prefork's workers die as often and are re-forked, so its run is ok.
    scenario = parse_scenario(
        SCENARIO.format(models="threading, prefork", server="{crash: exit, crash_every: 300, workers: 2}")
    )
    folder = run_scenario(scenario, results_root=tmp_path, plots=False)
    runs = pd.read_csv(folder / "runs.csv").set_index("model")
    threading_run, prefork_run = runs.loc["threading"], runs.loc["prefork"]
    assert threading_run["status"] == "failed"
    assert threading_run["error"].startswith("server died during the run (exit status 1, ")
    assert "s into the measured window" in threading_run["error"]
    assert -1.0 <= threading_run["server_died_s"] <= 1.5  # warm-up 0.2 s, window 1 s, a sample every 0.1 s
    assert "crashing: --crash exit at request 300" in threading_run["error"]
    assert prefork_run["status"] == "ok", prefork_run["error"]
    assert pd.isna(prefork_run["server_died_s"])
    assert prefork_run["server_restarts"] >= 1
    assert prefork_run["requests"] > 300
    assert pd.isna(threading_run["server_restarts"])  # threading has no supervising parent
    # the crashes figure shows the dead server and the living one in its bottom row, each at its model's row
    fig = crash_figure(load_results(folder))
    assert fig is not None
    fate = fig.axes[2]
    marks = {(line.get_marker(), line.get_ydata()[0]) for line in fate.get_lines()}
    models = [t.get_text() for t in fate.get_yticklabels()]
    assert marks == {("X", models.index("threading")), ("o", models.index("prefork"))}, (marks, models)
    assert any(t.get_text().startswith("died ") for t in fate.texts)
    assert any(t.get_text().endswith(" re-forked") for t in fate.texts)


def test_folders_without_the_lessons_have_no_lesson_figures(tmp_path) -> None:
    results = load_results(write_fake_results(tmp_path / "r", models=("forking", "threading"), repetitions=1))
    assert crash_figure(results) is None
    assert cow_figure(results) is None


# ---------------------------------------------------------------------------
# copy-on-write

#: MiB preloaded by the copy-on-write tests: 32 MiB of records hold ~13 MiB
#: of list headers, the part refcounts and the collector write (the ints
#: inside are not written), far above a forked child's own few MiB.
PRELOAD_MIB = 32

#: Copies counted only above this share of the preload: a child's USS varies
#: by a few MiB with what it allocates; a quarter of 32 MiB is not noise.
COPIED = PRELOAD_MIB * 2**20 // 4


def child_uss_after_using_it_all(use: str, freeze: bool) -> int:
    """USS of a forking server's child after its requests went once over all the preloaded data."""
    options = ServerOptions(preload_mib=PRELOAD_MIB, preload_use=use, preload_freeze=freeze)
    with run_server("forking", "echo", options, ready_timeout_s=60.0) as server:
        with client(server) as sock:
            requests = PRELOAD_MIB * 2**20 // (64 * 1024) + 1  # one span of 64 KiB each, once around
            for i in range(requests):
                assert echo(sock, b"%d" % i) == b"%d" % i
            (child,) = psutil.Process(server.pid).children()
            return int(child.memory_full_info().uss)


@pytest.mark.slow
def test_only_writes_copy_preloaded_pages_into_a_forked_child() -> None:
    uss = {
        (use, freeze): child_uss_after_using_it_all(use, freeze)
        for use, freeze in (
            ("read", False),
            ("iterate", False),
            ("iterate", True),
            ("collect", False),
            ("collect", True),
        )
    }
    text = {k: f"{v / 2**20:.1f} MiB" for k, v in uss.items()}
    read = uss[("read", False)]
    assert uss[("iterate", False)] - read > COPIED, text  # refcounts written: the pages are copied
    assert uss[("iterate", True)] - read > COPIED, text  # gc.freeze() does not stop refcounting
    assert uss[("collect", False)] - uss[("collect", True)] > COPIED, text  # it stops the collector's writes
    assert uss[("collect", True)] - read < COPIED, text


def test_the_preload_is_built_before_the_server_is_ready() -> None:
    with run_server("forking", "echo", ServerOptions(preload_mib=16, preload_use="read")) as server:
        rss = psutil.Process(server.pid).memory_info().rss
        with client(server) as sock:
            assert echo(sock, b"hi") == b"hi"
    assert rss > 16 * 2**20, rss
