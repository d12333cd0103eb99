"""Stop signals turned into Ctrl-C: SIGINT, SIGTERM and SIGHUP end a command the same way.

``bench run`` and ``bench load`` start processes (servers, generator
workers) that must be stopped and reaped whatever stops the command. Inside
:func:`stop_signals` the first stop signal raises :class:`Stopped`, a
KeyboardInterrupt, so every ``except KeyboardInterrupt`` / ``finally`` that
cleans up for Ctrl-C cleans up for SIGTERM too, and the command exits with
128 + the signal. :func:`deferred_stop` holds a signal back while something
that must not be cut short (a row, a summary) is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: Signals that stop a scenario the way Ctrl-C does: SIGTERM is what ``kill``,
#: ``timeout`` and CI cancellation send, SIGHUP what a closed terminal sends.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal turned into the Ctrl-C path, so every ``except KeyboardInterrupt`` cleans up for it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(exc: BaseException) -> int:
    return exc.signum if isinstance(exc, Stopped) else signal.SIGINT


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _in_main_thread() -> bool:
    # signal.signal() works only there; elsewhere the caller's handlers stay.
    return threading.current_thread() is threading.main_thread()


@dataclasses.dataclass
class _StopState:
    """What the stop signals have done so far inside :func:`stop_signals` (main thread only)."""

    active: bool = False
    #: the first stop signal received, if any
    signum: int | None = None
    #: True once :class:`Stopped` was raised for it (it is raised once)
    raised: bool = False
    #: depth of :func:`deferred_stop` blocks: while > 0 the first signal waits
    holding: int = 0

    def reset(self, active: bool = False) -> None:
        """Back to a fresh state, in place (the signal handler reads this one object)."""
        vars(self).update(vars(_StopState(active=active)))


_STOP = _StopState()


def _say(text: str) -> None:
    # os.write: no buffered I/O inside a signal handler
    os.write(2, (text + "\n").encode())


def _on_stop_signal(signum: int, _frame: Any) -> None:
    if _STOP.signum is None:
        _STOP.signum = signum
        if not _STOP.holding:
            _STOP.raised = True
            raise Stopped(signum)
        _say(f"{signal_name(signum)}: stopping as soon as what is being saved is on disk")
        return
    _say(f"{signal_name(signum)}: still stopping (reaping the server, writing what was measured)")


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within: the first SIGINT, SIGTERM or SIGHUP raises :class:`Stopped` in the main thread.

    Further signals are ignored, with one line on stderr, while the cleanup
    runs: it stops and reaps the current server and the generator's workers
    (bounded by their SIGKILL timeouts), and a second Ctrl-C landing in it
    would leave them running. The previous handlers come back on the way out.
    """
    if not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in STOP_SIGNALS}
    _STOP.reset(active=True)
    try:
        yield
    finally:
        _STOP.reset()
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """Inside :func:`stop_signals`: a stop signal arriving in the block waits until the block is done.

    Used where being cut short would lose something: while a finished run's
    server is stopped and reaped and its row written, and while summary.json
    is written. On the way out, a signal that waited raises :class:`Stopped`
    (also when the block raised: stopping wins). Elsewhere it does nothing.
    """
    if not (_STOP.active and _in_main_thread()):
        yield
        return
    _STOP.holding += 1
    try:
        yield
    finally:
        _STOP.holding -= 1
        if not _STOP.holding and _STOP.signum is not None and not _STOP.raised:
            _STOP.raised = True
            raise Stopped(_STOP.signum)
