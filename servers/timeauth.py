"""The ``timeauth`` service: log in with a name and a password, get the current time.

Wire behaviour (every line ends with ``\\n``; a ``\\r`` before it is dropped)::

    server: name?\\n                              (on connect, and again after each TIME)
    client: <user name, UTF-8>\\n
    server: \\x06                                 (one ACK byte: the name was read)
    client: <password, UTF-8>\\n
    server: TIME <UTC time, ISO 8601 with microseconds>\\n   then name?\\n again
        or: ERR 401 wrong user name or password\\n           then the server closes
        or: ERR 400 <reason>\\n                              then the server closes

A client logs in again on the same connection as often as it likes: each
login costs three round trips (the prompt, the ACK, the time), where an echo
costs one; that difference is what the service is here to show. A line is at
most :data:`servers.protocol.MAX_REQUEST_LINE` bytes; a NUL, bytes that are
not UTF-8 or a longer line is ``ERR 400`` (an empty name or password is just
wrong: ``ERR 401``). A failed login is answered by ``ERR 401``, never by
silence, and ends the connection (one guess per connection), by the same
lingering close as the file service's errors, so the client reads the line
before the close. Nothing a client sends is ever executed or used as a path:
the name and the password are compared, nothing else.

Credentials
-----------
``--credentials FILE``, read once at start-up: one ``name:password`` a line
(the password is everything after the first colon), blank lines and lines
starting with ``#`` ignored. A missing file, a line without a colon, an empty
name or a name given twice stops the server with the file and line. The
passwords are clear text on purpose (a teaching service; keep the file
readable by the server's user only). Each password is kept as its SHA-256
and compared with :func:`hmac.compare_digest`, so the comparison takes the
same time whatever the guess and however long it is; an unknown name is
compared against a digest of nothing so that it takes the same time too.

Error handling
--------------
Client mistakes are answers (``ERR``), not exceptions. :class:`CredentialsError`
(a :class:`~servers.service.SetupError`) for a bad credentials file.

Resource handling
-----------------
A session holds at most one request line of input; the blocking handler reads
through :class:`servers.handlers.LineReader` within the idle and request
timeouts (the request timeout bounds each line, from its first byte).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import socketserver
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from servers import protocol
from servers.exchange import Answer
from servers.handlers import LineReader, kernel_timeouts, linger, send_all
from servers.service import SetupError

if TYPE_CHECKING:
    from servers.blocking import ServiceServerMixin

PROMPT = b"name?\n"
#: ASCII ACK: "your name arrived, send the password".
ACK = b"\x06"
WRONG = b"ERR 401 wrong user name or password\n"


class CredentialsError(SetupError):
    """The credentials file is missing or malformed; the message names the file, the line and the fix."""


class Credentials:
    """Name -> SHA-256 of the password, read from a ``name:password`` file."""

    def __init__(self, digests: dict[str, bytes]) -> None:
        self.digests = digests

    @classmethod
    def load(cls, path: Path | None) -> Credentials:
        if path is None:
            raise CredentialsError(
                "the timeauth service needs the valid logins: add --credentials FILE (one name:password a line)"
            )
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CredentialsError(f"--credentials {path}: no such file; pass a file of name:password lines") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(
                f"--credentials {path}: cannot read ({exc}); pass a UTF-8 file this user can read"
            ) from None
        digests: dict[str, bytes] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            name, colon, password = line.partition(":")
            where = f"--credentials {path}, line {number}"
            if not colon:
                raise CredentialsError(f"{where}: no ':'; write name:password")
            if not name:
                raise CredentialsError(f"{where}: empty user name; write name:password")
            if name in digests:
                raise CredentialsError(f"{where}: user {name!r} given twice; keep one line per name")
            digests[name] = _digest(password.encode("utf-8"))
        if not digests:
            raise CredentialsError(f"--credentials {path}: no name:password line; add at least one")
        return cls(digests)

    def valid(self, name: bytes, password: bytes) -> bool:
        """Whether ``name``/``password`` is a valid pair, in a time independent of the password guessed."""
        expected = self.digests.get(name.decode("utf-8", "replace"), NOBODY)
        return hmac.compare_digest(_digest(password), expected) and expected is not NOBODY


def _digest(password: bytes) -> bytes:
    return hashlib.sha256(password).digest()


#: What an unknown name's password is compared against (no password has this digest by chance).
NOBODY = _digest(b"")


def time_line() -> bytes:
    return b"TIME " + datetime.now(UTC).isoformat(timespec="microseconds").encode("ascii") + b"\n"


def check_line(line: bytes) -> bytes | Answer:
    """The field in ``line`` (without ``\\n``/``\\r\\n``), or the ``ERR 400`` answer for a malformed one.

    An empty field is a value like any other (an empty password is simply wrong).
    """
    if len(line) >= protocol.MAX_REQUEST_LINE and not line.endswith(protocol.NEWLINE):
        return Answer(protocol.error_line(protocol.too_long()), close=True)
    field = line[:-1] if line.endswith(protocol.NEWLINE) else line
    field = field[:-1] if field.endswith(b"\r") else field
    reason = "NUL byte in the line" if b"\0" in field else None
    if reason is None:
        try:
            field.decode("utf-8")
        except UnicodeDecodeError:
            reason = "line is not valid UTF-8"
    if reason is not None:
        return Answer(protocol.error_line(protocol.RequestError(protocol.BAD_REQUEST, reason)), close=True)
    return field


class TimeAuthSession:
    """The service without I/O (see :mod:`servers.exchange`): name, ACK, password, time."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.pending = bytearray()
        self.name: bytes | None = None
        self.over = False

    def greeting(self) -> bytes:
        return PROMPT

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not self.over:
            self.pending += data

    def buffered(self) -> bool:
        return bool(self.pending)

    def next_answer(self) -> Answer | None:
        if self.over:
            return None
        try:
            line = protocol.split_line(self.pending)
        except protocol.RequestError as error:
            return self._end(Answer(protocol.error_line(error), close=True))
        if line is None:
            return None
        return self.answer(line)

    def answer(self, line: bytes) -> Answer:
        """The answer to one complete line."""
        field = check_line(line)
        if isinstance(field, Answer):
            return self._end(field)
        if self.name is None:
            self.name = field
            return Answer(ACK)
        name, self.name = self.name, None
        if self.credentials.valid(name, field):
            return Answer(time_line() + PROMPT)
        return self._end(Answer(WRONG, close=True))

    def _end(self, answer: Answer) -> Answer:
        self.over = True
        self.pending.clear()
        return answer


class TimeAuthHandler(socketserver.StreamRequestHandler):
    """The service on a blocking connection (the socketserver models): one line at a time."""

    server: ServiceServerMixin
    rfile: io.BufferedReader  # rbufsize -1: makefile() gives a BufferedReader (LineReader peeks)

    def setup(self) -> None:
        kernel_timeouts(self.request, self.server.service.timeouts)
        super().setup()

    def handle(self) -> None:
        service = self.server.service
        assert service.credentials is not None  # checked at start-up
        session = TimeAuthSession(service.credentials)
        send = service.timeouts.send
        reader = LineReader(self.rfile, self.request, service.timeouts)
        send_all(self.request, session.greeting(), send)
        while True:
            reader.next_request()
            line = reader.readline(protocol.MAX_REQUEST_LINE)
            if not line.endswith(protocol.NEWLINE) and len(line) < protocol.MAX_REQUEST_LINE:
                return  # end of stream, possibly mid-line: nothing to answer
            service.work()
            answer = session.answer(line)
            send_all(self.request, answer.head, send)
            if answer.close:
                linger(self.request)
                return
