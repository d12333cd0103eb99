"""Model ``asyncio-protocol``: asyncio with a ``BufferedProtocol`` per connection, no streams or tasks.

The event loop calls the protocol back when bytes arrive, when the
transport's write buffer crosses its high- or low-water mark, at EOF and at
the close; there is no coroutine per connection, no ``StreamReader`` buffer
and no future per read. This is how uvicorn's ``httptools`` protocol and most
fast asyncio servers are written, and set beside the ``asyncio`` model it
shows what streams cost. With ``--loop uvloop`` it is the fastest
single-process Python server here.

The read buffer
---------------
A plain ``Protocol`` on 3.11's selector transport gets each read as a fresh
``bytes`` of up to 256 KiB (``max_size``): above glibc's 128 KiB mmap
threshold, so every ``recv`` costs an ``mmap`` and a ``munmap``. A
``BufferedProtocol`` tells the transport where to read: here into one
:data:`READ_BUFFER_BYTES` (64 KiB, :data:`servers.protocol.CHUNK_SIZE`, the
chunk every model reads) buffer per server, allocated once. One buffer serves
every connection because the loop calls ``get_buffer``, reads and calls
``buffer_updated`` in one go, and ``buffer_updated`` consumes or copies what
it received before returning. Echo hands the view to ``transport.write``,
which sends at once or copies what the socket did not take; uvloop keeps a
reference to what it could not send at once (its stream's write buffer is a
list of the objects given), so on uvloop echo writes a copy.

Flow control and timeouts
-------------------------
When the write buffer passes its high-water mark (64 KiB by default) the
transport calls ``pause_writing`` and the connection stops reading until
``resume_writing``: a client that never reads stops being read from, and the
memory it costs is bounded. The file service takes one request at a time
(reading pauses while a reply is in flight) and sends bodies with
``loop.sendfile`` in :data:`~servers.models.asyncio_streams.SENDFILE_PART`
pieces, or with ``--no-sendfile`` a read/write loop driven by
``resume_writing``. Timeouts are those of :mod:`servers.limits`, checked as
the selectors model checks them (:func:`servers.limits.next_expiry`): one
periodic sweep over all connections, which aborts each connection past its
deadline. Running out of descriptors is handled by asyncio's accept loop and
paced in the log as in the ``asyncio`` model.

At the limit
------------
There is no limit on connections but descriptors (``ulimit -n``) and memory:
one thread serves them all, so CPU work in a handler (``--cpu-work-us``)
delays every other client by as much.

Stopping
--------
SIGTERM/SIGINT close the listener, abort every connection, cancel the
sendfile tasks in flight and wait for them at most
:data:`~servers.models.asyncio_streams.STOP_GRACE_S`.

Error handling
--------------
A failing connection (reset, a file that shrank) is one line on stderr and
aborts that connection only; the loop's exception handler does the same for
anything else.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import BinaryIO

from servers import protocol
from servers.config import ServerOptions
from servers.exchange import Answer
from servers.limits import Expiry, next_expiry
from servers.models.asyncio_streams import MIN_SWEEP_S, SENDFILE_PART, STOP_GRACE_S, check, stop_on_signals
from servers.protocol import FileShrankError
from servers.service import Service, listen_error, make_service
from servers.sessions import new_session

#: Size of the one read buffer (see "The read buffer" above).
READ_BUFFER_BYTES = protocol.CHUNK_SIZE


class Connection(asyncio.BufferedProtocol):
    """One client. Subclasses implement a service in :meth:`received`."""

    transport: asyncio.Transport

    def __init__(self, server: ProtocolServer) -> None:
        self.server = server
        self.service = server.service
        self.peer: object = None
        self.eof = False
        self.writing_paused = False
        self.last_read = self.last_sent = time.monotonic()
        self.request_started: float | None = None

    # -- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport subclass
        self.peer = transport.get_extra_info("peername")
        self.server.connections.add(self)
        if self.server.stopping:
            self.transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.last_read = time.monotonic()
        try:
            self.received(self.server.read_view[:nbytes])
        except Exception as exc:  # noqa: BLE001 - one bad connection must not stop the others
            self.fail(exc)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.last_sent = time.monotonic()  # the send timeout counts from here
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.last_sent = time.monotonic()
        try:
            self.writable()
        except Exception as exc:  # noqa: BLE001 - as in buffer_updated: this connection fails, not the server
            self.fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if exc is not None and not self.server.stopping:
            self.service.log_error(self.peer, exc)  # a reset or broken pipe is counted, not logged
        self.closed()

    # -- for subclasses ----------------------------------------------------------

    def received(self, data: memoryview) -> None:
        raise NotImplementedError

    def writable(self) -> None:
        """The write buffer went below its low-water mark."""

    def closed(self) -> None:
        """The connection is gone: release what it holds."""

    def sending(self) -> bool:
        """A reply waits for the client to take it: the send timeout applies."""
        return self.writing_paused

    def waiting_for_input(self) -> bool:
        return not self.eof

    # -- shared ------------------------------------------------------------------

    def expiry(self) -> Expiry | None:
        return next_expiry(
            self.service.timeouts,
            sending=self.sending(),
            waiting=self.waiting_for_input(),
            last_read=self.last_read,
            last_sent=self.last_sent,
            request_started=self.request_started,
        )

    def fail(self, error: BaseException) -> None:
        """Log one line (unless stopping) and abort: closing would wait to flush to a client that may not read."""
        if not self.server.stopping:
            self.service.log_error(self.peer, error)
        self.cancel_sending()
        self.transport.abort()

    def cancel_sending(self) -> None:
        """Cancel a send in flight on the socket, *before* the transport closes it.

        ``loop.sendfile`` watches the socket's descriptor itself; cancelled,
        it stops watching one loop turn later. Cancelled only after the
        abort, it would still watch when the socket is closed and its
        descriptor number handed to the next accepted connection, whose
        transport then fails to register it (the new client sees a reset).
        """


class EchoConnection(Connection):
    """RFC 862 echo: every chunk written back; reading stops while the write buffer is full."""

    def received(self, data: memoryview) -> None:
        self.service.work()
        self.transport.write(bytes(data) if self.server.copy_writes else data)

    def writable(self) -> None:
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return False  # the transport flushes what is buffered, then closes


class FileConnection(Connection):
    """The file service: one request at a time; reading pauses while a reply is in flight."""

    def __init__(self, server: ProtocolServer) -> None:
        super().__init__(server)
        self.pending = bytearray()
        self.busy = False
        self.file: BinaryIO | None = None
        self.offset = 0
        self.remaining = 0
        self.lingering = False
        self.discarded = 0
        self.task: asyncio.Task[None] | None = None
        self.close_after_reply = False

    def sending(self) -> bool:
        return self.busy or self.writing_paused

    def waiting_for_input(self) -> bool:
        return not self.eof and not self.lingering  # lingering has its own deadline

    def received(self, data: memoryview) -> None:
        if self.lingering:
            self.discarded += len(data)
            if self.discarded >= protocol.LINGER_BYTES:
                self.transport.close()
            return
        if not self.has_pending():
            self.request_started = self.last_read
        self.take(data)
        self.advance()

    def has_pending(self) -> bool:
        """Part of a request is buffered."""
        return bool(self.pending)

    def take(self, data: memoryview) -> None:
        """Buffer received bytes."""
        self.pending += data

    def eof_received(self) -> bool:
        self.eof = True
        if self.lingering or not self.busy:
            return False  # close (an incomplete line at EOF gets no answer)
        return True  # half-closed: finish the reply in flight first

    def advance(self) -> None:
        """Answer the buffered requests until one needs to wait for the socket; close at EOF."""
        while not self.busy and not self.lingering and not self.transport.is_closing():
            answer = self.next_answer()
            if answer is None:
                if not self.has_pending():
                    self.request_started = None
                if self.eof:
                    self.transport.close()
                return
            self.transport.write(answer.head)
            file, size = answer.file, answer.size
            if file is None or not size:
                if file is not None:
                    file.close()
                if answer.close:
                    self.linger()
                continue
            self.close_after_reply = answer.close
            self.busy = True
            self.transport.pause_reading()
            self.file, self.offset, self.remaining = file, 0, size
            if self.service.sendfile:
                self.task = asyncio.get_running_loop().create_task(self.send_with_sendfile())
            else:
                self.writable()

    def next_answer(self) -> Answer | None:
        """The answer to the next buffered request line; None when none is complete."""
        try:
            line = protocol.split_line(self.pending)
        except protocol.RequestError as error:
            return Answer(protocol.error_line(error), close=error.close)
        if line is None:
            return None
        self.request_started_answer()
        assert self.service.root is not None  # checked at start-up
        try:
            file, size = protocol.open_request(self.service.root, line)
        except protocol.RequestError as error:
            return Answer(protocol.error_line(error), close=error.close)
        return Answer(protocol.ok_header(size), file, size)

    def request_started_answer(self) -> None:
        """A request is complete: its reply starts waiting to go out, and the next request's time starts now."""
        now = time.monotonic()
        self.request_started = now if self.has_pending() else None
        self.last_sent = now
        self.service.work()

    def linger(self) -> None:
        """Lingering close (see :mod:`servers.protocol`): FIN after the error line, then discard input for a while."""
        self.lingering = True
        self.pending.clear()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        asyncio.get_running_loop().call_later(protocol.LINGER_S, self.transport.close)

    def writable(self) -> None:
        """Without sendfile: write chunks until the buffer is full (resume_writing calls back) or the body is out."""
        if self.file is None or self.service.sendfile:
            return
        while self.remaining and not self.writing_paused:
            if self.transport.is_closing():
                return  # the client is gone: connection_lost releases the file
            chunk = os.pread(self.file.fileno(), min(protocol.CHUNK_SIZE, self.remaining), self.offset)
            if not chunk:
                raise FileShrankError(self.offset, self.offset + self.remaining)
            self.transport.write(chunk)
            self.offset += len(chunk)
            self.remaining -= len(chunk)
            self.last_sent = time.monotonic()
        if not self.remaining:
            self.reply_done()

    async def send_with_sendfile(self) -> None:
        assert self.file is not None
        loop = asyncio.get_running_loop()
        try:
            while self.remaining:
                self.last_sent = time.monotonic()
                part = await loop.sendfile(self.transport, self.file, self.offset, min(SENDFILE_PART, self.remaining))
                if not part:
                    raise FileShrankError(self.offset, self.offset + self.remaining)
                self.offset += part
                self.remaining -= part
        except asyncio.CancelledError:
            return  # the connection is gone or the server stops
        except Exception as exc:  # noqa: BLE001 - a failed send fails this connection only
            if not self.transport.is_closing():
                self.fail(exc)
            return
        finally:
            self.task = None
        self.reply_done()

    def reply_done(self) -> None:
        self.close_file()
        self.busy = False
        self.last_sent = time.monotonic()
        if not self.has_pending():
            self.request_started = None
        if self.close_after_reply:
            self.linger()
            return
        if not self.eof:
            self.transport.resume_reading()
        self.advance()

    def close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def cancel_sending(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def closed(self) -> None:
        self.cancel_sending()
        self.close_file()


class SessionConnection(FileConnection):
    """A session service (http, timeauth; see :mod:`servers.exchange`) on the file service's machinery."""

    def __init__(self, server: ProtocolServer) -> None:
        super().__init__(server)
        self.session = new_session(server.service)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if greeting := self.session.greeting():
            self.transport.write(greeting)

    def has_pending(self) -> bool:
        return self.session.buffered()

    def take(self, data: memoryview) -> None:
        self.session.feed(data)

    def next_answer(self) -> Answer | None:
        answer = self.session.next_answer()
        if answer is not None:
            self.request_started_answer()
        return answer


CONNECTIONS: dict[str, type[Connection]] = {
    "echo": EchoConnection,
    "file": FileConnection,
    "http": SessionConnection,
    "timeauth": SessionConnection,
}


class ProtocolServer:
    """One listening server, its connections and its timeout sweep."""

    def __init__(self, service: Service, options: ServerOptions, *, copy_writes: bool = False) -> None:
        self.service = service
        self.options = options
        self.connections: set[Connection] = set()
        self.read_view = memoryview(bytearray(READ_BUFFER_BYTES))
        #: Write a copy of the read buffer, for loops that may keep a reference to it (uvloop).
        self.copy_writes = copy_writes
        self.stopping = False
        #: Connections accepted over the server's life (reuseport logs them per worker).
        self.accepted = 0
        shortest = service.timeouts.shortest()
        self.sweep_every = None if shortest is None else max(shortest / 20, MIN_SWEEP_S)
        self._sweep_handle: asyncio.TimerHandle | None = None

    def new_connection(self) -> Connection:
        self.accepted += 1
        return CONNECTIONS[self.service.name](self)

    async def listen(self, sock: socket.socket | None = None) -> asyncio.Server:
        """Listen on ``sock`` (already bound) or on the options' host and port."""
        loop = asyncio.get_running_loop()
        options = self.options
        try:
            if sock is not None:
                return await loop.create_server(self.new_connection, sock=sock, backlog=options.backlog)
            return await loop.create_server(self.new_connection, options.host, options.port, backlog=options.backlog)
        except OSError as exc:
            raise listen_error(options.host, options.port, exc) from None

    async def run(self, ready: Callable[[str, int], None], sock: socket.socket | None = None) -> None:
        with stop_on_signals(self.service) as stop:
            server = await self.listen(sock)
            host, port = server.sockets[0].getsockname()[:2]
            ready(host, port)
            if self.sweep_every is not None:
                self._sweep_handle = asyncio.get_running_loop().call_later(self.sweep_every, self._sweep)
            try:
                await stop.wait()
                await self._stop(server)
            finally:
                if self._sweep_handle is not None:
                    self._sweep_handle.cancel()

    def _sweep(self) -> None:
        """Abort every connection past its deadline (one line each), then plan the next sweep."""
        now = time.monotonic()
        for connection in list(self.connections):
            expiry = connection.expiry()
            if expiry is not None and expiry[0] <= now:
                _, error, seconds = expiry
                connection.fail(error(seconds))
        assert self.sweep_every is not None
        self._sweep_handle = asyncio.get_running_loop().call_later(self.sweep_every, self._sweep)

    async def _stop(self, server: asyncio.Server) -> None:
        self.stopping = True
        server.close()  # stop accepting, close the listener
        tasks = [task for connection in self.connections if (task := getattr(connection, "task", None)) is not None]
        for connection in list(self.connections):
            connection.cancel_sending()
            connection.transport.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        await asyncio.sleep(0)  # let the aborted transports call connection_lost


def run(
    server: ProtocolServer,
    options: ServerOptions,
    service: str,
    ready: Callable[[str, int], None],
    sock: socket.socket | None = None,
) -> None:
    """Run ``server`` on the loop ``--loop`` asks for until SIGTERM/SIGINT."""
    with asyncio.Runner(loop_factory=check(service, options)) as runner:
        runner.run(server.run(ready, sock))


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` with asyncio protocols until SIGTERM/SIGINT."""
    check(service, options)
    server = ProtocolServer(
        make_service("asyncio-protocol", service, options), options, copy_writes=options.loop == "uvloop"
    )
    try:
        run(server, options, service, ready)
    finally:
        server.service.log_stop()
