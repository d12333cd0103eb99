"""Request/answer services as sans-IO sessions, for the event-loop models.

The ``http`` and ``timeauth`` services are written once, without any I/O, as
a *session* per connection: the model feeds it the bytes it receives and asks
it for the next :class:`Answer`; the session never touches a socket. The
selectors loop, asyncio streams and asyncio protocols (and so reuseport) each
drive a session with their own reading, writing, timeouts and lingering
close, exactly as they run the file service; whatever differs between them in
a measurement is the concurrency model, not the service code. (The
socketserver models run blocking handlers instead: the standard library's
``http.server.BaseHTTPRequestHandler`` for ``http``, see
:mod:`servers.http_service`.)

A session offers:

``greeting()``
    bytes the server sends as soon as the connection is accepted (``b""``
    when the client speaks first).
``feed(data)``
    bytes received, in any split: a request may arrive a byte at a time, or
    several pipelined requests in one ``recv``.
``buffered()``
    whether part of a request is buffered (the request timeout runs from its
    first byte).
``next_answer()``
    the answer to the next complete request, or ``None`` while none is
    complete. Answers come in request order.

Error handling
--------------
Client mistakes are answers (an HTTP status, an ``ERR`` line), never
exceptions; an answer with ``close`` set ends the connection by a lingering
close (see :mod:`servers.protocol`) once it is sent.

Resource handling
-----------------
An answer's ``file`` belongs to the model from then on: it sends ``size``
bytes of it from offset 0 and closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass
class Answer:
    """What to send for one request: ``head``, then ``size`` bytes of ``file`` if there is one; then close if asked."""

    head: bytes
    file: BinaryIO | None = None
    size: int = 0
    close: bool = False


class Session(Protocol):
    def greeting(self) -> bytes: ...

    def feed(self, data: bytes | bytearray | memoryview) -> None: ...

    def buffered(self) -> bool: ...

    def next_answer(self) -> Answer | None: ...
