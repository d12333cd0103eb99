"""The results folder survives a full disk: what is on disk stays whole and readable.

``bench.results`` promises that a finished run is on disk before the next
starts, that an append which meets ENOSPC is truncated back (the rows already
there stay readable) and that a file replaced through a temporary file keeps
its previous content when the disk fills, with no temporary file left behind.
Each test here fills a real, small filesystem (a 16 MiB tmpfs, see
``small_disk`` in conftest.py) and then writes through the real code path.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest

from bench.results import DiskFull, ResultsWriter, atomic_file

from conftest import fill_disk


def _row(run_id: str) -> dict[str, object]:
    return {
        "run_id": run_id,
        "model": "selectors",
        "service": "echo",
        "point": 0,
        "repetition": 1,
        "status": "ok",
        "clients": 10,
        "requests": 1234,
        "req_per_s": 617.0,
    }


def _timeline(samples: int) -> list[dict[str, object]]:
    # Enough rows to need fresh blocks on disk: a write that fits in the file's last
    # partly used page would succeed on a full tmpfs and prove nothing.
    return [{"t_s": i * 0.1, "req_per_s": 1000.0 + i, "mem_rss_bytes": 10_000_000 + i} for i in range(samples)]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files of the atomic writers (``.<name>.*.tmp``) still in ``folder``."""
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def test_a_full_disk_during_a_run_keeps_the_finished_runs_readable(small_disk: Path) -> None:
    folder = small_disk / "results"
    folder.mkdir()
    writer = ResultsWriter(folder, n_cpus=2)
    writer.add_run(_row("selectors-p0-r1"), _timeline(20))
    runs_before = (folder / "runs.csv").read_bytes()
    timeline_before = (folder / "timeline.csv").read_bytes()

    fill_disk(small_disk)
    with pytest.raises(DiskFull) as caught:
        writer.add_run(_row("selectors-p0-r2"), _timeline(5000))
    assert caught.value.errno == errno.ENOSPC
    assert "timeline.csv" in str(caught.value)  # the file that could not be written is named

    # Truncated back byte for byte: no half row, and the run that failed has no runs.csv row.
    assert (folder / "timeline.csv").read_bytes() == timeline_before
    assert (folder / "runs.csv").read_bytes() == runs_before
    assert pd.read_csv(folder / "runs.csv")["run_id"].tolist() == ["selectors-p0-r1"]
    assert writer.rows_written == 1
    assert _leftovers(folder) == []

    # Once there is room again the same folder takes the next run.
    (small_disk / "filler").unlink()
    writer.add_run(_row("selectors-p0-r3"), _timeline(5000))
    assert pd.read_csv(folder / "runs.csv")["run_id"].tolist() == ["selectors-p0-r1", "selectors-p0-r3"]
    assert len(pd.read_csv(folder / "timeline.csv")) == 20 + 5000


def test_a_full_disk_while_replacing_a_file_keeps_its_previous_content(small_disk: Path) -> None:
    folder = small_disk / "results"
    folder.mkdir()
    writer = ResultsWriter(folder, n_cpus=2)
    writer.write_json("summary.json", {"points": [1, 2, 3]})
    before = (folder / "summary.json").read_bytes()

    fill_disk(small_disk)
    with pytest.raises(DiskFull, match="summary.json"):
        writer.write_json("summary.json", {"points": list(range(200_000))})
    assert (folder / "summary.json").read_bytes() == before
    assert json.loads(before)["points"] == [1, 2, 3]
    assert _leftovers(folder) == []


def test_a_file_the_full_disk_stopped_is_never_created(small_disk: Path) -> None:
    fill_disk(small_disk)
    target = small_disk / "figure.svg"
    with pytest.raises(DiskFull), atomic_file(target, "wb") as fh:
        fh.write(b"<svg>" + b" " * (1 << 20))
    assert not target.exists()
    assert _leftovers(small_disk) == []
