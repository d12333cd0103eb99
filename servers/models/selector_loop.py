"""Model ``selectors``: a hand-written, single-threaded, non-blocking event loop.

One thread, one ``selectors.DefaultSelector`` (epoll on Linux), every socket
non-blocking. Each connection is a small state object; the loop asks each one
which events it wants and calls it when the kernel says a socket is ready.
This is what asyncio does underneath, without the coroutine machinery, so it
shows how much of asyncio's cost is the abstraction.

Bounded buffers
---------------
A non-blocking server must decide itself when to stop reading; nothing blocks
for it. Echo keeps at most :data:`ECHO_BUFFER_LIMIT` bytes waiting to be sent
per connection: once reached, the connection stops asking for EVENT_READ until
the client has read enough, so a client that sends and never reads costs a
fixed amount of memory and the kernel's flow control pushes back on it. The
file service reads no further request while an answer is in flight (pipelined
requests wait in the socket), and streams the file with ``os.sendfile`` on the
non-blocking socket: a partial write or ``EAGAIN`` just means "wait for
EVENT_WRITE and continue at this offset". With ``--no-sendfile`` it reads one
:data:`~servers.protocol.CHUNK_SIZE` chunk at a time with ``os.pread``.

Fairness
--------
One turn of a connection sends at most :data:`FILE_BYTES_PER_TURN` of a file
and reads one chunk, and one turn of the listener accepts at most
:data:`ACCEPTS_PER_TURN` connections, so a fast client cannot starve the rest.

Timeouts and running out of descriptors
---------------------------------------
Each connection remembers when it last received and last sent a byte, and
when its current request line began; from these it says when it would time
out (:meth:`Connection.expiry`, the timeouts of :mod:`servers.limits`). The
loop checks every connection at most every :attr:`Loop.sweep_every` (a
twentieth of the shortest timeout) rather than keeping a timer per event, so
a timeout fires up to 5% late and costs nothing per ``recv``/``send`` beyond
reading the clock. When ``accept`` fails for lack of descriptors, the
listener leaves the selector for the back-off pause of
:class:`~servers.limits.AcceptBackoff` (a readable listener would otherwise
wake the loop at once, forever).

Stopping
--------
SIGTERM/SIGINT write to a wake-up socket (``signal.set_wakeup_fd``) watched by
the selector; the loop then closes the listener and every connection and
returns. There is nothing to join: it is all one thread.

Error handling
--------------
Any exception while serving one connection (reset, broken pipe, a file that
shrank) is one line on stderr and closes that connection only.

Resource handling
-----------------
The listener, the wake-up pair, every connection socket and every open file
are closed when :func:`serve` returns, normally or not; signal handlers and
the wake-up fd are restored.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import BinaryIO

from servers import protocol
from servers.config import ServerOptions
from servers.limits import AcceptBackoff, Expiry, Timeouts, next_expiry, out_of_resources
from servers.protocol import FileShrankError
from servers.service import MSG_MORE, Service, accepted, listening_socket, make_service
from servers.sessions import new_session

#: Echo bytes queued for one client before the loop stops reading from it.
#: Four receive chunks: enough to keep the socket busy while the client
#: catches up, small enough that 10,000 stuck clients cost 2.5 GiB at most.
ECHO_BUFFER_LIMIT = 4 * protocol.CHUNK_SIZE

#: File bytes one connection may send per turn before the others get theirs:
#: 1 MiB is a few milliseconds of loopback bandwidth.
FILE_BYTES_PER_TURN = 1024 * 1024

#: Connections accepted per turn of the listener, for the same reason.
ACCEPTS_PER_TURN = 64

#: Shortest interval between two timeout sweeps over all connections, so
#: that with many connections the sweeps never run back to back.
MIN_SWEEP_S = 0.01

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Connection:
    """State of one client. Subclasses implement a service."""

    def __init__(self, sock: socket.socket, peer: object, service: Service) -> None:
        self.sock = accepted(sock)
        self.peer = peer
        self.service = service
        self.eof = False
        self.out = bytearray()
        now = time.monotonic()
        #: Last byte received (or the accept), last byte sent (or when a reply
        #: began to wait for the socket), start of the current request line.
        self.last_read = now
        self.last_sent = now
        self.request_started: float | None = None

    def sending(self) -> bool:
        """A reply waits to go out: the send timeout applies."""
        return bool(self.out)

    def waiting_for_input(self) -> bool:
        """Nothing to send and the client may still send: the idle (and request) timeouts apply."""
        return not self.eof

    def expiry(self, timeouts: Timeouts) -> Expiry | None:
        """When this connection times out as things stand, and why; None when no timeout applies now."""
        return next_expiry(
            timeouts,
            sending=self.sending(),
            waiting=self.waiting_for_input(),
            last_read=self.last_read,
            last_sent=self.last_sent,
            request_started=self.request_started,
        )

    def on_event(self, mask: int) -> None:
        """React to the events the selector reported."""
        raise NotImplementedError

    def events(self) -> int:
        """The events this connection waits for now; 0 once it is finished."""
        raise NotImplementedError

    def flush(self, flags: int = 0) -> bool:
        """Send as much of ``out`` as the socket takes; True when it is all gone."""
        while self.out:
            try:
                sent = self.sock.send(self.out, flags)
            except BlockingIOError:
                return False
            del self.out[:sent]
            self.last_sent = time.monotonic()
        return True

    def close(self) -> None:
        self.sock.close()


class EchoConnection(Connection):
    """RFC 862 echo with a bounded write buffer."""

    def on_event(self, mask: int) -> None:
        if mask & READ and not self.eof:
            data = self.sock.recv(protocol.CHUNK_SIZE)
            if not data:
                self.eof = True
            else:
                self.service.work()
                self.last_read = time.monotonic()
                if not self.out:
                    self.last_sent = self.last_read  # the send timeout counts from here
                self.out += data
        self.flush()

    def events(self) -> int:
        wanted = WRITE if self.out else 0
        if not self.eof and len(self.out) < ECHO_BUFFER_LIMIT:
            wanted |= READ
        return wanted


class FileConnection(Connection):
    """The file service: one request at a time, file bodies streamed from the page cache."""

    def __init__(self, sock: socket.socket, peer: object, service: Service) -> None:
        super().__init__(sock, peer, service)
        self.inbuf = bytearray()
        self.file: BinaryIO | None = None
        self.offset = 0
        self.remaining = 0
        self.close_after_answer = False
        #: Set while lingering before a close (see servers.protocol): monotonic deadline.
        self.linger_deadline: float | None = None
        self.discarded = 0
        self.finished = False

    def busy(self) -> bool:
        """An answer is still being sent (or the connection closes once it is)."""
        return bool(self.out) or self.file is not None or (self.close_after_answer and self.linger_deadline is None)

    def sending(self) -> bool:
        return self.busy()

    def waiting_for_input(self) -> bool:
        return not self.eof and self.linger_deadline is None  # lingering has its own deadline

    def on_event(self, mask: int) -> None:
        if self.linger_deadline is not None:
            self.discard_input()
            return
        if mask & READ and not self.busy():
            data = self.sock.recv(protocol.CHUNK_SIZE)
            if data:
                self.last_read = time.monotonic()
                if not self.has_pending():
                    self.request_started = self.last_read
                self.take(data)
            else:
                self.eof = True
        self.advance()

    def has_pending(self) -> bool:
        """Part of a request is buffered."""
        return bool(self.inbuf)

    def take(self, data: bytes) -> None:
        """Buffer received bytes."""
        self.inbuf += data

    def advance(self) -> None:
        """Send what is pending, then take the next request; stop at EAGAIN or the turn's budget."""
        budget = FILE_BYTES_PER_TURN
        while budget > 0:
            if self.out:
                pending = len(self.out)
                done = self.flush(MSG_MORE if self.remaining else 0)
                budget -= pending - len(self.out)
                if not done:
                    return
            elif self.file is not None:
                sent = self.send_file_part(budget)
                if sent is None:
                    return
                budget -= sent
            elif self.close_after_answer:
                self.sock.shutdown(socket.SHUT_WR)
                self.linger_deadline = time.monotonic() + protocol.LINGER_S
                return
            elif not self.next_request():
                return

    def discard_input(self) -> None:
        """Lingering: read and drop what the client still sends; finished at EOF or LINGER_BYTES."""
        data = self.sock.recv(protocol.CHUNK_SIZE)
        self.discarded += len(data)
        if not data or self.discarded >= protocol.LINGER_BYTES:
            self.finished = True

    def next_request(self) -> bool:
        """Start answering the next buffered request line; False when none is complete."""
        try:
            line = protocol.split_line(self.inbuf)
        except protocol.RequestError as error:
            self.reply_error(error)
            return True
        if line is None:
            return False
        self.request_started = self.last_sent = time.monotonic()  # the reply starts waiting to go out
        if not self.inbuf:
            self.request_started = None
        assert self.service.root is not None  # checked at start-up
        self.service.work()
        try:
            file, size = protocol.open_request(self.service.root, line)
        except protocol.RequestError as error:
            self.reply_error(error)
            return True
        self.out += protocol.ok_header(size)
        if size:
            self.file, self.offset, self.remaining = file, 0, size
        else:
            file.close()
        return True

    def reply_error(self, error: protocol.RequestError) -> None:
        self.last_sent = time.monotonic()
        self.out += protocol.error_line(error)
        self.close_after_answer = error.close

    def send_file_part(self, budget: int) -> int | None:
        """Send (or, without sendfile, queue) the next part of the file; None on EAGAIN."""
        assert self.file is not None
        count = min(self.remaining, budget)
        if self.service.sendfile:
            try:
                sent = os.sendfile(self.sock.fileno(), self.file.fileno(), self.offset, count)
            except BlockingIOError:
                return None
        else:
            data = os.pread(self.file.fileno(), min(count, protocol.CHUNK_SIZE), self.offset)
            self.out += data
            sent = len(data)
        if sent == 0:
            raise FileShrankError(self.offset, self.offset + self.remaining)
        if self.service.sendfile:
            self.last_sent = time.monotonic()
        self.offset += sent
        self.remaining -= sent
        if not self.remaining:
            self.close_file()
        # Queued bytes are charged to the budget when flushed, sent ones now.
        return 0 if not self.service.sendfile else sent

    def close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def events(self) -> int:
        if self.finished:
            return 0
        if self.linger_deadline is not None:
            return READ
        if self.busy() or self.request_waiting():
            # A buffered request left over when a turn's budget ran out must
            # not wait for more input: the (writable) socket calls us back.
            return WRITE
        return 0 if self.eof else READ

    def request_waiting(self) -> bool:
        """A complete (or already over-long) request line is buffered."""
        return self.inbuf.find(protocol.NEWLINE) >= 0 or len(self.inbuf) >= protocol.MAX_REQUEST_LINE

    def close(self) -> None:
        self.close_file()
        super().close()


class SessionConnection(FileConnection):
    """A session service (http, timeauth; see :mod:`servers.exchange`) on the file service's machinery.

    The session parses; this connection sends each answer's head and file
    exactly as :class:`FileConnection` sends ``OK`` and a file, with the same
    turn budget, timeouts and lingering close.
    """

    def __init__(self, sock: socket.socket, peer: object, service: Service) -> None:
        super().__init__(sock, peer, service)
        self.session = new_session(service)
        self.stalled = False  # the session has no complete request since the last bytes fed
        self.out += self.session.greeting()

    def has_pending(self) -> bool:
        return self.session.buffered()

    def take(self, data: bytes) -> None:
        self.session.feed(data)
        self.stalled = False

    def request_waiting(self) -> bool:
        return not self.stalled and self.session.buffered()

    def next_request(self) -> bool:
        answer = self.session.next_answer()
        if answer is None:
            self.stalled = True
            if not self.session.buffered():
                self.request_started = None
            return False
        now = self.last_sent = time.monotonic()  # the reply starts waiting to go out
        self.request_started = now if self.session.buffered() else None
        self.service.work()
        self.out += answer.head
        if answer.file is not None and answer.size:
            self.file, self.offset, self.remaining = answer.file, 0, answer.size
        elif answer.file is not None:
            answer.file.close()
        self.close_after_answer = answer.close
        return True


CONNECTIONS: dict[str, type[Connection]] = {
    "echo": EchoConnection,
    "file": FileConnection,
    "http": SessionConnection,
    "timeauth": SessionConnection,
}


class Loop:
    """The listener, the wake-up socket and all connections, on one selector."""

    def __init__(self, service: Service, options: ServerOptions) -> None:
        self.service = service
        self.connection_class = CONNECTIONS[service.name]
        self.selector = selectors.DefaultSelector()
        self.connections: dict[socket.socket, Connection] = {}
        #: Connections in a lingering close, with their deadlines.
        self.lingering: dict[Connection, float] = {}
        self.timeouts = service.timeouts
        shortest = self.timeouts.shortest()
        #: The longest a connection goes unchecked, and how often the sweep
        #: may run: a twentieth of the shortest timeout (a timeout fires at
        #: most 5% late), at least MIN_SWEEP_S. None when every timeout is off.
        self.shortest_timeout = shortest
        self.sweep_every = None if shortest is None else max(shortest / 20, MIN_SWEEP_S)
        self.next_sweep = float("inf")
        self.accept_backoff = AcceptBackoff(lambda line: service.log_error("listener", line))
        #: While out of descriptors: when the listener goes back into the selector.
        self.accept_resume_at = float("inf")
        self.stop_requested = False
        self.listener = self._listen(options)
        self.wake_reader, self.wake_writer = socket.socketpair()
        for sock in (self.wake_reader, self.wake_writer):
            sock.setblocking(False)
        self.selector.register(self.listener, READ, self._accept)
        self.selector.register(self.wake_reader, READ, self._drain_wakeups)

    @staticmethod
    def _listen(options: ServerOptions) -> socket.socket:
        sock = listening_socket(options)
        sock.setblocking(False)
        return sock

    def run(self) -> None:
        """Dispatch events until a stop signal arrives."""
        while not self.stop_requested:
            for key, mask in self.selector.select(self._timeout()):
                if isinstance(key.data, Connection):
                    self._serve(key.data, mask)
                else:
                    key.data()
            self._expire_lingering()
            now = time.monotonic()
            if now >= self.next_sweep:
                self._sweep(now)
            if now >= self.accept_resume_at:
                self.accept_resume_at = float("inf")
                self.selector.register(self.listener, READ, self._accept)

    def _timeout(self) -> float | None:
        """Block until the earliest timer (lingering, timeout sweep, accept resume), or indefinitely."""
        earliest = min(self.next_sweep, self.accept_resume_at, *self.lingering.values())
        if earliest == float("inf"):
            return None
        return max(0.0, earliest - time.monotonic())

    def _sweep(self, now: float) -> None:
        """Close every connection whose timeout has expired (one line each); plan the next sweep."""
        earliest = float("inf")
        for connection in list(self.connections.values()):
            expiry = connection.expiry(self.timeouts)
            if expiry is None:
                continue
            deadline, error, seconds = expiry
            if deadline <= now:
                self.service.log_error(connection.peer, error(seconds))
                self._close(connection)
            else:
                earliest = min(earliest, deadline)
        if not self.connections or self.shortest_timeout is None or self.sweep_every is None:
            self.next_sweep = float("inf")
            return
        # A connection without a deadline now (sending, with the send timeout
        # off) gets one no sooner than the shortest timeout from now.
        earliest = min(earliest, now + self.shortest_timeout)
        self.next_sweep = max(earliest, now + self.sweep_every)

    def _expire_lingering(self) -> None:
        now = time.monotonic()
        for connection, deadline in list(self.lingering.items()):
            if deadline <= now:
                self._close(connection)

    def request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def _drain_wakeups(self) -> None:
        try:
            while self.wake_reader.recv(4096):  # why 4096: any size drains; signals arrive one byte each
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, peer = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if out_of_resources(exc):
                    self.selector.unregister(self.listener)
                    self.accept_resume_at = time.monotonic() + self.accept_backoff.failed(exc)
                else:  # this one connection failed (e.g. reset while queued): try again next turn
                    self.service.log_error("listener", exc)
                return
            self.accept_backoff.succeeded()
            if self.shortest_timeout is not None:
                self.next_sweep = min(self.next_sweep, time.monotonic() + self.shortest_timeout)
            sock.setblocking(False)
            connection = self.connection_class(sock, peer, self.service)
            self.connections[sock] = connection
            self.selector.register(sock, connection.events(), connection)  # WRITE too when a greeting waits

    def _serve(self, connection: Connection, mask: int) -> None:
        try:
            connection.on_event(mask)
            wanted = connection.events()
        except Exception as exc:  # noqa: BLE001 - one bad connection must not stop the others
            self.service.log_error(connection.peer, exc)
            wanted = 0
        if not wanted:
            self._close(connection)
            return
        if wanted != self.selector.get_key(connection.sock).events:
            self.selector.modify(connection.sock, wanted, connection)
        deadline = getattr(connection, "linger_deadline", None)
        if deadline is not None:
            self.lingering[connection] = deadline

    def _close(self, connection: Connection) -> None:
        self.lingering.pop(connection, None)
        self.selector.unregister(connection.sock)
        del self.connections[connection.sock]
        connection.close()

    def close(self) -> None:
        """Close the listener first (stop accepting), then every connection."""
        if self.accept_resume_at == float("inf"):  # not paused after running out of descriptors
            self.selector.unregister(self.listener)
        self.listener.close()
        for connection in list(self.connections.values()):
            self._close(connection)
        self.selector.close()
        self.wake_reader.close()
        self.wake_writer.close()


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` on a hand-written selectors loop until SIGTERM/SIGINT."""
    loop = Loop(make_service("selectors", service, options), options)
    previous_wakeup = signal.set_wakeup_fd(loop.wake_writer.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, loop.request_stop) for sig in STOP_SIGNALS}
    try:
        host, port = loop.listener.getsockname()[:2]
        ready(host, port)
        loop.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_wakeup)
        loop.close()
        loop.service.log_stop()
