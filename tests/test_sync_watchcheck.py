"""The watcher proves itself: a deaf or stopped watch is found, reported, covered and repaired."""

from __future__ import annotations

import asyncio
import os
import time

from support import wait_for
from sync_support import Daemon, source, sync_cluster, target, wait_identical

from clusterkit.sync.watchcheck import WatchGuard
from clusterkit.sync.watcher import Watcher


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout}s")
        await asyncio.sleep(0.02)


def _guarded(tmp_path, covered: list):
    root = tmp_path / "www"
    loop = asyncio.get_running_loop()
    changes = []
    watcher = Watcher(loop, changes.extend, lambda name: None)
    watcher.watch("www", str(root))
    watcher.start()
    guard = WatchGuard(watcher, cover=covered.append, cover_interval=lambda name: 0.2,
                       quiet=0.5, timeout=0.5)
    return root, watcher, guard, changes


def test_a_replaced_root_is_found_deaf_covered_and_watched_again(tmp_path):
    async def scenario():
        covered: list = []
        root, watcher, guard, changes = _guarded(tmp_path, covered)
        task = asyncio.ensure_future(guard.run())
        try:
            await _until(lambda: guard.sets["www"].state == "ok", 5, "proved")
            assert changes == []  # a probe is never a change
            os.rename(root, tmp_path / "www.old")  # the watch follows the old directory...
            root.mkdir()  # ...and the new one has none: alive, but deaf
            await _until(lambda: guard.sets["www"].state == "deaf", 5, "found deaf")
            report = guard.report()["www"]
            assert report["failures"] == 1 and "no event for a probe file" in report["reason"]
            await _until(lambda: covered, 2, "covered by a scan")
            await _until(lambda: guard.sets["www"].state == "ok", 10, "watched again")
            (root / "new").write_bytes(b"x")
            await _until(lambda: ("www", "new", False, None) in changes, 5, "delivering events")
            assert guard.sets["www"].failures == 1
        finally:
            task.cancel()
            watcher.stop()

    asyncio.run(scenario())


def test_a_stopped_watch_thread_is_restarted(tmp_path):
    async def scenario():
        covered: list = []
        root, watcher, guard, changes = _guarded(tmp_path, covered)
        task = asyncio.ensure_future(guard.run())
        try:
            await _until(lambda: guard.sets["www"].state == "ok", 5, "proved")
            watcher.observer.stop()
            watcher.observer.join()
            await _until(lambda: guard.sets["www"].failures == 1, 5, "found stopped")
            await _until(lambda: guard.sets["www"].state == "ok" and watcher.alive(), 10, "restarted")
            (root / "after").write_bytes(b"x")
            await _until(lambda: ("www", "after", False, None) in changes, 5, "delivering events")
        finally:
            task.cancel()
            watcher.stop()

    asyncio.run(scenario())


def test_a_root_without_write_access_is_unproven_not_deaf(tmp_path):
    async def scenario():
        covered: list = []
        root, watcher, guard, _ = _guarded(tmp_path, covered)
        watcher.roots["www"] = str(tmp_path / "missing")  # where no probe can be written
        try:
            await guard.check()
            report = guard.report()["www"]
            assert report["state"] == "unproven" and "cannot write a probe file" in report["reason"]
            assert covered == [] and report["failures"] == 0
        finally:
            watcher.stop()

    asyncio.run(scenario())


def test_the_daemon_reports_a_deaf_watcher_and_still_replicates(tmp_path):
    """Alive but deaf (the set's root replaced under the watch): found in seconds, logged
    once, shown in ``sync status`` and /metrics, and files written meanwhile still arrive."""
    from clusterkit_panel.metrics import render

    cluster = sync_cluster(tmp_path, nodes=2, options=(
        "options = { sync_watch_quiet = 1.0, sync_watch_timeout = 1.0, sync_watch_scan_min = 1.0 }"))
    src = source(tmp_path)
    nodes = [target(tmp_path, "node1"), target(tmp_path, "node2")]
    with Daemon(cluster) as daemon:
        wait_for(lambda: daemon.query("sync_status")["watch"]["data"]["state"] == "ok",
                 what="the watch proved")
        os.rename(src, src.with_name("data.old"))
        src.mkdir()
        (src / "written-while-deaf").write_text("still replicated")
        status = wait_for(lambda: (s := daemon.query("sync_status"))["watch"]["data"]["state"] == "deaf"
                          and s, timeout=10, what="the deaf watch reported", step=0.02)
        watch = status["watch"]["data"]
        assert "no event for a probe file" in watch["reason"] and watch["failures"] == 1

        class Panel:  # what /metrics renders: this daemon's own status at that moment
            runtime = type("R", (), {"status": staticmethod(lambda: {"sync": status}),
                                     "cluster": type("C", (), {"name": "test"}),
                                     "host": type("H", (), {"name": "manager", "role": "manager"})})
            is_manager = False

        text = render(Panel())
        assert 'clusterkit_sync_watch_ok{set="data",state="deaf"} 0' in text
        assert 'clusterkit_sync_watch_failures_total{set="data"} 1' in text

        wait_identical(src, nodes, timeout=15)
        wait_for(lambda: daemon.query("sync_status")["watch"]["data"]["state"] == "ok", timeout=15,
                 what="the watch added anew")
        missed = daemon.query("sync_status")["missed_changes"]
        assert missed.get("data", 0) >= 1
        (src / "after").write_text("by event")
        wait_identical(src, nodes, timeout=5)
    log = daemon.log.read_text()
    assert log.count("the file watcher is failing") == 1, log
    assert "the watcher missed" in log
