"""The C reference programs: compile-and-cache, the epoll echo server, the echo client, the c-reference model.

The server is started directly (its binary) as well as through
``python -m servers c-reference`` (exec'd from Python). What every echo
server must do (every byte back, twenty clients, a client that never reads,
the backlog, SIGTERM and SIGINT with live connections) the conformance suite
checks for c-reference too; here is what only the C programs have. Every
process started here is stopped and reaped in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from servers import native
from servers.config import ServerOptions
from servers.processes import popen_killer

pytestmark = pytest.mark.needs_cc

#: Bounds every blocking step of these tests: loopback answers in microseconds.
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def server_bin() -> Path:
    path = native.build("echo_server")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def client_bin() -> Path:
    path = native.build("echo_client")
    assert path is not None
    return path


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float = TIMEOUT_S) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout_s)
        assert ready, f"no line within {timeout_s} s (got {data!r})"
        chunk = os.read(fd, 1)
        assert chunk, f"process exited before a full line: {data!r}"
        data += chunk
    return data


@contextlib.contextmanager
def c_server(
    binary: Path, host: str = "127.0.0.1", backlog: int = 64
) -> Iterator[tuple[subprocess.Popen[bytes], dict]]:
    proc = subprocess.Popen([str(binary), host, "0", str(backlog)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with popen_killer(proc, TIMEOUT_S):
        line = _read_line(proc)
        yield proc, json.loads(line) | {"_raw": line.decode()}


def _echo(host: str, port: int, payload: bytes, chunk: int) -> bytes:
    """Send ``payload`` in ``chunk``-sized pieces from a thread while reading the echo back."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.connect((host, port))

        def send() -> None:
            for i in range(0, len(payload), chunk):
                sock.sendall(payload[i : i + chunk])

        sender = threading.Thread(target=send)
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            data = sock.recv(65536)
            if not data:
                break
            received += data
        sender.join(TIMEOUT_S)
        return bytes(received)


# --------------------------------------------------------------------------
# native.build


def test_build_caches_and_does_not_recompile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKBENCH_NATIVE_CACHE", str(tmp_path))
    first = native.build("echo_client")
    assert first is not None and first.is_file() and os.access(first, os.X_OK)
    assert tmp_path in first.parents
    mtime = first.stat().st_mtime_ns

    def no_compile(*args: object) -> None:
        raise AssertionError("compiled again although the cached binary exists")

    monkeypatch.setattr(native, "_compile", no_compile)
    second = native.build("echo_client")
    assert second == first
    assert second.stat().st_mtime_ns == mtime
    assert not list(first.parent.glob("*.tmp")), "temporary files left in the cache folder"


def test_cache_key_changes_with_source(tmp_path: Path) -> None:
    cc = native.compiler()
    assert cc is not None
    assert native.cache_key(b"int main(void){return 0;}", cc) != native.cache_key(b"int main(void){return 1;}", cc)


def test_no_compiler_returns_none_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no cc, gcc or clang
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("SOCKBENCH_NATIVE_CACHE", str(tmp_path / "cache"))
    assert native.compiler() is None
    assert native.build("echo_server") is None
    note = native.why_unavailable()
    assert "no C compiler" in note and "\n" not in note
    assert not (tmp_path / "cache").exists()


def test_compile_failure_is_an_error_with_the_compiler_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return undefined_name_here; }\n")
    monkeypatch.setenv("SOCKBENCH_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "source_path", lambda name: broken)
    with pytest.raises(native.NativeBuildError, match="undefined_name_here"):
        native.build("broken")
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == [], f"a failed compile left files: {leftovers}"


def test_unknown_program_name() -> None:
    with pytest.raises(FileNotFoundError, match="no C program named"):
        native.build("does_not_exist")


# --------------------------------------------------------------------------
# the C echo server


def test_ready_line_matches_the_python_models(server_bin: Path) -> None:
    with c_server(server_bin, backlog=7) as (proc, ready):
        expected = {
            "event": "ready",
            "model": "c-reference",
            "service": "echo",
            "host": "127.0.0.1",
            "port": ready["port"],
            "pid": proc.pid,
            "backlog": 7,
        }
        assert ready["port"] > 0
        # Byte for byte what json.dumps prints for the Python models.
        assert ready["_raw"] == json.dumps(expected) + "\n"


def test_ipv6(server_bin: Path, ipv6_loopback: str) -> None:
    with c_server(server_bin, host=ipv6_loopback) as (_, ready):
        assert ready["host"] == ipv6_loopback
        assert _echo(ipv6_loopback, ready["port"], b"hello over IPv6", 5) == b"hello over IPv6"


def test_bad_arguments(server_bin: Path) -> None:
    out = subprocess.run([str(server_bin), "127.0.0.1", "0", "many"], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 2 and "backlog" in out.stderr


def test_port_in_use_is_one_line_and_exit_1(server_bin: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        out = subprocess.run(
            [str(server_bin), "127.0.0.1", str(port), "5"], capture_output=True, text=True, timeout=TIMEOUT_S
        )
    assert out.returncode == 1
    assert "cannot listen" in out.stderr and out.stdout == ""


# --------------------------------------------------------------------------
# the C echo client


def _client(client_bin: Path, port: int, *extra: str, host: str = "127.0.0.1") -> dict:
    out = subprocess.run(
        [str(client_bin), "--host", host, "--port", str(port), *extra],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 3,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_client_against_c_server(server_bin: Path, client_bin: Path) -> None:
    with c_server(server_bin) as (_, ready):
        r = _client(client_bin, ready["port"], "--connections", "3", "--duration", "0.3", "--warmup", "0.05")
    assert r["mode"] == "persistent" and r["connections"] == 3 and r["message_bytes"] == 1024
    assert r["round_trips"] > 0 and r["errors"] == 0 and r["connect_errors"] == 0
    assert r["rt_per_s"] == pytest.approx(r["round_trips"] / r["duration_s"], rel=1e-3)
    assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"] <= r["max_us"]
    assert r["cpu_pct"] > 0


def test_client_large_messages(server_bin: Path, client_bin: Path) -> None:
    with c_server(server_bin) as (_, ready):
        r = _client(client_bin, ready["port"], "--connections", "2", "--size", str(300_001), "--duration", "0.3")
    assert r["round_trips"] > 0 and r["errors"] == 0


def test_client_connect_mode(server_bin: Path, client_bin: Path) -> None:
    with c_server(server_bin) as (_, ready):
        r = _client(client_bin, ready["port"], "--connections", "2", "--duration", "0.2", "--connect-mode")
    assert r["mode"] == "connect"
    assert r["round_trips"] > 0 and r["errors"] == 0 and r["connect_errors"] == 0


def test_client_counts_wrong_replies_as_errors(client_bin: Path) -> None:
    """Against a server that answers with the wrong bytes, nothing counts as a round trip."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def bad_echo() -> None:
            listener.settimeout(TIMEOUT_S)
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn:
                    data = conn.recv(4096)
                    conn.sendall(bytes(b ^ 0xFF for b in data))
                    conn.recv(4096)

        t = threading.Thread(target=bad_echo)
        t.start()
        r = _client(client_bin, port, "--connections", "1", "--size", "100", "--duration", "0.2")
        t.join(TIMEOUT_S)
    assert r["round_trips"] == 0 and r["errors"] == 1
    assert r["p50_us"] is None


def test_client_cannot_connect(client_bin: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connect is refused
        out = subprocess.run(
            [str(client_bin), "--host", "127.0.0.1", "--port", str(port), "--duration", "0.1"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    assert out.returncode == 1 and "failed" in out.stderr


# --------------------------------------------------------------------------
# the c-reference model


def test_model_refuses_file_service_and_cpu_work() -> None:
    from servers import registry
    from servers.service import SetupError

    model = registry.model("c-reference")
    with pytest.raises(SetupError, match="it provides: echo"):
        model.check("file", ServerOptions(root=Path("/tmp")))
    with pytest.raises(SetupError, match="cpu-work-us"):
        model.check("echo", ServerOptions(cpu_work_us=10))
    model.check("echo", ServerOptions())  # accepted


def test_model_without_compiler_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from servers.models import c_reference

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("SOCKBENCH_NATIVE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(c_reference.CReferenceUnavailable, match="no C compiler"):
        c_reference.serve("echo", ServerOptions(), lambda host, port: None)


def test_command_line_refuses_cpu_work_without_traceback() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "servers", "c-reference", "echo", "--cpu-work-us", "5"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 3,
    )
    assert out.returncode != 0
    assert "cpu-work-us" in out.stderr and "Traceback" not in out.stderr


def test_model_through_run_server_is_the_c_program(server_bin: Path) -> None:
    from servers.launch import run_server

    with run_server("c-reference", "echo", ServerOptions(backlog=5)) as server:
        assert server.ready["model"] == "c-reference" and server.ready["backlog"] == 5
        assert server.ready["pid"] == server.pid  # exec'd: the process runner started is the server
        assert Path(psutil.Process(server.pid).exe()).resolve() == server_bin.resolve()
        assert _echo(server.host, server.port, b"ping" * 1000, 1000) == b"ping" * 1000
        status = server.stop()
    assert status == 0
