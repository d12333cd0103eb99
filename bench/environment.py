"""What a results folder's ``environment.json`` records about the machine.

A figure is only comparable with another taken on the same kind of machine,
kernel, Python and library versions, under the same limits. This module
gathers all of that once per scenario run into a plain, JSON-serialisable
dict: Python, platform and kernel, CPU model and counts, memory, the
listen-queue sysctls, ulimits, versions of the packages that shape the
figures, sockbench's own git commit (and whether the tree had uncommitted
changes), the host, its boot time and load, the CPU placement the runner used, and
whether the kernel counters are each run's own or namespace-wide.

Everything is best effort and read-only: a value that cannot be read is
``None`` (never a guess), and nothing here raises for a missing file, a
missing ``git`` or a folder that is not a git checkout. ``git`` is run with
optional locks disabled so that recording a commit never writes to the
repository's index.

Resource handling:
    ``git`` runs as a short subprocess with a timeout; nothing else is
    started or kept open.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import resource
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from bench.monitor.kernel import counter_scope, read_sysctls
from bench.results import FORMAT_KEY, FORMAT_VERSIONS

#: Distributions whose versions are recorded (PyPI names; None if not installed).
PACKAGES = (
    "psutil",
    "pandas",
    "matplotlib",
    "hdrhistogram",
    "pydantic",
    "uvloop",
    "scipy",
    "rich",
    "PyYAML",
)

#: The sockbench checkout: the folder holding the ``bench`` package.
REPO_DIR = Path(__file__).resolve().parent.parent

# Why 5 s: git answers in milliseconds; a hung git (network filesystem, lock)
# must not hold up a benchmark.
_GIT_TIMEOUT_S = 5.0
_CPUINFO_MODEL_KEYS = ("model name", "Hardware", "Processor", "cpu model", "cpu")


def collect_environment(placement: dict | None = None) -> dict:
    """The content of ``environment.json``. ``placement``: the runner's CPU placement, recorded as given.

    ``kernel_counters`` says whether the k_* columns are each run's own
    (``own``: a network namespace per run, as root) or ``namespace-wide``.
    """
    scope, scope_note = counter_scope()
    return {
        FORMAT_KEY: FORMAT_VERSIONS["environment.json"],
        "timestamp": _iso(dt.datetime.now(dt.UTC)),
        "hostname": socket.gethostname(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "kernel_release": platform.release(),
            "kernel_version": platform.version(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        "cpu": cpu_info(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "sysctls": read_sysctls(),
        "ulimits": ulimits(),
        "packages": package_versions(),
        "sockbench": {"version": _version("sockbench"), **git_state(REPO_DIR)},
        "boot_time": _iso(dt.datetime.fromtimestamp(psutil.boot_time(), dt.UTC)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "clocksource": _read_text("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "placement": placement,
        "kernel_counters": "own network namespace per run" if scope == "own" else "namespace-wide",
        "notes": [scope_note],
    }


def cpu_info() -> dict:
    """CPU model, logical/physical counts, the CPUs this process may run on, frequency governor."""
    try:
        affinity: list[int] | None = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "model": _cpu_model(),
        "logical": psutil.cpu_count(logical=True),
        "physical": psutil.cpu_count(logical=False),
        "affinity": affinity,
        "governor": _governor(),
    }


def _cpu_model() -> str | None:
    text = _read_text("/proc/cpuinfo")
    if text:
        for key in _CPUINFO_MODEL_KEYS:
            for line in text.splitlines():
                name, _, value = line.partition(":")
                if name.strip() == key and value.strip():
                    return value.strip()
    return platform.processor() or None


def _governor() -> str | dict[str, str] | None:
    """scaling_governor: one string if every CPU agrees, per-CPU otherwise, None if not exposed (VMs)."""
    found: dict[str, str] = {}
    for path in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")):
        value = _read_text(str(path))
        if value:
            found[path.parent.parent.name] = value
    if not found:
        return None
    values = set(found.values())
    return values.pop() if len(values) == 1 else found


def ulimits() -> dict[str, int | str]:
    """Open-files and process limits of this process ("unlimited" for RLIM_INFINITY)."""
    out: dict[str, int | str] = {}
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = resource.getrlimit(which)
        out[f"{name}_soft"] = "unlimited" if soft == resource.RLIM_INFINITY else soft
        out[f"{name}_hard"] = "unlimited" if hard == resource.RLIM_INFINITY else hard
    return out


def package_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`PACKAGES` (None if not installed)."""
    return {name: _version(name) for name in PACKAGES}


def git_state(path: Path) -> dict[str, str | bool | None]:
    """{"commit": HEAD or None, "dirty": tracked files modified?} of the checkout rooted at ``path``.

    None/None unless ``path`` is itself the top of a git work tree (an
    installed copy inside some other repository must not report that
    repository's commit), or if git is missing or fails.
    """
    unknown: dict[str, str | bool | None] = {"commit": None, "dirty": None}
    top = _git(path, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != path.resolve():
        return unknown
    commit = _git(path, "rev-parse", "HEAD")
    if commit is None:
        return unknown
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _git(path: Path, *args: str) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")
