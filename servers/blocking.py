"""Running a ``socketserver`` server class as a sockbench model, and stopping it cleanly.

The three socketserver models differ only in the server class they pass to
:func:`serve`: ``TCPServer``, ``ThreadingTCPServer`` or ``ForkingTCPServer``,
used as the standard library ships them, defaults included. Each model module
composes its class in one line, as the standard library composes its own
(``class ThreadingUDPServer(ThreadingMixIn, UDPServer): pass``)::

    class ThreadingServer(ServiceServerMixin, socketserver.ThreadingTCPServer): pass

The additions of :class:`ServiceServerMixin` (and, for forking,
:class:`ForkingServiceMixin`) are limited to what sockbench needs around them:

* ``request_queue_size`` (the listen backlog) and ``max_children`` come from
  the options; both default to the stdlib's own values (5 and 40);
* the address family follows ``--host`` (IPv4 or IPv6);
* a failing connection is one line on stderr instead of a traceback;
* open connections are tracked so that a stop can end them;
* a forked child closes its copy of the listening socket at once and dies
  with the parent (:func:`die_with_parent`): a SIGKILLed forking server
  leaves no child holding its port, accepting connections nobody serves;
* out of file descriptors, the accept loop pauses (:class:`servers.limits.AcceptBackoff`)
  instead of spinning: socketserver ignores the failed ``accept`` and selects
  again on a listener that is still readable.

The per-connection timeouts are the handlers' (:mod:`servers.handlers`).

Stopping
--------
``serve_forever`` runs in the main thread, as in any socketserver program.
SIGTERM and SIGINT run a handler there that starts a *stopper* thread, because
``shutdown()`` blocks until ``serve_forever`` has returned and so cannot be
called from the thread running it. The stopper

1. marks the server as stopping (new connections are closed at once),
2. shuts down every tracked connection socket (``shutdown(SHUT_RDWR)`` wakes a
   handler blocked in ``recv``, ``sendall`` or ``sendfile``, even in the
   sequential model where that handler runs in the main thread),
3. sends SIGTERM to every forked child (children reset SIGTERM/SIGINT to the
   default action right after ``fork``, so the signal ends them),
4. calls ``shutdown()``, which ends the loop within its 0.5 s poll interval.

Then the main thread repeats 2-3 for anything accepted meanwhile and calls
``server_close()``: the listener closes, ``ThreadingMixIn`` joins its threads
and ``ForkingMixIn`` reaps its children. A child still alive after
:data:`CHILD_KILL_AFTER_S` gets SIGKILL, so the stop is bounded.

Why step 3 cannot wait for step 4: at ``max_children`` the forking server's
loop sits in ``collect_children`` inside a blocking ``waitpid(-1, 0)`` until
a child exits. ``shutdown()`` alone would wait for a client to leave.

Resource handling
-----------------
Listener, connections, threads and children are all released before
:func:`serve` returns; signal handlers are restored.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from socket import socket as Socket
from types import FrameType
from typing import TYPE_CHECKING, Any

from servers.config import ServerOptions
from servers.limits import AcceptBackoff, out_of_resources
from servers.service import Service, SetupError, accepted, address_family, listen_error

#: After SIGTERM, a forked child gets this long before SIGKILL. A child only
#: ignores SIGTERM if it was signalled in the instant between fork() and
#: resetting its handlers; 3 s keeps the whole stop under the 5 s promise.
CHILD_KILL_AFTER_S = 3.0

#: How long the main thread waits for the stopper thread once the loop ended;
#: the stopper's last step returns as soon as the loop has.
STOPPER_JOIN_S = 2.0

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


if TYPE_CHECKING:
    # A mixin of this module's kind always comes before a socketserver.TCPServer
    # in the bases: this lets the checker see the methods its super() calls reach.
    TCPServerBase = socketserver.TCPServer
else:
    TCPServerBase = object


class ServiceServerMixin(TCPServerBase):
    """What sockbench adds to a socketserver class (must come first in the bases)."""

    service: Service
    socket: Socket

    def __init__(
        self, service: Service, options: ServerOptions, handler: type[socketserver.BaseRequestHandler]
    ) -> None:
        self.service = service
        self.stopping = False
        #: Set with ``stopping``: ends an accept back-off early.
        self.stop_event = threading.Event()
        self.accept_backoff = AcceptBackoff(lambda line: service.log_error("listener", line))
        self._connections: set[Socket] = set()
        self._connections_lock = threading.Lock()
        # Set before the base constructor: it creates, binds and listens.
        self.address_family = address_family(options.host, options.port)
        self.request_queue_size = options.backlog
        try:
            super().__init__((options.host, options.port), handler)
        except OSError as exc:
            raise listen_error(options.host, options.port, exc) from None

    # -- connection tracking -------------------------------------------------

    def get_request(self) -> tuple[Socket, Any]:
        try:
            sock, address = super().get_request()
        except OSError as exc:
            if out_of_resources(exc):
                self.stop_event.wait(self.accept_backoff.failed(exc))
            raise  # socketserver drops the failed accept and selects again
        self.accept_backoff.succeeded()
        accepted(sock)
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return not self.stopping and super().verify_request(request, client_address)

    def close_request(self, request: Any) -> None:
        # Under the lock, so abort_connections never touches a closed (maybe reused) descriptor.
        with self._connections_lock:
            self._connections.discard(request)
            super().close_request(request)

    def abort_connections(self) -> None:
        """Shut down every open connection: blocked handlers wake up and return."""
        with self._connections_lock:
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the peer

    def stop_children(self) -> None:
        """Forking only (see :class:`ForkingServiceMixin`); nothing to do for the others."""

    # -- errors ----------------------------------------------------------------

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line on stderr per failed connection (the stdlib prints a traceback)."""
        error = sys.exc_info()[1]
        if self.stopping or error is None:
            return  # connections cut by a stop fail on purpose
        self.service.log_error(client_address, error)


class ForkingServiceMixin(ServiceServerMixin):
    """What sockbench adds to ``socketserver.ForkingTCPServer``: ``max_children``, children that stop with the server."""

    active_children: set[int] | None

    def __init__(
        self, service: Service, options: ServerOptions, handler: type[socketserver.BaseRequestHandler]
    ) -> None:
        self.max_children = options.max_children
        self.parent_pid = os.getpid()
        _reset_signals_in_children()
        super().__init__(service, options, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # ForkingMixIn calls this in the child only, right after fork().
        self.socket.close()  # the listener is the parent's: a child holding it keeps the port bound
        die_with_parent(self.parent_pid)
        super().finish_request(request, client_address)

    def stop_children(self, sig: int = signal.SIGTERM) -> None:
        for pid in list(self.active_children or ()):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass  # exited and is waiting to be reaped

    def server_close(self) -> None:
        # ForkingMixIn.server_close reaps with a blocking waitpid per child;
        # a watchdog makes sure none can hold the stop up for long.
        watchdog = threading.Timer(CHILD_KILL_AFTER_S, self.stop_children, args=(signal.SIGKILL,))
        watchdog.daemon = True
        watchdog.start()
        try:
            super().server_close()
        finally:
            watchdog.cancel()


#: Linux prctl(2) option: a signal delivered to this process when its parent dies.
PR_SET_PDEATHSIG = 1

#: The signal a forked child gets when the server dies without stopping it
#: (SIGKILL of the server, a crash). SIGKILL, not SIGTERM: a clean stop
#: already sends SIGTERM and escalates to SIGKILL after CHILD_KILL_AFTER_S,
#: but a dead parent can escalate nothing, so the one signal must be the one
#: that cannot be caught, blocked or ignored. The child loses nothing by it:
#: the client's connection is cut either way, and the kernel closes it.
PARENT_DEATH_SIGNAL = signal.SIGKILL


def die_with_parent(parent_pid: int) -> None:
    """In a forked child: be killed when ``parent_pid`` dies; exit now if it already has (Linux only).

    The kernel sends the signal when the *thread* that forked exits; the
    forking server forks from its main thread, whose end is the process's end.
    Between ``fork()`` and ``prctl()`` the parent may already have died, in
    which case no signal will ever come: the child was reparented, so
    ``getppid()`` no longer names the parent, and it exits by itself.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0) != 0:
        return  # cannot fail on Linux for a valid signal; without it the stop still ends children
    if os.getppid() != parent_pid:
        os._exit(1)


_children_reset_registered = False


def _reset_signals_in_children() -> None:
    """Make forked children die of SIGTERM/SIGINT (the parent's handlers would only start a stopper).

    The stop signals are blocked from just before ``fork()`` until the child
    has put their default actions back: a SIGTERM that reaches a child in
    between (the parent's stop sends one to every child) would otherwise run
    the parent's Python handler in the child, in the middle of the
    interpreter's own after-fork hooks (starting a stopper thread while
    ``threading`` rebuilds its tables, which then fails with a traceback).
    Blocked, it stays pending and kills the child once the default is back.
    """
    global _children_reset_registered
    if not _children_reset_registered:
        os.register_at_fork(
            before=_block_stop_signals,
            after_in_parent=_unblock_stop_signals,
            after_in_child=_default_stop_signals,
        )
        _children_reset_registered = True


def _block_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def _unblock_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _default_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    _unblock_stop_signals()


class Stopper:
    """Stops a server from a signal handler (see the module docstring)."""

    def __init__(self, server: ServiceServerMixin) -> None:
        self.server = server
        self.thread: threading.Thread | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._stop, name="stopper", daemon=True)
            self.thread.start()

    def _stop(self) -> None:
        self.server.stopping = True
        self.server.stop_event.set()
        self.server.abort_connections()
        self.server.stop_children()
        self.server.shutdown()

    def finish(self) -> None:
        """After the loop: end whatever was accepted meanwhile."""
        self.server.stopping = True
        self.server.stop_event.set()
        if self.thread is not None:
            self.thread.join(STOPPER_JOIN_S)
        self.server.abort_connections()
        self.server.stop_children()


def serve(
    server_class: type[ServiceServerMixin],
    handler: type[socketserver.BaseRequestHandler],
    service: Service,
    options: ServerOptions,
    ready: Callable[[str, int], None],
) -> None:
    """Listen with ``server_class``, report ready, serve until SIGTERM/SIGINT, then stop everything."""
    server = server_class(service, options, handler)
    stopper = Stopper(server)
    previous = {sig: signal.signal(sig, stopper.on_signal) for sig in STOP_SIGNALS}
    try:
        host, port = server.socket.getsockname()[:2]
        ready(host, port)
        server.serve_forever()
    finally:
        try:
            stopper.finish()
            server.server_close()
            service.log_stop()
        finally:
            for sig, handler_before in previous.items():
                signal.signal(sig, handler_before)


__all__ = ["ForkingServiceMixin", "ServiceServerMixin", "SetupError", "serve"]
