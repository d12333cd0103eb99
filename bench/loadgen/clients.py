"""Client protocols: one TCP connection carrying one request at a time, and the client that owns it.

A *client* (:class:`Client`) is one unit of offered load: it keeps one
connection up, reconnecting when it fails or after ``requests_per_connection``
requests, and hands the connection to a *dispatcher* whenever it is free (see
:mod:`bench.loadgen.schedule`: closed loop sends at once, open loop sends on
a schedule). A *connection* (:class:`EchoConnection`, :class:`FileConnection`,
:class:`HttpConnection`) is an :class:`asyncio.BufferedProtocol` that sends one request, checks the
reply as it arrives and reports the outcome.

Why BufferedProtocol, not streams or ``Protocol.data_received``
----------------------------------------------------------------
Streams add a future and a coroutine switch per read. ``data_received`` on
Python 3.11's selector transport allocates a fresh 256 KiB ``bytes`` per
recv, above glibc's mmap threshold, so every read costs an mmap and munmap:
that alone capped a client process at ~40k round trips/s on the reference
machine. With ``get_buffer`` the transport ``recv_into``-s a buffer we own.
All connections of a worker share *one* buffer: both asyncio and uvloop call
``buffer_updated`` right after filling it, before any other connection
reads, and each reply chunk is consumed (compared, hashed or counted) inside
``buffer_updated``. One 256 KiB buffer serves 10k connections where
per-connection buffers would take 2.5 GiB.

Reply checks
------------
Echo: every byte is compared with the message sent (``bytearray.startswith``
on the chunk is a memcmp); a byte too many is corrupt. File: the header must
be ``OK <size>`` with the expected size, then exactly ``size`` bytes; a
sampled fraction of replies is SHA-256 hashed and compared. ``ERR`` replies
are counted as corrupt (the target exists, so the server answered wrongly)
and their text is kept for the warnings. HTTP: one keep-alive connection
carries ``GET <path>`` after ``GET <path>`` (``method: HEAD``: ``HEAD``); the
replies are parsed with h11 (no parser of our own). A 2xx must carry
``Content-Length`` equal to the file's size and, for GET, exactly that many
body bytes, hashed on the sampled fraction as for the file service; for HEAD
no body at all (bytes after the head are, to h11, the start of the next
reply, which then fails as corrupt: the reply before them counts, as for any
bytes past a reply, in either engine). Any
other status is a failed request of its own kind (``http_3xx``,
``http_4xx``, ``http_5xx``: the server answered, but not with the file); its
body is read and the connection kept, as a browser would. A reply that says
``Connection: close`` ends the connection after it.
Timeauth (:mod:`servers.timeauth`): a request is one login on a kept
connection: wait for the ``name?`` prompt (sent on connect and after every
time line, so on a kept connection it is already there), send the name, read
the ACK byte, send the password, read ``TIME ...``: two round trips where
echo needs one, three on a fresh connection counting the connect. Every
byte of the prompt and the ACK is compared; the time line must start with
``TIME `` and end within :data:`MAX_HEADER` bytes. The server's ``ERR 401``
line is a failed request of its own kind, ``denied`` (the server is right,
the generator's login wrong); any other ``ERR`` is corrupt, its text kept as
the file service's are.

Pipelining (``pipeline: N``, closed loop): a free connection writes N
requests in one ``write`` (each request's bytes as h11 formats it, made once
per path) and reads the N replies in order; h11 is told of each request just
before its reply is read, so its framing (HEAD has no body) follows the
request it answers. Every reply is a request of its own: its latency runs
from the batch's write to its own last byte, so the k-th reply of a batch
includes the k-1 before it, as it does for the client that pipelines. The
connection is free again once the last reply is in. A server that closes
with requests of a batch unanswered (after a ``Connection: close`` reply)
counts each of them as ``closed_early``; a failure of any other kind ends
the connection as for one request, and the requests behind the failed one
go with it, uncounted (one timeout per connection, for its oldest request).

Error handling
--------------
Connect failures are classified by :func:`classify_connect_error` and
retried after :data:`RETRY_DELAY_S` until the run stops. After connect, a
failure ends the connection (a stream in an unknown state cannot carry
another request) and the client reconnects at once:

- reset: the connection was lost with an error (ECONNRESET, EPIPE, ...);
- closed_early: the server closed before the first reply byte;
- short: the server closed in the middle of a reply;
- corrupt: wrong bytes, wrong size, bad header, checksum mismatch, ERR,
  a reply h11 cannot parse;
- denied: a timeauth login refused (``ERR 401``);
- timeout: no whole reply within ``request_timeout_s`` (found by the
  worker's sweeper, :meth:`Client.check_timeout`).

A connection lost while idle (open loop between requests) is no request
failure; it is noted and reported as a warning.

Slow clients (``load.mix``)
---------------------------
Besides the clients above (the *fast* ones, whose requests every latency
and throughput column counts), a run may hold slow clients, each a
:class:`SlowClient` with one connection at a time, which it keeps until the
server ends it. A slow reader or a slowloris then connects again (after
:data:`RETRY_DELAY_S`), as a download retries or an attack goes on, so
their share of the clients stays what the scenario says all run long; an
idle client does not, as a browser's idle keep-alive connection that the
server closed stays closed until there is something to ask (which is what
an idle timeout is for):

- ``slow_reader`` asks for a large reply (echo: a ``slow_reply_bytes``
  message; file: the clients' file) and reads it at ``slow_read_rate``
  bytes per second, in reads of a tenth of a second's worth, pausing the
  transport in between; its receive buffer is kept small
  (:data:`SLOW_READER_RCVBUF`), so the reply waits in the server as it would
  behind a slow link. Whole reply read: it asks again.
- ``slowloris`` sends its request (echo: the clients' message; file: the
  request line) one byte every ``slowloris_interval``, reads and discards
  whatever comes back, and starts again once the whole request is out.
- ``idle`` connects and sends nothing: an idle keep-alive connection.

Their replies are counted, not checked (the fast clients check every
reply). What happens to them is counted per kind over the whole run
(:data:`bench.vocabulary.SLOW_OUTCOMES`): connections made, connects that
failed, connections the server ended, slow requests completed. Each slow
client's loop ends with the run (the worker cancels it) and is bounded in
count too: at most one connection per :data:`RETRY_DELAY_S` of the run, one
byte per ``slowloris_interval``.

Resource handling
-----------------
A connection is closed exactly once: retiring it (:meth:`Client._retire`)
marks it dead and closes or aborts its transport; its later
``connection_lost`` is then ignored. At the end of a run the worker calls
:meth:`Client.stop`, which cancels a pending connect (asyncio closes the
half-open socket) and closes the transport with a FIN, so the server sees an
ordinary end of connection rather than a reset. Before that the worker gives
replies in flight a bounded time to arrive (:data:`bench.loadgen.worker.DRAIN_S`)
without sending anything new: closing a socket with unread bytes, or one the
server is still writing to, makes the kernel send a reset instead of a FIN.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import random
import socket
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

import h11

from bench.loadgen.spec import SLOW_KINDS, request_target
from bench.vocabulary import SLOW_OUTCOMES

if TYPE_CHECKING:  # pragma: no cover
    from bench.loadgen.recording import WorkerStats

#: Linux's IP_BIND_ADDRESS_NO_PORT (include/uapi/linux/in.h); the socket
#: module names it from Python 3.12 on.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
#: Pause before retrying a failed connect: a closed port refuses in ~30 us,
#: so retrying at once would spin a core measuring nothing; 10 ms keeps load
#: offered within a blink while costing nothing.
RETRY_DELAY_S = 0.01
#: A file reply header is "OK <size>\n" or "ERR <code> <reason>\n"; 512 bytes
#: leaves room for any reason text while catching a server that sends no header.
MAX_HEADER = 512

_CONNECT_ERRNOS = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.ECONNABORTED: "reset",
    errno.EPIPE: "reset",
    errno.ETIMEDOUT: "timeout",
    errno.EMFILE: "emfile",
    errno.EADDRNOTAVAIL: "eaddrnotavail",
}


def classify_connect_error(exc: BaseException) -> tuple[str, str | None]:
    """Map a failed connect to ``(outcome, errno name for "other" or None)``."""
    if isinstance(exc, TimeoutError) and getattr(exc, "errno", None) in (None, errno.ETIMEDOUT):
        return "timeout", None
    code = getattr(exc, "errno", None)
    if code in _CONNECT_ERRNOS:
        return _CONNECT_ERRNOS[code], None
    if code is not None:
        return "other", errno.errorcode.get(code, str(code))
    return "other", type(exc).__name__


def _is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    """True for a uvloop event loop (its transports own a socket object differently from asyncio's)."""
    return type(loop).__module__.startswith("uvloop")


class _Sampling(Protocol):
    """What the checksum-sampling rule reads and updates (a worker's shared state, in either engine)."""

    sample: float
    sample_acc: float


class Shared:
    """Per-worker state every client and connection uses: settings, buffer, stats, dispatcher."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stats: WorkerStats,
        ip: str,
        port: int,
        job: dict[str, Any],
        buffer_bytes: int,
    ) -> None:
        spec = job["spec"]
        self.loop = loop
        self.stats = stats
        self.ip = ip
        self.port = port
        self.connect_timeout = spec["connect_timeout_s"]
        self.request_timeout = spec["request_timeout_s"]
        self.rpc = spec["requests_per_connection"]
        self.buffer = bytearray(buffer_bytes)
        self.view = memoryview(self.buffer)
        self.stopping = False
        self.dispatcher: Any = None
        self.service = spec["service"]
        # Random bytes (seeded per worker) so a server that mangles any byte is caught.
        self.message = random.Random(job["seed"]).randbytes(spec["message_bytes"]) if self.service == "echo" else b""
        self.message_view = memoryview(self.message)
        if self.service == "http":
            self.files = [(request_target(f["name"]), f["size"], f["sha256"]) for f in spec["files"]]
        else:
            self.files = [(f["name"].encode("utf-8") + b"\n", f["size"], f["sha256"]) for f in spec["files"]]
        host = f"[{ip}]" if ":" in ip else ip
        self.http_headers = [("Host", f"{host}:{port}"), ("User-Agent", "sockbench")]
        self.method = spec.get("method", "GET").encode("ascii")
        self.head = self.method == b"HEAD"
        self.pipeline = int(spec.get("pipeline", 1))
        # Each target's request as h11 writes it, made once: a pipelined batch is several of them in one write.
        self.request_bytes = (
            {target: self._request_bytes(target) for target, _, _ in self.files} if self.service == "http" else {}
        )
        # Seeded per worker, so a run with path_order: random asks for the same paths again.
        self.path_rng = random.Random(job["seed"]) if spec.get("path_order") == "random" else None
        self.sample = float(spec["checksum_sample"])
        self.sample_acc = 1.0  # so the first reply of each worker is verified
        name, _, password = spec.get("login", "").partition(":")
        self.login_name = name.encode("utf-8") + b"\n"
        self.login_password = password.encode("utf-8") + b"\n"
        self.connection_class = {
            "echo": EchoConnection,
            "file": FileConnection,
            "http": HttpConnection,
            "timeauth": TimeAuthConnection,
        }[self.service]
        # load.mix: how the slow clients behave, and what happened to them (per kind, whole run).
        self.slow_read_rate = int(spec.get("slow_read_rate") or 1)
        self.slowloris_interval = float(spec.get("slowloris_interval_s") or 1.0)
        slow = job.get("mix") or {}
        self.slow_message = (
            random.Random(job["seed"]).randbytes(spec["slow_reply_bytes"])
            if self.service == "echo" and slow.get("slow_reader")
            else b""
        )
        self.slow_counts = {kind: dict.fromkeys(SLOW_OUTCOMES, 0) for kind in SLOW_KINDS}
        # Source addresses to take turns over, one per connect (bench.loadgen.spec.source_addresses);
        # empty: the kernel chooses. Worker i starts at address i so workers do not move in step.
        self.sources: list[str] = list(job.get("source_ips") or [])
        self.source_next = job.get("index", 0)

    async def open_connection(self, factory: Callable[[], _Connection]) -> _Connection:
        """Connect one client: from the next source address when there are several, else as the kernel chooses.

        ``create_connection(local_addr=...)`` binds without
        ``IP_BIND_ADDRESS_NO_PORT``, so the kernel would reserve a port per
        source address at ``bind()`` for any destination, far fewer than it
        finds per 4-tuple at connect time; so the socket is made, bound and
        connected here and handed over with ``sock=``.
        """
        if not self.sources:
            _, conn = await self.loop.create_connection(factory, self.ip, self.port)
            return conn
        source = self.sources[self.source_next % len(self.sources)]
        self.source_next += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await self.loop.sock_connect(sock, (self.ip, self.port))
            transport, conn = await self.loop.create_connection(factory, sock=sock)
        except BaseException:
            sock.close()  # a no-op where the loop has taken the fd (uvloop detaches it on failure)
            raise
        if transport.is_closing() and _is_uvloop(self.loop):
            # uvloop attaches the socket object to the transport only after
            # connection_made: one closed by then is never detached, and the
            # object would close its fd number again when collected, perhaps
            # another connection's. libuv closes the fd; the object lets go.
            # (asyncio's transport closes this same object itself: leave it.)
            sock.detach()
        return conn

    def _request_bytes(self, target: bytes) -> bytes:
        writer = h11.Connection(h11.CLIENT)
        request = writer.send(h11.Request(method=self.method, target=target, headers=self.http_headers))
        return (request or b"") + (writer.send(h11.EndOfMessage()) or b"")

    def take_sample(self: _Sampling) -> bool:
        """Decide whether the next file reply is hashed: exactly ``sample`` of them, evenly spread."""
        if self.sample <= 0.0:
            return False
        self.sample_acc += self.sample
        if self.sample_acc >= 1.0:
            self.sample_acc -= 1.0
            return True
        return False


class _Connection(asyncio.BufferedProtocol):
    """Common part of a client connection: state of the request in flight, loss handling."""

    __slots__ = (
        "client",
        "shared",
        "stats",
        "ready",
        "recycle_after",
        "transport",
        "busy",
        "dead",
        "served",
        "t_int",
        "t_sent",
        "t_first",
        "got",
    )

    def __init__(self, client: Client) -> None:
        self.client = client
        self.shared = client.shared
        self.stats = client.shared.stats
        # What to call with this connection when it is free; resolved once
        # (closed loop: our own start, saving a call per request).
        self.ready = client.shared.dispatcher.ready_function(type(self))
        self.recycle_after = client.shared.rpc
        self.transport: Any = None
        self.busy = False
        self.dead = False
        self.served = 0
        self.t_int = self.t_sent = self.t_first = 0.0
        self.got = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not TCP (never here) or already closing: nothing to tune

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.shared.view

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost classifies it

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.dead:
            self.dead = True
            self.client.lost(self, exc)

    def _finish(self, t: float, nbytes: int) -> None:
        self.busy = False
        self.served += 1
        self.client.completed += self.stats.complete(self.t_int, self.t_sent, self.t_first, t, nbytes)
        self._next()

    def _next(self) -> None:
        """The request is done: hand the connection on, or recycle it after its requests_per_connection."""
        if self.shared.stopping:
            return  # end of run: nothing new is sent; the worker closes it with a FIN
        if self.recycle_after and self.served >= self.recycle_after:
            self.client.recycle(self)
        else:
            self.ready(self)

    def start(self, t_intended: float | None = None) -> None:
        """Send the next request; ``t_intended`` is its scheduled start (None: now)."""
        raise NotImplementedError

    def _send(self, request: bytes, t_intended: float | None) -> None:
        """Time-stamp and send ``request``: the request in flight from now."""
        t = monotonic()
        self.t_int = t if t_intended is None else t_intended
        self.t_sent = t
        self.got = 0
        self.busy = True
        self.transport.write(request)


class EchoConnection(_Connection):
    """RFC 862 echo: send the message, expect exactly the same bytes back."""

    __slots__ = ("msg", "msg_view", "msg_len", "buf")

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.msg = self.shared.message
        self.msg_view = self.shared.message_view
        self.msg_len = len(self.msg)
        self.buf = self.shared.buffer

    def start(self, t_intended: float | None = None) -> None:
        t = monotonic()
        self.t_int = t if t_intended is None else t_intended
        self.t_sent = t
        self.got = 0
        self.busy = True
        self.transport.write(self.msg)

    def buffer_updated(self, nbytes: int) -> None:
        t = monotonic()
        got = self.got
        if got == 0 and nbytes == self.msg_len and self.busy and self.buf.startswith(self.msg):
            self.t_first = t  # the usual case: the whole reply in one read
            self._finish(t, nbytes)
            return
        if not self.busy:
            self.client.fail(self, "corrupt", t)  # bytes nobody asked for
            return
        if got == 0:
            self.t_first = t
        end = got + nbytes
        if end > self.msg_len or not self.buf.startswith(self.msg_view[got:end]):
            self.client.fail(self, "corrupt", t)
            return
        if end == self.msg_len:
            self._finish(t, end)
        else:
            self.got = end


class FileConnection(_Connection):
    """File service: send ``<name>\\n``, expect ``OK <size>\\n`` and exactly ``size`` bytes."""

    __slots__ = ("header", "left", "size", "sha", "hasher")

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.header: bytearray | None = None
        self.left = self.size = 0
        self.sha = ""
        self.hasher: Any = None

    def start(self, t_intended: float | None = None) -> None:
        line, size, sha = self.client.next_file()
        self.size = size
        self.sha = sha
        self.hasher = hashlib.sha256() if sha and self.shared.take_sample() else None
        self.header = bytearray()
        self._send(line, t_intended)

    def buffer_updated(self, nbytes: int) -> None:
        t = monotonic()
        if not self.busy:
            self.client.fail(self, "corrupt", t)
            return
        if self.got == 0:
            self.t_first = t
        self.got += nbytes
        pos = 0
        if self.header is not None:
            pos = self._read_header(nbytes, t)
            if pos < 0:
                return
        body = nbytes - pos
        if body > self.left:
            self.client.fail(self, "corrupt", t)  # more bytes than announced
            return
        if body and self.hasher is not None:
            self.hasher.update(self.shared.view[pos:nbytes])
        self.left -= body
        if self.left == 0 and self.header is None:
            if self.hasher is not None and self.hasher.hexdigest() != self.sha:
                self.client.fail(self, "corrupt", t)
                return
            self._finish(t, self.size)

    def _read_header(self, nbytes: int, t: float) -> int:
        """Consume header bytes; return where the body starts in the buffer, or -1 (wait/failed)."""
        buf = self.shared.buffer
        nl = buf.find(b"\n", 0, nbytes)
        assert self.header is not None
        if nl < 0:
            self.header += buf[:nbytes]
            if len(self.header) > MAX_HEADER:
                self.client.fail(self, "corrupt", t)
            return -1
        self.header += buf[:nl]
        head = bytes(self.header)
        self.header = None
        parts = head.split()
        if len(parts) == 2 and parts[0] == b"OK" and parts[1].isdigit() and int(parts[1]) == self.size:
            self.left = self.size
            return nl + 1
        if parts and parts[0] == b"ERR":
            self.stats.err_reply(head.decode("utf-8", "replace")[:80])
        self.client.fail(self, "corrupt", t)
        return -1


class HttpConnection(_Connection):
    """HTTP/1.1 keep-alive: ``GET``/``HEAD <path>``, pipelined or not, parsed with h11. See module docstring."""

    __slots__ = ("h11", "size", "sha", "hasher", "body", "failure", "queue")

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.h11 = h11.Connection(h11.CLIENT)
        self.size = self.body = 0
        self.sha = ""
        self.hasher: Any = None
        self.failure: str | None = None  # the status class of a non-2xx reply being read
        self.queue: deque[tuple[bytes, int, str]] = deque()  # the requests sent whose replies are due, in order

    def start(self, t_intended: float | None = None) -> None:
        shared = self.shared
        depth = shared.pipeline
        if self.recycle_after:
            depth = min(depth, self.recycle_after - self.served)
        queue = self.queue
        queue.clear()
        for _ in range(depth):
            queue.append(self.client.next_file())
        self._expect(queue[0])
        wire = shared.request_bytes
        self._send(wire[queue[0][0]] if depth == 1 else b"".join(wire[target] for target, _, _ in queue), t_intended)

    def _expect(self, item: tuple[bytes, int, str]) -> None:
        """Make ``item`` the reply being read: h11 is told of its request (the bytes are already on the wire)."""
        target, self.size, self.sha = item
        shared = self.shared
        self.hasher = hashlib.sha256() if self.sha and not shared.head and shared.take_sample() else None
        self.body = 0
        self.failure = None
        self.h11.send(h11.Request(method=shared.method, target=target, headers=shared.http_headers))
        self.h11.send(h11.EndOfMessage())

    def buffer_updated(self, nbytes: int) -> None:
        t = monotonic()
        if not self.busy:
            self.client.fail(self, "corrupt", t)  # bytes nobody asked for
            return
        if self.got == 0:
            self.t_first = t
        self.got += nbytes
        conn = self.h11
        try:
            conn.receive_data(bytes(self.shared.view[:nbytes]))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    return  # wait; a close is classified by connection_lost
                if isinstance(event, h11.Data):
                    self.body += len(event.data)
                    if self.failure is None:
                        if self.body > self.size:
                            self.client.fail(self, "corrupt", t)  # more bytes than the file has
                            return
                        if self.hasher is not None:
                            self.hasher.update(event.data)
                elif isinstance(event, h11.Response):
                    if not self._head_ok(event):
                        self.client.fail(self, "corrupt", t)
                        return
                elif isinstance(event, h11.EndOfMessage):
                    if not self._end(t):
                        return
                # InformationalResponse (1xx): the real reply follows.
        except h11.RemoteProtocolError:
            self.client.fail(self, "corrupt", t)

    def _head_ok(self, response: h11.Response) -> bool:
        """Check a reply's status line and headers; a non-2xx is remembered as this request's failure."""
        status_class = response.status_code // 100
        if status_class != 2:
            self.failure = f"http_{status_class}xx"
            return 3 <= status_class <= 5
        lengths = [value for name, value in response.headers if name == b"content-length"]
        return lengths == [str(self.size).encode("ascii")]  # HEAD too: the length the GET would have

    def _end(self, t: float) -> bool:
        """A whole reply is in: count it; True if the next pipelined reply is to be read from what is buffered."""
        conn = self.h11
        queue = self.queue
        queue.popleft()
        expected = 0 if self.shared.head else self.size  # h11 reads no body after a HEAD: one would be the next reply
        if self.failure is None and (
            self.body != expected or (self.hasher is not None and self.hasher.hexdigest() != self.sha)
        ):
            self.client.fail(self, "corrupt", t)
            return False
        keep = conn.our_state is h11.DONE and conn.their_state is h11.DONE
        if keep:
            conn.start_next_cycle()
        self.served += 1
        if self.failure is None:
            self.client.completed += self.stats.complete(self.t_int, self.t_sent, self.t_first, t, expected)
        else:
            self.stats.request_error(self.failure, t)
        if queue and keep:
            self._expect(queue[0])  # its reply may be buffered already: the loop goes on reading it
            self.got = len(conn.trailing_data[0])
            if self.got:
                self.t_first = t  # its first byte came with this read
            return True
        if queue:  # the server ends the connection with pipelined requests unanswered
            for _ in queue:
                self.stats.request_error("closed_early", t)
            queue.clear()
        if not keep:
            self.recycle_after = self.served  # the server closes after this reply: connect anew
        self.busy = False
        self._next()
        return False


#: What the timeauth server sends (servers.timeauth): the prompt, the ACK byte, the start of a time line.
TIMEAUTH_PROMPT = b"name?\n"
TIMEAUTH_ACK = b"\x06"
TIMEAUTH_TIME = b"TIME "
#: The start of the server's line for a wrong name or password.
TIMEAUTH_DENIED = b"ERR 401"


class TimeAuthConnection(_Connection):
    """timeauth: prompt, name, ACK, password, ``TIME ...``; one login per request. See module docstring."""

    __slots__ = ("expect", "matched", "line", "named")

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.expect = "prompt"  # what the next reply byte belongs to: prompt, ack, time (or an error line: err)
        self.matched = 0  # bytes of the prompt read so far
        self.line = bytearray()  # the time or error line so far
        self.named = False  # the request in flight has sent its name

    def start(self, t_intended: float | None = None) -> None:
        t = monotonic()
        self.t_int = t if t_intended is None else t_intended
        self.t_sent = t
        self.got = 0
        self.busy = True
        self.named = False
        if self.expect == "ack":  # the prompt is in: send the name at once
            self._name()

    def _name(self) -> None:
        self.named = True
        self.transport.write(self.shared.login_name)

    def buffer_updated(self, nbytes: int) -> None:
        t = monotonic()
        data = self.shared.buffer
        pos = 0
        while pos < nbytes and not self.dead:
            if self.expect == "prompt":  # not part of a request's reply: it may come while the client is idle
                take = min(nbytes - pos, len(TIMEAUTH_PROMPT) - self.matched)
                if data[pos : pos + take] != TIMEAUTH_PROMPT[self.matched : self.matched + take]:
                    self.client.fail(self, "corrupt", t)
                    return
                pos += take
                self.matched += take
                if self.matched == len(TIMEAUTH_PROMPT):
                    self.matched = 0
                    self.expect = "ack"  # ready for a name (a request waiting for the prompt sends it now)
                    if self.busy and not self.named:
                        self._name()
                continue
            if not self.busy or not self.named:
                self.client.fail(self, "corrupt", t)  # bytes nobody asked for
                return
            if self.got == 0:
                self.t_first = t
            if self.expect == "ack":
                if data[pos] == TIMEAUTH_ACK[0]:
                    pos += 1
                    self._took(1)
                    self.expect = "time"
                    self.transport.write(self.shared.login_password)
                    continue
                if data[pos] != TIMEAUTH_DENIED[0]:
                    self.client.fail(self, "corrupt", t)  # neither the ACK nor an error line
                    return
                self.expect = "err"  # not the ACK: the server's error line
            nl = data.find(b"\n", pos, nbytes)
            end = nbytes if nl < 0 else nl + 1
            self.line += data[pos:end]
            self._took(end - pos)
            pos = end
            if len(self.line) > MAX_HEADER:
                self.client.fail(self, "corrupt", t)
                return
            if nl >= 0:
                self._line_done(t)

    def _took(self, n: int) -> None:
        self.got += n

    def _line_done(self, t: float) -> None:
        line = bytes(self.line)
        self.line.clear()
        if self.expect == "time" and line.startswith(TIMEAUTH_TIME):
            self.expect = "prompt"
            self._finish(t, self.got)
            return
        if line.startswith(TIMEAUTH_DENIED):
            self.client.fail(self, "denied", t)
            return
        if line.startswith(b"ERR"):
            self.stats.err_reply(line.decode("utf-8", "replace").strip()[:80])
        self.client.fail(self, "corrupt", t)


#: A slow reader's receive buffer (the kernel doubles it): loopback autotunes
#: buffers up to several MiB, which would swallow a few MiB of reply at once and
#: free the server; 16 KiB leaves the reply where a slow link leaves it, in
#: the server, which must keep sending (a thread, a process, or buffered
#: bytes in an event loop) for as long as the client takes to read.
SLOW_READER_RCVBUF = 16 * 1024
#: Most bytes a slow reader's read takes: it reads a tenth of a second's
#: worth at a time (so its rate is smooth at any slow_read_rate), never more
#: than this, whatever the rate.
SLOW_READ_CHUNK_MAX = 64 * 1024


class SlowConnection(asyncio.BufferedProtocol):
    """The connection of a :class:`SlowClient`: reads into its own small buffer and tells its client."""

    def __init__(self, client: SlowClient) -> None:
        self.client = client
        self.transport: Any = None
        self.lost: asyncio.Future[Exception | None] = client.shared.loop.create_future()
        self.view = memoryview(bytearray(client.chunk))
        self.resume: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.client.received(self, nbytes)

    def eof_received(self) -> bool:
        return False  # the server ended it: let the transport close; connection_lost tells the client

    def connection_lost(self, exc: Exception | None) -> None:
        if self.resume is not None:
            self.resume.cancel()
        if not self.lost.done():
            self.lost.set_result(exc)

    def close(self) -> None:
        """End of run: abort (a slow reader's socket has unread bytes, so a FIN would be a reset anyway)."""
        if self.resume is not None:
            self.resume.cancel()
        if self.transport is not None:
            self.transport.abort()


class SlowClient:
    """One slow client of ``load.mix`` (``slow_reader``, ``slowloris`` or ``idle``). See the module docstring."""

    def __init__(self, shared: Shared, kind: str, run_s: float) -> None:
        self.shared = shared
        self.kind = kind
        self.counts = shared.slow_counts[kind]
        self.task: asyncio.Task[None] | None = None
        self.conn: SlowConnection | None = None
        # Bounded in count as well as by the run: one connect per retry pause at most.
        self.run_s = run_s
        self.max_connects = int(run_s / RETRY_DELAY_S) + 2
        self.rate = max(1, shared.slow_read_rate)
        self.chunk = max(1, min(SLOW_READ_CHUNK_MAX, self.rate // 10)) if kind == "slow_reader" else 4096
        self.got = 0
        if kind == "slow_reader" and shared.service == "echo":
            self.request, self.reply_bytes = shared.slow_message, len(shared.slow_message)
        elif shared.service == "echo":
            self.request, self.reply_bytes = shared.message, len(shared.message)
        else:
            line, size, _sha = shared.files[0]
            self.request, self.reply_bytes = line, len(b"OK %d\n" % size) + size

    def start(self) -> None:
        self.task = self.shared.loop.create_task(self._run())

    async def _run(self) -> None:
        sh = self.shared
        for _ in range(self.max_connects):
            if sh.stopping:
                return
            try:
                conn = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed connect is counted, then retried
                self.counts["connect_failed"] += 1
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self.counts["connected"] += 1
            self.conn, self.got = conn, 0
            if self.kind == "slow_reader":
                conn.transport.write(self.request)
            elif self.kind == "slowloris":
                await self._trickle(conn)
            await conn.lost  # cancelled at the end of the run
            self.conn = None
            self.counts["closed"] += 1
            if self.kind == "idle":
                return  # a keep-alive connection the server closed stays closed (see the module docstring)
            await asyncio.sleep(RETRY_DELAY_S)

    async def _connect(self) -> SlowConnection:
        sh = self.shared
        sock = socket.socket(socket.AF_INET6 if ":" in sh.ip else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if self.kind == "slow_reader":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READER_RCVBUF)
            async with asyncio.timeout(sh.connect_timeout):
                await sh.loop.sock_connect(sock, (sh.ip, sh.port))
            _, conn = await sh.loop.create_connection(lambda: SlowConnection(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        return conn

    async def _trickle(self, conn: SlowConnection) -> None:
        """Slowloris: the request a byte at a time, again and again, until the server ends the connection."""
        interval = self.shared.slowloris_interval
        # Bounded in count: a whole request takes len(request) intervals, so no more fit in the run.
        for _ in range(int(self.run_s / (interval * max(1, len(self.request)))) + 1):
            for i in range(len(self.request)):
                if conn.lost.done() or self.shared.stopping:
                    return
                conn.transport.write(self.request[i : i + 1])
                await asyncio.sleep(interval)
            self.counts["completed"] += 1

    def received(self, conn: SlowConnection, nbytes: int) -> None:
        """Bytes arrived on ``conn``: a slow reader counts them and pauses to keep to its rate; others discard them."""
        if self.kind != "slow_reader" or conn.transport is None:
            return
        self.got += nbytes
        if self.got >= self.reply_bytes:
            self.got -= self.reply_bytes
            self.counts["completed"] += 1
            if not self.shared.stopping:
                conn.transport.write(self.request)
        conn.transport.pause_reading()
        conn.resume = self.shared.loop.call_later(nbytes / self.rate, self._resume, conn)

    @staticmethod
    def _resume(conn: SlowConnection) -> None:
        conn.resume = None
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.resume_reading()

    def stop(self) -> None:
        """End of run: stop the loop and drop the connection."""
        if self.task is not None:
            self.task.cancel()
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Client:
    """One unit of offered load: keeps a connection and feeds it to the dispatcher. See module docstring."""

    def __init__(self, shared: Shared, index: int) -> None:
        self.shared = shared
        self.conn: _Connection | None = None
        self.task: asyncio.Task[None] | None = None
        self.connecting = False
        self.completed = 0  # requests completed in the measured window (clients_served counts clients with any)
        self.file_pos = index % len(shared.files) if shared.files else 0

    # ------------------------------------------------------------ connecting
    def start(self) -> None:
        """Begin connecting (and keep a connection up until :meth:`stop`)."""
        if not self.shared.stopping:
            self.task = self.shared.loop.create_task(self._connect())

    async def _connect(self) -> None:
        sh = self.shared
        cls = sh.connection_class
        while not sh.stopping:
            t0 = monotonic()
            self.connecting = True
            try:
                async with asyncio.timeout(sh.connect_timeout):
                    conn = await sh.open_connection(lambda: cls(self))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every connect failure is data, classified
                self.connecting = False
                sh.stats.connect_failed(*classify_connect_error(exc))
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self.connecting = False
            sh.stats.connect_ok(monotonic() - t0)
            if conn.dead:  # lost before we got it (e.g. reset right after accept)
                sh.stats.note("idle_lost")
                continue
            self.task = None
            self.conn = conn
            sh.dispatcher.ready(conn)
            return

    # ------------------------------------------------------------ events from the connection
    def next_file(self) -> tuple[bytes, int, str]:
        """The next file request (line, size, sha256), cycling through the targets."""
        files = self.shared.files
        if self.shared.path_rng is not None:
            return files[self.shared.path_rng.randrange(len(files))]
        item = files[self.file_pos]
        self.file_pos = (self.file_pos + 1) % len(files)
        return item

    def recycle(self, conn: _Connection) -> None:
        """``conn`` carried its ``requests_per_connection``: close it (FIN) and connect anew."""
        self._retire(conn, abort=False)
        self.start()

    def fail(self, conn: _Connection, kind: str, t: float) -> None:
        """The request in flight failed with ``kind``: count it, drop the connection, reconnect."""
        self.shared.stats.request_error(kind, t)
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        """Abort ``conn`` after a failed request and connect anew."""
        self._retire(conn, abort=True)
        self.start()

    def lost(self, conn: _Connection, exc: Exception | None) -> None:
        """The transport of ``conn`` is gone (called once, from connection_lost)."""
        if conn is not self.conn:
            return
        self.conn = None
        stats = self.shared.stats
        if conn.busy:
            if exc is not None:
                kind = "reset"
            elif conn.got == 0:
                kind = "closed_early"
            else:
                kind = "short"
            stats.request_error(kind, monotonic())
        else:
            stats.note("idle_lost")
        self.start()

    def check_timeout(self, now: float) -> None:
        """Fail the request in flight if it has waited longer than the request timeout."""
        conn = self.conn
        if conn is not None and conn.busy and now - conn.t_sent > self.shared.request_timeout:
            self.shared.stats.timed_out(conn.t_int, now)
            self._drop(conn)

    # ------------------------------------------------------------ teardown
    def _retire(self, conn: _Connection, abort: bool) -> None:
        conn.dead = True
        conn.busy = False
        if self.conn is conn:
            self.conn = None
        if conn.transport is not None:
            conn.transport.abort() if abort else conn.transport.close()

    def stop(self) -> None:
        """End of run: cancel a pending connect, close the connection (FIN, as a real client would)."""
        if self.task is not None:
            self.task.cancel()
        if self.conn is not None:
            self._retire(self.conn, abort=False)
