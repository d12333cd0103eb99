"""``--preload-mib N``: read-mostly data built before the server forks, to show copy-on-write.

A server that loads something large at start-up (a model, a routing table,
a dictionary of settings) and then forks (``forking`` per connection,
``prefork`` and ``reuseport`` their workers) gives every child the parent's
pages *shared*: after ``fork()`` the kernel maps the same physical pages into
both and copies one only when either process writes to it. A child that
never writes to the data costs no memory for it; one that writes a byte of a
page gets a private copy of those 4 KiB. PSS (each shared page divided among
its users) and USS (the pages only this process has) show the difference,
RSS does not (it counts every mapped page in full, shared or not).

Python writes where a C program would only read. Every object starts with
its reference count, and every reference taken (a ``for`` over a list, a
lookup, passing it to a function) increments it and later decrements it: a
write into the object's header, so into its page. And the cyclic garbage
collector, in a full collection, writes its bookkeeping into the header of
every container object it tracks. :class:`Preload` builds the data in one of
two shapes and each request uses it as ``--preload-use`` says:

``read``
    one ``bytes`` object of N MiB (think of a packed table or a model's
    weights in a buffer); each request checksums its next 64 KiB
    (``zlib.crc32``). Only the bytes object's own header is written (one
    page); the data pages stay shared.
``iterate``
    N MiB of small Python objects (a list of records, each a 2-item list of
    ints); each request iterates over the next 64 KiB of them.
    Each reference taken writes a refcount: the pages are copied, 64 KiB a
    request, until the child has its own copy of all of it.
``collect``
    the same objects, which requests leave alone; each process instead runs
    one full ``gc.collect()`` at its first request, as the collector of a
    long-lived process eventually does by itself. The collection writes into
    the header of every record: the pages of all the records are copied at
    once. (The records are lists, not tuples, because the collector stops
    tracking a tuple that holds only ints at the first collection that sees
    it, and never visits it again; a list it tracks for good.)

``--preload-freeze`` calls ``gc.freeze()`` once the data is built, before any
fork: every object then tracked moves to a permanent generation the collector
never examines, so ``collect`` copies nothing. It does not stop reference
counting: ``iterate`` copies as much frozen as not. (Python 3.12 made some
objects immortal, with a refcount never written, but only the interpreter's
own: ``None``, small ints, interned strings; data a program loads is not.)

The 64 KiB of each request is a cursor that walks the data and wraps around,
per process: a child's copy grows with the requests it serves, which the
memory timeline of a run shows as USS climbing. Sizes are approximate: the
objects' count is chosen from ``sys.getsizeof`` of one item, which leaves out
the allocator's rounding (a few percent).

Resource handling: the data lives as long as the process; it is built before
listening, so no client waits for it (64 MiB take about a second here).
"""

from __future__ import annotations

import gc
import itertools
import sys
import zlib
from dataclasses import dataclass, field
from typing import Any

from servers.config import PRELOAD_USES

#: Bytes of the data each request uses: 16 pages, so a 64 MiB preload is all
#: copied after 1024 requests of one process; a request's share costs about
#: as much CPU as the echo itself (some 20 µs), not more.
REQUEST_SPAN = 64 * 1024

MIB = 1024 * 1024

#: The first int of the records: ints below 257 are shared singletons that
#: every process already has, so the data's ints start above them.
_FIRST = 1000


def _item_bytes() -> int:
    """Memory of one [int, int] record with its slot in the outer list, as sys.getsizeof counts it."""
    item = [_FIRST, _FIRST + 1]
    return sys.getsizeof(item) + sys.getsizeof(item[0]) + sys.getsizeof(item[1]) + 8


@dataclass
class Preload:
    """``mib`` MiB of data used per request as ``use`` says (see the module docstring)."""

    mib: int = 0
    use: str = "iterate"
    freeze: bool = False
    data: Any = field(default=None, repr=False)
    _cursor: itertools.count = field(default_factory=itertools.count, repr=False)
    _collected: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.use not in PRELOAD_USES:
            raise ValueError(f"preload use {self.use!r}; valid uses: {', '.join(PRELOAD_USES)}")
        if self.mib < 0:
            raise ValueError(f"preload of {self.mib} MiB: must be >= 0")
        if not self.mib:
            return
        if self.use == "read":
            block = bytes(range(256)) * (MIB // 256)  # not zeros: zero pages may never be made resident
            self.data = block * self.mib
        else:
            count = self.mib * MIB // _item_bytes()
            self.data = [[_FIRST + i, _FIRST + 2 * i] for i in range(count)]
        if self.freeze:
            gc.freeze()

    @property
    def active(self) -> bool:
        return bool(self.mib)

    def spans(self) -> int:
        """How many request spans the data holds (a request uses span ``k mod spans()``)."""
        if self.use == "read":
            return max(1, len(self.data) // REQUEST_SPAN)
        return max(1, self.mib * MIB // REQUEST_SPAN)

    def __call__(self) -> None:
        """One request's use of the data."""
        k = next(self._cursor) % self.spans()
        if self.use == "read":
            zlib.crc32(memoryview(self.data)[k * REQUEST_SPAN : (k + 1) * REQUEST_SPAN])
            return
        if self.use == "collect":
            if not self._collected:
                self._collected = True
                gc.collect()
            return
        per_span = len(self.data) // self.spans()
        for _item in self.data[k * per_span : (k + 1) * per_span]:  # the slice takes a reference to each
            pass
