"""FTP across real hosts: client, manager and nodes in network namespaces.

The client has no route to the nodes and the nodes none to the client
(blackhole routes), as on the Internet: a node's own address in a PASV
reply, or a client's address in a PORT command the node would act on,
cannot work. Every mode must still carry the data, through the manager,
to the node holding the control connection.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from mailftp_support import cluster_file

HERE = Path(__file__).parent
CLUSTERKIT = shutil.which("clusterkit", path=os.path.dirname(sys.executable)) or "clusterkit"

NODE = """
import sys, time
sys.path.insert(0, {here!r})
from pathlib import Path
from mailftp_support import FtpNode
FtpNode(sys.argv[1], 21, Path(sys.argv[2]))
while True:
    time.sleep(60)
"""

CLIENT = """
import ftplib, io, json, os, socket, sys, threading
vip, me, size, parallel = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

class Client(ftplib.FTP):
    trust_server_pasv_ipv4_address = True
    def __init__(self, mode):
        super().__init__(timeout=30, source_address=(me, 0))
        self.mode = mode
        self.connect(vip, 21)
        self.login("u", "p")
        self.set_pasv(mode in ("pasv", "epsv"))
    def makepasv(self):
        if self.mode == "epsv":
            return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return super().makepasv()
    def makeport(self):
        sock = socket.create_server((me, 0), backlog=1)
        host, port = sock.getsockname()[:2]
        (self.sendeprt if self.mode == "eprt" else self.sendport)(host, port)
        sock.settimeout(self.timeout)
        return sock

results, errors = [], []
def session(i, mode):
    try:
        data = os.urandom(size + i)
        name = f"{mode}-{i}.bin"
        with Client(mode) as c:
            pasv = c.sendcmd("PASV") if mode == "pasv" else ""  # its listener just expires
            c.storbinary("STOR " + name, io.BytesIO(data))
            back = io.BytesIO()
            c.retrbinary("RETR " + name, back.write)
            results.append({"name": name, "welcome": c.welcome, "pasv": pasv,
                            "same": back.getvalue() == data, "size": len(data)})
    except Exception as exc:
        errors.append(f"{mode} {i}: {exc!r}")

modes = ["pasv", "epsv", "port", "eprt"]
threads = [threading.Thread(target=session, args=(i, modes[i % 4])) for i in range(parallel)]
for t in threads: t.start()
for t in threads: t.join(120)
print(json.dumps({"results": results, "errors": errors}))
"""


@pytest.fixture
def hosts(netns, tmp_path):
    net = netns(["client", "manager", "node1", "node2"])
    vip = f"{net.subnet}.200"
    net.add_address("manager", vip)
    nodes = {"node1": net.ip("node1"), "node2": net.ip("node2")}
    for name, ip in nodes.items():
        for host, dest in (("client", ip), (name, net.ip("client"))):
            added = net.run(host, ["ip", "route", "add", "blackhole", f"{dest}/32"])
            assert added.returncode == 0, added.stderr
        (tmp_path / name).mkdir()
        net.popen(name, [sys.executable, "-c", NODE.format(here=str(HERE)), ip,
                         str(tmp_path / name)], stderr=open(tmp_path / f"{name}.log", "w"))
    for name, ip in nodes.items():
        net.wait_port("manager", ip, 21)
    policy = ('[[policy]]\nvip = "{vip}"\nport = 21\nservice = "ftp"\nscheduler = "rr"\n'
              'persistence = 0\nmembers = {{node1 = 1, node2 = 1}}\n'
              'options = {{passive_ports = "50000-50099"}}\n').format(vip=vip)
    config = cluster_file(tmp_path, net.subnet, 2, policy, manager_ip=net.ip("manager"),
                          vip=vip, node_ips=list(nodes.values()))
    net.popen("manager", [CLUSTERKIT, "run", "-c", str(config)],
              stderr=open(tmp_path / "manager.log", "w"))
    net.wait_port("client", vip, 21, timeout=20)
    return net, vip, nodes


def run_client(net, vip: str, tmp_path: Path, size: int, parallel: int) -> dict:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    done = net.run("client", [sys.executable, str(script), vip, net.ip("client"), str(size),
                              str(parallel)], timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_client_cannot_reach_the_nodes(hosts):
    net, vip, nodes = hosts
    probe = ["bash", "-c", f"exec 3<>/dev/tcp/{nodes['node1']}/21"]
    assert net.run("client", probe, timeout=10).returncode != 0
    assert net.run("client", ["bash", "-c", f"exec 3<>/dev/tcp/{vip}/21"]).returncode == 0


def test_every_mode_reaches_the_control_node_through_the_manager(hosts, tmp_path):
    net, vip, nodes = hosts
    report = run_client(net, vip, tmp_path, 1024 * 1024, 8)
    assert not report["errors"], report["errors"]
    assert len(report["results"]) == 8
    used = set()
    for result in report["results"]:
        assert result["same"], result["name"]
        node = next(n for n, ip in nodes.items() if f"node {ip} ready" in result["welcome"])
        used.add(node)
        other = next(n for n in nodes if n != node)
        assert (tmp_path / node / result["name"]).stat().st_size == result["size"]
        assert not (tmp_path / other / result["name"]).exists()
        if result["pasv"]:  # the reply names the VIP, never the node
            assert vip.replace(".", ",") in result["pasv"]
    assert used == set(nodes)
