"""The watcher proves itself: a set whose watch delivers no events is found within seconds.

A watcher can die or go deaf without an error: its thread stops, its root is
replaced under it, a dependency changes its internals (watchdog 7.1.1 did, and
replication silently waited for the hourly full sync). So each set's watch is
*proved*, not trusted:

- at start, and whenever a set has been quiet for ``quiet`` seconds, a probe
  file is written at its root and its event must arrive within ``timeout``;
- a watch thread that stopped makes every set deaf at once;
- the kernel's own list of this process's inotify watches
  (``/proc/self/fdinfo``) is compared with the set's directories every
  ``audit_interval``: a directory nobody watches (``fs.inotify.max_user_watches``
  reached) makes the set ``partial``.

A set that is deaf or partial is logged once as an ERROR, shown in ``status``
and ``/metrics``, and ``cover(set)`` is called every scan interval (the owner
scans it: a full sync on the manager) until a probe and the audit pass again.
After two failed probes in a row the set's watch is added anew (a replaced
root, a watch the kernel dropped); a stopped thread is restarted at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from clusterkit.sync.watcher import Watcher

log = logging.getLogger("clusterkit.sync.watcher")

REWATCH_AFTER = 2  # failed probes in a row before the watch is added anew


@dataclass
class SetWatch:
    """What is known of one set's watch; ``state`` is unproven, ok, deaf or partial."""

    state: str = "unproven"
    reason: str = ""
    since: float = field(default_factory=time.time)
    failures: int = 0          # times it went deaf or partial
    failed_probes: int = 0     # in a row, while deaf
    unwatched: tuple[str, ...] = ()
    next_cover: float = 0.0    # monotonic time of the next scan while deaf or partial
    next_audit: float = 0.0

    def report(self, watcher: Watcher, name: str) -> dict:
        last = watcher.last_event.get(name)
        return {"state": self.state, "reason": self.reason, "since": round(self.since, 3),
                "failures": self.failures, "events": watcher.events[name],
                "quiet_for": round(time.monotonic() - last, 1) if last else None,
                "unwatched": list(self.unwatched)}


class WatchGuard:
    """Probes, audits and covers the sets of one :class:`Watcher` (one task per host)."""

    def __init__(self, watcher: Watcher, *, cover: Callable[[str], None] | None = None,
                 cover_interval: Callable[[str], float] = lambda name: 5.0,
                 quiet: float = 30.0, timeout: float = 2.0, audit_interval: float = 300.0):
        self.watcher = watcher
        self.cover = cover
        self.cover_interval = cover_interval
        self.quiet = quiet
        self.timeout = timeout
        self.audit_interval = audit_interval
        first_audit = time.monotonic() + 10.0  # watchdog adds a tree's watches on its own thread
        self.sets: dict[str, SetWatch] = {name: SetWatch(next_audit=first_audit)
                                          for name in watcher.roots}
        self._probed: dict[str, float] = {}

    def report(self) -> dict:
        return {name: s.report(self.watcher, name) for name, s in self.sets.items()}

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a bug here must not end the checks for good
                log.exception("checking the file watcher failed")
            await asyncio.sleep(min(1.0, self.quiet / 2, self.timeout))

    async def check(self) -> None:
        """One round: restart a stopped thread, probe what is due, audit, cover the failing."""
        now = time.monotonic()
        if not self.watcher.alive():
            for name in self.sets:
                self._fail(name, "deaf", "the file watch thread stopped")
            log.warning("restarting the file watch thread")
            self.watcher.restart()
        due = [name for name, s in self.sets.items() if self._probe_due(name, s, now)]
        results = await asyncio.gather(*(self.watcher.probe(name, self.timeout) for name in due))
        for name, (state, reason) in zip(due, results):
            self._probed[name] = time.monotonic()
            self._probe_result(name, state, reason)
        for name, s in self.sets.items():
            if s.state not in ("deaf", "partial") and now >= s.next_audit:
                s.next_audit = now + self.audit_interval
                missing = await asyncio.to_thread(unwatched_dirs, self.watcher.roots[name])
                if missing:
                    s.unwatched = tuple(missing[:20])
                    self._fail(name, "partial", f"{len(missing)} directories have no inotify "
                                                f"watch (fs.inotify.max_user_watches?)")
            if s.state in ("deaf", "partial") and time.monotonic() >= s.next_cover:
                s.next_cover = time.monotonic() + self.cover_interval(name)
                if self.cover is not None:
                    self.cover(name)

    def _probe_due(self, name: str, s: SetWatch, now: float) -> bool:
        last = max(self.watcher.last_event.get(name, 0.0), self._probed.get(name, 0.0))
        if s.state == "unproven" and name not in self._probed:
            return True
        if s.state in ("deaf", "partial"):
            return now >= s.next_cover
        return now - last >= self.quiet

    def _probe_result(self, name: str, state: str, reason: str) -> None:
        s = self.sets[name]
        if state == "ok":
            if s.state == "partial":
                missing = unwatched_dirs(self.watcher.roots[name])
                if missing:
                    s.unwatched = tuple(missing[:20])
                    return
            if s.state in ("deaf", "partial"):
                log.warning("sync set %s: the file watcher delivers events again (it failed %s ago: "
                            "%s)", name, _age(time.time() - s.since), s.reason)
            s.state, s.reason, s.since, s.failed_probes, s.unwatched = "ok", "", time.time(), 0, ()
            return
        if state == "unproven":
            if s.reason != reason:
                log.warning("sync set %s: %s; the watch cannot be proved", name, reason)
            s.state, s.reason = "unproven", reason
            return
        self._fail(name, "deaf", reason)
        s.failed_probes += 1
        if s.failed_probes % REWATCH_AFTER == 0:
            log.warning("sync set %s: adding its file watch anew", name)
            try:
                self.watcher.rewatch(name)
            except OSError as exc:
                log.error("sync set %s: cannot watch %s again: %s", name, self.watcher.roots[name], exc)

    def _fail(self, name: str, state: str, reason: str) -> None:
        s = self.sets[name]
        if s.state == state:
            return
        s.state, s.reason, s.since = state, reason, time.time()
        s.failures += 1
        s.next_cover = 0.0
        if self.cover is not None:
            log.error("sync set %s: the file watcher is failing (%s); the set is scanned every %.0fs "
                      "until it works again", name, reason, self.cover_interval(name))
        else:
            log.error("sync set %s: the file watcher is failing (%s)", name, reason)


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}min"


def watched_inodes() -> set[tuple[int, int]]:
    """``(st_dev, st_ino)`` of every inotify watch of this process, from the kernel's fdinfo."""
    found: set[tuple[int, int]] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.startswith("inotify "):
                continue
            fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
            try:
                kdev, ino = int(fields["sdev"], 16), int(fields["ino"], 16)
            except (KeyError, ValueError):
                continue
            found.add((os.makedev(kdev >> 20, kdev & 0xFFFFF), ino))  # the kernel's dev_t layout
    return found


def unwatched_dirs(root: str, settle: float = 1.0) -> list[str]:
    """Directories below ``root`` (relative paths) that no inotify watch of this process covers.

    A directory younger than ``settle`` seconds is skipped: its watch may be on its way.
    """
    watched = watched_inodes()
    if not watched:
        return []
    missing: list[str] = []
    young = time.time() - settle
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in watched and st.st_ctime < young:
            missing.append(os.path.relpath(path, root))
        try:
            with os.scandir(path) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return sorted(missing)


class Watching:
    """A host's watcher with its guard, started and stopped as one (manager and nodes alike).

    ``settings`` has the ``watch_*`` tunables (:class:`clusterkit.sync.Settings`);
    ``cover`` and ``cover_interval`` as for :class:`WatchGuard`.
    """

    def __init__(self, runtime, sync_sets, deliver, lost, settings, *,
                 ignore: Callable[[str], bool] = lambda rel: False, **cover):
        self.watcher = Watcher(asyncio.get_running_loop(), deliver, lost, ignore=ignore)
        for s in sync_sets:
            self.watcher.watch(s.name, runtime.local_path(s.path))
        self.watcher.start()
        self.guard = WatchGuard(self.watcher, quiet=settings.watch_quiet,
                                timeout=settings.watch_timeout,
                                audit_interval=settings.watch_audit, **cover)
        self._task = runtime.spawn(self.guard.run(), "sync-watchcheck")

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.watcher.stop)

    def status(self) -> dict:
        return {"events": sum(self.watcher.events.values()), "watch": self.guard.report()}
