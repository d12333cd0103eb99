"""The bench command line: help, version, completion, and the exit status of every command."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench import cli
from servers.config import ServerOptions
from servers.launch import run_server
from servers.processes import popen_killer

REPO = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ("run", "validate", "serve", "load", "calibrate", "plot", "report", "compare", "completion", "columns")


def status_of(argv: list[str]) -> int:
    """bench's exit status for ``argv``, run in this process (argparse's own errors exit 2)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_top_level_help_has_examples_and_exit_statuses_and_no_markup(capsys):
    assert status_of(["-h"]) == 0
    text = capsys.readouterr().out
    assert "``" not in text and "[bold]" not in text and ":func:" not in text
    assert "examples:\n  bench validate scenarios/quick.yaml" in text
    for code in ("0 ", "1 ", "2 ", "99 ", "130 "):
        assert re.search(rf"^  {code}", text, re.M), code
    for name in SUBCOMMANDS:
        assert re.search(rf"^    {name}\b", text, re.M), name


def test_version(capsys):
    assert status_of(["--version"]) == 0
    assert re.fullmatch(r"bench \(sockbench\) \S+\n", capsys.readouterr().out)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_names_every_subcommand(shell, capsys):
    assert status_of(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert len(script) > 1000 and "bench" in script
    for name in SUBCOMMANDS:
        assert name in script, name
    assert "--threshold" in script and "--set" in script


def test_a_bad_shell_or_command_is_a_usage_error(capsys):
    assert status_of(["completion", "ksh"]) == 2
    assert "invalid choice: 'ksh' (choose from 'bash', 'zsh'" in capsys.readouterr().err
    assert status_of(["rn", "x.yaml"]) == 2
    assert status_of([]) == 2


def test_bench_serve_names_itself(capsys):
    assert status_of(["serve", "-h"]) == 0
    assert capsys.readouterr().out.startswith("usage: bench serve ")
    assert status_of(["serve", "quantum", "echo"]) == 2
    assert capsys.readouterr().err.startswith("bench serve: error: unknown model 'quantum'")


def test_every_command_exits_2_on_bad_input(tmp_path, capsys):
    missing = str(tmp_path / "nothing")
    for argv in (
        ["run", missing + ".yaml"],
        ["validate", missing + ".yaml"],
        ["plot", missing],
        ["report", missing],
        ["compare", missing],
        ["compare", missing, missing],
        ["columns", "hist.csv"],
        ["calibrate", "--duration", "0"],
        ["load", "echo", "127.0.0.1:1", "--clients", "0", "--duration", "1"],
        ["load", "echo", "10.1.2.3:7", "--clients", "1", "--duration", "1"],
        ["load", "echo", "127.0.0.1:1", "--clients", "1", "--duration", "1", "--threshold", "p99 << 1ms"],
    ):
        assert status_of(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_bench_serve_exits_1_when_it_cannot_listen(capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        assert status_of(["serve", "threading", "echo", "--port", str(taken.getsockname()[1])]) == 1
    assert "bench serve: error:" in capsys.readouterr().err


def test_plurals_in_what_validate_prints(tmp_path, capsys):
    path = tmp_path / "one.yaml"
    path.write_text("name: one\nservice: echo\nmodels: [threading]\nrepetitions: 1\nload: {message_bytes: 64}\n")
    assert status_of(["validate", str(path)]) == 0
    assert "1 model x 1 point x 1 repetition = 1 run," in capsys.readouterr().out


def _load_workers_of(pid: int, within_s: float) -> list[psutil.Process]:
    """The load workers ``bench load`` (pid) has spawned, once there is one.

    Any child is not enough: on a fresh cache the first children are the
    compiler building the native engine (``cc --version``, then ``cc``), which
    come and go before a worker starts.
    """
    parent = psutil.Process(pid)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = []
        for child in parent.children(recursive=True):
            try:
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            if "bench.loadgen.worker" in cmdline or (cmdline and os.path.basename(cmdline[0]) == "loadgen"):
                found.append(child)
        if found:
            return found
        time.sleep(0.05)
    return []


def test_sigterm_stops_bench_load_with_143_and_reaps_its_workers():
    with run_server("selectors", "echo", ServerOptions()) as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench",
                "load",
                "echo",
                f"127.0.0.1:{server.port}",
                "--clients",
                "2",
                "--duration",
                "30",
                "--workers",
                "1",
                "--message-bytes",
                "64",
            ],
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with popen_killer(proc):
            workers = _load_workers_of(proc.pid, within_s=20)
            assert workers, "the load generator started no worker"
            time.sleep(0.3)  # let the worker settle into its load loop
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "interrupted by SIGTERM" in err
        assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
