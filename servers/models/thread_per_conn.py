"""Model ``threading``: ``socketserver.ThreadingTCPServer``, a thread per connection.

Every accepted connection gets a new thread running the shared handler.
Threads are cheap to create and share one address space (a few MiB for
twenty connections), and blocking I/O releases the GIL, so many idle or
I/O-bound clients are served at once. CPU work is another matter: only one
thread runs Python at a time, so ``--cpu-work-us`` shows throughput that no
longer grows with connections. Stdlib defaults are kept: non-daemon threads,
joined when the server closes (``block_on_close``).
"""

from __future__ import annotations

import socketserver
from collections.abc import Callable

from servers import blocking
from servers.config import ServerOptions
from servers.service import make_service
from servers.sessions import HANDLERS


class ThreadingServer(blocking.ServiceServerMixin, socketserver.ThreadingTCPServer):
    pass  # noqa: E701  (the stdlib's own style)


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` with ``socketserver.ThreadingTCPServer`` until SIGTERM/SIGINT."""
    blocking.serve(ThreadingServer, HANDLERS[service], make_service("threading", service, options), options, ready)
