"""The load engines beside a closed-loop C client: round trips/s, p50, and CPU per request.

Not a test: it prints figures. Against the ``c-reference`` echo server pinned
to the first CPU, 1 KiB messages, the generator's side pinned to the second
CPU, it runs in each round, in alternating order (the order flips every
round, so drift on a shared machine falls on both sides alike):

- closed loop at each ``--connections`` (default 1, 10, 100, 1000): the C
  reference client (``servers/c/echo_client.c``), the native engine and the
  python engine, each for ``--duration`` seconds after ``--warmup``;
- open loop at each ``--rate`` (default 1k, 20k and 100k requests/s, 100
  connections) with both engines: the sweep shows the fixed cost of a
  wake-up (at 1k/s each request has its own; at 100k/s a wake-up releases a
  batch). ``--rate`` with no value skips the open loop.

It prints every measurement, then per point the median over the rounds of
each engine's ratio to the C client measured in the same round, and CPU per
request (the worker's CPU seconds over the window / requests): open loop
beside the same engine's closed loop at 100 connections. With ``--memory``
it also holds ``--memory-clients`` (default 10,000) connections against the
selectors model with each engine and prints the generator's peak RSS.

    python benchmarks/native_engine.py
    python benchmarks/native_engine.py --rounds 5 --duration 3 --connections 10 100 1000
    python benchmarks/native_engine.py --memory

The load average is printed first and last: on a busy machine the figures
move 2-4x; compare ratios measured in one run, not absolute numbers.

Resource handling: servers run through :func:`servers.launch.run_server`
(stopped and reaped on exit); the C client and load workers are children
reaped by the code that starts them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.calibration.measure import reference_server, run_c_client  # noqa: E402
from bench.loadgen import LoadSpec, run_load  # noqa: E402
from servers import native  # noqa: E402

MESSAGE_BYTES = 1024
ENGINES = ("native", "python")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def engine_run(
    engine: str, port: int, clients: int, args: argparse.Namespace, gen_cpu: int, rate: float | None = None
) -> dict[str, Any]:
    result = run_load(
        LoadSpec(
            "echo",
            "127.0.0.1",
            port,
            clients=clients,
            duration_s=args.duration,
            warmup_s=args.warmup,
            message_bytes=MESSAGE_BYTES,
            workers=1,
            cpus={gen_cpu},
            engine=engine,
            mode="open" if rate else "closed",
            rate=rate,
            connect_timeout_s=10.0,
        )
    )
    row = result.row
    cpu_s = row["gen_cpu_pct_max"] / 100 * row["duration_s"]
    return {
        "rt_per_s": row["req_per_s"],
        "p50_us": row["lat_p50_us"],
        "p99_us": row["lat_p99_us"],
        "errors": row["errors"],
        "cpu_pct": row["gen_cpu_pct_max"],
        "cpu_us_per_req": 1e6 * cpu_s / row["requests"] if row["requests"] else None,
        "late": row["late_starts"],
        "engine": row["gen_engine"],
    }


def c_run(binary: Path, port: int, clients: int, args: argparse.Namespace, gen_cpu: int) -> dict[str, Any]:
    r = run_c_client(
        binary,
        "127.0.0.1",
        port,
        connections=clients,
        duration_s=args.duration,
        warmup_s=args.warmup,
        cpus=frozenset({gen_cpu}),
        message_bytes=MESSAGE_BYTES,
    )
    cpu_s = r["cpu_pct"] / 100 * r["duration_s"]
    return {
        "rt_per_s": r["rt_per_s"],
        "p50_us": r["p50_us"],
        "p99_us": r["p99_us"],
        "errors": r["errors"],
        "cpu_pct": r["cpu_pct"],
        "cpu_us_per_req": 1e6 * cpu_s / r["round_trips"] if r["round_trips"] else None,
    }


def fmt(r: dict[str, Any]) -> str:
    per = f"{r['cpu_us_per_req']:.1f}" if r.get("cpu_us_per_req") else "-"
    return (
        f"{r['rt_per_s']:>10,.0f}/s p50 {r['p50_us'] or 0:>7,} us p99 {r['p99_us'] or 0:>8,} us "
        f"cpu {r['cpu_pct']:5.1f}% {per:>6} us/req errors {r['errors']}"
    )


def median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def closed_and_open(args: argparse.Namespace) -> None:
    binary = native.build("echo_client")
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, gen_cpu = cpus[0], cpus[1 % len(cpus)]
    measured: dict[tuple[str, Any, str], list[dict[str, Any]]] = {}
    with reference_server(frozenset({server_cpu})) as server:
        for rnd in range(args.rounds):
            for clients in args.connections:
                order = ["c", *ENGINES] if rnd % 2 == 0 else [*reversed(ENGINES), "c"]
                for who in order:
                    r = (
                        c_run(binary, server.port, clients, args, gen_cpu)
                        if who == "c"
                        else engine_run(who, server.port, clients, args, gen_cpu)
                    )
                    measured.setdefault(("closed", clients, who), []).append(r)
                    print(f"round {rnd + 1} closed {clients:>5} conn {who:>6}: {fmt(r)}", flush=True)
            for rate in args.rate:
                order = list(ENGINES) if rnd % 2 == 0 else list(reversed(ENGINES))
                for who in order:
                    r = engine_run(who, server.port, args.open_connections, args, gen_cpu, rate=rate)
                    measured.setdefault(("open", rate, who), []).append(r)
                    print(f"round {rnd + 1} open {rate:>8,.0f}/s {who:>6}: {fmt(r)} late {r['late']}", flush=True)
    print(
        f"\nmedian over {args.rounds} rounds of (engine / C client in the same round); server CPU {server_cpu}, "
        f"clients CPU {gen_cpu}, {MESSAGE_BYTES} B echo, load average now {load_average()}"
    )
    for clients in args.connections:
        c = measured[("closed", clients, "c")]
        for engine in ENGINES:
            e = measured[("closed", clients, engine)]
            rt = median([x["rt_per_s"] / y["rt_per_s"] if y["rt_per_s"] else None for x, y in zip(e, c)])
            p50 = median([x["p50_us"] / y["p50_us"] if x["p50_us"] and y["p50_us"] else None for x, y in zip(e, c)])
            print(
                f"  closed {clients:>5} conn {engine:>6}: round trips/s {rt:.2f}x, p50 {p50:.2f}x; "
                f"CPU/request {median([x['cpu_us_per_req'] for x in e]):.1f} us "
                f"(C client {median([y['cpu_us_per_req'] for y in c]):.1f} us)"
            )
    for rate in args.rate:
        for engine in ENGINES:
            o = measured[("open", rate, engine)]
            closed = measured.get(("closed", args.open_connections, engine))
            per_open = median([x["cpu_us_per_req"] for x in o])
            per_closed = median([x["cpu_us_per_req"] for x in closed]) if closed else None
            vs = (
                f", {per_open / per_closed:.2f}x its closed loop at {args.open_connections} conn"
                if per_open and per_closed
                else ""
            )
            print(
                f"  open {rate:>8,.0f}/s {args.open_connections} conn {engine:>6}: delivered "
                f"{median([x['rt_per_s'] for x in o]):,.0f}/s, corrected p50 {median([x['p50_us'] for x in o]):,.0f} us, "
                f"CPU/request {per_open:.1f} us{vs}"
            )


def memory(args: argparse.Namespace) -> None:
    from servers.config import ServerOptions
    from servers.launch import run_server

    me = psutil.Process()
    with run_server("selectors", "echo", ServerOptions(backlog=4096)) as server:
        for engine in ENGINES:
            peak = {"rss": 0}
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.2):
                    rss = 0
                    for child in me.children(recursive=True):
                        try:
                            if child.pid != server.pid and server.pid not in [p.pid for p in child.parents()]:
                                rss += child.memory_info().rss
                        except psutil.Error:
                            continue
                    peak["rss"] = max(peak["rss"], rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.monotonic()
            try:
                result = run_load(
                    LoadSpec(
                        "echo",
                        "127.0.0.1",
                        server.port,
                        clients=args.memory_clients,
                        duration_s=args.duration,
                        warmup_s=max(args.warmup, 3.0),
                        engine=engine,
                        connect_timeout_s=10.0,
                    )
                )
            finally:
                done.set()
                sampler.join()
            row = result.row
            tool_errors = sum(row[k] for k in ("conn_emfile", "conn_eaddrnotavail", "conn_other"))
            print(
                f"{args.memory_clients:,} connections to selectors, {engine:>6}: conn_ok {row['conn_ok']:,}, "
                f"errors {row['errors']}, tool errors {tool_errors}, conn_pending {row['conn_pending']}, "
                f"{row['req_per_s']:,.0f} req/s, generator peak RSS {peak['rss'] / 2**20:.0f} MiB "
                f"({row['gen_workers']} workers), wall {time.monotonic() - t0:.1f} s"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument(
        "--rate",
        type=float,
        nargs="*",
        default=[1_000.0, 20_000.0, 100_000.0],
        help="open-loop offered rates, requests/s (default 1k 20k 100k)",
    )
    parser.add_argument("--open-connections", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--memory", action="store_true", help="also hold --memory-clients connections")
    parser.add_argument("--memory-clients", type=int, default=10_000)
    args = parser.parse_args()
    if not native.available():
        print(f"cannot run: {native.why_unavailable()}", file=sys.stderr)
        return 1
    print(f"load average {load_average()} on {os.cpu_count()} CPUs")
    closed_and_open(args)
    if args.memory:
        memory(args)
    print(f"load average {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
