"""Thresholds: pass/fail conditions on measured figures, for a pipeline that guards a server.

A threshold is one line of text, ``METRIC OPERATOR VALUE``::

    p99 < 5ms            req_per_s > 20000       errors == 0
    mem_pss_peak_bytes <= 64MiB                   threading: p99 < 2ms

* ``METRIC`` is a measured column of ``runs.csv``
  (:data:`bench.results.METRIC_COLUMNS`) or one of the short names of
  :data:`bench.results.METRIC_ALIASES` (``p50``, ``p90``, ``p99``, ``p999``,
  ``max``, ``mean``: the request latency percentiles);
* ``OPERATOR`` is one of ``<  <=  >  >=  ==  !=``;
* ``VALUE`` is read in the column's unit (:func:`bench.results.column_unit`):
  a duration for ``_us``/``_s`` columns (:func:`bench.units.parse_duration`;
  ``_us`` columns need a unit, ``5ms`` or ``250us``, since a bare number
  would silently mean seconds), a size for ``_bytes`` columns
  (:func:`bench.units.parse_size`), a plain number otherwise (``%`` allowed
  after a ``_pct`` value);
* an optional ``MODEL:`` prefix limits it to one server model.

``bench compare`` takes ``regression < 10%`` instead (or ``p99 regression <
10%`` for one metric): the change of B against the baseline A, in the worse
direction, of the means over repetitions; an improvement counts as 0%.

What is tested: ``bench run`` tests the **median over the repetitions of
each model at each point**, and the threshold passes when every model
(or the one named) at every point passes; a point with no successful run
fails, since nothing was measured there. ``bench load`` tests its one run.

Error handling: :func:`parse_threshold` raises :class:`ThresholdError`
(a ValueError) naming the text, what is wrong and what is allowed (the
valid metrics, operators or units); it reads at most :data:`MAX_TEXT`
characters.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.results import METRIC_ALIASES, METRIC_COLUMNS, column_unit
from bench.units import UnitError, parse_duration, parse_size

#: The comparison operators, longest first so ``<=`` is not read as ``<``.
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}

#: Longest threshold text: the longest metric name and a value fit in 80.
MAX_TEXT = 200

#: Failing places listed per threshold in summary.json; the rest are counted.
MAX_LISTED = 20

#: What ``bench run`` tests, said wherever a result is shown.
RUN_STATISTIC = "median over the repetitions of each model at each point"
LOAD_STATISTIC = "the one run of bench load"
REGRESSION_STATISTIC = "change of the mean over repetitions, B against the baseline A, in the worse direction"

_EXPR = re.compile(
    r"^\s*(?:(?P<model>[A-Za-z0-9][\w.-]*)\s*:\s*)?(?P<metric>[A-Za-z_][\w]*)"
    r"(?P<regression>\s+regression)?\s*(?P<op><=|>=|==|!=|<|>|=)\s*(?P<value>\S.*?)\s*$"
)
_NUMBER = re.compile(r"^[+-]?(?:\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})(?:[eE][+-]?\d{1,3})?$")


class ThresholdError(ValueError):
    """A threshold that cannot be read; the message names the problem and what is allowed."""


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold: ``metric`` is a runs.csv column, ``value`` in that column's unit."""

    text: str
    metric: str | None  # None: every compared metric (a regression threshold only)
    op: str
    value: float
    model: str | None = None
    regression: bool = False

    def holds(self, measured: float | None, lower_bound: bool = False) -> bool:
        """Whether ``measured`` passes; a missing or NaN value never does.

        A ``lower_bound`` (a latency percentile that censored requests may
        put anywhere above, see bench.loadgen.merge) passes only ``>`` and
        ``>=``: the true value may be higher, so nothing shows it is below.
        """
        if measured is None or not math.isfinite(measured):
            return False
        if lower_bound and self.op not in (">", ">="):
            return False
        return OPERATORS[self.op](measured, self.value)

    def worst(self, values: Sequence[float]) -> float:
        """The value furthest on the failing side (the largest for ``<``, the smallest for ``>``)."""
        return max(values) if self.op in ("<", "<=") else min(values) if self.op in (">", ">=") else values[0]

    def show(self, value: float | None, lower_bound: bool = False) -> str:
        if value is None or not math.isfinite(value):
            return "not measured"
        text = format_value("regression_pct" if self.regression else self.metric or "", value)
        return f">= {text} (a lower bound)" if lower_bound else text


def format_value(metric: str, value: float) -> str:
    """``value`` of ``metric`` in its unit as a person reads it: ``1.23 ms``, ``64 MiB``, ``20,000``."""
    unit = column_unit(metric)
    if metric == "regression_pct":
        return f"{value:.1f}%"
    if unit == "microseconds":
        return (
            f"{_digits(value / 1e6)} s"
            if value >= 1e6
            else f"{_digits(value / 1000)} ms"
            if value >= 1000
            else f"{_digits(value)} us"
        )
    if unit == "seconds":
        return f"{_digits(value)} s"
    if unit == "bytes":
        return f"{value / 2**20:,.1f} MiB" if value >= 2**20 else f"{value:,.0f} B"
    if unit.startswith("percent"):
        return f"{value:.1f}%"
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.3g}"


def _digits(x: float) -> str:
    """Three significant digits, never an exponent: 1.23, 45.6, 999, 1,234."""
    return f"{x:.3g}" if abs(x) < 999.5 else f"{x:,.0f}"


def _metric(name: str) -> str:
    column = METRIC_ALIASES.get(name, name)
    if column in METRIC_COLUMNS:
        return column
    close = difflib.get_close_matches(name, [*METRIC_ALIASES, *METRIC_COLUMNS], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ThresholdError(
        f"unknown metric {name!r}{hint}; valid metrics: {', '.join(METRIC_ALIASES)} "
        f"(latency percentiles) or a measured column of runs.csv: {', '.join(METRIC_COLUMNS)}"
    )


def _value(name: str, metric: str, text: str) -> float:
    """``text`` in ``metric``'s unit (``name`` is how the threshold spelled the metric)."""
    unit = column_unit(metric)
    try:
        if unit == "microseconds":
            if _NUMBER.match(text):
                raise ThresholdError(f"{name} is a time: give a unit, e.g. {text}us or {text}ms (units: us, ms, s, m)")
            return parse_duration(text) * 1e6
        if unit == "seconds":
            return parse_duration(text)
        if unit == "bytes":
            return float(parse_size(text))
    except UnitError as exc:
        raise ThresholdError(str(exc)) from None
    if unit.startswith("percent"):
        text = text.removesuffix("%").rstrip()
    if not _NUMBER.match(text):
        raise ThresholdError(f"{name} takes a plain number, not {text!r} (e.g. 20000)")
    return float(text)


def parse_threshold(text: Any, *, regression: bool = False) -> Threshold:
    """Read one threshold (see the module doc); ``regression`` reads the ``bench compare`` form."""
    if not isinstance(text, str):
        raise ThresholdError(f"a threshold is text such as 'p99 < 5ms', not {type(text).__name__}")
    shown = text if len(text) <= 60 else text[:57] + "..."
    if len(text) > MAX_TEXT:
        raise ThresholdError(f"{shown!r} is longer than {MAX_TEXT} characters")
    example = "'regression < 10%' or 'p99 regression < 10%'" if regression else "'p99 < 5ms' or 'req_per_s > 20000'"
    match = _EXPR.match(text)
    if not match:
        raise ThresholdError(
            f"{shown!r} is not METRIC OPERATOR VALUE (e.g. {example}); "
            f"operators: {' '.join(sorted(OPERATORS, key=len))}"
        )
    model, name, op, value = match["model"], match["metric"], match["op"], match["value"]
    if op == "=" or value[:1] in "<>=!":
        written = op + value[:1] if value[:1] in "<>=!" else op
        fix = "; use '=='" if written == "=" else ""
        raise ThresholdError(f"{shown!r}: {written!r} is not an operator{fix} (operators: {' '.join(OPERATORS)})")
    try:
        if regression:
            if match["regression"] is None and name != "regression":
                raise ThresholdError(f"bench compare tests regressions: {example}, not {shown!r}")
            metric = None if name == "regression" else _metric(name)
            if op not in ("<", "<="):
                raise ThresholdError("a regression threshold is an upper bound: use < or <=")
            if not re.fullmatch(r"\d{1,6}(?:\.\d{1,6})?\s*%", value):
                raise ThresholdError(f"a regression is a percentage such as 10%, not {value!r}")
            number = float(value.rstrip("% "))
        else:
            if match["regression"] is not None or name == "regression":
                raise ThresholdError(
                    "'regression' thresholds belong to bench compare; bench run and bench load "
                    "test measured figures, e.g. 'p99 < 5ms'"
                )
            metric = _metric(name)
            number = _value(name, metric, value)
    except ThresholdError as exc:
        raise ThresholdError(f"{shown!r}: {exc}") from None
    return Threshold(text=text.strip(), metric=metric, op=op, value=number, model=model, regression=regression)


@dataclass(frozen=True)
class Measured:
    """One value a threshold is tested against, and where it comes from (``model``, a point label)."""

    model: str
    where: str
    value: float | None
    #: the value is only a lower bound (``lat_*_is_lower_bound``)
    lower_bound: bool = False


def check(threshold: Threshold, measured: Iterable[Measured], statistic: str) -> dict[str, Any]:
    """Test ``threshold`` against every value of its model (all when it names none).

    Returns the JSON-ready result: ``threshold``, ``model``, ``statistic``,
    ``passed``, ``checked`` (values tested), ``value`` and ``value_text`` (the
    worst one), ``where`` (its place) and ``failures`` (the first
    :data:`MAX_LISTED`, with ``failed`` counting them all).
    """
    mine = [m for m in measured if threshold.model is None or m.model == threshold.model]
    failing = [m for m in mine if not threshold.holds(m.value, m.lower_bound)]
    finite = [m for m in mine if m.value is not None and math.isfinite(m.value)]
    worst = None
    if any(m.value is None or not math.isfinite(m.value) for m in failing):
        worst = next(m for m in failing if m.value is None or not math.isfinite(m.value))
    elif failing:  # the worst failing value (a lower bound may fail below a passing value)
        target = threshold.worst([m.value for m in failing if m.value is not None])
        worst = next(m for m in failing if m.value == target)
    elif finite:
        target = threshold.worst([m.value for m in finite if m.value is not None])
        worst = next(m for m in finite if m.value == target)
    return {
        "threshold": threshold.text,
        "model": threshold.model,
        "statistic": statistic,
        "passed": bool(mine) and not failing,
        "checked": len(mine),
        "failed": len(failing),
        "value": None if worst is None or worst.value is None or not math.isfinite(worst.value) else worst.value,
        "value_text": threshold.show(worst.value, worst.lower_bound) if worst else "nothing measured",
        "where": " ".join(p for p in (worst.model, worst.where) if p) if worst else "",
        "failures": [
            {
                "model": m.model,
                "where": m.where,
                "value": m.value if m.value is None or math.isfinite(m.value) else None,
                "lower_bound": m.lower_bound,
                "value_text": threshold.show(m.value, m.lower_bound),
            }
            for m in failing[:MAX_LISTED]
        ],
    }


def result_line(result: dict[str, Any]) -> str:
    """``PASS  p99 < 5ms: worst 1.2 ms (threading clients=10), 6 checked`` for a terminal or a log."""
    verdict = "PASS" if result["passed"] else "FAIL"
    if not result["checked"]:
        who = f" for {result['model']}" if result["model"] else ""
        return f"{verdict}  {result['threshold']}: nothing measured{who}"
    where = f" ({result['where']})" if result["where"] else ""
    count = result["checked"]
    tally = f"{result['failed']} of {count} fail" if result["failed"] else f"{count} checked"
    label = "worst" if count > 1 else "measured"
    return f"{verdict}  {result['threshold']}: {label} {result['value_text']}{where}; {tally}"


def from_entry(entry: Any) -> Threshold:
    """A ``thresholds:`` item of a scenario: ``"p99 < 5ms"`` or ``{model: threading, check: "p99 < 5ms"}``."""
    if isinstance(entry, dict):
        threshold = parse_threshold(entry.get("check"))
        if threshold.model is not None:
            raise ThresholdError(f"{threshold.text!r} names a model and so does model: give it once")
        model = entry.get("model")
        return Threshold(
            text=f"{model}: {threshold.text}",
            metric=threshold.metric,
            op=threshold.op,
            value=threshold.value,
            model=model,
        )
    return parse_threshold(entry)


#: Exit status of a command whose measurements crossed a threshold (k6's choice,
#: so pipelines that know k6 read it the same way).
EXIT_CROSSED = 99


def add_threshold_argument(parser: Any, *, regression: bool = False, per_model: bool = True) -> None:
    """``--threshold EXPR`` (repeatable) for ``bench run``, ``bench load`` (not ``per_model``) and
    (``regression``) ``bench compare``."""
    if regression:
        what = "B's mean may be at most this much worse than A's, e.g. 'regression < 10%%' or 'p99 regression < 5%%'"
    else:
        what = (
            "METRIC OPERATOR VALUE, e.g. 'p99 < 5ms', 'req_per_s > 20000', 'errors == 0'"
            + (", 'threading: p99 < 2ms'" if per_model else "")
            + " (metrics: bench columns)"
        )
    parser.add_argument(
        "--threshold",
        dest="thresholds",
        action="append",
        default=[],
        metavar="EXPR",
        help=f"{what}; exit status {EXIT_CROSSED} if one fails; repeatable",
    )


def print_results(results: Sequence[dict[str, Any]], print_line: Callable[[str], None]) -> bool:
    """Print one line per threshold result and the statistic tested; return whether all passed."""
    if not results:
        return True
    statistics = sorted({r["statistic"] for r in results})
    print_line(f"Thresholds (tested: {'; '.join(statistics)}):")
    for r in results:
        print_line("  " + result_line(r))
    return all(r["passed"] for r in results)
