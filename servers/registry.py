"""Registry of server models: a name maps to a small module with one entry point.

Every model module exposes the same two names:

``SERVICES``
    tuple of the service names it implements (``"echo"``, ``"file"``).
``serve(service, options, ready)``
    bind and listen according to ``options`` (a :class:`servers.config.ServerOptions`),
    call ``ready(host, port)`` once listening, then serve until SIGTERM or SIGINT,
    stop, and return. (``c-reference`` is the exception that proves the
    contract: its ``serve`` replaces the process with the C program, which
    prints the same ready line itself, so ``ready`` is never called.)

Modules are imported only when asked for, so listing the models costs nothing
and an optional dependency of one model (uvloop) never breaks another.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: name -> module path. The order is the order models appear in figures (and
#: gives each its colour): the textbook models first, then the machine's
#: ceiling, then the models production servers deploy, appended so that the
#: first six keep the colours of figures already made.
MODELS: dict[str, str] = {
    "sequential": "servers.models.sequential",
    "threading": "servers.models.thread_per_conn",
    "forking": "servers.models.fork_per_conn",
    "selectors": "servers.models.selector_loop",
    "asyncio": "servers.models.asyncio_streams",
    "c-reference": "servers.models.c_reference",
    "threadpool": "servers.models.thread_pool",
    "prefork": "servers.models.prefork",
    "asyncio-protocol": "servers.models.asyncio_protocol",
    "reuseport": "servers.models.reuseport",
}

#: The five textbook Python models: the standard library's three socketserver
#: compositions, a hand-written selectors loop, asyncio streams.
TEXTBOOK_MODELS = ("sequential", "threading", "forking", "selectors", "asyncio")

#: What production Python servers run (gunicorn's pre-forked sync workers, a
#: bounded thread pool, uvicorn's event-loop processes on one port, asyncio
#: protocols, gevent): each bounded or spread over processes in its own way.
DEPLOYED_MODELS = ("threadpool", "prefork", "asyncio-protocol", "reuseport")

#: Every Python model (c-reference is the machine's ceiling, echo only).
PYTHON_MODELS = TEXTBOOK_MODELS + DEPLOYED_MODELS

#: Models that run an asyncio event loop, and so take ``--loop``.
LOOP_MODELS = ("asyncio", "asyncio-protocol", "reuseport")


class UnknownModel(ValueError):
    """Raised for a model name not in :data:`MODELS`; the message lists the valid names."""


def get_model(name: str) -> ModuleType:
    """Import and return the module implementing model ``name``."""
    try:
        path = MODELS[name]
    except KeyError:
        raise UnknownModel(f"unknown model {name!r}; valid models: {', '.join(MODELS)}") from None
    return importlib.import_module(path)
