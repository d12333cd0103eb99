"""How long and how much memory does loading take to refuse each hostile scenario?

Not a test: it prints figures. Each input of ``tests/hostile_scenarios.py``
(exponent bombs, aliases, huge files, deep nesting, giant numbers, absurd
loads) is written to a temporary file and loaded with
:func:`bench.scenario.load_scenario` (what ``bench validate`` and ``bench
run`` call) in a fresh process. Printed: how it ended (refused with a
message, accepted, or a traceback), the seconds ``load_scenario`` took
(imports excluded), the process's peak RSS, and the first line of the
message. A valid scenario comes first, for scale.

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

#: The child: import, then time load_scenario alone; one result line on stdout.
CHILD = """
import sys, time, traceback
from bench.scenario import ScenarioError, load_scenario
start = time.perf_counter()
try:
    load_scenario(sys.argv[1], sys.argv[2:])
    outcome, text = "accepted", ""
except ScenarioError as exc:
    outcome, text = "refused", str(exc).splitlines()[0]
except BaseException as exc:
    outcome, text = "traceback", f"{type(exc).__name__}: {exc}"
text = " ".join(text.split())  # one line: a YAML error spans several
print(f"{outcome}\\t{time.perf_counter() - start:.3f}\\t{text[:110]}", flush=True)
"""


def check(
    code: Path, path: Path, overrides: tuple[str, ...], timeout_s: float, max_memory: int
) -> tuple[str, str, float, str]:
    """(outcome, seconds in load_scenario, peak RSS MiB, first line of the message) for one file."""
    argv = [sys.executable, "-c", CHILD, str(path), *overrides]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))

    env = dict(os.environ, PYTHONPATH=str(code))
    with tempfile.TemporaryFile() as output:
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=code, env=env, stdout=output, stderr=subprocess.DEVNULL, preexec_fn=limit, start_new_session=True
        )
        killed = False
        while True:
            # wait4, not Popen.wait: it gives this child's own peak RSS
            pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)
                _, _, usage = os.wait4(proc.pid, 0)
                killed = True
                break
            time.sleep(0.005)
        proc.returncode = 0  # reaped above; keeps Popen from waiting again
        output.seek(0)
        out = output.read().decode("utf-8", "replace").strip()
    peak_mib = usage.ru_maxrss / 1024
    if killed:
        return "KILLED", f"> {timeout_s:.0f}", peak_mib, ""
    if not out:
        return "died", "-", peak_mib, "(no output: out of memory?)"
    outcome, seconds, text = (out.splitlines()[-1].split("\t") + ["", ""])[:3]
    return outcome, seconds, peak_mib, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=HERE, help="checkout whose bench to run (default: this one)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a check is killed")
    parser.add_argument("--max-memory", type=int, default=4 << 30, help="address-space limit of each check, bytes")
    parser.add_argument("-k", dest="only", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    print(f"load_scenario from {args.code}; load average {os.getloadavg()[0]:.2f} (the machine may be shared)")
    print(f"{'input':<34} {'outcome':<10} {'seconds':>8} {'peak MiB':>9}  message")
    with tempfile.TemporaryDirectory(prefix="sockbench-hostile-") as tmp:
        rows = [("valid scenario (for scale)", BASE, ())]
        rows += [(c.name, c.text, c.overrides) for c in cases() if args.only in c.name]
        for i, (name, text, overrides) in enumerate(rows):
            path = Path(tmp) / f"case{i}.yaml"
            path.write_text(text, encoding="utf-8")
            outcome, seconds, peak, line = check(args.code, path, overrides, args.timeout, args.max_memory)
            print(f"{name:<34} {outcome:<10} {seconds:>8} {peak:>9.0f}  {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
