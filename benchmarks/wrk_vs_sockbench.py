"""wrk beside sockbench's native and python engines: req/s, p50 and p99 on the same http servers.

Not a test: it prints figures. Against the ``threading`` and ``selectors``
http servers (a 1 KiB file, the server on the first CPU, a listen backlog of
1024), closed loop, at 10
and 100 connections from one generator process (one python worker, one wrk
thread) on the second CPU, it runs in each round the three engines in
alternating order (the order reverses every round, so drift on a shared
machine falls on all alike), each for ``--duration`` whole seconds after
``--warmup``. It prints every measurement, then per server and connection
count the median over rounds and the medians of the per-round req/s ratios
native / python and wrk / native (``--engines`` picks fewer).

    python benchmarks/wrk_vs_sockbench.py
    python benchmarks/wrk_vs_sockbench.py --rounds 5 --duration 3

The load average is printed first and last: the machine may be shared. wrk's
warm-up is a separate run (new connections in the window, see
:mod:`bench.loadgen.wrk_engine`); its percentiles have three significant figures.

Each line also prints the mean latency and Little's law for a closed loop,
clients / req/s: the mean latency when every client always has a request in
flight. A mean well below it says connections were not all there (waiting
to connect, for instance). That is why the servers get a backlog of 1024:
with socketserver's default of 5, 100 new connections mostly wait for
accept, and wrk, whose measured connections are new (its warm-up is a
separate run), measured the few that got in (p50 4.9-15.8 ms against the
python engine's 19-32 ms, where clients / req/s was 50-80 ms).

Resource handling: each server runs through :func:`servers.launch.run_server`
(stopped and reaped on exit); each engine reaps its own processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import FileTarget, LoadSpec, run_load  # noqa: E402
from servers.config import ServerOptions  # noqa: E402
from servers.launch import run_server  # noqa: E402

MODELS = ("threading", "selectors")
CONNECTIONS = (10, 100)
ENGINES = ("native", "python", "wrk")
#: The file served: 1 KiB, so the figures are about request handling, not bandwidth.
BODY = os.urandom(1024)
#: Listen backlog: above the largest connection count, so every connection is accepted at once
#: and both engines measure all of them (see the module docstring).
BACKLOG = 1024


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one(engine: str, port: int, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    row = run_load(
        LoadSpec(
            "http",
            "127.0.0.1",
            port,
            clients=clients,
            duration_s=args.duration,
            warmup_s=args.warmup,
            files=[FileTarget("f1k", len(BODY), "")],
            workers=1,
            cpus={1},
            engine=engine,
            connect_timeout_s=10.0,
        )
    ).row
    return {k: row[k] for k in ("req_per_s", "lat_p50_us", "lat_p99_us", "lat_mean_us", "errors")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=2, help="whole seconds (wrk takes no fractions)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)} (default all)"
    )
    args = parser.parse_args()
    engines = tuple(e for e in args.engines.split(",") if e)
    if not engines or set(engines) - set(ENGINES):
        raise SystemExit(f"--engines: give some of {', '.join(ENGINES)}, comma-separated; got {args.engines!r}")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 CPUs: the server on CPU 0, the generator on CPU 1")
    print(f"load average before: {load_average()}")
    results: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "f1k").write_bytes(BODY)
        for model in MODELS:
            with run_server(model, "http", ServerOptions(root=Path(root), backlog=BACKLOG), cpus={0}) as srv:
                for clients in CONNECTIONS:
                    for rnd in range(args.rounds):
                        order = engines if rnd % 2 == 0 else engines[::-1]
                        for engine in order:
                            m = one(engine, srv.port, clients, args)
                            results.setdefault((model, clients, engine), []).append(m)
                            little = clients / m["req_per_s"] * 1e6 if m["req_per_s"] else float("nan")
                            print(
                                f"{model:9} c={clients:<3} round {rnd} {engine:6} {m['req_per_s']:9,.0f} req/s "
                                f"p50 {m['lat_p50_us']} us p99 {m['lat_p99_us']} us mean {m['lat_mean_us']} us "
                                f"(C/X {little:,.0f} us) errors {m['errors']}",
                                flush=True,
                            )
    print("\nmedians over rounds (req/s, p50 us, p99 us); ratios = medians of the per-round req/s ratios")
    for model in MODELS:
        for clients in CONNECTIONS:
            parts = []
            for engine in engines:
                ms = results[(model, clients, engine)]
                med = {k: statistics.median(m[k] for m in ms) for k in ("req_per_s", "lat_p50_us", "lat_p99_us")}
                parts.append(f"{engine} {med['req_per_s']:,.0f} / {med['lat_p50_us']:,.0f} / {med['lat_p99_us']:,.0f}")
            for a, b in (("native", "python"), ("wrk", "native"), ("wrk", "python")):
                if a in engines and b in engines:
                    pairs = zip(results[(model, clients, a)], results[(model, clients, b)])
                    ratio = statistics.median(x["req_per_s"] / y["req_per_s"] for x, y in pairs if y["req_per_s"])
                    parts.append(f"{a}/{b} {ratio:.2f}")
            print(f"{model:9} c={clients:<3} " + "; ".join(parts))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
