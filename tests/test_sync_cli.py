"""``clusterkit sync status|verify|now|rsyncd-conf`` and the transport hints of ``node add``."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit.plugins import get_plugin_manager
from sync_support import Daemon, source, sync_cluster, target, wait_identical, wait_settled

runner = CliRunner()


@pytest.fixture
def ck():
    app = get_app(get_plugin_manager())

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def test_verify_lists_differences_and_exits_1(ck, tmp_path):
    config = sync_cluster(tmp_path, nodes=2, exclude=("*.log",), prefix="127.84.2")
    src = source(tmp_path)
    (src / "a").write_text("a")
    for node in ("node1", "node2"):
        target(tmp_path, node).mkdir(parents=True)
        (target(tmp_path, node) / "a").write_text("a")
        (target(tmp_path, node) / "own.log").write_text("excluded: not a difference")
    ok = ck("sync", "verify", "-c", config)
    assert ok.exit_code == 0, ok.output
    assert "node1 data: identical" in ok.output and "node2 data: identical" in ok.output
    (target(tmp_path, "node2") / "a").write_text("b")  # same size, other content
    (target(tmp_path, "node2") / "extra").write_text("only on the node")
    bad = ck("sync", "verify", "node2", "-c", config, "--json")
    assert bad.exit_code == 1
    report = json.loads(bad.output)
    assert [r["node"] for r in report] == ["node2"]
    lines = report[0]["differences"]
    assert any(line.endswith(" a") for line in lines) and "*deleting   extra" in lines
    assert ck("sync", "verify", "manager", "-c", config).exit_code == 2


def test_status_and_now_talk_to_the_daemon(ck, tmp_path):
    config = sync_cluster(tmp_path, nodes=2, prefix="127.84.3")
    src = source(tmp_path)
    assert ck("sync", "status", "-c", config).exit_code == 1  # no daemon: a clear error
    with Daemon(config) as daemon:
        (src / "f").write_text("x")
        wait_identical(src, [target(tmp_path, "node1"), target(tmp_path, "node2")])
        wait_settled(daemon)
        status = ck("sync", "status", "-c", config, "--json")
        assert status.exit_code == 0, status.output
        nodes = json.loads(status.output)["nodes"]
        assert set(nodes) == {"node1", "node2"}
        assert all(n["pending"] == 0 and n["last_success"] and n["lag"] == 0 for n in nodes.values())
        human = ck("sync", "status", "-c", config)
        assert "node1" in human.output and "PENDING" in human.output
        (target(tmp_path, "node1") / "f").write_text("tampered")  # only a full sync repairs this
        now = ck("sync", "now", "node1", "node2", "--wait", "-c", config, "--timeout", "30")
        assert now.exit_code == 0, now.output
        assert "full sync done: node1, node2" in now.output
        assert (target(tmp_path, "node1") / "f").read_text() == "x"
        assert ck("sync", "now", "nosuch", "-c", config).exit_code == 2


def test_rsyncd_conf_and_node_add_hints(ck, tmp_path):
    config = sync_cluster(tmp_path, nodes=1, prefix="127.84.4")
    pw = tmp_path / "pw"
    added = ck("node", "add", "web9", "-c", config, "--ip", "127.84.4.99", "--transport", "rsyncd",
               "--option", f"password_file={pw}")
    assert added.exit_code == 0, added.output
    assert "clusterkit sync rsyncd-conf web9" in added.output
    ssh = ck("node", "add", "web8", "-c", config, "--ip", "127.84.4.98", "--transport", "ssh")
    assert "ssh-copy-id" in ssh.output and "authorized_keys" in ssh.output
    assert ck("sync", "rsyncd-conf", "node1", "-c", config).exit_code == 2  # transport local
    out = tmp_path / "conf"
    result = ck("sync", "rsyncd-conf", "web9", "-c", config, "--output", out)
    assert result.exit_code == 0, result.output
    conf = (out / "rsyncd.conf").read_text()
    secret = (out / "rsyncd.secrets").read_text().strip()
    assert "hosts allow = 127.84.4.1" in conf and "auth users = clusterkit" in conf
    assert "include = /srv/ /srv/data /srv/data/**" in conf and "exclude = *" in conf
    assert secret == "clusterkit:" + pw.read_text().strip()
    assert oct((out / "rsyncd.secrets").stat().st_mode & 0o777) == "0o600"
    again = ck("sync", "rsyncd-conf", "web9", "-c", config, "--output", out)  # password kept
    assert again.exit_code == 0 and (out / "rsyncd.secrets").read_text().strip() == secret


def test_verify_on_a_terminal_shows_where_it_is(tmp_path):
    """On a terminal, stderr carries one redrawn progress line; stdout keeps the result."""
    import os
    import pty
    import subprocess

    from sync_support import CLUSTERKIT

    config = sync_cluster(tmp_path, nodes=2, prefix="127.84.11")
    (source(tmp_path) / "a").write_text("a")
    parent, child = pty.openpty()
    try:
        done = subprocess.run([*CLUSTERKIT, "sync", "verify", "-c", str(config)], stdout=subprocess.PIPE,
                              stderr=child, text=True, timeout=60)
        os.close(child)
        child = None
        shown = b""
        while True:
            try:
                chunk = os.read(parent, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if child is not None:
            os.close(child)
        os.close(parent)
    assert done.returncode == 1 and "node1 data: " in done.stdout  # node copies are missing
    steps = shown.decode()
    assert "node1 data" in steps and "node2 data" in steps, steps
    assert re.search(r"verify \[#{20}\] (\d+)/\1", steps), steps  # ends complete
