"""The master-file reader: every syntax form NSD accepts that the zones use, every broken
input refused with its file, line and message, and records equal to dnspython's own
``dns.zone.from_text`` wherever NSD and dnspython read a file alike."""

from __future__ import annotations

import os

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from clusterkit_dns import masterfile, rdatawire, zoneview
from clusterkit_dns.zones import ZoneError, load_zone
from dns_support import ZONES

HEAD = "$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\n"  # three lines: a body starts on line 4
ORIGIN = dns.name.from_text("z.test.")


def write(tmp_path, text: str | bytes, files: dict | None = None):
    path = tmp_path / "z.test.zone"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    for name, content in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content)
    return path


def records(tmp_path, body: str, files: dict | None = None, head: str = HEAD) -> list:
    """(owner, ttl, type, data, file, line) of each record after the head, as read."""
    path = write(tmp_path, head + body, files)
    out = []

    def add(owner, ttl, rdtype, rdata, file, line):
        text = dns.rdata.from_wire(dns.rdataclass.IN, rdtype, rdata, 0, len(rdata)).to_text()
        out.append((dns.name.from_wire(owner, 0)[0].to_text(), ttl, dns.rdatatype.to_text(rdtype),
                    text, os.path.relpath(file, tmp_path), line))

    masterfile.read(str(path), ORIGIN, str(tmp_path), add)
    return [r for r in out if r[4] != "z.test.zone" or r[5] > head.count("\n")]


def error(tmp_path, text: str | bytes, files: dict | None = None) -> str:
    path = write(tmp_path, text, files)
    with pytest.raises(ZoneError) as info:
        load_zone(str(path), zones_dir=str(tmp_path))
    return str(info.value).replace(str(tmp_path), "DIR")


# ----------------------------------------------------------------- syntax forms


def test_origin_absolute(tmp_path):
    assert records(tmp_path, "$ORIGIN sub.z.test.\nwww A 192.0.2.1\n") == [
        ("www.sub.z.test.", 3600, "A", "192.0.2.1", "z.test.zone", 5)]


def test_origin_relative_to_the_current_origin(tmp_path):
    assert records(tmp_path, "$ORIGIN sub\nwww A 192.0.2.1\n$ORIGIN deeper\nx A 192.0.2.2\n") == [
        ("www.sub.z.test.", 3600, "A", "192.0.2.1", "z.test.zone", 5),
        ("x.deeper.sub.z.test.", 3600, "A", "192.0.2.2", "z.test.zone", 7)]


def test_the_same_data_under_another_origin_names_another_target(tmp_path):
    """Parsed record data is reused for repeats, never across origins."""
    body = ("a MX 10 mail\nb MX 10 mail\n$ORIGIN sub\nc MX 10 mail\n"
            "$INCLUDE inc.txt other\nd MX 10 mail\n")
    got = records(tmp_path, body, {"inc.txt": "e MX 10 mail\n"})
    assert [(owner, data) for owner, _, _, data, _, _ in got] == [
        ("a.z.test.", "10 mail.z.test."), ("b.z.test.", "10 mail.z.test."),
        ("c.sub.z.test.", "10 mail.sub.z.test."), ("e.other.sub.z.test.", "10 mail.other.sub.z.test."),
        ("d.sub.z.test.", "10 mail.sub.z.test.")]


def test_ttl_directive_is_the_default_from_where_it_stands(tmp_path):
    assert records(tmp_path, "a A 192.0.2.1\n$TTL 60\nb A 192.0.2.2\nc 7 A 192.0.2.3\n") == [
        ("a.z.test.", 3600, "A", "192.0.2.1", "z.test.zone", 4),
        ("b.z.test.", 60, "A", "192.0.2.2", "z.test.zone", 6),
        ("c.z.test.", 7, "A", "192.0.2.3", "z.test.zone", 7)]


def test_no_ttl_directive_means_3600_not_the_last_ttl(tmp_path):
    """NSD's reading; RFC 1035 (and dnspython) would give b the TTL 60 of the line before."""
    head = "@ 7200 SOA ns h 1 2 3 4 5\n@ NS ns\n"
    assert masterfile.NO_TTL_DEFAULT == 3600
    assert records(tmp_path, "a 60 A 192.0.2.1\nb A 192.0.2.2\n", head=head) == [
        ("a.z.test.", 60, "A", "192.0.2.1", "z.test.zone", 3),
        ("b.z.test.", 3600, "A", "192.0.2.2", "z.test.zone", 4)]


def test_include_is_relative_to_the_zones_directory_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    body = "$INCLUDE parts/hosts.txt\nafter A 192.0.2.9\n"
    assert records(tmp_path, body, {"parts/hosts.txt": "; hosts\n\nin1 A 192.0.2.1\n"}) == [
        ("in1.z.test.", 3600, "A", "192.0.2.1", "parts/hosts.txt", 3),
        ("after.z.test.", 3600, "A", "192.0.2.9", "z.test.zone", 5)]


def test_include_with_an_origin_and_what_comes_back_after_it(tmp_path):
    """The included file's $ORIGIN and $TTL end with it; a quoted name is unescaped."""
    files = {"my file.txt": "a A 192.0.2.1\n$ORIGIN elsewhere.z.test.\n$TTL 5\nb A 192.0.2.2\n"}
    body = 'x A 192.0.2.8\n$INCLUDE "my\\032file.txt" hosts\n  A 192.0.2.9\ny A 192.0.2.10\n'
    assert records(tmp_path, body, files) == [
        ("x.z.test.", 3600, "A", "192.0.2.8", "z.test.zone", 4),
        ("a.hosts.z.test.", 3600, "A", "192.0.2.1", "my file.txt", 1),
        ("b.elsewhere.z.test.", 5, "A", "192.0.2.2", "my file.txt", 4),
        ("x.z.test.", 3600, "A", "192.0.2.9", "z.test.zone", 6),  # the owner before it
        ("y.z.test.", 3600, "A", "192.0.2.10", "z.test.zone", 7)]


def test_parentheses_span_lines_and_the_record_is_on_its_first(tmp_path):
    body = "x SOA ns h ( 7 ; serial\n   1h\n   ; a comment line\n   2 3 4 )\nnext ( A\n ) 192.0.2.1\n"
    assert records(tmp_path, body) == [
        ("x.z.test.", 3600, "SOA", "ns.z.test. h.z.test. 7 3600 2 3 4", "z.test.zone", 4),
        ("next.z.test.", 3600, "A", "192.0.2.1", "z.test.zone", 8)]


def test_comments_end_a_line_but_not_inside_quotes(tmp_path):
    body = 'a TXT "semi;colon" ; a comment "with quotes"\nb A 192.0.2.1;comment\n; only\nc TXT x\\;y\n'
    assert records(tmp_path, body) == [
        ("a.z.test.", 3600, "TXT", '"semi;colon"', "z.test.zone", 4),
        ("b.z.test.", 3600, "A", "192.0.2.1", "z.test.zone", 5),
        ("c.z.test.", 3600, "TXT", '"x;y"', "z.test.zone", 7)]


def test_quoted_strings_with_escapes(tmp_path):
    body = 't TXT "two words" "esc\\"aped" "\\065\\066" "back\\\\slash" "(paren)" unquoted\n'
    [(_, _, _, data, _, _)] = records(tmp_path, body)
    assert data == '"two words" "esc\\"aped" "AB" "back\\\\slash" "(paren)" "unquoted"'


def test_escapes_in_names(tmp_path):
    body = "\\046dot A 192.0.2.1\nsp\\032ace A 192.0.2.2\na\\.b A 192.0.2.3\n\\065x A 192.0.2.4\n"
    owners = [dns.name.from_text(owner) for owner, *_ in records(tmp_path, body)]
    assert [owner.labels[0] for owner in owners] == [b".dot", b"sp ace", b"a.b", b"Ax"]
    assert all(owner.parent() == ORIGIN for owner in owners)


def test_at_sign_as_owner_and_in_data(tmp_path):
    body = "@ MX 10 @\n$ORIGIN sub\n@ CNAME @\n"
    assert records(tmp_path, body) == [
        ("z.test.", 3600, "MX", "10 z.test.", "z.test.zone", 4),
        ("sub.z.test.", 3600, "CNAME", "sub.z.test.", "z.test.zone", 6)]


def test_relative_names_in_owner_and_data(tmp_path):
    assert records(tmp_path, "mx MX 10 mail\nsrv SRV 1 2 3 host.example.net.\n") == [
        ("mx.z.test.", 3600, "MX", "10 mail.z.test.", "z.test.zone", 4),
        ("srv.z.test.", 3600, "SRV", "1 2 3 host.example.net.", "z.test.zone", 5)]


def test_a_blank_owner_is_the_previous_owner(tmp_path):
    body = "www A 192.0.2.1\n  AAAA 2001:db8::1\n\t300 TXT \"t\"\n"
    assert records(tmp_path, body) == [
        ("www.z.test.", 3600, "A", "192.0.2.1", "z.test.zone", 4),
        ("www.z.test.", 3600, "AAAA", "2001:db8::1", "z.test.zone", 5),
        ("www.z.test.", 300, "TXT", '"t"', "z.test.zone", 6)]


def test_ttl_and_class_in_either_order(tmp_path):
    body = "a 60 IN A 192.0.2.1\nb IN 60 A 192.0.2.2\nc IN A 192.0.2.3\nd 60 A 192.0.2.4\n"
    assert [(owner, ttl) for owner, ttl, *_ in records(tmp_path, body)] == [
        ("a.z.test.", 60), ("b.z.test.", 60), ("c.z.test.", 3600), ("d.z.test.", 60)]


def test_ttl_units(tmp_path):
    body = "a 1h30m A 192.0.2.1\nb 1w A 192.0.2.2\nc 1d12h A 192.0.2.3\nd 2H5S A 192.0.2.4\n$TTL 1m\ne A 192.0.2.5\n"
    assert [ttl for _, ttl, *_ in records(tmp_path, body)] == [5400, 604800, 129600, 7205, 60]


def test_lower_case_class_and_type(tmp_path):
    assert records(tmp_path, "a 60 in a 192.0.2.1\nb In Aaaa 2001:db8::2\n") == [
        ("a.z.test.", 60, "A", "192.0.2.1", "z.test.zone", 4),
        ("b.z.test.", 3600, "AAAA", "2001:db8::2", "z.test.zone", 5)]


def test_generic_type_class_and_data(tmp_path):
    body = "g TYPE65534 \\# 3 abcdef\nh CLASS1 TYPE1 \\# 4 C0000203\ni TYPE65534 \\# 3 ab cd ef\n"
    assert records(tmp_path, body) == [
        ("g.z.test.", 3600, "TYPE65534", "\\# 3 abcdef", "z.test.zone", 4),
        ("h.z.test.", 3600, "A", "192.0.2.3", "z.test.zone", 5),
        ("i.z.test.", 3600, "TYPE65534", "\\# 3 abcdef", "z.test.zone", 6)]


def test_windows_line_ends(tmp_path):
    body = "a A 192.0.2.1\r\nb TXT \"x y\"\r\n"
    assert records(tmp_path, body) == [
        ("a.z.test.", 3600, "A", "192.0.2.1", "z.test.zone", 4),
        ("b.z.test.", 3600, "TXT", '"x y"', "z.test.zone", 5)]


def test_the_loader_paces_once_per_record(tmp_path):
    calls = []
    zone = load_zone(str(write(tmp_path, HEAD + "a A 192.0.2.1\n  AAAA ::1\n")),
                     pace=lambda: calls.append(1))
    assert len(calls) == zone.records == 4


# --------------------------------------------------------------- broken input


@pytest.mark.parametrize("body, message", [
    ("x 1x A 192.0.2.1\n", "4: bad TTL 1x: unknown unit 'x': 'x 1x A 192.0.2.1'"),
    ("x 4294967296 A 192.0.2.1\n", "4: bad TTL 4294967296: TTL should be between 0 and "
     "2**32 - 1 (inclusive): 'x 4294967296 A 192.0.2.1'"),
    ("$TTL soon\n", "4: bad TTL soon: not a number: '$TTL soon'"),
    ("$TTL\n", "4: $TTL takes one TTL: '$TTL'"),
    ("x BOGUS 1\n", "4: unknown record type 'BOGUS': 'x BOGUS 1'"),
    ("x TYPE65536 \\# 0\n", "4: unknown record type 'TYPE65536': 'x TYPE65536 \\\\# 0'"),
    ("x AXFR 1\n", "4: AXFR is not a type of record a zone holds: 'x AXFR 1'"),
    ("x\n", "4: no record type: 'x'"),
    ("x CH A 192.0.2.1\n", "4: class CH is not the zone's class IN: 'x CH A 192.0.2.1'"),
    ("x A 300.1.1.1\n", "4: malformed A record: 'x A 300.1.1.1'"),
    ("x MX ten mail\n", "4: bad MX record: expecting an integer: 'x MX ten mail'"),
    ("x TYPE65534 \\# 3 abcd\n", "4: bad TYPE65534 record: generic rdata hex data has wrong "
     "length: 'x TYPE65534 \\\\# 3 abcd'"),
    ("x A 192.0.2.1\ny TXT ( \"a\"\n  \"b\"\n", "5: '(' is never closed: 'y TXT ( \"a\"'"),
    ("x A 192.0.2.1 )\n", "4: ')' without '(': 'x A 192.0.2.1 )'"),
    ("x TXT \"abc\ny A 192.0.2.1\n", "4: unterminated quoted string: 'x TXT \"abc'"),
    ("x SOA ns h (\n 1 \"2\n 3 4 5 )\n", "5: unterminated quoted string: '1 \"2'"),
    ("x\\999 A 192.0.2.1\n", "4: bad name: An escaped code in a text format of DNS name is "
     "invalid.: 'x\\\\999 A 192.0.2.1'"),
    ("x\\\n", "4: '\\' at the end of a line: 'x\\\\'"),
    (f"{'x' * 64} A 192.0.2.1\n", f"4: bad name: A DNS label is > 63 octets long.: "
     f"'{'x' * 64} A 192.0.2.1'"),
    ('"quoted" A 192.0.2.1\n', "4: a name cannot be a quoted string: \"quoted\": "
     "'\"quoted\" A 192.0.2.1'"),
    ("www.other.test. A 192.0.2.1\n", "4: out of zone data: www.other.test. is outside the "
     "zone z.test.: 'www.other.test. A 192.0.2.1'"),
    ("$ORIGIN other.test.\nwww A 192.0.2.1\n", "5: out of zone data: www.other.test. is "
     "outside the zone z.test.: 'www A 192.0.2.1'"),
    ("$GENERATE 1-3 h$ A 192.0.2.$\n", "4: unknown directive $GENERATE (NSD reads $ORIGIN, "
     "$TTL and $INCLUDE): '$GENERATE 1-3 h$ A 192.0.2.$'"),
    ("$ORIGIN a. b.\n", "4: $ORIGIN takes one name: '$ORIGIN a. b.'"),
    ("$INCLUDE x\\2.txt\n", "4: bad escape in x\\2.txt: '$INCLUDE x\\\\2.txt'"),
    ('$INCLUDE ""\n', "4: $INCLUDE needs a file name, not '': '$INCLUDE \"\"'"),
    ("x SOA ns h (\n 1 2 3 4 five )\n", "4: bad SOA record: DNS TTL value is not "
     "well-formed.: 'x SOA ns h ('"),
    ("w CNAME a\nw A 192.0.2.1\n", "5: CNAME and other data at the same name: 'w A 192.0.2.1'"),
    ("w CNAME a\nw CNAME b\n", "5: multiple CNAME records at the same name: 'w CNAME b'"),
])
def test_broken_input_names_file_line_and_record(tmp_path, body, message):
    assert error(tmp_path, HEAD + body) == f"DIR/z.test.zone:{message}"


@pytest.mark.parametrize("line, tokens, depth", [
    ('x TXT "a;b" c ; "not a token\n', ['x', 'TXT', '"a;b"', 'c'], 0),
    ('x TXT "q\\"; (" e\\;f\\ g\r\n', ['x', 'TXT', '"q\\"; ("', 'e\\;f\\ g'], 0),
    ('@ SOA ns hm ( ; ) "\n', ['@', 'SOA', 'ns', 'hm'], 1),
    ('\t1 2)3 ;x\n', ['1', '2', '3'], 0),
    ('a\\.b("c")d', ['a\\.b', '"c"', 'd'], 0),
    ('  ; only a comment\n', [], 0),
])
def test_the_scanner_gives_each_token_its_place_in_the_line(line, tokens, depth):
    """The zone editor rewrites tokens where they stand: each span is the token as written."""
    words, spans = [], []
    assert masterfile.scan(line, words, 1 if line.startswith("\t") else 0, spans) == depth
    assert words == tokens
    assert [line[start:end] for start, end in spans] == tokens
    plain = []
    masterfile.scan(line, plain, 1 if line.startswith("\t") else 0)
    assert plain == tokens  # the reader's call, without places, reads the same


def test_not_utf8_names_the_line(tmp_path):
    assert error(tmp_path, HEAD.encode() + b"a A 192.0.2.1\nx TXT \"caf\xe9\"\n") == (
        "DIR/z.test.zone:5: not UTF-8 text: invalid continuation byte at byte 11 of the line")


def test_errors_in_an_included_file_name_that_file_and_its_line(tmp_path):
    files = {"inc/part.txt": "a A 192.0.2.1\n\nb MX ten mail\n"}
    assert error(tmp_path, HEAD + "$INCLUDE inc/part.txt\n", files) == (
        "DIR/inc/part.txt:3: bad MX record: expecting an integer: 'b MX ten mail'")
    files = {"inc/part.txt": b"a A 192.0.2.1\n\xff\n"}
    assert error(tmp_path, HEAD + "$INCLUDE inc/part.txt\n", files) == (
        "DIR/inc/part.txt:2: not UTF-8 text: invalid start byte at byte 1 of the line")


def test_include_of_a_missing_file(tmp_path):
    assert error(tmp_path, HEAD + "$INCLUDE missing.txt\n") == (
        "DIR/z.test.zone:4: cannot open $INCLUDE file DIR/missing.txt: No such file or "
        "directory: '$INCLUDE missing.txt'")


def test_include_loop(tmp_path):
    files = {"a.txt": "x A 192.0.2.1\n$INCLUDE b.txt\n", "b.txt": "\n\n$INCLUDE a.txt\n"}
    assert error(tmp_path, HEAD + "$INCLUDE a.txt\n", files) == (
        "DIR/b.txt:3: $INCLUDE loop: DIR/a.txt is already being read: '$INCLUDE a.txt'")
    assert error(tmp_path, HEAD + "$INCLUDE z.test.zone\n") == (
        "DIR/z.test.zone:4: $INCLUDE loop: DIR/z.test.zone is already being read: "
        "'$INCLUDE z.test.zone'")


def test_include_depth_is_bounded(tmp_path):
    files = {f"{i}.txt": f"$INCLUDE {i + 1}.txt\n" for i in range(30)}
    assert error(tmp_path, HEAD + "$INCLUDE 0.txt\n", files) == (
        f"DIR/{masterfile.MAX_INCLUDE_DEPTH - 1}.txt:1: $INCLUDE nested more than "
        f"{masterfile.MAX_INCLUDE_DEPTH} deep: '$INCLUDE {masterfile.MAX_INCLUDE_DEPTH}.txt'")


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd", "link.txt"])
def test_include_outside_the_zones_directory_is_refused(tmp_path, target):
    """Only the zones directory is replicated; and an error quotes a line of the file it
    reads, so an $INCLUDE of /etc/shadow must not be read at all."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (tmp_path / "outside.txt").write_text("x A 192.0.2.1\n")
    (zones / "link.txt").symlink_to(tmp_path / "outside.txt")
    assert error(zones, HEAD + f"$INCLUDE {target}\n") == (
        f"DIR/z.test.zone:4: $INCLUDE {target} is outside the zones directory DIR: "
        f"'$INCLUDE {target}'")


def test_a_line_or_an_open_parenthesis_is_bounded(tmp_path):
    long = "x TXT " + "a" * masterfile.MAX_LINE + "\n"
    assert error(tmp_path, HEAD + long) == (
        f"DIR/z.test.zone:4: line longer than {masterfile.MAX_LINE} bytes")
    endless = "x TXT (\n" + ("a" * 1000 + "\n") * (masterfile.MAX_LINE // 1000 + 1)
    assert error(tmp_path, HEAD + endless) == (
        f"DIR/z.test.zone:4: record longer than {masterfile.MAX_LINE} characters "
        "(is a '(' never closed?): 'x TXT ('")


@pytest.mark.parametrize("body", [
    '"' + "q" * 100_000 + '" A 192.0.2.1\n',
    "x " + "T" * 100_000 + " 1\n",
    "x " + "9" * 100_000 + " A 192.0.2.1\n",
    "x A 192.0.2.1 " + "j" * 100_000 + "\n",
    "$INCLUDE " + "f" * 100_000 + "\n",
    "$INCLUDE ../" + "f" * 1000 + "\n",
])
def test_messages_stay_short_whatever_the_input(tmp_path, body):
    message = error(tmp_path, HEAD + body)
    assert message.startswith("DIR/z.test.zone:4: ") and len(message) < 600, message[:700]


def test_an_unreadable_zone_file(tmp_path):
    with pytest.raises(ZoneError) as info:
        load_zone(str(tmp_path / "gone.test.zone"))
    assert str(info.value) == f"{tmp_path}/gone.test.zone: No such file or directory"


# ------------------------------------------------- the same records as dnspython


VARIED = r"""; every form at once, as NSD and dnspython both read it
$TTL 1h
$ORIGIN varied.test.
@   IN  SOA ns1 hostmaster ( 2024010101 ; serial
        2h 15m 2w 5m )
    IN NS ns1
    NS  ns2.example.net.
    MX  10 mail
    in 300 MX 20 mail.example.net.
    TXT "v=spf1 -all" ; a comment
ns1 A 192.0.2.53
mail 1h30m IN A 192.0.2.25
    IN 1w AAAA 2001:db8::25
lower in a 192.0.2.9
www CNAME @
*.wild A 192.0.2.100
esc TXT "semi;colon" "back\\slash" "\065\066" "q\"uote" plain
\046dot A 192.0.2.3
sp\032ace A 192.0.2.4
a\.b A 192.0.2.5
gen TYPE65534 \# 3 abcdef
gen2 CLASS1 TYPE1 \# 4 C0000205
srv ( SRV 1 2
      3 @ )
caa CAA 0 issue "ca.example"
ds DS 1 8 2 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE6EDC8C5C5E1B5A8C8E1F2A3B
tlsa TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
sshfp SSHFP 1 1 123456789abcdef67890123456789abcdef67890
https HTTPS 1 . alpn=h2,h3 port=8443
naptr NAPTR 100 10 "u" "E2U+sip" "!^.*$!sip:info@example.com!" .
loc LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m
rp RP mbox txt
hinfo HINFO "a cpu" "an os"
ptr PTR www
mixed 100 A 192.0.2.7
mixed 200 A 192.0.2.8
$ORIGIN sub
host A 192.0.2.78
@ DNAME target.example.
$ORIGIN varied.test.
$TTL 300
after-ttl A 192.0.2.79
"""


def _theirs(name: str, text: str) -> set:
    zone = dns.zone.from_text(text, name, relativize=False)
    return {(owner, ttl, rdata) for owner, ttl, rdata in zone.iterate_rdatas()}


def _ours(path) -> set:
    zone = load_zone(str(path), zones_dir=os.path.dirname(path))
    return {(rrset.name, rrset.ttl, rdata) for rrset in zoneview.rrsets(zone) for rdata in rrset}


@pytest.mark.parametrize("name", ["varied.test"] + [n for n in ZONES if n != "nottl.test"])
def test_the_records_equal_dnspythons_own_zone_reader(tmp_path, name):
    """``nottl.test`` aside (NSD's 3600 against RFC 1035's last TTL); ``$INCLUDE`` lines
    left out (dnspython would open them from the working directory)."""
    text = VARIED if name == "varied.test" else "".join(
        line for line in ZONES[name].splitlines(keepends=True)
        if not line.upper().startswith("$INCLUDE"))
    path = tmp_path / f"{name}.zone"
    path.write_text(text)
    ours = _ours(path)
    assert ours == _theirs(name + ".", text)
    assert len(ours) >= 4


# ------------------------------------------------- the fast path of common types

FAST_CASES = [
    ("A", "192.0.2.1"), ("A", "0.0.0.0"), ("AAAA", "2001:db8::1"), ("AAAA", "::ffff:192.0.2.1"),
    ("AAAA", "2001:DB8:0:0:0:0:0:1"), ("CNAME", "@"), ("CNAME", "www"),
    ("CNAME", "Target.Example.NET."), ("NS", "ns1.example.net."), ("NS", "ns-x"),
    ("MX", "0 ."), ("MX", "10 mail"), ("MX", "65535 mx.example.net."), ("MX", "010 mail"),
    ("TXT", "word"), ("TXT", '"two words"'), ("TXT", '"" ""'), ("TXT", '"a" b "c d"'),
    ("TXT", '"v=spf1 ip4:192.0.2.0/24 -all"'), ("TXT", '"semi;colon"'), ("TXT", '"x\\"y"'),
    ("TXT", '"caf\\195\\169"'), ("TXT", '"café"'), ("TXT", "(a b)"),
]


@pytest.mark.parametrize("rdtype,data", FAST_CASES)
def test_common_types_read_as_dnspython_reads_them(tmp_path, rdtype, data):
    (record,) = records(tmp_path, f"x {rdtype} {data}\n")
    expected = dns.rdata.from_text("IN", rdtype, data, origin=ORIGIN, relativize=False)
    assert record[2:4] == (rdtype, expected.to_text())


@pytest.mark.parametrize("rdtype,data,message", [
    ("A", "192.0.2.256", "A record"), ("A", "01.2.3.4", "A record"),
    ("A", "192.0.2", "A record"), ("A", '"192.0.2.1"', "A record"),
    ("A", "192.0.2.1 192.0.2.2", "A record"), ("AAAA", "2001:db8::g", "AAAA record"),
    ("AAAA", "192.0.2.1", "AAAA record"), ("CNAME", "a..b", "CNAME record"),
    ("CNAME", "a b", "CNAME record"), ("NS", "x" * 64, "NS record"),
    ("MX", "65536 mail", "MX record"), ("MX", "-1 mail", "MX record"), ("MX", "ten mail", "MX"),
    ("MX", "10", "MX record"), ("TXT", '"' + "a" * 256 + '"', "TXT record"),
])
def test_common_types_refused_as_before(tmp_path, rdtype, data, message):
    assert error(tmp_path, f"{HEAD}x {rdtype} {data}\n").startswith("DIR/z.test.zone:4: ")
    assert message in error(tmp_path, f"{HEAD}x {rdtype} {data}\n")


# ------------------------------------------------------------ wire encoders

@pytest.mark.parametrize("rtype, data", [
    ("A", "192.0.2.1"), ("A", "0.0.0.0"), ("AAAA", "2001:db8::1"), ("AAAA", "::ffff:192.0.2.1"),
    ("AAAA", "::"), ("NS", "ns1"), ("NS", "Ns.Example.NET."), ("NS", "@"), ("CNAME", "*.w"),
    ("PTR", "host.z.test."), ("DNAME", "target.example."), ("MX", "10 mail"), ("MX", "0 ."),
    ("MX", "65535 mx.example."), ("TXT", '"two words" third'), ("TXT", '"esc\\"aped" \\065'),
    ("TXT", '"a\\\\b" "" x\\ y'), ("TXT", '"' + "x" * 255 + '"'), ("SPF", '"v=spf1 -all"'),
    ("SOA", "ns hm 1 2 3 4 5"), ("SOA", "ns.example. h.m. 4294967295 0 0 0 0"),
    ("SRV", "1 2 3 @"), ("SRV", "0 0 443 sip.example."), ("CAA", '0 issue "ca.example"'),
    ("CAA", "128 iodef mailto:x@example.com"), ("CAA", '0 issuewild ";"'),
    ("TXT", '"a\\200b" \\255 a\\;b'), ("CAA", '0 issue "a\\200b"'), ("CAA", "0 issue a\\059b"),
])
def test_the_encoders_write_what_dnspython_writes(rtype, data):
    origin = dns.name.from_text("z.test.")
    rdtype = dns.rdatatype.from_text(rtype)
    tokens = []
    masterfile.scan(data, tokens)
    ours = rdatawire.ENCODERS[rdtype](tokens, origin.to_wire())
    theirs = dns.rdata.from_text(dns.rdataclass.IN, rdtype, data, origin=origin,
                                 relativize=False).to_wire()
    assert ours == theirs


@pytest.mark.parametrize("rtype, data", [
    ("A", "192.0.2"), ("A", "192.0.2.01"), ("A", "192.0.2.1 x"), ("AAAA", "1::2::3"),
    ("NS", "a..b"), ("NS", "x" * 64), ("NS", ".".join(["x" * 60] * 5)), ("NS", "caf\\233"),
    ("MX", "65536 mail"), ("MX", "-1 mail"), ("MX", "ten mail"), ("TXT", '"' + "x" * 256 + '"'),
    ("TXT", '"\\256"'), ("TXT", '"\\12x"'), ("SOA", "ns hm 1 2 3 4 1h"),
    ("SOA", "ns hm 4294967296 2 3 4 5"), ("SRV", "1 2 65536 @"), ("CAA", "0 is-sue x"),
    ("CAA", '256 issue "x"'),
])
def test_the_encoders_leave_other_spellings_to_dnspython(rtype, data):
    """None: dnspython then reads it (``1h``) or words the error."""
    tokens = []
    masterfile.scan(data, tokens)
    rdtype = dns.rdatatype.from_text(rtype)
    assert rdatawire.ENCODERS[rdtype](tokens, dns.name.from_text("z.test.").to_wire()) is None


@pytest.mark.parametrize("body, message", [
    ("x MX 65536 mail\n", "4: bad MX record: 65536 is not an unsigned 16-bit integer: "
     "'x MX 65536 mail'"),
    (f'x TXT "{"y" * 256}"\n', "4: bad TXT record: string too long"),
    ('x TXT "\\256"\n', "4: malformed TXT record: "),
    ("x NS a..b\n", "4: bad NS record: A DNS label is empty."),
    (f"x CNAME {'.'.join(['y' * 60] * 5)}\n", "4: bad CNAME record: A DNS name is > 255 octets "
     "long."),
    ("x.z.test.other. A 192.0.2.1\n", "4: out of zone data: x.z.test.other. is outside the "
     "zone z.test."),
    ("xz.test. A 192.0.2.1\n", "4: out of zone data: xz.test. is outside the zone z.test."),
])
def test_hostile_data_in_plain_spelling_is_refused_with_the_line(tmp_path, body, message):
    """Data shaped like the encoders' input but invalid still fails with file and line."""
    assert error(tmp_path, HEAD + body).startswith(f"DIR/z.test.zone:{message}")


def test_a_record_written_twice_is_kept_once_and_names_compare_without_case(tmp_path):
    path = write(tmp_path, HEAD + "m MX 10 Mail\nm MX 10 mail\nm MX 20 mail\nt TXT a\nt TXT a\n")
    zone = load_zone(str(path), zones_dir=str(tmp_path))
    mx = zoneview.find(zone, dns.name.from_text("m.z.test."), dns.rdatatype.MX)
    assert sorted(r.to_text() for r in mx) == ["10 Mail.z.test.", "20 mail.z.test."]
    assert len(zoneview.find(zone, dns.name.from_text("t.z.test."), dns.rdatatype.TXT)) == 1
