"""IXFR with history (RFC 1995) on a real server, in-process, with dnspython as the client.

The server keeps each zone's differences when it loads a new version
(clusterkit_dns.journal); IXFR answers carry the increments in the condensed
form, fall back to the whole zone when the history does not reach the
client's serial, and keep the history across a restart (the journal files).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.xfr
import dns.zone
import pytest

from clusterkit_dns.journal import History
from clusterkit_dns.mgmtconfig import Management, Secondary, parse_management
from clusterkit_dns.xfr import Transfers
from dns_support import ServerThread
from support import wait_for

SERVER, ALLOWED, OTHER = "127.87.31.1", "127.87.31.9", "127.87.31.10"
ZONE = "ixfr.test."
BASE = ("$TTL 300\n@ SOA ns1 hm {serial} 3600 900 604800 60\n@ NS ns1\nns1 A 192.0.2.1\n"
        "www A 192.0.2.80\n{extra}" + "".join(f"h{i} A 10.0.0.{i}\n" for i in range(60)))


def write(directory, serial: int, extra: str = "") -> str:
    text = BASE.format(serial=serial, extra=extra)
    path = directory / "ixfr.test.zone"
    (directory / "tmp").write_text(text)
    os.replace(directory / "tmp", path)
    return text


@pytest.fixture
def served(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones, 1)
    yield from _serve(tmp_path, zones)


def _serve(tmp_path, zones, depth: int = 10):
    with ServerThread(zones, SERVER) as srv:
        srv.server.transfers = Transfers(srv.server, Management(secondaries=(
            Secondary("plain", (ipaddress.ip_network(f"{ALLOWED}/32"),), "", (), ()),)))
        srv.server.history = History(str(tmp_path / "journal"), depth)
        srv.zones = zones
        yield srv


def change(srv, serial: int, extra: str = "") -> str:
    text = write(srv.zones, serial, extra)
    wait_for(lambda: srv.server.zones[dns.name.from_text(ZONE)].serial == serial,
             what=f"serial {serial} to be served")
    return text


def ixfr(srv, serial: int, source: str = ALLOWED) -> list[tuple]:
    """Every record of the IXFR answer, in order, as (name, type, text)."""
    out = []
    for message in dns.query.xfr(SERVER, ZONE, rdtype=dns.rdatatype.IXFR, serial=serial,
                                 port=srv.port, source=source, timeout=3, relativize=False):
        for rrset in message.answer:
            out += [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text())
                    for rd in rrset]
    return out


def soa(serial: int) -> tuple:
    return (ZONE, "SOA", f"ns1.{ZONE} hm.{ZONE} {serial} 3600 900 604800 60")


def test_one_record_changed_is_sent_as_the_increment(served):
    change(served, 2, "new A 192.0.2.2\n")
    assert ixfr(served, 1) == [soa(2), soa(1), soa(2), (f"new.{ZONE}", "A", "192.0.2.2"), soa(2)]
    assert served.server.transfers.stats["incremental"] == 1


def test_increments_chain_and_apply_to_the_old_zone(served):
    old = dns.zone.from_text(BASE.format(serial=1, extra=""), ZONE, relativize=False)
    change(served, 2, "new A 192.0.2.2\n")
    change(served, 3, "new A 192.0.2.3\nnew TXT \"third\"\n")
    records = ixfr(served, 1)
    assert records == [soa(3), soa(1), soa(2), (f"new.{ZONE}", "A", "192.0.2.2"),
                       soa(2), (f"new.{ZONE}", "A", "192.0.2.2"), soa(3),
                       (f"new.{ZONE}", "A", "192.0.2.3"), (f"new.{ZONE}", "TXT", '"third"'), soa(3)]
    query, _ = dns.xfr.make_query(old)
    dns.query.inbound_xfr(SERVER, old, query=query, port=served.port, timeout=3, source=ALLOWED)
    served_now = dns.zone.from_text(BASE.format(serial=3, extra="new A 192.0.2.3\n"
                                                "new TXT \"third\"\n"), ZONE, relativize=False)
    assert old == served_now


def test_a_serial_the_history_does_not_reach_gets_the_whole_zone(served):
    change(served, 2, "new A 192.0.2.2\n")
    records = ixfr(served, 0)  # never served: RFC 1995 §4, the zone AXFR-style
    assert records[0] == soa(2) and records[-1] == soa(2)
    assert records[1][1] != "SOA" and len(records) == 2 + 63 + 1
    assert served.server.transfers.stats["incremental"] == 0


def test_a_current_serial_gets_the_soa_alone(served):
    assert ixfr(served, 1) == [soa(1)]


def test_a_changed_ttl_is_the_rrset_deleted_and_added(served):
    change(served, 2, "www 60 A 192.0.2.80\n")  # the same record twice: smallest TTL
    records = ixfr(served, 1)
    assert records == [soa(2), soa(1), (f"www.{ZONE}", "A", "192.0.2.80"), soa(2),
                       (f"www.{ZONE}", "A", "192.0.2.80"), soa(2)]


def test_a_serial_going_down_clears_the_history(served):
    change(served, 5, "new A 192.0.2.5\n")
    change(served, 4, "new A 192.0.2.4\n")
    records = ixfr(served, 1)
    assert records[1][1] != "SOA"  # the whole zone
    change(served, 6, "new A 192.0.2.6\n")
    assert ixfr(served, 4)[1] == soa(4)  # a new history starts at the version served


def test_history_is_bounded(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones, 1)
    for srv in _serve(tmp_path, zones, depth=2):
        for serial in (2, 3, 4):
            change(srv, serial, f"new A 192.0.2.{serial}\n")
        assert ixfr(srv, 1)[1][1] != "SOA"  # three versions back: gone
        assert ixfr(srv, 2)[1] == soa(2)
        assert srv.server.history.sizes() == {dns.name.from_text(ZONE): 2}


def test_history_survives_a_restart_unless_the_zone_moved_on(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones, 1)
    for srv in _serve(tmp_path, zones):
        change(srv, 2, "new A 192.0.2.2\n")
    for srv in _serve(tmp_path, zones):  # same state dir, same files: the journal is read
        assert ixfr(srv, 1)[1] == soa(1)
    write(zones, 3, "new A 192.0.2.3\n")  # changed while the server was down
    for srv in _serve(tmp_path, zones):
        assert ixfr(srv, 1)[1][1] != "SOA" and ixfr(srv, 2)[1][1] != "SOA"
        assert not (tmp_path / "journal" / "ixfr.test.ixfr").exists()


@pytest.mark.parametrize("content", [
    "garbage line here\n",
    "ixfr.test. 300 IN A 192.0.2.1\n",                               # no SOA first
    "ixfr.test. 300 IN SOA ns1.ixfr.test. hm.ixfr.test. 1 3600 900 604800 60\n",  # no new SOA
    "evil.example. 300 IN SOA a. b. 1 1 1 1 1\nevil.example. 300 IN SOA a. b. 2 1 1 1 1\n",
    "$INCLUDE /etc/passwd\n",
])
def test_a_broken_journal_is_dropped_and_the_whole_zone_sent(tmp_path, content, caplog):
    zones = tmp_path / "zones"
    zones.mkdir()
    write(zones, 2)
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "ixfr.test.ixfr").write_text(content)
    caplog.set_level(logging.WARNING, "clusterkit.dns.xfr")
    for srv in _serve(tmp_path, zones):
        records = ixfr(srv, 1)
        assert records[0] == soa(2) and records[1][1] != "SOA"
        assert ixfr(srv, 2) == [soa(2)]  # and the server still answers
    assert "IXFR history of ixfr.test. dropped" in caplog.text


def test_ixfr_from_an_address_not_allowed_is_refused_over_tcp_and_udp(served):
    change(served, 2, "new A 192.0.2.2\n")
    query = _query(1)
    for send in (dns.query.tcp, dns.query.udp):
        response = send(query, SERVER, port=served.port, timeout=3, source=OTHER)
        assert response.rcode() == dns.rcode.REFUSED and not response.answer


def _query(serial: int, **kw) -> dns.message.Message:
    query = dns.message.make_query(ZONE, "IXFR", **kw)
    query.authority.append(dns.rrset.from_text(ZONE, 0, "IN", "SOA",
                                               f"ns1.{ZONE} hm.{ZONE} {serial} 3600 900 604800 60"))
    return query


def _udp_records(srv, serial: int, **kw) -> tuple[dns.message.Message, list]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ALLOWED, 0))
    sock.settimeout(3)
    with sock:
        sock.sendto(_query(serial, **kw).to_wire(), (SERVER, srv.port))
        wire = sock.recv(65535)
    response = dns.message.from_wire(wire, one_rr_per_rrset=True)
    return response, [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype), r[0].to_text())
                      for r in response.answer], len(wire)


def test_udp_ixfr_is_the_first_message_filled_up_to_the_udp_size(served):
    """As NSD answers: the increment when it fits, the start of the zone when the history
    does not reach (no TC), the SOA when current; within 512 bytes without EDNS."""
    change(served, 2, "new A 192.0.2.2\n")
    response, records, _ = _udp_records(served, 1)
    assert records == ixfr(served, 1) and not response.flags & dns.flags.TC
    response, records, size = _udp_records(served, 0, use_edns=False)
    assert size <= 512 and records[0] == soa(2) and 2 < len(records) < 65
    response, records, size = _udp_records(served, 0, use_edns=0, payload=4096)
    assert 512 < size <= 1232 and response.edns == 0 and len(records) < 65
    assert _udp_records(served, 2)[1] == [soa(2)]


def test_ixfr_history_setting_is_checked():
    problems = []
    assert parse_management({}, lambda k, m: problems.append(k)).ixfr_history == 10
    assert parse_management({"ixfr_history": 0}, lambda k, m: problems.append(k)).ixfr_history == 0
    assert not problems
    for bad in (-1, 1001, "5", True, 2.5):
        problems.clear()
        parse_management({"ixfr_history": bad}, lambda k, m: problems.append((k, m)))
        assert problems and problems[0][0] == "ixfr_history", bad


def test_a_change_bigger_than_the_zone_is_not_journaled(served):
    change(served, 2, "new A 192.0.2.2\n")
    journal = served.server.history.directory + "/ixfr.test.ixfr"
    assert os.path.exists(journal)
    everything = "".join(f"g{i} A 10.1.0.{i}\n" for i in range(70))
    text = "$TTL 300\n@ SOA ns1 hm 3 3600 900 604800 60\n@ NS ns1\nns1 A 192.0.2.1\n" + everything
    (served.zones / "tmp").write_text(text)
    os.replace(served.zones / "tmp", served.zones / "ixfr.test.zone")
    wait_for(lambda: served.server.zones[dns.name.from_text(ZONE)].serial == 3)
    assert not os.path.exists(journal) and served.server.history.sizes() == {}
    assert ixfr(served, 2)[1][1] != "SOA"  # the whole zone
