"""Scenario inputs that once hung, exhausted memory or ended in a traceback, one per kind of attack.

Each case is a scenario text plus ``--set`` arguments and the field its error
must name. ``tests/test_scenario_bounds.py`` checks that each is refused with a
located message within a bound of time and memory;
``benchmarks/scenario_rejection.py`` prints the seconds and memory each takes.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE = """\
name: t
service: echo
models: [threading]
duration: 1s
load:
  clients: 4
  message_bytes: 1KiB
"""


@dataclass(frozen=True)
class Hostile:
    name: str
    text: str
    overrides: tuple[str, ...] = ()
    #: what the message must name: the field path (or a word of the problem when no field applies)
    field: str = ""
    #: the line the message must point at (None: the problem comes from --set)
    line: int | None = None


def _replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


def _billion_laughs() -> str:
    levels = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return BASE + "\n".join(levels) + "\n"


def cases() -> list[Hostile]:
    """Every hostile input, built fresh (some are megabytes)."""
    digits = "7" * 5000
    return [
        Hostile("exponent duration", _replace("duration: 1s", "duration: 1e999999999s"), field="duration", line=4),
        Hostile(
            "exponent size",
            _replace("message_bytes: 1KiB", "message_bytes: 1e999999999KiB"),
            field="load.message_bytes",
            line=7,
        ),
        Hostile(
            "tiny exponent duration", _replace("duration: 1s", "duration: 1e-999999999s"), field="duration", line=4
        ),
        Hostile("billion laughs", _billion_laughs(), field="a0", line=8),
        Hostile(
            "400k unknown keys (6 MB)",
            BASE + "".join(f"key{i}: {i}\n" for i in range(400_000)),
            field="1 MiB",
            line=None,
        ),
        Hostile(
            "unknown keys filling 1 MiB", BASE + "".join(f"k{i}: 1\n" for i in range(90_000)), field="k", line=None
        ),
        Hostile(
            "20,000-entry sweep",
            _replace("clients: 4", "clients: [" + ", ".join(map(str, range(1, 20_001))) + "]"),
            field="load.clients",
            line=6,
        ),
        Hostile("NUL byte", _replace("name: t", "name: t\0"), field="NUL", line=1),
        Hostile("1e400s in the file", _replace("duration: 1s", "duration: 1e400s"), field="duration", line=4),
        Hostile("1e400s in --set", BASE, ("duration=1e400s",), field="duration"),
        Hostile(
            "5,000-digit integer in the file",
            _replace("clients: 4", f"clients: {digits}"),
            field="load.clients",
            line=6,
        ),
        Hostile("5,000-digit integer in --set", BASE, (f"load.clients={digits}",), field="load.clients"),
        Hostile(
            "20,000 nested [", BASE + "description: " + "[" * 20_000 + "]" * 20_000 + "\n", field="description", line=8
        ),
        Hostile("clients: 1000000000", _replace("clients: 4", "clients: 1000000000"), field="load.clients", line=6),
        Hostile(
            "message_bytes: 1000000GiB",
            _replace("message_bytes: 1KiB", "message_bytes: 1000000GiB"),
            field="load.message_bytes",
            line=7,
        ),
    ]
