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
   counters are this run's alone; with ``network: {hosts: namespaces}``
   the server and its monitor run on a server host and the generator on a
   client host, joined by a link with the scenario's rate and delay
   (:func:`bench.network.run_hosts`);
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
its exit status (``signal 9, SIGKILL``) and the tail of its stderr, the
cause before any leftover processes it caused; the scenario goes on. Ctrl-C,
SIGTERM (``kill``, ``timeout``, a CI cancel) and SIGHUP all stop the current
run, record it as ``interrupted``, reap its server and workers, keep
everything already written, write summary.json (a further signal while it is
written is held back until it is on disk), and :func:`run_scenario` raises
:class:`Interrupted` with the signal (the CLI exits 128 + its number: 130,
143, 129). A full disk stops the scenario with :class:`bench.results.DiskFull`
after truncating the half-written row, so the rows before it stay readable;
figures and summary are written whole or not at all.

Resource handling
-----------------
Servers are stopped and reaped by ``run_server``'s context manager on every
path out, generator workers by :func:`bench.loadgen.run_load`; the temporary
file root of the file service is removed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import cpuwork
from bench.loadgen.spec import FILE_SERVICES
from bench.placement import placement_cpus
from bench.results import DISK_FULL_ERRNOS, DiskFull, ResultsWriter, cpu_busy_column, new_results_dir
from bench.stopping import deferred_stop, signal_name, signum_of, stop_signals
from bench.vocabulary import limit_columns
from servers import native, registry

if TYPE_CHECKING:
    from bench.loadgen import FileTarget, LoadSpec
    from bench.scenario import Point, Scenario


class Interrupted(Exception):
    """A scenario stopped by Ctrl-C, SIGTERM or SIGHUP; the results folder holds every finished run.

    ``signum`` is the signal (the CLI exits 128 + signum); ``summary_written``
    says whether summary.json describes those runs.
    """

    def __init__(self, results_dir: Path, signum: int = signal.SIGINT, *, summary_written: bool = True):
        super().__init__(f"stopped by {signal_name(signum)}; finished runs are kept in {results_dir}")
        self.results_dir = results_dir
        self.signum = signum
        self.summary_written = summary_written

    @property
    def by(self) -> str:
        """What stopped it, as a person says it: ``Ctrl-C``, ``SIGTERM``, ``SIGHUP``."""
        return signal_name(self.signum)


class ScenarioRefused(Exception):
    """The scenario cannot run on this machine (the message gives the numbers and the fix)."""


# --------------------------------------------------------------------------
# Placement and limits


@contextmanager
def runner_pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with every thread of this process pinned to ``cpus`` (None: unchanged).

    The runner and its server monitor thread take CPU while a run is
    measured (the monitor ~5-12% of a core, see :mod:`bench.monitor.proctree`);
    unpinned, the kernel may put them on the server's CPUs and slow the server
    under test. Pinned to the generator's CPUs their cost shows up where it
    belongs: as the load workers' run-queue wait (``gen_runq_wait_pct_max``)
    and in ``runner_cpu_pct``. Threads started inside the block (the monitor)
    inherit the pinning; each thread's previous affinity is restored after.
    """
    if not cpus:
        yield
        return
    before: dict[int, set[int]] = {}
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except OSError:
            before.pop(tid, None)  # the thread ended meanwhile
    try:
        yield
    finally:
        for tid, old in before.items():
            try:
                os.sched_setaffinity(tid, old)
            except OSError:
                pass  # the thread ended inside the block


def ensure_fd_limit(clients: int) -> int:
    """Raise the soft RLIMIT_NOFILE so ``clients`` connections fit; refuse past the hard limit.

    Server and generator processes inherit the raised limit. Returns the soft
    limit now in force. A scenario from :func:`bench.scenario.load_scenario`
    was already checked against the same limit (so ``bench validate`` tells).
    """
    from bench.scenario import FD_MARGIN, fd_limit_problem

    need = clients + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need <= soft:
        return soft
    problem = fd_limit_problem(clients)
    if problem:
        raise ScenarioRefused(problem + ".")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


# --------------------------------------------------------------------------
# The file service's served root


def make_file_root(sizes: list[int], parent: Path | None = None) -> tuple[Path, dict[int, FileTarget]]:
    """Create a temporary root holding one file of each size, with random content.

    Returns the root and ``{size: FileTarget}``. Files are written in 1 MiB
    chunks (never held whole in memory) and hashed as they are written.
    """
    from bench.loadgen import FileTarget

    root = Path(tempfile.mkdtemp(prefix="sockbench-files-", dir=parent))
    targets: dict[int, FileTarget] = {}
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


def make_logins(parent: Path | None = None) -> tuple[Path, str]:
    """Create a temporary timeauth credentials file holding one login; return its path and ``NAME:PASSWORD``.

    The server reads the file (``--credentials``), the load generator logs in
    with the same pair, so every login of a run is valid and a refused one
    (``err_denied``) is the server's doing. The password is random per
    scenario run: the file is removed at the end and nothing reuses it.
    """
    import secrets

    folder = Path(tempfile.mkdtemp(prefix="sockbench-logins-", dir=parent))
    login = f"sockbench:{secrets.token_hex(16)}"
    path = folder / "logins"
    path.write_text(login + "\n", encoding="utf-8")
    path.chmod(0o600)  # a credentials file: readable by the server's user only
    return path, login


# --------------------------------------------------------------------------
# One run


@dataclasses.dataclass
class RunPlan:
    """One model at one point in one repetition."""

    model: str
    point: Point
    repetition: int

    @property
    def run_id(self) -> str:
        return f"{self.model}-p{self.point.index}-r{self.repetition}"


def plan_runs(scenario: Scenario) -> list[RunPlan]:
    """Every run of the scenario in execution order (repetitions interleaved across models)."""
    plans = []
    for rep in range(1, scenario.repetitions + 1):
        for point in scenario.points():
            # point.models already leaves out models that lack the point's service
            plans += [RunPlan(model, point, rep) for model in point.models]
    return plans


def _load_spec(
    scenario: Scenario,
    plan: RunPlan,
    host: str,
    port: int,
    gen_cpus: set[int] | None,
    targets: dict[int, FileTarget],
    login: str = "",
) -> LoadSpec:
    """The generator's LoadSpec for one run: every parameter from the point's load or the generator section.

    A parameter that does not apply to the point (``None``: the echo size of
    a file point, ``rate`` in closed loop) is left to LoadSpec's default.
    """
    from bench.loadgen import LoadSpec
    from bench.parameters import load_spec_parameters

    load = plan.point.load
    values = {}
    for parameter in load_spec_parameters():
        source = load if parameter.section == "load" else getattr(scenario, parameter.section)
        value = getattr(source, parameter.point_name)
        if value is not None:
            values[parameter.spec_name] = value
    files = [targets[load.file_bytes]] if plan.point.service in FILE_SERVICES else []
    return LoadSpec(
        service=plan.point.service,
        host=host,
        port=port,
        duration_s=scenario.duration_s,
        warmup_s=scenario.warmup_s,
        files=files,
        login=login if plan.point.service == "timeauth" else "",
        cpus=gen_cpus,
        **values,
    )


def _engine_values(point: Point) -> dict[str, Any]:
    """The point's settings that only some load engines act on (see :func:`bench.loadgen.engines.resolve`)."""
    from bench.parameters import load_spec_parameters

    where = {"service": point.service, "mode": point.load.mode}
    return {
        p.name: getattr(point.load, p.point_name)
        for p in load_spec_parameters()
        if p.engines and p.section == "load" and p.applies_at(where)
    }


def _exit_text(status: int | None) -> str:
    """``-9`` -> ``"signal 9, SIGKILL"``; ``1`` -> ``"exit status 1"`` (Popen.returncode convention)."""
    if status is None:
        return "still running after SIGKILL"
    if status < 0:
        try:
            return f"signal {-status}, {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


def _server_fate(died: bool, gone_at: float | None, window_start: float, stopped: dict[str, Any]) -> dict[str, Any]:
    """``server_died_s`` and ``server_restarts`` of a run's row (see bench.results.RUN_COLUMNS).

    ``gone_at`` is when the monitor first found the server dead (None: it
    never did, e.g. it died after the last sample); ``stopped`` the
    server's stop line, which only supervising models print.
    """
    died_s = round(gone_at - window_start, 2) if died and gone_at is not None else None
    restarts = stopped.get("worker_restarts")
    return {"server_died_s": died_s, "server_restarts": int(restarts) if restarts is not None else None}


def _fmt_cpus(cpus: set[int] | None) -> str:
    return ",".join(str(c) for c in sorted(cpus)) if cpus else ""


#: The phases of a run, in order, as :func:`execute_run` reports them to ``on_phase``.
PHASES = (
    "waiting for an idle machine",
    "starting server",
    "starting load generator",
    "warmup",
    "measuring",
    "stopping",
    "done",
)

#: The phases of the finish stage, reported with ``plan`` None.
FINISH_PHASES = ("writing summary", "drawing figures", "writing report", "finished")

PhaseCallback = Callable[[RunPlan | None, str, dict[str, Any]], None]


def _no_phase(_plan: RunPlan | None, _phase: str, _info: dict[str, Any]) -> None:
    pass


def execute_run(
    scenario: Scenario,
    plan: RunPlan,
    writer: ResultsWriter,
    *,
    file_root: Path | None,
    targets: dict[int, FileTarget],
    cpu_work: dict[str, Any] | None = None,
    on_phase: PhaseCallback = _no_phase,
    logins: tuple[Path, str] | None = None,
) -> dict[str, Any]:
    """Run one plan and persist it; returns the runs.csv row written.

    ``logins``: timeauth's credentials file and the login in it (:func:`make_logins`).

    ``on_phase(plan, phase, info)`` is called as the run enters each of
    :data:`PHASES`; ``warmup`` and ``measuring`` carry the window's
    wall-clock bounds (``window_start``, ``window_end``, ``time.time()``
    seconds) and, where the run has a network namespace of its own, the
    server's pid as ``wire_pid`` (its traffic can be read live, see
    :mod:`bench.monitor.wire`); ``measuring`` is called from the thread that
    opens the window, and ``done`` carries what the run cost: ``idle_wait_s`` and
    ``overhead_s`` (the rest beyond warmup + duration), once the row is on disk.

    A stop signal (KeyboardInterrupt, :class:`Stopped`) during the load is
    recorded as an ``interrupted`` row and re-raised. Once the load is over,
    a stop signal waits until the server is reaped and the row is on disk,
    then raises :class:`Stopped` (the run is kept as finished).
    """
    from bench.loadgen import run_load
    from bench.monitor import CpuBusy, KernelCounters, ServerMonitor, WindowProbe, wait_for_idle
    from bench.network import run_hosts
    from servers.launch import ServerLeftoverError, run_server

    server_cpus, gen_cpus = placement_cpus(scenario.placement)
    row: dict[str, Any] = {
        "run_id": plan.run_id,
        "model": plan.model,
        "service": plan.point.service,
        "point": plan.point.index,
        "point_label": plan.point.label(),
        "repetition": plan.repetition,
        "server_cpus": _fmt_cpus(server_cpus),
        "gen_cpus": _fmt_cpus(gen_cpus),
        **plan.point.columns(),
    }
    timeline: list[dict[str, Any]] = []
    histograms: dict[str, Any] = {}
    # a pool size only for the models that have the pool, the event loop only for those that have one
    options = registry.model(plan.model).options_for(plan.point.server)
    if plan.point.service in FILE_SERVICES:
        options = dataclasses.replace(options, root=file_root)
    if plan.point.service == "timeauth" and logins is not None:
        options = dataclasses.replace(options, credentials=logins[0])
    options = cpuwork.with_iterations(options, cpu_work)
    stderr_path = writer.logs_dir / f"{plan.run_id}.stderr"
    # From the end of the load until the row is on disk, a stop signal waits
    # (deferred_stop): cutting the server's stop short could leave it running.
    hold = ExitStack()
    monitor = None
    problems: list[str] = []
    began = time.monotonic()
    idle_wait_s = 0.0
    try:
        on_phase(plan, PHASES[0], {"max_wait_s": scenario.monitor.idle_wait_s})
        busy, _idle = wait_for_idle(
            threshold_pct=scenario.monitor.idle_threshold_pct, max_wait_s=scenario.monitor.idle_wait_s
        )
        idle_wait_s = time.monotonic() - began
        row["idle_busy_pct"] = busy
        on_phase(plan, "starting server", {"idle_busy_pct": busy})
        network = plan.point.network  # this point's link: rtt, jitter and rate may be swept
        with (
            runner_pinned(gen_cpus),
            run_hosts(
                plan.run_id,
                network.hosts,
                rtt_s=network.rtt or 0.0,
                jitter_s=network.jitter or 0.0,
                rate_bit=network.rate,
                client_hosts=network.client_hosts,
            ) as hosts,
            ExitStack() as on_server,
        ):
            row.update(hosts.columns())
            if hosts.server_host:
                options = dataclasses.replace(options, host=hosts.server_host)
            with hosts.in_server():  # the server and its monitor's thread start on the server host
                server = on_server.enter_context(
                    run_server(plan.model, plan.point.service, options, cpus=server_cpus, stderr_path=stderr_path)
                )
                monitor = ServerMonitor(server.pid, server.port, interval_s=scenario.monitor.interval_s)
                monitor.start()
            # per-CPU busy time and kernel counters over the measured window only
            cpu_busy = CpuBusy()
            kernel: dict[str, dict[str, int]] = {}
            cpu_busy_pct: dict[int, float] = {}

            window: dict[str, float] = {}

            def window_opens() -> None:
                kernel["before"] = KernelCounters.snapshot(server.pid)
                cpu_busy.start()
                on_phase(plan, "measuring", window)

            def window_closes() -> None:
                cpu_busy_pct.update(cpu_busy.stop())
                kernel["after"] = KernelCounters.snapshot(server.pid)

            probe = WindowProbe(window_opens, window_closes)

            def window_scheduled(start: float, end: float) -> None:
                window.update(window_start=start, window_end=end)
                if row.get("netns") == "own":  # the server's namespace counts this run's traffic alone
                    window["wire_pid"] = server.pid  # bench.monitor.wire reads its bytes on the wire
                probe.schedule(start, end)
                on_phase(plan, "warmup", window)

            on_phase(plan, "starting load generator", {})
            try:
                spec = _load_spec(
                    scenario, plan, server.host, server.port, gen_cpus, targets, logins[1] if logins else ""
                )
                # the server host is a namespace of this run's own, not another machine
                spec = dataclasses.replace(spec, allow_remote=bool(hosts.server_host))
                result = run_load(spec, on_window=window_scheduled, load_hosts=hosts.client_hosts())
            finally:
                probe.close()
            hold.enter_context(deferred_stop())
            on_phase(plan, "stopping", {})
            if result.warnings:  # the generator's own caveats about this run, kept beside its stderr
                writer.write_text(f"logs/{plan.run_id}.load-warnings.txt", "\n".join(result.warnings) + "\n")
            monitor.stop()
            died = not server.alive()
            exit_status = server.stop()
            leftovers = server.leftover_processes()
            row.update(result.row)
            row["runner_cpu_pct"] = result.parent_cpu_pct
            row.update(monitor.summary(result.window_start, result.window_end))
            row.update(limit_columns(row))  # where the generator's CPU and the server's meet
            row.update(KernelCounters.delta(kernel.get("before", {}), kernel.get("after", {})))
            row.update(cpuwork.check_row(row, server.ready, cpu_work))
            row.update({cpu_busy_column(cpu): share for cpu, share in cpu_busy_pct.items()})
            row["started_at"] = dt.datetime.fromtimestamp(result.window_start, dt.UTC).isoformat()
            row["server_exit"] = exit_status
            row.update(_server_fate(died, monitor.root_gone_at, result.window_start, server.stopped))
            histograms = result.histograms
            timeline = [dict(r, source="load") for r in result.timeline]
            timeline += [dict(r, source="server") for r in monitor.timeline(result.window_start)]
            # The cause first: a killed forking parent also leaves its
            # children behind, but "it died" is what happened.
            if died:
                when = "" if row["server_died_s"] is None else f", {row['server_died_s']:g} s into the measured window"
                problems.append(
                    f"server died during the run ({_exit_text(exit_status)}{when}); stderr tail:\n"
                    f"{server.stderr_tail()}"
                )
            if leftovers:
                problems.append(f"processes of the server still alive after stop (killed): {leftovers}")
        row.update(hosts.columns())  # the delay stage's counters, now that it is stopped
        row["status"] = "failed" if problems else "ok"
        row["error"] = "\n".join(problems)
    except KeyboardInterrupt as exc:
        row.update(status="interrupted", error=f"stopped by {signal_name(signum_of(exc))}")
        writer.add_run(row)
        raise
    except ServerLeftoverError as exc:
        # run_server killed what outlived the server; a cause found above stays first.
        row["status"] = "failed"
        row["error"] = "\n".join(problems or [str(exc)])
    except Exception as exc:  # noqa: BLE001 - any failure of one run is recorded, the scenario goes on
        row["status"] = "failed"
        row["error"] = f"{type(exc).__name__}: {exc}"
        if os.environ.get("SOCKBENCH_DEBUG"):
            row["error"] += "\n" + traceback.format_exc()
    finally:
        if monitor is not None:
            monitor.stop()
    try:
        writer.add_run(row, timeline, histograms)
    finally:
        hold.close()  # a signal that waited raises Stopped now, the run kept whole
    wall = time.monotonic() - began
    on_phase(
        plan,
        "done",
        {
            "idle_wait_s": idle_wait_s,
            "wall_s": wall,
            "status": row["status"],
            "overhead_s": max(0.0, wall - idle_wait_s - scenario.warmup_s - scenario.duration_s),
        },
    )
    return row


# --------------------------------------------------------------------------
# A whole scenario


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run_scenario(
    scenario: Scenario,
    *,
    results_root: Path = Path("results"),
    on_run: Callable[[RunPlan, dict[str, Any], int, int], None] | None = None,
    on_start: Callable[[Path, list[RunPlan]], None] | None = None,
    finish: bool = True,
    plots: bool = True,
    warn: Callable[[str], None] = _warn_stderr,
    on_phase: PhaseCallback = _no_phase,
) -> Path:
    """Run every model x point x repetition of ``scenario``; return the results folder.

    ``on_start(results_dir, plans)`` is called once the folder exists;
    ``on_run(plan, row, done, total)`` after each run is on disk;
    ``on_phase(plan, phase, info)`` as each run enters each of :data:`PHASES`
    (see :func:`execute_run`), then with ``plan`` None through
    :data:`FINISH_PHASES` (``drawing figures`` once per figure, with
    ``done`` and ``total``; ``finished`` with the stage's ``seconds``).
    With ``finish`` (the default), summary.json is written at the end, and
    with ``plots`` too the figures and the report.

    Error handling: SIGINT, SIGTERM and SIGHUP (in the main thread) stop the
    run in progress, which is recorded as ``interrupted``; the finished runs
    get their summary.json and :class:`Interrupted` is raised, carrying the
    signal. A full disk raises :class:`bench.results.DiskFull`.
    """
    plans = plan_runs(scenario)
    if scenario.loop_note():
        warn(scenario.loop_note())
    compiled = sorted({p.model for p in plans if registry.model(p.model).native}, key=registry.order_key)
    if compiled and not native.available():
        # The ceiling is a bonus, not a requirement: without a C compiler its
        # runs are left out with one line, never recorded as failures.
        plans = [p for p in plans if p.model not in compiled]
        warn(f"{', '.join(compiled)} left out: {native.why_unavailable()}")
    from bench.loadgen import engines
    from bench.scenario.schema import mix_has_slow

    notes = {
        engines.resolve(
            scenario.generator.engine, p.point.service, mix_has_slow(p.point.load), _engine_values(p.point)
        )[2]
        for p in plans
    }
    for note in sorted(notes - {""}):  # auto fell back to the python engine: said once here, and in each run's warnings
        warn(note)
    ensure_fd_limit(max(p.point.load.clients for p in plans) if plans else 0)
    if scenario.network.hosts == "namespaces":
        from bench.network import NetworkError, require_root

        try:
            require_root()
        except NetworkError as exc:
            raise ScenarioRefused(str(exc)) from None
    with stop_signals():
        return _run_plans(
            scenario,
            plans,
            results_root=results_root,
            on_run=on_run,
            on_start=on_start,
            finish=finish,
            plots=plots,
            warn=warn,
            on_phase=on_phase,
        )


def _run_plans(
    scenario: Scenario,
    plans: list[RunPlan],
    *,
    results_root: Path,
    on_run: Callable[[RunPlan, dict[str, Any], int, int], None] | None,
    on_start: Callable[[Path, list[RunPlan]], None] | None,
    finish: bool,
    plots: bool,
    warn: Callable[[str], None],
    on_phase: PhaseCallback,
) -> Path:
    """:func:`run_scenario` once the runs are planned, inside :func:`stop_signals`."""
    from bench.environment import collect_environment

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
    environment = collect_environment(
        {
            "policy": scenario.placement,
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "generator_cpus": sorted(gen_cpus) if gen_cpus else None,
        }
    )
    environment["cpu_work_calibration"] = cpu_work  # None: no run burns CPU work
    writer.write_json("environment.json", environment)
    from bench.calibration.persist import store_with_results

    store_with_results(results_dir)  # the ceiling of this machine now, kept with the runs it describes
    if on_start:
        on_start(results_dir, plans)
    with ExitStack() as stack:
        try:
            file_root: Path | None = None
            targets: dict[int, FileTarget] = {}
            sizes = [p.point.load.file_bytes for p in plans if p.point.service in FILE_SERVICES]
            if sizes:
                file_root, targets = make_file_root(sizes)
                stack.callback(shutil.rmtree, file_root, ignore_errors=True)
            logins = None
            if any(p.point.service == "timeauth" for p in plans):
                logins = make_logins()
                stack.callback(shutil.rmtree, logins[0].parent, ignore_errors=True)
            for done, plan in enumerate(plans, start=1):
                row = execute_run(
                    scenario,
                    plan,
                    writer,
                    file_root=file_root,
                    targets=targets,
                    cpu_work=cpu_work,
                    on_phase=on_phase,
                    logins=logins,
                )
                if on_run:
                    on_run(plan, row, done, len(plans))
        except KeyboardInterrupt as exc:
            # Wherever the signal lands (a run, its callback, the file root),
            # what is on disk stays and gets its summary.
            try:
                _finish(results_dir, plots=False, warn=warn)
            except (KeyboardInterrupt, DiskFull) as again:
                if isinstance(again, DiskFull):
                    warn(f"{again}: summary.json not written")
            raise Interrupted(results_dir, signum_of(exc), summary_written=_has_summary(results_dir)) from None
    if finish:
        try:
            _finish(results_dir, plots=plots, warn=warn, on_phase=on_phase)
        except KeyboardInterrupt as exc:
            # every run is on disk; figures are written whole or not at all
            raise Interrupted(results_dir, signum_of(exc), summary_written=_has_summary(results_dir)) from None
    return results_dir


def _has_summary(results_dir: Path) -> bool:
    # summary.json is written by rename, so a file that exists is complete.
    return (results_dir / "summary.json").is_file()


@contextlib.contextmanager
def _disk_full_as_diskfull(what: str) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT from code that raises a plain OSError into :class:`DiskFull`."""
    try:
        yield
    except DiskFull:
        raise
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFull(exc.errno, f"disk full while writing {what}") from exc
        raise


def _finish(
    results_dir: Path, *, plots: bool, warn: Callable[[str], None], on_phase: PhaseCallback = _no_phase
) -> None:
    """Write summary.json and, with ``plots``, the figures and the report.

    Error handling: a stop signal while summary.json is written is held back
    until it is on disk (:func:`deferred_stop`). A full disk raises
    :class:`DiskFull` at once, without writing anything more to report it.
    Any other failure of a figure or the report is a warning: the runs are
    safe on disk and `bench plot` / `bench report` can be re-run.
    """
    from bench.summary import write_summary

    began = time.monotonic()
    on_phase(None, "writing summary", {})
    with deferred_stop(), _disk_full_as_diskfull(f"{results_dir}/summary.json"):
        write_summary(results_dir)
    if not plots:
        on_phase(None, "finished", {"seconds": time.monotonic() - began, "plots": False})
        return
    from bench.plots import plot_results
    from bench.report import write_report
    from bench.stats import load_results

    # the folder read once, summary.json included, for the figures and the report: statistics computed once
    results_of = functools.cache(load_results)

    def draw(folder: Path) -> None:
        on_phase(None, "drawing figures", {"done": 0, "total": None})
        plot_results(
            folder,
            on_figure=lambda done, total, _job: on_phase(None, "drawing figures", {"done": done, "total": total}),
            results=results_of(folder),
        )

    def report(folder: Path) -> None:
        on_phase(None, "writing report", {})
        write_report(folder, results_of(folder))

    for step, what in ((draw, "figures"), (report, "report")):
        try:
            with _disk_full_as_diskfull(f"the {what} in {results_dir}"):
                step(results_dir)
        except DiskFull:
            raise
        except Exception as exc:  # noqa: BLE001
            log = results_dir / "logs" / "finish-errors.txt"
            try:
                with open(log, "a") as fh:
                    fh.write(f"{what}: {traceback.format_exc()}\n")
                see = f"see {log} and "
            except OSError:  # reporting must not depend on the disk that may have failed
                see = ""
            command = "bench plot" if step is draw else "bench report"
            warn(
                f"the {what} failed ({type(exc).__name__}: {exc}); the runs are saved, {see}"
                f"run `{command} {results_dir}`"
            )
    on_phase(None, "finished", {"seconds": time.monotonic() - began, "plots": True})
