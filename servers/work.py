"""``--cpu-work-us``: a fixed amount of pure-Python CPU work per chunk received.

This is how the GIL lesson is staged: a server that computes something for each
request. The work must be *work*, not time:

* not a sleep, which releases the GIL and lets every thread "work" at once;
* not a spin until a wall-clock deadline either. Under GIL contention a thread
  spinning on the clock spends part of its interval waiting for the GIL, the
  clock runs on regardless, and the spin ends having done less work. Threads
  would then appear to parallelise, which is exactly what the GIL prevents.

So the work is a fixed number of iterations of a small pure-Python loop,
and a calibration says how many iterations one microsecond of CPU time buys
(:func:`calibrate`, using ``time.thread_time``, which counts only this
thread's CPU). Each chunk runs that fixed number of iterations. Ten threads
doing it at once then take ten times as long on one GIL, as real Python work
would. Forked children inherit the count.

Who calibrates: ``bench run`` calibrates once per scenario (``python -m
servers.work``, pinned to the server's CPUs, best of
:data:`SHARED_CALIBRATION_ATTEMPTS`) and gives every server the count with
``--cpu-work-iterations``, so every run of a scenario does the same work and
the count is on record. A server started by hand with ``--cpu-work-us``
alone calibrates itself at start-up, before listening; its ready line says
which count it used and where it came from. Separate calibrations of one
machine differ (by 10% on an idle machine, far more on a busy one), which is
why a comparison must not rest on one per server.

Trade-offs: the calibration reflects the CPU speed at start-up; frequency
changes or a noisy neighbour make a "microsecond" of work a little shorter or
longer later, but always the *same* work for every model, which is what a
comparison needs. The loop body is integer arithmetic on small ints: it
allocates nothing and touches no memory, so it measures the interpreter and
the GIL rather than the allocator or the caches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: Calibrate over at least this much CPU time per attempt: long enough that
#: thread_time's resolution (about 1 us on Linux) and timer overhead are
#: negligible, short enough that start-up stays well under a second.
CALIBRATION_MIN_S = 0.02

#: Attempts; the fastest wins, because interruptions only ever make a run
#: look slower than the CPU really is.
CALIBRATION_ATTEMPTS = 3

#: First batch size; doubled until one batch lasts CALIBRATION_MIN_S.
CALIBRATION_START_ITERATIONS = 1000


def spin(iterations: int) -> int:
    """Run ``iterations`` rounds of a linear congruential step: pure-Python, GIL-bound work.

    Returns the final state so the loop has an observable result.
    """
    state = 1
    for _ in range(iterations):
        # A multiply-add modulo 2**31 (the classic rand() constants): cheap,
        # always a small int, never optimised away.
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
    return state


def calibrate(attempts: int = CALIBRATION_ATTEMPTS) -> float:
    """Iterations of :func:`spin` per microsecond of this thread's CPU time: the best of ``attempts``."""
    return max(calibration_attempts(attempts))


def calibration_attempts(attempts: int) -> list[float]:
    """Iterations of :func:`spin` per microsecond of this thread's CPU time, once per attempt."""
    rates = []
    for _ in range(attempts):
        iterations = CALIBRATION_START_ITERATIONS
        while True:
            start = time.thread_time()
            spin(iterations)
            elapsed = time.thread_time() - start
            if elapsed >= CALIBRATION_MIN_S:
                break
            iterations *= 2
        rates.append(iterations / (elapsed * 1e6))
    return rates


@dataclass(frozen=True)
class CpuWork:
    """A callable that burns ``microseconds`` of calibrated CPU work (``iterations`` loop rounds)."""

    microseconds: int
    iterations: int

    def __call__(self) -> None:
        if self.iterations:
            spin(self.iterations)


def cpu_work(microseconds: int, iterations: int = 0) -> CpuWork:
    """Build the per-chunk work for ``--cpu-work-us microseconds``.

    ``iterations`` > 0 is the loop count to use (calibrated elsewhere, once
    for every server of a scenario); 0 calibrates here. Nothing is
    calibrated when ``microseconds`` is 0.
    """
    if microseconds < 0:
        raise ValueError(f"cpu work must be >= 0 microseconds, got {microseconds}")
    if iterations < 0:
        raise ValueError(f"cpu work iterations must be >= 0, got {iterations}")
    if microseconds == 0:
        return CpuWork(0, 0)
    if iterations:
        return CpuWork(microseconds, iterations)
    return CpuWork(microseconds, max(1, round(calibrate() * microseconds)))


#: Attempts of a shared calibration (:func:`main`): more than a server's own
#: three, because one number now sets the work of every run of a scenario.
SHARED_CALIBRATION_ATTEMPTS = 9


def main() -> None:
    """``python -m servers.work``: calibrate (best of several) and print one JSON line.

    The runner calls it once per scenario, pinned to the server's CPUs, and
    passes ``round(iterations_per_us * cpu_work_us)`` to every server.
    """
    import json
    import os

    rates = calibration_attempts(SHARED_CALIBRATION_ATTEMPTS)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print(
        json.dumps(
            {
                "iterations_per_us": max(rates),
                "attempts": len(rates),
                "worst_per_us": min(rates),
                "min_cpu_s_per_attempt": CALIBRATION_MIN_S,
                "cpus": cpus,
            }
        )
    )


if __name__ == "__main__":
    main()
