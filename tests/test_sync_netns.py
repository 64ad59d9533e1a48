"""Replication across hosts in network namespaces, with the rsyncd and ssh transports.

The manager daemon runs in its own namespace; each node namespace runs a
real rsync daemon (configured by ``clusterkit sync rsyncd-conf``) or a real
sshd. The namespaces share this machine's filesystem, so every node's
``root`` is a directory here and trees are compared directly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sync_support import CLUSTERKIT, Daemon, differences, wait_identical, wait_settled, write_tree

SET = "/srv/www"
FAST = "options = { sync_contimeout = 2, sync_timeout = 5, sync_backoff_max = 2.0 }"


def cluster_file(tmp: Path, net, transport: str, node_options: dict[str, str]) -> Path:
    text = (f'[cluster]\nname = "ns"\nstate_dir = "{tmp}/state"\n\n'
            f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\nroot = "{tmp}/manager"\n{FAST}\n')
    for node in ("node1", "node2"):
        opts = ", ".join(f'{k} = "{v}"' for k, v in node_options[node].items())
        text += (f'\n[[node]]\nname = "{node}"\nip = "{net.ip(node)}"\ntransport = "{transport}"\n'
                 f'root = "{tmp}/{node}"\noptions = {{ {opts} }}\n')
    text += f'\n[[sync]]\nname = "www"\npath = "{SET}"\nexclude = ["*.swp"]\n'
    path = tmp / "cluster.toml"
    path.write_text(text)
    (tmp / "manager" / SET.lstrip("/")).mkdir(parents=True)
    for node in ("node1", "node2"):
        (tmp / node).mkdir()
    return path


def src(tmp: Path) -> Path:
    return tmp / "manager" / SET.lstrip("/")


def dst(tmp: Path, node: str) -> Path:
    return tmp / node / SET.lstrip("/")


def start_rsyncd(net, tmp: Path) -> Path:
    options = {n: {"password_file": str(tmp / f"{n}.password")} for n in ("node1", "node2")}
    config = cluster_file(tmp, net, "rsyncd", options)
    for node in ("node1", "node2"):
        out = tmp / f"{node}-rsyncd"
        subprocess.run([*CLUSTERKIT, "sync", "rsyncd-conf", node, "-c", str(config), "--output", str(out),
                        "--secrets-path", str(out / "rsyncd.secrets")], check=True, capture_output=True)
        assert (tmp / f"{node}.password").stat().st_mode & 0o777 == 0o600
        net.popen(node, ["rsync", "--daemon", "--no-detach", f"--config={out}/rsyncd.conf",
                         f"--log-file={out}/log"])
        net.wait_port("manager", net.ip(node), 873)
    return config


def start_sshd(net, tmp: Path) -> Path:
    keys = tmp / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "manager")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host")], check=True)
    shutil.copy(keys / "manager.pub", keys / "authorized_keys")
    os.makedirs("/run/sshd", exist_ok=True)
    options = {n: {"key": str(keys / "manager"), "known_hosts": str(keys / "known_hosts"), "user": "root"}
               for n in ("node1", "node2")}
    config = cluster_file(tmp, net, "ssh", options)
    for node in ("node1", "node2"):
        conf = tmp / f"{node}-sshd_config"
        conf.write_text(f"ListenAddress {net.ip(node)}\nPort 22\nHostKey {keys}/host\nPidFile none\n"
                        f"AuthorizedKeysFile {keys}/authorized_keys\nStrictModes no\nUsePAM no\n"
                        "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"
                        # root's shell reads $HOME/.bashrc: not this machine's (a slow one costs
                        # every session its start-up, a stale pyenv lock hangs it)
                        f"SetEnv HOME={keys}\n")
        net.popen(node, ["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
                  stderr=open(tmp / f"{node}-sshd.log", "w"))
        net.wait_port("manager", net.ip(node), 22)
    probe = ["ssh", "-i", str(keys / "manager"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", f"UserKnownHostsFile={keys}/known_hosts", f"root@{net.ip('node1')}", "true"]
    try:
        net.run("manager", probe, timeout=15)
    except subprocess.TimeoutExpired:
        # sshd runs the command through root's login shell: seen here when a stale pyenv
        # rehash lock (~/.pyenv/shims/.pyenv-shim) made every ~/.bashrc wait 60 s
        pytest.skip("`ssh root@node true` does not finish in 15 s: root's shell start-up hangs "
                    "on this machine (check ~/.bashrc)")
    return config


@pytest.fixture(params=["rsyncd", "ssh"])
def setup(request, netns, tmp_path):
    if request.param == "ssh" and not shutil.which("sshd", path="/usr/sbin:/usr/bin"):
        pytest.skip("sshd is not installed (openssh-server)")
    net = netns(["manager", "node1", "node2"])
    config = start_rsyncd(net, tmp_path) if request.param == "rsyncd" else start_sshd(net, tmp_path)
    return net, config


def test_node_cut_off_during_changes_catches_up(setup, tmp_path):
    net, config = setup
    with Daemon(config, wrap=["ip", "netns", "exec", net.ns("manager")]) as daemon:
        (src(tmp_path) / "before").write_text("x")
        (src(tmp_path) / "editor.swp").write_text("excluded")
        wait_identical(src(tmp_path), [dst(tmp_path, "node1"), dst(tmp_path, "node2")],
                       exclude=("*.swp",))
        assert not (dst(tmp_path, "node1") / "editor.swp").exists()
        net.cut("node1")
        for i in range(1000):  # 1,000 changes: creates, rewrites, deletes
            p = src(tmp_path) / f"d{i % 10}" / f"f{i}"
            p.parent.mkdir(exist_ok=True)
            p.write_text(str(i))
            if i % 7 == 0:
                p.write_text(f"rewritten {i}")
            if i % 11 == 0:
                p.unlink()
        wait_identical(src(tmp_path), [dst(tmp_path, "node2")], timeout=60, exclude=("*.swp",))
        assert differences(src(tmp_path), dst(tmp_path, "node1"), ("*.swp",))
        node1 = daemon.query("sync_status")["nodes"]["node1"]
        assert node1["pending"] > 0
        net.restore("node1")
        wait_identical(src(tmp_path), [dst(tmp_path, "node1")], timeout=60, exclude=("*.swp",))
        # verify from the root namespace cannot reach 10.x: run it where the manager is
        result = net.run("manager", [*CLUSTERKIT, "sync", "verify", "-c", str(config)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "node1 www: identical" in result.stdout
        # a renamed directory: over ssh it is renamed on the node (same inode), not copied
        inode = os.stat(dst(tmp_path, "node2") / "d1" / "f1").st_ino
        os.rename(src(tmp_path) / "d1", src(tmp_path) / "renamed")
        wait_identical(src(tmp_path), [dst(tmp_path, "node1"), dst(tmp_path, "node2")],
                       exclude=("*.swp",))
        if 'transport = "ssh"' in config.read_text():
            assert os.stat(dst(tmp_path, "node2") / "renamed" / "f1").st_ino == inode


def test_manager_killed_mid_burst_converges(setup, tmp_path):
    net, config = setup
    daemon = Daemon(config, wrap=["ip", "netns", "exec", net.ns("manager")]).start()
    try:
        writer = threading.Thread(target=write_tree, args=(src(tmp_path), 2000, 20))
        writer.start()
        time.sleep(0.2)
        daemon.signal(signal.SIGKILL)
        daemon.proc.wait(10)
        writer.join()
        daemon.start()
        wait_identical(src(tmp_path), [dst(tmp_path, "node1"), dst(tmp_path, "node2")], timeout=90)
        wait_settled(daemon)
        # a difference made on a node is found by verify (exit 1), and sync now repairs it
        (dst(tmp_path, "node2") / "d000" / "f000000").write_text("tampered")
        bad = net.run("manager", [*CLUSTERKIT, "sync", "verify", "node2", "-c", str(config)])
        assert bad.returncode == 1 and "d000/f000000" in bad.stdout, bad.stdout
        now = net.run("manager", [*CLUSTERKIT, "sync", "now", "node2", "--wait", "-c", str(config), "--timeout", "60"])
        assert now.returncode == 0, now.stdout + now.stderr
        good = net.run("manager", [*CLUSTERKIT, "sync", "verify", "node2", "-c", str(config)])
        assert good.returncode == 0, good.stdout
    finally:
        daemon.stop()
