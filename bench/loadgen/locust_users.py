"""The locustfile of the ``locust`` load engine: sockbench's User classes for echo, file and http.

Run only by Locust itself (``locust -f bench/loadgen/locust_users.py ...``,
started by :mod:`bench.loadgen.locust_engine` or by hand on another host):
importing Locust monkey-patches the whole process for gevent, so nothing in
sockbench imports this module.

What a worker does
------------------
Each Locust *user* is one sockbench client: it keeps one TCP connection
(gevent sockets, reconnecting after ``requests_per_connection`` requests or
after a failure) and sends one request at a time: closed loop, with no wait
between requests, or open loop, each request at its due time on the user's
own schedule (see "Open loop" in :mod:`bench.loadgen.locust_engine`).
Replies are checked with the rules of the other engines
(:mod:`bench.loadgen.clients`): echo bytes equal to what was sent, no byte
more; file header ``OK <size>``, exactly ``size`` bytes, and the SHA-256 of
the sampled fraction; http keep-alive ``GET`` parsed with h11, a 2xx with the
path's ``Content-Length`` and body, other statuses counted by class
(:class:`HttpUser`).

Every outcome goes two ways:

- through Locust's ``request`` event (request type ``echo``, ``file`` or
  ``http``; a failed request carries a :class:`RequestFailed` whose text is
  the sockbench outcome: ``reset``, ``timeout``, ``closed_early``, ``short``,
  ``corrupt``, ``http_3xx`` .. ``http_5xx``), so Locust's own statistics and tools see the load;
- into sockbench's :class:`~bench.loadgen.recording.WorkerStats`: the same
  HdrHistograms, timeline, censoring and window rules as every other engine.

The job (the :class:`~bench.loadgen.spec.LoadSpec` as a dict and the shared
start time) reaches the workers in the options the master hands out with
its spawn message. At the end of its window a worker sends one report, the
document of :mod:`bench.loadgen.worker`, to the master in a custom message
(``sockbench_report``); the master writes all of them to the status pipe of
the process that started it, which merges them like any other workers'
(:mod:`bench.loadgen.merge`).

Status lines (master -> ``SOCKBENCH_LOCUST_STATUS_FD``, one JSON each)
----------------------------------------------------------------------
``{"hello": name,
"host": host}`` for each worker that connects; ``{"start_wall": T}`` when
the test starts; ``{"reports": [...], "locust_totals": {...}}`` once every
worker has reported (the master then stops the test and quits).

Error handling
--------------
A failure inside a user's loop that is not a request outcome is counted as
a loop error and reported with up to three samples (the merged result warns
about it, as for the other engines); the user reconnects and goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import socket as stdlib_socket
import time
import traceback
from time import monotonic
from typing import Any

import gevent
import h11
from gevent import socket
from locust import User, events, task
from locust.runners import MasterRunner, WorkerRunner

from bench.loadgen.clients import (
    MAX_HEADER,
    RETRY_DELAY_S,
    Shared,
    classify_connect_error,
)
from bench.loadgen.locust_engine import HOST_ENV, JOB_ENV, NAME_ENV, STATUS_FD_ENV
from bench.loadgen.recording import WorkerStats
from bench.loadgen.schedule import LATE_TOLERANCE_S
from bench.loadgen.spec import request_target
from bench.loadgen.worker import (
    DRAIN_POLL_S,
    DRAIN_S,
    ECHO_BUFFER,
    FILE_BUFFER,
    MAX_KEPT_ERRORS,
    write_all,
)

#: Custom message types between workers and master.
HELLO, REPORT = "sockbench_hello", "sockbench_report"
#: How far ahead of the test's start the shared start is set: the spawn
#: message and the users' creation take a few ms idle; 0.5 s covers a busy machine.
START_MARGIN_S = 0.5


class RequestFailed(Exception):
    """A request's sockbench outcome (its text: reset, timeout, closed_early, short, corrupt, http_3xx..http_5xx)."""


class Failure(Exception):
    """Raised inside a request when the reply is wrong or missing; carries the outcome.

    ``keep``: the reply arrived whole and well-formed, only not the one asked
    for (an http status other than 2xx), so the connection carries the next request.
    """

    def __init__(self, kind: str, keep: bool = False):
        super().__init__(kind)
        self.kind = kind
        self.keep = keep


# --------------------------------------------------------------------------
# One worker's state


class WorkerState:
    """What every user of this worker shares: the job, its stats, the end of the run."""

    def __init__(self, environment: Any, job: dict[str, Any], start_wall: float) -> None:
        spec = job["spec"]
        self.environment = environment
        self.spec = spec
        self.run_start = monotonic() + (start_wall - time.time())
        self.window_start = self.run_start + spec["warmup_s"]
        self.window_end = self.window_start + spec["duration_s"]
        self.open_loop = spec["mode"] == "open"
        self.stats = WorkerStats(
            self.run_start, self.window_start, self.window_end, spec["timeline_interval_s"], self.open_loop
        )
        self.index = environment.runner.worker_index
        self.workers = int(job["workers"])
        # Open loop: each user's own schedule, rate/clients per user (see "Open loop" in the module docstring).
        self.user_interval = spec["clients"] / spec["rate"] if self.open_loop else 0.0
        self.send_lag_sum = 0.0
        self.send_lag_n = 0
        self.late_generator = 0  # late starts of requests whose user was free before they were due
        self.wake_lag_max = 0.0
        self.ip = job["ip"]
        self.service = spec["service"]
        self.message = random.Random(self.index + 1).randbytes(spec["message_bytes"]) if self.service == "echo" else b""
        if self.service == "http":
            self.files = [(request_target(f["name"]), f["size"], f["sha256"], f["name"]) for f in spec["files"]]
        else:
            self.files = [(f["name"].encode("utf-8") + b"\n", f["size"], f["sha256"], f["name"]) for f in spec["files"]]
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        self.http_headers = [("Host", f"{host}:{spec['port']}"), ("User-Agent", "sockbench")]
        # Seeded per worker as in the python engine, so a run with path_order: random asks for the same paths again.
        self.path_rng = random.Random(self.index + 1) if spec.get("path_order") == "random" else None
        self.sample = float(spec["checksum_sample"])
        self.sample_acc = 1.0  # so the first reply of each worker is verified
        # One read buffer for all users: each chunk is checked right after its
        # recv, before any other greenlet runs (gevent switches only on I/O).
        self.buffer = bytearray(ECHO_BUFFER if self.service == "echo" else FILE_BUFFER)
        self.users: list[SockbenchUser] = []
        self.stopping = False
        self.loop_errors: list[str] = []
        self.local_addresses: set[str] = set()  # this worker's own addresses its connections came from
        self.fired = {"ok": 0, "failed": 0}  # request events fired, whole run
        self.start_late = 0.0
        self.cpu_mark = (0.0, 0.0)

    #: Whether the next file reply is hashed: the python engine's rule, on the same two attributes.
    take_sample = Shared.take_sample

    def loop_error(self, text: str) -> None:
        self.loop_errors.append(text)

    def conduct(self) -> None:
        """Mark the window, stop new requests at its end, drain, and send the report to the master."""
        gevent.sleep(max(0.0, self.window_start - monotonic()))
        self.cpu_mark = (time.process_time(), monotonic())
        gevent.sleep(max(0.0, self.window_end - monotonic()))
        cpu_end, wall_end = time.process_time(), monotonic()
        self.stopping = True
        now = monotonic()
        busy = [u for u in self.users if u.busy]
        waiting = [now - u.t_sent for u in busy]
        for u in busy:
            self.stats.censor_in_flight(u.t_int)
        connecting = sum(1 for u in self.users if u.connecting)
        unstarted = 0
        if self.open_loop:  # due before the window's end and never sent: censored from their due time
            for u in self.users:
                for i in range(u.next_i, u.due_count(self.window_end)):
                    self.stats.censor_unstarted(u.t0 + i * self.user_interval)
                    unstarted += 1
        served = sum(1 for u in self.users if u.completed)
        drain_end = now + DRAIN_S
        while monotonic() < drain_end and any(u.busy for u in self.users):
            gevent.sleep(DRAIN_POLL_S)
        for u in self.users:
            u.close()
        wall = max(1e-9, wall_end - self.cpu_mark[1])
        report = self.stats.to_json()
        report.update(
            ok=True,
            index=self.index,
            engine="locust",
            loop="gevent",
            worker=os.environ.get(NAME_ENV) or f"worker {self.index}",
            host=os.environ.get(HOST_ENV) or stdlib_socket.gethostname(),
            pid=os.getpid(),
            cpu_s=cpu_end - self.cpu_mark[0],
            window_wall_s=wall,
            cpu_pct=100.0 * (cpu_end - self.cpu_mark[0]) / wall,
            start_late_s=self.start_late,
            connecting_at_end=connecting,
            clients=len(self.users),
            clients_served=served,
            pending_requests=len(waiting),
            pending_oldest_s=max(waiting, default=0.0),
            unstarted=unstarted,
            send_lag_n=self.send_lag_n,
            send_lag_mean_s=self.send_lag_sum / self.send_lag_n if self.send_lag_n else 0.0,
            # gevent's timers (libev) wake in whole milliseconds: open-loop sends go out up to ~1 ms late
            coarse_timer=self.open_loop,
            late_starts_generator=self.late_generator,
            wake_lag_max_s=self.wake_lag_max,
            warnings=[],
            loop_errors=len(self.loop_errors),
            loop_error_samples=self.loop_errors[:MAX_KEPT_ERRORS],
            locust_events=dict(self.fired),
            local_addresses=sorted(self.local_addresses),
        )
        runner = self.environment.runner
        # Locust sends its statistics every few seconds; flushing them now,
        # before the report on the same connection, means the master holds
        # every request event of this worker when the report arrives.
        runner._send_stats()
        runner.send_message(REPORT, report)


STATE: WorkerState | None = None


# --------------------------------------------------------------------------
# The users


class SockbenchUser(User):
    """One sockbench client on a gevent socket (see the module docstring). Subclassed per service."""

    abstract = True
    service = ""

    def wait_time(self) -> float:
        return 0.0  # closed loop: the next request as soon as the reply is in; open loop waits in the task

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.sock: Any = None
        self.busy = False
        self.connecting = False
        self.completed = 0
        self.served_on_conn = 0
        self.t_int = self.t_sent = 0.0
        self.state: WorkerState | None = None
        self.file_pos = 0
        self.close_after = False  # the server said this reply is the connection's last
        # Open loop: request i of this user is due at t0 + i * interval; next_i is the next one not yet sent.
        self.t0 = 0.0
        self.next_i = 0
        self.t_due: float | None = None
        self.waited = False

    def on_start(self) -> None:
        state = STATE
        if state is None or state.service != self.service:
            raise RuntimeError(f"{type(self).__name__} started without a {self.service} job from the sockbench master")
        self.state = state
        self.file_pos = len(state.users) % len(state.files) if state.files else 0
        state.users.append(self)
        if state.open_loop:
            # Users interleaved over the workers: local user k of worker w starts at (k * W + w) / rate.
            k = len(state.users) - 1
            self.t0 = state.run_start + (k * state.workers + state.index) / state.spec["rate"]
        wait = state.run_start - monotonic()
        if wait > 0:
            gevent.sleep(wait)
        elif len(state.users) == 1:
            state.start_late = -wait

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass  # already broken: nothing to flush

    @task
    def one_request(self) -> None:
        state = self.state
        assert state is not None
        if state.stopping:
            gevent.sleep(1.0)  # the run is over: idle until Locust stops the user
            return
        try:
            if state.open_loop:
                due = self.t0 + self.next_i * state.user_interval
                if due >= state.window_end:  # the schedule is over: idle until the run stops
                    gevent.sleep(min(1.0, max(0.001, state.window_end - monotonic() + 0.01)))
                    return
                ahead = due - monotonic()
                self.waited = ahead > 0  # free before it was due: any lateness is the generator's
                gevent.sleep(max(0.0, ahead))
                if self.waited and state.stats.in_window(due):
                    state.wake_lag_max = max(state.wake_lag_max, monotonic() - due)
                if state.stopping:
                    return  # woke past the window's end: this one stays unstarted
                if self.sock is None and not self.connect(state):
                    return  # still due: sent (late) once a connection is up, or censored as unstarted
                self.next_i += 1
                self.t_due = due
            elif self.sock is None and not self.connect(state):
                return
            self.request(state)
        except Exception as exc:  # noqa: BLE001 - a generator bug is reported, never silently dropped
            state.loop_error(f"{type(exc).__name__}: {exc} ({traceback.format_exc(limit=1).splitlines()[-1]})")
            self.busy = False
            self.close()

    def connect(self, state: WorkerState) -> bool:
        spec = state.spec
        t0 = monotonic()
        self.connecting = True
        try:
            sock = socket.create_connection((state.ip, spec["port"]), timeout=spec["connect_timeout_s"])
        except OSError as exc:  # every connect failure is data, classified
            self.connecting = False
            state.stats.connect_failed(*classify_connect_error(exc))
            gevent.sleep(RETRY_DELAY_S)
            return False
        self.connecting = False
        state.stats.connect_ok(monotonic() - t0)
        if state.stopping:  # connected after the end of the run: nothing more is sent
            sock.close()
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state.local_addresses.add(sock.getsockname()[0])
        self.sock, self.served_on_conn, self.close_after = sock, 0, False
        self.connected()
        return True

    def connected(self) -> None:
        """A new connection is up: per-connection state of the service starts afresh here."""

    def request(self, state: WorkerState) -> None:
        raise NotImplementedError

    def due_count(self, t: float) -> int:
        """How many of this user's open-loop requests are due before ``t``."""
        interval = self.state.user_interval if self.state is not None else 0.0
        if not interval or t <= self.t0:
            return 0
        return math.ceil((t - self.t0) / interval)

    def run_one(self, state: WorkerState, payload: bytes, name: str, receive: Any) -> None:
        """Send ``payload``, let ``receive(deadline)`` read and check the reply; record the outcome both ways."""
        sock = self.sock
        t = monotonic()
        intended = t if self.t_due is None else self.t_due
        self.t_int, self.t_sent = intended, t
        if self.t_due is not None and state.stats.in_window(intended):
            lag = t - intended
            state.send_lag_sum += lag
            state.send_lag_n += 1
            if lag > LATE_TOLERANCE_S:
                state.stats.late_starts += 1
                state.late_generator += self.waited
        self.busy = True
        deadline = t + state.spec["request_timeout_s"]
        kind = None
        keep = False
        first = t
        nbytes = 0
        try:
            sock.sendall(payload)
            first, nbytes = receive(sock, deadline)
        except Failure as exc:
            kind, keep = exc.kind, exc.keep
        except TimeoutError:
            kind = "timeout"
        except OSError:
            kind = "reset"  # ECONNRESET, EPIPE, ...: the connection was lost with an error
        done = monotonic()
        self.busy = False
        if kind is None:
            self.completed += state.stats.complete(intended, t, first, done, nbytes)
            state.fired["ok"] += 1
            exc_obj = None
        elif self.sock is None and state.stopping:
            return  # closed by the end of the run while waiting: censored at the window end, no outcome
        else:
            if kind == "timeout":
                state.stats.timed_out(intended, done)
            else:
                state.stats.request_error(kind, done)
            state.fired["failed"] += 1
            exc_obj = RequestFailed(kind)
            if not keep:
                self.close()  # a stream in an unknown state cannot carry another request
        self.environment.events.request.fire(
            request_type=self.service,
            name=name,
            response_time=(done - intended) * 1000.0,
            response_length=nbytes,
            exception=exc_obj,
            context={},
        )
        if kind is None or keep:
            self.served_on_conn += 1
            rpc = state.spec["requests_per_connection"]
            if (rpc and self.served_on_conn >= rpc) or self.close_after:
                self.close()


def _recv_into(sock: Any, view: memoryview, deadline: float) -> int:
    """One read bounded by ``deadline`` (monotonic); raises socket.timeout when it passes."""
    left = deadline - monotonic()
    if left <= 0:
        raise TimeoutError("request timeout")
    sock.settimeout(left)
    return sock.recv_into(view)


class EchoUser(SockbenchUser):
    """RFC 862 echo: send the message, expect exactly the same bytes back."""

    service = "echo"

    def request(self, state: WorkerState) -> None:
        msg = state.message
        msg_view = memoryview(msg)
        view = memoryview(state.buffer)

        def receive(sock: Any, deadline: float) -> tuple[float, int]:
            got, first = 0, 0.0
            while got < len(msg):
                # one byte more than is missing: a server that sends too much is caught in the same read
                n = _recv_into(sock, view[: min(len(view), len(msg) - got + 1)], deadline)
                if not n:
                    raise Failure("short" if got else "closed_early")
                if not got:
                    first = monotonic()
                if got + n > len(msg) or view[:n] != msg_view[got : got + n]:
                    raise Failure("corrupt")
                got += n
            return first, got

        self.run_one(state, msg, "echo", receive)


class FileUser(SockbenchUser):
    """File service: send ``<name>\\n``, expect ``OK <size>\\n`` and exactly ``size`` bytes."""

    service = "file"

    def request(self, state: WorkerState) -> None:
        line, size, sha, name = state.files[self.file_pos]
        self.file_pos = (self.file_pos + 1) % len(state.files)
        hasher = hashlib.sha256() if sha and state.take_sample() else None
        buf = state.buffer
        view = memoryview(buf)

        def receive(sock: Any, deadline: float) -> tuple[float, int]:
            header = bytearray()
            first = 0.0
            while True:  # the header, and whatever body came with it
                n = _recv_into(sock, view, deadline)
                if not n:
                    raise Failure("short" if header else "closed_early")
                if not first:
                    first = monotonic()
                nl = buf.find(b"\n", 0, n)
                if nl < 0:
                    header += buf[:n]
                    if len(header) > MAX_HEADER:
                        raise Failure("corrupt")
                    continue
                header += buf[:nl]
                break
            parts = bytes(header).split()
            if not (len(parts) == 2 and parts[0] == b"OK" and parts[1].isdigit() and int(parts[1]) == size):
                if parts and parts[0] == b"ERR":
                    state.stats.err_reply(bytes(header).decode("utf-8", "replace")[:80])
                raise Failure("corrupt")
            left = size
            chunk = view[nl + 1 : n]
            while True:
                if len(chunk) > left:
                    raise Failure("corrupt")  # more bytes than announced
                if hasher is not None:
                    hasher.update(chunk)
                left -= len(chunk)
                if not left:
                    break
                n = _recv_into(sock, view[: min(len(buf), left + 1)], deadline)
                if not n:
                    raise Failure("short")
                chunk = view[:n]
            if hasher is not None and hasher.hexdigest() != sha:
                raise Failure("corrupt")
            return first, size

        self.run_one(state, line, name, receive)


class HttpUser(SockbenchUser):
    """HTTP/1.1 keep-alive ``GET <path>``, parsed with h11, checked by the python engine's rules.

    The rules are those of :class:`bench.loadgen.clients.HttpConnection`: a
    2xx must carry one ``Content-Length`` equal to the path's size and exactly
    that many body bytes, SHA-256 hashed on the sampled fraction; a byte past
    the reply, a reply h11 cannot parse, or a wrong length or hash is
    ``corrupt``. Any other status is a failed request of its class
    (``http_3xx``, ``http_4xx``, ``http_5xx``, the names of
    :data:`bench.vocabulary.HTTP_STATUS_CLASSES`): its body is read and the
    connection kept. A reply that ends the connection (``Connection: close``)
    is followed by a new connection, not counted as an error. Paths are asked
    for in turn from each user's own start, or at random (``path_order``).
    Not Locust's own ``HttpUser``: requests would parse and accept what
    sockbench counts as corrupt.
    """

    service = "http"

    def connected(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)

    def request(self, state: WorkerState) -> None:
        if state.path_rng is not None:
            target, size, sha, name = state.files[state.path_rng.randrange(len(state.files))]
        else:
            target, size, sha, name = state.files[self.file_pos]
            self.file_pos = (self.file_pos + 1) % len(state.files)
        hasher = hashlib.sha256() if sha and state.take_sample() else None
        conn = self.h11
        payload = conn.send(h11.Request(method="GET", target=target, headers=state.http_headers))
        payload += conn.send(h11.EndOfMessage())
        view = memoryview(state.buffer)

        def receive(sock: Any, deadline: float) -> tuple[float, int]:
            got, first, body = 0, 0.0, 0
            failure: str | None = None
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        n = _recv_into(sock, view, deadline)
                        if not n:
                            raise Failure("short" if got else "closed_early")
                        if not got:
                            first = monotonic()
                        got += n
                        conn.receive_data(bytes(view[:n]))
                    elif isinstance(event, h11.Response):
                        status_class = event.status_code // 100
                        if status_class != 2:
                            if not 3 <= status_class <= 5:
                                raise Failure("corrupt")
                            failure = f"http_{status_class}xx"
                        else:
                            lengths = [v for k, v in event.headers if k == b"content-length"]
                            if lengths != [str(size).encode("ascii")]:
                                raise Failure("corrupt")
                    elif isinstance(event, h11.Data):
                        body += len(event.data)
                        if failure is None:
                            if body > size:
                                raise Failure("corrupt")  # more bytes than the file has
                            if hasher is not None:
                                hasher.update(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise Failure("short" if got else "closed_early")
                    # InformationalResponse (1xx): the real reply follows.
            except h11.RemoteProtocolError:
                raise Failure("corrupt") from None
            if conn.trailing_data[0]:
                raise Failure("corrupt")  # bytes nobody asked for, after the reply
            if failure is None and (body != size or (hasher is not None and hasher.hexdigest() != sha)):
                raise Failure("corrupt")
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            else:
                self.close_after = True  # the server closes after this reply: connect anew
            if failure is not None:
                raise Failure(failure, keep=True)
            return first, size

        self.run_one(state, payload, name, receive)


# --------------------------------------------------------------------------
# Wiring into Locust: master and worker sides


def _status(line: dict[str, Any]) -> None:
    fd = os.environ.get(STATUS_FD_ENV)
    if fd:
        write_all(int(fd), (json.dumps(line) + "\n").encode())


@events.init.add_listener
def _on_init(environment: Any, runner: Any = None, **_kw: Any) -> None:
    if isinstance(runner, MasterRunner):
        _master(environment, runner)
    elif isinstance(runner, WorkerRunner):
        runner.send_message(
            HELLO,
            {
                "name": os.environ.get(NAME_ENV) or stdlib_socket.gethostname(),
                "host": os.environ.get(HOST_ENV) or stdlib_socket.gethostname(),
                "pid": os.getpid(),
            },
        )


def _master(environment: Any, runner: Any) -> None:
    job_text = os.environ.get(JOB_ENV)
    if not job_text:
        raise RuntimeError(f"the sockbench master needs its job in ${JOB_ENV} (bench.loadgen.locust_engine sets it)")
    environment.parsed_options.sockbench_job = job_text
    reports: dict[int, dict[str, Any]] = {}
    expected = json.loads(job_text)["workers"]

    def hello(environment: Any, msg: Any, **_kw: Any) -> None:
        _status({"hello": msg.data["name"], "host": msg.data["host"], "pid": msg.data["pid"]})

    def report(environment: Any, msg: Any, **_kw: Any) -> None:
        reports[msg.data["index"]] = msg.data
        if not msg.data.get("ok"):
            _status({"failed": msg.data})
            gevent.spawn(environment.runner.quit)
        elif len(reports) == expected:
            total = environment.runner.stats.total
            _status(
                {
                    "reports": [reports[i] for i in sorted(reports)],
                    "locust_totals": {"requests": total.num_requests, "failures": total.num_failures},
                }
            )
            gevent.spawn(environment.runner.quit)

    runner.register_message(HELLO, hello)
    runner.register_message(REPORT, report)

    @events.test_start.add_listener
    def _start(environment: Any, **_kw: Any) -> None:
        if isinstance(environment.runner, MasterRunner):
            start_wall = time.time() + START_MARGIN_S
            environment.parsed_options.sockbench_start_wall = start_wall
            _status({"start_wall": start_wall})


@events.test_start.add_listener
def _worker_start(environment: Any, **_kw: Any) -> None:
    global STATE
    if not isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    STATE = WorkerState(environment, json.loads(options.sockbench_job), float(options.sockbench_start_wall))
    gevent.spawn(STATE.conduct).link_exception(lambda g: _status_error(g))


def _status_error(greenlet: Any) -> None:
    # A conductor that fails sends the failure as this worker's report, so the master ends the run at once.
    if STATE is not None:
        STATE.environment.runner.send_message(
            REPORT,
            {"ok": False, "index": STATE.index, "error": f"{type(greenlet.exception).__name__}: {greenlet.exception}"},
        )
