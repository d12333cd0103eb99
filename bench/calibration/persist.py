"""Keeping a calibration: saved under ``results/calibration``, copied into a results folder, read back.

``bench calibrate`` saves ``<UTC time>.json`` and ``latest.json``;
``bench run`` copies the latest into each results folder it starts
(``calibration.json``), so a report compares runs with the ceiling measured
on the machine they ran on. Reading checks the format version.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from bench.results import CALIBRATION_FILE as RESULTS_COPY
from bench.results import ResultsFileError, fresh_path, read_calibration, utc_stamp, write_text_atomically
from bench.results import load_stored_calibration as load_stored  # noqa: F401 - the reader of what store_with_results writes

#: Where ``bench calibrate`` saves, relative to the current folder (like results/ of bench run).
DEFAULT_DIR = Path("results") / "calibration"


def save(cal: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write ``<UTC timestamp>.json`` and ``latest.json`` in ``out_dir``; return the first.

    Two calibrations in one second keep both (``<stamp>-2.json``).
    """
    folder = Path(out_dir) if out_dir is not None else DEFAULT_DIR
    path = fresh_path(folder, utc_stamp(), ".json", folder=False)
    text = json.dumps(cal, indent=2) + "\n"
    write_text_atomically(path, text)
    write_text_atomically(folder / "latest.json", text)
    return path


def load_latest(out_dir: Path | None = None) -> dict[str, Any] | None:
    """The last saved calibration, or None when there is none.

    Error handling: a damaged ``latest.json`` or one of another format
    version raises :class:`bench.results.ResultsFileError` naming it.
    """
    return read_calibration((Path(out_dir) if out_dir is not None else DEFAULT_DIR) / "latest.json")


def store_with_results(results_dir: Path, source_dir: Path | None = None) -> Path | None:
    """Copy the latest calibration into ``results_dir`` (``calibration.json``); None when there is none.

    The report compares runs with the ceiling measured on the machine they
    ran on: copied at run time, the ceiling travels with the results instead
    of being whatever ``latest.json`` the report's current folder holds later.
    """
    try:
        cal = load_latest(source_dir)
    except ResultsFileError:
        return None  # damaged, or of another version: no ceiling to give until bench calibrate runs again
    if cal is None:
        return None
    source = (Path(source_dir) if source_dir is not None else DEFAULT_DIR) / "latest.json"
    cal = {
        **cal,
        "copied_from": str(source.resolve()),
        "copied_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    path = Path(results_dir) / RESULTS_COPY
    write_text_atomically(path, json.dumps(cal, indent=2) + "\n")
    return path


def echo_ceiling(cal: dict[str, Any] | None, clients: int, placement: str = "split") -> dict[str, Any] | None:
    """The C client's echo figures at ``clients`` connections and ``placement``, or None if not measured."""
    for row in (cal or {}).get("echo", []):
        if row.get("clients") == clients and row.get("placement") == placement and "error" not in row:
            return row
    return None
