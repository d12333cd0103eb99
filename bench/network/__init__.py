"""Test hosts and the network between them.

A run's server and load generator sit either on one loopback (``hosts:
loopback``, the default: as root, a network namespace of the run's own with
only ``lo``, see :func:`bench.monitor.run_namespace`) or on two hosts of
their own (``hosts: namespaces``): a server host and a client host, each a
named network namespace, joined by a link whose rate, round-trip time and
jitter the scenario sets.

* :mod:`bench.network.hosts` -- the namespaces, their link, its tbf rate
  limit, the base round trip measured between the hosts, and the cleanup of
  namespaces a killed runner left.
* :mod:`bench.network.delay` -- the delay stage: this kernel has no netem, so
  a per-packet store-and-forward hop of the project's own adds delay and
  jitter, keeping TCP end to end.

:func:`run_hosts` is what the runner uses: the same three things for both
kinds of hosts (where the server starts, its address, the runs.csv cells).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

from bench.network.hosts import NetworkError, client_address, namespace_hosts, ours, remove_stale, require_root

__all__ = [
    "ClientHost",
    "NetworkError",
    "RunHosts",
    "namespace_hosts",
    "ours",
    "remove_stale",
    "require_root",
    "run_hosts",
]


@dataclasses.dataclass(frozen=True)
class ClientHost:
    """A client host as load engines see it: a label, its address, and ``enter()`` to start processes there."""

    label: str
    address: str
    enter: Callable[[], contextlib.AbstractContextManager[Any]]


class RunHosts:
    """Where one run's server and load generator run, as the runner needs it.

    The calling thread is on the client host for the whole ``with`` block of
    :func:`run_hosts`, so the load generator starts there;
    :meth:`in_server` moves it to the server host for the server's start and
    its monitor's.
    """

    def __init__(self, netns_scope: str, namespaces: Any = None):
        self.netns_scope = netns_scope
        self.namespaces = namespaces

    @property
    def server_host(self) -> str | None:
        """The address the server listens on (None: its default, loopback)."""
        return self.namespaces.server_address if self.namespaces else None

    def in_server(self) -> contextlib.AbstractContextManager[None]:
        return self.namespaces.in_server() if self.namespaces else contextlib.nullcontext()

    def client_hosts(self) -> list[ClientHost]:
        """Where load processes may start: each client host (loopback: here)."""
        if not self.namespaces:
            return [ClientHost("loopback", "127.0.0.1", contextlib.nullcontext)]
        made = self.namespaces
        return [
            ClientHost(f"client host {k + 1}", client_address(k), functools.partial(made.in_client, k))
            for k in range(made.client_hosts)
        ]

    def columns(self) -> dict[str, Any]:
        """runs.csv cells: ``netns`` and ``net_hosts``, and for namespaces the link's (final after the block)."""
        cells = {"netns": self.netns_scope, "net_hosts": "namespaces" if self.namespaces else "loopback"}
        if self.namespaces:
            cells.update(self.namespaces.columns())
        return cells


@contextlib.contextmanager
def run_hosts(
    run_id: str,
    hosts: str = "loopback",
    *,
    rtt_s: float = 0.0,
    jitter_s: float = 0.0,
    rate_bit: int | None = None,
    client_hosts: int = 1,
) -> Iterator[RunHosts]:
    """The hosts of one run: ``loopback`` (a namespace of the run's own where root allows) or ``namespaces``."""
    if hosts == "loopback":
        from bench.monitor import run_namespace

        with run_namespace() as netns:
            yield RunHosts(netns.scope)
        return
    with (
        namespace_hosts(run_id, rtt_s=rtt_s, jitter_s=jitter_s, rate_bit=rate_bit, client_hosts=client_hosts) as made,
        made.in_client(),
    ):
        yield RunHosts("own", made)
