"""Health-aware names: the manager rewrites a name's A records as members go up and down.

The manager runs in-process (``Runtime``) with its DNS server. The membership
component belongs to the health plugin (another branch); here a stand-in
with the same ``status()`` shape (``{policy: {"nodes": {node: {"state": ...}}}}``)
sits in ``runtime.components["membership"]`` and the real
``clusterkit_membership_changed`` hook is fired, as the health plugin does.
"""

from __future__ import annotations

import asyncio
import time

import dns.asyncquery
import dns.message
import dns.rcode

from clusterkit.plugins import get_plugin_manager
from clusterkit.runtime import Runtime, new_event_loop
from dns_support import free_port, write_zones

MANAGER = "127.87.4.1"
NODES = {"node1": "127.87.4.11", "node2": "127.87.4.12", "node3": "127.87.4.13"}
POLICY = f"{MANAGER}:80"


class Membership:
    """Stand-in for the health plugin's component: only what health names read."""

    def __init__(self):
        self.states = {n: "up" for n in NODES}

    def status(self) -> dict:
        return {POLICY: {"service": "http",
                         "nodes": {n: {"state": s} for n, s in self.states.items()}}}


def write_cluster(tmp_path, port: int, health: bool = True) -> str:
    nodes = "".join(f'\n[[node]]\nname = "{n}"\nip = "{ip}"\nroot = "{tmp_path}/{n}"\n'
                    for n, ip in NODES.items())
    names = f"""
[[dns.health_name]]
zone = "example.com"
name = "svc"
policy = "{POLICY}"
ttl = 20
addresses = {{ node2 = "198.51.100.12" }}
""" if health else ""
    text = f"""[cluster]
name = "t"
state_dir = "{tmp_path}/state"

[manager]
name = "manager"
ip = "{MANAGER}"
root = "{tmp_path}/manager"
{nodes}
[[policy]]
vip = "{MANAGER}"
port = 80
service = "http"
members = {{ node1 = 1, node2 = 1, node3 = 0 }}

[dns]
port = {port}
zones_dir = "/zones"
listen = ["{MANAGER}"]
{names}"""
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return str(path)


async def addresses(port: int) -> tuple[set, int | None]:
    m = await dns.asyncquery.udp(dns.message.make_query("svc.example.com", "A"), MANAGER,
                                 port=port, timeout=2)
    if m.rcode() != dns.rcode.NOERROR or not m.answer:
        return set(), None
    return {r.address for r in m.answer[0]}, m.answer[0].ttl


async def until(port: int, wanted: set, what: str, timeout: float = 5.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, ttl = await addresses(port)
        if got == wanted:
            return ttl
        await asyncio.sleep(0.05)
    raise AssertionError(f"svc.example.com A is {got}, wanted {wanted}: {what}")


def test_health_name_follows_membership(tmp_path):
    port = free_port(MANAGER)
    path = write_cluster(tmp_path, port)
    zones = write_zones(tmp_path / "manager" / "zones")
    zone_file = zones / "example.com.zone"
    pm = get_plugin_manager()

    async def changed(rt, node, new):
        rt.components["membership"].states[node] = new
        for result in rt.hook.clusterkit_membership_changed(
                runtime=rt, node=node, service="http", old="up", new=new, reason="test"):
            if asyncio.iscoroutine(result):
                await result

    async def scenario():
        rt = Runtime(path, pm, "manager", watch_config=False)
        await rt.start()
        try:
            # before any health information: every weighted member (node3 has weight 0)
            ttl = await until(port, {NODES["node1"], "198.51.100.12"}, "at start")
            assert ttl == 20
            assert "; clusterkit svc.example.com. begin: policy" in zone_file.read_text()

            rt.components["membership"] = Membership()
            await changed(rt, "node1", "down")
            await until(port, {"198.51.100.12"}, "node1 down")
            await changed(rt, "node2", "down")
            await until(port, {NODES["node1"], "198.51.100.12"}, "none up: fail open")
            await changed(rt, "node1", "up")
            await changed(rt, "node2", "drain")
            await until(port, {NODES["node1"]}, "node2 draining")
            status = rt.status()["dns_management"]["health_names"]["svc.example.com."]
            assert status["records"] == [f"svc.example.com. 20 IN A {NODES['node1']}"]

            # the name leaves the configuration: its block leaves the zone file
            write_cluster(tmp_path, port, health=False)
            assert (await rt.reload())["changed"]
            await until(port, set(), "health name removed")
            assert "clusterkit svc.example.com." not in zone_file.read_text()
        finally:
            await rt.stop()

    loop = new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
