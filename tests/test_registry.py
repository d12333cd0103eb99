"""The registry's contract, for every model it lists: its facts, and that they are true.

Each model declares its facts once in :mod:`servers.registry`. Here every
model is held to them: each declared service really works (the model is
started with :func:`servers.launch.run_server`, a subprocess on loopback, and
does one exchange), any other service is refused before anything listens
with a message naming the ones it has, and the facts figures read (colour,
order, the ceiling drawn apart) are unique and total.
"""

from __future__ import annotations

import os
import random
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.plots import style
from servers import cli, native, registry
from servers.config import SERVICES, ServerOptions
from servers.launch import ServerProcess, run_server

#: Longest wait for one exchange on a machine other work keeps busy.
IO_TIMEOUT_S = 15.0
#: The served file's name and size (over one 64 KiB chunk, so a file takes more than one send).
FILE_NAME, FILE_SIZE = "payload", 100_003


def _receive(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _echo(server: ServerProcess, root: Path) -> None:
    payload = random.Random(7).randbytes(4093)  # odd size: no buffer boundary lines up with it
    with socket.create_connection(server.address, timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(payload)
        assert _receive(sock, len(payload)) == payload


def _file(server: ServerProcess, root: Path) -> None:
    expected = (root / FILE_NAME).read_bytes()
    header = f"OK {len(expected)}\n".encode()
    with socket.create_connection(server.address, timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(FILE_NAME.encode() + b"\n")
        assert _receive(sock, len(header) + len(expected)) == header + expected


def _http(server: ServerProcess, root: Path) -> None:
    expected = (root / FILE_NAME).read_bytes()
    with socket.create_connection(server.address, timeout=IO_TIMEOUT_S) as sock, sock.makefile("rb") as reader:
        sock.sendall(f"GET /{FILE_NAME} HTTP/1.1\r\nHost: registry\r\n\r\n".encode())
        assert reader.readline() == b"HTTP/1.1 200 OK\r\n"
        headers = []
        while (line := reader.readline()) not in (b"\r\n", b""):
            headers.append(line.lower())
        assert f"content-length: {len(expected)}\r\n".encode() in headers, headers
        assert reader.read(len(expected)) == expected


def _timeauth(server: ServerProcess, root: Path) -> None:
    with socket.create_connection(server.address, timeout=IO_TIMEOUT_S) as sock, sock.makefile("rb") as reader:
        assert reader.readline() == b"name?\n"
        sock.sendall(b"registry\n")
        assert reader.read(1) == b"\x06"
        sock.sendall(b"facts\n")
        assert reader.readline().startswith(b"TIME ")


#: One exchange per service: what "the service works" means here.
EXCHANGES: dict[str, Callable[[ServerProcess, Path], None]] = {
    "echo": _echo,
    "file": _file,
    "http": _http,
    "timeauth": _timeauth,
}
#: The logins file of the timeauth exchange, beside the served file.
LOGINS = "logins"

DECLARED = [(name, service) for name, model in registry.MODELS.items() for service in model.services]


def _available(name: str) -> None:
    if registry.model(name).native and not native.available():
        pytest.skip(f"{name}: {native.why_unavailable()}")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    (folder / FILE_NAME).write_bytes(os.urandom(FILE_SIZE))
    (folder / LOGINS).write_text("registry:facts\n")
    return folder


# ----------------------------------------------------------------------------- the facts


@pytest.mark.parametrize("name", registry.MODELS)
def test_model_declares_its_facts(name: str) -> None:
    model = registry.model(name)
    assert model.name == name
    assert model.services and set(model.services) <= set(SERVICES), f"{name}: services {model.services}"
    assert len(set(model.services)) == len(model.services)
    assert model.family in ("textbook", "ceiling", "deployed")
    assert model.ceiling_reference == (model.family == "ceiling")
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", model.colour), model.colour
    assert model.label.strip()
    module = model.load()
    assert callable(module.serve)
    assert not hasattr(module, "SERVICES"), "the services a model offers are declared in the registry only"
    assert callable(getattr(module, "check", lambda service, options: None))


def test_every_service_has_an_exchange_here() -> None:
    # A service added to servers.config must be exercised by the contract test below.
    assert set(SERVICES) <= set(EXCHANGES)


def test_colours_are_unique() -> None:
    colours = [m.colour.lower() for m in registry.MODELS.values()]
    assert len(set(colours)) == len(colours), colours


def test_order_is_total_and_puts_unknown_models_last() -> None:
    names = list(registry.MODELS)
    assert [registry.model(n).order for n in names] == list(range(len(names)))
    shuffled = ["zz-retired", *reversed(names), "aa-retired"]
    assert sorted(shuffled, key=registry.order_key) == [*names, "aa-retired", "zz-retired"]


def test_groups_follow_the_facts() -> None:
    assert set(registry.PYTHON_MODELS) | set(registry.CEILING_MODELS) == set(registry.MODELS)
    assert not set(registry.PYTHON_MODELS) & set(registry.CEILING_MODELS)
    assert registry.CEILING_MODELS == ("c-reference",)
    assert all(registry.model(n).loop for n in registry.LOOP_MODELS)


def test_unknown_model_names_the_valid_ones() -> None:
    with pytest.raises(registry.UnknownModel) as caught:
        registry.model("quantum")
    assert all(name in str(caught.value) for name in registry.MODELS)
    assert not registry.is_ceiling_reference("quantum")


@pytest.mark.parametrize("name", registry.MODELS)
def test_figures_read_colour_and_ceiling_from_the_registry(name: str) -> None:
    model = registry.model(name)
    line = style.model_style(name)
    assert line["color"] == model.colour
    assert (line["linestyle"] == "--") == model.ceiling_reference


# ----------------------------------------------------------------------------- the facts are true


@pytest.mark.parametrize(("name", "service"), DECLARED)
def test_declared_service_works(name: str, service: str, root: Path) -> None:
    _available(name)
    options = {
        "file": ServerOptions(root=root),
        "http": ServerOptions(root=root),
        "timeauth": ServerOptions(credentials=root / LOGINS),
    }.get(service, ServerOptions())
    with run_server(name, service, options) as server:
        assert server.ready["model"] == name and server.ready["service"] == service
        EXCHANGES[service](server, root)
        assert server.stop() == 0, server.stderr_tail()


@pytest.mark.parametrize("name", registry.MODELS)
def test_undeclared_service_is_refused_naming_the_valid_ones(
    name: str, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = registry.model(name)
    with pytest.raises(registry.UnsupportedService) as caught:
        model.check("gopher", ServerOptions())
    assert str(caught.value) == (
        f"model {name!r} does not provide the 'gopher' service; it provides: {', '.join(model.services)}"
    )
    for service in sorted(set(SERVICES) - set(model.services)):  # a real service it lacks: refused by the command
        assert cli.main([name, service, "--root", str(root)]) == cli.EXIT_USAGE
        out, err = capsys.readouterr()
        assert out == "" and f"it provides: {', '.join(model.services)}" in err
