"""How busy the machine is: before a run (idle check) and per CPU during it.

A process spinning elsewhere changed results 2-4x on the 2-core machines
sockbench is built on, so the runner waits (bounded) for the machine to be
idle before each run and records how busy it was; during the run it records
each CPU's busy share, which shows whether the server or the generator
saturated its CPUs.

Busy share, from ``/proc/stat`` via ``psutil.cpu_times``::

    total = user + nice + system + idle + iowait + irq + softirq + steal
    busy  = total - idle - iowait

``guest``/``guest_nice`` are left out of the total because the kernel already
counts them inside ``user``/``nice``. ``steal`` (time the hypervisor gave our
vCPU to someone else) counts as busy: the CPU was not available to us.
``iowait`` is idle time with I/O outstanding, so it counts as idle. Times come
in 10 ms clock ticks, so a measurement shorter than ~0.1 s is coarse.

Error handling:
    ``CpuBusy.stop()`` before ``start()`` raises RuntimeError. If CPUs come
    online or go offline mid-measurement only the CPUs present at both ends
    are reported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

# Why 0.05 s: below five clock ticks per CPU the busy share is mostly rounding.
_MIN_SAMPLE_S = 0.05
_IDLE_FIELDS = ("idle", "iowait")
_EXCLUDED_FIELDS = ("guest", "guest_nice")  # already inside user/nice


def _busy_and_total(times) -> tuple[float, float]:
    fields = times._asdict()
    total = sum(v for k, v in fields.items() if k not in _EXCLUDED_FIELDS)
    idle = sum(fields.get(k, 0.0) for k in _IDLE_FIELDS)
    return total - idle, total


def busy_pct(before, after) -> float:
    """Busy percent between two ``psutil.cpu_times()`` results (one CPU or all)."""
    busy0, total0 = _busy_and_total(before)
    busy1, total1 = _busy_and_total(after)
    elapsed = total1 - total0
    if elapsed <= 0:
        return 0.0
    return max(0.0, min(100.0, (busy1 - busy0) / elapsed * 100))


def measure_busy(span_s: float) -> float:
    """Whole-machine busy percent over the next ``span_s`` seconds (blocks that long)."""
    before = psutil.cpu_times()
    time.sleep(span_s)
    return busy_pct(before, psutil.cpu_times())


def wait_for_idle(threshold_pct: float = 5.0, max_wait_s: float = 20.0, sample_s: float = 0.5) -> tuple[float, bool]:
    """Wait until the whole machine is under ``threshold_pct`` busy, at most ``max_wait_s``.

    Returns (busy percent of the last measurement, True if it was under the
    threshold). At least one measurement is always made, and the call returns
    after at most ``max(max_wait_s, 0.05)`` seconds (plus the reads of
    /proc/stat), busy or not.
    The caller's own process counts as load, so it should be quiet meanwhile.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        remaining = deadline - time.monotonic()
        busy = measure_busy(max(_MIN_SAMPLE_S, min(sample_s, remaining)))
        if busy < threshold_pct:
            return busy, True
        if deadline - time.monotonic() < _MIN_SAMPLE_S:
            return busy, False


class CpuBusy:
    """Per-CPU busy percent between start() and stop(), from psutil.cpu_times(percpu=True) deltas."""

    def __init__(self) -> None:
        self._before: list | None = None

    def start(self) -> None:
        self._before = psutil.cpu_times(percpu=True)

    def stop(self) -> dict[int, float]:
        """{cpu: busy percent} since start(). CPUs are numbered in /proc/stat
        order, which is the CPU number as long as none is offline."""
        if self._before is None:
            raise RuntimeError("CpuBusy.stop() called before start()")
        after = psutil.cpu_times(percpu=True)
        return {cpu: round(busy_pct(b, a), 1) for cpu, (b, a) in enumerate(zip(self._before, after))}


class WindowProbe:
    """Call ``at_start()`` when the measured window opens and ``at_end()`` when it closes.

    Side metrics (per-CPU busy time, kernel counters) must cover the window
    their row claims, not worker spawn, imports, warmup and teardown. The
    load generator knows the window only once its workers are ready, so it
    calls :meth:`schedule` with the window's wall-clock bounds; a thread
    sleeps until each bound and takes the snapshot. ``started_at`` /
    ``ended_at`` record when they really ran (a few ms late at most).

    Resource handling: the thread is a daemon and :meth:`close` (also on any
    error path) wakes and joins it, so it never outlives the run; an end
    snapshot not reached by then is simply missing (``ended_at`` None).
    """

    def __init__(self, at_start: Callable[[], None], at_end: Callable[[], None]) -> None:
        self._at_start, self._at_end = at_start, at_end
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None

    def schedule(self, start_wall: float, end_wall: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(start_wall, end_wall), daemon=True, name="window-probe")
        self._thread.start()

    def _run(self, start_wall: float, end_wall: float) -> None:
        if self._cancel.wait(max(0.0, start_wall - time.time())):
            return
        self._at_start()
        self.started_at = time.time()
        if self._cancel.wait(max(0.0, end_wall - time.time())):
            return
        self._at_end()
        self.ended_at = time.time()

    def close(self, timeout_s: float = 5.0) -> bool:
        """Wait (bounded) for the end snapshot, then stop the thread; True if both snapshots were taken.

        Why 5 s by default: the caller closes right after the load generator
        returned, which is after the window closed; the wait only covers the
        thread's wake-up.
        """
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._cancel.set()
            self._thread.join()
        return self.ended_at is not None
