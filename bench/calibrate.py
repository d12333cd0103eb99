"""``bench calibrate``: what this machine can do, and how close sockbench's generator gets.

A figure for a Python server means little without two others beside it: what
the machine itself can do on loopback (the *ceiling*), and what the load
generator can drive (if the generator saturates first, the server was never
measured). This module measures both, prints them, and saves them where runs
and reports find them (:func:`load_latest`).

What is measured
----------------
All echo figures use 1 KiB messages, closed loop.

``echo``
    The C reference client (``servers/c/echo_client.c``) against the
    ``c-reference`` server at 1, 10 and 100 connections: the echo ceiling per
    client count. At 1 connection it is also the single-connection round-trip
    rate and latency ceiling.
``generator``
    sockbench's own generator (:func:`bench.loadgen.run_load`) against the
    same server, same points, same run, with its ratio to the C client:
    round trips/s generator / C, and p50 latency generator / C. The goal is
    >= 0.9 at 100 connections and <= 1.1 at one connection.
``connect``
    Connect + 1 KiB request + close, repeated (the C client's connect mode),
    with a few cycles in flight at once.
``bulk``
    One TCP stream on loopback, with ``iperf3`` when installed (said so),
    otherwise the project's own pair: ``os.sendfile`` of a cached file into a
    socket, ``recv_into`` a preallocated buffer on the other side.

Placement
---------
Every figure carries its CPU placement. ``split``: server on the first
allowed CPU, client on the second. ``shared``: both on the first. On small
VMs waking a CPU costs tens of microseconds, so at one connection the two
differ several-fold *for every server*; both are measured there. Other
points use ``split``, the default placement of ``bench run``. The machine's
busy percent before the run is recorded: a process spinning elsewhere
changes these figures 2-4x.

Design
------
One ``c-reference`` server (pinned to the server CPU) serves every echo and
connect measurement, so C client and generator meet the very same server.
Each echo point is measured in :data:`ROUNDS` rounds (``--rounds``); in each
round the C client and the generator run back to back, the C client first in
odd rounds and the generator first in even ones, so neither always meets a
warmer (or more tired) machine. A row gives the median over the rounds, the
per-round values and their spread; the generator's ratios are taken within
each round (one pair, side by side) and their median and range reported.
Connect-mode runs come last: they leave tens of thousands of sockets in
TIME-WAIT. Each measurement is a small function returning a plain dict,
testable alone; :func:`calibrate` strings them together.

The goal's PASS/MISS (:func:`goal_verdict`) is said to be **NOT RELIABLE**,
with the reasons, when it rests on quick mode, fewer than 3 rounds, a
generator-bound or erroring measurement, a busy machine, or rounds whose
ratios fall on both sides of the goal.

Error handling
--------------
No C compiler: every C measurement is skipped with the one-line note from
:func:`servers.native.why_unavailable`, and the bulk figure is still
measured. Generator not importable: those rows are skipped with a note. A
measurement that fails (a program exits non-zero, a timeout) is recorded as
``{"error": ...}`` in its row and reported; the others go on. Nothing here
prints a guess in place of a figure.

Resource handling
-----------------
Every process started here has a timeout and is stopped and reaped: the
server through :func:`servers.launch.run_server`; clients, iperf3 and the
bulk pair through :func:`_reap` in ``finally`` blocks. The bulk pair's file
lives in a temporary folder that is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results import CALIBRATION_FILE as RESULTS_COPY
from bench.results import CALIBRATION_VERSION
from bench.results import load_stored_calibration as load_stored  # noqa: F401 - the copy store_with_results makes
from bench.results import read_calibration as _load
from bench.vocabulary import BUSY_THRESHOLD_PCT, GENERATOR_BOUND_PCT, GENERATOR_BOUND_RULE
from servers import native

#: Where ``bench calibrate`` saves, relative to the current folder (like results/ of bench run).
DEFAULT_DIR = Path("results") / "calibration"
#: The message size of every echo figure: the size the guide and scenarios use.
MESSAGE_BYTES = 1024
#: Client counts of the generator-versus-C comparison: one connection (the
#: latency floor), ten (where models start to differ), a hundred (throughput).
CLIENTS = (1, 10, 100)
#: Concurrent connect+request+close cycles: enough that the rate is not bound
#: by one cycle's latency; more gained nothing on a 2-CPU machine.
CONNECT_SLOTS = 4
#: Listen backlog of the reference server: 100 simultaneous connects must never
#: meet a full accept queue (the kernel caps it at somaxconn anyway).
SERVER_BACKLOG = 1024
#: The generator passes when its round trips/s at 100 connections are >= 0.9x the C
#: client's, and its single-connection p50 within 1.1x of the C client's.
GOAL_RT_RATIO = 0.9
GOAL_P50_RATIO = 1.1
#: Extra seconds a client may take beyond warmup + duration before it is
#: killed: connection setup of 100 sockets and the final drain take milliseconds;
#: this only catches a hang.
CHILD_SLACK_S = 15.0
#: Size of the file the Python bulk sender streams (again and again): large
#: enough that sendfile works in big chunks, small enough to create instantly.
BULK_FILE_BYTES = 8 * 2**20
#: recv_into buffer of the Python bulk receiver, allocated once: each call can
#: drain a good part of the socket's receive buffer, so per-call cost stays small.
BULK_RECV_BYTES = 256 * 1024
#: Idle check before measuring: the machine is "busy" above this percent.
IDLE_THRESHOLD_PCT = BUSY_THRESHOLD_PCT
#: Rounds of the echo comparison (C client and generator alternating who goes first).
#: Three is the fewest with a median that one disturbed round cannot move.
ROUNDS = 3
#: Quick mode's rounds: enough to show both orders; its verdict is never reliable anyway.
QUICK_ROUNDS = 2


class CalibrationError(RuntimeError):
    """One measurement failed; the message says which program and why (exit status, stderr)."""


@dataclass(frozen=True)
class Placement:
    """Where the server side and the client side of a measurement run."""

    name: str
    server_cpus: frozenset[int]
    client_cpus: frozenset[int]

    def describe(self) -> str:
        server = ",".join(map(str, sorted(self.server_cpus)))
        client = ",".join(map(str, sorted(self.client_cpus)))
        return f"server on CPU {server}, client on CPU {client}"


@dataclass(frozen=True)
class Plan:
    """Durations of one calibration."""

    duration_s: float
    warmup_s: float
    quick: bool
    rounds: int = ROUNDS

    @classmethod
    def make(cls, duration_s: float, quick: bool, rounds: int | None = None) -> Plan:
        if duration_s <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {duration_s}")
        if rounds is not None and rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if quick:
            # Quick mode only shows the machinery works: figures are rough.
            return cls(duration_s=min(duration_s, 0.3), warmup_s=0.1, quick=True, rounds=rounds or QUICK_ROUNDS)
        # A quarter of the window, at most 1 s: connections and caches settle in milliseconds.
        return cls(duration_s=duration_s, warmup_s=min(1.0, duration_s / 4), quick=False, rounds=rounds or ROUNDS)


def placements() -> dict[str, Placement]:
    """``split`` and ``shared`` over the CPUs this process may use (``split`` needs two)."""
    cpus = sorted(os.sched_getaffinity(0))
    first = frozenset(cpus[:1])
    result = {}
    if len(cpus) >= 2:
        result["split"] = Placement("split", first, frozenset(cpus[1:2]))
    result["shared"] = Placement("shared", first, first)
    return result


# --------------------------------------------------------------------------
# processes


def _pin(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child before it runs anything (None: no pinning)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _reap(proc: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """Make sure ``proc`` has exited and is reaped: SIGTERM, wait, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _run_json(cmd: list[str], *, cpus: frozenset[int] | None, timeout_s: float, what: str) -> dict[str, Any]:
    """Run ``cmd`` pinned to ``cpus``, return the JSON object it printed last on stdout."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_pin(cpus))
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise CalibrationError(f"{what} did not finish within {timeout_s:.0f} s") from None
    finally:
        _reap(proc)
    result = _last_json(out)
    if proc.returncode != 0 or not isinstance(result, dict):
        tail = err.strip().splitlines()[-5:]
        raise CalibrationError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail) or out[-200:] or 'no output'}")
    return result


# --------------------------------------------------------------------------
# single measurements


def _last_json(out: str) -> Any:
    """The JSON document that is the whole of ``out`` (iperf3) or its last line (our C client); None if neither."""
    for candidate in (out, (out.strip().splitlines() or [""])[-1]):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def run_c_client(binary: Path, host: str, port: int, *, connections: int, duration_s: float, warmup_s: float,
                 cpus: frozenset[int] | None = None, message_bytes: int = MESSAGE_BYTES,
                 connect_mode: bool = False) -> dict[str, Any]:
    """Run the C echo client once; return its JSON line (round_trips, rt_per_s, p50_us, ...)."""
    cmd = [str(binary), "--host", host, "--port", str(port), "--connections", str(connections),
           "--size", str(message_bytes), "--duration", repr(duration_s), "--warmup", repr(warmup_s)]
    if connect_mode:
        cmd.append("--connect-mode")
    return _run_json(cmd, cpus=cpus, timeout_s=warmup_s + duration_s + CHILD_SLACK_S, what="C echo client")


def run_generator(host: str, port: int, *, clients: int, duration_s: float, warmup_s: float,
                  cpus: frozenset[int] | None = None, engine: str = "auto") -> dict[str, Any]:
    """Run sockbench's load generator once against an echo server; return its headline figures."""
    from bench.loadgen import LoadSpec, run_load

    spec = LoadSpec(service="echo", host=host, port=port, clients=clients, duration_s=duration_s,
                    warmup_s=warmup_s, message_bytes=MESSAGE_BYTES, cpus=set(cpus) if cpus else None,
                    engine=engine)
    result = run_load(spec)
    row = result.row
    return {
        "rt_per_s": row["req_per_s"],
        "p50_us": row["lat_p50_us"],
        "p99_us": row["lat_p99_us"],
        "errors": row["errors"],
        "gen_workers": row["gen_workers"],
        "gen_cpu_pct_max": row["gen_cpu_pct_max"],
        "generator_bound": bool(row["generator_bound"]),
        "engine": row["gen_engine"],  # auto: native where it builds (bench.loadgen.engines)
        "loop": result.loop,
        "warnings": list(result.warnings),
    }


def _free_port(host: str) -> int:
    """A port free right now on ``host`` (for iperf3, which cannot report a port the OS picked)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_for_line(proc: subprocess.Popen[bytes], marker: bytes, timeout_s: float) -> None:
    """Read ``proc``'s stdout until a line containing ``marker`` (bounded); raise if it never comes."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise CalibrationError(f"iperf3 server not listening after {timeout_s:.0f} s: {seen[-200:]!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise CalibrationError(f"iperf3 server exited: {seen[-300:].decode(errors='replace')}")
        seen += chunk


def iperf3_version() -> str | None:
    """``iperf 3.x`` when iperf3 is on PATH, else None."""
    exe = shutil.which("iperf3")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or "").splitlines()[:1]
    return first[0].split("(")[0].strip() if first else "iperf3"


def bulk_iperf3(placement: Placement, duration_s: float, host: str = "127.0.0.1") -> dict[str, Any]:
    """One iperf3 TCP stream (client sends, server receives) on loopback."""
    exe = shutil.which("iperf3")
    if exe is None:
        raise CalibrationError("iperf3 is not installed")
    seconds = max(1, round(duration_s))  # iperf3 takes whole seconds, and -t 0 means "forever"
    port = _free_port(host)
    server = subprocess.Popen([exe, "-s", "-1", "--forceflush", "-B", host, "-p", str(port)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              preexec_fn=_pin(placement.server_cpus))
    try:
        _wait_for_line(server, b"Server listening", timeout_s=10)
        report = _run_json([exe, "-c", host, "-p", str(port), "-t", str(seconds), "--json"],
                           cpus=placement.client_cpus, timeout_s=seconds + CHILD_SLACK_S, what="iperf3 client")
    finally:
        _reap(server)
    end = report.get("end", {})
    received = end.get("sum_received", {})
    if "bits_per_second" not in received:
        raise CalibrationError(f"iperf3 printed no result: {report.get('error', 'no end.sum_received')}")
    cpu = end.get("cpu_utilization_percent", {})
    return {
        "gbit_per_s": received["bits_per_second"] / 1e9,
        "bytes": received.get("bytes"),
        "duration_s": received.get("seconds"),
        "client_cpu_pct": cpu.get("host_total"),
        "server_cpu_pct": cpu.get("remote_total"),
    }


def bulk_python(placement: Placement, duration_s: float) -> dict[str, Any]:
    """The project's own bulk pair: sendfile into a socket, recv_into on the other side."""
    with tempfile.TemporaryDirectory(prefix="sockbench-bulk-") as folder:
        path = Path(folder) / "payload"
        path.write_bytes(os.urandom(BULK_FILE_BYTES))
        code = "from bench.calibrate import _bulk_child; _bulk_child()"
        receiver = subprocess.Popen([sys.executable, "-c", code, "recv", repr(duration_s + CHILD_SLACK_S)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, preexec_fn=_pin(placement.server_cpus))
        try:
            assert receiver.stdout is not None
            ready, _, _ = select.select([receiver.stdout], [], [], CHILD_SLACK_S)
            line = receiver.stdout.readline() if ready else ""
            if not line:
                raise CalibrationError("bulk receiver did not start")
            port = json.loads(line)["port"]
            _run_json([sys.executable, "-c", code, "send", str(port), str(path), repr(duration_s)],
                      cpus=placement.client_cpus, timeout_s=duration_s + CHILD_SLACK_S, what="bulk sender")
            out, err = receiver.communicate(timeout=CHILD_SLACK_S)
        except subprocess.TimeoutExpired:
            raise CalibrationError("bulk receiver did not finish") from None
        finally:
            _reap(receiver)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise CalibrationError(f"bulk receiver failed: {err.strip()[-300:]}") from None
    return {"gbit_per_s": result["bytes"] * 8 / result["seconds"] / 1e9, "bytes": result["bytes"],
            "duration_s": result["seconds"]}


def _bulk_child() -> None:
    """Entry point of the Python bulk pair's processes (``recv TIMEOUT`` or ``send PORT FILE SECONDS``)."""
    role, *args = sys.argv[1:]
    if role == "recv":
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(float(args[0]))
            print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
            conn, _ = listener.accept()
        with conn:
            conn.settimeout(float(args[0]))
            buf = bytearray(BULK_RECV_BYTES)
            total = conn.recv_into(buf)
            start = time.perf_counter()  # from the first byte: connection setup is not bulk throughput
            while n := conn.recv_into(buf):
                total += n
            print(json.dumps({"bytes": total, "seconds": time.perf_counter() - start}), flush=True)
    else:
        port, path, seconds = int(args[0]), args[1], float(args[2])
        with socket.create_connection(("127.0.0.1", port)) as sock, open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            deadline = time.perf_counter() + seconds
            offset = 0
            while time.perf_counter() < deadline:
                offset += os.sendfile(sock.fileno(), f.fileno(), offset, size - offset)
                if offset >= size:
                    offset = 0
        print(json.dumps({"ok": True}), flush=True)


#: Name of the fallback bulk tool in results.
PYTHON_BULK_TOOL = "python sendfile->recv_into"


def bulk_tool(use_iperf3: bool = True) -> str:
    """The tool :func:`measure_bulk` will use: iperf3's version string, or the Python pair."""
    return (iperf3_version() if use_iperf3 else None) or PYTHON_BULK_TOOL


def measure_bulk(placement: Placement, duration_s: float, tool: str) -> dict[str, Any]:
    """Bulk throughput on loopback with ``tool`` (from :func:`bulk_tool`)."""
    if tool == PYTHON_BULK_TOOL:
        return bulk_python(placement, duration_s)
    return bulk_iperf3(placement, duration_s)


# --------------------------------------------------------------------------
# the whole calibration


def ratio(numerator: Any, denominator: Any) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    try:
        return float(numerator) / float(denominator) if denominator else None
    except (TypeError, ValueError):
        return None


def _measure(cal: dict[str, Any], plan: Plan, label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Wait (briefly, bounded) for an idle machine, run one measurement, record how busy the machine was.

    On failure the row is ``{"error": ...}`` and a note says what failed; the calibration goes on.
    """
    from bench.monitor import wait_for_idle

    # Quick mode: one short look. Otherwise up to 3 s for a neighbour's burst to pass.
    busy, _ = wait_for_idle(IDLE_THRESHOLD_PCT, max_wait_s=0.05 if plan.quick else 3.0, sample_s=0.3)
    try:
        row = fn()
    except Exception as exc:  # noqa: BLE001 -- any failure of one measurement is recorded, the rest go on
        cal["notes"].append(f"{label}: {exc}")
        row = {"error": str(exc)}
    row["busy_pct_before"] = round(busy, 1)
    row["label"] = label
    return row


def _progress_line(row: dict[str, Any]) -> str:
    """One line per finished measurement: its label, headline figures, and what went wrong."""
    if "error" in row:
        return f"{row['label']:<26} FAILED: {row['error'].splitlines()[0]}"
    parts = [row["label"].ljust(26)]
    if "gbit_per_s" in row:
        parts.append(f"{row['gbit_per_s']:.1f} Gbit/s")
    else:
        parts.append(f"{_fmt(row.get('rt_per_s'), '{:,.0f}')}/s  p50 {_fmt(row.get('p50_us'), '{:.0f}')} us")
    if row.get("rt_ratio") is not None:
        parts.append(f"= {row['rt_ratio']:.2f}x the C client")
    if row.get("generator_bound"):
        parts.append("GENERATOR-BOUND")
    if row["busy_pct_before"] >= IDLE_THRESHOLD_PCT:
        parts.append(f"(machine {row['busy_pct_before']:.0f}% busy before)")
    return "  ".join(parts)


def _busy_note(cal: dict[str, Any]) -> None:
    """One note naming every figure measured right after the machine was found busy."""
    rows = [*cal["echo"], *cal["generator"], *cal.get("generator_python", []), *cal["connect"], *cal["bulk"]["points"]]
    busy = [f"{r['label']} ({r['busy_pct_before']:.0f}%)" for r in rows
            if (r.get("busy_pct_before") or 0) >= IDLE_THRESHOLD_PCT]
    if busy:
        cal["notes"].append(f"the machine was busy (>= {IDLE_THRESHOLD_PCT:.0f}%) just before: {', '.join(busy)}; "
                            "another process competed for the CPUs and these figures may be 2-4x off")


@contextlib.contextmanager
def reference_server(cpus: frozenset[int]) -> Iterator[Any]:
    """The ``c-reference`` echo server, pinned to ``cpus``, via :func:`servers.launch.run_server`."""
    from servers.config import ServerOptions
    from servers.launch import run_server

    with run_server("c-reference", "echo", ServerOptions(backlog=SERVER_BACKLOG), cpus=set(cpus)) as server:
        yield server


def _echo_points(places: dict[str, Placement]) -> list[tuple[int, Placement]]:
    """(clients, placement) of the echo comparison: every client count split, and 1 also shared."""
    default = places.get("split", places["shared"])
    points = [(clients, default) for clients in CLIENTS]
    if "split" in places:
        points.insert(1, (1, places["shared"]))
    return points


def measure_echo_and_generator(binary: Path, server: Any, places: dict[str, Placement], plan: Plan,
                               cal: dict[str, Any], say: Callable[[str], None]) -> None:
    """Fill ``cal["echo"]`` and ``cal["generator"]``: C client and generator, alternating, ``plan.rounds`` times.

    Rounds are outermost, so a point's rounds are spread over the whole
    calibration rather than run back to back. The generator is the default
    engine (native where it builds); when that is native, the python engine
    is measured in the same rounds too (``cal["generator_python"]``), last in
    rounds where the C client goes first and first otherwise.
    """
    from bench.loadgen import engines

    generator_ok = _generator_importable(cal["notes"])
    also_python = generator_ok and engines.resolve("auto")[0] == "native"
    points = _echo_points(places)
    c_rounds: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(points))}
    g_rounds: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(points))}
    p_rounds: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(points))}
    for rnd in range(1, plan.rounds + 1):
        c_first = rnd % 2 == 1
        for i, (clients, place) in enumerate(points):
            def c_client(clients: int = clients, place: Placement = place) -> dict[str, Any]:
                return _measure(cal, plan, f"C client {clients} conn {place.name} r{rnd}",
                                lambda: run_c_client(binary, server.host, server.port, connections=clients,
                                                     duration_s=plan.duration_s, warmup_s=plan.warmup_s,
                                                     cpus=place.client_cpus))

            def generator(clients: int = clients, place: Placement = place, engine: str = "auto") -> dict[str, Any]:
                name = "generator" if engine == "auto" else f"{engine} engine"
                return _measure(cal, plan, f"{name} {clients} conn {place.name} r{rnd}",
                                lambda: run_generator(server.host, server.port, clients=clients,
                                                      duration_s=plan.duration_s, warmup_s=plan.warmup_s,
                                                      cpus=place.client_cpus, engine=engine))

            order = ["c", "generator"] if c_first or not generator_ok else ["generator", "c"]
            if also_python:
                order = order + ["python"] if c_first else ["python"] + order
            got: dict[str, dict[str, Any]] = {}
            for who in order:
                if who == "generator" and not generator_ok:
                    continue
                got[who] = c_client() if who == "c" else generator() if who == "generator" else generator(engine=who)
                say(_progress_line(got[who]))
            c = dict(got["c"], round=rnd, order=" then ".join(order) if generator_ok else "c")
            c_rounds[i].append(c)
            for who, kept in (("generator", g_rounds), ("python", p_rounds)):
                if who in got:
                    g = got[who]
                    g.update(round=rnd, order=c["order"], rt_ratio=ratio(g.get("rt_per_s"), c.get("rt_per_s")),
                             p50_ratio=ratio(g.get("p50_us"), c.get("p50_us")))
                    kept[i].append(g)
    for i, (clients, place) in enumerate(points):
        where = {"clients": clients, "placement": place.name, "message_bytes": MESSAGE_BYTES}
        c = combine_rounds(c_rounds[i], ("rt_per_s", "p50_us", "p99_us"))
        cal["echo"].append({**where, **c})
        for kept, key in ((g_rounds, "generator"), (p_rounds, "generator_python")):
            if kept[i]:
                g = combine_rounds(kept[i], ("rt_per_s", "p50_us", "p99_us", "rt_ratio", "p50_ratio",
                                             "gen_cpu_pct_max"))
                g.update(c_rt_per_s=c.get("rt_per_s"), c_p50_us=c.get("p50_us"))
                cal.setdefault(key, []).append({**where, **g})


def combine_rounds(rounds: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """One row from a point's rounds: the median of each of ``keys``, its [min, max], and every round.

    Rounds that failed are kept in ``rounds`` and named in ``error``; the
    medians are over the rounds that worked. Flags are summed or or-ed:
    ``errors`` (failed requests), ``generator_bound`` (any round), and the
    busiest ``busy_pct_before``.
    """
    import statistics

    ok = [r for r in rounds if "error" not in r]
    row: dict[str, Any] = {"rounds": rounds, "n_rounds": len(ok)}
    if not ok:
        row["error"] = "; ".join(f"round {r.get('round')}: {r['error']}" for r in rounds) or "not measured"
    for key in keys:
        values = [float(r[key]) for r in ok if r.get(key) is not None]
        if values:
            row[key] = statistics.median(values)
            row[f"{key}_range"] = [min(values), max(values)]
    for key, value in ok[0].items() if ok else ():
        if key not in row and key not in keys and key not in ("round", "order", "label", "busy_pct_before"):
            row[key] = value  # per-run facts that do not vary (mode, loop, gen_workers...)
    if any("errors" in r for r in ok):
        row["errors"] = sum(int(r.get("errors") or 0) for r in ok)
    if any("generator_bound" in r for r in ok):
        row["generator_bound"] = any(bool(r.get("generator_bound")) for r in ok)
    failed = [r for r in rounds if "error" in r]
    if failed and ok:
        row["failed_rounds"] = len(failed)
    row["busy_pct_before"] = max((r.get("busy_pct_before") or 0.0) for r in rounds) if rounds else None
    row["label"] = (rounds[0]["label"].rsplit(" r", 1)[0] if rounds else "")
    return row


def _generator_importable(notes: list[str]) -> bool:
    try:
        import bench.loadgen  # noqa: F401
    except ImportError as exc:
        notes.append(f"generator not measured: bench.loadgen cannot be imported ({exc})")
        return False
    return True


def measure_connect(binary: Path, server: Any, places: dict[str, Placement], plan: Plan, cal: dict[str, Any],
                    say: Callable[[str], None]) -> None:
    """Fill ``cal["connect"]``: connect + request + close rate, every placement."""
    for place in places.values():
        r = _measure(cal, plan, f"connect rate {place.name}",
                     lambda: run_c_client(binary, server.host, server.port, connections=CONNECT_SLOTS,
                                          duration_s=plan.duration_s, warmup_s=plan.warmup_s,
                                          cpus=place.client_cpus, connect_mode=True))
        cal["connect"].append({"placement": place.name, "message_bytes": MESSAGE_BYTES, **r})
        say(_progress_line(r))


def measure_bulk_all(places: dict[str, Placement], plan: Plan, cal: dict[str, Any], say: Callable[[str], None],
                     *, use_iperf3: bool = True) -> None:
    """Fill ``cal["bulk"]``: one stream's throughput, every placement."""
    # iperf3 counts whole seconds; quick mode keeps it to one.
    seconds = 1.0 if plan.quick else plan.duration_s
    tool = cal["bulk"]["tool"] = bulk_tool(use_iperf3)
    for place in places.values():
        r = _measure(cal, plan, f"bulk {place.name}", lambda: measure_bulk(place, seconds, tool))
        cal["bulk"]["points"].append({"placement": place.name, **r})
        say(_progress_line(r))


def goal_verdict(cal: dict[str, Any]) -> dict[str, Any]:
    """The goal, judged on the split placement (the default of bench run), or shared without it.

    ``verdict`` is PASS, MISS or NOT MEASURED, from the medians over the
    rounds; ``*_range`` gives each ratio's [min, max] over the rounds;
    ``reliable`` is False, with ``unreliable_because``, when the verdict
    rests on quick mode, fewer than 3 rounds, a generator-bound or erroring
    measurement, a busy machine, or rounds on both sides of the goal.
    """
    rows = cal["generator"]
    place = "split" if any(r["placement"] == "split" for r in rows) else "shared"
    at = {r["clients"]: r for r in rows if r["placement"] == place}
    g100, g1 = at.get(100, {}), at.get(1, {})
    rt, p50 = g100.get("rt_ratio"), g1.get("p50_ratio")
    goal = {"placement": place, "rt_ratio_at_100": rt, "rt_ratio_min": GOAL_RT_RATIO,
            "p50_ratio_at_1": p50, "p50_ratio_max": GOAL_P50_RATIO,
            "rt_ratio_at_100_range": g100.get("rt_ratio_range"), "p50_ratio_at_1_range": g1.get("p50_ratio_range")}
    if rt is None or p50 is None:
        goal["verdict"] = "NOT MEASURED"
        goal["reliable"], goal["unreliable_because"] = False, ["not measured"]
        return goal
    goal["verdict"] = "PASS" if rt >= GOAL_RT_RATIO and p50 <= GOAL_P50_RATIO else "MISS"
    echo = {(r["clients"], r["placement"]): r for r in cal.get("echo") or []}
    why = []
    if cal.get("quick"):
        why.append("quick mode (0.3 s windows)")
    rounds = min(int(g100.get("n_rounds", 1)), int(g1.get("n_rounds", 1)))
    if rounds < ROUNDS:
        why.append(f"{rounds} round{'s' if rounds != 1 else ''} (at least {ROUNDS} needed)")
    involved = [g100, g1, echo.get((100, place), {}), echo.get((1, place), {})]
    if any(r.get("generator_bound") for r in involved):
        why.append(f"generator-bound: a generator worker used more than {GENERATOR_BOUND_PCT:g}% of a core")
    if any(r.get("errors") or r.get("failed_rounds") or "error" in r for r in involved):
        why.append("errors during the measurement")
    busiest = max([r.get("busy_pct_before") or 0.0 for r in involved] + [
        (cal.get("machine") or {}).get("busy_pct_before") or 0.0])
    if busiest >= IDLE_THRESHOLD_PCT:
        why.append(f"busy machine (up to {busiest:.0f}% before a measurement)")
    lo_rt, hi_rt = goal["rt_ratio_at_100_range"] or (rt, rt)
    lo_p50, hi_p50 = goal["p50_ratio_at_1_range"] or (p50, p50)
    if (lo_rt < GOAL_RT_RATIO <= hi_rt) or (lo_p50 <= GOAL_P50_RATIO < hi_p50):
        why.append("the rounds fall on both sides of the goal")
    goal["reliable"], goal["unreliable_because"] = not why, why
    return goal


def _skeleton(plan: Plan, places: dict[str, Placement]) -> dict[str, Any]:
    return {
        "version": CALIBRATION_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": plan.quick,
        "rounds": plan.rounds,
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "message_bytes": MESSAGE_BYTES,
        "machine": {
            "hostname": socket.gethostname(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "cpus_allowed": sorted(os.sched_getaffinity(0)),
            "busy_pct_before": None,
        },
        "placements": {name: {"server_cpus": sorted(p.server_cpus), "client_cpus": sorted(p.client_cpus),
                              "description": p.describe()} for name, p in places.items()},
        "c_programs": {"available": False, "note": native.why_unavailable(), "compiler": native.compiler()},
        "echo": [],
        "generator": [],
        "generator_python": [],
        "connect": [],
        "bulk": {"tool": None, "points": []},
        "goal": {},
        "notes": [],
    }


def _idle_check(cal: dict[str, Any], plan: Plan, say: Callable[[str], None]) -> None:
    from bench.monitor import wait_for_idle

    # Up to 10 s for the machine to calm down; each measurement checks again (see _measure).
    busy, idle = wait_for_idle(IDLE_THRESHOLD_PCT, max_wait_s=0.5 if plan.quick else 10.0)
    cal["machine"]["busy_pct_before"] = round(busy, 1)
    if not idle:
        say(f"warning: the machine is {busy:.0f}% busy: another process competes for the CPUs; "
            "figures may be 2-4x off (each is marked)")


def calibrate(out_dir: Path | None = None, duration_s: float = 3.0, quick: bool = False, *,
              progress: Callable[[str], None] | None = None, save_results: bool = True,
              use_iperf3: bool = True, rounds: int | None = None) -> dict[str, Any]:
    """Measure everything (see the module docstring), save it under ``out_dir``, and return it.

    ``out_dir`` defaults to ``results/calibration``; ``progress`` receives one
    line per finished measurement. ``quick`` shortens every window to 0.3 s
    (rough figures; for tests and a first look). ``rounds``: echo rounds
    (default :data:`ROUNDS`, :data:`QUICK_ROUNDS` in quick mode).
    """
    say = progress or (lambda _line: None)
    plan = Plan.make(duration_s, quick, rounds)
    places = placements()
    cal = _skeleton(plan, places)
    if "split" not in places:
        cal["notes"].append("only one CPU is available: split placement not measured")
    _idle_check(cal, plan, say)

    binaries = _build_c_programs(cal, say)
    if binaries:
        server_cpus = places["shared"].server_cpus
        try:
            with reference_server(server_cpus) as server:
                measure_echo_and_generator(binaries["client"], server, places, plan, cal, say)
                measure_connect(binaries["client"], server, places, plan, cal, say)
        except Exception as exc:  # noqa: BLE001 -- a server that fails to start is a note, bulk still runs
            cal["notes"].append(f"c-reference server: {exc}")
    measure_bulk_all(places, plan, cal, say, use_iperf3=use_iperf3)
    _busy_note(cal)
    cal["goal"] = goal_verdict(cal)
    if save_results:
        cal["saved_as"] = str(save(cal, out_dir))
    return cal


def _build_c_programs(cal: dict[str, Any], say: Callable[[str], None]) -> dict[str, Path] | None:
    """Compile (or find cached) the C server and client; None with a note when unavailable."""
    try:
        server, client = native.build("echo_server"), native.build("echo_client")
    except native.NativeBuildError as exc:
        cal["c_programs"]["note"] = f"C programs failed to compile: {exc}"
        cal["notes"].append(cal["c_programs"]["note"])
        return None
    if server is None or client is None:
        note = native.why_unavailable() or "C programs unavailable"
        cal["c_programs"]["note"] = note
        cal["notes"].append(note + "; generator calibration and C ceilings not measured")
        say(note)
        return None
    cal["c_programs"]["available"] = True
    return {"server": server, "client": client}


# --------------------------------------------------------------------------
# saving and loading


def save(cal: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write ``<UTC timestamp>.json`` and ``latest.json`` in ``out_dir``; return the first."""
    folder = Path(out_dir) if out_dir is not None else DEFAULT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stamp}.json"
    n = 1
    while path.exists():  # two calibrations in one second keep both
        n += 1
        path = folder / f"{stamp}-{n}.json"
    text = json.dumps(cal, indent=2) + "\n"
    _write_atomic(path, text)
    _write_atomic(folder / "latest.json", text)
    return path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_latest(out_dir: Path | None = None) -> dict[str, Any] | None:
    """The last saved calibration, or None when there is none (or it cannot be read)."""
    return _load((Path(out_dir) if out_dir is not None else DEFAULT_DIR) / "latest.json")




def store_with_results(results_dir: Path, source_dir: Path | None = None) -> Path | None:
    """Copy the latest calibration into ``results_dir`` (``calibration.json``); None when there is none.

    The report compares runs with the ceiling measured on the machine they
    ran on: copied at run time, the ceiling travels with the results instead
    of being whatever ``latest.json`` the report's current folder holds later.
    """
    cal = load_latest(source_dir)
    if cal is None:
        return None
    source = (Path(source_dir) if source_dir is not None else DEFAULT_DIR) / "latest.json"
    cal = {**cal, "copied_from": str(source.resolve()),
           "copied_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    path = Path(results_dir) / RESULTS_COPY
    _write_atomic(path, json.dumps(cal, indent=2) + "\n")
    return path


def echo_ceiling(cal: dict[str, Any] | None, clients: int, placement: str = "split") -> dict[str, Any] | None:
    """The C client's echo figures at ``clients`` connections and ``placement``, or None if not measured."""
    for row in (cal or {}).get("echo", []):
        if row.get("clients") == clients and row.get("placement") == placement and "error" not in row:
            return row
    return None


# --------------------------------------------------------------------------
# printing and the command line


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def _generator_table(cal: dict[str, Any], key: str) -> Any:
    """The rich table of ``cal[key]`` (one engine's rows) beside the C client's."""
    from rich import box
    from rich.table import Table

    loops = sorted({str(g["loop"]) for g in cal[key] if g.get("loop")})
    engines = sorted({str(g["engine"]) for g in cal[key] if g.get("engine")})
    name = f"Generator ({', '.join(engines)} engine)" if engines else "Generator"
    rounds = cal.get("rounds", 1)
    table = Table(title=f"{name} vs C client, {cal['message_bytes']} B echo, c-reference server, median of "
                        f"{rounds} round{'s' if rounds != 1 else ''}",
                  caption=f"generator event loop: {', '.join(loops) or '-'}; gen/C: median of the rounds' ratios (C "
                          "client and generator alternate who goes first); gen CPU: its busiest worker, % of a "
                          f"core; * generator-bound ({GENERATOR_BOUND_RULE}): the generator, not the "
                          "server, set that figure",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("conns", "place", "C rt/s", "gen rt/s", "gen/C", "C p50", "gen p50", "gen/C", "gen CPU"):
        table.add_column(col, justify="right", no_wrap=True)
    gen = {(r["clients"], r["placement"]): r for r in cal[key]}
    for c in cal["echo"]:
        g = gen.get((c["clients"], c["placement"]), {})
        bound = "*" if g.get("generator_bound") else ""
        table.add_row(str(c["clients"]), c["placement"], _fmt(c.get("rt_per_s"), "{:,.0f}"),
                      _fmt(g.get("rt_per_s"), "{:,.0f}"), _fmt(g.get("rt_ratio"), "{:.2f}"),
                      _fmt(c.get("p50_us"), "{:.0f} us"), _fmt(g.get("p50_us"), "{:.0f} us"),
                      _fmt(g.get("p50_ratio"), "{:.2f}"), _fmt(g.get("gen_cpu_pct_max"), "{:.0f}%") + bound)
    return table


def render(cal: dict[str, Any], console: Any) -> None:
    """Print ``cal`` as rich tables (fitting 80 columns: each engine's, the ceilings), the placements, the goal line and the notes."""
    from rich import box
    from rich.table import Table

    console.print(_generator_table(cal, "generator"))
    if cal.get("generator_python"):
        console.print(_generator_table(cal, "generator_python"))
    if any(g.get("rounds") for g in cal["generator"]):
        spread = Table(title="Spread over the rounds (min-max of each round's gen/C)", box=box.SIMPLE_HEAD,
                       show_edge=False, pad_edge=False)
        for col in ("conns", "place", "rounds", "rt/s gen/C", "p50 gen/C", "C rt/s"):
            spread.add_column(col, justify="right", no_wrap=True)
        echo = {(r["clients"], r["placement"]): r for r in cal["echo"]}
        for g in cal["generator"]:
            c = echo.get((g["clients"], g["placement"]), {})
            c_range = c.get("rt_per_s_range")
            spread.add_row(str(g["clients"]), g["placement"], str(g.get("n_rounds", "-")), _range(g, "rt_ratio"),
                           _range(g, "p50_ratio"),
                           f"{c_range[0]:,.0f}-{c_range[1]:,.0f}" if c_range else "-")
        console.print(spread)

    ceilings = Table(title="Machine ceilings on loopback", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                     caption=f"echo and connect: C client + c-reference; bulk: {cal['bulk']['tool']}")
    for col in ("figure", "place", "rate", "p50", "p99"):
        ceilings.add_column(col, justify="left" if col == "figure" else "right", no_wrap=True)
    for c in cal["echo"]:
        if c["clients"] == 1:
            ceilings.add_row("1-connection request/response", c["placement"], _fmt(c.get("rt_per_s"), "{:,.0f}/s"),
                             _fmt(c.get("p50_us"), "{:.0f} us"), _fmt(c.get("p99_us"), "{:.0f} us"))
    for c in cal["connect"]:
        ceilings.add_row(f"connect+request+close, {CONNECT_SLOTS} at once", c["placement"],
                         _fmt(c.get("rt_per_s"), "{:,.0f}/s"), _fmt(c.get("p50_us"), "{:.0f} us"),
                         _fmt(c.get("p99_us"), "{:.0f} us"))
    for b in cal["bulk"]["points"]:
        ceilings.add_row("bulk, one TCP stream", b["placement"], _fmt(b.get("gbit_per_s"), "{:.1f} Gbit/s"), "", "")
    console.print(ceilings)
    for name, place in cal["placements"].items():
        console.print(f"  {name}: {place['description']}")
    console.print(goal_line(cal["goal"]))
    for note in cal["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False, markup=True)


def _range(row: dict[str, Any], key: str) -> str:
    """'0.74-0.81': a ratio's range over the rounds."""
    spread = row.get(f"{key}_range")
    return f"{spread[0]:.2f}-{spread[1]:.2f}" if spread else "-"


def goal_line(goal: dict[str, Any]) -> str:
    """The line that states the goal, the medians and spread over the rounds, and whether it was reached."""
    verdict = goal.get("verdict", "NOT MEASURED")
    reliable = goal.get("reliable", verdict != "NOT MEASURED")
    colour = {"PASS": "green", "MISS": "red"}.get(verdict, "yellow") if reliable else "yellow"

    def got(key: str) -> str:
        spread = goal.get(f"{key}_range")
        around = f", rounds {spread[0]:.2f}-{spread[1]:.2f}" if spread else ""
        return f"median {_fmt(goal.get(key), '{:.2f}')}x{around}"

    line = (f"Goal ({goal.get('placement', '-')}): generator >= {GOAL_RT_RATIO}x C client rt/s at 100 connections "
            f"(got {got('rt_ratio_at_100')}) and 1-connection p50 <= {GOAL_P50_RATIO}x "
            f"(got {got('p50_ratio_at_1')}): [bold {colour}]{verdict}[/]")
    if verdict != "NOT MEASURED" and not reliable:
        line += f" [bold yellow]NOT RELIABLE[/]: {'; '.join(goal.get('unreliable_because') or [])}"
    return line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench calibrate``."""
    parser.add_argument("--duration", type=float, default=3.0, metavar="SECONDS",
                        help="measured window of each figure (default 3; a warmup of a quarter of it, at most 1 s, "
                             "comes first)")
    parser.add_argument("--quick", action="store_true",
                        help="0.3 s per figure: a rough look in about 15 s (figures are noisy)")
    parser.add_argument("--rounds", type=int, default=None, metavar="N",
                        help=f"rounds of the generator-vs-C comparison, alternating which goes first (default "
                             f"{ROUNDS}; {QUICK_ROUNDS} with --quick); the verdict needs {ROUNDS}")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, metavar="DIR",
                        help=f"where to save <timestamp>.json and latest.json (default {DEFAULT_DIR})")
    parser.add_argument("--no-iperf3", action="store_true",
                        help="measure bulk throughput with the project's own sendfile/recv_into pair even when "
                             "iperf3 is installed")


def run(args: argparse.Namespace) -> int:
    """``bench calibrate``: measure, print, save; 0 on success, 2 on bad input."""
    from rich.console import Console

    console = Console()
    if args.duration <= 0:
        print(f"error: --duration must be > 0 seconds, got {args.duration}", file=sys.stderr)
        return 2
    if args.rounds is not None and args.rounds < 1:
        print(f"error: --rounds must be >= 1, got {args.rounds}", file=sys.stderr)
        return 2
    plan = Plan.make(args.duration, args.quick, args.rounds)
    # 8 measured windows per round (4 C client, 4 generator), then 2 connect and 2 bulk, ~1 s of start-up each.
    estimate = (8 * plan.rounds + 4) * (plan.duration_s + plan.warmup_s + 1.0)
    console.print(f"Calibrating (about {estimate:.0f} s); keep the machine otherwise idle.")
    cal = calibrate(args.out, args.duration, args.quick, progress=console.print, use_iperf3=not args.no_iperf3,
                    rounds=args.rounds)
    render(cal, console)
    console.print(f"Saved: {cal['saved_as']} (and latest.json beside it)")
    return 0
