"""Loading a scenario: read the file (bounded), apply ``--set`` and ``--threshold``, validate, report every problem."""

from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from bench.scenario.messages import MAX_DESCRIBED, Issue, ScenarioError, describe
from bench.scenario.schema import SINK, Scenario
from bench.scenario.source import MAX_FILE_BYTES, Locator, add_thresholds, apply_overrides, read_yaml, too_big


def load_scenario(path: str | Path, overrides: Sequence[str] = (), thresholds: Sequence[str] = ()) -> Scenario:
    """Read, override and validate a scenario file.

    ``overrides`` are ``--set`` arguments, ``"field.path=value"`` with the
    value in YAML (``load.clients=[1,10]``, ``duration=2s``,
    ``models=[threading]``); they replace fields of the file before validation.
    ``thresholds`` are ``--threshold`` arguments (``"p99 < 5ms"``,
    ``"threading: p99 < 5ms"``), added to the file's ``thresholds:``.

    Error handling: raises :class:`ScenarioError` listing every problem found.
    """
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # never more: a wrong path to a huge file costs nothing
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, [Issue(source, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise ScenarioError(source, [Issue(source, None, "", "is a directory; give a .yaml file")]) from None
    except UnicodeDecodeError as exc:
        if len(raw) > MAX_FILE_BYTES:
            raise ScenarioError(source, [too_big(source, path)]) from None
        raise ScenarioError(
            source, [Issue(source, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from None
    except OSError as exc:
        raise ScenarioError(source, [Issue(source, None, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(source, [too_big(source, path)])
    return parse_scenario(text, str(path), overrides, thresholds)


def parse_scenario(
    text: str, source: str = "<scenario>", overrides: Sequence[str] = (), thresholds: Sequence[str] = ()
) -> Scenario:
    """Validate scenario YAML ``text``; ``source`` names it in messages. See :func:`load_scenario`."""
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise ScenarioError(source, [too_big(source)])
    data, lines, yaml_issues = read_yaml(text, source)
    set_paths, set_issues = apply_overrides(data, overrides)
    set_paths += add_thresholds(data, thresholds)
    if set_issues:  # a malformed --set makes the rest meaningless
        raise ScenarioError(source, set_issues)
    locate = Locator(source, lines, set_paths)
    issues = [locate(path, message) for path, message in yaml_issues]
    sink: list[tuple[tuple, str]] = []
    scenario = None
    omitted = 0
    try:
        scenario = Scenario.model_validate(data, context={SINK: sink})
    except ValidationError as exc:
        errors = exc.errors()
        issues += [locate(*describe(err, Scenario)) for err in errors[:MAX_DESCRIBED]]
        omitted = max(0, len(errors) - MAX_DESCRIBED)
    issues += [locate(path, message) for path, message in sink]
    if issues or scenario is None:
        raise ScenarioError(source, sorted(issues, key=issue_order), omitted)
    return scenario


def issue_order(issue: Issue) -> tuple:
    # File problems in line order first, then those from --set.
    return (issue.where.startswith("--set"), issue.line or 0)
