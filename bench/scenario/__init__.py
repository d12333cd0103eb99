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
``server.{backlog, max_children, threads, workers, sendfile, cpu_work_us,
idle_timeout}``, ``load.{clients, message_bytes, file_bytes,
requests_per_connection, mode, rate}``, the slow clients' shares
``load.mix.{slow_reader, slowloris, idle}`` and, with ``hosts: namespaces``,
``network.{rtt, jitter, rate}`` (each run builds its hosts with its point's
link). Timeouts, durations and the like are deliberately single values: a
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
place to change them. The ``load:`` and ``generator:`` sections are generated
from :mod:`bench.parameters`, the one table of the load side's knobs (and of
every parameter with a ``runs.csv`` column). :meth:`Scenario.to_yaml` writes
the scenario with every default filled in; the result loads again to an
equal object.

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

Modules
-------
:mod:`~bench.scenario.schema` the sections and fields, and the rules across
fields; :mod:`~bench.scenario.sweep` the sweepable fields and their points;
:mod:`~bench.scenario.source` bounded YAML with the line of every field,
``--set``, and YAML output; :mod:`~bench.scenario.messages` the error text;
:mod:`~bench.scenario.machine` the machine's limits;
:mod:`~bench.scenario.loading` file to :class:`Scenario`;
:mod:`~bench.scenario.command` ``bench validate``. The names other modules
use are imported here.
"""

from bench.scenario.command import add_override_argument, add_validate_arguments, summary_line, validate_command
from bench.scenario.loading import load_scenario, parse_scenario
from bench.scenario.machine import FD_MARGIN, MESSAGE_MEMORY_SHARE, fd_limit_problem, open_files_ceiling
from bench.scenario.messages import MAX_SHOWN, Issue, ScenarioError
from bench.scenario.schema import (
    MAX_RATE,
    GeneratorSpec,
    LoadSpec,
    MonitorSpec,
    NetworkSpec,
    Scenario,
    ServerSpec,
    ThresholdSpec,
    sweep,
)
from bench.scenario.source import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, MAX_NUMBER_TEXT
from bench.scenario.sweep import MAX_POINTS, SWEEP_ORDER, SWEEP_PATHS, LoadPoint, Point, offers

__all__ = [
    "FD_MARGIN",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_NUMBER_TEXT",
    "MAX_POINTS",
    "MAX_RATE",
    "MAX_SHOWN",
    "MESSAGE_MEMORY_SHARE",
    "SWEEP_ORDER",
    "SWEEP_PATHS",
    "GeneratorSpec",
    "Issue",
    "LoadPoint",
    "LoadSpec",
    "MonitorSpec",
    "NetworkSpec",
    "Point",
    "Scenario",
    "ScenarioError",
    "ServerSpec",
    "ThresholdSpec",
    "add_override_argument",
    "add_validate_arguments",
    "fd_limit_problem",
    "load_scenario",
    "open_files_ceiling",
    "offers",
    "parse_scenario",
    "summary_line",
    "sweep",
    "validate_command",
]
