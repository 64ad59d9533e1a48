"""Health-aware names: the manager rewrites a name's A records as members go up and down.

The manager runs in-process (``Runtime``) with its DNS server and the real
membership plugin; a ``command`` health check whose outcome the test flips
with a file per node drives members down and up, and an operator drain does
the rest.
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
check = {{ kind = "command", command = "test ! -e {tmp_path}/down-$CK_NODE", inter = 0.1, timeout = 2, rise = 1, fall = 1 }}

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

    def mark(node: str, down: bool) -> None:
        flag = tmp_path / f"down-{node}"
        flag.touch() if down else flag.unlink()

    async def scenario():
        rt = Runtime(path, pm, "manager", watch_config=False)
        await rt.start()
        try:
            # every weighted member while all pass (node3 has weight 0)
            ttl = await until(port, {NODES["node1"], "198.51.100.12"}, "at start")
            assert ttl == 20
            assert "; clusterkit svc.example.com. begin: policy" in zone_file.read_text()

            mark("node1", down=True)
            await until(port, {"198.51.100.12"}, "node1 down")
            mark("node2", down=True)
            await until(port, {NODES["node1"], "198.51.100.12"}, "none up: fail open")
            mark("node1", down=False)
            mark("node2", down=False)
            await rt.components["membership"].set_operator("node2", "drain")
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


def test_records_follow_weights_states_and_address_families(tmp_path):
    from types import SimpleNamespace

    from clusterkit.config import load_cluster
    from clusterkit_dns.healthnames import records_for
    from clusterkit_dns.mgmtconfig import HealthName

    cluster = load_cluster(write_cluster(tmp_path, 5300), get_plugin_manager())
    runtime = SimpleNamespace(cluster=cluster, components={})
    hn = HealthName("example.com.", "svc.example.com.", POLICY, 15,
                    (("node1", "2001:db8::11"),))
    lines, why = records_for(runtime, hn)
    assert lines == ["svc.example.com. 15 IN A 127.87.4.12",
                     "svc.example.com. 15 IN AAAA 2001:db8::11"]  # node3 has weight 0
    assert why.startswith("no health information")
    states = {"node1": "maintenance", "node2": "up", "node3": "up"}
    runtime.components["membership"] = SimpleNamespace(
        states=lambda key: states if key == POLICY else {})
    assert records_for(runtime, hn) == (["svc.example.com. 15 IN A 127.87.4.12"], "1 of 2 members up")
    missing = HealthName("example.com.", "x.example.com.", "127.87.4.1:81", 15, ())
    assert records_for(runtime, missing) == ([], "no policy 127.87.4.1:81")
