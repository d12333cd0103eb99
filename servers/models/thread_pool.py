"""Model ``threadpool``: socketserver with a bounded pool of threads.

:class:`ThreadPoolMixIn` is to ``ThreadingMixIn`` what a fixed staff is to
hiring a temp per visitor: the same handlers run in threads, but in at most
``pool_threads`` of them, taken from a ``concurrent.futures.ThreadPoolExecutor``
made once and reused. It is how a threaded production server bounds its
memory and its GIL contention (a thread costs a stack and a share of the
GIL's hand-offs), and what a gunicorn ``gthread`` worker or a Java servlet
container does.

The default, 2 x the CPUs the server may run on, follows the usual rule for
I/O-bound handlers: while one thread waits on the network another can run, so
a pool a little larger than the CPUs keeps them busy, and a larger one only
adds threads contending for one GIL. (``ThreadPoolExecutor``'s own default,
``min(32, CPUs + 4)``, is sized for short tasks, not connections that last.)

At the limit
------------
The mixin never accepts a connection it has no thread for: once all
``pool_threads`` are busy, the accept loop waits (in ``service_actions``, as
``ForkingMixIn`` waits for a child at ``max_children``) until a connection
ends. Connections beyond the pool therefore wait where the kernel counts
them: in the listen queue (``ss -ltn`` Recv-Q), at most ``--backlog`` + 1 of
them, and beyond that their SYNs are dropped and the clients retry after 1 s,
2 s ... A pool that accepted everything and queued the work in user space
(``executor.submit`` without a bound) would look fine from outside while
clients waited, invisible to every kernel counter the benchmark reads. A
client that holds its connection and sends nothing holds a pool thread until
the idle timeout ends it, so ``pool_threads`` idle clients stop the server.
"""

from __future__ import annotations

import concurrent.futures
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from servers import blocking
from servers.config import ServerOptions
from servers.service import Service, make_service
from servers.sessions import HANDLERS


class ThreadPoolMixIn(blocking.TCPServerBase):
    """Serve each connection in a thread of a fixed pool; accept only while a thread is free.

    Class attributes (the documented knobs, as ``ThreadingMixIn`` has):

    ``pool_threads``
        the most connections served at once (default 4; set it per instance
        before serving).
    ``block_on_close``
        ``server_close`` waits for the running handlers to finish (True, as
        ``ThreadingMixIn``'s default).
    """

    pool_threads = 4
    block_on_close = True

    _pool: concurrent.futures.ThreadPoolExecutor | None = None
    _busy = 0
    _slot_freed: threading.Condition | None = None

    def _pool_state(self) -> tuple[concurrent.futures.ThreadPoolExecutor, threading.Condition]:
        if self._pool is None:
            self._slot_freed = threading.Condition()
            self._pool = concurrent.futures.ThreadPoolExecutor(self.pool_threads, thread_name_prefix="pool")
        assert self._slot_freed is not None
        return self._pool, self._slot_freed

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to a pool thread (one is free: the loop waited for it)."""
        pool, slot_freed = self._pool_state()
        with slot_freed:
            self._busy += 1
        try:
            pool.submit(self.process_request_thread, request, client_address)
        except BaseException:
            self._release_slot()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """As ``ThreadingMixIn``'s: run the handler, report its error, close the connection, free the thread."""
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as ThreadingMixIn's: reported by handle_error
            self.handle_error(request, client_address)
        finally:
            try:
                self.shutdown_request(request)
            finally:
                self._release_slot()

    def _release_slot(self) -> None:
        _, slot_freed = self._pool_state()
        with slot_freed:
            self._busy -= 1
            slot_freed.notify()

    def service_actions(self) -> None:
        """Between two accepts: wait while every pool thread is busy (new clients wait in the listen queue)."""
        super().service_actions()
        _, slot_freed = self._pool_state()
        with slot_freed:
            slot_freed.wait_for(lambda: self._busy < self.pool_threads)

    def server_close(self) -> None:
        super().server_close()
        if self._pool is not None:
            self._pool.shutdown(wait=self.block_on_close)


class ThreadPoolTCPServer(ThreadPoolMixIn, socketserver.TCPServer):
    pass  # noqa: E701  (the stdlib's own style)


class ThreadPoolServer(blocking.ServiceServerMixin, ThreadPoolTCPServer):
    """``ThreadPoolTCPServer`` with sockbench's additions; ``--threads`` sets the pool."""

    def __init__(
        self, service: Service, options: ServerOptions, handler: type[socketserver.BaseRequestHandler]
    ) -> None:
        self.pool_threads = options.pool_threads()
        super().__init__(service, options, handler)


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> None:
    """Serve ``service`` with a pool of ``--threads`` threads until SIGTERM/SIGINT."""
    blocking.serve(ThreadPoolServer, HANDLERS[service], make_service("threadpool", service, options), options, ready)
