"""One Locust worker beside the native and python engines: round trips/s per core on the same server.

Not a test: it prints figures. Against the ``c-reference`` echo server pinned
to the first CPU, 1 KiB messages, ``--connections`` (default 8)
connections from ONE worker of each engine pinned to the second CPU, closed
loop, it runs in each round the native, python and locust engines in
alternating order (the order flips every round, so drift on a shared
machine falls on all alike), each for ``--duration`` seconds after
``--warmup``.

Per core = round trips/s divided by the worker's own CPU over the window
(in cores): what one core of load host buys with each engine. It prints
every measurement, then the median per engine over the rounds and the
median of the per-round ratios locust / native and locust / python.

    python benchmarks/locust_engine.py
    python benchmarks/locust_engine.py --rounds 5 --duration 3 --connections 4

The load average is printed first and last: the machine may be shared.
Locust is for scale-out (many load hosts, one master), not per-core speed;
these figures say how many more load cores it needs for the same load.

Resource handling: the server runs through :func:`servers.launch.run_server`
(stopped and reaped on exit); every engine reaps its own workers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.calibration.measure import reference_server  # noqa: E402
from bench.loadgen import (  # noqa: E402
    LoadSpec,
    locust_engine,  # noqa: E402
    run_load,
)

MESSAGE_BYTES = 1024
ENGINES = ("native", "python", "locust")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one(engine: str, port: int, args: argparse.Namespace, gen_cpu: int) -> dict[str, Any]:
    result = run_load(
        LoadSpec(
            "echo",
            "127.0.0.1",
            port,
            clients=args.connections,
            duration_s=args.duration,
            warmup_s=args.warmup,
            message_bytes=MESSAGE_BYTES,
            workers=1,
            cpus={gen_cpu},
            engine=engine,
            connect_timeout_s=10.0,
        )
    )
    row = result.row
    cores = (row["gen_cpu_pct_max"] or 0) / 100
    return {
        "rt_per_s": row["req_per_s"],
        "cpu_pct": row["gen_cpu_pct_max"],
        "per_core": row["req_per_s"] / cores if cores else None,
        "p50_us": row["lat_p50_us"],
        "errors": row["errors"],
        "engine": row["gen_engine"],
    }


def median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, order alternating (default 3)")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per run (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5, help="warmup seconds per run (default 0.5)")
    parser.add_argument("--connections", type=int, default=8, help="connections of the one worker (default 8)")
    args = parser.parse_args(argv)
    if not locust_engine.available():
        print(locust_engine.MISSING, file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, gen_cpu = cpus[0], cpus[1 % len(cpus)]
    print(
        f"load average at the start: {load_average()}; server CPU {server_cpu}, worker CPU {gen_cpu}, "
        f"{MESSAGE_BYTES} B echo, {args.connections} connections, one worker per engine",
        flush=True,
    )
    measured: dict[str, list[dict[str, Any]]] = {e: [] for e in ENGINES}
    with reference_server(frozenset({server_cpu})) as server:
        for rnd in range(args.rounds):
            for engine in ENGINES if rnd % 2 == 0 else tuple(reversed(ENGINES)):
                r = one(engine, server.port, args, gen_cpu)
                measured[engine].append(r)
                per = f"{r['per_core']:>9,.0f}" if r["per_core"] else "        -"
                print(
                    f"round {rnd + 1} {engine:>6}: {r['rt_per_s']:>9,.0f} round trips/s, worker CPU "
                    f"{r['cpu_pct']:5.1f}%, {per} per core, p50 {r['p50_us']} us, errors {r['errors']} "
                    f"[{r['engine']}]",
                    flush=True,
                )
    print(f"\nmedian over {args.rounds} rounds; load average now {load_average()}")
    for engine in ENGINES:
        rows = measured[engine]
        print(
            f"{engine:>6}: {median([r['rt_per_s'] for r in rows]):>9,.0f} round trips/s, "
            f"{median([r['per_core'] for r in rows]) or 0:>9,.0f} per core"
        )
    for other in ("native", "python"):
        ratio = median(
            [
                a["per_core"] / b["per_core"] if a["per_core"] and b["per_core"] else None
                for a, b in zip(measured["locust"], measured[other])
            ]
        )
        print(
            f"locust / {other} per core (median of per-round ratios): {ratio:.2f}"
            if ratio
            else f"locust / {other}: not measured"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
