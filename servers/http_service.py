"""The ``http`` service: HTTP/1.1 ``GET`` and ``HEAD`` of the files beneath ``--root``.

Wire behaviour
--------------
A request ``GET /a/b.txt HTTP/1.1`` is answered by ``200`` with
``Content-Type: application/octet-stream``, ``Content-Length`` and exactly
that many bytes of the file (sent with ``sendfile`` unless ``--no-sendfile``);
``HEAD`` by the same head without the body. The target is percent-decoded, its
query (``?...``) ignored, and the rest opened beneath the served root by the
file service's safe open (:class:`servers.protocol.ServedRoot`: relative to
the root's descriptor, never by a resolved path), so the rules are the file
service's:

* ``400`` malformed request (h11 or ``http.server`` cannot parse it; a target
  that is not an absolute path, has a NUL, is not UTF-8 once decoded);
* ``403`` a path leaving the root (``..``, ``/%2Fetc``), a symlink anywhere on
  it, not a regular file (``/`` and every directory), not readable;
* ``404`` no such file;
* ``405`` any other method, with ``Allow: GET, HEAD``;
* ``414`` a request line over :data:`MAX_REQUEST_LINE` bytes;
* ``431`` a header line over :data:`MAX_HEADER_LINE` bytes or more than
  :data:`MAX_HEADERS` headers (and, on the h11 models, a whole head over
  :data:`MAX_HEAD`).

Every error response carries ``Connection: close`` and the server closes
after it, as ``BaseHTTPRequestHandler.send_error`` does (the h11 models do
the same, so every model answers alike). Connections are kept alive by
default (HTTP/1.1), closed after a request with ``Connection: close`` (and
after an HTTP/1.0 request without ``keep-alive``); pipelined requests are
answered in order. The idle timeout runs between requests, the request
timeout bounds a whole request head from its first byte, the send timeout a
reply that makes no progress (:mod:`servers.limits`).

Two implementations, one behaviour
----------------------------------
The socketserver models (sequential, threading, forking, threadpool,
prefork) run :class:`HTTPHandler`, a ``http.server.BaseHTTPRequestHandler``
under their server class, exactly as the standard library builds
``ThreadingHTTPServer``: ``protocol_version = "HTTP/1.1"``, its parser, its
keep-alive loop. Its per-request log line (``log_message`` to stderr) is off
unless ``--log-requests``, because it costs: ``python benchmarks/http_logging.py``
(wrk, threading model, a 1 KiB file, 10 keep-alive connections, five
alternating pairs of 3 s rounds, stderr to a file) measured the server's CPU
per request at a median 150 us without the line and 176 us with it (+17%),
and req/s with logging at 0.51 to 0.85 of req/s without (median 0.75). The
machine was shared (load average 12 on 2 CPUs), so the rates are noisy and
the CPU figure is the steadier one.

The event-loop models (selectors, asyncio, asyncio-protocol, reuseport) run
:class:`HTTPSession`, which parses with h11, a well-kept sans-IO HTTP/1.1
library, and hands the loop a head to write and a file to stream
(:mod:`servers.exchange`); h11 checks the framing (``Content-Length`` is
counted, a request body is read and dropped before answering).

Limits differ in one way: ``http.server`` bounds each line (64 KiB) and the
header count (99), so a head can reach 99 x 64 KiB; the h11 models also
bound the whole head at :data:`MAX_HEAD`.

Error handling
--------------
Client mistakes are responses, not exceptions. A timeout or a failing
connection is one line on stderr, as for the other services.

Resource handling
-----------------
Each opened file is closed once sent (a ``with`` block in the handler; the
event loops close an answer's file when it is out or the connection ends).
"""

from __future__ import annotations

import http.server
from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, BinaryIO

import h11

from servers import protocol
from servers.exchange import Answer
from servers.handlers import LineReader, kernel_timeouts, send_all, send_body
from servers.limits import ConnectionTimeout, SendTimeout

if TYPE_CHECKING:
    from servers.blocking import ServiceServerMixin

#: Longest request line, CRLF excluded: http.server's own limit (it reads
#: 65537 bytes and answers 414 above 65536), used by the h11 models too.
MAX_REQUEST_LINE = 65536
#: Longest header line: http.client's ``_MAXLINE``, which http.server parses headers with.
MAX_HEADER_LINE = 65536
#: Most headers: http.client's ``_MAXHEADERS`` (100) counts the empty line
#: that ends the head, so http.server takes at most 99 headers.
MAX_HEADERS = 99
#: Longest request head on the h11 models (h11's ``max_incomplete_event_size``):
#: a request line and a header line at their limits fit, with room for 99
#: ordinary headers; what one connection may make the server buffer.
MAX_HEAD = 256 * 1024

ALLOW = "GET, HEAD"
CONTENT_TYPE = "application/octet-stream"


def requested_path(target: bytes) -> bytes:
    """The path beneath the root that a request target names, for :func:`servers.protocol.open_request`.

    Raises :class:`~servers.protocol.RequestError` 400 for a target that is
    not an absolute path. The root itself is ``.`` (then refused as not a
    regular file).
    """
    from urllib.parse import unquote_to_bytes

    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if not path.startswith(b"/"):
        raise protocol.RequestError(protocol.BAD_REQUEST, "request target must be a path such as /index.html")
    # Leading slashes collapse to one, as http.server does itself (``//host/x``
    # would otherwise read as a network path); an encoded one (%2F) stays and
    # makes the path absolute, which the safe open refuses.
    return unquote_to_bytes(path.lstrip(b"/")) or b"."


class _TimedRFile(LineReader):
    """``rfile`` for ``BaseHTTPRequestHandler``: every line within the idle and request timeouts."""

    def read(self, size: int = -1) -> bytes:
        return self.rfile.read(size)

    def close(self) -> None:
        self.rfile.close()


class HTTPHandler(http.server.BaseHTTPRequestHandler):
    """``GET``/``HEAD`` of the served files, with the standard library's parser and keep-alive loop."""

    server: ServiceServerMixin
    protocol_version = "HTTP/1.1"
    server_version = "sockbench"
    rfile: Any

    def setup(self) -> None:
        kernel_timeouts(self.request, self.server.service.timeouts)
        super().setup()
        self.rfile = _TimedRFile(self.rfile, self.request, self.server.service.timeouts)

    def version_string(self) -> str:
        return self.server_version  # no Python version announced

    def handle_one_request(self) -> None:
        self.rfile.next_request()  # the request timeout counts from this request's first byte
        super().handle_one_request()

    def do_GET(self) -> None:
        self.serve_file(body=True)

    def do_HEAD(self) -> None:
        self.serve_file(body=False)

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method without a do_ method with 501; this
        # service answers every other method with 405 and the Allow header.
        if name.startswith("do_"):
            return self.refuse_method
        raise AttributeError(name)

    def refuse_method(self) -> None:
        self.send_problem(
            HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} not allowed; use {ALLOW}", [("Allow", ALLOW)]
        )

    def serve_file(self, *, body: bool) -> None:
        service = self.server.service
        assert service.root is not None  # checked at start-up
        service.work()
        try:
            file, size = protocol.open_request(service.root, requested_path(self.path.encode("latin-1", "replace")))
        except protocol.RequestError as error:
            self.send_problem(error.code, error.reason)
            return
        with file:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body and size:
                send_body(self.request, file, size, use_sendfile=service.sendfile, timeout=service.timeouts.send)

    def flush_headers(self) -> None:
        try:
            super().flush_headers()
        except BlockingIOError:  # SO_SNDTIMEO expired (see servers.handlers)
            raise SendTimeout(self.server.service.timeouts.send or 0) from None

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (400, 414, 431, 505) in the same form as this service's, with a status line.

        http.server answers a request line it could not parse as HTTP/0.9,
        a bare HTML body without status line or headers; a client (and a
        load generator counting statuses) then cannot tell what happened.
        """
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"
        self.send_problem(code, message or HTTPStatus(code).phrase)

    def send_problem(self, code: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        """An error response with a one-line plain-text body, then close (as ``send_error`` does)."""
        text = f"{code} {reason}\n".encode("utf-8", "replace")
        self.send_response(code)
        for name, value in [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(text))),
            ("Connection", "close"),
            *headers,
        ]:
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            send_all(self.request, text, self.server.service.timeouts.send)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.service.log_requests:
            super().log_message(format, *args)

    def log_error(self, format: str, *args: Any) -> None:
        # http.server catches a timeout itself and logs it here: one line, as every service logs its timeouts.
        if args and isinstance(args[0], ConnectionTimeout):
            self.server.service.log_error(self.client_address, args[0])
            return
        super().log_error(format, *args)


class _Length:
    """A body h11 frames without seeing it: the model sends the file's bytes itself (sendfile)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class HTTPSession:
    """The service without I/O, parsed by h11 (see :mod:`servers.exchange`)."""

    def __init__(self, root: protocol.ServedRoot) -> None:
        self.root = root
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.request: h11.Request | None = None
        self.over = False

    def greeting(self) -> bytes:
        return b""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not self.over:
            self.conn.receive_data(bytes(data))

    def buffered(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def next_answer(self) -> Answer | None:
        conn = self.conn
        while not self.over:
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                self.request = None
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE and self._line_too_long():
                    return self.problem(HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {MAX_REQUEST_LINE} bytes")
                return self.problem(status, str(exc) or "malformed request")
            if event is h11.NEED_DATA:
                return self._incomplete()
            if isinstance(event, h11.Request):
                self.request = event
                refused = self._refused_head(event)
                if refused is not None:
                    return refused
            elif isinstance(event, h11.EndOfMessage):
                assert self.request is not None
                return self.respond(self.request)
            elif not isinstance(event, h11.Data):  # PAUSED, ConnectionClosed: nothing more to answer
                return None
            # h11.Data: a request body, read and dropped
        return None

    def _line_too_long(self) -> bool:
        buffered = self.conn.trailing_data[0]
        end = buffered.find(b"\n", 0, MAX_REQUEST_LINE + 2)
        return end < 0 or end > MAX_REQUEST_LINE + 1

    def _incomplete(self) -> Answer | None:
        """None while a head may still complete within the limits, else the 414 or 431 answer."""
        if self.conn.their_state is not h11.IDLE:
            return None  # a body (read and dropped) is arriving
        buffered = self.conn.trailing_data[0]
        if buffered.find(b"\n") < 0:
            if len(buffered) > MAX_REQUEST_LINE:
                return self.problem(HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {MAX_REQUEST_LINE} bytes")
            return None
        if len(buffered) - buffered.rfind(b"\n") - 1 > MAX_HEADER_LINE:
            return self.problem(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"header line over {MAX_HEADER_LINE} bytes")
        if buffered.count(b"\n") > MAX_HEADERS + 1:
            return self.problem(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {MAX_HEADERS} headers")
        return None

    def _refused_head(self, request: h11.Request) -> Answer | None:
        if len(request.method) + len(request.target) + len(b"  HTTP/1.1") > MAX_REQUEST_LINE:
            return self.problem(HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {MAX_REQUEST_LINE} bytes")
        if len(request.headers) > MAX_HEADERS:
            return self.problem(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {MAX_HEADERS} headers")
        if any(len(name) + len(value) + 2 > MAX_HEADER_LINE for name, value in request.headers):
            return self.problem(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"header line over {MAX_HEADER_LINE} bytes")
        return None

    def respond(self, request: h11.Request) -> Answer:
        if request.method not in (b"GET", b"HEAD"):
            method = request.method.decode("ascii", "replace")
            return self.problem(
                HTTPStatus.METHOD_NOT_ALLOWED, f"method {method} not allowed; use {ALLOW}", [("Allow", ALLOW)]
            )
        try:
            file, size = protocol.open_request(self.root, requested_path(request.target))
        except protocol.RequestError as error:
            return self.problem(error.code, error.reason)
        conn = self.conn
        head = conn.send(
            h11.Response(
                status_code=200, reason=b"OK", headers=[("Content-Type", CONTENT_TYPE), ("Content-Length", str(size))]
            )
        )
        body: BinaryIO | None = file
        if request.method == b"HEAD" or not size:
            file.close()
            body, size = None, 0
        else:
            conn.send_with_data_passthrough(h11.Data(data=_Length(size)))  # type: ignore[arg-type]  # h11 types data as bytes; passthrough frames any len()
        head = (head or b"") + (conn.send(h11.EndOfMessage()) or b"")
        close = conn.our_state is h11.MUST_CLOSE
        self.over = close
        return Answer(head, body, size, close=close)

    def problem(self, code: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> Answer:
        """An error response with a one-line plain-text body; the connection closes after it."""
        text = f"{code} {reason}\n".encode("utf-8", "replace")
        conn = self.conn
        response = h11.Response(
            status_code=code,
            reason=HTTPStatus(code).phrase.encode("ascii"),
            headers=[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(text))),
                ("Connection", "close"),
                *headers,
            ],
        )
        head = conn.send(response) or b""
        if self.request is None or self.request.method != b"HEAD":
            head += conn.send(h11.Data(data=text)) or b""
        head += conn.send(h11.EndOfMessage()) or b""
        self.over = True
        return Answer(head, close=True)
