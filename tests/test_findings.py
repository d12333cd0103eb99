"""Each findings checker: a results frame that makes it speak, and the same frame changed so it must not.

The frames come from tests/fake_results.py (models with known curves, a
``clients`` sweep to 50 against backlog 5, so sequential leaves connects
waiting and the others see SYN retries). Each case names one checker of
:data:`bench.findings.CHECKERS`, a phrase only that checker writes, and an
edit of ``runs.csv``'s frame that takes away what the sentence rests on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from bench import findings
from bench.findings import compute_findings
from bench.stats import Results, load_results

from fake_results import write_fake_results

MODELS = ("sequential", "threading", "forking", "selectors", "c-reference")


def _write(
    folder: Path,
    *,
    models: tuple[str, ...] = MODELS,
    clients: tuple[int, ...] = (1, 50),
    backlog: int = 5,
    hlogs: bool = False,
) -> Results:
    return load_results(
        write_fake_results(
            folder,
            models=models,
            sweep=("clients", clients),
            repetitions=2,
            backlog=backlog,
            failed=False,
            generator_bound=False,
            unstable=False,
            busy=False,
            hlogs=hlogs,
            timeline=False,
            summary=False,
        ),
        summary=False,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Results:
    # without histogram logs: only the SYN-retry checker reads them, and walking them is its slow part
    return _write(tmp_path_factory.mktemp("findings") / "base")


@pytest.fixture(scope="module")
def said(base: Results) -> list[str]:
    """The findings of the unedited frame."""
    return texts(base)


def texts(results: Results, edit: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> list[str]:
    """The findings of ``results`` with ``edit`` applied to a copy of its runs."""
    runs = edit(results.runs.copy()) if edit else results.runs
    view = Results(
        path=results.path,
        runs=runs.reset_index(drop=True),
        timeline=results.timeline,
        scenario=results.scenario,
        environment=results.environment,
    )
    return [f.text for f in compute_findings(view)]


def only(*models: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda runs: runs[runs["model"].isin(models)]


def without(model: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda runs: runs[runs["model"] != model]


def setting(
    column: str, value: Callable[[pd.DataFrame], object], model: str | None = None
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Set ``column`` to ``value(runs)`` (for ``model``'s rows only, if given)."""

    def edit(runs: pd.DataFrame) -> pd.DataFrame:
        rows = runs["model"] == model if model else slice(None)
        runs.loc[rows, column] = value(runs)[rows] if callable(value) else value
        return runs

    return edit


def _no_failed_connects(runs: pd.DataFrame) -> pd.DataFrame:
    runs["conn_ok"] = runs["clients"]
    runs["conn_timeout"] = 0
    return runs


# checker, phrase only it writes, an edit after which the data no longer supports it
CASES = [
    ("_throughput_ranking", "served the most", only("selectors", "c-reference")),  # one contender left
    ("_ceiling", "the machine's ceiling, served", without("c-reference")),
    ("_sequential", "sequential stayed", setting("req_per_s", lambda r: r["req_per_s"] * r["clients"], "sequential")),
    (
        "_scaling",
        "throughput changed",
        setting("req_per_s", lambda r: r["req_per_s"].where(r["model"] == "selectors")),
    ),  # one curve left
    ("_tail", "one in a hundred waits much longer", setting("lat_p99_us", lambda r: r["lat_p50_us"] * 2)),
    ("_unserved", "completed no request in the window", setting("clients_served", lambda r: r["clients"])),
    ("_memory", "summed RSS says", setting("mem_rss_peak_bytes", lambda r: r["mem_pss_peak_bytes"])),
    (
        "_memory_per_client",
        "in PSS (largest minus smallest point",
        setting("mem_pss_peak_bytes", lambda r: r["mem_pss_peak_bytes"].where(r["model"] == "selectors")),
    ),
    ("_threads", "one thread per connection", setting("threads_peak", 1, "threading")),
    ("_max_children", "ForkingMixIn waits for a child", setting("max_children", 100)),
    ("_connection_failures", "connection attempts timed out", _no_failed_connects),
]


@pytest.mark.parametrize(("checker", "phrase", "edit"), CASES, ids=[c[0] for c in CASES])
def test_checker_speaks_only_when_the_data_supports_it(
    base: Results, said: list[str], checker: str, phrase: str, edit: Callable[[pd.DataFrame], pd.DataFrame]
) -> None:
    assert [t for t in said if phrase in t], f"{checker} said nothing about {phrase!r}"
    after = texts(base, edit)
    assert after, "the edit left no finding at all: it tests nothing"
    assert not [t for t in after if phrase in t], f"{checker} still speaks without its data"


def test_every_checker_has_a_case() -> None:
    # below, each on a frame of its own
    assert {c.__name__ for c in findings.CHECKERS} - {c[0] for c in CASES} == {
        "_syn_retries",
        "_link",
        "_littles_law",
        "_link_counters",
    }


def test_the_findings_name_the_numbers_they_rest_on(said: list[str]) -> None:
    # forking at 50 clients: 41 processes, PSS (7 + 0.875 x 40) MiB = 42 MiB, RSS 7.4 x 41 = 303 MiB
    (memory,) = [t for t in said if "summed RSS says" in t]
    assert memory.startswith("forking held 50 connections in 42 MiB PSS over 41 processes"), memory
    assert "summed RSS says 303 MiB, 7.2x as much" in memory, memory
    (ceiling,) = [t for t in said if "the machine's ceiling" in t]
    assert ceiling.startswith("c-reference, the machine's ceiling"), ceiling
    (ranking,) = [t for t in said if "served the most" in t]
    assert "selectors served the most" in ranking and "sequential the least" in ranking, ranking
    # sequential at 50 clients against backlog 5: one served, six queued, the other 43 connects timed out
    (failures,) = [t for t in said if "sequential: " in t and "timed out" in t]
    assert "43 of 50 connection attempts timed out" in failures, failures


def test_a_saturated_generator_makes_the_ceiling_at_least(base: Results) -> None:
    said = texts(base, setting("generator_bound", True, "c-reference"))
    (ceiling,) = [t for t in said if t.startswith("c-reference served")]
    assert "the load generator was saturated in 2 of its runs" in ceiling, ceiling
    assert "the machine's ceiling is at least that" in ceiling


def test_syn_retries_are_said_only_where_connects_waited_a_second(tmp_path: Path) -> None:
    # 50 clients against backlog 5: per run 10 of threading's connects waited for the 1 s retry and 2
    # for the 3 s one; none of sequential's (it times them out); backlog 100 holds them all.
    phrase = "SYNs dropped by a full listen queue"
    models = ("sequential", "threading")
    full = _write(tmp_path / "full", models=models, clients=(50,), hlogs=True)
    (said,) = [t for t in texts(full) if phrase in t]
    assert "24 of 100 connects of threading (24%, all repetitions) took 1 s or more, the slowest 3 s" in said, said
    roomy = _write(tmp_path / "roomy", models=models, clients=(50,), backlog=100, hlogs=True)
    after = texts(roomy)
    assert after and not [t for t in after if phrase in t]


def _over_a_link(runs: pd.DataFrame) -> pd.DataFrame:
    """The base frame as if measured between two hosts: 1000 requests/s open loop at 1 and 50 ms added.

    ``clients`` 1 and 50 become the round trips (the clients fixed at 64, so the round trip is the sweep),
    each request taking the round trip plus 0.2 ms, over a 100 Mbit/s link that queued but never dropped.
    """
    runs["net_rtt_ms"] = runs["clients"].astype(float)
    runs["clients"] = 64
    runs["net_hosts"] = "namespaces"
    runs["mode"] = "open"
    runs["rate"] = 1000.0
    runs["req_per_s"] = 1000.0
    runs["lat_mean_us"] = runs["net_rtt_ms"] * 1e3 + 200
    runs["threads_peak"] = runs["model"].map({"threading": 65}).fillna(1)
    runs["net_base_rtt_us"] = runs["net_rtt_ms"] * 1e3 + 150
    runs["net_stage_cpu_s"] = 0.5
    runs["net_stage_frames"] = 12_500
    runs["net_rate_mbit"] = 100.0
    runs["net_tbf_overlimits"] = 900
    runs["net_tbf_drops"] = 0
    runs["net_retrans_segs"] = 0
    return runs


def test_the_link_finding_gives_the_measured_round_trip_and_the_stage_s_cpu(base: Results) -> None:
    (said,) = [t for t in texts(base, _over_a_link) if "Round trip between the client and server hosts" in t]
    assert "1.15 ms at 1 ms added (150 µs over the 1 ms added)" in said, said
    assert "40 µs of CPU per frame" in said, said  # 0.5 s / 12,500 frames
    loopback = texts(base, lambda r: _over_a_link(r).assign(net_hosts="loopback"))
    assert loopback and not [t for t in loopback if "Round trip between" in t]


def test_littles_law_is_said_for_an_open_loop_round_trip_sweep_only(base: Results) -> None:
    (said,) = [t for t in texts(base, _over_a_link) if t.startswith("Little's law")]
    assert "were 1.2, 50.2 at 1, 50 ms added round trip; rate x RTT predicts 1, 50" in said, said
    assert "threading held 65 threads at every round trip" in said, said
    closed = texts(base, lambda r: _over_a_link(r).assign(mode="closed"))
    assert closed and not [t for t in closed if t.startswith("Little's law")]


def test_a_rate_limited_link_that_queued_says_so_and_one_without_a_rate_says_nothing(base: Results) -> None:
    (said,) = [t for t in texts(base, _over_a_link) if "the rate limit held packets back" in t]
    assert "On the 100 Mbit/s link the rate limit held packets back 900 times per run (median) and dropped 0" in said
    assert "the server retransmitted 0 segments" in said and "a slow reader" in said, said
    unlimited = texts(base, lambda r: _over_a_link(r).assign(net_tbf_overlimits=float("nan")))
    assert unlimited and not [t for t in unlimited if "the rate limit held packets back" in t]
