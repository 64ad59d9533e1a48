"""Zone editing: serials (RFC 1982), line-preserving edits, round trips, refusals, the CLI."""

from __future__ import annotations

import datetime
import json
import os
import re

import dns.name
import dns.rdatatype
import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit_dns import masterfile, zoneview
from clusterkit_dns.serial import next_serial, serial_add, serial_gt, serial_lt
from clusterkit_dns.zoneedit import ZoneEditError, ZoneText
from clusterkit_dns.zones import load_zone
from clusterkit_dns.zonestore import ZoneStore
from conftest import write_cluster
from dns_support import ZONES, write_zones

DAY = datetime.date(2026, 11, 26)
runner = CliRunner()


# ------------------------------------------------------------------ serials


@pytest.mark.parametrize("a, b, greater", [
    (1, 0, True), (0, 1, False), (0, 0, False),
    (0, 4294967295, True),            # wrapped: 0 follows 2^32 - 1
    (2147483647, 0, True), (2147483648, 0, False),  # 2^31 apart: undefined, never "greater"
    (2026112600, 2024010101, True), (100, 4000000000, True),
])
def test_rfc1982_comparison(a, b, greater):
    assert serial_gt(a, b) is greater
    if a != b and abs(a - b) != 2 ** 31:
        assert serial_lt(b, a) is greater


@pytest.mark.parametrize("current, expected", [
    (0, 2026112600),                   # a new zone starts today
    (2024010101, 2026112600),          # an older date moves to today's 00
    (2026112600, 2026112601),          # same day: the counter goes up
    (2026112699, 2026112700),          # 100 edits in a day borrow from tomorrow, never back
    (2030010100, 2030010101),          # a serial from the future is only incremented
    (4294967295, 2026112600),          # RFC 1982: today's date is "after" 2^32 - 1
    (3000000000, 3000000001),          # today's date is "behind" in serial space: + 1
])
def test_next_serial_never_goes_backwards(current, expected):
    new = next_serial(current, DAY)
    assert new == expected
    assert serial_gt(new, current)


def test_serial_addition_wraps_modulo_2_32():
    assert serial_add(4294967295, 1) == 0 and serial_gt(0, 4294967295)
    with pytest.raises(ValueError):
        serial_add(1, 2 ** 31)


# ------------------------------------------------------------------- edits


@pytest.fixture
def store(tmp_path):
    return ZoneStore(str(write_zones(tmp_path / "zones")))


def _without_serial(text: str, zone: str) -> str:
    """The text with the SOA serial token blanked out (found by the editor, not by value)."""
    edit = ZoneText(zone + ".", text)
    token = edit.soa().rdata_tokens[2]
    line = edit.lines[token.line]
    edit.lines[token.line] = line[:token.start] + "SERIAL" + line[token.end:]
    return "".join(edit.lines)


CASES = [
    ("example.com", "www2", "A", "192.0.2.200", None),          # new owner, end of file
    ("example.com", "mail", "A", "192.0.2.26", None),           # beside the owner's records
    ("example.com", "@", "TXT", '"apex text"', None),           # apex, RRset TTL reused
    ("example.com", "ttlunits", "A", "192.0.2.13", None),       # owner with a blank-owner line
    ("example.com", "host.rel", "A", "192.0.2.99", None),       # owner written under $ORIGIN rel
    ("example.com", "new", "MX", "10 mail", 120),               # names inside rdata, TTL given
    ("example.com", "srv", "SRV", "0 5 443 www", None),
    ("example.com", "caa", "CAA", '0 issue "ca.example"', None),
    ("example.org", "www", "AAAA", "2001:db8::80", 600),
    ("2.0.192.in-addr.arpa", "99", "PTR", "host.example.com.", None),
    ("child.example.com", "www.child.example.com.", "TXT", '"absolute owner"', None),
]


@pytest.mark.parametrize("zone, name, rtype, value, ttl", CASES)
def test_add_then_remove_gives_the_file_back_but_the_serial(store, zone, name, rtype, value, ttl):
    path = store.path(zone)
    before = open(path).read()
    old = load_zone(path).serial
    added = store.add_record(zone, name, rtype, value, ttl, today=DAY)
    loaded = load_zone(path)
    owner = dns.name.from_text(name, dns.name.from_text(zone))
    rrset = zoneview.find(loaded, owner, dns.rdatatype.from_text(rtype))
    assert added["value"] in [r.to_text(origin=loaded.origin, relativize=True) for r in rrset]
    if ttl is not None:
        assert rrset.ttl == ttl
    removed = store.remove_record(zone, name, rtype, value, today=DAY)
    assert removed["removed"] == 1 and serial_gt(removed["serial"], added["serial"])
    after = open(path).read()
    assert after != before
    assert _without_serial(after, zone) == _without_serial(before, zone)
    assert load_zone(path).serial == removed["serial"] != old


def test_an_edit_touches_only_its_line_and_the_serial(store):
    path = store.path("example.com")
    before = open(path).read().splitlines()
    store.add_record("example.com", "mail", "TXT", '"hello"', today=DAY)
    after = open(path).read().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(after) == len(before) + 1
    assert changed[0] == ("@   IN SOA ns1 hostmaster ( 2024010101 ; serial",
                          "@   IN SOA ns1 hostmaster ( 2026112600 ; serial")
    inserted = after.index('mail IN TXT "hello"')
    assert after[inserted - 1] == "mail in 300 AAAA 2001:db8::25"  # right after its owner
    assert after[:inserted] + after[inserted + 1:] == [changed[0][1] if x == changed[0][0] else x
                                                       for x in before]


def test_removing_a_named_line_keeps_the_owner_of_the_blank_owner_line_below(store):
    path = store.path("example.com")
    store.remove_record("example.com", "ttlunits", "A", today=DAY)
    zone = load_zone(path)
    owner = dns.name.from_text("ttlunits.example.com.")
    assert [r.rdtype for r in zoneview.rrsets(zone) if r.name == owner] == [dns.rdatatype.TXT]
    assert zoneview.find(zone, dns.name.from_text("example.com."), dns.rdatatype.A) is not None
    assert "ttlunits 1w IN TXT" in open(path).read()


def test_remove_without_value_removes_the_whole_rrset(store):
    result = store.remove_record("example.com", "@", "MX", today=DAY)
    assert result["removed"] == 2
    zone = load_zone(store.path("example.com"))
    assert zoneview.find(zone, dns.name.from_text("example.com."), dns.rdatatype.MX) is None


@pytest.mark.parametrize("args, message", [
    (("example.com", "www", "A", "192.0.2.5"), "CNAME"),             # CNAME and other data
    (("example.com", "x", "A", "192.0.2"), "A value '192.0.2'"),
    (("example.com", "x.example.net.", "A", "192.0.2.1"), "not inside zone"),
    (("example.com", "mail", "A", "192.0.2.25"), "already exists"),
    (("example.com", "x", "BOGUS", "1"), "unknown record type"),
    (("example.com", "@", "SOA", "a b 1 2 3 4 5"), "SOA is managed"),
    (("nothere.test", "x", "A", "192.0.2.1"), "no zone nothere.test."),
])
def test_bad_edits_are_refused_and_the_file_is_untouched(store, args, message):
    path = store.path("example.com")
    before = open(path).read()
    with pytest.raises(ZoneEditError, match=message):
        store.add_record(*args, today=DAY)
    assert open(path).read() == before


def test_a_ttl_different_from_the_rrset_is_refused(store):
    with pytest.raises(ZoneEditError, match="RFC 2181"):
        store.add_record("example.com", "mail", "A", "192.0.2.27", ttl=60, today=DAY)


def test_removing_what_is_not_there_names_it(store):
    with pytest.raises(ZoneEditError, match="no record nope.example.com. A"):
        store.remove_record("example.com", "nope", "A", today=DAY)
    with pytest.raises(ZoneEditError, match="SOA cannot be removed"):
        store.remove_record("example.com", "@", "SOA", today=DAY)
    with pytest.raises(ZoneEditError, match="\\$INCLUDE"):
        store.remove_record("example.com", "inc1", "A", today=DAY)  # lives in example.com.inc


def test_the_last_ns_cannot_be_removed(store):
    with pytest.raises(ZoneEditError, match="would not load.*NS"):
        store.remove_record("example.org", "@", "NS", today=DAY)


def test_the_serial_token_is_replaced_in_place_in_a_one_line_soa():
    text = "$TTL 60\n@ SOA ns hm 7 1 2 3 4 ; keep me\n@ NS ns\nns A 192.0.2.1\n"
    edit = ZoneText("example.org.", text)
    assert edit.bump_serial(DAY) == 2026112600
    assert edit.text.splitlines()[1] == "@ SOA ns hm 2026112600 1 2 3 4 ; keep me"


def test_tokenizer_errors_name_the_line():
    with pytest.raises(ZoneEditError, match="line 2: '\\(' is never closed"):
        ZoneText("example.org.", "$TTL 60\n@ SOA ns hm ( 1 2 3 4 5\n")


TRICKY = r"""$TTL 300
@   IN SOA ns1 hostmaster ( ; "a quote in a comment
        2024010101 ; serial ( a parenthesis in a comment
        1h 15m 1w
        60 ) ; ) after the close
@   NS ns1
ns1 A 192.0.2.1 ; plain
txt TXT "a;b" "c\"d;" e\;f ; comment "quoted" (
    TXT ( "two" ; first line
          "lines" ) ; blank owner, parentheses
esc\.dot A 192.0.2.2
sp\ ace TXT "x\\" "\065\;"
mx MX ( 10
        mail.example.net. )
"""


def test_the_editor_reads_records_where_the_reader_does(tmp_path):
    """Quotes with ';', escaped quotes, parentheses over lines and comments with quotes and
    parentheses in them: the editor's records are the server's reader's, line for line."""
    path = tmp_path / "example.org.zone"
    path.write_text(TRICKY)
    read = []
    masterfile.read(str(path), dns.name.from_text("example.org."), str(tmp_path),
                    lambda owner, ttl, rdtype, rdata, file, line:
                    read.append((owner, rdtype, rdata, line)))
    edited = [(e.owner.to_wire(), e.rdtype, e.rdata.to_wire(), e.first + 1)
              for e in ZoneText("example.org.", TRICKY).records()]
    assert edited == read and len(read) == 8


def test_the_serial_inside_parentheses_is_replaced_and_the_comments_kept():
    edit = ZoneText("example.org.", TRICKY)
    assert edit.bump_serial(DAY) == 2026112600
    assert edit.text == TRICKY.replace("2024010101 ;", "2026112600 ;")


def test_removing_a_record_with_quotes_escapes_and_comments_keeps_the_rest():
    edit = ZoneText("example.org.", TRICKY)
    first, blank = edit.find(dns.name.from_text("txt.example.org."), dns.rdatatype.TXT)
    assert first.rdata.strings == (b"a;b", b'c"d;', b"e;f") and blank.blank_owner
    assert [t.text for t in first.rdata_tokens] == ['"a;b"', '"c\\"d;"', "e\\;f"]
    edit.remove(first)
    assert edit.text == TRICKY.replace(
        'txt TXT "a;b" "c\\"d;" e\\;f ; comment "quoted" (\n    TXT', 'txt TXT')
    (spaced,) = edit.find(dns.name.from_text("sp\\ ace.example.org."), dns.rdatatype.TXT)
    edit.remove(spaced)
    assert "sp\\ ace" not in edit.text and "esc\\.dot A 192.0.2.2\nmx MX ( 10\n" in edit.text


@pytest.mark.parametrize("inside", ["\u2028", "\x0c", "\x85", "\x1e", "\r"])
def test_a_line_ends_where_the_reader_ends_it(tmp_path, inside):
    """Only "\\n" ends a line for the server's reader; a quoted string holding a character
    str.splitlines() would end a line at is one record to the editor too, and edits keep it."""
    text = f'$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nx TXT "a{inside}b"\ny A 192.0.2.1'
    path = tmp_path / "example.org.zone"
    path.write_bytes(text.encode())
    read = []
    masterfile.read(str(path), dns.name.from_text("example.org."), str(tmp_path),
                    lambda owner, ttl, rdtype, rdata, file, line: read.append((rdata, line)))
    edit = ZoneText("example.org.", text)
    assert [(e.rdata.to_wire(), e.first + 1) for e in edit.records()] == read
    edit.remove(edit.find(dns.name.from_text("y.example.org."), dns.rdatatype.A)[0])
    assert edit.text == text[:text.rindex("\n") + 1]


@pytest.mark.parametrize("text, message", [
    ('$TTL 60\nx TXT "abc\n', "line 2: unterminated quoted string"),
    ("$TTL 60\nx A 192.0.2.1 )\n", "line 2: ')' without '('"),
    ("$TTL 60\nx\\\n", "line 2: '\\' at the end of a line"),  # as the reader refuses it
    ('$TTL 60\nx TXT ( "a" ; ) "\n "b"\n', "line 2: '(' is never closed"),
])
def test_lexical_errors_name_the_line(text, message):
    with pytest.raises(ZoneEditError, match=re.escape(message)):
        ZoneText("example.org.", text)


# ------------------------------------------------------------------- zones


def test_zone_add_writes_a_valid_zone_with_ns_and_email(store):
    result = store.create("new.example", ns=["ns1.example.net.", "ns2.example.net."],
                          email="jane.doe@example.net", today=DAY)
    zone = load_zone(result["file"])
    assert zone.serial == 2026112600
    ns = zoneview.find(zone, dns.name.from_text("new.example."), dns.rdatatype.NS)
    assert sorted(r.to_text() for r in ns) == ["ns1.example.net.", "ns2.example.net."]
    assert zoneview.soa(zone)[0].rname.to_text() == "jane\\.doe.example.net."
    with pytest.raises(ZoneEditError, match="already exists"):
        store.create("new.example", today=DAY)


def test_zone_add_from_a_template(store):
    template = "$TTL 300\n@ SOA {ns} {email} {serial} 1h 15m 1w 1m\n{ns_records}\nwww A 192.0.2.8\n"
    result = store.create("tpl.example", ns=["ns.tpl.example"], template=template, today=DAY)
    zone = load_zone(result["file"])
    assert zoneview.find(zone, dns.name.from_text("www.tpl.example."), dns.rdatatype.A)
    assert zoneview.soa(zone)[0].mname.to_text() == "ns.tpl.example."


def test_a_template_that_does_not_load_is_refused_and_nothing_is_written(store):
    with pytest.raises(ZoneEditError, match="would not load"):
        store.create("bad.example", template="$TTL 300\nwww A 192.0.2.8\n", today=DAY)
    assert not os.path.exists(store.path("bad.example"))


def test_zone_list_shows_a_broken_file_with_its_error(store):
    open(store.path("broken.example"), "w").write("$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nx A 1.2\n")
    rows = {r["zone"]: r for r in store.zones()}
    assert rows["example.com"]["serial"] == 2024010101 and not rows["example.com"]["error"]
    assert rows["broken.example"]["serial"] is None and ":4:" in rows["broken.example"]["error"]
    store.delete("broken.example")
    assert "broken.example" not in {r["zone"] for r in store.zones()}


# --------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path, pm):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.87.3", nodes=1,
                        extra='\n[dns]\nport = 5300\nzones_dir = "/zones"\n')
    return get_app(pm), cfg, tmp_path / "manager" / "zones"


def _run(cli, *args):
    app, cfg, _ = cli
    return runner.invoke(app, [*args, "-c", str(cfg)])


def test_cli_zone_and_record_round_trip(cli):
    zones = cli[2]
    created = _run(cli, "dns", "zone", "add", "shop.example", "--ns", "ns1.example.net.", "--json")
    assert created.exit_code == 0, created.output
    first = json.loads(created.stdout)["serial"]
    original = (zones / "shop.example.zone").read_text()
    added = _run(cli, "dns", "record", "add", "shop.example", "www", "A", "192.0.2.10",
                 "--ttl", "60", "--json")
    assert added.exit_code == 0, added.output
    listed = json.loads(_run(cli, "dns", "record", "list", "shop.example", "--json").stdout)
    assert {"name": "www", "ttl": 60, "type": "A", "value": "192.0.2.10"} in listed
    removed = _run(cli, "dns", "record", "remove", "shop.example", "www", "A", "192.0.2.10", "--json")
    assert removed.exit_code == 0 and json.loads(removed.stdout)["removed"] == 1
    serial = json.loads(removed.stdout)["serial"]
    assert serial_gt(serial, json.loads(added.stdout)["serial"])
    assert serial_gt(json.loads(added.stdout)["serial"], first)
    final = (zones / "shop.example.zone").read_text()
    assert final.replace(str(serial), "S") == original.replace(str(first), "S")
    bumped = json.loads(_run(cli, "dns", "zone", "bump", "shop.example", "--json").stdout)
    assert serial_gt(bumped["serial"], serial)
    assert load_zone(str(zones / "shop.example.zone")).serial == bumped["serial"]
    zone_list = json.loads(_run(cli, "dns", "zone", "list", "--json").stdout)
    assert [z["zone"] for z in zone_list] == ["shop.example"]
    assert _run(cli, "dns", "zone", "remove", "shop.example").exit_code == 0
    assert not (zones / "shop.example.zone").exists()


def test_cli_errors_are_usage_errors_naming_the_value(cli):
    assert _run(cli, "dns", "zone", "add", "e.example").exit_code == 0
    bad = _run(cli, "dns", "record", "add", "e.example", "www", "A", "999.1.1.1")
    assert bad.exit_code == 2 and "999.1.1.1" in bad.output
    missing = _run(cli, "dns", "record", "list", "nothere.example")
    assert missing.exit_code == 2 and "no zone nothere.example." in missing.output
    gone = _run(cli, "dns", "zone", "remove", "nothere.example")
    assert gone.exit_code == 2


def test_the_editor_reads_every_record_as_the_server_does(store, tmp_path):
    """Owner, type and data of every line agree with the loader (``$INCLUDE`` files aside)."""
    for name in ZONES:
        text = open(store.path(name)).read()
        edit = ZoneText(name + ".", text)
        ours = {(e.owner, e.rdtype, e.rdata) for e in edit.records()}
        alone = tmp_path / f"{name}.zone"  # the file without its $INCLUDE lines
        alone.write_text("".join(line for line in text.splitlines(keepends=True)
                                 if not line.upper().startswith("$INCLUDE")))
        theirs = {(rrset.name, rrset.rdtype, rd) for rrset in zoneview.rrsets(load_zone(str(alone)))
                  for rd in rrset}
        assert ours == theirs, name


def test_the_guard_refuses_an_edit_that_changed_other_records(tmp_path):
    """Defence in depth: the loaded zones before and after must differ by exactly the edit."""
    from clusterkit_dns.zonestore import _same_but

    base = "$TTL 60\n@ SOA ns hm 1 3600 900 604800 60\n@ NS ns\nns A 192.0.2.1\n"
    (tmp_path / "before.example.zone").write_text(base + "a A 192.0.2.2\n")
    (tmp_path / "after.example.zone").write_text(base + "a 300 A 192.0.2.2\nb A 192.0.2.3\n")
    before = load_zone(str(tmp_path / "before.example.zone"), dns.name.from_text("x."))
    after = load_zone(str(tmp_path / "after.example.zone"), dns.name.from_text("x."))
    added = {(dns.name.from_text("b.x."), dns.rdatatype.A, 60, next(iter(
        zoneview.find(after, dns.name.from_text("b.x."), dns.rdatatype.A))))}
    with pytest.raises(ZoneEditError, match="would also change a.x. A TTL"):
        _same_but(before, after, added=added)


def test_owner_names_from_the_command_line(store):
    zone = "example.org"
    for name in ("api", "api.example.org.", "api.example.org", "API.Example.Org"):
        added = store.add_record(zone, name, "A", "198.51.100.7", today=DAY)
        assert added["name"].lower() == "api", name  # DNS keeps the case it is given
        store.remove_record(zone, name, "A", today=DAY)
    apex = store.add_record(zone, "example.org", "TXT", "apex", today=DAY)
    assert apex["name"] == "@"


def test_plain_txt_text_is_quoted_and_split_at_255_bytes(store):
    text = 'v=spf1 include:"x" ' + "é" * 200
    added = store.add_record("example.org", "txt", "TXT", text, today=DAY)
    rrset = zoneview.find(load_zone(store.path("example.org")), dns.name.from_text("txt.example.org."),
                          dns.rdatatype.TXT)
    (rdata,) = rrset
    assert [len(s) for s in rdata.strings] == [255, len(text.encode()) - 255]
    assert b"".join(rdata.strings).decode() == text
    removed = store.remove_record("example.org", "txt", "TXT", text, today=DAY)
    assert removed["removed"] == 1 and added["serial"] != removed["serial"]
    quoted = store.add_record("example.org", "txt", "TXT", '"two" "strings"', today=DAY)
    assert quoted["value"] == '"two" "strings"'


def test_cli_zone_add_from_a_template_file_and_the_human_listing(cli, tmp_path):
    template = tmp_path / "template.zone"
    template.write_text("; {zone} from the company template\n$TTL 600\n"
                        "@ SOA {ns} {email} {serial} 1h 15m 1w 5m\n{ns_records}\n"
                        "@ MX 10 mx.example.net.\n")
    created = _run(cli, "dns", "zone", "add", "tpl.example", "--ns", "ns1.example.net",
                   "--template", str(template))
    assert created.exit_code == 0, created.output
    text = (cli[2] / "tpl.example.zone").read_text()
    assert text.startswith("; tpl.example. from the company template\n$TTL 600\n")
    (cli[2] / "broken.example.zone").write_text("$TTL 60\n@ SOA ns hm 1 2 3 4 5\n")
    listing = _run(cli, "dns", "zone", "list")
    assert listing.exit_code == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["ZONE", "SERIAL", "RECORDS"]
    assert any(line.startswith("broken.example") and "no NS" in line for line in lines)
    assert any(line.split()[:3] == ["tpl.example", str(next_serial(0)), "3"] for line in lines)
    missing = _run(cli, "dns", "zone", "add", "x.example", "--template", str(tmp_path / "nope"))
    assert missing.exit_code == 2


def test_cli_status_refuses_when_dns_is_disabled(tmp_path, pm):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.87.3", nodes=1,
                        extra='\n[dns]\nenabled = false\n')
    result = runner.invoke(get_app(pm), ["dns", "status", "-c", str(cfg)])
    assert result.exit_code == 2 and "enabled = false" in result.output


# ------------------------------------------- zone names that would escape the directory


def _escaped(path: str) -> str:
    """A zone name that dnspython unescapes into ``path`` (``\\047`` is '/', ``\\.`` a dot)."""
    return path.replace(".", "\\.").replace("/", "\\047")


def _hostile_names() -> list[str]:
    """Names whose labels become paths: the store's directory is tmp/zones, the victim tmp/outside."""
    return [_escaped("../outside/pwned"),          # one label '../outside/pwned'
            _escaped("../outside/victim"),
            "sub\\047dir.example",                # a '/' inside a label: a subdirectory
            "\\.\\..example", "x.\\.\\.",     # '..' as a label
            "a\\000b.example", "sp\\032ace.example"]


@pytest.mark.parametrize("call", ["create", "delete", "records", "add_record", "remove_record", "bump"])
def test_zone_names_that_unescape_to_paths_are_refused(store, tmp_path, call):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.zone").write_text("precious\n")
    args = {"create": (), "delete": (), "records": (), "bump": (),
            "add_record": ("www", "A", "192.0.2.1"), "remove_record": ("www", "A")}[call]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for name in _hostile_names():
        with pytest.raises(ZoneEditError, match="may hold only letters, digits"):
            getattr(store, call)(name, *args)
    assert (outside / "victim.zone").read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "no file created or removed"


def test_zone_file_is_the_one_way_to_a_path_and_stays_in_the_directory(tmp_path):
    from clusterkit_dns.zoneedit import zone_file

    assert zone_file(str(tmp_path), "Example.COM.") == str(tmp_path / "example.com.zone")
    assert zone_file(str(tmp_path), dns.name.from_text("a-b_c.example")) == \
        str(tmp_path / "a-b_c.example.zone")
    for name in ("", ".", "a..b", "\\047etc\\047passwd",  # absolute: os.path.join took it whole
                 dns.name.from_text("\\047etc\\047passwd")):
        with pytest.raises(ZoneEditError):
            zone_file(str(tmp_path), name)


def test_cli_refuses_zone_names_that_unescape_to_paths(cli, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.zone").write_text("precious\n")
    for args in (("dns", "zone", "add", _escaped("../outside/pwned")),
                 ("dns", "zone", "remove", _escaped("../outside/victim")),
                 ("dns", "zone", "add", "sub\\047dir.example"),
                 ("dns", "record", "add", _escaped("../outside/victim"), "www", "A", "192.0.2.1")):
        result = _run(cli, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "may hold only letters, digits" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in outside.iterdir()) == ["victim.zone"]
    assert (outside / "victim.zone").read_text() == "precious\n"
