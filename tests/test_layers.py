"""The import graph of ``bench`` and ``servers`` has layers and no cycle.

Every module is given a layer by :data:`LAYERS` (the longest matching
dotted prefix wins, so a module added under ``bench/loadgen/`` is placed
with the load generator without an edit here). A module may import its own
layer and the layers below it, never one above; the analysing and
presenting layers also never import the measuring one: they read what was
measured from the results folder. Imports are collected with ``ast`` from the
whole module, imports inside functions included: an import hidden in a
function is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The layers, lowest first: a module may import from its own layer and any earlier one.
ORDER = ("servers", "base", "record", "measure", "describe", "analyse", "present", "run")

#: Lower layers a layer must not import although they are below it.
NOT_FROM = {
    "analyse": {"measure": "analysis reads measurements from the results folder, not from measuring code"},
    "present": {"measure": "presenting reads measurements from the results folder, not from measuring code"},
}

#: Dotted prefix -> layer. The longest prefix matching a module decides.
LAYERS = {
    # the servers under test know nothing of the benchmark
    "servers": "servers",
    # words and numbers every layer uses: units, formatting, the vocabulary of outcomes and flags
    "bench.units": "base",
    "bench.format": "base",
    "bench.histograms": "base",
    "bench.vocabulary": "base",
    "bench.placement": "base",
    "bench.stopping": "base",
    "bench.parameters": "base",  # the run's parameters: names, kinds, defaults, columns, axis words
    # the results folder's format, written by measure and read by analyse
    "bench.results": "record",
    # measuring: the load generator, the monitors, the machine's ceilings, the environment
    "bench.loadgen": "measure",
    "bench.monitor": "measure",
    "bench.calibrate": "measure",
    "bench.calibration": "measure",  # the calibration as a package: measuring, rendering and its command ...
    "bench.calibration.persist": "record",  # ... but the stored calibration is part of the results folder
    "bench.calibration.cli": "run",
    "bench.network": "measure",  # test hosts in network namespaces the runner sets up
    "bench.cpuwork": "measure",
    "bench.environment": "measure",
    # what to run and what to accept: scenarios (in terms of the load generator's spec) and thresholds
    "bench.scenario": "describe",
    "bench.thresholds": "describe",
    # statistics, the summary and its warnings, findings
    "bench.stats": "analyse",
    "bench.summary": "analyse",
    "bench.ceilings": "analyse",
    "bench.findings": "analyse",
    # figures, the HTML report, comparing two results folders
    "bench.plots": "present",
    "bench.report": "present",
    "bench.compare": "present",
    # running a scenario end to end (measure, record, then summary, figures and report) and the commands
    "bench.runner": "run",
    "bench.progress": "run",
    "bench.estimate": "run",
    "bench.api": "run",
    "bench.cli": "run",
    "bench.__main__": "run",
    "bench.loadgen.cli": "run",  # `bench load`: a command, checking thresholds like bench run
}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the two packages."""
    found = {}
    for package in ("bench", "servers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


#: Packages placed by name only, not as a prefix: a new module directly in bench/ must be placed here.
EXACT = {"bench": "base"}


def layer_of(module: str) -> str:
    """The layer of ``module``: :data:`EXACT`, else the value of its longest prefix in :data:`LAYERS`."""
    if module in EXACT:
        return EXACT[module]
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add its prefix to LAYERS in {Path(__file__).name}")


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The project module ``name`` (a module or a name inside one) belongs to, or None."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports only a type checker runs."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (their ``else`` runs)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        children = node.orelse if _type_checking(node) else list(ast.iter_child_nodes(node))
        todo.extend(children)
    return out


def imports(module: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """Project module -> line of every import ``module`` makes, at module level or inside a function.

    Importing ``a.b.c`` from outside the package ``a.b`` also runs
    ``a/b/__init__.py``: that package counts as imported too.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        target = _owner(name, known)
        if target is None or target == module:
            return
        found.setdefault(target, line)
        parts = target.split(".")
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            inside = module == parent or module.startswith(parent + ".")
            if parent in known and not inside:
                found.setdefault(parent, line)

    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
                add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source, node.lineno)
    return found


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def upward_edges(edges: dict[str, dict[str, int]], known: dict[str, Path]) -> list[str]:
    """Every import of a higher layer, or of a layer :data:`NOT_FROM` forbids, as a readable line."""
    bad = []
    for module, targets in sorted(edges.items()):
        here = layer_of(module)
        for target, line in sorted(targets.items()):
            there = layer_of(target)
            where = f"{os.path.relpath(known[module], ROOT)}:{line}: {module} ({here}) imports {target} ({there})"
            if ORDER.index(there) > ORDER.index(here):
                bad.append(f"{where}: an upward import")
            elif there in NOT_FROM.get(here, {}):
                bad.append(f"{where}: {NOT_FROM[here][there]}")
    return bad


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import cycles, each as the modules along it (first repeated at the end)."""
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges.get(m, {})):
            if state.get(t) == "open":
                found.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def test_every_module_has_a_layer():
    assert set(LAYERS.values()) | set(EXACT.values()) <= set(ORDER)
    for module in modules():
        layer_of(module)  # raises naming the module


def test_no_upward_import():
    bad = upward_edges(graph(), modules())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_private_name_from_another_package():
    """A name with a leading underscore is its package's own: another package asks for a public one."""
    known, bad = modules(), []
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module in known:
                source_package = (
                    node.module if known[node.module].name == "__init__.py" else node.module.rpartition(".")[0]
                )
                for alias in node.names:
                    if alias.name.startswith("_") and source_package != package:
                        bad.append(
                            f"{os.path.relpath(path, ROOT)}:{node.lineno}: {module} imports {node.module}.{alias.name}"
                        )
    assert not bad, "private names imported from another package:\n" + "\n".join(bad)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    """The checks fail on what they are for: a hidden upward import and a hidden cycle."""
    known = {
        "bench.results": tmp_path / "results.py",
        "bench.stats": tmp_path / "stats.py",
        "bench.plots": tmp_path / "plots" / "__init__.py",
        "bench.plots.style": tmp_path / "plots" / "style.py",
    }
    (tmp_path / "plots").mkdir()
    known["bench.results"].write_text("def f():\n    from bench.stats import x\n")
    known["bench.stats"].write_text("import math\n\n\ndef g():\n    from bench.plots.style import y\n")
    known["bench.plots"].write_text("from . import style\n")
    known["bench.plots.style"].write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from bench.results import only_a_type\n\n\n"
        "def h():\n    from ..stats import z\n"
    )
    edges = {m: imports(m, p, known) for m, p in known.items()}
    assert edges["bench.results"] == {"bench.stats": 2}
    assert edges["bench.stats"] == {"bench.plots.style": 5, "bench.plots": 5}  # the package's __init__ runs too
    assert edges["bench.plots"] == {"bench.plots.style": 1}
    assert edges["bench.plots.style"] == {"bench.stats": 8}  # not bench.results: a type checker's import only
    assert ["bench.plots.style", "bench.stats", "bench.plots.style"] in cycles(edges)
    bad = upward_edges(edges, known)
    assert any("bench.results (record) imports bench.stats (analyse): an upward import" in b for b in bad)
    assert any("bench.stats (analyse) imports bench.plots.style (present)" in b for b in bad)


def test_new_modules_are_placed_by_prefix():
    assert layer_of("bench.loadgen.some_new_engine") == "measure"
    assert layer_of("bench.scenario.schema") == "describe"
    assert layer_of("servers.models.new_model") == "servers"
    assert layer_of("bench") == "base"
    for unplaced in ("elsewhere", "bench.new_top_level_module"):
        with pytest.raises(AssertionError, match=f"{unplaced} has no layer"):
            layer_of(unplaced)


def test_printing_a_run_line_imports_no_plotting():
    """``bench run``'s per-run line uses bench.format, which pulls in neither matplotlib nor the figures."""
    code = (
        "import sys\n"
        "from types import SimpleNamespace as N\n"
        "from bench.cli import run_line\n"
        "plan = N(model='threading', repetition=1, point=N(label=lambda: 'clients=10'))\n"
        "row = {'status': 'ok', 'req_per_s': 12345.6, 'lat_p50_us': 80.0, 'lat_p99_us': 2500.0,\n"
        "       'mem_rss_peak_bytes': 3 * 2**20, 'mem_pss_peak_bytes': 2 * 2**20}\n"
        "print(run_line(plan, row))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'bench.plots'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert "12,346 req/s" in out[0] and "p99 2.5 ms" in out[0] and "PSS 2 MiB" in out[0]
    assert out[1] == "[]"
