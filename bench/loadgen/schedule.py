"""When requests start: closed loop (as soon as a connection is free) or open loop (on a schedule).

A dispatcher receives every connection that becomes free (just connected,
or just finished a request) through ``ready(conn)`` and decides when it
sends its next request.

Closed loop (:class:`ClosedLoop`): at once. Offered load adapts to the
server: a slow server sees fewer requests, which is how most clients behave
but hides queueing ("coordinated omission").

Open loop (:class:`OpenLoop`): request *i* of this worker is due at
``t0 + i / rate``, whatever the server does. A due request takes a free
connection if one exists; otherwise it waits until one frees up. Its latency
is measured from the due time (the corrected latency: what a user arriving
on schedule would see, waiting included) and also from the actual send
("uncorrected", recorded separately by :class:`~bench.loadgen.recording.WorkerStats`).
A request that starts more than :data:`LATE_TOLERANCE_S` after its due time
is a *late start*.

The schedule is kept as two counters, not a queue: ``released`` requests are
due, ``started`` of them have been sent, and request *i* is due at
``t0 + i * interval``; so a server that falls behind costs no memory. A single
timer releases every request that has become due, then sleeps until the
next one is due, but no less than :data:`BATCH_HORIZON_S`: at high rates one
wake-up releases a batch instead of one timer per request. The timer is
periodic (one expiry per due request, or one per horizon when requests come
closer together), so an expiry costs one read and no re-arming. The largest
wake-up lag, the number of release wake-ups, the mean send lag (send time
minus due time) and the late starts of requests that had a free connection
(so the generator, not the server, made them late) are reported.

What the horizon costs
----------------------
A request due while the worker sleeps goes out at the next wake-up: up to
:data:`BATCH_HORIZON_S` after its due time, about half that on average once
the rate exceeds ``1 / BATCH_HORIZON_S`` (13,333/s per worker); below that
each request has an expiry of its own at its due time and only the wake-up
latency remains. The delay is in the corrected latency (it is measured from
the due time, as a user arriving on schedule would see it) and not in the
uncorrected one; the report's ``send_lag_mean_s`` gives it, so a reader can
tell the generator's share from the server's.

Replies still wake the worker one by one here: the loop (asyncio or uvloop)
watches every socket, and without the kernel's receive timestamps, which
its transports do not pass on, a reply read later than it came would be
timed late. The native engine reads replies at its release wake-ups, timed
by those timestamps (``bench/loadgen/c/loadgen.c``).

Why a timerfd
-------------
Both event loops keep timers in milliseconds (uvloop's libuv clock, and
asyncio's ``epoll_wait`` timeout rounded up to 1 ms). A request due 0.3 ms
from now would go out ~1 ms late, and since latency counts from the due time,
the generator would add up to a millisecond to every open-loop latency: at
2000 requests/s over a threaded echo server the corrected median read 408 us
against a 64 us time to first byte. :class:`PreciseTimer` instead arms a
Linux ``timerfd`` (absolute CLOCK_MONOTONIC, the clock of ``time.monotonic``)
and lets the loop watch it like a socket; with the worker's timer slack cut
from the default 50 us to 1 us (``prctl(PR_SET_TIMERSLACK)``) it wakes within
tens of microseconds (an idle vCPU takes ~40-50 us to wake here). Python 3.11 has no ``os.timerfd_*``, so it goes through
ctypes; where that is unavailable it falls back to ``call_later`` (and the
coarse timing shows up as late starts).

What remains is the cost of waking an idle worker: on the reference machine
a request due while the worker sleeps goes out ~50-60 us late (the vCPU
wake-up), so at light load the corrected median sits that much above the
time to first byte. It is the generator's, it is small against any queueing
worth studying, and it is left in rather than hidden: the uncorrected and
time-to-first-byte figures do not contain it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from bench.loadgen.clients import _Connection
    from bench.loadgen.recording import WorkerStats

#: How late a start may be before it counts as late: the release timer wakes
#: within tens of microseconds (an idle vCPU's wake-up plus a loop turn); a
#: start 1 ms late waited for something real (no free connection, or a busy
#: generator).
LATE_TOLERANCE_S = 0.001
#: The release timer is armed no closer than this after a wake-up, so at high
#: rates one wake-up releases a batch of due requests instead of one timer per
#: request (the native engine uses the same horizon). 75 us is about two vCPU
#: wake-ups here: small against any queueing worth studying, and it bounds how
#: late a batched request goes out.
BATCH_HORIZON_S = 0.000075


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1  # <time.h>
_TFD_TIMER_ABSTIME = 1  # <sys/timerfd.h>
_PR_SET_TIMERSLACK = 29  # <linux/prctl.h>
#: Timer slack asked for: the kernel may otherwise defer a wake-up by its
#: default 50 us to batch it with others, adding that to open-loop latency.
_TIMER_SLACK_NS = 1000


class PreciseTimer:
    """A one-shot timer on an absolute ``time.monotonic()`` instant, precise to tens of microseconds.

    Resource handling: owns one timerfd, registered as a reader of ``loop``;
    :meth:`close` unregisters and closes it. Falls back to ``call_later``
    when timerfd cannot be created (see module docstring).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self.loop = loop
        self.callback = callback
        self.fd = -1
        self.handle: asyncio.TimerHandle | None = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._settime = libc.timerfd_settime
            fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            fd = -1
        if fd >= 0:
            self.fd = fd
            self._spec = _Itimerspec()
            libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(_TIMER_SLACK_NS), 0, 0, 0)
            loop.add_reader(fd, self._fired)

    @property
    def precise(self) -> bool:
        """True when backed by a timerfd."""
        return self.fd >= 0

    def arm(self, when: float, period: float = 0.0) -> None:
        """Call the callback at monotonic time ``when`` (at once if it has passed), then every ``period`` s.

        ``period`` 0: once. A period needs the timerfd (see :attr:`precise`);
        without it the timer fires once and the caller re-arms it. The period
        is kept to the nanosecond below, so the timer drifts early, never late.
        """
        if self.fd < 0:
            self.handle = self.loop.call_later(max(0.0, when - monotonic()), self.callback)
            return
        when = max(when, 1e-6)  # 0 would disarm the timerfd
        sec = int(when)
        spec = self._spec
        spec.it_value.tv_sec = sec
        spec.it_value.tv_nsec = int((when - sec) * 1e9)
        spec.it_interval.tv_sec = int(period)
        spec.it_interval.tv_nsec = int((period - int(period)) * 1e9)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def disarm(self) -> None:
        """Stop the timer (it fires no more until armed again)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.fd >= 0:
            self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
            self._spec.it_interval.tv_sec = self._spec.it_interval.tv_nsec = 0
            if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return  # re-armed before we read: not due yet
        self.callback()

    def close(self) -> None:
        """Disarm and release the timer."""
        if self.handle is not None:
            self.handle.cancel()
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class ClosedLoop:
    """Send the next request as soon as a connection is free."""

    def ready(self, conn: _Connection) -> None:
        conn.start(None)

    def ready_function(self, conn_class: type[_Connection]) -> Callable[[_Connection], None]:
        """The callable a connection of ``conn_class`` calls when free: its own ``start``, directly."""
        return conn_class.start

    def unstarted(self) -> int:
        """Requests due but never sent (always 0 in closed loop)."""
        return 0


class OpenLoop:
    """Start requests at ``rate`` per second from ``t0`` until ``t_stop``. See module docstring."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, stats: WorkerStats, rate: float, t0: float, t_stop: float
    ) -> None:
        self.loop = loop
        self.stats = stats
        self.interval = 1.0 / rate
        self.t0 = t0
        self.t_stop = t_stop
        self.released = 0
        self.started = 0
        self.idle: deque[_Connection] = deque()
        self.timer = PreciseTimer(loop, self._tick)
        # The timer's period: one expiry per due request, or one per horizon
        # when requests come closer together than that (a batch each).
        self.period = max(self.interval, BATCH_HORIZON_S)
        # The generator's own lateness: the largest wake-up lag past a due
        # time, late starts of requests that had a free connection waiting,
        # and the send lag (send time - due time) of requests due in the
        # window, the generator's part of their corrected latency.
        self.lag_max = 0.0
        self.late_generator = 0
        self.wakeups = 0  # wake-ups that released requests
        self.send_lag_sum = 0.0
        self.send_lag_n = 0

    def start(self) -> None:
        """Release what is due and arm the timer for the rest."""
        self._tick(rearm=True)

    def stop(self) -> None:
        """Disarm and release the timer."""
        self.timer.close()

    def _tick(self, rearm: bool = False) -> None:
        """A timer expiry: release what is due by now.

        The timerfd is periodic (:attr:`period`), so an expiry costs a read
        and no re-arming; it is re-armed only when it fired with nothing due
        (its period, rounded down, drifted early past the wake-up latency),
        or on every expiry when there is no timerfd.
        """
        now = monotonic()
        due_until = min(now, self.t_stop)
        released = int((due_until - self.t0) / self.interval) + 1 if due_until >= self.t0 else 0
        early = False
        if released > self.released:
            if self.stats.in_window(now):
                self.wakeups += 1
            self.lag_max = max(self.lag_max, now - (self.t0 + self.released * self.interval))
            self.released = released
            self._dispatch()
        elif not rearm:
            early = True
        next_due = self.t0 + self.released * self.interval
        if next_due >= self.t_stop:
            self.timer.disarm()  # the schedule is over
        elif early:
            self.timer.arm(next_due, self.period)
        elif rearm or not self.timer.precise:
            self.timer.arm(max(next_due, now + BATCH_HORIZON_S), self.period)

    def _dispatch(self) -> None:
        idle = self.idle
        while self.started < self.released and idle:
            conn = idle.popleft()
            if not conn.dead and self._start_next(conn):
                self.late_generator += 1  # a free connection waited for this wake-up

    def _start_next(self, conn: _Connection) -> bool:
        """Start the next due request on ``conn``; True if it counted as a late start."""
        intended = self.t0 + self.started * self.interval
        self.started += 1
        conn.start(intended)
        if not self.stats.in_window(intended):
            return False
        lag = conn.t_sent - intended
        self.send_lag_sum += lag
        self.send_lag_n += 1
        if lag > LATE_TOLERANCE_S:
            self.stats.late_starts += 1
            return True
        return False

    def ready_function(self, conn_class: type[_Connection]) -> Callable[[_Connection], None]:
        """The callable a free connection calls: :meth:`ready`."""
        return self.ready

    def ready(self, conn: _Connection) -> None:
        if self.started < self.released:
            self._start_next(conn)
        else:
            self.idle.append(conn)

    def unstarted(self) -> int:
        """Requests that were due in the run but never got a connection."""
        return self.released - self.started
