"""On a node: notice that the replicated copy changed, then tell plugins and run ``on_change``.

The node watches its own copy of every sync set (whatever the transport, the
files land in its filesystem), skipping rsync's in-flight names (``.~tmp~``
of ``--delay-updates`` and ``.name.XXXXXX`` temp files). Changes are gathered
until ``quiet`` seconds pass without one (or ``max_wait``), then
``clusterkit_applied(runtime, sync_set, paths)`` is called and the set's
``on_change`` command runs (``CLUSTERKIT_SYNC_SET`` and ``CLUSTERKIT_SYNC_PATHS``
in its environment). A failing command is logged; it never stops the node.
The node's watch proves itself as the manager's does (:mod:`clusterkit.sync.watchcheck`);
a failing one is reported, since without it ``on_change`` would not run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re

from clusterkit.sync.replicator import Settings
from clusterkit.sync.watchcheck import Watching
from clusterkit.sync.watcher import Change

log = logging.getLogger("clusterkit.sync.node")

RSYNC_TEMP = re.compile(r"(^|/)(\.~tmp~(/|$)|\.[^/]+\.[A-Za-z0-9]{6}$)")


def in_flight(rel: str) -> bool:
    """Whether ``rel`` is one of rsync's temporary names (not yet a landed file)."""
    return bool(RSYNC_TEMP.search(rel))


class Applier:
    """One per node Runtime, kept in ``runtime.components["sync"]``."""

    def __init__(self, runtime, quiet: float = 0.1, max_wait: float = 1.0):
        self.runtime = runtime
        self.quiet = quiet
        self.max_wait = max_wait
        self.sets: dict = {}
        self.watching: Watching | None = None
        self.changes: dict[str, set[str]] = {}
        self.unknown: set[str] = set()  # sets whose change list was lost (overflow)
        self.applied = 0
        self.command_failures = 0
        self._wake = asyncio.Event()
        self._last = 0.0

    async def start(self) -> None:
        self._watch(self.runtime.cluster.sets_for(self.runtime.host))
        self.runtime.spawn(self._flusher(), "sync-apply")

    def _watch(self, sync_sets) -> None:
        self.sets = {s.name: s for s in sync_sets}
        self.watching = Watching(self.runtime, sync_sets, self.changed, self.overflowed,
                                 Settings.from_options(self.runtime.host.options),
                                 ignore=in_flight)

    async def reload(self, old, new) -> None:
        if old.sync_sets != new.sync_sets:
            await self.stop()
            self._watch(new.sets_for(new.host(self.runtime.host.name)))
            # A set new here: the manager's full sync of it may have landed before this
            # node ran the definition that names it, so it is applied once as a full sync.
            before = {s.name: s.path for s in old.sync_sets}
            for sset in self.sets.values():
                if before.get(sset.name) != sset.path:
                    self.overflowed(sset.name)

    async def stop(self) -> None:
        if self.watching is not None:
            await self.watching.stop()

    def changed(self, changes: list[Change]) -> None:
        for sset, rel, *_ in changes:
            self.changes.setdefault(sset, set()).add(rel)
        self._poke()

    def overflowed(self, sset: str) -> None:
        self.unknown.add(sset)
        self._poke()

    def _poke(self) -> None:
        self._last = asyncio.get_running_loop().time()
        self._wake.set()

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            deadline = loop.time() + self.max_wait
            while loop.time() < min(self._last + self.quiet, deadline):
                await asyncio.sleep(min(self._last + self.quiet, deadline) - loop.time())
            self._wake.clear()
            changes, self.changes = self.changes, {}
            unknown, self.unknown = self.unknown, set()
            for name in sorted(set(changes) | unknown):
                sset = self.sets.get(name)
                if sset is not None:
                    paths = [] if name in unknown else sorted(
                        self.runtime.local_path(os.path.join(sset.path, p)) for p in changes[name])
                    await self.apply(sset, paths)

    async def apply(self, sset, paths: list[str]) -> None:
        self.applied += 1
        await self.runtime.announce("clusterkit_applied", sync_set=sset, paths=paths)
        if sset.on_change:
            await self._run(sset, paths)

    async def _run(self, sset, paths: list[str]) -> None:
        env = {**os.environ, "CLUSTERKIT_SYNC_SET": sset.name,
               "CLUSTERKIT_SYNC_PATHS": "\n".join(paths)[:100_000]}
        try:
            proc = await asyncio.create_subprocess_shell(
                sset.on_change, env=env, cwd=self.runtime.local_path(sset.path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 300)
        except (OSError, asyncio.TimeoutError) as exc:
            self.command_failures += 1
            log.error("on_change of sync set %s failed: %s", sset.name, exc)
            return
        if proc.returncode != 0:
            self.command_failures += 1
            log.error("on_change of sync set %s (%s) exited %d: %s", sset.name, sset.on_change,
                      proc.returncode, out.decode(errors="replace").strip()[-500:])

    def status(self) -> dict:
        return {"sets": sorted(self.sets), "batches_applied": self.applied,
                "on_change_failures": self.command_failures,
                "watch": self.watching.guard.report() if self.watching else {}}
