"""What the test hosts' link costs by itself: base round trip and bulk rate, bridge against delay stage.

Not a test: it prints figures. Each round builds the hosts twice, in
alternating order: once joined by the hop's kernel bridge, once through the
delay stage (:mod:`bench.network.delay`) configured with 0 ms, so the
difference is the stage's own cost. Per round: the median and fastest of
``--samples`` one-byte TCP round trips, and the rate of one TCP bulk
transfer of ``--bulk`` bytes each way. With ``--rtt`` the stage is also
timed at that delay (the round trip beyond it is the stage's overhead).
The load average is printed: on a shared machine the stage, Python on the
same cores, slows down with everything else.

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


def measure(label: str, samples: int, bulk: int, **conditions) -> dict:
    with namespace_hosts(f"bench-{label}", measure=False, **conditions) as hosts:
        rtts = hosts.measure_rtt(samples=samples)
        up = hosts.measure_bulk(bulk, upload=True)
        down = hosts.measure_bulk(bulk, upload=False)
    return {
        "rtt_med": statistics.median(rtts),
        "rtt_min": min(rtts),
        "up": up / 1e9,
        "down": down / 1e9,
        "stage_cpu_s": hosts.stage_cpu_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200, help="round trips timed per measurement")
    parser.add_argument("--bulk", default="200MB", help="bytes of each bulk transfer")
    parser.add_argument("--rtt", default="10ms", help="also time the stage at this round trip (0: skip)")
    args = parser.parse_args()
    bulk, rtt = parse_size(args.bulk), parse_duration(args.rtt)
    kinds = {"bridge": {}, "stage 0ms": {"stage": True}}
    if rtt:
        kinds[f"stage {args.rtt}"] = {"rtt_s": rtt}
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 CPUs; other work on the machine slows the stage)")
    print(
        f"{'round':>5} {'link':<12} {'rtt median us':>14} {'rtt min us':>11} {'up Gbit/s':>10} "
        f"{'down Gbit/s':>12} {'stage CPU s':>12}"
    )
    for round_ in range(1, args.rounds + 1):
        order = list(kinds) if round_ % 2 else list(reversed(kinds))
        for kind in order:
            m = measure(kind.replace(" ", "-"), args.samples, bulk, **kinds[kind])
            cpu = f"{m['stage_cpu_s']:.2f}" if m["stage_cpu_s"] is not None else "-"
            print(
                f"{round_:>5} {kind:<12} {m['rtt_med']:>14.1f} {m['rtt_min']:>11.1f} {m['up']:>10.2f} "
                f"{m['down']:>12.2f} {cpu:>12}"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
