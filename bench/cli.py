"""``bench``: the command line of sockbench.

Subcommands::

    bench run SCENARIO.yaml [--set FIELD=VALUE ...]   run a scenario, save, plot, report
    bench validate SCENARIO.yaml ...                  check scenario files without running
    bench serve MODEL SERVICE [options]               start one server (as python -m servers)
    bench load SERVICE HOST:PORT [options]            drive any running server
    bench calibrate                                   measure the machine's and generator's ceilings
    bench plot RESULTS_DIR                            (re)draw the figures of a results folder
    bench report RESULTS_DIR                          (re)write its self-contained HTML report
    bench compare DIR_A DIR_B [...]                   compare result sets of the same scenario

Options of a run live in the scenario file alone; ``--set`` overrides a field
of it (``--set load.clients=[1,10] --set duration=2s``) and is validated like
the file, so no option exists in two places.

Exit status (:data:`EXIT_STATUS_HELP`, shown by ``bench -h`` and in the
README): the same meanings for every subcommand, so a pipeline can tell a
broken setup (2) from a failed run (1) from a regression (99).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.format import fmt_bytes, fmt_time_us, fmt_whole
from bench.parameters import fast_clients
from bench.thresholds import EXIT_CROSSED
from bench.units import plural
from bench.vocabulary import (
    BOTH_SATURATED,
    BUSY,
    CONN_FAILURES,
    CONN_PENDING,
    FAILED,
    GENERATOR_BOUND,
    UNSTABLE,
    point_flags,
    run_generator_limit,
)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


#: What each exit status means, for every subcommand (``bench -h`` prints it).
EXIT_STATUS_HELP = f"""\
exit status (the same for every command):
  0    success (thresholds, if any, all passed)
  {EXIT_FAILED}    a run failed or nothing was measured: bench run, a run not ok; bench load, no
       request completed or a reply was corrupt; a full disk; a server that cannot listen
  {EXIT_BAD_INPUT}    bad input: usage, a scenario, a threshold, a folder that is not a results
       folder (the message names the file, line and field, and what is allowed)
  {EXIT_CROSSED}   a threshold was crossed (--threshold, or the scenario's thresholds:)
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C; 143 by SIGTERM, 129 by SIGHUP (128 + the signal);
       bench run keeps every finished run and writes the summary
  When a run failed and a threshold was crossed too, the status is {EXIT_FAILED}.
"""

#: Shown by ``bench -h``: a first session, then what a pipeline runs.
EXAMPLES = """\
examples:
  bench validate scenarios/quick.yaml            check a scenario without running it
  bench run scenarios/quick.yaml                 run it: results/<time>-quick/, report.html
  bench run scenarios/quick.yaml --set duration=2s --set models=[threading,asyncio]
  bench run scenarios/quick.yaml --threshold 'p99 < 5ms' --threshold 'errors == 0'
  bench serve threading echo --port 9000         one server, by hand
  bench load echo 127.0.0.1:9000 --clients 10 --duration 5 --threshold 'req_per_s > 20000'
  bench compare results/A results/B --threshold 'regression < 10%'
  bench columns                                  what every column of runs.csv means
  bench completion bash > ~/.local/share/bash-completion/completions/bench
"""


def exit_status_for_signal(signum: int) -> int:
    """128 + the signal number: what a shell shows for a command that a signal ended."""
    return 128 + int(signum)


# --------------------------------------------------------------------------
# bench run


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.scenario import add_override_argument

    parser.add_argument("scenario", type=Path, help="scenario file (see scenarios/)")
    add_override_argument(parser)
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="folder that receives the new results folder (default: results)",
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="skip figures and report at the end (bench plot / bench report later)"
    )
    from bench.thresholds import add_threshold_argument

    add_threshold_argument(parser)


def run_line(plan: Any, row: dict[str, Any]) -> str:
    """The one line printed when a run finishes: its headline figures and flags."""
    from bench.stats import bound_mark

    head = f"{plan.model:<11} {plan.point.label():<28} r{plan.repetition}"
    if row.get("status") != "ok":
        first = (row.get("error") or "").splitlines()[0:1]
        return f"{head}  {row.get('status', '?').upper()}: {first[0] if first else ''}"
    conn_bad = sum(int(row.get(k) or 0) for k in CONN_FAILURES)
    pending = int(row.get(CONN_PENDING) or 0)
    mem = row.get("mem_pss_peak_bytes") or row.get("mem_rss_peak_bytes")
    oldest = float(row.get("req_pending_oldest_s") or 0)
    parts = [
        f"{fmt_whole(row.get('req_per_s'))} req/s",
        f"p50 {bound_mark(row, 'lat_p50_us')}{fmt_time_us(row.get('lat_p50_us'))}",
        f"p99 {bound_mark(row, 'lat_p99_us')}{fmt_time_us(row.get('lat_p99_us'))}",
        f"errors {int(row.get('errors') or 0)}",
        f"failed connects {conn_bad}" + (f" (+{pending} still connecting)" if pending else ""),
        f"{'PSS' if row.get('mem_pss_peak_bytes') else 'RSS'} {fmt_bytes(mem)}",
        f"procs {row.get('procs_peak', '-')} threads {row.get('threads_peak', '-')}",
    ]
    if oldest >= 1.0:  # far above any answered request on loopback: these clients were ignored
        parts.append(
            f"{plural(int(row.get('req_pending') or 0), 'request')} unanswered at the end (oldest {oldest:.1f} s)"
        )
    served, clients = row.get("clients_served"), fast_clients(row)
    if served is not None and clients and served < clients:
        parts.append(f"served {served}/{clients} {'fast ' if clients < row['clients'] else ''}clients")
    limit = run_generator_limit(row)
    if limit == GENERATOR_BOUND:
        parts.append("[GENERATOR-BOUND]")
    elif limit == BOTH_SATURATED:
        parts.append("[BOTH SATURATED]")
    return f"{head}  " + "  ".join(parts)


#: The summary's columns after model and point, in the order they are placed: when the
#: terminal is too narrow for all, the ones that do not fit go to a further table.
_SUMMARY_COLUMNS = (
    "runs",
    "req/s",
    "p50",
    "p99",
    "errors",
    "CI of the median",
    "connects timed out/pending",
    "peak PSS",
    "peak RSS",
    "procs/threads",
    "flags",
)
#: The flags column wraps its text; it is never narrower than this.
_FLAGS_MIN_WIDTH = 16


def _summary_rows(results_dir: Path) -> list[dict[str, str]]:
    """Each row of :func:`bench.stats.aggregate` as the summary's cells: the same figures and flags as the report."""
    from bench.stats import bound_mark, ci_label, load_results, served_phrase

    agg = load_results(results_dir).aggregate
    rows = []
    for row in agg.to_dict("records"):
        flags, point = [], point_flags(row)
        if FAILED in point:
            flags.append(f"{row['n_failed'] + row['n_interrupted']} failed")
        if GENERATOR_BOUND in point:
            flags.append(GENERATOR_BOUND)
        if BOTH_SATURATED in point:
            flags.append("both saturated")
        if UNSTABLE in point:
            flags.append(f"unstable ({row['unstable_metrics']})")
        if BUSY in point:
            flags.append("busy machine")
        if served_phrase(row):
            flags.append(served_phrase(row))
        ci = (
            f"{fmt_whole(row['req_per_s_ci_low'])}-{fmt_whole(row['req_per_s_ci_high'])} "
            f"({ci_label(row['req_per_s_ci_level'])})"
            if row["req_per_s_ci_low"] is not None and row["req_per_s_ci_low"] == row["req_per_s_ci_low"]
            else "-"
        )
        rows.append(
            {
                "model": str(row["model"]),
                "point": str(row["label"] or "-"),
                "runs": f"{row['n_ok']}/{row['n_runs']}",
                "req/s": fmt_whole(row["req_per_s_median"]),
                "CI of the median": ci,
                "p50": bound_mark(row, "lat_p50_us") + fmt_time_us(row["lat_p50_us_median"]),
                "p99": bound_mark(row, "lat_p99_us") + fmt_time_us(row["lat_p99_us_median"]),
                "connects timed out/pending": f"{fmt_whole(row['conn_timeout_median'])}/"
                f"{fmt_whole(row['conn_pending_median'])}",
                "errors": fmt_whole(row["errors_median"]),
                "peak PSS": fmt_bytes(row["mem_pss_peak_bytes_median"]),
                "peak RSS": fmt_bytes(row["mem_rss_peak_bytes_median"]),
                "procs/threads": f"{fmt_whole(row['procs_peak_median'])}/{fmt_whole(row['threads_peak_median'])}",
                "flags": ", ".join(flags),
            }
        )
    return rows


def _summary_tables(results_dir: Path, width: int) -> list[Any]:
    """The summary as rich tables that fit ``width`` columns, never cutting a number or a model name.

    Model and point head every table; the other columns are placed in
    :data:`_SUMMARY_COLUMNS` order while they fit, the rest go to a further
    table. A cell is never narrower than its text (headers wrap at spaces
    instead); only the flags and a long point label wrap.
    """
    from rich.table import Table

    rows = _summary_rows(results_dir)
    key = ["model"] + (["point"] if any(r["point"] != "-" for r in rows) else [])
    shown = [c for c in _SUMMARY_COLUMNS if c != "flags" or any(r["flags"] for r in rows)]

    def longest_word(text: str) -> int:
        return max((len(w) for w in text.split()), default=0)

    def needed(col: str, split_headers: bool) -> int:
        head = longest_word(col) if split_headers else len(col)
        if col in ("flags", "point"):  # these wrap at spaces, down to their longest word
            return max(
                head,
                max((longest_word(r[col]) for r in rows), default=0),
                min(_FLAGS_MIN_WIDTH, max((len(r[col]) for r in rows), default=0)),
            )
        return max([head] + [len(r[col]) for r in rows])

    def table_width(cols: list[str], split_headers: bool) -> int:
        # "│ " before each cell and " │" after the last one
        return sum(needed(c, split_headers) for c in cols) + 3 * len(cols) + 1

    # One table with one-line headers if it fits; else headers one word a line, and as many tables as needed.
    split = table_width(key + shown, False) > width
    groups: list[list[str]] = [[]]
    for col in shown:
        if groups[-1] and table_width(key + groups[-1] + [col], split) > width:
            groups.append([])
        groups[-1].append(col)
    tables = []
    for i, cols in enumerate(groups):
        title = f"Summary (medians over repetitions): {results_dir}" if i == 0 else None
        table = Table(title=title, title_justify="left")
        for col in key + cols:
            wraps = col in ("flags", "point")
            table.add_column(
                "\n".join(col.split()) if split else col,
                justify="left" if col in ("model", "point", "flags") else "right",
                no_wrap=not wraps,
                overflow="fold",
                min_width=needed(col, split),
            )
        for row in rows:
            table.add_row(*(row[c] for c in key + cols))
        tables.append(table)
    return tables


def run_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.progress import RunProgress
    from bench.results import DiskFull
    from bench.runner import Interrupted, ScenarioRefused, run_scenario
    from bench.scenario import ScenarioError, load_scenario

    # Written to a file or pipe, rich would assume 80 columns and fold the
    # summary table; 200 keeps one row per line for logs.
    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        scenario = load_scenario(args.scenario, args.overrides, args.thresholds)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    progress = RunProgress(console, scenario, plots=not args.no_plots, run_line=run_line)
    started: list[Path] = []

    def on_start(results_dir: Path, plans: list[Any]) -> None:
        started.append(results_dir)
        progress.on_start(results_dir, plans)

    try:
        with progress:
            results_dir = run_scenario(
                scenario,
                results_root=args.results,
                on_start=on_start,
                on_run=progress.on_run,
                on_phase=progress.on_phase,
                plots=not args.no_plots,
                warn=progress.warn,
            )
    except ScenarioRefused as exc:
        print(f"error: {args.scenario}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DiskFull as exc:
        where = f" in {started[0]}" if started else ""
        print(
            f"error: {exc}. Every run finished before it is saved{where}; free some space and "
            f"run `bench plot` / `bench report` on the folder.",
            file=sys.stderr,
        )
        return 1
    except Interrupted as exc:
        console.print(
            f"[yellow]Interrupted[/] by {exc.by}. {_what_is_saved(exc.results_dir, exc.summary_written)}",
            highlight=False,
        )
        return exit_status_for_signal(exc.signum)
    except KeyboardInterrupt as exc:
        # Only before run_scenario took over the signals, or after it returned.
        if started:
            console.print(f"[yellow]Interrupted.[/] {_what_is_saved(started[0], None)}", highlight=False)
        else:
            console.print("[yellow]Interrupted[/] before the results folder was written.")
        return exit_status_for_signal(getattr(exc, "signum", signal.SIGINT))
    for table in _summary_tables(results_dir, console.width):
        console.print(table)
    _print_warnings(console, results_dir)
    console.print(f"Results: {results_dir}")
    if not args.no_plots:
        console.print(f"Report:  {results_dir / 'report.html'}")
    passed = _print_thresholds(console, results_dir)
    failed = _count_failed(results_dir)
    if failed:
        console.print(
            f"[red]{failed} run{'' if failed == 1 else 's'} did not finish ok[/]: see the error column of runs.csv "
            f"(exit status {EXIT_FAILED})",
            highlight=False,
        )
        return EXIT_FAILED
    if not passed:
        console.print(f"[red]A threshold was crossed[/] (exit status {EXIT_CROSSED})", highlight=False)
        return EXIT_CROSSED
    return 0


def _print_thresholds(console: Any, results_dir: Path) -> bool:
    """Print summary.json's threshold results; return whether all passed (True when there are none)."""
    from bench.results import read_summary
    from bench.thresholds import print_results

    try:
        results = read_summary(results_dir).get("thresholds", [])
    except (OSError, ValueError):
        return True  # no summary: nothing was tested, and the run's own status says why
    return print_results(results, lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))


def _count_failed(results_dir: Path) -> int:
    """Rows of runs.csv whose status is not ``ok``."""
    import csv

    try:
        with open(results_dir / "runs.csv", newline="", encoding="utf-8") as fh:
            return sum(1 for row in csv.DictReader(fh) if row.get("status") != "ok")
    except FileNotFoundError:  # a scenario with no runs (every model left out)
        return 0


def _what_is_saved(results_dir: Path, summary_written: bool | None) -> str:
    """One sentence saying what the results folder holds, read from the folder itself."""
    import csv

    try:
        with open(results_dir / "runs.csv", newline="", encoding="utf-8") as fh:
            statuses = [row.get("status") for row in csv.DictReader(fh)]
    except FileNotFoundError:
        statuses = []
    except OSError as exc:
        return f"The results folder is {results_dir}; runs.csv cannot be read ({exc.strerror})."
    done = statuses.count("ok") + statuses.count("failed")
    if summary_written is None:
        summary_written = (results_dir / "summary.json").is_file()
    text = f"{done} finished run{' is' if done == 1 else 's are'} saved in {results_dir}"
    if "interrupted" in statuses:
        text += " (the run that was stopped is recorded as interrupted)"
    if not statuses:
        text = f"No run finished; {results_dir} holds the scenario and the environment only"
    if summary_written:
        return text + "; summary.json is written."
    return text + f"; summary.json was not written (`bench report {results_dir}` works from runs.csv)."


def _print_warnings(console: Any, results_dir: Path) -> None:
    from bench.results import read_summary

    try:
        summary = read_summary(results_dir)
    except (OSError, ValueError):
        return
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)


# --------------------------------------------------------------------------
# bench serve: the servers' own command line, reached from bench


def serve_command(args: argparse.Namespace) -> int:
    from servers.cli import main as servers_main

    return servers_main(args.server_args, prog="bench serve")


# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from bench import compare, plots, report, scenario
    from bench.calibration import cli as calibrate
    from bench.loadgen import cli as load_cli

    parser = argparse.ArgumentParser(
        prog="bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="sockbench: measure and teach how server concurrency models (socketserver,\n"
        "selectors, asyncio, a C reference) behave under load.",
        epilog=EXAMPLES + "\n" + EXIT_STATUS_HELP + "\nbench COMMAND -h says more about each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (sockbench) {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str,
        help_text: str,
        add_args: Callable[[argparse.ArgumentParser], object],
        handler: Callable[[argparse.Namespace], int],
        **kwargs: Any,
    ) -> None:
        p = sub.add_parser(name, help=help_text, description=help_text, **kwargs)
        add_args(p)
        p.set_defaults(handler=handler)

    add(
        "run",
        "run a scenario: start each server, drive it, measure, save, plot, report",
        _add_run_arguments,
        run_command,
    )
    add(
        "validate",
        "check scenario files without running them",
        scenario.add_validate_arguments,
        scenario.validate_command,
    )
    add(
        "serve",
        "start one server model by hand (see bench serve -h)",
        lambda p: p.add_argument("server_args", nargs=argparse.REMAINDER),
        serve_command,
        add_help=False,
    )
    add(
        "load",
        "drive a running server (any RFC 862 echo server works) and print what was measured",
        load_cli.add_arguments,
        load_cli.run,
    )
    add(
        "calibrate",
        "measure the machine's ceilings and the load generator's own",
        calibrate.add_arguments,
        calibrate.run,
    )
    add("plot", "draw the figures of a results folder", plots.add_plot_arguments, plots.plot_command)
    add(
        "report",
        "write the self-contained HTML report of a results folder",
        report.add_report_arguments,
        report.report_command,
    )
    add(
        "compare",
        "compare result sets of the same scenario (ratios, significance, overlays)",
        compare.add_compare_arguments,
        compare.compare_command,
    )
    add(
        "columns",
        "print what every column of runs.csv and timeline.csv means (each results folder has it as COLUMNS.md)",
        _add_columns_arguments,
        columns_command,
    )
    add(
        "completion",
        "print a shell completion script (bash, zsh, fish, ...; see bench -h)",
        _add_completion_arguments,
        lambda args: completion_command(args, parser),
    )
    return parser


def _add_columns_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.results import COLUMN_FILES

    parser.add_argument(
        "file",
        nargs="?",
        choices=list(COLUMN_FILES),
        metavar="FILE",
        help=f"only this file's columns ({' or '.join(COLUMN_FILES)}; default: both)",
    )


def columns_command(args: argparse.Namespace) -> int:
    """Print the data dictionary (Markdown) for this machine's CPUs, as ``bench run`` writes it."""
    from bench.results import COLUMN_FILES, columns_markdown

    print(columns_markdown(files=[args.file] if args.file else list(COLUMN_FILES)))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sockbench")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _add_completion_arguments(parser: argparse.ArgumentParser) -> None:
    import shtab

    parser.add_argument("shell", choices=shtab.SUPPORTED_SHELLS, help="the shell to complete in")


def completion_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the completion script shtab builds from the parser itself: it can never list a stale option."""
    import shtab

    print(shtab.complete(parser, shell=args.shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        # Everything after "serve" belongs to the servers' own parser, --help included.
        return serve_command(argparse.Namespace(server_args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return exit_status_for_signal(getattr(exc, "signum", signal.SIGINT))
