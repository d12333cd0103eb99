"""Sizes and durations as people write them: ``256MiB``, ``100ms``, in scenario files and on command lines.

A scenario says ``file_bytes: 256MiB`` and ``duration: 10s``, ``bench load``
says ``--message-bytes 1KiB --duration 1m``; everything behind them works in
plain bytes (``int``) and seconds (``float``). This module is the one place
that converts between the two spellings, in both directions, for scenario
files, ``--set`` values and every command-line flag alike, so that a value
means the same wherever it is written, and a scenario written back to disk
(``scenario.yaml`` in a results folder) reads the way a person would have
written it and loads again to exactly the same numbers.

The rule
--------
Sizes: ``B``; ``KiB``, ``MiB``, ``GiB`` are powers of 1024; ``KB``, ``MB``,
``GB`` are powers of 1000. Durations: ``us``, ``ms``, ``s``, ``m`` (minutes).
Exactly these spellings, case-sensitive; a bare number is bytes or seconds.
So ``1m`` is 60 seconds, and as a size it is an error that names the units
(``m`` could mean mega or milli, ``Mb`` megabits).

Design
------
* Both binary (``KiB`` = 1024) and decimal (``KB`` = 1000) size units are
  accepted, because both are in common use and they differ by 7% at ``GB``;
  each spelling means exactly one thing. Units are case-sensitive: ``Mb``
  usually means megabits, so guessing would be wrong more often than right.
* Numbers are parsed with :class:`fractions.Fraction`, not ``float``: ``1.5KiB``
  is exactly 1536 bytes and ``1100ms`` is the same float as ``1.1s``, so
  formatting and parsing again always gives the identical value.
* A bare number is bytes for a size and seconds for a duration: the units the
  rest of the project uses.
* The grammar is bounded before anything is converted: at most
  :data:`MAX_DIGITS` digits and an exponent within +-:data:`MAX_EXPONENT`, and
  the value must lie within :data:`MAX_SIZE` bytes or :data:`MAX_DURATION_S`
  seconds. ``Fraction("1e999999999")`` would compute a billion-digit integer
  for hours; ``1e400s`` would overflow a float.

Error handling
--------------
Every parser raises :class:`UnitError` (a ``ValueError``, so pydantic reports
it as a validation error of the field it came from). Its message names the
offending text and lists the allowed units, so the user can fix the file
without reading any code.
"""

from __future__ import annotations

import re
from fractions import Fraction

#: Size units, bytes per unit. Parsing matches the whole suffix exactly;
#: this order is the order listed in error messages.
SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}

#: Bit rate units, bits per second per unit: decimal, as ``tc`` and link
#: speeds are spelled (``100Mbit`` is 100,000,000 bit/s).
BITRATE_UNITS: dict[str, int] = {
    "bit": 1,
    "kbit": 1000,
    "Mbit": 1000**2,
    "Gbit": 1000**3,
}

#: Highest bit rate: 1 Tbit/s, far past any link emulated on one machine.
MAX_BITRATE = 10**12

#: Duration units, seconds per unit (exact fractions so parsing is exact).
DURATION_UNITS: dict[str, Fraction] = {
    "us": Fraction(1, 1_000_000),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
}

# A number (optionally with a fraction part or exponent), optional spaces,
# an optional unit made of letters. Signs are accepted here so that "-1s"
# is reported as "negative" rather than as "not a number".
_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)$")

#: Longest text read as a size or duration; anything longer is refused before
#: any matching or arithmetic (``"1.5 MiB"`` is 7 characters).
MAX_TEXT = 64


#: Digits a number may have (mantissa, both sides of the point): 2**63 has 19,
#: so 30 leaves room for any spelling a person writes, trailing zeros included.
MAX_DIGITS = 30

#: Largest exponent magnitude (``1e30``, ``1e-30``): beyond it no value fits a
#: field (and a tiny value is zero in any unit we have), and computing
#: ``10**exponent`` exactly gets costly long before that matters.
MAX_EXPONENT = 30

#: Largest size: what a signed 64-bit file offset (``off_t``) holds.
MAX_SIZE = 2**63 - 1

#: Largest duration, about 31.7 years: any longer is a typo, and it keeps
#: every duration a finite float with microsecond precision to spare.
MAX_DURATION_S = 10**9


class UnitError(ValueError):
    """A size or duration that could not be understood; the message says why and what is allowed."""


def _split(text: str, kind: str, units: dict) -> tuple[Fraction, str]:
    """Split ``"1.5 MiB"`` into ``(Fraction(3, 2), "MiB")``; raise :class:`UnitError` if malformed."""
    allowed = ", ".join(units)
    if len(text) > MAX_TEXT:
        raise UnitError(
            f"{_short(text)} is {len(text)} characters long; a {kind} is a number and a unit such as {_example(kind)}"
        )
    match = _QUANTITY.match(text.strip())
    if not match:
        raise UnitError(
            f"{_short(text)} is not a {kind}: write a number followed by one of {allowed} (e.g. {_example(kind)})"
        )
    number, unit = match.groups()
    if unit and unit not in units:
        raise UnitError(f"unknown {kind} unit {unit!r} in {_short(text)}{_near(unit, units)}; allowed units: {allowed}")
    mantissa, _, exponent = number.lower().partition("e")
    digits = sum(c.isdigit() for c in mantissa)
    if digits > MAX_DIGITS:
        raise UnitError(f"{_short(text)} has {digits} digits; a {kind} takes at most {MAX_DIGITS}")
    if exponent and abs(int(exponent)) > MAX_EXPONENT:
        raise UnitError(
            f"{_short(text)}: the exponent is out of range; a {kind} takes exponents "
            f"from -{MAX_EXPONENT} to {MAX_EXPONENT} (e.g. {_example(kind)})"
        )
    return Fraction(number), unit


def _near(unit: str, units: dict) -> str:
    """`` (units are case-sensitive: did you mean MB or MiB?)`` for ``m``, ``mb`` or ``mib``; else ``""``."""

    def stem(name: str) -> str:
        return name.lower().removesuffix("ib").removesuffix("b")

    near = [u for u in units if u.lower() == unit.lower()]
    near = near or [u for u in units if stem(unit) and stem(u) == stem(unit)]
    return f" (units are case-sensitive: did you mean {' or '.join(near)}?)" if near else ""


def _short(text: str) -> str:
    """``text`` quoted, cut to 40 characters: an error message never repeats a megabyte of input."""
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "...'"


def _example(kind: str) -> str:
    return {"size": "256MiB", "bit rate": "100Mbit"}.get(kind, "100ms")


def _exact(value: int | float, kind: str) -> Fraction:
    """A YAML number as an exact fraction; ``.inf``/``.nan`` are rejected."""
    # bool is a subclass of int: `file_bytes: yes` must not become 1 byte.
    if isinstance(value, bool):
        raise UnitError(f"expected a {kind}, got {value!r}")
    try:
        return Fraction(value)
    except (ValueError, OverflowError):
        raise UnitError(f"expected a finite {kind}, got {value!r}") from None


def _amount(value: object, kind: str, units: dict, bare: str, such_as: str) -> Fraction:
    """A YAML number, or text with one of ``units`` (``bare`` when none is written), as an exact amount."""
    if isinstance(value, (int, float)):
        return _exact(value, kind)
    if isinstance(value, str):
        number, unit = _split(value, kind, units)
        return number * units[unit or bare]
    raise UnitError(f"expected a {kind} such as {such_as}, got {type(value).__name__}")


def parse_size(value: object) -> int:
    """Bytes from ``1024``, ``"1024"``, ``"1KiB"``, ``"1.5 MiB"`` or ``"10MB"`` (decimal).

    The result must be a whole, non-negative number of bytes.
    """
    amount = _amount(value, "size", SIZE_UNITS, "B", "1024 or 256MiB")
    if amount < 0:
        raise UnitError(f"a size cannot be negative: {value!r}")
    if amount > MAX_SIZE:
        raise UnitError(f"{_short(str(value))} is too large: a size is at most {MAX_SIZE} bytes (8 EiB)")
    if amount.denominator != 1:
        raise UnitError(f"{value!r} is not a whole number of bytes ({float(amount)} B)")
    return int(amount)


def parse_duration(value: object) -> float:
    """Seconds from ``2``, ``0.5``, ``"2s"``, ``"100ms"``, ``"250us"`` or ``"1m"``.

    A bare number is seconds. The result is never negative.
    """
    amount = _amount(value, "duration", DURATION_UNITS, "s", "2s or 100ms")
    if amount < 0:
        raise UnitError(f"a duration cannot be negative: {value!r}")
    if amount > MAX_DURATION_S:
        raise UnitError(f"{_short(str(value))} is too long: a duration is at most {MAX_DURATION_S} s (about 31 years)")
    return float(amount)


def parse_fraction(value: object) -> object:
    """A share from ``0.1``, ``"0.1"`` or ``"10%"``; a whole ``0`` or ``1`` is ``0.0`` or ``1.0``.

    Anything else (``true``, a list) is returned as it is, for the caller's
    type check to name; the range (0..1) is the caller's to check too.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    percent = text.endswith("%")
    try:
        number = float(text.removesuffix("%").strip())
    except ValueError:
        raise UnitError(f"expected a share such as 0.1 or 10%, got {_short(value)}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise UnitError(f"expected a finite share such as 0.1 or 10%, got {_short(value)}")
    return number / 100 if percent else number


def parse_bitrate(value: object) -> int:
    """Bits per second from ``"100Mbit"``, ``"1.5Gbit"``, ``"64kbit"`` or a bare number (bit/s).

    The result is a whole, positive number of bits per second.
    """
    amount = _amount(value, "bit rate", BITRATE_UNITS, "bit", "100Mbit")
    problem = (
        "must be positive"
        if amount <= 0
        else "is at most 1000Gbit"
        if amount > MAX_BITRATE
        else "is a whole number of bits per second"
        if amount.denominator != 1
        else ""
    )
    if problem:
        raise UnitError(f"{_short(str(value))}: a bit rate {problem}")
    return int(amount)


def format_bitrate(bits: int) -> str:
    """The shortest exact spelling: ``100_000_000 -> "100Mbit"``, ``1500 -> "1500bit"``."""
    for unit in ("Gbit", "Mbit", "kbit"):
        factor = BITRATE_UNITS[unit]
        if bits % factor == 0:
            return f"{bits // factor}{unit}"
    return f"{bits}bit"


def format_size(nbytes: int) -> str | int:
    """The shortest exact spelling: ``1048576 -> "1MiB"``; a plain ``int`` when no binary unit fits (``1000``).

    Only binary units are used on output: sizes in this project are powers of
    two far more often than powers of ten, and an exact integer is always
    available as the fallback, so output never loses precision.
    """
    for unit in ("GiB", "MiB", "KiB"):
        factor = SIZE_UNITS[unit]
        if nbytes and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}"
    return nbytes


def format_duration(seconds: float) -> str:
    """An exact spelling that parses back to the same float: ``0.5 -> "500ms"``, ``10.0 -> "10s"``."""
    micro = round(seconds * 1_000_000)
    if float(Fraction(micro, 1_000_000)) == seconds:
        if micro % 1_000_000 == 0:
            return f"{micro // 1_000_000}s"
        if micro % 1000 == 0:
            return f"{micro // 1000}ms"
        return f"{micro}us"
    # Finer than a microsecond: repr() of a float round-trips exactly.
    return f"{seconds!r}s"


def plural(count: float, noun: str, nouns: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``1,000 runs``: a count with its noun in the right number.

    ``nouns`` is the plural when it is not ``noun + "s"`` (``"processes"``).
    """
    shown = f"{count:,.0f}" if float(count).is_integer() else f"{count:,}"
    return f"{shown} {noun if count == 1 else (nouns or noun + 's')}"
