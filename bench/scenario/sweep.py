"""Sweeps: which fields may be lists, and the points their product gives.

Every parameter that has a column in ``runs.csv`` may be a list instead of a
single value (:data:`SWEEP_PATHS`); :func:`expand` turns a validated scenario
into its :class:`Point` objects, in :data:`SWEEP_ORDER` (the first axis
varies slowest), dropping points that differ only in a parameter that does
not apply there, and names the lists that could never change anything.
This module knows the scenario only by the attributes it reads, so it sits
below the schema.
"""

import dataclasses
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from bench.parameters import PARAMETERS, in_section
from bench.units import format_size
from servers.config import ServerOptions
from servers.registry import MODELS


def offers(model: str, service: str) -> bool:
    """Whether ``model`` offers ``service`` (the registry's fact).

    A model that lacks one of a scenario's services (the C ceiling serves echo
    only) runs the points of the services it has and skips the others.
    """
    known = MODELS.get(model)
    return known is None or known.offers(service)


#: The parameters a list sweeps (bench.parameters), each with a runs.csv column.
_SWEPT_PARAMETERS = [p for p in PARAMETERS if p.sweepable]

#: Order in which sweep axes are expanded (first varies slowest) and in which
#: they appear in ``Point.params``.
SWEEP_ORDER: tuple[str, ...] = ("service", *(p.name for p in _SWEPT_PARAMETERS))

#: Where each sweep axis lives in the file.
SWEEP_PATHS: dict[str, tuple[str, ...]] = {
    "service": ("service",),
    **{p.name: p.path for p in _SWEPT_PARAMETERS},
}

_COLUMN_PARAMETERS = [p for p in PARAMETERS if p.column]
_BY_NAME = {p.name: p for p in PARAMETERS}

#: Refuse sweeps larger than this: at one second per run it is already more
#: than a day of measuring, so it is almost certainly a typo in a list.
MAX_POINTS = 10_000


#: The load of one sweep point, every value concrete: a field per ``load:``
#: parameter (``connect_timeout_s`` for ``connect_timeout``: see
#: :attr:`bench.parameters.Parameter.point_name`). A value that does not apply
#: to the point (the other service's size, ``rate`` in closed loop) is ``None``.
if TYPE_CHECKING:
    LoadPoint: TypeAlias = Any  # its fields are generated from PARAMETERS, which a type checker cannot follow
else:
    LoadPoint = dataclasses.make_dataclass(
        "LoadPoint",
        [(p.point_name, Any) for p in in_section("load")],
        frozen=True,
        namespace={"__module__": __name__},
    )


#: The network of one sweep point: ``hosts`` and ``client_hosts`` (one value per scenario) and a field per
#: network parameter (``rtt``, ``jitter``, ``rate``: seconds and bit/s, the scenario's units), each the
#: point's value; ``None`` on loopback, where they do not apply. The runner builds each run's hosts from it.
if TYPE_CHECKING:
    NetworkPoint: TypeAlias = Any
else:
    NetworkPoint = dataclasses.make_dataclass(
        "NetworkPoint",
        [("hosts", str), ("client_hosts", int), *((p.point_name, Any) for p in in_section("network"))],
        frozen=True,
        namespace={"__module__": __name__},
    )


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
    network: NetworkPoint

    def _where(self) -> dict[str, Any]:
        """The settings a parameter's ``applies`` names: service, mode, hosts."""
        return {"service": self.service, "mode": self.load.mode, "hosts": self.network.hosts}

    def columns(self) -> dict[str, object]:
        """Every parameter column of ``runs.csv`` (``service`` and PARAMETER_COLUMNS), swept or not.

        A value that does not apply to this point is ``None`` (an empty cell):
        ``sendfile`` for echo, ``rate`` for closed loop, the other service's size.
        """
        where = self._where()
        sections = {"load": self.load, "server": self.server, "network": self.network}
        values: dict[str, object] = {"service": self.service}
        for parameter in _COLUMN_PARAMETERS:
            value = getattr(sections[parameter.section], parameter.point_name)
            if parameter.zero_is_default and not value:
                value = None  # the model's own default: an empty cell
            values[parameter.name] = parameter.column_value(value) if parameter.applies_at(where) else None
        return values

    def label(self) -> str:
        """Short text for progress lines: ``"clients=100 backlog=5"``, or ``"-"`` without a sweep."""
        shown = [f"{k}={_show_value(k, v)}" for k, v in self.params.items() if v is not None]
        return " ".join(shown) or "-"


def _show_value(name: str, value: Any) -> object:
    if value is not None and name.endswith("_bytes"):
        return format_size(value)
    return value


def why_inert(name: str) -> str:
    """Why a list of the parameter ``name`` changed nothing (where it applies)."""
    return _BY_NAME[name].inert_reason() if name in _BY_NAME else "every value gives the same runs"


def _at(scenario: Any, path: tuple[str, ...]) -> Any:
    """The scenario's field at ``path`` (``("load", "mix", "idle")``)."""
    value: Any = scenario
    for part in path:
        value = getattr(value, part)
    return value


def _axes(scenario: Any) -> dict[str, list]:
    """Every sweep axis as a list of its values (a scalar is a one-value list)."""
    values: dict[str, list] = {}
    for name, path in SWEEP_PATHS.items():
        value = _at(scenario, path)
        values[name] = value if isinstance(value, list) else [value]
    return values


def expand(scenario: Any) -> tuple[list["Point"], list[str], list[tuple[tuple, str]]]:
    """(points, swept parameter names, problems that only show once expanded) of a validated scenario."""
    axes = _axes(scenario)
    total = 1
    for name in SWEEP_ORDER:
        total *= len(axes[name])
    if total > MAX_POINTS:
        return (
            [],
            [],
            [((), f"the sweep has {total} combinations; at most {MAX_POINTS} are allowed: shorten some lists")],
        )
    points: list[Point] = []
    seen: set[tuple] = set()
    for combo in itertools.product(*(axes[name] for name in SWEEP_ORDER)):
        point = _point(scenario, dict(zip(SWEEP_ORDER, combo)), len(points))
        key = tuple(point.columns().items())
        if key not in seen:  # a parameter that does not apply made a duplicate
            seen.add(key)
            points.append(point)
    columns = [p.columns() for p in points]  # once each: 10,000 points x 11 axes
    swept = [name for name in SWEEP_ORDER if len({repr(c[name]) for c in columns if c[name] is not None}) > 1]
    issues = [
        (SWEEP_PATHS[name], f"is swept but changes nothing: {why_inert(name)}")
        for name in SWEEP_ORDER
        if len(axes[name]) > 1 and name not in swept
    ]
    points = [dataclasses.replace(p, params={n: c[n] for n in swept}) for p, c in zip(points, columns)]
    return points, swept, issues


def _point(scenario: Any, v: dict[str, Any], index: int) -> "Point":
    service = v["service"]
    where = {"service": service, "mode": v["mode"], "hosts": scenario.network.hosts}
    load = LoadPoint(
        **{
            p.point_name: (v[p.name] if p.sweepable else _at(scenario, p.path)) if p.applies_at(where) else None
            for p in in_section("load")
        }
    )
    server_values = {name: getattr(scenario.server, name) for name in type(scenario.server).model_fields}
    server_values.update({p.name: v[p.name] for p in _SWEPT_PARAMETERS if p.section == "server"})
    server_values.update({p.name: server_values[p.name] or 0 for p in _SWEPT_PARAMETERS if p.zero_is_default})
    server = ServerOptions(**server_values).effective()  # one point without crashes, not one per crash_every
    network = NetworkPoint(
        hosts=scenario.network.hosts,
        client_hosts=scenario.network.client_hosts,
        **{
            p.point_name: (v[p.name] if p.sweepable else getattr(scenario.network, p.field_name))
            if p.applies_at(where)
            else None
            for p in in_section("network")
        },
    )
    models = tuple(m for m in scenario.models if offers(m, service))
    return Point(index=index, service=service, models=models, params={}, server=server, load=load, network=network)
