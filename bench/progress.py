"""What ``bench run`` shows while it runs: the estimate, a live progress line, one line per run.

:class:`RunProgress` receives the runner's callbacks (``on_start``,
``on_phase``, ``on_run`` of :func:`bench.runner.run_scenario`). On a
terminal it keeps two live lines under the printed run lines, redrawn four
times a second so nothing stays still for more than a second::

    quick  ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━   5/22 runs  1 min 10 s, about 55 s left
      threading service=echo r1: measuring 1.2 s of 2.0 s, ~41.3 MB/s on the wire so far

then, after the last run, the finish stage (summary, each figure, report).

The live figure is what can honestly be known while a run goes on: the
generator's workers report their requests only at the end, so the line shows
the bytes through the server's network namespace (:mod:`bench.monitor.wire`:
every packet once, headers and ACKs included), as a rate over the measured
window so far (over the warmup so far while warming up), read at most once a
second. It is shown only where the run has a namespace of its own, where
those bytes are the run's alone, and labelled what it is: ``MB/s on the
wire``, not ``req/s``.
Written to a file or a pipe, only the lines of finished runs are printed:
one line per run. The time left comes from :mod:`bench.estimate`, from what
the runs of this machine really cost, and each finished run and finish
stage is recorded there for the next estimate.

Resource handling: the live display is a :class:`rich.live.Live`, stopped on
every way out of the ``with`` block; the history is saved on the way out
(interrupted runs included: what they measured is true).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bench.estimate import Estimate, History, estimate, fmt_duration
from bench.format import fmt_mb_per_s
from bench.monitor.wire import namespace_bytes
from bench.runner import PHASES

PHASE_IDLE = PHASES[0]

#: Redraws per second of the live lines: a figure that moves every 250 ms never looks stuck.
REFRESH_PER_S = 4

#: The live figure is read at most this often: often enough to move, seldom enough to stay readable.
WIRE_EVERY_S = 1.0


class WireRate:
    """The bytes-on-the-wire rate of one phase of a run: since the phase began, re-read at most once a second.

    ``read`` returns the bytes so far (:func:`bench.monitor.wire.namespace_bytes`
    of the server's pid), or None when they cannot be read.
    """

    def __init__(self, read: Callable[[], int | None], now: float, every_s: float = WIRE_EVERY_S):
        self.read = read
        self.every_s = every_s
        self.first = read()
        self.began = self.last = now
        self.rate: float | None = None  # bytes per second, once a reading a second after the first is in

    def update(self, now: float) -> float | None:
        """The rate (bytes per second) so far, reading the counters if a second has passed."""
        if self.first is None or now - self.last < self.every_s:
            return self.rate
        value = self.read()
        self.last = now
        if value is None:
            self.rate = None  # the server is gone: no figure rather than a stale one
            self.first = None
        elif now > self.began:
            self.rate = max(0, value - self.first) / (now - self.began)
        return self.rate

    def text(self, now: float) -> str:
        """``~41.3 MB/s on the wire so far``, or "" before there is a figure."""
        rate = self.update(now)
        return "" if rate is None else f"~{fmt_mb_per_s(rate / 1e6)} MB/s on the wire so far"


class RunProgress:
    """The estimate, live progress and learning for one ``bench run``."""

    def __init__(
        self,
        console: Console,
        scenario: Any,
        *,
        plots: bool,
        run_line: Callable[[Any, dict[str, Any]], str],
        history: History | None = None,
    ):
        self.console = console
        self.run_line = run_line
        self.scenario = scenario
        self.plots = plots
        self.history = history if history is not None else History.load()
        self.plans: list[Any] = []
        self.done = 0
        self.began = time.monotonic()
        self._lock = threading.Lock()  # on_phase("measuring") comes from the window's thread
        self._plan: Any = None
        self._phase = ""
        self._info: dict[str, Any] = {}
        self._phase_began = time.monotonic()
        self._wire: WireRate | None = None

        self._idle_end: float | None = None
        self._finish_began: float | None = None
        self.estimate: Estimate | None = None
        self._live = Live(
            console=console,
            refresh_per_second=REFRESH_PER_S,
            transient=True,
            get_renderable=self._render,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    # ------------------------------------------------------------------
    # The runner's callbacks

    def on_start(self, results_dir: Path, plans: list[Any]) -> None:
        self.plans = list(plans)
        self.began = time.monotonic()
        self.estimate = self._estimate(self.plans)
        if self.history.note:
            self.console.print(f"[yellow]note:[/] {self.history.note}", highlight=False)
        runs = len(self.plans)
        self.console.print(
            f"[bold]{self.scenario.name}[/]: {runs} run{'' if runs == 1 else 's'}, "
            f"{self.estimate.text()}; results in {results_dir}",
            highlight=False,
        )

    def on_phase(self, plan: Any, phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            if plan is not None and plan is not self._plan:
                self._idle_end = None
            if plan is not None and self._phase == PHASE_IDLE and phase != PHASE_IDLE:
                self._idle_end = now
            if plan is None and self._finish_began is None:
                self._finish_began = now
            self._plan, self._phase, self._info, self._phase_began = plan, phase, dict(info), now
            pid = info.get("wire_pid") if phase in ("warmup", "measuring") else None
            self._wire = WireRate(lambda: namespace_bytes(pid), now) if pid and self.console.is_terminal else None
        if phase == "done" and plan is not None:
            self.history.record_run(plan.model, info["overhead_s"], info["idle_wait_s"])
        elif phase == "finished" and info.get("plots"):
            self.history.record_finish(len(self.plans), info["seconds"])

    def on_run(self, plan: Any, row: dict[str, Any], done: int, total: int) -> None:
        self.done = done
        # soft_wrap: one run, one line, even when stdout is a file or a narrow terminal
        self.console.print(self.run_line(plan, row), markup=False, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    # ------------------------------------------------------------------

    def __enter__(self) -> RunProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.stop()
        note = self.history.save()
        if note:
            self.console.print(f"[yellow]note:[/] {note}", highlight=False)

    def _estimate(self, plans: list[Any]) -> Estimate:
        return estimate(
            plans,
            self.scenario.warmup_s,
            self.scenario.duration_s,
            plots=self.plots,
            history=self.history,
            idle_wait_max_s=self.scenario.monitor.idle_wait_s,
        )

    def seconds_left(self, now: float | None = None) -> float:
        """The time left: the runs not started, the rest of the current one, the finish stage."""
        now = time.monotonic() if now is None else now
        if not self.plans:
            return 0.0
        finish = self.history.finish_for(len(self.plans)) if self.plots else 0.0
        if self._finish_began is not None:
            info = self._info
            elapsed = now - self._finish_began
            if self._phase == "drawing figures" and info.get("done") and info.get("total"):
                # the figures drawn so far tell how long the others take
                return max(0.0, elapsed / info["done"] * info["total"] - elapsed)
            return max(0.0, finish - elapsed)
        running = self._plan is not None and self._phase != "done"
        started = self.done + (1 if running else 0)
        later = self._estimate(self.plans[started:]).total_s - finish if started < len(self.plans) else 0.0
        return later + (self._current_left(now) if running else 0.0) + finish

    def _current_left(self, now: float) -> float:
        """The rest of the run in progress: its load and overhead once the machine is idle, the window's end."""
        with self._lock:
            plan, phase, info, idle_end = self._plan, self._phase, self._info, self._idle_end
        rest = self.scenario.warmup_s + self.scenario.duration_s + self.history.overhead_for(plan.model)
        if phase == PHASE_IDLE or idle_end is None:
            return rest  # however long the wait still is: it ends when the CPUs are idle
        left = rest - (now - idle_end)
        if info.get("window_end"):
            left = max(left, info["window_end"] - time.time())
        return max(0.0, left)

    # ------------------------------------------------------------------
    # The live lines

    def _now_text(self, now: float) -> str:
        with self._lock:
            plan, phase, info, since, meter = self._plan, self._phase, self._info, self._phase_began, self._wire
        wire_text = meter.text(now) if meter is not None else ""
        wire = f", {wire_text}" if wire_text else ""
        if plan is None:
            if not phase:
                return "preparing the runs"
            if phase == "drawing figures" and info.get("total"):
                return f"finish: drawing figures {info['done']}/{info['total']}"
            return f"finish: {phase} {fmt_duration(now - since)}"
        label = plan.point.label()
        head = f"{plan.model}{'' if label in ('', '-') else ' ' + label} r{plan.repetition}: "
        if phase in ("warmup", "measuring") and info.get("window_start"):
            wall = time.time()
            if phase == "warmup" or wall < info["window_start"]:
                return (
                    head + f"warmup, the measured window opens in {max(0.0, info['window_start'] - wall):.1f} s" + wire
                )
            length = info["window_end"] - info["window_start"]
            return head + f"measuring {min(wall - info['window_start'], length):.1f} s of {length:.1f} s" + wire
        if phase == PHASE_IDLE:
            return head + (
                f"waiting for an idle machine {now - since:.0f} s (at most {fmt_duration(info.get('max_wait_s', 0))})"
            )
        return head + f"{phase} {now - since:.1f} s"

    def _render(self) -> Any:
        now = time.monotonic()
        total = len(self.plans)
        grid = Table.grid(padding=(0, 1), expand=False)
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_column(no_wrap=True)
        grid.add_row(
            Text(self.scenario.name, style="bold"),
            ProgressBar(total=max(total, 1), completed=self.done),
            Text(
                f"{self.done}/{total} runs  {fmt_duration(now - self.began)}, "
                f"about {fmt_duration(self.seconds_left(now))} left"
            ),
        )
        return Group(grid, Text("  " + self._now_text(now), no_wrap=True, overflow="ellipsis"))
