"""The transports between real hosts (network namespaces): ssh's master connection, rsyncd's config.

ssh: batches share one authenticated connection per node (the node's sshd
sees no new login per batch), a killed master costs one direct batch and is
started again. rsyncd: a node whose options name ``rsyncd_conf`` keeps that
file equal to its definition, so a new sync set is offered by the node's
rsync daemon without an operator.

Test names are short on purpose: the master's socket lives in the state
directory under pytest's tmp_path and must fit a unix socket path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from support import wait_for
from sync_support import CLUSTERKIT, Daemon, wait_identical
from test_sync_netns import dst, src, start_sshd

MANAGER_NS = ["ip", "netns", "exec"]


def logins(tmp: Path, node: str) -> int:
    """How many ssh connections the node's sshd authenticated."""
    return (tmp / f"{node}-sshd.log").read_text().count("Accepted publickey")


def master(daemon: Daemon, node: str) -> dict:
    return (daemon.query("status").get("ssh") or {}).get(node, {})


def land(tmp: Path, name: str, nodes=("node1", "node2")) -> None:
    (src(tmp) / name).write_text(name)
    for node in nodes:
        wait_for(lambda n=node: (dst(tmp, n) / name).exists(), 30, f"{name} on {node}")


@pytest.fixture
def sshnet(netns, tmp_path):
    if not shutil.which("sshd", path="/usr/sbin:/usr/bin"):
        pytest.skip("sshd is not installed (openssh-server)")
    net = netns(["manager", "node1", "node2"])
    return net, start_sshd(net, tmp_path)


def test_ssh_mux(sshnet, tmp_path):
    net, config = sshnet
    with Daemon(config, wrap=[*MANAGER_NS, net.ns("manager")]) as daemon:
        land(tmp_path, "first")
        up = wait_for(lambda: master(daemon, "node1").get("master") == "up"
                      and master(daemon, "node1"), 20, "node1's master")
        sock = up["socket"]
        assert os.path.exists(sock) and sock.startswith(str(tmp_path / "state" / "manager" / "ssh"))
        assert oct(os.stat(os.path.dirname(sock)).st_mode & 0o777) == "0o700"
        key = tmp_path / "keys"
        check = net.run("manager", ["ssh", "-i", str(key / "manager"), "-o", f"ControlPath={sock}",
                                    "-O", "check", f"root@{net.ip('node1')}"])
        assert check.returncode == 0 and f"pid={up['pid']}" in check.stderr, check.stderr

        before = logins(tmp_path, "node1")
        assert before >= 2  # the probe, the master (and the log says so: the count can move)
        for i in range(6):  # six batches, one after the other
            land(tmp_path, f"batch{i}", nodes=("node1",))
        assert logins(tmp_path, "node1") == before, "a batch opened its own ssh connection"
        assert master(daemon, "node1")["pid"] == up["pid"]

        # a renamed directory goes through the master too (ssh mv on the node)
        (src(tmp_path) / "d").mkdir()
        (src(tmp_path) / "d" / "f").write_text("x")
        wait_identical(src(tmp_path), [dst(tmp_path, "node1")])
        inode = os.stat(dst(tmp_path, "node1") / "d" / "f").st_ino
        os.rename(src(tmp_path) / "d", src(tmp_path) / "e")
        wait_identical(src(tmp_path), [dst(tmp_path, "node1")])
        assert os.stat(dst(tmp_path, "node1") / "e" / "f").st_ino == inode
        assert logins(tmp_path, "node1") == before

        os.kill(up["pid"], signal.SIGKILL)  # the master dies: replication does not wait for it
        land(tmp_path, "after-kill")
        again = wait_for(lambda: master(daemon, "node1").get("master") == "up"
                         and master(daemon, "node1")["pid"] != up["pid"]
                         and master(daemon, "node1"), 20, "a new master")
        assert again["starts"] == 2 and again["socket"] == sock
        after = logins(tmp_path, "node1")
        land(tmp_path, "on-new-master", nodes=("node1",))
        assert logins(tmp_path, "node1") == after
        log = daemon.log.read_text()
        assert "ssh master to node1" in log and "is gone" in log
        pid = again["pid"]

        node2 = master(daemon, "node2")  # a removed node's master is closed at the reload
        assert node2["master"] == "up" and os.path.exists(node2["socket"])
        removed = subprocess.run([*CLUSTERKIT, "node", "remove", "node2", "-c", str(config)],
                                 capture_output=True, text=True)
        assert removed.returncode == 0, removed.stderr
        wait_for(lambda: not os.path.exists(node2["socket"]), 10, "node2's master closed")
        assert "node2" not in daemon.query("status")["ssh"]
    # the daemon stopped: its masters are closed (ssh -O exit), sockets gone
    assert not os.path.exists(sock)
    assert not os.path.exists(f"/proc/{pid}") or b"[mux]" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_ssh_nomux(sshnet, tmp_path):
    """Without a usable master (state_dir too long for a socket) batches connect directly, and say so."""
    net, config = sshnet
    deep = tmp_path / ("d" * 30)  # its control.sock fits, a master socket would not
    text = config.read_text().replace(f'state_dir = "{tmp_path}/state"', f'state_dir = "{deep}"')
    config.write_text(text)
    with Daemon(config, wrap=[*MANAGER_NS, net.ns("manager")]) as daemon:
        before = logins(tmp_path, "node1")
        land(tmp_path, "one")
        land(tmp_path, "two")
        assert logins(tmp_path, "node1") >= before + 2  # a connection per batch
        status = master(daemon, "node1")
        assert status["master"] == "direct" and "use a shorter state_dir" in status["reason"]
        assert "without a master connection" in daemon.log.read_text()


def test_rsyncd_conf_follows_definition(netns, tmp_path):
    """The node's daemon writes its rsyncd.conf; a new sync set is offered without an operator."""
    net = netns(["manager", "node1"])
    conf, secrets = tmp_path / "node1-etc" / "rsyncd.conf", tmp_path / "node1-etc" / "rsyncd.secrets"
    conf.parent.mkdir()
    config = tmp_path / "cluster.toml"
    (tmp_path / "manager" / "srv" / "www").mkdir(parents=True)
    (tmp_path / "node1").mkdir()
    config.write_text(
        f'[cluster]\nname = "lab"\nstate_dir = "{tmp_path}/state"\n\n'
        f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\nroot = "{tmp_path}/manager"\n'
        'options = { sync_contimeout = 2, sync_timeout = 5, sync_backoff_max = 1.0 }\n\n'
        f'[[node]]\nname = "node1"\nip = "{net.ip("node1")}"\ntransport = "rsyncd"\n'
        f'root = "{tmp_path}/node1"\n'
        f'options = {{ password_file = "{tmp_path}/node1.password", rsyncd_conf = "{conf}", '
        f'rsyncd_secrets = "{secrets}" }}\n\n'
        '[[sync]]\nname = "www"\npath = "/srv/www"\n')
    # the secrets, once, by the operator's command (the node never writes them)
    out = tmp_path / "out"
    made = subprocess.run([*CLUSTERKIT, "sync", "rsyncd-conf", "node1", "-c", str(config),
                           "--output", str(out)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert f"secrets file = {secrets}" in (out / "rsyncd.conf").read_text()
    shutil.copy(out / "rsyncd.secrets", secrets)
    os.chmod(secrets, 0o600)

    with Daemon(config, host="node1", wrap=[*MANAGER_NS, net.ns("node1")]) as node:
        text = wait_for(lambda: conf.exists() and conf.read_text(), 10, "rsyncd.conf written")
        assert oct(conf.stat().st_mode & 0o777) == "0o644"
        assert "include = /srv/ /srv/www /srv/www/**" in text and "/srv/shared" not in text
        assert text.replace("clusterkit run --as node1", "clusterkit sync rsyncd-conf node1") \
            == (out / "rsyncd.conf").read_text()  # the same file the command writes
        assert node.query("status")["rsyncd_conf"]["error"] == ""
        net.popen("node1", ["rsync", "--daemon", "--no-detach", f"--config={conf}",
                            f"--log-file={tmp_path}/rsyncd.log"])
        net.wait_port("manager", net.ip("node1"), 873)
        with Daemon(config, wrap=[*MANAGER_NS, net.ns("manager")]):
            (tmp_path / "manager" / "srv" / "www" / "a").write_text("a")
            wait_for(lambda: (tmp_path / "node1" / "srv" / "www" / "a").exists(), 30, "www on node1")
            (tmp_path / "manager" / "srv" / "shared").mkdir()
            (tmp_path / "manager" / "srv" / "shared" / "s").write_text("s")
            added = subprocess.run([*CLUSTERKIT, "sync", "add", "shared", "--path", "/srv/shared",
                                    "-c", str(config)], capture_output=True, text=True)
            assert added.returncode == 0, added.stderr
            wait_for(lambda: "/srv/shared/**" in conf.read_text(), 10, "rsyncd.conf updated")
            wait_for(lambda: (tmp_path / "node1" / "srv" / "shared" / "s").exists(), 30,
                     "the new set on node1, through the updated rsyncd.conf")
        assert "wrote " + str(conf) in node.log.read_text()


def test_rsyncd_conf_unwritable(tmp_path):
    """A node that cannot write its rsyncd_conf keeps running and says why in its status."""
    config = tmp_path / "cluster.toml"
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config.write_text(
        f'[cluster]\nname = "lab"\nstate_dir = "{tmp_path}/state"\n\n'
        f'[manager]\nname = "manager"\nip = "127.86.7.1"\nroot = "{tmp_path}/manager"\n\n'
        f'[[node]]\nname = "node1"\nip = "127.86.7.2"\ntransport = "rsyncd"\n'
        f'root = "{tmp_path}/node1"\noptions = {{ rsyncd_conf = "{blocker}/rsyncd.conf" }}\n')
    with Daemon(config, host="node1") as node:
        status = node.query("status")["rsyncd_conf"]
        assert status["error"].startswith(f"cannot write {blocker}/rsyncd.conf")
