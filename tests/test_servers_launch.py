"""servers.launch.run_server: readiness, start errors, stopping, pinning, leftovers."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path

import psutil
import pytest

from servers.config import ServerOptions
from servers.launch import ServerLeftoverError, ServerStartError, run_server
from servers.registry import PYTHON_MODELS


def test_ready_line_is_the_contract() -> None:
    with run_server("threading", "echo", ServerOptions(backlog=7)) as server:
        assert server.ready == {
            "event": "ready",
            "model": "threading",
            "service": "echo",
            "host": "127.0.0.1",
            "port": server.port,
            "pid": server.pid,
            "backlog": 7,
        }
        assert server.port > 0 and server.alive()
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        assert server.stop() == 0
        assert server.stop() == 0  # idempotent
        assert not server.alive() and not server.killed
        assert server.extra_stdout == b""


def test_ipv6_loopback(ipv6_loopback: str) -> None:
    for model in ("sequential", "selectors", "asyncio"):
        with run_server(model, "echo", ServerOptions(host=ipv6_loopback)) as server:
            assert server.host == ipv6_loopback
            with socket.create_connection(server.address, timeout=10) as sock:
                sock.sendall(b"v6")
                assert sock.recv(2) == b"v6"


def test_exit_before_ready_reports_status_and_stderr() -> None:
    with pytest.raises(ServerStartError) as info:
        with run_server("sequential", "file"):  # no --root
            pytest.fail("must not get here")
    message = str(info.value)
    assert "exited before it was ready" in message
    assert "exit status 2" in message
    assert "add --root DIR" in message


def test_ready_timeout_stops_the_process() -> None:
    before = set(psutil.Process().children())
    # 1 ms: far less than any Python start-up, so the wait always times out.
    with pytest.raises(ServerStartError, match="was not ready within 0.001 s"):
        with run_server("sequential", "echo", ready_timeout_s=0.001):
            pass
    assert set(psutil.Process().children()) - before == set()  # stopped and reaped, not left running


def test_exception_in_the_block_stops_the_server() -> None:
    with pytest.raises(KeyboardInterrupt):
        with run_server("forking", "echo") as server:
            sock = socket.create_connection(server.address, timeout=10)
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"  # a child now exists
            raise KeyboardInterrupt
    sock.close()
    assert not server.alive()
    assert server.popen.returncode == 0
    assert server.leftover_processes() == []


def test_cpus_pin_the_server_and_its_children() -> None:
    cpu = min(os.sched_getaffinity(0))
    with run_server("forking", "echo", cpus={cpu}) as server:
        assert psutil.Process(server.pid).cpu_affinity() == [cpu]
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            (child,) = psutil.Process(server.pid).children()
            assert child.cpu_affinity() == [cpu]


def test_stderr_path_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "server.stderr"
    (tmp_path / "big").write_bytes(b"\0" * (8 * 1024 * 1024))
    with run_server("selectors", "file", ServerOptions(root=tmp_path), stderr_path=path) as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"big\n")
            assert sock.recv(16).startswith(b"OK ")
        # The client left mid-file: counted, and said in one line at stop, which is in the file.
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"missing\n")
            assert sock.recv(64).startswith(b"ERR 404")
        server.stop()
        tail = server.stderr_tail()
    assert path.exists()
    assert tail == path.read_text().strip()
    assert tail.startswith("selectors file: 1 connection closed by the client with a reply in flight")


@pytest.mark.slow
def test_leftover_processes_are_killed_and_reported(tmp_path: Path) -> None:
    # A sitecustomize that leaves a grandchild behind in the server's session,
    # the way a careless server would.
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import os, sys, time
            if os.environ.get("SOCKBENCH_TEST_LEAK") and sys.argv[:1] != ["-c"]:
                if os.fork() == 0:
                    if os.fork() == 0:
                        time.sleep(120)
                    os._exit(0)
                os.wait()
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "SOCKBENCH_TEST_LEAK": "1"}
    with pytest.raises(ServerLeftoverError) as info:
        with run_server("sequential", "echo", env=env) as server:
            leaked = [pid for pid in server.leftover_processes() if pid != server.pid]
            assert len(leaked) == 1
    assert info.value.pids == leaked
    # Killed: gone, or at most a zombie waiting for init to reap it.
    try:
        assert psutil.Process(leaked[0]).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass


def _wait_until_only_listening(pid: int, timeout_s: float) -> None:
    """Return once the server's process tree holds no TCP socket but its listeners."""
    import time

    deadline = time.monotonic() + timeout_s
    held: list[str] = []
    while time.monotonic() < deadline:
        held = []
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                held += [c.status for c in proc.net_connections(kind="tcp") if c.status != psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                continue
        if not held:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server still holds connections after {timeout_s} s: {held}")


@pytest.mark.parametrize("model", PYTHON_MODELS)
def test_clients_leaving_with_a_reply_in_flight_make_one_summary_line_not_errors(model: str, tmp_path: Path) -> None:
    import struct

    path = tmp_path / "server.stderr"
    leaving = 5
    with run_server(model, "echo", stderr_path=path) as server:
        for _ in range(leaving):
            with socket.create_connection((server.host, server.port), timeout=5) as sock:
                sock.sendall(b"x" * 65536)  # a request the server is echoing ...
                sock.recv(1)  # ... and has started to answer when the client resets the connection
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with socket.create_connection((server.host, server.port), timeout=5) as sock:  # still serving
            sock.sendall(b"ping")
            assert sock.recv(4) == b"ping"
        # The summary counts the resets a handler has seen; on a busy machine
        # the last handler may still be sending when the stop comes. Wait
        # (bounded) until the server holds no connection any more, so the
        # stop summary has the whole count to report.
        _wait_until_only_listening(server.pid, timeout_s=15.0)
    lines = path.read_text().splitlines()
    assert not [line for line in lines if "Error" in line], lines
    summary = [line for line in lines if "closed by the client with a reply in flight" in line]
    assert len(summary) == 1, lines
    assert summary[0].startswith(f"{model} echo: {leaving} connections"), summary
