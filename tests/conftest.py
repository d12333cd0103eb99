"""Shared pytest configuration and the fixtures more than one test module uses.

Fixtures that only one test module needs live in that module. The markers
(declared in pyproject.toml): ``slow`` is left out of the quick subset
(``-m "not slow"``); ``needs_cc`` and ``needs_chromium`` skip a test, saying
why, where the C compiler or Chromium is missing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from _pytest.mark.structures import ParameterSet

from servers import native, registry

from thread_servers import ThreadServer

#: Debian's Chromium, which renders the HTML report in tests/test_report.py.
CHROMIUM = Path("/usr/bin/chromium")


def pytest_configure(config) -> None:
    # bench run learns its estimate in the user's cache folder: the tests' runs go to one of their own.
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sockbench-test-cache-")


def pytest_unconfigure(config) -> None:
    import shutil

    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)


def served_by(service: str) -> list[Any]:
    """The registered models that offer ``service``, as parameters; a native one is marked ``needs_cc``."""
    return [
        pytest.param(name, marks=pytest.mark.needs_cc) if model.native else name
        for name, model in registry.MODELS.items()
        if model.offers(service)
    ]


def model_services(services: Iterable[str] | None = None) -> list[Any]:
    """Every (model, service) pair the registry declares, as parameters; native ones marked ``needs_cc``.

    ``services`` keeps only those services (a suite written for some of them).
    """
    return [
        pytest.param(name, service, marks=pytest.mark.needs_cc) if model.native else (name, service)
        for name, model in registry.MODELS.items()
        for service in model.services
        if services is None or service in services
    ]


def one_quick(values: Iterable[Any]) -> list[Any]:
    """``values`` as parameters of which only the first is in the quick subset (``-m "not slow"``).

    For tests that take seconds per model: the quick subset still runs each
    of them once; the full suite runs every model.
    """
    params = []
    for i, value in enumerate(values):
        if i == 0:
            params.append(value)
        elif isinstance(value, ParameterSet):
            params.append(pytest.param(*value.values, marks=(*value.marks, pytest.mark.slow), id=value.id))
        elif isinstance(value, tuple):  # the values of several arguments
            params.append(pytest.param(*value, marks=pytest.mark.slow))
        else:
            params.append(pytest.param(value, marks=pytest.mark.slow))
    return params


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a ``needs_cc`` / ``needs_chromium`` test where the tool is missing, naming it and the fix."""
    if item.get_closest_marker("needs_cc") is not None and not native.available():
        pytest.skip(native.why_unavailable())
    if item.get_closest_marker("needs_chromium") is not None and not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium)")


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


@pytest.fixture
def ipv6_loopback() -> str:
    """``"::1"``; the test is skipped where this machine has no IPv6 loopback."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    return "::1"


@pytest.fixture
def server() -> Iterator[Callable[..., ThreadServer]]:
    """Make in-test servers (tests/thread_servers.py); every one is closed after the test."""
    made: list[ThreadServer] = []

    def make(handler: Callable[[socket.socket, ThreadServer], None], **kw: object) -> ThreadServer:
        s = ThreadServer(handler, **kw)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def no_leftover_workers() -> Iterator[None]:
    """Fail the test (not only the session) that leaves a child process, e.g. a load worker, behind."""
    yield
    assert psutil.Process().children(recursive=True) == [], "a load worker was left behind"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB filesystem (tmpfs), unmounted afterwards; skipped where mounting is not allowed."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_disk(folder: Path, leave: int = 0) -> None:
    """Write a file into ``folder`` until its filesystem has no byte left, then free ``leave`` bytes."""
    block = b"\0" * (1 << 16)
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        with contextlib.suppress(OSError):  # the last partial block, byte-exact
            while True:
                fh.write(b"\0" * 512)
        if leave:
            fh.truncate(max(0, fh.tell() - leave))
