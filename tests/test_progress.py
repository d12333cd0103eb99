"""bench run's live figure: bytes on the wire of a real server, shown on a terminal only, at most once a second."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from bench.monitor import run_namespace
from bench.monitor.wire import namespace_bytes
from bench.progress import WireRate
from servers.config import ServerOptions
from servers.launch import run_server
from servers.processes import popen_killer

REPO = Path(__file__).resolve().parent.parent
#: Bytes echoed through the test server: large beside the headers and ACKs the counters add.
ECHOED = 4 * 2**20


def _echo(port: int, nbytes: int) -> None:
    block = os.urandom(64 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(nbytes // len(block)):
            sock.sendall(block)
            got = 0
            while got < len(block):
                chunk = sock.recv(len(block) - got)
                assert chunk, "the echo server closed the connection"
                got += len(chunk)


def test_the_wire_counts_a_runs_traffic_each_packet_once():
    with run_namespace() as ns:
        if not ns.own:
            pytest.skip(f"no network namespace of the run's own here: {ns.why_not}")
        with run_server("selectors", "echo", ServerOptions()) as server:
            before = namespace_bytes(server.pid)
            assert before is not None
            _echo(server.port, ECHOED)
            after = namespace_bytes(server.pid)
            assert after is not None
            # both directions once each: the requests and their echo, plus TCP/IP headers and ACKs;
            # counting loopback's received bytes too would double it
            assert 2 * ECHOED <= after - before < 2.2 * ECHOED
        assert namespace_bytes(server.pid) is None  # the server has gone: no figure, no exception


def test_the_rate_is_read_at_most_once_a_second_and_stops_with_the_counter():
    readings = iter([1_000_000, 3_000_000, 9_000_000, None])
    calls: list[int] = []

    def read():
        calls.append(1)
        return next(readings)

    meter = WireRate(read, now=100.0)
    assert meter.text(100.5) == "" and len(calls) == 1  # no figure before a second has passed
    assert meter.text(101.0) == "~2 MB/s on the wire so far" and len(calls) == 2
    assert meter.text(101.5) == "~2 MB/s on the wire so far" and len(calls) == 2  # not read again yet
    assert meter.text(102.0) == "~4 MB/s on the wire so far"  # since the phase began: 8 MB in 2 s
    assert meter.text(103.0) == "" and meter.text(104.0) == "" and len(calls) == 4


SCENARIO = """\
name: live
service: echo
models: [selectors]
duration: 3s
warmup: 500ms
repetitions: 2
placement: none
description: the live figure's test
load:
  clients: 4
  message_bytes: 16KiB
monitor:
  idle_wait: 0s
"""


def _bench_run(tmp_path: Path, *, tty: bool, settings: tuple[str, ...] = ()) -> str:
    """Run ``bench run`` on SCENARIO (``settings``: ``--set`` values) with its standard output on a
    pseudo-terminal (``tty``) or a pipe."""
    tmp_path.mkdir()
    scenario = tmp_path / "live.yaml"
    scenario.write_text(SCENARIO)
    command = [sys.executable, "-m", "bench", "run", str(scenario), "--no-plots", "--results", str(tmp_path / "r")]
    command += [arg for value in settings for arg in ("--set", value)]
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "cache"), TERM="xterm")
    env.pop("COLUMNS", None)
    if not tty:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))  # rows, columns: a wide terminal
    output = bytearray()
    try:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        slave = -1
        with popen_killer(proc):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: every holder of the terminal's other end has closed it
                        break
                    if not data:
                        break
                    output += data
                elif proc.poll() is not None:
                    break
            assert proc.wait(timeout=10) == 0, output.decode(errors="replace")
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return output.decode(errors="replace")


def test_bench_run_shows_the_live_figure_on_a_terminal_and_one_line_per_run_elsewhere(tmp_path):
    with run_namespace() as ns:
        if not ns.own:
            pytest.skip(f"the figure is shown only in a namespace of the run's own: {ns.why_not}")
    # one repetition is enough to see the figure: each measured phase of 3 s shows it (once a second)
    shown = _bench_run(tmp_path / "tty", tty=True, settings=("repetitions=1",))
    assert "MB/s on the wire so far" in shown, shown[-2000:]
    figures = [float(t.split("~")[-1].replace(",", "")) for t in shown.split(" MB/s on the wire")[:-1]]
    assert figures and all(f > 0 for f in figures)  # 4 clients echoing 16 KiB move bytes every second
    piped = _bench_run(tmp_path / "pipe", tty=False)
    assert "on the wire" not in piped and "\x1b" not in piped
    run_lines = [line for line in piped.splitlines() if line.startswith("selectors")]
    assert len(run_lines) == 2, piped  # one line per run, nothing live
