"""servers.processes: a started process is killed and reaped on any exception, stopped and reaped otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from servers.processes import popen_killer, stop

#: A child that ignores SIGTERM and forks a grandchild into its own process group: only SIGKILL to the group ends both.
STUBBORN = (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "os.fork() or time.sleep(60); print('ready', flush=True); time.sleep(60)"
)


def test_an_exception_kills_and_reaps_the_process_at_once():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdout=subprocess.PIPE)
    with pytest.raises(KeyboardInterrupt), popen_killer(proc):
        raise KeyboardInterrupt
    assert proc.returncode == -signal.SIGKILL and proc.stdout.closed


def test_a_normal_exit_stops_a_stubborn_group_leader_and_its_children():
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, start_new_session=True)
    with popen_killer(proc, timeout_s=0.2):
        assert proc.stdout.readline() == b"ready\n"
        children = psutil.Process(proc.pid).children()
    assert proc.returncode == -signal.SIGKILL and children
    # SIGKILL went to the whole group: the grandchild dies too (a moment later, reaped by whoever adopted it)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    for child in children:
        try:
            os.waitpid(child.pid, os.WNOHANG)  # ours to reap if this process is a subreaper
        except ChildProcessError:
            pass


def test_stop_only_reaps_a_process_that_already_exited():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert stop(proc) is False and proc.returncode == 0
