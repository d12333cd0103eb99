"""Numbers as a person reads them: the one owner of how bench prints a figure.

Every place that shows a measured value (the line ``bench run`` prints per
run, the summary table, the report, the findings' sentences, the figures'
tick labels, ``bench compare``) formats it here, so a latency reads ``55 µs``
and a size ``1.5 MiB`` everywhere. Like pyperf's ``_formatter`` module it
imports nothing heavy: printing a run line in the terminal must not pay for
matplotlib or pandas.

Every formatter accepts what a results table holds: a float, an int, a
numpy scalar, a string read back from CSV, None or NaN. A value that is not
a finite number prints as ``-``: the tool says it has no figure rather than
print a guess.

The exact, parseable spellings of sizes and durations in scenarios
(``1MiB``, ``500ms``) are :func:`bench.units.format_size` and
:func:`bench.units.format_duration`: those round-trip through the parser,
these are for reading.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

#: Printed for a value that is missing or not a finite number.
MISSING = "-"


def number(value: Any) -> float:
    """``value`` as a float; NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(value: Any) -> float | None:
    f = number(value)
    return f if math.isfinite(f) else None


def _scaled(v: float, units: tuple[tuple[float, str], ...], below: str) -> str:
    """``v`` in the largest of ``units`` (factor, suffix) it reaches, 3 significant digits; else ``below``."""
    for factor, suffix in units:
        if abs(v) >= factor:
            return f"{v / factor:.3g}{suffix}"
    return below


def fmt_time_us(us: Any) -> str:
    """A duration given in microseconds, with a readable unit: 55 µs, 1.2 ms, 3 s."""
    us = _finite(us)
    if us is None:
        return MISSING
    if us == 0:
        return "0"
    return _scaled(us, ((1e6, " s"), (1e3, " ms")), f"{us:.3g} µs")


def fmt_bytes(b: Any) -> str:
    """A size in bytes in the largest binary unit it reaches, 3 significant digits: 512 B, 1.5 MiB, 2 GiB."""
    b = _finite(b)
    if b is None:
        return MISSING
    return _scaled(b, ((2**30, " GiB"), (2**20, " MiB"), (2**10, " KiB")), f"{b:.0f} B")


def fmt_count(v: Any) -> str:
    """12345 -> 12.3k, 1.5e6 -> 1.5M (tick labels for throughput)."""
    v = _finite(v)
    if v is None:
        return MISSING
    return _scaled(v, ((1e6, "M"), (1e3, "k")), f"{v:.3g}")


def fmt_rate(v: Any, unit: str = "req/s") -> str:
    """3 significant digits with thousands separators: ``69,800 req/s``; ``unit=""`` gives the bare number."""
    v = _finite(v)
    if v is None:
        return MISSING
    if v >= 100:
        digits = int(math.floor(math.log10(v))) - 2
        text = f"{round(v, -digits):,.0f}"
    else:
        text = f"{v:.3g}"
    return f"{text} {unit}" if unit else text


def fmt_whole(v: Any) -> str:
    """Every digit, with thousands separators: ``69,812`` (a run's own req/s in its line)."""
    v = _finite(v)
    return MISSING if v is None else f"{v:,.0f}"


def fmt_mb_per_s(v: Any) -> str:
    """MB/s: whole numbers from 100 up (``1,234``), 3 significant digits below (``12.3``)."""
    v = _finite(v)
    if v is None:
        return MISSING
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def formatter_for(metric: str) -> Callable[[Any], str]:
    """The formatter of a runs.csv metric column: latencies in time units, MB/s, everything else a count."""
    if metric.startswith("lat_"):
        return fmt_time_us
    if metric == "mb_per_s":
        return fmt_mb_per_s
    return fmt_count


def format_param(v: Any) -> str:
    """A parameter value as a user types it: 100 not 100.0, True, 'closed'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) and float(v).is_integer():
        return str(int(float(v)))
    return str(v)
