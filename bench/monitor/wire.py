"""Bytes on the wire of a run, read while it runs: the live figure of ``bench run``'s progress line.

The load generator's workers report what they measured once, at the end of
the run (one JSON each, see :mod:`bench.loadgen.driver`), and the engines
differ (the python worker, the native C client, wrk, Locust): none can be
asked for its requests per second halfway through. What every run has, from
any engine, is traffic through the network interfaces of the server's
network namespace, which the kernel counts in ``/proc/<pid>/net/dev``. Where
the run has a namespace of its own (``runs.csv``'s ``netns`` is ``own``:
:func:`bench.monitor.run_namespace`, or the hosts of :mod:`bench.network`),
that traffic is the run's alone, and reading it costs one small file read.

What the figure is, and is not:

* every byte of every packet, both directions: payload, TCP/IP headers,
  handshakes and bare ACKs. It is not the payload rate, and not requests
  per second (a small echo request moves more header than payload);
* each packet once: on ``lo`` a packet sent is also received, so only the
  transmitted bytes count; on any other interface (a veth to a client host)
  received and transmitted bytes both count, each packet crossing it once;
* in a namespace shared with the rest of the machine (no root), the counters
  include every other program's traffic: :func:`namespace_bytes` is then not
  a figure of the run, and ``bench run`` shows none.

Error handling: a process that has gone (the server exited) or a file that
cannot be parsed gives None, never an exception: a progress line must not
stop a run.
"""

from __future__ import annotations

from bench.monitor.procfs import ProcessGone, read_small

#: In ``/proc/net/dev``, after ``name:``: receive bytes are field 0, transmit bytes field 8.
_RX_BYTES, _TX_BYTES = 0, 8


def parse_net_dev(text: str) -> int:
    """The bytes through the interfaces listed in ``/proc/net/dev`` text, each packet once (see module docstring)."""
    total = 0
    for line in text.splitlines()[2:]:  # two header lines
        name, sep, fields = line.partition(":")
        if not sep:
            continue
        values = fields.split()
        if name.strip() == "lo":
            total += int(values[_TX_BYTES])
        else:
            total += int(values[_RX_BYTES]) + int(values[_TX_BYTES])
    return total


def namespace_bytes(pid: int) -> int | None:
    """Bytes through the network interfaces of ``pid``'s network namespace so far; None if unreadable."""
    try:
        return parse_net_dev(read_small(f"/proc/{pid}/net/dev").decode("ascii", "replace"))
    except (ProcessGone, OSError, ValueError, IndexError):  # gone, unreadable, or not the layout expected
        return None
