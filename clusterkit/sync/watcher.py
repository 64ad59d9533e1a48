"""Watch the sync sets with watchdog's public API, narrowed to writes, creates, deletes and moves.

- ``event_filter`` narrows the kernel's watch mask (watchdog derives the mask
  from the filter): reads and opens never wake us, and a file is sent when its
  writer closes it (``IN_CLOSE_WRITE``). Permission changes (``IN_ATTRIB``)
  must travel too, and watchdog asks for them only together with ``IN_MODIFY``
  (``FileModifiedEvent``): those modify events are dropped on arrival. The
  kernel folds repeated ones while we are busy; measured, a 1.6 GB file written
  in 8 KiB blocks cost ~1,100 events and ~1 s of CPU.
- A kernel queue overflow reaches us as watchdog's ``EventsLostEvent`` and
  becomes a full sync of the set.
- A directory that appears is sent whole: watchdog watches it and reports its
  content, but files written before its watch existed are only caught that way.
- A file named :data:`PROBE_PREFIX`... at a set's root is a probe written by
  :mod:`clusterkit.sync.watchcheck` to prove the watch delivers events; it is
  never delivered as a change and never replicated.

Handlers run on watchdog's observer thread: they only append to a list and
wake the asyncio loop once per drain; nothing slow ever runs there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
from collections import Counter
from typing import Callable

from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent, EventsLostEvent,
                             FileAttribEvent, FileClosedEvent, FileCreatedEvent, FileDeletedEvent,
                             FileModifiedEvent, FileMovedEvent, FileSystemEvent,
                             FileSystemEventHandler, FileSystemMovedEvent)
from watchdog.observers import Observer

log = logging.getLogger("clusterkit.sync.watcher")
logging.getLogger("watchdog").setLevel(logging.INFO)  # its per-event debug lines drown ours

EVENT_FILTER = [FileCreatedEvent, DirCreatedEvent, FileClosedEvent, FileDeletedEvent,
                DirDeletedEvent, FileMovedEvent, DirMovedEvent, EventsLostEvent,
                FileAttribEvent, FileModifiedEvent]  # the last: IN_ATTRIB comes only with it
PROBE_PREFIX = ".clusterkit-probe."
PROBE_EXCLUDE = f"/{PROBE_PREFIX}*"  # for rsync: probes at a set's root are never sent

# A change as the replicator sees it: (set name, path relative to the set, is a whole directory,
# for the source side of a rename within the set: the destination, else None). Paths are str
# decoded with os.fsdecode (surrogateescape): any name the kernel allows round-trips to bytes.
Change = tuple[str, str, bool, str | None]

_probe_numbers = itertools.count(1)


def is_probe(rel: str) -> bool:
    return rel.startswith(PROBE_PREFIX) and "/" not in rel


class Watcher:
    """One observer thread for all sets of one host; changes go to ``deliver`` on the loop.

    ``deliver(changes)`` gets a list of :data:`Change`; ``lost(set)`` is called
    on the loop when the kernel dropped events of a set (queue overflow).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[Change]], None],
                 lost: Callable[[str], None], ignore: Callable[[str], bool] = lambda name: False):
        self.loop = loop
        self.deliver = deliver
        self.lost = lost
        self.ignore = ignore
        self.roots: dict[str, str] = {}  # set name -> absolute root
        self.events: Counter = Counter()  # set name -> events seen (probes included)
        self.last_event: dict[str, float] = {}  # set name -> time.monotonic() of the last event
        self._watches: dict = {}  # set name -> watchdog's ObservedWatch
        self._probes: dict[str, tuple[str, asyncio.Future]] = {}
        self._arrived: set[str] = set()  # probes the observer thread saw (a busy loop is not deafness)
        self._lock = threading.Lock()
        self._batch: list[Change] = []
        self._scheduled = False
        self.observer = Observer()

    def watch(self, name: str, root: str) -> None:
        """Start watching the set ``name`` at ``root`` (created if missing)."""
        os.makedirs(root, exist_ok=True)
        with os.scandir(root) as entries:  # probes a killed daemon left (never sent, still litter)
            for entry in entries:
                if is_probe(entry.name) and not entry.name.startswith(f"{PROBE_PREFIX}{os.getpid()}."):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        self.roots[name] = os.path.abspath(root)
        self.last_event.setdefault(name, time.monotonic())
        self._schedule(name)

    def _schedule(self, name: str) -> None:
        root = self.roots[name]
        self._watches[name] = self.observer.schedule(_Handler(self, name, root), root,
                                                     recursive=True, event_filter=EVENT_FILTER)

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)

    def alive(self) -> bool:
        return self.observer.is_alive()

    def rewatch(self, name: str) -> None:
        """Drop and add the watch of one set again (its root was replaced, its watch lost)."""
        watch = self._watches.pop(name, None)
        if watch is not None:
            try:
                self.observer.unschedule(watch)
            except KeyError:
                pass
        self._schedule(name)

    def restart(self) -> None:
        """A new observer thread for every set, when the old one has stopped."""
        try:
            self.stop()
        except RuntimeError:
            pass
        self.observer = Observer()
        self._watches.clear()
        for name in self.roots:
            self._schedule(name)
        self.start()

    async def probe(self, name: str, timeout: float) -> tuple[str, str]:
        """Write and remove a probe file at the set's root: ``("ok", "")`` when its event
        arrives within ``timeout``, ``("deaf", why)`` when not, ``("unproven", why)`` when
        no probe can be written there."""
        probe = f"{PROBE_PREFIX}{os.getpid()}.{next(_probe_numbers)}"
        path = os.path.join(self.roots[name], probe)
        seen = self.loop.create_future()
        self._probes[name] = (probe, seen)
        try:
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            except OSError as exc:
                return "unproven", f"cannot write a probe file in {self.roots[name]}: {exc.strerror}"
            try:
                await asyncio.wait_for(seen, timeout)
            except asyncio.TimeoutError:
                with self._lock:
                    if probe not in self._arrived:  # not merely late on a loop that was busy
                        return "deaf", f"no event for a probe file within {timeout:g}s"
            return "ok", ""
        finally:
            self._probes.pop(name, None)
            with self._lock:
                self._arrived.discard(probe)
            try:
                os.unlink(path)
            except OSError:
                pass

    # ------------------------------------------------ observer thread side

    def push(self, changes: list[Change]) -> None:
        with self._lock:
            self._batch.extend(changes)
            if self._scheduled:
                return
            self._scheduled = True
        self._call(self._drain)

    def seen(self, name: str) -> None:
        self.events[name] += 1
        self.last_event[name] = time.monotonic()

    def probed(self, name: str, probe: str) -> None:
        with self._lock:
            self._arrived.add(probe)
        self._call(self._probe_arrived, name, probe)

    def _probe_arrived(self, name: str, probe: str) -> None:
        waiting = self._probes.get(name)
        if waiting is not None and waiting[0] == probe and not waiting[1].done():
            waiting[1].set_result(None)

    def _drain(self) -> None:
        with self._lock:
            batch, self._batch, self._scheduled = self._batch, [], False
        if batch:
            self.deliver(batch)

    def _call(self, fn: Callable, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: we are stopping
            pass


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into :data:`Change` tuples (paths relative to the set root)."""

    def __init__(self, watcher: Watcher, name: str, root: str):
        self.watcher = watcher
        self.name = name
        self.root = root
        self.prefix = root.rstrip("/") + "/"

    def _rel(self, path: str) -> str | None:
        if path == self.root:
            return ""
        if not path.startswith(self.prefix):
            return None
        rel = path[len(self.prefix):]
        return None if self.watcher.ignore(rel) else rel

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # an exception here would end watchdog's thread: every set deaf
            log.exception("sync set %s: handling the file event %r failed", self.name, event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        watcher = self.watcher
        watcher.seen(self.name)
        if isinstance(event, EventsLostEvent):
            watcher._call(watcher.lost, self.name)
            return
        if event.is_synthetic or type(event) is FileModifiedEvent:
            return  # watchdog's walk of a directory sent whole anyway; a write not yet closed
        out = []
        rel = self._rel(event.src_path)
        if rel is not None and is_probe(rel):
            watcher.probed(self.name, rel)
            return
        if isinstance(event, FileSystemMovedEvent):
            dest = self._rel(event.dest_path)
            if rel is not None:
                out.append((self.name, rel, event.is_directory, dest))
            if dest is not None:
                out.append((self.name, dest, event.is_directory, None))
        elif rel is not None:
            out.append((self.name, rel, event.is_directory, None))
        if out:
            watcher.push(out)
