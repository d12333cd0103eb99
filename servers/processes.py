"""Stopping and reaping a process this project started: the one way, used everywhere.

Every program ``bench`` and ``servers`` start (a server, load workers, the
C client, iperf3, the bulk pair) and every program a test starts ends the
same way, through :func:`stop`: ask it to stop (SIGTERM), wait a bounded
time, then SIGKILL it (its whole process group when it leads one, so what it
forked goes too), wait again, and reap it. :func:`popen_killer` wraps that
around a block, as pyperf does for its workers: whatever exception leaves
the block (KeyboardInterrupt included) the process is killed and reaped
before the exception goes on, so nothing outlives a failure.

Resource handling
-----------------
:func:`stop` reaps (no zombie stays) and :func:`close_pipes` closes the
parent's ends of the pipes. Waiting uses a pidfd where the kernel has one,
so a wait costs no polling and wakes the moment the process exits.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
from collections.abc import Iterator
from typing import Any, TypeVar

#: How long to wait for a process to go once SIGKILLed: the kernel ends it at
#: once, but tearing down a large address space takes a moment on a busy machine.
KILL_WAIT_S = 5.0

P = TypeVar("P", bound="subprocess.Popen[Any]")


def wait_exit(popen: subprocess.Popen[Any], timeout_s: float) -> bool:
    """Wait until ``popen`` exits (reaping it), at most ``timeout_s``; True if it did."""
    if popen.poll() is not None:
        return True
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): Popen's own wait
        try:
            popen.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    return popen.poll() is not None


def kill(popen: subprocess.Popen[Any]) -> None:
    """SIGKILL ``popen``, and its whole process group when it leads one (``start_new_session``)."""
    if popen.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(popen.pid) == popen.pid:
            os.killpg(popen.pid, signal.SIGKILL)
        else:
            popen.kill()


def stop(popen: subprocess.Popen[Any], timeout_s: float = 5.0, *, sig: int | None = signal.SIGTERM) -> bool:
    """Make sure ``popen`` has exited and is reaped; True if it had to be SIGKILLed.

    Sends ``sig`` (None: none, straight to SIGKILL after ``timeout_s``),
    waits up to ``timeout_s``, then :func:`kill` and waits
    :data:`KILL_WAIT_S` more. A process that already exited is only reaped.
    """
    if popen.poll() is not None:
        return False
    if sig is not None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(sig)
    if wait_exit(popen, timeout_s if sig is not None else 0.0):
        return False
    kill(popen)
    wait_exit(popen, KILL_WAIT_S)
    return True


def close_pipes(popen: subprocess.Popen[Any]) -> None:
    """Close the parent's ends of ``popen``'s pipes (a broken pipe on flush is ignored: nothing left to deliver)."""
    for stream in (popen.stdin, popen.stdout, popen.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def popen_killer(popen: P, timeout_s: float = 5.0) -> Iterator[P]:
    """Yield ``popen``; on leaving, it has exited, been reaped, and its pipes are closed.

    On any exception from the block the process is SIGKILLed at once (no
    grace: something already went wrong) and reaped before the exception
    propagates. On a normal exit a process still running is stopped with
    :func:`stop` (SIGTERM, ``timeout_s``, then SIGKILL).
    """
    try:
        yield popen
    except BaseException:
        kill(popen)
        wait_exit(popen, KILL_WAIT_S)
        close_pipes(popen)
        raise
    stop(popen, timeout_s)
    close_pipes(popen)


__all__ = ["KILL_WAIT_S", "close_pipes", "kill", "popen_killer", "stop", "wait_exit"]
