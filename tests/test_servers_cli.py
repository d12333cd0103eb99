"""``python -m servers``: options generated from ServerOptions, clear errors for bad input."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from servers import cli, registry
from servers.config import ServerOptions
from servers.launch import ServerStartError, run_server, server_command

ROUND_TRIP_CASES = [
    ServerOptions(),
    ServerOptions(
        host="::1",
        port=40123,
        backlog=1,
        root=Path("/srv/files"),
        cpu_work_us=250,
        sendfile=False,
        max_children=2,
        loop="uvloop",
    ),
    ServerOptions(backlog=0, sendfile=True, root=Path("relative/dir")),
]


@pytest.mark.parametrize("options", ROUND_TRIP_CASES)
def test_to_argv_round_trips_through_the_parser(options: ServerOptions) -> None:
    namespace = cli.build_parser().parse_args(["asyncio", "file", *options.to_argv()])
    assert cli.options_from_namespace(namespace) == options


def test_every_field_is_exactly_one_option_with_its_help() -> None:
    parser = cli.build_parser()
    help_text = " ".join(parser.format_help().split())
    flags = [flag for action in parser._actions for flag in action.option_strings]
    assert len(flags) == len(set(flags))
    for field in dataclasses.fields(ServerOptions):
        flag = "--" + field.name.replace("_", "-")
        assert flags.count(flag) == 1, flag
        assert " ".join(field.metadata["help"].split()) in help_text
    assert "--no-sendfile" in flags
    assert "the accept loop waits" in help_text


def test_defaults_are_the_stdlib_defaults() -> None:
    namespace = cli.build_parser().parse_args(["sequential", "echo"])
    options = cli.options_from_namespace(namespace)
    assert options == ServerOptions()
    assert options.backlog == 5 and options.max_children == 40


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_unknown_model_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run_main(["quantum", "echo"], capsys)
    assert status == 2 and out == ""
    assert "unknown model 'quantum'" in err
    for name in registry.MODELS:
        assert name in err


def test_service_the_model_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run_main(["c-reference", "file", "--root", "."], capsys)  # refused before anything is built
    assert status == 2
    assert "does not provide the 'file' service; it provides: echo" in err


def test_unknown_service_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run_main(["sequential", "chat"], capsys)
    assert status == 2 and "invalid choice: 'chat'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["threading", "file"], "add --root DIR"),
        (["threading", "file", "--root", "/nonexistent/dir"], "not a directory"),
        (["threading", "http"], "add --root DIR"),
        (["threading", "timeauth"], "add --credentials FILE"),
        (["selectors", "timeauth", "--credentials", "/nonexistent/creds"], "no such file"),
        (["forking", "echo", "--loop", "uvloop"], "only applies to the models asyncio"),
        (["threading", "echo", "--threads", "4"], "sizes the pool of threadpool only"),
        (["threadpool", "echo", "--workers", "2"], "sizes the pool of prefork, reuseport only"),
        (["prefork", "echo", "--workers", "-1"], "below the minimum 0"),
        (["forking", "echo", "--max-children", "0"], "below the minimum 1"),
        (["forking", "echo", "--port", "70000"], "above the maximum 65535"),
        (["forking", "echo", "--cpu-work-us", "lots"], "not a whole number"),
    ],
)
def test_bad_input_is_a_clear_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run_main(argv, capsys)
    assert status == 2 and out == ""
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice:pw\nbob\n", "line 2: no ':'"),
        (":pw\n", "line 1: empty user name"),
        ("# only a comment\n", "no name:password line"),
        ("a:1\na:2\n", "line 2: user 'a' given twice"),
    ],
)
def test_bad_credentials_file_names_the_line(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = tmp_path / "logins"
    credentials.write_text(text)
    status, out, err = _run_main(["threading", "timeauth", "--credentials", str(credentials)], capsys)
    assert status == 2 and out == ""
    assert f"--credentials {credentials}" in err and message in err, err


def test_uvloop_missing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail as if not installed
    status, _, err = _run_main(["asyncio", "echo", "--loop", "uvloop"], capsys)
    assert status == 2
    assert "uvloop is not installed" in err and "--loop asyncio" in err


def test_gevent_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "gevent", None)  # as if the extra were not installed
    assert "pip install -e '.[gevent]'" in (registry.available_models()["gevent"] or "")
    assert all(why is None for name, why in registry.available_models().items() if name != "gevent")
    status, out, err = _run_main(["gevent", "echo"], capsys)
    assert status == 2 and out == ""
    assert "optional extra 'gevent'" in err and "pip install -e '.[gevent]'" in err and "Traceback" not in err
    assert "not available here:\n  gevent: " in cli.build_parser().format_help()


def test_only_the_gevent_server_process_imports_gevent() -> None:
    """Validating and listing models never imports gevent (nor patches anything) in the bench process."""
    code = (
        "import sys; from bench.scenario import load_scenario; from servers import cli; "
        "load_scenario('scenarios/deployed.yaml'); cli.build_parser(); "
        "assert 'gevent' not in sys.modules, sorted(m for m in sys.modules if 'gevent' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)


def test_command_line_errors_have_no_traceback() -> None:
    result = subprocess.run(
        server_command("quantum", "echo", ServerOptions()), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "valid models" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("model", registry.PYTHON_MODELS)
def test_port_in_use_is_a_clear_error(model: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError) as info:
            with run_server(model, "echo", ServerOptions(port=port)):
                pass
    message = str(info.value)
    assert "exit status 1" in message and f"cannot listen on 127.0.0.1:{port}" in message
    assert "Traceback" not in message
