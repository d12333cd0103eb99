"""The scenario schema: every section and field of a scenario file, its type, default and help.

:class:`Scenario` is the one typed description of a run. Field types here
are the file's: sizes and durations take units (:mod:`bench.units`), a
sweepable field is one value or a list (:func:`sweep`). A section is a
:class:`Section` (unknown keys and later changes refused); a new one is a
new class and a field of :class:`Scenario`, and error messages find it
without further change. Validation checks each field, then the rules that
involve several (:func:`_cross_issues`), then expands the sweep
(:mod:`bench.scenario.sweep`) and checks the machine
(:mod:`bench.scenario.machine`).
"""

import dataclasses
import difflib
import importlib.util
import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Optional, TypeAlias, TypeVar

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
    ValidationInfo,
    create_model,
    model_validator,
)

from bench.loadgen.spec import NATIVE_SERVICES, PYTHON_ONLY_SERVICES, SERVICES
from bench.parameters import MIX_KINDS, MIX_SERVICES, PARAMETERS, SLOW_KINDS, Parameter, in_section
from bench.scenario.machine import machine_issues
from bench.scenario.messages import dotted, plain_number, show
from bench.scenario.source import Dumper
from bench.scenario.sweep import Point, expand, offers
from bench.thresholds import Threshold, from_entry, parse_threshold
from bench.units import (
    format_bitrate,
    format_duration,
    format_size,
    parse_bitrate,
    parse_duration,
    parse_fraction,
    parse_size,
)
from servers.config import CRASH_KINDS, DEFAULT_LOOP, LOOPS, POOL_OPTIONS, PRELOAD_USES, ServerOptions
from servers.registry import HANDLER_OPTION_MODELS, LOOP_MODELS, MODELS, unavailable

#: Key of the validation context under which cross-field problems are
#: collected (with their paths) instead of raised one at a time.
SINK = "scenario_issues"

#: Seconds each run costs beyond warmup + duration: server start and its
#: ready line (~0.3 s), the idle check, SIGTERM and reaping, writing results.
#: Only used for the "about N s" estimate.
RUN_OVERHEAD_S = 1.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------

# Tags of the two shapes a sweepable field takes. They show up in pydantic's
# error locations and are stripped before the path is shown to the user
# (bench.scenario.messages.is_tag: any "<name>").
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
            raise ValueError(f"{show(value)} is listed twice; each value of a sweep must appear once")
        seen.add(key)
    return values


def sweep(item: Any) -> Any:
    """The type "one ``item`` or a non-empty list of distinct ``item``s" (a sweep).

    A callable discriminator picks the branch by shape, so an error is
    reported against the branch the user meant (``load.clients[2]``), not
    against both.
    """
    return Annotated[
        Annotated[item, Tag(_ONE)] | Annotated[list[item], Field(min_length=1), AfterValidator(_distinct), Tag(_LIST)],
        Discriminator(_shape),
    ]


if TYPE_CHECKING:
    _T = TypeVar("_T")
    #: What a type checker sees of a sweep: the run-time type adds the discriminator and the list checks.
    Sweep: TypeAlias = _T | list[_T]
else:

    class Sweep:
        """``Sweep[item]``: :func:`sweep` of ``item``, written where a type goes."""

        def __class_getitem__(cls, item: Any) -> Any:
            return sweep(item)


Count = Annotated[StrictInt, Field(ge=1)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, when_used="json")]
PositiveSize = Annotated[Size, Field(ge=1)]
Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, when_used="json")]
PositiveDuration = Annotated[Duration, Field(gt=0)]
#: Highest open-loop rate: 50x the 200k round trips/s a C client reaches on
#: loopback here, so only a typo (or .inf, which a float would accept) is refused.
MAX_RATE = 10_000_000
Rate = Annotated[
    StrictFloat, Field(gt=0, le=MAX_RATE, allow_inf_nan=False), PlainSerializer(plain_number, when_used="json")
]
#: The services a scenario may name: those the load generator drives (a server may offer more).
if TYPE_CHECKING:  # the names are a tuple built at run time: a type checker sees strings
    Service: TypeAlias = str
    Loop: TypeAlias = str
    CrashKind: TypeAlias = str
    PreloadUse: TypeAlias = str
else:
    Service = Literal[SERVICES]
    Loop = Literal[LOOPS]
    CrashKind = Literal[CRASH_KINDS]
    PreloadUse = Literal[PRELOAD_USES]


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


def _pool_size(name: str) -> AfterValidator:
    """The check of ``server.threads`` / ``server.workers``: a count of at least 1, for the models that have the pool."""
    takers = ", ".join(POOL_OPTIONS[name])

    def check(value: int) -> int:
        if value < 1:
            raise ValueError(
                f"{value} {name}: a pool needs at least 1 (server.{name} sizes the pool of {takers} "
                "only); leave it out for each model's default"
            )
        return value

    return AfterValidator(check)


def _pool_field(name: str, default_text: str) -> Any:
    takers = " and ".join(POOL_OPTIONS[name])
    return Field(
        None,
        description=f"{takers} only: {name}, the most connections each serves at once (see "
        f"python -m servers --help); left out: {default_text}",
    )


def _server_field(name: str) -> Any:
    """A field with ServerOptions' default and help text: one source for both."""
    return Field(default=getattr(_SERVER_DEFAULTS, name), description=_SERVER_HELP[name])


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _handler_option_issues(s: Any) -> list[tuple[tuple[Any, ...], str]]:
    """server.crash and server.preload_*: each with what it needs, and only for the models that take them."""
    issues: list[tuple[tuple[Any, ...], str]] = []
    crashes = [k for k in _values(s.server.crash) if k != "none"]
    every = [n for n in _values(s.server.crash_every) if n]
    if crashes and not every:
        issues.append(
            (("server", "crash_every"), "crash needs crash_every: the requests between two crashes, e.g. 100")
        )
    if every and not crashes:
        issues.append(
            (
                ("server", "crash"),
                f"crash_every counts requests between crashes: give crash one of {', '.join(CRASH_KINDS[1:])}",
            )
        )
    preloads = [n for n in _values(s.server.preload_mib) if n]
    defaults = ServerOptions()
    if not preloads:
        for name in ("preload_use", "preload_freeze"):
            if _values(getattr(s.server, name)) != [getattr(defaults, name)]:
                issues.append((("server", name), "says how preloaded data is used: add server.preload_mib, e.g. 64"))
    if crashes or preloads:
        for i, model in enumerate(s.models):
            if model not in HANDLER_OPTION_MODELS:
                what = "crash" if crashes else "preload_mib"
                issues.append(
                    (
                        ("models", i),
                        f"{model} does not run sockbench's Python handlers, where server.{what} acts: remove it "
                        f"from models (they take it: {', '.join(HANDLER_OPTION_MODELS)})",
                    )
                )
    return issues


class Section(BaseModel):
    # frozen: the points are computed once at validation; a later change
    # to a field would silently disagree with them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSpec(Section):
    """``server:``: the settings given to every server model (see :class:`ServerOptions`)."""

    backlog: Sweep[NonNegInt] = _server_field("backlog")
    max_children: Sweep[Count] = _server_field("max_children")
    threads: Sweep[Annotated[StrictInt, _pool_size("threads")]] | None = _pool_field(
        "threads", "2 x the CPUs the server runs on"
    )
    workers: Sweep[Annotated[StrictInt, _pool_size("workers")]] | None = _pool_field(
        "workers", "one per CPU the server runs on"
    )
    sendfile: Sweep[StrictBool] = _server_field("sendfile")
    cpu_work_us: Sweep[NonNegInt] = _server_field("cpu_work_us")
    cpu_work_iterations: NonNegInt = _server_field("cpu_work_iterations")
    loop: Loop = _server_field("loop")
    crash: Sweep[CrashKind] = _server_field("crash")
    crash_every: Sweep[NonNegInt] = _server_field("crash_every")
    preload_mib: Sweep[NonNegInt] = _server_field("preload_mib")
    preload_use: Sweep[PreloadUse] = _server_field("preload_use")
    preload_freeze: Sweep[StrictBool] = _server_field("preload_freeze")
    # 0 turns one off to show the stdlib's unbounded waiting. The idle
    # timeout is swept (load.mix's idle clients show what it changes); the
    # other two bound clients the load generator does not imitate as a sweep.
    idle_timeout: Sweep[Duration] = _server_field("idle_timeout")
    request_timeout: Duration = _server_field("request_timeout")
    send_timeout: Duration = _server_field("send_timeout")


BitRate = Annotated[int, BeforeValidator(parse_bitrate), Field(ge=1), PlainSerializer(format_bitrate, when_used="json")]

#: The pydantic type of each kind of parameter (bench.parameters.KINDS), before sweep() and Optional.
_KIND_TYPES: dict[str, Any] = {
    "count": Count,
    "whole": NonNegInt,
    "size": Size,
    "duration": Duration,
    "rate": Rate,
    "bitrate": BitRate,
    "fraction": Annotated[StrictFloat, BeforeValidator(parse_fraction), Field(ge=0, le=1)],
    "flag": StrictBool,
}
#: ... of a size or duration that must be positive (Parameter.positive).
_POSITIVE_TYPES: dict[str, Any] = {"size": PositiveSize, "duration": PositiveDuration}


def _parameter_field(parameter: Parameter) -> tuple[Any, Any]:
    """(type, Field) of a scenario field generated from a :class:`~bench.parameters.Parameter`.

    A parameter ``required`` where it applies has no default in a file (the
    scenario must say it: the cross-field checks name what is missing).
    """
    if parameter.kind == "choice":
        kind: Any = Literal[parameter.choices]
    else:
        kind = _POSITIVE_TYPES[parameter.kind] if parameter.positive else _KIND_TYPES[parameter.kind]
    if parameter.sweepable:
        kind = sweep(kind)
    default = None if parameter.required else parameter.default
    if default is None:
        kind = Optional[kind]  # noqa: UP045 - built at run time from a type object, where Optional reads plainest
    return kind, Field(default, description=parameter.help)


#: What each subsection of a parameter section holds (:attr:`~bench.parameters.Parameter.group`), for its help.
_GROUP_DOCS = {
    "mix": "``load.mix:``: the slow kinds of client and their share of load.clients (the fast clients are the "
    f"rest), and how the slow ones behave; kinds: {', '.join(SLOW_KINDS)} (fields: bench.parameters)",
}


class MixSection(Section):
    """Base of ``load.mix``: an unknown field there is most likely a kind of client, so its message says the kinds."""

    unknown_hint: ClassVar[str] = (
        f"the kinds of client are {', '.join(MIX_KINDS)}: give {', '.join(SLOW_KINDS)} a share of load.clients "
        "(0.1 or 10%); fast clients are the rest"
    )


def parameter_section(section: str, doc: str, base: type[BaseModel] = Section) -> type[BaseModel]:
    """The model of a scenario section whose fields are the :data:`~bench.parameters.PARAMETERS` of ``section``.

    Parameters with a ``group`` become the fields of a subsection of that name (``load.mix``).
    """
    fields: dict[str, Any] = {p.field_name: _parameter_field(p) for p in in_section(section) if not p.group}
    for group in dict.fromkeys(p.group for p in in_section(section) if p.group):
        group_fields: dict[str, Any] = {
            p.field_name: _parameter_field(p) for p in in_section(section) if p.group == group
        }
        group_base: type[Section] = MixSection if group == "mix" else Section
        sub = create_model(f"{group.title()}Spec", __base__=group_base, __module__=__name__, **group_fields)
        sub.__doc__ = _GROUP_DOCS.get(group, "")
        fields[group] = (sub, Field(default_factory=sub, description=_GROUP_DOCS.get(group, "")))
    model = create_model(f"{section.title()}Spec", __base__=base, __module__=__name__, **fields)
    model.__doc__ = doc
    return model


if TYPE_CHECKING:  # fields generated from PARAMETERS, which a type checker cannot follow
    LoadSpec: TypeAlias = Any
    GeneratorSpec: TypeAlias = Any
else:
    LoadSpec = parameter_section("load", "``load:``: what the load generator does (fields: bench.parameters).")
    GeneratorSpec = parameter_section(
        "generator", "``generator:``: the load generator's own process layout (fields: bench.parameters)."
    )


class MonitorSpec(Section):
    """``monitor:``: sampling of the server's process tree and the machine."""

    # 10 ms floor: reading PSS of a 40-process tree takes several ms.
    interval: Annotated[Duration, Field(ge=0.01)] = Field(
        0.1, description="sampling interval of the server process tree"
    )
    idle_threshold_pct: Annotated[StrictFloat, Field(gt=0, le=100)] = Field(
        5.0, description="before each run, wait until the machine is less busy than this (percent)"
    )
    idle_wait: Duration = Field(
        20.0, description="wait at most this long for the machine to be idle, then run anyway and record it"
    )

    @property
    def interval_s(self) -> float:
        return float(self.interval)

    @property
    def idle_wait_s(self) -> float:
        return float(self.idle_wait)


def _loss_refused(value: Any) -> Any:
    if value not in (None, 0, "0", "0%"):
        raise ValueError(
            "loss is not supported: the delay stage forwards whole segmentation-offload units of up "
            "to 64 KiB, so dropping one would lose dozens of wire packets at once, not the rate you "
            "configure; remove loss (rate, rtt and jitter are supported)"
        )
    return None


class _NetworkHosts(Section):
    """The fields of ``network:`` that are not parameters: which hosts, how many, and the refused loss."""

    hosts: Literal["loopback", "namespaces"] = Field(
        "loopback",
        description="loopback: server and load share one loopback; namespaces: a server host and a "
        "client host (network namespaces, root only) joined by a link with the conditions below",
    )
    loss: Annotated[Any, AfterValidator(_loss_refused)] = Field(None, description="not supported (see the error)")
    client_hosts: Count = Field(
        1,
        description="namespaces: client hosts, load workers spread over them, worker i on host i mod N "
        "(more than 1: generator.workers at least that many; not with engine wrk)",
    )


if TYPE_CHECKING:
    NetworkSpec: TypeAlias = Any
else:
    #: ``network:``: where server and load run, and the link between them (see :mod:`bench.network`);
    #: ``rtt``, ``jitter`` and ``rate`` are parameters (bench.parameters), sweepable like the load's.
    NetworkSpec = parameter_section(
        "network",
        "``network:``: where server and load run, and the link between them (see bench.network).",
        base=_NetworkHosts,
    )


def _threshold_text(text: str) -> str:
    parse_threshold(text)  # raises ThresholdError (a ValueError) naming what is wrong
    return text


ThresholdText = Annotated[str, AfterValidator(_threshold_text)]


class ThresholdSpec(Section):
    """A ``thresholds:`` item for one model: ``{model: threading, check: "p99 < 5ms"}``."""

    model: ModelName = Field(description="the server model the check applies to (one of models)")
    check: ThresholdText = Field(description="METRIC OPERATOR VALUE, e.g. p99 < 5ms (see bench/thresholds.py)")


# Tags of the two shapes of a thresholds: item, stripped from error paths like _ONE and _LIST.
_TEXT, _SPEC = "<text>", "<spec>"


def _entry_shape(value: Any) -> str:
    return _SPEC if isinstance(value, (dict, ThresholdSpec)) else _TEXT


ThresholdEntry = Annotated[
    Annotated[ThresholdText, Tag(_TEXT)] | Annotated[ThresholdSpec, Tag(_SPEC)],
    Discriminator(_entry_shape),
]


# --------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------


class Scenario(Section):
    """A validated scenario. Build it with :func:`load_scenario` to get file/line error messages."""

    name: Annotated[str, AfterValidator(_folder_name)] = Field(description="used in the results folder name")
    description: str = Field("", description="teaching text: what to look for, shown in the report")
    service: Sweep[Service] = Field(description="echo | file | http | timeauth, or a list to run several")
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
        "{model: threading, check: 'p99 < 5ms'}; bench run exits 99 when one fails",
    )

    _points: list[Point] = PrivateAttr(default_factory=list)
    _swept: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> "Scenario":
        issues = _cross_issues(self)
        if not issues:
            self._points, self._swept, issues = expand(self)
        issues += machine_issues(self)
        if issues:
            sink = (info.context or {}).get(SINK)
            if sink is None:  # built directly, not through load_scenario
                raise ValueError("; ".join(f"{dotted(p)}: {m}" for p, m in issues))
            sink.extend(issues)
        return self

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

    def loop_note(self) -> str:
        """What ``server.loop`` leaves out: ``""``, or a sentence naming the models that run without it.

        ``server.loop`` is the event loop of the models that have one
        (:data:`servers.registry.LOOP_MODELS`); the others have none to
        replace and run as always (:meth:`servers.registry.Model.options_for`).
        A scenario where no model has a loop is refused instead (``_cross_issues``).
        """
        if self.server.loop == DEFAULT_LOOP:
            return ""
        without = [m for m in self.models if not MODELS[m].loop]
        if not without:
            return ""
        with_loop = [m for m in self.models if MODELS[m].loop]
        return (
            f"server.loop {self.server.loop} applies to {', '.join(with_loop)} only: "
            f"{', '.join(without)} {'has' if len(without) == 1 else 'have'} no event loop and "
            f"{'runs' if len(without) == 1 else 'run'} without it"
        )

    def threshold_checks(self) -> list[Threshold]:
        """The ``thresholds:`` parsed, in file order (a model-specific one carries its model)."""
        return [from_entry(e if isinstance(e, str) else e.model_dump()) for e in self.thresholds]

    def to_yaml(self) -> str:
        """The scenario as run, every default filled in, in the file's own format (loads again)."""
        body = yaml.dump(self.model_dump(mode="json"), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
        return "# scenario as run: every default filled in\n" + body


def mix_has_slow(load: Any) -> bool:
    """Whether a scenario's ``load`` (or a sweep point's) has slow clients at some point."""
    mix = getattr(load, "mix", load)
    return any(share for kind in SLOW_KINDS for share in _values(getattr(mix, kind)))


def _mix_issues(s: Scenario, services: list[str]) -> list[tuple[tuple, str]]:
    """``load.mix``: the shares fit in the clients, the service and the engine speak the slow kinds."""
    mix = s.load.mix
    issues: list[tuple[tuple, str]] = []
    most = sum(max(_values(getattr(mix, kind))) for kind in SLOW_KINDS)
    if most > 1 + 1e-9:  # why 1e-9: 0.7 + 0.2 + 0.1 adds up to 1.0000000000000002 in floats
        issues.append(
            (
                ("load", "mix"),
                f"the slow kinds take up to {most:.0%} of load.clients ("
                + ", ".join(
                    f"{k} {max(_values(getattr(mix, k))):.0%}" for k in SLOW_KINDS if any(_values(getattr(mix, k)))
                )
                + "); together at most 100%: lower a share",
            )
        )
    if not mix_has_slow(s.load):
        return issues
    other = [service for service in services if service not in MIX_SERVICES]
    if other:
        issues.append(
            (
                ("load", "mix"),
                f"slow clients speak the {' and '.join(MIX_SERVICES)} services only, not {' and '.join(other)}: "
                f"remove {' and '.join(other)} from service or set the shares of {', '.join(SLOW_KINDS)} to 0",
            )
        )
    if s.generator.engine in ("native", "locust", "wrk"):
        issues.append(
            (
                ("generator", "engine"),
                f"the {s.generator.engine} engine has no slow clients (load.mix): use engine python, or auto "
                "(python when load.mix has slow clients)",
            )
        )
    return issues


def _cross_issues(s: Scenario) -> list[tuple[tuple, str]]:
    """Problems that involve more than one field, each with the path to point at."""
    issues: list[tuple[tuple, str]] = []
    services = s.services
    modes = s.load.mode if isinstance(s.load.mode, list) else [s.load.mode]
    axes = {"service": services, "mode": modes, "hosts": [s.network.hosts]}
    for parameter in PARAMETERS:
        # applies None: everywhere
        if parameter.required and (
            parameter.applies is None or set(parameter.applies_values) & set(axes[parameter.applies[0]])
        ):
            if getattr(getattr(s, parameter.section), parameter.field_name) is None:
                issues.append((parameter.path, parameter.required_reason()))
    python_only = [service for service in services if service in PYTHON_ONLY_SERVICES]
    if s.generator.engine == "native" and python_only:
        issues.append(
            (
                ("generator", "engine"),
                f"the native engine does not drive the {' and '.join(python_only)} "
                f"service (it speaks {', '.join(NATIVE_SERVICES)}); use engine: python, or auto (python for "
                f"{' and '.join(python_only)})",
            )
        )
    issues += _mix_issues(s, services)
    for parameter in PARAMETERS:  # settings only some engines act on (http's method HEAD, pipeline > 1)
        values = getattr(getattr(s, parameter.section), parameter.name, None) if parameter.engines else None
        for value in values if isinstance(values, list) else [values]:
            if s.generator.engine != "auto" and parameter.engine_lacks(s.generator.engine, value):
                issues.append(
                    (
                        (parameter.section, parameter.name),
                        f"{value} needs engine {' or '.join(parameter.engines)}; generator.engine "
                        f"{s.generator.engine} does not implement it (use generator.engine: auto or "
                        f"{parameter.engines[0]})",
                    )
                )
                break
    pipelines = s.load.pipeline if isinstance(s.load.pipeline, list) else [s.load.pipeline]
    if "http" in services and "open" in modes and any(depth != 1 for depth in pipelines):
        issues.append(
            (
                ("load", "pipeline"),
                "a depth above 1 needs mode closed (an open loop starts each request on its own schedule): "
                "use pipeline: 1 with mode open",
            )
        )
    if "open" not in modes and s.load.rate is not None:
        issues.append((("load", "rate"), "only used when mode is open; remove it or set mode: open"))
    for i, model in enumerate(s.models):
        if not any(offers(model, service) for service in services):
            offered = MODELS[model].services
            issues.append(
                (
                    ("models", i),
                    f"{model} serves {' and '.join(offered)} only; remove it from a "
                    f"{' and '.join(services)} scenario or add {offered[0]} to service",
                )
            )
    for name, takers in POOL_OPTIONS.items():
        if getattr(s.server, name) is not None and not set(takers) & set(s.models):
            issues.append(
                (
                    ("server", name),
                    f"sizes the pool of {', '.join(takers)} only, and none of this "
                    f"scenario's models ({', '.join(s.models)}) has it: add one of them to models or remove "
                    f"server.{name}",
                )
            )
    issues += _handler_option_issues(s)
    if s.server.loop != DEFAULT_LOOP and not any(MODELS[m].loop for m in s.models):
        issues.append(
            (
                ("server", "loop"),
                f"{s.server.loop} is the event loop of {', '.join(LOOP_MODELS)} only, and none of this "
                f"scenario's models ({', '.join(s.models)}) has an event loop: add one of them to models or "
                f"remove server.loop",
            )
        )
    if s.server.cpu_work_iterations and (isinstance(s.server.cpu_work_us, list) or not s.server.cpu_work_us):
        issues.append(
            (
                ("server", "cpu_work_iterations"),
                "fixes the loop count of one cpu_work_us value: give a single "
                "cpu_work_us > 0 with it, or remove it and let bench run calibrate",
            )
        )
    for i, entry in enumerate(s.thresholds):
        named = entry.model if isinstance(entry, ThresholdSpec) else parse_threshold(entry).model
        if named is not None and named not in s.models:
            where = ("thresholds", i, "model") if isinstance(entry, ThresholdSpec) else ("thresholds", i)
            issues.append((where, f"{named!r} is not one of this scenario's models ({', '.join(s.models)})"))
    if s.network.hosts == "loopback":
        for field in ("rtt", "jitter", "rate"):
            if getattr(s.network, field):
                issues.append((("network", field), "needs network.hosts: namespaces (loopback has no link to shape)"))
    if s.network.client_hosts > 1:
        if s.network.hosts != "namespaces":
            issues.append((("network", "client_hosts"), "needs network.hosts: namespaces (loopback is one host)"))
        if s.generator.engine == "wrk":
            issues.append(
                (
                    ("network", "client_hosts"),
                    "more than 1 needs an engine that runs several workers (native, python or locust); "
                    "wrk is one process on one host",
                )
            )
        elif s.generator.workers is not None and s.generator.workers < s.network.client_hosts:
            issues.append(
                (
                    ("generator", "workers"),
                    f"{s.generator.workers} worker(s) cannot reach {s.network.client_hosts} client hosts (worker i "
                    f"runs on host i mod {s.network.client_hosts}): set generator.workers to at least "
                    f"{s.network.client_hosts}",
                )
            )
        elif s.generator.workers is None:
            issues.append(
                (
                    ("network", "client_hosts"),
                    f"more than 1 needs generator.workers (at least {s.network.client_hosts}, one per host): "
                    "the default, one worker per generator CPU, may leave hosts without load",
                )
            )
    if importlib.util.find_spec("uvloop") is None:
        for path, value in ((("server", "loop"), s.server.loop), (("generator", "loop"), s.generator.loop)):
            if value == "uvloop":
                issues.append((path, "uvloop is not installed: pip install uvloop, or choose asyncio"))
    return issues
