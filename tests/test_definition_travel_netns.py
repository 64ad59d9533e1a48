"""The definition travels over ssh and rsyncd: hosts in network namespaces, one daemon each.

Each node runs its own daemon in its namespace from its own copy of the
definition (what ``join`` leaves); an edit of the manager's file must be in
force on both nodes (their status shows the new serial, a batch runs the new
``on_change``). The time from the edit to each node's status is printed.
"""

from __future__ import annotations

import os
import shutil

import pytest

from support import wait_for
from sync_support import Daemon
from test_definition_travel import in_force, node_definition
from test_sync_netns import dst, src, start_rsyncd, start_sshd

NODES = ("node1", "node2")


@pytest.fixture(params=["rsyncd", "ssh"])
def setup(request, netns, tmp_path):
    if request.param == "ssh" and not shutil.which("sshd", path="/usr/sbin:/usr/bin"):
        pytest.skip("sshd is not installed (openssh-server)")
    net = netns(["manager", *NODES])
    config = start_rsyncd(net, tmp_path) if request.param == "rsyncd" else start_sshd(net, tmp_path)
    with open(config, "a") as f:
        f.write("\n[dns]\nenabled = false\n\n[panel]\nenabled = false\n")
    copies = {}
    for node in NODES:
        copies[node] = tmp_path / f"{node}.toml"
        shutil.copy(config, copies[node])
    return net, config, copies


def test_a_definition_edit_is_in_force_on_every_node(setup, tmp_path):
    net, config, copies = setup
    marker = tmp_path / "on_change.log"
    with Daemon(config, wrap=["ip", "netns", "exec", net.ns("manager")]) as manager:
        nodes = {n: Daemon(copies[n], host=n, wrap=["ip", "netns", "exec", net.ns(n)]).start()
                 for n in NODES}
        try:
            first = wait_for(lambda: manager.query("status")["definition"]["serial"], what="published")
            in_force(nodes, first, 0, timeout=30)

            text = config.read_text().replace(
                'exclude = ["*.swp"]\n',
                f'exclude = ["*.swp"]\non_change = \'echo "$(pwd)" >> {marker}\'\n')
            staged = tmp_path / ".cluster.toml.edit"
            staged.write_text(text)
            os.replace(staged, config)  # an edit as an editor or the CLI saves it
            edited = config.stat().st_mtime
            serial = wait_for(lambda: (s := manager.query("status")["definition"]["serial"]) != first
                              and s, what="a new serial")
            for name, seconds in in_force(nodes, serial, edited).items():
                print(f"{name}: serial {serial} in force {seconds:.3f}s after the manager's edit")
            for name, node in nodes.items():
                assert node_definition(node)["state"] == "current"
                assert "on_change" in copies[name].read_text()
                assert "password_file" not in copies[name].read_text()

            (src(tmp_path) / "index.html").write_text("a batch after the edit")
            for name in NODES:
                wait_for(lambda: (dst(tmp_path, name) / "index.html").exists(), what=f"file on {name}")
                wait_for(lambda: marker.exists() and str(dst(tmp_path, name)) in marker.read_text(),
                         what=f"the new on_change on {name}")
        finally:
            for node in nodes.values():
                node.stop()
