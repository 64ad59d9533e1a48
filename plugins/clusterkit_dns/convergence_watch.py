"""The manager daemon's own convergence check: ``dns status`` every ``convergence_interval``.

:func:`clusterkit_dns.convergence.cluster_status` asks every host's DNS for
each zone's SOA (bounded in flight, never blocking the loop); this component
runs it periodically on the manager and keeps, per host, since when it has
been converged or not, so ``clusterkit status``, its summary and the alerts
can say "node2 has lagged 3 zones for 2 minutes". The manager's zone files
are parsed again only when the directory changed (a stat per file, in a
thread).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from clusterkit.contracts import Component
from clusterkit_dns.convergence import cluster_status, expected_serials
from clusterkit_dns.settings import settings_of

log = logging.getLogger("clusterkit.dns")


def describe(row: dict) -> str:
    """A host's state in a few words: ``converged``, ``lagging 3 zones``, ``not answering``."""
    if row["converged"]:
        return "converged"
    if not row["answering"]:
        return "not answering"
    parts = [f"{word} {len(row[key])} zone{'s' if len(row[key]) != 1 else ''}"
             for key, word in (("lagging", "lagging"), ("ahead", "ahead"), ("missing", "missing"),
                               ("extra", "extra"), ("errors", "unanswered"))
             if row[key]]
    return ", ".join(parts)


def _signature(zones_dir: str) -> tuple:
    """What changes when a file of the zones directory does (included files too)."""
    seen = []
    for top, dirs, files in os.walk(zones_dir):
        dirs.sort()
        for name in sorted(files):
            try:
                st = os.stat(os.path.join(top, name))
            except OSError:
                continue
            seen.append((top, name, st.st_mtime_ns, st.st_size))
    return tuple(seen)


class ConvergenceWatch(Component):
    """Runs on the manager beside its DNS server; ``status()`` is the ``dns_convergence`` section."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.hosts: dict[str, dict] = {}
        self.converged: bool | None = None
        self.since: float | None = None
        self.checked: float | None = None
        self.zones = 0
        self.error: str | None = None
        self._files: tuple | None = None
        self._expected: dict = {}

    @property
    def interval(self) -> float:
        return settings_of(self.runtime.cluster).convergence_interval

    async def start(self) -> None:
        self.task = self.runtime.spawn(self._loop(), "dns-convergence")

    async def reload(self, old, new) -> None:
        self.wake.set()  # a new interval or new hosts: check now

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:  # a watch that stops is worse than one that fails: go on
                log.exception("DNS convergence check failed")
                self.error = f"{type(exc).__name__}: {exc}"
            try:
                await asyncio.wait_for(self.wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    def _expected_serials(self) -> dict:
        """The manager's zones and serials; its files parsed only when something changed."""
        cluster = self.runtime.cluster
        files = _signature(self.runtime.local_path(settings_of(cluster).zones_dir))
        if files != self._files:
            self._expected = expected_serials(cluster)[0]  # broken files: the DNS section says
            self._files = files
        return self._expected

    async def check(self) -> None:
        expected = await asyncio.to_thread(self._expected_serials)
        report = await cluster_status(self.runtime.cluster, expected)
        now = time.time()
        hosts = {}
        for row in report["hosts"]:
            before = self.hosts.get(row["host"])
            since = before["since"] if before and before["converged"] == row["converged"] else now
            hosts[row["host"]] = {
                "converged": row["converged"], "since": round(since, 3), "state": describe(row),
                "address": row["address"], "answering": row["answering"],
                **{key: len(row[key]) for key in ("lagging", "ahead", "missing", "extra")},
                "error": row["errors"][0] if row["errors"] else None,
            }
        converged = all(h["converged"] for h in hosts.values())
        if converged != self.converged:
            self.since = now
        self.hosts, self.converged, self.checked = hosts, converged, now
        self.zones, self.error = len(expected), None

    def status(self) -> dict:
        return {
            "converged": self.converged, "since": self.since and round(self.since, 3),
            "not_converged_since": round(self.since, 3) if self.converged is False else None,
            "checked": self.checked and round(self.checked, 3), "interval": self.interval,
            "zones": self.zones, "hosts": self.hosts, "error": self.error,
        }
