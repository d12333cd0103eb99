"""Scenario YAML in and out: bounded parsing, the line of every field, ``--set`` overrides.

PyYAML follows aliases (a "billion laughs" file of 1 KiB names 10**9
strings), recurses once per nesting level, and converts integers of any
length. Every document is therefore first read as a stream of parser events
(flat, no recursion, no alias expansion) and checked against the limits
below; only a document that passes is composed and constructed. The node
tree keeps the line of each field path (:func:`read_yaml`), so a
:class:`Locator` can place any problem at its line, or at the ``--set`` that
set the field. :class:`Dumper` writes a scenario back the way a person
writes one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.scenario.messages import Issue, ScenarioError, bytes_text, dotted, shorten
from bench.scenario.sweep import MAX_POINTS

#: Largest scenario file (and ``--set`` value). The scenarios in scenarios/
#: are a few KiB; a sweep of MAX_POINTS values still takes under 100 KiB.
MAX_FILE_BYTES = 1 << 20

#: Deepest nesting of sections and lists: a scenario needs 3 (``load:``, a
#: sweep list, its item); 16 leaves room for mistakes worth a message.
MAX_DEPTH = 16

#: Most YAML nodes (keys, values, list items) in a file: one list of
#: MAX_POINTS values plus every field, with room to spare. Parsing stops
#: there, so a megabyte of keys costs milliseconds, not minutes.
MAX_NODES = 2 * MAX_POINTS + 1000

#: Longest number written as a YAML integer or float: 2**63 has 19 digits;
#: Python refuses int() of more than 4300 digits with a traceback.
MAX_NUMBER_TEXT = 40


def _set_where(spec: str) -> str:
    """``--set FIELD=VALUE`` as a message names it, cut short: a value may be megabytes."""
    return shorten(f"--set {spec}")


def too_big(source: str, path: Path | None = None) -> Issue:
    size = ""
    if path is not None:
        with contextlib.suppress(OSError):
            size = f" ({bytes_text(path.stat().st_size)})"
    return Issue(
        source,
        None,
        "",
        f"larger than {bytes_text(MAX_FILE_BYTES)}{size}; a scenario is a few KiB of YAML: is this the right file?",
    )


def read_yaml(text: str, source: str) -> tuple[dict, dict[tuple, int], list[tuple[tuple, str]]]:
    """Parse once, keeping the node tree for line numbers. Syntax errors and unsafe YAML raise ScenarioError."""
    node = compose(text, source, ())
    if node is None:
        raise ScenarioError(
            source, [Issue(source, None, "", "the file is empty; a scenario needs at least name, service and models")]
        )
    data = construct(node, source)
    if not isinstance(data, dict):
        problem = f"expected 'key: value' lines at the top level, not a {type(data).__name__}"
        raise ScenarioError(source, [Issue(source, node.start_mark.line + 1, "", problem)])
    lines: dict[tuple, int] = {}
    issues: list[tuple[tuple, str]] = []
    _walk(node, (), lines, issues)
    return data, lines, issues


# -- bounded YAML -------------------------------------------------------------

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: ~10x faster

#: What YAML 1.1 reads as a number (PyYAML's int and float resolvers, loosely):
#: such a scalar longer than MAX_NUMBER_TEXT is refused before int()/float().
_NUMBER_LIKE = re.compile(r"^[-+]?(?:\.?[0-9]|0[box])")


def compose(text: str, where: str, at: tuple) -> yaml.Node | None:
    """The node tree of ``text`` after :func:`_check_events`; ``at`` prefixes field paths (a ``--set``)."""
    issue = _check_events(text, where, at)
    if issue is not None:
        raise ScenarioError(where, [issue])
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        raise ScenarioError(where, [_syntax_issue(where, exc, text)]) from None
    finally:
        loader.dispose()


def construct(node: yaml.Node, where: str) -> Any:
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    except (yaml.YAMLError, ValueError) as exc:  # a value YAML's own types refuse (e.g. a bad timestamp)
        mark = getattr(exc, "problem_mark", None) or node.start_mark
        raise ScenarioError(
            where, [Issue(where, mark.line + 1, "", f"YAML value error: {getattr(exc, 'problem', exc)}")]
        ) from None
    finally:
        loader.dispose()


def _check_events(text: str, where: str, at: tuple) -> Issue | None:
    """The first limit ``text`` breaks (alias/anchor, depth, node count, overlong number) as an Issue, or None.

    Reads parser events only, so its cost is linear in the text and bounded by
    MAX_FILE_BYTES whatever the text holds. Tracks the field path of each node
    so the message can name it.
    """
    # frames: [path, is_mapping, next key or index, expecting_key]
    frames: list[list] = []
    nodes = 0
    too_deep = f"nested more than {MAX_DEPTH} levels deep; a scenario needs 3 (a section, a sweep list, its values)"

    def here(line: int, path: tuple, message: str) -> Issue:
        return Issue(where, None if at else line + 1, dotted(path), message)

    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frames.pop()
                _advance(frames)
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            path = _event_path(frames, at)
            if frames and frames[-1][1] and frames[-1][3] and isinstance(event, yaml.ScalarEvent):
                path = (*path, event.value[:40])  # a key: name it
            assert event.start_mark is not None  # the parser marks every event it emits
            line = event.start_mark.line
            nodes += 1
            if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
                return here(
                    line,
                    path,
                    "YAML anchors and aliases (&name, *name) are not allowed in a scenario: write each value out",
                )
            if frames and not frames[-1][1] and frames[-1][2] >= MAX_POINTS:
                return here(
                    line,
                    frames[-1][0],
                    f"a list of more than {MAX_POINTS} values; a sweep has at most {MAX_POINTS} points: shorten it",
                )
            if nodes > MAX_NODES:
                return here(
                    line,
                    path,
                    f"more than {MAX_NODES} YAML values (keys, values and list items); "
                    f"a scenario has a few dozen, and a sweep at most {MAX_POINTS} points",
                )
            if isinstance(event, yaml.ScalarEvent):
                value = event.value
                plain = event.implicit[0]  # resolved by its text (int, float, ...), not quoted
                if plain and len(value) > MAX_NUMBER_TEXT and _NUMBER_LIKE.match(value):
                    return here(
                        line,
                        path,
                        f"a number of {len(value)} characters is out of range (at most "
                        f"{MAX_NUMBER_TEXT}; sizes and durations take units: 256MiB, 10s)",
                    )
                _advance(frames, key=value)
                continue
            # a mapping or sequence starts
            if len(frames) >= MAX_DEPTH:
                return here(line, path, too_deep)
            mapping = isinstance(event, yaml.MappingStartEvent)
            frames.append([path, mapping, None if mapping else 0, True])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if "nesting depth" in str(getattr(exc, "problem", "")) and mark is not None:
            # libyaml's own limit (1000 levels), hit while scanning ahead of our count
            return here(mark.line, _event_path(frames, at), too_deep)
        return _syntax_issue(where, exc, text)
    return None


def _event_path(frames: list[list], at: tuple) -> tuple:
    """Field path of the node about to start, from the innermost open mapping or sequence."""
    if not frames:
        return at
    path, mapping, slot, expecting_key = frames[-1]
    if mapping:
        return path if expecting_key else (*path, slot)
    return (*path, slot)


def _advance(frames: list[list], key: str | None = None) -> None:
    """A node just ended: move its parent on to the next key, value or index."""
    if not frames:
        return
    frame = frames[-1]
    if frame[1]:  # mapping: key, then value
        if frame[3]:
            frame[2] = key if key is not None else "?"
        frame[3] = not frame[3]
    else:
        frame[2] += 1


def _syntax_issue(source: str, exc: yaml.YAMLError, text: str = "") -> Issue:
    """A YAML syntax error at the line where the parser gave up, with where the construct began."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids, e.g. a NUL byte
        line = text.count("\n", 0, exc.position) + 1 if text else None
        char = exc.character
        code = ord(char) if isinstance(char, str) else char
        name = "a NUL byte" if code == 0 else f"the control character U+{code:04X}"
        return Issue(
            source,
            line,
            "",
            f"contains {name}, which YAML does not allow; is this a text file? Remove it (e.g. tr -d '\\000')",
        )
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        problem += f" ({context} started on line {context_mark.line + 1})"
    elif context:
        problem += f" ({context})"
    return Issue(source, mark.line + 1 if mark else None, "", f"YAML syntax error: {problem}")


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], issues: list) -> None:
    """Record the line of every field path; report keys given twice (YAML keeps the last silently)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if child in lines:
                issues.append((child, f"given twice (also on line {lines[child]}); remove one"))
            lines[child] = line
            _walk(value_node, child, lines, issues)  # keeps the key's line for child
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, issues)


_OVERRIDE_PATH = re.compile(r"^[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*$")


def apply_overrides(data: dict, overrides: Sequence[str]) -> tuple[list[tuple[tuple, str]], list[Issue]]:
    """Apply ``--set`` strings to the raw tree; return (path, where) pairs applied and malformed ones."""
    applied: list[tuple[tuple, str]] = []
    issues: list[Issue] = []
    for spec in overrides:
        where = _set_where(spec)
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not _OVERRIDE_PATH.match(key):
            issues.append(
                Issue(where, None, "", "expected FIELD=VALUE with a dotted field path, e.g. --set load.clients=[1,10]")
            )
            continue
        path = tuple(int(part) if part.isdigit() else part for part in re.findall(r"\w+", key))
        if len(raw) > MAX_FILE_BYTES:
            issues.append(Issue(where, None, dotted(path), f"the value is longer than {bytes_text(MAX_FILE_BYTES)}"))
            continue
        try:
            node = compose(raw, where, path)
            value = None if node is None else construct(node, where)
        except ScenarioError as exc:
            issues += [
                dataclasses.replace(
                    i,
                    line=None,
                    path=i.path or dotted(path),
                    message=i.message.replace("YAML syntax error", "the value is not valid YAML"),
                )
                for i in exc.issues
            ]
            continue
        problem = _assign(data, path, value)
        if problem:
            issues.append(Issue(where, None, dotted(path), problem))
        else:
            applied.append((path, where))
    return applied, issues


def add_thresholds(data: dict, texts: Sequence[str]) -> list[tuple[tuple, str]]:
    """Append ``--threshold`` texts to the raw ``thresholds:`` list; return (path, where) pairs."""
    if not texts:
        return []
    if not isinstance(data.get("thresholds"), list):
        data["thresholds"] = [] if data.get("thresholds") is None else [data["thresholds"]]
    placed = []
    for text in texts:
        placed.append((("thresholds", len(data["thresholds"])), shorten(f"--threshold {text!r}")))
        data["thresholds"].append(text)
    return placed


def _assign(data: dict, path: tuple, value: Any) -> str | None:
    """Set ``data[path] = value``, creating missing sections; return a problem or None."""
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        here = dotted(path[: depth + 1])
        nxt = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return f"{here} does not exist"
        else:
            if not isinstance(node, dict):
                return f"{dotted(path[:depth]) or 'the top level'} is a single value, not a section"
            if node.get(part) is None:
                node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            return f"{dotted(path)} does not exist (the list is shorter)"
    elif not isinstance(node, dict):
        return f"{dotted(path[:-1])} is a single value, not a section"
    node[last] = value
    return None


class Locator:
    """Turns a field path into an :class:`Issue` placed at its line or at the ``--set`` that set it."""

    def __init__(self, source: str, lines: dict[tuple, int], set_paths: list[tuple[tuple, str]]) -> None:
        self.source, self.lines, self.set_paths = source, lines, set_paths

    def __call__(self, path: tuple, message: str) -> Issue:
        for set_path, where in reversed(self.set_paths):  # the last --set of a field wins
            inside = path[: len(set_path)] == set_path
            created = path not in self.lines and set_path[: len(path)] == path  # a section --set made
            if inside or created:
                return Issue(where, None, dotted(path), message)
        probe = path
        while probe and probe not in self.lines:  # a missing field: point at its section
            probe = probe[:-1]
        return Issue(self.source, self.lines.get(probe), dotted(path), message)


# -- YAML output --------------------------------------------------------------


class Dumper(yaml.SafeDumper):
    """Block mappings, flow lists (``clients: [1, 10]``), literal blocks for multi-line text."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def _represent_list(dumper: yaml.SafeDumper, items: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=True)


Dumper.add_representer(str, _represent_str)
Dumper.add_representer(list, _represent_list)
