"""The parameters of a run, each declared once: the load side's knobs and every ``runs.csv`` parameter column.

:mod:`servers.config` is the one description of a server's settings; this
module is the same for the rest of a run. Each :class:`Parameter` says its
name, the scenario section it lives in, its kind (which fixes its type,
unit and bounds), its default, whether a list of values sweeps it, what its
``runs.csv`` column means, the words a figure uses for it, and its help.
Everything that lists parameters is generated from :data:`PARAMETERS`:

* the scenario file's ``load:`` and ``generator:`` sections
  (:mod:`bench.scenario.schema`), and which fields a list sweeps
  (:data:`bench.scenario.sweep.SWEEP_PATHS`) and why a list changes nothing;
* ``bench load``'s flags (:mod:`bench.loadgen.cli`) and the defaults and
  checks of the generator's :class:`~bench.loadgen.spec.LoadSpec`;
* the :class:`~bench.loadgen.spec.LoadSpec` the runner builds for a point;
* the parameter columns of ``runs.csv`` (:data:`bench.results.PARAMETER_COLUMNS`,
  their meanings in ``RUN_COLUMNS``) and a point's values for them;
* the figures' titles and axis labels.

So a new load parameter is one entry here (and the generator code that acts
on it). Server parameters with a column (``backlog`` ...) appear too, for
their column, sweep and figure words; their type, default and help stay
:class:`~servers.config.ServerOptions`' and are read from it.

The table sits low: it imports only :mod:`servers.config`, and the measuring
and recording modules may import it.

Kinds
-----
``count`` a whole number >= 1; ``whole`` a whole number >= 0; ``size`` bytes
(``positive`` for >= 1), written with the units of :mod:`bench.units`;
``duration`` seconds, with units (``positive``: > 0); ``rate`` requests per
second > 0; ``bitrate`` bits per second >= 1 (``100Mbit``); ``fraction`` a number from 0 to 1; ``choice`` one of
``choices``; ``flag`` true or false. A default of ``None`` makes the value
optional (absent: the generator chooses, or it does not apply).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from servers.config import CRASH_KINDS, PRELOAD_USES, ServerOptions

KINDS = ("count", "whole", "size", "duration", "rate", "bitrate", "fraction", "choice", "flag")

#: Load modes: closed loop (send, wait for the reply, repeat) and open loop (requests start on a schedule).
MODES = ("closed", "open")
#: Event loops of the python engine; auto = uvloop when installed.
GENERATOR_LOOPS = ("auto", "asyncio", "uvloop")
#: Load engines (see :mod:`bench.loadgen.engines`): auto = native where it builds, else python;
#: locust = Locust's master and workers (:mod:`bench.loadgen.locust_engine`);
#: wrk = Debian's wrk, http closed loop (:mod:`bench.loadgen.wrk_engine`).
ENGINES = ("auto", "native", "python", "locust", "wrk")
#: How an http client goes through its paths: in turn (each client starting at its own), or at random
#: (seeded per worker, so a run is repeatable).
PATH_ORDERS = ("round-robin", "random")
#: The methods an http client sends: GET (the file follows) or HEAD (the same head, no body).
HTTP_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Parameter:
    """One parameter. See the module docstring for what is generated from it."""

    #: field name in its section; the runs.csv column name when ``column`` is given
    name: str
    #: scenario section: "load", "generator", "server" or "network"
    section: str
    #: one of KINDS
    kind: str
    default: Any
    help: str
    #: size/duration: > 0 (size: >= 1 byte) rather than >= 0
    positive: bool = False
    choices: tuple = ()
    #: a list of values in a scenario sweeps it (it then needs a column)
    sweepable: bool = False
    #: meaning of its runs.csv column; empty = no column
    column: str = ""
    #: (title phrase, x-axis label) of a figure sweeping it
    axis: tuple[str, str] | None = None
    #: ("service", "file") or ("mode", "open"): the only setting where it means something
    #: (("service", ("file", "http")): any of these); elsewhere its column is blank and a
    #: list of it changes nothing
    applies: tuple[str, str | tuple[str, ...]] | None = None
    #: scenario: it must be given wherever it applies; what to write (shown in the message)
    required: str = ""
    #: name of its LoadSpec (and sweep point) field when not ``name``; "" = no LoadSpec field
    #: (the runner turns it into something else, e.g. file_bytes into the files to fetch)
    spec: str | None = None
    #: bench load: a --flag of this name; False = none (set otherwise, e.g. mode by --rate)
    flag: bool = True
    #: bench load: the flag must be given (a scenario has a default)
    flag_required: bool = False
    #: 0 (or absent) means "the model's own default": its column is empty then
    zero_is_default: bool = False
    #: its field in the scenario section when not ``name`` (``network.rtt`` has the column ``net_rtt_ms``)
    field: str = ""
    #: the column holds the value times this (a duration in seconds shown as ms: 1e3); the unit is in the name
    column_factor: float = 1.0
    #: the load engines that act on a value other than the default; empty = every engine. Asked
    #: for another value, another engine refuses it and auto picks one of these, saying why
    #: (:func:`bench.loadgen.engines.resolve`)
    engines: tuple[str, ...] = ()

    @property
    def field_name(self) -> str:
        """Its field in its scenario section: ``rtt`` for ``net_rtt_ms``, else ``name``."""
        return self.field or self.name

    def column_value(self, value: Any) -> Any:
        """``value`` (in the scenario's units) as its runs.csv column holds it."""
        if value is None or self.column_factor == 1.0:
            return value
        return round(value * self.column_factor, 6)  # 6 places: 0.01 s reads 10.0 ms, not 10.000000000000002

    #: a subsection of its section the field lives in (``"mix"``: ``load.mix.slow_reader``); "" = none
    group: str = ""

    @property
    def path(self) -> tuple[str, ...]:
        """Where it lives in a scenario file: ``("load", "clients")``, ``("load", "mix", "slow_reader")``."""
        return (self.section, self.group, self.field_name) if self.group else (self.section, self.field_name)

    def engine_lacks(self, engine: str, value: Any) -> bool:
        """Whether ``engine`` cannot run ``value`` of this parameter (a value other than the default it lacks)."""
        return bool(self.engines) and engine not in self.engines and value is not None and value != self.default

    @property
    def spec_name(self) -> str:
        """The LoadSpec field, or "" when it has none."""
        return self.name if self.spec is None else self.spec

    @property
    def point_name(self) -> str:
        """Its field in a sweep point's load (:class:`bench.scenario.sweep.LoadPoint`), or in its own section."""
        return self.spec or self.field_name

    @property
    def option(self) -> str:
        """``bench load``'s flag: ``--connect-timeout``."""
        return "--" + self.name.replace("_", "-")

    @property
    def applies_values(self) -> tuple[str, ...]:
        """The values of the ``applies`` axis where it means something (empty: everywhere)."""
        if self.applies is None:
            return ()
        value = self.applies[1]
        return (value,) if isinstance(value, str) else value

    def applies_at(self, where: dict[str, Any]) -> bool:
        """Whether it means something at a point whose service and mode are ``where``."""
        return self.applies is None or where.get(self.applies[0]) in self.applies_values

    def _where(self) -> str:
        axis = self.applies[0] if self.applies else ""
        values = " and ".join(self.applies_values)
        if axis == "service":
            return f"the {values} service" + ("s" if len(self.applies_values) > 1 else "")
        return f"{axis}: {values}"

    def inert_reason(self) -> str:
        """Why a list of it can change nothing: where it applies."""
        if self.applies is None:
            return "every value gives the same runs"
        return f"{self.name} only applies to {self._where()}"

    def required_reason(self) -> str:
        """The message for a scenario that needs it but lacks it."""
        axis = self.applies[0] if self.applies else ""
        where = f"for {self._where()}" if axis == "service" else f"when {axis} is {' or '.join(self.applies_values)}"
        return f"required {where}: {self.required}"

    def problem(self, value: Any, required: bool = False) -> str | None:
        """What is wrong with ``value`` for this kind, or None.

        ``None`` is fine where the default is ``None``, unless ``required``.
        """
        label = self.name.replace("_", " ") if self.kind == "duration" else self.name
        if value is None and self.default is None:
            return f"{self.name}: {self.required_reason()}" if required else None
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "count" or (self.kind == "size" and self.positive):
            ok, want = whole and value >= 1, "an integer >= 1"
        elif self.kind in ("whole", "size"):
            ok, want = whole and value >= 0, "an integer >= 0"
        elif self.kind in ("duration", "rate"):
            positive = self.positive or self.kind == "rate"
            ok = number and (value > 0 if positive else value >= 0)
            want = "> 0" if positive else ">= 0"
            want += " seconds" if self.kind == "duration" else " requests/s"
        elif self.kind == "bitrate":
            ok, want = whole and value >= 1, "an integer >= 1 bit/s"
        elif self.kind == "fraction":
            ok, want = number and 0 <= value <= 1, "within 0..1"
        elif self.kind == "choice":
            ok, want = value in self.choices, "one of " + ", ".join(self.choices)
        else:
            ok, want = isinstance(value, bool), "true or false"
        return None if ok else f"{label} must be {want}, got {value!r}"


def _server(name: str, kind: str, **facts: Any) -> Parameter:
    """A server parameter with a runs.csv column: type, default and help are ServerOptions'."""
    option = {f.name: f for f in dataclasses.fields(ServerOptions)}[name]
    return Parameter(
        name,
        "server",
        kind,
        option.default,
        option.metadata.get("help", ""),
        spec="",
        flag=False,
        sweepable=True,
        **facts,
    )


#: The kinds of client of ``load.mix`` (see :mod:`bench.loadgen.clients`): ``fast`` is the normal
#: client of ``mode`` (closed or open loop), the others are slow clients, each a share of
#: ``load.clients`` (:func:`mix_counts`); the fast clients are the rest.
SLOW_KINDS = ("slow_reader", "slowloris", "idle")
MIX_KINDS = ("fast", *SLOW_KINDS)
#: The services the slow kinds speak (a slow reader must know where a reply ends without a parser).
MIX_SERVICES = ("echo", "file")


def _mix_share(kind: str, doing: str) -> Parameter:
    return Parameter(
        kind,
        "load",
        "fraction",
        0.0,
        f"share of load.clients that are {kind} clients ({doing}): from 0 to 1, as 0.1 or as a percentage",
        sweepable=True,
        group="mix",
        column=f"load.mix.{kind}: share of the clients that were {kind} clients ({doing})",
        axis=(f"as {kind} clients are added", f"{kind} clients (share of all clients)"),
    )


#: Every parameter, in the order of the runs.csv parameter columns (the order
#: figures prefer an x axis in, and the sweep's order: the first varies slowest).
PARAMETERS: tuple[Parameter, ...] = (
    # 10, not 1: at one connection the machine's CPU placement is measured,
    # not the server (measured here: models differ from ~10 connections on).
    Parameter(
        "clients",
        "load",
        "count",
        10,
        "concurrent client connections",
        sweepable=True,
        column="concurrent client connections",
        flag_required=True,
        axis=("as clients grow", "concurrent clients (connections)"),
    ),
    _mix_share("slow_reader", "they ask for a large reply and read it at slow_read_rate"),
    _mix_share("slowloris", "they send each request a byte every slowloris_interval"),
    _mix_share("idle", "they connect and send nothing"),
    # 10 KiB/s: a phone on a poor mobile link; a 16 MiB reply then takes
    # ~27 minutes, longer than any run, so each slow reader holds its connection
    # (and, on a blocking model, its thread or process) for the whole run.
    Parameter(
        "slow_read_rate",
        "load",
        "size",
        10 * 1024,
        "slow readers read this many bytes per second of their reply",
        positive=True,
        group="mix",
    ),
    # 16 MiB: 4x the most a server's send buffer grows to (tcp_wmem's 4 MiB
    # on Linux; the slow reader keeps its receive buffer small), so the
    # server is left holding the rest and its handler waits in send. A reply
    # that fits in the buffers does not hold a blocking handler: it is
    # written at once, and the handler waits for the next request, which an
    # idle timeout ends (measured: 1 MiB replies freed a thread pool at
    # idle_timeout 1 s, 16 MiB ones did not).
    Parameter(
        "slow_reply_bytes",
        "load",
        "size",
        16 * 1024 * 1024,
        "echo: size of the message a slow reader sends and reads back slowly (file: it fetches the clients' file)",
        positive=True,
        group="mix",
        applies=("service", "echo"),
    ),
    # 1 s: the classic slowloris pace, well inside every idle timeout, so
    # only a request timeout (file service) ends its connection.
    Parameter(
        "slowloris_interval",
        "load",
        "duration",
        1.0,
        "slowloris clients send one byte of their request this often",
        positive=True,
        group="mix",
        spec="slowloris_interval_s",
    ),
    # 1 KiB: a typical small request; bench load's default (a scenario must say it).
    Parameter(
        "message_bytes",
        "load",
        "size",
        1024,
        "echo: size of each message",
        positive=True,
        sweepable=True,
        column="echo message size",
        applies=("service", "echo"),
        required="the size of each message, e.g. message_bytes: 1KiB",
        axis=("as messages get bigger", "message size"),
    ),
    Parameter(
        "file_bytes",
        "load",
        "size",
        None,
        "file, http: size of the file requested",
        sweepable=True,
        column="file size requested (file and http services)",
        applies=("service", ("file", "http")),
        required="the size of the file to fetch, e.g. file_bytes: 1MiB",
        spec="",
        flag=False,
        axis=("as files get bigger", "file size"),
    ),
    _server(
        "backlog",
        "whole",
        column="listen backlog given to the server",
        axis=("as the listen backlog changes", "listen backlog (connections)"),
    ),
    _server(
        "cpu_work_us",
        "whole",
        column="server CPU burn per chunk",
        axis=("as each request needs more CPU", "server CPU work per chunk (µs)"),
    ),
    _server(
        "max_children",
        "count",
        column="ForkingMixIn.max_children",
        axis=("as max_children changes", "ForkingMixIn.max_children (processes)"),
    ),
    _server(
        "threads",
        "count",
        zero_is_default=True,
        column="server.threads: threadpool's pool threads (the other models have no such pool); empty: its "
        "default, 2 x the server's CPUs",
        axis=("as the thread pool grows", "threadpool's pool (threads)"),
    ),
    _server(
        "workers",
        "count",
        zero_is_default=True,
        column="server.workers: prefork's and reuseport's worker processes (the other models have none); "
        "empty: their default, one per server CPU",
        axis=("as workers are added", "prefork / reuseport workers (processes)"),
    ),
    _server(
        "crash",
        "choice",
        choices=CRASH_KINDS,
        column="server.crash: what a handler does at its crashing request (none, raise, exit, segfault)",
        axis=("by how the handler crashes", "handler crash"),
    ),
    _server(
        "crash_every",
        "whole",
        column="server.crash_every: a crash at every Nth request of a server process (0 = none)",
        axis=("as crashes get rarer", "requests per crash (per process)"),
    ),
    _server(
        "preload_mib",
        "whole",
        column="server.preload_mib: MiB of read-mostly data built before listening and forking (0 = none)",
        axis=("as the preloaded data grows", "preloaded data (MiB)"),
    ),
    _server(
        "preload_use",
        "choice",
        choices=PRELOAD_USES,
        column="server.preload_use: what each request does with the preloaded data (read, iterate, collect)",
        axis=("by how requests use the preloaded data", "use of the preloaded data"),
    ),
    _server(
        "preload_freeze",
        "flag",
        column="server.preload_freeze: True if gc.freeze() ran once the data was built, before any fork",
        axis=("with and without gc.freeze()", "gc.freeze() before fork"),
    ),
    _server(
        "idle_timeout",
        "duration",
        column="server.idle_timeout: seconds a server waits for a byte before closing the connection (0 = never)",
        axis=("as the idle timeout changes", "server idle timeout (s)"),
    ),
    Parameter(
        "path_order",
        "load",
        "choice",
        "round-robin",
        "http: how each client goes through the paths: round-robin, or random (seeded per worker)",
        choices=PATH_ORDERS,
        applies=("service", "http"),
    ),
    Parameter(
        "method",
        "load",
        "choice",
        "GET",
        "http: GET (the file's bytes follow) or HEAD (the same head and Content-Length, no body: "
        "what parsing and answering cost without the copy)",
        choices=HTTP_METHODS,
        sweepable=True,
        column="http request method: GET, or HEAD (the head only; mb_per_s is 0)",
        applies=("service", "http"),
        axis=("with GET and HEAD", "http request method"),
        engines=("python",),
    ),
    # 1: one request in flight per connection, as browsers and most clients send.
    Parameter(
        "pipeline",
        "load",
        "count",
        1,
        "http, closed loop: requests each connection sends before it reads the replies (HTTP/1.1 "
        "pipelining; the replies must come back in order); 1 = one at a time",
        sweepable=True,
        column="http pipeline depth: requests sent on a connection before reading their replies (1 = none)",
        applies=("service", "http"),
        axis=("as requests are pipelined deeper", "pipeline depth (requests per connection in flight)"),
        engines=("python",),
    ),
    Parameter(
        "requests_per_connection",
        "load",
        "whole",
        0,
        "0 = keep each connection for the whole run; N = reconnect after every N requests",
        sweepable=True,
        column="0 = one connection for the whole run; N = reconnect every N requests",
        axis=("as connections carry more requests", "requests per connection (0 = one connection per client)"),
    ),
    # The link between the hosts (network: {hosts: namespaces}, bench.network): the runner builds
    # each run's hosts with its point's values. Before load.rate, so a figure sweeping both puts
    # the round trip on the x axis and a line per rate (Little's law reads along the round trip).
    Parameter(
        "net_rtt_ms",
        "network",
        "duration",
        0.0,
        "namespaces: round trip added between the hosts, half each way (the delay stage)",
        field="rtt",
        column_factor=1e3,  # seconds in the scenario, ms in the column: the unit link delays are quoted in
        sweepable=True,
        column="round trip the scenario added between the hosts (delay stage, half each way), ms",
        applies=("hosts", "namespaces"),
        spec="",
        flag=False,
        axis=("as the round trip grows", "round trip added by the link (ms)"),
    ),
    Parameter(
        "net_jitter_ms",
        "network",
        "duration",
        0.0,
        "namespaces: extra delay per packet, uniform in 0..jitter, order kept",
        field="jitter",
        column_factor=1e3,
        sweepable=True,
        column="extra per-packet delay drawn uniformly from 0..this, each way (order kept), ms",
        applies=("hosts", "namespaces"),
        spec="",
        flag=False,
        axis=("as the jitter grows", "jitter added by the link (ms)"),
    ),
    Parameter(
        "net_rate_mbit",
        "network",
        "bitrate",
        None,
        "namespaces: bit rate of each direction (tbf), e.g. 100Mbit; absent = unlimited",
        field="rate",
        column_factor=1e-6,  # bit/s in the scenario, Mbit/s in the column
        sweepable=True,
        column="bit rate of each direction of the link (tbf on each host's eth0), Mbit/s; empty = unlimited",
        applies=("hosts", "namespaces"),
        spec="",
        flag=False,
        axis=("as the link gets faster", "link rate (Mbit/s)"),
    ),
    Parameter(
        "rate",
        "load",
        "rate",
        None,
        "open loop only: requests per second in total (required for open; bench load: giving it selects the open loop); "
        "requests due within the generator's 75 us batching horizon go out together at one wake-up, so up to 75 us "
        "of a corrected latency can be the generator's (the uncorrected latency, from the send, leaves it out)",
        sweepable=True,
        column="open loop: total requests/s scheduled (empty for closed loop)",
        applies=("mode", "open"),
        required="total requests per second, e.g. rate: 5000",
        axis=("as the offered load rises", "scheduled rate (requests/s)"),
    ),
    _server(
        "sendfile",
        "flag",
        column="True if the server used sendfile",
        applies=("service", "file"),
        axis=("with and without sendfile", "sendfile"),
    ),
    Parameter(
        "mode",
        "load",
        "choice",
        "closed",
        "closed: send, wait for the reply, repeat; open: start requests at a fixed rate",
        choices=MODES,
        sweepable=True,
        column="closed | open",
        flag=False,
        axis=("in closed and open loop", "load mode"),
    ),
    # 3 s: long enough to ride out the kernel's first SYN retry (1 s), short
    # enough that a server that never accepts shows up within a short run.
    Parameter(
        "connect_timeout",
        "load",
        "duration",
        3.0,
        "give up a connection attempt after this long",
        positive=True,
        spec="connect_timeout_s",
    ),
    # 10 s: a reply on loopback takes microseconds to milliseconds; ten
    # seconds is a server that stopped answering, not a slow one.
    Parameter(
        "request_timeout",
        "load",
        "duration",
        10.0,
        "give up waiting for a reply after this long",
        positive=True,
        spec="request_timeout_s",
    ),
    Parameter(
        "workers",
        "generator",
        "count",
        None,
        "generator worker processes; null/absent = one per generator CPU (see placement)",
    ),
    Parameter(
        "engine",
        "generator",
        "choice",
        "auto",
        "load engine: native (C, epoll), python (asyncio/uvloop), or locust (Locust's master and workers, "
        "echo/file/http, for load from several hosts), or wrk (Debian's wrk, http, closed loop, GET, no pipelining); "
        "auto = native where it builds",
        choices=ENGINES,
    ),
    Parameter(
        "loop",
        "generator",
        "choice",
        "auto",
        "python engine: event loop of each worker; auto = uvloop when installed",
        choices=GENERATOR_LOOPS,
    ),
    # 5%: enough to catch a corrupting server within a few hundred requests,
    # cheap enough that hashing large files never makes the generator the bottleneck.
    Parameter(
        "checksum_sample",
        "generator",
        "fraction",
        0.05,
        (
            "fraction of file and http replies whose checksum is verified (the size is always checked; "
            "the native engine has the kernel drop the other file-service bodies uncopied)"
        ),
    ),
)


def mix_counts(clients: int, shares: dict[str, float]) -> dict[str, int]:
    """Clients of each kind of :data:`MIX_KINDS` for ``clients`` connections and the slow ``shares``.

    Each slow kind gets its share of ``clients`` rounded to the nearest
    whole client (largest remainders first, so 3 kinds of 1/3 of 10 give
    4, 3, 3 and never 11); ``fast`` gets the rest. Shares summing above 1 are
    refused by the scenario and by :func:`bench.loadgen.spec.validate`.
    """
    exact = {kind: shares.get(kind, 0.0) * clients for kind in SLOW_KINDS}
    counts = {kind: int(value) for kind, value in exact.items()}
    wanted = min(clients, int(sum(exact.values()) + 0.5))
    for kind in sorted(SLOW_KINDS, key=lambda k: counts[k] - exact[k]):
        if sum(counts.values()) >= wanted:
            break
        counts[kind] += 1
    return {"fast": clients - sum(counts.values()), **counts}


def fast_clients(row: Any) -> int | None:
    """The fast clients of a runs.csv row or aggregated point (``clients`` less load.mix's slow ones), or None.

    A share missing from the row (a folder older than load.mix) or empty counts as 0.
    """
    clients = row.get("clients")
    if clients is None or clients != clients:  # NaN: not known
        return None
    shares = {}
    for kind in SLOW_KINDS:
        share = row.get(kind)
        shares[kind] = float(share) if share is not None and share == share else 0.0
    return mix_counts(int(clients), shares)["fast"]


def by_name() -> dict[str, Parameter]:
    """:data:`PARAMETERS` by name (read each call, so an extended table is seen everywhere)."""
    return {p.name: p for p in PARAMETERS}


def in_section(section: str) -> list[Parameter]:
    """The parameters of one scenario section, in table order."""
    return [p for p in PARAMETERS if p.section == section]


def column_names() -> list[str]:
    """The runs.csv parameter columns, in table order."""
    return [p.name for p in PARAMETERS if p.column]


def load_spec_parameters() -> list[Parameter]:
    """The parameters the generator's LoadSpec takes (load and generator sections)."""
    return [p for p in PARAMETERS if p.section in ("load", "generator") and p.spec_name]


def axis_text() -> dict[str, tuple[str, str]]:
    """(title phrase, x label) of each parameter a figure may sweep."""
    return {p.name: p.axis for p in PARAMETERS if p.axis}
