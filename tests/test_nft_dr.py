"""The nftables engine's direct routing between network namespaces (root; skipped otherwise).

client → manager (VIP on its eth0, the engine's table on its ingress) → node1/node2 (VIP on
lo), each answering with its name and the client address it sees. The engine runs in the
test process and programs the manager's namespace (``ip netns exec``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time

import pytest

import clusterkit_ftp
import clusterkit_nft
from nft_support import FTP_CLIENT, FTP_NODE, EngineEnv, names, node_side, start_servers
from proxy_support import make_cluster, plugin_manager

PORT = 8080
pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="nftables' nft is not installed")


class DR(EngineEnv):
    def __init__(self, net, tmp_path):
        super().__init__(net, tmp_path, PORT, plugin_manager(clusterkit_nft, clusterkit_ftp))
        self.subnet = net.subnet
        for node in ("node1", "node2"):
            node_side(net, node, self.vip)
        start_servers(net, tmp_path, PORT)

    def apply(self, members: str = "node1 = 1, node2 = 1", port: int = PORT,
              service: str = "http", **keys):
        extra = "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
        text = (f'[[policy]]\nvip = "{self.vip}"\nport = {port}\nservice = "{service}"\n'
                f'engine = "nft"\nmembers = {{ {members} }}\n{extra}')
        self.cluster = make_cluster(self.tmp_path, self.subnet, 2, text, self.pm)
        self.loop.call(self.engine.apply(self.cluster))



def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value).replace("'", '"')


@pytest.fixture
def dr(netns, tmp_path):
    net = netns(["manager", "node1", "node2", "client"])
    env = DR(net, tmp_path)
    yield env
    env.close()


def test_balances_by_weight_and_nodes_see_the_client_address(dr):
    dr.apply("node1 = 3, node2 = 1", scheduler="wrr")
    answers = dr.client.step("new 200")
    got = names(answers)
    assert set(got) == {"node1", "node2"}, answers[:5]
    assert 120 <= got["node1"] <= 180, got  # 3:1 by buckets of the client's ports
    assert {a.split()[1] for a in answers} == {dr.net.ip("client")}  # its own, no PROXY header
    stats = dr.stats()
    assert stats["members"]["node1"]["total"] == got["node1"]  # SYNs counted per member
    assert stats["members"]["node2"]["total"] == got["node2"]
    assert stats["members"]["node1"]["bytes_in"] > 0
    assert stats["members"]["node1"]["buckets"] > 2 * stats["members"]["node2"]["buckets"]
    assert f'ether daddr set {stats["members"]["node1"]["mac"]}' in dr.table()


def test_a_member_down_takes_no_new_flows_and_the_other_members_flows_go_on(dr):
    dr.apply()
    first = dr.client.step("open 40")
    assert set(names(first)) == {"node1", "node2"}, first
    dr.set("node1", "down")
    again = dr.client.step("again")
    for before, after in zip(first, again):
        if before.startswith("node2"):
            assert after.startswith("node2"), (before, after)  # not one moved or broke
    assert set(names(dr.client.step("new 40"))) == {"node2"}
    dr.set("node1", "up")
    assert set(names(dr.client.step("new 40"))) == {"node1", "node2"}
    dr.stats()
    time.sleep(0.3)  # past the counters' cache
    assert dr.stats()["total"] == 40 + 40 + 40  # the counters lived through both changes


def test_drain_keeps_the_members_flows_and_sends_new_ones_elsewhere(dr):
    dr.apply()
    first = dr.client.step("open 30")
    assert set(names(first)) == {"node1", "node2"}, first
    dr.set("node1", "drain")
    assert "set f0" in dr.table()
    assert dr.client.step("again") == first  # every connection still on its member
    fresh = dr.client.step("open 30")
    assert set(names(fresh)) == {"node2"}, fresh  # new flows, node1's buckets among them
    dr.set("node2", "up", 0.5)  # another change during the drain carries the new flows' record
    assert dr.client.step("again") == fresh
    dr.set("node1", "down")  # the drain ends: the new flows keep their member
    assert dr.client.step("again") == fresh
    assert "set f0" not in dr.table()


def test_sh_keeps_a_client_on_one_member(dr):
    dr.apply(scheduler="sh")
    assert len(names(dr.client.step("new 30"))) == 1
    assert "jhash ip saddr mod" in dr.table()


def test_no_member_up_refuses_and_close_removes_the_table(dr):
    dr.apply()
    dr.set("node1", "maintenance")
    dr.set("node2", "down")
    assert set(dr.client.step("new 3")) == {"error ConnectionRefusedError"}  # the manager's RST
    assert dr.stats()["refused"] > 0
    dr.loop.call(dr.engine.close(1))
    assert dr.net.run("manager", ["nft", "list", "tables"]).stdout.strip() == ""


def test_a_member_without_a_known_mac_gets_no_buckets_until_it_answers(dr):
    dr.net.cut("node2")
    dr.net.run("manager", ["ip", "neigh", "flush", "dev", "eth0"], check=True)
    dr.apply()
    member = dr.stats()["members"]["node2"]
    assert member["unresolved"].startswith(f"no MAC for {dr.net.ip('node2')} on eth0")
    assert member["buckets"] == 0 and dr.stats()["members"]["node1"]["buckets"] == 4096
    assert set(names(dr.client.step("new 10"))) == {"node1"}
    dr.net.restore("node2")
    dr.set("node2", "down")
    dr.set("node2", "up")  # health saw it answer: its MAC is looked up again
    assert dr.stats()["members"]["node2"]["mac"]
    assert set(names(dr.client.step("new 30"))) == {"node1", "node2"}


def test_a_member_behind_a_router_is_named_not_forwarded_to(dr):
    dr.net.run("manager", ["ip", "route", "add", "10.99.0.0/24", "via", dr.net.ip("client")], check=True)
    why = dr.loop.call(dr.engine._link("10.99.0.5"))
    assert why == (f"10.99.0.5 is reached through the gateway {dr.net.ip('client')}: direct "
                   "routing needs the node on the manager's own segment (forward = \"nat\" does not)")


def test_a_table_changed_behind_its_back_is_replaced_whole(dr):
    dr.apply()
    dr.net.run("manager", ["nft", "delete", "table", "netdev", "clusterkit"], check=True)
    dr.set("node2", "down")  # the kept-table transaction fails: the engine writes a new table
    assert set(names(dr.client.step("new 20"))) == {"node1"}
    assert "chain m0_1" in dr.table()


def test_ftp_in_direct_routing_keeps_control_and_data_on_one_node(dr):
    """pyftpdlib on each node announces the VIP and passive ports 30000-30100; the engine
    forwards VIP:21 and VIP:30000-30100 by the client address, so LIST and RETR (passive) work
    through the VIP and land on the control connection's node, from a dozen client addresses."""
    for node in ("node1", "node2"):
        root = dr.tmp_path / f"ftp-{node}"
        root.mkdir()
        (root / "who.txt").write_text(node)
        (root / f"on-{node}").write_text("")
    (dr.tmp_path / "ftpnode.py").write_text(FTP_NODE)
    for node in ("node1", "node2"):
        dr.net.popen(node, [sys.executable, str(dr.tmp_path / "ftpnode.py"), node,
                            str(dr.tmp_path / f"ftp-{node}"), dr.vip, "30000", "30100"])
    for node in ("node1", "node2"):
        dr.net.wait_port("manager", dr.net.ip(node), 21)
    sources = [f"{dr.subnet}.{150 + i}" for i in range(12)]
    for address in sources:
        dr.net.add_address("client", address)
    dr.apply(port=21, service="ftp", options={"passive_ports": "30000-30100"})
    assert f"{dr.vip} . 30000-30100 : goto p0" in dr.table()
    (dr.tmp_path / "ftpclient.py").write_text(FTP_CLIENT)
    done = dr.net.run("client", [sys.executable, str(dr.tmp_path / "ftpclient.py"), dr.vip,
                                 *sources])
    sessions = json.loads(done.stdout or "null")
    assert sessions and len(sessions) == len(sources), done.stderr
    for s in sessions:
        assert s["pasv_host"] == dr.vip, s  # the node announced the VIP
        assert s["retr"] == s["welcome"] and s["list"] == [f"on-{s['welcome']}", "who.txt"], s
    assert {s["welcome"] for s in sessions} == {"node1", "node2"}, sessions  # both took clients
    stats = dr.stats(f"{dr.vip}:21")
    assert stats["passive_ports"] == "30000-30100" and stats["mode"] == "dr"
    assert stats["total"] >= 2 * len(sources)  # a control and a data connection each at least
