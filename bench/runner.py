"""The runner: one scenario in, one results folder out.

For every repetition, sweep point and model (in that nesting, so repetitions
are interleaved: model A rep 1, model B rep 1, ..., then rep 2, which spreads
slow drift of the machine across models instead of onto one of them), a run:

1. waits (bounded) for the machine to be idle and records how busy it was;
2. starts a fresh server through :func:`servers.launch.run_server`, which
   waits for its ready line and pins it to its CPUs;
3. starts the server monitor (process tree, accept queue); as root, the
   server and the generator run in a network namespace of the run's own
   (:func:`bench.monitor.run_namespace`), so the kernel's listen-queue
   counters are this run's alone;
4. drives it with the load generator (warmup, then the measured window),
   snapshotting the kernel counters and per-CPU busy time when the window
   opens and closes (:class:`bench.monitor.WindowProbe`), so they cover the
   window their row claims;
5. stops the server (SIGTERM, then SIGKILL of its process group), checks no
   process of it is left and that it did not die on its own mid-run;
6. writes the run (row, timeline, histograms) before the next one starts.

Error handling
--------------
A server that fails to start or dies mid-run makes a ``failed`` row carrying
its exit status and the tail of its stderr; the scenario goes on. Ctrl-C
stops the current run, records it as ``interrupted``, keeps everything
already written, and :func:`run_scenario` raises :class:`Interrupted` (the CLI
exits 130). A full disk stops the scenario with :class:`bench.results.DiskFull`
after truncating the half-written row, so the rows before it stay readable.

Resource handling
-----------------
Servers are stopped and reaped by ``run_server``'s context manager on every
path out, generator workers by :func:`bench.loadgen.run_load`; the temporary
file root of the file service is removed at the end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from bench import cpuwork
from bench.results import ResultsWriter, new_results_dir
from servers import native

#: File descriptors a process needs beyond one per client connection
#: (interpreter, pipes, listener, log files, selector/epoll fds).
FD_MARGIN = 64


class Interrupted(Exception):
    """Ctrl-C during a scenario; the results folder holds every finished run."""

    def __init__(self, results_dir: Path):
        super().__init__(f"interrupted; finished runs are kept in {results_dir}")
        self.results_dir = results_dir


class ScenarioRefused(Exception):
    """The scenario cannot run on this machine (the message gives the numbers and the fix)."""


# --------------------------------------------------------------------------
# Placement and limits


def placement_cpus(placement: str) -> tuple[set[int] | None, set[int] | None]:
    """CPU sets for (server, generator) under a placement policy.

    ``split`` gives the server the first half of the usable CPUs and the
    generator the rest (on 2 cores: CPU 0 and CPU 1), so they never compete;
    ``shared`` puts both on the first CPU, where a wakeup costs nothing but
    they share one core; ``none`` leaves placement to the kernel.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "none" or len(cpus) < 1:
        return None, None
    if placement == "shared" or len(cpus) == 1:
        return {cpus[0]}, {cpus[0]}
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def ensure_fd_limit(clients: int) -> int:
    """Raise the soft RLIMIT_NOFILE so ``clients`` connections fit; refuse past the hard limit.

    Server and generator processes inherit the raised limit. Returns the soft
    limit now in force.
    """
    need = clients + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need <= soft:
        return soft
    if hard != resource.RLIM_INFINITY and need > hard:
        raise ScenarioRefused(
            f"{clients} clients need about {need} open files in one process, but the hard "
            f"limit (ulimit -Hn) is {hard}. Raise it (as root: ulimit -Hn {need}) or lower "
            f"load.clients.")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


# --------------------------------------------------------------------------
# The file service's served root


def make_file_root(sizes: list[int], parent: Path | None = None) -> tuple[Path, dict[int, Any]]:
    """Create a temporary root holding one file of each size, with random content.

    Returns the root and ``{size: FileTarget}``. Files are written in 1 MiB
    chunks (never held whole in memory) and hashed as they are written.
    """
    from bench.loadgen import FileTarget

    root = Path(tempfile.mkdtemp(prefix="sockbench-files-", dir=parent))
    targets = {}
    chunk = 1 << 20  # 1 MiB: large enough for few syscalls, small enough to stay cheap
    for size in sorted(set(sizes)):
        name = f"file-{size}.bin"
        digest = hashlib.sha256()
        with open(root / name, "wb") as f:
            left = size
            while left:
                block = os.urandom(min(chunk, left))
                digest.update(block)
                f.write(block)
                left -= len(block)
        targets[size] = FileTarget(name=name, size=size, sha256=digest.hexdigest())
    return root, targets


# --------------------------------------------------------------------------
# One run


@dataclasses.dataclass
class RunPlan:
    """One model at one point in one repetition."""

    model: str
    point: Any  # bench.scenario.Point
    repetition: int

    @property
    def run_id(self) -> str:
        return f"{self.model}-p{self.point.index}-r{self.repetition}"


def plan_runs(scenario: Any) -> list[RunPlan]:
    """Every run of the scenario in execution order (repetitions interleaved across models)."""
    plans = []
    for rep in range(1, scenario.repetitions + 1):
        for point in scenario.points():
            # point.models already leaves out models that lack the point's service
            plans += [RunPlan(model, point, rep) for model in point.models]
    return plans


def _load_spec(scenario: Any, plan: RunPlan, host: str, port: int, gen_cpus: set[int] | None,
               targets: dict[int, Any]) -> Any:
    from bench.loadgen import LoadSpec

    load = plan.point.load
    files = []
    if plan.point.service == "file":
        files = [targets[load.file_bytes]]
    return LoadSpec(
        service=plan.point.service,
        host=host,
        port=port,
        clients=load.clients,
        duration_s=scenario.duration_s,
        warmup_s=scenario.warmup_s,
        message_bytes=load.message_bytes or 1024,
        files=files,
        requests_per_connection=load.requests_per_connection,
        mode=load.mode,
        rate=load.rate,
        connect_timeout_s=load.connect_timeout_s,
        request_timeout_s=load.request_timeout_s,
        workers=scenario.generator.workers,
        cpus=gen_cpus,
        checksum_sample=scenario.generator.checksum_sample,
        loop=scenario.generator.loop,
    )


def _fmt_cpus(cpus: set[int] | None) -> str:
    return ",".join(str(c) for c in sorted(cpus)) if cpus else ""


def execute_run(scenario: Any, plan: RunPlan, writer: ResultsWriter, *, file_root: Path | None,
                targets: dict[int, Any], cpu_work: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one plan and persist it; returns the runs.csv row written.

    KeyboardInterrupt is recorded as an ``interrupted`` row and re-raised.
    """
    from bench.loadgen import run_load
    from bench.monitor import (CpuBusy, KernelCounters, ServerMonitor, WindowProbe, format_cpu_busy,
                               run_namespace, wait_for_idle)
    from servers.launch import run_server

    server_cpus, gen_cpus = placement_cpus(scenario.placement)
    row: dict[str, Any] = {
        "run_id": plan.run_id,
        "model": plan.model,
        "service": plan.point.service,
        "point": plan.point.index,
        "repetition": plan.repetition,
        "server_cpus": _fmt_cpus(server_cpus),
        "gen_cpus": _fmt_cpus(gen_cpus),
        **plan.point.columns(),
    }
    timeline: list[dict[str, Any]] = []
    histograms: dict[str, Any] = {}
    options = plan.point.server
    if plan.point.service == "file":
        options = dataclasses.replace(options, root=file_root)
    options = cpuwork.with_iterations(options, cpu_work)
    stderr_path = writer.logs_dir / f"{plan.run_id}.stderr"
    monitor = None
    try:
        busy, _idle = wait_for_idle(threshold_pct=scenario.monitor.idle_threshold_pct,
                                    max_wait_s=scenario.monitor.idle_wait_s)
        row["idle_busy_pct"] = busy
        with run_namespace() as netns, run_server(plan.model, plan.point.service, options, cpus=server_cpus,
                                                  stderr_path=stderr_path) as server:
            row["netns"] = netns.scope
            monitor = ServerMonitor(server.pid, server.port, interval_s=scenario.monitor.interval_s)
            monitor.start()
            # per-CPU busy time and kernel counters over the measured window only
            cpu_busy, kernel = CpuBusy(), {}

            def window_opens() -> None:
                kernel["before"] = KernelCounters.snapshot(server.pid)
                cpu_busy.start()

            def window_closes() -> None:
                kernel["busy"] = cpu_busy.stop()
                kernel["after"] = KernelCounters.snapshot(server.pid)

            probe = WindowProbe(window_opens, window_closes)
            try:
                result = run_load(_load_spec(scenario, plan, server.host, server.port, gen_cpus, targets),
                                  on_window=probe.schedule)
            finally:
                probe.close()
            if result.warnings:  # the generator's own caveats about this run, kept beside its stderr
                (writer.logs_dir / f"{plan.run_id}.load-warnings.txt").write_text("\n".join(result.warnings) + "\n")
            monitor.stop()
            died = not server.alive()
            exit_status = server.stop()
            leftovers = server.leftover_processes()
            row.update(result.row)
            row.update(monitor.summary(result.window_start, result.window_end))
            row.update(KernelCounters.delta(kernel.get("before", {}), kernel.get("after", {})))
            row.update(cpuwork.check_row(row, server.ready, cpu_work))
            row["cpu_busy_pct"] = format_cpu_busy(kernel.get("busy", {}))
            row["started_at"] = dt.datetime.fromtimestamp(result.window_start, dt.timezone.utc).isoformat()
            row["server_exit"] = exit_status
            histograms = result.histograms
            timeline = [dict(r, source="load") for r in result.timeline]
            timeline += [dict(r, source="server") for r in monitor.timeline(result.window_start)]
            problems = []
            if died:
                problems.append(f"server died during the run (exit status {exit_status}); "
                                f"stderr tail:\n{server.stderr_tail()}")
            if leftovers:
                problems.append(f"processes of the server still alive after stop: {leftovers}")
            row["status"] = "failed" if problems else "ok"
            row["error"] = "\n".join(problems)
    except KeyboardInterrupt:
        row.update(status="interrupted", error="stopped by Ctrl-C")
        writer.add_run(row)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one run is recorded, the scenario goes on
        row["status"] = "failed"
        row["error"] = f"{type(exc).__name__}: {exc}"
        if os.environ.get("SOCKBENCH_DEBUG"):
            row["error"] += "\n" + traceback.format_exc()
    finally:
        if monitor is not None:
            monitor.stop()
    writer.add_run(row, timeline, histograms)
    return row


# --------------------------------------------------------------------------
# A whole scenario


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run_scenario(scenario: Any, *, results_root: Path = Path("results"),
                 on_run: Callable[[RunPlan, dict[str, Any], int, int], None] | None = None,
                 on_start: Callable[[Path, list[RunPlan]], None] | None = None,
                 finish: bool = True, warn: Callable[[str], None] = _warn_stderr) -> Path:
    """Run every model x point x repetition of ``scenario``; return the results folder.

    ``on_start(results_dir, plans)`` is called once the folder exists;
    ``on_run(plan, row, done, total)`` after each run is on disk.
    With ``finish`` (the default), summary, figures and report are written at
    the end. Raises :class:`Interrupted` on Ctrl-C after saving what was done.
    """
    from bench.environment import collect_environment
    from bench.stats import write_summary

    plans = plan_runs(scenario)
    if any(p.model == "c-reference" for p in plans) and not native.available():
        # The ceiling is a bonus, not a requirement: without a C compiler its
        # runs are left out with one line, never recorded as failures.
        plans = [p for p in plans if p.model != "c-reference"]
        warn(f"c-reference left out: {native.why_unavailable()}")
    ensure_fd_limit(max(p.point.load.clients for p in plans) if plans else 0)
    server_cpus, gen_cpus = placement_cpus(scenario.placement)
    cpu_work = None
    if cpuwork.needs_calibration([p.point.server for p in plans]):
        try:
            cpu_work = cpuwork.calibrate(server_cpus)
        except cpuwork.CalibrationError as exc:
            raise ScenarioRefused(str(exc)) from None
    results_dir = new_results_dir(results_root, scenario.name)
    writer = ResultsWriter(results_dir)
    writer.write_text("scenario.yaml", scenario.to_yaml())
    environment = collect_environment({
        "policy": scenario.placement,
        "server_cpus": sorted(server_cpus) if server_cpus else None,
        "generator_cpus": sorted(gen_cpus) if gen_cpus else None,
    })
    environment["cpu_work_calibration"] = cpu_work  # None: no run burns CPU work
    writer.write_json("environment.json", environment)
    from bench.calibrate import store_with_results

    store_with_results(results_dir)  # the ceiling of this machine now, kept with the runs it describes
    if on_start:
        on_start(results_dir, plans)
    with ExitStack() as stack:
        try:
            file_root, targets = None, {}
            sizes = [p.point.load.file_bytes for p in plans if p.point.service == "file"]
            if sizes:
                file_root, targets = make_file_root(sizes)
                stack.callback(shutil.rmtree, file_root, ignore_errors=True)
            for done, plan in enumerate(plans, start=1):
                row = execute_run(scenario, plan, writer, file_root=file_root, targets=targets, cpu_work=cpu_work)
                if on_run:
                    on_run(plan, row, done, len(plans))
        except KeyboardInterrupt:
            # Wherever Ctrl-C lands (a run, its callback, the file root),
            # what is on disk stays and gets its summary.
            _finish(results_dir, write_summary, plots=False, warn=warn)
            raise Interrupted(results_dir) from None
    if finish:
        _finish(results_dir, write_summary, plots=True, warn=warn)
    return results_dir


def _finish(results_dir: Path, write_summary: Callable[[Path], Any], *, plots: bool,
            warn: Callable[[str], None]) -> None:
    """Write summary.json and, unless cut short, the figures and the report."""
    write_summary(results_dir)
    if plots:
        from bench.plots import plot_results
        from bench.report import write_report

        # The runs are safe on disk already; a figure that fails to draw must
        # not turn a finished scenario into an error, so it is reported, and
        # `bench plot` / `bench report` can be re-run on the folder.
        for step in (plot_results, write_report):
            try:
                step(results_dir)
            except Exception as exc:  # noqa: BLE001
                with open(results_dir / "logs" / "finish-errors.txt", "a") as log:
                    log.write(f"{step.__name__}: {traceback.format_exc()}\n")
                warn(f"{step.__name__} failed ({type(exc).__name__}: {exc}); the runs are saved, "
                     f"see {results_dir}/logs/finish-errors.txt and re-run it on the folder")
