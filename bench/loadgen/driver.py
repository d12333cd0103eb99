"""The parent side: plan the workers, start them together, collect and merge. :func:`run_load`.

Why processes
-------------
One Python event loop tops out around 120-160k round trips/s on the
reference machine (uvloop, or asyncio with a sane read buffer) and uses a
whole core doing so; to load a server harder, or to leave headroom so the
generator is not the bottleneck, the clients are spread over worker
processes, one per CPU by default. Threads would share one GIL.

Plan
----
``W = spec.workers`` or one per CPU of ``spec.cpus`` (else per CPU this
process may run on), never more than there are clients. Clients are split
as evenly as possible; in open loop each worker gets the rate share of its
clients, and worker *i*'s schedule is shifted by *i* / rate so the merged
schedule is evenly spaced. With ``spec.cpus`` worker *i* is pinned to the
*i*-th CPU (round robin), so placement is reproducible.

Start
-----
Workers are started, handed their job, and waited for (each writes a byte to
a pipe when its loop is ready: imports alone take ~0.2 s). Only then does the
parent pick the shared wall-clock start, :data:`START_MARGIN_S` ahead, and
send it to all: every worker starts its warmup and its measured window at
the same instant, and the window the runner aligns server samples with is
the one the workers measured.

Run-queue wait
--------------
A worker can be short of CPU without being busy: runnable, but waiting for a
CPU another process holds (placements ``shared`` and ``none``, or a busy
machine). Its own CPU figure cannot show that, so the parent reads
``/proc/<pid>/schedstat`` (field 2: nanoseconds spent runnable on a run
queue) of every worker at the window's start and end and adds
``runq_wait_s``/``runq_wait_pct`` to each report (and its own CPU over the
same span, all threads, as ``LoadResult.parent_cpu_pct``: in ``bench run``
that is the runner with its monitor thread); reading it here, not in
the worker, makes it the same for any worker program. A worker that has
already exited by the end mark still shows its final figures until it is
reaped (after its report), so the end figure then includes its teardown.

Error handling
--------------
Bad specs raise :class:`ValueError` before any process starts (see
:func:`bench.loadgen.spec.validate`, :func:`bench.loadgen.spec.resolve_target`).
A worker that fails, or does not finish in time, raises :class:`LoadGenError`
with its error and the tail of its stderr.

Resource handling
-----------------
:class:`WorkerPool` is a context manager: on leaving it, normally or by any
exception including KeyboardInterrupt, every worker still running is killed
(SIGKILL to its own process group) and every worker is reaped, then the
exception propagates. Workers run in their own session, so a Ctrl-C at the
terminal reaches only the parent, which then does exactly that. Each worker
also stops by itself at its deadline and has an alarm as a backstop; the
parent's hard timeout (:data:`PARENT_GRACE_S`) is longer than the worker's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from time import monotonic
from types import TracebackType
from typing import Any

from bench.loadgen import engines
from bench.loadgen.errors import LoadGenError
from bench.loadgen.merge import merge_reports
from bench.loadgen.spec import LoadResult, LoadSpec, resolve_target, source_addresses, validate
from bench.monitor.procfs import ProcessGone, read_schedstat
from servers.processes import close_pipes, kill

#: Time a worker may take past its planned end (teardown, encoding) before
#: its own SIGALRM kills it: both take well under a second even with 10k
#: connections; 20 s covers a machine saturated by the server under test.
WORKER_GRACE_S = 20.0
#: Time allowed for all workers to import and set up. Idle, it takes ~0.2 s;
#: 30 s covers a machine saturated by the server under test.
READY_TIMEOUT_S = 30.0
#: How far ahead the shared start is set once all are ready: a worker blocked
#: in readline wakes within a scheduler tick; 50 ms covers a busy machine.
START_MARGIN_S = 0.05
#: Parent's hard timeout beyond the planned end; longer than the worker's own
#: alarm so a worker normally reports its own failure first.
PARENT_GRACE_S = WORKER_GRACE_S + 10.0
#: Bytes of a worker's stderr kept for error messages.
STDERR_TAIL = 4096


def worker_count(spec: LoadSpec) -> int:
    """Number of worker processes for ``spec`` (see module docstring)."""
    if spec.workers is not None:
        n = spec.workers
    elif spec.cpus:
        n = len(spec.cpus)
    else:
        n = len(os.sched_getaffinity(0))
    return max(1, min(n, spec.clients))


def _split(counts: dict[str, int], n: int) -> list[dict[str, int]]:
    """Each kind's clients spread over ``n`` workers as evenly as possible, the totals too.

    Kind by kind, each worker gets its whole share and the leftovers go one
    each to the workers after the last one that took one, so 3 fast and 3
    slow clients on 2 workers give 2+1 and 1+2, not 2+2 and 1+1.
    """
    out: list[dict[str, int]] = [{} for _ in range(n)]
    turn = 0
    for kind, count in counts.items():
        base, extra = divmod(count, n)
        for i in range(n):
            out[i][kind] = base
        for j in range(extra):
            out[(turn + j) % n][kind] += 1
        turn = (turn + extra) % n
    return out


def plan_jobs(spec: LoadSpec, ip: str, engine: str = "native") -> list[dict[str, Any]]:
    """One job (the worker's stdin line 1) per worker: its fast clients, and its slow ones by kind (``mix``)."""
    n = worker_count(spec)
    cpus = sorted(spec.cpus) if spec.cpus else None
    kinds = spec.mix()
    fast = kinds.pop("fast")
    sources = source_addresses(ip, engine)
    jobs, offset = [], 0
    for i, share in enumerate(_split({"fast": fast, **kinds}, n)):
        clients = share.pop("fast")
        jobs.append(
            {
                "index": i,
                "spec": spec.to_dict(),
                "ip": ip,
                "source_ips": sources,
                "clients": clients,
                "mix": {kind: k for kind, k in share.items() if k},
                "client_offset": offset,
                "rate": spec.rate * clients / fast if spec.rate and fast else None,
                "phase_s": i / spec.rate if spec.rate else 0.0,
                "cpu": cpus[i % len(cpus)] if cpus else None,
                "seed": i + 1,
                "grace_s": WORKER_GRACE_S,
            }
        )
        offset += clients
    return jobs


class WorkerPool:
    """Worker processes of one run: start, handshake, collect, and always kill/reap. See module docstring."""

    def __init__(
        self, jobs: list[dict[str, Any]], command: list[str] | None = None, hosts: list[Any] | None = None
    ) -> None:
        self.jobs = jobs
        # Where worker i starts: inside hosts[i % len(hosts)].enter() (a client host's namespace); none: here.
        self.hosts = list(hosts or [])
        # The worker program without its READY_FD argument (see bench.loadgen.engines).
        self.command = command or [sys.executable, "-m", "bench.loadgen.worker"]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sel = selectors.DefaultSelector()
        self.ready: set[int] = set()
        self.ready_eof: set[int] = set()
        self.out_eof: set[int] = set()
        self.out: dict[int, bytearray] = {}
        self.err: dict[int, bytearray] = {}
        # name -> (monotonic time read, this process's CPU seconds, per worker (ns on CPU, ns waiting) or None)
        self.schedstat: dict[str, tuple[float, float, list[tuple[int, int] | None]]] = {}

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill_all()

    # ------------------------------------------------------------ phases
    def start(self) -> None:
        """Spawn every worker and hand it its job."""
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for i, job in enumerate(self.jobs):
            r, w = os.pipe()
            try:
                # a process started in a network namespace stays in it
                with self.hosts[i % len(self.hosts)].enter() if self.hosts else contextlib.nullcontext():
                    p = subprocess.Popen(
                        [*self.command, str(w)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        pass_fds=(w,),
                        start_new_session=True,
                        env=env,
                    )
            except BaseException:
                os.close(r)
                raise
            finally:
                os.close(w)
            self.procs.append(p)
            self.out[i], self.err[i] = bytearray(), bytearray()
            self.sel.register(r, selectors.EVENT_READ, (i, "ready"))
            assert p.stdout is not None and p.stderr is not None and p.stdin is not None
            self.sel.register(p.stdout, selectors.EVENT_READ, (i, "out"))
            self.sel.register(p.stderr, selectors.EVENT_READ, (i, "err"))
            self._send(p, json.dumps(job))

    def wait_ready(self, timeout: float) -> None:
        """Block until every worker is set up; raise :class:`LoadGenError` if one fails or time runs out."""
        deadline = monotonic() + timeout
        while len(self.ready) < len(self.procs):
            failed = self.ready_eof - self.ready
            if failed:
                i = min(failed)
                self._drain(i, monotonic() + 5.0)  # why 5 s: a failing worker writes its error at once
                raise LoadGenError(f"load worker {i} failed during setup: {self._describe(i)}")
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise LoadGenError(f"load workers were not ready within {timeout:.0f} s")
            self._pump(remaining)

    def go(self, start_wall: float) -> None:
        """Send the shared start time to every worker and close their stdin."""
        for p in self.procs:
            self._send(p, json.dumps({"start_wall": start_wall}))
            assert p.stdin is not None  # started with stdin=PIPE
            try:
                p.stdin.close()
            except OSError:
                pass  # already dead; collect() reports it

    def read_schedstat(self, name: str) -> None:
        """Record every worker's ``schedstat`` now, as ``self.schedstat[name]`` (None for one gone)."""
        values: list[tuple[int, int] | None] = []
        for p in self.procs:
            try:
                values.append(read_schedstat(p.pid))
            except (ProcessGone, OSError, ValueError, IndexError):
                values.append(None)  # reaped already, or no schedstat in this kernel
        self.schedstat[name] = (monotonic(), time.process_time(), values)

    def collect(self, deadline: float, marks: Sequence[tuple[float, str]] = ()) -> list[dict[str, Any]]:
        """Read every worker's report (by monotonic ``deadline``) and return them in worker order.

        At each monotonic time of ``marks`` (``(time, name)``, in time order)
        the workers' ``schedstat`` is read (:meth:`read_schedstat`), before any
        worker that has finished is reaped. A worker that reports failure
        raises at once (the others are killed on leaving the pool) rather than
        after the rest finish their window.
        """
        reports: dict[int, dict[str, Any]] = {}
        todo = sorted(marks)
        while len(reports) < len(self.procs):
            while todo and (todo[0][0] <= monotonic() or self.out_eof - reports.keys()):
                self.read_schedstat(todo.pop(0)[1])
            for i in sorted(self.out_eof - reports.keys()):
                reports[i] = self._report(i, deadline)
            if len(reports) == len(self.procs):
                break
            remaining = deadline - monotonic()
            if remaining <= 0:
                late = sorted(set(range(len(self.procs))) - self.out_eof)
                raise LoadGenError(f"load workers {late} did not finish by their hard timeout")
            self._pump(min(remaining, 1.0, *(t - monotonic() for t, _ in todo[:1])))
        return [reports[i] for i in range(len(self.procs))]

    def parent_cpu_pct(self, start: str, end: str) -> float:
        """CPU of this (the parent) process, all its threads, between two marks; percent of one core."""
        (t0, c0, _), (t1, c1, _) = self.schedstat[start], self.schedstat[end]
        return 100.0 * (c1 - c0) / max(1e-9, t1 - t0)

    def runq_wait(self, start: str, end: str) -> list[tuple[float, float] | None]:
        """Per worker, (seconds waiting on a run queue, percent of the time) between two marks."""
        (t0, _, a), (t1, _, b) = self.schedstat[start], self.schedstat[end]
        span = max(1e-9, t1 - t0)
        out: list[tuple[float, float] | None] = []
        for x, y in zip(a, b):
            if x is None or y is None:
                out.append(None)
            else:
                wait = max(0, y[1] - x[1]) / 1e9
                out.append((wait, 100.0 * wait / span))
        return out

    def _report(self, i: int, deadline: float) -> dict[str, Any]:
        """Parse worker ``i``'s report once its stdout is closed; raise if it failed."""
        p = self.procs[i]
        try:
            p.wait(timeout=max(0.1, deadline - monotonic()))
        except subprocess.TimeoutExpired:
            raise LoadGenError(f"load worker {i} closed its output but did not exit") from None
        try:
            report = json.loads(bytes(self.out[i]))
        except ValueError as exc:
            raw = bytes(self.out[i])
            raise LoadGenError(
                f"load worker {i} (exit {p.returncode}) sent no valid report ({exc}; "
                f"{len(raw)} bytes: {raw[:120]!r}...{raw[-120:]!r}); stderr: {self._describe(i)}"
            ) from None
        if not report.get("ok"):
            raise LoadGenError(f"load worker {i} failed: {report.get('error')}\n{report.get('traceback', '')}")
        return report

    def kill_all(self) -> None:
        """Kill (SIGKILL, whole process group) every worker still running, reap all, close pipes."""
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fileobj)
            if key.data[1] == "ready":
                os.close(key.fd)
        self.sel.close()
        for p in self.procs:
            kill(p)  # all first, then reap: they go down together
        for p in self.procs:
            p.wait()  # SIGKILLed: it goes, unbounded wait is safe
            close_pipes(p)

    # ------------------------------------------------------------ plumbing
    @staticmethod
    def _send(p: subprocess.Popen[bytes], line: str) -> None:
        assert p.stdin is not None  # started with stdin=PIPE
        try:
            p.stdin.write(line.encode() + b"\n")
            p.stdin.flush()
        except OSError:
            pass  # the worker died; its missing ready byte or report says so

    def _pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            i, kind = key.data
            data = os.read(key.fd, 65536)
            if not data:
                self.sel.unregister(key.fileobj)
                if kind == "ready":
                    os.close(key.fd)
                    self.ready_eof.add(i)
                elif kind == "out":
                    self.out_eof.add(i)
            elif kind == "ready":
                self.ready.add(i)
            elif kind == "out":
                self.out[i] += data
            else:
                self.err[i] = (self.err[i] + data)[-STDERR_TAIL:]

    def _drain(self, i: int, deadline: float) -> None:
        while i not in self.out_eof and monotonic() < deadline:
            self._pump(deadline - monotonic())

    def _describe(self, i: int) -> str:
        try:
            report = json.loads(bytes(self.out[i]))
            return str(report.get("error"))
        except ValueError:
            return self.err[i].decode("utf-8", "replace").strip()[-1000:] or "(no output)"


def run_load(
    spec: LoadSpec, on_window: Callable[[float, float], None] | None = None, load_hosts: list[Any] | None = None
) -> LoadResult:
    """Run the load described by ``spec`` and return the merged result.

    ``load_hosts`` (:class:`bench.loadgen.locust_engine.LoadHost`, or any
    object with an ``enter()`` context manager and a ``label``): where the
    workers start, worker *i* on host *i* mod H (engines native, python and
    locust); default: here.

    ``on_window(start, end)``, if given, is called once the workers have their
    start time, with the measured window's wall-clock bounds (``time.time()``
    seconds), so a caller can sample side metrics over exactly that window.

    Raises :class:`ValueError` for a bad spec or a non-loopback target without
    ``allow_remote`` (before starting anything), :class:`LoadGenError` if a
    worker fails. Workers are always killed and reaped before this returns or
    raises (KeyboardInterrupt included).
    """
    validate(spec)
    engine, command, note = engines.resolve(spec.engine, spec.service, spec.has_slow(), engines.spec_values(spec))
    if engine == "locust":
        from bench.loadgen.locust_engine import run_locust

        return run_locust(spec, on_window, load_hosts, local_workers=worker_count(spec)).result
    if engine == "wrk":
        from bench.loadgen.wrk_engine import run_wrk

        return run_wrk(spec, on_window)
    if engine == "python" and spec.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError(
            "loop 'uvloop' asked for but uvloop is not installed: pip install uvloop, or use --loop asyncio"
        )
    ip = resolve_target(spec.host, spec.port, spec.allow_remote)
    jobs = plan_jobs(spec, ip, engine)
    # several client hosts: worker i on host i mod H (each host needs a worker: the scenario checks it)
    hosts = list(load_hosts or [])[: len(jobs)] if load_hosts and len(load_hosts) > 1 and len(jobs) > 1 else []
    with WorkerPool(jobs, command, hosts) as pool:
        pool.start()
        pool.wait_ready(READY_TIMEOUT_S)
        start_wall = time.time() + START_MARGIN_S
        pool.go(start_wall)
        if on_window is not None:  # e.g. the runner's side metrics, bounded to the window
            on_window(start_wall + spec.warmup_s, start_wall + spec.warmup_s + spec.duration_s)
        window_start = monotonic() + (start_wall - time.time()) + spec.warmup_s
        window_end = window_start + spec.duration_s
        deadline = window_end + PARENT_GRACE_S
        reports = pool.collect(deadline, [(window_start, "start"), (window_end, "end")])
        for report, wait in zip(reports, pool.runq_wait("start", "end")):
            report["runq_wait_s"], report["runq_wait_pct"] = wait if wait is not None else (None, None)
        parent_cpu = pool.parent_cpu_pct("start", "end")
    result = merge_reports(spec, reports, start_wall + spec.warmup_s)
    if hosts:
        result.row["gen_engine"] += f", {len(jobs)} workers on {len(hosts)} hosts"
    result.parent_cpu_pct = round(parent_cpu, 1)
    if note:
        result.warnings.insert(0, note)
    return result
