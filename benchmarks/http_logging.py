"""What http.server's per-request log line costs: wrk against one model with and without ``--log-requests``.

Not a test: it prints figures. The server (``python -m servers MODEL http``)
serves a 1 KiB file; wrk (Debian's, on loopback) drives it with keep-alive
connections for ``--duration`` seconds per round; rounds alternate between
logging off and on, so drift of a shared machine hits both alike. Printed per
round: requests per second and the log's size; at the end the median of
each, the ratio on/off of each round's pair and their median, the server's
CPU time per request (less sensitive to other work than a rate), with the load average (other work on the machine
lowers both sides).

    python benchmarks/http_logging.py                      # threading, 10 connections, 3 x 5 s each
    python benchmarks/http_logging.py --model forking --connections 50 --rounds 5

The server's stderr (where the log goes) is a file, as under ``bench run``.

Resource handling: every server is started and stopped by
:func:`servers.launch.run_server`; wrk runs with a time limit; the served
folder is temporary.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from servers.config import ServerOptions
from servers.launch import run_server

#: "Requests/sec:  12345.67" and "  12345 requests in 5.00s" in wrk's summary.
_RATE = re.compile(rb"Requests/sec:\s+([\d.]+)")
_COUNT = re.compile(rb"(\d+) requests in")
#: A 1 KiB body: small enough that the per-request work (parsing, logging) dominates.
BODY_SIZE = 1024


def one_round(model: str, root: Path, log: bool, connections: int, duration: int) -> tuple[float, float, int]:
    """Requests per second wrk measured, the server's CPU microseconds per request, and the bytes it logged."""
    with run_server(model, "http", ServerOptions(root=root, log_requests=log)) as server:
        host, port = server.address
        cpu_before = cpu_seconds(server.pid)
        result = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", f"http://{host}:{port}/body"],
            capture_output=True,
            timeout=duration + 30,
            check=False,
        )
        cpu = cpu_seconds(server.pid) - cpu_before
        logged = server.stderr_path.stat().st_size
    match, count = _RATE.search(result.stdout), _COUNT.search(result.stdout)
    if result.returncode != 0 or match is None or count is None:
        raise SystemExit(f"wrk failed (exit {result.returncode}): {result.stderr.decode(errors='replace')}")
    return float(match.group(1)), cpu / max(int(count.group(1)), 1) * 1e6, logged


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the server and its children (forking), live and reaped."""
    total = 0.0
    process = psutil.Process(pid)
    for proc in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="threading")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--duration", type=int, default=5, help="seconds per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk); nothing measured", file=sys.stderr)
        return 1
    rates: dict[bool, list[float]] = {False: [], True: []}
    costs: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "body").write_bytes(b"x" * BODY_SIZE)
        for number in range(args.rounds):
            for log in (False, True) if number % 2 == 0 else (True, False):
                rate, cost, logged = one_round(args.model, root, log, args.connections, args.duration)
                rates[log].append(rate)
                costs[log].append(cost)
                print(
                    f"round {number + 1} logging {'on ' if log else 'off'}: {rate:9.0f} req/s, "
                    f"{cost:6.0f} us server CPU per request, {logged / 1e6:.1f} MB logged"
                )
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    ratios = [with_log / without for with_log, without in zip(rates[True], rates[False])]
    print(
        f"{args.model}, {args.connections} connections, 1 KiB file: median {off:.0f} req/s logging off, "
        f"{on:.0f} req/s on; per round, on/off = {', '.join(f'{r:.2f}' for r in ratios)}, median "
        f"{statistics.median(ratios):.2f}; server CPU per request median {statistics.median(costs[False]):.0f} us "
        f"off, {statistics.median(costs[True]):.0f} us on (load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
