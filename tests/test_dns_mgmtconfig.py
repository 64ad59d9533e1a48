"""The management keys of ``[dns]``: valid tables parse, every mistake is named by its key path."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import time

import dns.message
import dns.name
import dns.opcode
import pytest

from clusterkit.config import load_cluster
from clusterkit.definition.tables import ConfigError
from clusterkit.runtime import new_event_loop
from clusterkit_dns.mgmtconfig import Management, Secondary
from clusterkit_dns.notify import Notifier
from clusterkit_dns.settings import settings_of
from clusterkit_dns.zones import load_zone
from conftest import write_cluster
from dns_support import free_port, write_zones

SECRET = base64.b64encode(b"k" * 32).decode()


def load(tmp_path, pm, table: str):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.87.6", nodes=1,
                        extra=f'\n[dns]\nport = 5300\nzones_dir = "/zones"\n{table}')
    return load_cluster(cfg, pm)


def test_a_full_table_parses(tmp_path, pm):
    cluster = load(tmp_path, pm, f"""
[dns.tsig."xfr.example."]
algorithm = "hmac-sha512"
secret = "{SECRET}"

[[dns.secondary]]
name = "outside"
addresses = ["192.0.2.53", "2001:db8:53::/64"]
key = "xfr.example"
zones = ["example.com"]

[[dns.health_name]]
zone = "example.com"
name = "www"
policy = "127.87.6.1:80"
""")
    mgmt = settings_of(cluster).management
    assert mgmt.key("XFR.example").algorithm == "hmac-sha512"
    (sec,) = mgmt.secondaries
    assert sec.notify == (("192.0.2.53", 53),)  # the single IP; networks get no NOTIFY
    assert sec.allows("2001:db8:53::9") and not sec.allows("192.0.2.54")
    assert sec.serves(dns.name.from_text("EXAMPLE.com.")) and not sec.serves(dns.name.from_text("example.org."))
    (hn,) = mgmt.health_names
    assert (hn.zone, hn.name, hn.ttl) == ("example.com.", "www.example.com.", 30)


@pytest.mark.parametrize("table, message", [
    ('[dns.tsig.k]\nsecret = "not base64!"', "dns.tsig.k.secret: is not valid base64"),
    (f'[dns.tsig.k]\nsecret = "{base64.b64encode(b"short").decode()}"', "use at least 16"),
    (f'[dns.tsig.k]\nsecret = "{SECRET}"\nalgorithm = "hmac-md5"', "'hmac-md5' is not supported"),
    ("[dns.tsig.k]\nalgorithm = \"hmac-sha256\"", "dns.tsig.k.secret: is required"),
    (f'[dns.tsig.k]\nsecret = "{SECRET}"\nsecret_file = "/x"', "not both"),
    ('[dns.tsig.k]\nsecret_file = "/nonexistent/key"', "dns.tsig.k.secret_file: cannot read"),
    ('[[dns.secondary]]\naddresses = ["192.0.2.1"]\nkey = "nokey"', "dns.secondary[0].key: no TSIG key 'nokey'"),
    ('[[dns.secondary]]\naddresses = ["192.0.2.1", "x"]', "dns.secondary[0].addresses[1]: 'x' is not"),
    ('[[dns.secondary]]\nname = "a"', "dns.secondary[0].addresses: is required"),
    ('[[dns.secondary]]\naddresses = ["192.0.2.1"]\nnotify = ["192.0.2.1:99999"]',
     "dns.secondary[0].notify[0]"),
    ('[[dns.secondary]]\naddresses = ["192.0.2.1"]\nport = 53', "dns.secondary[0].port: unknown key"),
    ('[[dns.secondary]]\nname = "a"\naddresses = ["192.0.2.1"]\n'
     '[[dns.secondary]]\nname = "a"\naddresses = ["192.0.2.2"]', "duplicate secondary 'a'"),
    ('[[dns.health_name]]\nzone = "example.com"\nname = "www"\npolicy = "127.87.6.1"',
     "dns.health_name[0].policy: must be a policy's VIP:PORT"),
    ('[[dns.health_name]]\nzone = "example.com"\nname = "www.example.org."\npolicy = "1.2.3.4:80"',
     "not inside zone example.com."),
    ('[[dns.health_name]]\nzone = "example.com"\nname = "www"\npolicy = "1.2.3.4:80"\nttl = -1',
     "dns.health_name[0].ttl"),
    ('[[dns.health_name]]\nzone = "example.com"\nname = "www"\npolicy = "1.2.3.4:80"\n'
     'addresses = { node1 = "nope" }', "dns.health_name[0].addresses.node1: 'nope'"),
    ('secondary = "x"', "dns.secondary: must be an array of tables"),
    ('tsig = "x"', "dns.tsig: must be a table, not a string"),
    ('[dns.tsig.k]\nsecret = 5', "dns.tsig.k.secret: must be a string, not 5"),
    ('[dns.tsig.""]\nsecret = "x"', "dns.tsig.: must be a domain name, not ''"),
    ('[[dns.secondary]]\naddresses = ["192.0.2.1"]\nzones = ["example.com", ""]',
     "dns.secondary[0].zones[1]: must be a domain name, not ''"),
    ('[[dns.secondary]]\naddresses = "192.0.2.1"', "dns.secondary[0].addresses: must be a list of strings"),
    ('[[dns.health_name]]\nzone = "example.com"\nname = "www"', "dns.health_name[0].policy: is required"),
    ('[[dns.health_name]]\nzone = "example.com"\nname = "www"\npolicy = "1.2.3.4:80"\n'
     'addresses = { node1 = 5 }', "dns.health_name[0].addresses.node1: must be a string, not 5"),
    ('[dns.health_name]\nzone = "example.com"', "dns.health_name: must be an array of tables"),
    ('ixfr_history = 1001', "dns.ixfr_history: 1001 is out of range (0..1000)"),
    ('[[dns.health_name]]\nzone = "\\\\047etc\\\\047x.example"\nname = "www"\npolicy = "1.2.3.4:80"',
     "dns.health_name[0].zone: zone name"),  # \047 is '/' once unescaped: it names a file
])
def test_mistakes_are_named(tmp_path, pm, table, message):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, pm, table)
    assert message in str(info.value)
    assert str(tmp_path / "cluster.toml") in str(info.value)


def test_a_secret_of_the_wrong_type_is_one_mistake(tmp_path, pm):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, pm, '[dns.tsig.k]\nsecret = 5')
    assert "must be a string, not 5" in str(info.value)
    assert "is required" not in str(info.value)


# ------------------------------------------------------------------ NOTIFY


class Secondary_:
    """A UDP 'secondary' that ignores the first NOTIFY and acknowledges the next ones."""

    def __init__(self, ignore: int):
        self.ignore = ignore
        self.seen: list[tuple[float, dns.message.Message]] = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        query = dns.message.from_wire(data)
        self.seen.append((time.monotonic(), query))
        if len(self.seen) > self.ignore:
            self.transport.sendto(dns.message.make_response(query).to_wire(), addr)

    def error_received(self, exc):
        pass

    def connection_lost(self, exc):
        pass


def test_notify_is_retried_with_back_off_until_acknowledged(tmp_path):
    zones = write_zones(tmp_path / "zones", {"example.org": "$TTL 60\n@ SOA ns hm 41 1 1 1 1\n@ NS ns\n"
                                                           "ns A 192.0.2.1\n"}, {})
    zone = load_zone(str(zones / "example.org.zone"))
    addr = "127.87.5.9"
    port = free_port(addr)

    class Server:  # what the notifier reads of a DnsServer: the zones being served
        zones = {zone.origin: zone}

    async def scenario():
        loop = asyncio.get_running_loop()
        secondary = Secondary_(ignore=1)
        transport, _ = await loop.create_datagram_endpoint(lambda: secondary, local_addr=(addr, port))
        target = Secondary("outside", (ipaddress.ip_network(addr),), "", (), ((addr, port),))
        notifier = Notifier(Server(), Management(secondaries=(target,)), ["127.87.5.1"])
        notifier.start()
        try:
            deadline = time.monotonic() + 8
            while not notifier.acked and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await notifier.stop()
            transport.close()
        return secondary, notifier

    loop = new_event_loop()
    try:
        secondary, notifier = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert notifier.acked[(zone.origin, (addr, port))][0] == 41
    assert len(secondary.seen) == 2
    (t1, first), (t2, second) = secondary.seen
    assert first.opcode() == second.opcode() == dns.opcode.NOTIFY
    assert second.answer[0][0].serial == 41  # the SOA rides along (RFC 1996 §3.7)
    assert t2 - t1 >= 2.5  # the 2 s timeout, then 1 s of back-off before asking again
