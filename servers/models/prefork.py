"""Model ``prefork``: N worker processes forked at start, each accepting on the shared listener.

The parent opens the listening socket (a :class:`servers.models.sequential.SequentialServer`,
so backlog, address family and connection handling are the sequential
model's), forks ``--workers`` children and from then on only supervises. Each
worker is a sequential server on the inherited listener: it blocks in
``accept()``, serves that one connection to the end with the shared handlers
(:mod:`servers.handlers`), and accepts again. This is gunicorn's ``sync``
worker and Apache's prefork MPM: the fork is paid once per worker, not once
per connection as in ``forking``, and a crash takes down one worker, not the
server.

Linux wakes one of the processes blocked in ``accept()`` on a socket per
incoming connection (the wait is exclusive), so there is no thundering herd;
which worker gets the next connection is the kernel's choice, and the figures
show it only as the spread of CPU across the worker processes.

At the limit
------------
``--workers`` connections are served at once, one per worker. The next
client's connection completes in the kernel and waits in the listen queue
(``ss -ltn`` Recv-Q, at most ``--backlog`` + 1); beyond that its SYNs are
dropped and it retries after 1 s, 2 s ... A client that holds its connection
without sending holds a whole worker until the idle timeout ends it.

Supervision
-----------
The parent blocks SIGCHLD, SIGTERM and SIGINT and waits for them with
``sigtimedwait`` (no handler can race with the loop). A worker that dies,
whatever the cause (an ``os._exit`` in a handler, a segfault, an OOM kill), is
reaped, logged with its exit status or signal and the running count of
restarts, and replaced by a fresh fork. A crash loop must not become a fork
bomb: :class:`RestartBudget` allows :data:`RESTART_BURST` restarts and then
one per :data:`RESTART_INTERVAL_S`, and a worker due beyond that is forked
when the budget allows (logged once per wait). Workers get
``PR_SET_PDEATHSIG`` (:func:`servers.blocking.die_with_parent`, as forking's
children), so a SIGKILLed parent leaves no worker holding the port.

Stopping
--------
SIGTERM/SIGINT: the parent closes its listener, sends SIGTERM to every worker
(which dies of it at once: workers have the default action, as forking's
children; their connections are closed by the kernel), waits up to
:data:`~servers.blocking.CHILD_KILL_AFTER_S`, SIGKILLs any left and reaps
them all, then returns.

Error handling
--------------
A failing connection is one line on stderr from its worker, as in the
sequential model. A worker's death is one line from the parent.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import time
from collections.abc import Callable

from servers import blocking
from servers.config import ServerOptions
from servers.models.sequential import SequentialServer
from servers.service import Service, make_service
from servers.sessions import HANDLERS

#: Restarts allowed at once before the rate limit applies: enough to replace
#: every worker of a machine-sized pool that died together (an OOM kill).
RESTART_BURST = 16
#: Then one restart per 0.1 s: a fork costs about a millisecond, so ten a
#: second cost the parent ~1% of a CPU however fast the workers crash.
RESTART_INTERVAL_S = 0.1

#: The rate-limit line is logged at most once a second while it applies.
LIMIT_LOG_EVERY_S = 1.0

SUPERVISED_SIGNALS = {signal.SIGCHLD, *blocking.STOP_SIGNALS}


class RestartBudget:
    """A token bucket for re-forks: ``burst`` at once, then one per ``interval_s``."""

    def __init__(
        self,
        burst: int = RESTART_BURST,
        interval_s: float = RESTART_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def wait_s(self) -> float:
        """Seconds until a restart is allowed (0: now)."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.interval_s

    def take(self) -> None:
        """Spend one restart (call only when :meth:`wait_s` is 0)."""
        self._refill()
        self.tokens -= 1

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) / self.interval_s)
        self.updated = now


def describe_exit(status: int) -> str:
    """``exit status N`` or ``killed by SIGSEGV`` for a ``waitpid`` status."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """The parent: forks the workers, replaces those that die, stops them all.

    ``worker`` runs in each forked child and never returns while it serves
    (the child exits when it does). ``listener`` is the parent's socket on
    the port: its address is reported ready, and it is closed first at the
    stop. ``before_ready`` runs once the first workers are forked, before the
    ready line (a model whose workers listen themselves waits for them there).
    """

    def __init__(
        self,
        service: Service,
        workers: int,
        worker: Callable[[], None],
        listener: socket.socket,
        before_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self.service = service
        self.workers = workers
        self.worker = worker
        self.listener = listener
        self.before_ready = before_ready
        self.pids: set[int] = set()
        self.restarts = 0
        self.budget = RestartBudget()
        self.parent_pid = os.getpid()

    def log(self, line: str) -> None:
        self.service.log_error("supervisor", line)

    # -- workers ---------------------------------------------------------------

    def fork_worker(self) -> int:
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            status = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISED_SIGNALS)
                for sig in blocking.STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                blocking.die_with_parent(self.parent_pid)
                self.worker()
                status = 0
            except BaseException as exc:  # noqa: BLE001  a worker must never return into the parent's code
                self.service.log_error("worker", exc)
            finally:
                os._exit(status)
        self.pids.add(pid)
        return pid

    def reap(self) -> list[tuple[int, int]]:
        """Every exited worker, without blocking: (pid, status) each."""
        exited = []
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.pids.discard(pid)
            exited.append((pid, status))
        return exited

    # -- the parent's loop -----------------------------------------------------

    def run(self, ready: Callable[[str, int], None]) -> dict[str, int]:
        """Fork the workers, report ready, supervise until SIGTERM/SIGINT, then stop them.

        Returns the facts of the stop line (:func:`servers.cli.main`): how many workers were re-forked.
        """
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISED_SIGNALS)
        try:
            for _ in range(self.workers):
                self.fork_worker()
            self.before_ready()
            host, port = self.listener.getsockname()[:2]
            ready(host, port)
            self._supervise()
        finally:
            self.stop()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        return {"worker_restarts": self.restarts}

    def _supervise(self) -> None:
        due = 0  # workers that died and are still to be replaced
        limit_logged = -LIMIT_LOG_EVERY_S
        while True:
            wait = self.budget.wait_s() if due else None
            if due and wait == 0:
                self.budget.take()
                due -= 1
                self.restarts += 1
                pid = self.fork_worker()
                self.log(f"started worker {pid} (restart {self.restarts})")
                continue
            if due and time.monotonic() - limit_logged >= LIMIT_LOG_EVERY_S:
                self.log(
                    f"restart rate limit ({RESTART_BURST} at once, then one per {RESTART_INTERVAL_S:g} s): "
                    f"{due} worker(s) waiting to be replaced"
                )
                limit_logged = time.monotonic()
            info = (
                signal.sigtimedwait(SUPERVISED_SIGNALS, wait)
                if wait is not None
                else signal.sigwaitinfo(SUPERVISED_SIGNALS)
            )
            if info is not None and info.si_signo in blocking.STOP_SIGNALS:
                return
            for pid, status in self.reap():
                self.log(f"worker {pid} died ({describe_exit(status)})")
                due += 1

    def stop(self) -> None:
        """Close the listener, SIGTERM every worker, SIGKILL those left after a grace period, reap all."""
        self.listener.close()
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + blocking.CHILD_KILL_AFTER_S
        while self.pids:
            self.reap()
            left = deadline - time.monotonic()
            if not self.pids or left <= 0:
                break
            signal.sigtimedwait({signal.SIGCHLD}, min(left, 0.1))
        self._signal_all(signal.SIGKILL)
        for pid in list(self.pids):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.pids.discard(pid)
        if self.restarts:
            self.log(f"{self.restarts} worker restart(s) in this run")

    def _signal_all(self, sig: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass  # exited, to be reaped


def run_worker(server: SequentialServer) -> None:
    """One worker: accept on the shared listener (blocking), serve that connection, repeat; until killed."""
    while True:
        try:
            request, address = server.get_request()  # the mixin's accept: TCP_NODELAY, tracking, back-off
        except OSError:
            continue  # reset while queued, or out of descriptors (get_request has waited out the back-off)
        if not server.verify_request(request, address):
            server.shutdown_request(request)
            continue
        try:
            server.process_request(request, address)  # TCPServer: the handler, then close
        except Exception:  # noqa: BLE001 - as socketserver's: reported by handle_error, the worker goes on
            server.handle_error(request, address)
            server.shutdown_request(request)


def serve(service: str, options: ServerOptions, ready: Callable[[str, int], None]) -> dict[str, int]:
    """Serve ``service`` with ``--workers`` pre-forked processes until SIGTERM/SIGINT; returns the stop facts."""
    service_ = make_service("prefork", service, options)
    handler: type[socketserver.BaseRequestHandler] = HANDLERS[service]
    server = SequentialServer(service_, options, handler)
    try:
        return Supervisor(service_, options.worker_processes(), lambda: run_worker(server), server.socket).run(ready)
    finally:
        server.server_close()
        service_.log_stop()  # the workers' counts of client closes come through the service's pipe
