"""Monitors that run beside each benchmark point (Linux only: they read /proc).

One module per thing measured:

* :mod:`bench.monitor.proctree` -- :class:`ServerMonitor`, the server's whole
  process tree sampled in a thread: memory (RSS/PSS/USS), processes, threads,
  fds, CPU, context switches, accept-queue depth; its docstring explains how
  CPU of short-lived children is accounted and what cannot be.
* :mod:`bench.monitor.kernel` -- :class:`KernelCounters` (TcpExt listen-queue
  counters, per run in a namespace of its own as root,
  else namespace-wide), :func:`run_namespace`, :func:`read_sysctls`, :func:`accept_queue`.
* :mod:`bench.monitor.machine` -- :func:`wait_for_idle` before a run,
  :class:`CpuBusy` per CPU during it (one runs.csv column each), :class:`WindowProbe`
  (snapshots when the measured window opens and closes).
* :mod:`bench.monitor.procfs` -- the cheap /proc readers underneath.
* :mod:`bench.monitor.wire` -- bytes through the server's network namespace
  so far: the live figure of ``bench run``'s progress line.

A typical point::

    counters = KernelCounters.snapshot()
    monitor = ServerMonitor(server_pid, listen_port=port)
    monitor.start()
    ...warm up, then measure from t0 to t1...
    monitor.stop()
    row.update(monitor.summary(t0, t1))
    row.update(KernelCounters.delta(counters, KernelCounters.snapshot()))
"""

from bench.monitor.kernel import (
    NAMESPACE_NOTE,
    OWN_NAMESPACE_NOTE,
    KernelCounters,
    RunNamespace,
    accept_queue,
    read_sysctls,
    run_namespace,
    syn_retry_times,
)
from bench.monitor.machine import CpuBusy, WindowProbe, wait_for_idle
from bench.monitor.proctree import SUMMARY_KEYS, TIMELINE_KEYS, ServerMonitor

__all__ = [
    "NAMESPACE_NOTE",
    "OWN_NAMESPACE_NOTE",
    "SUMMARY_KEYS",
    "TIMELINE_KEYS",
    "CpuBusy",
    "KernelCounters",
    "RunNamespace",
    "ServerMonitor",
    "accept_queue",
    "read_sysctls",
    "run_namespace",
    "syn_retry_times",
    "WindowProbe",
    "wait_for_idle",
]
