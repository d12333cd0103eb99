"""Connections to a loopback target come from several source addresses, in both engines.

One source address gives the kernel one ephemeral port range per server
address:port, and churned ports wait in TIME-WAIT: that capped new
connections/s (``bench.loadgen.spec.source_addresses``). These tests run a
churn load (one request per connection) against real servers and look at the
addresses the connections really came from: an in-test server records
``getpeername()`` of every connection it accepts; for c-reference the
kernel's own table of the client sockets left in TIME-WAIT says it. A target
on a non-loopback address keeps the one address the kernel chooses.
"""

from __future__ import annotations

import socket
import threading

import psutil
import pytest

from bench.loadgen import LoadSpec, run_load
from bench.loadgen.spec import LOOPBACK_SOURCE_ADDRS, source_addresses
from servers.config import ServerOptions
from servers.launch import run_server

from thread_servers import ThreadServer, echo_handler

pytestmark = [pytest.mark.needs_cc, pytest.mark.usefixtures("no_leftover_workers")]
ENGINES = ("python", "native")
LOOPBACK_SOURCES = {f"127.0.0.{i}" for i in range(1, LOOPBACK_SOURCE_ADDRS + 1)}
ERROR_COLUMNS = ("err_reset", "err_timeout", "err_closed_early", "err_short", "err_corrupt")
FAILED_CONNECTS = ("conn_refused", "conn_reset", "conn_timeout", "conn_emfile", "conn_eaddrnotavail", "conn_other")


def churn(engine: str, host: str, port: int, **kw: object) -> dict[str, object]:
    spec = LoadSpec(
        engine=engine,
        service="echo",
        host=host,
        port=port,
        clients=4,
        workers=2,
        duration_s=0.5,
        message_bytes=64,
        requests_per_connection=1,
        connect_timeout_s=2.0,
        request_timeout_s=10.0,
        **kw,  # type: ignore[arg-type]
    )
    return run_load(spec).row


def recording_server(server, peers: set[str], host: str = "127.0.0.1") -> ThreadServer:  # type: ignore[no-untyped-def]
    """An echo server on ``host`` that notes the address of every peer it accepts."""
    lock = threading.Lock()

    def handler(conn: socket.socket, srv: ThreadServer) -> None:
        with lock:
            peers.add(conn.getpeername()[0])
        echo_handler(conn, srv)

    return server(handler, message_bytes=64, host=host)


def assert_clean(row: dict[str, object]) -> None:
    """Every request and connect succeeded: binding source addresses changed no outcome."""
    assert row["requests"] > 0  # type: ignore[operator]
    assert {c: row[c] for c in ERROR_COLUMNS + FAILED_CONNECTS} == dict.fromkeys(ERROR_COLUMNS + FAILED_CONNECTS, 0)
    # one request per connection: every completed request had its own connection
    assert row["conn_ok"] >= row["requests"]  # type: ignore[operator]


def test_native_churn_to_loopback_comes_from_many_source_addresses(server):
    peers: set[str] = set()
    srv = recording_server(server, peers)
    row = churn("native", "127.0.0.1", srv.port)
    assert_clean(row)
    assert row["gen_source_addrs"] == LOOPBACK_SOURCE_ADDRS
    # each connect takes the next address: a churn run of this length goes round all of them
    assert peers == LOOPBACK_SOURCES


def test_python_churn_to_loopback_keeps_one_source_address(server):
    """Binding first would cost the python engine more connections/s than the port space does."""
    peers: set[str] = set()
    srv = recording_server(server, peers)
    row = churn("python", "127.0.0.1", srv.port)
    assert_clean(row)
    assert row["gen_source_addrs"] == 1
    assert peers == {"127.0.0.1"}


def test_native_churn_against_c_reference_spreads_its_time_wait_over_source_addresses():
    with run_server("c-reference", "echo", ServerOptions()) as srv:
        row = churn("native", "127.0.0.1", srv.port)
    assert_clean(row)
    # The client closes first, so its side of each connection waits in TIME-WAIT: local address = source.
    sources = {
        c.laddr.ip
        for c in psutil.net_connections("tcp4")
        if c.status == psutil.CONN_TIME_WAIT and c.raddr and c.raddr.port == srv.port
    }
    assert len(sources) > 1 and sources <= LOOPBACK_SOURCES


def _non_loopback_ipv4() -> str:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    pytest.skip("this machine has no non-loopback IPv4 address")


@pytest.mark.parametrize("engine", ENGINES)
def test_non_loopback_target_keeps_one_source_address(engine, server):
    address = _non_loopback_ipv4()
    assert source_addresses(address) == []
    peers: set[str] = set()
    srv = recording_server(server, peers, host=address)
    row = churn(engine, address, srv.port, allow_remote=True)
    assert_clean(row)
    assert row["gen_source_addrs"] == 1
    assert peers == {address}  # the kernel's choice: the interface's own address


def test_only_ipv4_loopback_targets_get_several_source_addresses():
    assert source_addresses("127.0.0.1") == sorted(LOOPBACK_SOURCES, key=lambda a: int(a.rsplit(".", 1)[1]))
    assert len(source_addresses("127.1.2.3")) == LOOPBACK_SOURCE_ADDRS
    assert source_addresses("127.0.0.1", "python") == []
    assert source_addresses("::1") == []
    assert source_addresses("10.0.0.2") == []


def test_a_connection_closed_while_handed_to_uvloop_does_not_close_its_fd_twice(server):
    """uvloop attaches the bound socket only after ``connection_made``: one closed by then must not close a reused fd."""
    import asyncio
    import gc
    import os

    from bench.loadgen.clients import Shared

    uvloop = pytest.importorskip("uvloop")
    srv = server(echo_handler, message_bytes=64)

    class ClosesAtOnce(asyncio.Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def, override]
            transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        job = {
            "spec": {
                "connect_timeout_s": 2.0,
                "request_timeout_s": 2.0,
                "requests_per_connection": 1,
                "service": "echo",
                "message_bytes": 1,
                "files": [],
                "checksum_sample": 0.0,
            },
            "seed": 1,
            "source_ips": ["127.0.0.2"],
            "index": 0,
        }
        shared = Shared(loop, None, "127.0.0.1", srv.port, job, 1024)  # type: ignore[arg-type]
        conn = await shared.open_connection(ClosesAtOnce)  # type: ignore[arg-type]
        for _ in range(5):
            await asyncio.sleep(0.01)  # libuv closes the connection's fd
        reused = os.open(os.devnull, os.O_RDONLY)  # the lowest free number: likely the one just closed
        try:
            del conn
            gc.collect()  # drops the transport and with it the socket object
            os.fstat(reused)  # EBADF if the socket object closed its old number again
        finally:
            os.close(reused)

    uvloop.run(main())
