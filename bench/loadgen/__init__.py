"""sockbench's load generator: drive an echo, file, http or timeauth server and measure it honestly.

Public API (others depend on exactly these names)::

    from bench.loadgen import FileTarget, LoadSpec, LoadResult, run_load, LoadGenError
    result = run_load(LoadSpec(service="echo", host="127.0.0.1", port=port,
                               clients=100, duration_s=10, warmup_s=2))
    result.row["req_per_s"], result.histograms["latency"], result.warnings

Design in one paragraph: the parent (:mod:`bench.loadgen.driver`) splits the
clients over worker processes, one per CPU, each running one event loop.
Two engines implement the worker (:mod:`bench.loadgen.engines`): ``native``,
a C epoll program (``c/loadgen.c``), and ``python``
(:mod:`bench.loadgen.worker`), whose loop is uvloop if installed and whose
clients are ``asyncio.BufferedProtocol`` connections
(:mod:`bench.loadgen.clients`). A third engine, ``locust``
(:mod:`bench.loadgen.locust_engine`), hands the load to Locust's master and
workers, possibly over several hosts, and merges their reports the same way. Either way clients are started either as soon as they are free (closed loop) or on a fixed-rate
schedule (open loop, :mod:`bench.loadgen.schedule`). Workers start together
at a wall-clock instant chosen by the parent, count only what completes in the
measured window, record latencies into HdrHistogram buckets
(:mod:`bench.loadgen.recording`, :mod:`bench.histograms`) and report
one JSON document each; the parent merges them (:mod:`bench.loadgen.merge`)
into a :class:`LoadResult` whose ``row`` holds runs.csv columns. Each worker
measures its own CPU and the parent reads each worker's run-queue wait; one
short of CPU (``bench.vocabulary.GENERATOR_SHORT_RULE``) gets a warning, and the
row keeps the busiest worker's figures (``gen_busy_pct_max``) so that the run can be
called generator-bound where the server's CPU is known too
(``bench.vocabulary.generator_limit``): the generator alone cannot tell.
``bench load`` is :mod:`bench.loadgen.cli`.
"""

from bench.loadgen.driver import LoadGenError, run_load
from bench.loadgen.spec import FileTarget, LoadResult, LoadSpec

__all__ = ["FileTarget", "LoadGenError", "LoadResult", "LoadSpec", "run_load"]
