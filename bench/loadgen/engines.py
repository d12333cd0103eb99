"""Which program a load worker runs: the Python worker or the native (C) one.

Both engines speak the worker contract of :mod:`bench.loadgen.worker` (job
JSON on stdin, a ready byte, the shared start line, one JSON report on
stdout), so :mod:`bench.loadgen.driver` starts either the same way and
:mod:`bench.loadgen.merge` merges their reports alike.

- ``python``: ``python -m bench.loadgen.worker``, one asyncio or uvloop loop
  per worker (:mod:`bench.loadgen.clients`).
- ``native``: ``bench/loadgen/c/loadgen.c``, one epoll loop per worker,
  compiled on first use into the cache of :mod:`servers.native` (keyed by
  the source's hash, renamed into place atomically). Measured here it does
  a round trip on about half the CPU the Python engine needs, so it is the
  engine that keeps the generator from capping the fastest servers.
- ``locust``: Locust's master and workers (:mod:`bench.loadgen.locust_engine`),
  for load from several hosts, echo, file and http, closed and open loop; not a worker program of this contract, so
  :func:`resolve` only checks Locust is installed.
- ``wrk``: Debian's ``wrk`` (:mod:`bench.loadgen.wrk_engine`), http only,
  closed loop, one path; also not of this contract: :func:`resolve` checks
  ``wrk`` is installed and the service is http.
- ``auto``: native where it builds, python otherwise, with one warning line
  saying why; python too when the load has slow clients (``load.mix``),
  which only the python engine runs. The native engine speaks every service of the generator
  (:data:`bench.loadgen.spec.NATIVE_SERVICES`); for a service only the python
  engine drives (:data:`bench.loadgen.spec.PYTHON_ONLY_SERVICES`) ``auto`` is
  python, with a note saying so.

Some settings only some engines act on: a :class:`~bench.parameters.Parameter`
with ``engines`` (http's ``method: HEAD``, ``pipeline`` above 1) names them.
Asked for such a value, another engine is refused with the parameter, the
value and the engines that take it, and ``auto`` runs python with a note
saying which setting made it (:func:`lacking`).

The native worker verifies SHA-256 of sampled file replies with libcrypto
(Debian's libssl-dev). Where its header or library is missing the program is
built without it and says so in its report: header and size are still
checked on every reply.

Error handling
--------------
``native`` asked for where no compiler exists raises :class:`ValueError`
naming the cause and the fix (``--engine python``); a compiler that fails on
the project's own source raises :class:`servers.native.NativeBuildError`
for ``native`` and falls back, with the compiler's first line, for ``auto``.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.loadgen.spec import ENGINES, LOCUST_SERVICES, NATIVE_SERVICES, PYTHON_ONLY_SERVICES
from bench.parameters import by_name, load_spec_parameters
from servers import native

if TYPE_CHECKING:
    from bench.loadgen.spec import LoadSpec

SOURCE = Path(__file__).with_name("c") / "loadgen.c"
#: Compiler arguments after the source: with libcrypto for SHA-256, and
#: without it (checksums not sampled) where it is missing. libm for floor/ceil.
WITH_CRYPTO = ("-DHAVE_LIBCRYPTO", "-lcrypto", "-lm")
WITHOUT_CRYPTO = ("-lm",)
LOCUST_MISSING = (
    "the locust load engine needs Locust: pip install 'sockbench[locust]' (the 'locust' extra, "
    "locust>=2.20), or choose another engine (native, python)"
)
WRK_MISSING = (
    "the wrk load engine needs wrk: apt-get install wrk (Debian's package), "
    "or choose another engine (--engine python, or generator.engine: python)"
)


@functools.lru_cache(maxsize=1)
def native_program() -> tuple[Path | None, str]:
    """(path of the compiled native worker or None, one line why not).

    Raises :class:`servers.native.NativeBuildError` if the compiler fails for
    a reason other than a missing libcrypto.
    """
    why = native.why_unavailable()
    if why:
        return None, why.replace("C reference programs skipped", "native load engine unavailable")
    try:
        return native.build("loadgen", SOURCE, WITH_CRYPTO), ""
    except native.NativeBuildError as exc:
        if "openssl" not in str(exc) and "crypto" not in str(exc):
            raise
    return native.build("loadgen", SOURCE, WITHOUT_CRYPTO), ""


def locust_refuses(service: str) -> str:
    """Why the locust engine does not drive ``service``, naming the services it does and what to use instead."""
    return (
        f"engine 'locust' does not drive the {service} service (its users speak {', '.join(LOCUST_SERVICES)}); "
        f"use engine python (--engine python, or generator.engine: python) or auto"
    )


def locust_available() -> bool:
    """True if Locust (the ``locust`` engine's library) can be imported here."""
    return importlib.util.find_spec("locust") is not None


def wrk_program() -> str | None:
    """The path of ``wrk`` (the ``wrk`` engine's program) here, or None."""
    return shutil.which("wrk")


def spec_values(spec: LoadSpec) -> dict[str, Any]:
    """The settings of ``spec`` that only some engines act on, by parameter name (for :func:`resolve`)."""
    where = {"service": spec.service, "mode": spec.mode}
    return {p.name: getattr(spec, p.spec_name) for p in load_spec_parameters() if p.engines and p.applies_at(where)}


def _lacking(engine: str, values: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    table = by_name()
    return [
        (name, value)
        for name, value in (values or {}).items()
        if name in table and table[name].engine_lacks(engine, value)
    ]


def lacking(engine: str, values: Mapping[str, Any] | None) -> list[str]:
    """Of ``values`` (parameter name -> value), the settings ``engine`` does not act on, as ``"name value"``."""
    return [f"{name} {value}" for name, value in _lacking(engine, values)]


def _refuse_lacking(engine: str, values: Mapping[str, Any] | None) -> None:
    missing = _lacking(engine, values)
    if missing:
        table = by_name()
        takers = sorted(set.intersection(*(set(table[name].engines) for name, _ in missing)))
        use = f"use engine {' or '.join(takers)} (--engine {takers[0]}) or auto" if takers else "use auto"
        raise ValueError(f"engine {engine!r} does not implement {', '.join(f'{n} {v}' for n, v in missing)}; {use}")


def resolve(
    engine: str, service: str = "echo", slow: bool = False, values: Mapping[str, Any] | None = None
) -> tuple[str, list[str], str]:
    """``(engine that runs, worker command without READY_FD, note)`` for ``auto|native|python|locust|wrk``.

    ``values``: the run's settings that only some engines act on (:func:`spec_values`).
    The note is empty unless ``auto`` fell back to python; then it says why.
    ``native`` for a service of :data:`~bench.loadgen.spec.PYTHON_ONLY_SERVICES`, or any engine
    asked for a setting it lacks (:func:`lacking`), raises :class:`ValueError`.
    ``slow``: the load has slow clients (``load.mix``), which only the python
    engine runs: ``auto`` is python then, any other engine raises :class:`ValueError`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    python_worker = [sys.executable, "-m", "bench.loadgen.worker"]
    if slow and engine not in ("auto", "python"):
        raise ValueError(
            f"engine '{engine}' has no slow clients (load.mix: slow_reader, slowloris, idle); use engine python "
            f"(--engine python, or generator.engine: python) or auto (python when there are slow clients)"
        )
    if slow and engine == "auto":
        return (
            "python",
            python_worker,
            "load engine: python, because only the python engine runs slow clients (load.mix)",
        )
    if engine == "locust":
        if not locust_available():
            raise ValueError(LOCUST_MISSING)
        if service not in LOCUST_SERVICES:
            raise ValueError(locust_refuses(service))
        _refuse_lacking(engine, values)
        return "locust", [], ""
    if engine == "wrk":
        if wrk_program() is None:
            raise ValueError(WRK_MISSING)
        if service != "http":
            raise ValueError(
                f"engine 'wrk' drives the http service only, not {service}; use engine python or native (or auto)"
            )
        _refuse_lacking(engine, values)
        return "wrk", [], ""
    if engine == "python":
        _refuse_lacking(engine, values)
        return "python", python_worker, ""
    if service in PYTHON_ONLY_SERVICES:
        if engine == "native":
            raise ValueError(
                f"engine 'native' does not drive the {service} service (it speaks {', '.join(NATIVE_SERVICES)}); "
                f"use engine python (--engine python, or generator.engine: python) or auto"
            )
        return "python", python_worker, f"load engine: python, because the native engine does not drive {service}"
    if engine == "native":
        _refuse_lacking(engine, values)
    missing = lacking("native", values)
    if missing:
        return (
            "python",
            python_worker,
            f"load engine: python, because the native engine does not implement {', '.join(missing)}",
        )
    try:
        path, why = native_program()
    except native.NativeBuildError as exc:
        if engine == "native":
            raise
        path, why = None, f"native load engine failed to build ({str(exc).splitlines()[0]})"
    if path is None:
        if engine == "native":
            raise ValueError(f"engine 'native' asked for but {why.split(': ', 1)[-1]}; or use --engine python")
        return "python", python_worker, f"load engine: python, because the {why}"
    return "native", [str(path)], ""
