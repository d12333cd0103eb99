"""What a hostile client or a dying parent must not achieve, against real server processes.

* A client that can write inside the served root swaps a directory on the
  requested path for a symlink to a directory outside it, over and over,
  while it asks for the path: no reply may ever carry a byte from outside
  the root, and every request gets an answer (``OK`` or ``ERR``), never a
  dropped connection. The swap is ``renameat2(RENAME_EXCHANGE)``, atomic, so
  the path always exists as one or the other.
* SIGKILL of the forking parent (no handler runs, nothing is cleaned up)
  must not leave its children holding the listening port.

Each loop is bounded in time and in count, so a regression fails in seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import psutil
import pytest

from servers import protocol
from servers.config import ServerOptions
from servers.launch import ServerProcess, run_server
from servers.registry import PYTHON_MODELS
from servers.registry import model as model_facts

from conftest import one_quick

#: How long each model is raced. The unsafe open leaked hundreds of replies
#: per model in this time; the bound keeps the five models under ~15 s.
RACE_S = 2.0
#: ... and at most this many requests, so a very fast machine still stops.
RACE_MAX_REQUESTS = 50_000
#: ... and at least this many (per unit of share), however long they take on a
#: loaded machine: a fork per 403 can fall to ~40 requests/s when the CPUs are
#: shared with other work, and a race of 40 requests proves little.
RACE_MIN_REQUESTS = 120
#: ... but give up after this long, so a hung server still fails the test.
RACE_GIVE_UP_S = 30.0
#: Socket timeout of the racing client: a reply that takes this long is a hang.
IO_TIMEOUT_S = 10.0

INSIDE = b"inside the root\n"
OUTSIDE = b"OUTSIDE THE ROOT\n"

#: renameat2's flag that swaps two names atomically (linux/fs.h).
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def _libc_renameat2() -> object | None:
    libc = ctypes.CDLL(None, use_errno=True)
    return getattr(libc, "renameat2", None)


class Swapper(threading.Thread):
    """Swap ``a`` and ``b`` until stopped: atomically with renameat2, else by renaming a symlink over ``a``.

    The fallback keeps ``a`` a symlink that points alternately inside and
    outside the root: weaker (an open that refuses every symlink never sees
    the outside), but still a check-then-open race for a path-based server.
    """

    def __init__(self, a: Path, b: Path, inside_target: str, outside_target: Path) -> None:
        super().__init__(name="swapper", daemon=True)
        self.a, self.b = a, b
        self.inside_target, self.outside_target = inside_target, outside_target
        self.stop = threading.Event()
        self.swaps = 0
        self.renameat2 = _libc_renameat2()

    def _exchange(self) -> bool:
        if self.renameat2 is None:
            return False
        result = self.renameat2(AT_FDCWD, bytes(self.a), AT_FDCWD, bytes(self.b), RENAME_EXCHANGE)  # type: ignore[operator]
        if result == 0:
            return True
        if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL):  # old libc/kernel or a filesystem without it
            self.renameat2 = None
            return False
        raise OSError(ctypes.get_errno(), "renameat2")

    def run(self) -> None:
        spare = self.a.with_name(self.a.name + ".new")
        while not self.stop.is_set():
            if not self._exchange():
                target = self.outside_target if self.swaps % 2 else self.inside_target
                if self.a.is_dir() and not self.a.is_symlink():
                    self.a.rename(self.a.with_name("real-dir"))
                spare.unlink(missing_ok=True)
                spare.symlink_to(target)
                spare.replace(self.a)
            self.swaps += 1


def _race_tree(base: Path) -> tuple[Path, Path, Path]:
    """root/d is a directory holding f; root/l a symlink to a directory outside holding its own f."""
    root, outside = base / "root", base / "outside"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(INSIDE)
    outside.mkdir()
    (outside / "f").write_bytes(OUTSIDE)
    (root / "l").symlink_to(outside)
    return root, outside, root / "l"


def ask_file(sock: socket.socket, reader: BinaryIO) -> str | None:
    """One file-service request for ``d/f``: the reply's kind, None for a dropped connection."""
    sock.sendall(b"d/f\n")
    header = reader.readline()
    if header.startswith(b"OK "):
        return body_kind(reader.read(int(header[3:])))
    if header.startswith(b"ERR "):
        return header.split()[1].decode()
    return None


def ask_http(sock: socket.socket, reader: BinaryIO) -> str | None:
    """One ``GET /d/f`` of the http service: the reply's kind (a status that is no 200 by its code)."""
    sock.sendall(b"GET /d/f HTTP/1.1\r\nHost: race\r\n\r\n")
    status = reader.readline().split()
    length = None
    while (line := reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if len(status) < 2 or length is None:
        return None
    body = reader.read(length)
    return body_kind(body) if status[1] == b"200" else status[1].decode()


def body_kind(body: bytes) -> str:
    return "outside" if OUTSIDE in body else "inside" if body == INSIDE else "short"


def race_requests(
    server: ServerProcess,
    deadline: float,
    ask: Callable[[socket.socket, BinaryIO], str | None] = ask_file,
    at_least: int = 0,
) -> Counter[str]:
    """Ask for ``d/f`` until ``deadline`` and ``at_least`` replies: count replies by kind.

    A dropped connection reconnects, and so does an error answer that closes
    the connection (http's 403 and 404). Past ``deadline`` it goes on only
    until ``at_least`` replies, and never past :data:`RACE_GIVE_UP_S`.
    """
    counts: Counter[str] = Counter()
    sock: socket.socket | None = None
    reader = None
    give_up = time.monotonic() + RACE_GIVE_UP_S
    try:
        while (time.monotonic() < deadline or sum(counts.values()) < at_least) and time.monotonic() < give_up:
            if sum(counts.values()) >= RACE_MAX_REQUESTS:
                break
            if sock is None:
                sock = socket.create_connection(server.address, timeout=IO_TIMEOUT_S)
                reader = sock.makefile("rb")
            assert reader is not None
            try:
                kind = ask(sock, reader)
            except ConnectionError:
                kind = None
            counts[kind or "dropped"] += 1
            if kind in ("inside", "outside") or (kind is not None and ask is ask_file):
                continue
            reader.close()
            sock.close()
            sock = reader = None
    finally:
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()
    return counts


#: service -> how one request is asked, and the share of RACE_S it is raced
#: (http's open is the file service's: half the time shows it is wired right).
RACED = {"file": (ask_file, 1.0), "http": (ask_http, 0.5)}


@pytest.mark.parametrize(
    ("service", "model"),
    one_quick([(service, model) for service in RACED for model in PYTHON_MODELS if model_facts(model).offers(service)]),
)
def test_symlink_swap_race_never_serves_outside_the_root(service: str, model: str, tmp_path: Path) -> None:
    ask, share = RACED[service]
    root, outside, link = _race_tree(tmp_path)
    swapper = Swapper(root / "d", link, "real-dir", outside)
    with run_server(model, service, ServerOptions(root=root)) as server:
        swapper.start()
        try:
            counts = race_requests(
                server, time.monotonic() + RACE_S * share, ask, at_least=int(RACE_MIN_REQUESTS * share)
            )
        finally:
            swapper.stop.set()
            swapper.join(IO_TIMEOUT_S)
        stderr = server.stderr_tail()
    print(f"{model} {service}: {swapper.swaps} swaps, replies {dict(counts)}")
    assert swapper.swaps > 100, "the swapper hardly ran: the race was not exercised"
    assert sum(counts.values()) > 100 * share and counts["inside"], counts
    assert counts["outside"] == 0, f"{counts['outside']} replies carried a file from outside the root: {dict(counts)}"
    assert counts["dropped"] == 0 and counts["short"] == 0, f"replies that were not answers: {dict(counts)}\n{stderr}"
    assert set(counts) <= {"inside", "403", "404"}, dict(counts)


def test_component_walk_under_the_same_race(tmp_path: Path) -> None:
    """The fallback used where openat2 is missing (old kernels, seccomp) holds under the race too."""
    root, outside, link = _race_tree(tmp_path)
    served = protocol.prepare_root(root)
    served.use_openat2 = False
    swapper = Swapper(root / "d", link, "real-dir", outside)
    counts: Counter[str] = Counter()
    swapper.start()
    try:
        deadline = time.monotonic() + RACE_S / 2
        while time.monotonic() < deadline and sum(counts.values()) < RACE_MAX_REQUESTS:
            try:
                file, _ = protocol.open_request(served, b"d/f\n")
            except protocol.RequestError as error:
                counts[str(error.code)] += 1
                continue
            with file:
                counts["outside" if OUTSIDE in file.read() else "inside"] += 1
    finally:
        swapper.stop.set()
        swapper.join(IO_TIMEOUT_S)
        served.close()
    assert swapper.swaps > 100 and counts["inside"] > 0, (swapper.swaps, counts)
    assert counts["outside"] == 0 and set(counts) <= {"inside", "403", "404"}, dict(counts)


#: prctl options for the test's own process (linux/prctl.h).
PR_SET_CHILD_SUBREAPER = 36
#: The promise: this soon after the parent's death nothing listens any more.
PORT_FREED_WITHIN_S = 1.0


def _set_child_subreaper(on: bool) -> None:
    """Orphans of our descendants become our children (so this test can reap them), or stop doing so."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def _listeners(pids: list[int], port: int) -> list[int]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    found.append(pid)
    return found


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
            probe.listen()
        except OSError:
            return False
        return True


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("model", ["forking", "prefork", "reuseport"])
def test_sigkill_of_the_forking_parent_frees_the_port(model: str) -> None:
    _set_child_subreaper(True)
    children: list[int] = []
    try:
        # Three workers (prefork: so each client below is served by one).
        options = ServerOptions(workers=3) if model != "forking" else ServerOptions()
        with run_server(model, "echo", options) as server, contextlib.ExitStack() as stack:
            clients = []
            for _ in range(3):
                sock = stack.enter_context(socket.create_connection(server.address, timeout=IO_TIMEOUT_S))
                sock.sendall(b"live")
                assert sock.recv(16) == b"live"
                clients.append(sock)
            children = [child.pid for child in psutil.Process(server.pid).children()]
            assert len(children) == 3, children
            os.kill(server.pid, signal.SIGKILL)
            server.popen.wait(IO_TIMEOUT_S)
            deadline = time.monotonic() + PORT_FREED_WITHIN_S
            for sock in clients:
                sock.settimeout(PORT_FREED_WITHIN_S)
                with contextlib.suppress(ConnectionError):
                    assert sock.recv(16) == b"", "a child kept serving after its parent died"
                # Abort (RST): the server's side of a cut connection would otherwise sit in
                # FIN-WAIT/TIME-WAIT, and socketserver binds without SO_REUSEADDR.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            while (busy := not _port_free(server.host, server.port)) and time.monotonic() < deadline:
                time.sleep(0.02)
            listening = _listeners(server.leftover_processes(), server.port)
            assert not busy and not listening, f"port {server.port} still bound; listening: {listening}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            for pid in children:
                os.kill(pid, signal.SIGKILL)  # only matters when the test fails: otherwise they are gone
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # reparented to us as the subreaper: reap them
        _set_child_subreaper(False)
