"""The nft engine in network namespaces: a client, a manager and nodes on one segment (direct
routing), or the nodes moved to a segment of their own behind the manager (:func:`nat_segment`).

Each node runs :data:`SERVER`, a small HTTP server that answers with its name
and the client address it sees; :data:`CLIENT` makes requests from the client
namespace and prints what answered, one JSON line per step.
"""

from __future__ import annotations

import json
from collections import Counter
import subprocess
import sys

SERVER = r'''
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"{name} {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
'''

# argv: vip port; stdin commands: "new N" (N requests, Connection: close), "open N" (N
# keep-alive connections, one request each), "again" (one more request on each open one)
CLIENT = r'''
import http.client, json, sys
vip, port = sys.argv[1], int(sys.argv[2])
conns = []
def ask(conn, close):
    try:
        conn.request("GET", "/", headers={"Connection": "close"} if close else {})
        return conn.getresponse().read().decode()
    except OSError as exc:
        return "error " + type(exc).__name__
for line in sys.stdin:
    cmd, _, n = line.strip().partition(" ")
    if cmd == "new":
        out = [ask(http.client.HTTPConnection(vip, port, timeout=3), True) for _ in range(int(n))]
    elif cmd == "open":
        conns = [http.client.HTTPConnection(vip, port, timeout=3) for _ in range(int(n))]
        out = [ask(c, False) for c in conns]
    else:
        out = [ask(c, False) for c in conns]
    print(json.dumps(out), flush=True)
'''


class Client:
    """:data:`CLIENT` running in the client namespace."""

    def __init__(self, net, tmp_path, vip: str, port: int):
        script = tmp_path / "client.py"
        script.write_text(CLIENT)
        self.proc = net.popen("client", [sys.executable, str(script), vip, str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def step(self, command: str) -> list[str]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("the client died")
        return json.loads(line)


class EngineEnv:
    """The nft engine in the test process, programming the manager's namespace (``ip netns
    exec``): the VIP on the manager, a client for VIP:``port``; what DR and NAT tests share."""

    family = "netdev"  # the engine's table that ``table()`` lists

    def __init__(self, net, tmp_path, port: int, pm):
        from clusterkit_nft import NftEngine
        from support import LoopThread

        self.net, self.tmp_path, self.pm = net, tmp_path, pm
        self.vip = f"{net.subnet}.100"
        self.key = f"{self.vip}:{port}"
        net.add_address("manager", self.vip)
        self.loop = LoopThread()
        self.engine = NftEngine(prefix=("ip", "netns", "exec", net.ns("manager")))
        self.client = Client(net, tmp_path, self.vip, port)

    def set(self, node: str, state: str, factor: float = 1.0):
        async def run():
            result = self.engine.set_member_state(self.key, node, state, factor)
            if result is not None:
                await result
        self.loop.call(run())

    def stats(self, key: str | None = None) -> dict:
        async def run():
            return self.engine.stats()
        return self.loop.call(run())[key or self.key]

    def table(self) -> str:
        return self.net.run("manager", ["nft", "list", "table", self.family, "clusterkit"]).stdout

    def close(self):
        try:
            self.loop.call(self.engine.close(5))
        finally:
            self.loop.close()


def names(answers: list[str]) -> Counter:
    """How many answers each node gave (an answer is "NODE CLIENT-ADDRESS ...")."""
    return Counter(a.split()[0] for a in answers)


def start_servers(net, tmp_path, port: int, nodes=("node1", "node2"), at=None) -> None:
    """:data:`SERVER` on each node; ``at``: node -> the address the manager reaches it at."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    for node in nodes:
        net.popen(node, [sys.executable, str(script), node, str(port)])
    for node in nodes:
        net.wait_port("manager", (at or {}).get(node) or net.ip(node), port)


def nat_segment(net, nodes=("node1", "node2")) -> dict[str, str]:
    """Move the nodes behind the manager: a bridge ``back`` in the manager's namespace holds
    ``{back}.1``, each node leaves the client's segment (its eth0 down) for its own ``eth1``
    on ``back`` at ``{back}.1N`` with its default route via the manager, which routes between
    the two subnets. Returns node -> its new address (and ``"manager"`` -> ``{back}.1``)."""
    first, second, third = net.subnet.split(".")
    back = f"{first}.{int(second) - 50}.{third}"  # net.subnet's second number is 200..249
    manager = net.ns("manager")
    for argv in (["link", "add", "back", "type", "bridge"], ["link", "set", "back", "up"],
                 ["addr", "add", f"{back}.1/24", "dev", "back"]):
        subprocess.run(["ip", "-n", manager, *argv], check=True)
    found = {"manager": f"{back}.1"}
    for i, node in enumerate(nodes):
        outer, inner, ns = f"{net.tag}b{i}", f"{net.tag}c{i}", net.ns(node)
        subprocess.run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner], check=True)
        subprocess.run(["ip", "link", "set", outer, "netns", manager], check=True)
        subprocess.run(["ip", "link", "set", inner, "netns", ns], check=True)
        found[node] = f"{back}.{11 + i}"
        for argv in (["link", "set", outer, "master", "back"], ["link", "set", outer, "up"]):
            subprocess.run(["ip", "-n", manager, *argv], check=True)
        for argv in (["link", "set", inner, "name", "eth1"], ["link", "set", "eth1", "up"],
                     ["addr", "add", f"{found[node]}/24", "dev", "eth1"],
                     ["addr", "flush", "dev", "eth0"], ["link", "set", "eth0", "down"],
                     ["route", "add", "default", "via", f"{back}.1"]):
            subprocess.run(["ip", "-n", ns, *argv], check=True)
    return found


def node_side(net, node: str, vip: str) -> None:
    """What the nft plugin's node side does, by hand (for tests of the manager's engine alone)."""
    net.run(node, ["ip", "addr", "add", f"{vip}/32", "dev", "lo"], check=True)
    for conf in ("all", "eth0"):
        net.run(node, ["sysctl", "-q", "-w", f"net.ipv4.conf.{conf}.arp_ignore=1",
                       f"net.ipv4.conf.{conf}.arp_announce=2"], check=True)


# argv: name root vip first last. pyftpdlib serving ``root`` (user u/p), its banner the node's
# name, announcing the VIP in PASV replies with passive ports first..last (FTP through DR)
FTP_NODE = r'''
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
name, root, vip, first, last = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
authorizer = DummyAuthorizer()
authorizer.add_user("u", "p", root, perm="elr")
handler = type("Node", (FTPHandler,), {"authorizer": authorizer, "banner": name,
                                       "passive_ports": list(range(first, last + 1)),
                                       "masquerade_address": vip})
FTPServer(("0.0.0.0", 21), handler).serve_forever()
'''

# argv: vip source...: one passive session from each source address: the banner's node, the
# address the PASV reply announced, LIST's names and who.txt's content, one JSON list
FTP_CLIENT = r'''
import ftplib, io, json, sys
vip, sources = sys.argv[1], sys.argv[2:]
out = []
for source in sources:
    with ftplib.FTP(timeout=10, source_address=(source, 0)) as ftp:
        ftp.trust_server_pasv_ipv4_address = True  # connect where the node's PASV says
        welcome = ftp.connect(vip, 21).split(None, 1)[1]
        ftp.login("u", "p")
        host = ftplib.parse227(ftp.sendcmd("PASV"))[0]
        names = sorted(ftp.nlst())
        data = io.BytesIO()
        ftp.retrbinary("RETR who.txt", data.write)
        out.append({"welcome": welcome, "pasv_host": host, "list": names,
                    "retr": data.getvalue().decode()})
print(json.dumps(out))
'''
