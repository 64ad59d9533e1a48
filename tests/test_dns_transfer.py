"""Zone transfers to a real NSD secondary: AXFR/IXFR with TSIG, NOTIFY, refusals.

The manager runs as a real daemon (``clusterkit run``) serving the test zones;
NSD runs as a secondary on another loopback address of this helper's range,
pulling with TSIG (example.com by IXFR — the whole zone first, then increments —,
example.org by AXFR) and accepting NOTIFY from the manager.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.xfr
import dns.zone
import pytest

from clusterkit_dns import zoneview
from clusterkit_dns.zones import load_zone
from dns_support import free_port, nsd_available, run_nsd, summary, write_zones
from support import wait_for

pytestmark = pytest.mark.skipif(not nsd_available(),
                                reason="nsd is not installed (apt-get install nsd; CI installs it)")

CLUSTERKIT = os.path.join(os.path.dirname(sys.executable), "clusterkit")
MANAGER, SECONDARY, FOREIGN = "127.87.1.1", "127.87.1.9", "127.87.1.20"
KEY_NAME = "xfr.test.key"
SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
PULLED = ("example.com", "example.org", "big.example")
BIG = "$TTL 300\n@ SOA ns1 hm 5 3600 900 604800 60\n@ NS ns1\nns1 A 192.0.2.1\n" + "".join(
    f"host{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\nhost{i} TXT \"record {i} {'x' * 40}\"\n"
    for i in range(3000))  # ~250 KB on the wire: many messages, each signed in a chain
QUERIES = [("example.com", "SOA"), ("example.com", "NS"), ("example.com", "MX"),
           ("www.example.com", "A"), ("mail.example.com", "AAAA"), ("nothere.example.com", "A"),
           ("x.wild.example.com", "TXT"), ("deleg.example.com", "NS"), ("inc2.example.com", "TXT"),
           ("www.example.org", "A"), ("back.example.org", "A"), ("example.org", "TXT")]



def soa_serial(addr: str, port: int, zone: str) -> int | None:
    try:
        r = dns.query.udp(dns.message.make_query(zone, "SOA"), addr, port=port, timeout=0.5)
    except Exception:
        return None
    return r.answer[0][0].serial if r.answer and r.rcode() == dns.rcode.NOERROR else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("xfr")
    port, nsd_port = free_port(MANAGER), free_port(SECONDARY)
    write_zones(base / "manager" / "zones")
    (base / "manager" / "zones" / "big.example.zone").write_text(BIG)
    cfg = base / "cluster.toml"
    cfg.write_text(f"""
[cluster]
name = "xfr"
state_dir = "{base}/state"

[manager]
name = "manager"
ip = "{MANAGER}"
root = "{base}/manager"

[dns]
port = {port}
zones_dir = "/zones"

[dns.tsig."{KEY_NAME}"]
secret = "{SECRET}"

[[dns.secondary]]
name = "nsd"
addresses = ["{SECONDARY}"]
key = "{KEY_NAME}"
zones = ["example.com", "example.org", "big.example"]
notify = ["{SECONDARY}:{nsd_port}"]
""")
    log = open(base / "daemon.log", "w")
    daemon = subprocess.Popen([CLUSTERKIT, "run", "-c", str(cfg), "-v"], stderr=log)
    nsd_conf = f"""key:
  name: "{KEY_NAME}"
  algorithm: hmac-sha256
  secret: "{SECRET}"
zone:
  name: example.com.
  zonefile: "example.com.zone"
  request-xfr: {MANAGER}@{port} {KEY_NAME}
  allow-notify: {MANAGER} {KEY_NAME}
  outgoing-interface: {SECONDARY}
zone:
  name: big.example.
  zonefile: "big.example.zone"
  request-xfr: AXFR {MANAGER}@{port} {KEY_NAME}
  allow-notify: {MANAGER} {KEY_NAME}
  outgoing-interface: {SECONDARY}
zone:
  name: example.org.
  zonefile: "example.org.zone"
  request-xfr: AXFR {MANAGER}@{port} {KEY_NAME}
  allow-notify: {MANAGER} {KEY_NAME}
  outgoing-interface: {SECONDARY}
"""
    try:
        wait_for(lambda: soa_serial(MANAGER, port, "example.com"), what="the manager's DNS")
        secondary_dir = base / "nsd-zones"
        secondary_dir.mkdir()
        with run_nsd(base / "nsd", secondary_dir, [], SECONDARY, nsd_port, extra=nsd_conf):
            yield {"cfg": cfg, "base": base, "ours": (MANAGER, port), "nsd": (SECONDARY, nsd_port)}
    finally:
        daemon.terminate()
        daemon.wait(10)
        log.close()


def test_nsd_pulls_every_zone_with_tsig_and_answers_identically(cluster):
    for zone in PULLED:
        wait_for(lambda: soa_serial(*cluster["nsd"], zone), what=f"NSD to pull {zone}")
    for qname, qtype in QUERIES:
        ours = dns.query.udp(dns.message.make_query(qname, qtype), *cluster["ours"][:1],
                             port=cluster["ours"][1], timeout=2)
        theirs = dns.query.udp(dns.message.make_query(qname, qtype), cluster["nsd"][0],
                               port=cluster["nsd"][1], timeout=2)
        assert summary(theirs) == summary(ours), f"{qname}/{qtype}"


def test_record_add_notifies_and_nsd_serves_the_new_serial(cluster):
    for zone in PULLED:
        wait_for(lambda: soa_serial(*cluster["nsd"], zone), what=f"NSD to pull {zone}")
    before = soa_serial(*cluster["nsd"], "example.com")
    done = subprocess.run([CLUSTERKIT, "dns", "record", "add", "example.com", "notified", "A",
                           "192.0.2.222", "-c", str(cluster["cfg"]), "--json"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    new = wait_for(lambda: soa_serial(*cluster["ours"], "example.com") != before
                   and soa_serial(*cluster["ours"], "example.com"), what="the manager to reload")
    # NSD's refresh timer is 2 hours: only NOTIFY can make it pull within seconds
    wait_for(lambda: soa_serial(*cluster["nsd"], "example.com") == new, timeout=10,
             what="NSD to serve the new serial after NOTIFY")
    answer = dns.query.udp(dns.message.make_query("notified.example.com", "A"),
                           cluster["nsd"][0], port=cluster["nsd"][1], timeout=2)
    assert [r.to_text() for r in answer.answer[0]] == ["192.0.2.222"]


def _axfr(cluster, source: str, keyring=None, keyname=None, rdtype=dns.rdatatype.AXFR, serial=None):
    addr, port = cluster["ours"]
    query, _ = dns.xfr.make_query(dns.zone.Zone("example.org."), serial=serial,
                                  keyring=keyring, keyname=keyname) \
        if rdtype == dns.rdatatype.IXFR else (dns.message.make_query("example.org.", rdtype), None)
    if keyring is not None and rdtype != dns.rdatatype.IXFR:
        query.use_tsig(keyring, keyname)
    return dns.query.tcp(query, addr, port=port, timeout=3, source=source)


def test_transfer_with_the_key_from_the_secondary_is_a_full_zone(cluster):
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    zone = dns.zone.Zone("example.org.")
    dns.query.inbound_xfr(cluster["ours"][0], zone, port=cluster["ours"][1], timeout=3,
                          source=SECONDARY, query=_query_with_key(keyring))
    assert _records(zone) == _served(cluster, "example.org")


def _served(cluster, name: str) -> set:
    """The records of a zone as the manager's server loads it ($INCLUDE files too)."""
    loaded = load_zone(str(cluster["base"] / "manager" / "zones" / f"{name}.zone"))
    return {(rrset.name, rrset.rdtype, rrset.ttl, tuple(sorted(r.to_text() for r in rrset)))
            for rrset in zoneview.rrsets(loaded)}


def _records(zone: dns.zone.Zone) -> set:
    origin = zone.origin
    return {(n.derelativize(origin), r.rdtype, r.ttl,
             tuple(sorted(x.to_text(origin=origin, relativize=False) for x in r)))
            for n, node in zone.nodes.items() for r in node.rdatasets}


def test_a_zone_of_many_messages_arrives_whole_with_every_message_signed(cluster):
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    expected = dns.zone.from_text(BIG, "big.example.", relativize=False)
    for _ in ("rendered", "from the cache of this zone version"):
        zone = dns.zone.Zone("big.example.")
        query = dns.message.make_query("big.example.", "AXFR")
        query.use_tsig(keyring, KEY_NAME)
        dns.query.inbound_xfr(cluster["ours"][0], zone, query=query, port=cluster["ours"][1],
                              timeout=5, source=SECONDARY)  # dnspython verifies the MAC chain
        assert _records(zone) == _records(expected) and len(_records(zone)) == 6003
    wait_for(lambda: soa_serial(*cluster["nsd"], "big.example"), what="NSD to pull big.example")
    for qname, qtype in (("host2999.big.example", "TXT"), ("host0.big.example", "A")):
        theirs = dns.query.udp(dns.message.make_query(qname, qtype), cluster["nsd"][0],
                               port=cluster["nsd"][1], timeout=2)
        ours = dns.query.udp(dns.message.make_query(qname, qtype), cluster["ours"][0],
                             port=cluster["ours"][1], timeout=2)
        assert summary(theirs) == summary(ours) and theirs.answer


def _query_with_key(keyring, rdtype="AXFR"):
    query = dns.message.make_query("example.org.", rdtype)
    query.use_tsig(keyring, KEY_NAME)
    return query


def test_ixfr_is_answered_with_a_full_transfer_or_the_soa_when_current(cluster):
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    zone = dns.zone.Zone("example.org.")
    query, _ = dns.xfr.make_query(zone, serial=1, keyring=keyring, keyname=KEY_NAME)
    dns.query.inbound_xfr(cluster["ours"][0], zone, query=query, port=cluster["ours"][1],
                          timeout=3, source=SECONDARY)  # RFC 1995 §4: a full zone, AXFR-style
    assert _records(zone) == _served(cluster, "example.org")
    current = _axfr(cluster, SECONDARY, keyring, KEY_NAME, dns.rdatatype.IXFR, serial=7)
    assert len(current.answer) == 1 and current.answer[0].rdtype == dns.rdatatype.SOA
    assert len(current.answer[0]) == 1 and current.answer[0][0].serial == 7


def test_transfer_without_the_key_is_refused(cluster):
    response = _axfr(cluster, SECONDARY)
    assert response.rcode() == dns.rcode.REFUSED and not response.answer


def test_transfer_from_a_foreign_address_is_refused_even_with_the_key(cluster):
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    response = _axfr(cluster, FOREIGN, keyring, KEY_NAME)
    assert response.rcode() == dns.rcode.REFUSED and not response.answer


def test_a_wrong_secret_is_notauth_badsig(cluster):
    wrong = dns.tsigkeyring.from_text({KEY_NAME: base64.b64encode(b"x" * 32).decode()})
    with pytest.raises(dns.tsig.PeerBadSignature):
        _axfr(cluster, SECONDARY, wrong, KEY_NAME)


def test_an_unknown_key_is_notauth_badkey(cluster):
    other = dns.tsigkeyring.from_text({"other.key": SECRET})
    with pytest.raises(dns.tsig.PeerBadKey):
        _axfr(cluster, SECONDARY, other, "other.key")


def test_axfr_over_udp_is_not_a_transfer(cluster):
    response = dns.query.udp(dns.message.make_query("example.org.", "AXFR"), cluster["ours"][0],
                             port=cluster["ours"][1], timeout=2, source=SECONDARY)
    assert response.rcode() in (dns.rcode.NOTIMP, dns.rcode.REFUSED) and not response.answer


def test_a_skewed_clock_is_notauth_badtime_signed(cluster, monkeypatch):
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    query = dns.message.make_query("example.org.", "AXFR")
    query.use_tsig(keyring, KEY_NAME)
    now = time.time()
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: now - 3600)  # signed an hour ago: beyond the 300 s fudge
        wire = query.to_wire()
    with socket.create_connection(cluster["ours"], timeout=3,
                                  source_address=(SECONDARY, 0)) as conn:
        conn.sendall(len(wire).to_bytes(2, "big") + wire)
        size = int.from_bytes(conn.recv(2), "big")
        data = b""
        while len(data) < size:
            data += conn.recv(size - len(data))
    unchecked = dns.message.from_wire(data, keyring=lambda m, n: False)
    assert unchecked.rcode() == dns.rcode.NOTAUTH and not unchecked.answer
    tsig = unchecked.tsig[0]
    assert tsig.error == dns.rcode.BADTIME and len(tsig.mac) == 32  # signed (RFC 8945 §5.2.3)
    assert abs(int.from_bytes(tsig.other, "big") - now) < 60  # our clock, for the client
    with pytest.raises(dns.tsig.PeerBadTime):  # signed by us, our clock in its other data
        dns.message.from_wire(data, keyring=keyring, request_mac=query.mac)


def test_a_zone_the_secondary_does_not_carry_is_refused(cluster):
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    query = dns.message.make_query("child.example.com.", "AXFR")  # served, not in its zones
    query.use_tsig(keyring, KEY_NAME)
    response = dns.query.tcp(query, cluster["ours"][0], port=cluster["ours"][1], timeout=3,
                             source=SECONDARY)
    assert response.rcode() == dns.rcode.REFUSED and not response.answer


def test_the_daemon_reports_transfers_and_notifications(cluster):
    for zone in PULLED:
        wait_for(lambda: soa_serial(*cluster["nsd"], zone), what=f"NSD to pull {zone}")
    target = f"{cluster['nsd'][0]}:{cluster['nsd'][1]}"

    def report():
        out = subprocess.run([CLUSTERKIT, "status", "--json", "-c", str(cluster["cfg"])],
                             capture_output=True, text=True, timeout=30)
        section = json.loads(out.stdout)["dns_management"] if out.returncode == 0 else {}
        return section if f"example.org -> {target}" in section.get("notify", {}).get(
            "acknowledged", {}) else None

    section = wait_for(report, what="the NOTIFY of example.org to be acknowledged")
    assert section["transfers"]["allowed"] >= len(PULLED)
    assert section["transfers"]["refused"] + section["transfers"]["notauth"] >= 0


def _transfers(cluster) -> dict:
    out = subprocess.run([CLUSTERKIT, "status", "--json", "-c", str(cluster["cfg"])],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["dns_management"]["transfers"]


def _messages(cluster, rdtype, serial, keyring):
    return list(dns.query.xfr(cluster["ours"][0], "example.com.", rdtype=rdtype, serial=serial,
                              port=cluster["ours"][1], keyring=keyring, keyname=KEY_NAME,
                              source=SECONDARY, timeout=5, relativize=False))


def test_nsd_gets_a_one_record_change_as_an_increment(cluster):
    """NSD pulls example.com by IXFR: after one record is added it gets the increment (the
    transfer counted incremental), applies it, and answers like us; the increment is a
    fraction of the zone's bytes on the wire."""
    wait_for(lambda: soa_serial(*cluster["nsd"], "example.com"), what="NSD to pull example.com")
    wait_for(lambda: soa_serial(*cluster["nsd"], "example.com")
             == soa_serial(*cluster["ours"], "example.com"), what="NSD to be current")
    before, incremental = soa_serial(*cluster["ours"], "example.com"), \
        _transfers(cluster)["incremental"]
    done = subprocess.run([CLUSTERKIT, "dns", "record", "add", "example.com", "ixfr-one", "A",
                           "192.0.2.77", "-c", str(cluster["cfg"]), "--json"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    new = wait_for(lambda: soa_serial(*cluster["ours"], "example.com") != before
                   and soa_serial(*cluster["ours"], "example.com"), what="the manager to reload")
    wait_for(lambda: soa_serial(*cluster["nsd"], "example.com") == new, timeout=10,
             what="NSD to serve the new serial after NOTIFY")
    assert _transfers(cluster)["incremental"] > incremental
    for qname, qtype in [("ixfr-one.example.com", "A"), *QUERIES]:
        ours = dns.query.udp(dns.message.make_query(qname, qtype), cluster["ours"][0],
                             port=cluster["ours"][1], timeout=2)
        theirs = dns.query.udp(dns.message.make_query(qname, qtype), cluster["nsd"][0],
                               port=cluster["nsd"][1], timeout=2)
        assert summary(theirs) == summary(ours), f"{qname}/{qtype}"
    keyring = dns.tsigkeyring.from_text({KEY_NAME: SECRET})
    increment = _messages(cluster, dns.rdatatype.IXFR, before, keyring)
    whole = _messages(cluster, dns.rdatatype.AXFR, 0, keyring)
    records = [(r.name.to_text(), r.rdtype) for m in increment for r in m.answer]
    assert records[:3] == [("example.com.", dns.rdatatype.SOA)] * 3
    assert ("ixfr-one.example.com.", dns.rdatatype.A) in records
    sizes = [sum(len(m.to_wire(max_size=65535)) for m in found) for found in (increment, whole)]
    assert sizes[0] < sizes[1] / 4
