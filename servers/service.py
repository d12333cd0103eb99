"""What every model shares about the service it runs: settings, error lines, addresses.

A model decides *how* connections run concurrently; :class:`Service` carries
*what* each connection gets: which service, the served root, sendfile or not,
the calibrated per-chunk CPU work and the per-connection timeouts. Models build one with
:func:`make_service` before listening, so calibration never delays a client.

Error handling
--------------
A failing connection costs exactly one line on stderr (:meth:`Service.log_error`),
never a traceback and never the server. A connection its client reset or
closed with a reply in flight (ECONNRESET, EPIPE: what every client of a load
run does when its window ends) is not an error: it is counted, and
:meth:`Service.log_stop` says how many in one line when the server stops.
:class:`SetupError` is raised for problems found before serving (cannot listen, bad root) with a message that
names the problem and the fix; the command line prints it and exits non-zero.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import protocol
from servers.config import ServerOptions
from servers.crash import Crash
from servers.limits import Timeouts
from servers.preload import Preload
from servers.work import CpuWork, cpu_work


class SetupError(Exception):
    """The server cannot start as asked (bad option, cannot listen). The message says why and what to do."""


#: A client that went away with a reply in flight: its end of a load run, not a server error.
PEER_CLOSED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class PeerCloses:
    """How many connections their client closed with a reply in flight, across threads and forked children.

    Threads add under a lock; a forked child (the forking model) cannot
    change its parent's memory, so it writes one byte per close into a pipe
    made here, before any fork, which :meth:`total` drains in the parent.
    A full pipe (64 KiB of closes between two stops) drops further counts
    rather than blocking a child.
    """

    def __init__(self) -> None:
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._count = 0
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def add(self) -> None:
        if os.getpid() == self._owner:
            with self._lock:
                self._count += 1
            return
        try:
            os.write(self._write, b"\x01")
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise

    def total(self) -> int:
        """Closes counted so far, in this process and (drained now) in its forked children."""
        while True:
            try:
                chunk = os.read(self._read, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            with self._lock:
                self._count += len(chunk)
        return self._count


@dataclass(frozen=True)
class Service:
    """Per-connection settings shared by every model."""

    model: str
    name: str
    root: protocol.ServedRoot | None
    sendfile: bool
    #: The step every request runs (:class:`RequestStep`): CPU work, preload use, crash.
    work: Callable[[], None]
    timeouts: Timeouts = Timeouts()
    #: The valid logins of the timeauth service (a :class:`servers.timeauth.Credentials`), None otherwise.
    credentials: Any = None
    #: http on the socketserver models: http.server's log line per request on stderr.
    log_requests: bool = False
    peer_closes: PeerCloses = field(default_factory=PeerCloses, compare=False, repr=False)

    def log_error(self, peer: object, error: BaseException | str) -> None:
        """Write one line about a failed connection to stderr; count one its client closed (:data:`PEER_CLOSED`)."""
        if isinstance(error, PEER_CLOSED):
            self.peer_closes.add()
            return
        if isinstance(error, BaseException):
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        else:
            detail = error
        detail = " ".join(detail.split())
        _write_line(f"{self.model} {self.name} {format_peer(peer)}: {detail}")

    def log_stop(self) -> None:
        """At stop: one line saying how many connections their client closed with a reply in flight, if any."""
        closes = self.peer_closes.total()
        if closes:
            _write_line(
                f"{self.model} {self.name}: {closes} connection{'' if closes == 1 else 's'} closed by "
                "the client with a reply in flight (ECONNRESET/EPIPE), as clients do when a load ends: "
                "not counted as errors"
            )


@dataclass(frozen=True)
class RequestStep:
    """What a server does for each request besides the service itself, in this order.

    ``--cpu-work-us`` (:mod:`servers.work`), ``--preload-mib`` with
    ``--preload-use`` (:mod:`servers.preload`), ``--crash`` (:mod:`servers.crash`).
    Every model calls it at the same place, once per echo chunk received
    and once per file, http or timeauth request, so each of them means the
    same in every model. The parts are built when the service is, before
    listening and before any fork.
    """

    cpu: CpuWork
    preload: Preload
    crash: Crash

    @classmethod
    def of(cls, cpu: CpuWork, preload: Preload, crash: Crash) -> Callable[[], None]:
        """The step, or just the CPU work when there is nothing else (the common case costs nothing more)."""
        if not preload.active and not crash.active:
            return cpu
        return cls(cpu, preload, crash)

    def __call__(self) -> None:
        self.cpu()
        if self.preload.active:
            self.preload()
        if self.crash.active:
            self.crash()


def _write_line(line: str) -> None:
    # One write per line: threads logging at once never run their lines together.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def make_service(model: str, name: str, options: ServerOptions) -> Service:
    """Check ``options`` for ``name`` and build the :class:`Service` (calibrating CPU work if asked)."""
    root = credentials = None
    if name in ROOT_SERVICES:
        root = check_root(options.root, name)
    if name in START_UP:
        credentials = START_UP[name](options)
    return Service(
        model=model,
        name=name,
        root=root,
        sendfile=options.sendfile,
        work=RequestStep.of(
            cpu_work(options.cpu_work_us, options.cpu_work_iterations),
            Preload(options.preload_mib, options.preload_use, options.preload_freeze),
            Crash(options.crash, options.crash_every),
        ),
        timeouts=Timeouts.from_options(options, name),
        credentials=credentials,
        log_requests=options.log_requests,
    )


#: service name -> what it reads when built, before anything listens (timeauth's
#: logins); filled by :mod:`servers.sessions`, which every model imports.
START_UP: dict[str, Callable[[ServerOptions], Any]] = {}

#: Services that serve files beneath ``--root``.
ROOT_SERVICES = ("file", "http")


def root_directory(root: Path | None, name: str = "file") -> Path:
    """``--root`` checked before anything listens; :class:`SetupError` when missing or not a directory."""
    if root is None:
        raise SetupError(f"the {name} service needs a directory to serve: add --root DIR")
    if not Path(root).is_dir():
        raise SetupError(f"--root {root}: not a directory; pass an existing directory to serve")
    return Path(root)


def check_root(root: Path | None, name: str = "file") -> protocol.ServedRoot:
    """The served root, opened; :class:`SetupError` when missing, not a directory or unreadable."""
    directory = root_directory(root, name)
    try:
        return protocol.prepare_root(directory)
    except OSError as exc:
        raise SetupError(f"--root {root}: cannot open ({exc.strerror}); pass a directory this user can read") from None


def format_peer(peer: object) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a socket address, or ``str(peer)``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer) if peer else "?"


def address_family(host: str, port: int) -> socket.AddressFamily:
    """The address family to listen on ``host`` with (IPv4 or IPv6), or :class:`SetupError`."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SetupError(
            f"--host {host}: cannot resolve ({exc.strerror}); use an address such as 127.0.0.1 or ::1"
        ) from None
    return infos[0][0]


def listen_error(host: str, port: int, exc: OSError) -> SetupError:
    """A clear :class:`SetupError` for a failure to bind or listen."""
    hint = "pick another --port, or 0 to let the OS choose" if port else "check --host"
    return SetupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}")


def listening_socket(options: ServerOptions, socket_class: type[socket.socket] = socket.socket) -> socket.socket:
    """A ``socket_class`` bound to the options' host and port with SO_REUSEADDR, listening with their backlog.

    SO_REUSEADDR as asyncio and gevent set it: a restarted server binds its
    port again while connections of the one before linger in TIME-WAIT.
    Failing to bind or listen is a :func:`listen_error`.
    """
    sock = socket_class(address_family(options.host, options.port), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((options.host, options.port))
        sock.listen(options.backlog)
    except OSError as exc:
        sock.close()
        raise listen_error(options.host, options.port, exc) from None
    return sock


def accepted(sock: socket.socket) -> socket.socket:
    """Prepare a freshly accepted connection the same way in every model: TCP_NODELAY on.

    Both services answer with more than one ``send`` per request (echo
    sends back each chunk as it arrives, a 64 KiB chunk being one full
    loopback segment plus a small tail; the file service sends a header
    and then a body). With Nagle's algorithm on, a small segment waits for
    the ACK of the data before it, and the client delays that ACK by up to
    40 ms: a round trip then takes 40 ms instead of well under one. asyncio
    and uvloop set TCP_NODELAY on every TCP transport themselves, the C
    reference server sets it too; the socketserver models and the selectors
    loop call this. Returns ``sock``.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


#: ``send`` flag that holds a short header back until the data behind it is
#: queued, so header and file leave in the same segment. Without it, Nagle's
#: algorithm holds a small file behind the unacknowledged header until the
#: client's delayed ACK (up to 40 ms on Linux). 0 where the flag does not exist.
MSG_MORE: int = getattr(socket, "MSG_MORE", 0)
