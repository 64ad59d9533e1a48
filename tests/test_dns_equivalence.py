"""clusterkit's DNS server answers exactly as NSD does, on the same zones, over UDP and TCP.

Both servers run for real on loopback (NSD with ``server-count: 1``); every
query goes to both with dnspython, and rcode, flags, EDNS and every section
(as sets of RRsets) must be equal. The zones cover the parser cases and the
answer rules (tests/dns_support.py).
"""

from __future__ import annotations

import socket
import struct

import dns.flags
import dns.message
import dns.query
import dns.rdataclass
import pytest

from dns_support import ZONES, ServerThread, free_port, nsd_available, run_nsd, summary, write_zones

OURS = "127.83.1.1"
NSD = "127.83.1.2"

pytestmark = pytest.mark.skipif(not nsd_available(),
                                reason="nsd is not installed (apt-get install nsd; CI installs it)")

QUERIES = """
www.example.com A
WWW.Example.COM A
example.com A
example.com AAAA
example.com MX
example.com NS
example.com SOA
example.com CAA
example.com TXT
nx.example.com A
deep.nx.example.com TXT
mail.example.com TXT
mail.example.com A
mail.example.com AAAA
b.c.ent.example.com A
c.ent.example.com AAAA
a.b.c.ent.example.com A
chain1.example.com A
chain1.example.com AAAA
chain2.example.com TXT
alias.example.com A
loop1.example.com A
dangling.example.com A
external.example.com A
crossed.example.com A
back.example.org A
x.wild.example.com TXT
x.wild.example.com A
X.Wild.Example.Com A
x.y.wild.example.com MX
wild.example.com A
sub.wild.example.com A
sub.wild.example.com TXT
x.sub.wild.example.com A
x.cwild.example.com A
x.cwild.example.com MX
*.wild.example.com A
*.wild.example.com TXT
foo.deleg.example.com A
a.b.deleg.example.com AAAA
deleg.example.com DS
deleg.example.com NS
deleg.example.com A
ns.deleg.example.com A
ns.deleg.example.com AAAA
_sip._tcp.example.com SRV
_tcp.example.com SRV
naptr.example.com NAPTR
txt2.example.com TXT
esc.example.com TXT
generic.example.com TYPE65534
generic2.example.com A
ptrname.example.com PTR
mixedcase.example.com A
big.example.com TXT
ttlunits.example.com A
ttlunits.example.com TXT
lower.example.com A
inc1.example.com A
inc2.example.com TXT
host.rel.example.com A
after-ttl.example.com A
ns1.example.com A
ns1.example.com AAAA
www.example.com CNAME
example.com TYPE0
example.com MAILA
www.child.example.com A
child.example.com NS
child.example.com SOA
child.example.com DS
nx.child.example.com A
www.example.org A
example.org MX
nothing.example.net A
net A
1.2.0.192.in-addr.arpa PTR
25.2.0.192.in-addr.arpa PTR
9.2.0.192.in-addr.arpa PTR
2.0.192.in-addr.arpa SOA
example.com ANY
www.example.com ANY
mail.example.com ANY
x.wild.example.com ANY
nx.example.com ANY
b.c.ent.example.com ANY
deleg.example.com ANY
host3.example MX
host3.example A
foo.bar.example TXT
host1.example MX
sub.*.example MX
_telnet._tcp.host1.example SRV
host.subdel.example A
ghost.*.example MX
_ssh._tcp.host1.example SRV
example MX
ns.nottl.test A
a.nottl.test A
b.nottl.test A
c.nottl.test TXT
d.nottl.test TXT
nottl.test SOA
example.com DS
www.child.example.com DS
ns.child.example.com A
example.org DS
deleg.example.com MX
ns.deleg.example.com DS
x.wild.example.com DS
naptr.example.com ANY
todeleg.example.com A
todeleg.example.com CNAME
""".strip().splitlines()


IDENTITY, VERSION = "equivalence-host", "equivalence 1.0"
CHAOS_CONF = f'  identity: "{IDENTITY}"\n  version: "{VERSION}"'


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("dns-equivalence")
    zones = write_zones(base / "zones")
    nsd_port = free_port(NSD)
    with run_nsd(base / "nsd", zones, list(ZONES), NSD, nsd_port, extra=CHAOS_CONF):
        with ServerThread(zones, OURS, identity=IDENTITY, version=VERSION) as ours:
            yield {"nsd": (NSD, nsd_port), "ours": (OURS, ours.port)}


def both(servers, send):
    return [send(*servers[name]) for name in ("nsd", "ours")]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("edns", [False, True], ids=["plain", "edns"])
@pytest.mark.parametrize("query", QUERIES)
def test_same_answer_as_nsd(servers, query, transport, edns):
    name, rdtype = query.split()
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    send = dns.query.tcp if transport == "tcp" else dns.query.udp
    nsd, ours = both(servers, lambda a, p: send(q, a, port=p, timeout=3))
    assert summary(ours) == summary(nsd)
    assert ours.question[0].name.to_text() == name + "."  # letter case kept


@pytest.mark.parametrize("size", [None, 100, 512, 600, 4096])
def test_truncation_same_as_nsd(servers, size):
    """A response bigger than the client's buffer: TC, the question (and OPT), nothing else."""
    q = dns.message.make_query("big.example.com", "TXT", use_edns=False if size is None else 0,
                               payload=size or 512)
    nsd, ours = both(servers, lambda a, p: dns.query.udp(q, a, port=p, timeout=3))
    assert summary(ours) == summary(nsd)
    assert bool(ours.flags & dns.flags.TC) == (size != 4096)  # the answer is ~800 bytes


def test_flags_echo_like_nsd(servers):
    """RD echoed, CD/AD/Z of the query not, DO copied into the OPT."""
    q = dns.message.make_query("www.example.com", "A", use_edns=0, want_dnssec=True)
    q.flags |= dns.flags.CD | dns.flags.AD
    nsd, ours = both(servers, lambda a, p: dns.query.udp(q, a, port=p, timeout=3))
    assert ours.flags == nsd.flags
    assert ours.ednsflags == nsd.ednsflags == dns.flags.DO
    q.flags &= ~dns.flags.RD
    nsd, ours = both(servers, lambda a, p: dns.query.udp(q, a, port=p, timeout=3))
    assert ours.flags == nsd.flags and not ours.flags & dns.flags.RD


def _raw(addr, port, data, tcp=False):
    if tcp:
        with socket.create_connection((addr, port), timeout=3) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            try:
                head = s.recv(2)
            except ConnectionResetError:
                head = b""
            if len(head) < 2:
                return "closed"
            size = struct.unpack("!H", head)[0]
            out = b""
            while len(out) < size:
                out += s.recv(size - len(out))
            return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(data, (addr, port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def _plain(name="example.com", rdtype="SOA", **kw):
    return dns.message.make_query(name, rdtype, use_edns=False, **kw).to_wire()


def _with_opcode(opcode):
    q = dns.message.make_query("example.com", "SOA", use_edns=False)
    q.set_opcode(opcode)
    return q.to_wire()


_W = _plain()
_E = dns.message.make_query("www.example.com", "A", use_edns=0).to_wire()
RAW = {
    "qdcount 0": _W[:4] + b"\x00\x00" + _W[6:12],
    "header only": _W[:12],
    "cut question": _W[:-3],
    "trailing bytes": _W + b"xyz",
    "ancount 1": _W[:6] + b"\x00\x01" + _W[8:],
    "nscount 1": _W[:8] + b"\x00\x01" + _W[10:],
    "pointer in qname": _W[:12] + b"\xc0\x0c\x00\x06\x00\x01",
    "label 64": _W[:12] + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "two OPT": _E[:10] + b"\x00\x02" + _E[12:] + _E[-11:],
    "OPT not at root": _E[:-11] + b"\x01a\x00" + _E[-10:],
    "EDNS version 1": dns.message.make_query("www.example.com", "A", use_edns=1).to_wire(),
    "EDNS version 1 out of zone": dns.message.make_query("a.example.net", "A", use_edns=1).to_wire(),
    "opcode IQUERY": _with_opcode(1),
    "opcode STATUS": _with_opcode(2),
    "opcode NOTIFY": _with_opcode(4),
    "opcode UPDATE": _with_opcode(5),
    "opcode 15": _with_opcode(15),
    "AXFR": _plain("example.com", "AXFR"),
    "IXFR": _plain("example.com", "IXFR"),
    "class CH": _plain("example.com", "A", rdclass="CH"),
    "CH TXT version.bind": _plain("version.bind", "TXT", rdclass="CH"),
    "CH TXT VERSION.Server": _plain("VERSION.Server", "TXT", rdclass="CH"),
    "CH TXT id.server": _plain("id.server", "TXT", rdclass="CH"),
    "CH ANY hostname.bind": _plain("hostname.bind", "ANY", rdclass="CH"),
    "CH A version.bind": _plain("version.bind", "A", rdclass="CH"),
    "CH TXT authors.bind": _plain("authors.bind", "TXT", rdclass="CH"),
    "CH TXT version.bind with EDNS": dns.message.make_query("version.bind", "TXT", rdclass="CH",
                                                            use_edns=0).to_wire(),
    "class ANY A": _plain("www.example.com", "A", rdclass="ANY"),
    "class ANY SOA": _plain("example.com", "SOA", rdclass="ANY"),
    "class ANY out of zone": _plain("a.example.net", "A", rdclass="ANY"),
    "class ANY NXDOMAIN": _plain("nx.example.com", "A", rdclass="ANY"),
    "class ANY NODATA": _plain("mail.example.com", "MX", rdclass="ANY"),
    "class ANY referral": _plain("host.deleg.example.com", "A", rdclass="ANY"),
    "class ANY wildcard": _plain("x.wild.example.com", "TXT", rdclass="ANY"),
    "Z bit": _W[:3] + bytes([_W[3] | 0x40]) + _W[4:],
    "AA and TC in query": _W[:2] + bytes([_W[2] | 0x06]) + _W[3:],
}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("case", sorted(RAW))
def test_malformed_and_special_same_as_nsd(servers, case, transport):
    """Header-level answers (FORMERR, NOTIMP, BADVERS, REFUSED...) match NSD's byte for byte,
    except the ID (we send the same) — so the whole response is compared."""
    data = RAW[case]
    nsd, ours = both(servers, lambda a, p: _raw(a, p, data, transport == "tcp"))
    assert ours not in (None, "closed"), "no answer"
    if nsd == "closed":  # NSD drops a TCP connection sending no question; we say FORMERR
        assert ours[3] & 0x0F == 1
        return
    assert ours[2:4] == nsd[2:4], "flags and rcode"
    assert ours[4:12] == nsd[4:12], "section counts"
    if len(nsd) > 12 and ours[4:12] == nsd[4:12]:
        a = dns.message.from_wire(nsd, ignore_trailing=True)
        b = dns.message.from_wire(ours, ignore_trailing=True)
        assert summary(a) == summary(b)


def test_chaos_answers_are_byte_for_byte_nsd_s(servers):
    """CH TXT id.server and version.bind: the same bytes as NSD (class CH, TTL 0, no AA)."""
    for name in ("id.server", "version.bind"):
        data = _plain(name, "TXT", rdclass="CH")
        nsd, ours = both(servers, lambda a, p: _raw(a, p, data))
        assert ours == nsd
        (rrset,) = dns.message.from_wire(ours).answer
        assert rrset.rdclass == dns.rdataclass.CH and rrset.ttl == 0
    assert dns.message.from_wire(ours).answer[0][0].strings == (VERSION.encode(),)


def test_responses_are_never_answered(servers):
    """A packet with QR set (a response, maybe spoofed) gets no reply from either: no loops."""
    data = _W[:2] + bytes([_W[2] | 0x80]) + _W[3:]
    assert both(servers, lambda a, p: _raw(a, p, data)) == [None, None]


@pytest.mark.parametrize("how", ["udp-edns", "udp-plain", "tcp"])
def test_every_name_and_type_of_every_zone(servers, tmp_path, how):
    """Exhaustive: every owner name of every zone, and a name below each (NXDOMAIN,
    wildcard or referral), for the common types, compared with NSD."""
    from clusterkit_dns.zones import load_zone

    directory = write_zones(tmp_path)
    names = set()
    for zone_name in ZONES:
        zone = load_zone(str(directory / f"{zone_name}.zone"), zones_dir=str(directory))
        for node in zone.nodes.values():
            owner = next(iter(node.values()))[0].to_text()
            names.update((owner, "zz." + owner))
    assert len(names) > 100
    mismatches = []
    for name in sorted(names):
        for rdtype in ("A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "SRV", "DS", "PTR", "CAA",
                       "NAPTR", "HINFO", "SSHFP", "TLSA", "LOC", "HTTPS", "RP", "ANY"):
            q = dns.message.make_query(name, rdtype, use_edns=False if how == "udp-plain" else 0)
            send = dns.query.tcp if how == "tcp" else dns.query.udp
            nsd, ours = both(servers, lambda a, p: send(q, a, port=p, timeout=3))
            if summary(ours) != summary(nsd):
                mismatches.append(f"{name} {rdtype}")
    assert not mismatches, mismatches[:20]
