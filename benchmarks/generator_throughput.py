"""How fast is sockbench's load generator? Round trips/s of 1 KiB echo at 1, 10, 100 connections.

Not a test: it prints figures. The generator must never be the hidden
bottleneck, so this measures it against the fastest server available, the
single-threaded C epoll echo server of ``servers/c/echo_server.c`` (built into
a temporary directory with ``gcc -O2``), or against any running RFC 862 server
given with ``--target``. With ``--c-client`` it also runs the C reference
client (``servers/c/echo_client.c``) at the same points: the machine's
ceiling, to compare the Python generator with.

    python benchmarks/generator_throughput.py
    python benchmarks/generator_throughput.py --connections 100 --duration 10 --c-client
    python benchmarks/generator_throughput.py --server-cpus 0 --gen-cpus 1

Mind CPU placement when reading it: at one connection the figure is mostly
placement (client and server on one CPU or on two), not anyone's speed. On a
2-core machine the server and the generator share the cores: every bit of
CPU the generator saves goes to the server, so the figure at 100 connections
is what the pair reaches, and "busiest worker %" says whether the generator
was the limit (above 90%: generator-bound).

Resource handling: the server (and the C client) are started as children,
stopped with SIGTERM and reaped (SIGKILL after 5 s); the build directory is
removed at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadSpec, run_load  # noqa: E402
from bench.loadgen.cli import parse_cpus, parse_target  # noqa: E402

#: Backlog of the C server: generous, so no connect waits in the burst at start.
BACKLOG = 4096
#: The ready line comes within milliseconds of exec; 10 s is a very loaded machine.
READY_TIMEOUT_S = 10.0


def build(src: Path, out_dir: Path) -> Path | None:
    """Compile a C reference program; None (with a note) when that is impossible."""
    if not src.exists() or shutil.which("gcc") is None:
        print(f"note: cannot build {src.name} (missing source or gcc)", file=sys.stderr)
        return None
    exe = out_dir / src.stem
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def start_server(exe: Path, cpus: set[int] | None) -> tuple[subprocess.Popen[bytes], int]:
    """Start the C echo server on port 0; return it and the port from its ready line."""
    # stderr dropped: the server logs one line per connection the clients leave
    # mid-request at the end of each run, which says nothing here.
    proc = subprocess.Popen([str(exe), "127.0.0.1", "0", str(BACKLOG)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(READY_TIMEOUT_S):
        stop(proc)
        raise SystemExit("the C echo server printed no ready line")
    sel.close()
    ready = json.loads(proc.stdout.readline())
    return proc, int(ready["port"])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait 5 s, SIGKILL; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def c_client(exe: Path, port: int, conns: int, args: argparse.Namespace) -> dict[str, float]:
    """Run the C reference client once; return its JSON line."""
    cmd = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--connections", str(conns),
           "--size", "1024", "--duration", str(args.duration), "--warmup", str(args.warmup)]
    preexec = (lambda: os.sched_setaffinity(0, args.gen_cpus)) if args.gen_cpus else None
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 30,
                         preexec_fn=preexec, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy_pct(seconds: float = 0.5) -> float:
    """Machine busy percent over ``seconds`` (from /proc/stat), to say how quiet the run was."""
    def snap() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]
    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def wait_idle(limit_pct: float, timeout_s: float) -> float:
    """Wait (bounded) until the machine is under ``limit_pct`` busy; return the last reading."""
    deadline = time.monotonic() + timeout_s
    busy = busy_pct()
    while busy >= limit_pct and time.monotonic() < deadline:
        busy = busy_pct()
    return busy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", type=parse_target, help="use this running echo server instead of building the C one")
    p.add_argument("--connections", default="1,10,100", help="comma-separated connection counts")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=1, help="runs per point (figures differ 15-20%% between runs here)")
    p.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    p.add_argument("--workers", type=int, help="generator workers (default: one per CPU, at most one per connection)")
    p.add_argument("--gen-cpus", type=parse_cpus, help="pin generator workers to these CPUs")
    p.add_argument("--server-cpus", type=parse_cpus, help="pin the C server to these CPUs")
    p.add_argument("--c-client", action="store_true", help="also run the C reference client at each point")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before each run wait up to S seconds for the machine to be under 5%% busy")
    args = p.parse_args()

    build_dir = Path(tempfile.mkdtemp(prefix="sockbench-genbench-"))
    server = None
    try:
        if args.target:
            host, port = args.target
            print(f"server: {host}:{port} (given)")
        else:
            exe = build(ROOT / "servers" / "c" / "echo_server.c", build_dir)
            if exe is None:
                raise SystemExit("no C server: give --target HOST:PORT of a running echo server")
            server, port = start_server(exe, args.server_cpus)
            host = "127.0.0.1"
            print(f"server: C epoll echo (servers/c/echo_server.c), port {port}, cpus {args.server_cpus or 'any'}")
        client_exe = build(ROOT / "servers" / "c" / "echo_client.c", build_dir) if args.c_client else None
        print(f"machine busy before start: {busy_pct():.0f}% (of {os.cpu_count()} CPUs)")
        header = (f"{'conns':>6} {'round trips/s':>14} {'p50 us':>8} {'p99 us':>8} {'workers':>7} {'loop':>8} "
                  f"{'worker CPU %':>14} {'CPU us/rt':>9} bound")
        print(header)
        for conns in [int(c) for c in args.connections.split(",")]:
            for _ in range(args.repeat):
                if args.wait_idle:
                    print(f"       (machine {wait_idle(5.0, args.wait_idle):.0f}% busy before this run)")
                spec = LoadSpec(service="echo", host=host, port=port, clients=conns, duration_s=args.duration,
                                warmup_s=args.warmup, message_bytes=1024, workers=args.workers,
                                cpus=args.gen_cpus, loop=args.loop)
                r = run_load(spec)
                row = r.row
                cpu = "/".join(f"{c:.0f}" for c in r.worker_cpu_pct)
                # Generator CPU spent per round trip: the generator's efficiency,
                # which a busy machine disturbs much less than the rate itself.
                us_per_rt = sum(r.worker_cpu_pct) / 100 * args.duration / max(1, row["requests"]) * 1e6
                print(f"{conns:>6} {row['req_per_s']:>14,.0f} {row['lat_p50_us']!s:>8} {row['lat_p99_us']!s:>8} "
                      f"{row['gen_workers']:>7} {r.loop:>8} {cpu:>14} {us_per_rt:>9.1f} {row['generator_bound']}"
                      + (f"  errors={row['errors']}" if row["errors"] else ""))
                if client_exe is not None:
                    if args.wait_idle:
                        wait_idle(5.0, args.wait_idle)
                    c = c_client(client_exe, port, conns, args)
                    c_us = c["cpu_pct"] / 100 * c["duration_s"] / max(1, c["round_trips"]) * 1e6
                    print(f"{'':>6} {c['rt_per_s']:>14,.0f} {c['p50_us']!s:>8} {c['p99_us']!s:>8} {'C':>7} {'client':>8} "
                          f"{c['cpu_pct']:>14.0f} {c_us:>9.1f}")
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(build_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
