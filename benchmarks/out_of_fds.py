"""What does each model do when it runs out of file descriptors? CPU and log lines while flooded.

Not a test: it prints figures. Each model's echo server is started with a low
``RLIMIT_NOFILE`` (soft limit, set from outside with ``prlimit``), then more
connections are opened than it may hold, and kept open. Once the server has
used up its descriptors, the listener stays readable (connections wait in the
accept queue) while every ``accept`` fails with EMFILE: a server that simply
retries spins on the CPU, and one that logs every failure floods its stderr.
Over ``--seconds`` it reports the server's CPU (user + system of the process
tree, from ``psutil`` ``cpu_times`` deltas, as a percentage of one CPU), the
stderr lines written, and whether a new client is served once the flood's
connections are closed.

    python benchmarks/out_of_fds.py
    python benchmarks/out_of_fds.py --models threading selectors --nofile 256 --connections 400

Resource handling: every server is stopped and reaped (``run_server``); the
flood's sockets are closed before the next model starts.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers.config import ServerOptions  # noqa: E402
from servers.launch import run_server  # noqa: E402
from servers.registry import MODELS  # noqa: E402


def flood(address: tuple[str, int], count: int) -> list[socket.socket]:
    """Open ``count`` connections without waiting for them (the server may never accept some)."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(address)
        socks.append(sock)
    return socks


def served(address: tuple[str, int], timeout_s: float) -> bool:
    """True when a fresh client gets its bytes echoed within ``timeout_s``."""
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            sock.sendall(b"ping\n")
            return sock.recv(16) == b"ping\n"
    except OSError:
        return False


def measure(
    model: str, nofile: int, connections: int, backlog: int, seconds: float, settle_s: float
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        stderr_path = Path(tmp) / "stderr"
        with run_server(
            model,
            "echo",
            ServerOptions(backlog=backlog),
            stderr_path=stderr_path,
            rlimits={resource.RLIMIT_NOFILE: nofile},
        ) as server:
            socks = flood(server.address, connections)
            try:
                time.sleep(settle_s)  # let the server use up its descriptors
                lines_before = len(stderr_path.read_bytes().splitlines())
                cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
                time.sleep(seconds)
                cpu = server.cpu_seconds() - cpu_before
                wall = time.monotonic() - wall_before
                log = stderr_path.read_bytes()
                lines = len(log.splitlines()) - lines_before
            finally:
                for sock in socks:
                    sock.close()
            ok = served(server.address, timeout_s=5.0)
            sample = log.decode(errors="replace").splitlines()[-1:] or [""]
    return {
        "model": model,
        "cpu_pct": 100 * cpu / wall,
        "lines": lines,
        "lines_per_s": lines / wall,
        "served_after": ok,
        "last_line": sample[0][:110],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    # 64: a Python server needs ~10 descriptors for itself, so some 50
    # connections use up the rest; 200 keeps the accept queue full after that.
    parser.add_argument("--nofile", type=int, default=64, help="soft RLIMIT_NOFILE of the server")
    parser.add_argument("--connections", type=int, default=200, help="connections opened and held")
    # 128: the whole flood completes its handshakes at once instead of
    # waiting out SYN retries behind the stdlib's backlog of 5.
    parser.add_argument("--backlog", type=int, default=128, help="the server's listen backlog")
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement window")
    parser.add_argument("--settle", type=float, default=1.0, help="wait before measuring (s)")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}")
    print(f"{'model':<12} {'CPU %':>6} {'lines':>7} {'lines/s':>8} {'served after':>13}  last stderr line")
    for model in args.models:
        r = measure(model, args.nofile, args.connections, args.backlog, args.seconds, args.settle)
        print(
            f"{r['model']:<12} {r['cpu_pct']:>6.1f} {r['lines']:>7} {r['lines_per_s']:>8.0f} "
            f"{'yes' if r['served_after'] else 'NO':>13}  {r['last_line']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
