"""Problems with a scenario, in the user's words: where (file and line, or ``--set``), which field, what is allowed.

:class:`ScenarioError` is the one exception a bad scenario raises; it holds
every :class:`Issue` found. :func:`describe` turns a pydantic validation
error into the field path a user wrote (``load.clients[2]``) and a sentence
naming what is wrong and what would be accepted; it knows the schema only
through the root model it is given, so a new section needs no change here.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from bench.parameters import PARAMETERS
from bench.scenario.sweep import SWEEP_PATHS
from bench.units import format_duration, format_size

#: Validation errors turned into messages (each one costs a close-match search
#: for unknown keys); any more are only counted.
MAX_DESCRIBED = 200

#: Problems listed in one message; the rest are counted. A file with ten
#: thousand unknown keys needs one line saying so, not ten thousand.
MAX_SHOWN = 20


class ScenarioError(Exception):
    """A scenario that cannot be used; ``str()`` is the complete user-facing message.

    ``issues`` holds the individual problems (:class:`Issue`), in file order.
    """

    def __init__(self, source: str, issues: list[Issue], omitted: int = 0) -> None:
        self.source = source
        self.issues = issues
        #: problems counted but not described (past MAX_DESCRIBED)
        self.omitted = omitted
        super().__init__(self._render())

    def _render(self) -> str:
        total = len(self.issues) + self.omitted
        if total == 1:
            return str(self.issues[0])
        lines = [f"{self.source}: {total} problems:"]
        lines += [f"  {issue}" for issue in self.issues[:MAX_SHOWN]]
        if total > MAX_SHOWN:
            lines.append(f"  ... and {total - min(MAX_SHOWN, len(self.issues))} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class Issue:
    """One problem: where it is (file and line, or the ``--set`` it came from), the field, what is wrong."""

    where: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        place = f"{self.where}:{self.line}" if self.line else self.where
        return f"{place}: {self.path}: {self.message}" if self.path else f"{place}: {self.message}"


def plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def bytes_text(n: int) -> str:
    """``1048576`` -> ``"1 MiB"``; ``25276502016`` -> ``"23.5 GiB"``; small or odd sizes in bytes."""
    shown = format_size(n)
    if isinstance(shown, str) and (shown.endswith("GiB") or int(shown[:-3]) < 10_000):
        return f"{shown[:-3]} {shown[-3:]}"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n:,} bytes"


def shorten(where: str) -> str:
    return where if len(where) <= 66 else f"{where[:63]}..."


def dotted(path: Sequence) -> str:
    """``("load", "clients", 2)`` -> ``"load.clients[2]"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# -- pydantic errors in the user's words -------------------------------------

# service first, then section by section (server, then the rest), each in the table's order
_SWEEPABLE = ", ".join(dotted(p) for p in sorted(SWEEP_PATHS.values(), key=lambda p: (len(p) > 1, p[0] != "server")))
_COMPARISONS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "list_type": "a list such as [a, b]",
    "model_type": "a section of 'key: value' lines",
    "dict_type": "a section of 'key: value' lines",
    "model_attributes_type": "a section of 'key: value' lines",
}


def is_tag(part: object) -> bool:
    """A tagged-union branch in a pydantic error location (``"<list>"``): not a field the user wrote."""
    return isinstance(part, str) and part.startswith("<") and part.endswith(">")


def describe(err: ErrorDetails, root: type[BaseModel]) -> tuple[tuple, str]:
    """A pydantic error as (user-visible path, message with what is allowed); ``root`` is the schema's top model."""
    path = tuple(part for part in err["loc"] if not is_tag(part))
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return path, _unknown_field(path, root)
    if kind == "missing":
        return path, "required, but missing"
    if kind == "value_error" and isinstance(value, list) and not any(is_tag(p) for p in err["loc"]):
        return path, f"takes a single value, not a list (lists sweep only these fields: {_SWEEPABLE})"
    if kind == "value_error":
        return path, str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return path, f"must be one of {ctx['expected']}, not {show(value)}"
    if kind in _COMPARISONS:
        limit = next(iter(ctx.values()))
        shown = format_duration(limit) if _field_name(path) in _DURATION_FIELDS else plain_number(limit)
        return path, f"must be {_COMPARISONS[kind]} {shown}, not {show(value)}"
    if kind == "finite_number":
        return path, f"must be a finite number, not {show(value)}"
    if kind == "too_short":
        return path, "must not be an empty list"
    if kind in _TYPE_WORDS:
        message = f"expected {_TYPE_WORDS[kind]}, not {show(value)}"
        if isinstance(value, list):
            message += f" (lists sweep only these fields: {_SWEEPABLE})"
        return path, message
    return path, f"{err['msg']} (got {show(value)})"


#: Fields holding seconds: their limits are shown as durations ("10ms").
_DURATION_FIELDS = frozenset(
    {
        "duration",
        "warmup",
        "interval",
        "idle_wait",
        "idle_timeout",
        "request_timeout",
        "send_timeout",
        *(p.name for p in PARAMETERS if p.kind == "duration"),
    }
)


def _field_name(path: tuple) -> str:
    names = [part for part in path if isinstance(part, str)]
    return names[-1] if names else ""


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_field(path: tuple, root: type[BaseModel]) -> str:
    name = str(path[-1])
    section = _section_at(path[:-1], root)
    if section is None:
        return f"unknown field {name!r}"
    allowed = list(section.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    where = f"in {dotted(path[:-1])}" if path[:-1] else "at the top level"
    extra = getattr(section, "unknown_hint", "")
    return f"unknown field {name!r}{hint}; allowed {where}: {', '.join(allowed)}" + (f" ({extra})" if extra else "")


def _section_at(path: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    """The section (model) a field path names, following fields and list items, or None."""
    annotation: Any = root
    for part in path:
        if isinstance(part, int):  # an item of a list field
            if typing.get_origin(annotation) is not list:
                return None
            annotation = typing.get_args(annotation)[0]
            continue
        model = _model_in(annotation)
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        annotation = field.annotation
    return _model_in(annotation)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section model inside a field's type (``Optional[X]``, a union of a text and X), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
