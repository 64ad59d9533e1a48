"""Watch the sync sets with watchdog, narrowed to writes, creates, deletes and moves.

watchdog's inotify observer is used with three additions it does not give:

- the kernel watch mask is exactly ``IN_CREATE | IN_CLOSE_WRITE | IN_ATTRIB |
  IN_DELETE | IN_MOVE`` (reads, opens and plain ``IN_MODIFY`` of a busy
  docroot never wake us; a file is sent when its writer closes it);
- an inotify queue overflow (``IN_Q_OVERFLOW``), which watchdog only logs,
  reaches us through the watch group's ``on_queue_overflow`` and becomes a
  full sync of the set;
- a watch that cannot be added for a new directory (inotify limits), which
  watchdog swallows, is reported loudly and the directory is rescanned.

Handlers run on watchdog's observer thread: they only append to a list and
wake the asyncio loop once per drain; nothing slow ever runs there.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from typing import Callable

from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileAttribEvent,
                             FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent,
                             FileSystemEvent, FileSystemEventHandler)
from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyConstants as IN
from watchdog.observers.inotify_move_event_grouper import PathedInotifyEvent

log = logging.getLogger("clusterkit.sync.watcher")
logging.getLogger("watchdog").setLevel(logging.INFO)  # its per-event debug lines drown ours

EVENT_FILTER = [FileCreatedEvent, DirCreatedEvent, FileClosedEvent, FileAttribEvent,
                FileDeletedEvent, DirDeletedEvent, FileMovedEvent, DirMovedEvent]
MASK = (IN.IN_CREATE | IN.IN_CLOSE_WRITE | IN.IN_ATTRIB | IN.IN_DELETE | IN.IN_MOVE
        | IN.IN_DELETE_SELF)
MOVE_PAIRING_DELAY = 0.05  # watchdog holds an unpaired IN_MOVED_FROM (and all after it) 0.5 s

# A change as the replicator sees it: (set name, path relative to the set, is a whole directory,
# for the source side of a rename within the set: the destination, else None)
Change = tuple[str, str, bool, str | None]


class FreshDirEvent(DirCreatedEvent):
    """``mkdir`` in a watched directory (IN_CREATE): its content arrives as events of its own.

    watchdog adds the watch and reports what was already inside as creates, so
    the directory itself need not be sent whole, unlike one moved in.
    """


class _Group(InotifyWatchGroup):
    """A watch group that tells us about overflows and watches it could not add."""

    def __init__(self, *args, on_overflow: Callable[[], None], on_missed: Callable[[bytes, OSError], None],
                 **kwargs):
        self._on_overflow = on_overflow
        self._on_missed = on_missed
        super().__init__(*args, **kwargs)
        queue = getattr(self._move_event_grouper, "_queue", None)
        if queue is not None:
            queue.delay = MOVE_PAIRING_DELAY

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        self._on_overflow()

    def _add_callback(self, path: bytes) -> None:
        try:
            wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
        except OSError as exc:
            if path == self.path:
                raise
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # gone meanwhile: nothing to watch
                self._on_missed(path, exc)
            return
        self._active_callbacks_by_path[path] = wd
        self._active_callbacks_by_watch[wd] = path


class Watcher:
    """One observer thread for all sets of one host; changes go to ``deliver`` on the loop.

    ``deliver(changes)`` gets a list of :data:`Change`; ``overflow(set)``
    and ``missed(set, relpath)`` are called on the loop too.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[Change]], None],
                 overflow: Callable[[str], None], missed: Callable[[str, str], None],
                 ignore: Callable[[str], bool] = lambda name: False):
        self.loop = loop
        self.deliver = deliver
        self.overflow = overflow
        self.missed = missed
        self.ignore = ignore
        self.roots: dict[str, str] = {}  # set name -> absolute root
        self._lock = threading.Lock()
        self._batch: list[Change] = []
        self._scheduled = False
        self.observer = InotifyObserver()
        self.observer._emitter_class = self._emitter_class()
        self.events = 0

    def _emitter_class(self) -> type:
        watcher = self

        class Emitter(InotifyEmitter):
            def on_thread_start(self) -> None:
                name = watcher.set_of(self.watch.path)
                self._inotify = _Group(
                    self._inotify_fd, os.fsencode(self.watch.path), is_recursive=True,
                    event_mask=MASK, follow_symlink=False,
                    on_overflow=lambda: watcher._call(watcher.overflow, name),
                    on_missed=lambda path, exc: watcher._missed(name, path, exc))

            def build_and_queue_event(self, event, *, full_events: bool = False) -> None:
                if isinstance(event, PathedInotifyEvent) and event.ev.is_create and event.ev.is_directory:
                    self.queue_event(FreshDirEvent(self._decode_path(event.path)))
                    return
                super().build_and_queue_event(event, full_events=full_events)

        return Emitter

    def watch(self, name: str, root: str) -> None:
        """Start watching the set ``name`` at ``root`` (created if missing)."""
        os.makedirs(root, exist_ok=True)
        self.roots[name] = os.path.abspath(root)
        self.observer.schedule(_Handler(self, name, self.roots[name]), self.roots[name],
                               recursive=True, event_filter=EVENT_FILTER)

    def set_of(self, path: str) -> str:
        return next(n for n, r in self.roots.items() if r == os.path.abspath(path))

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)

    # ------------------------------------------------ observer thread side

    def push(self, changes: list[Change]) -> None:
        with self._lock:
            self._batch.extend(changes)
            self.events += len(changes)
            if self._scheduled:
                return
            self._scheduled = True
        self._call(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch, self._batch, self._scheduled = self._batch, [], False
        if batch:
            self.deliver(batch)

    def _missed(self, name: str, path: bytes, exc: OSError) -> None:
        rel = os.path.relpath(os.fsdecode(path), self.roots[name])
        log.error("cannot watch %s in sync set %s: %s (fs.inotify.max_user_watches?); "
                  "covering it by scans", os.fsdecode(path), name, exc)
        self._call(self.missed, name, rel)

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
        if event.is_synthetic:  # watchdog's walk of a moved/created directory: covered by the directory
            return
        out = []
        rel = self._rel(event.src_path)
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            dest = self._rel(event.dest_path)
            if rel is not None:
                out.append((self.name, rel, event.is_directory, dest))
            if dest is not None:
                out.append((self.name, dest, event.is_directory, None))
        elif rel is not None:
            whole = event.is_directory and not isinstance(event, (FileAttribEvent, FreshDirEvent))
            out.append((self.name, rel, whole, None))
        if out:
            self.watcher.push(out)
