"""What open loop costs the generator: CPU per request, open loop beside the same engine's closed loop.

Not a test: it prints figures. Against the ``c-reference`` echo server pinned
to the first CPU, 1 KiB messages, 100 connections, one generator worker
pinned to the second CPU, each round measures, for each engine (native,
python):

- closed loop (send, wait, send again: the engine at its cheapest per
  request, events arriving in batches);
- open loop at each ``--rate`` (default 5k, 20k, 50k and 100k requests/s).

The order of the points flips every round (so drift on a shared machine
falls on both sides alike). CPU per request is the worker's own CPU seconds
over the measured window divided by the requests it completed in the window.
Per round it prints each point with the open/closed ratio of that round, then
per engine and rate the medians over the rounds of: the ratio, CPU per
request, delivered rate, the corrected p50 (from the due time), the
uncorrected p50 (from the send), the generator's mean send lag (the batching
horizon's part of the corrected latency: :mod:`bench.loadgen.schedule`),
release wake-ups per request and, for the native engine, its loop's sleeps
per request and how many of them slept through replies. Each round also
times a bare sleep loop on the generator CPU (the CPU one timed wake-up costs
there, whatever sleeps), which gives the floor printed beside each rate:
closed loop's CPU per request plus sleeps per request times that cost (the
python engine's sleeps counted as its release wake-ups, a lower bound: its
replies wake it too).

    python benchmarks/open_loop_cost.py
    python benchmarks/open_loop_cost.py --rounds 5 --duration 3 --rate 20000 100000
    python benchmarks/open_loop_cost.py --engine native

The load average is printed first and last: on a busy machine the absolute
figures move, the ratios measured in one round much less.

Resource handling: the server runs through :func:`servers.launch.run_server`
(stopped and reaped on exit); load workers are children reaped by
:func:`bench.loadgen.run_load`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.calibration.measure import reference_server  # noqa: E402
from bench.loadgen import LoadSpec, run_load  # noqa: E402
from servers import native  # noqa: E402

MESSAGE_BYTES = 1024
ENGINES = ("native", "python")
#: Offered rates: 5k/s (each request its own wake-up), 20k/s (about one and
#: a half per 75 us horizon), 50k/s, and 100k/s (the figure to reach: 100k/s
#: on one generator CPU with a corrected p50 under 1 ms).
RATES = (5_000.0, 20_000.0, 50_000.0, 100_000.0)
#: The target: open-loop CPU per request within this factor of closed loop.
GOAL_RATIO = 1.5
#: The target's corrected p50 at 100k/s.
GOAL_P50_US = 1000
#: A rate counts as delivered when the median delivered rate reaches this
#: share of it; below, the server (or generator) saturated and the ratio is
#: that of a loop that never idles, not of the offered rate.
DELIVERED_SHARE = 0.95


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def wake_cost_us(cpu: int, period_s: float = 200e-6, seconds: float = 0.5) -> float:
    """CPU microseconds one timed sleep and wake-up costs on ``cpu`` now: a bare sleep loop, nothing else.

    The floor under any open loop's cost: a release needs a timer wake-up,
    and on a virtual machine arming the timer and taking its interrupt cost
    the sleeping process CPU time of its own. 200 us periods as at 5k/s.
    """
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        n = int(seconds / period_s)
        c0 = time.process_time()
        for _ in range(n):
            time.sleep(period_s)
        return 1e6 * (time.process_time() - c0) / n
    finally:
        os.sched_setaffinity(0, before)


def measure(engine: str, port: int, args: argparse.Namespace, gen_cpu: int, rate: float | None) -> dict[str, Any]:
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
            mode="open" if rate else "closed",
            rate=rate,
            connect_timeout_s=10.0,
        )
    )
    row, sched = result.row, result.schedule
    requests = row["requests"]
    cpu_s = row["gen_cpu_pct_max"] / 100 * row["duration_s"]
    unc = result.histograms.get("latency_uncorrected")
    per = lambda n: n / requests if requests and n is not None else None  # noqa: E731 - per completed request
    return {
        "rate": row["req_per_s"],
        "cpu_pct": row["gen_cpu_pct_max"],
        "cpu_us": 1e6 * cpu_s / requests if requests else None,
        "p50": row["lat_p50_us"],
        "p50_unc": unc.get_value_at_percentile(50.0) if unc is not None and unc.get_total_count() else None,
        "send_lag": sched.get("send_lag_mean_us"),
        "wakeups": per(sched.get("wakeups")),
        "waits": per(sched.get("waits")),
        "lazy": per(sched.get("lazy_waits")),
        "errors": row["errors"],
        "late": row["late_starts"],
        "unstarted_warning": any("never got a free connection" in w for w in result.warnings),
    }


def num(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def fmt(r: dict[str, Any]) -> str:
    s = (
        f"{r['rate']:>9,.0f}/s cpu {r['cpu_pct']:5.1f}% {num(r['cpu_us'], '6.2f')} us/req "
        f"p50 {num(r['p50'], '>6,')} us errors {r['errors']}"
    )
    if r["late"] is not None:
        s += (
            f" | uncorrected p50 {num(r['p50_unc'], '>5,')} us send lag {num(r['send_lag'], '5.1f')} us "
            f"release wake-ups/req {num(r['wakeups'], '.2f')}"
        )
        if r["waits"] is not None:
            s += f" sleeps/req {num(r['waits'], '.2f')} (through replies {num(r['lazy'], '.2f')})"
        s += f" late {r['late']}" + (" UNSTARTED" if r["unstarted_warning"] else "")
    return s


def floor(closed_us: float | None, sleeps_per_req: float | None, wake_us: float) -> str:
    """The least open loop can cost per request: closed loop's work plus its sleeps' bare wake-up cost."""
    if closed_us is None or sleeps_per_req is None:
        return ""
    return f", floor {closed_us + sleeps_per_req * wake_us:.2f} us/req"


def median(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, nargs="+", default=list(RATES), help="open-loop offered rates, req/s")
    parser.add_argument("--engine", choices=ENGINES, nargs="+", default=list(ENGINES))
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    for flag, value, ok in (
        ("--rounds", args.rounds, args.rounds >= 1),
        ("--connections", args.connections, args.connections >= 1),
        ("--duration", args.duration, args.duration > 0),
        ("--warmup", args.warmup, args.warmup >= 0),
        ("--rate", min(args.rate), min(args.rate) > 0),
    ):
        if not ok:
            parser.error(f"{flag} {value:g} is out of range: rounds and connections >= 1, duration and rates > 0")
    if "native" in args.engine and not native.available():
        print(f"cannot run the native engine: {native.why_unavailable()}; use --engine python", file=sys.stderr)
        return 1
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, gen_cpu = cpus[0], cpus[1 % len(cpus)]
    print(
        f"load average {load_average()} on {os.cpu_count()} CPUs; server c-reference on CPU {server_cpu}, "
        f"one generator worker on CPU {gen_cpu}, {args.connections} connections, {MESSAGE_BYTES} B echo, "
        f"{args.duration} s windows after {args.warmup} s warmup"
    )
    points: list[tuple[str, float | None]] = [(e, None) for e in args.engine]
    points += [(e, rate) for rate in args.rate for e in args.engine]
    measured: dict[tuple[str, float | None], list[dict[str, Any]]] = {p: [] for p in points}
    wakes: list[float] = []
    ratios: dict[tuple[str, float], list[float | None]] = {(e, r): [] for e in args.engine for r in args.rate}
    with reference_server(frozenset({server_cpu})) as server:
        for rnd in range(args.rounds):
            order = points if rnd % 2 == 0 else list(reversed(points))
            this: dict[tuple[str, float | None], dict[str, Any]] = {}
            wakes.append(wake_cost_us(gen_cpu))
            print(f"round {rnd + 1} a bare timed sleep and wake-up on CPU {gen_cpu}: {wakes[-1]:.1f} us of CPU")
            for engine, rate in order:
                r = measure(engine, server.port, args, gen_cpu, rate)
                this[(engine, rate)] = r
                measured[(engine, rate)].append(r)
                label = "closed" if rate is None else f"open {rate:>7,.0f}/s"
                print(f"round {rnd + 1} {engine:>6} {label:>16}: {fmt(r)}", flush=True)
            for engine in args.engine:
                closed = this[(engine, None)]["cpu_us"]
                line = []
                for rate in args.rate:
                    o = this[(engine, rate)]["cpu_us"]
                    ratio = o / closed if o and closed else None
                    ratios[(engine, rate)].append(ratio)
                    line.append(f"{rate:,.0f}/s {num(ratio, '.2f')}x")
                print(f"round {rnd + 1} {engine:>6} open/closed CPU per request: {', '.join(line)}", flush=True)
    wake = statistics.median(wakes)
    print(
        f"\nmedians over {args.rounds} rounds (goal: open/closed <= {GOAL_RATIO}x; load average {load_average()}); "
        f"a bare sleep and wake-up costs {wake:.1f} us of CPU, so open loop cannot cost less than closed + "
        f"sleeps per request x {wake:.1f} us (the floor below)"
    )
    for engine in args.engine:
        closed = measured[(engine, None)]
        print(
            f"  {engine:>6} closed: {median([x['cpu_us'] for x in closed]):.2f} us/req at "
            f"{median([x['rate'] for x in closed]):,.0f}/s, p50 {median([x['p50'] for x in closed]):,.0f} us"
        )
        for rate in args.rate:
            o = measured[(engine, rate)]
            ratio = median(ratios[(engine, rate)])
            p50 = median([x["p50"] for x in o])
            delivered = median([x["rate"] for x in o]) or 0.0
            if delivered < DELIVERED_SHARE * rate:  # a saturated loop: its figures are not the offered rate's
                goal = f" (rate NOT delivered: {delivered / rate:.0%} of it)"
            else:
                goal = "" if ratio is None else (" (met)" if ratio <= GOAL_RATIO else " (NOT met)")
            extra = ""
            if rate >= 100_000 and p50 is not None:
                extra = f"; corrected p50 {'under' if p50 < GOAL_P50_US else 'NOT under'} {GOAL_P50_US} us"
            print(
                f"  {engine:>6} open {rate:>8,.0f}/s: {num(ratio, '.2f')}x closed{goal}, "
                f"{num(median([x['cpu_us'] for x in o]), '.2f')} us/req, delivered "
                f"{num(median([x['rate'] for x in o]), ',.0f')}/s, p50 corrected {num(p50, ',.0f')} us / "
                f"uncorrected {num(median([x['p50_unc'] for x in o]), ',.0f')} us, send lag "
                f"{num(median([x['send_lag'] for x in o]), '.1f')} us, release wake-ups/req "
                f"{num(median([x['wakeups'] for x in o]), '.2f')}"
                + (f", sleeps/req {num(median([x['waits'] for x in o]), '.2f')}" if o[0]["waits"] is not None else "")
                + floor(median([x["cpu_us"] for x in closed]), median([x["waits"] or x["wakeups"] for x in o]), wake)
                + extra
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
