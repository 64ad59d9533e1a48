"""Tell the server when something in its zones directory changed (watchdog, inotify).

Only events that end a write are asked for: close-after-write, rename, delete
(an editor's or rsync's temp file becoming the zone is a rename). Reads and
opens are filtered out (docs/architecture.md: watchdog reports them by default).
The callback runs on watchdog's thread, so it must only schedule work on the
event loop; the server also rescans periodically, because this watch does not
ask for watchdog's ``EventsLostEvent`` (an inotify queue overflow: events lost)
and a directory it cannot watch is only logged.
"""

from __future__ import annotations

import logging
from typing import Callable

from watchdog.events import (DirDeletedEvent, DirMovedEvent, FileClosedEvent, FileDeletedEvent,
                             FileMovedEvent, FileSystemEventHandler)
from watchdog.observers import Observer

log = logging.getLogger("clusterkit.dns")

EVENTS = [FileClosedEvent, FileMovedEvent, FileDeletedEvent, DirMovedEvent, DirDeletedEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, callback: Callable[[tuple | None], None]):
        self.callback = callback

    def on_any_event(self, event) -> None:
        paths = None if event.is_directory else \
            tuple(p for p in (event.src_path, getattr(event, "dest_path", "")) if p)
        try:
            self.callback(paths)
        except RuntimeError:  # the event loop is already closed: we are shutting down
            pass


class ZoneWatcher:
    """An observer thread on one directory calling ``callback(paths)`` on every finished
    change: the file paths it touched, or None for a directory (anything may have changed)."""

    def __init__(self, directory: str, callback: Callable[[tuple | None], None]):
        self.directory = directory
        self.callback = callback
        self.observer = None

    def start(self) -> None:
        observer = Observer()
        observer.daemon = True
        try:
            observer.schedule(_Handler(self.callback), self.directory, recursive=True,
                              event_filter=EVENTS)
            observer.start()
        except OSError as exc:  # the periodic rescan still covers us
            log.warning("dns: cannot watch %s (%s); relying on the periodic rescan",
                        self.directory, exc)
            return
        self.observer = observer

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=2)
            self.observer = None
