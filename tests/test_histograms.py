"""The histogram helpers give what hdrh itself gives, only faster."""

from __future__ import annotations

import random

from bench.histograms import decode, encode, merge_histograms, new_histogram, recorded


def test_recorded_buckets_are_hdrhs_recorded_iteration():
    rng = random.Random(7)
    hist = new_histogram()
    # loopback round trips, a tail, and SYN retries at 1 s and 3 s: the connect histogram's shape
    for value in [rng.randint(20, 400) for _ in range(5000)] + [1_000_123, 1_000_900, 3_001_000, 59_000_000]:
        hist.record_value(value)
    # as the report reads it: decoded from its file and merged over repetitions
    merged = merge_histograms([decode(encode(hist)), decode(encode(hist))])
    for h in (hist, merged):
        expected = [(it.value_iterated_to, it.count_added_in_this_iter_step) for it in h.get_recorded_iterator()]
        assert recorded(h) == expected
    assert recorded(new_histogram()) == []
