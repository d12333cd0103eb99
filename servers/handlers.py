"""The request handlers shared by the three ``socketserver`` models.

``socketserver`` separates the *server class*, which owns the listening socket
and decides how requests run (one at a time, a thread each, a process each),
from the *request handler*, which owns the service. sockbench keeps that
split: :class:`EchoHandler` and :class:`FileHandler` are the only service code
the sequential, threading and forking models run; each model merely picks a
server class (see :mod:`servers.blocking`). Whatever differs between those
three models in a measurement is therefore the concurrency model alone.

Handlers are written the way the standard library intends, with blocking
calls: ``recv``/``sendall`` for echo, a buffered ``rfile.readline`` for the
request line and ``socket.sendfile`` for the file body. Blocking I/O bounds
memory by itself: a client that stops reading makes ``sendall`` block, so the
handler stops reading too, and the kernel's socket buffers are all that is
ever queued.

Timeouts
--------
The per-connection timeouts of :mod:`servers.limits` are socket timeouts
(``settimeout``), the standard library's own mechanism: ``FileHandler`` takes
the idle timeout through ``StreamRequestHandler.timeout``, socketserver's
documented knob, and every blocking call then raises ``TimeoutError`` after
that long without progress; the handlers change the timeout per phase (idle,
request line, reply) and turn the expiry into the matching
:class:`~servers.limits.ConnectionTimeout`. A socket with a timeout polls
before each ``recv``/``send`` (CPython's way of bounding a blocking call): one
extra system call per call, the price of the bound. With every timeout at 0
the sockets stay plainly blocking, as the stdlib leaves them.

Error handling
--------------
Exceptions leave ``handle()`` and reach the server's ``handle_error``, which
writes one line on stderr (see :class:`servers.blocking.ServiceServerMixin`);
the server then closes the connection and serves the next one. A client
mistake in the file protocol is not an exception here: it is answered with
``ERR`` and the connection continues (or closes, after an over-long line).

Resource handling
-----------------
Every opened file is closed by a ``with`` block; the server closes the
connection socket after ``handle()`` returns or raises.
"""

from __future__ import annotations

import os
import socket
import socketserver
import time
from typing import TYPE_CHECKING, BinaryIO

from servers import protocol
from servers.limits import IdleTimeout, RequestTimeout, SendTimeout
from servers.service import MSG_MORE

if TYPE_CHECKING:
    from servers.blocking import ServiceServerMixin


class FileShrankError(OSError):
    """The file got shorter while being sent: the promised size cannot be honoured, the connection must close."""


class EchoHandler(socketserver.BaseRequestHandler):
    """RFC 862 echo: send back every chunk received, until the client closes."""

    server: ServiceServerMixin
    request: socket.socket

    def handle(self) -> None:
        sock = self.request
        service = self.server.service
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


class FileHandler(socketserver.StreamRequestHandler):
    """The file service: answer request lines until the client closes or sends an over-long line."""

    server: ServiceServerMixin
    request: socket.socket

    #: StreamRequestHandler's knob for the socket timeout that ``setup()``
    #: applies; set per connection from ``--idle-timeout`` (None: off).
    timeout: float | None = None

    def setup(self) -> None:
        self.timeout = self.server.service.timeouts.idle
        super().setup()

    def handle(self) -> None:
        while self.serve_one():
            pass

    def serve_one(self) -> bool:
        """Read and answer one request; False when the connection is over."""
        line = self.read_request()
        if not line.endswith(protocol.NEWLINE) and len(line) < protocol.MAX_REQUEST_LINE:
            return False  # end of stream, possibly in the middle of a line: nothing to answer
        service = self.server.service
        service.work()
        assert service.root is not None  # the file service always has a root (checked at start-up)
        send = service.timeouts.send
        try:
            file, size = protocol.open_request(service.root, line)
        except protocol.RequestError as error:
            send_all(self.request, protocol.error_line(error), send)
            if error.close:
                linger(self.request)
            return not error.close
        with file:
            send_file(self.request, file, size, use_sendfile=service.sendfile, timeout=send)
        return True

    def read_request(self) -> bytes:
        """The next request line, as ``rfile.readline(MAX_REQUEST_LINE)`` returns it, within the timeouts.

        Waits at most the idle timeout for each byte and, from the first byte
        on, at most the request timeout for the whole line: ``readline``
        alone would wait forever for a line trickling in a byte at a time.
        Reads go through ``rfile`` (peek, then take), so bytes after the line
        stay buffered for the next request.
        """
        timeouts = self.server.service.timeouts
        idle, request = timeouts.idle, timeouts.request
        line = bytearray()
        deadline: float | None = None
        while True:
            wait = idle
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeout(request or 0)
                wait = left if wait is None else min(wait, left)
            self.connection.settimeout(wait)
            try:
                pending = self.rfile.peek(1)  # type: ignore[attr-defined]  # a BufferedReader
            except TimeoutError:
                if deadline is not None and deadline <= time.monotonic():
                    raise RequestTimeout(request or 0) from None
                raise IdleTimeout(idle or 0) from None
            if not pending:
                return bytes(line)  # end of stream
            if deadline is None and request is not None:
                deadline = time.monotonic() + request
            room = protocol.MAX_REQUEST_LINE - len(line)
            end = pending.find(protocol.NEWLINE, 0, room)
            line += self.rfile.read(end + 1 if end >= 0 else min(len(pending), room))
            if end >= 0 or len(line) >= protocol.MAX_REQUEST_LINE:
                return bytes(line)


def linger(sock: socket.socket) -> None:
    """Lingering close (see :mod:`servers.protocol`): send FIN, discard input for a bounded time and size.

    The caller closes the socket afterwards.
    """
    sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + protocol.LINGER_S
    discarded = 0
    try:
        while discarded < protocol.LINGER_BYTES and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            chunk = sock.recv(protocol.CHUNK_SIZE)
            if not chunk:
                return
            discarded += len(chunk)
    except OSError:  # includes the timeout
        return  # gave up or the client is gone: either way the socket is closed next


def send_all(sock: socket.socket, data: bytes, timeout: float | None, flags: int = 0) -> None:
    """``sendall`` that fails with :class:`SendTimeout` when no byte is taken for ``timeout`` seconds.

    ``socket.sendall`` bounds the whole call by the socket timeout; a loop of
    ``send`` bounds each wait, so a slow but reading client is never cut off.
    """
    sock.settimeout(timeout)
    try:
        if timeout is None:
            sock.sendall(data, flags)
            return
        with memoryview(data) as view:
            sent = 0
            while sent < len(view):
                sent += sock.send(view[sent:], flags)
    except TimeoutError:
        raise SendTimeout(timeout or 0) from None


def send_file(sock: socket.socket, file: BinaryIO, size: int, *, use_sendfile: bool, timeout: float | None = None) -> None:
    """Send ``OK <size>\\n`` and exactly ``size`` bytes of ``file`` on a blocking socket.

    ``use_sendfile``: ``socket.sendfile`` (the kernel copies from the page cache
    to the socket); otherwise a read/send loop of :data:`protocol.CHUNK_SIZE`.
    Both start at offset 0 whatever the file position.
    Raises :class:`FileShrankError` when the file ends before ``size`` bytes,
    :class:`SendTimeout` when the client takes no byte for ``timeout`` seconds
    (``socket.sendfile`` waits for each chunk with the socket timeout).
    """
    # MSG_MORE only when data follows: a corked header with nothing behind it
    # would wait for the kernel's cork timeout (200 ms).
    send_all(sock, protocol.ok_header(size), timeout, MSG_MORE if size else 0)
    if use_sendfile:
        try:
            sent = sock.sendfile(file, 0, size) if size else 0
        except TimeoutError:
            raise SendTimeout(timeout or 0) from None
    else:
        sent = 0
        while sent < size and (chunk := os.pread(file.fileno(), min(protocol.CHUNK_SIZE, size - sent), sent)):
            send_all(sock, chunk, timeout)
            sent += len(chunk)
    if sent != size:
        raise FileShrankError(f"file shrank while being sent ({sent} of {size} bytes)")


#: Handler class per service name.
HANDLERS: dict[str, type[socketserver.BaseRequestHandler]] = {"echo": EchoHandler, "file": FileHandler}
