"""Bounds on what one client, or running out of descriptors, can cost a server.

Every model uses the two pieces here in its own way, so that they mean the
same thing whichever model runs.

Per-connection timeouts
-----------------------
Left alone, the standard library's servers wait forever: a client that
connects and sends nothing holds a sequential server, one of forking's 40
children or one of threading's threads until it leaves. :class:`Timeouts`
bounds that, with three settings (seconds, ``None`` when off):

``idle``
    no byte arrives for this long while the server waits for input. It is
    generous: a person typing into ``nc`` is a legitimate slow client.
``request``
    a request line (the file service; any request-line service) is not
    complete this long after its first byte. An idle timer alone is no
    defence against *slowloris*, which sends one byte every second and so is
    never idle; this one bounds the whole line. Echo has no requests, so it
    has no request timeout.
``send``
    a reply makes no progress for this long: the client does not read.

On expiry the model closes the connection and writes one line on stderr,
the message of the :class:`ConnectionTimeout` subclass it raises or logs.
``0`` on the command line (or in a scenario's ``server:`` section) turns a
timeout off, which shows the unbounded stdlib behaviour.

Out of file descriptors
-----------------------
When ``accept`` fails with EMFILE, ENFILE, ENOBUFS or ENOMEM the pending
connection stays in the accept queue, so the listener stays readable and a
loop that just retries spins on the CPU (and, if it logs each failure, fills
the disk). :class:`AcceptBackoff` is what mature servers do instead: stop
accepting for a short while, 100 ms doubling to 1 s and back to 100 ms after
the next successful accept, and log at most one line per back-off period
with the count of failures it did not log.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servers.config import ServerOptions

#: Services whose clients send request lines, and so get a request timeout.
REQUEST_LINE_SERVICES = frozenset({"file", "http", "timeauth"})


class ConnectionTimeout(TimeoutError):
    """A per-connection timeout expired; the message is the line logged when the connection is closed."""

    what = "timed out"
    option = ""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self) -> str:
        return f"{self.what} for {self.seconds:g} s ({self.option}); connection closed"


class IdleTimeout(ConnectionTimeout):
    what = "no byte received"
    option = "--idle-timeout"


class RequestTimeout(ConnectionTimeout):
    what = "request line still incomplete"
    option = "--request-timeout"


class SendTimeout(ConnectionTimeout):
    what = "reply made no progress"
    option = "--send-timeout"


@dataclass(frozen=True)
class Timeouts:
    """Per-connection timeouts in seconds; ``None`` means off (see the module docstring)."""

    idle: float | None = None
    request: float | None = None
    send: float | None = None

    @classmethod
    def from_options(cls, options: ServerOptions, service: str) -> Timeouts:
        """The timeouts ``options`` ask for (``0`` is off); no request timeout for a service without requests."""
        request = options.request_timeout if service in REQUEST_LINE_SERVICES else 0
        return cls(idle=options.idle_timeout or None, request=request or None, send=options.send_timeout or None)

    def shortest(self) -> float | None:
        """The shortest timeout that is on, or ``None`` when all are off."""
        return min((t for t in (self.idle, self.request, self.send) if t is not None), default=None)


#: An expiry: (monotonic deadline, error class, its timeout in seconds).
Expiry = tuple[float, type[ConnectionTimeout], float]


def next_expiry(
    timeouts: Timeouts,
    *,
    sending: bool,
    waiting: bool,
    last_read: float,
    last_sent: float,
    request_started: float | None,
) -> Expiry | None:
    """When a connection of a non-blocking model times out as things stand, and why; None when none applies.

    ``sending``: a reply waits to go out (the send timeout counts from
    ``last_sent``, the last progress). ``waiting``: nothing to send and the
    client may still send: the idle timeout counts from the last byte either
    way, the request timeout from ``request_started``, the first byte of an
    incomplete request line (a pipelined one waits for the answer before it,
    so from ``last_sent`` when that is later).
    """
    if sending:
        return None if timeouts.send is None else (last_sent + timeouts.send, SendTimeout, timeouts.send)
    if not waiting:
        return None
    found: list[Expiry] = []
    if timeouts.idle is not None:
        found.append((max(last_read, last_sent) + timeouts.idle, IdleTimeout, timeouts.idle))
    if timeouts.request is not None and request_started is not None:
        found.append((max(request_started, last_sent) + timeouts.request, RequestTimeout, timeouts.request))
    return min(found, key=lambda expiry: expiry[0], default=None)


def read_wait(
    timeouts: Timeouts, request_started: float | None, now: float
) -> tuple[float | None, type[ConnectionTimeout]]:
    """How long the next read of a blocking or streams model may wait, and which timeout ends it.

    The idle timeout bounds each read; the request timeout, counted from
    ``request_started`` (the first byte of an incomplete request, None when
    there is none), bounds them all and wins when it ends first. Raises
    :class:`RequestTimeout` when it has already ended. ``None``: wait for ever.
    """
    wait: float | None = timeouts.idle
    error: type[ConnectionTimeout] = IdleTimeout
    if request_started is not None and timeouts.request is not None:
        left = request_started + timeouts.request - now
        if left <= 0:
            raise RequestTimeout(timeouts.request)
        if wait is None or left <= wait:
            wait, error = left, RequestTimeout
    return wait, error


#: ``accept`` errnos that mean "out of descriptors or memory", not "this one connection failed".
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def out_of_resources(exc: BaseException) -> bool:
    """True for an ``accept`` error after which accepting again at once would fail again."""
    return isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES


class AcceptBackoff:
    """How long to stop accepting after each failure, and a log bounded to one line per back-off period.

    ``failed(exc)`` returns the pause (and may log), ``succeeded()`` resets it.
    ``log`` gets one finished line. Not thread-safe: one accept loop owns it.
    """

    #: 100 ms: a descriptor freed by a closing client is used within a tenth
    #: of a second, while a loop of accept failures costs nothing noticeable.
    FIRST_S = 0.1
    #: 1 s: the longest a server out of descriptors leaves new clients
    #: waiting in the accept queue once some are free again.
    LONGEST_S = 1.0

    def __init__(self, log: Callable[[str], None], first_s: float = FIRST_S, longest_s: float = LONGEST_S) -> None:
        self.log = log
        self.first_s = first_s
        self.longest_s = longest_s
        self.delay_s = first_s
        self.quiet_until = 0.0
        self.unlogged = 0

    def failed(self, exc: OSError) -> float:
        """Record a failed accept; returns how many seconds to stop accepting."""
        delay = self.delay_s
        self.delay_s = min(delay * 2, self.longest_s)
        now = time.monotonic()
        if now < self.quiet_until:
            self.unlogged += 1
            return delay
        name = errno.errorcode.get(exc.errno or 0, "?")
        line = f"accept: {exc.strerror or exc} ({name}); not accepting for {delay:g} s"
        if self.unlogged:
            line += f" ({self.unlogged} more failures since the last line)"
        self.log(line)
        self.unlogged = 0
        self.quiet_until = now + delay
        return delay

    def succeeded(self) -> None:
        """An accept worked: the next failure starts again from the shortest pause."""
        self.delay_s = self.first_s
