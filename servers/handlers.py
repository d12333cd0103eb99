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
        work = self.server.service.work
        while data := self.request.recv(protocol.CHUNK_SIZE):
            work()
            self.request.sendall(data)


class FileHandler(socketserver.StreamRequestHandler):
    """The file service: answer request lines until the client closes or sends an over-long line."""

    server: ServiceServerMixin
    request: socket.socket

    def handle(self) -> None:
        while self.serve_one():
            pass

    def serve_one(self) -> bool:
        """Read and answer one request; False when the connection is over."""
        line = self.rfile.readline(protocol.MAX_REQUEST_LINE)
        if not line.endswith(protocol.NEWLINE) and len(line) < protocol.MAX_REQUEST_LINE:
            return False  # end of stream, possibly in the middle of a line: nothing to answer
        service = self.server.service
        service.work()
        assert service.root is not None  # the file service always has a root (checked at start-up)
        try:
            file, size = protocol.open_request(service.root, line)
        except protocol.RequestError as error:
            self.request.sendall(protocol.error_line(error))
            if error.close:
                linger(self.request)
            return not error.close
        with file:
            send_file(self.request, file, size, use_sendfile=service.sendfile)
        return True


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


def send_file(sock: socket.socket, file: BinaryIO, size: int, *, use_sendfile: bool) -> None:
    """Send ``OK <size>\\n`` and exactly ``size`` bytes of ``file`` on a blocking socket.

    ``use_sendfile``: ``socket.sendfile`` (the kernel copies from the page cache
    to the socket); otherwise a read/send loop of :data:`protocol.CHUNK_SIZE`.
    Both start at offset 0 whatever the file position.
    Raises :class:`FileShrankError` when the file ends before ``size`` bytes.
    """
    # MSG_MORE only when data follows: a corked header with nothing behind it
    # would wait for the kernel's cork timeout (200 ms).
    sock.sendall(protocol.ok_header(size), MSG_MORE if size else 0)
    if use_sendfile:
        sent = sock.sendfile(file, 0, size) if size else 0
    else:
        sent = 0
        while sent < size and (chunk := os.pread(file.fileno(), min(protocol.CHUNK_SIZE, size - sent), sent)):
            sock.sendall(chunk)
            sent += len(chunk)
    if sent != size:
        raise FileShrankError(f"file shrank while being sent ({sent} of {size} bytes)")


#: Handler class per service name.
HANDLERS: dict[str, type[socketserver.BaseRequestHandler]] = {"echo": EchoHandler, "file": FileHandler}
