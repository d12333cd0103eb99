"""The ``locust`` load engine: load from several hosts through Locust's master and workers.

``generator.engine: locust`` (``bench load --engine locust``) drives the
server with `Locust <https://locust.io>`_, which users may already run over
many load hosts, instead of sockbench's own worker processes. It is for
scale-out, not per-core speed: a Locust worker is one gevent process with
Locust's per-request bookkeeping on top, and does fewer round trips per
core than the native or python engine (``benchmarks/locust_engine.py``
measures by how much). Services echo, file and http
(:mod:`bench.loadgen.locust_users`); closed loop and open loop.

Open loop
---------
Locust's own pacing (``constant_pacing``, ``constant_throughput``) times
each user's next request from the start of its previous one and never
catches up: a reply slower than the interval pushes back every request
behind it, nothing is ever late or missed in Locust's eyes, and latency from
the actual send hides the queueing an open loop exists to show (coordinated
omission). So the users do not use it (their ``wait_time`` is 0); each keeps
a schedule of its own instead: with rate R over N users in all, user *u*'s
request *i* is due at ``start + phase_u + i * N / R`` (the users' phases
interleaved over the workers), whatever the server does. A user sleeps until
its next due time if it is free, or sends at once if that time has passed
while it waited on a reply. As in the other engines, latency counts from the
due time (``latency``) and from the actual send (``latency_uncorrected``); a
send more than :data:`bench.loadgen.schedule.LATE_TOLERANCE_S` after its due
time is a late start; what was due before the window's end and never sent is
``unstarted``, censored at the time it had waited; the mean send lag is
reported.

Unlike the python and native engines, a due request waits for *its* user's
connection, not for any free one (one schedule per connection, as wrk2
does): with uneven replies a python-engine run can move a request to an idle
connection where this one queues it. gevent's timers wake in whole
milliseconds, so sends go out up to ~1 ms after their due time; that delay
is in the corrected latency, and the result says so (``coarse_timer``, and
the late starts of users that were free, ``late_starts_generator``).

How a run goes
--------------
1. The master is started headless, ``locust -f bench/loadgen/locust_users.py
   --master --headless --expect-workers N`` (web UI off; one listening port,
   a free one of the first load host's address: loopback, or the client
   host's own address in network namespaces; ``master_bind`` for workers on
   other machines), with the job in its environment and a status pipe
   (:mod:`bench.loadgen.locust_users`).
2. At the same time local workers are started, ``locust -f ... --worker --master-host ...``,
   worker *i* on load host *i* mod H (the hosts the runner gives, e.g.
   several client hosts of :mod:`bench.network.hosts`). For a worker on a
   machine of its own, :func:`worker_command` is the exact command to run
   there; :func:`run_locust` prints it and waits for it.
3. Once every worker is connected (at most :data:`CONNECT_TIMEOUT_S`; after
   that a :class:`~bench.loadgen.errors.LoadGenError` names the workers that
   never came), the master starts the test and sends a shared start time
   with the users, so every worker's warmup and window line up as in the
   other engines.
4. Each worker reports sockbench's own document (HdrHistograms, counters,
   timeline) to the master in a custom message; the master hands all of
   them here and quits. They merge like any other workers'
   (:func:`bench.loadgen.merge.merge_reports`); ``gen_engine`` says
   ``locust, N workers on H hosts``.

Locust's own statistics are kept as a cross-check: the master's total of
request events must equal the sum of what the workers say they fired, or the
result carries a warning.

Error handling
--------------
Locust not installed: :class:`ValueError` naming the extra to install
(:data:`MISSING`). A master or worker that exits early, a worker that never
connects, or no reports by the hard timeout: :class:`LoadGenError` with the
process's stderr tail.

Resource handling
-----------------
Every process is started in a session of its own and, on every exit path
(KeyboardInterrupt included), killed by its process group and reaped; the
status pipe and log files are closed and the temporary folder removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

from bench.loadgen import engines
from bench.loadgen.engines import LOCUST_MISSING as MISSING
from bench.loadgen.errors import LoadGenError
from bench.loadgen.merge import merge_reports
from bench.loadgen.spec import LOCUST_SERVICES, LoadResult, LoadSpec, resolve_target, validate
from bench.monitor.procfs import ProcessGone, read_schedstat

LOCUSTFILE = Path(__file__).with_name("locust_users.py")
#: Environment variables handed to the Locust processes (read by :mod:`bench.loadgen.locust_users`):
#: the job and the status pipe (master), the worker's name and its host's label (workers).
JOB_ENV = "SOCKBENCH_LOCUST_JOB"
STATUS_FD_ENV = "SOCKBENCH_LOCUST_STATUS_FD"
NAME_ENV = "SOCKBENCH_LOCUST_WORKER"
HOST_ENV = "SOCKBENCH_LOCUST_HOST"
#: Time for every worker to start and connect: importing Locust and gevent
#: takes ~1-2 s idle; 30 s covers a machine saturated by the server under test.
CONNECT_TIMEOUT_S = 30.0
#: How long past the window's end the reports may take (drain, encoding,
#: the master's round trip): the other engines' hard timeout
#: (:data:`bench.loadgen.driver.REPORT_GRACE_S`), for the same reasons.
REPORT_GRACE_S = 30.0
#: Locust's own bound on waiting for workers, a little past ours so ours names them first.
LOCUST_WAIT_SLACK_S = 5.0
#: Bytes of a process's stderr quoted in an error.
STDERR_TAIL = 3000


#: True if Locust can be imported here.
available = engines.locust_available


def require() -> None:
    """Raise :class:`ValueError` (:data:`MISSING`) unless Locust is installed."""
    if not engines.locust_available():
        raise ValueError(MISSING)


@dataclasses.dataclass
class LoadHost:
    """A place to start local Locust workers: its label, its address (the master binds the first's), how to enter it."""

    label: str
    address: str = "127.0.0.1"
    enter: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext


def _env(**extra: str) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def worker_command(master_host: str, master_port: int) -> list[str]:
    """The command that starts one Locust worker for a master at ``master_host:master_port``."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
        "--loglevel",
        "WARNING",
    ]


class _Process:
    """One Locust process: its Popen, its stderr file, its label."""

    def __init__(self, label: str, popen: subprocess.Popen[bytes], stderr: Any) -> None:
        self.label = label
        self.popen = popen
        self.stderr = stderr

    def tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - STDERR_TAIL))
        return self.stderr.read().decode("utf-8", "replace").strip() or "(no output)"


class LocustRun:
    """One Locust master and its workers (see the module docstring); a context manager that always stops them."""

    def __init__(
        self,
        spec: LoadSpec,
        ip: str,
        hosts: list[LoadHost],
        local_workers: int,
        remote_workers: int = 0,
        master_bind: str | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.ip = ip
        self.hosts = hosts
        self.local = local_workers
        self.remote = remote_workers
        self.bind = master_bind or hosts[0].address
        self.announce = announce or (lambda text: print(text, file=sys.stderr, flush=True))
        self.expected = [f"worker {i + 1} on {hosts[i % len(hosts)].label}" for i in range(local_workers)]
        self.processes: list[_Process] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="sockbench-locust-")
        self.status_r, self.status_w = os.pipe()
        os.set_blocking(self.status_r, False)
        self.buffer = bytearray()
        self.lines: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.port: int | None = None
        self.start_wall: float | None = None
        self.outcome: dict[str, Any] | None = None
        # mark -> (monotonic time, per local worker (ns on CPU, ns waiting) or None)
        self.schedstat: dict[str, tuple[float, list[tuple[int, int] | None]]] = {}

    def __enter__(self) -> LocustRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # ------------------------------------------------------------ processes
    def _spawn(self, label: str, command: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> None:
        stderr = open(Path(self.tmp.name) / f"{len(self.processes)}.stderr", "w+b")  # noqa: SIM115 - closed in stop_all
        try:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=env,
                cwd=self.tmp.name,
                pass_fds=pass_fds,
                start_new_session=True,
            )
        except BaseException:
            stderr.close()
            raise
        self.processes.append(_Process(label, popen, stderr))

    def start_master(self) -> None:
        """Start the master on a free port of :attr:`bind` (in the calling thread's namespace)."""
        spec = self.spec
        workers = self.local + self.remote
        # Chosen here rather than by the master so the workers start at the
        # same time as the master (each import of Locust takes seconds on a
        # busy machine); a worker's first message waits in ZeroMQ until the
        # master is bound. Another process taking the port in between makes
        # the master exit with a bind error, which is reported.
        with socket.create_server((self.bind, 0)) as probe:
            self.port = probe.getsockname()[1]
        # The master's own backstop: the test ends this long after it starts even if a report never comes.
        run_time = math.ceil(1.0 + spec.warmup_s + spec.duration_s + REPORT_GRACE_S)
        user_class = {"echo": "EchoUser", "file": "FileUser", "http": "HttpUser"}[spec.service]
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--master",
            "--headless",
            "--master-bind-host",
            self.bind,
            "--master-bind-port",
            str(self.port),
            "--expect-workers",
            str(workers),
            "--expect-workers-max-wait",
            str(math.ceil(CONNECT_TIMEOUT_S + LOCUST_WAIT_SLACK_S)),
            # every user at once: the start is sockbench's shared start time, not a ramp
            "-u",
            str(spec.clients),
            "-r",
            str(spec.clients),
            "--run-time",
            f"{run_time}s",
            "--stop-timeout",
            "1",
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
            user_class,
        ]
        job = {"spec": spec.to_dict(), "ip": self.ip, "workers": workers}
        env = _env(**{JOB_ENV: json.dumps(job), STATUS_FD_ENV: str(self.status_w)})
        self._spawn("locust master", command, env, pass_fds=(self.status_w,))
        os.close(self.status_w)
        self.status_w = -1

    def start_workers(self) -> None:
        assert self.port is not None
        for i, name in enumerate(self.expected):
            host = self.hosts[i % len(self.hosts)]
            env = _env(**{NAME_ENV: name, HOST_ENV: host.label})
            with host.enter():
                self._spawn(name, worker_command(self.bind, self.port), env)
            if self.spec.cpus:  # as the other engines: worker i on the i-th CPU, round robin
                cpus = sorted(self.spec.cpus)
                os.sched_setaffinity(self.processes[-1].popen.pid, {cpus[i % len(cpus)]})
        for i in range(self.remote):
            self.announce(
                f"start Locust worker {self.local + i + 1} of {self.local + self.remote} on its host "
                f"(within {CONNECT_TIMEOUT_S:.0f} s): cd {shlex.quote(str(Path(__file__).resolve().parents[2]))} && "
                + shlex.join(worker_command(self.bind, self.port))
            )

    def wait_start(self) -> float:
        """Wait until every worker has connected and the test starts; the shared start (time.time())."""
        deadline = monotonic() + CONNECT_TIMEOUT_S
        while self.start_wall is None:
            if not self._wait_status(deadline):
                raise LoadGenError(self._missing_workers())
        return self.start_wall

    def _missing_workers(self) -> str:
        came = [h["name"] for h in self.hellos]
        missing = [n for n in self.expected if n not in came]
        remote_came = len(came) - (len(self.expected) - len(missing))
        missing += [f"remote worker {i + 1}" for i in range(remote_came, self.remote)]
        return (
            f"Locust workers not connected within {CONNECT_TIMEOUT_S:.0f} s: missing {', '.join(missing)}; "
            f"connected: {', '.join(came) or 'none'} (master at {self.bind}:{self.port})"
            + "".join(f"\n{p.label} stderr: {p.tail()}" for p in self.processes[1:] if p.label in missing)
        )

    def wait_reports(self, deadline: float, marks: list[tuple[float, str]]) -> dict[str, Any]:
        """The master's final status line (``reports`` and ``locust_totals``), reading ``schedstat`` at ``marks``."""
        todo = sorted(marks)
        while self.outcome is None:
            while todo and todo[0][0] <= monotonic():
                self._read_schedstat(todo.pop(0)[1])
            if not self._wait_status(min([deadline] + [t for t, _ in todo[:1]])) and monotonic() >= deadline:
                raise LoadGenError("the Locust workers sent no reports by their hard timeout")
        for _t, name in todo:  # a report before the window's end: a failed run, read for completeness
            self._read_schedstat(name)
        return self.outcome

    def _read_schedstat(self, name: str) -> None:
        values: list[tuple[int, int] | None] = []
        for p in self.processes[1:]:
            try:
                values.append(read_schedstat(p.popen.pid))
            except (ProcessGone, OSError, ValueError, IndexError):
                values.append(None)
        self.schedstat[name] = (monotonic(), values)

    def runq_wait_pct(self, start: str, end: str) -> dict[int, float]:
        """Run-queue wait of each local worker between two marks, percent, by its pid."""
        if start not in self.schedstat or end not in self.schedstat:
            return {}
        (t0, a), (t1, b) = self.schedstat[start], self.schedstat[end]
        span = max(1e-9, t1 - t0)
        out = {}
        for p, x, y in zip(self.processes[1:], a, b):
            if x is not None and y is not None:
                out[p.popen.pid] = 100.0 * max(0, y[1] - x[1]) / 1e9 / span
        return out

    # ------------------------------------------------------------ status pipe
    def _wait_status(self, deadline: float) -> bool:
        """Read status lines until one more arrives (True) or ``deadline`` passes (False); raise if a process died."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.status_r, selectors.EVENT_READ)
            n = len(self.lines)
            while len(self.lines) == n:
                for p in self.processes:
                    if p.popen.poll() is not None:
                        self._read()  # what it wrote before exiting comes first
                        if len(self.lines) > n:
                            return True
                        raise LoadGenError(f"{p.label} exited ({p.popen.returncode}) before the run ended: {p.tail()}")
                left = deadline - monotonic()
                if left <= 0:
                    return False
                sel.select(min(left, 0.2))  # why 0.2 s: how soon a dead process is noticed
                self._read()
        return True

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.status_r, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self.buffer += data
        while b"\n" in self.buffer:
            line, _, rest = bytes(self.buffer).partition(b"\n")
            self.buffer = bytearray(rest)
            self._line(json.loads(line))

    def _line(self, d: dict[str, Any]) -> None:
        self.lines.append(d)
        if "hello" in d:
            self.hellos.append({"name": d["hello"], "host": d["host"], "pid": d["pid"]})
        elif "start_wall" in d:
            self.start_wall = float(d["start_wall"])
        elif "failed" in d:
            raise LoadGenError(f"Locust worker {d['failed'].get('index')} failed: {d['failed'].get('error')}")
        elif "reports" in d:
            self.outcome = d

    def stop_all(self) -> None:
        """SIGKILL every process group, reap, close, remove the folder.

        No gentler signal first: by the time the reports are in, every
        worker has closed its connections to the server with a FIN, and
        Locust's own shutdown (statistics tables) takes seconds for nothing.
        """
        for p in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.popen.pid, signal.SIGKILL)  # own session: pgid == pid, and all it started
        for p in self.processes:
            p.popen.wait()
            p.stderr.close()
        for fd in (self.status_r, self.status_w):
            if fd >= 0:
                os.close(fd)
        self.status_r = self.status_w = -1
        self.tmp.cleanup()


@dataclasses.dataclass
class LocustOutcome:
    """A Locust run: the merged result, each worker's report, and Locust's own totals."""

    result: LoadResult
    reports: list[dict[str, Any]]
    locust_totals: dict[str, int]


def run_locust(
    spec: LoadSpec,
    on_window: Callable[[float, float], None] | None = None,
    hosts: list[LoadHost] | None = None,
    *,
    local_workers: int | None = None,
    remote_workers: int = 0,
    master_bind: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> LocustOutcome:
    """Run ``spec`` on Locust: ``local_workers`` over ``hosts``, plus ``remote_workers`` started by hand.

    ``local_workers`` defaults to ``spec.workers``, else 1 (0 with remote
    workers); :func:`bench.loadgen.run_load` gives one per CPU as for the
    other engines. ``on_window`` as for :func:`bench.loadgen.run_load`. ``hosts`` default to
    loopback; ``master_bind`` is the address the master listens on (default:
    the first host's), which a remote worker must reach.
    """
    validate(spec)
    require()
    if spec.service not in LOCUST_SERVICES:
        raise ValueError(engines.locust_refuses(spec.service))
    hosts = hosts or [LoadHost("loopback")]
    ip = resolve_target(spec.host, spec.port, spec.allow_remote)
    if master_bind is not None and not spec.allow_remote:
        try:
            resolve_target(master_bind, 1, False)
        except ValueError:  # listening beyond loopback must be asked for, as load beyond it is
            raise ValueError(
                f"the Locust master would listen on {master_bind}, not a loopback address: "
                f"pass --allow-remote (LoadSpec.allow_remote=True) to let workers on other hosts "
                f"reach it"
            ) from None
    if local_workers is None:
        local_workers = spec.workers or (0 if remote_workers else 1)
    local = local_workers
    with LocustRun(spec, ip, hosts, local, remote_workers, master_bind, announce) as run:
        run.start_master()
        run.start_workers()
        start_wall = run.wait_start()
        window_start_wall = start_wall + spec.warmup_s
        if on_window is not None:
            on_window(window_start_wall, window_start_wall + spec.duration_s)
        window_start = monotonic() + (window_start_wall - time.time())
        window_end = window_start + spec.duration_s
        outcome = run.wait_reports(window_end + REPORT_GRACE_S, [(window_start, "start"), (window_end, "end")])
        waits = run.runq_wait_pct("start", "end")
    reports = outcome["reports"]
    for r in reports:
        r["runq_wait_pct"] = waits.get(r.get("pid"))
        r["runq_wait_s"] = None if r["runq_wait_pct"] is None else r["runq_wait_pct"] * spec.duration_s / 100
    result = merge_reports(spec, reports, window_start_wall)
    n_hosts = len({r.get("host") for r in reports})
    result.row["gen_engine"] = (
        f"locust, {len(reports)} worker{'s' if len(reports) != 1 else ''} "
        f"on {n_hosts} host{'s' if n_hosts != 1 else ''}"
    )
    totals = outcome["locust_totals"]
    fired = sum(r["locust_events"]["ok"] + r["locust_events"]["failed"] for r in reports)
    if totals["requests"] != fired:
        result.warnings.append(
            f"Locust's own statistics count {totals['requests']:,} requests but the workers "
            f"fired {fired:,} request events: a report or a statistics message was lost"
        )
    return LocustOutcome(result, reports, totals)
