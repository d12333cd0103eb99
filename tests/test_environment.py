"""environment.json content: complete, JSON-serialisable, and true to the machine."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys

import psutil

from bench.environment import PACKAGES, REPO_DIR, collect_environment, git_state
from bench.monitor import NAMESPACE_NOTE, OWN_NAMESPACE_NOTE

TOP_KEYS = {
    "format_version",
    "timestamp",
    "hostname",
    "python",
    "platform",
    "cpu",
    "memory_total_bytes",
    "sysctls",
    "ulimits",
    "packages",
    "sockbench",
    "boot_time",
    "load_average",
    "clocksource",
    "placement",
    "kernel_counters",
    "notes",
}


def test_environment_has_every_key_and_survives_json():
    placement = {"mode": "split", "server_cpus": [0], "gen_cpus": [1]}
    env = collect_environment(placement)
    assert set(env) == TOP_KEYS
    assert json.loads(json.dumps(env)) == env  # plain JSON types only

    assert env["placement"] == placement
    assert env["python"] == {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }
    assert env["platform"]["kernel_release"] == os.uname().release
    assert env["cpu"]["logical"] == os.cpu_count()
    assert env["memory_total_bytes"] == psutil.virtual_memory().total
    assert set(env["sysctls"]) >= {"net.core.somaxconn", "net.ipv4.tcp_syncookies"}
    assert set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["psutil"] == psutil.__version__
    assert env["ulimits"]["nofile_soft"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert set(env["ulimits"]) == {"nofile_soft", "nofile_hard", "nproc_soft", "nproc_hard"}
    assert len(env["load_average"]) == 3
    assert env["timestamp"].endswith("+00:00")  # UTC, ISO-8601
    if os.geteuid() == 0:  # a network namespace per run: the counters are each run's own
        assert env["kernel_counters"] == "own network namespace per run" and OWN_NAMESPACE_NOTE in env["notes"]
    else:
        assert env["kernel_counters"] == "namespace-wide" and NAMESPACE_NOTE in env["notes"][0]


def test_environment_without_placement_records_null():
    assert collect_environment()["placement"] is None


def test_git_commit_is_the_checkout_head():
    state = collect_environment()["sockbench"]
    head = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:  # not a git checkout (an installed copy): recorded as unknown
        assert state["commit"] is None and state["dirty"] is None
        return
    assert state["commit"] == head.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"])
    assert isinstance(state["dirty"], bool)


def test_git_state_of_a_folder_that_is_not_a_checkout(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_git_state_inside_another_repository_is_not_reported(tmp_path):
    """A copy of the package inside some other repository must not report that repository's commit."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    inner = tmp_path / "site-packages"
    inner.mkdir()
    assert git_state(inner) == {"commit": None, "dirty": None}
