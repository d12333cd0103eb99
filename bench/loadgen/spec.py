"""What a load run is asked to do (:class:`LoadSpec`) and what it found (:class:`LoadResult`).

A :class:`LoadSpec` is plain data: it crosses a process boundary as JSON
(the parent hands one to every worker on stdin), so every field is a JSON
type or a list of :class:`FileTarget`. :func:`validate` checks a spec once,
up front, and raises :class:`ValueError` with a message that names the field,
the bad value and what would be accepted; nothing downstream re-checks.

:class:`LoadResult` is what :func:`bench.loadgen.run_load` returns: one row
of ``runs.csv`` columns (see :data:`bench.results.RUN_COLUMNS`), the merged
HdrHistograms, a timeline, and the side facts the runner needs (the wall-clock
window, per-worker CPU, which event loop ran, warnings). It round-trips
through JSON with histograms in HdrHistogram's standard base64 encoding.

Loopback only
-------------
The generator can saturate a link, so by default it refuses any target that
is not loopback (127.0.0.0/8, ::1, or a name resolving only to those).
:func:`resolve_target` enforces this unless ``allow_remote`` is set.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from bench import histograms
from bench.parameters import ENGINES, MIX_SERVICES, MODES, SLOW_KINDS, load_spec_parameters, mix_counts  # noqa: F401
from bench.parameters import GENERATOR_LOOPS as LOOPS  # noqa: F401  (re-exported)
from bench.results import lower_bound_column  # noqa: F401 - the row's flag columns, named by results
from bench.vocabulary import ERROR_COLUMNS, MIX_COLUMNS

#: Services the load generator can drive (and so scenarios may name); the servers offer more.
SERVICES = ("echo", "file", "http", "timeauth")
#: Services the native (C) engine drives (bench/loadgen/c/loadgen.c).
NATIVE_SERVICES = ("echo", "file", "http", "timeauth")
#: Services only the python engine drives.
PYTHON_ONLY_SERVICES = tuple(service for service in SERVICES if service not in NATIVE_SERVICES)
#: Services the locust engine's users speak (bench/loadgen/locust_users.py).
LOCUST_SERVICES = ("echo", "file", "http")
#: The services that fetch files from the server's root (the spec's ``files``).
FILE_SERVICES = ("file", "http")
#: The file protocol caps a request line at 4096 bytes, newline included.
MAX_REQUEST_LINE = 4096
#: Columns of the ``row`` dict, in runs.csv order (a subset of RUN_COLUMNS).
ROW_COLUMNS = (
    "duration_s",
    "requests",
    "errors",
    "req_per_s",
    "mb_per_s",
    "lat_p50_us",
    "lat_p90_us",
    "lat_p99_us",
    "lat_p999_us",
    "lat_max_us",
    "lat_mean_us",
    "lat_censored",
    "lat_p50_is_lower_bound",
    "lat_p90_is_lower_bound",
    "lat_p99_is_lower_bound",
    "lat_p999_is_lower_bound",
    "lat_max_is_lower_bound",
    "ttfb_p50_us",
    "ttfb_p99_us",
    "lat_uncorrected_p99_us",
    "late_starts",
    "conn_ok",
    "conn_refused",
    "conn_reset",
    "conn_timeout",
    "conn_emfile",
    "conn_eaddrnotavail",
    "conn_other",
    "conn_pending",
    "connect_p50_us",
    "connect_p99_us",
    "connect_max_us",
    *ERROR_COLUMNS,
    "http_2xx",
    "req_pending",
    "req_pending_oldest_s",
    "clients_served",
    *MIX_COLUMNS,
    "gen_workers",
    "gen_source_addrs",
    "gen_cpu_pct_max",
    "gen_runq_wait_pct_max",
    "gen_busy_pct_max",
    "gen_engine",
)


@dataclass
class FileTarget:
    """One file the file service is asked for: its path relative to the server root.

    ``sha256`` is the hex digest of the content; an empty string means
    "unknown": then only the size of each reply is checked.
    """

    name: str
    size: int
    sha256: str


#: The parameters' defaults and help (:mod:`bench.parameters`) by LoadSpec field name.
_PARAMETER = {p.spec_name: p for p in load_spec_parameters()}


def _default(name: str) -> Any:
    return _PARAMETER[name].default


@dataclass
class LoadSpec:
    """One load run. See the module docstring of :mod:`bench.loadgen` for the semantics.

    The fields that are parameters (clients, message_bytes, ... checksum_sample)
    take their defaults, meanings and bounds from :mod:`bench.parameters`;
    :func:`validate` checks them there.
    """

    service: str  # "echo" | "file" | "http" | "timeauth"
    host: str
    port: int
    clients: int
    duration_s: float
    warmup_s: float = 0.0
    message_bytes: int = _default("message_bytes")  # echo
    files: list[FileTarget] = field(default_factory=list)  # file, http: the files (paths) requested
    path_order: str = _default("path_order")  # http: how each client goes through ``files``
    login: str = ""  # timeauth: NAME:PASSWORD the clients log in with (the password: all after the first colon)
    method: str = _default("method")  # http: GET or HEAD
    pipeline: int = _default("pipeline")  # http, closed loop: requests sent before reading their replies
    requests_per_connection: int = _default("requests_per_connection")
    mode: str = _default("mode")
    rate: float | None = _default("rate")  # open loop: total requests/s across all clients
    connect_timeout_s: float = _default("connect_timeout_s")
    request_timeout_s: float = _default("request_timeout_s")
    workers: int | None = _default("workers")  # None: one per CPU in `cpus` (or per online CPU)
    cpus: set[int] | None = None  # pin workers to these CPUs (os.sched_setaffinity)
    checksum_sample: float = _default("checksum_sample")
    loop: str = _default("loop")
    engine: str = _default("engine")
    # load.mix: shares of ``clients`` that are slow clients, and how those behave (see bench.loadgen.clients)
    slow_reader: float = _default("slow_reader")
    slowloris: float = _default("slowloris")
    idle: float = _default("idle")
    slow_read_rate: int = _default("slow_read_rate")
    slow_reply_bytes: int = _default("slow_reply_bytes")  # echo
    slowloris_interval_s: float = _default("slowloris_interval_s")
    timeline_interval_s: float = 0.5
    allow_remote: bool = False

    def mix(self) -> dict[str, int]:
        """Clients of each kind (``fast`` first, then :data:`~bench.parameters.SLOW_KINDS`)."""
        return mix_counts(self.clients, {kind: getattr(self, kind) for kind in SLOW_KINDS})

    def has_slow(self) -> bool:
        """Whether any client is of a slow kind."""
        return any(n for kind, n in self.mix().items() if kind != "fast")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``cpus`` as a sorted list)."""
        d = dataclasses.asdict(self)
        d["cpus"] = sorted(self.cpus) if self.cpus is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadSpec:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["files"] = [FileTarget(**f) for f in d.get("files", [])]
        if d.get("cpus") is not None:
            d["cpus"] = set(d["cpus"])
        return cls(**d)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def validate(spec: LoadSpec) -> None:
    """Check every field of ``spec``; raise :class:`ValueError` naming the first bad one."""
    _need(spec.service in SERVICES, f"service must be one of {', '.join(SERVICES)}, got {spec.service!r}")
    _need(isinstance(spec.port, int) and 1 <= spec.port <= 65535, f"port must be 1..65535, got {spec.port!r}")
    _need(spec.duration_s > 0, f"duration must be > 0 seconds, got {spec.duration_s!r}")
    _need(spec.warmup_s >= 0, f"warmup must be >= 0 seconds, got {spec.warmup_s!r}")
    _need(spec.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {spec.mode!r}")
    where = {"service": spec.service, "mode": spec.mode}
    for name, parameter in _PARAMETER.items():
        if parameter.applies_at(where):
            problem = parameter.problem(getattr(spec, name), required=bool(parameter.required))
            _need(problem is None, str(problem))
    _need(
        spec.service != "http" or spec.pipeline == 1 or spec.mode == "closed",
        f"pipeline {spec.pipeline} needs the closed loop (an open loop starts each request on its own schedule); "
        "use pipeline 1 for open loop, or mode closed",
    )
    shares = sum(getattr(spec, kind) for kind in SLOW_KINDS)
    _need(
        shares <= 1 + 1e-9,  # why 1e-9: shares such as 0.7 + 0.2 + 0.1 add up to a hair above 1 in floats
        f"the slow clients' shares ({', '.join(f'{k} {getattr(spec, k):g}' for k in SLOW_KINDS)}) add up to "
        f"{shares:g}; together at most 1 (all of the clients)",
    )
    if spec.has_slow():
        _need(
            spec.service in MIX_SERVICES,
            f"slow clients ({', '.join(SLOW_KINDS)}) speak the {' and '.join(MIX_SERVICES)} services only, "
            f"not {spec.service}",
        )
    _need(spec.timeline_interval_s > 0, f"timeline interval must be > 0 seconds, got {spec.timeline_interval_s!r}")
    if spec.cpus is not None:
        allowed = os.sched_getaffinity(0)
        _need(len(spec.cpus) > 0, "cpus must name at least one CPU")
        bad = sorted(set(spec.cpus) - allowed)
        _need(not bad, f"cpus {bad} are not available to this process; available: {sorted(allowed)}")
    if spec.service == "file":
        _validate_files(spec.files)
    elif spec.service == "http":
        _validate_paths(spec.files)
    elif spec.service == "timeauth":
        _validate_login(spec.login)


def _validate_login(login: str) -> None:
    name, colon, password = login.partition(":")
    _need(
        bool(colon) and bool(name),
        f"the timeauth service needs a login NAME:PASSWORD (--login, LoadSpec.login), got {login!r}",
    )
    _need(
        not any(c in login for c in "\n\r\0"),
        "the timeauth login must not contain a newline, carriage return or NUL (the protocol is one line each)",
    )
    _need(
        max(len(name.encode("utf-8")), len(password.encode("utf-8"))) < MAX_REQUEST_LINE,
        f"the timeauth name and password must each be under {MAX_REQUEST_LINE} bytes",
    )


def _validate_files(files: list[FileTarget]) -> None:
    _need(
        len(files) > 0,
        "the file service needs at least one file target (--file NAME --file-size N, or --files-root DIR)",
    )
    for f in files:
        line = f.name.encode("utf-8") + b"\n"
        _need(
            bool(f.name) and "\n" not in f.name and "\r" not in f.name,
            f"file name {f.name!r} must be non-empty and contain no newline",
        )
        _need(
            len(line) <= MAX_REQUEST_LINE,
            f"file name {f.name[:40]!r}... is {len(line)} bytes with its newline; the protocol allows {MAX_REQUEST_LINE}",
        )
        _need(isinstance(f.size, int) and f.size >= 0, f"file {f.name!r}: size must be an integer >= 0, got {f.size!r}")
        _need(
            f.sha256 == "" or (len(f.sha256) == 64 and all(c in "0123456789abcdef" for c in f.sha256.lower())),
            f"file {f.name!r}: sha256 must be 64 hex digits (or empty for unknown), got {f.sha256!r}",
        )


def _validate_paths(files: list[FileTarget]) -> None:
    _need(len(files) > 0, "the http service needs at least one path (--path NAME --file-size N, or --files-root DIR)")
    for f in files:
        _need(
            bool(f.name) and all(c.isprintable() and not c.isspace() for c in f.name),
            f"path {f.name!r} must be non-empty, without spaces or control characters",
        )
        _need(
            len(f.name.encode("utf-8")) <= MAX_REQUEST_LINE,
            f"path {f.name[:40]!r}... is longer than {MAX_REQUEST_LINE} bytes",
        )
        _need(isinstance(f.size, int) and f.size >= 0, f"path {f.name!r}: size must be an integer >= 0, got {f.size!r}")


def request_target(name: str) -> bytes:
    """The HTTP request target for a file named relative to the root: ``a/b.txt`` -> ``/a/b.txt``."""
    return b"/" + urllib.parse.quote(name.lstrip("/"), safe="/~!$&'()*+,;=:@").encode("ascii")


def resolve_target(host: str, port: int, allow_remote: bool) -> str:
    """Return the numeric address to connect to, refusing non-loopback targets.

    A name is resolved once here (workers never resolve). IPv4 is preferred
    when a name has both families, because servers here bind 127.0.0.1 by
    default while ``localhost`` often resolves to ``::1`` first.

    Error handling: an unresolvable name, or a non-loopback address without
    ``allow_remote``, raises :class:`ValueError` with the fix in the message.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    addrs = [str(info[4][0]) for info in infos]  # str: an AF_INET/AF_INET6 address
    v4 = [a for a in addrs if ":" not in a]
    chosen = (v4 or addrs)[0]
    if not allow_remote:
        remote = [a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
        if remote:
            raise ValueError(
                f"refusing to send load to {host} ({', '.join(sorted(set(remote)))}): not a loopback address "
                f"(127.0.0.0/8, ::1, localhost). Load tests of other machines must be explicit: "
                f"pass --allow-remote (LoadSpec.allow_remote=True)."
            )
    return chosen


#: Source addresses the generator spreads its connections over when the
#: target is on 127.0.0.0/8 (see :func:`source_addresses`). Why 16: one source
#: address gives the kernel 28,232 ephemeral ports (the default
#: ip_local_port_range 32768-60999) per server address:port, and a closed
#: port sits in TIME-WAIT about a second before loopback reuses it, which
#: capped connection churn at ~14k/s; 16 x 28k ports is ~450k connections/s,
#: ten times what a 2-4 core machine reaches (c-reference made 32k/s with the
#: range widened 2.3x), so the port space is never the limit, while 16
#: addresses keep the round robin and the server's view of its peers small.
LOOPBACK_SOURCE_ADDRS = 16

#: The engines that take turns over those addresses. The python engine does
#: not: binding first means connecting the socket itself (``sock_connect``,
#: then ``create_connection(sock=)``) instead of uvloop's connect in C, which
#: cost it 37-46% of its connections/s (benchmarks/connection_rate.py: 8.0k
#: from one address against 5.4k from 16 at 10 clients, and 0.54x at 50),
#: more than the port space ever cost it: its own ceiling is below one
#: address's ~14k/s. The native engine gained 1.53x (13.8k -> 21.1k/s).
SPREADING_ENGINES = frozenset({"native"})


def source_addresses(ip: str, engine: str = "native") -> list[str]:
    """Local addresses the clients bind before connecting to ``ip``; empty: let the kernel choose.

    The kernel picks a connection's source port among ``ip_local_port_range``
    for each (source address, destination address:port): from one source
    address that is ~28k ports, and with the client closing first every port
    waits in TIME-WAIT before it can be used again, so one address caps
    new connections/s far below what a server can accept. Real servers see
    clients from many addresses. Every 127.0.0.0/8 address is local on
    Linux's ``lo`` (the kernel's local route for 127.0.0.0/8, also in a run's
    own namespace once ``lo`` is up), so for a loopback IPv4 target the
    clients take turns over 127.0.0.1 .. 127.0.0.K (K =
    :data:`LOOPBACK_SOURCE_ADDRS`), each socket bound with
    ``IP_BIND_ADDRESS_NO_PORT`` so the port is still chosen at connect time
    per 4-tuple rather than reserved per address at bind time.

    Any other target keeps one source address, the kernel's choice: ``::1``
    is the only IPv6 loopback address, a server on a namespace's veth
    address (namespaces mode) or a remote machine (``allow_remote``) is
    reached through one interface address, and binding another would change
    the route the run measures. So does every ``engine`` not in
    :data:`SPREADING_ENGINES`.
    """
    addr = ipaddress.ip_address(ip.split("%")[0])
    if addr.version != 4 or not addr.is_loopback or engine not in SPREADING_ENGINES:
        return []
    return [f"127.0.0.{i}" for i in range(1, LOOPBACK_SOURCE_ADDRS + 1)]


# ---------------------------------------------------------------- results


@dataclass
class LoadResult:
    """What a load run measured.

    ``row``
        exactly :data:`ROW_COLUMNS` (runs.csv names and units; None where not
        applicable, e.g. percentiles with nothing recorded, ``late_starts`` and
        ``lat_uncorrected_p99_us`` in closed loop). ``duration_s`` is the
        window every worker counted in: completions are time-stamped and only
        those inside it count, so it is exact even if a worker started late
        (which is then warned about).
    ``histograms``
        merged HdrHistograms in microseconds: ``latency`` (from the intended
        start in open loop), ``ttfb`` (from the actual send), ``connect``
        (successful connects, whole run) and, open loop only,
        ``latency_uncorrected`` (from the actual send); ``censored``: requests
        that never completed, each at the time it is known to have waited
        (see :mod:`bench.loadgen.recording`).
    ``timeline``
        rows ``{t_s, req_per_s, lat_p99_us}``, one per ``timeline_interval_s``
        from the start of warmup; ``t_s`` is the interval's start in seconds
        since the measured window began (negative in warmup).
    ``window_start`` / ``window_end``
        the measured window in ``time.time()`` seconds, to align server samples.
    ``conn_other_errnos``
        errno (or exception) names behind ``conn_other``.
    ``worker_cpu_pct``, ``worker_runq_wait_pct``, ``loop``, ``warnings``
        each worker's CPU over the window (percent of one core) and time
        spent waiting on a run queue (percent of the window; None where
        ``schedstat`` could not be read), which event loop ran, and what a
        reader must know that the numbers do not say.
    ``parent_cpu_pct``
        CPU of the process that called :func:`~bench.loadgen.run_load` (all
        its threads) over the window, percent of one core.
    ``schedule``
        open loop: the generator's own figures (release wake-ups, mean send
        lag, ...: :func:`bench.loadgen.merge.schedule_figures`); empty in
        closed loop.
    """

    row: dict[str, Any]
    histograms: dict[str, HdrHistogram]
    timeline: list[dict[str, Any]]
    window_start: float
    window_end: float
    conn_other_errnos: dict[str, int] = field(default_factory=dict)
    worker_cpu_pct: list[float] = field(default_factory=list)
    worker_runq_wait_pct: list[float | None] = field(default_factory=list)
    parent_cpu_pct: float | None = None
    loop: str = ""
    schedule: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """Serialise, histograms in HdrHistogram's base64 (V2, compressed) encoding."""
        d = {
            "row": self.row,
            "histograms": {k: histograms.encode(h) for k, h in self.histograms.items()},
            "timeline": self.timeline,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "conn_other_errnos": self.conn_other_errnos,
            "worker_cpu_pct": self.worker_cpu_pct,
            "worker_runq_wait_pct": self.worker_runq_wait_pct,
            "parent_cpu_pct": self.parent_cpu_pct,
            "loop": self.loop,
            "schedule": self.schedule,
            "warnings": self.warnings,
        }
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["histograms"] = {k: histograms.decode(v) for k, v in d["histograms"].items()}
        return cls(**d)
