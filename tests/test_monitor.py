"""Monitors measured against real process trees, sockets and kernel counters.

Each test starts a small helper process (TREE_PROGRAM) that builds exactly
the tree it is told to (children, threads, fds, memory, CPU-burning children
reaped or not) and answers each command with a JSON line once it is done, so
the test knows what exists and can compare the monitor's figures with it.
The helper kills and reaps its own children when its stdin closes; the
fixture reaps the helper and checks nothing it created is left.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from bench.monitor import (
    SUMMARY_KEYS,
    TIMELINE_KEYS,
    CpuBusy,
    KernelCounters,
    ServerMonitor,
    accept_queue,
    kernel,
    read_sysctls,
    syn_retry_times,
    wait_for_idle,
)
from bench.results import FORMAT_KEY, RUN_COLUMNS, TIMELINE_COLUMNS

TREE_PROGRAM = r'''
import json, os, socket, sys, threading, time

children = []          # pids this process must reap before it exits
keep = []              # fds, sockets, memory kept alive on purpose
orphan = {}            # pipes steering the orphan_* commands
stop = threading.Event()
hold_r, hold_w = os.pipe()  # idle children block reading this until EOF

def reply(**fields):
    print(json.dumps(fields), flush=True)

def burn(cpu_s):
    start = time.process_time()
    while time.process_time() - start < cpu_s:
        pass

def spawn(body):
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid

def idle_child():
    os.close(hold_w)
    os.read(hold_r, 1)

def signalled_child(work, then_block):
    """Run work in a child; return (pid, read end of a pipe written when work is done)."""
    done_r, done_w = os.pipe()
    def body():
        os.close(done_r)
        work()
        os.write(done_w, b"x")
        if then_block:
            idle_child()
    pid = spawn(body)
    os.close(done_w)
    os.read(done_r, 1)
    os.close(done_r)
    return pid

def nested(cpu_s):
    grandchild = spawn(lambda: burn(cpu_s))
    os.waitpid(grandchild, 0)

def handle(word, arg):
    if word == "fork":
        pids = [spawn(idle_child) for _ in range(int(arg))]
        children.extend(pids)
        return {"pids": pids}
    if word == "threads":
        for _ in range(int(arg)):
            threading.Thread(target=stop.wait, daemon=True).start()
        return {"threads": threading.active_count()}
    if word == "sleepers":  # threads that each block N times, then stay
        count, naps = map(int, arg.split())
        finished = threading.Barrier(count + 1)
        def sleeper():
            for _ in range(naps):
                time.sleep(0.001)  # one voluntary context switch each
            finished.wait()
            stop.wait()
        for _ in range(count):
            threading.Thread(target=sleeper, daemon=True).start()
        finished.wait()
        return {}
    if word == "fds":
        keep.extend(os.open(os.devnull, os.O_RDONLY) for _ in range(int(arg)))
        return {}
    if word == "alloc":
        block = bytearray(int(arg) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1  # touch every page so it is resident
        keep.append(block)
        return {}
    if word == "burn_live":
        pid = signalled_child(lambda: burn(float(arg)), then_block=True)
        children.append(pid)
        return {"pid": pid}
    if word == "burn_zombie":
        pid = signalled_child(lambda: burn(float(arg)), then_block=False)
        children.append(pid)
        return {"pid": pid}
    if word == "burn_reap":
        pid = spawn(lambda: burn(float(arg)))
        os.waitpid(pid, 0)
        return {"pid": pid}
    if word == "burn_nested":
        pid = spawn(lambda: nested(float(arg)))
        os.waitpid(pid, 0)
        return {"pid": pid}
    if word == "orphan_spawn":  # a child whose own child will outlive it
        go_r, go_w = os.pipe()
        exit_r, exit_w = os.pipe()
        done_r, done_w = os.pipe()
        def grandchild():
            burn(float(os.read(go_r, 64)))
            os.write(done_w, b"x")
        def child():
            spawn(grandchild)
            os.read(exit_r, 1)
        orphan.update(pid=spawn(child), go=go_w, exit=exit_w, done=done_r)
        return {}
    if word == "orphan_burn":  # the child exits, then the orphaned grandchild burns
        os.write(orphan["exit"], b"x")
        os.waitpid(orphan["pid"], 0)
        os.write(orphan["go"], arg.encode())
        os.read(orphan["done"], 1)
        return {}
    if word == "churn":
        for _ in range(int(arg)):
            os.waitpid(spawn(lambda: None), 0)
        return {}
    if word == "listen":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(int(arg))
        keep.append(sock)
        return {"port": sock.getsockname()[1]}
    raise ValueError(word)

reply(ready=os.getpid())
for line in sys.stdin:
    word, _, arg = line.strip().partition(" ")
    reply(**handle(word, arg))
stop.set()
for pid in children:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
'''

# Runs TREE_PROGRAM (argv[1]) as its child and adopts every orphan of that
# tree (a child subreaper, prctl PR_SET_CHILD_SUBREAPER = 36), reaping them all:
# orphans land outside the monitored tree, yet are still reaped by the test.
REAPER_PROGRAM = r"""
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
if os.fork() == 0:
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""

SPIN_PROGRAM = r"""
import os, sys
if len(sys.argv) > 1:
    os.sched_setaffinity(0, {int(sys.argv[1])})
print("spinning", flush=True)
while True:
    pass
"""

# Why 30 s: commands burn at most ~1 CPU-second, but the machine is shared
# with other test suites; only a hang should hit this.
COMMAND_TIMEOUT_S = 30.0
# Why 0.05 s: twice the default rate keeps the tests short while still
# exercising the same code path.
FAST = 0.05


class Tree:
    """A running TREE_PROGRAM and the pids it reported."""

    def __init__(self, subreaper: bool = False) -> None:
        argv = [sys.executable, "-c", TREE_PROGRAM]
        if subreaper:
            argv = [sys.executable, "-c", REAPER_PROGRAM, TREE_PROGRAM]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.pid = self._read()["ready"]
        self.created: list[int] = []

    def _read(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], COMMAND_TIMEOUT_S)
        assert ready, "tree helper did not answer"
        line = self.proc.stdout.readline()
        assert line, f"tree helper exited ({self.proc.poll()})"
        return json.loads(line)

    def cmd(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        self.created += answer.get("pids", []) + ([answer["pid"]] if "pid" in answer else [])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def make_tree():
    trees: list[Tree] = []

    def start(subreaper: bool = False) -> Tree:
        trees.append(Tree(subreaper))
        return trees[-1]

    yield start
    for tree in trees:
        tree.close()
    for tree in trees:  # every child was reaped by the helper itself
        left = [pid for pid in tree.created if _exists_as(pid, tree.pid)]
        assert not left, f"children left behind: {left}"


def _exists_as(pid: int, parent: int) -> bool:
    """True if pid still exists and is still a child of parent (not a reused pid)."""
    try:
        return psutil.Process(pid).ppid() == parent
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def monitors():
    started: list[ServerMonitor] = []

    def start(pid: int, **kwargs) -> ServerMonitor:
        kwargs.setdefault("interval_s", FAST)
        kwargs.setdefault("pss_interval_s", FAST)  # PSS at every sample unless a test says otherwise
        kwargs.setdefault("cpu_budget", 1.0)  # no slowing down unless a test says otherwise
        monitor = ServerMonitor(pid, **kwargs)
        monitor.start()
        started.append(monitor)
        return monitor

    yield start
    for monitor in started:
        monitor.stop()


@pytest.fixture
def spinner():
    procs: list[subprocess.Popen] = []

    def start(cpu: int | None = None) -> subprocess.Popen:
        args = [sys.executable, "-c", SPIN_PROGRAM] + ([str(cpu)] if cpu is not None else [])
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "spinning"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def wait_samples(monitor: ServerMonitor, n: int, timeout: float = 20.0) -> None:
    """Block until the monitor has taken n more samples."""
    target = monitor.sample_count + n
    deadline = time.monotonic() + timeout
    while monitor.sample_count < target:
        assert time.monotonic() < deadline, "monitor stopped sampling"
        time.sleep(0.01)


def measure(monitor: ServerMonitor, samples: int = 3) -> dict:
    """Summary over a window holding the next `samples` samples."""
    start = time.time()
    wait_samples(monitor, samples)
    return monitor.summary(start, time.time())


# --------------------------------------------------------------- process tree
def test_counts_processes_threads_and_fds_of_the_tree(make_tree, monitors):
    tree = make_tree()
    tree.cmd("threads 3")
    tree.cmd("fork 4")
    monitor = monitors(tree.pid)
    first = measure(monitor)

    assert set(first) == set(SUMMARY_KEYS) and set(SUMMARY_KEYS) <= set(RUN_COLUMNS)
    assert first["procs_peak"] == 1 + 4
    assert first["threads_peak"] == (1 + 3) + 4  # forked children keep only the forking thread
    root = psutil.Process(tree.pid)
    expected_fds = sum(p.num_fds() for p in [root, *root.children(recursive=True)])
    assert first["fds_peak"] == expected_fds
    assert "unavailable" not in first["mem_note"] and "unreadable" not in first["mem_note"]

    tree.cmd("fds 20")
    second = measure(monitor)
    assert second["fds_peak"] == first["fds_peak"] + 20
    assert second["procs_peak"] == 5


def test_context_switches_of_every_thread_are_counted(make_tree, monitors):
    """/proc/PID/status holds only the main thread's switches; 4 worker
    threads blocking 50 times each must all show up."""
    tree = make_tree()
    monitor = monitors(tree.pid)
    start = time.time()
    wait_samples(monitor, 2)
    tree.cmd("sleepers 4 50")
    wait_samples(monitor, 3)
    summary = monitor.summary(start, time.time())
    assert summary["ctx_switches"] >= 4 * 50
    assert summary["threads_peak"] == 5


def test_zombies_are_not_counted_as_processes(make_tree, monitors):
    tree = make_tree()
    zombie = tree.cmd("burn_zombie 0")["pid"]
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while psutil.Process(zombie).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    summary = measure(monitors(tree.pid))
    assert summary["procs_peak"] == 1
    assert summary["threads_peak"] == 1


def test_forked_tree_pss_is_below_summed_rss(make_tree, monitors):
    tree = make_tree()
    tree.cmd("alloc 64")  # 64 MiB resident in the parent, shared by every child
    tree.cmd("fork 4")
    summary = measure(monitors(tree.pid))

    assert "PSS/USS unavailable" not in summary["mem_note"]
    assert summary["mem_rss_peak_bytes"] >= 5 * (64 << 20)  # each process counts the shared block
    assert summary["mem_pss_peak_bytes"] < summary["mem_rss_peak_bytes"] / 2
    assert 0 < summary["mem_uss_peak_bytes"] <= summary["mem_pss_peak_bytes"]
    assert summary["mem_uss_mean_bytes"] <= summary["mem_pss_mean_bytes"] <= summary["mem_rss_mean_bytes"]


def test_pss_is_read_at_its_own_slower_cadence(make_tree, monitors):
    tree = make_tree()
    # The window opens before the monitor's first sample, so the summary and
    # the rows below cover the same samples (a window opened after the first
    # sample would leave it out of the summary, while t_s, rounded to 1 ms,
    # can still read 0.0 for it).
    t0 = time.time()
    monitor = monitors(tree.pid, pss_interval_s=0.2)
    wait_samples(monitor, 12)
    monitor.stop()
    rows = monitor.timeline(t0)
    summary = monitor.summary(t0, time.time())
    assert all(r["mem_rss_bytes"] > 0 for r in rows)
    read = [r for r in rows if r["mem_pss_bytes"] is not None]
    assert 0 < len(read) < len(rows)  # PSS on some rows only: not read is None, not 0
    assert summary["mem_pss_peak_bytes"] == max(r["mem_pss_bytes"] for r in read)
    assert "PSS/USS unavailable" not in summary["mem_note"]


def test_sampling_slows_down_to_stay_within_its_cpu_budget(make_tree, monitors):
    tree = make_tree()
    # a sample costs ~1 ms (reading every /proc/*/stat); 1% of a core allows a
    # few per second, far fewer than the 100/s asked
    monitor = monitors(tree.pid, interval_s=0.01, pss_interval_s=0.01, cpu_budget=0.01)
    start = time.time()
    wait_samples(monitor, 4)
    summary = monitor.summary(start, time.time())
    stats = monitor.sampler_stats()
    assert stats["mean_interval_s"] > 0.05
    assert "sampled every" in summary["mem_note"]
    assert summary["procs_peak"] == 1


def test_pss_unreadable_gives_rss_only_and_a_note(make_tree, monitors, monkeypatch):
    def denied(self):
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "memory_full_info", denied)
    tree = make_tree()
    summary = measure(monitors(tree.pid))
    assert summary["mem_rss_peak_bytes"] > 0
    assert summary["mem_pss_peak_bytes"] is None and summary["mem_uss_mean_bytes"] is None
    assert "PSS/USS unavailable" in summary["mem_note"] and "access denied" in summary["mem_note"]


# ------------------------------------------------------------------------ CPU
BURN_S = 0.5


@pytest.mark.parametrize("how", ["burn_live", "burn_zombie", "burn_reap", "burn_nested"])
def test_cpu_of_children_is_counted_once(make_tree, monitors, how):
    """A child burning BURN_S of CPU is counted whether it is still alive, a
    zombie, reaped by the root, or a grandchild reaped by a child the root reaped."""
    tree = make_tree()
    monitor = monitors(tree.pid)
    start = time.time()
    wait_samples(monitor, 2)  # samples before the burn starts
    tree.cmd(f"{how} {BURN_S}")  # answers once the burn is over
    wait_samples(monitor, 3)
    summary = monitor.summary(start, time.time())

    cpu = summary["server_cpu_user_s"] + summary["server_cpu_sys_s"]
    # below: clock-tick truncation; above: the idle parent's few ms. Counting
    # the child twice (its last sample and its parent's cutime) would exceed it.
    assert BURN_S - 0.05 <= cpu <= BURN_S + 0.3
    assert summary["server_cpu_pct"] > 0
    rows = monitor.timeline(start)
    assert all(r["server_cpu_pct"] is None or r["server_cpu_pct"] >= 0 for r in rows)


def test_cpu_of_an_orphan_reparented_outside_the_tree_is_kept(make_tree, monitors):
    """A grandchild whose parent exits is re-parented outside the tree (to a
    subreaper here, init otherwise): membership is sticky, so its CPU is still
    counted, up to its last sample, and the note says what is missing."""
    tree = make_tree(subreaper=True)
    tree.cmd("orphan_spawn")
    monitor = monitors(tree.pid)
    start = time.time()
    wait_samples(monitor, 3)  # the grandchild is seen while its parent lives
    tree.cmd(f"orphan_burn {BURN_S}")
    wait_samples(monitor, 3)
    summary = monitor.summary(start, time.time())

    cpu = summary["server_cpu_user_s"] + summary["server_cpu_sys_s"]
    # at most one interval (FAST) of its CPU falls after its last sample
    assert BURN_S - FAST - 0.05 <= cpu <= BURN_S + 0.3
    assert "1 processes left the server tree" in summary["mem_note"]


def test_monitor_survives_connection_churn(make_tree, monitors):
    tree = make_tree()
    monitor = monitors(tree.pid, interval_s=0.005)  # sample as fast as the budget lets it
    start = time.time()
    wait_samples(monitor, 2)
    tree.cmd("churn 300")  # 300 children forked, exited and reaped
    wait_samples(monitor, 3)
    summary = monitor.summary(start, time.time())

    assert monitor.sampler_stats()["errors"] == 0
    assert summary["procs_peak"] >= 1
    assert summary["server_cpu_user_s"] + summary["server_cpu_sys_s"] > 0
    assert summary["ctx_switches"] > 0


def test_root_exiting_does_not_stop_sampling(make_tree, monitors):
    tree = make_tree()
    tree.cmd("fork 2")
    monitor = monitors(tree.pid)
    wait_samples(monitor, 2)
    tree.close()
    after = measure(monitor)
    assert after["procs_peak"] == 0
    assert monitor.sampler_stats()["errors"] == 0


def test_timeline_rows_match_the_results_columns(make_tree, monitors):
    tree = make_tree()
    t0 = time.time()
    monitor = monitors(tree.pid)
    wait_samples(monitor, 3)
    rows = monitor.timeline(t0)
    assert len(rows) >= 3
    assert set(TIMELINE_KEYS) == set(TIMELINE_COLUMNS) - {"run_id", FORMAT_KEY}  # both added by ResultsWriter
    assert all(set(r) == set(TIMELINE_KEYS) and r["source"] == "server" and r["procs"] == 1 for r in rows)
    times = [r["t_s"] for r in rows]
    assert times == sorted(times) and times[0] >= 0


def test_stop_is_idempotent_and_an_empty_window_says_so(make_tree):
    tree = make_tree()
    monitor = ServerMonitor(tree.pid, interval_s=FAST)
    monitor.stop()  # before start: harmless
    monitor.start()
    wait_samples(monitor, 1)
    monitor.stop()
    monitor.stop()
    empty = monitor.summary(0.0, 1.0)  # 1970: no sample there
    assert empty["procs_peak"] is None and "no server sample" in empty["mem_note"]


def test_monitoring_a_missing_process_is_refused():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with pytest.raises(ProcessLookupError):
        ServerMonitor(int(done.stdout))


# ----------------------------------------------------------------- the kernel
@pytest.fixture
def clients():
    made: list[socket.socket] = []

    def connect(address, n: int, family=socket.AF_INET) -> list[socket.socket]:
        for _ in range(n):
            sock = socket.socket(family)
            made.append(sock)
            sock.settimeout(5)
            sock.connect(address)
        return made

    yield connect
    for sock in made:
        sock.close()


def wait_queue(port: int, depth: int) -> tuple[int, int | None] | None:
    """accept_queue(port) once it reaches depth (the final ACK may lag connect() a moment)."""
    deadline = time.monotonic() + 10
    while (found := accept_queue(port)) is None or found[0] < depth:
        assert time.monotonic() < deadline, found
        time.sleep(0.01)
    return found


def test_accept_queue_of_a_listener_that_never_accepts(make_tree, monitors, clients):
    tree = make_tree()
    port = tree.cmd("listen 3")["port"]
    monitor = monitors(tree.pid, listen_port=port)
    clients(("127.0.0.1", port), 3)
    assert wait_queue(port, 3) == (3, 3)
    assert measure(monitor)["accept_queue_max"] == 3


def test_accept_queue_ipv6_and_proc_fallback(clients, monkeypatch):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    listener = socket.socket(socket.AF_INET6)
    try:
        try:
            listener.bind(("::1", 0))
        except OSError:
            pytest.skip("::1 not configured")
        listener.listen(7)
        port = listener.getsockname()[1]
        clients(("::1", port), 2, socket.AF_INET6)
        assert wait_queue(port, 2) == (2, 7)

        def no_netlink(family):
            raise OSError("sock_diag unavailable")

        monkeypatch.setattr(kernel, "_diag_listeners", no_netlink)
        assert accept_queue(port) == (2, None)  # /proc/net/tcp6 has no backlog
    finally:
        listener.close()


def test_accept_queue_of_a_port_nobody_listens_on():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))  # bound, not listening
    try:
        assert accept_queue(probe.getsockname()[1]) is None
    finally:
        probe.close()
    with pytest.raises(ValueError):
        accept_queue(0)


def test_kernel_counter_delta_arithmetic():
    before = {"ListenOverflows": 10, "ListenDrops": 12, "TCPReqQFullDrop": 0, "TCPReqQFullDoCookies": 4}
    after = {"ListenOverflows": 15, "ListenDrops": 19, "TCPReqQFullDrop": 1, "TCPReqQFullDoCookies": 4}
    assert KernelCounters.delta(before, after) == {
        "k_listen_overflows": 5,
        "k_listen_drops": 7,
        "k_reqq_full_drop": 1,
        "k_reqq_full_do_cookies": 0,
        "k_syncookies_sent": None,  # absent from both: unknown, not 0
        "net_retrans_segs": None,
        "net_rto_timeouts": None,
    }
    assert set(KernelCounters.delta({}, {}).values()) == {None}
    assert set(KernelCounters.delta({}, {})) <= set(RUN_COLUMNS)


def test_listen_overflows_rise_when_a_tiny_backlog_overflows():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # holds 2 established connections; it never accepts
    before = KernelCounters.snapshot()
    assert "ListenOverflows" in before
    sockets = []
    try:
        for _ in range(20):
            sock = socket.socket()
            sock.setblocking(False)
            sockets.append(sock)
            sock.connect_ex(listener.getsockname())
        deadline = time.monotonic() + 10
        while (delta := KernelCounters.delta(before, KernelCounters.snapshot()))["k_listen_overflows"] <= 0:
            assert time.monotonic() < deadline, delta
            time.sleep(0.05)
        assert delta["k_listen_drops"] >= delta["k_listen_overflows"] > 0
    finally:
        for sock in sockets:
            sock.close()
        listener.close()


def test_read_sysctls():
    values = read_sysctls()
    assert set(values) == {
        "net.core.somaxconn",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.tcp_abort_on_overflow",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.tcp_syn_retries",
        "net.ipv4.tcp_syn_linear_timeouts",
    }
    with open("/proc/sys/net/core/somaxconn") as f:
        assert values["net.core.somaxconn"] == int(f.read())


def test_syn_retry_times_follow_the_kernel_schedule():
    # kernels without linear timeouts: RTO 1 s doubling -> 1, 3, 7, 15 ... s
    assert syn_retry_times({"net.ipv4.tcp_syn_retries": 4}) == [1.0, 3.0, 7.0, 15.0]
    # with 4 linear timeouts the first five RTOs are 1 s, then doubling
    linear = {"net.ipv4.tcp_syn_retries": 7, "net.ipv4.tcp_syn_linear_timeouts": 4}
    assert syn_retry_times(linear) == [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0]


# ---------------------------------------------------------------- the machine
def test_wait_for_idle_gives_up_in_time_when_busy(spinner):
    spinner()
    started = time.monotonic()
    busy, idle = wait_for_idle(threshold_pct=5.0, max_wait_s=1.5, sample_s=0.5)
    elapsed = time.monotonic() - started
    assert not idle
    assert busy > 5.0
    assert elapsed < 1.5 + 1.0  # bounded: generous slack for a loaded machine


def test_wait_for_idle_returns_at_once_under_the_threshold():
    busy, idle = wait_for_idle(threshold_pct=101.0, max_wait_s=10.0, sample_s=0.1)
    assert idle and 0.0 <= busy <= 100.0


def test_cpu_busy_sees_a_pinned_spinner(spinner):
    cpu = min(os.sched_getaffinity(0))
    spinner(cpu)
    meter = CpuBusy()
    meter.start()
    time.sleep(0.5)  # the measurement interval itself
    busy = meter.stop()
    assert set(busy) == set(range(len(psutil.cpu_times(percpu=True))))
    assert busy[cpu] > 50.0
    with pytest.raises(RuntimeError):
        CpuBusy().stop()


def test_run_queue_wait_of_a_server_sharing_its_cpu(spinner, monitors):
    """Two spinners pinned to one CPU: each waits for it about half the time (more if the machine is busy).

    No comparison with a spinner alone: on a machine shared with other work
    that one waits too. One single-threaded process cannot wait more than the
    whole window, which checks the unit.
    """
    cpu = min(os.sched_getaffinity(0))
    served = spinner(cpu)
    spinner(cpu)
    monitor = monitors(served.pid, interval_s=FAST)
    shared = measure(monitor, samples=6)
    assert 25.0 < shared["server_runq_wait_pct"] <= 105.0, shared
