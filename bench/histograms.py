"""Latency histograms: the project's one owner of the HdrHistogram conventions.

A fast recording path for the load generator, conversion to HdrHistogram,
its encoding, percentiles and merging. The on-disk log format of a results
folder (``hist/*.hlog``) is :mod:`bench.results`'s, built on these.

Every latency the generator measures ends up in an
:class:`hdrh.histogram.HdrHistogram` tracking 1 us to 60 s at 3 significant
digits, so that histograms from workers, repetitions and runs merge exactly
and are stored in the standard encoding.

Why not call ``HdrHistogram.record_value`` per request? It is pure Python and
costs about 0.85 us per call on the reference machine; a worker completing
60k requests/s records three values each, which would spend 15% of a core on
bookkeeping and lower the very throughput being measured. Instead the hot
path computes the HdrHistogram *counts index* of a value with the same
arithmetic hdrh uses (:func:`index_of`, about 0.17 us) and increments a plain
Python list (:class:`Counts`) or, for the per-interval timeline, a sparse
``{index: count}`` dict. At the end of a run those are poured into real
HdrHistograms (:meth:`Counts.to_hdr`, :func:`sparse_to_hdr`); the result is
bit-for-bit the histogram ``record_value`` would have produced (counts per
bucket; min and max are kept at bucket resolution, which is what hdrh
reports anyway). ``tests/test_loadgen.py`` checks :func:`index_of` against
hdrh for a sweep of values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

#: 1 us is the clock resolution that matters here; loopback round trips are >= 10 us.
LOWEST_US = 1
#: 60 s: longer than any timeout the generator uses, so nothing is clipped in practice.
HIGHEST_US = 60_000_000
#: 3 significant digits: 0.1% value error, the usual HdrHistogram setting.
SIG_DIGITS = 3


def new_histogram() -> HdrHistogram:
    """An empty histogram with the project's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIG_DIGITS)


_TEMPLATE = new_histogram()
# hdrh's layout constants, for callers that inline :func:`index_of` in a hot path.
SUB_BUCKET_MASK = _TEMPLATE.sub_bucket_mask
UNIT_MAGNITUDE = _TEMPLATE.unit_magnitude
HALF_COUNT_MAGNITUDE = _TEMPLATE.sub_bucket_half_count_magnitude
HALF_COUNT = _TEMPLATE.sub_bucket_half_count
BUCKET_SHIFT = UNIT_MAGNITUDE + HALF_COUNT_MAGNITUDE + 1
COUNTS_LEN = _TEMPLATE.counts_len
#: Largest recordable value's index; larger values are clamped to it.
MAX_INDEX = _TEMPLATE.get_counts_array_index(HIGHEST_US)


def index_of(value_us: int) -> int:
    """HdrHistogram counts index of a non-negative integer value (hdrh's arithmetic, inlined).

    Values above :data:`HIGHEST_US` are clamped to it; negative values to 0.
    """
    if value_us > HIGHEST_US:
        return MAX_INDEX
    if value_us < 0:
        value_us = 0
    bucket = (value_us | SUB_BUCKET_MASK).bit_length() - BUCKET_SHIFT
    return ((bucket + 1) << HALF_COUNT_MAGNITUDE) + (value_us >> (bucket + UNIT_MAGNITUDE)) - HALF_COUNT


class Counts:
    """A histogram's counts array as a Python list, filled by index. Cheap to increment.

    Use ``counts.c[index_of(v)] += 1`` in hot paths (no method call).
    """

    __slots__ = ("c",)

    def __init__(self) -> None:
        self.c = [0] * COUNTS_LEN

    def record(self, value_us: int) -> None:
        """Record one value (convenience for cold paths)."""
        self.c[index_of(value_us)] += 1

    def to_hdr(self) -> HdrHistogram:
        """The equivalent :class:`HdrHistogram`."""
        return sparse_to_hdr({i: n for i, n in enumerate(self.c) if n})


def sparse_to_hdr(sparse: dict[int, int] | dict[str, int]) -> HdrHistogram:
    """Build a histogram from ``{counts index: count}`` (keys may be JSON strings)."""
    h = new_histogram()
    if not sparse:
        return h
    items = {int(k): int(v) for k, v in sparse.items() if int(v)}
    if not items:
        return h
    for i, n in items.items():
        h.counts[i] += n
    h.set_internal_tacking_values(min(items), max(items), sum(items.values()))
    return h


def encode(h: HdrHistogram) -> str:
    """HdrHistogram's standard base64 (compressed V2) encoding, as text."""
    data = h.encode()
    return data.decode("ascii") if isinstance(data, bytes) else data


def decode(text: str) -> HdrHistogram:
    """Inverse of :func:`encode`."""
    return HdrHistogram.decode(text)


def merge(histograms: list[HdrHistogram]) -> HdrHistogram:
    """A new histogram holding the sum of ``histograms`` (any number, possibly none)."""
    total = new_histogram()
    for h in histograms:
        if h.get_total_count():
            total.add(h)
    return total


def percentiles(h: HdrHistogram, pcts: list[float]) -> dict[float, int | None]:
    """Values at ``pcts`` (0..100), or None each when the histogram is empty."""
    if not h.get_total_count():
        return {p: None for p in pcts}
    values = h.get_percentile_to_value_dict(pcts)
    return {p: int(values[p]) for p in pcts}


def sparse_percentile(sparse: dict[int, int], pct: float) -> int | None:
    """Value at ``pct`` (0 < pct <= 100) of a ``{counts index: count}`` histogram, as hdrh computes it.

    Faster than building an :class:`HdrHistogram` (whose percentile query
    walks all 17k buckets in Python) for the timeline's many small intervals.
    """
    total = sum(sparse.values())
    if not total:
        return None
    target = max(int(pct * total / 100 + 0.5), 1)
    seen = 0
    for i in sorted(sparse):
        seen += sparse[i]
        if seen >= target:
            return int(_TEMPLATE.get_highest_equivalent_value(_TEMPLATE.get_value_from_index(i)))
    return None  # unreachable: seen reaches total >= target


def merge_histograms(hists: Iterable[Any]) -> Any | None:
    """Add histograms into a new one wide enough for all of them (None when none holds a value).

    For histograms read back from files, whose range and precision may not be
    this module's (:func:`merge` is the generator's, in the project's own range).
    """
    hists = [h for h in hists if h is not None and h.get_total_count() > 0]
    if not hists:
        return None
    lowest = min(h.lowest_trackable_value for h in hists)
    highest = max(max(h.highest_trackable_value, h.get_max_value()) for h in hists)
    digits = max(h.significant_figures for h in hists)
    total = HdrHistogram(lowest, highest, digits)
    for h in hists:
        total.add(h)
    return total


def recorded(hist: Any) -> list[tuple[int, int]]:
    """``(value, count)`` of every bucket of ``hist`` holding a count, lowest value first.

    The same pairs as hdrh's ``get_recorded_iterator()`` (``value_iterated_to``,
    the highest value the bucket stands for, and ``count_added_in_this_iter_step``),
    found without its walk: that iterator steps through every bucket up to
    the largest value in Python, ~190,000 steps for a connect histogram that
    reaches a 3 s SYN retry, however few buckets hold anything.
    """
    counts = np.ctypeslib.as_array(hist.counts)
    return [
        (int(hist.get_highest_equivalent_value(hist.get_value_from_index(int(i)))), int(counts[i]))
        for i in np.flatnonzero(counts)
    ]
