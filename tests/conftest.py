"""Shared pytest configuration: kept minimal on purpose.

Fixtures that only one test module needs live in that module.
"""

from __future__ import annotations

import os


def pytest_report_header() -> str:
    # Timing-sensitive failures are easier to read knowing how many CPUs the run had.
    return f"sockbench: {len(os.sched_getaffinity(0))} CPU(s) available to the tests"
