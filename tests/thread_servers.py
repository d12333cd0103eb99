"""Tiny in-test servers for the load generator's tests: threads with plain blocking sockets.

Written to be obviously right rather than fast: an echo server, a file-protocol
server, variants that corrupt, reset or answer slowly. Servers that must be
counted exactly take a *budget*: they answer exactly that many requests and
then stop answering (the connection stays open), so a run that lasts longer
than the budget takes must report exactly the budget, no more, no fewer.
The ``server`` fixture (tests/conftest.py) makes them and closes them after the test.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable


class ThreadServer:
    """A listening socket; each accepted connection runs ``handler(conn, server)`` in a thread."""

    def __init__(
        self,
        handler: Callable[[socket.socket, ThreadServer], None],
        *,
        budget: int | None = None,
        message_bytes: int = 0,
        files: dict[str, bytes] | None = None,
        delay_s: float = 0.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.handler = handler
        self.budget = budget
        self.message_bytes = message_bytes
        self.files = files or {}
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.served = 0
        self.bytes_served = 0
        self.served_conns: set[int] = set()  # fds of the connections that got at least one answer
        self.accepted = 0
        self.paths: list[str] = []  # request targets the http handler was asked for
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.stopping = False
        self.sock = socket.create_server((host, 0), backlog=128)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self.acceptor.start()

    def take(self, nbytes: int, conn: socket.socket | None = None) -> bool:
        """Claim one request from the budget (for ``conn``, if given); False once it is spent."""
        with self.lock:
            if self.budget is not None and self.served >= self.budget:
                return False
            self.served += 1
            self.bytes_served += nbytes
            if conn is not None:
                self.served_conns.add(conn.fileno())
            return True

    def _accept_loop(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping = True
        self.acceptor.join(5)
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self.threads:
            t.join(5)


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def hold(conn: socket.socket) -> None:
    """Budget spent: keep the connection open, answer nothing, until the client goes."""
    while conn.recv(65536):
        pass


def echo_handler(conn: socket.socket, srv: ThreadServer) -> None:
    while True:
        msg = recv_exact(conn, srv.message_bytes)
        if msg is None:
            return
        if not srv.take(len(msg), conn):
            return hold(conn)
        if srv.delay_s:
            time.sleep(srv.delay_s)
        conn.sendall(msg)


def stream_echo_handler(conn: socket.socket, srv: ThreadServer) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)
        with srv.lock:
            srv.bytes_served += len(data)


def corrupt_echo_handler(conn: socket.socket, srv: ThreadServer) -> None:
    while True:
        msg = recv_exact(conn, srv.message_bytes)
        if msg is None:
            return
        conn.sendall(bytes([msg[0] ^ 0xFF]) + msg[1:])


def reset_handler(conn: socket.socket, srv: ThreadServer) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends RST


def file_handler(conn: socket.socket, srv: ThreadServer, corrupt: bool = False, extra: bytes = b"") -> None:
    """The file service over ``srv.files``; ``corrupt`` sends zeros of the right length, ``extra`` follows each body."""
    f = conn.makefile("rb")
    while line := f.readline(4097):
        name = line.rstrip(b"\n").decode()
        data = srv.files.get(name)
        if data is None:
            conn.sendall(b"ERR 404 not found\n")
            continue
        if not srv.take(len(data)):
            return hold(conn)
        body = bytes(len(data)) if corrupt else data
        conn.sendall(b"OK %d\n" % len(data) + body + extra)


def corrupt_file_handler(conn: socket.socket, srv: ThreadServer) -> None:
    file_handler(conn, srv, corrupt=True)


def overlong_file_handler(conn: socket.socket, srv: ThreadServer) -> None:
    file_handler(conn, srv, extra=b"X")


def http_handler(conn: socket.socket, srv: ThreadServer, corrupt: bool = False, close: bool = False) -> None:
    """HTTP/1.1 keep-alive GET of ``srv.files`` (by path without the leading slash), parsed with h11.

    ``close``: every reply says ``Connection: close`` and the connection ends after it.
    """
    import h11

    http = h11.Connection(h11.SERVER)
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = conn.recv(65536)
            if not data:
                return
            http.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            srv.paths.append(event.target.decode())
            data = srv.files.get(event.target.decode().lstrip("/"))
            if data is None:
                out = http.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
            else:
                if not srv.take(len(data)):
                    return hold(conn)  # budget spent (only with a budget)
                body = bytes(len(data)) if corrupt else data
                headers = [("Content-Length", str(len(data)))] + ([("Connection", "close")] if close else [])
                out = http.send(h11.Response(status_code=200, headers=headers))
                out += http.send(h11.Data(data=body))
            conn.sendall(out + http.send(h11.EndOfMessage()))
            if close:
                return
        elif isinstance(event, h11.EndOfMessage):
            http.start_next_cycle()
        else:  # ConnectionClosed or anything unexpected
            return


def corrupt_http_handler(conn: socket.socket, srv: ThreadServer) -> None:
    http_handler(conn, srv, corrupt=True)


def closing_http_handler(conn: socket.socket, srv: ThreadServer) -> None:
    http_handler(conn, srv, close=True)


def read_http_head(conn: socket.socket) -> bool:
    """Read one request head (up to its blank line); False at end of stream."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        chunk = conn.recv(1)
        if not chunk:
            return False
        head += chunk
    return True


def raw_http_handler(reply: bytes, then: str = "keep") -> Callable[[socket.socket, ThreadServer], None]:
    """Answer every request head with exactly ``reply`` (any bytes, well-formed or not).

    ``then``: ``keep`` the connection for the next request, ``close`` it, or
    ``hold`` it open answering nothing more. Each reply sent takes one from the
    server's budget; once it is spent the connection is held.
    """

    def handler(conn: socket.socket, srv: ThreadServer) -> None:
        while read_http_head(conn):
            if not srv.take(len(reply)):
                return hold(conn)
            conn.sendall(reply)
            if then == "close":
                return
            if then == "hold":
                return hold(conn)

    return handler


def pipelining_http_handler(
    conn: socket.socket, srv: ThreadServer, *, batch: int = 1, swap: bool = False, head_body: bool = False
) -> None:
    """HTTP/1.1 on raw bytes, for what h11 would not let a server do: wait for ``batch`` whole requests
    before answering any, answer each batch in reverse order (``swap``), send a body after a HEAD
    (``head_body``). Requests have no body (the load generator sends none): each ends at an empty line.
    """
    buf = b""
    while True:
        while buf.count(b"\r\n\r\n") < batch:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        requests = []
        for _ in range(batch):
            head, buf = buf.split(b"\r\n\r\n", 1)
            method, target, _version = head.split(b"\r\n", 1)[0].split(b" ")
            srv.paths.append(target.decode())
            requests.append((method, target.decode()))
        out = b""
        for method, target in reversed(requests) if swap else requests:
            data = srv.files[target.lstrip("/")]
            srv.take(len(data))
            out += b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data)
            if method == b"GET" or head_body:
                out += data
        conn.sendall(out)


def batch3_http_handler(conn: socket.socket, srv: ThreadServer) -> None:
    pipelining_http_handler(conn, srv, batch=3)


def swapping_http_handler(conn: socket.socket, srv: ThreadServer) -> None:
    pipelining_http_handler(conn, srv, batch=2, swap=True)


def head_body_http_handler(conn: socket.socket, srv: ThreadServer) -> None:
    pipelining_http_handler(conn, srv, head_body=True)
