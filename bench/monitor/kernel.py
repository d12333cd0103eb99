"""What the kernel says about listening sockets: counters, queue depth, sysctls.

A full accept queue is invisible from user space: Linux never refuses a
connection because of it (ECONNREFUSED only comes when nothing listens); it
drops SYNs or final ACKs silently and lets clients retry after 1 s, 3 s...
The only witnesses are kernel counters and the queue itself:

* ``/proc/net/netstat`` TcpExt counters (:class:`KernelCounters`):
  ``ListenOverflows`` (a SYN or ACK arrived while the accept queue was full),
  ``ListenDrops`` (every drop at a listener, overflows included),
  ``TCPReqQFullDrop`` / ``TCPReqQFullDoCookies`` (SYN queue full: dropped, or
  answered with a SYN cookie), ``SyncookiesSent``. They count the whole
  network namespace: any other listener overflowing during a run adds to
  them. So, where the tool runs as root, :func:`run_namespace` gives each
  run a network namespace of its own (only loopback, brought up), the
  server and the generator workers are started inside it, and the counters
  are read from ``/proc/<server pid>/net/netstat``: they are that run's
  alone. Without root they stay namespace-wide and :data:`NAMESPACE_NOTE`
  says so in the results.
* The accept queue of one listening socket (:func:`accept_queue`): its
  current length (``sk_ack_backlog``) and the backlog the kernel applied
  (``sk_max_ack_backlog`` = ``min(backlog, somaxconn)``) -- what ``ss -ltn``
  shows as Recv-Q / Send-Q for a listener. They are asked of the kernel's
  sock_diag netlink interface, as ``ss`` does: the kernel walks only the
  listening sockets. ``/proc/net/tcp`` is the fallback where netlink is
  unavailable; it has the current length (``rx_queue`` of a LISTEN line) but
  *not* the backlog (its ``tx_queue`` is ``write_seq - snd_una``, always 0
  for a listener), so the backlog is then None.
* The sysctls that shape all this (:func:`read_sysctls`).

Cost: a sock_diag query asking for LISTEN sockets only never touches the
established and TIME-WAIT sockets; in the /proc fallback, the kernel lists
listening sockets first, so reading stops at the first other socket. A
connection-churn run leaves >100k sockets in TIME-WAIT; reading them all
(tens of MB) ten times a second would make the monitor the busiest process
on the machine.

Error handling:
    Nothing here raises for a missing or unreadable file: counters absent
    from this kernel are absent from the snapshot and their deltas are None;
    an unreadable sysctl is None; a port with no listener gives None; if
    sock_diag fails, /proc/net/tcp is read instead. Only an invalid port
    number raises (ValueError).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.vocabulary import syn_retry_times  # noqa: F401 - part of bench.monitor's interface

NETSTAT = "/proc/net/netstat"
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")

#: TcpExt counter name -> runs.csv column of its delta.
COUNTER_COLUMNS: dict[str, str] = {
    "ListenOverflows": "k_listen_overflows",
    "ListenDrops": "k_listen_drops",
    "TCPReqQFullDrop": "k_reqq_full_drop",
    "TCPReqQFullDoCookies": "k_reqq_full_do_cookies",
    "SyncookiesSent": "k_syncookies_sent",
}

#: How TCP fared on the path, read from the same namespace (``/proc/<pid>/net/snmp`` for the ``Tcp``
#: MIB, ``netstat`` for ``TcpExt``): (section, counter) -> runs.csv column of its delta. With
#: ``network: {hosts: namespaces}`` the server host holds the server alone, so these are the server's
#: segments: a retransmit is a segment the path lost or delayed past the retransmission timer.
PATH_COUNTER_COLUMNS: dict[tuple[str, str], str] = {
    ("Tcp", "RetransSegs"): "net_retrans_segs",
    ("TcpExt", "TCPTimeouts"): "net_rto_timeouts",
}
SNMP = "/proc/net/snmp"

#: Sysctl name -> file.
SYSCTLS: dict[str, str] = {
    "net.core.somaxconn": "/proc/sys/net/core/somaxconn",
    "net.ipv4.tcp_syncookies": "/proc/sys/net/ipv4/tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow": "/proc/sys/net/ipv4/tcp_abort_on_overflow",
    "net.ipv4.tcp_max_syn_backlog": "/proc/sys/net/ipv4/tcp_max_syn_backlog",
    # when a client retransmits a dropped SYN (see syn_retry_times)
    "net.ipv4.tcp_syn_retries": "/proc/sys/net/ipv4/tcp_syn_retries",
    "net.ipv4.tcp_syn_linear_timeouts": "/proc/sys/net/ipv4/tcp_syn_linear_timeouts",
}

NAMESPACE_NOTE = (
    "kernel counters (k_* columns, /proc/net/netstat TcpExt) are namespace-wide: they count every socket "
    "of the network namespace, not only the server's: other traffic in the namespace during a run adds to them"
)

#: environment.json note when every run had a network namespace of its own.
OWN_NAMESPACE_NOTE = (
    "each run's server and load workers ran in a network namespace of their own (loopback only): the "
    "kernel counters (k_* columns) count that run's sockets alone"
)

#: Sysctls copied into a run's namespace, which otherwise starts with the kernel's defaults:
#: the listen-queue ones (SYSCTLS) and those that bound connection churn.
_COPIED_SYSCTLS = (
    *SYSCTLS.values(),
    "/proc/sys/net/ipv4/ip_local_port_range",
    "/proc/sys/net/ipv4/tcp_tw_reuse",
    "/proc/sys/net/ipv4/tcp_max_tw_buckets",
    "/proc/sys/net/ipv4/tcp_fin_timeout",
)

# /proc/net/tcp "st" column values (include/net/tcp_states.h)
_TCP_LISTEN = "0A"
_TCP_SYN_RECV = "03"  # kernels before 4.4 listed pending requests under their listener


class KernelCounters:
    """Snapshots and deltas of the TcpExt listen-queue counters and the path's (:data:`PATH_COUNTER_COLUMNS`)."""

    @staticmethod
    def snapshot(pid: int | None = None) -> dict[str, int]:
        """Current values of the counters in :data:`COUNTER_COLUMNS` that this kernel has.

        ``pid``: read the network namespace of that process (``/proc/<pid>/net/netstat``),
        e.g. a server in a namespace of its own; default: this process's.
        """
        try:
            text = Path(NETSTAT if pid is None else f"/proc/{pid}/net/netstat").read_text()
        except OSError:
            return {}
        tcpext = _parse_netstat(text, "TcpExt")
        values = {name: value for name, value in tcpext.items() if name in COUNTER_COLUMNS}
        try:
            tcp = _parse_netstat(Path(SNMP if pid is None else f"/proc/{pid}/net/snmp").read_text(), "Tcp")
        except OSError:
            tcp = {}
        sections = {"Tcp": tcp, "TcpExt": tcpext}
        for section, name in PATH_COUNTER_COLUMNS:
            if name in sections[section]:
                values[f"{section}.{name}"] = sections[section][name]
        return values

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        """``after - before`` per counter under its runs.csv column name;
        None where either snapshot lacks the counter."""
        names = {**COUNTER_COLUMNS, **{f"{s}.{n}": column for (s, n), column in PATH_COUNTER_COLUMNS.items()}}
        return {
            column: (after[name] - before[name]) if name in before and name in after else None
            for name, column in names.items()
        }


def _parse_netstat(text: str, section: str) -> dict[str, int]:
    """One section of /proc/net/netstat: a header line of names followed by a line of values."""
    prefix = section + ":"
    lines = [line.split() for line in text.splitlines() if line.startswith(prefix)]
    values: dict[str, int] = {}
    for header, numbers in zip(lines[0::2], lines[1::2]):
        for name, number in zip(header[1:], numbers[1:]):
            try:
                values[name] = int(number)
            except ValueError:
                continue
    return values


def read_sysctls() -> dict[str, int | None]:
    """The listen-queue sysctls of this network namespace (None if unreadable)."""
    values: dict[str, int | None] = {}
    for name, path in SYSCTLS.items():
        try:
            values[name] = int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            values[name] = None
    return values


def accept_queue(port: int) -> tuple[int, int | None] | None:
    """(current accept-queue depth, backlog) of the LISTEN socket(s) on local ``port``.

    Several listeners on the port (IPv4 and IPv6, SO_REUSEPORT) are added up.
    None if nothing listens on the port. The backlog is None only when the
    sock_diag netlink interface is unavailable and /proc/net/tcp{,6} had to
    be read instead (see the module docstring).
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    listeners: list[tuple[int, int | None]] = []
    for family, table in zip((socket.AF_INET, socket.AF_INET6), TCP_TABLES):
        try:
            listeners += [(depth, limit) for lport, depth, limit in _diag_listeners(family) if lport == port]
        except OSError:  # no sock_diag for this family (module missing, no IPv6...)
            listeners += [(depth, None) for depth in _proc_listeners(table, port)]
    if not listeners:
        return None
    depth = sum(d for d, _ in listeners)
    limits = [limit for _, limit in listeners if limit is not None]
    return depth, None if len(limits) < len(listeners) else sum(limits)


# --- sock_diag netlink (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h)
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN_STATE = 10
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48 bytes, zero = any)
_REQ_V2 = struct.Struct("=BBBBI48x")
# inet_diag_msg: family, state, timer, retrans, sockid(sport be16, dport, src[16], dst[16], if, cookie[8]),
# expires, rqueue, wqueue, uid, inode
_DIAG_MSG = struct.Struct("=BBBBH2x16x16xI8xIIIII")
# Why 64 KiB: the kernel fills dump messages up to 32 KiB; a larger receive
# buffer would cross glibc's mmap threshold and cost an mmap per call.
_NETLINK_RECV = 65536
# Why 1 s: the kernel answers a dump at once; this only guards against a hang.
_NETLINK_TIMEOUT_S = 1.0


def _diag_listeners(family: int) -> list[tuple[int, int, int]]:
    """(local port, accept-queue depth, backlog) of every TCP listener of one address family."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(_NETLINK_TIMEOUT_S)
        request = _REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN_STATE)
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
        nl.sendto(header + request, (0, 0))
        found: list[tuple[int, int, int]] = []
        while True:
            data = nl.recv(_NETLINK_RECV)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind = _NLMSGHDR.unpack_from(data, offset)[:2]
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
                    raise OSError(code, f"sock_diag: {os.strerror(code)}")
                if kind == _SOCK_DIAG_BY_FAMILY:
                    msg = _DIAG_MSG.unpack_from(data, offset + _NLMSGHDR.size)
                    sport = socket.ntohs(msg[4])
                    found.append((sport, msg[7], msg[8]))
                if length < _NLMSGHDR.size:
                    raise OSError("sock_diag: malformed netlink message")
                offset += (length + 3) & ~3  # NLMSG_ALIGN


def _proc_listeners(table: str, port: int) -> Iterator[int]:
    """Yield rx_queue (accept-queue depth) of LISTEN sockets on ``port`` in one /proc table."""
    try:
        handle = open(table, "rb")
    except OSError:
        return
    with handle:
        handle.readline()  # header
        for line in handle:
            fields = line.split()
            if len(fields) < 5:
                continue
            state = fields[3].decode()
            if state != _TCP_LISTEN:
                if state == _TCP_SYN_RECV:
                    continue
                return  # listeners come first: the rest are connections
            if int(fields[1].rsplit(b":", 1)[1], 16) == port:
                yield int(fields[4].split(b":")[1], 16)


# --------------------------------------------------------------------------
# A network namespace per run

_CLONE_NEWNET = 0x40000000  # linux/sched.h
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1  # linux/sockios.h, linux/if.h
_IFREQ = struct.Struct("16sh22x")  # struct ifreq: name, then ifr_flags in a 24-byte union


@dataclass(frozen=True)
class RunNamespace:
    """What :func:`run_namespace` gave: ``own`` True inside a fresh namespace, else why not."""

    own: bool
    why_not: str = ""

    @property
    def scope(self) -> str:
        """The runs.csv ``netns`` cell: 'own' or 'shared'."""
        return "own" if self.own else "shared"


@contextlib.contextmanager
def run_namespace() -> Iterator[RunNamespace]:
    """Move the calling thread into a new network namespace with loopback up; move it back at the end.

    Linux keeps namespaces per thread: every process the calling thread
    starts inside the ``with`` block (server, load workers) and every thread
    it creates there (the server monitor) inherits the new namespace; other
    threads are untouched. The host's listen-queue and port-range sysctls are
    copied in, so a run behaves as it would outside. Nothing is named or
    mounted: the namespace lives as long as a process in it, and disappears
    when the run's processes are reaped.

    Without root (or where unshare is refused) it yields ``own=False`` with
    the reason and changes nothing: counters are then namespace-wide.

    Error handling: failing to return to the original namespace raises
    RuntimeError (the thread would otherwise run the next run in a dead one).
    Resource handling: the fd of the original namespace is closed on every path.
    """
    if os.geteuid() != 0:
        yield RunNamespace(False, "not root: unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN")
        return
    libc = ctypes.CDLL(None, use_errno=True)
    host_values = {path: _read_sysctl_text(path) for path in _COPIED_SYSCTLS}
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            yield RunNamespace(False, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
            return
        try:
            _loopback_up()
            for path, value in host_values.items():
                if value is not None:
                    with contextlib.suppress(OSError):
                        Path(path).write_text(value)
            yield RunNamespace(True)
        finally:
            if libc.setns(original, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise RuntimeError(f"could not return to the original network namespace: {os.strerror(err)}")
    finally:
        os.close(original)


def counter_scope() -> tuple[str, str]:
    """('own', note) if runs here get a namespace of their own (tried once), else ('shared', note + why)."""
    with run_namespace() as ns:
        pass
    if ns.own:
        return "own", OWN_NAMESPACE_NOTE
    return "shared", f"{NAMESPACE_NOTE} ({ns.why_not})"


def _loopback_up() -> None:
    """Set IFF_UP on ``lo`` of the calling thread's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = _IFREQ.unpack(fcntl.ioctl(sock, _SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def _read_sysctl_text(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None
