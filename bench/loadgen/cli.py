"""``bench load``: run the load generator alone against any running server.

    bench load echo 127.0.0.1:7000 --clients 100 --duration 10 --warmup 2
    bench load file 127.0.0.1:7001 --clients 10 --duration 5 --files-root /srv/files
    bench load http 127.0.0.1:7002 --clients 10 --duration 5 --files-root /srv/files --path index.html
    bench load echo [::1]:7000 --clients 50 --duration 10 --rate 20000 --json

``add_arguments`` fills an :class:`argparse.ArgumentParser` (the lead's
``bench`` command mounts it as a subcommand) and ``run`` executes parsed
arguments. ``python -m bench.loadgen.cli ...`` works the same way.

Defaults are ``bench run``'s: the native engine where it builds
(``--engine``), and the generator on the CPUs ``bench run``'s default
``split`` placement gives it (``--placement``; on 2 CPUs: CPU 1, for a
server on CPU 0), one worker per CPU.

A rate (``--rate``) selects the open loop; without it the run is closed loop.
File targets come either from ``--file NAME --file-size N`` pairs (sizes are
checked; checksums cannot be, since the content is unknown) or from
``--files-root DIR``, which computes size and SHA-256 of each ``--file`` under
DIR, or of every regular file under DIR when no ``--file`` is given. The http
service takes the same targets (``--path`` is ``--file``): each names a file
relative to the server's root and is requested as ``GET /NAME``; each client
goes through them in turn, or at random with ``--path-order random``. Both
engines speak http, and timeauth, which logs in as ``--login NAME:PASSWORD``.

Error handling: bad input (an unparsable value, a non-loopback target without
``--allow-remote``, a missing file) prints one ``bench load: error: ...`` line
naming the problem and the fix, and exits 2; a failed worker, no request
completed or a corrupt reply exits 1; a crossed ``--threshold`` exits 99;
Ctrl-C, SIGTERM or SIGHUP exit 128 + the signal (130, 143, 129) after every
worker is reaped. No traceback for any of these.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import units
from bench.loadgen.driver import LoadGenError, run_load
from bench.loadgen.spec import FILE_SERVICES, SERVICES, FileTarget, LoadResult, LoadSpec, lower_bound_column
from bench.parameters import PARAMETERS, Parameter, load_spec_parameters
from bench.placement import PLACEMENTS, placement_cpus
from bench.stopping import signal_name, signum_of, stop_signals
from bench.thresholds import (
    EXIT_CROSSED,
    LOAD_STATISTIC,
    Measured,
    ThresholdError,
    add_threshold_argument,
    check,
    parse_threshold,
    print_results,
)
from bench.units import plural
from bench.vocabulary import ERROR_COLUMNS, generator_short_of_cpu

#: Bytes hashed per read when computing file checksums: 1 MiB keeps the
#: number of reads low without holding a large file in memory.
_HASH_CHUNK = 1024 * 1024


def _argument_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert`` as an argparse type: its ValueError (a UnitError names the units) becomes the usage error."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = convert.__name__
    return parse


#: Durations and sizes as a scenario writes them (bench.units: 500ms, 1m = 60 s; 1KiB, 1MB).
parse_seconds = _argument_type(units.parse_duration)
parse_size = _argument_type(units.parse_size)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


#: Text to value for each kind of parameter (bench.parameters.KINDS); bounds are checked after.
_KIND_PARSERS: dict[str, Callable[[str], Any]] = {
    "count": _whole,
    "whole": _whole,
    "size": units.parse_size,
    "duration": units.parse_duration,
    "rate": _number,
    "fraction": lambda text: float(units.parse_fraction(text)),  # type: ignore[arg-type]  # a str gives a float
    "choice": str,
}
#: How --help shows each kind's value.
_METAVARS = {"count": "N", "whole": "N", "size": "SIZE", "duration": "DURATION", "rate": "R", "fraction": "F"}


def _parameter_type(parameter: Parameter) -> Callable[[str], Any]:
    """The argparse type of a parameter's flag: parsed by kind, then its bounds checked (bench.parameters)."""
    convert = _KIND_PARSERS[parameter.kind]

    def parse(text: str) -> Any:
        value = convert(text)
        problem = parameter.problem(value)
        if problem:
            raise ValueError(f"{text!r}: {problem}")
        return value

    parse.__name__ = parameter.kind
    return _argument_type(parse)


def _add_parameter_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per load and generator parameter that has one (bench.parameters)."""
    for parameter in [p for p in PARAMETERS if p.section in ("load", "generator") and p.flag]:
        if parameter.kind == "flag":  # --name / --no-name
            parser.add_argument(
                parameter.option,
                dest=parameter.name,
                action=argparse.BooleanOptionalAction,
                default=parameter.default,
                help=parameter.help,
            )
            continue
        shown = parameter.default
        if parameter.kind == "size" and shown is not None:
            shown = units.format_size(shown)
        elif parameter.kind == "duration" and shown is not None:
            shown = units.format_duration(shown)
        extra = {"choices": parameter.choices} if parameter.kind == "choice" else {"metavar": _METAVARS[parameter.kind]}
        parser.add_argument(
            parameter.option,
            dest=parameter.name,
            type=_parameter_type(parameter),
            required=parameter.flag_required,
            default=None if parameter.flag_required else parameter.default,
            help=parameter.help + ("" if parameter.flag_required or shown is None else f" (default {shown})"),
            **extra,
        )


def parse_cpus(text: str) -> set[int]:
    """``"0,1"``, ``"0-3"``, ``"0-1,3"`` -> a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list; give e.g. 0,1 or 0-3")
        lo = int(m.group(1))
        cpus.update(range(lo, int(m.group(2) or lo) + 1))
    return cpus


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6ADDR]:PORT`` -> (host, port)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT; give e.g. 127.0.0.1:7000 or [::1]:7000")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``bench load``'s arguments to ``parser``."""
    parser.add_argument("service", choices=SERVICES, help="protocol the server speaks")
    parser.add_argument(
        "target", type=parse_target, metavar="HOST:PORT", help="server address (loopback unless --allow-remote)"
    )
    parser.add_argument(
        "--duration",
        type=parse_seconds,
        required=True,
        metavar="DURATION",
        help="measured window: seconds, or with a unit (500ms, 10s, 1m)",
    )
    parser.add_argument(
        "--warmup",
        type=parse_seconds,
        default=0.0,
        metavar="DURATION",
        help="load before the window, not counted (default 0)",
    )
    _add_parameter_flags(parser)
    parser.add_argument(
        "--file",
        "--path",
        dest="file",
        action="append",
        default=[],
        metavar="NAME",
        help="file (http: path under the root) to request (repeatable)",
    )
    parser.add_argument(
        "--file-size",
        action="append",
        type=parse_size,
        default=[],
        metavar="SIZE",
        help="size of the matching --file, bytes or with a unit (1KiB, 1MB) (when --files-root is not given)",
    )
    parser.add_argument(
        "--files-root",
        type=Path,
        metavar="DIR",
        help="compute sizes and SHA-256 of --file names (or of every file) under DIR",
    )
    parser.add_argument(
        "--login",
        default="",
        metavar="NAME:PASSWORD",
        help="timeauth: the login every client uses (one of the server's --credentials lines)",
    )
    parser.add_argument(
        "--cpus",
        type=parse_cpus,
        metavar="LIST",
        help="pin generator workers to these CPUs, e.g. 1 or 0-1 (overrides --placement)",
    )
    parser.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default=PLACEMENTS[0],
        help="generator CPUs as bench run places them, for a server pinned the bench run way: "
        "split (default) = the CPUs bench run leaves the generator (CPU 1 of 2, the server "
        "on CPU 0), one worker each; shared = the server's CPU 0; none = unpinned, one worker per CPU",
    )
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    parser.add_argument(
        "--remote-workers",
        type=_argument_type(_whole),
        default=0,
        metavar="N",
        help="engine locust: N more workers, started by hand on other hosts with the command "
        "printed (the local ones: --workers, default none then)",
    )
    parser.add_argument(
        "--master-bind",
        metavar="ADDR",
        help="engine locust: address the master listens on for workers (default 127.0.0.1; "
        "another needs --allow-remote)",
    )
    add_threshold_argument(parser, per_model=False)


def file_targets(names: list[str], sizes: list[int], root: Path | None) -> list[FileTarget]:
    """Targets from the command line; raise ValueError with the fix on bad input."""
    if root is None:
        if len(names) != len(sizes):
            raise ValueError(
                f"give one --file-size per --file ({len(names)} files, {len(sizes)} sizes), "
                f"or --files-root DIR to compute sizes and checksums"
            )
        return [FileTarget(n, s, "") for n, s in zip(names, sizes)]
    if not root.is_dir():
        raise ValueError(f"--files-root {root} is not a directory")
    paths = [root / n for n in names] if names else sorted(p for p in root.rglob("*") if p.is_file())
    targets = []
    for p in paths:
        if not p.is_file():
            raise ValueError(f"{p} is not a file under --files-root {root}")
        digest = hashlib.sha256()
        with p.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        targets.append(FileTarget(p.relative_to(root).as_posix(), p.stat().st_size, digest.hexdigest()))
    if not targets:
        raise ValueError(f"--files-root {root} holds no files")
    return targets


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    """Build the :class:`LoadSpec` the arguments describe."""
    host, port = args.target
    files = file_targets(args.file, args.file_size, args.files_root) if args.service in FILE_SERVICES else []
    parameters = {p.spec_name: getattr(args, p.name) for p in load_spec_parameters() if p.flag}
    return LoadSpec(
        service=args.service,
        host=host,
        port=port,
        duration_s=args.duration,
        warmup_s=args.warmup,
        files=files,
        login=args.login,
        mode="open" if args.rate is not None else "closed",
        cpus=args.cpus if args.cpus is not None else placement_cpus(args.placement)[1],
        allow_remote=args.allow_remote,
        **parameters,
    )


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value:,}{unit}"


def _lat(row: dict[str, Any], col: str) -> str:
    """A latency cell, ``>= N`` when the percentile is only a lower bound (see bench.loadgen.merge)."""
    return (">= " if row[lower_bound_column(col)] else "") + _fmt(row[col])


def _connect_failures(row: dict[str, Any]) -> int | None:
    """Failed connects in ``row``; None if an engine could not class them (wrk: its columns are None, shown "-")."""
    counts = [row[f"conn_{k}"] for k in ("refused", "reset", "timeout", "emfile", "eaddrnotavail", "other")]
    return None if None in counts else sum(counts)


def print_table(spec: LoadSpec, result: LoadResult) -> None:
    """A short human summary of ``result`` on stdout."""
    from rich.console import Console
    from rich.table import Table

    r = result.row
    table = Table(
        title=f"bench load {spec.service} {spec.host}:{spec.port}, {plural(spec.clients, 'client')}, "
        f"{spec.mode} loop" + (f" at {spec.rate:g}/s" if spec.mode == "open" else "")
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    failed = _connect_failures(r)
    mb_per_s = "-" if r["mb_per_s"] is None else f"{r['mb_per_s']:,.2f}"
    rows = [
        ("requests in window", f"{r['requests']:,} in {r['duration_s']:g} s"),
        ("throughput", f"{r['req_per_s']:,.0f} req/s, {mb_per_s} MB/s"),
        ("clients served", f"{_fmt(r['clients_served'])} / {spec.mix()['fast']:,}"),
        ("latency p50 / p90 / p99", f"{_lat(r, 'lat_p50_us')} / {_lat(r, 'lat_p90_us')} / {_lat(r, 'lat_p99_us')} us"),
        ("latency p99.9 / max", f"{_lat(r, 'lat_p999_us')} / {_lat(r, 'lat_max_us')} us"),
        ("requests never completed", f"{_fmt(r['lat_censored'])} (in the percentiles at their wait so far)"),
        ("time to first byte p50 / p99", f"{_fmt(r['ttfb_p50_us'])} / {_fmt(r['ttfb_p99_us'])} us"),
    ]
    if spec.mode == "open":
        rows.append(
            ("uncorrected p99, late starts", f"{_fmt(r['lat_uncorrected_p99_us'])} us, {_fmt(r['late_starts'])}")
        )
    rows += [
        ("connects ok / failed", f"{_fmt(r['conn_ok'])} / {_fmt(failed)}"),
        (
            "connect p50 / p99 / max",
            f"{_fmt(r['connect_p50_us'])} / {_fmt(r['connect_p99_us'])} / {_fmt(r['connect_max_us'])} us",
        ),
        (
            "errors",
            f"{r['errors']:,}" + "".join(f", {col.removeprefix('err_')} {r[col]:,}" for col in ERROR_COLUMNS if r[col])
            if r["errors"]
            else "none",
        ),
        ("generator engine, workers, loop", f"{r['gen_engine']}, {r['gen_workers']}, {result.loop}"),
        ("source addresses", f"{r['gen_source_addrs']}"),
        (
            "generator CPU, run-queue wait",
            f"{_fmt(r['gen_cpu_pct_max'], '%')} of a core, "
            f"{_fmt(r['gen_runq_wait_pct_max'], '%')} of the window (busiest worker)"
            + (
                " SHORT OF CPU (the server's CPU is not measured here: see the warning)"
                if generator_short_of_cpu(r["gen_busy_pct_max"], r["gen_runq_wait_pct_max"])
                else ""
            ),
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print(table)
    for k in ("refused", "reset", "timeout", "emfile", "eaddrnotavail", "other"):
        if r[f"conn_{k}"]:
            extra = f" {result.conn_other_errnos}" if k == "other" else ""
            console.print(f"connects {k}: {r[f'conn_{k}']:,}{extra}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)


def parse_thresholds(texts: list[str]) -> list[Any]:
    """``--threshold`` texts of bench load; ValueError naming the bad one (a model needs bench run)."""
    thresholds = []
    for text in texts:
        try:
            threshold = parse_threshold(text)
        except ThresholdError as exc:
            raise ValueError(f"--threshold {exc}") from None
        if threshold.model is not None:
            raise ValueError(
                f"--threshold {text!r}: bench load drives one server, whatever its model; "
                f"drop '{threshold.model}:' (a per-model threshold belongs to bench run)"
            )
        thresholds.append(threshold)
    return thresholds


def failure_of(result: LoadResult) -> str | None:
    """Why a finished load measured nothing trustworthy (exit status 1), or None.

    No request completed (nothing listens, every connect refused or timed
    out), or a reply had wrong bytes: what was measured is not an echo,
    file or http server's behaviour. Resets and timeouts are behaviour under load,
    not failures of the measurement; they are counted and shown.
    """
    r = result.row
    if r["err_corrupt"]:
        return f"{r['err_corrupt']:,} replies were corrupt (wrong bytes or size): the server does not answer correctly"
    if not r["requests"]:
        return (
            f"no request completed in the window ({_fmt(r['conn_ok'])} connects ok, "
            f"{_fmt(_connect_failures(r))} failed, "
            f"{r['errors']:,} request errors): nothing was measured"
        )
    return None


def run(args: argparse.Namespace) -> int:
    """Execute ``bench load`` for parsed ``args``; return the exit status.

    0 measured; 1 the generator failed or nothing trustworthy was measured
    (:func:`failure_of`); 2 bad input; 99 a ``--threshold`` was crossed;
    130 interrupted.
    """
    try:
        thresholds = parse_thresholds(getattr(args, "thresholds", []))
        spec = spec_from_args(args)
        with stop_signals():  # SIGTERM and SIGHUP reap the workers as Ctrl-C does
            if args.remote_workers or args.master_bind:
                result = _run_locust(spec, args)
            else:
                result = run_load(spec)
    except ValueError as exc:
        print(f"bench load: error: {exc}", file=sys.stderr)
        return 2
    except LoadGenError as exc:
        print(f"bench load: the load generator failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"bench load: interrupted by {signal_name(signum_of(exc))}; every worker is stopped", file=sys.stderr)
        return 128 + signum_of(exc)
    checked = [
        check(
            t,
            [Measured("", "", result.row.get(t.metric), bool(result.row.get(lower_bound_column(t.metric))))],
            LOAD_STATISTIC,
        )
        for t in thresholds
    ]
    if args.json:
        print(result.to_json() if not checked else _with_thresholds(result.to_json(), checked))
    else:
        print_table(spec, result)
        print_results(checked, print)
    failure = failure_of(result)
    if failure:
        print(f"bench load: {failure} (exit status 1)", file=sys.stderr)
        return 1
    if not all(c["passed"] for c in checked):
        print(f"bench load: a threshold was crossed (exit status {EXIT_CROSSED})", file=sys.stderr)
        return EXIT_CROSSED
    return 0


def _run_locust(spec: LoadSpec, args: argparse.Namespace) -> LoadResult:
    """``--remote-workers``/``--master-bind``: the locust engine with workers on other hosts."""
    if spec.engine != "locust":
        raise ValueError("--remote-workers and --master-bind are for --engine locust")
    from bench.loadgen.locust_engine import run_locust

    return run_locust(spec, remote_workers=args.remote_workers, master_bind=args.master_bind).result


def _with_thresholds(text: str, checked: list[dict[str, Any]]) -> str:
    import json

    data = json.loads(text)
    data["thresholds"] = checked
    return json.dumps(data)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m bench.loadgen.cli``)."""
    parser = argparse.ArgumentParser(prog="bench load", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
