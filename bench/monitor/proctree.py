"""Sampling a server's whole process tree while a point runs.

:class:`ServerMonitor` runs one thread that, every ``interval_s``, records the
server's tree (the root pid and every descendant): memory (RSS, PSS, USS
summed over the tree), process, thread and open-fd counts, cumulative CPU
time (user, system), cumulative context switches, and the accept-queue depth
of the listening socket. :meth:`ServerMonitor.summary` turns the samples of a
time window into the ``runs.csv`` columns; :meth:`ServerMonitor.timeline`
gives one ``timeline.csv`` row per sample.

Which processes belong to the tree
    Each sample reads ``/proc/*/stat`` once and walks parent links down from
    the root. Membership is *sticky*: a process seen in the tree stays in it
    (identified by pid + start time, so a reused pid is not mistaken for it)
    even when its parent dies and it is re-parented outside the tree.

Memory
    RSS comes from ``/proc/PID/stat`` at every sample. PSS and USS come from
    psutil's ``memory_full_info`` (``/proc/PID/smaps_rollup``), which makes
    the kernel walk every page table of the process: ~0.15-0.2 ms per
    process, more than all the rest of a sample put together and growing
    with resident memory, so they are read at most every ``pss_interval_s``
    (0.5 s by default); samples in between have PSS/USS None (not read, not
    zero) and their peaks/means are over the samples that read them. All
    three are summed over the live members. Summed RSS
    counts a page shared by N forked children N times (for a forking server
    ~6x more than PSS here); PSS shares each page among its users, so summed
    PSS is the tree's real footprint and USS its private part
    (USS <= PSS <= RSS). Where smaps cannot be read (another user's process,
    a kernel without it) the sample keeps RSS, sets PSS and USS to None and
    ``mem_note`` says so: no estimate is ever printed in their place. Zombies
    hold no memory and are not counted as processes.

CPU accounting (the part that needs care)
    Forking servers and connection churn make processes come and go between
    samples, so CPU is not "sum of what is alive now". The kernel keeps, per
    process, its own CPU (all threads, exited ones included) and the CPU of
    the children it has *reaped* (``cutime``/``cstime``, which recursively
    include what those children had reaped). At every sample::

        T = sum over members present (alive or zombie) of own + reaped-children CPU
            + frozen CPU of members that left the tree unreaped (see below)

    and the CPU of a window is T(last sample) - T(first sample). This holds
    across exits: a child that ends and is reaped by a member disappears from
    the sum with its last sampled CPU and reappears in its parent's
    ``cutime`` with its *final* CPU, so the CPU it used after its last sample
    (even a child born and reaped between two samples) is counted. A zombie
    still shows its final CPU, so an unreaped child is counted too.

    When a member disappears, the monitor decides where its CPU went by
    following its last known parent links: if they lead to a member still
    present, it was reaped inside the tree (its CPU is in that parent's
    ``cutime``); otherwise (the root itself, or a process re-parented outside
    the tree) its CPU up to its last sample is kept ("frozen").

    What cannot be captured (``mem_note`` counts the processes of the first
    kind; the others cannot be detected):

    * a member re-parented outside the tree (its parent died first): the CPU
      it used after its last sample goes to whoever reaps it (init), not to
      the tree;
    * a child whose parent exits in the same interval without reaping it, when
      neither was seen re-parented: it is assumed reaped inside the tree, so
      its CPU is missing entirely (the grandchild case: a grandchild reaped by
      a child that then exits *is* counted when the root reaps that child,
      because the child's ``cutime`` carried it);
    * children of a process that ignores SIGCHLD are reaped by the kernel
      without adding to anyone's ``cutime``; their CPU after the last sample
      is lost;
    * one reaping may race with a sample's reads (parent read before the
      child vanished): T can then dip or jump for one sample by that child's
      CPU. The cumulative series is made monotonic (a dip is held flat until
      T catches up), so per-interval CPU is never negative; a window's total
      is exact unless the race hits its first or last sample.

    Resolution is the kernel's clock tick (10 ms): each process's times are
    truncated to a tick at each reading, so one 100 ms timeline interval is
    only good to about +-10% of a core per busy process, and a window's total
    to about one tick per process present at its ends (CPU of children reaped
    in between is exact: the kernel adds it to ``cutime`` in nanoseconds).

Context switches
    Voluntary + involuntary, per *thread* (``/proc/PID/status`` holds only the
    main thread's), accumulated sample to sample. The kernel does not expose
    the switches of exited threads or reaped children, so a thread's switches
    after its last sample, and all those of threads or processes that lived
    entirely between two samples (connection churn), are missing: the figure
    is a lower bound when ``mem_note`` reports threads ending in the window.

Run-queue wait
    Nanoseconds each thread spent runnable but waiting for a CPU
    (``/proc/PID/task/TID/schedstat`` field 2), accumulated per thread like
    context switches and with the same blind spot (threads that ended
    between samples). ``server_runq_wait_pct`` is that sum over the window's
    span, in percent: 100 means one thread's worth of waiting all the time. A
    server whose CPU figure looks low may have been kept off a CPU it wanted
    (by the generator on a shared CPU, or another process).

Cost
    One sample reads every ``/proc/*/stat`` on the machine (to find children),
    and per live member its fd directory and per-thread ``status`` and ``schedstat``; every
    ``pss_interval_s`` also its ``smaps_rollup``. Measured on a 2-vCPU guest
    for a 41-process forking tree (~9 MiB RSS each): ~4-5 ms of CPU per
    sample without smaps, ~11-12 ms with, ~5-6 ms on average at the default
    cadences: ~5-6% of one core at 10 Hz (~12% if PSS were read at every
    sample). A 200-thread process: ~5-6 ms. The sampler measures its own CPU
    and keeps it within ``cpu_budget`` of one core (a third of it for PSS/USS
    readings): a huge tree is sampled less often rather than disturbing the
    server it measures, and ``mem_note`` says when the achieved interval was
    longer than asked.

Error handling:
    A process that vanishes mid-read (``ProcessGone``, psutil's
    ``NoSuchProcess``/``ZombieProcess``) is skipped for that sample; it never
    stalls or stops the sampler. ``AccessDenied`` degrades memory to RSS with
    a note. Any other exception in a sample is recorded, reported in
    ``mem_note`` and sampling continues.

Resource handling:
    One daemon thread per monitor, started by :meth:`start`, stopped and
    joined by :meth:`stop` (idempotent). No file descriptor is held between
    samples. psutil handles of members are dropped when they leave the tree.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

from bench.monitor import procfs
from bench.monitor.kernel import accept_queue
from bench.monitor.procfs import CLOCK_TICKS, ProcessGone, ProcStat

#: Keys of :meth:`ServerMonitor.summary`, all of them ``runs.csv`` columns.
SUMMARY_KEYS = (
    "mem_rss_peak_bytes",
    "mem_rss_mean_bytes",
    "mem_pss_peak_bytes",
    "mem_pss_mean_bytes",
    "mem_uss_peak_bytes",
    "mem_uss_mean_bytes",
    "mem_note",
    "procs_peak",
    "threads_peak",
    "fds_peak",
    "server_cpu_user_s",
    "server_cpu_sys_s",
    "server_cpu_pct",
    "ctx_switches",
    "server_runq_wait_pct",
    "accept_queue_max",
)

#: Keys of a :meth:`ServerMonitor.timeline` row: ``TIMELINE_COLUMNS`` minus run_id.
TIMELINE_KEYS = (
    "source",
    "t_s",
    "req_per_s",
    "lat_p99_us",
    "mem_rss_bytes",
    "mem_pss_bytes",
    "mem_uss_bytes",
    "procs",
    "threads",
    "fds",
    "server_cpu_pct",
    "accept_queue",
)

# Why 10%: on the 2-core machines sockbench targets, a sampler above a tenth of
# a core starts to show in the figures of the server it measures.
DEFAULT_CPU_BUDGET = 0.10
# Why a third: PSS/USS readings are the costly part but are taken 5x less
# often; this share keeps them at 0.5 s for a 40-child tree (~7 ms a reading)
# while the cheap metrics keep 10 Hz up to ~6.5 ms a sample.
_SMAPS_SHARE = 1 / 3
# Why 0.5 s: PSS/USS cost more than the rest of a sample together (see
# "Cost"); memory moves slowly next to CPU and queues, and 0.5 s still gives
# 20 readings in a 10 s point.
DEFAULT_PSS_INTERVAL_S = 0.5
# Why 1.5: achieved intervals jitter by a few percent with scheduling; only a
# real slow-down (the budget kicking in, an overloaded machine) is worth a note.
_SLOW_SAMPLING_FACTOR = 1.5
# Why 5 s: stop() must not hang on a sample stuck on a huge /proc read; a
# sample of even a 1000-process tree takes well under a second.
_JOIN_TIMEOUT_S = 5.0
# Why 20: keep the first distinct sampler errors for the note, not thousands.
_MAX_ERRORS_KEPT = 20


@dataclass(frozen=True, slots=True)
class _Sample:
    t: float  # wall clock (time.time()) when the sample started
    cpu_user_ticks: int  # cumulative tree CPU (monotonic), clock ticks
    cpu_sys_ticks: int
    ctx: int  # cumulative context switches seen since start()
    runq_wait_ns: int  # cumulative run-queue wait seen since start(), all threads
    rss: int
    pss: int | None  # None: not read at this sample, or not readable for every live member
    uss: int | None
    mem_problem: str | None  # why PSS/USS could not be read (None: read, or not attempted)
    procs: int
    threads: int
    fds: int | None  # None: some member's fd directory was unreadable
    accept_queue: int | None
    lost_procs: int  # cumulative: members that left the tree unreaped
    ended_threads: int  # cumulative: threads that ended between samples
    cost_s: float  # sampler thread CPU spent on this sample


@dataclass(slots=True)
class _Measured:
    """What the live members of the tree add up to in one sample."""

    procs: int = 0
    threads: int = 0
    fds: int | None = 0
    rss: int = 0
    pss: int | None = 0
    uss: int | None = 0
    mem_problem: str | None = None


class ServerMonitor:
    """Samples a server's whole process tree (root pid + all descendants) every interval_s in a thread.

    ``listen_port``: the server's listening port, to sample its accept-queue
    depth (None: not sampled). ``pss_interval_s``: least time between two
    PSS/USS readings (see "Memory" in the module docstring; ``interval_s`` or less reads them at
    every sample). ``cpu_budget``: the largest fraction of one core the
    sampler may use; sampling slows down rather than exceed it.
    Raises ``ProcessLookupError`` if ``pid`` does not exist.
    """

    def __init__(
        self,
        pid: int,
        listen_port: int | None = None,
        interval_s: float = 0.1,
        pss_interval_s: float = DEFAULT_PSS_INTERVAL_S,
        cpu_budget: float = DEFAULT_CPU_BUDGET,
    ) -> None:
        if interval_s <= 0 or pss_interval_s < 0:
            raise ValueError(f"interval_s must be > 0 and pss_interval_s >= 0, got {interval_s}, {pss_interval_s}")
        if not 0 < cpu_budget <= 1:
            raise ValueError(f"cpu_budget must be in (0, 1], got {cpu_budget}")
        try:
            root = procfs.read_stat(pid)
        except ProcessGone:
            raise ProcessLookupError(f"no process with pid {pid} to monitor") from None
        self.pid = pid
        self.listen_port = listen_port
        self.interval_s = interval_s
        self.pss_interval_s = pss_interval_s
        self.cpu_budget = cpu_budget
        self._root_start = root.starttime
        # sampler state, touched only by the sampler thread
        self._last_smaps: float | None = None  # monotonic time of the last PSS/USS reading
        self._smaps_cost_s = 0.0  # sampler CPU spent on PSS/USS in the last sample (0: not read)
        self._smaps_reading_cost_s = 0.0  # CPU the last PSS/USS reading took
        self._members: dict[int, ProcStat] = {}
        self._handles: dict[int, psutil.Process] = {}
        self._ctx_counter = _PerThreadCounter()
        self._wait_counter = _PerThreadCounter()
        self._frozen_user = self._frozen_sys = 0
        self._cpu_user = self._cpu_sys = 0
        self._lost = 0
        # shared with callers
        self._lock = threading.Lock()
        self._samples: list[_Sample] = []
        self._errors: list[str] = []
        self._error_count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._root_gone_at: float | None = None

    # ----------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the sampling thread (first sample at once). A monitor starts once."""
        if self._thread is not None:
            raise RuntimeError("a ServerMonitor can be started only once")
        self._thread = threading.Thread(target=self._run, name=f"monitor-{self.pid}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and join the thread; idempotent, a no-op before start()."""
        if self._thread is None:
            return
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT_S)

    @property
    def root_gone_at(self) -> float | None:
        """Wall time (``time.time()``) of the first sample that found the root process dead, or None.

        Dead is gone or a zombie: a server that crashed is a zombie until the
        runner reaps it at the stop. Good to one sampling interval.
        """
        with self._lock:
            return self._root_gone_at

    @property
    def sample_count(self) -> int:
        with self._lock:
            return len(self._samples)

    def sampler_stats(self) -> dict[str, float | int | None]:
        """What sampling cost: samples taken, mean/max sampler CPU per sample
        (seconds), mean achieved interval (seconds), errors."""
        with self._lock:
            samples = list(self._samples)
            errors = self._error_count
        if not samples:
            return {"samples": 0, "mean_cost_s": None, "max_cost_s": None, "mean_interval_s": None, "errors": errors}
        costs = [s.cost_s for s in samples]
        span = samples[-1].t - samples[0].t
        return {
            "samples": len(samples),
            "mean_cost_s": sum(costs) / len(costs),
            "max_cost_s": max(costs),
            "mean_interval_s": span / (len(samples) - 1) if len(samples) > 1 else None,
            "errors": errors,
        }

    # ------------------------------------------------------------- results
    def summary(self, window_start: float, window_end: float) -> dict:
        """runs.csv columns over the samples taken in [window_start, window_end] (wall time.time()).

        CPU and context switches are the differences between the first and
        last sample in the window and ``server_cpu_pct`` divides by the time
        between those two samples, so all three describe the same span (the
        window minus at most one interval at each end). Means are per sample.
        """
        with self._lock:
            win = [s for s in self._samples if window_start <= s.t <= window_end]
            errors = list(self._errors)
        out: dict = dict.fromkeys(SUMMARY_KEYS)
        notes: list[str] = []
        if not win:
            out["mem_note"] = "no server sample fell in the measured window: nothing measured"
            return out
        out.update(_memory_summary(win, notes))
        out["procs_peak"] = max(s.procs for s in win)
        out["threads_peak"] = max(s.threads for s in win)
        fds = [s.fds for s in win if s.fds is not None]
        out["fds_peak"] = max(fds) if fds else None
        if len(fds) < len(win):
            notes.append(f"open fds unreadable in {len(win) - len(fds)} of {len(win)} samples (permission denied)")
        out.update(_cpu_summary(win, notes))
        queues = [s.accept_queue for s in win if s.accept_queue is not None]
        out["accept_queue_max"] = max(queues) if queues else None
        if self.listen_port is not None and len(queues) < len(win):
            notes.append(
                f"listening socket on port {self.listen_port} not found in "
                f"{len(win) - len(queues)} of {len(win)} samples"
            )
        if len(win) > 1:
            achieved = (win[-1].t - win[0].t) / (len(win) - 1)
            if achieved > self.interval_s * _SLOW_SAMPLING_FACTOR:
                notes.append(
                    f"sampled every {achieved:.2f} s on average (asked {self.interval_s:g} s): "
                    f"the sampler keeps under {self.cpu_budget:.0%} of a core or the machine was overloaded"
                )
        read = [s.t for s in win if s.pss is not None]
        if len(read) > 1:
            achieved = (read[-1] - read[0]) / (len(read) - 1)
            sampled = (win[-1].t - win[0].t) / (len(win) - 1)
            if achieved > max(self.pss_interval_s, sampled) * _SLOW_SAMPLING_FACTOR:
                notes.append(
                    f"PSS/USS read every {achieved:.2f} s on average (asked {self.pss_interval_s:g} s) "
                    f"to keep the sampler under {self.cpu_budget:.0%} of a core"
                )
        if errors:
            notes.append("sampler errors: " + " | ".join(errors[:3]))
        out["mem_note"] = "; ".join(notes)
        return out

    def timeline(self, t0: float) -> list[dict]:
        """One TIMELINE_COLUMNS row per sample (source "server", t_s relative
        to t0, run_id left out). ``server_cpu_pct`` is over the interval since
        the previous sample (None for the first)."""
        with self._lock:
            samples = list(self._samples)
        rows = []
        prev: _Sample | None = None
        for s in samples:
            pct = None
            if prev is not None and s.t > prev.t:
                ticks = (s.cpu_user_ticks + s.cpu_sys_ticks) - (prev.cpu_user_ticks + prev.cpu_sys_ticks)
                pct = round(ticks / CLOCK_TICKS / (s.t - prev.t) * 100, 1)
            rows.append(
                {
                    "source": "server",
                    "t_s": round(s.t - t0, 3),
                    "req_per_s": None,
                    "lat_p99_us": None,
                    "mem_rss_bytes": s.rss,
                    "mem_pss_bytes": s.pss,
                    "mem_uss_bytes": s.uss,
                    "procs": s.procs,
                    "threads": s.threads,
                    "fds": s.fds,
                    "server_cpu_pct": pct,
                    "accept_queue": s.accept_queue,
                }
            )
            prev = s
        return rows

    # ------------------------------------------------------------- sampler
    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            cpu0 = time.thread_time()
            self._smaps_cost_s = 0.0
            try:
                self._take_sample(cpu0)
            except Exception as exc:  # noqa: BLE001 - never let one bad sample end monitoring
                self._record_error(exc)
            cost = time.thread_time() - cpu0 - self._smaps_cost_s
            # Next sample one interval after this one started, or later if
            # needed to keep its CPU share within the budget (less the share
            # kept for PSS/USS readings, see _smaps_due).
            due = started + max(self.interval_s, cost / (self.cpu_budget * (1 - _SMAPS_SHARE)))
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _record_error(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._error_count += 1
            if text not in self._errors and len(self._errors) < _MAX_ERRORS_KEPT:
                self._errors.append(text)

    def _take_sample(self, cpu0: float) -> None:
        t = time.time()
        tree = self._find_tree(procfs.read_process_table())
        self._retire_vanished(tree)
        first = not self._samples
        self._members = dict(tree)
        user = sum(st.utime + st.cutime for st in tree.values()) + self._frozen_user
        sys_ = sum(st.stime + st.cstime for st in tree.values()) + self._frozen_sys
        # monotonic envelope: see "CPU accounting" in the module docstring
        self._cpu_user = max(self._cpu_user, user)
        self._cpu_sys = max(self._cpu_sys, sys_)
        measured = self._measure_live([st for st in tree.values() if st.live], first, self._smaps_due())
        queue = None
        if self.listen_port is not None:
            depth = accept_queue(self.listen_port)
            queue = depth[0] if depth is not None else None
        sample = _Sample(
            t=t,
            cpu_user_ticks=self._cpu_user,
            cpu_sys_ticks=self._cpu_sys,
            ctx=self._ctx_counter.total,
            runq_wait_ns=self._wait_counter.total,
            rss=measured.rss,
            pss=measured.pss,
            uss=measured.uss,
            mem_problem=measured.mem_problem,
            procs=measured.procs,
            threads=measured.threads,
            fds=measured.fds,
            accept_queue=queue,
            lost_procs=self._lost,
            ended_threads=self._ctx_counter.ended,
            cost_s=time.thread_time() - cpu0,
        )
        root = tree.get(self.pid)
        with self._lock:
            self._samples.append(sample)
            if self._root_gone_at is None and (root is None or not root.live):
                self._root_gone_at = t

    def _find_tree(self, table: dict[int, ProcStat]) -> dict[int, ProcStat]:
        """Members present now: the root, every known member still alive
        (same start time), and all their descendants."""
        children: dict[int, list[int]] = {}
        for st in table.values():
            children.setdefault(st.ppid, []).append(st.pid)
        seeds = [
            pid
            for pid, start in [(self.pid, self._root_start)] + [(p, m.starttime) for p, m in self._members.items()]
            if pid in table and table[pid].starttime == start
        ]
        tree: dict[int, ProcStat] = {}
        while seeds:
            pid = seeds.pop()
            if pid not in tree:
                tree[pid] = table[pid]
                seeds.extend(children.get(pid, ()))
        return tree

    def _retire_vanished(self, tree: dict[int, ProcStat]) -> None:
        """Account for members gone since the last sample (see module docstring)."""
        gone = {pid for pid, m in self._members.items() if pid not in tree or tree[pid].starttime != m.starttime}
        for pid in gone:
            if not self._reaped_inside(pid, gone):
                last = self._members[pid]
                self._frozen_user += last.utime + last.cutime
                self._frozen_sys += last.stime + last.cstime
                self._lost += 1
            self._handles.pop(pid, None)

    def _reaped_inside(self, pid: int, gone: set[int]) -> bool:
        """True if the last known parent chain of a vanished member leads to a
        member still present, i.e. its CPU now sits in a member's cutime."""
        parent = self._members[pid].ppid
        seen = {pid}
        while parent in gone and parent not in seen:
            seen.add(parent)
            parent = self._members[parent].ppid
        return parent in self._members and parent not in gone

    def _smaps_due(self) -> bool:
        """Read PSS/USS now? Every pss_interval_s, or less often if the last
        reading's cost would take more than their share of the CPU budget."""
        now = time.monotonic()
        spacing = max(self.pss_interval_s, self._smaps_reading_cost_s / (self.cpu_budget * _SMAPS_SHARE))
        # half an interval of slack so scheduling jitter does not skip a reading
        if self._last_smaps is not None and now - self._last_smaps < spacing - self.interval_s / 2:
            return False
        self._last_smaps = now
        return True

    def _measure_live(self, live: list[ProcStat], first: bool, smaps: bool) -> _Measured:
        out = _Measured()
        if not smaps:
            out.pss = out.uss = None
        ctx_now: dict[tuple[int, int], int] = {}
        wait_now: dict[tuple[int, int], int] = {}
        smaps_cost = 0.0
        for st in live:
            try:
                if smaps:
                    cpu0 = time.thread_time()
                    try:
                        pss, uss, problem = self._memory(st)
                    finally:
                        smaps_cost += time.thread_time() - cpu0
                else:
                    pss = uss = problem = None
                try:
                    fds: int | None = procfs.count_fds(st.pid)
                except PermissionError:
                    fds = None
                ctx = procfs.thread_ctx_switches(st.pid, st.num_threads)
                waits = procfs.thread_runq_wait(st.pid, st.num_threads)
            except ProcessGone:
                continue  # vanished mid-read: not part of this sample
            out.procs += 1
            out.threads += st.num_threads
            out.fds = None if fds is None or out.fds is None else out.fds + fds
            out.rss += st.rss_bytes
            out.pss = None if pss is None or out.pss is None else out.pss + pss
            out.uss = None if uss is None or out.uss is None else out.uss + uss
            out.mem_problem = out.mem_problem or problem
            for tid, count in ctx.items():
                ctx_now[(st.pid, tid)] = count
            for tid, ns in waits.items():
                wait_now[(st.pid, tid)] = ns
        self._ctx_counter.update(ctx_now, first)
        self._wait_counter.update(wait_now, first)
        if smaps:
            self._smaps_cost_s = self._smaps_reading_cost_s = smaps_cost
        return out

    def _memory(self, st: ProcStat) -> tuple[int | None, int | None, str | None]:
        """(pss, uss, problem) of one live process; ProcessGone if it vanished."""
        try:
            handle = self._handles.get(st.pid)
            if handle is None:
                handle = self._handles[st.pid] = psutil.Process(st.pid)
            info = handle.memory_full_info()
        except psutil.NoSuchProcess:  # includes ZombieProcess
            raise ProcessGone(st.pid) from None
        except psutil.AccessDenied:
            return None, None, "access denied to /proc/PID/smaps_rollup"
        except OSError as exc:  # e.g. a kernel built without smaps
            return None, None, f"smaps unreadable ({exc.strerror or exc})"
        return info.pss, info.uss, None


class _PerThreadCounter:
    """A cumulative per-thread kernel counter (context switches, run-queue wait) summed over threads seen.

    Each sample adds every thread's growth since the previous sample. A
    thread present at the first sample counts from there; one first seen
    later was born since the previous sample and adds all of its count; a
    count that went down is a reused tid (a new thread). ``ended`` counts
    threads that were gone at the next sample: what they did after their
    last sample is lost (the kernel does not keep it).
    """

    def __init__(self) -> None:
        self.total = 0
        self.ended = 0
        self._last: dict[tuple[int, int], int] = {}

    def update(self, now: dict[tuple[int, int], int], first: bool) -> None:
        for key, count in now.items():
            before = self._last.get(key)
            if before is None:
                self.total += 0 if first else count
            elif count < before:
                self.total += count
            else:
                self.total += count - before
        self.ended += len(self._last.keys() - now.keys())
        self._last = now


def _memory_summary(win: list[_Sample], notes: list[str]) -> dict:
    out: dict = {}
    out["mem_rss_peak_bytes"] = max(s.rss for s in win)
    out["mem_rss_mean_bytes"] = round(sum(s.rss for s in win) / len(win))
    full = [(s.pss, s.uss) for s in win if s.pss is not None and s.uss is not None]
    for key, values in (("pss", [p for p, _ in full]), ("uss", [u for _, u in full])):
        out[f"mem_{key}_peak_bytes"] = max(values) if values else None
        out[f"mem_{key}_mean_bytes"] = round(sum(values) / len(values)) if values else None
    failed = [s for s in win if s.mem_problem]
    if failed:
        reasons = "; ".join(sorted({s.mem_problem for s in failed if s.mem_problem}))
        notes.append(
            f"PSS/USS unavailable in {len(failed)} of {len(failed) + len(full)} readings ({reasons}): "
            "PSS/USS figures are from the other readings"
            if full
            else f"PSS/USS unavailable ({reasons}): RSS only"
        )
    elif not full:
        notes.append("no PSS/USS reading fell in the window (window shorter than pss_interval_s)")
    return out


def _cpu_summary(win: list[_Sample], notes: list[str]) -> dict:
    first, last = win[0], win[-1]
    span = last.t - first.t
    if len(win) < 2 or span <= 0:
        notes.append("only one sample in the window: CPU and context switches need two")
        return {
            "server_cpu_user_s": None,
            "server_cpu_sys_s": None,
            "server_cpu_pct": None,
            "ctx_switches": None,
            "server_runq_wait_pct": None,
        }
    user = (last.cpu_user_ticks - first.cpu_user_ticks) / CLOCK_TICKS
    sys_ = (last.cpu_sys_ticks - first.cpu_sys_ticks) / CLOCK_TICKS
    lost = last.lost_procs - first.lost_procs
    if lost:
        notes.append(
            f"cpu: {lost} processes left the server tree without being reaped inside it; "
            "CPU they used after their last sample is missing"
        )
    ended = last.ended_threads - first.ended_threads
    if ended:
        notes.append(
            f"ctx_switches is a lower bound: {ended} threads ended in the window and the kernel does not "
            "keep the switches of ended threads (nor of any that lived between two samples)"
        )
    return {
        "server_runq_wait_pct": round((last.runq_wait_ns - first.runq_wait_ns) / 1e9 / span * 100, 1),
        "server_cpu_user_s": round(user, 3),
        "server_cpu_sys_s": round(sys_, 3),
        "server_cpu_pct": round((user + sys_) / span * 100, 1),
        "ctx_switches": last.ctx - first.ctx,
    }
