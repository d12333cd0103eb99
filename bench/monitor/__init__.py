"""Monitors that run beside each benchmark point (Linux only: they read /proc).

One module per thing measured:

* :mod:`bench.monitor.proctree` -- :class:`ServerMonitor`, the server's whole
  process tree sampled in a thread: memory (RSS/PSS/USS), processes, threads,
  fds, CPU, context switches, accept-queue depth; its docstring explains how
  CPU of short-lived children is accounted and what cannot be.
* :mod:`bench.monitor.kernel` -- :class:`KernelCounters` (TcpExt listen-queue
  counters, namespace-wide), :func:`read_sysctls`, :func:`accept_queue`.
* :mod:`bench.monitor.machine` -- :func:`wait_for_idle` before a run,
  :class:`CpuBusy` per CPU during it, :func:`format_cpu_busy`.
* :mod:`bench.monitor.procfs` -- the cheap /proc readers underneath.

A typical point::

    counters = KernelCounters.snapshot()
    monitor = ServerMonitor(server_pid, listen_port=port)
    monitor.start()
    ...warm up, then measure from t0 to t1...
    monitor.stop()
    row.update(monitor.summary(t0, t1))
    row.update(KernelCounters.delta(counters, KernelCounters.snapshot()))
"""

from bench.monitor.kernel import NAMESPACE_NOTE, KernelCounters, accept_queue, read_sysctls, syn_retry_times
from bench.monitor.machine import CpuBusy, format_cpu_busy, wait_for_idle
from bench.monitor.proctree import SUMMARY_KEYS, TIMELINE_KEYS, ServerMonitor

__all__ = [
    "NAMESPACE_NOTE",
    "SUMMARY_KEYS",
    "TIMELINE_KEYS",
    "CpuBusy",
    "KernelCounters",
    "ServerMonitor",
    "accept_queue",
    "format_cpu_busy",
    "read_sysctls",
    "syn_retry_times",
    "wait_for_idle",
]
