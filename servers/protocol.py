"""The file service's wire protocol, in one place for every model.

Request and answer::

    client: <path relative to the served root, UTF-8>\\n      (at most 4096 bytes with the \\n)
    server: OK <size>\\n<exactly size bytes of the file>
        or: ERR <code> <reason>\\n

Codes: ``400`` malformed request (empty, contains NUL, not UTF-8, too long),
``403`` refused (absolute path, ``..`` leaving the root, a symlink anywhere
on the path, not a regular file, not readable), ``404`` not found. The
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
Nothing outside the served root is ever served, whatever the client does to
the tree while the server runs. A check of the path followed by an open of
the path cannot promise that: between the two, a client able to write inside
the root (an upload folder, a shared directory) swaps a directory on the path
for a symlink to ``/``, and the open follows it. So no path is ever checked
and then opened. The root is opened once, at start-up, as a directory
descriptor (:class:`ServedRoot`), and every request is opened *relative to
that descriptor* by a lookup that itself refuses to leave it:

* on Linux >= 5.6, one ``openat2`` call with ``RESOLVE_BENEATH`` (no ``..``
  above the root, no absolute path), ``RESOLVE_NO_SYMLINKS`` (no symlink
  anywhere on the path) and ``RESOLVE_NO_MAGICLINKS`` (no ``/proc`` fd links):
  the kernel enforces all three during the lookup itself, atomically;
* where ``openat2`` is missing or refused (an older kernel, a seccomp filter
  answering ENOSYS or EPERM; probed once at start-up), a walk: each directory
  on the path is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to the one
  before, ``..`` steps back to the descriptor opened before it (and is refused
  at the root), the last component is opened with ``O_NOFOLLOW``.

Either way the last open adds ``O_NONBLOCK`` (a FIFO would otherwise block the
open until a writer came) and the descriptor is checked with ``fstat``: only a
regular file is served, and what is served is exactly what was checked.

Choices this implies, on purpose:

* **Every symlink is refused (403)**, also one that points to a file inside
  the root. Telling a harmless link from a harmful one means following it,
  and following is what the race exploits. Put the file itself, or a hard
  link, where it should be served.
* **A hard link is served**: a hard link inside the root *is* a file of the
  root (the kernel cannot tell it from the original). Whoever can create one
  to an outside file can already read that file; whether such links exist is
  the operator's choice.
* Replacing or renaming the root directory itself after start-up does not
  change what is served: the server keeps serving the directory it opened.

Error handling
--------------
Everything a client can get wrong raises :class:`RequestError` carrying the
code, the reason and whether the connection must close; the models turn it
into :func:`error_line` and carry on. Nothing here writes to a socket.

Resource handling
-----------------
:func:`open_request` returns an open file (the caller closes it, a ``with``
block is the norm); on any error no descriptor is left open, the walk's
intermediate directories included. The root's descriptor lives as long as
the server process (it is closed by the exit).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
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


class FileShrankError(OSError):
    """The file got shorter while being sent: the promised size cannot be honoured, the connection must close.

    Raised by every model's file sender, with the bytes sent and the size the
    header promised.
    """

    def __init__(self, sent: int, size: int) -> None:
        super().__init__(f"file shrank while being sent ({sent} of {size} bytes)")
        self.sent, self.size = sent, size


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


class ServedRoot:
    """The served directory, held open as a descriptor for the server's life.

    Every request is opened *relative to this descriptor* (:meth:`open`), so
    renaming or replacing the root's path, or anything on the way to it, after
    start-up changes nothing about what is served. ``path`` is kept for
    messages only. Forked children inherit the descriptor and use it as is:
    ``openat`` reads no file offset, so sharing it is safe.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.use_openat2 = _openat2_works(self.fd)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"ServedRoot({str(self.path)!r}, fd={self.fd}, openat2={self.use_openat2})"

    def open(self, requested: str) -> int:
        """A descriptor for the regular-file candidate ``requested`` names beneath the root (not yet fstat-checked).

        Raises :class:`RequestError` (403/404/400) for anything refused.
        """
        if os.path.isabs(requested):
            raise RequestError(FORBIDDEN, "absolute paths are not served; ask for a path relative to the root")
        try:
            if self.use_openat2:
                for _ in range(OPENAT2_RETRIES):
                    try:
                        return _openat2(self.fd, requested, FILE_FLAGS, OPENAT2_RESOLVE)
                    except BlockingIOError:  # EAGAIN: a rename raced a ".." lookup; the kernel asks for a retry
                        continue
            return _open_by_walk(self.fd, requested)
        except OSError as exc:
            raise _open_error(exc) from None


def prepare_root(root: Path) -> ServedRoot:
    """Open ``root`` for serving (see :class:`ServedRoot`); ``OSError`` if it cannot be opened as a directory."""
    return ServedRoot(root)


#: Flags of the final open. O_NOFOLLOW: a symlink as the last component is
#: refused (ELOOP). O_NONBLOCK: opening a FIFO for reading would otherwise
#: block until a writer came (it is then refused by the fstat check).
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# openat2(2) resolve flags, from linux/openat2.h.
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
#: Never leave the root (``..`` above it and absolute symlinks: EXDEV), follow
#: no symlink at all (ELOOP), and no /proc "magic" links either.
OPENAT2_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

#: openat2's syscall number: 437 in the shared table every architecture has
#: used for new calls since Linux 5.1; alpha alone numbers its calls apart.
OPENAT2_SYSCALL = {"alpha": 547}.get(os.uname().machine, 437) if sys.platform == "linux" else None

#: RESOLVE_BENEATH makes the kernel answer EAGAIN when a rename anywhere on
#: the system races a ``..`` lookup. A few retries ride out a burst; after
#: that the component walk (which never needs a retry) answers instead.
OPENAT2_RETRIES = 3

#: Errors meaning "openat2 is not available here": an old kernel or libc
#: (ENOSYS), a seccomp filter that refuses unknown calls (ENOSYS or EPERM,
#: depending on the container runtime), a kernel that rejects the struct
#: (EINVAL, E2BIG).
OPENAT2_UNAVAILABLE = (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG)


class _OpenHow(ctypes.Structure):
    """``struct open_how`` of linux/openat2.h (version 0, 24 bytes)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc: ctypes.CDLL | None = None


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    """``openat2(dir_fd, path, {flags, 0, resolve})`` through ``syscall(2)``; raises ``OSError``."""
    global _libc
    if OPENAT2_SYSCALL is None:
        raise OSError(errno.ENOSYS, "openat2 exists on Linux only")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(
        ctypes.c_long(OPENAT2_SYSCALL),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _openat2_works(root_fd: int) -> bool:
    """Whether openat2 can be used here: tried once, at start-up, on the root itself."""
    try:
        os.close(_openat2(root_fd, ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, OPENAT2_RESOLVE))
    except OSError as exc:
        if exc.errno in OPENAT2_UNAVAILABLE:
            return False
        raise
    return True


def _open_by_walk(root_fd: int, requested: str) -> int:
    """Open ``requested`` one component at a time, each relative to the directory opened before it.

    Directories are opened with ``O_DIRECTORY | O_NOFOLLOW``, the last
    component with :data:`FILE_FLAGS`: no symlink is followed anywhere, so no
    rename can redirect the walk outside the root. ``..`` is applied to the
    walk itself (back to the descriptor opened before), never looked up in
    the file system, where a directory moved out of the root would lead
    outside; above the root it is refused.
    """
    parts = [part for part in requested.split("/") if part not in ("", ".")]
    if not parts:
        parts = ["."]  # the root itself: opened, then refused by fstat as not a regular file
    opened: list[int] = []  # descriptors of the directories walked into, innermost last
    try:
        for part in parts[:-1]:
            if part == "..":
                if not opened:
                    raise OSError(errno.EXDEV, "path leads outside the served root", requested)
                os.close(opened.pop())
                continue
            here = opened[-1] if opened else root_fd
            try:
                opened.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=here))
            except NotADirectoryError:
                # O_DIRECTORY | O_NOFOLLOW says ENOTDIR for a symlink too: tell them apart (for the code only).
                if stat.S_ISLNK(os.stat(part, dir_fd=here, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, "symlink on the path", requested) from None
                raise
        last = parts[-1]
        if last == "..":
            if not opened:
                raise OSError(errno.EXDEV, "path leads outside the served root", requested)
            os.close(opened.pop())
            last = "."
        return os.open(last, FILE_FLAGS, dir_fd=opened[-1] if opened else root_fd)
    finally:
        for fd in opened:
            os.close(fd)


def open_request(root: ServedRoot, line: bytes) -> tuple[BinaryIO, int]:
    """Parse ``line``, open the file it names beneath ``root``: returns ``(file, size)``.

    The caller owns the returned file. Raises :class:`RequestError` for every
    client mistake (400/403/404); no descriptor is left open when it does.
    """
    fd = root.open(parse_request_line(line))
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
        return RequestError(FORBIDDEN, "symlinks are not served")
    if exc.errno == errno.EXDEV:
        return RequestError(FORBIDDEN, "path leads outside the served root")
    if exc.errno == errno.ENAMETOOLONG:
        return RequestError(BAD_REQUEST, "path too long")
    return RequestError(FORBIDDEN, f"cannot open: {os.strerror(exc.errno or 0)}")
