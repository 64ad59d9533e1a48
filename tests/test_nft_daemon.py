"""The nft engine through the daemons, in network namespaces (root; skipped otherwise): the
manager's daemon balances by direct routing with health checks, each node's daemon puts the
VIP on lo with the ARP settings, says so in ``status``, and takes the VIP away with the policy."""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter

import pytest

from nft_support import Client, start_servers
from support import wait_for
from sync_support import Daemon

PORT = 8080
pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="nftables' nft is not installed")


def definition(tmp_path, net, policy: bool) -> str:
    vip = f"{net.subnet}.100"
    text = (f'[cluster]\nname = "dr"\nstate_dir = "{tmp_path}/state"\n\n'
            f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\npublic_ips = ["{vip}"]\n'
            f'root = "{tmp_path}/manager"\n')
    for node in ("node1", "node2"):
        text += f'\n[[node]]\nname = "{node}"\nip = "{net.ip(node)}"\nroot = "{tmp_path}/{node}"\n'
    if policy:
        text += (f'\n[[policy]]\nvip = "{vip}"\nport = {PORT}\nservice = "http"\nengine = "nft"\n'
                 'members = { node1 = 1, node2 = 1 }\n'
                 'check = { kind = "tcp", inter = 0.2, timeout = 0.5, rise = 1, fall = 1 }\n')
    return text


def lo_addresses(net, node: str) -> str:
    return net.run(node, ["ip", "-4", "-o", "addr", "show", "dev", "lo"]).stdout


def test_daemons_set_up_both_sides_and_health_moves_new_flows(netns, tmp_path):
    net = netns(["manager", "node1", "node2", "client"])
    vip = f"{net.subnet}.100"
    for host in ("manager", "node1", "node2"):
        (tmp_path / host).mkdir()
    config = tmp_path / "cluster.toml"
    config.write_text(definition(tmp_path, net, policy=True))
    net.add_address("manager", vip)
    start_servers(net, tmp_path, PORT)
    nodes = [Daemon(config, host=n, wrap=["ip", "netns", "exec", net.ns(n)]) for n in ("node1", "node2")]
    manager = Daemon(config, wrap=["ip", "netns", "exec", net.ns("manager")])
    try:
        for daemon in nodes:
            daemon.start()
        for node, daemon in zip(("node1", "node2"), nodes):
            # the control socket answers while the plugins still start
            wait_for(lambda: daemon.query("status").get("direct_routing", {}).get("vips_on_lo"),
                     what=f"{node}'s DR set-up")
            report = daemon.query("status")["direct_routing"]
            assert report["vips_on_lo"] == [vip] and report["errors"] == [], report
            assert report["arp"] == {c: {"arp_ignore": "1", "arp_announce": "2"} for c in ("all", "eth0")}
            assert f"{vip}/32" in lo_addresses(net, node)
            for conf in ("all", "eth0"):
                assert net.run(node, ["sysctl", "-n", f"net.ipv4.conf.{conf}.arp_ignore"]).stdout.strip() == "1"
        manager.start()
        key = f"{vip}:{PORT}"
        wait_for(lambda: manager.query("status")["policies"].get(key, {}).get("listening"),
                 what="the DR table installed")
        client = Client(net, tmp_path, vip, PORT)
        answers = client.step("new 40")
        assert set(Counter(a.split()[0] for a in answers)) == {"node1", "node2"}, answers
        assert {a.split()[1] for a in answers} == {net.ip("client")}

        def syns():
            members = manager.query("status")["policies"][key]["members"]
            return members["node1"]["total"] + members["node2"]["total"]
        wait_for(lambda: syns() == 40, what="the connections counted")  # health checks go direct

        kept = client.step("open 20")
        node1_server = next(p for p in net.procs if p.args[-2:] == ["node1", str(PORT)])
        os.killpg(node1_server.pid, signal.SIGKILL)  # node1's service dies: health takes it out
        wait_for(lambda: manager.query("status")["policies"][key]["members"]["node1"]["state"] == "down",
                 what="node1 down")
        assert {a.split()[0] for a in client.step("new 30")} == {"node2"}
        again = client.step("again")
        assert [a for a, b in zip(again, kept) if b.startswith("node2")] == \
            [b for b in kept if b.startswith("node2")]  # node2's connections all went on

        config.write_text(definition(tmp_path, net, policy=False))  # the policy goes
        for node, daemon in zip(("node1", "node2"), nodes):
            wait_for(lambda: f"{vip}/32" not in lo_addresses(net, node), what=f"VIP off {node}'s lo")
            assert daemon.query("status")["direct_routing"]["vips_on_lo"] == []
        wait_for(lambda: "clusterkit" not in net.run("manager", ["nft", "list", "tables"]).stdout,
                 what="the manager's table removed")
    finally:
        manager.stop()
        for daemon in nodes:
            daemon.stop()
