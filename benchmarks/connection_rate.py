"""New connections/s against c-reference from one source address and from several, both engines.

Not a test: it prints figures. Connection churn (one 1 KiB echo request per
connection, as ``scenarios/connection-churn.yaml``) against the ``c-reference``
echo server pinned to the first CPU, the generator (one worker) pinned to the
second. For each engine and each ``--clients`` count it runs the load from one
source address (the kernel's choice, as before the generator spread its
connections) and from the :data:`bench.loadgen.spec.LOOPBACK_SOURCE_ADDRS`
addresses it now takes in turn, in alternating order (the order flips every
round, so drift on a shared machine falls on both sides alike), for
``--rounds`` rounds.

It prints every measurement (connections/s, generator CPU, failed connects
with the EADDRNOTAVAIL ones apart), then per point the medians and the
median of the many/one ratio measured in the same round. The one-address
side is the generator's own plan with its source addresses taken away
(``bench.loadgen.driver.source_addresses`` replaced for each run), so both
sides are the same code but for the bind.

    python benchmarks/connection_rate.py
    python benchmarks/connection_rate.py --rounds 5 --clients 10 50 --duration 3

The load average is printed first and last: on a busy machine the figures
move a lot; compare ratios measured in one run, not absolute numbers.

Resource handling: the server runs through :func:`servers.launch.run_server`
(stopped and reaped on exit); load workers are reaped by ``run_load``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.calibration.measure import reference_server  # noqa: E402
from bench.loadgen import LoadSpec, driver, run_load  # noqa: E402
from bench.loadgen.spec import LOOPBACK_SOURCE_ADDRS  # noqa: E402

ENGINES = ("native", "python")
SIDES = ("one", "many")
MESSAGE_BYTES = 1024


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def source_plan(many: bool) -> Iterator[None]:
    """Plan the run from 16 source addresses (``many``, whatever the engine) or from none (the kernel picks 127.0.0.1).

    Both sides are forced, so the python engine, which the generator keeps on
    one address (:data:`bench.loadgen.spec.SPREADING_ENGINES`), is measured
    both ways too: that measurement is why it is kept there.
    """
    saved = driver.source_addresses
    driver.source_addresses = (lambda ip, _engine="native": saved(ip)) if many else (lambda ip, _engine="native": [])  # type: ignore[assignment]
    try:
        yield
    finally:
        driver.source_addresses = saved  # type: ignore[assignment]


def churn(engine: str, side: str, port: int, clients: int, args: argparse.Namespace, gen_cpu: int) -> dict[str, Any]:
    spec = LoadSpec(
        "echo",
        "127.0.0.1",
        port,
        clients=clients,
        duration_s=args.duration,
        warmup_s=args.warmup,
        message_bytes=MESSAGE_BYTES,
        requests_per_connection=1,
        workers=1,
        cpus={gen_cpu},
        engine=engine,
        connect_timeout_s=10.0,
    )
    with source_plan(many=side != "one"):
        row = run_load(spec).row
    failed = sum(row[c] for c in row if c.startswith("conn_") and c not in ("conn_ok", "conn_pending"))
    return {
        "req_per_s": row["req_per_s"],
        "gen_cpu_pct": row["gen_cpu_pct_max"],
        "addrs": row["gen_source_addrs"],
        "failed": failed,
        "eaddrnotavail": row["conn_eaddrnotavail"],
        "errors": row["errors"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds, order alternating (default 3)")
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 50], help="client counts (default 10 50)")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (default 1)")
    args = ap.parse_args()
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or any(c < 1 for c in args.clients):
        ap.error("--rounds and --clients must be >= 1, --duration > 0, --warmup >= 0")
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, gen_cpu = cpus[0], cpus[1 % len(cpus)]
    print(f"load average before: {load_average()} (a shared machine: other work runs beside these figures)")
    measured: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    with reference_server(frozenset({server_cpu})) as server:
        for rnd in range(args.rounds):
            for clients in args.clients:
                for engine in ENGINES:
                    order = SIDES if rnd % 2 == 0 else tuple(reversed(SIDES))
                    for side in order:
                        r = churn(engine, side, server.port, clients, args, gen_cpu)
                        measured.setdefault((engine, clients, side), []).append(r)
                        print(
                            f"round {rnd + 1} {engine:>6} {clients:>3} clients {r['addrs']:>2} addr: "
                            f"{r['req_per_s']:>9,.0f} req/s (= connections/s) gen cpu {r['gen_cpu_pct']:5.1f}% "
                            f"failed connects {r['failed']} (eaddrnotavail {r['eaddrnotavail']}) errors {r['errors']}",
                            flush=True,
                        )
    print(
        f"\nmedians over {args.rounds} rounds; server c-reference on CPU {server_cpu}, generator on CPU {gen_cpu}; "
        f"many = {LOOPBACK_SOURCE_ADDRS} source addresses; load average now {load_average()}"
    )
    for clients in args.clients:
        for engine in ENGINES:
            one, many = measured[(engine, clients, "one")], measured[(engine, clients, "many")]
            ratios = [m["req_per_s"] / o["req_per_s"] for m, o in zip(many, one) if o["req_per_s"]]
            print(
                f"  {engine:>6} {clients:>3} clients: one address {statistics.median(x['req_per_s'] for x in one):>9,.0f}/s, "
                f"{LOOPBACK_SOURCE_ADDRS} addresses {statistics.median(x['req_per_s'] for x in many):>9,.0f}/s, "
                f"ratio {statistics.median(ratios) if ratios else float('nan'):.2f}x (median of per-round ratios)"
            )


if __name__ == "__main__":
    main()
