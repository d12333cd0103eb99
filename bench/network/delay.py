"""The delay stage: a per-packet store-and-forward hop that holds each frame for a set time.

This kernel has no ``netem`` qdisc (``tc qdisc add ... netem`` answers
"Specified qdisc kind is unknown"; there is no module to load), so delay
and jitter are added by a process of the project's own. It runs in the hop
namespace between the client and the server hosts, where the two veth ends
``to-cli`` and ``to-srv`` carry no addresses and are not bridged: the stage
is the only path between them. It reads every Ethernet frame that arrives on
one end with an ``AF_PACKET`` socket, keeps it in a queue with the time it
may leave, and writes it, unchanged, out of the other end at that time.

Why per packet and not a proxy
------------------------------
A proxy that accepts the client's TCP connection and opens its own to the
server would hold each *chunk* for the delay, but it terminates TCP: the
handshake, the windows, slow start, the listen queue and every retransmit
would be the proxy's, not the server's. Holding frames keeps TCP end to end:
the client's SYN reaches the server's listen queue one half-RTT later, a full
window stalls as it would on a long link, and ARP passes through like any
other frame.

What it is, honestly
--------------------
* Frames are read with ``PACKET_VNET_HDR``: the kernel hands over its
  segmentation-offload header with each frame, so a TCP segment of up to
  64 KiB (GSO) travels as one unit and the checksum is completed by the
  kernel on the far side. A burst of up to 64 KiB therefore leaves together,
  as it would from a NIC doing TSO; the rate limit (tbf on the hosts' own
  links, before the stage) splits them into wire-size packets.
* Order is kept per direction: with jitter, a frame never leaves before the
  one ahead of it (a reordering link would be a different experiment), so
  jitter only ever lengthens a frame's delay relative to its predecessor's.
* The stage is Python: each frame costs some microseconds of CPU, taken from
  the same two cores as the server and the load. Its own added latency and
  its throughput ceiling are measured by ``benchmarks/network_stage.py``;
  on these 2-CPU machines, shared and busy (load average 10-13): one-byte
  TCP round trip 26-29 us over the bridge, 55-74 us through the stage at
  0 ms (min 46-53 us), and 10.3-10.5 ms (min) at a 10 ms setting; one TCP
  stream 1.2-2.1 Gbit/s through the stage against 2.5-2.9 over the bridge.
  Later, at load average 17-21: fastest round trip 22-23 us through the
  stage against 7.7-8.3 us over the bridge; 32 closed-loop echo clients
  15-28k round trips/s through it against 42-65k; 4-6 us of CPU per frame
  at 0 ms and 20-24 us at 10 ms (a frame per wake-up), 30-49 us in the
  ``littles-law`` runs: ~20-33k frames/s per core, where 1000 echo
  requests/s need ~3k (about three frames each). That is why the stage is
  not written in C: at the lessons' rates it is not what limits them.
* Loss is not offered: a dropped 64 KiB GSO unit would be dozens of wire
  segments lost at once, which is not the loss rate anyone would configure.
* At most :data:`MAX_HELD_BYTES` are held; a frame beyond that is dropped
  and counted (a link's buffer overflowing), and the count is reported.

Error handling
--------------
It prints one JSON line ``{"ready": true}`` once both sockets are bound, and
one JSON line with its counters when SIGTERM stops it. A send that fails
(``ENOBUFS``) drops and counts the frame. PR_SET_PDEATHSIG makes the kernel
kill it when the process that started it dies, even by SIGKILL.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003  # linux/if_ether.h: every protocol
SOL_PACKET = 263  # linux/socket.h
PACKET_VNET_HDR = 15  # linux/if_packet.h
PACKET_IGNORE_OUTGOING = 23  # linux/if_packet.h: do not see our own sends back
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PR_SET_TIMERSLACK = 29  # linux/prctl.h

#: Largest frame read: a 64 KiB GSO segment plus the 10-byte offload header
#: and the Ethernet header, rounded up.
FRAME_BYTES = 65536 + 256

#: Bytes held per direction before frames are dropped: 64 MiB is 5 s at
#: 100 Mbit/s, far beyond any window TCP opens over these links.
MAX_HELD_BYTES = 64 << 20

#: Frames read from one socket before the queues are served again, so a busy
#: direction cannot starve the other or delay releases by more than a batch.
BATCH = 64


def _setup_process(parent: int) -> None:
    """Die with ``parent`` (if given) and wake on time."""
    libc = ctypes.CDLL(None, use_errno=True)
    # 1 ns instead of the default 50 us: the kernel may otherwise wake the
    # stage up to 50 us after a frame's release time, in each direction.
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    if parent:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


def _open(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)  # 8 MiB: a burst waits in the kernel
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


class Direction:
    """One way through the stage: frames read from ``src``, held, written to ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay_s: float, jitter_s: float, rng: random.Random):
        self.src, self.dst = src, dst
        self.delay_s, self.jitter_s, self.rng = delay_s, jitter_s, rng
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.held = 0
        self.last_release = 0.0
        self.forwarded = self.dropped = self.bytes = self.max_held = 0

    def read(self, now: float) -> None:
        for _ in range(BATCH):
            try:
                frame = self.src.recv(FRAME_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            if self.held + len(frame) > MAX_HELD_BYTES:
                self.dropped += 1
                continue
            release = now + self.delay_s
            if self.jitter_s:
                release += self.rng.uniform(0.0, self.jitter_s)
            release = max(release, self.last_release)  # never reorder
            self.last_release = release
            self.queue.append((release, frame))
            self.held += len(frame)
            self.max_held = max(self.max_held, self.held)

    def release(self, now: float) -> None:
        queue = self.queue
        while queue and queue[0][0] <= now:
            _, frame = queue.popleft()
            self.held -= len(frame)
            try:
                self.dst.send(frame)
            except BlockingIOError:
                queue.appendleft((now, frame))  # the device queue is full: retry on the next pass
                self.held += len(frame)
                return
            except OSError:
                self.dropped += 1
                continue
            self.forwarded += 1
            self.bytes += len(frame)

    def next_release(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def counters(self) -> dict[str, int]:
        return {"forwarded": self.forwarded, "dropped": self.dropped, "bytes": self.bytes, "max_held": self.max_held}


class _Stop(Exception):
    pass


def serve(a: str, b: str, a_to_b_s: float, b_to_a_s: float, jitter_s: float, seed: int) -> dict:
    """Forward between interfaces ``a`` and ``b`` until SIGTERM; return the counters."""

    def stop(_signum, _frame):
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rng = random.Random(seed)
    sock_a, sock_b = _open(a), _open(b)
    ways = {
        sock_a.fileno(): Direction(sock_a, sock_b, a_to_b_s, jitter_s, rng),
        sock_b.fileno(): Direction(sock_b, sock_a, b_to_a_s, jitter_s, rng),
    }
    print(json.dumps({"ready": True}), flush=True)
    fds = list(ways)
    try:
        while True:
            now = time.monotonic()
            for way in ways.values():
                way.release(now)
            due = [t for t in (w.next_release() for w in ways.values()) if t is not None]
            # select(), not epoll: its timeout has microsecond resolution where
            # epoll_wait's is whole milliseconds, which would add up to 1 ms per frame.
            timeout = max(0.0, min(due) - time.monotonic()) if due else 1.0
            readable, _, _ = select.select(fds, [], [], timeout)
            now = time.monotonic()
            for fd in readable:
                ways[fd].read(now)
    except _Stop:
        pass
    finally:
        sock_a.close()
        sock_b.close()
    return {"a_to_b": ways[fds[0]].counters(), "b_to_a": ways[fds[1]].counters()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.network.delay", description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="interface of one side")
    parser.add_argument("--b", required=True, help="interface of the other side")
    parser.add_argument("--a-to-b-us", type=int, default=0, help="delay of frames from a to b, microseconds")
    parser.add_argument("--b-to-a-us", type=int, default=0, help="delay of frames from b to a, microseconds")
    parser.add_argument("--jitter-us", type=int, default=0, help="extra delay drawn uniformly from 0..jitter")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter draws")
    parser.add_argument("--parent", type=int, default=0, help="pid whose death ends the stage")
    args = parser.parse_args(argv)
    _setup_process(args.parent)
    counters = serve(args.a, args.b, args.a_to_b_us / 1e6, args.b_to_a_us / 1e6, args.jitter_us / 1e6, args.seed)
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
