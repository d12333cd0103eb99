"""Does a scenario fit this machine: every check ``bench run`` would fail on, made before it starts.

Open files against the hard RLIMIT_NOFILE, an echo message against the
memory, the served files against the free disk: so that ``bench validate``
saying ok means ``bench run`` starts. The runner asks :func:`fd_limit_problem`
again when it raises its own limit.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.loadgen.spec import FILE_SERVICES
from bench.scenario.messages import bytes_text

#: File descriptors a process needs beyond one per client connection
#: (interpreter, pipes, listener, log files, selector/epoll fds).
FD_MARGIN = 64

#: Share of the machine's memory one echo message may take: each load
#: generator worker holds one, and a server may hold as much per connection
#: in flight, so a quarter leaves the machine room to measure anything.
MESSAGE_MEMORY_SHARE = 4


def _nr_open() -> int:
    """The kernel's ceiling on any process's open files (fs.nr_open); root can raise the hard limit to it."""
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20  # the kernel's default


def open_files_ceiling() -> tuple[int, int]:
    """(hard RLIMIT_NOFILE, fs.nr_open): the most open files one process here can get, and root could."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = _nr_open()
    return (ceiling if hard == resource.RLIM_INFINITY else hard), ceiling


def fd_limit_problem(clients: int, limits: tuple[int, int] | None = None) -> str | None:
    """Why ``clients`` connections cannot be opened in one process here, or None.

    ``limits`` is :func:`open_files_ceiling`, read once by a caller checking many values.
    """
    need = clients + FD_MARGIN
    hard, ceiling = limits or open_files_ceiling()
    if need <= hard:
        return None
    text = f"{clients} clients need about {need} open files in one process, but the hard limit (ulimit -Hn) is {hard}"
    if need > ceiling:
        return f"{text}, and the kernel allows at most {ceiling} (fs.nr_open). Lower load.clients"
    return f"{text}. Raise it (as root: ulimit -Hn {need}) or lower load.clients"


def _memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _values_at(s: Any, path: tuple[str, ...]) -> list[tuple[tuple, Any]]:
    """(field path, value) of each value of a field, with the list index for a sweep."""
    value: Any = s
    for part in path:
        value = getattr(value, part)
    if isinstance(value, list):
        return [((*path, i), v) for i, v in enumerate(value)]
    return [] if value is None else [(path, value)]


def _first_over(values: list[tuple[tuple, Any]], too_big: Any) -> list[tuple[tuple, Any, int]]:
    """The first (path, value) for which ``too_big(value)``, with how many more follow: one message per list."""
    over = [(path, value) for path, value in values if too_big(value)]
    return [(over[0][0], over[0][1], len(over) - 1)] if over else []


def _more(count: int) -> str:
    return f" (and {count} more values of this list)" if count else ""


def machine_issues(s: Any) -> list[tuple[tuple, str]]:
    """Settings this machine cannot run: open files, memory for a message, disk for the served files."""
    issues: list[tuple[tuple, str]] = []
    limits = open_files_ceiling()
    for path, clients, more in _first_over(_values_at(s, ("load", "clients")), lambda v: v + FD_MARGIN > limits[0]):
        issues.append((path, f"{fd_limit_problem(clients, limits)}{_more(more)}"))
    if "echo" in s.services:
        memory = _memory_bytes()
        allowed = memory // MESSAGE_MEMORY_SHARE
        for path, size, more in _first_over(_values_at(s, ("load", "message_bytes")), lambda v: v > allowed):
            issues.append(
                (
                    path,
                    f"{bytes_text(size)} per message is more than this machine can hold: each "
                    f"load generator worker keeps one in memory, and the machine has "
                    f"{bytes_text(memory)} (at most {bytes_text(allowed)} per message){_more(more)}",
                )
            )
    if set(FILE_SERVICES) & set(s.services):
        sizes = dict((size, path) for path, size in reversed(_values_at(s, ("load", "file_bytes"))))
        folder = tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
        if sum(sizes) > free:
            biggest = max(sizes)
            issues.append(
                (
                    sizes[biggest],
                    f"the file service's files ({bytes_text(sum(sizes))} in all, one per "
                    f"size) do not fit in {folder}, which has {bytes_text(free)} free; "
                    f"free space, point TMPDIR elsewhere, or use smaller sizes",
                )
            )
    return issues
