"""Model ``forking``: ``socketserver.ForkingTCPServer``, a process per connection.

Every accepted connection is handled in a child made by ``os.fork()``; the
child runs the shared handler and leaves with ``os._exit``. Children share no
Python state, so CPU work runs truly in parallel, but each costs a fork (page
tables, copy-on-write faults) and memory that RSS overstates (count PSS).

At ``--max-children`` (stdlib default 40) ``ForkingMixIn.collect_children``
blocks in ``waitpid`` until a child exits: the accept loop stops, new clients
pile up in the listen queue and then have their SYNs dropped. A connection
beyond the limit is not refused; it simply waits for someone else to leave.
"""

from __future__ import annotations

import socketserver
from collections.abc import Callable

from servers import blocking
from servers.config import ServerOptions
from servers.service import make_service
from servers.sessions import HANDLERS


class ForkingServer(blocking.ForkingServiceMixin, socketserver.ForkingTCPServer):
    pass  # noqa: E701  (the stdlib's own style)


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` with ``socketserver.ForkingTCPServer`` until SIGTERM/SIGINT."""
    blocking.serve(ForkingServer, HANDLERS[service], make_service("forking", service, options), options, ready)
