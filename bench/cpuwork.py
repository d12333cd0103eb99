"""``cpu_work_us`` in a scenario: one calibration for every server, and a check that the work was done.

A server given ``--cpu-work-us`` alone calibrates its own loop count at
start-up (:mod:`servers.work`). Every run would then do a slightly different
amount of work (separate calibrations of one machine spread by 10% and
more), and nothing would record how much. So the runner calibrates once per
scenario, before the first run, in a fresh interpreter pinned to the CPUs the
servers will run on, best of several attempts, and passes the resulting
iteration count to every server with ``--cpu-work-iterations``. The
calibration goes into ``environment.json``, the count into each run's
ready line and into ``runs.csv``.

After each run :func:`check_row` compares the server's CPU time in the
window (its CPU rate times the window) with what the requests completed in
it must have cost at least
(``requests x cpu_work_us``: the work runs once per chunk received, and a
request is at least one chunk). A server that accounts for less did less
work than the label says, or its CPU was not all counted; the run is
flagged ``cpu_work_short`` rather than believed.

Error handling
--------------
A calibration that fails (the interpreter cannot start, prints garbage)
raises :class:`CalibrationError` with its stderr: the scenario cannot run
as labelled, so no run starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

from servers.config import ServerOptions

#: How long the calibration subprocess may take: nine attempts of >= 20 ms
#: of CPU plus interpreter start-up take well under a second even on a busy
#: machine; beyond this something is wrong.
CALIBRATION_TIMEOUT_S = 30.0

#: Allowance for how coarsely the kernel reports CPU time: /proc counts in
#: clock ticks, and the window's CPU is a difference of two readings, each
#: up to one tick short per process sampled.
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


class CalibrationError(RuntimeError):
    """The shared calibration could not be made; the message says why."""


def needs_calibration(options: list[ServerOptions]) -> bool:
    """Whether any run burns CPU with a loop count still to be decided."""
    return any(o.cpu_work_us and not o.cpu_work_iterations for o in options)


def calibrate(cpus: set[int] | None) -> dict[str, Any]:
    """Run ``python -m servers.work`` (pinned to ``cpus`` when given) and return its JSON report."""
    command = [sys.executable, "-m", "servers.work"]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CALIBRATION_TIMEOUT_S, preexec_fn=pin, check=False
        )
    except subprocess.TimeoutExpired:
        raise CalibrationError(f"CPU-work calibration took more than {CALIBRATION_TIMEOUT_S:g} s") from None
    try:
        report = json.loads(done.stdout)
        rate = float(report["iterations_per_us"])
    except (ValueError, KeyError, TypeError):
        raise CalibrationError(
            f"CPU-work calibration failed (exit {done.returncode}): {done.stderr.strip()[-500:] or done.stdout[:200]!r}"
        ) from None
    if rate <= 0:
        raise CalibrationError(f"CPU-work calibration gave {rate} iterations/us")
    return dict(report, pinned_cpus=sorted(cpus) if cpus else None)


def with_iterations(options: ServerOptions, calibration: dict[str, Any] | None) -> ServerOptions:
    """``options`` with the loop count the calibration gives for its ``cpu_work_us`` (unchanged without work)."""
    if not options.cpu_work_us or options.cpu_work_iterations or calibration is None:
        return options
    iterations = max(1, round(calibration["iterations_per_us"] * options.cpu_work_us))
    return dataclasses.replace(options, cpu_work_iterations=iterations)


def check_row(row: dict[str, Any], ready: dict[str, Any], calibration: dict[str, Any] | None) -> dict[str, Any]:
    """The runs.csv columns about CPU work: the count the server used, and whether its CPU accounts for it."""
    work_us = ready.get("cpu_work_us") or 0
    out: dict[str, Any] = {
        "cpu_work_iterations": ready.get("cpu_work_iterations"),
        "cpu_work_per_us": round(calibration["iterations_per_us"], 4) if calibration and work_us else None,
    }
    pct, requests, duration = row.get("server_cpu_pct"), row.get("requests"), row.get("duration_s")
    if not work_us or pct is None or not requests or not duration:
        out["cpu_work_short"] = None
        return out
    # Rates, not totals: the CPU seconds cover the span between the monitor's
    # first and last sample in the window (up to an interval shorter at each
    # end), the requests the whole window; server_cpu_pct is CPU over that span.
    cpu_s = pct / 100 * duration
    expected = requests * work_us / 1e6
    # Requests completed in the window may have begun before it (one per
    # connection), and each process's CPU reading may be a tick short at
    # both ends of a span at least half the window.
    tolerance = (row.get("clients") or 0) * work_us / 1e6 + 4 * TICK_S * max(1, row.get("procs_peak") or 1)
    out["cpu_work_short"] = bool(cpu_s < expected - tolerance)
    return out


__all__ = ["CalibrationError", "calibrate", "check_row", "needs_calibration", "with_iterations"]
