"""Side metrics bounded to their run: a network namespace per run, snapshots at the window's edges."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from bench.monitor import KernelCounters, WindowProbe, run_namespace
from servers.launch import run_server

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root")


def _net_namespaces() -> set[str]:
    """Every network namespace some thread of some process is in (e.g. 'net:[4026531833]')."""
    found = set()
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*/ns/net"):
        try:
            found.add(os.readlink(task))
        except OSError:
            continue  # exited meanwhile
    return found


def _nsfs_mount_lines() -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if " - nsfs " in line]


def _overflow_burst(listener: socket.socket, clients: list[socket.socket]) -> None:
    """Connect ``clients`` to a listener that never accepts, until ListenOverflows rises in its namespace."""
    for sock in clients:
        sock.connect_ex(listener.getsockname())


@needs_root
def test_counters_of_a_run_namespace_leave_out_an_overflow_burst_outside():
    # Sockets made before entering stay in the host's namespace: a burst another process could cause.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepts: the 2nd connect onward overflows
    clients = [socket.socket() for _ in range(20)]
    for sock in clients:
        sock.setblocking(False)
    host_ns = os.readlink("/proc/thread-self/ns/net")
    try:
        host_before = KernelCounters.snapshot(1)  # pid 1 stays in the host namespace
        with run_namespace() as netns, run_server("sequential", "echo") as server:
            assert netns.own and netns.scope == "own"
            assert os.readlink(f"/proc/{server.pid}/ns/net") != host_ns
            run_before = KernelCounters.snapshot(server.pid)
            with socket.create_connection(server.address, timeout=5) as conn:  # the run's own traffic works
                conn.sendall(b"ping")
                assert conn.recv(4) == b"ping"
            _overflow_burst(listener, clients)
            deadline = time.monotonic() + 10
            while KernelCounters.delta(host_before, KernelCounters.snapshot(1))["k_listen_overflows"] <= 0:
                assert time.monotonic() < deadline, "the burst did not overflow the host listener"
                time.sleep(0.05)
            run_delta = KernelCounters.delta(run_before, KernelCounters.snapshot(server.pid))
        assert run_delta["k_listen_overflows"] == 0 and run_delta["k_listen_drops"] == 0
        assert os.readlink("/proc/thread-self/ns/net") == host_ns  # the thread is back home
    finally:
        for sock in clients:
            sock.close()
        listener.close()


@needs_root
def test_a_run_namespace_leaves_nothing_behind():
    # Only this test's own namespaces are looked for: other root processes on
    # the machine (another run, a test of named hosts) may create and remove
    # theirs meanwhile, so machine-wide before/after sets would be flaky.
    ours: list[str] = []
    for _ in range(2):
        with run_namespace() as netns, run_server("forking", "echo") as server:
            inside = os.readlink(f"/proc/{server.pid}/ns/net")
            ours.append(inside)
            with socket.create_connection(server.address, timeout=5) as conn:
                conn.sendall(b"x")
                assert conn.recv(1) == b"x"
        assert netns.own and inside not in _net_namespaces()
    assert len(set(ours)) == 2, "each run gets a namespace of its own"
    # Nothing keeps them alive: no nsfs mount of them (a bind mount is how
    # `ip netns` names one). Each was checked to hold no process right after
    # its run; checking again now could meet the kernel reusing its number
    # for another root process's namespace.
    inodes = {name.split("[")[1].rstrip("]") for name in ours}
    assert not any(f"net:[{inode}]" in line for line in _nsfs_mount_lines() for inode in inodes)


def test_without_root_the_counters_are_said_to_be_namespace_wide(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    before = os.readlink("/proc/thread-self/ns/net")
    with run_namespace() as netns:
        assert not netns.own and netns.scope == "shared" and "root" in netns.why_not
        assert os.readlink("/proc/thread-self/ns/net") == before


def test_window_probe_snapshots_when_the_window_opens_and_closes():
    seen: list[tuple[str, float]] = []
    probe = WindowProbe(lambda: seen.append(("start", time.time())), lambda: seen.append(("end", time.time())))
    start = time.time() + 0.2
    probe.schedule(start, start + 0.3)
    assert probe.close()
    assert [k for k, _ in seen] == ["start", "end"]
    assert start <= seen[0][1] < start + 0.1 and start + 0.3 <= seen[1][1] < start + 0.4


def test_window_probe_closed_early_takes_no_end_snapshot():
    seen: list[str] = []
    probe = WindowProbe(lambda: seen.append("start"), lambda: seen.append("end"))
    probe.schedule(time.time() + 30, time.time() + 60)
    t0 = time.monotonic()
    assert not probe.close(timeout_s=0.1)
    assert seen == [] and time.monotonic() - t0 < 2
