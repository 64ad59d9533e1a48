"""The pure parts of replication: exclusion, the transfer list, the durable dirty set, rsync argv."""

from __future__ import annotations

import os
import time

import pytest

from support import wait_for

from clusterkit.sync import rsync
from clusterkit.sync.applier import in_flight
from clusterkit.sync.paths import excluded, transfer_list
from clusterkit.sync.store import FULL, DirtyStore


@pytest.mark.parametrize("path,patterns,expected", [
    ("a/b.tmp", ("*.tmp",), True),
    ("a/b.tmpx", ("*.tmp",), False),
    ("site/cache/x", ("cache/",), True),
    ("site/cache", ("cache/",), True),
    ("site/cachex/y", ("cache/",), False),
    ("cache/x", ("/cache",), True),
    ("site/cache/x", ("/cache",), False),
    ("a/logs/old/x", ("logs/old",), True),
    ("a/logs/new/x", ("logs/old",), False),
    ("anything", (), False),
])
def test_excluded_follows_rsync_patterns(path, patterns, expected):
    assert excluded(path, patterns) is expected


def test_transfer_list_collapses_and_replaces_missing_paths(tmp_path):
    root = tmp_path
    (root / "keep" / "sub").mkdir(parents=True)
    (root / "keep" / "sub" / "f").write_text("x")
    (root / "fresh").mkdir()
    (root / "fresh" / "child").write_text("x")
    (root / "empty").mkdir()
    paths = ["keep/", "keep/sub/f",          # below a whole directory: dropped
             "gone/deeper/file",              # parents missing: the highest missing one is listed
             "fresh",                         # a fresh non-empty mkdir: its children carry it
             "fresh/child", "empty"]          # an empty fresh mkdir must be listed itself
    assert transfer_list(str(root), paths) == ["empty", "fresh/child", "gone", "keep/"]


def test_store_keeps_paths_marked_again_while_in_flight(tmp_path):
    store = DirtyStore(str(tmp_path / "s.sqlite"))
    seq1 = store.mark({"n1": [("www", "a"), ("www", "b")], "n2": [("www", "a")]})
    sent = {p: seq for (s, p), (seq, _) in store.pending("n1").items()}
    seq2 = store.mark({"n1": [("www", "a")]})  # changed again while the batch runs
    assert seq2 > seq1
    store.done("n1", "www", sent)
    assert list(store.pending("n1")) == [("www", "a")]
    assert list(store.pending("n2")) == [("www", "a")]
    store.replace("n2", "www", ["a"], FULL)
    assert list(store.pending("n2")) == [("www", FULL)]
    store.close()
    reopened = DirtyStore(str(tmp_path / "s.sqlite"))  # durable, and seqs keep growing
    assert reopened.seq >= seq2 and list(reopened.pending("n1")) == [("www", "a")]


def test_rsync_argv_always_bounds_time_and_keeps_excludes():
    job = rsync.Job(source="/m/www", destination="rsync://u@10.0.0.2:873/mod/www",
                    transport_args=["--password-file=/p"], exclude=("*.tmp",), paths=["a"])
    argv = job.argv()
    assert "--timeout=30" in argv and "--contimeout=10" in argv
    assert "--exclude=*.tmp" in argv and "--delete-excluded" not in argv
    assert "--files-from=-" in argv and "--delete-missing-args" in argv and "--delay-updates" in argv
    assert argv[-2:] == ["/m/www/", "rsync://u@10.0.0.2:873/mod/www/"]
    assert job.stdin() == b"a\0"
    full = rsync.Job(source="/m/www", destination="/n/www", transport_args=[], full=True)
    assert "--files-from=-" not in full.argv() and "--delete" in full.argv()


@pytest.mark.parametrize("code,outcome", [(0, "ok"), (23, "partial"), (24, "partial"),
                                          (10, "connection"), (255, "connection"), (30, "connection"),
                                          (3, "error"), (11, "error")])
def test_rsync_exit_codes(code, outcome):
    assert rsync.classify(code) == outcome


def test_rsync_temp_names_are_not_changes():
    assert in_flight(".~tmp~/index.html") and in_flight("a/.~tmp~")
    assert in_flight("a/.index.html.Ab12Cd")
    assert not in_flight("a/index.html") and not in_flight(".htaccess")


async def _run(job):
    return await rsync.run(job)


def test_rsync_run_reports_partial_lists_correctly(tmp_path):
    import asyncio

    src, dst = tmp_path / "s", tmp_path / "d"
    (src / "x").mkdir(parents=True)
    (src / "x" / "new").write_text("n")
    (dst / "x").mkdir(parents=True)
    (dst / "x" / "sibling").write_text("untouched")
    (dst / "x" / "deleted").write_text("goes")
    job = rsync.Job(source=str(src), destination=str(dst), transport_args=[],
                    paths=["x/new", "x/deleted"])
    result = asyncio.run(_run(job))
    assert result.outcome == "ok", result
    assert (dst / "x" / "new").read_text() == "n"
    assert not (dst / "x" / "deleted").exists() and (dst / "x" / "sibling").exists()
    assert not any(name.startswith(".") for name in os.listdir(dst / "x"))


def test_the_watch_audit_finds_directories_no_inotify_watch_covers(tmp_path):
    """What ``fs.inotify.max_user_watches`` leaves unwatched is read from the kernel's fdinfo."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    from clusterkit.sync.watchcheck import unwatched_dirs

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    old = time.time() - 60
    for d in ("a/b", "a", "c", ""):
        os.utime(tmp_path / d, (old, old))
    root_only = Observer()
    root_only.schedule(FileSystemEventHandler(), str(tmp_path), recursive=False)
    root_only.start()
    try:
        wait_for(lambda: "." not in unwatched_dirs(str(tmp_path), settle=0), what="the root's watch")
        assert unwatched_dirs(str(tmp_path), settle=0) == ["a", "a/b", "c"]
    finally:
        root_only.stop()
        root_only.join()
    whole = Observer()
    whole.schedule(FileSystemEventHandler(), str(tmp_path), recursive=True)
    whole.start()
    try:
        wait_for(lambda: unwatched_dirs(str(tmp_path), settle=0) == [], what="every watch")
    finally:
        whole.stop()
        whole.join()
