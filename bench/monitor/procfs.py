"""Cheap readers for the few ``/proc`` files the process-tree sampler needs.

Why not psutil for everything: finding a process's descendants means knowing
every process's parent, and psutil gets that by reading ``/proc/PID/stat`` of
every process on the machine (``Process.children``), then reads the same file
again per process for its CPU times and thread count. One pass over
``/proc/*/stat`` here yields parent, state, CPU times, thread count and start
time together, so each sample reads each ``stat`` file once. psutil is still
used where it adds something: PSS/USS (``memory_full_info``) and the
machine-wide CPU times.

Files are read with ``os.open``/``os.read`` rather than ``open()``: on the
KVM guests sockbench runs on a ``stat`` read costs ~9 us that way and ~10-20 us
through a buffered file object, and the sampler reads hundreds per second.

Kernel facts relied on (all stable since Linux 2.6):

* ``/proc/PID/stat`` of a process shows the whole thread group's CPU time,
  exited threads included, and ``cutime``/``cstime``: the CPU of children it
  has reaped (each including *their* reaped children), added at ``wait()``
  time. A zombie keeps showing its final times until it is reaped.
* ``/proc/PID/schedstat`` (and ``task/TID/schedstat``) holds three numbers
  for one task: nanoseconds on a CPU, nanoseconds runnable but waiting on a
  run queue, and timeslices; the main thread's only, so a threaded process
  is read per thread.
* ``/proc/PID/task/TID/status`` holds ``voluntary_ctxt_switches`` and
  ``nonvoluntary_ctxt_switches`` of that one thread; ``/proc/PID/status``
  shows only the main thread's, so a threaded process must be read per thread.

Error handling:
    A process can vanish between listing ``/proc`` and reading its files.
    Readers raise ``ProcessGone`` (``FileNotFoundError``/``ProcessLookupError``
    from the kernel) so callers can skip it; ``PermissionError`` propagates so
    callers can say what they could not read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

PROC = "/proc"
#: Kernel clock ticks per second: the unit of utime/stime in ``stat``.
CLOCK_TICKS: int = os.sysconf("SC_CLK_TCK")
#: Bytes per page: the unit of the ``rss`` field in ``stat``.
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")

# Why 16 KiB: stat is < 1 KiB and status ~1.5 KiB; one read of this size gets
# either file whole in a single syscall (seq_file hands over everything that fits).
_READ_CHUNK = 16384


class ProcessGone(Exception):
    """The process (or thread) disappeared while it was being read."""


def read_small(path: str) -> bytes:
    """Read a small /proc file with as few syscalls as possible.

    Raises ``ProcessGone`` if the file's process no longer exists;
    ``PermissionError`` propagates.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(path) from exc
    try:
        parts = []
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            parts.append(chunk)
            if len(chunk) < _READ_CHUNK:
                return b"".join(parts)
    except ProcessLookupError as exc:  # ESRCH: the task exited after open()
        raise ProcessGone(path) from exc
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the sampler uses (times in clock ticks)."""

    pid: int
    ppid: int
    state: str  # R S D Z X ...
    starttime: int  # ticks after boot: with pid, identifies a process despite pid reuse
    utime: int
    stime: int
    cutime: int  # reaped children, recursively
    cstime: int
    num_threads: int
    rss_bytes: int

    @property
    def live(self) -> bool:
        """False for a zombie or a dead-but-not-yet-released process."""
        return self.state not in ("Z", "X", "x")


def parse_stat(pid: int, data: bytes) -> ProcStat:
    """Parse a ``stat`` line. The command name may hold spaces and ')' so
    fields are counted from the *last* ')'."""
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is stat field 3 (state); field n of proc(5) is fields[n - 3].
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        state=fields[0].decode("ascii", "replace"),
        starttime=int(fields[19]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
        num_threads=int(fields[17]),
        rss_bytes=int(fields[21]) * PAGE_SIZE,
    )


def read_stat(pid: int) -> ProcStat:
    """``/proc/PID/stat`` of one process; ``ProcessGone`` if it is gone."""
    data = read_small(f"{PROC}/{pid}/stat")
    if not data:  # an exiting process can yield an empty read
        raise ProcessGone(pid)
    return parse_stat(pid, data)


def read_process_table() -> dict[int, ProcStat]:
    """``stat`` of every process on the machine, keyed by pid.

    Processes that vanish or cannot be read mid-scan are left out: a
    process we may not read is not one we could monitor anyway.
    """
    table: dict[int, ProcStat] = {}
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            table[pid] = read_stat(pid)
        except (ProcessGone, PermissionError, ValueError, IndexError):
            continue
    return table


_VOLUNTARY = b"\nvoluntary_ctxt_switches:"
_NONVOLUNTARY = b"\nnonvoluntary_ctxt_switches:"


def parse_ctx_switches(status: bytes) -> int:
    """voluntary + nonvoluntary context switches from a ``status`` file."""
    total = 0
    for key in (_VOLUNTARY, _NONVOLUNTARY):
        start = status.index(key) + len(key)
        end = status.find(b"\n", start)
        total += int(status[start : end if end >= 0 else None])
    return total


def _per_thread(pid: int, num_threads: int, name: str, parse: Callable[[bytes], int]) -> dict[int, int]:
    """``parse`` of file ``name`` per thread id of one process.

    A single-threaded process is read from ``/proc/PID/<name>`` (one file);
    otherwise each ``/proc/PID/task/TID/<name>``. Threads that exit while
    being read are left out. Raises ``ProcessGone`` if the process is gone.
    """
    if num_threads <= 1:
        return {pid: parse(read_small(f"{PROC}/{pid}/{name}"))}
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc
    values: dict[int, int] = {}
    for tid in tids:
        try:
            values[int(tid)] = parse(read_small(f"{PROC}/{pid}/task/{tid}/{name}"))
        except (ProcessGone, ValueError, IndexError):
            continue
    return values


def thread_ctx_switches(pid: int, num_threads: int) -> dict[int, int]:
    """Context switches per thread id of one process (see :func:`_per_thread`)."""
    return _per_thread(pid, num_threads, "status", parse_ctx_switches)


def parse_schedstat(data: bytes) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting on a run queue) from a ``schedstat`` file."""
    fields = data.split()
    return int(fields[0]), int(fields[1])


def read_schedstat(pid: int) -> tuple[int, int]:
    """:func:`parse_schedstat` of ``/proc/PID/schedstat`` (the main thread; a zombie keeps
    its final figures until reaped). Raises ``ProcessGone`` if it is gone."""
    return parse_schedstat(read_small(f"{PROC}/{pid}/schedstat"))


def thread_runq_wait(pid: int, num_threads: int) -> dict[int, int]:
    """Run-queue wait in ns (``schedstat`` field 2) per thread id of one process (see :func:`_per_thread`)."""
    return _per_thread(pid, num_threads, "schedstat", lambda data: parse_schedstat(data)[1])


def count_fds(pid: int) -> int:
    """Open file descriptors of a process. ``ProcessGone`` if it is gone;
    ``PermissionError`` if another user's process."""
    try:
        return len(os.listdir(f"{PROC}/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessGone(pid) from exc
