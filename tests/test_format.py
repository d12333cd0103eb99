"""bench.format: one spelling of each kind of figure, tolerant of what a results table holds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.format import fmt_bytes, fmt_count, fmt_rate, fmt_time_us, fmt_whole, format_param, formatter_for


@pytest.mark.parametrize("missing", [None, math.nan, math.inf, "", "n/a", np.float64("nan")])
def test_a_value_that_is_not_a_finite_number_prints_as_a_dash(missing):
    for fmt in (fmt_bytes, fmt_count, fmt_rate, fmt_time_us, fmt_whole):
        assert fmt(missing) == "-"


def test_one_byte_rule_for_tables_sentences_and_axes():
    # below 1 KiB a size is whole bytes (the findings' own formatter said "0.5 KiB" here)
    assert [fmt_bytes(v) for v in (0, 512, 1024, 1536, 3 * 2**20, 2**31)] == [
        "0 B",
        "512 B",
        "1 KiB",
        "1.5 KiB",
        "3 MiB",
        "2 GiB",
    ]
    assert fmt_bytes("2097152") == "2 MiB"  # a CSV cell


def test_time_count_rate_and_parameters():
    assert [fmt_time_us(v) for v in (0, 55, 1234, 3e6)] == ["0", "55 µs", "1.23 ms", "3 s"]
    assert [fmt_count(v) for v in (5, 12345, 1.5e6)] == ["5", "12.3k", "1.5M"]
    assert fmt_rate(69812) == "69,800 req/s" and fmt_rate(12.34, "") == "12.3" and fmt_whole(69812.4) == "69,812"
    assert [format_param(v) for v in (100.0, np.float32(8.0), 2.5, True, "closed", None)] == [
        "100",
        "8",
        "2.5",
        "True",
        "closed",
        "-",
    ]
    assert formatter_for("lat_p99_us") is fmt_time_us and formatter_for("req_per_s") is fmt_count
    assert formatter_for("mb_per_s")(1234.5) == "1,234" and formatter_for("mb_per_s")(12.34) == "12.3"
