"""Conformance of the http and timeauth services: every model that offers them, through one run_server.

Real server processes, real loopback sockets: status codes, keep-alive,
pipelining, HEAD, the head limits, traversal, the per-connection timeouts
and, where Debian's curl is installed, a client nobody here wrote. The
served tree is the file service's (:func:`test_conformance.served`).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_conformance import (  # noqa: F401 (fixture)
    FILE_SIZES,
    IO_TIMEOUT_S,
    ServedTree,
    connect,
    served,
    serving,
)

from servers import registry
from servers.launch import ServerProcess

HTTP_MODELS = tuple(m for m in registry.PYTHON_MODELS if registry.model(m).offers("http"))
TIMEAUTH_MODELS = tuple(m for m in registry.PYTHON_MODELS if registry.model(m).offers("timeauth"))

LOGINS = {"alice": "correct horse", "bob": "b:with:colons"}


@pytest.fixture(scope="module", params=HTTP_MODELS)
def http_server(request: pytest.FixtureRequest, served: ServedTree) -> Iterator[ServerProcess]:  # noqa: F811
    with serving(request.param, "http", root=served.root) as server:
        yield server


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("timeauth") / "logins"
    path.write_text("# name:password\n\n" + "".join(f"{name}:{password}\n" for name, password in LOGINS.items()))
    return path


@pytest.fixture(scope="module", params=TIMEAUTH_MODELS)
def timeauth_server(request: pytest.FixtureRequest, credentials: Path) -> Iterator[ServerProcess]:
    with serving(request.param, "timeauth", credentials=credentials) as server:
        yield server


# ----------------------------------------------------------------------------- an HTTP client on a raw socket


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class HTTPClient:
    """Requests as raw bytes (so malformed and pipelined ones can be sent); responses parsed by hand."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = connect(server)
        self.reader = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, path: str, method: str = "GET", headers: str = "") -> Response:
        self.send(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())
        return self.response(head_only=method == "HEAD")

    def response(self, head_only: bool = False) -> Response:
        status_line = self.reader.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers["content-length"])
        body = self.reader.read(length)
        assert len(body) == length, f"short body: {len(body)} of {length}"
        return Response(int(status_line.split()[1]), headers, body)

    def at_eof(self) -> bool:
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@contextlib.contextmanager
def http_client(server: ServerProcess) -> Iterator[HTTPClient]:
    client = HTTPClient(server)
    try:
        yield client
    finally:
        client.close()


def assert_file(served: ServedTree, name: str, response: Response) -> None:  # noqa: F811
    assert response.status == 200, (response.status, response.body[:200])
    assert response.headers["content-length"] == str(FILE_SIZES[name])
    assert hashlib.sha256(response.body).hexdigest() == served.digests[name]


def assert_error_then_close(client: HTTPClient, response: Response, status: int) -> None:
    assert response.status == status, (response.status, response.body)
    assert response.headers.get("connection") == "close"
    assert response.body.startswith(f"{status} ".encode()), response.body
    assert client.at_eof(), "the server kept the connection open after an error"


# ----------------------------------------------------------------------------- http


@pytest.mark.parametrize("name", ["empty", "one", "f100k", "f10m"])
def test_http_get_serves_the_file_intact(http_server: ServerProcess, served: ServedTree, name: str) -> None:  # noqa: F811
    with http_client(http_server) as client:
        assert_file(served, name, client.get(f"/{name}"))


def test_http_keep_alive_head_and_connection_close(http_server: ServerProcess, served: ServedTree) -> None:  # noqa: F811
    with http_client(http_server) as client:
        assert_file(served, "one", client.get("/one"))
        head = client.get("/f100k", method="HEAD")
        assert head.status == 200 and head.headers["content-length"] == str(FILE_SIZES["f100k"])
        assert_file(served, "one", client.get("/one?query=ignored"))  # no body of the HEAD came before it
        assert_file(served, "f100k", client.get("/f100k", headers="Connection: close\r\n"))
        assert client.at_eof(), "Connection: close was not honoured"


def test_http_pipelined_requests_are_answered_in_order(http_server: ServerProcess, served: ServedTree) -> None:  # noqa: F811
    names = ["one", "f100k", "empty", "sub/inner.txt", "one"]
    with http_client(http_server) as client:
        client.send(
            b"".join(f"GET /{name} HTTP/1.1\r\nHost: test\r\n\r\n".encode() for name in names)
            + b"HEAD /one HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        for name in names:
            response = client.response()
            if name in FILE_SIZES:
                assert_file(served, name, response)
            else:
                assert response.body == b"inner\n"
        assert client.response(head_only=True).headers["content-length"] == "1"


@pytest.mark.parametrize("model", HTTP_MODELS)
def test_http_without_sendfile(model: str, served: ServedTree) -> None:  # noqa: F811
    """--no-sendfile: the bodies go out by the read/write loop, pipelined answers still in order."""
    with serving(model, "http", root=served.root, sendfile=False) as server, http_client(server) as client:
        client.send(b"GET /one-turn HTTP/1.1\r\nHost: t\r\n\r\nGET /f100k HTTP/1.1\r\nHost: t\r\n\r\n")
        assert_file(served, "one-turn", client.response())
        assert_file(served, "f100k", client.response())


def test_http_request_arriving_byte_by_byte(http_server: ServerProcess, served: ServedTree) -> None:  # noqa: F811
    with http_client(http_server) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in b"GET /one HTTP/1.1\r\nHost: test\r\n\r\n":
            client.send(bytes([byte]))
        assert_file(served, "one", client.response())


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/missing", 404),
        ("/sub/missing", 404),
        ("/one/below-a-file", 404),
        ("/../secret.txt", 403),
        ("/sub/../../secret.txt", 403),
        ("//etc/passwd", 404),
        ("/%2Fetc/passwd", 403),
        ("/link_inside", 403),
        ("/link_outside", 403),
        ("/", 403),
        ("/sub", 403),
        ("/pipe", 403),
        ("/o%00ne", 400),
        ("/%ff%fe", 400),
        ("one", 400),
    ],
)
def test_http_refusals(http_server: ServerProcess, target: str, status: int) -> None:
    with http_client(http_server) as client:
        assert_error_then_close(client, client.get(target), status)


def test_http_percent_encoded_name(http_server: ServerProcess) -> None:
    with http_client(http_server) as client:
        assert client.get("/caf%C3%A9%20menu.txt").body == b"unicode name\n"


@pytest.mark.parametrize("method", ["POST", "DELETE", "BREW"])
def test_http_other_methods_get_405_with_allow(http_server: ServerProcess, method: str) -> None:
    with http_client(http_server) as client:
        client.send(f"{method} /one HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n".encode())
        response = client.response()
        assert response.headers.get("allow") == "GET, HEAD"
        assert_error_then_close(client, response, 405)


def test_http_malformed_request_is_400(http_server: ServerProcess) -> None:
    with http_client(http_server) as client:
        client.send(b"this is not http\r\n\r\n")
        assert_error_then_close(client, client.response(), 400)


# Each over-long request is sent exactly up to the point where both parsers
# decide (http.server reads 65537 bytes of a line, then answers): the server
# has read everything, so its close is a clean FIN and never a reset that
# would discard the answer before the client reads it.
LIMIT_REQUESTS = {
    "request-line": (b"GET /" + b"a" * (65537 - 5), 414),
    "header-line": (b"GET /one HTTP/1.1\r\nX-Long: " + b"v" * (65537 - len(b"X-Long: ")), 431),
    "header-count": (b"GET /one HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)), 431),
}


@pytest.mark.parametrize("what", list(LIMIT_REQUESTS))
def test_http_head_limits(http_server: ServerProcess, what: str) -> None:
    request, status = LIMIT_REQUESTS[what]
    with http_client(http_server) as client:
        client.send(request)
        assert_error_then_close(client, client.response(), status)


def test_http_ninety_nine_headers_are_within_the_limit(http_server: ServerProcess, served: ServedTree) -> None:  # noqa: F811
    with http_client(http_server) as client:
        headers = "".join(f"X-{i}: v\r\n" for i in range(98))  # and Host: 99 in all
        assert_file(served, "one", client.get("/one", headers=headers))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (Debian: apt-get install curl)")
def test_curl_fetches_files_over_one_connection(
    http_server: ServerProcess,
    served: ServedTree,  # noqa: F811
    tmp_path: Path,
) -> None:
    host, port = http_server.address
    url = f"http://{host}:{port}"
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            str(IO_TIMEOUT_S),
            "--write-out",
            "%{http_code} %{num_connects}\\n",
            "-o",
            str(tmp_path / "a"),
            f"{url}/f100k",
            "-o",
            str(tmp_path / "b"),
            f"{url}/one",
        ],
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT_S * 2,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["200 1", "200 0"], result.stdout  # the second reused the connection
    for name, file in (("f100k", "a"), ("one", "b")):
        assert hashlib.sha256((tmp_path / file).read_bytes()).hexdigest() == served.digests[name]
    missing = subprocess.run(
        ["curl", "--silent", "--head", "--write-out", "%{http_code}", "-o", "/dev/null", f"{url}/missing"],
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT_S,
        check=False,
    )
    assert missing.stdout == "404"


@pytest.mark.parametrize("model", HTTP_MODELS)
def test_http_idle_and_slow_request_are_cut_off(model: str, served: ServedTree) -> None:  # noqa: F811
    """A silent client goes at the idle timeout; one trickling a head (never idle) at the request timeout."""
    with serving(model, "http", root=served.root, idle_timeout=0.6, request_timeout=1.0) as server:
        with connect(server) as silent, connect(server) as slow:
            start = time.monotonic()
            trickle = b"GET /one HTTP/1.1\r\nX-Slow: " + b"a" * 100
            closed: dict[str, float] = {}
            for byte in trickle:
                for name, sock in (("silent", silent), ("slow", slow)):
                    if name in closed:
                        continue
                    sock.setblocking(False)
                    try:
                        if sock.recv(1) == b"":
                            closed[name] = time.monotonic() - start
                    except BlockingIOError:
                        pass
                    except ConnectionError:
                        closed[name] = time.monotonic() - start
                if len(closed) == 2 or time.monotonic() - start > IO_TIMEOUT_S:
                    break
                with contextlib.suppress(OSError):
                    slow.send(bytes([byte]))
                time.sleep(0.1)
        stderr = server.stderr_tail()
        assert "silent" in closed and "slow" in closed, (closed, stderr)
        assert 0.5 <= closed["silent"] < 3.0, closed
        assert 0.9 <= closed["slow"] < 3.5, closed
        assert "--idle-timeout" in stderr and "--request-timeout" in stderr, stderr


# ----------------------------------------------------------------------------- timeauth


class TimeAuthClient:
    def __init__(self, server: ServerProcess) -> None:
        self.sock = connect(server)
        self.reader = self.sock.makefile("rb")

    def login(self, name: str, password: str, byte_by_byte: bool = False) -> bytes:
        """One login after the prompt; returns the answer line."""
        assert self.reader.readline() == b"name?\n"
        self._send(name.encode() + b"\n", byte_by_byte)
        assert self.reader.read(1) == b"\x06"
        self._send(password.encode() + b"\n", byte_by_byte)
        return self.reader.readline()

    def _send(self, data: bytes, byte_by_byte: bool) -> None:
        for piece in [bytes([b]) for b in data] if byte_by_byte else [data]:
            self.sock.sendall(piece)

    def at_eof(self) -> bool:
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@contextlib.contextmanager
def timeauth_client(server: ServerProcess) -> Iterator[TimeAuthClient]:
    client = TimeAuthClient(server)
    try:
        yield client
    finally:
        client.close()


def assert_time(line: bytes) -> None:
    assert line.startswith(b"TIME ") and line.endswith(b"\n"), line
    sent = datetime.fromisoformat(line[5:-1].decode())
    assert sent.tzinfo is not None and abs((datetime.now(UTC) - sent).total_seconds()) < IO_TIMEOUT_S


def test_timeauth_good_logins_again_and_again(timeauth_server: ServerProcess) -> None:
    with timeauth_client(timeauth_server) as client:
        for name, password in [*LOGINS.items(), ("alice", LOGINS["alice"])]:
            assert_time(client.login(name, password))


def test_timeauth_login_sent_byte_by_byte(timeauth_server: ServerProcess) -> None:
    with timeauth_client(timeauth_server) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert_time(client.login("bob", LOGINS["bob"], byte_by_byte=True))
        assert_time(client.login("alice", LOGINS["alice"]))


@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("alice", "wrong"),
        ("alice", ""),
        ("mallory", "correct horse"),
        ("bob", "b"),
        ("alice", "correct horse "),
        ("", ""),
    ],
)
def test_timeauth_bad_login_gets_an_error_line_then_close(
    timeauth_server: ServerProcess, name: str, password: str
) -> None:
    with timeauth_client(timeauth_server) as client:
        assert client.login(name, password) == b"ERR 401 wrong user name or password\n"
        assert client.at_eof()


@pytest.mark.parametrize("line", [b"al\x00ice\n", b"\xff\xfe\n", b"x" * 5000], ids=["nul", "not-utf8", "too-long"])
def test_timeauth_malformed_name_is_400_then_close(timeauth_server: ServerProcess, line: bytes) -> None:
    with timeauth_client(timeauth_server) as client:
        assert client.reader.readline() == b"name?\n"
        client.sock.sendall(line)
        assert client.reader.readline().startswith(b"ERR 400 ")
        assert client.at_eof()
