"""Scenario files: the one typed description of everything ``bench run`` does.

A scenario is a YAML file (see ``scenarios/``) that names the service, the
server models, the server settings, the load, and how long and how often to
measure. It is validated once, here, into a :class:`Scenario`; the runner,
the load generator and the reports read their settings from that object and
nowhere else. Command-line flags do not add options of their own: ``--set
field.path=value`` overrides a field of the file before validation, so a flag
can never mean something the file could not say.

Sweeps
------
Every parameter that has a column in ``runs.csv`` (``bench/results.py``) may
be a list instead of a single value; a list sweeps that parameter, and several
lists sweep their cartesian product. The sweepable fields are ``service``,
``server.{backlog, max_children, threads, workers, sendfile, cpu_work_us}`` and
``load.{clients, message_bytes, file_bytes, requests_per_connection, mode,
rate}``. Timeouts, durations and the like are deliberately single values: a
run's settings must be recoverable from its row, and they have no column.

:meth:`Scenario.points` expands the product in a fixed order (``service``
first, then :data:`bench.results.PARAMETER_COLUMNS`; the first varies
slowest). A parameter that does not apply to a point is blank there and does
not multiply the runs: ``file_bytes`` for echo, ``message_bytes`` for file,
``sendfile`` for echo, ``rate`` for closed loop. So ``service: [echo, file]``
with ``file_bytes: [1MiB, 256MiB]`` gives three points, not four. A parameter
counts as *swept* when it takes more than one value across the points; a
list that could never change anything (``sendfile: [true, false]`` in an
echo-only scenario) is rejected rather than silently repeated.

Defaults
--------
The ``server:`` section reuses :class:`servers.config.ServerOptions`' names,
defaults and help text, so the stdlib defaults (backlog 5, max_children 40)
are what a scenario gets unless it says otherwise, and there is exactly one
place to change them. :meth:`Scenario.to_yaml` writes the scenario with every
default filled in; the result loads again to an equal object.

Error handling
--------------
Every problem a user can cause (missing file, YAML syntax, unknown keys, wrong
types, bad units, unknown models, inconsistent settings, malformed
``--set``, settings this machine cannot run) raises :class:`ScenarioError`,
whose message lists *all* problems found (the first :data:`MAX_SHOWN`, and
how many more), each with the file and line (from the YAML node marks) or the
``--set`` it came from, the field path (``load.clients[2]``), what is wrong
and what is allowed. No traceback is meant to reach the user.

Loading is bounded in time and memory whatever the file holds: at most
:data:`MAX_FILE_BYTES` are read; the YAML is first read as a flat stream of
parser events that refuses anchors and aliases (a few lines can name a
billion values), nesting deeper than :data:`MAX_DEPTH`, more than
:data:`MAX_NODES` values and numbers longer than :data:`MAX_NUMBER_TEXT`
characters, before anything is built; sizes and durations are parsed with a
bounded grammar (:mod:`bench.units`); sweep checks are linear.

Machine limits are checked here too (open files against the hard
RLIMIT_NOFILE, an echo message against the memory, the served files against
the free disk), so ``bench validate`` saying ok means ``bench run`` starts.
"""

import argparse
import contextlib
import dataclasses
import difflib
import importlib.util
import itertools
import os
import re
import resource
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from bench.loadgen.spec import ENGINES, SERVICES
from bench.results import PARAMETER_COLUMNS
from bench.thresholds import Threshold, from_entry, parse_threshold
from bench.units import format_bitrate, format_duration, format_size, parse_bitrate, parse_duration, parse_size, plural
from servers.config import LOOPS, POOL_OPTIONS, ServerOptions
from servers.registry import MODELS, unavailable


def _offers(model: str, service: str) -> bool:
    """Whether ``model`` offers ``service`` (the registry's fact).

    A model that lacks one of a scenario's services (the C ceiling serves echo
    only) runs the points of the services it has and skips the others.
    """
    known = MODELS.get(model)
    return known is None or known.offers(service)


#: Order in which sweep axes are expanded (first varies slowest) and in which
#: they appear in ``Point.params``.
SWEEP_ORDER: tuple[str, ...] = ("service", *PARAMETER_COLUMNS)

#: Where each sweep axis lives in the file.
SWEEP_PATHS: dict[str, tuple[str, ...]] = {
    "service": ("service",),
    "backlog": ("server", "backlog"),
    "max_children": ("server", "max_children"),
    "threads": ("server", "threads"),
    "workers": ("server", "workers"),
    "sendfile": ("server", "sendfile"),
    "cpu_work_us": ("server", "cpu_work_us"),
    "clients": ("load", "clients"),
    "message_bytes": ("load", "message_bytes"),
    "file_bytes": ("load", "file_bytes"),
    "requests_per_connection": ("load", "requests_per_connection"),
    "mode": ("load", "mode"),
    "rate": ("load", "rate"),
}

#: Refuse sweeps larger than this: at one second per run it is already more
#: than a day of measuring, so it is almost certainly a typo in a list.
MAX_POINTS = 10_000

#: Largest scenario file (and ``--set`` value). The scenarios in scenarios/
#: are a few KiB; a sweep of MAX_POINTS values still takes under 100 KiB.
MAX_FILE_BYTES = 1 << 20

#: Deepest nesting of sections and lists: a scenario needs 3 (``load:``, a
#: sweep list, its item); 16 leaves room for mistakes worth a message.
MAX_DEPTH = 16

#: Most YAML nodes (keys, values, list items) in a file: one list of
#: MAX_POINTS values plus every field, with room to spare. Parsing stops
#: there, so a megabyte of keys costs milliseconds, not minutes.
MAX_NODES = 2 * MAX_POINTS + 1000

#: Longest number written as a YAML integer or float: 2**63 has 19 digits;
#: Python refuses int() of more than 4300 digits with a traceback.
MAX_NUMBER_TEXT = 40

#: Validation errors turned into messages (each one costs a close-match search
#: for unknown keys); any more are only counted.
MAX_DESCRIBED = 200

#: Problems listed in one message; the rest are counted. A file with ten
#: thousand unknown keys needs one line saying so, not ten thousand.
MAX_SHOWN = 20

#: Seconds each run costs beyond warmup + duration: server start and its
#: ready line (~0.3 s), the idle check, SIGTERM and reaping, writing results.
#: Only used for the "about N s" estimate.
RUN_OVERHEAD_S = 1.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ScenarioError(Exception):
    """A scenario that cannot be used; ``str()`` is the complete user-facing message.

    ``issues`` holds the individual problems (:class:`Issue`), in file order.
    """

    def __init__(self, source: str, issues: "list[Issue]", omitted: int = 0) -> None:
        self.source = source
        self.issues = issues
        #: problems counted but not described (past MAX_DESCRIBED)
        self.omitted = omitted
        super().__init__(self._render())

    def _render(self) -> str:
        total = len(self.issues) + self.omitted
        if total == 1:
            return str(self.issues[0])
        lines = [f"{self.source}: {total} problems:"]
        lines += [f"  {issue}" for issue in self.issues[:MAX_SHOWN]]
        if total > MAX_SHOWN:
            lines.append(f"  ... and {total - min(MAX_SHOWN, len(self.issues))} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class Issue:
    """One problem: where it is (file and line, or the ``--set`` it came from), the field, what is wrong."""

    where: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        place = f"{self.where}:{self.line}" if self.line else self.where
        return f"{place}: {self.path}: {self.message}" if self.path else f"{place}: {self.message}"


# --------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------

# Tags of the two shapes a sweepable field takes. They show up in pydantic's
# error locations and are stripped before the path is shown to the user.
_ONE, _LIST = "<one>", "<list>"


def _shape(value: Any) -> str:
    return _LIST if isinstance(value, (list, tuple)) else _ONE


def _distinct(values: list) -> list:
    """Reject a sweep list naming a value twice (it would repeat identical runs). O(n): a set of seen values."""
    seen: set = set()
    for value in values:
        # type() too: True == 1 in Python but they are different settings.
        key = (type(value), value)
        if key in seen:
            raise ValueError(f"{_show(value)} is listed twice; each value of a sweep must appear once")
        seen.add(key)
    return values


def sweep(item: Any) -> Any:
    """The type "one ``item`` or a non-empty list of distinct ``item``s" (a sweep).

    A callable discriminator picks the branch by shape, so an error is
    reported against the branch the user meant (``load.clients[2]``), not
    against both.
    """
    return Annotated[
        Union[
            Annotated[item, Tag(_ONE)],
            Annotated[list[item], Field(min_length=1), AfterValidator(_distinct), Tag(_LIST)],
        ],
        Discriminator(_shape),
    ]


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


Count = Annotated[StrictInt, Field(ge=1)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, when_used="json")]
PositiveSize = Annotated[Size, Field(ge=1)]
Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, when_used="json")]
PositiveDuration = Annotated[Duration, Field(gt=0)]
#: Highest open-loop rate: 50x the 200k round trips/s a C client reaches on
#: loopback here, so only a typo (or .inf, which a float would accept) is refused.
MAX_RATE = 10_000_000
Rate = Annotated[StrictFloat, Field(gt=0, le=MAX_RATE, allow_inf_nan=False),
                 PlainSerializer(_plain_number, when_used="json")]
Service = Literal[SERVICES]
Mode = Literal["closed", "open"]


def _known_model(name: str) -> str:
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; valid models: {', '.join(MODELS)}")
    reason = unavailable(name)
    if reason is not None:
        raise ValueError(f"{reason}; or remove {name} from models")
    return name


def _folder_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} cannot be used as a folder name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. small-backlog)"
        )
    return name


ModelName = Annotated[str, AfterValidator(_known_model)]

_SERVER_DEFAULTS = ServerOptions()
_SERVER_HELP = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(ServerOptions)}


def _pool_size(name: str) -> Any:
    """The type of ``server.threads`` / ``server.workers``: a count of at least 1, for the models that have the pool."""
    takers = ", ".join(POOL_OPTIONS[name])

    def check(value: int) -> int:
        if value < 1:
            raise ValueError(f"{value} {name}: a pool needs at least 1 (server.{name} sizes the pool of {takers} "
                             "only); leave it out for each model's default")
        return value

    return Annotated[StrictInt, AfterValidator(check)]


def _pool_field(name: str, default_text: str) -> Any:
    takers = " and ".join(POOL_OPTIONS[name])
    return Field(None, description=f"{takers} only: {name}, the most connections each serves at once (see "
                                   f"python -m servers --help); left out: {default_text}")


def _server_field(name: str) -> Any:
    """A field with ServerOptions' default and help text: one source for both."""
    return Field(default=getattr(_SERVER_DEFAULTS, name), description=_SERVER_HELP[name])


class _Section(BaseModel):
    # frozen: the points are computed once at validation; a later change
    # to a field would silently disagree with them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSpec(_Section):
    """``server:``: the settings given to every server model (see :class:`ServerOptions`)."""

    backlog: sweep(NonNegInt) = _server_field("backlog")
    max_children: sweep(Count) = _server_field("max_children")
    threads: Optional[sweep(_pool_size("threads"))] = _pool_field("threads", "2 x the CPUs the server runs on")
    workers: Optional[sweep(_pool_size("workers"))] = _pool_field("workers", "one per CPU the server runs on")
    sendfile: sweep(StrictBool) = _server_field("sendfile")
    cpu_work_us: sweep(NonNegInt) = _server_field("cpu_work_us")
    cpu_work_iterations: NonNegInt = _server_field("cpu_work_iterations")
    loop: Literal[LOOPS] = _server_field("loop")
    # Not swept: they bound hostile clients, which the load generator is not;
    # 0 turns one off to show the stdlib's unbounded waiting.
    idle_timeout: Duration = _server_field("idle_timeout")
    request_timeout: Duration = _server_field("request_timeout")
    send_timeout: Duration = _server_field("send_timeout")


class LoadSpec(_Section):
    """``load:``: what the load generator does."""

    # 10, not 1: at one connection the machine's CPU placement is measured,
    # not the server (measured here: models differ from ~10 connections on).
    clients: sweep(Count) = Field(10, description="concurrent client connections")
    message_bytes: Optional[sweep(PositiveSize)] = Field(None, description="echo: size of each message (required for echo)")
    file_bytes: Optional[sweep(Size)] = Field(None, description="file: size of the file requested (required for file)")
    requests_per_connection: sweep(NonNegInt) = Field(
        0, description="0 = keep each connection for the whole run; N = reconnect after every N requests"
    )
    mode: sweep(Mode) = Field("closed", description="closed: send, wait for the reply, repeat; open: start requests at a fixed rate")
    rate: Optional[sweep(Rate)] = Field(None, description="open loop only: requests per second in total (required for open)")
    # 3 s: long enough to ride out the kernel's first SYN retry (1 s), short
    # enough that a server that never accepts shows up within a short run.
    connect_timeout: PositiveDuration = Field(3.0, description="give up a connection attempt after this long")
    request_timeout: PositiveDuration = Field(10.0, description="give up waiting for a reply after this long")


class GeneratorSpec(_Section):
    """``generator:``: the load generator's own process layout."""

    workers: Optional[Count] = Field(None, description="worker processes; null = chosen from the CPUs and the placement")
    engine: Literal[ENGINES] = Field(
        "auto", description="load engine: native (C, epoll) or python (asyncio/uvloop); auto = native where it builds"
    )
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="python engine: event loop of each worker; auto = uvloop when installed"
    )
    # 5%: enough to catch a corrupting server within a few hundred requests,
    # cheap enough that hashing large files never makes the generator the bottleneck.
    checksum_sample: Annotated[StrictFloat, Field(ge=0, le=1)] = Field(
        0.05, description="fraction of file replies whose checksum is verified (the size is always checked)"
    )


class MonitorSpec(_Section):
    """``monitor:``: sampling of the server's process tree and the machine."""

    # 10 ms floor: reading PSS of a 40-process tree takes several ms.
    interval: Annotated[Duration, Field(ge=0.01)] = Field(0.1, description="sampling interval of the server process tree")
    idle_threshold_pct: Annotated[StrictFloat, Field(gt=0, le=100)] = Field(
        5.0, description="before each run, wait until the machine is less busy than this (percent)"
    )
    idle_wait: Duration = Field(20.0, description="wait at most this long for the machine to be idle, then run anyway and record it")

    @property
    def interval_s(self) -> float:
        return float(self.interval)

    @property
    def idle_wait_s(self) -> float:
        return float(self.idle_wait)


BitRate = Annotated[int, BeforeValidator(parse_bitrate), PlainSerializer(format_bitrate, when_used="json")]


def _loss_refused(value: Any) -> Any:
    if value not in (None, 0, "0", "0%"):
        raise ValueError("loss is not supported: the delay stage forwards whole segmentation-offload units of up "
                         "to 64 KiB, so dropping one would lose dozens of wire packets at once, not the rate you "
                         "configure; remove loss (rate, rtt and jitter are supported)")
    return None


class NetworkSpec(_Section):
    """``network:``: where server and load run, and the link between them (see :mod:`bench.network`)."""

    hosts: Literal["loopback", "namespaces"] = Field(
        "loopback", description="loopback: server and load share one loopback; namespaces: a server host and a "
                                "client host (network namespaces, root only) joined by a link with the conditions below")
    rtt: Duration = Field(0.0, description="namespaces: round trip added between the hosts, half each way (delay stage)")
    jitter: Duration = Field(0.0, description="namespaces: extra delay per packet, uniform in 0..jitter, order kept")
    rate: Optional[BitRate] = Field(None, description="namespaces: bit rate of each direction (tbf), e.g. 100Mbit")
    loss: Annotated[Any, AfterValidator(_loss_refused)] = Field(None, description="not supported (see the error)")


def _threshold_text(text: str) -> str:
    parse_threshold(text)  # raises ThresholdError (a ValueError) naming what is wrong
    return text


ThresholdText = Annotated[str, AfterValidator(_threshold_text)]


class ThresholdSpec(_Section):
    """A ``thresholds:`` item for one model: ``{model: threading, check: "p99 < 5ms"}``."""

    model: ModelName = Field(description="the server model the check applies to (one of models)")
    check: ThresholdText = Field(description="METRIC OPERATOR VALUE, e.g. p99 < 5ms (see bench/thresholds.py)")


# Tags of the two shapes of a thresholds: item, stripped from error paths like _ONE and _LIST.
_TEXT, _SPEC = "<text>", "<spec>"


def _entry_shape(value: Any) -> str:
    return _SPEC if isinstance(value, (dict, ThresholdSpec)) else _TEXT


ThresholdEntry = Annotated[
    Union[Annotated[ThresholdText, Tag(_TEXT)], Annotated[ThresholdSpec, Tag(_SPEC)]],
    Discriminator(_entry_shape),
]


@dataclass(frozen=True)
class LoadPoint:
    """The load of one sweep point, every value concrete. Sizes not used by the service are ``None``."""

    clients: int
    message_bytes: int | None
    file_bytes: int | None
    requests_per_connection: int
    mode: str
    rate: float | None
    connect_timeout_s: float
    request_timeout_s: float


@dataclass(frozen=True, eq=True)
class Point:
    """One point of the sweep: run every model in ``models`` ``repetitions`` times with these settings.

    ``params`` holds only the swept parameters (``runs.csv`` column names), in
    :data:`SWEEP_ORDER`; ``server`` lacks host, port and root, which the runner
    fills with :func:`dataclasses.replace`.
    """

    index: int
    service: str
    models: tuple[str, ...]
    params: dict[str, object]
    server: ServerOptions
    load: LoadPoint

    def columns(self) -> dict[str, object]:
        """Every parameter column of ``runs.csv`` (``service`` and PARAMETER_COLUMNS), swept or not.

        A value that does not apply to this point is ``None`` (an empty cell):
        ``sendfile`` for echo, ``rate`` for closed loop, the other service's size.
        """
        values: dict[str, object] = {
            "clients": self.load.clients,
            "message_bytes": self.load.message_bytes,
            "file_bytes": self.load.file_bytes,
            "backlog": self.server.backlog,
            "cpu_work_us": self.server.cpu_work_us,
            "max_children": self.server.max_children,
            "threads": self.server.threads or None,  # None: the model's default
            "workers": self.server.workers or None,
            "requests_per_connection": self.load.requests_per_connection,
            "rate": self.load.rate,
            "sendfile": self.server.sendfile if self.service == "file" else None,
            "mode": self.load.mode,
        }
        return {"service": self.service, **{name: values[name] for name in PARAMETER_COLUMNS}}

    def label(self) -> str:
        """Short text for progress lines: ``"clients=100 backlog=5"``, or ``"-"`` without a sweep."""
        shown = [f"{k}={_show_value(k, v)}" for k, v in self.params.items() if v is not None]
        return " ".join(shown) or "-"


def _show_value(name: str, value: object) -> object:
    if value is not None and name.endswith("_bytes"):
        return format_size(value)
    return value


# --------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------

#: Key of the validation context under which cross-field problems are
#: collected (with their paths) instead of raised one at a time.
_SINK = "scenario_issues"


class Scenario(_Section):
    """A validated scenario. Build it with :func:`load_scenario` to get file/line error messages."""

    name: Annotated[str, AfterValidator(_folder_name)] = Field(description="used in the results folder name")
    description: str = Field("", description="teaching text: what to look for, shown in the report")
    service: sweep(Service) = Field(description="echo | file, or a list to run both")
    models: Annotated[list[ModelName], Field(min_length=1), AfterValidator(_distinct)] = Field(
        description="server models to run, in order"
    )
    server: ServerSpec = Field(default_factory=ServerSpec)
    load: LoadSpec = Field(default_factory=LoadSpec)
    duration: PositiveDuration = Field(10.0, description="measured window of each run")
    warmup: Duration = Field(2.0, description="load before the measured window, not counted")
    # 3: the least that gives a median and a spread worth printing.
    repetitions: Count = Field(3, description="runs of each model at each point, each with a fresh server")
    placement: Literal["split", "shared", "none"] = Field(
        "split", description="split: server and generator on separate CPUs; shared: the same CPUs; none: unpinned"
    )
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    thresholds: list[ThresholdEntry] = Field(
        default_factory=list,
        description="pass/fail checks of the medians over repetitions, e.g. 'p99 < 5ms', 'errors == 0', or "
                    "{model: threading, check: 'p99 < 5ms'}; bench run exits 99 when one fails")

    _points: list[Point] = PrivateAttr(default_factory=list)
    _swept: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> "Scenario":
        issues = _cross_issues(self)
        if not issues:
            issues = self._expand()
        issues += _machine_issues(self)
        if issues:
            sink = (info.context or {}).get(_SINK)
            if sink is None:  # built directly, not through load_scenario
                raise ValueError("; ".join(f"{_dotted(p)}: {m}" for p, m in issues))
            sink.extend(issues)
        return self

    # -- expansion ---------------------------------------------------------

    def _axes(self) -> dict[str, list]:
        """Every sweep axis as a list of its values (a scalar is a one-value list)."""
        values: dict[str, list] = {}
        for name, path in SWEEP_PATHS.items():
            value: Any = self
            for part in path:
                value = getattr(value, part)
            values[name] = value if isinstance(value, list) else [value]
        return values

    def _expand(self) -> list[tuple[tuple, str]]:
        """Compute the points; return problems that only show once expanded."""
        axes = self._axes()
        total = 1
        for name in SWEEP_ORDER:
            total *= len(axes[name])
        if total > MAX_POINTS:
            return [((), f"the sweep has {total} combinations; at most {MAX_POINTS} are allowed: shorten some lists")]
        points: list[Point] = []
        seen: set[tuple] = set()
        for combo in itertools.product(*(axes[name] for name in SWEEP_ORDER)):
            point = self._point(dict(zip(SWEEP_ORDER, combo)), len(points))
            key = tuple(point.columns().items())
            if key not in seen:  # a parameter that does not apply made a duplicate
                seen.add(key)
                points.append(point)
        columns = [p.columns() for p in points]  # once each: 10,000 points x 11 axes
        swept = [
            name for name in SWEEP_ORDER
            if len({repr(c[name]) for c in columns if c[name] is not None}) > 1
        ]
        issues = [
            (SWEEP_PATHS[name], f"is swept but changes nothing: {_why_inert(name)}")
            for name in SWEEP_ORDER
            if len(axes[name]) > 1 and name not in swept
        ]
        self._points = [dataclasses.replace(p, params={n: c[n] for n in swept}) for p, c in zip(points, columns)]
        self._swept = swept
        return issues

    def _point(self, v: dict[str, Any], index: int) -> Point:
        service, mode = v["service"], v["mode"]
        load = LoadPoint(
            clients=v["clients"],
            message_bytes=v["message_bytes"] if service == "echo" else None,
            file_bytes=v["file_bytes"] if service == "file" else None,
            requests_per_connection=v["requests_per_connection"],
            mode=mode,
            rate=v["rate"] if mode == "open" else None,
            connect_timeout_s=self.load.connect_timeout,
            request_timeout_s=self.load.request_timeout,
        )
        server = ServerOptions(
            backlog=v["backlog"],
            max_children=v["max_children"],
            threads=v["threads"] or 0,
            workers=v["workers"] or 0,
            sendfile=v["sendfile"],
            cpu_work_us=v["cpu_work_us"],
            cpu_work_iterations=self.server.cpu_work_iterations,
            loop=self.server.loop,
            idle_timeout=self.server.idle_timeout,
            request_timeout=self.server.request_timeout,
            send_timeout=self.server.send_timeout,
        )
        models = tuple(m for m in self.models if _offers(m, service))
        return Point(index=index, service=service, models=models, params={}, server=server, load=load)

    # -- typed access for the runner ---------------------------------------

    def points(self) -> list[Point]:
        """The sweep points in a stable order (``service`` slowest, then PARAMETER_COLUMNS order)."""
        return list(self._points)

    @property
    def swept(self) -> list[str]:
        """Names (``runs.csv`` columns) of the parameters that take more than one value."""
        return list(self._swept)

    @property
    def services(self) -> list[str]:
        return self.service if isinstance(self.service, list) else [self.service]

    @property
    def duration_s(self) -> float:
        return float(self.duration)

    @property
    def warmup_s(self) -> float:
        return float(self.warmup)

    def file_sizes(self) -> list[int]:
        """Distinct file sizes the file service needs, smallest first (the runner creates these files)."""
        return sorted({p.load.file_bytes for p in self._points if p.load.file_bytes is not None})

    def run_count(self) -> int:
        """Server runs in total: models at each point x points x repetitions."""
        return sum(len(p.models) for p in self._points) * self.repetitions

    def estimate_s(self) -> float:
        """Rough wall time of the whole scenario, for the user's planning only."""
        return self.run_count() * (self.warmup_s + self.duration_s + RUN_OVERHEAD_S)

    def threshold_checks(self) -> list[Threshold]:
        """The ``thresholds:`` parsed, in file order (a model-specific one carries its model)."""
        return [from_entry(e if isinstance(e, str) else e.model_dump()) for e in self.thresholds]

    def to_yaml(self) -> str:
        """The scenario as run, every default filled in, in the file's own format (loads again)."""
        body = yaml.dump(self.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
        return "# scenario as run: every default filled in\n" + body


def _why_inert(name: str) -> str:
    return {
        "sendfile": "sendfile only applies to the file service",
        "file_bytes": "file_bytes only applies to the file service",
        "message_bytes": "message_bytes only applies to the echo service",
        "rate": "rate only applies to mode: open",
    }.get(name, "every value gives the same runs")


def _cross_issues(s: Scenario) -> list[tuple[tuple, str]]:
    """Problems that involve more than one field, each with the path to point at."""
    issues: list[tuple[tuple, str]] = []
    services = s.services
    modes = s.load.mode if isinstance(s.load.mode, list) else [s.load.mode]
    if "echo" in services and s.load.message_bytes is None:
        issues.append((("load", "message_bytes"), "required for the echo service: the size of each message, e.g. message_bytes: 1KiB"))
    if "file" in services and s.load.file_bytes is None:
        issues.append((("load", "file_bytes"), "required for the file service: the size of the file to fetch, e.g. file_bytes: 1MiB"))
    if "open" in modes and s.load.rate is None:
        issues.append((("load", "rate"), "required when mode is open: total requests per second, e.g. rate: 5000"))
    if "open" not in modes and s.load.rate is not None:
        issues.append((("load", "rate"), "only used when mode is open; remove it or set mode: open"))
    for i, model in enumerate(s.models):
        if not any(_offers(model, service) for service in services):
            offered = MODELS[model].services
            issues.append((("models", i), f"{model} serves {' and '.join(offered)} only; remove it from a "
                           f"{' and '.join(services)} scenario or add {offered[0]} to service"))
    for name, takers in POOL_OPTIONS.items():
        if getattr(s.server, name) is not None and not set(takers) & set(s.models):
            issues.append((("server", name), f"sizes the pool of {', '.join(takers)} only, and none of this "
                           f"scenario's models ({', '.join(s.models)}) has it: add one of them to models or remove "
                           f"server.{name}"))
    if s.server.cpu_work_iterations and (isinstance(s.server.cpu_work_us, list) or not s.server.cpu_work_us):
        issues.append((("server", "cpu_work_iterations"), "fixes the loop count of one cpu_work_us value: give a single "
                       "cpu_work_us > 0 with it, or remove it and let bench run calibrate"))
    for i, entry in enumerate(s.thresholds):
        model = entry.model if isinstance(entry, ThresholdSpec) else parse_threshold(entry).model
        if model is not None and model not in s.models:
            where = ("thresholds", i, "model") if isinstance(entry, ThresholdSpec) else ("thresholds", i)
            issues.append((where, f"{model!r} is not one of this scenario's models ({', '.join(s.models)})"))
    if s.network.hosts == "loopback":
        for field in ("rtt", "jitter", "rate"):
            if getattr(s.network, field):
                issues.append((("network", field), "needs network.hosts: namespaces (loopback has no link to shape)"))
    if importlib.util.find_spec("uvloop") is None:
        for path, value in ((("server", "loop"), s.server.loop), (("generator", "loop"), s.generator.loop)):
            if value == "uvloop":
                issues.append((path, "uvloop is not installed: pip install uvloop, or choose asyncio"))
    return issues


# --------------------------------------------------------------------------
# Does it fit this machine: every check `bench run` would fail on, made here
# so that `bench validate` saying ok means `bench run` starts.
# --------------------------------------------------------------------------

#: File descriptors a process needs beyond one per client connection
#: (interpreter, pipes, listener, log files, selector/epoll fds).
FD_MARGIN = 64

#: Share of the machine's memory one echo message may take: each load
#: generator worker holds one, and a server may hold as much per connection
#: in flight, so a quarter leaves the machine room to measure anything.
MESSAGE_MEMORY_SHARE = 4


def _nr_open() -> int:
    """The kernel's ceiling on any process's open files (fs.nr_open); root can raise the hard limit to it."""
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20  # the kernel's default


def open_files_ceiling() -> tuple[int, int]:
    """(hard RLIMIT_NOFILE, fs.nr_open): the most open files one process here can get, and root could."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = _nr_open()
    return (ceiling if hard == resource.RLIM_INFINITY else hard), ceiling


def fd_limit_problem(clients: int, limits: tuple[int, int] | None = None) -> str | None:
    """Why ``clients`` connections cannot be opened in one process here, or None.

    ``limits`` is :func:`open_files_ceiling`, read once by a caller checking many values.
    """
    need = clients + FD_MARGIN
    hard, ceiling = limits or open_files_ceiling()
    if need <= hard:
        return None
    text = f"{clients} clients need about {need} open files in one process, but the hard limit (ulimit -Hn) is {hard}"
    if need > ceiling:
        return f"{text}, and the kernel allows at most {ceiling} (fs.nr_open). Lower load.clients"
    return f"{text}. Raise it (as root: ulimit -Hn {need}) or lower load.clients"


def _memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _values_at(s: "Scenario", path: tuple[str, ...]) -> list[tuple[tuple, Any]]:
    """(field path, value) of each value of a field, with the list index for a sweep."""
    value: Any = s
    for part in path:
        value = getattr(value, part)
    if isinstance(value, list):
        return [((*path, i), v) for i, v in enumerate(value)]
    return [] if value is None else [(path, value)]


def _first_over(values: list[tuple[tuple, Any]], too_big: Any) -> list[tuple[tuple, Any, int]]:
    """The first (path, value) for which ``too_big(value)``, with how many more follow: one message per list."""
    over = [(path, value) for path, value in values if too_big(value)]
    return [(over[0][0], over[0][1], len(over) - 1)] if over else []


def _more(count: int) -> str:
    return f" (and {count} more values of this list)" if count else ""


def _machine_issues(s: "Scenario") -> list[tuple[tuple, str]]:
    """Settings this machine cannot run: open files, memory for a message, disk for the served files."""
    issues: list[tuple[tuple, str]] = []
    limits = open_files_ceiling()
    for path, clients, more in _first_over(_values_at(s, ("load", "clients")), lambda v: v + FD_MARGIN > limits[0]):
        issues.append((path, f"{fd_limit_problem(clients, limits)}{_more(more)}"))
    if "echo" in s.services:
        memory = _memory_bytes()
        allowed = memory // MESSAGE_MEMORY_SHARE
        for path, size, more in _first_over(_values_at(s, ("load", "message_bytes")), lambda v: v > allowed):
            issues.append((path, f"{_bytes_text(size)} per message is more than this machine can hold: each "
                                 f"load generator worker keeps one in memory, and the machine has "
                                 f"{_bytes_text(memory)} (at most {_bytes_text(allowed)} per message){_more(more)}"))
    if "file" in s.services:
        sizes = dict((size, path) for path, size in reversed(_values_at(s, ("load", "file_bytes"))))
        folder = tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
        if sum(sizes) > free:
            biggest = max(sizes)
            issues.append((sizes[biggest], f"the file service's files ({_bytes_text(sum(sizes))} in all, one per "
                                           f"size) do not fit in {folder}, which has {_bytes_text(free)} free; "
                                           f"free space, point TMPDIR elsewhere, or use smaller sizes"))
    return issues


# --------------------------------------------------------------------------
# YAML output
# --------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists (``clients: [1, 10]``), literal blocks for multi-line text."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def _represent_list(dumper: yaml.SafeDumper, items: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=True)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)


# --------------------------------------------------------------------------
# Loading: YAML with line numbers, overrides, error messages
# --------------------------------------------------------------------------


def load_scenario(path: str | Path, overrides: Sequence[str] = (), thresholds: Sequence[str] = ()) -> Scenario:
    """Read, override and validate a scenario file.

    ``overrides`` are ``--set`` arguments, ``"field.path=value"`` with the
    value in YAML (``load.clients=[1,10]``, ``duration=2s``,
    ``models=[threading]``); they replace fields of the file before validation.
    ``thresholds`` are ``--threshold`` arguments (``"p99 < 5ms"``,
    ``"threading: p99 < 5ms"``), added to the file's ``thresholds:``.

    Error handling: raises :class:`ScenarioError` listing every problem found.
    """
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # never more: a wrong path to a huge file costs nothing
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, [Issue(source, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise ScenarioError(source, [Issue(source, None, "", "is a directory; give a .yaml file")]) from None
    except UnicodeDecodeError as exc:
        if len(raw) > MAX_FILE_BYTES:
            raise ScenarioError(source, [_too_big(source, path)]) from None
        raise ScenarioError(source, [Issue(source, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
    except OSError as exc:
        raise ScenarioError(source, [Issue(source, None, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(source, [_too_big(source, path)])
    return parse_scenario(text, str(path), overrides, thresholds)


def parse_scenario(text: str, source: str = "<scenario>", overrides: Sequence[str] = (),
                   thresholds: Sequence[str] = ()) -> Scenario:
    """Validate scenario YAML ``text``; ``source`` names it in messages. See :func:`load_scenario`."""
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise ScenarioError(source, [_too_big(source)])
    data, lines, yaml_issues = _read_yaml(text, source)
    set_paths, set_issues = _apply_overrides(data, overrides)
    set_paths += _add_thresholds(data, thresholds)
    if set_issues:  # a malformed --set makes the rest meaningless
        raise ScenarioError(source, set_issues)
    locate = _Locator(source, lines, set_paths)
    issues = [locate(path, message) for path, message in yaml_issues]
    sink: list[tuple[tuple, str]] = []
    scenario = None
    omitted = 0
    try:
        scenario = Scenario.model_validate(data, context={_SINK: sink})
    except ValidationError as exc:
        errors = exc.errors()
        issues += [locate(*_describe(err)) for err in errors[:MAX_DESCRIBED]]
        omitted = max(0, len(errors) - MAX_DESCRIBED)
    issues += [locate(path, message) for path, message in sink]
    if issues or scenario is None:
        raise ScenarioError(source, sorted(issues, key=_issue_order), omitted)
    return scenario


def _bytes_text(n: int) -> str:
    """``1048576`` -> ``"1 MiB"``; ``25276502016`` -> ``"23.5 GiB"``; small or odd sizes in bytes."""
    shown = format_size(n)
    if isinstance(shown, str) and (shown.endswith("GiB") or int(shown[:-3]) < 10_000):
        return f"{shown[:-3]} {shown[-3:]}"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n:,} bytes"


def _set_where(spec: str) -> str:
    """``--set FIELD=VALUE`` as a message names it, cut short: a value may be megabytes."""
    return _shorten(f"--set {spec}")


def _shorten(where: str) -> str:
    return where if len(where) <= 66 else f"{where[:63]}..."


def _too_big(source: str, path: Path | None = None) -> Issue:
    size = ""
    if path is not None:
        with contextlib.suppress(OSError):
            size = f" ({_bytes_text(path.stat().st_size)})"
    return Issue(source, None, "", f"larger than {_bytes_text(MAX_FILE_BYTES)}{size}; a scenario is a few KiB "
                 "of YAML: is this the right file?")


def _issue_order(issue: Issue) -> tuple:
    # File problems in line order first, then those from --set.
    return (issue.where.startswith("--set"), issue.line or 0)


def _read_yaml(text: str, source: str) -> tuple[dict, dict[tuple, int], list[tuple[tuple, str]]]:
    """Parse once, keeping the node tree for line numbers. Syntax errors and unsafe YAML raise ScenarioError."""
    node = _compose(text, source, ())
    if node is None:
        raise ScenarioError(source, [Issue(source, None, "", "the file is empty; a scenario needs at least name, service and models")])
    data = _construct(node, source)
    if not isinstance(data, dict):
        problem = f"expected 'key: value' lines at the top level, not a {type(data).__name__}"
        raise ScenarioError(source, [Issue(source, node.start_mark.line + 1, "", problem)])
    lines: dict[tuple, int] = {}
    issues: list[tuple[tuple, str]] = []
    _walk(node, (), lines, issues)
    return data, lines, issues


# -- bounded YAML -------------------------------------------------------------
#
# PyYAML follows aliases (a "billion laughs" file of 1 KiB names 10**9
# strings), recurses once per nesting level, and converts integers of any
# length. Every document is therefore first read as a stream of parser events
# (flat, no recursion, no alias expansion) and checked against the limits
# above; only a document that passes is composed and constructed.

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: ~10x faster

#: What YAML 1.1 reads as a number (PyYAML's int and float resolvers, loosely):
#: such a scalar longer than MAX_NUMBER_TEXT is refused before int()/float().
_NUMBER_LIKE = re.compile(r"^[-+]?(?:\.?[0-9]|0[box])")


def _compose(text: str, where: str, at: tuple) -> yaml.Node | None:
    """The node tree of ``text`` after :func:`_check_events`; ``at`` prefixes field paths (a ``--set``)."""
    issue = _check_events(text, where, at)
    if issue is not None:
        raise ScenarioError(where, [issue])
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        raise ScenarioError(where, [_syntax_issue(where, exc, text)]) from None
    finally:
        loader.dispose()


def _construct(node: yaml.Node, where: str) -> Any:
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    except (yaml.YAMLError, ValueError) as exc:  # a value YAML's own types refuse (e.g. a bad timestamp)
        mark = getattr(exc, "problem_mark", None) or node.start_mark
        raise ScenarioError(where, [Issue(where, mark.line + 1, "", f"YAML value error: {getattr(exc, 'problem', exc)}")]) from None
    finally:
        loader.dispose()


def _check_events(text: str, where: str, at: tuple) -> Issue | None:
    """The first limit ``text`` breaks (alias/anchor, depth, node count, overlong number) as an Issue, or None.

    Reads parser events only, so its cost is linear in the text and bounded by
    MAX_FILE_BYTES whatever the text holds. Tracks the field path of each node
    so the message can name it.
    """
    # frames: [path, is_mapping, next key or index, expecting_key]
    frames: list[list] = []
    nodes = 0
    too_deep = f"nested more than {MAX_DEPTH} levels deep; a scenario needs 3 (a section, a sweep list, its values)"

    def here(line: int, path: tuple, message: str) -> Issue:
        return Issue(where, None if at else line + 1, _dotted(path), message)

    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frames.pop()
                _advance(frames)
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            path = _event_path(frames, at)
            if frames and frames[-1][1] and frames[-1][3] and isinstance(event, yaml.ScalarEvent):
                path = (*path, event.value[:40])  # a key: name it
            line = event.start_mark.line
            nodes += 1
            if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
                return here(line, path, "YAML anchors and aliases (&name, *name) are not allowed in a scenario: "
                                        "write each value out")
            if frames and not frames[-1][1] and frames[-1][2] >= MAX_POINTS:
                return here(line, frames[-1][0], f"a list of more than {MAX_POINTS} values; a sweep has at most "
                                                 f"{MAX_POINTS} points: shorten it")
            if nodes > MAX_NODES:
                return here(line, path, f"more than {MAX_NODES} YAML values (keys, values and list items); "
                                        f"a scenario has a few dozen, and a sweep at most {MAX_POINTS} points")
            if isinstance(event, yaml.ScalarEvent):
                value = event.value
                plain = event.implicit[0]  # resolved by its text (int, float, ...), not quoted
                if plain and len(value) > MAX_NUMBER_TEXT and _NUMBER_LIKE.match(value):
                    return here(line, path, f"a number of {len(value)} characters is out of range (at most "
                                            f"{MAX_NUMBER_TEXT}; sizes and durations take units: 256MiB, 10s)")
                _advance(frames, key=value)
                continue
            # a mapping or sequence starts
            if len(frames) >= MAX_DEPTH:
                return here(line, path, too_deep)
            mapping = isinstance(event, yaml.MappingStartEvent)
            frames.append([path, mapping, None if mapping else 0, True])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if "nesting depth" in str(getattr(exc, "problem", "")) and mark is not None:
            # libyaml's own limit (1000 levels), hit while scanning ahead of our count
            return here(mark.line, _event_path(frames, at), too_deep)
        return _syntax_issue(where, exc, text)
    return None


def _event_path(frames: list[list], at: tuple) -> tuple:
    """Field path of the node about to start, from the innermost open mapping or sequence."""
    if not frames:
        return at
    path, mapping, slot, expecting_key = frames[-1]
    if mapping:
        return path if expecting_key else (*path, slot)
    return (*path, slot)


def _advance(frames: list[list], key: str | None = None) -> None:
    """A node just ended: move its parent on to the next key, value or index."""
    if not frames:
        return
    frame = frames[-1]
    if frame[1]:  # mapping: key, then value
        if frame[3]:
            frame[2] = key if key is not None else "?"
        frame[3] = not frame[3]
    else:
        frame[2] += 1


def _syntax_issue(source: str, exc: yaml.YAMLError, text: str = "") -> Issue:
    """A YAML syntax error at the line where the parser gave up, with where the construct began."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids, e.g. a NUL byte
        line = text.count("\n", 0, exc.position) + 1 if text else None
        char = exc.character
        code = ord(char) if isinstance(char, str) else char
        name = "a NUL byte" if code == 0 else f"the control character U+{code:04X}"
        return Issue(source, line, "", f"contains {name}, which YAML does not allow; is this a text file? "
                                       "Remove it (e.g. tr -d '\\000')")
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        problem += f" ({context} started on line {context_mark.line + 1})"
    elif context:
        problem += f" ({context})"
    return Issue(source, mark.line + 1 if mark else None, "", f"YAML syntax error: {problem}")


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], issues: list) -> None:
    """Record the line of every field path; report keys given twice (YAML keeps the last silently)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if child in lines:
                issues.append((child, f"given twice (also on line {lines[child]}); remove one"))
            lines[child] = line
            _walk(value_node, child, lines, issues)  # keeps the key's line for child
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, issues)


_OVERRIDE_PATH = re.compile(r"^[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*$")


def _apply_overrides(data: dict, overrides: Sequence[str]) -> tuple[list[tuple[tuple, str]], list[Issue]]:
    """Apply ``--set`` strings to the raw tree; return (path, where) pairs applied and malformed ones."""
    applied: list[tuple[tuple, str]] = []
    issues: list[Issue] = []
    for spec in overrides:
        where = _set_where(spec)
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not _OVERRIDE_PATH.match(key):
            issues.append(Issue(where, None, "", "expected FIELD=VALUE with a dotted field path, e.g. --set load.clients=[1,10]"))
            continue
        path = tuple(int(part) if part.isdigit() else part for part in re.findall(r"\w+", key))
        if len(raw) > MAX_FILE_BYTES:
            issues.append(Issue(where, None, _dotted(path), f"the value is longer than "
                                f"{_bytes_text(MAX_FILE_BYTES)}"))
            continue
        try:
            node = _compose(raw, where, path)
            value = None if node is None else _construct(node, where)
        except ScenarioError as exc:
            issues += [dataclasses.replace(i, line=None, path=i.path or _dotted(path),
                                           message=i.message.replace("YAML syntax error", "the value is not valid YAML"))
                       for i in exc.issues]
            continue
        problem = _assign(data, path, value)
        if problem:
            issues.append(Issue(where, None, _dotted(path), problem))
        else:
            applied.append((path, where))
    return applied, issues


def _add_thresholds(data: dict, texts: Sequence[str]) -> list[tuple[tuple, str]]:
    """Append ``--threshold`` texts to the raw ``thresholds:`` list; return (path, where) pairs."""
    if not texts:
        return []
    if not isinstance(data.get("thresholds"), list):
        data["thresholds"] = [] if data.get("thresholds") is None else [data["thresholds"]]
    placed = []
    for text in texts:
        placed.append((("thresholds", len(data["thresholds"])), _shorten(f"--threshold {text!r}")))
        data["thresholds"].append(text)
    return placed


def _assign(data: dict, path: tuple, value: Any) -> str | None:
    """Set ``data[path] = value``, creating missing sections; return a problem or None."""
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        here = _dotted(path[: depth + 1])
        nxt = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return f"{here} does not exist"
        else:
            if not isinstance(node, dict):
                return f"{_dotted(path[:depth]) or 'the top level'} is a single value, not a section"
            if node.get(part) is None:
                node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            return f"{_dotted(path)} does not exist (the list is shorter)"
    elif not isinstance(node, dict):
        return f"{_dotted(path[:-1])} is a single value, not a section"
    node[last] = value
    return None


def _dotted(path: Sequence) -> str:
    """``("load", "clients", 2)`` -> ``"load.clients[2]"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Locator:
    """Turns a field path into an :class:`Issue` placed at its line or at the ``--set`` that set it."""

    def __init__(self, source: str, lines: dict[tuple, int], set_paths: list[tuple[tuple, str]]) -> None:
        self.source, self.lines, self.set_paths = source, lines, set_paths

    def __call__(self, path: tuple, message: str) -> Issue:
        for set_path, where in reversed(self.set_paths):  # the last --set of a field wins
            inside = path[: len(set_path)] == set_path
            created = path not in self.lines and set_path[: len(path)] == path  # a section --set made
            if inside or created:
                return Issue(where, None, _dotted(path), message)
        probe = path
        while probe and probe not in self.lines:  # a missing field: point at its section
            probe = probe[:-1]
        return Issue(self.source, self.lines.get(probe), _dotted(path), message)


# -- pydantic errors in the user's words -------------------------------------

_SWEEPABLE = ", ".join(_dotted(p) for p in SWEEP_PATHS.values())
_COMPARISONS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_TYPE_WORDS = {
    "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "text", "list_type": "a list such as [a, b]",
    "model_type": "a section of 'key: value' lines", "dict_type": "a section of 'key: value' lines",
    "model_attributes_type": "a section of 'key: value' lines",
}


def _describe(err: dict) -> tuple[tuple, str]:
    """A pydantic error as (user-visible path, message with what is allowed)."""
    path = tuple(part for part in err["loc"] if part not in (_ONE, _LIST, _TEXT, _SPEC))
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return path, _unknown_field(path)
    if kind == "missing":
        return path, "required, but missing"
    if kind == "value_error" and isinstance(value, list) and not any(p in (_ONE, _LIST) for p in err["loc"]):
        return path, f"takes a single value, not a list (lists sweep only these fields: {_SWEEPABLE})"
    if kind == "value_error":
        return path, str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return path, f"must be one of {ctx['expected']}, not {_show(value)}"
    if kind in _COMPARISONS:
        limit = next(iter(ctx.values()))
        shown = format_duration(limit) if _field_name(path) in _DURATION_FIELDS else _plain_number(limit)
        return path, f"must be {_COMPARISONS[kind]} {shown}, not {_show(value)}"
    if kind == "finite_number":
        return path, f"must be a finite number, not {_show(value)}"
    if kind == "too_short":
        return path, "must not be an empty list"
    if kind in _TYPE_WORDS:
        message = f"expected {_TYPE_WORDS[kind]}, not {_show(value)}"
        if isinstance(value, list):
            message += f" (lists sweep only these fields: {_SWEEPABLE})"
        return path, message
    return path, f"{err['msg']} (got {_show(value)})"


#: Fields holding seconds: their limits are shown as durations ("10ms").
_DURATION_FIELDS = frozenset(
    {"duration", "warmup", "connect_timeout", "request_timeout", "interval", "idle_wait", "idle_timeout", "send_timeout"}
)


def _field_name(path: tuple) -> str:
    names = [part for part in path if isinstance(part, str)]
    return names[-1] if names else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_field(path: tuple) -> str:
    name = str(path[-1])
    section = _section_at(path[:-1])
    if section is None:
        return f"unknown field {name!r}"
    allowed = list(section.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    where = f"in {_dotted(path[:-1])}" if path[:-1] else "at the top level"
    return f"unknown field {name!r}{hint}; allowed {where}: {', '.join(allowed)}"


def _section_at(path: tuple) -> type[BaseModel] | None:
    if len(path) == 2 and path[0] == "thresholds":  # an item of the thresholds list
        return ThresholdSpec
    model: type[BaseModel] = Scenario
    for part in path:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


# --------------------------------------------------------------------------
# bench validate
# --------------------------------------------------------------------------


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    """``--set FIELD=VALUE`` (repeatable), shared by ``bench validate`` and ``bench run``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of the scenario, the value in YAML; repeatable "
        "(e.g. --set load.clients=[1,10] --set duration=2s --set models=[threading])",
    )


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bench validate FILE [FILE...] [--set FIELD=VALUE...]``."""
    parser.add_argument("files", nargs="+", metavar="FILE", help="scenario files to check")
    add_override_argument(parser)


def validate_command(args: argparse.Namespace) -> int:
    """Check each file; print a one-line summary or the problems. Exit status 0 if all are valid, else 2."""
    status = 0
    for file in args.files:
        try:
            scenario = load_scenario(file, getattr(args, "overrides", None) or ())
        except ScenarioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        print(summary_line(file, scenario))
    return status


def summary_line(file: str | Path, scenario: Scenario) -> str:
    """``ok: FILE: 6 models x 2 points x 2 repetitions = 22 runs, about 77 s``."""
    n_models, n_points, reps = len(scenario.models), len(scenario.points()), scenario.repetitions
    runs = scenario.run_count()
    note = ""
    if runs != n_models * n_points * reps:
        partial = [m for m in scenario.models if not all(_offers(m, service) for service in scenario.services)]
        offered = sorted({service for m in partial for service in MODELS[m].services} & set(scenario.services))
        note = f" ({', '.join(partial)} {'runs' if len(partial) == 1 else 'run'} the {' and '.join(offered)} points only)"
    return (
        f"ok: {file}: {plural(n_models, 'model')} x {plural(n_points, 'point')} x {plural(reps, 'repetition')} = "
        f"{plural(runs, 'run')}, "
        f"about {scenario.estimate_s():.0f} s{note}"
    )
