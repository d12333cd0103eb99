"""``bench calibrate``: what this machine can do, and how close sockbench's generator gets.

Three modules, one per layer, so measuring never imports what prints:

:mod:`bench.calibration.measure`
    runs the programs and returns the calibration as a plain dict
    (:func:`~bench.calibration.measure.calibrate`);
:mod:`bench.calibration.persist`
    saves it (``results/calibration/<time>.json`` and ``latest.json``),
    copies it into a results folder and reads it back, version-checked;
:mod:`bench.calibration.render`
    prints it as tables and the goal line; :mod:`bench.calibration.cli`
    is the command (options, measure, render, save).

A figure for a Python server means little without two others beside it: what
the machine itself can do on loopback (the *ceiling*), and what the load
generator can drive (if the generator saturates first, the server was never
measured). This module measures both, prints them, and saves them where runs
and reports find them (:func:`bench.calibration.persist.load_latest`).

What is measured
----------------
All echo figures use 1 KiB messages, closed loop.

``echo``
    The C reference client (``servers/c/echo_client.c``) against the
    ``c-reference`` server at 1, 10 and 100 connections: the echo ceiling per
    client count. At 1 connection it is also the single-connection round-trip
    rate and latency ceiling.
``generator``
    sockbench's own generator (:func:`bench.loadgen.run_load`) against the
    same server, same points, same run, with its ratio to the C client:
    round trips/s generator / C, and p50 latency generator / C. The goal is
    >= 0.9 at 100 connections and <= 1.1 at one connection.
``connect``
    Connect + 1 KiB request + close, repeated (the C client's connect mode),
    with a few cycles in flight at once.
``bulk``
    One TCP stream on loopback, with ``iperf3`` when installed (said so),
    otherwise the project's own pair: ``os.sendfile`` of a cached file into a
    socket, ``recv_into`` a preallocated buffer on the other side.

Placement
---------
Every figure carries its CPU placement, as :func:`bench.placement.placement_cpus`
defines it for every command: ``split`` gives the server the first half of
the allowed CPUs and the client the rest (on 2 CPUs: CPU 0 and CPU 1);
``shared`` puts both on the first. On small
VMs waking a CPU costs tens of microseconds, so at one connection the two
differ several-fold *for every server*; both are measured there. Other
points use ``split``, the default placement of ``bench run``. The machine's
busy percent before the run is recorded: a process spinning elsewhere
changes these figures 2-4x.

Design
------
One ``c-reference`` server (pinned to the server CPU) serves every echo and
connect measurement, so C client and generator meet the very same server.
Each echo point is measured in :data:`ROUNDS` rounds (``--rounds``); in each
round the C client and the generator run back to back, the C client first in
odd rounds and the generator first in even ones, so neither always meets a
warmer (or more tired) machine. A row gives the median over the rounds, the
per-round values and their spread; the generator's ratios are taken within
each round (one pair, side by side) and their median and range reported.
Connect-mode runs come last: they leave tens of thousands of sockets in
TIME-WAIT. Each measurement is a small function returning a plain dict,
testable alone; :func:`calibrate` strings them together.

The goal's PASS/MISS (:func:`goal_verdict`) is said to be **NOT RELIABLE**,
with the reasons, when it rests on quick mode, fewer than 3 rounds, a
generator-bound or erroring measurement, a busy machine, or rounds whose
ratios fall on both sides of the goal.

Error handling
--------------
No C compiler: every C measurement is skipped with the one-line note from
:func:`servers.native.why_unavailable`, and the bulk figure is still
measured. Generator not importable: those rows are skipped with a note. A
measurement that fails (a program exits non-zero, a timeout) is recorded as
``{"error": ...}`` in its row and reported; the others go on. Nothing here
prints a guess in place of a figure.

Resource handling
-----------------
Every process started here has a timeout and is stopped and reaped: the
server through :func:`servers.launch.run_server`; clients, iperf3 and the
bulk pair through :func:`servers.processes.popen_killer` (killed and reaped
on any exception, stopped and reaped otherwise). The bulk pair's file
lives in a temporary folder that is removed.
"""

from __future__ import annotations
