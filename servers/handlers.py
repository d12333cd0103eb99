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
The per-connection timeouts of :mod:`servers.limits` are kernel socket
timeouts: :func:`kernel_timeouts` sets ``SO_RCVTIMEO`` to the idle timeout and
``SO_SNDTIMEO`` to the send timeout when a connection starts, and the socket
stays in blocking mode. A ``recv`` or ``send`` that waits that long without a
byte fails with EAGAIN (``BlockingIOError``), which the handlers turn into the
matching :class:`~servers.limits.ConnectionTimeout`. The bound costs no system
call per ``recv``/``send`` (a ``sendfile`` body costs two ``ioctl``, see
:func:`sendfile_within`): Python's own socket timeouts (``settimeout``, what
``StreamRequestHandler.timeout`` uses) make the socket non-blocking and poll
before every call, and each ``settimeout`` is an ``ioctl``: four system calls
per echo round trip added to the very models sockbench measures.
The request timeout changes ``SO_RCVTIMEO`` to the time left only while a
request line arrives in more than one read (see :meth:`FileHandler.read_request`).
With every timeout at 0 the options stay 0 (wait forever), as the stdlib
leaves them. Linux semantics: an expired ``SO_SNDTIMEO`` after some bytes
were taken is a short write, so ``sendall`` bounds each wait, not the whole
reply.

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

import io
import os
import select
import socket
import socketserver
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from servers import protocol
from servers.limits import IdleTimeout, RequestTimeout, SendTimeout, Timeouts
from servers.protocol import FileShrankError
from servers.service import MSG_MORE

if TYPE_CHECKING:
    from servers.blocking import ServiceServerMixin


class EchoHandler(socketserver.BaseRequestHandler):
    """RFC 862 echo: send back every chunk received, until the client closes."""

    server: ServiceServerMixin
    request: socket.socket

    def setup(self) -> None:
        kernel_timeouts(self.request, self.server.service.timeouts)

    def handle(self) -> None:
        sock = self.request
        service = self.server.service
        idle, send = service.timeouts.idle, service.timeouts.send
        while True:
            try:
                data = sock.recv(protocol.CHUNK_SIZE)
            except BlockingIOError:  # SO_RCVTIMEO expired
                raise IdleTimeout(idle or 0) from None
            if not data:
                return
            service.work()
            send_all(sock, data, send)


class FileHandler(socketserver.StreamRequestHandler):
    """The file service: answer request lines until the client closes or sends an over-long line."""

    server: ServiceServerMixin
    request: socket.socket
    rfile: io.BufferedReader  # rbufsize -1: makefile() gives a BufferedReader (LineReader peeks)

    # StreamRequestHandler.timeout stays None: it is a Python socket timeout,
    # a poll before every recv and send; the kernel options set in setup()
    # bound the same waits for free (see the module docstring).

    def setup(self) -> None:
        kernel_timeouts(self.request, self.server.service.timeouts)
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
        """The next request line, as ``rfile.readline(MAX_REQUEST_LINE)`` returns it, within the timeouts (see :class:`LineReader`)."""
        reader = LineReader(self.rfile, self.request, self.server.service.timeouts)
        return reader.readline(protocol.MAX_REQUEST_LINE)


class LineReader:
    """``readline`` on a connection's ``rfile`` within the idle and request timeouts.

    Waits at most the idle timeout for each byte and, from the first byte of
    a request on, at most the request timeout for the whole request (every
    line read until :meth:`next_request`): ``readline`` alone would wait
    forever for a line trickling in a byte at a time.
    A line that arrives in one read (the usual case) costs no system call
    beyond that read; each further read of an incomplete line first sets
    ``SO_RCVTIMEO`` to the time left (or the idle timeout, if shorter),
    and the idle timeout is set back once the line is complete.
    Reads go through ``rfile`` (peek, then take), so bytes after the line
    stay buffered for the next request. Raises :class:`IdleTimeout` or
    :class:`RequestTimeout`; returns what arrived (possibly ``b""``) at the
    end of the stream.
    """

    def __init__(self, rfile: io.BufferedReader, sock: socket.socket, timeouts: Timeouts) -> None:
        self.rfile = rfile
        self.sock = sock
        self.timeouts = timeouts
        self.deadline: float | None = None

    def next_request(self) -> None:
        """The request timeout starts again at the next byte."""
        self.deadline = None

    def readline(self, limit: int = -1) -> bytes:
        idle, request = self.timeouts.idle, self.timeouts.request
        limit = limit if limit >= 0 else 1 << 62  # no limit: longer than any line
        if self.deadline is not None and self.deadline <= time.monotonic():
            raise RequestTimeout(request or 0)  # checked per line: whole lines a little under the idle timeout apart
        line = bytearray()
        shortened = False  # SO_RCVTIMEO changed from the idle timeout
        while True:
            if self.deadline is not None and line:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeout(request or 0)
                shortened = True
                set_kernel_timeout(self.sock, socket.SO_RCVTIMEO, left if idle is None else min(idle, left))
            # A BufferedReader over a socket returns b"" both at the end of
            # the stream and when SO_RCVTIMEO expires (SocketIO maps EAGAIN
            # to "no data yet"); the peer's end is told apart below.
            pending = self.rfile.peek(1)
            if not pending:
                if not waited_out(self.sock):
                    self._restore(shortened)
                    return bytes(line)  # end of stream
                if self.deadline is not None and self.deadline <= time.monotonic():
                    raise RequestTimeout(request or 0)
                raise IdleTimeout(idle or 0)
            if self.deadline is None and request is not None:
                self.deadline = time.monotonic() + request
            room = limit - len(line)
            end = pending.find(protocol.NEWLINE, 0, room)
            line += self.rfile.read(end + 1 if end >= 0 else min(len(pending), room))
            if end >= 0 or len(line) >= limit:
                self._restore(shortened)
                return bytes(line)

    def _restore(self, shortened: bool) -> None:
        if shortened:
            set_kernel_timeout(self.sock, socket.SO_RCVTIMEO, self.timeouts.idle)


def waited_out(sock: socket.socket) -> bool:
    """After a read returned nothing: True if it was ``SO_RCVTIMEO`` expiring, False at the end of the stream.

    Data that arrived in between counts as a timeout that came just too
    late: the caller reports the timeout, as it would a moment earlier.
    """
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True


def kernel_timeouts(sock: socket.socket, timeouts: Timeouts) -> None:
    """Bound a blocking connection's waits by the kernel: ``SO_RCVTIMEO`` idle, ``SO_SNDTIMEO`` send."""
    if timeouts.idle is not None:
        set_kernel_timeout(sock, socket.SO_RCVTIMEO, timeouts.idle)
    if timeouts.send is not None:
        set_kernel_timeout(sock, socket.SO_SNDTIMEO, timeouts.send)


#: One microsecond: the shortest timeval that is not 0, which means "forever".
SHORTEST_TIMEVAL_S = 1e-6


def set_kernel_timeout(sock: socket.socket, option: int, seconds: float | None) -> None:
    """Set ``SO_RCVTIMEO`` or ``SO_SNDTIMEO`` (a ``struct timeval``, native longs on Linux); None: wait forever."""
    if seconds is None:
        whole, micros = 0, 0
    else:
        seconds = max(seconds, SHORTEST_TIMEVAL_S)  # a remaining budget rounded to 0 would mean forever
        whole = int(seconds)
        micros = max(int((seconds - whole) * 1_000_000), 1 if whole == 0 else 0)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("@ll", whole, micros))


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

    The wait is bounded by ``SO_SNDTIMEO`` (:func:`kernel_timeouts`), which
    bounds each ``send`` inside ``sendall``, not the whole call: a slow but
    reading client is never cut off. ``timeout`` is the value it was set to,
    for the message.
    """
    try:
        sock.sendall(data, flags)
    except BlockingIOError:  # SO_SNDTIMEO expired
        raise SendTimeout(timeout or 0) from None


def send_file(
    sock: socket.socket,
    file: BinaryIO,
    size: int,
    *,
    use_sendfile: bool,
    timeout: float | None = None,
    send: Callable[..., None] | None = None,
    sendfile: Callable[[socket.socket, BinaryIO, int, float | None], int] | None = None,
) -> None:
    """Send ``OK <size>\\n`` and exactly ``size`` bytes of ``file`` on a blocking socket.

    ``use_sendfile``: ``os.sendfile`` (the kernel copies from the page cache
    to the socket, see :func:`sendfile_within`); otherwise a read/send loop of
    :data:`protocol.CHUNK_SIZE`. Both start at offset 0 whatever the file position.
    Raises :class:`FileShrankError` when the file ends before ``size`` bytes,
    :class:`SendTimeout` when the client takes no byte for ``timeout`` seconds.
    ``send`` and ``sendfile`` replace :func:`send_all` and :func:`sendfile_within`
    for a socket whose waits are bounded otherwise (gevent's cooperative sockets).
    """
    send = send or send_all
    sendfile = sendfile or sendfile_within
    # MSG_MORE only when data follows: a corked header with nothing behind it
    # would wait for the kernel's cork timeout (200 ms).
    send(sock, protocol.ok_header(size), timeout, MSG_MORE if size else 0)
    send_body(sock, file, size, use_sendfile=use_sendfile, timeout=timeout, send=send, sendfile=sendfile)


def send_body(
    sock: socket.socket,
    file: BinaryIO,
    size: int,
    *,
    use_sendfile: bool,
    timeout: float | None,
    send: Callable[..., None] | None = None,
    sendfile: Callable[[socket.socket, BinaryIO, int, float | None], int] | None = None,
) -> None:
    """Exactly ``size`` bytes of ``file`` from offset 0 (see :func:`send_file`); :class:`FileShrankError` if it ends first."""
    send = send or send_all
    sendfile = sendfile or sendfile_within
    sent = 0
    if use_sendfile:
        sent = sendfile(sock, file, size, timeout) if size else 0
    else:
        while sent < size and (chunk := os.pread(file.fileno(), min(protocol.CHUNK_SIZE, size - sent), sent)):
            send(sock, chunk, timeout)
            sent += len(chunk)
    if sent != size:
        raise FileShrankError(sent, size)


def sendfile_within(sock: socket.socket, file: BinaryIO, size: int, timeout: float | None) -> int:
    """``os.sendfile`` up to ``size`` bytes, waiting at most ``timeout`` for room each time; the bytes sent.

    The one wait ``SO_SNDTIMEO`` does not bound as promised: ``sendfile(2)``
    splices a file in pieces and gives each piece a fresh ``SO_SNDTIMEO``, so
    a client that stopped reading while its receive buffer still grows a
    little at a time held one call for three 0.5 s timeouts (measured). And
    ``socket.sendfile`` on a blocking socket meets the final EAGAIN by waiting
    for room with no timeout at all. So the body goes out non-blocking: each
    ``os.sendfile`` takes what fits, and only when nothing fits does ``poll``
    wait, which counts the socket writable once a good part of its buffer is
    free. A small file costs two ``ioctl`` (non-blocking and back) and no
    ``poll``; ``socket.sendfile`` with a timeout polls twice.
    Raises :class:`SendTimeout`; returns less than ``size`` if the file ends.
    """
    if timeout is None:  # SO_SNDTIMEO is 0 too: block as long as it takes
        sent = 0
        while sent < size and (count := os.sendfile(sock.fileno(), file.fileno(), sent, size - sent)):
            sent += count
        return sent
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    sock.setblocking(False)
    try:
        sent = 0
        while sent < size:
            try:
                count = os.sendfile(sock.fileno(), file.fileno(), sent, size - sent)
            except BlockingIOError:
                if not poller.poll(timeout * 1000):
                    raise SendTimeout(timeout) from None
                continue
            if not count:
                break  # end of file
            sent += count
        return sent
    finally:
        sock.setblocking(True)  # blocking again, bounded by SO_RCVTIMEO and SO_SNDTIMEO


#: Handler class per service name (the session services add theirs in :mod:`servers.sessions`).
HANDLERS: dict[str, type[socketserver.BaseRequestHandler]] = {"echo": EchoHandler, "file": FileHandler}
