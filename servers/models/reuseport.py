"""Model ``reuseport``: N processes, each an ``asyncio-protocol`` server on its own ``SO_REUSEPORT`` socket.

Each worker process runs its own event loop (``--loop uvloop`` optional) with
the protocols of :mod:`servers.models.asyncio_protocol`, listening on a socket
of its own bound to the same port with ``SO_REUSEPORT``. The kernel then
balances connections over those listeners by a hash of the connection's
addresses and ports, so no process accepts for another and there is no shared
accept queue: this is uvicorn ``--workers``, nginx's ``reuseport`` and
Envoy's listeners. Where ``prefork`` shares one queue (an idle worker takes
the next connection), here each worker has its own: a connection hashed to a
busy worker waits even while another is idle, which the per-worker CPU of the
process tree and the counts each worker logs at the stop show.

The parent binds the port first (``SO_REUSEPORT`` and not listening, so it
gets no connections; port 0 picks a free one), forks the workers, prints the
ready line once every one of them is listening, and from then on supervises
them as :class:`servers.models.prefork.Supervisor` does: a worker that dies is
logged and re-forked (within the same restart budget), and its socket leaves
the group, so the kernel spreads new connections over the others until the
new one listens. The parent's bound socket keeps the port reserved for the
whole run, so a re-forked worker can always bind it again.

At the limit
------------
Each worker is an ``asyncio-protocol`` server: no limit but descriptors
(``ulimit -n``, per process) and memory. Each listener has its own backlog
(``--backlog``), so the server's accept queues hold ``workers`` x (backlog + 1).

Stopping
--------
SIGTERM/SIGINT: the parent closes its socket and sends SIGTERM to every
worker, which stops its loop as the ``asyncio-protocol`` model does, logs how
many connections it accepted, and exits; one that has not exited after
:data:`~servers.blocking.CHILD_KILL_AFTER_S` is killed. All are reaped.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable

from servers.config import ServerOptions
from servers.models.asyncio_protocol import ProtocolServer, run
from servers.models.asyncio_streams import check
from servers.models.prefork import Supervisor
from servers.service import Service, SetupError, address_family, listen_error, make_service

#: How long the workers may take to start listening. A fork and a bind take
#: milliseconds; 10 s covers a machine busy with other work.
LISTEN_WITHIN_S = 10.0


def reuseport_socket(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEPORT``, not yet listening.

    Made with ``IPPROTO_TCP`` rather than protocol 0: asyncio sets
    TCP_NODELAY only on sockets whose ``proto`` says TCP, and accepted
    sockets inherit the listener's.
    """
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise listen_error(host, port, exc) from None
    return sock


class ReuseportWorkers:
    """What runs in each worker, and how the parent learns that all of them listen."""

    def __init__(self, service: Service, options: ServerOptions, service_name: str, workers: int) -> None:
        self.service = service
        self.options = options
        self.service_name = service_name
        self.workers = workers
        self.family = address_family(options.host, options.port)
        self.reserved = reuseport_socket(options.host, options.port, self.family)
        self.port = self.reserved.getsockname()[1]
        #: Each worker writes one byte here once it listens (None once the
        #: parent has reported ready: a re-forked worker has nobody to tell).
        listening_read, listening_write = os.pipe()
        self.listening_read: int | None = listening_read
        self.listening_write: int | None = listening_write

    def run_worker(self) -> None:
        """In a worker: listen on a socket of its own, serve until SIGTERM, log the connections it accepted."""
        self.reserved.close()  # the parent's
        if self.listening_read is not None:
            os.close(self.listening_read)
        sock = reuseport_socket(self.options.host, self.port, self.family)
        server = ProtocolServer(self.service, self.options, copy_writes=self.options.loop == "uvloop")
        try:
            run(server, self.options, self.service_name, self._listening, sock)
        finally:
            self.service.log_error(f"worker {os.getpid()}", f"{server.accepted} connection(s) accepted")

    def _listening(self, host: str, port: int) -> None:
        if self.listening_write is not None:
            with contextlib.suppress(OSError):
                os.write(self.listening_write, b"L")
            os.close(self.listening_write)

    def wait_listening(self) -> None:
        """In the parent: return once every first worker listens; :class:`SetupError` if they do not in time."""
        assert self.listening_write is not None and self.listening_read is not None
        os.close(self.listening_write)
        self.listening_write = None
        listening_read, self.listening_read = self.listening_read, None
        listening = 0
        deadline = time.monotonic() + LISTEN_WITHIN_S
        try:
            while listening < self.workers:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([listening_read], [], [], left)[0]:
                    break
                got = os.read(listening_read, self.workers)
                if not got:
                    break  # every worker has exited or reported
                listening += len(got)
        finally:
            os.close(listening_read)
        if listening < self.workers:
            raise SetupError(
                f"only {listening} of {self.workers} workers listened within {LISTEN_WITHIN_S:g} s; "
                "their errors are on stderr above"
            )


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> dict[str, int]:
    """Serve ``service`` with ``--workers`` event-loop processes on one port until SIGTERM/SIGINT; returns the stop facts."""
    check(service, options)
    workers = ReuseportWorkers(
        make_service("reuseport", service, options), options, service, options.worker_processes()
    )
    try:
        return Supervisor(
            workers.service, workers.workers, workers.run_worker, workers.reserved, before_ready=workers.wait_listening
        ).run(ready)
    finally:
        workers.reserved.close()
        workers.service.log_stop()  # the workers' counts of client closes come through the service's pipe
