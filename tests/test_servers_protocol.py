"""servers.protocol (request lines, path safety), servers.work (CPU work) and the blocking file sender."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import protocol
from servers.handlers import send_file
from servers.protocol import FileShrankError
from servers.work import cpu_work


def test_split_line_waits_for_the_newline() -> None:
    buffer = bytearray(b"abc")
    assert protocol.split_line(buffer) is None and buffer == b"abc"
    buffer += b"\ndef\nxy"
    assert protocol.split_line(buffer) == b"abc\n"
    assert protocol.split_line(buffer) == b"def\n"
    assert protocol.split_line(buffer) is None and buffer == b"xy"


def test_split_line_limit() -> None:
    assert protocol.split_line(bytearray(b"a" * 4095)) is None  # may still end in time
    assert protocol.split_line(bytearray(b"a" * 4095 + b"\n")) == b"a" * 4095 + b"\n"
    with pytest.raises(protocol.RequestError) as info:
        protocol.split_line(bytearray(b"a" * 4096))
    assert info.value.code == 400 and info.value.close


@pytest.mark.parametrize(
    ("line", "reason"),
    [(b"\n", "empty"), (b"a\0b\n", "NUL"), (b"\xc3\x28\n", "UTF-8"), (b"a" * 4096 + b"\n", "longer than 4096")],
)
def test_parse_request_line_rejects(line: bytes, reason: str) -> None:
    with pytest.raises(protocol.RequestError) as info:
        protocol.parse_request_line(line)
    assert info.value.code == 400 and reason in info.value.reason
    assert info.value.close == (len(line) > protocol.MAX_REQUEST_LINE)


def test_parse_request_line_accepts_utf8() -> None:
    assert protocol.parse_request_line("r\u00e9sum\u00e9.txt\n".encode()) == "r\u00e9sum\u00e9.txt"


def test_wire_format() -> None:
    assert protocol.ok_header(0) == b"OK 0\n"
    assert protocol.error_line(protocol.RequestError(404, "no\nsuch  file")) == b"ERR 404 no such file\n"


@pytest.fixture(params=["openat2", "walk"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[protocol.ServedRoot]:
    """A served root, opened both ways: with openat2 (where the kernel has it) and by the component walk."""
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "a.txt").write_bytes(b"a")
    (tmp_path / "outside.txt").write_bytes(b"secret")
    (root / "out").symlink_to(tmp_path / "outside.txt")
    (root / "in").symlink_to("dir/a.txt")
    (root / "dirlink").symlink_to("dir")
    (root / "outdir").symlink_to(tmp_path)
    os.link(tmp_path / "outside.txt", root / "hard")
    os.mkfifo(root / "fifo")
    served = protocol.prepare_root(root)
    if request.param == "openat2" and not served.use_openat2:
        served.close()
        pytest.skip("openat2 is not available here")
    served.use_openat2 = request.param == "openat2"
    yield served
    served.close()


@pytest.mark.parametrize("path", ["dir/a.txt", "dir/../dir/./a.txt", "./dir//a.txt"])
def test_open_request_serves_files_inside(tree: protocol.ServedRoot, path: str) -> None:
    file, size = protocol.open_request(tree, path.encode() + b"\n")
    with file:
        assert size == 1 and file.read() == b"a"


def test_a_hard_link_is_a_file_of_the_root(tree: protocol.ServedRoot) -> None:
    file, size = protocol.open_request(tree, b"hard\n")
    with file:
        assert file.read() == b"secret"  # documented: hard links are the operator's choice


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("nothing", 404),
        ("dir/a.txt/x", 404),
        ("dir/nothing/x", 404),
        ("../outside.txt", 403),
        ("dir/../../outside.txt", 403),
        ("..", 403),
        ("out", 403),
        ("in", 403),  # a symlink inside the root is refused too (documented)
        ("dirlink/a.txt", 403),  # ... also as a directory on the path
        ("outdir/outside.txt", 403),
        ("dir", 403),
        (".", 403),
        ("dir/..", 403),  # the root itself: not a regular file
        ("fifo", 403),  # and must not block waiting for a writer
        ("/etc/hostname", 403),
    ],
)
def test_open_request_refuses(tree: protocol.ServedRoot, path: str, code: int) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(protocol.RequestError) as info:
        protocol.open_request(tree, path.encode() + b"\n")
    assert info.value.code == code and not info.value.close, info.value
    assert len(os.listdir("/proc/self/fd")) == before  # no descriptor leaked


def test_the_root_is_held_open_not_looked_up_again(tree: protocol.ServedRoot, tmp_path: Path) -> None:
    (tmp_path / "root").rename(tmp_path / "moved")
    (tmp_path / "root").mkdir()  # a new, empty directory under the old name
    file, _ = protocol.open_request(tree, b"dir/a.txt\n")
    with file:
        assert file.read() == b"a"


def test_unreadable_file_is_forbidden(tree: protocol.ServedRoot) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    (tree.path / "locked").write_bytes(b"x")
    (tree.path / "locked").chmod(0)
    with pytest.raises(protocol.RequestError) as info:
        protocol.open_request(tree, b"locked\n")
    assert info.value.code == 403


@pytest.mark.parametrize("use_sendfile", [True, False])
def test_send_file_refuses_to_send_less_than_promised(tmp_path: Path, use_sendfile: bool) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    left, right = socket.socketpair()
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(iter_recv(right)))
    reader.start()
    with left, path.open("rb", buffering=0) as file:
        send_file(left, file, 5, use_sendfile=use_sendfile)
        with pytest.raises(FileShrankError):
            send_file(left, file, 10, use_sendfile=use_sendfile)  # "10 bytes" promised, 5 exist
    reader.join(10)
    right.close()
    assert received == b"OK 5\n12345OK 10\n12345"


def iter_recv(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def test_cpu_work_is_cpu_time_not_wall_time() -> None:
    assert cpu_work(0).iterations == 0
    work = cpu_work(20_000)
    assert work.iterations > 0
    start = time.thread_time()
    work()
    spent = time.thread_time() - start
    assert spent >= 0.010, f"20 ms of work took {spent * 1000:.1f} ms of CPU"
    with pytest.raises(ValueError):
        cpu_work(-1)
