"""``--crash KIND --crash-every N``: a handler that fails on purpose, to show what each model survives.

Every model runs the same per-request step (:attr:`servers.service.Service.work`:
once per echo chunk, file or http request, timeauth step), and :class:`Crash`
is part of it. It counts the requests its process has served and, at every
``N``-th, fails in one of three ways:

``raise``
    an exception (:class:`HandlerCrash`) leaves the handler. Every model
    catches exceptions at the edge of a connection (socketserver's
    ``handle_error``, the selectors loop's per-connection ``except``, the
    asyncio callbacks and tasks, gevent's greenlet), logs one line and closes
    that connection: the client sees its connection end, every other
    connection goes on.
``exit``
    ``os._exit(1)`` in the handling thread: the *process* ends at once, no
    ``finally``, no flush. In a forked child that is one connection; in a
    prefork or reuseport worker one worker (its parent forks another); in a
    threaded or event-loop server, everything.
``segfault``
    ``ctypes.string_at(0)`` reads address 0: SIGSEGV, the process dies as
    a C extension's bug kills it, with the same reach as ``exit``. The core
    dump is turned off first (``RLIMIT_CORE`` 0), so a crash lesson leaves
    no core files behind.

Who decides
-----------
Only the server's own options and its own count: nothing a client sends
selects a crash or is executed, so a load generator cannot make a server
crash that was not started to. The count is per process: threads share it
(``itertools.count`` is atomic under the GIL), a forked child or a re-forked
worker starts from the parent's count, which serves no request and so is 0.
Every model thus crashes on about one request in ``N``: a forking server's
child at the ``N``-th request of its connection, a threaded server at the
``N``-th of all. Deterministic, not random, so that a run is reproducible
and a test can say exactly which request fails.

Each crash writes one line on stderr first (which kind, at which request),
so a run's log says why its server or a worker died.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import resource
import sys
from dataclasses import dataclass, field

from servers.config import CRASH_KINDS


class HandlerCrash(RuntimeError):
    """The exception of ``--crash raise``."""


@dataclass(frozen=True)
class Crash:
    """Fail as ``kind`` says at every ``every``-th call in this process (``every`` 0: never)."""

    kind: str = "none"
    every: int = 0
    _served: itertools.count = field(default_factory=lambda: itertools.count(1), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in CRASH_KINDS:
            raise ValueError(f"crash kind {self.kind!r}; valid kinds: {', '.join(CRASH_KINDS)}")
        if self.every < 0:
            raise ValueError(f"crash every {self.every} requests: must be >= 0")

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.every > 0

    def __call__(self) -> None:
        """Count one request; crash if it is the ``every``-th."""
        n = next(self._served)
        if n % self.every:
            return
        what = f"--crash {self.kind} at request {n} of pid {os.getpid()} (every {self.every})"
        if self.kind == "raise":
            raise HandlerCrash(what)
        sys.stderr.write(f"crashing: {what}\n")
        sys.stderr.flush()
        if self.kind == "exit":
            os._exit(1)
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        ctypes.string_at(0)  # SIGSEGV: the process ends here
        os._exit(1)  # not reached; says so to a reader and a type checker
