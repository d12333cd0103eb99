"""How long does the finish stage of ``bench run`` take (summary, figures, report)?

Not a test: it prints figures. The finish stage is what ``bench run`` does
after the last run: summary.json, every figure in PNG and SVG, report.html
(:func:`bench.runner._finish`). It is timed on a copy of a results folder
with its figures and report removed, in a fresh process per round, with the
modules already imported (``bench run`` has most of them loaded by then),
so the figure is the work itself. Checkouts given with ``--code`` are timed
in alternating order, round after round, so a machine whose load drifts
weighs on each alike; the load average is printed with each round. Beside
the wall time, the CPU seconds of the process tree (figure workers included)
are printed: on a machine shared with other work they vary far less.

    python benchmarks/finish_stage.py results/20261201T224922Z-quick
    python benchmarks/finish_stage.py FOLDER --code /work/main --code .   # before/after

Without a folder, a synthetic one shaped like ``scenarios/quick.yaml`` (6
models, 1 point, 2 repetitions, 22 runs with timelines) is written by
``tests/fake_results.py``. The goal for quick: <= 10 s on a 2-CPU machine.

Resource handling: each round has a time limit (``--timeout``, then SIGKILL
of its process group); the temporary copies are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

#: The child: import what the finish stage uses, then time it alone; one line: the seconds.
CHILD = """
import sys, time
from pathlib import Path
import bench.runner, bench.plots, bench.report, bench.stats
print("code:", Path(bench.__file__).resolve().parent.parent, file=sys.stderr)
start = time.perf_counter()
bench.runner._finish(Path(sys.argv[1]), plots=True, warn=lambda m: print("warning:", m, file=sys.stderr))
print(f"{time.perf_counter() - start:.3f}")
"""


def synthetic_quick(parent: Path) -> Path:
    """A fake folder with quick's shape: 22 runs over echo and file, one point, 2 repetitions."""
    sys.path.insert(0, str(HERE / "tests"))
    from fake_results import write_fake_results

    return write_fake_results(parent / "synthetic-quick", repetitions=2, sweep=("clients", (20,)))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every reaped descendant: the drawing workers too
    return usage.ru_utime + usage.ru_stime


def time_once(code: Path, source: Path, work: Path, timeout: float) -> tuple[float, float] | str:
    """One round: copy ``source`` without figures and report, run the finish stage with ``code``.

    Returns (wall seconds of the stage, CPU seconds of the whole child process tree, imports included).
    """
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work, ignore=shutil.ignore_patterns("figures", "report.html", "summary.json"))
    env = dict(os.environ, PYTHONPATH=str(code.resolve()), MPLBACKEND="Agg")
    cpu_before = _children_cpu_s()
    # cwd: ``python -c`` puts the working directory first on sys.path, ahead of PYTHONPATH, so a
    # child started from another checkout would import that checkout's code instead of ``code``'s
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(work)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=code.resolve(),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"killed after {timeout:.0f} s"
    if proc.returncode != 0:
        return f"exit status {proc.returncode}: {err.strip().splitlines()[-1:] or ''}"
    imported = next((line[len("code: ") :] for line in err.splitlines() if line.startswith("code: ")), "?")
    if Path(imported) != code.resolve():  # a figure of the wrong checkout is worse than none
        return f"imported the code of {imported}, not of {code.resolve()}"
    return float(out.strip().splitlines()[-1]), _children_cpu_s() - cpu_before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", help="a results folder (default: a synthetic quick)")
    parser.add_argument(
        "--code", type=Path, action="append", help="a checkout to time (repeat to compare; default: this one)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds per checkout (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per round before SIGKILL")
    args = parser.parse_args(argv)
    codes = args.code or [HERE]
    with tempfile.TemporaryDirectory(prefix="sockbench-finish-") as tmp:
        source = args.folder or synthetic_quick(Path(tmp))
        runs = sum(1 for _ in open(source / "runs.csv")) - 1
        print(f"finish stage of {source} ({runs} runs), {os.cpu_count()} CPUs")
        times: dict[Path, list[float]] = {code: [] for code in codes}
        cpus: dict[Path, list[float]] = {code: [] for code in codes}
        for round_no in range(1, args.rounds + 1):
            for code in codes if round_no % 2 else reversed(codes):  # alternate the order
                took = time_once(code, source, Path(tmp) / "work", args.timeout)
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                shown = took if isinstance(took, str) else f"{took[0]:6.1f} s wall, {took[1]:6.1f} s CPU"
                print(f"  round {round_no}  {str(code):<32} {shown}   (load average {load})")
                if not isinstance(took, str):
                    times[code].append(took[0])
                    cpus[code].append(took[1])
        for code, values in times.items():
            if values:
                print(
                    f"{str(code):<32} median {statistics.median(values):.1f} s wall, "
                    f"{statistics.median(cpus[code]):.1f} s CPU over {len(values)} rounds"
                )
        if len(codes) == 2 and all(times.values()):
            for what, data in (("wall", times), ("CPU", cpus)):
                a, b = (statistics.median(data[c]) for c in codes)
                print(f"{what}: {codes[1]} / {codes[0]} = {b / a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
