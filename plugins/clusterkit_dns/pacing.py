"""Loading a big zone in a thread without starving the event loop.

Zones are parsed in a worker thread, but the threads of one
Python process share the interpreter lock. While the loader runs, the event
loop's thread gets the lock only when the loader is made to switch (every
5 ms), and gives it up again at each socket call: during a 100,000-record
load the server answered about 100 queries a second, and the balancer in
the same daemon stalled the same way (measured). So the loader rests: after
each :data:`WORK` seconds of work it sleeps :data:`REST` seconds, while the
loop has the lock to itself. A loader alone in its process (``dns serve``
before it listens) need not rest.

A loaded zone is a dict of bytes (:mod:`clusterkit_dns.compact`), which
Python's cyclic garbage collector does not track: loading creates no objects
for it to walk again and again, and nothing needs ``gc.freeze``.
"""

from __future__ import annotations

import time

WORK = 0.004   # seconds of loading between two rests
REST = 0.003   # seconds the loop has the interpreter to itself
EVERY = 128    # records (or names) between two looks at the clock


class Pacer:
    """Call once per unit of work (a record, a name); rests the thread as above."""

    __slots__ = ("count", "since", "rest")

    def __init__(self, rest: bool = True):
        self.count = 0
        self.since = time.perf_counter()
        self.rest = rest

    def __call__(self) -> None:
        self.count += 1
        if self.count % EVERY:
            return
        if self.rest and time.perf_counter() - self.since >= WORK:
            time.sleep(REST)
            self.since = time.perf_counter()


def unpaced() -> None:
    """For a loader with nothing to share the process with (``dns check``, tests)."""
