"""Catch-up starts at once: a node cut off (netns link down) reaches a long back-off, then

- health sees it up again (a tcp check on its rsyncd or sshd port): it catches up
  before that back-off would have ended;
- ``clusterkit sync now`` returns while the node is still unreachable, ``--wait``
  reports it failed (exit 1), and once the link is back ``sync now --wait``
  finishes (exit 0) before the pending back-off would have ended.

The first back-off after a failure is 20–60 s here (``sync_backoff_min = 40``):
the old plain sleep made both wait for it.
"""

from __future__ import annotations

import time

from support import wait_for
from sync_support import Daemon, wait_identical, wait_settled
from test_sync_netns import dst, src
from test_sync_sets_independent import SLOW_RETRY, clusterkit, lab  # noqa: F401 (lab: a fixture)


def wait_backoff(daemon: Daemon, node: str) -> float:
    """Wait until ``node`` backs off as a whole; returns when it would retry (wall clock)."""
    entry = wait_for(lambda: (n := daemon.query("sync_status")["nodes"][node])["retry_at"] and n,
                     timeout=30, what=f"{node} backing off")
    assert entry["state"] == "backoff" and entry["retry_at"] > time.time() + 5, entry
    return entry["retry_at"]


def member_state(daemon: Daemon, node: str) -> str | None:
    members = daemon.query("status").get("members") or {}
    for policy in members.values():
        report = policy.get("nodes", {}).get(node)
        if report:
            return report["state"]
    return None


def test_a_node_seen_up_by_health_catches_up_before_its_back_off_ends(lab, tmp_path):
    net, config, transport = lab
    vip = f"{net.subnet}.100"
    net.add_address("manager", vip)
    port = 873 if transport == "rsyncd" else 22
    config.write_text(
        config.read_text().replace(SLOW_RETRY, f'{SLOW_RETRY}\npublic_ips = ["{vip}"]')
        + f'\n[[policy]]\nvip = "{vip}"\nport = 8080\nservice = "http"\nmembers = {{ node1 = 1 }}\n'
          f'\n[policy.check]\nkind = "tcp"\nport = {port}\ninter = 0.3\ntimeout = 0.3\nrise = 1\n'
          'fall = 2\n')
    with Daemon(config, wrap=["ip", "netns", "exec", net.ns("manager")]) as daemon:
        wait_identical(src(tmp_path), [dst(tmp_path, "node1"), dst(tmp_path, "node2")])
        wait_settled(daemon)  # the start's full syncs of every set are over
        wait_for(lambda: member_state(daemon, "node1") == "up", timeout=15, what="node1 up")
        net.cut("node1")
        wait_for(lambda: member_state(daemon, "node1") == "down", timeout=15, what="node1 down")
        for i in range(200):
            (src(tmp_path) / f"cut{i}").write_text(f"written during the cut {i}")
        wait_identical(src(tmp_path), [dst(tmp_path, "node2")], timeout=30)
        retry_at = wait_backoff(daemon, "node1")
        net.restore("node1")
        wait_identical(src(tmp_path), [dst(tmp_path, "node1")], timeout=60)
        assert time.time() < retry_at, "node1 caught up only when its back-off ended"
        assert "health saw http up" in daemon.log.read_text()


def test_sync_now_returns_at_once_and_wait_reports_the_outcome(lab, tmp_path):
    net, config, _ = lab
    with Daemon(config, wrap=["ip", "netns", "exec", net.ns("manager")]) as daemon:
        wait_identical(src(tmp_path), [dst(tmp_path, "node1"), dst(tmp_path, "node2")])
        wait_settled(daemon)
        net.cut("node1")
        (src(tmp_path) / "during-cut").write_text("written during the cut")
        wait_backoff(daemon, "node1")
        queued = clusterkit(config, "sync", "now", "node1")
        assert queued.returncode == 0, queued.stdout + queued.stderr
        assert "full sync queued for node1" in queued.stdout
        assert not (dst(tmp_path, "node1") / "during-cut").exists()  # returned, not done
        failed = clusterkit(config, "sync", "now", "node1", "--wait", "--timeout", "60")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "node1: FAILED" in failed.stdout and "rsync exit" in failed.stdout, failed.stdout
        retry_at = wait_backoff(daemon, "node1")
        net.restore("node1")
        done = clusterkit(config, "sync", "now", "--wait", "--timeout", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "full sync done: node1, node2" in done.stdout
        assert "node1 [" in done.stderr and "node1: done" in done.stderr  # plain progress lines
        assert time.time() < retry_at, "sync now waited for the back-off"
        wait_identical(src(tmp_path), [dst(tmp_path, "node1")], timeout=10)
