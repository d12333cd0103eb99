"""Test hosts in network namespaces: a server host and a client host joined through a hop.

``network: {hosts: namespaces}`` puts the server and the load generator on
two hosts of their own instead of one loopback, each a named network
namespace with one veth link to a hop namespace in the middle::

    client host                 hop                          server host
    eth0 198.18.0.2 --- to-cli [bridge or delay stage] to-srv --- eth0 198.18.0.1
    (client host 2)
    eth0 198.18.0.3 --- to-cli2 [bridge]

Several client hosts (``client_hosts``, for load from several hosts, e.g.
the Locust engine's workers) are joined on the same bridge, each with an
address of its own. With a delay the stage still forwards between exactly
two ends: the client hosts' veths are then bridged in the hop with one more
veth pair, ``to-stage`` (a bridge port) and ``stage-cli`` (the stage's
client-side end), so every client host's frames pass the stage, each with
the same delay, and the server host stays behind ``to-srv`` alone::

    client host 1 eth0 --- to-cli  \
    client host 2 eth0 --- to-cli2 -[br0]- to-stage === stage-cli [delay stage] to-srv --- eth0 server host

Without a delay the hop bridges its two ends (a Linux bridge, all in the
kernel). With ``rtt``/``jitter`` they are not bridged; the delay stage
(:mod:`bench.network.delay`) forwards every frame between them, holding it
for half the round trip each way. ``rate`` is a tbf qdisc on each host's
own ``eth0``, so each direction of the link is limited where a sender's NIC
would be.

Addresses
---------
198.18.0.0/15 is the range RFC 2544 reserves for benchmarking network
devices (IANA special-purpose registry, RFC 6890): never routed on the
internet and, unlike 10/8 or 192.168/16, unlikely to be in use on the
machine's own networks. Each run's hosts live in namespaces of their own, so
every run uses the same two addresses without clashing, even beside other
runs.

Names and cleanup
-----------------
Namespaces are named ``sbn-<pid>.<start>-<run id>-<role>`` (role ``srv``,
``cli``, ``hop``, and ``cli2``... for further client hosts), where pid and start (its start time in clock ticks) are
the runner process's. They are removed on every exit of :func:`namespace_hosts`.
A runner killed by SIGKILL cannot remove them, so every creation first runs
:func:`remove_stale`: a namespace whose runner is gone (no such pid, or the
pid now belongs to a later process) has its processes killed and is removed;
namespaces of runners still alive, such as another run beside this one, are
left alone. The veth links and the bridge live inside the namespaces and go
with them. The delay stage is a child of the runner with PR_SET_PDEATHSIG, so
the kernel kills it with the runner.

Error handling
--------------
Not root: :class:`NetworkError` naming what is needed and the alternative
(``hosts: loopback``). A failure while building the hosts removes what was
built, then raises. The delay stage not ready within
:data:`STAGE_READY_TIMEOUT_S` raises :class:`NetworkError` with its stderr.

Resource handling
-----------------
The delay stage is stopped with SIGTERM (SIGKILL after a bound) and reaped;
namespaces are removed after it, on every path.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Prefix of every namespace this module creates; nothing else is touched.
PREFIX = "sbn"
NETNS_DIR = Path("/run/netns")
ROLES = ("srv", "cli", "hop")
SERVER_ADDRESS = "198.18.0.1"
CLIENT_ADDRESS = "198.18.0.2"
PREFIX_LEN = 24
#: With a delay and several client hosts, the stage's client-side end: a veth whose peer
#: (``to-stage``) is a port of the client hosts' bridge in the hop.
STAGE_CLIENT_END = "stage-cli"

#: The delay stage binds two sockets and prints one line: 10 s is far beyond
#: its start (~0.1 s) even on a busy machine.
STAGE_READY_TIMEOUT_S = 10.0
#: SIGTERM to SIGKILL for the delay stage: it only has to leave its loop.
STAGE_STOP_TIMEOUT_S = 5.0
#: Round trips timed for the base RTT: the median of 20 settles within a few
#: percent and costs 0.2 s at a 10 ms round trip.
RTT_SAMPLES = 20

_CLONE_NEWNET = 0x40000000  # linux/sched.h
_libc = ctypes.CDLL(None, use_errno=True)


class NetworkError(Exception):
    """The test hosts could not be made (the message says why and what to do)."""


def require_root(euid: int | None = None) -> None:
    """Raise :class:`NetworkError` unless running as root (``euid`` overrides, for tests)."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise NetworkError(
            "network: hosts: namespaces needs root (creating network namespaces, veth links and qdiscs needs "
            f"CAP_SYS_ADMIN and CAP_NET_ADMIN; this process runs as uid {euid}): run bench as root, "
            "or use network: {hosts: loopback}"
        )


@dataclasses.dataclass(frozen=True)
class Link:
    """One direction of the link between the hosts, as configured."""

    direction: str  # "client->server" or "server->client"
    rate_bit: int | None
    delay_s: float
    jitter_s: float

    def describe(self, staged: bool) -> str:
        from bench.units import format_bitrate, format_duration

        parts = [f"tbf {format_bitrate(self.rate_bit)}" if self.rate_bit else "no rate limit"]
        if staged:
            parts.append(
                f"delay stage {format_duration(self.delay_s)}"
                + (f" + 0..{format_duration(self.jitter_s)} jitter" if self.jitter_s else "")
            )
        else:
            parts.append("bridge")
        return f"{self.direction}: {', '.join(parts)}"


# --------------------------------------------------------------------------
# Namespaces by name


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_tag(pid: int | None = None) -> str:
    """``<pid>.<start ticks>`` of ``pid`` (default: this process): who a namespace belongs to."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_ticks(pid)}"


def client_roles(client_hosts: int = 1) -> list[str]:
    """The roles of ``client_hosts`` client hosts: ``cli``, ``cli2``, ``cli3``..."""
    return ["cli"] + [f"cli{k}" for k in range(2, client_hosts + 1)]


def client_address(k: int) -> str:
    """The address of client host ``k`` (0-based): 198.18.0.2, .3, ..."""
    return f"198.18.0.{2 + k}"


def namespace_names(run_id: str, owner: str | None = None, client_hosts: int = 1) -> dict[str, str]:
    """``{role: name}`` for one run's namespaces."""
    owner = owner or owner_tag()
    return {role: f"{PREFIX}-{owner}-{run_id}-{role}" for role in (*ROLES, *client_roles(client_hosts)[1:])}


def ours() -> list[str]:
    """Every namespace in /run/netns with this module's prefix."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(PREFIX + "-"))
    except FileNotFoundError:
        return []


def _owner_alive(name: str) -> bool:
    try:
        pid_text, ticks = name.split("-", 2)[1].split(".", 1)
        return _start_ticks(int(pid_text)) == ticks
    except (IndexError, ValueError):
        return False  # not a name this module writes: treat as stale


def _pids_in(name: str) -> list[int]:
    """Processes whose network namespace is the named one."""
    try:
        target = os.stat(NETNS_DIR / name)
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
                pids.append(int(entry))
    return pids


def _remove(name: str) -> None:
    from pyroute2 import netns

    with contextlib.suppress(FileNotFoundError):
        netns.remove(name)


def remove_stale() -> list[str]:
    """Remove namespaces left by runners that are gone (killed processes in them first); return their names."""
    removed = []
    for name in ours():
        if _owner_alive(name):
            continue
        for pid in _pids_in(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _remove(name)
        removed.append(name)
    return removed


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block with the calling thread in the named namespace; processes and threads started there stay in it."""
    target = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise NetworkError(f"setns into {name} failed: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if _libc.setns(original, _CLONE_NEWNET) != 0:
                raise RuntimeError(
                    f"could not return to the original network namespace: {os.strerror(ctypes.get_errno())}"
                )
    finally:
        os.close(target)
        os.close(original)


# --------------------------------------------------------------------------
# Building the hosts


def _create(name: str) -> None:
    """Create the named namespace without forking (pyroute2's ``netns.create`` forks a child).

    A fresh thread unshares its network namespace and bind-mounts it at
    /run/netns/<name>, as ``ip netns add`` does; the thread then ends, and
    the mount keeps the namespace.
    """
    from pyroute2 import netns

    failure: list[BaseException] = []

    def make() -> None:
        try:
            if _libc.unshare(_CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"unshare(CLONE_NEWNET) failed for {name}")
            netns.attach(name, "thread-self")  # bind-mounts /proc/thread-self/ns/net
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=make, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise NetworkError(f"could not create network namespace {name}: {failure[0]}") from failure[0]


@contextlib.contextmanager
def _rtnl(name: str) -> Iterator[Any]:
    """A pyroute2 IPRoute whose netlink socket is in the named namespace (made there, no fork)."""
    from pyroute2 import IPRoute

    with inside(name):
        ipr = IPRoute()
    with ipr:
        yield ipr


def _build(names: dict[str, str], links: tuple[Link, Link], *, bridged: bool) -> None:
    for name in names.values():
        _create(name)
    clients = [role for role in names if role.startswith("cli")]
    fds = {role: os.open(NETNS_DIR / names[role], os.O_RDONLY | os.O_CLOEXEC) for role in ("srv", *clients)}
    try:
        with _rtnl(names["hop"]) as hop:
            for role in ("srv", *clients):
                hop.link("add", ifname=f"to-{role}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fds[role]})
            ends = [hop.link_lookup(ifname=f"to-{role}")[0] for role in ("srv", *clients)]
            # Bridged: every host on one bridge. Staged with several client hosts: the client
            # hosts on a bridge whose extra port (to-stage) leads to the stage's end (STAGE_CLIENT_END).
            ports = ends if bridged else (ends[1:] if len(clients) > 1 else [])
            if len(clients) > 1 and not bridged:
                hop.link("add", ifname="to-stage", kind="veth", peer={"ifname": STAGE_CLIENT_END})
                ports = [*ports, hop.link_lookup(ifname="to-stage")[0]]
                ends = [*ends, hop.link_lookup(ifname=STAGE_CLIENT_END)[0], ports[-1]]
            if ports:
                hop.link("add", ifname="br0", kind="bridge")
                bridge = hop.link_lookup(ifname="br0")[0]
                for index in ports:
                    hop.link("set", index=index, master=bridge)
                hop.link("set", index=bridge, state="up")
            for index in ends:
                hop.link("set", index=index, state="up")
    finally:
        for fd in fds.values():
            os.close(fd)
    # client->server is limited on the client's eth0, server->client on the server's
    ends_of = [("srv", SERVER_ADDRESS, links[1])] + [
        (role, client_address(k), links[0]) for k, role in enumerate(clients)
    ]
    for role, address, link in ends_of:
        with _rtnl(names[role]) as ns:
            eth0 = ns.link_lookup(ifname="eth0")[0]
            ns.addr("add", index=eth0, address=address, prefixlen=PREFIX_LEN)
            ns.link("set", index=eth0, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            if link.rate_bit:
                ns.tc(
                    "add", "tbf", eth0, rate=f"{link.rate_bit}bit", burst=_burst_bytes(link.rate_bit), latency="100ms"
                )


def _burst_bytes(rate_bit: int) -> int:
    """tbf's bucket: 1 ms of the rate, at least 3028 B (two full frames; tbf refuses less than one).

    Smaller than a 64 KiB GSO segment, so tbf splits those into wire-size
    packets and the rate holds at millisecond scale instead of in bursts.
    """
    return max(3028, rate_bit // 8 // 1000)


def _start_stage(names: dict[str, str], links: tuple[Link, Link], client_hosts: int = 1) -> subprocess.Popen[bytes]:
    to_server, to_client = links
    command = [
        sys.executable,
        "-m",
        "bench.network.delay",
        "--a",
        "to-cli" if client_hosts == 1 else STAGE_CLIENT_END,
        "--b",
        "to-srv",
        "--a-to-b-us",
        str(round(to_server.delay_s * 1e6)),
        "--b-to-a-us",
        str(round(to_client.delay_s * 1e6)),
        "--jitter-us",
        str(round(to_server.jitter_s * 1e6)),
        "--parent",
        str(os.getpid()),
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])),
    )
    with inside(names["hop"]):
        stage = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    assert stage.stdout is not None and stage.stderr is not None  # both are pipes
    ready, _, _ = select.select([stage.stdout], [], [], STAGE_READY_TIMEOUT_S)
    line = stage.stdout.readline() if ready else b""
    if b'"ready"' not in line:
        _stop_stage(stage)
        raise NetworkError(
            f"the delay stage did not start within {STAGE_READY_TIMEOUT_S:.0f} s: "
            f"{stage.stderr.read().decode(errors='replace')[-2000:]}"
        )
    return stage


def _stop_stage(stage: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM, SIGKILL after a bound, reap; the stage's counters (empty if it printed none)."""
    with contextlib.suppress(ProcessLookupError):
        stage.send_signal(signal.SIGTERM)
    try:
        out, _err = stage.communicate(timeout=STAGE_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stage.kill()
        out, _err = stage.communicate()
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


# --------------------------------------------------------------------------
# The hosts as a run sees them


@dataclasses.dataclass
class NamespaceHosts:
    """One run's hosts: namespace names, addresses, the links and what was measured over them."""

    names: dict[str, str]
    links: tuple[Link, Link]
    server_address: str = SERVER_ADDRESS
    client_address: str = CLIENT_ADDRESS
    base_rtt_us: list[float] = dataclasses.field(default_factory=list)
    stage_counters: dict[str, Any] = dataclasses.field(default_factory=dict)
    stage_cpu_s: float | None = None
    staged: bool = False  # the delay stage forwards between the hosts (else a bridge)
    client_hosts: int = 1
    #: the tbf qdiscs' ``overlimits`` and ``drops`` summed over every host, read just before removal
    tbf_counters: dict[str, int] = dataclasses.field(default_factory=dict)

    def read_tbf(self) -> dict[str, int]:
        """``{"overlimits": n, "drops": n}`` of the tbf qdiscs on every host's eth0, summed; empty without a rate."""
        if not self.links[0].rate_bit:
            return {}
        totals = {"overlimits": 0, "drops": 0}
        for role in ("srv", *client_roles(self.client_hosts)):
            with _rtnl(self.names[role]) as ns:
                eth0 = ns.link_lookup(ifname="eth0")[0]
                for qdisc in ns.get_qdiscs(index=eth0):
                    if qdisc.get_attr("TCA_KIND") != "tbf":
                        continue
                    stats = qdisc.get_attr("TCA_STATS") or {}  # struct tc_stats: its field is "drop"
                    totals["overlimits"] += int(stats.get("overlimits", 0))
                    totals["drops"] += int(stats.get("drop", 0))
        return totals

    def in_server(self) -> contextlib.AbstractContextManager[None]:
        """The block runs on the server host (start the server and its monitor there)."""
        return inside(self.names["srv"])

    def in_client(self, k: int = 0) -> contextlib.AbstractContextManager[None]:
        """The block runs on client host ``k`` (0: the first; start the load generator there)."""
        return inside(self.names[client_roles(self.client_hosts)[k]])

    @contextlib.contextmanager
    def connection(self, host: int = 0) -> Iterator[tuple[socket.socket, socket.socket]]:
        """One TCP connection over the link: (client host ``host``'s end, the server host's end); closed after."""
        with self.in_server():
            listener = socket.create_server((self.server_address, 0))
        with contextlib.ExitStack() as stack:
            stack.enter_context(listener)
            with self.in_client(host):
                client = stack.enter_context(socket.create_connection(listener.getsockname(), timeout=10))
            peer = stack.enter_context(listener.accept()[0])
            yield client, peer

    def measure_rtt(self, samples: int = RTT_SAMPLES, host: int = 0) -> list[float]:
        """Time ``samples`` 1-byte TCP round trips client host ``host`` (0-based) -> server host, microseconds each."""
        with self.connection(host) as (client, peer):
            echo = threading.Thread(target=_echo_bytes, args=(peer, samples), daemon=True)
            echo.start()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times = []
            for _ in range(samples):
                began = time.perf_counter()
                client.sendall(b"x")
                if client.recv(1) != b"x":
                    raise NetworkError("the round-trip probe got no echo between the hosts")
                times.append((time.perf_counter() - began) * 1e6)
            echo.join(10)
        return times

    def measure_bulk(self, nbytes: int, *, upload: bool = True) -> float:
        """Send ``nbytes`` one way over one TCP connection; the receiver's rate, bit/s.

        Timed from the receiver's first read to its last, with the first
        read's bytes left out (up to 64 KiB may land at once): the rate the
        link sustained, not the handshake.
        """
        with self.connection() as (client, peer):
            sender, receiver = (client, peer) if upload else (peer, client)
            # 60 s: 100 MB at the slowest rate this is used with (20 Mbit/s) takes 40 s
            receiver.settimeout(60)
            thread = threading.Thread(target=sender.sendall, args=(bytes(nbytes),), daemon=True)
            thread.start()
            got, first, counted_from = 0, 0.0, 0
            while got < nbytes:
                chunk = receiver.recv(1 << 20)
                if not chunk:
                    raise NetworkError(f"the bulk transfer between the hosts ended after {got} of {nbytes} bytes")
                if not got:
                    first, counted_from = time.perf_counter(), len(chunk)
                got += len(chunk)
            last = time.perf_counter()
            thread.join(10)
        return (nbytes - counted_from) * 8 / (last - first)

    def columns(self) -> dict[str, Any]:
        """The runs.csv cells describing these hosts (see bench.results COLUMN_HELP)."""
        cells: dict[str, Any] = {
            "net_hosts": "namespaces",
            # rtt, jitter and rate are the point's parameter columns (bench.parameters): not repeated here
            "net_links": "; ".join(link.describe(self.staged) for link in self.links),
            "net_base_rtt_us": round(statistics.median(self.base_rtt_us), 1) if self.base_rtt_us else None,
            "net_base_rtt_min_us": round(min(self.base_rtt_us), 1) if self.base_rtt_us else None,
        }
        if self.stage_counters:
            cells["net_stage_dropped"] = sum(way.get("dropped", 0) for way in self.stage_counters.values())
            cells["net_stage_frames"] = sum(way.get("forwarded", 0) for way in self.stage_counters.values())
        if self.tbf_counters:
            cells["net_tbf_overlimits"] = self.tbf_counters.get("overlimits")
            cells["net_tbf_drops"] = self.tbf_counters.get("drops")
        if self.stage_cpu_s is not None:
            cells["net_stage_cpu_s"] = round(self.stage_cpu_s, 3)
        return cells


def _echo_bytes(sock: socket.socket, count: int) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(10)
    with contextlib.suppress(OSError):
        for _ in range(count):
            data = sock.recv(1)
            if not data:
                return
            sock.sendall(data)


def links_for(rtt_s: float = 0.0, jitter_s: float = 0.0, rate_bit: int | None = None) -> tuple[Link, Link]:
    """Both directions of a link with ``rtt_s`` split evenly over them."""
    return (
        Link("client->server", rate_bit, rtt_s / 2, jitter_s),
        Link("server->client", rate_bit, rtt_s / 2, jitter_s),
    )


@contextlib.contextmanager
def namespace_hosts(
    run_id: str,
    *,
    rtt_s: float = 0.0,
    jitter_s: float = 0.0,
    rate_bit: int | None = None,
    measure: bool = True,
    stage: bool = False,
    client_hosts: int = 1,
) -> Iterator[NamespaceHosts]:
    """Build a server host and ``client_hosts`` client hosts for one run; remove them (and stop the delay stage) at the end.

    With ``measure``, the base round trip between the hosts is timed once
    they are up (:meth:`NamespaceHosts.measure_rtt`), through the delay stage
    if there is one. The stage runs when there is delay or jitter, or with
    ``stage`` at zero delay (to measure its own cost).
    """
    require_root()
    use_stage = bool(stage or rtt_s or jitter_s)
    remove_stale()
    names = namespace_names(run_id, client_hosts=client_hosts)
    hosts = NamespaceHosts(names, links_for(rtt_s, jitter_s, rate_bit), staged=use_stage, client_hosts=client_hosts)
    stage_process = None
    try:
        _build(names, hosts.links, bridged=not use_stage)
        if use_stage:
            stage_process = _start_stage(names, hosts.links, client_hosts)
        if measure:
            hosts.base_rtt_us = hosts.measure_rtt()
        yield hosts
    finally:
        try:
            with contextlib.suppress(Exception):  # counters are a bonus: a failed read leaves them out
                hosts.tbf_counters = hosts.read_tbf()
            if stage_process is not None:
                before = os.times()
                hosts.stage_counters = _stop_stage(stage_process)
                after = os.times()
                hosts.stage_cpu_s = (
                    after.children_user - before.children_user + after.children_system - before.children_system
                )
        finally:
            for name in names.values():
                _remove(name)
