"""A standby manager: its table, ``manager add-standby``, replication to it, promotion, the epoch.

Daemons run as subprocesses with the local transport, each host with its own
root and its own copy of the definition (as ``clusterkit join`` leaves it);
promotion is asked with ``clusterkit manager promote`` (keepalived asks the
same thing in tests/test_standby_netns.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
import tomllib
import types

import pytest

from clusterkit.control import ControlError
from clusterkit.config import build_cluster, load_cluster, parse_cluster, registry_of
from clusterkit.definition.tables import ConfigError
from clusterkit.standby import epoch, state
from clusterkit.standby.promotion import swap
from clusterkit.sync import definition
from conftest import write_cluster
from support import wait_for
from sync_support import CLUSTERKIT, Daemon, sync_cluster

STANDBY = '\n[[standby]]\nname = "{name}"\nip = "{ip}"\ntransport = "local"\nroot = "{root}"\n'


def cli(*args):
    return subprocess.run([*CLUSTERKIT, *args], capture_output=True, text=True, timeout=60)


def problems(pm, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_cluster(text, "/etc/ck.toml", registry_of(pm))
    return [p.format("/etc/ck.toml") for p in info.value.problems]


# ----------------------------------------------------------------- definition


def test_a_standby_is_a_manager_in_waiting_and_a_replication_target(pm, tmp_path):
    path = write_cluster(tmp_path / "c.toml", "127.86.1", nodes=2,
                         extra=STANDBY.format(name="mgr2", ip="127.86.1.2", root=tmp_path / "mgr2"))
    cluster = load_cluster(path, pm)
    (standby,) = cluster.standbys
    assert (standby.name, standby.role, standby.priority) == ("mgr2", "standby", 250)
    assert cluster.manager.priority == 254 and cluster.manager.name == "manager"
    assert [h.name for h in cluster.replicas] == ["mgr2", "node1", "node2"]
    assert [h.name for h in cluster.nodes] == ["node1", "node2"]


def test_bad_standby_entries_are_refused_with_their_lines(pm, tmp_path):
    text = write_cluster(tmp_path / "c.toml", "127.86.2", nodes=1).read_text()
    text += ('\n[[standby]]\nname = "manager"\nip = "127.86.2.5"\n'        # a taken name
             '\n[[standby]]\nname = "mgr2"\nip = "127.86.2.1"\npriority = 255\n'  # the manager's ip
             'options = { sync_settle = -1 }\n'                              # a manager's option
             '\n[[standby]]\nname = "mgr3"\nip = "10.0.0.3"\npublic_ips = ["10.0.0.9"]\n')
    found = "\n".join(problems(pm, text))
    assert "standby[0].name: duplicate host name 'manager'" in found
    assert "standby[1].ip: 127.86.2.1 is already the ip of 'manager'" in found
    assert "standby[1].priority:" in found and "254" in found
    assert "standby[1].options.sync_settle:" in found
    assert "standby[2].public_ips: unknown key" in found  # the addresses are the manager's
    first = text.splitlines().index("[[standby]]") + 1
    for problem in found.splitlines():  # each at its own line, within the standby tables
        assert int(problem.split(":")[1]) > first, problem


def test_manager_add_standby_writes_the_table(tmp_path):
    config = tmp_path / "c.toml"
    made = cli("init", "-c", str(config), "--name", "t", "--manager", "m1", "--manager-ip", "127.86.3.1",
               "--public-ip", "127.86.3.100", "--state-dir", str(tmp_path / "state"))
    assert made.returncode == 0, made.stderr
    added = cli("manager", "add-standby", "m2", "-c", str(config), "--ip", "127.86.3.2",
                "--priority", "120", "--root", str(tmp_path / "m2"))
    assert added.returncode == 0, added.stderr
    assert "added standby manager m2" in added.stdout
    (entry,) = tomllib.loads(config.read_text())["standby"]
    assert entry == {"name": "m2", "ip": "127.86.3.2", "transport": "local", "priority": 120,
                     "root": str(tmp_path / "m2")}
    listed = cli("node", "list", "-c", str(config))
    assert any(line.split()[:2] == ["m2", "standby"] for line in listed.stdout.splitlines())
    for bad in (["../x", "--ip", "127.86.3.3"], ["m3", "--ip", "127.86.3.1"],
                ["m3", "--ip", "127.86.3.3", "--priority", "0"]):
        refused = cli("manager", "add-standby", *bad, "-c", str(config))
        assert refused.returncode == 2, refused.stdout + refused.stderr
    assert len(tomllib.loads(config.read_text())["standby"]) == 1  # nothing half-written


def test_swap_makes_the_standby_manager_and_priorities_follow_their_hosts(pm, tmp_path):
    path = write_cluster(tmp_path / "c.toml", "127.86.4", nodes=1,
                         extra=STANDBY.format(name="mgr2", ip="127.86.4.2", root=tmp_path / "mgr2")
                         + '[[policy]]\nvip = "127.86.4.100"\nport = 80\nservice = "http"\n'
                           'members = { node1 = 1 }\n')
    swapped = build_cluster(swap(path.read_text(), "mgr2"), str(path), pm)
    assert swapped.manager.name == "mgr2" and swapped.manager.public_ips == ("127.86.4.100",)
    assert swapped.manager.priority == 250 and swapped.manager.root == str(tmp_path / "mgr2")
    (old,) = swapped.standbys
    assert (old.name, old.ip, old.priority, old.public_ips) == ("manager", "127.86.4.1", 254, ())
    with pytest.raises(ValueError, match="not a \\[\\[standby\\]\\]"):
        swap(path.read_text(), "node1")


def test_the_epoch_file_only_grows_and_a_damaged_one_reads_as_zero(tmp_path):
    assert epoch.read(str(tmp_path)) == 0
    assert epoch.raise_to(str(tmp_path), 3) == 3
    assert epoch.raise_to(str(tmp_path), 2) == 3 and epoch.read(str(tmp_path)) == 3
    (tmp_path / "epoch").write_text("9" * 40)
    assert epoch.read(str(tmp_path)) == 0
    with pytest.raises(ValueError):
        epoch.raise_to(str(tmp_path), -1)


# --------------------------------------------------------- daemons: failover


HOSTS = ("manager", "mgr2", "node1")


@pytest.fixture
def pair(tmp_path):
    """A manager, a standby and a node, each running from its own copy of the definition."""
    config = sync_cluster(tmp_path, nodes=1, prefix="127.86.5")
    text = config.read_text() + STANDBY.format(name="mgr2", ip="127.86.5.2", root=tmp_path / "mgr2")
    config.write_text(text + '\n[dns]\nenabled = false\n\n[panel]\nenabled = false\n'
                      '\n[vrrp]\nenabled = false\n')  # promoted by hand here
    copies = {"manager": config}
    for host in HOSTS[1:]:
        copies[host] = tmp_path / f"{host}.toml"
        shutil.copy(config, copies[host])
    daemons = {h: Daemon(copies[h], host=h).start() for h in HOSTS}
    try:
        yield daemons, copies
    finally:
        for daemon in daemons.values():
            daemon.stop()


def status(daemon: Daemon) -> dict:
    return daemon.query("status")


def promote(copies, host: str):
    done = cli("manager", "promote", host, "-c", str(copies[host]))
    assert done.returncode == 0, done.stderr
    return done


def test_promotion_failover_and_the_stale_managers_return(pair, tmp_path):
    daemons, copies = pair
    # Both managers wait as standbys until one is promoted: nobody replicates yet.
    for name in ("manager", "mgr2"):
        assert status(daemons[name])["role"] == "standby"
        assert "nodes" not in status(daemons[name]).get("sync", {})
    promote(copies, "manager")
    wait_for(lambda: status(daemons["manager"])["role"] == "manager", what="manager acting")
    assert status(daemons["manager"])["managers"]["epoch"] == 1
    # The standby is a replication target like the node: files and the definition (epoch 1).
    (tmp_path / "manager/srv/data/before").write_text("from the first manager")
    for host in ("mgr2", "node1"):
        wait_for(lambda: (tmp_path / host / "srv/data/before").exists(), what=f"file on {host}")
        wait_for(lambda: status(daemons[host])["definition"].get("epoch") == 1, timeout=20,
                 what=f"epoch 1 on {host}")
    assert "mgr2" in status(daemons["manager"])["sync"]["nodes"]

    # The manager dies; the standby is promoted: epoch 2, it is [manager] in its own file.
    daemons["manager"].signal(signal.SIGKILL)
    daemons["manager"].proc.wait(10)
    promote(copies, "mgr2")
    wait_for(lambda: status(daemons["mgr2"])["role"] == "manager", what="mgr2 acting")
    assert status(daemons["mgr2"])["managers"]["epoch"] == 2
    mine = tomllib.loads(copies["mgr2"].read_text())
    assert mine["manager"]["name"] == "mgr2" and mine["manager"]["public_ips"] == ["127.86.5.100"]
    assert [s["name"] for s in mine["standby"]] == ["manager"]
    # It replicates now: a new file reaches the node, and the node runs its definition.
    (tmp_path / "mgr2/srv/data/after").write_text("from the new manager")
    wait_for(lambda: (tmp_path / "node1/srv/data/after").exists(), what="file from mgr2 on node1")
    wait_for(lambda: tomllib.loads(copies["node1"].read_text())["manager"]["name"] == "mgr2",
             timeout=20, what="node1 runs the new manager's definition")
    assert status(daemons["node1"])["definition"]["epoch"] == 2

    # The old manager comes back with its old file: it waits as standby, takes epoch 2 and
    # the new definition from the new manager, and gives no orders.
    daemons["manager"] = Daemon(copies["manager"], host="manager").start()
    assert status(daemons["manager"])["role"] == "standby"
    wait_for(lambda: tomllib.loads(copies["manager"].read_text())["manager"]["name"] == "mgr2",
             timeout=20, what="the old manager takes the new definition")
    assert epoch.read(str(tmp_path / "state" / "manager")) == 2
    assert status(daemons["manager"])["role"] == "standby"
    wait_for(lambda: (tmp_path / "manager/srv/data/after").exists(), what="the new file on the old one")


def test_a_node_refuses_a_view_from_a_lower_epoch(pair, tmp_path):
    daemons, copies = pair
    promote(copies, "manager")
    wait_for(lambda: status(daemons["node1"])["definition"].get("epoch") == 1, timeout=20,
             what="epoch 1 on node1")
    daemons["manager"].stop()
    promote(copies, "mgr2")
    wait_for(lambda: status(daemons["node1"])["definition"].get("epoch") == 2, timeout=20,
             what="epoch 2 on node1")
    # A view of the old manager's (epoch 1) with a newer serial lands on the node, as a push of
    # a manager cut off during the failover would: the node keeps running the epoch-2 one.
    inbox = tmp_path / "node1" / str(tmp_path / "state").lstrip("/") / definition.FOLDER / definition.FILE
    current = definition.parse_view(inbox.read_text())
    stale = definition.render(current.body.replace('"mgr2"', '"mgr2" # stale'), current.serial + 10,
                              "manager", "0" * 16, current.time + 10, epoch=1)
    daemons["node1"].stop()
    inbox.write_text(stale)
    daemons["node1"].start()
    shown = wait_for(lambda: (s := status(daemons["node1"])["definition"])["state"].startswith("refused")
                     and s, what="the stale view refused")
    assert "epoch 1 of manager is lower than the highest seen, 2" in shown["state"]
    assert "stale" not in copies["node1"].read_text()


def test_a_demoted_manager_stops_replicating_and_answers_only_its_roles_commands(pair, tmp_path):
    daemons, copies = pair
    promote(copies, "manager")
    wait_for(lambda: status(daemons["manager"])["role"] == "manager", what="manager acting")
    assert "mgr2" in daemons["manager"].query("sync_status")["nodes"]
    demoted = cli("manager", "demote", "-c", str(copies["manager"]))
    assert demoted.returncode == 0, demoted.stderr
    wait_for(lambda: status(daemons["manager"])["role"] == "standby", what="manager demoted")
    with pytest.raises(ControlError, match="unknown command 'sync_status'"):
        daemons["manager"].query("sync_status")
    (tmp_path / "manager/srv/data/late").write_text("written on a demoted manager")
    time.sleep(1.0)  # replication takes milliseconds: nobody replicates it
    assert not (tmp_path / "node1/srv/data/late").exists()
    assert status(daemons["manager"])["managers"]["epoch"] == 1  # a demotion takes no epoch
    again = cli("manager", "promote", "-c", str(copies["manager"]))
    assert again.returncode == 0, again.stderr
    wait_for(lambda: status(daemons["manager"])["role"] == "manager", what="promoted again")
    assert status(daemons["manager"])["managers"]["epoch"] == 2
    wait_for(lambda: (tmp_path / "node1/srv/data/late").exists(), what="its tree replicated again")


def test_a_returning_manager_reports_what_it_never_delivered(pair, tmp_path):
    daemons, copies = pair
    promote(copies, "manager")
    wait_for(lambda: status(daemons["manager"])["role"] == "manager", what="manager acting")
    wait_for(lambda: (tmp_path / "mgr2/srv/data").is_dir(), what="the set on the standby")
    daemons["mgr2"].stop()
    shutil.rmtree(tmp_path / "mgr2/srv/data")
    (tmp_path / "mgr2/srv/data").write_text("not a directory: the standby cannot take the set")
    (tmp_path / "manager/srv/data/lost.txt").write_text("written just before the crash")
    wait_for(lambda: (tmp_path / "node1/srv/data/lost.txt").exists(), what="lost.txt on node1")
    daemons["manager"].signal(signal.SIGKILL)
    daemons["manager"].proc.wait(10)
    (tmp_path / "mgr2/srv/data").unlink()
    (tmp_path / "mgr2/srv/data").mkdir()
    daemons["mgr2"].start()
    promote(copies, "mgr2")
    wait_for(lambda: status(daemons["mgr2"])["role"] == "manager", what="mgr2 acting")
    daemons["manager"] = Daemon(copies["manager"], host="manager").start()
    shown = status(daemons["manager"])["managers"]
    assert shown["unsent"] == {"data": ["lost.txt"]}
    summary = cli("status", "--as", "manager", "-c", str(copies["manager"]))
    assert "set data: 1 path(s) written here were not delivered everywhere" in summary.stdout
    assert "lost.txt" in (tmp_path / "daemon-manager.log").read_text()


# ------------------------------------------------- the manager's own state travels


def inbox(tmp_path, host: str):
    """Where ``host`` keeps its copy of the manager's state (under its root)."""
    return tmp_path / host / str(tmp_path / "state").lstrip("/") / state.FOLDER


def text(path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def pending_rows(path) -> set[tuple]:
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(n, s, bytes(p).decode()) for n, s, p in db.execute("SELECT node, sset, path FROM dirty")}
    except sqlite3.DatabaseError:
        return set()
    finally:
        db.close()


def test_the_managers_ca_panel_data_and_queue_move_with_the_role(pair, tmp_path, pm):
    """The standby receives the CA (0600 key), panel.sqlite and the replication queue; once
    promoted it issues node tokens and certificates under the same CA, knows the old manager's
    join tokens, and delivers a change the old manager had recorded but not yet sent."""
    from clusterkit_panel import pki
    from clusterkit_panel.store import Store

    daemons, copies = pair
    cluster = load_cluster(copies["manager"], pm)
    ca = pki.init_cluster_ca(cluster)                # what `clusterkit init` does
    node_cert = pki.enroll_local(cluster, "node1")   # a node the old manager enrolled
    store = Store(str(tmp_path / "state" / "manager"))
    store.add_join_token("s3cret-token", "node1", 3600)
    store.close()
    promote(copies, "manager")
    wait_for(lambda: status(daemons["manager"])["role"] == "manager", what="manager acting")
    # A file whose new version has the old one's size and mtime: only the queue's explicit
    # entry (sent with --ignore-times) delivers it; a full sync's quick check does not.
    (tmp_path / "manager/srv/data/f").write_text("aaaa")
    os.utime(tmp_path / "manager/srv/data/f", (1_700_000_000, 1_700_000_000))
    wait_for(lambda: (tmp_path / "node1/srv/data/f").exists(), what="f on node1")
    shutil.move(tmp_path / "node1/srv/data", tmp_path / "node1-data")
    (tmp_path / "node1/srv/data").write_text("not a directory: node1 cannot take the set now")
    (tmp_path / "manager/srv/data/f").write_text("bbbb")
    os.utime(tmp_path / "manager/srv/data/f", (1_700_000_000, 1_700_000_000))
    wait_for(lambda: text(tmp_path / "mgr2/srv/data/f") == "bbbb", what="f on mgr2")
    copy = inbox(tmp_path, "mgr2")
    wait_for(lambda: ("node1", "data", "f") in pending_rows(copy / "sync.sqlite"),
             timeout=20, what="node1's pending change in the standby's copy of the queue")
    assert stat.S_IMODE((copy / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    shown = status(daemons["manager"])["managers"]["state"]
    assert shown["role"] == "source" and "mgr2" in shown["standbys"]
    summary = cli("status", "--as", "manager", "-c", str(copies["manager"]))
    assert "manager state (CA, panel, queues) to the standbys: mgr2 lag" in summary.stdout
    summary = cli("status", "--as", "mgr2", "-c", str(copies["mgr2"]))
    assert "manager state: a copy from manager (epoch 1)" in summary.stdout
    assert status(daemons["mgr2"])["managers"]["state"]["from"] == "manager"
    # Nothing of it reaches a node.
    assert not inbox(tmp_path, "node1").exists()

    daemons["manager"].signal(signal.SIGKILL)
    daemons["manager"].proc.wait(10)
    (tmp_path / "node1/srv/data").unlink()
    shutil.move(tmp_path / "node1-data", tmp_path / "node1/srv/data")
    assert (tmp_path / "node1/srv/data/f").read_text() == "aaaa"
    promote(copies, "mgr2")
    wait_for(lambda: status(daemons["mgr2"])["role"] == "manager", what="mgr2 acting")
    wait_for(lambda: text(tmp_path / "node1/srv/data/f") == "bbbb", timeout=20,
             what="the old manager's pending change delivered by the new one")

    mine = tmp_path / "state" / "mgr2" / "pki"
    assert stat.S_IMODE((mine / "ca.key").stat().st_mode) == 0o600
    new_ca = pki.load_cert(str(mine / "ca.crt"))
    assert pki.fingerprint(new_ca) == pki.fingerprint(ca)
    node_cert.verify_directly_issued_by(new_ca)  # an existing node's certificate verifies
    _, csr = pki.make_csr("node1")
    pki.sign_host(str(tmp_path / "state" / "mgr2"), csr, "node1", "127.86.5.11") \
        .verify_directly_issued_by(ca)           # and one it issues verifies under the old CA
    token = cli("node", "token", "node1", "-c", str(copies["mgr2"]), "--json")
    assert token.returncode == 0, token.stderr
    store = Store(str(tmp_path / "state" / "mgr2"))
    try:
        store.use_join_token("s3cret-token", "node1")  # issued by the old manager
        assert any(row["name"] == "node1" for row in store.certs())
    finally:
        store.close()


# ------------------------------------------------------ a stale manager never pushes


def digests(tree) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}


def test_a_stale_managers_push_of_a_deletion_is_refused(pair, tmp_path):
    """The manager freezes while acting under epoch 1; mgr2 takes over (epoch 2) and node1
    follows it. The old manager wakes up still acting and deletes a file: its push is
    refused (node1 and mgr2 have seen epoch 2), node1's tree is unchanged, the refusal is in
    its sync status and its log, and it stands down."""
    daemons, copies = pair
    for name in ("one", "two"):
        (tmp_path / "manager/srv/data" / name).write_text(f"file {name}")
    promote(copies, "manager")
    wait_for(lambda: text(tmp_path / "node1/srv/data/two") == "file two", what="files on node1")
    wait_for(lambda: status(daemons["mgr2"])["definition"].get("epoch") == 1, timeout=20,
             what="epoch 1 on mgr2")  # else its promotion would take epoch 1 as well
    daemons["manager"].signal(signal.SIGSTOP)
    try:
        promote(copies, "mgr2")
        wait_for(lambda: status(daemons["node1"])["definition"].get("epoch") == 2, timeout=20,
                 what="node1 under epoch 2")
        wait_for(lambda: status(daemons["mgr2"])["sync"]["nodes"]["manager"]["pending"] == 0,
                 what="mgr2's full sync to the old manager's tree")
        before = digests(tmp_path / "node1/srv/data")
        (tmp_path / "manager/srv/data/one").unlink()  # seen by the old manager when it wakes
    finally:
        daemons["manager"].signal(signal.SIGCONT)
    shown = wait_for(lambda: (s := daemons["manager"].query("status", check=False)) and
                     s["role"] == "standby" and s, timeout=20, what="the stale manager standing down")
    log = (tmp_path / "daemon-manager.log").read_text()
    assert "clusterkit epoch check refused: the push carries epoch 1, this host has seen 2" in log
    assert "stands down" in log
    time.sleep(1.0)
    assert digests(tmp_path / "node1/srv/data") == before  # "one" is still there
    assert (tmp_path / "node1/srv/data/one").read_text() == "file one"
    wait_for(lambda: status(daemons["manager"])["managers"]["epoch"] == 2,
             what="the old manager following the new one's epoch")
    assert "refused the push" in shown["managers"]["stood_down"]
    assert epoch.read(str(tmp_path / "state" / "manager")) == 2  # learnt from the refusal


def fence(state_dir, *args, stdin="", env=None):
    return subprocess.run([sys.executable, "-m", "clusterkit.standby.fence", *args, str(state_dir)],
                          input=stdin, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


def test_the_receivers_epoch_check_for_rsyncd_and_ssh(tmp_path):
    """rsyncd's early exec gets the pusher's epoch file on stdin; an ssh forced command gets
    ``CLUSTERKIT_EPOCH=N command``: a lower epoch than the host has seen is refused."""
    epoch.raise_to(str(tmp_path), 2)
    refused = fence(tmp_path, stdin="1\n")
    assert refused.returncode == 1
    assert "the push carries epoch 1, this host has seen 2" in refused.stderr
    assert fence(tmp_path, stdin="2\n").returncode == 0
    assert fence(tmp_path, stdin="3\n").returncode == 0
    assert fence(tmp_path, stdin="").returncode == 0  # says no epoch: sync verify's dry runs
    for bad in ("1; rm -rf /", "-1", "9" * 40, "\x00"):
        assert fence(tmp_path, stdin=bad).returncode == 1, bad
    assert fence("relative/dir", stdin="2").returncode == 2
    stale = fence(tmp_path, "--ssh", env={"SSH_ORIGINAL_COMMAND": "CLUSTERKIT_EPOCH=1 echo ran"})
    assert stale.returncode == 1 and "ran" not in stale.stdout
    current = fence(tmp_path, "--ssh", env={"SSH_ORIGINAL_COMMAND": "CLUSTERKIT_EPOCH=2 echo ran"})
    assert current.returncode == 0 and current.stdout == "ran\n"


def test_the_ssh_and_rsyncd_transports_send_the_managers_epoch(pm, tmp_path):
    """What the receivers check: the rsync arguments of a manager daemon under epoch 3."""
    from clusterkit_transports import rsyncd, ssh

    path = write_cluster(tmp_path / "c.toml", "127.86.9", nodes=1)
    cluster = load_cluster(path, pm)
    runtime = types.SimpleNamespace(state_dir=str(tmp_path / "state"), components={})
    (tmp_path / "state").mkdir()
    node = cluster.host("node1")
    assert not any(a.startswith("--early-input") for a in rsyncd.KIND.rsync_args(node, runtime))
    epoch.raise_to(runtime.state_dir, 3)
    assert f"--early-input={tmp_path}/state/epoch" in rsyncd.KIND.rsync_args(node, runtime)
    assert not any(a.startswith("--rsync-path") for a in ssh.KIND.rsync_args(node, None))
    assert ssh._epoch_prefix(runtime) == "CLUSTERKIT_EPOCH=3 "  # before rsync and renames


# ------------------------------------------------------------ the panel moves too


def test_the_panel_answers_on_the_new_manager_and_the_old_one_takes_no_writes(tmp_path, pm):
    """With the panel on both managers: after a failover the new manager's panel serves the
    operators' API token and the nodes' mutual TLS (the replicated CA and certificate
    records); the old manager, back as standby, refuses changes."""
    from clusterkit_panel import pki
    from clusterkit_panel.accounts import Accounts
    from test_panel_fixtures import Client, free_ports

    prefix = "127.86.6"
    ips = {"manager": f"{prefix}.1", "mgr2": f"{prefix}.2", "node1": f"{prefix}.11"}
    https, http = free_ports(list(ips.values()), 2)
    config = sync_cluster(tmp_path, nodes=1, prefix=prefix)
    config.write_text(config.read_text() + STANDBY.format(name="mgr2", ip=ips["mgr2"], root=tmp_path / "mgr2")
                      + f'\n[dns]\nenabled = false\n\n[vrrp]\nenabled = false\n\n[panel]\n'
                        f'https_port = {https}\nhttp_port = {http}\npoll_interval = 0.3\nretry_max = 0.3\n')
    cluster = load_cluster(config, pm)
    pki.init_cluster_ca(cluster)
    for host in ("mgr2", "node1"):  # one machine: enrolled directly, recorded by the manager
        pki.enroll_local(cluster, host)
    data = tmp_path / "manager" / "var/lib/clusterkit-panel"
    data.mkdir(parents=True)
    token = Accounts(str(data)).create_token("ops")
    copies = {"manager": config}
    for host in ("mgr2", "node1"):
        copies[host] = tmp_path / f"{host}.toml"
        shutil.copy(config, copies[host])
    daemons = {h: Daemon(copies[h], host=h).start() for h in ("manager", "mgr2", "node1")}
    ca = ssl.create_default_context(cafile=str(tmp_path / "state/manager/pki/ca.crt"))

    def api(host, method, path, body=None):
        client = Client(ips[host], https, ca)
        client.headers["Authorization"] = f"Bearer {token}"
        try:
            return client.request(method, path, body)
        except OSError as exc:
            return 0, str(exc)

    try:
        promote(copies, "manager")
        wait_for(lambda: api("manager", "GET", "/api/v1/nodes")[0] == 200, timeout=20,
                 what="the manager's panel")
        wait_for(lambda: status(daemons["manager"])["sync"]["nodes"]["mgr2"]["pending"] == 0,
                 timeout=20, what="everything of the manager's on mgr2")
        wait_for(lambda: {"ca.key", "panel.sqlite"} <= set(
            (status(daemons["mgr2"])["managers"]["state"] or {}).get("files") or ()),
            timeout=20, what="the manager's state on mgr2")
        daemons["manager"].signal(signal.SIGKILL)
        daemons["manager"].proc.wait(10)
        promote(copies, "mgr2")
        wait_for(lambda: status(daemons["mgr2"])["role"] == "manager", what="mgr2 acting")
        listed = wait_for(lambda: (r := api("mgr2", "GET", "/api/v1/nodes"))[0] == 200 and r,
                          timeout=20, what="the new manager's panel serving the API token")
        assert "node1" in json.dumps(listed[1])
        as_node = Client(ips["mgr2"], https, pki.client_context(pki.Paths.of(str(tmp_path / "state/node1"))))
        said, body = as_node.post("/control/v1/hello", {})
        assert said == 200 and body == {"hello": "node1", "manager": "mgr2"}  # mutual TLS
        assert pki.fingerprint(pki.load_cert(str(tmp_path / "state/mgr2/pki/ca.crt"))) == \
            pki.fingerprint(pki.load_cert(str(tmp_path / "state/manager/pki/ca.crt")))

        daemons["manager"] = Daemon(copies["manager"], host="manager").start()
        assert status(daemons["manager"])["role"] == "standby"
        wait_for(lambda: api("manager", "GET", "/api/v1/nodes")[0] in (200, 403), timeout=20,
                 what="the old manager's panel, as a standby's")
        said, body = api("manager", "POST", "/api/v1/nodes/node1/operator", {"action": "drain"})
        assert said == 403 and "read-only" in body["error"], (said, body)
        said, body = as_node.post("/control/v1/hello", {})  # mgr2 still serves the nodes
        assert said == 200
    finally:
        for daemon in daemons.values():
            daemon.stop()
