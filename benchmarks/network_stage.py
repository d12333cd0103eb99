"""What the test hosts' link costs by itself: base round trip, bulk rate and round-trip rate, bridge against delay stage.

Not a test: it prints figures. Each round builds the hosts twice, in
alternating order: once joined by the hop's kernel bridge, once through the
delay stage (:mod:`bench.network.delay`) configured with 0 ms, so the
difference is the stage's own cost. Per round: the median and fastest of
``--samples`` one-byte TCP round trips, the rate of one TCP bulk transfer
of ``--bulk`` bytes each way, and the round trips per second of
``--clients`` closed-loop echo clients of 64 bytes (the native load engine
on the client host against the C reference server on the server host, for
``--seconds``): the packet rate a lesson with many small requests needs,
where the bulk transfer moves 64 KiB offload units instead. For the stage,
its CPU seconds and the frames it forwarded give its CPU per frame, and so
the most frames per second one core of it could carry. With ``--rtt`` the
stage is also timed at that delay (the round trip beyond it is the stage's
overhead). The load average is printed: on a shared machine the stage,
Python on the same cores, slows down with everything else.

    sudo python benchmarks/network_stage.py
    sudo python benchmarks/network_stage.py --rounds 5 --rtt 10ms

Root only. Resource handling: every round's namespaces and stage are removed
by :func:`bench.network.namespace_hosts` on every exit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.network import namespace_hosts  # noqa: E402
from bench.units import parse_duration, parse_size  # noqa: E402


def round_trip_rate(hosts, clients: int, seconds: float) -> float:
    """Round trips/s of ``clients`` closed-loop 64-byte echo clients over the link (native engine, C reference)."""
    from bench.loadgen import LoadSpec, run_load
    from servers.config import ServerOptions
    from servers.launch import run_server

    with hosts.in_server(), run_server("c-reference", "echo", ServerOptions(host=hosts.server_address)) as server:
        with hosts.in_client():
            spec = LoadSpec(
                service="echo",
                host=server.host,
                port=server.port,
                clients=clients,
                message_bytes=64,
                duration_s=seconds,
                warmup_s=0.5,  # connections up and the stage's queues warm before counting
                workers=1,
                engine="auto",
                allow_remote=True,  # the server host is a namespace of this benchmark's own
            )
            result = run_load(spec)
    return float(result.row["req_per_s"])


def measure(label: str, samples: int, bulk: int, clients: int, seconds: float, **conditions) -> dict:
    with namespace_hosts(f"bench-{label}", measure=False, **conditions) as hosts:
        rtts = hosts.measure_rtt(samples=samples)
        up = hosts.measure_bulk(bulk, upload=True)
        down = hosts.measure_bulk(bulk, upload=False)
        rate = round_trip_rate(hosts, clients, seconds) if clients else None
    frames = sum(way.get("forwarded", 0) for way in hosts.stage_counters.values()) if hosts.stage_counters else 0
    return {
        "rtt_med": statistics.median(rtts),
        "rtt_min": min(rtts),
        "up": up / 1e9,
        "down": down / 1e9,
        "rate": rate,
        "stage_cpu_s": hosts.stage_cpu_s,
        "us_per_frame": hosts.stage_cpu_s / frames * 1e6 if frames and hosts.stage_cpu_s else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200, help="round trips timed per measurement")
    parser.add_argument("--bulk", default="200MB", help="bytes of each bulk transfer")
    parser.add_argument("--rtt", default="10ms", help="also time the stage at this round trip (0: skip)")
    parser.add_argument("--clients", type=int, default=32, help="echo clients for the round-trip rate (0: skip)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds of the round-trip rate")
    args = parser.parse_args()
    bulk, rtt = parse_size(args.bulk), parse_duration(args.rtt)
    kinds = {"bridge": {}, "stage 0ms": {"stage": True}}
    if rtt:
        kinds[f"stage {args.rtt}"] = {"rtt_s": rtt}
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 CPUs; other work on the machine slows the stage)")
    print(
        f"{'round':>5} {'link':<12} {'rtt median us':>14} {'rtt min us':>11} {'up Gbit/s':>10} "
        f"{'down Gbit/s':>12} {f'{args.clients} cl. rt/s':>12} {'stage CPU s':>12} {'us/frame':>9} {'frames/s max':>13}"
    )
    for round_ in range(1, args.rounds + 1):
        order = list(kinds) if round_ % 2 else list(reversed(kinds))
        for kind in order:
            m = measure(kind.replace(" ", "-"), args.samples, bulk, args.clients, args.seconds, **kinds[kind])
            cpu = f"{m['stage_cpu_s']:.2f}" if m["stage_cpu_s"] is not None else "-"
            rate = f"{m['rate']:.0f}" if m["rate"] is not None else "-"
            per_frame = f"{m['us_per_frame']:.1f}" if m["us_per_frame"] else "-"
            ceiling = f"{1e6 / m['us_per_frame']:.0f}" if m["us_per_frame"] else "-"  # one core, nothing else
            print(
                f"{round_:>5} {kind:<12} {m['rtt_med']:>14.1f} {m['rtt_min']:>11.1f} {m['up']:>10.2f} "
                f"{m['down']:>12.2f} {rate:>12} {cpu:>12} {per_frame:>9} {ceiling:>13}"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
