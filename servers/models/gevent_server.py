"""Model ``gevent``: gevent's ``StreamServer``, one greenlet per connection.

A greenlet is a coroutine the program never marks: the handler is written as
blocking code (``recv``, ``send`` in a loop, as the threading model's
handlers), and gevent's sockets switch to the hub whenever a call would
block, so one thread serves every connection the way an event loop does.
This is what gunicorn's ``gevent`` worker and many WSGI deployments run.

Faithful to gevent, not to the stdlib
-------------------------------------
The server is :class:`gevent.server.StreamServer` as gevent ships it (a
listening socket watched by the hub, up to ``max_accept`` accepts per
wake-up, each connection spawned into a greenlet of a
:class:`gevent.pool.Pool` of no size, unbounded as ``StreamServer``'s default), and the
handlers below are written against gevent's sockets directly. Nothing is
monkey-patched: the handlers of the socketserver models under
``monkey.patch_all()`` would measure those handlers made cooperative, and a
patched process is not what a ``StreamServer`` application runs. The server
runs in its own process (``python -m servers gevent ...``), so the bench
process that starts it never imports gevent at all.

Timeouts
--------
gevent's sockets are non-blocking underneath, so the kernel timeouts the
socketserver models use (``SO_RCVTIMEO``, ``SO_SNDTIMEO``) never fire. Each
wait is bounded with gevent's own socket timeout instead, which is a timer
of the hub and costs no system call (``settimeout`` only sets an attribute):
every ``recv`` waits at most the idle timeout (or, inside a request line,
what is left of the request timeout), every ``send`` at most the send
timeout for *some* progress, so a slow but reading client is never cut off.
(``sendall``'s timeout in gevent bounds the whole reply, which would cut off
a large file to a slow client; :func:`send_all` bounds each step instead.)

HTTP (and timeauth)
-------------------
The ``http`` service is h11 over gevent's sockets: each connection's
greenlet feeds what it receives to the same sans-IO session the event-loop
models run (:class:`servers.http_service.HTTPSession`, see
:mod:`servers.exchange`) and sends each answer's head and file as the file
service sends its replies, so its wire behaviour (statuses, limits,
keep-alive, pipelining) is theirs by construction; ``timeauth`` is its
session (:class:`servers.timeauth.TimeAuthSession`) in the same loop. That is the faithful
choice here, not ``http.server.BaseHTTPRequestHandler`` under the
``StreamServer``: the handler reads through ``makefile`` with the kernel
timeouts its rfile relies on, which never fire on gevent's non-blocking
sockets, and without monkey-patching (which this model refuses, above) it
would block the hub. gevent's own HTTP server, ``gevent.pywsgi``, is a WSGI
server with its own parser; measuring it would measure WSGI and that parser,
not the concurrency model beside the others.

File bodies
-----------
gevent's ``socket.sendfile`` is not ``sendfile(2)``: it is a read/send loop
of 8 KiB blocks, because ``os.sendfile`` on a blocking call would stop the
hub. So with ``--sendfile`` (the default) this model calls ``os.sendfile``
itself on the non-blocking socket and, when the socket is full, waits for
room with :func:`gevent.socket.wait_write`: the kernel copies from the page
cache as in the other models. ``--no-sendfile`` is the 64 KiB ``pread``/send
loop every model uses.

At the limit
------------
There is no limit on connections but descriptors (``ulimit -n``) and memory
(a greenlet costs a few KiB of stack copied to the heap when it switches).
One thread serves them all, so CPU work in a handler (``--cpu-work-us``)
delays every other client by as much, as in the asyncio models.

Out of descriptors
------------------
``StreamServer`` meets a failed ``accept`` with a traceback on stderr per
failure (through the hub's error handler) and a pause of its own. Here
:meth:`GeventServer.do_read` catches it first: out of descriptors
(:func:`servers.limits.out_of_resources`), accepting stops for the pause of
an :class:`~servers.limits.AcceptBackoff`, which logs one line per pause;
any other failed accept (a client that reset before it was accepted) is one
line, and accepting goes on.

Stopping
--------
SIGTERM/SIGINT (gevent signal handlers, run in the hub) close the listener
and kill every connection's greenlet (a ``GreenletExit`` at the call it
waits in), whose socket is then closed; killing is bounded by
:data:`STOP_GRACE_S`.

Error handling
--------------
A failing connection is one line on stderr (:meth:`Service.log_error`), a
reset or broken pipe is counted for the stop summary; no traceback reaches
the hub.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import BinaryIO

import gevent
import gevent.event
import gevent.pool
import gevent.socket
from gevent.server import StreamServer

from servers import protocol
from servers.config import ServerOptions
from servers.handlers import linger, send_body, send_file
from servers.limits import (
    AcceptBackoff,
    IdleTimeout,
    RequestTimeout,
    SendTimeout,
    out_of_resources,
    read_wait,
)
from servers.service import MSG_MORE, Service, accepted, listening_socket, make_service
from servers.sessions import new_session

#: How long the stop waits for killed greenlets to finish: a killed greenlet
#: ends at its next switch, within milliseconds; 2 s keeps the stop within
#: the 5 s every model promises.
STOP_GRACE_S = 2.0

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def send_all(sock: gevent.socket.socket, data: bytes | memoryview, timeout: float | None, flags: int = 0) -> None:
    """Send every byte of ``data``; :class:`SendTimeout` when one step waits ``timeout`` seconds for room."""
    sock.settimeout(timeout)
    view = memoryview(data)
    try:
        while view:
            view = view[sock.send(view, flags) :]
    except TimeoutError:
        raise SendTimeout(timeout or 0) from None


def sendfile_cooperative(sock: gevent.socket.socket, file: BinaryIO, size: int, timeout: float | None) -> int:
    """``os.sendfile`` up to ``size`` bytes on the non-blocking socket, the hub waiting for room; the bytes sent.

    Raises :class:`SendTimeout` when no room comes for ``timeout`` seconds;
    returns less than ``size`` if the file ends.
    """
    fd, file_fd = sock.fileno(), file.fileno()
    sent = 0
    while sent < size:
        try:
            count = os.sendfile(fd, file_fd, sent, size - sent)
        except BlockingIOError:
            gevent.socket.wait_write(fd, timeout=timeout, timeout_exc=SendTimeout(timeout or 0))
            continue
        if not count:
            break  # end of file
        sent += count
    return sent


class GeventServer(StreamServer):
    """``StreamServer`` that accepts as every model does and serves one :class:`Service`."""

    def __init__(self, listener: gevent.socket.socket, service: Service) -> None:
        self.service = service
        self.stopping = False
        self.backoff = AcceptBackoff(lambda line: service.log_error("listener", line))
        self._resume: gevent.Greenlet | None = None
        self.connections = gevent.pool.Pool(None)  # None: unbounded, StreamServer's default
        handle = {"echo": self.serve_echo, "file": self.serve_file}.get(service.name, self.serve_session)
        super().__init__(listener, handle=self.guarded(handle), spawn=self.connections)

    # -- accepting -------------------------------------------------------------

    def do_read(self):
        """Accept one connection (TCP_NODELAY on), or pause after a failure instead of a traceback."""
        accepted_pair = None
        try:
            accepted_pair = super().do_read()
            if accepted_pair:
                accepted(accepted_pair[0])
        except OSError as exc:
            if accepted_pair:
                accepted_pair[0].close()  # reset before its options could be set: it is gone anyway
            if out_of_resources(exc):
                self.stop_accepting()
                self._resume = gevent.spawn_later(self.backoff.failed(exc), self._accept_again)
            else:
                self.service.log_error("listener", f"accept: {exc}")
            return None
        if accepted_pair:
            self.backoff.succeeded()
        return accepted_pair

    def _accept_again(self) -> None:
        self._resume = None
        if not self.stopping:
            self.start_accepting()

    # -- connections -----------------------------------------------------------

    def guarded(self, handle: Callable[[gevent.socket.socket], None]) -> Callable[..., None]:
        """``handle`` with every error as one line (a reset counted), never a traceback from the hub."""

        def run(sock: gevent.socket.socket, peer: object) -> None:
            try:
                handle(sock)
            except Exception as exc:  # noqa: BLE001 - one bad connection must not reach the hub's error printer
                if not self.stopping:
                    self.service.log_error(peer, exc)

        return run

    def serve_echo(self, sock: gevent.socket.socket) -> None:
        """RFC 862 echo: every chunk back, until the client closes."""
        service = self.service
        idle, send = service.timeouts.idle, service.timeouts.send
        while True:
            sock.settimeout(idle)
            try:
                data = sock.recv(protocol.CHUNK_SIZE)
            except TimeoutError:
                raise IdleTimeout(idle or 0) from None
            if not data:
                return
            service.work()
            send_all(sock, data, send)

    def serve_file(self, sock: gevent.socket.socket) -> None:
        """The file service: answer request lines until the client closes or sends an over-long line."""
        service = self.service
        assert service.root is not None  # the file service always has a root (checked at start-up)
        send = service.timeouts.send
        pending = bytearray()
        while True:
            try:
                line = self.read_line(sock, pending)
                if line is None:
                    return  # end of stream, possibly in the middle of a line: nothing to answer
                service.work()
                file, size = protocol.open_request(service.root, line)
            except protocol.RequestError as error:
                send_all(sock, protocol.error_line(error), send)
                if error.close:
                    linger(sock)
                    return
                continue
            with file:
                send_file(
                    sock,
                    file,
                    size,
                    use_sendfile=service.sendfile,
                    timeout=send,
                    send=send_all,
                    sendfile=sendfile_cooperative,
                )

    def serve_session(self, sock: gevent.socket.socket) -> None:
        """A session service (http, timeauth; see :mod:`servers.exchange`): it parses, this greenlet reads and sends.

        Each ``recv`` waits at most the idle timeout, or, once part of a
        request is buffered, what is left of the request timeout from its
        first byte; answers go out in request order, a pipelined request
        already buffered being answered before the next ``recv``.
        """
        service = self.service
        session = new_session(service)
        timeouts = service.timeouts
        idle, request, send = timeouts.idle, timeouts.request, timeouts.send
        started: float | None = None  # first byte of the request being read
        if greeting := session.greeting():
            send_all(sock, greeting, send)
        while True:
            answer = session.next_answer()
            if answer is None:
                wait, error = read_wait(timeouts, started, time.monotonic())
                sock.settimeout(wait)
                try:
                    data = sock.recv(protocol.CHUNK_SIZE)
                except TimeoutError:
                    raise error((request if error is RequestTimeout else idle) or 0) from None
                if not data:
                    return  # end of stream, possibly mid-request: nothing to answer
                if not session.buffered():
                    started = time.monotonic()
                session.feed(data)
                continue
            started = time.monotonic() if session.buffered() else None
            service.work()
            if answer.file is None:
                send_all(sock, answer.head, send)
            else:
                with answer.file:
                    # MSG_MORE: the head and the body's first bytes share a segment
                    send_all(sock, answer.head, send, MSG_MORE)
                    send_body(
                        sock,
                        answer.file,
                        answer.size,
                        use_sendfile=service.sendfile,
                        timeout=send,
                        send=send_all,
                        sendfile=sendfile_cooperative,
                    )
            if answer.close:
                linger(sock)
                return

    def read_line(self, sock: gevent.socket.socket, pending: bytearray) -> bytes | None:
        """The next request line from ``pending`` and the socket, within the timeouts; None at end of stream.

        Each ``recv`` waits at most the idle timeout; from the first byte of
        the line on (or from now, for a pipelined line already begun), the
        whole line gets at most the request timeout.
        """
        timeouts = self.service.timeouts
        started: float | None = None  # the line's first byte
        while (line := protocol.split_line(pending)) is None:
            if pending and started is None:
                started = time.monotonic()
            wait, error = read_wait(timeouts, started, time.monotonic())
            sock.settimeout(wait)
            try:
                data = sock.recv(protocol.CHUNK_SIZE)
            except TimeoutError:
                raise error((timeouts.request if error is RequestTimeout else timeouts.idle) or 0) from None
            if not data:
                return None
            pending += data
        return line

    # -- stopping --------------------------------------------------------------

    def stop_all(self) -> None:
        """Close the listener, end every connection's greenlet (its socket is closed after it)."""
        self.stopping = True
        if self._resume is not None:
            self._resume.kill()
        self.close()
        self.connections.kill(block=True, timeout=STOP_GRACE_S)


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` with gevent's StreamServer until SIGTERM/SIGINT."""
    served = make_service("gevent", service, options)
    server = GeventServer(listening_socket(options, gevent.socket.socket), served)
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in STOP_SIGNALS]
    try:
        server.start()
        host, port = server.socket.getsockname()[:2]
        ready(host, port)
        stop.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        server.stop_all()
        served.log_stop()
