"""How far is ``bench run``'s time estimate from the time it really takes?

Not a test: it prints figures. Each scenario given is run with ``bench run``
(``--set`` overrides apply to all), ``--rounds`` times in a row, in a fresh
process each, with a timings history of its own (a temporary
``XDG_CACHE_HOME``), so round 1 shows the first guess and the later rounds
what was learned from the rounds before. Printed per round: the estimate the
run announced, the measured wall time of the whole command (finish stage
included), the error in percent, and the load average, since waits for an
idle machine grow with other work, and whether the estimate was a first
guess or learned from the rounds before (the scenarios share one history, so
a later scenario learns from the earlier ones too); at the end, per scenario,
the error of its last round, the learned one. The goal on an idle machine:
within 20%.

    python benchmarks/estimate_error.py          # quick and small-backlog, 2 rounds each
    python benchmarks/estimate_error.py scenarios/quick.yaml scenarios/small-backlog.yaml
    python benchmarks/estimate_error.py scenarios/quick.yaml --set duration=1s --rounds 3

Resource handling: each ``bench run`` has a time limit (``--timeout``, then
SIGKILL of its process group); results and history go to a temporary folder
removed at the end (``--keep DIR`` keeps the results folders, e.g. to time
their finish stage with ``benchmarks/finish_stage.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

#: "22 runs, about 3 min 05 s (" in bench run's first lines
_ANNOUNCED = re.compile(r"runs?, about (?:(\d+) h )?(?:(\d+) min )?(?:(\d+) s)?")


def announced_seconds(text: str) -> float | None:
    """The estimate bench run announced, in seconds."""
    match = _ANNOUNCED.search(text)
    if not match or not any(match.groups()):
        return None
    h, m, s = (int(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenarios",
        nargs="*",
        type=Path,
        default=[HERE / "scenarios" / "quick.yaml", HERE / "scenarios" / "small-backlog.yaml"],
        help="scenarios to run (default: quick and small-backlog)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per bench run before SIGKILL")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="write the results folders under DIR and keep them (default: a temporary folder)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sockbench-estimate-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(HERE), XDG_CACHE_HOME=str(Path(tmp) / "cache"))
        last: dict[str, str] = {}
        for scenario in args.scenarios:
            for round_no in range(1, args.rounds + 1):
                results = args.keep or Path(tmp) / "r"
                command = [sys.executable, "-m", "bench", "run", str(scenario), "--results", str(results)]
                command += [x for o in args.overrides for x in ("--set", o)]
                began = time.monotonic()
                proc = subprocess.Popen(
                    command,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
                try:
                    out, _ = proc.communicate(timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    out, _ = proc.communicate()
                took = time.monotonic() - began
                text = " ".join(out.split())
                said = announced_seconds(text)
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                error = f"{(said - took) / took:+.0%}" if said else "no estimate printed"
                source = "learned" if "from the last runs" in text else "first guess"
                print(
                    f"{scenario.name:<22} round {round_no}: estimated {said or '-':>5} s ({source}), "
                    f"took {took:6.1f} s, error {error}  (exit {proc.returncode}, load average {load})",
                    flush=True,
                )
                if said:
                    last[scenario.name] = f"estimated {said:.0f} s ({source}), took {took:.1f} s, error {error}"
        for name, line in last.items():
            print(f"{name:<22} last round: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
