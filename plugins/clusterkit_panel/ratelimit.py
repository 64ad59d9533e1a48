"""Failed-attempt limits per client address (logins, joins), counted before the check.

An attempt is *reserved* (counted as a failure) before the expensive check
runs and released only when the check succeeds. Reserving is one
synchronous step in the event loop (no ``await`` between "is there room?"
and "take it"), so parallel requests cannot all pass the test before any of
them is counted: at most ``attempts`` checks run per address per window,
every other request gets ``429`` at once without running scrypt. There is
no separate "record a failure" call to forget: ``reserve`` first, then
``succeeded()`` on the :class:`Attempt` when the check passes.
"""

from __future__ import annotations

import collections
import time

MAX_ADDRESSES = 10000  # bounded memory under a spray of source addresses


class RateLimited(Exception):
    """Too many failed attempts from one address: ``wait`` seconds until the next may run."""

    def __init__(self, wait: float):
        super().__init__(f"retry in {wait:.0f}s")
        self.wait = wait


class Attempt:
    """One reserved attempt: counts as a failure unless :meth:`succeeded` is called."""

    def __init__(self, failures: collections.deque, stamp: float):
        self._failures, self._stamp = failures, stamp

    def succeeded(self) -> None:
        try:
            self._failures.remove(self._stamp)
        except ValueError:
            pass  # already slid out of the window


class AttemptLimiter:
    """At most ``attempts`` failed-or-running checks per address in ``window`` seconds."""

    def __init__(self, attempts: int, window: float):
        self.attempts, self.window = attempts, window
        self._failures: dict[str, collections.deque] = {}

    def configure(self, attempts: int, window: float) -> None:
        self.attempts, self.window = attempts, window

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        failures = self._failures.get(address)
        if not failures:
            return 0.0
        now = time.monotonic()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.attempts:
            return 0.0
        return max(1.0, failures[0] + self.window - now)

    def reserve(self, address: str) -> Attempt:
        """Count one attempt now, or raise :class:`RateLimited` (nothing is counted then)."""
        wait = self.wait(address)
        if wait:
            raise RateLimited(wait)
        failures = self._failures.pop(address, None) or collections.deque()
        self._failures[address] = failures  # most recent last: the oldest address goes first
        stamp = time.monotonic()
        failures.append(stamp)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.pop(next(iter(self._failures)))
        return Attempt(failures, stamp)
