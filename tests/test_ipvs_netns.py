"""The IPVS engine in the kernel, through the daemons, in network namespaces.

client → manager (VIP on its eth0, its daemon programs the namespace's IPVS
table through netlink) → node1/node2, each answering with its name and the
client address it sees. DR: the nodes' daemons put the VIP on lo (the
directroute plugin; the nodes run with the nft plugin disabled: IPVS needs
none of it). NAT: the nodes route the client's replies through the manager.
Needs root and a kernel with ``ip_vs`` (skipped otherwise, with the reason).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from clusterkit_ipvs.kernel import NO_IPVS, PROC
from nft_support import Client, start_servers
from support import wait_for
from sync_support import CLUSTERKIT, Daemon

PORT = 8080
FLAGS = {0: "-m", 2: "-i", 3: "-g"}

# run in the manager's namespace: "add VIP PORT" adds the operator's own service, "save" prints the
# table as ipvsadm -S -n would (pyroute2 directly: the test reads the kernel without the engine)
TABLE = r'''
import sys
from socket import IPPROTO_TCP
from pyroute2 import IPVS, IPVSService
FLAGS = %r
ipvs = IPVS()
if sys.argv[1] == "add":
    ipvs.service("add", service=IPVSService(addr=sys.argv[2], port=int(sys.argv[3]),
                                            protocol=IPPROTO_TCP, sched_name="rr"))
else:
    for msg in ipvs.service("dump"):
        s = msg.get("IPVS_CMD_ATTR_SERVICE")
        vip = f"{s.get('IPVS_SVC_ATTR_ADDR')}:{s.get('IPVS_SVC_ATTR_PORT')}"
        line = f"-A -t {vip} -s {s.get('IPVS_SVC_ATTR_SCHED_NAME')}"
        if s.get("IPVS_SVC_ATTR_FLAGS")["flags"] & 1:
            line += f" -p {s.get('IPVS_SVC_ATTR_TIMEOUT')}"
        print(line)
        service = IPVSService(addr=s.get("IPVS_SVC_ATTR_ADDR"), port=s.get("IPVS_SVC_ATTR_PORT"),
                              protocol=IPPROTO_TCP)
        for m in ipvs.dest("dump", service=service):
            d = m.get("IPVS_CMD_ATTR_DEST")
            print(f"-a -t {vip} -r {d.get('IPVS_DEST_ATTR_ADDR')}:{d.get('IPVS_DEST_ATTR_PORT')} "
                  f"{FLAGS[d.get('IPVS_DEST_ATTR_FWD_METHOD') & 7]} -w {d.get('IPVS_DEST_ATTR_WEIGHT')}")
''' % (FLAGS,)
pytestmark = pytest.mark.skipif(not os.path.exists(PROC), reason=NO_IPVS)


def definition(tmp_path, net, forward: str, **keys) -> str:
    vip = f"{net.subnet}.100"
    text = (f'[cluster]\nname = "lvs"\nstate_dir = "{tmp_path}/state"\n\n'
            f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\npublic_ips = ["{vip}"]\n'
            f'root = "{tmp_path}/manager"\n')
    for node in ("node1", "node2"):
        text += f'\n[[node]]\nname = "{node}"\nip = "{net.ip(node)}"\nroot = "{tmp_path}/{node}"\n'
    keys = {"engine": "ipvs", "forward": forward, "scheduler": "wrr", **keys}
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    return text + (f'\n[[policy]]\nvip = "{vip}"\nport = {PORT}\nservice = "http"\n'
                   f'members = {{ node1 = 3, node2 = 1 }}\n{extra}'
                   'check = { kind = "tcp", inter = 0.2, timeout = 0.5, rise = 1, fall = 1 }\n')


class Lvs:
    """The namespaces, the node servers, the daemons and the client of one test."""

    def __init__(self, netns, tmp_path, forward: str, **keys):
        self.net = net = netns(["manager", "node1", "node2", "client"])
        self.tmp_path, self.forward = tmp_path, forward
        self.vip = f"{net.subnet}.100"
        self.key = f"{self.vip}:{PORT}"
        for host in ("manager", "node1", "node2"):
            (tmp_path / host).mkdir()
        self.config = tmp_path / "cluster.toml"
        self.config.write_text(definition(tmp_path, net, forward, **keys))
        net.add_address("manager", self.vip)
        if forward == "nat":  # replies to the client go back through the manager
            net.run("manager", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], check=True)
            for node in ("node1", "node2"):
                net.run(node, ["ip", "route", "add", f"{net.ip('client')}/32", "via",
                               net.ip("manager")], check=True)
        start_servers(net, tmp_path, PORT)
        wrap = lambda host: ["ip", "netns", "exec", net.ns(host)]  # noqa: E731
        self.nodes = [Daemon(self.config, host=n, wrap=wrap(n),
                             env={"CLUSTERKIT_DISABLE_PLUGINS": "nft"}) for n in ("node1", "node2")]
        self.manager = Daemon(self.config, wrap=wrap("manager"))
        self.script = tmp_path / "table.py"
        self.script.write_text(TABLE)
        self.table("add", self.vip, "9")  # the operator's own service: clusterkit leaves it alone

    def table(self, *args: str) -> list[str]:
        """The manager's IPVS table as ``ipvsadm -S -n`` lines."""
        done = self.net.run("manager", [sys.executable, str(self.script), *(args or ["save"])])
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def start(self) -> None:
        for daemon in self.nodes:
            daemon.start()
        if self.forward != "nat":  # DR: the nodes' daemons put the VIP on lo
            for node, daemon in zip(("node1", "node2"), self.nodes):
                wait_for(lambda: daemon.query("status").get("direct_routing", {}).get("vips_on_lo"),
                         what=f"{node}'s VIP on lo")
        self.manager.start()
        wait_for(lambda: self.policy().get("listening"), what="the IPVS service programmed")
        self.client = Client(self.net, self.tmp_path, self.vip, PORT)

    def policy(self) -> dict:
        return self.manager.query("status")["policies"].get(self.key, {})

    def members(self) -> dict:
        return self.policy()["members"]

    def rules(self) -> list[str]:
        done = subprocess.run([*CLUSTERKIT, "policy", "ipvs-rules", "-c", str(self.config), "--live"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def close(self) -> None:
        self.manager.stop()
        for daemon in self.nodes:
            daemon.stop()


@pytest.fixture
def lvs(netns, tmp_path):
    made = []

    def make(forward: str, **keys) -> Lvs:
        made.append(Lvs(netns, tmp_path, forward, **keys))
        made[-1].start()
        return made[-1]
    yield make
    for one in made:
        one.close()


def answered(answers: list[str]) -> Counter:
    return Counter(a.split()[0] for a in answers)


@pytest.mark.parametrize("forward", ["dr", "nat"])
def test_balances_by_weight_keeps_the_client_address_and_follows_health(lvs, forward):
    lvs = lvs(forward)
    net = lvs.net
    on_lo = [d.query("status").get("direct_routing", {}).get("vips_on_lo") for d in lvs.nodes]
    assert on_lo == ([[lvs.vip]] * 2 if forward == "dr" else [[], []])  # NAT: addressed to the node
    answers = lvs.client.step("new 40")
    counts = answered(answers)
    assert counts["node1"] == 30 and counts["node2"] == 10, answers  # wrr 3:1
    assert {a.split()[1] for a in answers} == {net.ip("client")}      # no proxy in between
    wait_for(lambda: sum(m["total"] for m in lvs.members().values()) == 40,
             what="the kernel's counters")
    assert all(m["bytes_in"] > 0 for m in lvs.members().values())
    # the table is what the command renders, and the operator's service is still there
    assert sorted(lvs.table()) == sorted(lvs.rules() + [f"-A -t {lvs.vip}:9 -s rr"])

    kept = lvs.client.step("open 8")
    server = next(p for p in net.procs if p.args[-2:] == ["node1", str(PORT)])
    os.killpg(server.pid, signal.SIGKILL)  # node1's service dies: health takes it out
    wait_for(lambda: lvs.members()["node1"]["state"] == "down", what="node1 down")
    assert set(answered(lvs.client.step("new 20"))) == {"node2"}
    again = lvs.client.step("again")
    assert [a for a, b in zip(again, kept) if b.startswith("node2")] == \
        [b for b in kept if b.startswith("node2")]  # node2's connections all went on


@pytest.mark.parametrize("action, leaves", [("drain", False), ("maintenance", True)])
def test_drained_or_maintained_member_keeps_its_connections(lvs, action, leaves):
    lvs = lvs("dr")
    kept = lvs.client.step("open 8")
    on_node2 = [k for k in kept if k.startswith("node2")]
    assert on_node2, kept
    lvs.manager.query("operator", node="node2", action=action)
    wait_for(lambda: lvs.members()["node2"]["ipvs_weight"] == 0, what="node2 at weight 0")
    assert set(answered(lvs.client.step("new 20"))) == {"node1"}
    again = lvs.client.step("again")
    assert [a for a in again if a.startswith("node2")] == on_node2  # its connections go on
    node2 = f"{lvs.net.ip('node2')}:{PORT}"
    assert lvs.members()["node2"]["in_table"]
    assert lvs.policy()["leaving"] == ([node2] if leaves else [])
    lvs.client.proc.stdin.close()  # the client's connections close
    lvs.client.proc.wait(10)
    if leaves:  # maintenance: out of the table once idle; drain: kept at weight 0
        wait_for(lambda: not lvs.members()["node2"]["in_table"], timeout=30,
                 what="node2 removed once idle")
        assert lvs.policy()["leaving"] == []
        assert f"-r {node2} " not in " ".join(lvs.table())
        assert f"-r {node2} " not in " ".join(lvs.rules())
    else:
        assert lvs.members()["node2"]["in_table"]
        assert f"-a -t {lvs.key} -r {node2} -g -w 0" in lvs.rules()
    lvs.manager.query("operator", node="node2", action="enable")
    wait_for(lambda: lvs.members()["node2"]["ipvs_weight"] == 1, what="node2 back")


def test_persistence_keeps_a_client_on_its_member(lvs):
    lvs = lvs("dr", persistence=60)
    assert len(answered(lvs.client.step("new 20"))) == 1


def test_stopping_removes_only_its_own_services(lvs):
    lvs = lvs("dr")
    lvs.manager.stop()
    assert lvs.table() == [f"-A -t {lvs.vip}:9 -s rr"]
    lo = lvs.net.run("node1", ["ip", "-4", "-o", "addr", "show", "dev", "lo"]).stdout
    assert f"{lvs.vip}/32" in lo  # the node side stays while the policy exists
