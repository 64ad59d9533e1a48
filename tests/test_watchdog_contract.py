"""What replication relies on from watchdog, one behaviour per test, through its public API only.

When a watchdog release changes one of these, the test named for it fails,
instead of replication silently waiting for the next full sync (watchdog 7.1.1
did that to code that used its internals).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time

import pytest
from watchdog.events import (DirCreatedEvent, EventsLostEvent, FileAttribEvent, FileClosedEvent,
                             FileCreatedEvent, FileDeletedEvent, FileMovedEvent,
                             FileSystemEventHandler)
from watchdog.observers import Observer

from clusterkit.sync.watcher import EVENT_FILTER

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


class Recorder(FileSystemEventHandler):
    def __init__(self):
        self.events: queue.Queue = queue.Queue()

    def dispatch(self, event):
        self.events.put(event)

    def wait(self, match, timeout: float = 5.0):
        """The first event ``match`` accepts; every event seen on the way is in the message."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if match(event):
                return event
            seen.append(event)
        raise AssertionError(f"no matching event within {timeout}s; saw {seen[:20]}")

    def drain(self, quiet: float = 0.3) -> list:
        out = []
        while True:
            try:
                out.append(self.events.get(timeout=quiet))
            except queue.Empty:
                return out


@pytest.fixture
def watched(tmp_path):
    """``(root, recorder)``: ``root`` watched recursively with clusterkit's event filter."""
    root = tmp_path / "root"
    root.mkdir()
    recorder = Recorder()
    observer = Observer()
    observer.schedule(recorder, str(root), recursive=True, event_filter=EVENT_FILTER)
    observer.start()
    time.sleep(0.1)
    try:
        yield root, recorder
    finally:
        observer.stop()
        observer.join()


def test_close_write_is_reported_and_reads_are_not(watched):
    root, rec = watched
    path = root / "f"
    path.write_bytes(b"x")
    rec.wait(lambda e: isinstance(e, FileClosedEvent) and e.src_path == str(path))
    rec.drain()
    path.read_bytes()  # an open and a close without writing: filtered by the kernel mask
    assert [e for e in rec.drain() if e.src_path == str(path)] == []


def test_create_and_delete_are_reported(watched):
    root, rec = watched
    os.symlink("nowhere", root / "link")  # a symlink is a create and nothing else
    rec.wait(lambda e: isinstance(e, FileCreatedEvent) and e.src_path == str(root / "link"))
    os.unlink(root / "link")
    rec.wait(lambda e: isinstance(e, FileDeletedEvent) and e.src_path == str(root / "link"))


def test_chmod_is_reported_as_an_attribute_event(watched):
    root, rec = watched
    path = root / "script"
    path.write_bytes(b"#!/bin/sh\n")
    rec.wait(lambda e: isinstance(e, FileClosedEvent) and e.src_path == str(path))
    path.chmod(0o755)
    rec.wait(lambda e: isinstance(e, FileAttribEvent) and e.src_path == str(path))


def test_a_rename_within_the_tree_is_one_paired_move(watched):
    root, rec = watched
    (root / "a").write_bytes(b"x")
    rec.drain()
    os.rename(root / "a", root / "b")
    event = rec.wait(lambda e: isinstance(e, FileMovedEvent), timeout=2)
    assert (event.src_path, event.dest_path) == (str(root / "a"), str(root / "b"))


def test_a_directory_moved_in_with_files_is_created_and_its_files_reported(watched, tmp_path):
    root, rec = watched
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "f").write_bytes(b"x")
    os.rename(outside, root / "moved")
    rec.wait(lambda e: isinstance(e, DirCreatedEvent) and e.src_path == str(root / "moved"))
    rec.wait(lambda e: e.src_path == str(root / "moved" / "sub" / "f"))
    (root / "moved" / "sub" / "g").write_bytes(b"y")  # and the new tree is watched
    rec.wait(lambda e: isinstance(e, FileClosedEvent) and e.src_path == str(root / "moved/sub/g"))


def test_files_of_a_fresh_directory_are_reported(watched):
    root, rec = watched
    fresh = root / "fresh" / "deeper"
    fresh.mkdir(parents=True)
    (fresh / "f").write_bytes(b"x")
    rec.wait(lambda e: isinstance(e, DirCreatedEvent) and e.src_path == str(root / "fresh"))
    rec.wait(lambda e: e.src_path == str(fresh / "f"))


def test_names_that_are_not_utf8_round_trip_to_their_bytes(watched):
    root, rec = watched
    name = os.fsencode(str(root)) + b"/bad-\xff.txt"
    with open(name, "wb") as f:
        f.write(b"x")
    event = rec.wait(lambda e: isinstance(e, FileClosedEvent))
    assert os.fsencode(event.src_path) == name


CHILD = """
import sys, time
from watchdog.events import EventsLostEvent, FileSystemEventHandler
from watchdog.observers import Observer
from clusterkit.sync.watcher import EVENT_FILTER

class Lost(FileSystemEventHandler):
    def dispatch(self, event):
        if isinstance(event, EventsLostEvent):
            print("lost", flush=True)

observer = Observer()
observer.schedule(Lost(), sys.argv[1], recursive=True, event_filter=EVENT_FILTER)
observer.start()
print("ready", flush=True)
time.sleep(60)
"""


def test_a_queue_overflow_is_reported_as_events_lost(tmp_path):
    """More events than ``fs.inotify.max_queued_events`` while the reading process is stopped."""
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        limit = int(f.read())
    if limit > 500_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many files to overflow it here")
    root = tmp_path / "root"
    root.mkdir()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGSTOP)
        for i in range(limit // 2 + 100):  # a create and a close-write each
            os.close(os.open(root / str(i), os.O_CREAT | os.O_WRONLY, 0o600))
        os.kill(child.pid, signal.SIGCONT)
        assert child.stdout.readline().strip() == "lost"
    finally:
        child.kill()
        child.wait()
