"""What receiving a file costs the native load engine: CPU per MB, the working tree's engine beside an earlier one.

Not a test: it prints figures. Against the ``selectors`` file server (sendfile,
the cheapest Python sender) pinned to the first CPU, ``--clients`` clients of
ONE native worker pinned to the second CPU fetch a ``--size`` file in a
closed loop, with ``--sample`` of the bodies hashed (the scenario default is
0.05). Each round runs the engine compiled from ``--base`` (a git revision of
``bench/loadgen/c/loadgen.c``, default HEAD: the last commit) and the one of
the working tree, in alternating order (the order flips every round, so drift
on a shared machine falls on both alike). Printed per run: MB/s, the worker's
CPU and busy share (CPU + run-queue wait) and CPU seconds per GB received;
then the medians per engine and the median of the per-round ratios.

    python benchmarks/file_receive_cost.py
    python benchmarks/file_receive_cost.py --base 5e8da28 --rounds 5 --size 4MiB

The engine that measures at 100% busy is the bottleneck of the pair: its
MB/s is then the generator's ceiling, not the server's.

Resource handling: the server runs through :func:`servers.launch.run_server`
(stopped and reaped on exit); each load run reaps its worker; the earlier
source is written to a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import FileTarget, LoadSpec, engines, run_load  # noqa: E402
from bench.units import parse_size  # noqa: E402
from servers import native  # noqa: E402
from servers.config import ServerOptions  # noqa: E402
from servers.launch import run_server  # noqa: E402

SOURCE = "bench/loadgen/c/loadgen.c"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def engine_from(revision: str, tmp: Path) -> Path:
    """The native worker compiled from ``loadgen.c`` as it was at ``revision``."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:{SOURCE}"], check=True, capture_output=True, text=True
    ).stdout
    source = tmp / "loadgen.c"
    source.write_text(text)
    path = native.build("loadgen", source, engines.WITH_CRYPTO)
    if path is None:
        sys.exit("no C compiler: the native engine cannot be built")
    return path


def one(binary: Path, port: int, args: argparse.Namespace, size: int) -> dict[str, Any]:
    engines.native_program = lambda: (binary, "")  # type: ignore[assignment]  # this run's engine
    row = run_load(
        LoadSpec(
            "file",
            "127.0.0.1",
            port,
            clients=args.clients,
            duration_s=args.duration,
            warmup_s=args.warmup,
            files=[FileTarget("f", size, "")],
            checksum_sample=args.sample,
            workers=1,
            cpus={1},
            engine="native",
        )
    ).row
    cpu_s = (row["gen_cpu_pct_max"] or 0.0) / 100 * row["duration_s"]
    gb = row["mb_per_s"] * row["duration_s"] / 1000
    return {
        "mb_per_s": row["mb_per_s"],
        "cpu_pct": row["gen_cpu_pct_max"],
        "busy_pct": row["gen_busy_pct_max"],
        "cpu_s_per_gb": cpu_s / gb if gb else float("nan"),
        "errors": row["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision of the engine to compare with (default HEAD)")
    parser.add_argument("--size", default="1MiB", help="file size (default 1MiB, quick's)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--sample", type=float, default=0.05, help="share of bodies hashed (default 0.05)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    size = parse_size(args.size)
    print(
        f"load average {load_average()}; selectors file server on CPU 0, one native worker on CPU 1, "
        f"{args.clients} clients, {size:,} B files, {args.sample:g} hashed"
    )
    with tempfile.TemporaryDirectory() as tmp:
        builds = {f"base {args.base}": engine_from(args.base, Path(tmp)), "working tree": engines.native_program()[0]}
        assert builds["working tree"] is not None
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "f").write_bytes(os.urandom(size))
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
        with run_server("selectors", "file", ServerOptions(root=root, backlog=128), cpus={0}) as srv:
            for rnd in range(args.rounds):
                order = list(builds) if rnd % 2 == 0 else list(reversed(builds))
                for name in order:
                    r = one(builds[name], srv.port, args, size)
                    results[name].append(r)
                    print(
                        f"round {rnd + 1} {name:>16}: {r['mb_per_s']:8,.0f} MB/s, worker CPU {r['cpu_pct']:5.1f}% "
                        f"busy {r['busy_pct']:5.1f}%, {r['cpu_s_per_gb']:.3f} CPU s/GB, errors {r['errors']}"
                    )
    print(f"\nmedians over {args.rounds} rounds (load average now {load_average()})")
    for name, rs in results.items():
        print(
            f"  {name:>16}: {statistics.median(r['mb_per_s'] for r in rs):8,.0f} MB/s, "
            f"{statistics.median(r['cpu_s_per_gb'] for r in rs):.3f} CPU s/GB, "
            f"busy {statistics.median(r['busy_pct'] for r in rs):.1f}%"
        )
    base, new = results[f"base {args.base}"], results["working tree"]
    print(
        f"  working tree / base, per round: MB/s {statistics.median(n['mb_per_s'] / b['mb_per_s'] for b, n in zip(base, new)):.2f}x, "
        f"CPU per GB {statistics.median(n['cpu_s_per_gb'] / b['cpu_s_per_gb'] for b, n in zip(base, new)):.2f}x"
    )


if __name__ == "__main__":
    main()
