"""Printing a calibration: rich tables fitting 80 columns, the placements, the goal line and the notes."""

from __future__ import annotations

from typing import Any

from bench.calibration.measure import CONNECT_SLOTS, GOAL_P50_RATIO, GOAL_RT_RATIO, fmt_value
from bench.vocabulary import GENERATOR_SHORT_RULE


def _generator_table(cal: dict[str, Any], key: str) -> Any:
    """The rich table of ``cal[key]`` (one engine's rows) beside the C client's."""
    from rich import box
    from rich.table import Table

    loops = sorted({str(g["loop"]) for g in cal[key] if g.get("loop")})
    engines = sorted({str(g["engine"]) for g in cal[key] if g.get("engine")})
    name = f"Generator ({', '.join(engines)} engine)" if engines else "Generator"
    rounds = cal.get("rounds", 1)
    table = Table(
        title=f"{name} vs C client, {cal['message_bytes']} B echo, c-reference server, median of "
        f"{rounds} round{'s' if rounds != 1 else ''}",
        caption=f"generator event loop: {', '.join(loops) or '-'}; gen/C: median of the rounds' ratios (C "
        "client and generator alternate who goes first); gen CPU: its busiest worker, % of a "
        f"core; * generator-bound (short of CPU: {GENERATOR_SHORT_RULE}): the generator, not the "
        "server, set that figure",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for col in ("conns", "place", "C rt/s", "gen rt/s", "gen/C", "C p50", "gen p50", "gen/C", "gen CPU"):
        table.add_column(col, justify="right", no_wrap=True)
    gen = {(r["clients"], r["placement"]): r for r in cal[key]}
    for c in cal["echo"]:
        g = gen.get((c["clients"], c["placement"]), {})
        bound = "*" if g.get("generator_bound") else ""
        table.add_row(
            str(c["clients"]),
            c["placement"],
            fmt_value(c.get("rt_per_s"), "{:,.0f}"),
            fmt_value(g.get("rt_per_s"), "{:,.0f}"),
            fmt_value(g.get("rt_ratio"), "{:.2f}"),
            fmt_value(c.get("p50_us"), "{:.0f} us"),
            fmt_value(g.get("p50_us"), "{:.0f} us"),
            fmt_value(g.get("p50_ratio"), "{:.2f}"),
            fmt_value(g.get("gen_cpu_pct_max"), "{:.0f}%") + bound,
        )
    return table


def render(cal: dict[str, Any], console: Any) -> None:
    """Print ``cal`` as rich tables (fitting 80 columns: each engine's, the ceilings), the placements, the goal line and the notes."""
    from rich import box
    from rich.table import Table

    console.print(_generator_table(cal, "generator"))
    if cal.get("generator_python"):
        console.print(_generator_table(cal, "generator_python"))
    if any(g.get("rounds") for g in cal["generator"]):
        spread = Table(
            title="Spread over the rounds (min-max of each round's gen/C)",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        for col in ("conns", "place", "rounds", "rt/s gen/C", "p50 gen/C", "C rt/s"):
            spread.add_column(col, justify="right", no_wrap=True)
        echo = {(r["clients"], r["placement"]): r for r in cal["echo"]}
        for g in cal["generator"]:
            c = echo.get((g["clients"], g["placement"]), {})
            c_range = c.get("rt_per_s_range")
            spread.add_row(
                str(g["clients"]),
                g["placement"],
                str(g.get("n_rounds", "-")),
                _range(g, "rt_ratio"),
                _range(g, "p50_ratio"),
                f"{c_range[0]:,.0f}-{c_range[1]:,.0f}" if c_range else "-",
            )
        console.print(spread)

    ceilings = Table(
        title="Machine ceilings on loopback",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        caption=f"echo and connect: C client + c-reference; bulk: {cal['bulk']['tool']}",
    )
    for col in ("figure", "place", "rate", "p50", "p99"):
        ceilings.add_column(col, justify="left" if col == "figure" else "right", no_wrap=True)
    for c in cal["echo"]:
        if c["clients"] == 1:
            ceilings.add_row(
                "1-connection request/response",
                c["placement"],
                fmt_value(c.get("rt_per_s"), "{:,.0f}/s"),
                fmt_value(c.get("p50_us"), "{:.0f} us"),
                fmt_value(c.get("p99_us"), "{:.0f} us"),
            )
    for c in cal["connect"]:
        ceilings.add_row(
            f"connect+request+close, {CONNECT_SLOTS} at once",
            c["placement"],
            fmt_value(c.get("rt_per_s"), "{:,.0f}/s"),
            fmt_value(c.get("p50_us"), "{:.0f} us"),
            fmt_value(c.get("p99_us"), "{:.0f} us"),
        )
    for b in cal["bulk"]["points"]:
        ceilings.add_row(
            "bulk, one TCP stream", b["placement"], fmt_value(b.get("gbit_per_s"), "{:.1f} Gbit/s"), "", ""
        )
    console.print(ceilings)
    for name, place in cal["placements"].items():
        console.print(f"  {name}: {place['description']}")
    console.print(goal_line(cal["goal"]))
    for note in cal["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False, markup=True)


def _range(row: dict[str, Any], key: str) -> str:
    """'0.74-0.81': a ratio's range over the rounds."""
    spread = row.get(f"{key}_range")
    return f"{spread[0]:.2f}-{spread[1]:.2f}" if spread else "-"


def goal_line(goal: dict[str, Any]) -> str:
    """The line that states the goal, the medians and spread over the rounds, and whether it was reached."""
    verdict = goal.get("verdict", "NOT MEASURED")
    reliable = goal.get("reliable", verdict != "NOT MEASURED")
    colour = {"PASS": "green", "MISS": "red"}.get(verdict, "yellow") if reliable else "yellow"

    def got(key: str) -> str:
        spread = goal.get(f"{key}_range")
        around = f", rounds {spread[0]:.2f}-{spread[1]:.2f}" if spread else ""
        return f"median {fmt_value(goal.get(key), '{:.2f}')}x{around}"

    line = (
        f"Goal ({goal.get('placement', '-')}): generator >= {GOAL_RT_RATIO}x C client rt/s at 100 connections "
        f"(got {got('rt_ratio_at_100')}) and 1-connection p50 <= {GOAL_P50_RATIO}x "
        f"(got {got('p50_ratio_at_1')}): [bold {colour}]{verdict}[/]"
    )
    if verdict != "NOT MEASURED" and not reliable:
        line += f" [bold yellow]NOT RELIABLE[/]: {'; '.join(goal.get('unreliable_because') or [])}"
    return line
