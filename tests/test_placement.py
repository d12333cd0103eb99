"""What each placement policy means on 1, 2, 4, 5 and 64 CPUs: one definition for run, load and calibrate."""

from __future__ import annotations

import os

import pytest

from bench.placement import PLACEMENTS, can_split, placement_cpus


@pytest.mark.parametrize(
    "cpus, server, generator",
    [
        ([0, 1], {0}, {1}),
        ([0, 1, 2, 3], {0, 1}, {2, 3}),
        (list(range(64)), set(range(32)), set(range(32, 64))),
        ([3, 1, 7, 5, 9], {1, 3}, {5, 7, 9}),  # unsorted, odd: the generator gets the extra CPU
    ],
)
def test_split_gives_the_server_the_first_half_and_the_generator_the_rest(cpus, server, generator):
    assert placement_cpus("split", cpus) == (server, generator)
    assert can_split(cpus)


@pytest.mark.parametrize("cpus", [[0, 1], [2, 3, 4, 5], list(range(64))])
def test_shared_puts_both_on_the_first_cpu_and_none_pins_nothing(cpus):
    assert placement_cpus("shared", cpus) == ({min(cpus)}, {min(cpus)})
    assert placement_cpus("none", cpus) == (None, None)


def test_split_on_one_cpu_falls_back_to_sharing_it():
    assert not can_split([4])
    assert placement_cpus("split", [4]) == ({4}, {4})


def test_default_is_this_process_affinity_and_an_unknown_policy_is_named():
    assert placement_cpus("split") == placement_cpus("split", os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="valid: " + ", ".join(PLACEMENTS)):
        placement_cpus("spread")
