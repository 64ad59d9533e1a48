"""The full sync's mass-delete guard: real rsync, real trees, the manager daemon as a subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from clusterkit.sync import rsync
from sync_support import CLUSTERKIT, Daemon, source, sync_cluster, target
from support import wait_for


def tree(root, count: int, prefix: str = "f") -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"{prefix}{i:05d}").write_text(str(i))


def full(src, dst) -> rsync.Job:
    return rsync.Job(source=str(src), destination=str(dst), transport_args=[], full=True)


def test_a_full_sync_that_would_delete_most_of_a_node_is_refused_and_deletes_nothing(tmp_path):
    src, dst = tmp_path / "manager", tmp_path / "node"
    tree(src, 3)
    tree(dst, 1500, prefix="old")
    result = asyncio.run(rsync.run_full(full(src, dst)))
    assert result.outcome == "refused" and result.skipped_deletes == 1500
    assert "it would delete 1500 of the node's 1501 files" in result.stderr
    assert len(list(dst.iterdir())) == 1503, "nothing deleted, the manager's files sent"
    assert asyncio.run(rsync.run_full(full(src, dst), allow=True)).outcome == "ok"
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in src.iterdir())


@pytest.mark.parametrize("manager_files, node_extra", [(3, 900), (2000, 1500)])
def test_a_full_sync_deletes_a_few_files_or_a_minority_of_the_node(tmp_path, manager_files,
                                                                     node_extra):
    src, dst = tmp_path / "manager", tmp_path / "node"
    tree(src, manager_files)
    tree(dst, manager_files)
    tree(dst, node_extra, prefix="old")
    result = asyncio.run(rsync.run_full(full(src, dst)))
    assert result.outcome == "ok", result.stderr
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in src.iterdir())


def test_the_daemon_reports_the_refusal_and_sync_now_allow_delete_lets_it_through(tmp_path):
    cfg = sync_cluster(tmp_path, nodes=1, prefix="127.84.9")
    tree(source(tmp_path), 2)
    tree(target(tmp_path, "node1"), 1200, prefix="old")
    with Daemon(cfg) as daemon:
        node = wait_for(lambda: (lambda n: n if n["refused"] else None)(
            daemon.query("sync_status")["nodes"]["node1"]), what="the refusal in sync status")
        assert node["refused"] == ["data"]
        assert "set data: full sync refused: it would delete 1200 of the node's 1201 files" \
            in node["last_error"]
        assert len(list(target(tmp_path, "node1").iterdir())) == 1202
        refused = subprocess.run([*CLUSTERKIT, "sync", "now", "--wait", "-c", str(cfg), "--json"],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and json.loads(refused.stdout)["node1"]["refused"] == ["data"]
        allowed = subprocess.run([*CLUSTERKIT, "sync", "now", "--wait", "-c", str(cfg), "--allow-delete"],
                                 capture_output=True, text=True, timeout=60)
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert sorted(p.name for p in target(tmp_path, "node1").iterdir()) == ["f00000", "f00001"]
        assert daemon.query("sync_status")["nodes"]["node1"]["refused"] == []


def test_allow_mass_delete_on_the_set_lets_the_full_sync_through(tmp_path):
    cfg = sync_cluster(tmp_path, nodes=1, prefix="127.84.10")
    cfg.write_text(cfg.read_text() + "allow_mass_delete = true\n")
    tree(source(tmp_path), 2)
    tree(target(tmp_path, "node1"), 1200, prefix="old")
    with Daemon(cfg):
        wait_for(lambda: sorted(p.name for p in target(tmp_path, "node1").iterdir())
                 == ["f00000", "f00001"], what="the full sync with its deletions")
