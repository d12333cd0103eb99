"""Hostile scenario files and --set values are refused with a located message, in bounded time and memory.

Each input of ``hostile_scenarios.py`` once hung for hours, took gigabytes or
ended in a traceback. Here each must raise :class:`ScenarioError` whose
message names the file and line (or the ``--set``) and the field, well within
the bounds below. The bounds are generous on purpose (a shared 2-core
machine): they catch a hang or an explosion, not a slowdown;
``benchmarks/scenario_rejection.py`` prints the actual figures.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.scenario import ScenarioError, load_scenario, validate_command

from hostile_scenarios import BASE, cases

#: Seconds: 5x the 1 s target, for a machine shared with other work.
TIME_BOUND_S = 5.0

#: Bytes the peak RSS of a process may grow by while refusing every input.
MEMORY_BOUND = 100 << 20

CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_with_a_located_message_in_bounded_time(tmp_path, case):
    path = tmp_path / "hostile.yaml"
    path.write_text(case.text, encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, case.overrides)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < TIME_BOUND_S, f"{elapsed:.1f} s to refuse it"
    first = message.splitlines()[0] if len(message.splitlines()) == 1 else message.splitlines()[1].strip()
    if case.overrides:
        assert first.startswith("--set "), message
    elif case.line is not None:
        assert first.startswith(f"{path}:{case.line}:"), message
    else:
        assert first.startswith(f"{path}:"), message
    assert case.field in first, message
    assert len(message) < 2000, "the message repeats the input"


def test_a_megabyte_of_unknown_keys_is_one_message_with_a_count(tmp_path):
    # under the node limit: every key is validated, and the message lists a few and counts the rest
    text = BASE + "".join(f"unknown{i}: 1\n" for i in range(5000))
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.splitlines()[0].endswith("5000 problems:")
    assert message.splitlines()[-1].strip() == "... and 4980 more"
    assert f"{path}:8: unknown0: unknown field 'unknown0'" in message


def test_a_long_sweep_without_repeats_is_checked_in_linear_time(tmp_path):
    # 10,000 values is the most a sweep may have; they must be accepted, quickly
    text = BASE.replace("clients: 4", "clients: [" + ", ".join(map(str, range(1, 10_001))) + "]")
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ScenarioError) as info:  # a repeat at the very end, found in one pass
        load_scenario(path, ["load.clients[9999]=1"])
    assert "1 is listed twice" in str(info.value)
    assert time.perf_counter() - start < TIME_BOUND_S


def test_validate_ok_means_run_starts(tmp_path, capsys):
    # validate applies the open-files limit that run applies: same message, exit status 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    path = tmp_path / "many.yaml"
    path.write_text(BASE.replace("clients: 4", f"clients: {hard}"))
    status = validate_command(argparse.Namespace(files=[str(path)], overrides=[]))
    err = capsys.readouterr().err
    assert status == 2
    assert f"{path}:6: load.clients: {hard} clients need about {hard + 64} open files" in err
    assert "ulimit -Hn" in err


def test_refusing_every_hostile_input_stays_within_100_mib(tmp_path):
    # the whole process's peak RSS (not only Python objects), as the kernel counts it, in a child
    # that loads every case in turn: its growth bounds the worst of them
    args = []
    for i, case in enumerate(CASES):
        path = tmp_path / f"case{i}.yaml"
        path.write_text(case.text, encoding="utf-8")
        args += [str(path), "\x1f".join(case.overrides)]
    code = (
        "import resource, sys\n"
        "from bench.scenario import load_scenario, ScenarioError\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for f, sets in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    try:\n"
        "        load_scenario(f, [s for s in sets.split('\\x1f') if s])\n"
        "    except ScenarioError:\n"
        "        pass\n"
        "    else:\n"
        "        sys.exit(f'{f} was accepted')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    grown_kib = int(done.stdout.split()[-1])
    assert grown_kib * 1024 < MEMORY_BOUND, f"peak RSS grew by {grown_kib / 1024:.0f} MiB"
