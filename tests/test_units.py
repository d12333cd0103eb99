"""bench/units.py: one rule for sizes and durations, the same in a scenario file and on bench load's command line."""

import argparse
import textwrap

import pytest

from bench.loadgen import cli
from bench.scenario import ScenarioError, parse_scenario
from bench.units import (
    MAX_DURATION_S,
    MAX_SIZE,
    UnitError,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("0", 0),
        ("1B", 1),
        ("1KiB", 1024),
        ("1.5 MiB", 1536 * 1024),
        ("2GiB", 2 << 30),
        ("1KB", 1000),
        ("10MB", 10_000_000),
        ("1GB", 10**9),
        ("1e3", 1000),
        ("0.5KiB", 512),
    ],
)
def test_sizes_binary_and_decimal(text: object, nbytes: int) -> None:
    assert parse_size(text) == nbytes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (2, 2.0),
        ("2", 2.0),
        ("0.5", 0.5),
        ("2s", 2.0),
        ("100ms", 0.1),
        ("250us", 0.00025),
        ("1m", 60.0),
        ("1.5m", 90.0),
        ("1100ms", 1.1),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("1m", "did you mean MiB or MB?"),
        ("1mb", "did you mean MB?"),
        ("1k", "did you mean KiB or KB?"),
        ("1MIB", "did you mean MiB?"),
        ("1 parsec", ""),
    ],
)
def test_a_size_unit_is_exact_and_the_error_names_every_unit(text: str, hint: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_size(text)
    assert "allowed units: B, KiB, MiB, GiB, KB, MB, GB" in str(err.value)
    assert hint in str(err.value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("-1KiB", "cannot be negative"),
        ("1.5B", "not a whole number of bytes"),
        ("KiB", "not a size"),
        (True, "expected a size"),
        (float("inf"), "finite"),
        ("9" * 65, "characters long"),
        (f"{MAX_SIZE + 1}", "too large"),
        ("1e31", "exponent is out of range"),
        ([1], "got list"),
    ],
)
def test_bad_sizes(value: object, words: str) -> None:
    with pytest.raises(UnitError, match=words):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("-1s", "cannot be negative"),
        ("1KiB", "unknown duration unit 'KiB'.*allowed units: us, ms, s, m"),
        ("1S", "did you mean s"),
        (f"{MAX_DURATION_S + 1}s", "too long"),
        ("soon", "not a duration"),
    ],
)
def test_bad_durations(value: object, words: str) -> None:
    with pytest.raises(UnitError, match=words):
        parse_duration(value)


@pytest.mark.parametrize("nbytes", [0, 1, 1000, 1024, 1536, 1 << 20, 3 << 30, 10**9])
def test_sizes_format_and_parse_back(nbytes: int) -> None:
    assert parse_size(format_size(nbytes)) == nbytes


@pytest.mark.parametrize("seconds", [0.0, 0.1, 1.1, 2.0, 60.0, 0.000_25, 1e-7, 1 / 3])
def test_durations_format_and_parse_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def _load_flags(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench load")
    cli.add_arguments(parser)
    return parser.parse_args(["echo", "127.0.0.1:7", "--clients", "1", "--duration", "1", *flags])


def _scenario_load(size: str, duration: str) -> tuple[int, float]:
    scenario = parse_scenario(
        textwrap.dedent(f"""\
        name: t
        service: echo
        models: [threading]
        load: {{message_bytes: "{size}", connect_timeout: "{duration}"}}
        """)
    )
    load = scenario.points()[0].load
    return load.message_bytes, load.connect_timeout_s


@pytest.mark.parametrize(
    ("size", "duration"),
    [
        ("1024", "2"),
        ("1KiB", "500ms"),
        ("1MB", "1m"),
        ("1.5MiB", "250us"),
        ("3GB", "1.5s"),
    ],
)
def test_bench_load_reads_a_value_as_a_scenario_does(size: str, duration: str) -> None:
    args = _load_flags("--message-bytes", size, "--connect-timeout", duration)
    assert (args.message_bytes, args.connect_timeout) == _scenario_load(size, duration)


@pytest.mark.parametrize(
    ("flag", "value", "units"),
    [
        ("--message-bytes", "1m", "B, KiB, MiB, GiB, KB, MB, GB"),  # was 1,000,000 bytes in bench load
        ("--duration", "1KiB", "us, ms, s, m"),
    ],
)
def test_bench_load_refuses_what_a_scenario_refuses(
    flag: str, value: str, units: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        _load_flags(flag, value)
    assert exit.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err
    with pytest.raises(ScenarioError, match=f"allowed units: {units}"):
        _scenario_load(value, "1s") if flag == "--message-bytes" else _scenario_load("1KiB", value)


def test_one_minute_is_sixty_seconds_on_the_command_line_too() -> None:
    # bench load refused 1m before its flags used bench.units.
    assert _load_flags("--duration", "1m", "--warmup", "1500ms").duration == 60.0
