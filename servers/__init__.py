"""sockbench's servers: four services, eleven concurrency models (ten in Python, one in C), one command line.

The package separates two questions that a network server answers, the way
``socketserver`` separates request handlers from server classes:

*Service*: what does one connection get?
    ``echo`` (RFC 862: every byte back, in order, until the client closes) and
    ``file`` (a request line naming a file under a root; ``OK <size>\\n`` and the
    bytes, or ``ERR <code> <reason>\\n``), ``http`` (HTTP/1.1 GET and HEAD of
    the same files, keep-alive and pipelining: :mod:`servers.http_service`)
    and ``timeauth`` (a name, an ACK byte, a password, then the time:
    three round trips per request, :mod:`servers.timeauth`). The wire
    protocol, its limits and its path-safety rules live in
    :mod:`servers.protocol`; the per-connection
    settings (root, sendfile, calibrated CPU work) in :mod:`servers.service`
    and :mod:`servers.work`.

*Concurrency model*: how are many connections served at once?
    ``sequential``, ``threading`` and ``forking`` are the standard library's
    ``TCPServer``, ``ThreadingTCPServer`` and ``ForkingTCPServer`` running the
    *same* handler classes (:mod:`servers.handlers`, glue in
    :mod:`servers.blocking`; each model module composes its server class in
    one line), so any difference between them is the model
    alone. ``selectors`` (:mod:`servers.models.selector_loop`) is a
    hand-written non-blocking loop, ``asyncio``
    (:mod:`servers.models.asyncio_streams`) the idiomatic streams server.
    The models production servers deploy sit beside them: ``threadpool``,
    ``prefork``, ``asyncio-protocol``, ``reuseport`` (SO_REUSEPORT workers)
    and ``gevent`` (an optional extra); ``c-reference`` is a small C epoll
    server, the machine's ceiling. Each
    model is a small module in :mod:`servers.models` with the same entry
    point, ``serve(service, options, ready)`` (and optionally its own
    ``check``), found through :mod:`servers.registry`, which owns each
    model's facts: the services it offers, its family, its colour and order
    in figures, whether it is the machine's ceiling.

Every model bounds what one client can cost it (idle, request-line and send
timeouts) and backs off when ``accept`` runs out of descriptors, with the
shared pieces of :mod:`servers.limits`; the timeouts' ``0`` shows the
standard library's unbounded waiting.

Every model takes the same :class:`servers.config.ServerOptions`, from which
the command line (:mod:`servers.cli`, ``python -m servers MODEL SERVICE``) is
generated. A server announces readiness with one JSON line on stdout, writes
one line on stderr per failed connection, and stops on SIGTERM/SIGINT within
5 s leaving no thread or process behind. :mod:`servers.launch` is how tests and
the benchmark runner start one as a subprocess and make sure it is gone again.

Defaults are the standard library's where it has one (listen backlog 5,
``max_children`` 40): sockbench measures what a user who changes nothing gets.
"""
