"""The load generator's own failure, shared by every engine (:mod:`bench.loadgen.driver`, :mod:`bench.loadgen.locust_engine`)."""


class LoadGenError(RuntimeError):
    """A worker failed or did not finish; the message says which and why."""
