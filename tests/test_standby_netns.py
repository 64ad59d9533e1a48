"""Failover across real links: two managers with keepalived, two nginx nodes, a client.

Each manager's daemon runs in its own network namespace with keepalived as
its child; the public IP (the VIP) lives on the interface of the one VRRP
made MASTER. Under a bounded HTTP load from the client, the active manager's
daemon and keepalived are SIGKILLed: the standby takes the VIP and the
manager's role (epoch 2), requests succeed again, and the time until the VIP
answers from the standby is printed (docs/high-availability.md keeps the
measurements). The old manager then returns: it stays standby (nopreempt),
takes the new manager's definition and never replicates. ``clusterkit manager
switchover`` moves the role on purpose, the same way. Needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import subprocess
import tomllib

import pytest

from support import wait_for
from sync_support import CLUSTERKIT, Daemon
from test_health_netns import PORT, start_nginx

NODES = ("node1", "node2")
ADVERT = 1.0
TIMEOUT = 0.5  # each request of the load, connect to answer

LOAD = r"""
import http.client, json, sys, time
vip, port, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
end = time.monotonic() + seconds
with open(out, "w") as f:
    while time.monotonic() < end:
        began = time.time()
        try:
            c = http.client.HTTPConnection(vip, port, timeout=%s)
            c.request("GET", "/")
            r = c.getresponse()
            record = [began, r.status, r.read().decode().strip()]
            c.close()
        except OSError as exc:
            record = [began, 0, type(exc).__name__]
        f.write(json.dumps(record) + "\n")
        f.flush()
        time.sleep(max(0.0, 0.02 - (time.time() - began)))  # at most ~50 requests a second
""" % TIMEOUT


def write_definition(net, tmp_path, vip, advert: float = ADVERT):
    nodes = "".join(f'\n[[node]]\nname = "{n}"\nip = "{net.ip(n)}"\ntransport = "local"\n'
                    f'root = "{tmp_path}/{n}"\n' for n in NODES)
    config = tmp_path / "manager.toml"
    config.write_text(
        f'[cluster]\nname = "ha"\nstate_dir = "{tmp_path}/state"\n\n'
        f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\npublic_ips = ["{vip}"]\nroot = "{tmp_path}/manager"\n\n'
        f'[[standby]]\nname = "standby"\nip = "{net.ip("standby")}"\ntransport = "local"\nroot = "{tmp_path}/standby"\n'
        f'{nodes}\n'
        f'[[policy]]\nvip = "{vip}"\nport = {PORT}\nservice = "http"\nconnect_timeout = 0.3\n'
        f'members = {{ node1 = 1, node2 = 1 }}\n\n'
        f'[policy.check]\nkind = "http"\npath = "/"\ninter = 0.2\ntimeout = 0.3\nrise = 1\nfall = 2\n\n'
        f'[[sync]]\nname = "www"\npath = "/srv/www"\n\n'
        f'[vrrp]\nadvert_int = {advert}\ninterface = "eth0"\n\n'
        f'[dns]\nenabled = false\n\n[panel]\nenabled = false\n')
    copy = tmp_path / "standby.toml"
    shutil.copy(config, copy)
    return {"manager": config, "standby": copy}


def manager(net, files, host) -> Daemon:
    return Daemon(files[host], host=host, wrap=["ip", "netns", "exec", net.ns(host)]).start()


def role(daemon: Daemon) -> str | None:
    shown = daemon.query("status", check=False)
    return shown and shown["role"]


def get(net, vip) -> str:
    probe = net.run("client", [sys.executable, "-c", LOAD, vip, str(PORT), "0.05", "/dev/stdout"])
    return probe.stdout


def keepalived_pids(tmp_path, host) -> list[int]:
    folder = tmp_path / "state" / host / "keepalived"
    return [int((folder / f"{name}.pid").read_text()) for name in ("keepalived", "vrrp")
            if (folder / f"{name}.pid").exists()]


def records(path) -> list[list]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("]")]


@pytest.fixture
def ha(netns, tmp_path, request):
    """Two nginx nodes, both managers started; VRRP has made the manager (priority 254)
    MASTER and it manages under epoch 1, the VIP answering through it. The advert
    interval is the test's parameter, if it has one."""
    advert = getattr(request, "param", ADVERT)
    net = netns(["manager", "standby", *NODES, "client"])
    vip = f"{net.subnet}.100"
    for node in NODES:
        start_nginx(net, node, tmp_path)
    files = write_definition(net, tmp_path, vip, advert)
    for host in ("manager", "standby", *NODES):
        (tmp_path / host / "srv/www").mkdir(parents=True, exist_ok=True)
    daemons = {"manager": manager(net, files, "manager"), "standby": manager(net, files, "standby")}
    try:
        wait_for(lambda: role(daemons["manager"]) == "manager", timeout=20,
                 what="the manager promoted by VRRP")
        assert role(daemons["standby"]) == "standby"
        wait_for(lambda: '200, "node' in get(net, vip), timeout=10, what="the VIP answering")
        assert daemons["manager"].query("status")["managers"]["epoch"] == 1
        yield net, vip, files, daemons, advert
    finally:
        for daemon in daemons.values():
            daemon.stop()


def start_load(net, vip, tmp_path, seconds: float):
    load = tmp_path / "load.jsonl"
    net.popen("client", [sys.executable, "-c", LOAD, vip, str(PORT), str(seconds), str(load)])
    time.sleep(2.0)
    return load


def takeover(load, moved: float, promoted: float, what: str, advert: float) -> float:
    """Wait for the load to run past the promotion; check it; print and return the gap."""
    wait_for(lambda: len(records(load)) and records(load)[-1][0] > promoted + 3, timeout=30,
             what="the load running past the promotion")
    seen = records(load)
    before = [r for r in seen if r[0] + TIMEOUT < moved]  # ended before the move
    after = [r for r in seen if r[0] + TIMEOUT >= moved]
    assert before and all(r[1] == 200 for r in before), before[-5:]
    failed = [r for r in after if r[1] != 200]
    recovered = next(r for r in after if r[1] == 200 and (not failed or r[0] > failed[-1][0]))
    gap = recovered[0] - moved if failed else 0.0
    print(f"\n{what}: the VIP answered from the standby {gap:.2f}s after "
          f"(advert_int {advert:g}s; the standby acting manager {promoted - moved:.2f}s after); "
          f"{len(failed)} of {len(after)} requests failed meanwhile, then 0")
    later = [r for r in after if r[0] >= recovered[0]]
    assert len(later) > 20 and all(r[1] == 200 for r in later), [r for r in later if r[1] != 200][:5]
    assert {r[2] for r in later} == set(NODES)
    return gap


@pytest.mark.parametrize("ha", [1.0, 0.1], indirect=True, ids=["advert-1s", "advert-0.1s"])
def test_failover_by_crash_under_load_and_the_old_manager_returns_as_standby(ha, tmp_path):
    net, vip, files, daemons, advert = ha
    load = start_load(net, vip, tmp_path, 16)
    pids = keepalived_pids(tmp_path, "manager")
    assert len(pids) == 2, pids
    killed = time.time()
    for pid in [daemons["manager"].proc.pid, *pids]:
        os.kill(pid, signal.SIGKILL)
    daemons["manager"].proc.wait(10)
    wait_for(lambda: role(daemons["standby"]) == "manager", timeout=20, what="the standby promoted")
    takeover(load, killed, time.time(), "crash (SIGKILL of the daemon and keepalived)", advert)
    assert daemons["standby"].query("status")["managers"]["epoch"] == 2
    assert tomllib.loads(files["standby"].read_text())["manager"]["name"] == "standby"
    # A file written on the new manager reaches every node, as replication always does.
    written = time.time()
    (tmp_path / "standby/srv/www/after.txt").write_text("written on the new manager")
    wait_for(lambda: all((tmp_path / n / "srv/www/after.txt").exists() for n in NODES),
             timeout=20, what="the new manager's file on every node")
    print(f"a file written on the new manager was on every node {time.time() - written:.3f}s later")

    # The old manager returns with its old file: VRRP leaves the VIP with the standby
    # (nopreempt); it waits as standby, takes epoch 2 and the new definition, replicates nothing.
    daemons["manager"] = manager(net, files, "manager")
    wait_for(lambda: tomllib.loads(files["manager"].read_text())["manager"]["name"] == "standby",
             timeout=20, what="the old manager takes the new definition")
    time.sleep(max(4 * advert, 1.0))  # longer than VRRP's master-down interval
    assert role(daemons["manager"]) == "standby" and role(daemons["standby"]) == "manager"
    shown = daemons["manager"].query("status")
    assert shown["vrrp"]["holds_addresses"] is False and "nodes" not in shown.get("sync", {})
    assert shown["definition"]["epoch"] == 2
    probe = records_of(get(net, vip))
    assert probe and all(r[1] == 200 for r in probe), probe


def test_switchover_moves_the_role_on_purpose(ha, tmp_path):
    net, vip, files, daemons, advert = ha
    load = start_load(net, vip, tmp_path, 14)
    moved = time.time()
    asked = cli("manager", "switchover", "-c", str(files["manager"]), "--as", "manager")
    assert asked.returncode == 0, asked.stderr
    wait_for(lambda: role(daemons["standby"]) == "manager", timeout=20, what="the standby promoted")
    takeover(load, moved, time.time(), "switchover", advert)
    wait_for(lambda: role(daemons["manager"]) == "standby", timeout=10, what="the manager demoted")
    assert daemons["standby"].query("status")["managers"]["epoch"] == 2
    # Once its yield is over, the old manager stays BACKUP: the standby keeps the role.
    wait_for(lambda: not daemons["manager"].query("status")["vrrp"]["yielding"], timeout=15,
             what="the yield over")
    time.sleep(4 * advert)
    assert role(daemons["manager"]) == "standby" and role(daemons["standby"]) == "manager"
    refused = cli("manager", "switchover", "-c", str(files["manager"]), "--as", "manager")
    assert refused.returncode == 1 and "does not act as the manager" in refused.stderr


def cli(*args):
    return subprocess.run([*CLUSTERKIT, *args], capture_output=True, text=True, timeout=60)


def records_of(text: str) -> list[list]:
    return [json.loads(line) for line in text.splitlines() if line.endswith("]")]


def partition(net, on: bool) -> None:
    """The managers stop hearing each other's adverts (nft drops VRRP coming in); their links
    stay up and both still reach the nodes and the client: two MASTERs."""
    rules = ("table inet ckpartition {\n chain input {\n  type filter hook input priority 0;\n"
             "  ip protocol 112 drop\n }\n}\n" if on else "delete table inet ckpartition\n")
    for here in ("manager", "standby"):
        done = net.run(here, ["nft", "-f", "-"], input=rules)
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft to drop VRRP between the managers")
def test_two_managers_acting_at_once_the_higher_epoch_keeps_the_role(ha, tmp_path):
    """The managers cannot hear each other: the standby, hearing no adverts, takes the VIP under
    epoch 2 while the manager still holds it. The new manager's push of the definition reaches
    the old one (local transport: a shared disk), which gives the VIP up and is demoted; once
    they hear each other again it stays standby."""
    net, vip, files, daemons, advert = ha
    partition(net, True)
    wait_for(lambda: role(daemons["standby"]) == "manager", timeout=20, what="the standby promoted")
    assert daemons["standby"].query("status")["managers"]["epoch"] == 2
    wait_for(lambda: role(daemons["manager"]) == "standby", timeout=10,
             what="the old manager giving the role up")
    assert daemons["manager"].query("status")["vrrp"]["yielding"] is True
    wait_for(lambda: daemons["manager"].query("status")["definition"]["epoch"] == 2, timeout=10,
             what="the old manager running under epoch 2")
    partition(net, False)
    wait_for(lambda: not daemons["manager"].query("status")["vrrp"]["yielding"], timeout=15,
             what="the yield over")
    time.sleep(4 * advert)
    assert role(daemons["manager"]) == "standby" and role(daemons["standby"]) == "manager"
    assert tomllib.loads(files["manager"].read_text())["manager"]["name"] == "standby"
    assert daemons["standby"].query("status")["managers"]["epoch"] == 2
    probe = records_of(get(net, vip))
    assert probe and all(r[1] == 200 for r in probe), probe


# ------------------------------------------- rsyncd receivers: the epoch check, hosts allow

FAST = "options = { sync_contimeout = 2, sync_timeout = 5, sync_backoff_max = 1.0 }"
RSYNCD_HOSTS = ("standby", "node1")


def rsyncd_definition(net, tmp_path) -> dict:
    """manager (local files), a standby and a node both reached through their rsync daemons."""
    hosts = "".join(
        f'\n[[{"standby" if h == "standby" else "node"}]]\nname = "{h}"\nip = "{net.ip(h)}"\n'
        f'transport = "rsyncd"\nroot = "{tmp_path}/{h}"\n'
        f'options = {{ password_file = "{tmp_path}/{h}.password"{", sync_contimeout = 2, sync_timeout = 5, sync_backoff_max = 1.0" if h == "standby" else ""} }}\n'
        for h in RSYNCD_HOSTS)
    config = tmp_path / "manager.toml"
    config.write_text(
        f'[cluster]\nname = "fence"\nstate_dir = "{tmp_path}/state"\n\n'
        f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\nroot = "{tmp_path}/manager"\n{FAST}\n'
        f'{hosts}\n[[sync]]\nname = "data"\npath = "/srv/data"\n\n'
        f'[vrrp]\nenabled = false\n\n[dns]\nenabled = false\n\n[panel]\nenabled = false\n')
    (tmp_path / "manager/srv/data").mkdir(parents=True)
    files = {"manager": config}
    for host in RSYNCD_HOSTS:
        (tmp_path / host).mkdir(exist_ok=True)
        out = tmp_path / f"{host}-rsyncd"
        made = cli("sync", "rsyncd-conf", host, "-c", str(config), "--output", str(out),
                   "--secrets-path", str(out / "rsyncd.secrets"))
        assert made.returncode == 0, made.stderr
        conf = (out / "rsyncd.conf").read_text()
        allowed = [net.ip(h) for h in ("manager", "standby") if h != host]
        assert f"hosts allow = {' '.join(allowed)}\n" in conf and "early exec = " in conf
        net.popen(host, ["rsync", "--daemon", "--no-detach", f"--config={out}/rsyncd.conf",
                         f"--log-file={out}/log"], stderr=open(tmp_path / f"{host}-rsyncd.err", "w"))
        net.wait_port("manager", net.ip(host), 873)
        files[host] = tmp_path / f"{host}.toml"
        shutil.copy(config, files[host])
    return files


def tree_digests(tree) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}


def promote_by_hand(files, host):
    done = cli("manager", "promote", host, "-c", str(files[host]))
    assert done.returncode == 0, done.stderr


def test_over_rsyncd_the_new_manager_pushes_and_the_stale_one_is_refused(netns, tmp_path):
    """A promoted standby pushes to an rsyncd node (its ip is in the node's ``hosts allow``);
    the old manager, frozen while it acted under epoch 1 and woken after the takeover,
    tries to push a deletion: the rsync daemons' epoch checks refuse it, the node's files
    are unchanged (checksums), and the refusal is in its sync status and its log."""
    net = netns(["manager", "standby", "node1"])
    files = rsyncd_definition(net, tmp_path)
    daemons = {h: Daemon(files[h], host=h, wrap=["ip", "netns", "exec", net.ns(h)]).start()
               for h in ("manager", "standby", "node1")}
    data = {h: tmp_path / h / "srv/data" for h in daemons}
    try:
        promote_by_hand(files, "manager")
        for name in ("a", "b"):
            (data["manager"] / name).write_text(f"{name} from the first manager")
        for host in RSYNCD_HOSTS:
            wait_for(lambda: (data[host] / "b").exists(), timeout=20, what=f"b on {host}")
            wait_for(lambda: daemons[host].query("status")["definition"].get("epoch") == 1,
                     timeout=20, what=f"epoch 1 on {host}")
        daemons["manager"].signal(signal.SIGSTOP)
        try:
            promote_by_hand(files, "standby")
            wait_for(lambda: daemons["node1"].query("status")["definition"].get("epoch") == 2,
                     timeout=20, what="node1 taking the new manager's definition over rsyncd")
            (data["standby"] / "c").write_text("from the new manager")
            wait_for(lambda: (data["node1"] / "c").exists(), timeout=20,
                     what="a file of the new manager on the rsyncd node")
            before = tree_digests(data["node1"])
            (data["manager"] / "a").unlink()  # the stale manager sees it when it wakes
        finally:
            daemons["manager"].signal(signal.SIGCONT)
        shown = wait_for(lambda: (n := daemons["manager"].query("sync_status")["nodes"]["node1"])
                         ["last_error"] and n, timeout=30, what="the stale push refused")
        assert "refused by the node's rsync daemon before the transfer" in shown["last_error"]
        assert "@ERROR: early exec failed" in shown["last_error"]
        time.sleep(1.0)
        assert tree_digests(data["node1"]) == before and (data["node1"] / "a").exists()
        refused = (tmp_path / "node1-rsyncd.err").read_text()
        assert "clusterkit epoch check refused: the push carries epoch 1, this host has seen 2" \
            in refused
        log = (tmp_path / "daemon-manager.log").read_text()
        assert "node1: refused by the node's rsync daemon" in log
    finally:
        for daemon in daemons.values():
            daemon.signal(signal.SIGCONT) if daemon.proc.poll() is None else None
            daemon.stop()


# ------------------------------------------------------------------ a cut link


def cut_link(net, host: str, on: bool) -> None:
    """Everything in and out of ``host``'s eth0 dropped (nft in its namespace): the link is
    dead but still up, as a cable pulled further along (taking the veth down instead makes
    keepalived go FAULT at once, which a real cut does not)."""
    rules = ("table inet ckcut {\n"
             " chain input { type filter hook input priority -200; iifname \"eth0\" drop; }\n"
             " chain output { type filter hook output priority -200; oifname \"eth0\" drop; }\n"
             "}\n" if on else "delete table inet ckcut\n")
    done = net.run(host, ["nft", "-f", "-"], input=rules)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft to cut the link")
@pytest.mark.parametrize("ha", [1.0, 0.1], indirect=True, ids=["advert-1s", "advert-0.1s"])
def test_failover_by_a_cut_link_under_load(ha, tmp_path):
    """The active manager's link is cut under load: it hears nothing and is heard by nobody,
    keepalived keeps running (MASTER of its own partition). The standby takes the VIP after
    VRRP's master-down interval, the load recovers with no failure after. The cut-off manager
    (still MASTER of its partition under epoch 1) learns of epoch 2 from the new manager's
    view, which reaches it over the lab's shared disk, and stands down; once the link is back
    it stays standby."""
    net, vip, files, daemons, advert = ha
    load = start_load(net, vip, tmp_path, 16)
    cut = time.time()
    cut_link(net, "manager", True)
    try:
        wait_for(lambda: role(daemons["standby"]) == "manager", timeout=20,
                 what="the standby promoted")
        takeover(load, cut, time.time(), "link cut (nft drops all on the manager's eth0)", advert)
        assert daemons["standby"].query("status")["managers"]["epoch"] == 2
        # the new manager's view reaches the old one over their shared disk (local transport):
        # it learns of epoch 2 and gives the role up, though VRRP still makes it MASTER alone
        wait_for(lambda: role(daemons["manager"]) == "standby", timeout=20,
                 what="the cut-off manager standing down")
    finally:
        cut_link(net, "manager", False)
    time.sleep(max(4 * advert, 1.0))
    assert role(daemons["manager"]) == "standby" and role(daemons["standby"]) == "manager"
    probe = records_of(get(net, vip))
    assert probe and all(r[1] == 200 for r in probe), probe


# -------------------------------------------------- ssh receivers: a forced command


@pytest.mark.skipif(not shutil.which("sshd", path="/usr/sbin:/usr/bin"), reason="needs sshd")
def test_an_ssh_nodes_forced_command_refuses_a_stale_managers_rsync(netns, tmp_path):
    """The manager's key is authorised with ``command="... fence.py --ssh STATE_DIR"``: an
    rsync whose remote command carries a lower epoch than the node has seen is refused
    (nothing deleted), the current epoch's goes through."""
    from clusterkit.standby import epoch, fence

    net = netns(["manager", "node1"])
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("manager", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    state = tmp_path / "state" / "node1"
    state.mkdir(parents=True)
    epoch.raise_to(str(state), 2)
    forced = f"{sys.executable} -E -s -S {fence.SCRIPT} --ssh {state}"
    (keys / "authorized_keys").write_text(f'command="{forced}" {(keys / "manager.pub").read_text()}')
    os.makedirs("/run/sshd", exist_ok=True)
    conf = tmp_path / "sshd_config"
    conf.write_text(f"ListenAddress {net.ip('node1')}\nPort 22\nHostKey {keys}/host\nPidFile none\n"
                    f"AuthorizedKeysFile {keys}/authorized_keys\nStrictModes no\nUsePAM no\n"
                    "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"
                    f"SetEnv HOME={keys}\n")
    net.popen("node1", ["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
              stderr=open(tmp_path / "sshd.log", "w"))
    net.wait_port("manager", net.ip("node1"), 22)
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    (source / "new").write_text("new")
    (target / "kept").write_text("a file the stale manager's tree lacks")
    shell = (f"ssh -i {keys}/manager -o BatchMode=yes -o StrictHostKeyChecking=no "
             f"-o UserKnownHostsFile={keys}/known_hosts")

    def push(pushed: int):
        return net.run("manager", ["rsync", "-a", "--delete", "-e", shell,
                                   f"--rsync-path=CLUSTERKIT_EPOCH={pushed} rsync",
                                   f"{source}/", f"root@{net.ip('node1')}:{target}/"], timeout=60)

    stale = push(1)
    assert stale.returncode != 0
    assert "clusterkit epoch check refused: the push carries epoch 1, this host has seen 2" \
        in stale.stderr
    assert sorted(p.name for p in target.iterdir()) == ["kept"]
    current = push(2)
    assert current.returncode == 0, current.stderr
    assert sorted(p.name for p in target.iterdir()) == ["new"]
