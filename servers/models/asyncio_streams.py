"""Model ``asyncio``: ``asyncio.start_server`` with streams, optionally on uvloop.

Each connection is a task running a coroutine that reads from a
``StreamReader`` and writes to a ``StreamWriter``, written as plainly as the
asyncio documentation suggests. It is the idiomatic way to write such a server
today, and the price of that convenience (tasks, futures, stream buffers) is
part of what sockbench measures; :mod:`servers.models.selector_loop` is the
same idea without it.

Flow control: echo awaits ``writer.drain()`` after every write, which suspends
the task while the transport's buffer is above its high-water mark (64 KiB by
default), so a client that never reads stops being read from. The file
service uses ``loop.sendfile`` (``os.sendfile`` under the hood, falling back
to reads if the transport cannot) or, with ``--no-sendfile``, a read/write
loop of :data:`~servers.protocol.CHUNK_SIZE` that drains after each chunk.
File reads happen in the loop's thread: files come from the page cache, and
an executor hop per chunk would measure the thread pool instead.

``--loop uvloop`` runs the same code on uvloop's libuv-based loop. uvloop
does not implement ``loop.sendfile``, so the file service on uvloop requires
``--no-sendfile`` (the command line says so rather than silently measuring
something else).

Timeouts and running out of descriptors
---------------------------------------
Before each await, a connection notes in its :class:`Watch` until when it
may wait and which timeout of :mod:`servers.limits` that is: a read waits at
most the idle timeout, the reads of one request line together at most the
request timeout from its first byte (the file service reads chunks and
splits lines itself, as :mod:`servers.protocol` does for the selectors
model, because ``readuntil`` could bound only the whole line), a ``drain``
(down to the transport's low-water mark) at most the send timeout. One sweep
task checks every connection each twentieth of the shortest timeout and
cancels those past their deadline, as the selectors model does: noting a
deadline costs a clock read, where an ``asyncio.timeout`` block per await
(a timer handle made and cancelled) measured some 20 us. A timed-out
connection is aborted, not closed: closing waits to flush a buffer that a
client who does not read never empties. ``loop.sendfile`` cannot report
progress, so with a send timeout a file goes out in :data:`SENDFILE_PART`
pieces, each bounded by it.

asyncio's own accept loop already stops accepting after EMFILE/ENFILE/
ENOBUFS/ENOMEM, for a fixed ``asyncio.constants.ACCEPT_RETRY_DELAY`` (1 s)
rather than a doubling back-off, but reports every failed ``accept`` to the
exception handler; that handler passes them through the same
:class:`~servers.limits.AcceptBackoff` as the other models, so the log holds
at most a line per pause.

Stopping
--------
SIGTERM/SIGINT (``loop.add_signal_handler``) close the server (no more
accepts, listener closed), cancel every connection task and wait for them, at
most :data:`STOP_GRACE_S`; transports still open are aborted.

Error handling
--------------
A connection's exception is one line on stderr; the loop's exception handler
does the same for anything else, so no traceback reaches the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from asyncio import constants as asyncio_constants
from collections.abc import Callable, Iterator
from typing import Any

from servers import protocol
from servers.config import ServerOptions
from servers.limits import AcceptBackoff, ConnectionTimeout, IdleTimeout, SendTimeout, read_wait
from servers.protocol import FileShrankError
from servers.service import Service, SetupError, listen_error, make_service
from servers.sessions import new_session

#: Longest wait for cancelled connection tasks to finish when stopping (the
#: spec allows 5 s for the whole stop; tasks normally end within one turn).
STOP_GRACE_S = 3.0

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: With a send timeout, files go to ``loop.sendfile`` in parts of this size,
#: each of which must be sent within the timeout: 4 MiB is a few ms of
#: loopback and a few dozen calls for the largest files measured, while a
#: client must take only 4 MiB per send timeout (140 KB/s at 30 s) to keep up.
SENDFILE_PART = 4 * 1024 * 1024

#: The message asyncio's accept loop reports EMFILE and the like with.
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"

#: Shortest interval between two timeout sweeps (as the selectors model).
MIN_SWEEP_S = 0.01

NEVER = float("inf")


class Watch:
    """Until when one connection may wait in its current await, and which timeout that is."""

    __slots__ = ("task", "deadline", "error", "seconds", "expired")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.deadline = NEVER
        self.error: type[ConnectionTimeout] = IdleTimeout
        self.seconds = 0.0
        #: Set by the sweep when it cancels the task for a timeout.
        self.expired: ConnectionTimeout | None = None

    def arm(self, seconds: float | None, error: type[ConnectionTimeout], now: float) -> None:
        """The next await may last ``seconds`` from ``now`` (None: for ever) before ``error``."""
        if seconds is None:
            self.deadline = NEVER
        else:
            self.deadline, self.error, self.seconds = now + seconds, error, seconds


class AsyncServer:
    """One listening server and its connection tasks."""

    def __init__(self, service: Service, options: ServerOptions) -> None:
        self.service = service
        self.options = options
        self.tasks: set[asyncio.Task[Any]] = set()
        self.watches: set[Watch] = set()
        shortest = service.timeouts.shortest()
        self.sweep_every = None if shortest is None else max(shortest / 20, MIN_SWEEP_S)
        self.writers: set[asyncio.StreamWriter] = set()
        self.stopping = False

    async def run(self, ready: Callable[[str, int], None]) -> None:
        with stop_on_signals(self.service) as stop:
            server = await self._listen()
            host, port = server.sockets[0].getsockname()[:2]
            ready(host, port)
            sweeper = None if self.sweep_every is None else asyncio.create_task(self._sweep(self.sweep_every))
            await stop.wait()
            if sweeper is not None:
                sweeper.cancel()
            await self._stop(server)

    async def _listen(self) -> asyncio.Server:
        options = self.options
        # The reader's limit bounds its buffer (it stops reading the socket
        # above twice the limit): the longest legal request line for the file
        # service, whose own line buffer adds at most that plus one chunk; the
        # default (64 KiB, one chunk) for echo.
        limit = protocol.MAX_REQUEST_LINE if self.service.name == "file" else protocol.CHUNK_SIZE
        handler = {"echo": self._echo, "file": self._file}.get(self.service.name, self._session)
        try:
            return await asyncio.start_server(
                self._connection(handler), options.host, options.port, backlog=options.backlog, limit=limit
            )
        except OSError as exc:
            raise listen_error(options.host, options.port, exc) from None

    async def _sweep(self, every: float) -> None:
        """Cancel each connection waiting past its deadline (see "Timeouts" above)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for watch in list(self.watches):
                if watch.deadline <= now and watch.expired is None:
                    watch.expired = watch.error(watch.seconds)
                    watch.task.cancel()

    def _connection(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter, Watch], Any]
    ) -> Callable[..., Any]:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            watch = Watch(task)
            self.tasks.add(task)
            self.watches.add(watch)
            self.writers.add(writer)
            try:
                await handler(reader, writer, watch)
            except asyncio.CancelledError:
                if watch.expired is not None and not self.stopping:
                    self.service.log_error(writer.get_extra_info("peername"), watch.expired)
                # else a stop: the connection is aborted below
            except Exception as exc:  # noqa: BLE001 - logged; one bad connection must not stop the others
                if isinstance(exc, ConnectionTimeout):
                    watch.expired = exc
                if not self.stopping:
                    self.service.log_error(writer.get_extra_info("peername"), exc)
            finally:
                self.tasks.discard(task)
                self.watches.discard(watch)
                self.writers.discard(writer)
                if self.stopping or watch.expired is not None:
                    writer.transport.abort()
                else:
                    writer.close()

        return connection

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: Watch) -> None:
        work = self.service.work
        idle = self.service.timeouts.idle
        clock = asyncio.get_running_loop().time
        while True:
            watch.arm(idle, IdleTimeout, clock())
            data = await reader.read(protocol.CHUNK_SIZE)
            if not data:
                return
            work()
            writer.write(data)
            await self._drain(writer, watch)

    async def _drain(self, writer: asyncio.StreamWriter, watch: Watch) -> None:
        """``writer.drain()`` within the send timeout.

        Only when something waits in the buffer (drain would return at once
        otherwise) or the connection is lost (drain raises its error, so no
        more is written to a dead transport).
        """
        transport = writer.transport
        if transport.get_write_buffer_size() or transport.is_closing():
            watch.arm(self.service.timeouts.send, SendTimeout, asyncio.get_running_loop().time())
            await writer.drain()

    async def _request_line(self, reader: asyncio.StreamReader, pending: bytearray, watch: Watch) -> bytes:
        """The next request line, from ``pending`` and then the reader; b"" at end of stream (also mid-line).

        Each read waits at most the idle timeout, and all of them together at
        most the request timeout from the line's first byte. (``readuntil``
        can only bound the whole line, not the wait for each byte.) Bytes
        after the line stay in ``pending`` for the next request. Raises the
        :func:`protocol.too_long` error for an over-long line.
        """
        timeouts = self.service.timeouts
        loop = asyncio.get_running_loop()
        started = loop.time() if pending else None  # the line's first byte
        while (line := protocol.split_line(pending)) is None:
            wait, error = read_wait(timeouts, started, loop.time())
            watch.arm(wait, error, loop.time())
            data = await reader.read(protocol.CHUNK_SIZE)
            if not data:
                return b""
            if started is None:
                started = loop.time()
            pending += data
        return line

    async def _file(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: Watch) -> None:
        service = self.service
        assert service.root is not None  # checked at start-up
        pending = bytearray()
        while True:
            try:
                line = await self._request_line(reader, pending, watch)
            except protocol.RequestError:
                line = b"x" * (protocol.MAX_REQUEST_LINE + 1)  # parse_request_line turns it into ERR 400 + close
            if not line:
                return  # end of stream, possibly mid-line: nothing to answer
            service.work()
            try:
                file, size = protocol.open_request(service.root, line)
            except protocol.RequestError as error:
                writer.write(protocol.error_line(error))
                await self._drain(writer, watch)
                if error.close:
                    watch.arm(None, IdleTimeout, 0)  # lingering has its own bound
                    await self._linger(reader, writer)
                    return
                continue
            with file:
                writer.write(protocol.ok_header(size))
                await self._send_file(writer, watch, file, size)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: Watch) -> None:
        """A session service (http, timeauth; see :mod:`servers.exchange`): answers sent as the file service's."""
        session = new_session(self.service)
        loop = asyncio.get_running_loop()
        started: float | None = None  # first byte of the request being read
        if greeting := session.greeting():
            writer.write(greeting)
            await self._drain(writer, watch)
        while True:
            answer = session.next_answer()
            if answer is None:
                wait, error = read_wait(self.service.timeouts, started, loop.time())
                watch.arm(wait, error, loop.time())
                data = await reader.read(protocol.CHUNK_SIZE)
                if not data:
                    return  # end of stream, possibly mid-request: nothing to answer
                if not session.buffered():
                    started = loop.time()
                session.feed(data)
                continue
            started = loop.time() if session.buffered() else None
            self.service.work()
            writer.write(answer.head)
            if answer.file is not None:
                with answer.file:
                    await self._send_file(writer, watch, answer.file, answer.size)
            else:
                await self._drain(writer, watch)
            if answer.close:
                watch.arm(None, IdleTimeout, 0)  # lingering has its own bound
                await self._linger(reader, writer)
                return

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Lingering close (see :mod:`servers.protocol`): FIN, then discard input for a bounded time and size."""
        writer.write_eof()
        discarded = 0
        try:
            async with asyncio.timeout(protocol.LINGER_S):
                while discarded < protocol.LINGER_BYTES and (data := await reader.read(protocol.CHUNK_SIZE)):
                    discarded += len(data)
        except TimeoutError:
            pass

    async def _send_file(self, writer: asyncio.StreamWriter, watch: Watch, file: Any, size: int) -> None:
        if not size:
            await self._drain(writer, watch)
            return
        send = self.service.timeouts.send
        if self.service.sendfile:
            loop = asyncio.get_running_loop()
            if send is None:
                watch.arm(None, SendTimeout, 0)
                sent = await loop.sendfile(writer.transport, file, 0, size)
            else:
                sent = 0
                while sent < size:
                    watch.arm(send, SendTimeout, loop.time())
                    part = await loop.sendfile(writer.transport, file, sent, min(SENDFILE_PART, size - sent))
                    if not part:
                        break
                    sent += part
        else:
            sent = 0
            while sent < size and (chunk := os.pread(file.fileno(), min(protocol.CHUNK_SIZE, size - sent), sent)):
                writer.write(chunk)
                sent += len(chunk)
                await self._drain(writer, watch)
        if sent != size:
            raise FileShrankError(sent, size)

    async def _stop(self, server: asyncio.Server) -> None:
        self.stopping = True
        server.close()  # stop accepting, close the listener
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=STOP_GRACE_S)
        for writer in self.writers:
            writer.transport.abort()


@contextlib.contextmanager
def stop_on_signals(service: Service) -> Iterator[asyncio.Event]:
    """In the running loop: an event set by SIGTERM/SIGINT, and the loop's errors as one line each.

    The exception handler writes one line per error to stderr. The failed
    accepts that asyncio reports while out of descriptors go through an
    :class:`~servers.limits.AcceptBackoff` instead: asyncio already pauses
    accepting for a fixed ``ACCEPT_RETRY_DELAY``, so the back-off only paces
    the log. Every asyncio model runs its server inside this block.
    """
    loop = asyncio.get_running_loop()
    retry = asyncio_constants.ACCEPT_RETRY_DELAY
    backoff = AcceptBackoff(lambda line: service.log_error("listener", line), retry, retry)

    def loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception") or context.get("message", "unknown error")
        if context.get("message") == ACCEPT_OUT_OF_RESOURCES and isinstance(error, OSError):
            backoff.failed(error)
            return
        service.log_error(context.get("peername") or "loop", error)

    loop.set_exception_handler(loop_error)
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def check(service: str, options: ServerOptions) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The model's own check (see :mod:`servers.registry`), shared by every event-loop model.

    Returns the loop factory for ``--loop``; :class:`SetupError` when that
    loop cannot serve ``service`` as asked.
    """
    if options.loop == "asyncio":
        return None
    if options.loop != "uvloop":
        raise SetupError(f"--loop {options.loop}: unknown event loop; use asyncio or uvloop")
    try:
        import uvloop
    except ImportError:
        raise SetupError(
            "--loop uvloop: uvloop is not installed; install the extra (pip install 'sockbench[uvloop]') "
            "or use --loop asyncio"
        ) from None
    if service in ("file", "http") and options.sendfile:
        raise SetupError(
            "--loop uvloop: uvloop does not implement loop.sendfile; add --no-sendfile to serve files "
            "with a read/write loop, or use --loop asyncio"
        )
    return uvloop.new_event_loop


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` with asyncio streams until SIGTERM/SIGINT."""
    loop_factory = check(service, options)
    server = AsyncServer(make_service("asyncio", service, options), options)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(server.run(ready))
    finally:
        server.service.log_stop()
