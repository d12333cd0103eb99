"""``bench calibrate``: its options, and the command that measures, prints and saves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.calibration.measure import QUICK_ROUNDS, ROUNDS, Plan, calibrate
from bench.calibration.persist import DEFAULT_DIR
from bench.calibration.render import render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench calibrate``."""
    parser.add_argument(
        "--duration",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="measured window of each figure (default 3; a warmup of a quarter of it, at most 1 s, comes first)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="0.3 s per figure: a rough look in about 15 s (figures are noisy)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help=f"rounds of the generator-vs-C comparison, alternating which goes first (default "
        f"{ROUNDS}; {QUICK_ROUNDS} with --quick); the verdict needs {ROUNDS}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"where to save <timestamp>.json and latest.json (default {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--no-iperf3",
        action="store_true",
        help="measure bulk throughput with the project's own sendfile/recv_into pair even when iperf3 is installed",
    )


def run(args: argparse.Namespace) -> int:
    """``bench calibrate``: measure, print, save; 0 on success, 2 on bad input."""
    from rich.console import Console

    console = Console()
    if args.duration <= 0:
        print(f"error: --duration must be > 0 seconds, got {args.duration}", file=sys.stderr)
        return 2
    if args.rounds is not None and args.rounds < 1:
        print(f"error: --rounds must be >= 1, got {args.rounds}", file=sys.stderr)
        return 2
    plan = Plan.make(args.duration, args.quick, args.rounds)
    # 8 measured windows per round (4 C client, 4 generator), then 2 connect and 2 bulk, ~1 s of start-up each.
    estimate = (8 * plan.rounds + 4) * (plan.duration_s + plan.warmup_s + 1.0)
    console.print(f"Calibrating (about {estimate:.0f} s); keep the machine otherwise idle.")
    cal = calibrate(
        args.out, args.duration, args.quick, progress=console.print, use_iperf3=not args.no_iperf3, rounds=args.rounds
    )
    render(cal, console)
    console.print(f"Saved: {cal['saved_as']} (and latest.json beside it)")
    return 0
