"""Measuring a calibration: the C client, sockbench's generator and bulk tools against loopback.

What is measured, in which order and why is the package's essay
(:mod:`bench.calibration`). :func:`calibrate` strings the measurements
together and hands the result to :func:`bench.calibration.persist.save`; each
measurement is a small function returning a plain dict, testable alone.
Nothing here prints tables: ``progress`` receives one plain line per
finished measurement.
"""

from __future__ import annotations

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

from bench.calibration.persist import save
from bench.placement import can_split, placement_cpus
from bench.results import FORMAT_KEY, FORMAT_VERSIONS
from bench.vocabulary import BUSY_THRESHOLD_PCT, GENERATOR_BOUND_PCT, generator_short_of_cpu
from servers import native
from servers.processes import popen_killer

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


def placements(cpus: list[int] | None = None) -> dict[str, Placement]:
    """``split`` and ``shared`` over ``cpus`` (default: those this process may use), as
    :func:`bench.placement.placement_cpus` defines them; ``split`` only with two CPUs or more."""
    result = {}
    for name in ("split", "shared"):
        if name == "split" and not can_split(cpus):
            continue
        server, client = placement_cpus(name, cpus)
        assert server is not None and client is not None  # only "none" leaves them unpinned
        result[name] = Placement(name, frozenset(server), frozenset(client))
    return result


# --------------------------------------------------------------------------
# processes


def _pin(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child before it runs anything (None: no pinning)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _run_json(cmd: list[str], *, cpus: frozenset[int] | None, timeout_s: float, what: str) -> dict[str, Any]:
    """Run ``cmd`` pinned to ``cpus``, return the JSON object it printed last on stdout."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_pin(cpus)
    )
    with popen_killer(proc):
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise CalibrationError(f"{what} did not finish within {timeout_s:.0f} s") from None
    result = _last_json(out)
    if proc.returncode != 0 or not isinstance(result, dict):
        tail = err.strip().splitlines()[-5:]
        raise CalibrationError(
            f"{what} failed (exit {proc.returncode}): {' | '.join(tail) or out[-200:] or 'no output'}"
        )
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


def run_c_client(
    binary: Path,
    host: str,
    port: int,
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    cpus: frozenset[int] | None = None,
    message_bytes: int = MESSAGE_BYTES,
    connect_mode: bool = False,
) -> dict[str, Any]:
    """Run the C echo client once; return its JSON line (round_trips, rt_per_s, p50_us, ...)."""
    cmd = [
        str(binary),
        "--host",
        host,
        "--port",
        str(port),
        "--connections",
        str(connections),
        "--size",
        str(message_bytes),
        "--duration",
        repr(duration_s),
        "--warmup",
        repr(warmup_s),
    ]
    if connect_mode:
        cmd.append("--connect-mode")
    return _run_json(cmd, cpus=cpus, timeout_s=warmup_s + duration_s + CHILD_SLACK_S, what="C echo client")


def run_generator(
    host: str,
    port: int,
    *,
    clients: int,
    duration_s: float,
    warmup_s: float,
    cpus: frozenset[int] | None = None,
    engine: str = "auto",
) -> dict[str, Any]:
    """Run sockbench's load generator once against an echo server; return its headline figures."""
    from bench.loadgen import LoadSpec, run_load

    spec = LoadSpec(
        service="echo",
        host=host,
        port=port,
        clients=clients,
        duration_s=duration_s,
        warmup_s=warmup_s,
        message_bytes=MESSAGE_BYTES,
        cpus=set(cpus) if cpus else None,
        engine=engine,
    )
    result = run_load(spec)
    row = result.row
    return {
        "rt_per_s": row["req_per_s"],
        "p50_us": row["lat_p50_us"],
        "p99_us": row["lat_p99_us"],
        "errors": row["errors"],
        "gen_workers": row["gen_workers"],
        "gen_cpu_pct_max": row["gen_cpu_pct_max"],
        # the generator is what calibrate measures: short of CPU is what makes its figure its own limit
        "generator_bound": generator_short_of_cpu(row["gen_busy_pct_max"], row["gen_runq_wait_pct_max"]),
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
    server = subprocess.Popen(
        [exe, "-s", "-1", "--forceflush", "-B", host, "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_pin(placement.server_cpus),
    )
    with popen_killer(server):
        _wait_for_line(server, b"Server listening", timeout_s=10)
        report = _run_json(
            [exe, "-c", host, "-p", str(port), "-t", str(seconds), "--json"],
            cpus=placement.client_cpus,
            timeout_s=seconds + CHILD_SLACK_S,
            what="iperf3 client",
        )
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
        code = "from bench.calibration.measure import _bulk_child; _bulk_child()"
        receiver = subprocess.Popen(
            [sys.executable, "-c", code, "recv", repr(duration_s + CHILD_SLACK_S)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_pin(placement.server_cpus),
        )
        with popen_killer(receiver):
            assert receiver.stdout is not None
            ready, _, _ = select.select([receiver.stdout], [], [], CHILD_SLACK_S)
            line = receiver.stdout.readline() if ready else ""
            if not line:
                raise CalibrationError("bulk receiver did not start")
            port = json.loads(line)["port"]
            _run_json(
                [sys.executable, "-c", code, "send", str(port), str(path), repr(duration_s)],
                cpus=placement.client_cpus,
                timeout_s=duration_s + CHILD_SLACK_S,
                what="bulk sender",
            )
            try:
                out, err = receiver.communicate(timeout=CHILD_SLACK_S)
            except subprocess.TimeoutExpired:
                raise CalibrationError("bulk receiver did not finish") from None
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise CalibrationError(f"bulk receiver failed: {err.strip()[-300:]}") from None
    return {
        "gbit_per_s": result["bytes"] * 8 / result["seconds"] / 1e9,
        "bytes": result["bytes"],
        "duration_s": result["seconds"],
    }


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


def fmt_value(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec`` (a ``str.format`` pattern), ``-`` when not measured."""
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def _progress_line(row: dict[str, Any]) -> str:
    """One line per finished measurement: its label, headline figures, and what went wrong."""
    if "error" in row:
        return f"{row['label']:<26} FAILED: {row['error'].splitlines()[0]}"
    parts = [row["label"].ljust(26)]
    if "gbit_per_s" in row:
        parts.append(f"{row['gbit_per_s']:.1f} Gbit/s")
    else:
        parts.append(f"{fmt_value(row.get('rt_per_s'), '{:,.0f}')}/s  p50 {fmt_value(row.get('p50_us'), '{:.0f}')} us")
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
    busy = [
        f"{r['label']} ({r['busy_pct_before']:.0f}%)"
        for r in rows
        if (r.get("busy_pct_before") or 0) >= IDLE_THRESHOLD_PCT
    ]
    if busy:
        cal["notes"].append(
            f"the machine was busy (>= {IDLE_THRESHOLD_PCT:.0f}%) just before: {', '.join(busy)}; "
            "another process competed for the CPUs and these figures may be 2-4x off"
        )


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


def measure_echo_and_generator(
    binary: Path, server: Any, places: dict[str, Placement], plan: Plan, cal: dict[str, Any], say: Callable[[str], None]
) -> None:
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
                return _measure(
                    cal,
                    plan,
                    f"C client {clients} conn {place.name} r{rnd}",
                    lambda: run_c_client(
                        binary,
                        server.host,
                        server.port,
                        connections=clients,
                        duration_s=plan.duration_s,
                        warmup_s=plan.warmup_s,
                        cpus=place.client_cpus,
                    ),
                )

            def generator(clients: int = clients, place: Placement = place, engine: str = "auto") -> dict[str, Any]:
                name = "generator" if engine == "auto" else f"{engine} engine"
                return _measure(
                    cal,
                    plan,
                    f"{name} {clients} conn {place.name} r{rnd}",
                    lambda: run_generator(
                        server.host,
                        server.port,
                        clients=clients,
                        duration_s=plan.duration_s,
                        warmup_s=plan.warmup_s,
                        cpus=place.client_cpus,
                        engine=engine,
                    ),
                )

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
                    g.update(
                        round=rnd,
                        order=c["order"],
                        rt_ratio=ratio(g.get("rt_per_s"), c.get("rt_per_s")),
                        p50_ratio=ratio(g.get("p50_us"), c.get("p50_us")),
                    )
                    kept[i].append(g)
    for i, (clients, place) in enumerate(points):
        where = {"clients": clients, "placement": place.name, "message_bytes": MESSAGE_BYTES}
        c = combine_rounds(c_rounds[i], ("rt_per_s", "p50_us", "p99_us"))
        cal["echo"].append({**where, **c})
        for kept, key in ((g_rounds, "generator"), (p_rounds, "generator_python")):
            if kept[i]:
                g = combine_rounds(
                    kept[i], ("rt_per_s", "p50_us", "p99_us", "rt_ratio", "p50_ratio", "gen_cpu_pct_max")
                )
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
    row["label"] = rounds[0]["label"].rsplit(" r", 1)[0] if rounds else ""
    return row


def _generator_importable(notes: list[str]) -> bool:
    try:
        import bench.loadgen  # noqa: F401
    except ImportError as exc:
        notes.append(f"generator not measured: bench.loadgen cannot be imported ({exc})")
        return False
    return True


def measure_connect(
    binary: Path, server: Any, places: dict[str, Placement], plan: Plan, cal: dict[str, Any], say: Callable[[str], None]
) -> None:
    """Fill ``cal["connect"]``: connect + request + close rate, every placement."""
    for place in places.values():
        r = _measure(
            cal,
            plan,
            f"connect rate {place.name}",
            lambda: run_c_client(
                binary,
                server.host,
                server.port,
                connections=CONNECT_SLOTS,
                duration_s=plan.duration_s,
                warmup_s=plan.warmup_s,
                cpus=place.client_cpus,
                connect_mode=True,
            ),
        )
        cal["connect"].append({"placement": place.name, "message_bytes": MESSAGE_BYTES, **r})
        say(_progress_line(r))


def measure_bulk_all(
    places: dict[str, Placement],
    plan: Plan,
    cal: dict[str, Any],
    say: Callable[[str], None],
    *,
    use_iperf3: bool = True,
) -> None:
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
    goal = {
        "placement": place,
        "rt_ratio_at_100": rt,
        "rt_ratio_min": GOAL_RT_RATIO,
        "p50_ratio_at_1": p50,
        "p50_ratio_max": GOAL_P50_RATIO,
        "rt_ratio_at_100_range": g100.get("rt_ratio_range"),
        "p50_ratio_at_1_range": g1.get("p50_ratio_range"),
    }
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
    busiest = max(
        [r.get("busy_pct_before") or 0.0 for r in involved] + [(cal.get("machine") or {}).get("busy_pct_before") or 0.0]
    )
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
        FORMAT_KEY: FORMAT_VERSIONS["calibration"],
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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
        "placements": {
            name: {
                "server_cpus": sorted(p.server_cpus),
                "client_cpus": sorted(p.client_cpus),
                "description": p.describe(),
            }
            for name, p in places.items()
        },
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
        say(
            f"warning: the machine is {busy:.0f}% busy: another process competes for the CPUs; "
            "figures may be 2-4x off (each is marked)"
        )


def calibrate(
    out_dir: Path | None = None,
    duration_s: float = 3.0,
    quick: bool = False,
    *,
    progress: Callable[[str], None] | None = None,
    save_results: bool = True,
    use_iperf3: bool = True,
    rounds: int | None = None,
) -> dict[str, Any]:
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
