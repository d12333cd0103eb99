"""The knobs every server model takes, in one place.

:class:`ServerOptions` is the single description of a server's settings. The
command line of ``python -m servers`` is generated from its fields, the
scenario files of ``bench run`` validate their ``server:`` section against it,
and the runner turns a validated instance back into a command line with
:meth:`ServerOptions.to_argv`. Nothing else lists these options.

Defaults are the standard library's where the standard library has one:
``backlog`` is ``socketserver.BaseServer.request_queue_size`` (5) and
``max_children`` is ``socketserver.ForkingMixIn.max_children`` (40), so a user
who changes nothing sees exactly what the stdlib does.

The per-connection timeouts (:mod:`servers.limits`) are the exception: the
stdlib has none and waits forever, which lets one silent client hold a
sequential server, or one slow one a forking child, indefinitely. They are on
by default, generous enough never to cut off a client that is merely slow,
and ``0`` turns each off to show the unbounded stdlib behaviour:

* ``idle_timeout`` 30 s: longer than any pause between requests of a load
  generator, and than a person at ``nc`` takes between lines; an idle
  connection still costs a thread or a process, so it must end some time.
* ``request_timeout`` 10 s: a request line is at most 4 KiB, sent in well
  under a second over any link; 10 s leaves a hundredfold margin and lets a
  client trickling a byte a second (slowloris) send ten bytes, not a line.
* ``send_timeout`` 30 s: a reply that the client takes nothing of for 30 s
  goes to a client that is gone or not reading (TCP itself keeps
  retransmitting to a vanished peer for some 15 minutes).
"""

from __future__ import annotations

import dataclasses
import os
import socketserver
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICES = ("echo", "file", "http", "timeauth")
LOOPS = ("asyncio", "uvloop")
#: ``--crash``: what a handler does at its crashing request (see :mod:`servers.crash`); ``none``: nothing.
CRASH_KINDS = ("none", "raise", "exit", "segfault")
#: ``--preload-use``: how each request uses the ``--preload-mib`` structure (see :mod:`servers.preload`).
PRELOAD_USES = ("read", "iterate", "collect")
#: The loop a model runs without ``--loop``; a model without an event loop has only this value.
DEFAULT_LOOP = LOOPS[0]

#: Options that size one model's pool, and the models that have that pool.
#: Any other model has none: ``python -m servers`` refuses the option there,
#: a scenario refuses it unless one of its models takes it, and ``bench run``
#: gives it only to these models (:meth:`ServerOptions.for_model`).
POOL_OPTIONS: dict[str, tuple[str, ...]] = {"threads": ("threadpool",), "workers": ("prefork", "reuseport")}


@dataclass(frozen=True)
class ServerOptions:
    """Settings shared by every model. ``help`` metadata feeds ``--help``."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=0, metadata={"help": "port; 0 lets the OS pick one (read it from the ready line)"})
    backlog: int = field(
        default=socketserver.TCPServer.request_queue_size,
        metadata={"help": "listen queue length, passed to listen(); the stdlib default is 5"},
    )
    root: Path | None = field(
        default=None,
        metadata={
            "help": "directory served by the file and http services (required for them); opened once at start-up and every "
            "request opened beneath it: symlinks are refused (403) even when they point inside, hard links are served"
        },
    )
    credentials: Path | None = field(
        default=None,
        metadata={
            "help": "timeauth service (required for it): file of the valid logins, one name:password a line; "
            "read once, before listening",
            "metavar": "FILE",
        },
    )
    cpu_work_us: int = field(
        default=0,
        metadata={"help": "burn this many microseconds of pure-Python CPU per chunk received (GIL-bound work)"},
    )
    cpu_work_iterations: int = field(
        default=0,
        metadata={
            "help": "with --cpu-work-us: loop iterations that make up that work, instead of calibrating at start-up "
            "(0); bench run calibrates once per scenario and passes the count, so every server does the same work"
        },
    )
    sendfile: bool = field(default=True, metadata={"help": "stream files with sendfile (off: a read/send loop)"})
    log_requests: bool = field(
        default=False,
        metadata={
            "help": "http on the socketserver models: write http.server's line per request to stderr "
            "(off: it costs throughput, see servers.http_service)"
        },
    )
    max_children: int = field(
        default=socketserver.ForkingMixIn.max_children,
        metadata={
            "help": "forking only: at most this many children; at the limit the accept loop waits for one to exit"
        },
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "threadpool only: pool threads, the most connections served at once; more wait in the "
            "kernel's accept queue (--backlog), and beyond it their SYNs are dropped; 0 = 2 x the CPUs the "
            "server may run on (handlers mostly wait on the network, so a few more threads than CPUs keep "
            "them busy; more only contend for the GIL)"
        },
    )
    workers: int = field(
        default=0,
        metadata={
            "help": "prefork and reuseport only: worker processes; 0 = the CPUs the server may run on. "
            "A prefork worker serves one connection at a time: with all busy, clients wait in the listen "
            "queue (--backlog), and beyond it their SYNs are dropped; a reuseport worker is bounded by "
            "descriptors alone"
        },
    )
    loop: str = field(
        default=DEFAULT_LOOP,
        metadata={"help": "asyncio, asyncio-protocol and reuseport only: event loop, asyncio or uvloop"},
    )
    idle_timeout: float = field(
        default=30.0,
        metadata={
            "help": "close a connection when no byte arrives for S seconds while it waits for input; "
            "0 = wait forever, as the stdlib does"
        },
    )
    request_timeout: float = field(
        default=10.0,
        metadata={
            "help": "file, http and timeauth services: close a connection whose request line (http: request head) is not complete S seconds after its "
            "first byte (stops slowloris, which an idle timeout does not); 0 = off"
        },
    )
    send_timeout: float = field(
        default=30.0,
        metadata={
            "help": "close a connection when a reply makes no progress for S seconds (the client does not "
            "read); 0 = off"
        },
    )
    crash: str = field(
        default="none",
        metadata={
            "help": "make the handler crash at every --crash-every-th request a process serves (a request: an "
            "echo chunk, a file or http request, a timeauth step): raise (an exception in the handler), exit "
            "(os._exit(1) in the handling process), segfault (a read of address 0, SIGSEGV); decided by this "
            "option and the process's own count, never by what a client sends",
            "metavar": "KIND",
        },
    )
    crash_every: int = field(
        default=0,
        metadata={"help": "with --crash: crash at every Nth request of a process (1 = every request); 0 = never"},
    )
    preload_mib: int = field(
        default=0,
        metadata={
            "help": "build about N MiB of read-mostly data before listening (and so before any fork), which "
            "every request then uses as --preload-use says: the copy-on-write lesson; 0 = none"
        },
    )
    preload_use: str = field(
        default="iterate",
        metadata={
            "help": "with --preload-mib: read (the data is one bytes object; each request checksums its next "
            "64 KiB: no Python object is written), iterate (the data is small Python objects; each request "
            "iterates the next 64 KiB of them: every reference taken writes a refcount), collect (the same "
            "objects, only read by length; each process runs one full gc.collect() at its first request, as a "
            "long-lived one eventually does: the collector writes every object's header)",
            "metavar": "USE",
        },
    )
    preload_freeze: bool = field(
        default=False,
        metadata={
            "help": "with --preload-mib: gc.freeze() once the data is built, before any fork: the collector "
            "never visits those objects again (refcounts are still written)"
        },
    )

    def pool_threads(self) -> int:
        """``threads``, or 2 x the usable CPUs when 0 (see :mod:`servers.models.thread_pool` for why)."""
        return self.threads or 2 * usable_cpus()

    def worker_processes(self) -> int:
        """``workers``, or one per usable CPU when 0."""
        return self.workers or usable_cpus()

    def for_model(self, model: str) -> ServerOptions:
        """These options as ``model`` takes them: the pool sizes of :data:`POOL_OPTIONS` it has no pool for at 0."""
        no_pool: dict[str, Any] = {name: 0 for name, models in POOL_OPTIONS.items() if model not in models}
        return dataclasses.replace(self, **no_pool)

    def effective(self) -> ServerOptions:
        """These options with those that go with an unused one at their defaults.

        ``crash_every`` means nothing without a ``crash``, nor ``preload_use``
        and ``preload_freeze`` without ``preload_mib``: a sweep that crosses
        ``crash: [none, raise]`` with ``crash_every: [100, 10]`` has one
        point without crashes, not two (``python -m servers`` refuses the
        lone option instead, a typo there being more likely than a sweep).
        """
        defaults = ServerOptions()
        unused: dict[str, Any] = {}
        if self.crash == defaults.crash:
            unused["crash_every"] = defaults.crash_every
        if self.preload_mib == defaults.preload_mib:
            unused.update(preload_use=defaults.preload_use, preload_freeze=defaults.preload_freeze)
        return dataclasses.replace(self, **unused)

    def to_argv(self) -> list[str]:
        """Command-line arguments for ``python -m servers MODEL SERVICE`` that reproduce these options."""
        argv: list[str] = []
        defaults = ServerOptions()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == getattr(defaults, f.name):
                continue
            flag = "--" + f.name.replace("_", "-")
            if f.type in ("bool",) or isinstance(value, bool):
                argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
            else:
                argv += [flag, str(value)]
        return argv


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: ``bench run`` pins servers to some)."""
    return len(os.sched_getaffinity(0))
