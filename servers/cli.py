"""``python -m servers MODEL SERVICE [options]`` (also ``bench serve``).

The options are generated from the fields of :class:`servers.config.ServerOptions`
(name, type, default, ``help`` metadata), so the command line, the scenario
files and :meth:`ServerOptions.to_argv` can never disagree: a field added there
appears here, and ``to_argv`` output parses back to the same options.

Output contract: once listening, exactly one JSON line on stdout, flushed::

    {"event": "ready", "model": "forking", "service": "echo", "host": "127.0.0.1",
     "port": 40123, "pid": 4242, "backlog": 5}

(with ``--cpu-work-us`` also ``"cpu_work_us"``, ``"cpu_work_iterations"``, the
loop count each chunk runs, and ``"cpu_work_source"``: ``"given"`` by
``--cpu-work-iterations`` or ``"calibrated"`` at start-up), and nothing else on stdout (``sys.stdout`` is pointed at stderr after
that line, so a stray ``print`` cannot corrupt the stream a launcher reads)
but, from a model whose parent supervises workers (prefork, reuseport), one
JSON line after a clean stop, with what only that parent knows::

    {"event": "stopped", "worker_restarts": 3}
Errors of single connections are one line each on stderr.

Error handling
--------------
Bad input (an unknown model, a service the model lacks, ``file`` without
``--root``, ``--loop uvloop`` without uvloop, an option out of range) prints
one ``servers: error: ...`` line that names the problem and the fix, and
:func:`main` returns 2 without a traceback. A failure to listen (port in use)
returns 1 the same way. A clean stop on SIGTERM/SIGINT returns 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from servers import registry
from servers.config import CRASH_KINDS, LOOPS, POOL_OPTIONS, PRELOAD_USES, SERVICES, ServerOptions
from servers.service import ROOT_SERVICES, SetupError, root_directory
from servers.work import cpu_work

PROG = "python -m servers"

DESCRIPTION = """\
Run one sockbench server: MODEL decides how connections are served
concurrently, SERVICE what each connection gets. Prints one JSON "ready" line
on stdout once listening; stops cleanly on SIGTERM or Ctrl-C."""


def _models_help() -> str:
    """The ``models:`` section of the help, from each model's label in the registry."""
    lines = ["models:"]
    for m in registry.MODELS.values():
        # 14 columns: the widest common name and two spaces; 78: a terminal's width less a margin
        lines += textwrap.wrap(m.label, 78, initial_indent=f"  {m.name:<12}  ", subsequent_indent=" " * 16)
    return "\n".join(lines)


EPILOG = (
    _models_help()
    + """

services:
  echo          RFC 862: every byte sent back until the client closes
  file          request "PATH\\n", answer "OK SIZE\\n" + bytes or "ERR CODE REASON\\n"
  http          HTTP/1.1 GET and HEAD of files under --root (keep-alive, pipelining)
  timeauth      "name?", name, ACK byte, password, "TIME ..." for a login of
                --credentials FILE (name:password lines)

timeouts and limits (every model; c-reference: idle and send only):
  Each connection is closed, with one line on stderr, when it is idle for
  --idle-timeout (30 s), its request line is incomplete --request-timeout
  after its first byte (10 s; file, http, timeauth) or a reply makes no progress for
  --send-timeout (30 s). 0 turns each off: the stdlib's servers wait forever.
  Out of file descriptors, a server stops accepting for 0.1 s doubling to
  1 s, logging one line per pause.

example:
  python -m servers threading echo --port 7000 &   then:   nc 127.0.0.1 7000"""
)

#: Exit status for bad input, as argparse uses.
EXIT_USAGE = 2
#: Exit status when the server could not start (e.g. the port is taken).
EXIT_FAILURE = 1

#: Lower bounds of numeric options (inclusive).
MINIMUM = {
    "port": 0,
    "backlog": 0,
    "cpu_work_us": 0,
    "cpu_work_iterations": 0,
    "max_children": 1,
    "threads": 0,
    "workers": 0,
    "idle_timeout": 0,
    "request_timeout": 0,
    "send_timeout": 0,
    "crash_every": 0,
    "preload_mib": 0,
}
# 16 GiB of preload: far beyond any lesson (64 MiB shows copy-on-write), so
# only a typo (a size in KiB or bytes) is refused before it exhausts memory.
MAXIMUM = {"port": 65535, "preload_mib": 16384}

#: The values of the options that take one of a few words.
CHOICES = {"loop": LOOPS, "crash": CRASH_KINDS, "preload_use": PRELOAD_USES}


class UsageError(Exception):
    """Bad command-line input; the message names the problem and the fix."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bounded_number(name: str, kind: type[int] | type[float] = int) -> Callable[[str], Any]:
    low, high = MINIMUM.get(name), MAXIMUM.get(name)

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; use 0 to turn it off")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is above the maximum {high}")
        return value

    parse.__name__ = "integer" if kind is int else "number"  # argparse names the type in its messages
    return parse


def _add_option(group: argparse._ArgumentGroup, field: dataclasses.Field[Any], kind: Any) -> None:
    """One option generated from one ServerOptions field."""
    help_text = field.metadata.get("help", "")
    default = field.default
    if kind is bool:
        group.add_argument(
            _flag(field.name),
            action=argparse.BooleanOptionalAction,
            default=default,
            help=f"{help_text} (default: {'on' if default else 'off'})",
        )
        return
    arguments: dict[str, Any] = {"default": default, "dest": field.name}
    if kind is int:
        arguments["type"] = _bounded_number(field.name)
        arguments["metavar"] = "N"
    elif kind is float:
        arguments["type"] = _bounded_number(field.name, float)
        arguments["metavar"] = "S"
    elif kind in (Path, Path | None):
        arguments["type"] = Path
        arguments["metavar"] = field.metadata.get("metavar", "DIR")
    else:
        arguments["type"] = str
        if field.name in CHOICES:
            arguments["choices"] = CHOICES[field.name]
            arguments["metavar"] = "{" + ",".join(CHOICES[field.name]) + "}"
    shown = "none" if default is None else default
    group.add_argument(_flag(field.name), help=f"{help_text} (default: {shown})", **arguments)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of ``python -m servers`` (or ``prog``); its options are generated from :class:`ServerOptions`."""
    missing = [f"  {name}: {why}" for name, why in registry.available_models().items() if why]
    epilog = EPILOG + ("\n\nnot available here:\n" + "\n".join(missing) if missing else "")
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(registry.MODELS)}")
    parser.add_argument("service", metavar="SERVICE", choices=SERVICES, help=f"one of: {', '.join(SERVICES)}")
    group = parser.add_argument_group("server options (the same for every model)")
    hints = typing.get_type_hints(ServerOptions)
    for field in dataclasses.fields(ServerOptions):
        _add_option(group, field, hints[field.name])
    return parser


def options_from_namespace(namespace: argparse.Namespace) -> ServerOptions:
    """The :class:`ServerOptions` an argparse namespace of :func:`build_parser` describes."""
    return ServerOptions(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(ServerOptions)})


def check(model_name: str, service: str, options: ServerOptions) -> ModuleType:
    """Validate the combination before listening; returns the model's module or raises :class:`UsageError`.

    The model's facts and its own check are the registry's
    (:meth:`servers.registry.Model.check`), the ``--root`` rules the file
    service's (:func:`servers.service.root_directory`); this only turns their
    errors into usage errors.
    """
    try:
        model = registry.model(model_name)
        module = model.check(service, options)
        if service in ROOT_SERVICES:
            root_directory(options.root, service)
        if service == "timeauth":
            from servers.timeauth import Credentials

            Credentials.load(options.credentials)
    except (registry.UnknownModel, registry.ModelUnavailable) as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        raise UsageError(f"model {model_name!r} cannot be loaded ({exc}); is it installed/built?") from None
    except SetupError as exc:
        raise UsageError(str(exc)) from None
    if options.cpu_work_iterations and not options.cpu_work_us:
        raise UsageError(
            f"--cpu-work-iterations {options.cpu_work_iterations}: a positive count that goes with --cpu-work-us "
            "(the iterations that make up those microseconds); leave it 0 to calibrate at start-up"
        )
    check_handler_options(options)
    for name, models in POOL_OPTIONS.items():
        if getattr(options, name) and model_name not in models:
            raise UsageError(
                f"{_flag(name)} {getattr(options, name)} sizes the pool of {', '.join(models)} only; "
                f"{model_name!r} has no such pool: remove {_flag(name)}"
            )
    return module


def check_handler_options(options: ServerOptions) -> None:
    """Refuse a ``--crash`` or ``--preload-*`` option that the others it needs do not accompany."""
    if options.crash != "none" and not options.crash_every:
        raise UsageError(
            f"--crash {options.crash} needs --crash-every N, the requests between two crashes "
            "(1 = every request): add it, or remove --crash"
        )
    if options.crash_every and options.crash == "none":
        raise UsageError(
            f"--crash-every {options.crash_every} counts requests between crashes of a kind: add --crash "
            f"{{{','.join(CRASH_KINDS[1:])}}}, or remove --crash-every"
        )
    defaults = ServerOptions()
    if not options.preload_mib:
        for name in ("preload_use", "preload_freeze"):
            if getattr(options, name) != getattr(defaults, name):
                raise UsageError(
                    f"{_flag(name)} says how the preloaded data is used: add --preload-mib N, or remove it"
                )


def resolve_cpu_work(options: ServerOptions) -> tuple[ServerOptions, str]:
    """Fix the loop count of ``--cpu-work-us`` before serving; returns the options and where the count came from.

    ``"given"`` when ``--cpu-work-iterations`` was passed, ``"calibrated"``
    when this process calibrated it now (before listening, so no client
    waits for it), ``""`` when there is no CPU work.
    """
    if not options.cpu_work_us:
        return options, ""
    if options.cpu_work_iterations:
        return options, "given"
    return dataclasses.replace(options, cpu_work_iterations=cpu_work(options.cpu_work_us).iterations), "calibrated"


def ready_printer(
    model: str, service: str, options: ServerOptions, work_source: str = ""
) -> Callable[[str, int], None]:
    """The ``ready`` callback given to a model: print the ready line, then keep stdout for it alone."""

    def ready(host: str, port: int) -> None:
        line = {
            "event": "ready",
            "model": model,
            "service": service,
            "host": host,
            "port": port,
            "pid": os.getpid(),
            "backlog": options.backlog,
        }
        if options.cpu_work_us:
            # The CPU work every chunk costs, as loop iterations, and who
            # calibrated them: what the run's server CPU must account for.
            line.update(
                cpu_work_us=options.cpu_work_us,
                cpu_work_iterations=options.cpu_work_iterations,
                cpu_work_source=work_source,
            )
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        sys.stdout = sys.stderr

    return ready


def error(message: str, prog: str = "servers") -> None:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def _error_prefix(prog: str) -> str:
    return "servers" if prog == PROG else prog


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run ``python -m servers`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``prog`` is the name usage and help show (``bench serve`` when reached from bench).
    """
    parser = build_parser(prog)
    try:
        namespace = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the problem (or --help)
        return int(exc.code or 0)
    options = options_from_namespace(namespace)
    try:
        model = check(namespace.model, namespace.service, options)
    except UsageError as exc:
        error(str(exc), _error_prefix(prog))
        return EXIT_USAGE
    options, work_source = resolve_cpu_work(options)
    stdout = sys.stdout
    try:
        facts = model.serve(
            namespace.service, options, ready_printer(namespace.model, namespace.service, options, work_source)
        )
    except SetupError as exc:
        error(str(exc), _error_prefix(prog))
        return EXIT_FAILURE
    finally:
        sys.stdout = stdout
    if facts:  # a supervising model's stop facts (see the module docstring)
        stdout.write(json.dumps({"event": "stopped", **facts}) + "\n")
        stdout.flush()
    return 0
