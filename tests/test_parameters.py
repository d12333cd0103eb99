"""The parameter table (bench/parameters.py): one entry is a scenario field, a bench load flag, a column, axis words."""

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

from bench.loadgen.spec import LoadSpec
from bench.parameters import PARAMETERS, load_spec_parameters
from bench.runner import RunPlan, _load_spec
from bench.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent

# Added to the table before anything else reads it, as a new entry in bench/parameters.py would be.
ADD_ONE = textwrap.dedent("""
    import argparse, contextlib, io
    import bench.parameters as parameters
    parameters.PARAMETERS += (parameters.Parameter(
        "think_time", "load", "duration", 0.25, "pause between a reply and the next request", sweepable=True,
        column="pause between a reply and the next request", applies=("service", "echo"), spec="",
        axis=("as clients think longer", "think time (s)")),
        parameters.Parameter("linger", "load", "flag", False, "close with SO_LINGER 0", spec=""))

    from bench.loadgen import cli
    from bench.plots.figures import PARAM_TEXT
    from bench.results import PARAMETER_COLUMNS, RUN_COLUMNS, columns_markdown
    from bench.scenario import SWEEP_PATHS, LoadSpec, ScenarioError, parse_scenario

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["echo", "127.0.0.1:7", "--clients", "1", "--duration", "1", "--think-time", "20ms"])
    assert args.think_time == 0.02, args.think_time
    assert parser.parse_args(["echo", "127.0.0.1:7", "--clients", "1", "--duration", "1"]).think_time == 0.25
    assert "--think-time" in parser.format_help()
    assert parser.parse_args(["echo", "127.0.0.1:7", "--clients", "1", "--duration", "1", "--linger"]).linger is True
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            parser.parse_args(["echo", "127.0.0.1:7", "--clients", "1", "--duration", "1", "--think-time", "2 parsecs"])
        except SystemExit as exit:
            assert exit.code == 2
    assert "allowed units: us, ms, s, m" in err.getvalue(), err.getvalue()

    assert LoadSpec.model_fields["think_time"].default == 0.25
    base = "name: t\\nservice: [echo, file]\\nmodels: [threading]\\nload:\\n  message_bytes: 1KiB\\n  file_bytes: 1KiB\\n"
    s = parse_scenario(base + "  think_time: [0, 100ms]\\n")
    assert s.swept == ["service", "think_time"], s.swept
    echo = [p.columns()["think_time"] for p in s.points() if p.service == "echo"]
    assert echo == [0.0, 0.1] and [p.columns()["think_time"] for p in s.points() if p.service == "file"] == [None]
    try:
        parse_scenario(base.replace("[echo, file]", "file") + "  think_time: [0, 1s]\\n", "s.yaml")
        raise AssertionError("a list that changes nothing was accepted")
    except ScenarioError as exc:
        assert "s.yaml:7: load.think_time: is swept but changes nothing: think_time only applies to the echo " \\
               "service" in str(exc), str(exc)

    assert SWEEP_PATHS["think_time"] == ("load", "think_time")
    assert PARAMETER_COLUMNS[-1] == "think_time" and RUN_COLUMNS["think_time"].startswith("pause")
    assert LoadSpec.model_fields["linger"].default is False and "linger" not in RUN_COLUMNS
    assert "| `think_time` |" in columns_markdown()
    assert PARAM_TEXT["think_time"] == ("as clients think longer", "think time (s)")
    print("ok")
""")


def test_a_parameter_added_to_the_table_is_a_flag_a_scenario_field_a_sweep_a_column_and_axis_words() -> None:
    done = subprocess.run([sys.executable, "-c", ADD_ONE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_load_spec_defaults_are_the_table_defaults() -> None:
    fields = {f.name: f for f in dataclasses.fields(LoadSpec)}
    for parameter in load_spec_parameters():
        assert parameter.spec_name in fields, (
            f"LoadSpec has no field {parameter.spec_name!r}: add it with "
            f"_default({parameter.spec_name!r}), or give the parameter spec=''"
        )
        # bench load requires the flag: the generator is always told, so LoadSpec has no default either
        expected = dataclasses.MISSING if parameter.flag_required else parameter.default
        assert fields[parameter.spec_name].default == expected, parameter.name


def test_the_runner_hands_every_scenario_parameter_to_the_generator() -> None:
    scenario = parse_scenario(
        textwrap.dedent("""\
        name: t
        service: echo
        models: [threading]
        load: {clients: 7, message_bytes: 3KiB, requests_per_connection: 5, mode: open, rate: 123,
               connect_timeout: 1500ms, request_timeout: 4s}
        generator: {workers: 2, engine: python, loop: asyncio, checksum_sample: 0.5}
        """)
    )
    point = scenario.points()[0]
    spec = _load_spec(scenario, RunPlan("threading", point, 1), "127.0.0.1", 7, {0}, {})
    assert (spec.clients, spec.message_bytes, spec.requests_per_connection, spec.mode, spec.rate) == (
        7,
        3072,
        5,
        "open",
        123.0,
    )
    assert (spec.connect_timeout_s, spec.request_timeout_s) == (1.5, 4.0)
    assert (spec.workers, spec.engine, spec.loop, spec.checksum_sample) == (2, "python", "asyncio", 0.5)
    assert (spec.cpus, spec.duration_s, spec.files) == ({0}, scenario.duration_s, [])


def test_every_parameter_with_a_list_has_a_column_and_every_kind_is_known() -> None:
    from bench.parameters import KINDS

    for parameter in PARAMETERS:
        assert parameter.kind in KINDS, parameter.name
        assert not parameter.sweepable or parameter.column, parameter.name
        assert not parameter.required or parameter.applies, parameter.name


def test_the_rate_help_states_the_batching_horizon_the_open_loop_uses() -> None:
    from bench.loadgen.schedule import BATCH_HORIZON_S

    (rate,) = [p for p in PARAMETERS if p.name == "rate"]
    assert f"{BATCH_HORIZON_S * 1e6:.0f} us batching horizon" in rate.help
    source = (ROOT / "bench" / "loadgen" / "c" / "loadgen.c").read_text()
    assert f"#define BATCH_HORIZON_S {BATCH_HORIZON_S:.6f}" in source  # the native engine's copy
