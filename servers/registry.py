"""Registry of server models: every fact about a model, owned in one place.

A model is a name, a small module that serves, and the facts the rest of
sockbench asks about it. The facts live here, in one :class:`Model` entry per
model, and nowhere else:

``services``
    the services the model offers (``"echo"``, ``"file"``, ``"http"``,
    ``"timeauth"``; c-reference echo only); asking a model for
    any other is refused by :meth:`Model.check` with a message naming the
    ones it has. A new service is one more name in the entries of the models
    that implement it.
``family``
    ``"textbook"`` (the standard library's socketserver compositions, a
    hand-written selectors loop, asyncio streams), ``"deployed"`` (what
    production Python servers run) or ``"ceiling"`` (a C program that measures
    the machine, not Python).
``ceiling_reference``
    the model is the machine's ceiling, not a contender: figures draw it dashed
    or hatched, findings compare the others against it.
``native``
    a C program compiled on first use (:mod:`servers.native`): without a C
    compiler the model is unavailable, which a benchmark run reports and skips.
``loop``
    the model runs an asyncio event loop and so takes ``--loop``.
``colour``
    its colour in every figure, report and comparison (Okabe-Ito, colour-blind
    safe, its yellow left out because it vanishes on white; then Paul Tol's
    wine, teal, olive and indigo). Each model keeps its colour whatever a
    results folder happens to contain.
``label``
    one line for ``python -m servers --help``.
``python_handlers``
    the model serves with sockbench's Python service code, so it takes the
    options that act inside a handler (``--crash``, ``--preload-mib``,
    :mod:`servers.crash`, :mod:`servers.preload`); the C ceiling does not.
``process_crash``
    what a handler that ends its process (``--crash exit``, ``--crash
    segfault``) takes down: ``"connection"`` (forking: every connection has
    a process of its own), ``"worker"`` (prefork, reuseport: one worker, which
    the parent re-forks; its other connections go with it) or ``"server"``
    (every model that serves all its connections in one process). A handler
    that raises takes down its own connection only, in every model: each
    catches the exception at the connection's edge.
``extra``
    the optional extra of the package that installs the model's dependency
    (``pip install -e '.[gevent]'``); without it the model is unavailable and
    says so (:meth:`Model.unavailable`), in the command line and in scenarios.

The order of :data:`MODELS` is the order models appear in tables and figures:
the textbook models first, then the machine's ceiling, then the deployed
models, appended so that figures already made keep their colours.

The model module's contract is two names, one optional:

``serve(service, options, ready)``
    bind and listen according to ``options`` (a :class:`servers.config.ServerOptions`),
    call ``ready(host, port)`` once listening, then serve until SIGTERM or SIGINT,
    stop, and return: None, or (a model whose parent supervises workers) a
    dict of facts only that parent knows, which ``python -m servers`` prints
    as its stop line (``{"worker_restarts": 3}``). (``c-reference`` is the exception that proves the
    contract: its ``serve`` replaces the process with the C program, which
    prints the same ready line itself, so ``ready`` is never called.)
``check(service, options)`` (optional)
    raise :class:`servers.service.SetupError` for options this model cannot
    honour, before anything listens. :meth:`Model.check` calls it after the
    checks every model shares.

Modules are imported only when asked for, so listing the models and their
facts costs nothing and an optional dependency of one model (uvloop) never
breaks another (uvloop, gevent).

Error handling
--------------
:class:`UnknownModel` (a :class:`ValueError`) names the valid models;
:class:`UnsupportedService` and the model's own checks are
:class:`~servers.service.SetupError`, whose message names the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from servers.config import DEFAULT_LOOP
from servers.service import SetupError

if TYPE_CHECKING:
    from servers.config import ServerOptions

Family = Literal["textbook", "ceiling", "deployed"]
#: What a handler that ends its own process takes down (see ``process_crash`` above).
CrashScope = Literal["connection", "worker", "server"]

#: The services the Python models offer (the C ceiling serves echo only).
PYTHON_SERVICES = ("echo", "file", "http", "timeauth")


class UnknownModel(ValueError):
    """Raised for a model name not in :data:`MODELS`; the message lists the valid names."""


class UnsupportedService(SetupError, ValueError):
    """A service the model does not offer; the message names the ones it does."""


class ModelUnavailable(ImportError):
    """A model whose optional extra is not installed; the message names the extra and how to install it."""


@dataclass(frozen=True)
class Model:
    """One model's facts (see the module docstring) and the way to its module."""

    name: str
    #: Import path of the module with ``serve`` (and maybe ``check``).
    module: str
    family: Family
    services: tuple[str, ...]
    colour: str
    label: str
    ceiling_reference: bool = False
    native: bool = False
    loop: bool = False
    python_handlers: bool = True
    process_crash: CrashScope = "server"
    #: The package's optional extra that installs what the module imports (None: the dependencies suffice).
    extra: str | None = None

    @property
    def order(self) -> int:
        """The model's place in tables and figures (0 first)."""
        return list(MODELS).index(self.name)

    def offers(self, service: str) -> bool:
        return service in self.services

    def unavailable(self) -> str | None:
        """Why this model cannot run here (its optional extra is not installed), or None when it can.

        Looks the extra's module up without importing it: asking costs
        nothing and never imports gevent into the asking process.
        """
        if self.extra is None:
            return None
        try:
            found = importlib.util.find_spec(self.extra) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return None
        return (
            f"the {self.name} model needs the optional extra {self.extra!r}, not installed here: "
            f"pip install -e '.[{self.extra}]'"
        )

    def options_for(self, options: ServerOptions) -> ServerOptions:
        """``options`` as this model takes them: a pool size only where it has the pool, ``loop`` only where it has one.

        A scenario gives the same ``server:`` settings to every model it runs.
        Pool sizes go to the models with that pool
        (:meth:`ServerOptions.for_model`); ``loop`` goes to the event-loop
        models only (the ``loop`` fact): the others run as they always do, with
        ``loop`` at its default, where ``--loop uvloop`` would make them refuse
        to start (:meth:`check`).
        """
        taken = options.for_model(self.name)
        return taken if self.loop else dataclasses.replace(taken, loop=DEFAULT_LOOP)

    def load(self) -> ModuleType:
        """Import and return the module implementing this model; :class:`ModelUnavailable` without its extra."""
        reason = self.unavailable()
        if reason is not None:
            raise ModelUnavailable(reason)
        return importlib.import_module(self.module)

    def check(self, service: str, options: ServerOptions) -> ModuleType:
        """Refuse what this model cannot serve as asked, before it listens; returns its module.

        The checks every model shares come first (the service offered,
        ``--loop`` only for event-loop models), then the module's own
        ``check(service, options)`` if it has one.
        """
        if not self.offers(service):
            raise UnsupportedService(
                f"model {self.name!r} does not provide the {service!r} service; it provides: {', '.join(self.services)}"
            )
        if options.loop != "asyncio" and not self.loop:
            raise SetupError(
                f"--loop {options.loop} only applies to the models {', '.join(LOOP_MODELS)}, not {self.name!r}"
            )
        if not self.python_handlers:
            for name, given in (("crash", options.crash != "none"), ("preload_mib", options.preload_mib)):
                if given:
                    raise SetupError(
                        f"--{name.replace('_', '-')} acts in sockbench's Python handlers, which {self.name!r} does "
                        f"not run; it applies to: {', '.join(HANDLER_OPTION_MODELS)}"
                    )
        module = self.load()
        own_check = getattr(module, "check", None)
        if own_check is not None:
            own_check(service, options)
        return module


def _models(*models: Model) -> dict[str, Model]:
    return {m.name: m for m in models}


#: name -> facts, in figure order.
MODELS: dict[str, Model] = _models(
    Model(
        "sequential",
        "servers.models.sequential",
        "textbook",
        PYTHON_SERVICES,
        "#E69F00",
        "socketserver.TCPServer: one client at a time",
    ),
    Model(
        "threading",
        "servers.models.thread_per_conn",
        "textbook",
        PYTHON_SERVICES,
        "#56B4E9",
        "socketserver.ThreadingTCPServer: a thread per connection",
    ),
    Model(
        "forking",
        "servers.models.fork_per_conn",
        "textbook",
        PYTHON_SERVICES,
        "#009E73",
        "socketserver.ForkingTCPServer: a process per connection (at --max-children the accept loop "
        "waits for a child to exit)",
        process_crash="connection",
    ),
    Model(
        "selectors",
        "servers.models.selector_loop",
        "textbook",
        PYTHON_SERVICES,
        "#0072B2",
        "hand-written single-threaded non-blocking selectors loop",
    ),
    Model(
        "asyncio",
        "servers.models.asyncio_streams",
        "textbook",
        PYTHON_SERVICES,
        "#D55E00",
        "asyncio.start_server streams (--loop uvloop if installed)",
        loop=True,
    ),
    Model(
        "c-reference",
        "servers.models.c_reference",
        "ceiling",
        ("echo",),
        "#000000",
        "a small C echo server: the machine's ceiling (echo only)",
        ceiling_reference=True,
        native=True,
        python_handlers=False,
    ),
    Model(
        "threadpool",
        "servers.models.thread_pool",
        "deployed",
        PYTHON_SERVICES,
        "#CC79A7",
        "socketserver with a pool of --threads threads (at the limit no more accepts: new clients "
        "wait in the listen queue)",
    ),
    Model(
        "prefork",
        "servers.models.prefork",
        "deployed",
        PYTHON_SERVICES,
        "#882255",
        "--workers processes forked at start, each accepting and serving one connection at a time "
        "(the rest wait in the listen queue); a worker that dies is re-forked",
        process_crash="worker",
    ),
    Model(
        "asyncio-protocol",
        "servers.models.asyncio_protocol",
        "deployed",
        PYTHON_SERVICES,
        "#44AA99",
        "asyncio BufferedProtocol callbacks, no streams (--loop uvloop if installed); one thread, "
        "bounded by descriptors",
        loop=True,
    ),
    Model(
        "reuseport",
        "servers.models.reuseport",
        "deployed",
        PYTHON_SERVICES,
        "#999933",
        "--workers asyncio-protocol processes, each listening with SO_REUSEPORT on the same port: the "
        "kernel spreads connections over their queues (--backlog each); a dead worker is re-forked",
        loop=True,
        process_crash="worker",
    ),
    Model(
        "gevent",
        "servers.models.gevent_server",
        "deployed",
        PYTHON_SERVICES,
        "#332288",
        "gevent's StreamServer, a greenlet per connection, no monkey-patching; one thread, bounded by "
        "descriptors; http and timeauth are the event loops' sans-IO sessions over gevent's sockets; "
        "its --sendfile is os.sendfile (gevent's own socket.sendfile is an 8 KiB read/send loop); "
        "needs pip install -e '.[gevent]'",
        extra="gevent",
    ),
)


def model(name: str) -> Model:
    """The facts of model ``name``; :class:`UnknownModel` naming the valid ones for any other name."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(f"unknown model {name!r}; valid models: {', '.join(MODELS)}") from None


def unavailable(name: str) -> str | None:
    """Why model ``name`` cannot run here, or None (see :meth:`Model.unavailable`)."""
    return model(name).unavailable()


def available_models() -> dict[str, str | None]:
    """Every model and why it cannot run here (None when it can), in :data:`MODELS` order."""
    return {name: m.unavailable() for name, m in MODELS.items()}


def get_model(name: str) -> ModuleType:
    """Import and return the module implementing model ``name``."""
    return model(name).load()


def _family(family: Family) -> tuple[str, ...]:
    return tuple(m.name for m in MODELS.values() if m.family == family)


#: The five textbook Python models: the standard library's three socketserver
#: compositions, a hand-written selectors loop, asyncio streams.
TEXTBOOK_MODELS = _family("textbook")

#: What production Python servers run (gunicorn's pre-forked sync workers, a
#: bounded thread pool, uvicorn's event-loop processes on one port, asyncio
#: protocols, gevent's StreamServer): each bounded or spread over processes in
#: its own way. gevent needs the optional extra ``gevent`` (:meth:`Model.unavailable`).
DEPLOYED_MODELS = _family("deployed")

#: Every Python model (the ceiling is C).
PYTHON_MODELS = TEXTBOOK_MODELS + DEPLOYED_MODELS

#: Models that run an asyncio event loop, and so take ``--loop``.
LOOP_MODELS = tuple(m.name for m in MODELS.values() if m.loop)

#: Models that take the options acting in a handler (``--crash``, ``--preload-mib``).
HANDLER_OPTION_MODELS = tuple(m.name for m in MODELS.values() if m.python_handlers)

#: The machine's ceilings (drawn apart, never a contender in findings).
CEILING_MODELS = tuple(m.name for m in MODELS.values() if m.ceiling_reference)


def is_ceiling_reference(name: str) -> bool:
    """True for a registered ceiling model; False for any other name (also one no longer registered)."""
    known = MODELS.get(name)
    return known is not None and known.ceiling_reference


def order_key(name: str) -> tuple[int, str]:
    """Sort key that puts models in registry order (the figures' order), unknown names last by name."""
    known = MODELS.get(name)
    return (known.order if known is not None else len(MODELS), name)
