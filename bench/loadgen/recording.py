"""What one worker counts while it runs, and how it reports it.

:class:`WorkerStats` is the single sink of a worker's measurements. Client
protocols call it from their callbacks:

- :meth:`WorkerStats.complete` for every request that got its whole, correct
  reply (the hot path: a few list increments, no allocation);
- :meth:`WorkerStats.request_error` for a request that failed after connect;
- :meth:`WorkerStats.connect_ok` / :meth:`WorkerStats.connect_failed` for
  every connection attempt.

Which requests count
--------------------
Throughput and latency count a request when its last byte arrives inside the
measured window ``[window_start, window_end)``; warmup completions go only
to the timeline (negative ``t_s``). Request errors count inside the window
too. Connection attempts count over the whole run, warmup included, because
connection bursts happen at the start and are what a small backlog is about.
Only successful connects go into the ``connect`` histogram: the time of a
failed attempt is mostly the timeout that ended it.

Censored requests
-----------------
A request that never completes has no latency, but leaving it out drops
exactly the requests that waited longest. So it is recorded in a histogram of
its own, ``censored``, at the time it is *known* to have waited (a lower
bound of its latency), counted from its intended start like ``latency``:

- a request that timed out in the window: at the time the timeout was found
  (:meth:`WorkerStats.timed_out`, at least ``request_timeout_s``);
- a request sent and unanswered when the window closes, *if it has already
  waited longer than every request completed in the window*: at
  ``window_end - t_intended`` (:meth:`WorkerStats.censor_in_flight`). One
  that has waited less is like the requests that were in flight when the
  window opened, which completed inside it and were counted whole: in a
  steady run the two boundaries balance, and counting both would flag every
  short closed-loop run (one request in flight per client) for nothing. One
  that has waited longer than anything completed (a client the server
  ignores) lengthens the tail beyond what was measured, and is counted;
- open loop, a request that was due but never got a connection before the
  window closed: at ``window_end - t_intended`` (:meth:`WorkerStats.censor_unstarted`).
  All of them: in a steady run there are next to none, and many mean the
  queue of due requests grew, every one of which keeps waiting.

:mod:`bench.loadgen.merge` counts them into the latency percentiles and says
when a percentile is only a lower bound.

Times are ``time.monotonic()`` seconds (the worker converts the parent's
wall-clock start once); latencies are recorded in integer microseconds.
"""

from __future__ import annotations

import math
from typing import Any

from bench import histograms
from bench.histograms import (
    BUCKET_SHIFT,
    HALF_COUNT,
    HALF_COUNT_MAGNITUDE,
    HIGHEST_US,
    SUB_BUCKET_MASK,
    UNIT_MAGNITUDE,
    Counts,
    index_of,
)
from bench.vocabulary import CONNECT_OUTCOMES, REQUEST_ERRORS  # noqa: F401  (REQUEST_ERRORS: re-exported)


class WorkerStats:
    """Counters, histograms and timeline of one worker. See the module docstring."""

    def __init__(
        self, run_start: float, window_start: float, window_end: float, interval: float, open_loop: bool
    ) -> None:
        self.run_start = run_start
        self.window_start = window_start
        self.window_end = window_end
        self.open_loop = open_loop
        self.payload_bytes = 0
        self.late_starts = 0
        self.errors = dict.fromkeys(REQUEST_ERRORS, 0)
        self.connects = dict.fromkeys(CONNECT_OUTCOMES, 0)
        self.other_errnos: dict[str, int] = {}
        self.notes: dict[str, int] = {}  # rarer events reported as warnings
        self.err_replies: dict[str, int] = {}
        self.latency = Counts()
        self.ttfb = Counts()
        self.uncorrected = Counts()
        self.connect = Counts()
        self.censored = Counts()
        self._longest: int | None = None  # index of the longest completed latency, once the window closed
        # Timeline buckets are aligned on the window start: bucket k covers
        # [window_start + k*interval, window_start + (k+1)*interval); warmup has k < 0.
        self.interval = interval
        self.k0 = math.floor((run_start - window_start) / interval)
        self.tl_origin = window_start + self.k0 * interval
        self.tl_len = max(1, math.ceil((window_end - self.tl_origin) / interval))
        self.tl_inv = 1.0 / interval
        # One spare bucket: float rounding may put a completion just before
        # window_end at index tl_len; to_json folds it into the last one.
        self.tl_lat: list[dict[int, int]] = [{} for _ in range(self.tl_len + 1)]

    # ------------------------------------------------------------ hot path
    def complete(self, t_intended: float, t_sent: float, t_first: float, t_done: float, nbytes: int) -> bool:
        """Record one request whose reply arrived whole and correct at ``t_done``.

        ``t_intended`` is when it should have started (open loop schedule;
        equal to ``t_sent`` in closed loop). Latency runs from ``t_intended``;
        time to first byte from ``t_sent``. The histogram index arithmetic of
        :func:`~bench.histograms.index_of` is inlined here: this runs
        once per request and each call saved is ~2% of a worker's throughput.
        Returns True if the request counts in the measured window (the
        caller counts per client which ones did, for ``clients_served``).
        """
        if t_done >= self.window_end:
            return False
        v = int((t_done - t_intended) * 1e6)
        if v > HIGHEST_US:
            v = HIGHEST_US
        b = (v | SUB_BUCKET_MASK).bit_length() - BUCKET_SHIFT
        idx = ((b + 1) << HALF_COUNT_MAGNITUDE) + (v >> (b + UNIT_MAGNITUDE)) - HALF_COUNT
        d = self.tl_lat[int((t_done - self.tl_origin) * self.tl_inv)]
        d[idx] = d.get(idx, 0) + 1
        if t_done < self.window_start:
            return False
        self.payload_bytes += nbytes
        self.latency.c[idx] += 1
        v = int((t_first - t_sent) * 1e6)
        if v > HIGHEST_US:
            v = HIGHEST_US
        b = (v | SUB_BUCKET_MASK).bit_length() - BUCKET_SHIFT
        self.ttfb.c[((b + 1) << HALF_COUNT_MAGNITUDE) + (v >> (b + UNIT_MAGNITUDE)) - HALF_COUNT] += 1
        if self.open_loop:
            self.uncorrected.c[index_of(int((t_done - t_sent) * 1e6))] += 1
        return True

    def in_window(self, t: float) -> bool:
        """True if monotonic time ``t`` lies in the measured window."""
        return self.window_start <= t < self.window_end

    # ------------------------------------------------------------ cold paths
    def request_error(self, kind: str, t: float) -> None:
        """Count a request failure of ``kind`` (one of :data:`REQUEST_ERRORS`) at time ``t``."""
        if self.in_window(t):
            self.errors[kind] += 1

    def timed_out(self, t_intended: float, t: float) -> None:
        """Count a request found timed out at ``t``; censored at ``t - t_intended`` (see module docstring)."""
        if self.in_window(t):
            self.errors["timeout"] += 1
            self.censored.c[index_of(int((t - t_intended) * 1e6))] += 1

    def censor_unstarted(self, t_intended: float) -> None:
        """A request due at ``t_intended`` and not answered by the window end: censored at ``window_end - t_intended``."""
        self.censored.c[index_of(int((self.window_end - t_intended) * 1e6))] += 1

    def censor_in_flight(self, t_intended: float) -> None:
        """A request sent and unanswered at the window end: censored if it waited longer than any completed one.

        Call after the window has closed (see the module docstring for why).
        """
        if self._longest is None:  # fixed once the window has closed: found once, not per request
            counts = self.latency.c
            self._longest = next((i for i in range(len(counts) - 1, -1, -1) if counts[i]), -1)
        idx = index_of(int((self.window_end - t_intended) * 1e6))
        if idx > self._longest:
            self.censored.c[idx] += 1

    def connect_ok(self, seconds: float) -> None:
        """Count a successful connect that took ``seconds``."""
        self.connects["ok"] += 1
        self.connect.c[index_of(int(seconds * 1e6))] += 1

    def connect_failed(self, outcome: str, errno_name: str | None = None) -> None:
        """Count a failed connect; ``other`` outcomes keep their errno (or exception) name."""
        self.connects[outcome] += 1
        if outcome == "other":
            name = errno_name or "unknown"
            self.other_errnos[name] = self.other_errnos.get(name, 0) + 1

    def note(self, what: str, n: int = 1) -> None:
        """Count a rare event that is reported as a warning (see :mod:`bench.loadgen.merge`)."""
        self.notes[what] = self.notes.get(what, 0) + n

    def err_reply(self, text: str) -> None:
        """Remember an ``ERR ...`` reply of the file service (counted as corrupt by the caller)."""
        self.err_replies[text] = self.err_replies.get(text, 0) + 1

    # ------------------------------------------------------------ report
    def to_json(self) -> dict[str, Any]:
        """The measurements as JSON-ready data (histograms base64-encoded)."""
        buckets = self.tl_lat[:-1]
        last = buckets[-1] = dict(buckets[-1])
        for idx, n in self.tl_lat[-1].items():
            last[idx] = last.get(idx, 0) + n
        hists = {"latency": self.latency, "ttfb": self.ttfb, "connect": self.connect, "censored": self.censored}
        if self.open_loop:
            hists["latency_uncorrected"] = self.uncorrected
        return {
            "requests": sum(self.latency.c),
            "payload_bytes": self.payload_bytes,
            "late_starts": self.late_starts,
            "errors": self.errors,
            "connects": self.connects,
            "other_errnos": self.other_errnos,
            "notes": self.notes,
            "err_replies": self.err_replies,
            "histograms": {k: histograms.encode(v.to_hdr()) for k, v in hists.items()},
            "timeline": {
                "k0": self.k0,
                "n": [sum(d.values()) for d in buckets],
                "lat": [{str(i): c for i, c in d.items()} for d in buckets],
            },
        }
