"""Where the server and the load generator run: CPU sets for a placement policy.

One owner for the rule ``bench run`` (:mod:`bench.runner`, for the server it
starts and the generator), ``bench load`` (:mod:`bench.loadgen.cli`, for the
generator alone, against a server someone else started) and ``bench
calibrate`` (:mod:`bench.calibration.measure`, for the C client and the
generator against the reference server) apply, so the three measure a server
the same way by default.

What the policies mean, for the sorted list of CPUs this process may use:

=========  ==========================  ==========================  ===========================
policy     2 CPUs                      4 CPUs                      64 CPUs
=========  ==========================  ==========================  ===========================
split      server 0, generator 1       server 0-1, generator 2-3   server 0-31, generator 32-63
shared     both on 0                   both on 0                   both on 0
none       unpinned                    unpinned                    unpinned
=========  ==========================  ==========================  ===========================

With an odd count the generator gets the extra CPU (it has more processes
to place). On one CPU ``split`` cannot separate them and falls back to
``shared``; :func:`can_split` says so beforehand.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: The policies, default first. ``split`` is the default because a generator
#: sharing the server's CPU takes cycles from it and hides the server's own
#: limit (docs/guide.md shows the measurements).
PLACEMENTS = ("split", "shared", "none")


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, sorted."""
    return sorted(os.sched_getaffinity(0))


def can_split(cpus: Iterable[int] | None = None) -> bool:
    """True when ``split`` really separates server and generator (two CPUs or more)."""
    return len(set(usable_cpus() if cpus is None else cpus)) >= 2


def placement_cpus(placement: str, cpus: Iterable[int] | None = None) -> tuple[set[int] | None, set[int] | None]:
    """CPU sets for (server, generator) under a placement policy (table in the module doc).

    ``cpus`` defaults to :func:`usable_cpus`. ``split`` gives the server the
    first half and the generator the rest, so they never compete;
    ``shared`` puts both on the first CPU, where a wakeup costs nothing but
    they share one core; ``none`` leaves placement to the kernel (None, None).

    Error handling: an unknown policy raises ValueError naming the valid ones.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
    ordered = sorted(set(usable_cpus() if cpus is None else cpus))
    if placement == "none" or not ordered:
        return None, None
    if placement == "shared" or len(ordered) == 1:
        return {ordered[0]}, {ordered[0]}
    half = len(ordered) // 2
    return set(ordered[:half]), set(ordered[half:])
