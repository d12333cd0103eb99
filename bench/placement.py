"""Where the server and the load generator run: CPU sets for a placement policy.

One owner for the rule both ``bench run`` (:mod:`bench.runner`, for the
server it starts and the generator) and ``bench load`` (:mod:`bench.loadgen.cli`,
for the generator alone, against a server someone else started) apply, so
the two commands measure a server the same way by default.
"""

from __future__ import annotations

import os

#: The policies, default first. ``split`` is the default because a generator
#: sharing the server's CPU takes cycles from it and hides the server's own
#: limit (docs/guide.md shows the measurements).
PLACEMENTS = ("split", "shared", "none")


def placement_cpus(placement: str) -> tuple[set[int] | None, set[int] | None]:
    """CPU sets for (server, generator) under a placement policy.

    ``split`` gives the server the first half of the usable CPUs and the
    generator the rest (on 2 cores: CPU 0 and CPU 1), so they never compete;
    ``shared`` puts both on the first CPU, where a wakeup costs nothing but
    they share one core; ``none`` leaves placement to the kernel.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "none" or len(cpus) < 1:
        return None, None
    if placement == "shared" or len(cpus) == 1:
        return {cpus[0]}, {cpus[0]}
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])
