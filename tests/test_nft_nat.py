"""The nftables engine's NAT mode between network namespaces (root; skipped otherwise).

client (the first subnet) → manager (VIP on its eth0, routes between the two subnets, the
engine's ``ip clusterkit`` table DNATs) → node1/node2 on a segment of their own behind it
(:func:`nft_support.nat_segment`, default route via the manager, no VIP anywhere on them),
each answering with its name and the client address it sees. The members serve another
port than the VIP's (NAT changes it). The engine runs in the test process and programs the
manager's namespace (``ip netns exec``).
"""

from __future__ import annotations

import shutil
import time

import pytest

import clusterkit_nft
from clusterkit.config import parse_cluster, registry_of
from nft_support import EngineEnv, names, nat_segment, start_servers
from proxy_support import plugin_manager

PORT, BACKEND = 8080, 8081
pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="nftables' nft is not installed")


class NAT(EngineEnv):
    family = "ip"

    def __init__(self, net, tmp_path):
        super().__init__(net, tmp_path, PORT, plugin_manager(clusterkit_nft))
        self.at = nat_segment(net)
        start_servers(net, tmp_path, BACKEND, at=self.at)

    def apply(self, members: str | None = "node1 = 1, node2 = 1", **keys):
        text = (f'[cluster]\nname = "nat"\nstate_dir = "{self.tmp_path}/state"\n\n'
                f'[manager]\nname = "manager"\nip = "{self.net.ip("manager")}"\n'
                f'public_ips = ["{self.vip}"]\n')
        for node in ("node1", "node2"):
            text += f'\n[[node]]\nname = "{node}"\nip = "{self.at[node]}"\n'
        if members is not None:
            keys = {"forward": "nat", "backend_port": BACKEND, **keys}
            text += (f'\n[[policy]]\nvip = "{self.vip}"\nport = {PORT}\nservice = "http"\n'
                     f'engine = "nft"\nmembers = {{ {members} }}\n'
                     + "".join(f'{k} = {v!r}\n'.replace("'", '"') for k, v in keys.items()))
        cluster = parse_cluster(text, str(self.tmp_path / "cluster.toml"), registry_of(self.pm))
        self.loop.call(self.engine.apply(cluster))

    def stats(self, key: str | None = None) -> dict:
        time.sleep(0.3)  # past the counters' cache
        return super().stats(key)


@pytest.fixture
def nat(netns, tmp_path):
    net = netns(["manager", "node1", "node2", "client"])
    env = NAT(net, tmp_path)
    yield env
    env.close()


def test_balances_by_weight_to_nodes_behind_a_router_that_see_the_client_address(nat):
    assert nat.net.run("client", ["ping", "-c", "1", "-W", "1", nat.at["node1"]]).returncode != 0
    nat.apply("node1 = 3, node2 = 1", scheduler="wrr")
    assert nat.net.run("manager", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    answers = nat.client.step("new 200")
    got = names(answers)
    assert set(got) == {"node1", "node2"}, answers[:5]
    assert 120 <= got["node1"] <= 180, got  # 3:1 by buckets of the client's ports
    assert {a.split()[1] for a in answers} == {nat.net.ip("client")}  # its own, no PROXY header
    stats = nat.stats()
    assert stats["mode"] == "nat" and stats["total"] == 200
    for node in ("node1", "node2"):
        member = stats["members"][node]
        assert member["total"] == got[node]  # connections DNATed to it
        assert member["packets_in"] >= 3 * got[node] and member["bytes_in"] > 0
        assert member["address"] == f"{nat.at[node]}:{BACKEND}" and "unresolved" not in member
    assert f"dnat to {nat.at['node2']}:{BACKEND}" in nat.table()
    lo = nat.net.run("node1", ["ip", "-4", "-o", "addr", "show", "dev", "lo"]).stdout
    assert nat.vip not in lo  # NAT needs no VIP on the nodes


def test_a_member_down_takes_no_new_connections_and_conntrack_keeps_the_open_ones(nat):
    nat.apply()
    first = nat.client.step("open 40")
    assert set(names(first)) == {"node1", "node2"}, first
    nat.set("node1", "down")
    assert nat.client.step("again") == first  # every connection on its member, node1's too
    assert set(names(nat.client.step("new 40"))) == {"node2"}
    nat.set("node1", "up")
    assert set(names(nat.client.step("new 40"))) == {"node1", "node2"}
    assert nat.stats()["total"] == 40 + 40 + 40  # the counters lived through both changes


def test_drain_keeps_an_open_connection_and_new_ones_avoid_the_member(nat):
    nat.apply()
    first = nat.client.step("open 30")
    assert set(names(first)) == {"node1", "node2"}, first
    nat.set("node1", "drain")
    assert nat.client.step("again") == first
    fresh = nat.client.step("open 30")
    assert set(names(fresh)) == {"node2"}, fresh
    assert nat.client.step("again") == fresh
    assert nat.stats()["members"]["node1"]["buckets"] == 0


def test_persistence_keeps_a_client_on_one_member(nat):
    nat.apply(persistence=300)
    assert len(names(nat.client.step("new 30"))) == 1
    assert "jhash ip saddr mod 4096" in nat.table()


def test_no_member_up_refuses_and_the_rules_go_with_the_policy(nat):
    nat.apply()
    nat.set("node1", "maintenance")
    nat.set("node2", "down")
    assert set(nat.client.step("new 3")) == {"error ConnectionRefusedError"}  # the manager's RST
    assert nat.stats()["refused"] > 0
    nat.apply(members=None)  # the policy goes
    table = nat.table()
    assert "dnat" not in table and "hook prerouting" not in table, table
    nat.loop.call(nat.engine.close(1))
    assert nat.net.run("manager", ["nft", "list", "tables"]).stdout.strip() == ""
