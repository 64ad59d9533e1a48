"""The definition travels: a manager edit reaches each node's daemon, checked, minus the manager's keys.

A manager and two nodes, each with its own root and its own copy of the
definition (as ``clusterkit join`` writes it), each running its own daemon;
the transport is ``local`` (netns tests cover ssh and rsyncd).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tomllib

import pytest

from clusterkit.sync import definition
from support import wait_for
from sync_support import CLUSTERKIT, Daemon, sync_cluster

TSIG = "c2VjcmV0LXRzaWcta2V5LTE2Ynl0ZXM="  # 24 bytes, base64
NODES = ("node1", "node2")


def make_cluster(tmp_path):
    marker = tmp_path / "on_change.log"
    config = sync_cluster(tmp_path, nodes=2, prefix="127.84.7")
    text = config.read_text()
    for node in NODES:  # the manager's own credentials for the node: they stay on the manager
        text = text.replace(f'root = "{tmp_path}/{node}"\n',
                            f'root = "{tmp_path}/{node}"\noptions = {{ key = "/keys/{node}-ssh", '
                            f'password_file = "/keys/{node}-rsyncd", sync_watch_quiet = 30 }}\n')
    text += f'\n[dns]\nenabled = false\n\n[dns.tsig."xfr.example.com"]\nsecret = "{TSIG}"\n'
    text += '\n[panel]\nenabled = false\n'
    config.write_text(text)
    copies = {}
    for node in NODES:  # what join leaves on a node: the manager's file as it was
        copies[node] = tmp_path / f"{node}.toml"
        shutil.copy(config, copies[node])
    return config, copies, marker


def node_definition(node: Daemon) -> dict:
    return node.query("status")["definition"]


def in_force(nodes: dict, serial: int, edited: float, timeout: float = 20.0) -> dict[str, float]:
    """Seconds from ``edited`` (the manager's file's mtime) until each node runs ``serial``."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(nodes):
        for name, node in nodes.items():
            if name not in seen and node.query("status")["definition"]["serial"] == serial:
                seen[name] = time.time() - edited
        assert time.monotonic() < deadline, f"serial {serial} in force only on {sorted(seen)}"
        time.sleep(0.01)
    return seen


def metrics(node: Daemon) -> str:
    """What the node's /metrics says (the panel renders its daemon's status)."""
    from clusterkit_panel.metrics import render

    status = node.query("status")

    class Panel:
        runtime = type("R", (), {"status": staticmethod(lambda: status),
                                 "cluster": type("C", (), {"name": "test"}),
                                 "host": type("H", (), {"name": node.host, "role": "node"})})
        is_manager = False

    return render(Panel())


def cli(*args):
    return subprocess.run([*CLUSTERKIT, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def cluster(tmp_path):
    config, copies, marker = make_cluster(tmp_path)
    with Daemon(config) as manager:
        nodes = [Daemon(copies[n], host=n).start() for n in NODES]
        try:
            serial = wait_for(lambda: manager.query("status")["definition"]["serial"], what="published")
            for node in nodes:
                wait_for(lambda: node_definition(node)["serial"] == serial, timeout=20,
                         what=f"{node.host} running serial {serial}")
            yield manager, dict(zip(NODES, nodes)), config, copies, marker
        finally:
            for node in nodes:
                node.stop()


def test_a_manager_edit_is_in_force_on_every_node(cluster, tmp_path):
    manager, nodes, config, copies, marker = cluster
    before = manager.query("status")["definition"]["serial"]
    (tmp_path / "manager" / "srv" / "shared").mkdir(parents=True)
    (tmp_path / "manager" / "srv" / "shared" / "first").write_text("there before the set")
    added = cli("sync", "add", "shared", "--path", "/srv/shared", "-c", str(config),
                "--on-change", f'echo "$(pwd) $CLUSTERKIT_SYNC_PATHS" >> {marker}')
    assert added.returncode == 0, added.stderr
    serial = wait_for(lambda: (s := manager.query("status")["definition"]["serial"]) != before and s,
                      what="a new serial")
    for name, seconds in in_force(nodes, serial, config.stat().st_mtime).items():
        print(f"{name}: serial {serial} in force {seconds:.3f}s after the manager's edit")
    for name, node in nodes.items():
        assert node_definition(node)["state"] == "current"
        assert node_definition(node)["manager_serial"] == serial
        assert "shared" in node.query("status")["sync"]["sets"]
        assert "shared" in {s["name"] for s in tomllib.loads(copies[name].read_text())["sync"]}
        assert os.stat(copies[name]).st_mode & 0o777 == 0o600
        shown = cli("status", "--as", name, "-c", str(copies[name]))
        assert shown.returncode == 0, shown.stderr
        assert f"definition: serial {serial}, the manager's {serial}: current" in shown.stdout
        every = cli("status", "--as", name, "-c", str(copies[name]), "-v").stdout
        assert "shared" in every and f"serial: {serial}" in every and "state: current" in every
        exported = metrics(node)
        assert f"clusterkit_definition_serial {serial}\n" in exported
        assert f"clusterkit_definition_manager_serial {serial}\n" in exported
        assert "clusterkit_definition_current 1\n" in exported

    # the set's first full sync is applied on each node, then every batch
    for name in NODES:
        here = tmp_path / name / "srv" / "shared"
        wait_for(lambda: marker.exists() and str(here) in marker.read_text(),
                 what=f"on_change on {name} after the set's first sync")
    (tmp_path / "manager" / "srv" / "shared" / "second").write_text("a batch")
    for name in NODES:
        landed = str(tmp_path / name / "srv" / "shared" / "second")
        wait_for(lambda: landed in marker.read_text(), what=f"on_change on {name} for the batch")

    # what travels: the definition minus the manager's credentials; TSIG keys travel
    for name in NODES:
        copy = copies[name].read_text()
        assert "/keys/" not in copy and "password_file" not in copy
        assert TSIG in copy  # every host answers zone transfers and checks their signatures
        assert tomllib.loads(copy)["node"][0]["options"] == {"sync_watch_quiet": 30}
    assert config.read_text().count("/keys/") == 4  # the manager's own file is untouched
    assert "clusterkit-definition" not in config.read_text()


def test_a_node_refuses_a_bad_or_older_view_and_keeps_running(cluster, tmp_path):
    manager, nodes, config, copies, marker = cluster
    node = nodes["node1"]
    running = node_definition(node)["serial"]
    inbox = tmp_path / "node1" / str(tmp_path / "state" / definition.FOLDER).lstrip("/") / definition.FILE
    good = definition.parse_view(inbox.read_text())
    sets = node.query("status")["sync"]["sets"]

    def arrive(text: str) -> None:  # as rsync lands a file: a temp name, then a rename
        tmp = inbox.parent / ".cluster.toml.Ab12Cd"
        tmp.write_text(text)
        os.replace(tmp, inbox)

    def refused(fragment: str) -> dict:
        return wait_for(lambda: fragment in (d := node_definition(node))["state"] and d,
                        what=f"refusal saying {fragment!r}")

    body = good.body.replace('name = "data"', 'name = "data"\nbogus = 1')
    arrive(definition.render(body, running + 10, "manager", good.origin, time.time()))
    shown = refused("refused: invalid")
    assert "sync[0].bogus: unknown key" in shown["state"]
    assert shown["serial"] == running and shown["manager_serial"] == running + 10

    arrive(good.text.replace('name = "data"', 'name = "tampered"'))
    refused("damaged: the body does not match")

    older = definition.render(good.body.replace("[[sync]]", "# older\n[[sync]]"), running - 1,
                              "manager", good.origin, time.time())
    arrive(older)
    refused(f"serial {running - 1} is older than the running {running}")

    without = good.body.replace('name = "node1"', 'name = "node9"')
    arrive(definition.render(without, running + 20, "manager", good.origin, time.time()))
    refused("node1 is not a node or standby in it")

    arrive("x" * (17 << 20))
    refused("larger than 16 MiB")

    assert node.query("status")["sync"]["sets"] == sets
    assert definition.parse_view(copies["node1"].read_text()).serial == running
    log = node.log.read_text()
    assert "ERROR" in log and "definition from the manager refused" in log
    shown = cli("status", "--as", "node1", "-c", str(copies["node1"]))
    assert f"! definition: serial {running}, the manager's " in shown.stdout
    assert ": refused: " in shown.stdout
    exported = metrics(node)
    assert f"clusterkit_definition_serial {running}\n" in exported
    assert "clusterkit_definition_current 0\n" in exported

    # the manager's next edit is taken again
    assert cli("sync", "add", "more", "--path", "/srv/more", "-c", str(config)).returncode == 0
    wait_for(lambda: node_definition(node)["state"] == "current"
             and "more" in node.query("status")["sync"]["sets"], what="recovery")


def test_the_reserved_set_name_is_refused(tmp_path):
    config, _, _ = make_cluster(tmp_path)
    out = cli("sync", "add", definition.SET, "--path", "/srv/x", "-c", str(config))
    assert out.returncode == 2
    assert "sync[1].name: 'clusterkit-definition' is reserved" in out.stderr


def test_a_node_sharing_the_managers_file_never_writes_it(tmp_path):
    config, _, _ = make_cluster(tmp_path)
    original = config.read_text()
    with Daemon(config) as manager, Daemon(config, host="node1") as node:
        serial = wait_for(lambda: manager.query("status")["definition"]["serial"], what="published")
        wait_for(lambda: node_definition(node)["manager_serial"] == serial, what="received")
        assert node_definition(node)["state"] == "the manager's own file"
        assert config.read_text() == original


def test_a_view_that_arrived_while_the_node_was_down_is_taken_at_start(cluster, tmp_path):
    manager, nodes, config, copies, marker = cluster
    node = nodes["node1"]
    node.stop()
    assert cli("sync", "add", "later", "--path", "/srv/later", "-c", str(config)).returncode == 0
    inbox = tmp_path / "node1" / str(tmp_path / "state" / definition.FOLDER).lstrip("/") / definition.FILE
    wait_for(lambda: "/srv/later" in inbox.read_text(), what="the view in node1's inbox")
    assert "later" not in copies["node1"].read_text()
    node.start()
    serial = definition.parse_view(inbox.read_text()).serial
    wait_for(lambda: node_definition(node)["serial"] == serial, what="the view taken at start")
    assert node_definition(node)["state"] == "current"
    assert "later" in node.query("status")["sync"]["sets"]


def test_the_node_view_leaves_out_the_managers_keys_in_either_table_form():
    text = ('# the operator\'s comment\n[[node]]\nname = "a"\nip = "10.0.0.2"\n'
            'options = { key = "/k", port = 2222 }\n\n[[node]]\nname = "b"\nip = "10.0.0.3"\n\n'
            '[node.options]\npassword_file = "/p"  # the manager\'s\nuser = "ck"\n\n'
            '[[node]]\nname = "c"\nip = "10.0.0.4"\n')
    view = definition.node_view(text)
    assert "/k" not in view and "/p" not in view and "# the operator's comment" in view
    nodes = tomllib.loads(view)["node"]
    assert [n.get("options") for n in nodes] == [{"port": 2222}, {"user": "ck"}, None]
