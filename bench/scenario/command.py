"""``bench validate`` and the ``--set`` argument it shares with ``bench run``."""

import argparse
import sys
from pathlib import Path

from bench.scenario.loading import load_scenario
from bench.scenario.messages import ScenarioError
from bench.scenario.schema import Scenario
from bench.scenario.sweep import offers
from bench.units import plural
from servers.registry import MODELS


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
        partial = [m for m in scenario.models if not all(offers(m, service) for service in scenario.services)]
        offered = sorted({service for m in partial for service in MODELS[m].services} & set(scenario.services))
        note = (
            f" ({', '.join(partial)} {'runs' if len(partial) == 1 else 'run'} the {' and '.join(offered)} points only)"
        )
    loop = scenario.loop_note()
    return (
        f"ok: {file}: {plural(n_models, 'model')} x {plural(n_points, 'point')} x {plural(reps, 'repetition')} = "
        f"{plural(runs, 'run')}, "
        f"about {scenario.estimate_s():.0f} s{note}" + (f"; {loop}" if loop else "")
    )
