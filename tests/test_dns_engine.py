"""The answer engine, the compiler and the responder, rule by rule, without sockets.

Queries are dnspython messages turned into bytes; ``Responder.handle`` answers
them exactly as the server does; the answers are parsed back with dnspython.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

import clusterkit_dns.responder as responder_module
from clusterkit_dns.compiler import State
from clusterkit_dns.engine import ZoneSet
from clusterkit_dns.responder import Responder, parse_query
from clusterkit_dns.zones import ZoneError, load_zone, zone_origin
from dns_support import EXTRA_FILES, ZONES, write_zones


@pytest.fixture(scope="module")
def responder(tmp_path_factory):
    directory = write_zones(tmp_path_factory.mktemp("zones"))
    return make_responder(directory)


def make_responder(directory) -> Responder:
    zones = {}
    for path in sorted(directory.glob("*.zone")):
        zone = load_zone(str(path), zones_dir=str(directory))
        zones[zone.origin] = zone
    r = Responder()
    r.install(State(ZoneSet(zones)))
    return r


def ask(r: Responder, name, rdtype="A", tcp=False, **kw) -> dns.message.Message:
    kw.setdefault("use_edns", False)
    wire_query = dns.message.make_query(name, rdtype, **kw).to_wire()
    return dns.message.from_wire(r.handle(wire_query, tcp))


def rrs(section, rdtype=None):
    return {(str(r.name).lower(), dns.rdatatype.to_text(r.rdtype), x.to_text())
            for r in section for x in r if rdtype is None or r.rdtype == rdtype}


# ------------------------------------------------------------------ parsing


def test_zone_named_by_its_file():
    assert zone_origin("/z/example.com.zone") == dns.name.from_text("example.com.")
    assert zone_origin("2.0.192.in-addr.arpa.zone") == dns.name.from_text("2.0.192.in-addr.arpa.")
    for other in ("example.com", "example.com.zone.tmp", ".example.com.zone", ".zone", "README"):
        assert zone_origin(other) is None


def test_parser_cases(tmp_path):
    (tmp_path / "t.test.zone").write_text(
        "$TTL 2w\n"
        "@ SOA ns h ( 1 ; serial\n 1h 15m 1w 5m )\n"
        "  NS ns\n"
        "ns 1d12h in A 192.0.2.1\n"      # TTL units, lower-case class after TTL
        "$ORIGIN sub\n"                  # relative $ORIGIN: sub.t.test.
        "www IN 60 a 192.0.2.2\n"        # class before TTL, lower-case type
        "$ORIGIN t.test.\n"
        'txt TXT "two words" third "esc\\"aped" "\\065"\n'
        "gen TYPE1 \\# 4 C0000203\n"
        "caa CAA 0 issue \"ca.example\"\n"
        "ds DS 1 8 2 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE6EDC8C5C5E1B5A8C8E1F2A3B\n"
        "srv SRV 1 2 3 @\n"
        "$INCLUDE inc/more.txt other.t.test.\n")
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "more.txt").write_text("x A 192.0.2.9\n")
    zone = load_zone(str(tmp_path / "t.test.zone"), zones_dir=str(tmp_path))
    from clusterkit_dns.compact import label_key

    def n(text):
        return label_key(dns.name.from_text(text).to_wire())

    assert zone.nodes[n("ns.t.test.")][1][1].ttl == 129600
    assert zone.nodes[n("www.sub.t.test.")][1][1].ttl == 60
    txt = zone.nodes[n("txt.t.test.")][dns.rdatatype.TXT][1][0]
    assert txt.strings == (b"two words", b"third", b'esc"aped', b"A")
    assert zone.nodes[n("gen.t.test.")][1][1][0].address == "192.0.2.3"
    assert zone.nodes[n("srv.t.test.")][dns.rdatatype.SRV][1][0].target == dns.name.from_text("t.test.")
    assert n("x.other.t.test.") in zone.nodes  # $INCLUDE relative to the zones dir, with origin
    assert zone.serial == 1
    assert zone.negative_soa.ttl == 300


def test_error_names_file_and_line(tmp_path):
    (tmp_path / "bad.test.zone").write_text(
        "$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nok A 192.0.2.1\nbad A 300.1.1.1\n")
    with pytest.raises(ZoneError) as info:
        load_zone(str(tmp_path / "bad.test.zone"))
    assert info.value.line == 5
    assert str(info.value).startswith(f"{tmp_path}/bad.test.zone:5: ")
    assert "bad A 300.1.1.1" in str(info.value)


def test_error_in_an_included_file_names_that_file(tmp_path):
    (tmp_path / "inc.test.zone").write_text(
        "$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\n$INCLUDE part.txt\n")
    (tmp_path / "part.txt").write_text("a A 192.0.2.1\n\nb MX ten mail\n")
    with pytest.raises(ZoneError) as info:
        load_zone(str(tmp_path / "inc.test.zone"))
    assert (info.value.path, info.value.line) == (str(tmp_path / "part.txt"), 3)


@pytest.mark.parametrize("text, message", [
    ("$TTL 1h\n@ NS ns\n", "no SOA"),
    ("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n", "no NS"),
    ("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nwww.other.test. A 192.0.2.1\n", "out of zone data: www.other.test. is outside the zone z.test."),
    ("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\n$INCLUDE missing.txt\n", "No such file"),
    ("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nw CNAME a\nw CNAME b\n", "multiple CNAME records"),
    ("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ SOA ns h 2 2 3 4 5\n@ NS ns\n", "multiple SOA records"),
    ("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nw CNAME a\nw A 192.0.2.1\n", "CNAME"),
])
def test_refused_zones(tmp_path, text, message):
    (tmp_path / "z.test.zone").write_text(text)
    with pytest.raises(ZoneError, match=message):
        load_zone(str(tmp_path / "z.test.zone"))


# --------------------------------------------------------------- the answers


def test_authoritative_answer_flags(responder):
    m = ask(responder, "www.Example.COM", "A")
    assert m.rcode() == dns.rcode.NOERROR
    assert m.flags & dns.flags.AA and m.flags & dns.flags.RD
    assert not m.flags & (dns.flags.RA | dns.flags.AD | dns.flags.TC)
    assert str(m.question[0].name) == "www.Example.COM."  # echoed as received


def test_rd_is_echoed_not_set(responder):
    q = dns.message.make_query("www.example.com", "A", use_edns=False)
    q.flags = 0
    m = dns.message.from_wire(responder.handle(q.to_wire()))
    assert not m.flags & dns.flags.RD and m.flags & dns.flags.QR


def test_out_of_zone_is_refused_never_recursed(responder):
    for name in ("www.example.net", "com", "."):
        m = ask(responder, name, "A")
        assert m.rcode() == dns.rcode.REFUSED
        assert not m.flags & (dns.flags.AA | dns.flags.RA)
        assert not m.answer and not m.authority


def test_nxdomain_and_nodata_carry_the_soa_with_negative_ttl(responder):
    nx = ask(responder, "nx.example.com", "A")
    nodata = ask(responder, "mail.example.com", "TXT")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nodata.rcode() == dns.rcode.NOERROR
    for m in (nx, nodata):
        assert not m.answer
        (soa,) = m.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 300  # min(3600, MINIMUM 5m)
        assert m.flags & dns.flags.AA


def test_empty_non_terminal_is_nodata(responder):
    for name in ("ent.example.com", "c.ent.example.com", "b.c.ent.example.com"):
        m = ask(responder, name, "A")
        assert m.rcode() == dns.rcode.NOERROR and not m.answer
        assert m.authority[0].rdtype == dns.rdatatype.SOA


def test_cname_chain_followed(responder):
    m = ask(responder, "chain1.example.com", "A")
    assert [str(r.name) for r in m.answer] == ["chain1.example.com.", "chain2.example.com.",
                                               "chain3.example.com."]
    assert m.answer[-1].rdtype == dns.rdatatype.A


def test_cname_chain_crosses_into_another_served_zone(responder):
    m = ask(responder, "crossed.example.com", "A")
    assert rrs(m.answer, dns.rdatatype.A) == {("www.example.org.", "A", "198.51.100.80")}
    assert m.authority[0].name == dns.name.from_text("example.org.")


def test_cname_loop_is_stopped(responder):
    m = ask(responder, "loop1.example.com", "A")
    assert m.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in m.answer] == [dns.rdatatype.CNAME] * 2


def test_dangling_cname_is_nxdomain_with_the_chain(responder):
    m = ask(responder, "dangling.example.com", "A")
    assert m.rcode() == dns.rcode.NXDOMAIN
    assert m.answer[0].rdtype == dns.rdatatype.CNAME
    assert m.authority[0].rdtype == dns.rdatatype.SOA


def test_cname_leaving_our_zones_stops_there(responder):
    m = ask(responder, "external.example.com", "A")
    assert m.rcode() == dns.rcode.NOERROR
    assert rrs(m.answer) == {("external.example.com.", "CNAME", "www.example.net.")}
    assert not m.authority


@pytest.mark.parametrize("name, rdtype, rcode, answer", [
    # RFC 4592 §2.2.1: synthesized
    ("host3.example", "MX", "NOERROR", {("host3.example.", "MX", "10 host1.example.")}),
    ("host3.example", "A", "NOERROR", set()),
    ("foo.bar.example", "TXT", "NOERROR", {("foo.bar.example.", "TXT", '"this is a wildcard"')}),
    # RFC 4592 §2.2.1: not synthesized
    ("host1.example", "MX", "NOERROR", set()),
    ("sub.*.example", "MX", "NOERROR", set()),
    ("_telnet._tcp.host1.example", "SRV", "NXDOMAIN", set()),
    ("ghost.*.example", "MX", "NXDOMAIN", set()),
    # an existing name below the wildcard's parent blocks it for its own subtree
    ("x.sub.wild.example.com", "A", "NXDOMAIN", set()),
    ("x.y.wild.example.com", "A", "NOERROR", {("x.y.wild.example.com.", "A", "192.0.2.100")}),
])
def test_wildcards_rfc4592(responder, name, rdtype, rcode, answer):
    m = ask(responder, name, rdtype)
    assert dns.rcode.to_text(m.rcode()) == rcode
    assert rrs(m.answer) == answer
    assert m.flags & dns.flags.AA


def test_wildcard_cname_is_synthesized_then_followed(responder):
    m = ask(responder, "anything.cwild.example.com", "A")
    assert str(m.answer[0].name) == "anything.cwild.example.com."
    assert m.answer[0].rdtype == dns.rdatatype.CNAME
    assert m.answer[-1].rdtype == dns.rdatatype.A


def test_referral_with_glue_and_no_aa(responder):
    for name in ("deleg.example.com", "www.deleg.example.com", "ns.deleg.example.com"):
        m = ask(responder, name, "A")
        assert m.rcode() == dns.rcode.NOERROR and not m.answer
        assert not m.flags & dns.flags.AA
        assert rrs(m.authority) == {("deleg.example.com.", "NS", "ns.deleg.example.com."),
                                    ("deleg.example.com.", "NS", "ns.outside.net.")}
        assert rrs(m.additional) == {("ns.deleg.example.com.", "A", "192.0.2.200"),
                                     ("ns.deleg.example.com.", "AAAA", "2001:db8::200")}


def test_ds_at_the_cut_is_answered_by_the_parent(responder):
    m = ask(responder, "deleg.example.com", "DS")
    assert m.flags & dns.flags.AA and m.answer[0].rdtype == dns.rdatatype.DS


def test_more_specific_zone_wins(responder):
    m = ask(responder, "www.child.example.com", "A")
    assert m.flags & dns.flags.AA
    assert rrs(m.answer) == {("www.child.example.com.", "A", "192.0.2.211")}
    assert m.authority[0].name == dns.name.from_text("child.example.com.")


def test_any_gets_one_rrset_rfc8482(responder):
    for tcp in (False, True):
        m = ask(responder, "example.com", "ANY", tcp=tcp)
        assert len(m.answer) == 1 and m.answer[0].rdtype == dns.rdatatype.SOA
    assert len(ask(responder, "mail.example.com", "ANY").answer) == 1


def test_additional_addresses_for_mx_ns_srv(responder):
    m = ask(responder, "example.com", "MX")
    assert {("mail.example.com.", "A", "192.0.2.25"), ("mail.example.com.", "AAAA", "2001:db8::25"),
            ("ns1.example.com.", "A", "192.0.2.53")} == rrs(m.additional)
    m = ask(responder, "_sip._tcp.example.com", "SRV")
    assert ("sip.example.com.", "A", "192.0.2.60") in rrs(m.additional)


# ------------------------------------------------------------------- EDNS


def test_opt_in_every_reply_to_a_query_with_opt(responder):
    for name, rdtype in (("www.example.com", "A"), ("nx.example.com", "A"), ("www.example.net", "A"),
                         ("example.com", "AXFR"), ("deleg.example.com", "A")):
        m = ask(responder, name, rdtype, use_edns=0)
        assert m.edns == 0 and m.payload == responder_module.EDNS_SIZE, (name, rdtype)
    assert ask(responder, "www.example.com", "A").edns == -1


def test_badvers_for_edns_versions_above_zero(responder):
    m = ask(responder, "www.example.com", "A", use_edns=1)
    assert m.rcode() == dns.rcode.BADVERS and m.edns == 0
    assert not m.answer and not m.flags & dns.flags.AA


def test_do_bit_is_copied(responder):
    assert ask(responder, "www.example.com", "A", use_edns=0, want_dnssec=True).ednsflags \
        & dns.flags.DO
    assert not ask(responder, "www.example.com", "A", use_edns=0).ednsflags & dns.flags.DO


def test_client_sizes_below_512_are_512(responder):
    m = ask(responder, "example.com", "MX", use_edns=0, payload=100)
    assert not m.flags & dns.flags.TC and m.answer  # 178 bytes fit in 512


def test_truncation_keeps_question_and_opt(responder):
    q = dns.message.make_query("big.example.com", "TXT", use_edns=0, payload=512)
    data = responder.handle(q.to_wire())
    assert len(data) <= 512
    m = dns.message.from_wire(data)
    assert m.flags & dns.flags.TC and m.question and m.edns == 0 and not m.answer
    full = dns.message.from_wire(responder.handle(q.to_wire(), tcp=True))
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 6


def test_big_answers_go_up_to_1232_never_more_over_udp(responder):
    q = dns.message.make_query("big.example.com", "TXT", use_edns=0, payload=65000)
    data = responder.handle(q.to_wire())
    assert 512 < len(data) <= 1232 and not dns.message.from_wire(data).flags & dns.flags.TC


# --------------------------------------------------------- errors, formats


def header(data: bytes):
    return struct.unpack("!HHHHHH", data[:12])


@pytest.mark.parametrize("qdcount", [0, 2])
def test_formerr_when_qdcount_is_not_one(responder, qdcount):
    w = dns.message.make_query("example.com", "SOA", use_edns=False).to_wire()
    data = w[:4] + struct.pack("!H", qdcount) + w[6:] + (w[12:] if qdcount == 2 else b"")
    out = responder.handle(data)
    assert header(out)[1] & 0x0F == dns.rcode.FORMERR and out[:2] == w[:2]


@pytest.mark.parametrize("opcode", [1, 2, 3, 5, 6, 7, 15])
def test_notimp_for_other_opcodes(responder, opcode):
    q = dns.message.make_query("example.com", "SOA", use_edns=False)
    q.set_opcode(opcode)
    out = responder.handle(q.to_wire())
    assert header(out)[1] & 0x0F == dns.rcode.NOTIMP
    assert (header(out)[1] >> 11) & 0x0F == opcode


def test_notify_is_refused(responder):
    q = dns.message.make_query("example.com", "SOA", use_edns=False)
    q.set_opcode(4)
    assert header(responder.handle(q.to_wire()))[1] & 0x0F == dns.rcode.REFUSED


def test_runts_and_responses_get_no_answer(responder):
    w = dns.message.make_query("example.com", "SOA", use_edns=False).to_wire()
    assert responder.handle(w[:11]) is None
    assert responder.handle(w[:2] + bytes([w[2] | 0x80]) + w[3:]) is None


def test_servfail_on_internal_error(tmp_path, monkeypatch):
    r = make_responder(write_zones(tmp_path))

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(responder_module, "resolve", broken)
    m = ask(r, "nx-not-precompiled.example.com", "A", use_edns=0)
    assert m.rcode() == dns.rcode.SERVFAIL and m.question and m.edns == 0
    monkeypatch.undo()
    assert ask(r, "nx-not-precompiled.example.com", "A").rcode() == dns.rcode.NXDOMAIN


def test_fast_path_and_general_path_agree(responder):
    """Every template answer (the second query) is byte-identical to what the general path
    renders."""
    state = responder.state
    names = [("www.EXAMPLE.com", "A"), ("example.com", "MX"), ("b.c.ent.example.com", "TXT"),
             ("deleg.example.com", "NS"), ("ns.deleg.example.com", "A"), ("big.example.com", "TXT")]
    for name, rdtype in names:
        for edns in (False, 0):
            data = dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
            responder.handle(data, tcp=True)
            q = parse_query(data)
            assert q.key in state.cache
            fast = responder.handle(data, tcp=True)
            state.cache.pop(q.key, None)
            slow = responder.general(data, True)
            assert fast == slow, (name, rdtype, edns)


def test_rcode_counters(tmp_path):
    r = make_responder(write_zones(tmp_path))
    ask(r, "www.example.com")
    ask(r, "nx.example.com")
    ask(r, "nx.example.com")
    ask(r, "a.example.net")
    assert (r.rcodes[0], r.rcodes[3], r.rcodes[5]) == (1, 2, 1)


def test_zones_fixture_is_what_nsd_checks():
    """The shared zones include every file they need (a guard for the other tests)."""
    assert "example.com.inc" in EXTRA_FILES and "$INCLUDE example.com.inc" in ZONES["example.com"]


def test_a_loaded_zone_is_bytes_the_garbage_collector_does_not_walk(tmp_path):
    """No Python object per record: a name maps to one bytes node, and the dict of them is
    not tracked by the collector (why the server needs no gc.freeze)."""
    import gc

    directory = write_zones(tmp_path)
    zone = load_zone(str(directory / "example.com.zone"), zones_dir=str(directory))
    assert zone.records > 20
    assert all(type(k) is bytes and type(v) is bytes for k, v in zone.names.items())
    gc.collect()
    assert not gc.is_tracked(zone.names)
    assert zone.wire_bytes == sum(len(k) + len(v) for k, v in zone.names.items())
