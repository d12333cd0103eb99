"""Scenario files: units, validation errors (file, line, field path, allowed values), sweeps, overrides."""

import argparse
import dataclasses
import sys
import textwrap
from pathlib import Path

import pytest

from bench.parameters import ENGINES
from bench.results import PARAMETER_COLUMNS
from bench.scenario import (
    Point,
    Scenario,
    ScenarioError,
    ServerSpec,
    add_validate_arguments,
    load_scenario,
    parse_scenario,
    validate_command,
)
from bench.units import UnitError, format_duration, format_size, parse_duration, parse_size
from servers.config import POOL_OPTIONS, ServerOptions
from servers.registry import MODELS, TEXTBOOK_MODELS

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

MINIMAL = """\
name: t
service: echo
models: [threading]
load:
  message_bytes: 1KiB
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str, overrides=()) -> ScenarioError:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, overrides)
    return info.value


POOLS = MINIMAL.replace("[threading]", "[threading, threadpool, prefork]")


def test_server_threads_and_workers_sweep_and_reach_only_the_models_with_the_pool(tmp_path):
    s = load_scenario(write(tmp_path, POOLS + "server:\n  threads: [1, 4]\n  workers: 2\n"))
    assert s.swept == ["threads"]
    assert [(p.server.threads, p.server.workers, p.columns()["threads"]) for p in s.points()] == [(1, 2, 1), (4, 2, 4)]
    point = s.points()[1]
    assert point.label() == "threads=4"
    assert point.server.for_model("threadpool").to_argv() == ["--threads", "4"]
    assert point.server.for_model("prefork").to_argv() == ["--workers", "2"]
    assert point.server.for_model("threading").to_argv() == []
    assert load_scenario(write(tmp_path, POOLS)).points()[0].columns()["workers"] is None  # the models' default


@pytest.mark.parametrize("value", ["0", "-2", "[4, 0]"])
def test_a_pool_of_no_size_names_the_field_and_the_models(tmp_path, value):
    message = str(error_of(tmp_path, POOLS + f"server:\n  workers: {value}\n"))
    assert "server.workers" in message and "prefork, reuseport" in message and "at least 1" in message


def test_a_pool_size_for_models_without_a_pool_is_refused(tmp_path):
    message = str(error_of(tmp_path, MINIMAL + "server:\n  threads: 8\n"))
    assert "server.threads" in message and "threadpool only" in message and "(threading)" in message


def test_a_model_whose_extra_is_missing_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gevent", None)  # as if the extra were not installed
    message = str(error_of(tmp_path, MINIMAL.replace("[threading]", "[threading, gevent]")))
    assert "models[1]" in message and "optional extra 'gevent'" in message and "pip install -e '.[gevent]'" in message


# -- units -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (512, 512),
        ("512", 512),
        ("0", 0),
        ("1B", 1),
        ("1KiB", 1024),
        ("1.5KiB", 1536),
        ("256MiB", 256 * 2**20),
        ("2 GiB", 2 * 2**30),
        ("1KB", 1000),
        ("10MB", 10_000_000),
        ("1GB", 10**9),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [(2, 2.0), (0.5, 0.5), ("2", 2.0), ("2s", 2.0), ("100ms", 0.1), ("250us", 0.00025), ("1m", 60.0), ("1.5 s", 1.5)],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


def test_size_rejects_with_allowed_units():
    with pytest.raises(UnitError) as info:
        parse_size("12Mb")
    message = str(info.value)
    assert "'Mb'" in message
    for unit in ("B", "KiB", "MiB", "GiB", "KB", "MB", "GB"):
        assert unit in message


@pytest.mark.parametrize("bad", ["abc", "-1KiB", "1.3B", True, [1], "MiB", float("inf")])
def test_size_rejects_bad_values(bad):
    with pytest.raises(UnitError):
        parse_size(bad)


def test_duration_rejects_with_allowed_units():
    with pytest.raises(UnitError) as info:
        parse_duration("3 sec")
    assert "'sec'" in str(info.value) and "us, ms, s, m" in str(info.value)
    for bad in ("-1s", "fast", False, None):
        with pytest.raises(UnitError):
            parse_duration(bad)


@pytest.mark.parametrize("seconds", [0.0, 0.1, 0.5, 1.1, 2.0, 10.0, 0.00025, 0.3, 123.456789, 1e-9])
def test_duration_format_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("nbytes", [0, 1, 1000, 1024, 1536, 2**20, 256 * 2**20, 3 * 2**30])
def test_size_format_round_trips(nbytes):
    assert parse_size(format_size(nbytes)) == nbytes
    assert format_size(2**20) == "1MiB"


# -- error kinds -----------------------------------------------------------


def test_unknown_key_names_file_line_path_and_allowed_fields(tmp_path):
    err = error_of(tmp_path, MINIMAL + "  clientz: 5\n")
    text = str(err)
    assert f"{tmp_path / 's.yaml'}:6: load.clientz:" in text
    assert "did you mean clients?" in text
    assert "allowed in load: clients, message_bytes, file_bytes" in text


def test_unknown_top_level_key(tmp_path):
    err = error_of(tmp_path, "durration: 2s\n" + MINIMAL)
    assert ":1: durration: unknown field" in str(err)
    assert "did you mean duration?" in str(err)


def test_wrong_type_in_list_points_at_the_item(tmp_path):
    err = error_of(tmp_path, MINIMAL + "  clients: [1, 10, ten]\n")
    assert len(err.issues) == 1
    issue = err.issues[0]
    assert (issue.line, issue.path) == (6, "load.clients[2]")
    assert "whole number" in issue.message and "'ten'" in issue.message


def test_bool_is_not_a_number(tmp_path):
    err = error_of(tmp_path, MINIMAL + "repetitions: yes\n")
    assert err.issues[0].path == "repetitions"


def test_list_for_a_field_that_cannot_sweep(tmp_path):
    err = error_of(tmp_path, MINIMAL + "duration: [1s, 2s]\n")
    assert "duration: takes a single value" in str(err)
    assert "load.clients" in str(err)  # names the fields that do sweep


def test_bad_unit_lists_allowed_units(tmp_path):
    err = error_of(tmp_path, MINIMAL.replace("1KiB", "1 Kib"))
    text = str(err)
    assert ":5: load.message_bytes:" in text
    assert "unknown size unit 'Kib'" in text and "KiB, MiB, GiB" in text


def test_bad_model_lists_valid_models(tmp_path):
    err = error_of(tmp_path, MINIMAL.replace("[threading]", "[threading, forkng]"))
    issue = err.issues[0]
    assert (issue.line, issue.path) == (3, "models[1]")
    assert "'forkng'" in issue.message and "did you mean forking?" in issue.message
    assert ", ".join(MODELS) in issue.message


def test_bad_literal_lists_allowed_values(tmp_path):
    err = error_of(tmp_path, MINIMAL + "placement: everywhere\n")
    assert "'split', 'shared' or 'none'" in str(err)


def test_generator_engine_is_one_of_the_load_engines(tmp_path):
    assert load_scenario(write(tmp_path, MINIMAL + "generator:\n  engine: python\n")).generator.engine == "python"
    err = error_of(tmp_path, MINIMAL + "generator:\n  engine: rust\n")
    names = [repr(name) for name in ENGINES]
    assert f"{', '.join(names[:-1])} or {names[-1]}" in str(err) and "generator.engine" in str(err)


def test_open_loop_requires_rate(tmp_path):
    err = error_of(tmp_path, MINIMAL + "  mode: open\n")
    assert err.issues[0].path == "load.rate"
    assert "required when mode is open" in err.issues[0].message
    assert err.issues[0].line == 4  # the load: section, since rate is absent


def test_rate_without_open_loop_is_rejected(tmp_path):
    err = error_of(tmp_path, MINIMAL + "  rate: 1000\n")
    assert "only used when mode is open" in str(err)


def test_open_loop_with_rate_is_valid(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL + "  mode: open\n  rate: [1000, 2000]\n"))
    assert [p.load.rate for p in s.points()] == [1000.0, 2000.0]
    assert s.swept == ["rate"]


def test_service_needs_its_size(tmp_path):
    err = error_of(tmp_path, MINIMAL.replace("  message_bytes: 1KiB\n", "  clients: 2\n"))
    assert "load.message_bytes: required for the echo service" in str(err)
    err = error_of(tmp_path, MINIMAL.replace("service: echo", "service: file"))
    assert "load.file_bytes: required for the file and http services" in str(err)


def test_c_reference_is_echo_only(tmp_path):
    text = "name: t\nservice: file\nmodels: [asyncio, c-reference]\nload: {file_bytes: 1MiB}\n"
    err = error_of(tmp_path, text)
    assert (err.issues[0].path, err.issues[0].line) == ("models[1]", 3)
    assert "echo only" in err.issues[0].message


def test_yaml_syntax_error_has_line(tmp_path):
    err = error_of(tmp_path, "name: t\nservice: echo\nmodels: [threading\nload: {}\n")
    assert len(err.issues) == 1
    assert err.issues[0].line == 4
    assert "YAML syntax error" in str(err) and "started on line 3" in str(err)


def test_duplicate_key_is_reported(tmp_path):
    err = error_of(tmp_path, MINIMAL + "  message_bytes: 2KiB\n")
    assert ":6: load.message_bytes: given twice (also on line 5)" in str(err)


def test_several_errors_are_all_listed_in_line_order(tmp_path):
    err = error_of(
        tmp_path,
        """\
        name: bad name
        service: echo
        models: [threading, nope]
        load:
          clients: 0
          message_bytes: 1 lb
        warmup: soon
        """,
    )
    assert [i.line for i in err.issues] == [1, 3, 5, 6, 7]
    assert str(err).startswith(f"{tmp_path / 's.yaml'}: 5 problems:")


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(tmp_path / "absent.yaml")
    with pytest.raises(ScenarioError, match="empty"):
        load_scenario(write(tmp_path, ""))
    with pytest.raises(ScenarioError, match="top level"):
        load_scenario(write(tmp_path, "- a\n- b\n"))


def test_duplicate_sweep_value_and_inert_sweep(tmp_path):
    err = error_of(tmp_path, MINIMAL + "  clients: [1, 10, 1]\n")
    assert "load.clients: 1 is listed twice" in str(err)
    err = error_of(tmp_path, MINIMAL + "server: {sendfile: [true, false]}\n")
    assert "server.sendfile: is swept but changes nothing" in str(err)


# -- overrides ---------------------------------------------------------------


def test_overrides_replace_fields_before_validation(tmp_path):
    path = write(tmp_path, MINIMAL)
    s = load_scenario(
        path, ["load.clients=[1,10]", "duration=2s", "models=[threading, asyncio]", "generator.workers=2"]
    )
    assert [p.load.clients for p in s.points()] == [1, 10]
    assert s.duration_s == 2.0
    assert s.models == ["threading", "asyncio"]
    assert s.generator.workers == 2
    # the last --set of a field wins
    assert load_scenario(path, ["duration=1s", "duration=3s"]).duration_s == 3.0


def test_override_errors_name_the_set_argument(tmp_path):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, ["load.clients=[1,x]", "load.bogus=1"])
    text = str(info.value)
    assert "--set load.clients=[1,x]: load.clients[1]: expected a whole number" in text
    assert "--set load.bogus=1: load.bogus: unknown field 'bogus'" in text


@pytest.mark.parametrize("bad", ["load.clients", "=3", "load..x=1", "duration.x=1", "models[5]=asyncio", "x=[1"])
def test_malformed_override(tmp_path, bad):
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, MINIMAL), [bad])
    assert str(info.value).startswith(f"--set {bad}:")


# -- sweeps and points -------------------------------------------------------


def test_sweep_product_order_and_params(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL + "  clients: [1, 10]\nserver:\n  backlog: [1, 5, 128]\n"))
    assert s.swept == ["clients", "backlog"]  # PARAMETER_COLUMNS order, not file order
    got = [(p.index, p.params) for p in s.points()]
    assert got == [
        (0, {"clients": 1, "backlog": 1}),
        (1, {"clients": 1, "backlog": 5}),
        (2, {"clients": 1, "backlog": 128}),
        (3, {"clients": 10, "backlog": 1}),
        (4, {"clients": 10, "backlog": 5}),
        (5, {"clients": 10, "backlog": 128}),
    ]
    point = s.points()[4]
    assert point.load.clients == 10 and point.server.backlog == 5
    assert point.label() == "clients=10 backlog=5"
    assert s.run_count() == 6 * 1 * 3


def test_unswept_scenario_has_one_point_with_no_params(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL))
    (point,) = s.points()
    assert point.params == {} and s.swept == [] and point.label() == "-"


def test_service_sweep_skips_inapplicable_params_and_echo_only_models(tmp_path):
    text = """\
    name: both
    service: [echo, file]
    models: [threading, c-reference]
    server: {sendfile: [true, false]}
    load: {message_bytes: 1KiB, file_bytes: [1MiB, 2MiB]}
    repetitions: 2
    """
    s = load_scenario(write(tmp_path, text))
    points = s.points()
    # echo: one point (file size and sendfile do not apply); file: 2 sizes x 2 sendfile
    assert [p.service for p in points] == ["echo", "file", "file", "file", "file"]
    assert s.swept == ["service", "file_bytes", "sendfile"]
    assert points[0].params == {"service": "echo", "file_bytes": None, "sendfile": None}
    assert points[0].models == ("threading", "c-reference")
    assert all(p.models == ("threading",) for p in points[1:])
    assert points[0].load.file_bytes is None and points[0].load.message_bytes == 1024
    assert points[1].load.message_bytes is None and points[1].load.file_bytes == 2**20
    assert s.file_sizes() == [2**20, 2 * 2**20]
    assert s.run_count() == (2 + 4 * 1) * 2


def test_columns_cover_every_parameter_column(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL + "  clients: [1, 2]\n"))
    columns = s.points()[1].columns()
    assert list(columns) == ["service", *PARAMETER_COLUMNS]
    assert columns["clients"] == 2 and columns["message_bytes"] == 1024
    assert columns["backlog"] == ServerOptions().backlog
    assert columns["file_bytes"] is None and columns["rate"] is None and columns["sendfile"] is None


def test_point_is_concrete_and_server_options_are_completable(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL + "  request_timeout: 1500ms\nserver: {cpu_work_us: 200}\n"))
    (point,) = s.points()
    assert isinstance(point, Point)
    assert point.load.request_timeout_s == 1.5 and point.load.connect_timeout_s == 3.0
    full = dataclasses.replace(point.server, port=1234, root=Path("/tmp"))
    assert "--cpu-work-us" in full.to_argv() and full.port == 1234


def test_server_timeouts_reach_the_server_command(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL + "server: {idle_timeout: 0, request_timeout: 500ms, send_timeout: 2}\n"))
    (point,) = s.points()
    assert (point.server.idle_timeout, point.server.request_timeout, point.server.send_timeout) == (0, 0.5, 2)
    argv = point.server.to_argv()
    assert argv[argv.index("--idle-timeout") + 1] == "0.0" and argv[argv.index("--request-timeout") + 1] == "0.5"
    err = error_of(tmp_path, MINIMAL + "server: {idle_timeout: -1s}\n")
    assert "server.idle_timeout" in str(err)


# -- defaults and round trip -----------------------------------------------


def test_server_section_mirrors_server_options():
    defaults = ServerOptions()
    for name, field in ServerSpec.model_fields.items():
        assert name in {f.name for f in dataclasses.fields(ServerOptions)}
        # a pool size left out (None) is ServerOptions' 0: each model's own default
        assert field.default == (
            None if name in POOL_OPTIONS and getattr(defaults, name) == 0 else getattr(defaults, name)
        )
        assert field.description


def test_defaults_filled_and_round_trip(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL))
    assert s.server.backlog == 5 and s.server.max_children == 40  # the stdlib's defaults
    assert s.monitor.interval_s == 0.1 and s.monitor.idle_threshold_pct == 5.0 and s.monitor.idle_wait_s == 20.0
    assert (s.duration_s, s.warmup_s, s.repetitions, s.placement) == (10.0, 2.0, 3, "split")
    text = s.to_yaml()
    for line in (
        "  backlog: 5",
        "  max_children: 40",
        "  interval: 100ms",
        "  connect_timeout: 3s",
        "placement: split",
    ):
        assert line in text.splitlines()
    again = parse_scenario(text, "as-run.yaml")
    assert again == s
    assert again.to_yaml() == text


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenario_validates_and_round_trips(path):
    s = load_scenario(path)
    assert s.name == path.stem
    assert len(s.description.split()) > 40  # teaching text, not a placeholder
    assert s.points()
    assert s.estimate_s() <= 300  # a few minutes at most
    assert parse_scenario(s.to_yaml()) == s


def test_shipped_scenarios_are_all_there():
    names = {p.stem for p in SCENARIOS.glob("*.yaml")}
    assert {"quick", "many-clients", "large-files", "small-backlog", "cpu-bound", "connection-churn"} <= names


def test_quick_covers_every_model_and_both_services_in_about_a_minute():
    s = load_scenario(SCENARIOS / "quick.yaml")
    assert set(s.models) == set(TEXTBOOK_MODELS) | {"c-reference"}
    assert {p.service for p in s.points()} == {"echo", "file"}
    for point in s.points():
        expected = set(TEXTBOOK_MODELS) | ({"c-reference"} if point.service == "echo" else set())
        assert set(point.models) == expected
    assert s.repetitions >= 2
    assert 45 <= s.estimate_s() <= 100


def test_scenario_is_frozen_so_points_cannot_go_stale(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL))
    with pytest.raises(ValueError):
        s.duration = 1.0
    with pytest.raises(ValueError):
        s.load.clients = 99
    assert s.points()[0].load.clients == 10


def test_direct_construction_still_checks_cross_fields():
    with pytest.raises(ValueError, match="message_bytes"):
        Scenario(name="x", service="echo", models=["threading"])


# -- bench validate ------------------------------------------------------------


def run_validate(argv):
    parser = argparse.ArgumentParser(prog="bench validate")
    add_validate_arguments(parser)
    return validate_command(parser.parse_args(argv))


def test_validate_command_ok_and_error(tmp_path, capsys):
    good = write(tmp_path, MINIMAL + "  clients: [1, 10]\n", "good.yaml")
    bad = write(tmp_path, MINIMAL + "  clients: [1, ten]\n", "bad.yaml")
    assert run_validate([str(good)]) == 0
    out = capsys.readouterr().out
    assert f"ok: {good}: 1 model x 2 points x 3 repetitions = 6 runs, about" in out
    assert run_validate([str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "ok:" in captured.out
    assert f"error: {bad}:6: load.clients[1]" in captured.err
    assert "Traceback" not in captured.err


def test_validate_command_applies_overrides(tmp_path, capsys):
    good = write(tmp_path, MINIMAL)
    assert run_validate([str(good), "--set", "load.clients=[1,2,3]", "--set", "repetitions=1"]) == 0
    assert "1 model x 3 points x 1 repetition = 3 runs" in capsys.readouterr().out
    assert run_validate([str(good), "--set", "models=[nope]"]) == 2
    assert "--set models=[nope]: models[0]: unknown model" in capsys.readouterr().err


def test_cpu_work_iterations_goes_with_one_cpu_work_value(tmp_path):
    for server in (
        "server:\n  cpu_work_iterations: 500\n",
        "server:\n  cpu_work_us: [100, 200]\n  cpu_work_iterations: 500\n",
    ):
        err = error_of(tmp_path, MINIMAL + server)
        assert err.issues[0].path == "server.cpu_work_iterations" and "single cpu_work_us" in err.issues[0].message
    s = load_scenario(write(tmp_path, MINIMAL + "server:\n  cpu_work_us: 200\n  cpu_work_iterations: 500\n"))
    assert s.points()[0].server.cpu_work_iterations == 500


@pytest.mark.parametrize(
    "text, words",
    [
        ("1e31s", "exponent is out of range"),
        ("1e-31s", "exponent is out of range"),
        ("1e30s", "too long"),
        ("1" * 31 + "s", "31 digits"),
        ("1" * 65, "65 characters long"),
        ("1e400s", "exponent is out of range"),
    ],
)
def test_parse_duration_is_bounded_before_converting(text, words):
    with pytest.raises(UnitError, match=words):
        parse_duration(text)


@pytest.mark.parametrize("value, words", [("8EiB", "unknown size unit"), (2**63, "too large"), ("9.3e18", "too large")])
def test_parse_size_is_bounded(value, words):
    with pytest.raises(UnitError, match=words):
        parse_size(value)
    assert parse_size(2**63 - 1) == 2**63 - 1


def test_server_loop_with_no_event_loop_model_is_refused(tmp_path):
    message = str(error_of(tmp_path, MINIMAL + "server:\n  loop: uvloop\n"))
    assert "server.loop" in message and "asyncio, asyncio-protocol, reuseport only" in message
    assert "(threading)" in message and "remove server.loop" in message


def test_server_loop_names_the_models_that_run_without_it(tmp_path):
    text = MINIMAL.replace("[threading]", "[threading, forking, asyncio-protocol]") + "server:\n  loop: uvloop\n"
    s = load_scenario(write(tmp_path, text))
    assert s.loop_note() == (
        "server.loop uvloop applies to asyncio-protocol only: threading, forking have no event loop and run without it"
    )
    assert load_scenario(write(tmp_path, MINIMAL)).loop_note() == ""
