"""One failing set on a node stalls nothing else: real rsync, real daemons, real trees.

The node's second set fails (its destination is a file, or the node's rsync
daemon does not offer its path yet) while the first set's files keep
arriving, each while the failing set is still waiting out its *first*
back-off (the old worker backed the whole node off, so nothing arrived before
that set was retried). The failure is shown per set with its whole error
(for rsyncd: what to run), and once fixed, ``sync now`` makes the set catch up
before its back-off would have ended.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support import wait_for
from sync_support import CLUSTERKIT, Daemon, source, sync_cluster, target, wait_identical
from test_sync_netns import FAST, dst, src, start_rsyncd, start_sshd

SHARED = "/srv/shared"
SLOW_RETRY = "options = { sync_contimeout = 2, sync_timeout = 5, sync_backoff_min = 40.0, " \
             "sync_backoff_max = 60.0 }"


def add_shared_set(config: Path, root: Path) -> Path:
    """A second set on the manager, after the nodes were set up for the first one."""
    config.write_text(config.read_text() + f'\n[[sync]]\nname = "shared"\npath = "{SHARED}"\n')
    shared = root / SHARED.lstrip("/")
    shared.mkdir(parents=True)
    (shared / "doc").write_text("shared")
    return shared


def failing(status: dict, node: str, sset: str) -> dict | None:
    return status["nodes"][node]["failing_sets"].get(sset)


def clusterkit(config: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI, from this namespace: the daemon's control socket is a file."""
    return subprocess.run([*CLUSTERKIT, *args, "-c", str(config)], capture_output=True, text=True,
                          timeout=60)


def check_independence(daemon: Daemon, node: str, good: tuple[Path, Path], bad: tuple[Path, Path],
                       fix, error_words: list[str]) -> None:
    """The scenario, for any transport; ``good``/``bad`` are (manager's copy, node's copy)."""
    def query() -> dict:
        return daemon.query("sync_status")

    first = wait_for(lambda: failing(query(), node, "shared"), timeout=30,
                     what="the shared set failing on its own")
    assert first["failures"] == 1 and first["retry_at"] > time.time() + 5, first
    for i in range(5):  # every file of the healthy set arrives while the failing set waits
        (good[0] / f"page{i}").write_text(f"page {i}")
        wait_for(lambda: (good[1] / f"page{i}").exists(), timeout=15, what=f"page{i} on {node}")
        still = failing(query(), node, "shared")
        assert still is not None and still["failures"] == 1 and still["retry_at"] > time.time(), \
            f"page{i} arrived only after the failing set was retried: {still}"
    entry = query()["nodes"][node]
    assert entry["state"] != "backoff" and entry["retry_at"] is None, entry
    error = entry["failing_sets"]["shared"]["error"]
    assert all(word in error for word in error_words), error
    assert entry["last_error"] == f"set shared: {error}", entry
    human = clusterkit(daemon.config, "sync", "status").stdout
    assert f"{node}: set shared failing (1 in a row" in human and error in human, human
    retry_at = entry["failing_sets"]["shared"]["retry_at"]
    fix()
    now = clusterkit(daemon.config, "sync", "now", node)
    assert now.returncode == 0 and "full sync queued for" in now.stdout, now.stdout + now.stderr
    wait_identical(bad[0], [bad[1]], timeout=30)
    assert time.time() < retry_at, "the fixed set waited for its back-off"
    healed = wait_for(lambda: (s := query()["nodes"][node])["failing_sets"] == {} and s,
                      timeout=15, what="the set's failure cleared")
    assert healed["last_error"] is None, healed
    assert "failing" not in clusterkit(daemon.config, "sync", "status").stdout


def test_a_set_failing_on_a_local_node_leaves_the_other_set_flowing(tmp_path):
    config = sync_cluster(tmp_path, nodes=1, prefix="127.84.21", options=SLOW_RETRY)
    shared = add_shared_set(config, tmp_path / "manager")
    blocker = tmp_path / "node1" / SHARED.lstrip("/")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the node's directory should be")
    with Daemon(config) as daemon:
        wait_identical(source(tmp_path), [target(tmp_path, "node1")])
        check_independence(daemon, "node1", (source(tmp_path), target(tmp_path, "node1")),
                           (shared, blocker), fix=blocker.unlink,
                           error_words=["rsync exit 11", "File exists"])


@pytest.fixture(params=["rsyncd", "ssh"])
def lab(request, netns, tmp_path):
    if request.param == "ssh" and not shutil.which("sshd", path="/usr/sbin:/usr/bin"):
        pytest.skip("sshd is not installed (openssh-server)")
    net = netns(["manager", "node1", "node2"])
    config = start_rsyncd(net, tmp_path) if request.param == "rsyncd" else start_sshd(net, tmp_path)
    config.write_text(config.read_text().replace(FAST, SLOW_RETRY))
    return net, config, request.param


def test_a_set_failing_on_a_remote_node_leaves_the_other_set_flowing(lab, tmp_path):
    net, config, transport = lab
    shared = add_shared_set(config, tmp_path / "manager")
    bad = tmp_path / "node1" / SHARED.lstrip("/")
    if transport == "rsyncd":  # node1's daemon was configured before the set existed
        words = ["rsync exit 3", "excluded destination", "clusterkit sync rsyncd-conf node1"]

        def rsyncd_conf(node: str) -> None:  # rsync's daemon reads its file per connection
            out = tmp_path / f"{node}-rsyncd"
            made = clusterkit(config, "sync", "rsyncd-conf", node, "--output", str(out),
                              "--secrets-path", str(out / "rsyncd.secrets"))
            assert made.returncode == 0, made.stdout + made.stderr

        rsyncd_conf("node2")
        fix = functools.partial(rsyncd_conf, "node1")  # what the error says to do
    else:
        bad.parent.mkdir(parents=True)
        bad.write_text("a file where the node's directory should be")
        words = ["rsync exit 11", "File exists"]
        fix = bad.unlink
    with Daemon(config, wrap=["ip", "netns", "exec", net.ns("manager")]) as daemon:
        wait_identical(src(tmp_path), [dst(tmp_path, "node1"), dst(tmp_path, "node2")])
        wait_identical(shared, [tmp_path / "node2" / SHARED.lstrip("/")])
        check_independence(daemon, "node1", (src(tmp_path), dst(tmp_path, "node1")),
                           (shared, bad), fix=fix, error_words=words)
