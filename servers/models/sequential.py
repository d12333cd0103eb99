"""Model ``sequential``: ``socketserver.TCPServer``, one connection at a time.

The server accepts a connection, runs the handler to the end, and only then
accepts the next. While one client stays connected, every other client waits:
its connection completes in the kernel's accept queue (up to ``--backlog`` + 1
of them on Linux; beyond that SYNs are dropped and connects stall), but it gets
no byte of service. This is the baseline the other models are measured against
and the first lesson: a server that blocks on one client serves nobody else.
"""

from __future__ import annotations

import socketserver
from collections.abc import Callable

from servers import blocking
from servers.config import ServerOptions
from servers.service import make_service
from servers.sessions import HANDLERS


class SequentialServer(blocking.ServiceServerMixin, socketserver.TCPServer):
    pass  # noqa: E701  (the stdlib's own style)


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` with ``socketserver.TCPServer`` until SIGTERM/SIGINT."""
    blocking.serve(SequentialServer, HANDLERS[service], make_service("sequential", service, options), options, ready)
