"""The file service's wire protocol, in one place for every model.

Request and answer::

    client: <path relative to the served root, UTF-8>\\n      (at most 4096 bytes with the \\n)
    server: OK <size>\\n<exactly size bytes of the file>
        or: ERR <code> <reason>\\n

Codes: ``400`` malformed request (empty, contains NUL, not UTF-8, too long),
``403`` refused (absolute path, ``..`` leaving the root, a symlink resolving
outside it, not a regular file, not readable), ``404`` not found. The
connection stays open for the next request after ``OK`` and after an error,
except after an over-long line: ``ERR 400`` and then the server closes,
because it can no longer tell where the next request would begin.

Closing after that error is a *lingering* close: the server sends the error
and its FIN (``shutdown(SHUT_WR)``), then reads and discards what the client
is still sending, for at most :data:`LINGER_S` and :data:`LINGER_BYTES`,
before closing. Closing a socket with unread input makes the kernel answer
with a reset, and a reset arriving before the client has read the error
line makes its ``recv`` fail with ECONNRESET: the client would never learn why.

Why a newline-ended header and no ACK
-------------------------------------
TCP carries a byte stream, not messages: one ``send`` on one side may arrive as
several ``recv`` on the other, and several ``send`` may arrive as one. A
protocol that sends "the size" and then "the data" with nothing marking where
the size ends is ambiguous: the digits of the size and the first bytes of the
file can arrive in the same ``recv``, and a file that begins with digits makes
them indistinguishable. A size-then-data protocol without framing must
therefore stop the sender after the size until the receiver has taken it, an
application-level ACK, paying one extra round trip per file and still relying
on the receiver reading exactly the size's bytes. Here the header *is* framed:
it ends at the first ``\\n``, which cannot occur inside ``OK <digits>``. The
client reads up to that newline, keeps whatever bytes came after it as the
start of the file, and needs no ACK. The same framing makes the request line
safe to pipeline: several requests may arrive in one ``recv``.

Safety of paths
---------------
:func:`resolve` resolves the request against the root with every symlink
followed, then checks the result is still inside the root, so ``..`` and
symlinks are judged by where they lead, not by how they are spelled
(``sub/../a`` is fine, ``../x`` and a link to ``/etc`` are not). The file is
then opened with ``O_NOFOLLOW`` on the already-resolved path and checked with
``fstat`` on the open descriptor, so what is served is what was checked even if
the tree changes in between, and a FIFO is never opened for a blocking read
(``O_NONBLOCK`` on open).

Error handling
--------------
Everything a client can get wrong raises :class:`RequestError` carrying the
code, the reason and whether the connection must close; the models turn it
into :func:`error_line` and carry on. Nothing here writes to a socket.

Resource handling
-----------------
:func:`open_request` returns an open file (the caller closes it, a ``with``
block is the norm); on any error no descriptor is left open.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

#: Longest request line, the ``\n`` included. 4096 is PATH_MAX on Linux: every
#: path the kernel can open fits, and a client cannot make the server buffer
#: more than this per connection while looking for the end of a line.
MAX_REQUEST_LINE = 4096

#: Bytes per ``recv`` and per read/send step of ``--no-sendfile``. 64 KiB is
#: the largest TCP segment-offload unit on loopback and matches asyncio's
#: stream reader limit: big enough that per-call overhead does not dominate,
#: small enough to stay below glibc's mmap threshold (128 KiB), so buffers
#: come from the heap instead of an mmap/munmap per call.
CHUNK_SIZE = 64 * 1024

#: Line terminator of requests and headers.
NEWLINE = b"\n"

#: Lingering close (see above): how long the server keeps discarding input
#: after an over-long line. One second covers any loopback or LAN round trip
#: for the client to read the error and close; a client that does neither
#: costs the server at most this.
LINGER_S = 1.0

#: ... and how much it discards at most: a client still streaming after
#: 1 MiB of junk is not reading answers anyway.
LINGER_BYTES = 1024 * 1024

BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404


class RequestError(Exception):
    """A request the server refuses: becomes ``ERR <code> <reason>\\n``.

    ``close`` is true when the connection cannot continue (an over-long line:
    the rest of it would be read as the next request).
    """

    def __init__(self, code: int, reason: str, close: bool = False) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.close = close

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"


def error_line(error: RequestError) -> bytes:
    """The bytes sent for ``error``: ``ERR <code> <reason>\\n`` (reason kept to one line)."""
    reason = " ".join(error.reason.split())
    return f"ERR {error.code} {reason}\n".encode("utf-8", "replace")


def ok_header(size: int) -> bytes:
    """The header preceding a file of ``size`` bytes."""
    return f"OK {size}\n".encode("ascii")


def too_long() -> RequestError:
    """The error for a request line longer than :data:`MAX_REQUEST_LINE`; it closes the connection."""
    return RequestError(BAD_REQUEST, f"request line longer than {MAX_REQUEST_LINE} bytes", close=True)


def split_line(buffer: bytearray) -> bytes | None:
    """Remove and return the first complete request line (with its ``\\n``) from ``buffer``.

    Returns ``None`` when ``buffer`` holds no complete line yet. Raises the
    :func:`too_long` error when the line already exceeds :data:`MAX_REQUEST_LINE`,
    so non-blocking callers never buffer more than that per request.
    """
    end = buffer.find(NEWLINE, 0, MAX_REQUEST_LINE)
    if end < 0:
        if len(buffer) >= MAX_REQUEST_LINE:
            raise too_long()
        return None
    line = bytes(buffer[: end + 1])
    del buffer[: end + 1]
    return line


def parse_request_line(line: bytes) -> str:
    """Validate one request line (``\\n`` included or not) and return the requested path.

    Raises :class:`RequestError` 400 for an empty path, a NUL byte, bytes that
    are not UTF-8, or a line longer than :data:`MAX_REQUEST_LINE`.
    """
    if len(line) > MAX_REQUEST_LINE or (len(line) == MAX_REQUEST_LINE and not line.endswith(NEWLINE)):
        raise too_long()
    if line.endswith(NEWLINE):
        line = line[:-1]
    if not line:
        raise RequestError(BAD_REQUEST, "empty path")
    if b"\0" in line:
        raise RequestError(BAD_REQUEST, "NUL byte in path")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(BAD_REQUEST, "path is not valid UTF-8") from None


def resolve(root: Path, requested: str) -> Path:
    """Return the real path ``requested`` names under ``root``, or raise :class:`RequestError`.

    ``root`` must already be absolute and resolved (see :func:`prepare_root`).
    403 for an absolute path or a path that resolves outside ``root`` (through
    ``..`` or a symlink); 404 when nothing exists there.
    """
    if os.path.isabs(requested):
        raise RequestError(FORBIDDEN, "absolute paths are not served; ask for a path relative to the root")
    real = Path(os.path.realpath(root / requested))
    if real != root and root not in real.parents:
        raise RequestError(FORBIDDEN, "path leads outside the served root")
    return real


def prepare_root(root: Path) -> Path:
    """The absolute, symlink-free form of ``root`` that :func:`resolve` compares against."""
    return Path(os.path.realpath(root))


def open_request(root: Path, line: bytes) -> tuple[BinaryIO, int]:
    """Parse ``line``, resolve it under ``root`` and open the file: returns ``(file, size)``.

    The caller owns the returned file. Raises :class:`RequestError` for every
    client mistake (400/403/404); no descriptor is left open when it does.
    """
    real = resolve(root, parse_request_line(line))
    # O_NOFOLLOW: ``real`` has no symlink left; if one appears now, refuse it.
    # O_NONBLOCK: opening a FIFO for reading would otherwise block until a writer came.
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_error(exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RequestError(FORBIDDEN, "not a regular file")
        return os.fdopen(fd, "rb", buffering=0), info.st_size
    except BaseException:
        os.close(fd)
        raise


def _open_error(exc: OSError) -> RequestError:
    """Map the ``OSError`` of opening a requested file to the answer the client gets."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return RequestError(NOT_FOUND, "no such file")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return RequestError(FORBIDDEN, "permission denied")
    if exc.errno == errno.ELOOP:
        return RequestError(FORBIDDEN, "symlinks changed while opening")
    if exc.errno == errno.ENAMETOOLONG:
        return RequestError(BAD_REQUEST, "path too long")
    return RequestError(FORBIDDEN, f"cannot open: {os.strerror(exc.errno or 0)}")
