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
import os
import signal
from collections.abc import Callable
from typing import Any

from servers import protocol
from servers.config import ServerOptions
from servers.handlers import FileShrankError
from servers.service import Service, SetupError, listen_error, make_service

SERVICES = ("echo", "file")

#: Longest wait for cancelled connection tasks to finish when stopping (the
#: spec allows 5 s for the whole stop; tasks normally end within one turn).
STOP_GRACE_S = 3.0

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class AsyncServer:
    """One listening server and its connection tasks."""

    def __init__(self, service: Service, options: ServerOptions) -> None:
        self.service = service
        self.options = options
        self.tasks: set[asyncio.Task[Any]] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.stopping = False

    async def run(self, ready: Callable[[str, int], None]) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_error)
        stop = asyncio.Event()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        try:
            server = await self._listen()
            host, port = server.sockets[0].getsockname()[:2]
            ready(host, port)
            await stop.wait()
            await self._stop(server)
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    async def _listen(self) -> asyncio.AbstractServer:
        options = self.options
        # The reader's limit bounds how much it buffers looking for a line:
        # the longest legal request line for the file service, the default
        # (64 KiB, one chunk) for echo, which never looks for lines.
        limit = protocol.MAX_REQUEST_LINE if self.service.name == "file" else protocol.CHUNK_SIZE
        handler = self._echo if self.service.name == "echo" else self._file
        try:
            return await asyncio.start_server(
                self._connection(handler), options.host, options.port, backlog=options.backlog, limit=limit
            )
        except OSError as exc:
            raise listen_error(options.host, options.port, exc) from None

    def _connection(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> Callable[..., Any]:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            self.writers.add(writer)
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                pass  # a stop: the connection is aborted below
            except Exception as exc:
                if not self.stopping:
                    self.service.log_error(writer.get_extra_info("peername"), exc)
            finally:
                self.tasks.discard(task)
                self.writers.discard(writer)
                if self.stopping:
                    writer.transport.abort()
                else:
                    writer.close()

        return connection

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        work = self.service.work
        while data := await reader.read(protocol.CHUNK_SIZE):
            work()
            writer.write(data)
            await writer.drain()

    async def _file(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        service = self.service
        assert service.root is not None  # checked at start-up
        while True:
            try:
                line = await reader.readuntil(protocol.NEWLINE)
            except asyncio.IncompleteReadError:
                return  # end of stream, possibly mid-line: nothing to answer
            except asyncio.LimitOverrunError:
                line = b"x" * (protocol.MAX_REQUEST_LINE + 1)  # parse_request_line turns it into ERR 400 + close
            service.work()
            try:
                file, size = protocol.open_request(service.root, line)
            except protocol.RequestError as error:
                writer.write(protocol.error_line(error))
                await writer.drain()
                if error.close:
                    await self._linger(reader, writer)
                    return
                continue
            with file:
                writer.write(protocol.ok_header(size))
                await self._send_file(writer, file, size)

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

    async def _send_file(self, writer: asyncio.StreamWriter, file: Any, size: int) -> None:
        if not size:
            await writer.drain()
            return
        if self.service.sendfile:
            sent = await asyncio.get_running_loop().sendfile(writer.transport, file, 0, size)
        else:
            sent = 0
            while sent < size and (chunk := os.pread(file.fileno(), min(protocol.CHUNK_SIZE, size - sent), sent)):
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        if sent != size:
            raise FileShrankError(f"file shrank while being sent ({sent} of {size} bytes)")

    async def _stop(self, server: asyncio.AbstractServer) -> None:
        self.stopping = True
        server.close()  # stop accepting, close the listener
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=STOP_GRACE_S)
        for writer in self.writers:
            writer.transport.abort()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception") or context.get("message", "unknown error")
        self.service.log_error(context.get("peername") or "loop", error)


def check_loop(options: ServerOptions, service: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``--loop``; :class:`SetupError` when it cannot serve as asked."""
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
    if service == "file" and options.sendfile:
        raise SetupError(
            "--loop uvloop: uvloop does not implement loop.sendfile; add --no-sendfile to serve files "
            "with a read/write loop, or use --loop asyncio"
        )
    return uvloop.new_event_loop


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` with asyncio streams until SIGTERM/SIGINT."""
    loop_factory = check_loop(options, service)
    server = AsyncServer(make_service("asyncio", service, options), options)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(server.run(ready))
