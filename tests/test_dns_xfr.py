"""Transfer access rules on a real server, in-process: address-only secondaries, zone lists."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.query
import dns.rcode
import dns.zone

from clusterkit_dns.mgmtconfig import Management, Secondary
from clusterkit_dns.xfr import Transfers, xfr_type
from dns_support import ServerThread, write_zones

SERVER, ALLOWED, OTHER = "127.87.7.1", "127.87.7.9", "127.87.7.10"


def test_an_address_only_secondary_pulls_without_a_key_and_only_its_zones(tmp_path):
    zones = write_zones(tmp_path / "zones")
    with ServerThread(zones, SERVER) as srv:
        srv.server.transfers = Transfers(srv.server, Management(secondaries=(
            Secondary("plain", (ipaddress.ip_network(f"{ALLOWED}/32"),), "", ("example.org.",), ()),
        )))
        zone = dns.zone.Zone("example.org.")
        dns.query.inbound_xfr(SERVER, zone, port=srv.port, timeout=3, source=ALLOWED)
        assert zone.get_rdataset("www", "A")[0].to_text() == "198.51.100.80"
        for source, name in ((OTHER, "example.org."), (ALLOWED, "example.com.")):
            response = dns.query.tcp(dns.message.make_query(name, "AXFR"), SERVER, port=srv.port,
                                     timeout=3, source=source)
            assert response.rcode() == dns.rcode.REFUSED and not response.answer, (source, name)
        assert srv.server.transfers.stats == {"allowed": 1, "refused": 2, "notauth": 0,
                                             "incremental": 0}
        # ordinary queries on the same TCP path still go to the answer engine
        answer = dns.query.tcp(dns.message.make_query("www.example.org.", "A"), SERVER,
                               port=srv.port, timeout=3, source=OTHER)
        assert answer.answer[0][0].to_text() == "198.51.100.80"


def test_only_standard_axfr_and_ixfr_queries_are_transfers():
    def wire(qtype, opcode=0):
        q = dns.message.make_query("example.org.", qtype)
        q.set_opcode(opcode)
        return q.to_wire()

    assert xfr_type(wire("AXFR")) == 252 and xfr_type(wire("IXFR")) == 251
    assert xfr_type(wire("SOA")) == 0 and xfr_type(wire("AXFR", opcode=4)) == 0
    assert xfr_type(b"\x00" * 11) == 0 and xfr_type(wire("AXFR")[:-3]) == 0
