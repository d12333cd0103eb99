"""How long a scenario will take, learned from what the last runs really took.

A run costs more than its warmup and measured window: the wait for an idle
machine before it (up to ``monitor.idle_wait`` when the CPUs are busy),
starting the server and the load generator's workers, stopping and reaping
them, writing the row. After the last run comes the finish stage: summary,
figures, report. :class:`History` keeps what those cost on this machine,
measured by the runner, in a small versioned JSON file under the user's
cache folder (``$XDG_CACHE_HOME/sockbench/timings.json``, by default
``~/.cache/sockbench/``), and :func:`estimate` uses it next time. Without a
history the defaults below are used and the estimate says so.

Error handling: a history file that cannot be read or parsed, or that has
another version, is ignored (:attr:`History.note` says why) and replaced at
the next save; a history that cannot be written costs a note, never a run.
Resource handling: the file stays small: at most :data:`KEEP` values per
list (the most recent), and at most :data:`MAX_MODELS` models.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Version of the history file's layout; another version is ignored, not misread.
VERSION = 1

#: Values kept per list: enough for a stable median, few enough to follow a machine that changed.
KEEP = 30

#: Models kept in the history (their names come from scenarios; a bound on the file's size).
MAX_MODELS = 32

#: Without a history: seconds a run costs beyond warmup + duration (server start and its
#: ready line ~0.3 s, generator workers ~0.3 s, stop and reap, the row written).
DEFAULT_OVERHEAD_S = 1.0

#: Without a history: seconds of the finish stage per run (one timeline figure each
#: dominates) and fixed (summary, the per-question figures, the report).
DEFAULT_FINISH_PER_RUN_S = 0.5
DEFAULT_FINISH_FIXED_S = 5.0


def history_path() -> Path:
    """``$XDG_CACHE_HOME/sockbench/timings.json`` (``~/.cache`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sockbench" / "timings.json"


def _numbers(value: Any) -> list[float]:
    if not isinstance(value, list):
        raise ValueError("a list of numbers expected")
    out = [float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(out) != len(value) or any(not (0 <= v < 1e6) for v in out):
        raise ValueError("a list of non-negative numbers expected")
    return out[-KEEP:]


@dataclasses.dataclass
class History:
    """What runs and finish stages cost on this machine, most recent last."""

    #: model -> seconds each run cost beyond warmup + duration, idle wait excluded
    overhead_s: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: seconds each run waited for an idle machine
    idle_wait_s: list[float] = dataclasses.field(default_factory=list)
    #: (runs, seconds) of each finish stage with figures
    finish: list[list[float]] = dataclasses.field(default_factory=list)
    #: why the file was not used, if it was not
    note: str = ""
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> History:
        """The history at ``path`` (default :func:`history_path`); an empty one if it is missing or unusable."""
        path = path or history_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path=path)
        except (OSError, ValueError) as exc:
            return cls(path=path, note=f"{path} ignored (cannot be read: {exc}); the defaults are used")
        try:
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(
                    f"version {data.get('version') if isinstance(data, dict) else '?'}, this sockbench writes {VERSION}"
                )
            overhead = data.get("overhead_s", {})
            if not isinstance(overhead, dict):
                raise ValueError("overhead_s is not a mapping")
            finish = data.get("finish", [])
            if not isinstance(finish, list) or not all(isinstance(f, list) and len(f) == 2 for f in finish):
                raise ValueError("finish is not a list of [runs, seconds]")
            return cls(
                overhead_s={str(k): _numbers(v) for k, v in list(overhead.items())[:MAX_MODELS]},
                idle_wait_s=_numbers(data.get("idle_wait_s", [])),
                finish=[_numbers(f) for f in finish][-KEEP:],
                path=path,
            )
        except (ValueError, TypeError) as exc:
            return cls(path=path, note=f"{path} ignored ({exc}); the defaults are used")

    def record_run(self, model: str, overhead_s: float, idle_wait_s: float) -> None:
        """Add one run's measured overhead and idle wait."""
        if model not in self.overhead_s and len(self.overhead_s) >= MAX_MODELS:
            self.overhead_s.pop(next(iter(self.overhead_s)))  # the oldest model added makes room
        values = self.overhead_s.setdefault(model, [])
        values.append(round(max(0.0, overhead_s), 3))
        del values[:-KEEP]
        self.idle_wait_s.append(round(max(0.0, idle_wait_s), 3))
        del self.idle_wait_s[:-KEEP]

    def record_finish(self, runs: int, seconds: float) -> None:
        """Add one finish stage (with figures) of ``runs`` runs."""
        self.finish.append([float(runs), round(seconds, 3)])
        del self.finish[:-KEEP]

    def save(self) -> str:
        """Write the history (atomically); returns a note when it could not be written, else ""."""
        from bench.results import write_text_atomically

        path = self.path or history_path()
        data = {
            "version": VERSION,
            "overhead_s": self.overhead_s,
            "idle_wait_s": self.idle_wait_s,
            "finish": self.finish,
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(path, json.dumps(data, indent=1) + "\n")
        except OSError as exc:
            return f"run timings not saved to {path} ({exc.strerror or exc}); the next estimate uses older ones"
        return ""

    # ------------------------------------------------------------------
    # What the estimate uses

    def overhead_for(self, model: str) -> float:
        """Median overhead of ``model``'s runs, else of every model's, else :data:`DEFAULT_OVERHEAD_S`."""
        values = self.overhead_s.get(model) or [v for vs in self.overhead_s.values() for v in vs]
        return statistics.median(values) if values else DEFAULT_OVERHEAD_S

    def idle_wait(self) -> float:
        """Mean idle wait per run: a busy machine makes some runs wait long, so the mean, not the median."""
        return statistics.fmean(self.idle_wait_s) if self.idle_wait_s else 0.0

    def finish_for(self, runs: int) -> float:
        """The finish stage for ``runs`` runs: the past stages' median seconds per run, times ``runs``."""
        if not self.finish:
            return DEFAULT_FINISH_FIXED_S + DEFAULT_FINISH_PER_RUN_S * runs
        # its cost grows with the runs (a timeline figure each), so it scales with them
        per_run = statistics.median(s / max(n, 1.0) for n, s in self.finish)
        return per_run * max(runs, 1)

    @property
    def learned(self) -> bool:
        return bool(self.overhead_s)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A scenario's expected wall time and its parts, in seconds."""

    measuring_s: float  # warmup + measured windows
    overhead_s: float  # server and generator start/stop, rows written
    idle_wait_s: float  # waiting for an idle machine (0 when the history never waited)
    finish_s: float  # summary, figures, report (0 without figures)
    idle_wait_max_s: float
    learned: bool
    #: waiting for an idle machine if every run waits its longest (the CPUs stay busy)
    idle_wait_worst_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.measuring_s + self.overhead_s + self.idle_wait_s + self.finish_s

    @property
    def worst_s(self) -> float:
        """The wall time if the CPUs stay busy and every run waits for them as long as it may."""
        return self.total_s - self.idle_wait_s + max(self.idle_wait_s, self.idle_wait_worst_s)

    def text(self) -> str:
        """``about 2 min 10 s (load 88 s, start/stop 30 s, figures and report 12 s; ...); up to 9 min if ...``.

        The idle waits are the part no history can foresee: they depend on
        what else the machine does now. So the bound for a machine that stays
        busy is said beside the estimate, never folded into it.
        """
        parts = [f"load {fmt_duration(self.measuring_s)}", f"start/stop {fmt_duration(self.overhead_s)}"]
        if self.idle_wait_s >= 1:
            parts.append(f"waiting for an idle machine {fmt_duration(self.idle_wait_s)}")
        if self.finish_s:
            parts.append(f"figures and report {fmt_duration(self.finish_s)}")
        source = "from the last runs on this machine" if self.learned else "a first guess, learned from this run on"
        text = f"about {fmt_duration(self.total_s)} ({', '.join(parts)}; {source})"
        if self.idle_wait_max_s > 0 and self.worst_s - self.total_s >= 1:
            text += (
                f"; up to {fmt_duration(self.worst_s)} if the CPUs stay busy: each run first waits for them "
                f"to be idle, up to {fmt_duration(self.idle_wait_max_s)}"
            )
        return text


def estimate(
    plans: Iterable[Any],
    warmup_s: float,
    duration_s: float,
    *,
    plots: bool,
    history: History,
    idle_wait_max_s: float = 0.0,
) -> Estimate:
    """The wall time of running ``plans`` (objects with a ``model``), then the finish stage if ``plots``."""
    plans = list(plans)
    return Estimate(
        measuring_s=len(plans) * (warmup_s + duration_s),
        overhead_s=sum(history.overhead_for(p.model) for p in plans),
        idle_wait_s=min(history.idle_wait(), idle_wait_max_s) * len(plans),
        finish_s=history.finish_for(len(plans)) if plots and plans else 0.0,
        idle_wait_max_s=idle_wait_max_s,
        learned=history.learned,
        idle_wait_worst_s=idle_wait_max_s * len(plans),
    )


def fmt_duration(seconds: float) -> str:
    """``0.2 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if 0 < seconds < 0.95:  # an idle wait of 0.2 s is not "0 s"
        return f"{seconds:.1f} s"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
