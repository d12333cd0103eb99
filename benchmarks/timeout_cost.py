"""What do the per-connection timeouts cost? Requests/s with the default timeouts and with all at 0.

Not a test: it prints figures. For each model, the echo (or file) server is
started alternately with the default timeouts (idle 30 s, request 10 s, send
30 s) and with every timeout at 0 (the stdlib's plain blocking sockets),
driven each time by ``bench load`` with the same clients and 1 KiB messages
(or 1 KiB files), and the ratio of the medians is printed. The socketserver models set
``SO_RCVTIMEO``/``SO_SNDTIMEO`` once per connection (a file body adds two
``ioctl``, see ``servers.handlers.sendfile_within``); selectors reads the
clock per call; asyncio sweeps per-connection deadlines.

    python benchmarks/timeout_cost.py
    python benchmarks/timeout_cost.py --models threading asyncio --rounds 5 --clients 50
    python benchmarks/timeout_cost.py --service file

On a machine shared with other work, trust the ratio (measured in one run,
alternating order) more than either figure.

Resource handling: every server is stopped and reaped (``run_server``); the
load generator is a subprocess that ends with its run; the served file and
its folder are removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers.config import ServerOptions  # noqa: E402
from servers.launch import run_server  # noqa: E402
from servers.registry import MODELS  # noqa: E402

SETTINGS = {"default": ServerOptions(), "off": ServerOptions(idle_timeout=0, request_timeout=0, send_timeout=0)}


#: The file requested by the file service: as small as echo's messages, so
#: that per-request work (reading the request line) weighs the most.
FILE_NAME = "one-kib"


def requests_per_s(model: str, service: str, options: ServerOptions, clients: int, seconds: float, root: Path) -> float:
    service_args = ["--file", FILE_NAME, "--files-root", str(root)] if service == "file" else []
    if service == "file":
        options = dataclasses.replace(options, root=root)
    with run_server(model, service, options) as server:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "load",
                service,
                f"{server.host}:{server.port}",
                "--clients",
                str(clients),
                "--duration",
                str(seconds),
                "--warmup",
                "0.5",
                "--json",
                *service_args,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
    return float(json.loads(out.stdout)["row"]["req_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[m for m in MODELS if m != "sequential"], choices=list(MODELS))
    parser.add_argument("--service", choices=("echo", "file"), default="echo")
    parser.add_argument("--rounds", type=int, default=3, help="runs per setting, alternating")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.service == "file" and "c-reference" in args.models:
        args.models.remove("c-reference")  # echo only
    root = Path(tempfile.mkdtemp(prefix="sockbench-timeout-cost-"))
    (root / FILE_NAME).write_bytes(b"x" * 1024)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}")
    print(f"{'model':<12} {'default req/s':>14} {'off req/s':>10} {'default/off':>12}   per-round ratios (alternating)")
    for model in args.models:
        results: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for index in range(args.rounds):
            order = list(SETTINGS) if index % 2 == 0 else list(reversed(SETTINGS))
            for name in order:
                results[name].append(
                    requests_per_s(model, args.service, SETTINGS[name], args.clients, args.seconds, root)
                )
        on, off = (statistics.median(results[name]) for name in SETTINGS)
        # The spread: each round's default against the off run next to it.
        rounds = " ".join(f"{a / b:.2f}" for a, b in zip(*results.values(), strict=True))
        print(f"{model:<12} {on:>14,.0f} {off:>10,.0f} {on / off:>12.2f}   {rounds}")
    (root / FILE_NAME).unlink()
    root.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
