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
from typing import Any

from bench.results import PARAMETER_COLUMNS
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



def why_inert(name: str) -> str:
    return {
        "sendfile": "sendfile only applies to the file service",
        "file_bytes": "file_bytes only applies to the file service",
        "message_bytes": "message_bytes only applies to the echo service",
        "rate": "rate only applies to mode: open",
    }.get(name, "every value gives the same runs")


def _axes(scenario: Any) -> dict[str, list]:
    """Every sweep axis as a list of its values (a scalar is a one-value list)."""
    values: dict[str, list] = {}
    for name, path in SWEEP_PATHS.items():
        value: Any = scenario
        for part in path:
            value = getattr(value, part)
        values[name] = value if isinstance(value, list) else [value]
    return values


def expand(scenario: Any) -> tuple[list["Point"], list[str], list[tuple[tuple, str]]]:
    """(points, swept parameter names, problems that only show once expanded) of a validated scenario."""
    axes = _axes(scenario)
    total = 1
    for name in SWEEP_ORDER:
        total *= len(axes[name])
    if total > MAX_POINTS:
        return [], [], [((), f"the sweep has {total} combinations; at most {MAX_POINTS} are allowed: shorten some lists")]
    points: list[Point] = []
    seen: set[tuple] = set()
    for combo in itertools.product(*(axes[name] for name in SWEEP_ORDER)):
        point = _point(scenario, dict(zip(SWEEP_ORDER, combo)), len(points))
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
        (SWEEP_PATHS[name], f"is swept but changes nothing: {why_inert(name)}")
        for name in SWEEP_ORDER
        if len(axes[name]) > 1 and name not in swept
    ]
    points = [dataclasses.replace(p, params={n: c[n] for n in swept}) for p, c in zip(points, columns)]
    return points, swept, issues


def _point(scenario: Any, v: dict[str, Any], index: int) -> "Point":
    service, mode = v["service"], v["mode"]
    load = LoadPoint(
        clients=v["clients"],
        message_bytes=v["message_bytes"] if service == "echo" else None,
        file_bytes=v["file_bytes"] if service == "file" else None,
        requests_per_connection=v["requests_per_connection"],
        mode=mode,
        rate=v["rate"] if mode == "open" else None,
        connect_timeout_s=scenario.load.connect_timeout,
        request_timeout_s=scenario.load.request_timeout,
    )
    server = ServerOptions(
        backlog=v["backlog"],
        max_children=v["max_children"],
        threads=v["threads"] or 0,
        workers=v["workers"] or 0,
        sendfile=v["sendfile"],
        cpu_work_us=v["cpu_work_us"],
        cpu_work_iterations=scenario.server.cpu_work_iterations,
        loop=scenario.server.loop,
        idle_timeout=scenario.server.idle_timeout,
        request_timeout=scenario.server.request_timeout,
        send_timeout=scenario.server.send_timeout,
    )
    models = tuple(m for m in scenario.models if offers(m, service))
    return Point(index=index, service=service, models=models, params={}, server=server, load=load)
