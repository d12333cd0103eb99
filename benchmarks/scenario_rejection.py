"""How long and how much memory does ``bench validate`` take to refuse each hostile scenario?

Not a test: it prints figures. Each input of ``tests/hostile_scenarios.py``
(exponent bombs, aliases, huge files, deep nesting, giant numbers, absurd
loads) is written to a temporary file and checked by ``bench validate`` in a
fresh process, whose wall time, peak RSS, exit status and first line of
output are printed. A valid scenario is checked first: its time is the cost
of starting Python and importing bench, which every row includes.

    python benchmarks/scenario_rejection.py                    # this checkout
    python benchmarks/scenario_rejection.py --code /work/main  # another checkout, for before/after

Resource handling: each check runs with a time limit (``--timeout``, then
SIGKILL of its process group) and an address-space limit (``--max-memory``),
so an input that hangs or exhausts memory shows as such instead of taking the
machine down; the temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "tests"))

from hostile_scenarios import BASE, cases  # noqa: E402


def check(code: Path, path: Path, overrides: tuple[str, ...], timeout_s: float, max_memory: int) -> tuple[str, float, float, str]:
    """(outcome, seconds, peak RSS MiB, first line of output) of ``bench validate`` on one file."""
    argv = [sys.executable, "-m", "bench", "validate", str(path)]
    for spec in overrides:
        argv += ["--set", spec]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))

    env = dict(os.environ, PYTHONPATH=str(code))
    with tempfile.TemporaryFile() as output:
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=code, env=env, stdout=output, stderr=subprocess.STDOUT,
                                preexec_fn=limit, start_new_session=True)
        outcome = "KILLED"
        while True:
            # wait4, not Popen.wait: it gives this child's own peak RSS
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                outcome = f"exit {os.waitstatus_to_exitcode(status)}"
                break
            if time.monotonic() - start > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)
                _, _, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        proc.returncode = 0  # reaped above; keeps Popen from waiting again
        seconds = time.monotonic() - start
        peak_mib = usage.ru_maxrss / 1024
        output.seek(0)
        out = output.read()
    lines = out.decode("utf-8", "replace").strip().splitlines()
    traceback = any(line.startswith("Traceback") for line in lines)
    last = lines[-1] if traceback and lines else (lines[0] if lines else "")
    return outcome + (" traceback" if traceback else ""), seconds, peak_mib, last[:110]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=HERE, help="checkout whose bench to run (default: this one)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a check is killed")
    parser.add_argument("--max-memory", type=int, default=4 << 30, help="address-space limit of each check, bytes")
    parser.add_argument("-k", dest="only", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    print(f"bench validate from {args.code}; load average {os.getloadavg()[0]:.2f} (the machine may be shared)")
    print(f"{'input':<34} {'outcome':<16} {'seconds':>8} {'peak MiB':>9}  output")
    with tempfile.TemporaryDirectory(prefix="sockbench-hostile-") as tmp:
        rows = [("valid scenario (startup cost)", BASE, ())]
        rows += [(c.name, c.text, c.overrides) for c in cases() if args.only in c.name]
        for i, (name, text, overrides) in enumerate(rows):
            path = Path(tmp) / f"case{i}.yaml"
            path.write_text(text, encoding="utf-8")
            outcome, seconds, peak, line = check(args.code, path, overrides, args.timeout, args.max_memory)
            print(f"{name:<34} {outcome:<16} {seconds:>8.2f} {peak:>9.0f}  {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
