"""``c-reference``: the machine's ceiling, a C epoll echo server, as a model.

The server itself is ``servers/c/echo_server.c`` (single thread, epoll,
non-blocking sockets, a bounded 64 KiB buffer per connection, TCP_NODELAY).
This module only makes it selectable like any Python model, so that
``python -m servers c-reference echo`` and every echo scenario can put the
ceiling beside the Python figures.

Design
------
:func:`serve` compiles the program on first use (:func:`servers.native.build`,
cached afterwards) and then *replaces the Python process* with it through
:func:`os.execv`. The process the runner started, monitors and signals is
therefore the C program itself: no Python interpreter stays resident to inflate
its memory or CPU figures, and SIGTERM reaches the C code directly.

Consequence for the model contract: ``ready`` is **never called**. The C
program prints the ready JSON line itself, in exactly the format the Python
models use (``{"event": "ready", "model": "c-reference", ...}``), so whoever
waits for the ready line sees no difference. ``serve`` does not return either:
the process ends when the C server exits (0 after SIGTERM or SIGINT).

Supported options: ``host``, ``port``, ``backlog``, ``idle_timeout`` and
``send_timeout`` (echo has no requests, so no request timeout). ``sendfile``,
``max_children``, ``loop`` and ``request_timeout`` do not apply to an echo
server in C and are ignored, as other models ignore options that are not
theirs. Out of file descriptors it backs off like the Python models.

Error handling
--------------
Every error is a :class:`servers.service.SetupError`, which the command line
prints as one line (no traceback) before exiting non-zero:
:class:`UnsupportedOption` for ``--cpu-work-us`` other than 0 (the
file service is refused by :meth:`servers.registry.Model.check`, as any service
a model does not offer); :class:`CReferenceUnavailable` when no C compiler exists, or
when the compiler fails (then the message carries the compiler's output).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from servers import native
from servers.config import ServerOptions
from servers.service import SetupError


class UnsupportedOption(SetupError, ValueError):
    """An option or service c-reference does not implement; the message says what to use instead."""


class CReferenceUnavailable(SetupError):
    """The C program cannot be built here (no compiler, or the compiler failed); the message says why."""


def command(options: ServerOptions) -> list[str]:
    """The argv that runs the compiled server for ``options`` (building it if needed)."""
    try:
        binary = native.build("echo_server")
    except native.NativeBuildError as exc:
        raise CReferenceUnavailable(f"model c-reference could not be built: {exc}") from None
    if binary is None:
        raise CReferenceUnavailable(f"model c-reference is unavailable: {native.why_unavailable()}")
    return [
        str(binary),
        options.host,
        str(options.port),
        str(options.backlog),
        repr(float(options.idle_timeout)),
        repr(float(options.send_timeout)),
    ]


def check(service: str, options: ServerOptions) -> None:
    """Raise :class:`UnsupportedOption` for what the C server does not do (the registry checks the service)."""
    if options.cpu_work_us != 0:
        raise UnsupportedOption(
            f"model c-reference does not support --cpu-work-us (got {options.cpu_work_us}); "
            "it measures the machine's ceiling with no added work: leave it at 0"
        )


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Become the C echo server (``os.execv``); never returns on success.

    ``ready`` is not called: the C program prints the ready line itself.
    """
    check(service, options)
    argv = command(options)
    # Anything Python buffered must be out before the process image is replaced.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
