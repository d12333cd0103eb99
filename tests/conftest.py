"""Shared pytest configuration: kept minimal on purpose.

Fixtures that only one test module needs live in that module.
"""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    # bench run learns its estimate in the user's cache folder: the tests' runs go to one of their own.
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sockbench-test-cache-")


def pytest_unconfigure(config) -> None:
    import shutil

    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)


def pytest_report_header() -> str:
    # Timing-sensitive failures are easier to read knowing how many CPUs the run had.
    return f"sockbench: {len(os.sched_getaffinity(0))} CPU(s) available to the tests"


def pytest_sessionfinish(session, exitstatus) -> None:
    """No test may leave a process or a network namespace behind: every server, child and worker is reaped.

    Checked once, after the whole session, on the test process's own
    descendants (never by name). A leftover turns a green run red.
    """
    import psutil

    leftovers = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                leftovers.append(f"{child.pid} (zombie)")
            else:
                leftovers.append(f"{child.pid} {' '.join(child.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    if leftovers:
        print("\nprocesses left behind by the tests:\n  " + "\n  ".join(leftovers))
        session.exitstatus = 1
    # Network namespaces the tests' runs made in this process (bench.network.hosts names them by owner).
    from bench.network.hosts import PREFIX, ours, owner_tag

    left = [name for name in ours() if name.startswith(f"{PREFIX}-{owner_tag()}-")]
    if left:
        print("\nnetwork namespaces left behind by the tests:\n  " + "\n  ".join(left))
        session.exitstatus = 1
