"""A synthetic but realistic results folder, written exactly as bench/results.py specifies.

Plots, compare and report are developed and tested against this fixture while
real folders come from ``bench run``. The numbers follow what 2-CPU machines
measured (forking's summed RSS ~6x its PSS, a full accept queue turning into
SYN retries at 1 s and 3 s, sequential serving one client at a time), and
every special case a reader must handle is present by default:

* several models including ``c-reference``; a swept parameter (``clients``);
* 3 repetitions with small deterministic noise (so medians are exact);
* one failed run (forking, last point, repetition 2: no metrics, an error);
* optionally a second swept parameter (``sweep2``), making a grid of points;
* one generator-bound run (c-reference, last point, repetition 1);
* one unstable point (threading at the third point: +-30% noise, CV > 10%);
* one run started on a busy machine (idle_busy_pct 9%);
* sequential serving one client of many: ``clients_served`` 1, the others'
  requests censored for the whole run, so its p99.9 (at 100 clients) and
  maximum are lower bounds; optionally (``lower_bound_p99``) asyncio's p99 at
  the last point is a lower bound too, as in an overloaded open loop;
* timeline rows for ``server`` and ``load`` sources, hlog files per run and
  kind written with hdrh's ``HistogramLogWriter``; scenario.yaml,
  environment.json and summary.json (via :func:`bench.summary.write_summary`,
  as the runner does).

Because the noise factors are fixed, a second folder written with
``throughput_scale=1.25`` has medians exactly 1.25x the first: compare tests
rely on that.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.results import FORMAT_KEY, FORMAT_VERSIONS, TIMELINE_COLUMNS, hlog_comment, run_columns

MIB = 1024 * 1024
DEFAULT_MODELS = ("sequential", "threading", "forking", "selectors", "asyncio", "c-reference")

#: Multiplicative noise per repetition (cycled): ~2% spread, a stable point.
STABLE_NOISE = (0.98, 1.0, 1.03, 0.99, 1.01)
#: Noise of the deliberately unstable point: CV about 30%.
UNSTABLE_NOISE = (0.72, 1.0, 1.31, 0.8, 1.2)

#: Peak req/s and half-saturation clients of each model (echo, 1 KiB).
_CURVES = {
    "sequential": (16_000, 0.0),
    "threading": (55_000, 3.0),
    "forking": (38_000, 5.0),
    "selectors": (70_000, 2.0),
    "asyncio": (50_000, 2.0),
    "c-reference": (190_000, 3.0),
}
#: p99 / p50 of each model.
_TAIL = {"sequential": 2.0, "threading": 3.5, "forking": 4.0, "selectors": 2.5, "asyncio": 2.5, "c-reference": 1.8}
#: Share of connects that needed a SYN retry (1 s, 3 s) at >= 50 clients with backlog 5.
_SYN_RETRY = {
    "sequential": (0.0, 0.0),
    "threading": (0.20, 0.05),
    "forking": (0.30, 0.10),
    "selectors": (0.05, 0.0),
    "asyncio": (0.05, 0.0),
    "c-reference": (0.0, 0.0),
}


def write_fake_results(
    path: Path,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    sweep: tuple[str, Sequence[Any]] | None = ("clients", (1, 10, 50, 100)),
    sweep2: tuple[str, Sequence[Any]] | None = None,
    repetitions: int = 3,
    service: str | Sequence[str] = "echo",
    name: str = "clients-sweep",
    throughput_scale: float | Mapping[str, float] = 1.0,
    latency_scale: float | Mapping[str, float] = 1.0,
    python_version: str = "3.11.7",
    backlog: int = 5,
    failed: bool = True,
    generator_bound: bool = True,
    unstable: bool = True,
    busy: bool = True,
    hlogs: bool = True,
    timeline: bool = True,
    summary: bool = True,
    lower_bound_p99: bool = False,
) -> Path:
    """Write a fake results folder at ``path`` (created) and return it."""
    path = Path(path)
    (path / "hist").mkdir(parents=True, exist_ok=True)
    (path / "logs").mkdir(exist_ok=True)
    values = list(sweep[1]) if sweep else [None]
    services = [service] if isinstance(service, str) else list(service)
    # points in the runner's order: service slowest, then the swept values
    values2 = list(sweep2[1]) if sweep2 else [None]
    points = [(svc, v2, v) for svc in services for v2 in values2 for v in values]
    last = len(values) - 1
    runs, tl_rows = [], []
    for rep in range(1, repetitions + 1):
        for point, (svc, value2, value) in enumerate(points):
            for model in models:
                if svc == "file" and model == "c-reference":
                    continue  # c-reference serves echo only
                params = _params(svc, backlog, sweep, value)
                if sweep2:
                    params[sweep2[0]] = value2
                special = {
                    "failed": failed and model == "forking" and point == last and rep == 2,
                    "gen_bound": generator_bound and model == "c-reference" and point == last and rep == 1,
                    "unstable": unstable and model == "threading" and point == min(2, last),
                    "busy": busy and model == "sequential" and point == 0 and rep == repetitions,
                    "lower_p99": lower_bound_p99 and model == "asyncio" and point == last,
                }
                noise_seq = UNSTABLE_NOISE if special["unstable"] else STABLE_NOISE
                noise = noise_seq[(rep - 1) % len(noise_seq)]
                row = _run_row(
                    model,
                    point,
                    rep,
                    params,
                    noise,
                    special,
                    _scale(throughput_scale, model),
                    _scale(latency_scale, model),
                )
                runs.append(row)
                if row["status"] == "ok":
                    if timeline:
                        tl_rows += _timeline(row)
                    if hlogs:
                        _write_hlogs(path / "hist", row, noise)
    _write_csv(path / "runs.csv", run_columns(2), runs)  # two CPUs, as on the machines these numbers come from
    if timeline:
        _write_csv(path / "timeline.csv", TIMELINE_COLUMNS, tl_rows)
    _write_scenario(path, name, services if len(services) > 1 else services[0], models, repetitions, sweep, backlog)
    _write_environment(path, python_version)
    if summary:
        from bench.summary import write_summary

        write_summary(path)
    return path


def _scale(scale: float | Mapping[str, float], model: str) -> float:
    return float(scale.get(model, 1.0)) if isinstance(scale, Mapping) else float(scale)


def _params(service: str, backlog: int, sweep: tuple[str, Sequence[Any]] | None, value: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "clients": 10,
        "message_bytes": 1024 if service == "echo" else "",
        "file_bytes": 1_048_576 if service == "file" else "",
        "backlog": backlog,
        "max_children": 40,
        "cpu_work_us": 0,
        "sendfile": True if service == "file" else "",
        "requests_per_connection": 0,
        "mode": "closed",
        "rate": "",
    }
    if sweep:
        params[sweep[0]] = value
    return params


def _throughput(model: str, params: Mapping[str, Any]) -> float:
    peak, half = _CURVES.get(model, (30_000, 3.0))
    clients = params["clients"]
    if model == "forking":
        clients = min(clients, params["max_children"])  # beyond max_children the accept loop waits
    x = peak if half == 0 else peak * clients / (clients + half)
    if params.get("file_bytes"):
        x = x * 4096 / (4096 + params["file_bytes"] / 4)  # bigger files, fewer requests: ~1 GB/s at 1 MiB
    return x


def _memory(model: str, clients: int, max_children: int) -> dict[str, float]:
    if model == "forking":
        procs = min(clients, max_children) + 1
        rss, pss, uss = 7.4 * MIB * procs, (7.0 + 0.875 * (procs - 1)) * MIB, (5.0 + 0.6 * (procs - 1)) * MIB
        return {"procs": procs, "threads": procs, "rss": rss, "pss": pss, "uss": uss}
    base = {
        "sequential": (10.0, 7.0, 4.6, 0.0),
        "threading": (10.2, 7.0, 4.6, 0.035),
        "selectors": (12.0, 9.0, 6.5, 0.012),
        "asyncio": (19.0, 15.3, 12.7, 0.025),
        "c-reference": (1.6, 0.8, 0.5, 0.002),
    }.get(model, (10.0, 7.0, 5.0, 0.01))
    rss, pss, uss, per_conn = base
    threads = clients + 1 if model == "threading" else 1
    return {
        "procs": 1,
        "threads": threads,
        "rss": (rss + per_conn * clients) * MIB,
        "pss": (pss + per_conn * clients) * MIB,
        "uss": (uss + per_conn * clients) * MIB,
    }


def _connects(model: str, clients: int, backlog: int) -> dict[str, Any]:
    """Connection outcomes and connect times (us) for ``clients`` connect attempts."""
    if model == "sequential":
        ok = min(clients, backlog + 2)  # one served, backlog + 1 queued
        fast, timeouts = ok, clients - ok
        times = [80.0 + 5 * i for i in range(fast)]
        return {"ok": ok, "timeout": timeouts, "times": times, "dropped": timeouts * 4}
    r1, r3 = _SYN_RETRY.get(model, (0.0, 0.0)) if clients >= 50 and backlog < clients else (0.0, 0.0)
    n1, n3 = int(round(clients * r1)), int(round(clients * r3))
    base = {"threading": 95.0, "forking": 140.0, "selectors": 70.0, "asyncio": 75.0}.get(model, 55.0)
    times = [base + 3 * i for i in range(clients - n1 - n3)]
    times += [1_000_000 + 2_000 + 300 * i for i in range(n1)]  # first SYN retry after 1 s
    times += [3_000_000 + 4_000 + 300 * i for i in range(n3)]  # second retry, 1 s + 2 s
    return {"ok": clients, "timeout": 0, "times": times, "dropped": n1 + 2 * n3}


def _run_row(
    model: str,
    point: int,
    rep: int,
    params: dict[str, Any],
    noise: float,
    special: Mapping[str, bool],
    tscale: float,
    lscale: float,
) -> dict[str, Any]:
    run_id = f"{model}-p{point}-r{rep}"
    row: dict[str, Any] = {
        "run_id": run_id,
        "model": model,
        "service": "file" if params.get("file_bytes") else "echo",
        "point": point,
        "repetition": rep,
        "status": "ok",
        "error": "",
        "started_at": f"2025-01-01T12:{(point * 7 + rep) % 60:02d}:00+00:00",
        **params,
        "idle_busy_pct": 9.0 if special["busy"] else 1.2,
        "server_cpus": "0",
        "gen_cpus": "1",
        "gen_workers": 1,
        "server_exit": 0,
    }
    if special["failed"]:
        row.update(
            status="failed",
            server_exit=1,
            error=("server died during the run (exit status 1); stderr tail:\nOSError: [Errno 24] Too many open files"),
        )
        return row
    clients = int(params["clients"])
    duration = 5.0
    x = _throughput(model, params) * tscale * noise
    p50 = (1e6 / x if model == "sequential" else clients / x * 1e6) * lscale / noise
    tail = _TAIL.get(model, 3.0)
    conn = _connects(model, clients, int(params["backlog"]))
    mem = _memory(model, clients, int(params["max_children"]))
    times = np.array(conn["times"]) if conn["times"] else np.array([np.nan])
    row.update(
        duration_s=duration,
        requests=int(x * duration),
        errors=0,
        req_per_s=x,
        mb_per_s=x * (params["file_bytes"] or params["message_bytes"] or 0) / 1e6,
        lat_p50_us=p50,
        lat_p90_us=p50 * (1 + (tail - 1) * 0.5),
        lat_p99_us=p50 * tail,
        lat_p999_us=p50 * tail * 1.6,
        lat_max_us=p50 * tail * 4,
        lat_mean_us=p50 * 1.15,
        ttfb_p50_us=p50 * 0.9,
        ttfb_p99_us=p50 * tail * 0.9,
        conn_ok=conn["ok"],
        conn_refused=0,
        conn_reset=0,
        conn_timeout=conn["timeout"],
        conn_emfile=0,
        conn_eaddrnotavail=0,
        conn_other=0,
        conn_pending=conn.get("pending", 0),
        connect_p50_us=float(np.nanpercentile(times, 50)),
        connect_p99_us=float(np.nanpercentile(times, 99)),
        connect_max_us=float(np.nanmax(times)),
        err_reset=0,
        err_timeout=0,
        err_closed_early=0,
        err_short=0,
        err_corrupt=0,
        k_listen_overflows=conn["dropped"],
        k_listen_drops=conn["dropped"],
        k_reqq_full_drop=0,
        k_reqq_full_do_cookies=0,
        k_syncookies_sent=0,
        accept_queue_max=min(clients - 1, int(params["backlog"]) + 1) if model == "sequential" else min(clients, 3),
        mem_rss_peak_bytes=mem["rss"],
        mem_rss_mean_bytes=mem["rss"] * 0.97,
        mem_pss_peak_bytes=mem["pss"],
        mem_pss_mean_bytes=mem["pss"] * 0.97,
        mem_uss_peak_bytes=mem["uss"],
        mem_uss_mean_bytes=mem["uss"] * 0.97,
        mem_note="",
        procs_peak=mem["procs"],
        threads_peak=mem["threads"],
        fds_peak=clients + 8,
        server_cpu_user_s=3.1,
        server_cpu_sys_s=1.4,
        server_cpu_pct=90.0,
        ctx_switches=int(x * duration * 0.5),
        gen_cpu_pct_max=97.0 if special["gen_bound"] else 55.0,
        generator_bound=bool(special["gen_bound"]),
        cpu0_busy_pct=92.0,
        cpu1_busy_pct=60.5,
        clients_served=clients,
        lat_censored=0,
        gen_runq_wait_pct_max=2.0,
        server_runq_wait_pct=1.0,
        runner_cpu_pct=6.0,
        **{f"lat_{p}_is_lower_bound": False for p in ("p50", "p90", "p99", "p999", "max")},
    )
    if model == "sequential" and clients > 1:
        # one client served all run; the others' requests waited the whole window
        row.update(clients_served=1, lat_censored=clients - 1, lat_max_us=duration * 1e6, lat_max_is_lower_bound=True)
        if clients - 1 > 0.001 * row["requests"]:
            row.update(lat_p999_us=duration * 1e6, lat_p999_is_lower_bound=True)
    if special.get("lower_p99"):
        row.update(lat_censored=int(0.3 * row["requests"]), lat_p99_us=duration * 0.4e6, lat_p99_is_lower_bound=True)
    return row


def _timeline(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    steps = np.arange(-1.0, row["duration_s"] + 0.01, 0.5)  # 0.5 s samples, 1 s of warmup
    for i, t in enumerate(steps):
        wobble = 1.0 + 0.04 * math.sin(i * 1.7)
        ramp = min(1.0, (t + 1.5) / 1.5)  # processes/memory grow while clients connect
        out.append(
            {
                "run_id": row["run_id"],
                "source": "load",
                "t_s": round(float(t), 3),
                "req_per_s": row["req_per_s"] * wobble * ramp,
                "lat_p99_us": row["lat_p99_us"] / wobble,
            }
        )
        procs = max(1, round(row["procs_peak"] * ramp))
        out.append(
            {
                "run_id": row["run_id"],
                "source": "server",
                "t_s": round(float(t) + 0.01, 3),
                "mem_rss_bytes": row["mem_rss_peak_bytes"] * (0.6 + 0.4 * ramp),
                "mem_pss_bytes": row["mem_pss_peak_bytes"] * (0.6 + 0.4 * ramp),
                "mem_uss_bytes": row["mem_uss_peak_bytes"] * (0.6 + 0.4 * ramp),
                "procs": procs,
                "threads": max(1, round(row["threads_peak"] * ramp)),
                "fds": row["fds_peak"],
                "server_cpu_pct": row["server_cpu_pct"] * wobble,
                "accept_queue": round(row["accept_queue_max"] * ramp),
            }
        )
    return out


def _write_hlogs(hist_dir: Path, row: Mapping[str, Any], noise: float) -> None:
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogWriter

    seed = zlib.crc32(f"{row['model']}-{row['point']}".encode())  # stable across processes
    rng = np.random.default_rng(seed)
    start_ms = 1_735_732_800_000 + 60_000 * int(row["point"])  # 2025-01-01T12:00Z, deterministic
    hists = {}
    requests = int(row["requests"])
    for kind, centre, tail in (
        ("latency", row["lat_p50_us"], row["lat_p99_us"] / row["lat_p50_us"]),
        ("ttfb", row["ttfb_p50_us"], row["ttfb_p99_us"] / row["ttfb_p50_us"]),
    ):
        sigma = math.log(tail) / 2.326  # z of the 99th percentile
        samples = np.exp(rng.normal(math.log(centre), sigma, 2000))
        # an HdrHistogram range of 1 us .. 1 hour at 3 significant digits, like the generator's
        h = HdrHistogram(1, 3_600_000_000, 3)
        per = max(1, requests // samples.size)
        for v in samples:
            h.record_value(max(1, int(v)), per)
        hists[kind] = h
    conn = _connects(row["model"], int(row["clients"]), int(row["backlog"]))
    h = HdrHistogram(1, 3_600_000_000, 3)
    for v in conn["times"]:
        h.record_value(int(v))
    hists["connect"] = h
    for kind, h in hists.items():
        if h.get_total_count() == 0:
            continue
        with open(hist_dir / f"{row['run_id']}.{kind}.hlog", "w", encoding="utf-8") as fh:
            writer = HistogramLogWriter(fh)
            writer.output_comment(hlog_comment(kind))
            writer.output_log_format_version()
            writer.output_legend()
            writer.output_interval_histogram(
                h, start_ms / 1000.0, start_ms / 1000.0 + row["duration_s"], max_value_unit_ratio=1.0
            )


def _write_csv(path: Path, columns: Mapping[str, str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns} | {FORMAT_KEY: FORMAT_VERSIONS[path.name]})


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return repr(round(float(v), 6))
    return v


def _write_scenario(
    path: Path,
    name: str,
    service: str | list[str],
    models: Sequence[str],
    repetitions: int,
    sweep: tuple[str, Sequence[Any]] | None,
    backlog: int,
) -> None:
    scenario = {
        "name": name,
        "description": (
            "How do the server models cope as more clients connect at once?\n\n"
            "Each client opens one connection and sends 1 KiB messages in a closed loop. "
            "The sequential server serves one client at a time: the others wait in the "
            "listen queue, and once it is full their SYNs are dropped."
        ),
        "service": service,
        "models": list(models),
        "repetitions": repetitions,
        "duration_s": 5.0,
        "warmup_s": 1.0,
        "server": {"backlog": backlog, "max_children": 40},
        "load": {"clients": 10, "message_bytes": 1024, "mode": "closed", "requests_per_connection": 0},
        "sweep": {sweep[0]: list(sweep[1])} if sweep else {},
    }
    (path / "scenario.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False), encoding="utf-8")


def _write_environment(path: Path, python_version: str) -> None:
    # the layout of bench.environment.collect_environment()
    env = {
        FORMAT_KEY: FORMAT_VERSIONS["environment.json"],
        "timestamp": "2025-01-01T12:00:00+00:00",
        "hostname": "bench-host",
        "python": {"version": python_version, "implementation": "CPython", "executable": "/usr/bin/python3"},
        "platform": {
            "system": "Linux",
            "kernel_release": "6.18.0-fake",
            "kernel_version": "#1 SMP",
            "machine": "x86_64",
            "platform": "Linux-6.18.0-fake-x86_64-with-glibc2.36",
        },
        "cpu": {"model": "KVM virtual CPU", "logical": 2, "physical": 2, "affinity": [0, 1], "governor": None},
        "memory_total_bytes": 4 * 2**30,
        "sysctls": {
            "net.core.somaxconn": 4096,
            "net.ipv4.tcp_syncookies": 1,
            "net.ipv4.tcp_abort_on_overflow": 0,
            "net.ipv4.tcp_max_syn_backlog": 512,
        },
        "ulimits": {"nofile": [1024, 524288]},
        "packages": {"psutil": "5.9.8", "pandas": "2.2.0", "matplotlib": "3.8.2", "uvloop": None},
        "sockbench": {"version": "0.1.0", "commit": "0123456789abcdef", "dirty": False},
        "load_average": [0.1, 0.2, 0.3],
        "placement": {"policy": "split", "server_cpus": [0], "generator_cpus": [1]},
        "notes": ["kernel counters are for the whole network namespace"],
    }
    (path / "environment.json").write_text(json.dumps(env, indent=2), encoding="utf-8")


if __name__ == "__main__":  # python tests/fake_results.py OUT_DIR: a folder to look at by hand
    import sys

    print(write_fake_results(Path(sys.argv[1])))
