"""Per-connection timeouts and the accept back-off, against every model over real sockets.

Each timeout test starts a server with short timeouts through ``run_server``,
plays one kind of hostile or broken client (silent, slowloris, never
reading), measures how long the server takes to close the connection, reads
the reason off the server's stderr, and checks a normal client is served
afterwards. With a timeout at 0 the same client stays connected: the
unbounded standard library behaviour that sockbench teaches.

The back-off test lowers the server's descriptor limit, floods it with more
connections than it may hold, and measures its CPU and log over 3 s.
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from servers.config import ServerOptions
from servers.launch import ServerProcess, run_server
from servers.registry import PYTHON_MODELS

from conftest import one_quick, served_by

ECHO_MODELS = served_by("echo")
C_MODELS = tuple(model for model in ECHO_MODELS if model not in PYTHON_MODELS)

#: Short timeouts keep the tests fast; the margin absorbs a machine shared
#: with other work (a close may come a sweep interval, 5%, late by design).
IDLE_S = 0.5
REQUEST_S = 1.0
SEND_S = 0.5
MARGIN_S = 1.0
#: The file test's idle timeout: longer than REQUEST_S, so that a slowloris
#: closed in time was closed by the request timeout.
FILE_IDLE_S = 1.5

#: Slowloris: one byte this often, never a newline.
TRICKLE_S = 0.2

#: Large enough that loopback socket buffers (a few MiB) cannot take it all.
BIG_FILE_BYTES = 64 * 1024 * 1024

#: Poll events meaning "the peer closed or reset": not POLLIN, which a never-reading client has pending anyway.
CLOSED_EVENTS = select.POLLRDHUP | select.POLLHUP | select.POLLERR


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    (root / "small").write_bytes(b"hello\n")
    with open(root / "big", "wb") as big:
        big.truncate(BIG_FILE_BYTES)  # sparse: costs no disk
    return root


@contextlib.contextmanager
def server_for(model: str, service: str, root: Path, **options: object) -> Iterator[ServerProcess]:
    if service == "file":
        options["root"] = root
    with run_server(model, service, ServerOptions(**options)) as server:  # type: ignore[arg-type]
        yield server
        assert server.alive(), server.stderr_tail()


def seconds_until_closed(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the server closes or resets ``sock`` (without reading from it), None if not within ``limit_s``."""
    poller = select.poll()
    poller.register(sock, CLOSED_EVENTS)
    start = time.monotonic()
    if not poller.poll(limit_s * 1000):
        return None
    return time.monotonic() - start


def stderr_lines(server: ServerProcess, needle: str) -> list[str]:
    return [line for line in server.stderr_tail(10_000).splitlines() if needle in line]


def assert_served(server: ServerProcess, service: str) -> None:
    """A well-behaved client still gets its answer."""
    request, answer = (b"ping\n", b"ping\n") if service == "echo" else (b"small\n", b"OK 6\nhello\n")
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while len(received) < len(answer) and (chunk := sock.recv(len(answer) - len(received))):
            received += chunk
        assert received == answer


def idle_client(server: ServerProcess, limit_s: float) -> float | None:
    with socket.create_connection(server.address, timeout=5) as sock:
        return seconds_until_closed(sock, limit_s)


@contextlib.contextmanager
def slowloris(server: ServerProcess) -> Iterator[socket.socket]:
    """A client sending one byte of a request line every TRICKLE_S, never finishing it, until closed."""
    sock = socket.create_connection(server.address, timeout=5)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(TRICKLE_S):
            try:
                sock.send(b"a")
            except OSError:
                return

    sock.send(b"a")
    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield sock
    finally:
        stop.set()
        thread.join()
        sock.close()


def seconds_until_logged(server: ServerProcess, needle: str, limit_s: float) -> float | None:
    """Seconds until a stderr line containing ``needle`` appears, None if not within ``limit_s``."""
    start = time.monotonic()
    while not stderr_lines(server, needle):
        if time.monotonic() - start > limit_s:
            return None
        time.sleep(0.02)
    return time.monotonic() - start


def server_holds(server: ServerProcess, client: tuple[str, int]) -> bool:
    """True while a process of the server still has the connection from ``client`` open."""
    root = psutil.Process(server.pid)
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            connections = getattr(proc, "net_connections", None) or proc.connections
            if any(c.raddr and tuple(c.raddr) == client for c in connections(kind="tcp")):
                return True
    return False


def released(server: ServerProcess, client: tuple[str, int], timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while server_holds(server, client):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_to_end(sock: socket.socket, timeout_s: float = 10.0) -> int:
    """Read until the server's close arrives (EOF or reset); the bytes read. Fails if the connection stays open."""
    sock.settimeout(timeout_s)
    total = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    return total


def stall_echo(sock: socket.socket) -> int:
    """Send without reading until the server stops taking bytes (writes block for 0.3 s); bytes sent."""
    sent = 0
    chunk = b"x" * 65536
    deadline = time.monotonic() + 10  # filling both directions' buffers takes well under a second
    while time.monotonic() < deadline:
        if not select.select([], [sock], [], 0.3)[1]:
            return sent  # no room for 0.3 s: the server stopped reading, its echo goes nowhere
        try:
            sent += sock.send(chunk, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return sent  # the server stopped reading and gave up before the buffers were full
    raise AssertionError("the server kept reading for 10 s from a client that never reads")


def never_reading_client(server: ServerProcess, service: str) -> None:
    """Ask for more than the socket buffers hold and never read: the send timeout must close the connection.

    The server's FIN waits behind the unread bytes, so the client learns of
    the close only by reading; the stderr line says when the server gave up.
    """
    with socket.create_connection(server.address, timeout=5) as sock:
        if service == "file":
            sock.sendall(b"big\n")
            asked = BIG_FILE_BYTES
        else:
            asked = stall_echo(sock)
        elapsed = seconds_until_logged(server, "reply made no progress", SEND_S + MARGIN_S)
        assert elapsed is not None, f"a client that never reads was not closed: {server.stderr_tail()}"
        # Its descriptor must go at once: a close that waits to flush what the
        # client never reads would keep it.
        assert released(server, sock.getsockname()), "the server still holds the connection it gave up on"
        assert read_to_end(sock) < asked, "the whole reply arrived: the client was never stalled"
    assert len(stderr_lines(server, "reply made no progress")) == 1, server.stderr_tail()


def short(**overrides: float) -> dict[str, float]:
    timeouts = {"idle_timeout": IDLE_S, "request_timeout": REQUEST_S, "send_timeout": SEND_S}
    timeouts.update(overrides)
    return timeouts


# ----------------------------------------------------------------------------- timeouts on


@pytest.mark.parametrize("model", one_quick(ECHO_MODELS))
def test_echo_closes_idle_and_never_reading_clients(model: str, root: Path) -> None:
    with server_for(model, "echo", root, **short()) as server:
        elapsed = idle_client(server, IDLE_S + MARGIN_S)
        assert elapsed is not None, "an idle client was not closed"
        assert elapsed >= IDLE_S * 0.9
        assert len(stderr_lines(server, "no byte received")) == 1, server.stderr_tail()

        never_reading_client(server, "echo")
        assert_served(server, "echo")


@pytest.mark.parametrize("model", one_quick(PYTHON_MODELS))
def test_file_closes_idle_slowloris_and_never_reading_clients(model: str, root: Path) -> None:
    with server_for(model, "file", root, **short(idle_timeout=FILE_IDLE_S)) as server:
        with slowloris(server) as sock:
            elapsed = seconds_until_closed(sock, REQUEST_S + MARGIN_S)
        assert elapsed is not None, "a slowloris client was not closed"
        assert elapsed >= REQUEST_S * 0.9
        assert len(stderr_lines(server, "request line still incomplete")) == 1, server.stderr_tail()

        never_reading_client(server, "file")

        elapsed = idle_client(server, FILE_IDLE_S + MARGIN_S)
        assert elapsed is not None and elapsed >= FILE_IDLE_S * 0.9, elapsed
        assert len(stderr_lines(server, "no byte received")) == 1, server.stderr_tail()
        assert_served(server, "file")


# ----------------------------------------------------------------------------- timeouts off


#: How long past the timeout a connection must survive when that timeout is 0.
BEYOND_S = 0.5


@pytest.mark.parametrize("model", one_quick(ECHO_MODELS))
def test_echo_idle_timeout_zero_waits_forever(model: str, root: Path) -> None:
    with server_for(model, "echo", root, **short(idle_timeout=0)) as server:
        assert idle_client(server, IDLE_S + BEYOND_S) is None, "closed although the idle timeout is off"
        assert_served(server, "echo")
        assert not stderr_lines(server, "connection closed"), server.stderr_tail()


@pytest.mark.parametrize("model", one_quick(PYTHON_MODELS))
def test_slowloris_defeats_the_idle_timeout_without_a_request_timeout(model: str, root: Path) -> None:
    """The lesson: a byte every 0.2 s is never idle for 0.5 s, so only the request timeout stops it."""
    with server_for(model, "file", root, **short(request_timeout=0)) as server:
        with slowloris(server) as sock:
            assert seconds_until_closed(sock, REQUEST_S + BEYOND_S) is None, server.stderr_tail()
        assert_served(server, "file")
        assert not stderr_lines(server, "connection closed"), server.stderr_tail()


# ----------------------------------------------------------------------------- out of descriptors


#: The flood: more connections than a server limited to NOFILE descriptors
#: can hold, with a backlog that lets them all complete at once.
NOFILE = 64
FLOOD = 200
FLOOD_BACKLOG = 128
MEASURE_S = 3.0


def flood(address: tuple[str, int], count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(address)
        socks.append(sock)
    return socks


def most_descriptors(server: ServerProcess) -> int:
    """Descriptors held by the server process or, where workers accept, by its fullest worker."""
    root = psutil.Process(server.pid)
    counts = [0]
    for proc in (root, *root.children()):
        with contextlib.suppress(psutil.NoSuchProcess):
            counts.append(proc.num_fds())
    return max(counts)


def wait_out_of_descriptors(server: ServerProcess, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (held := most_descriptors(server)) < NOFILE - 1:
        assert time.monotonic() < deadline, f"the server holds only {held} descriptors"
        time.sleep(0.05)


# sequential holds one connection, threadpool at most its pool, and
# forking's parent none (each child holds its own), so none of them runs out
# of descriptors in its accept loop.
@pytest.mark.parametrize(
    "model", ("threading", "selectors", "asyncio", "asyncio-protocol", "reuseport", "gevent", *C_MODELS)
)
@pytest.mark.slow
def test_out_of_descriptors_backs_off(model: str, root: Path) -> None:
    options = ServerOptions(backlog=FLOOD_BACKLOG)
    with run_server(model, "echo", options, rlimits={resource.RLIMIT_NOFILE: NOFILE}) as server:
        socks = flood(server.address, FLOOD)
        try:
            wait_out_of_descriptors(server)
            time.sleep(0.2)  # the first failures happen now
            lines_before = len(server.stderr_tail(1_000_000).splitlines())
            cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
            time.sleep(MEASURE_S)
            cpu_pct = 100 * (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
            lines = len(server.stderr_tail(1_000_000).splitlines()) - lines_before
        finally:
            for sock in socks:
                sock.close()
        assert cpu_pct < 20, f"{cpu_pct:.0f}% CPU while out of descriptors"
        assert lines < 50, f"{lines} stderr lines in {MEASURE_S:g} s: {server.stderr_tail(3)}"
        assert stderr_lines(server, "not accepting for"), server.stderr_tail()
        assert_served(server, "echo")
