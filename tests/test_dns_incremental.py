"""Incremental reload: a changed zone among many is re-read alone, swapped in whole while the
others keep answering; the bytes each zone is kept in are accounted per zone."""

from __future__ import annotations

import os
import socket
import threading

import dns.message
import dns.name
import dns.rcode
import pytest

from dns_support import ServerThread
from support import wait_for

ADDR = "127.87.32.1"
ZONES = 300
TEXT = ("$TTL 60\n@ SOA ns.hoster.test. hm {serial} 1 1 1 1\n@ NS ns.hoster.test.\n"
        "www A 192.0.2.{serial}\nmail A 192.0.2.25\n{extra}")


def replace(path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def many(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    for i in range(ZONES):
        (zones / f"site{i}.test.zone").write_text(TEXT.format(serial=1, extra=""))
    with ServerThread(zones, ADDR) as srv:
        srv.zones = zones
        yield srv


def ask(srv, name: str, rdtype: str = "A", sock=None) -> dns.message.Message:
    own = sock is None
    sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        sock.sendto(dns.message.make_query(name, rdtype).to_wire(), (srv.addr, srv.port))
        return dns.message.from_wire(sock.recv(4096))
    finally:
        if own:
            sock.close()


def address(srv, name: str) -> str | None:
    m = ask(srv, name)
    return m.answer[0][0].address if m.answer else None


def test_a_changed_zone_is_the_only_one_parsed_again(many):
    """Every other zone keeps its loaded object (the same object): not re-read."""
    zones = dict(many.server.zones)
    replace(many.zones / "site7.test.zone", TEXT.format(serial=2, extra="new A 192.0.2.77\n"))
    wait_for(lambda: address(many, "new.site7.test") == "192.0.2.77")
    site7 = dns.name.from_text("site7.test")
    assert [o for o, z in many.server.zones.items() if zones[o] is not z] == [site7]
    assert address(many, "www.site7.test") == "192.0.2.2"
    assert all(address(many, f"www.site{i}.test") == "192.0.2.1" for i in range(0, ZONES, 37))


def test_removed_and_added_zones_and_a_zone_nested_in_another(many):
    replace(many.zones / "sub.site3.test.zone", TEXT.format(serial=9, extra=""))
    wait_for(lambda: address(many, "www.sub.site3.test") == "192.0.2.9")
    assert ask(many, "sub.site3.test", "SOA").answer[0][0].serial == 9  # the child's apex
    assert address(many, "www.site3.test") == "192.0.2.1"  # the parent's own names stay
    (many.zones / "sub.site3.test.zone").unlink()
    wait_for(lambda: ask(many, "www.sub.site3.test").rcode() == dns.rcode.NXDOMAIN)
    assert ask(many, "site3.test", "SOA").answer[0][0].serial == 1
    (many.zones / "site5.test.zone").unlink()
    wait_for(lambda: ask(many, "www.site5.test").rcode() == dns.rcode.REFUSED)
    assert address(many, "www.site6.test") == "192.0.2.1"


def test_a_broken_change_keeps_the_zone_and_reloads_nothing_else(many):
    replace(many.zones / "site9.test.zone", TEXT.format(serial=2, extra="bad A 300.1.1.1\n"))
    wait_for(lambda: many.server.status()["errors"])
    assert address(many, "www.site9.test") == "192.0.2.1"
    replace(many.zones / "site9.test.zone", TEXT.format(serial=3, extra=""))
    wait_for(lambda: address(many, "www.site9.test") == "192.0.2.3")
    assert many.server.status()["errors"] == []


def test_the_other_zones_answer_throughout_the_changes(many):
    """A thread asks another zone while zones are replaced one after another: every
    answer comes, and is the right one."""
    stop = threading.Event()
    answers, wrong = [], []

    def probe():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while not stop.is_set():
            got = ask(many, "www.site299.test", sock=sock)
            answers.append(got)
            if not got.answer or got.answer[0][0].address != "192.0.2.1":
                wrong.append(got)
        sock.close()

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        for serial in range(2, 12):
            replace(many.zones / f"site{serial}.test.zone", TEXT.format(serial=serial, extra=""))
            wait_for(lambda: address(many, f"www.site{serial}.test") == f"192.0.2.{serial}")
    finally:
        stop.set()
        thread.join()
    assert answers and not wrong


def test_a_burst_of_changes_is_coalesced_and_none_is_lost(many):
    before = many.server.reloads
    for i in range(20, 60):
        replace(many.zones / f"site{i}.test.zone", TEXT.format(serial=3, extra=""))
    wait_for(lambda: all(address(many, f"www.site{i}.test") == "192.0.2.3" for i in range(20, 60)))
    assert many.server.reloads - before < 40


def test_a_big_change_is_served_whole(many):
    """A zone grown by 10,000 names is served with all of them; the others still answer."""
    extra = "".join(f"h{i} A 10.0.{i >> 8 & 255}.{i & 255}\n" for i in range(10_010))
    replace(many.zones / "site4.test.zone", TEXT.format(serial=5, extra=extra))
    wait_for(lambda: address(many, "h10009.site4.test") == "10.0.39.25", timeout=60)
    assert address(many, "h0.site4.test") == "10.0.0.0"
    assert address(many, "www.site8.test") == "192.0.2.1"


def test_the_bytes_of_each_zone_are_accounted(many):
    """wire_bytes is what the zone is kept in: its names and nodes, counted once."""
    status = many.server.status()
    sizes = {z: v["wire_bytes"] for z, v in status["zones"].items()}
    assert len(sizes) == ZONES and all(s > 0 for s in sizes.values())
    assert status["wire_bytes"] == sum(sizes.values())
    small = sizes["site1.test."]
    extra = "".join(f"h{i} TXT \"{'x' * 100}{i}\"\n" for i in range(50))
    replace(many.zones / "site1.test.zone", TEXT.format(serial=2, extra=extra))
    wait_for(lambda: many.server.status()["zones"]["site1.test."]["serial"] == 2)
    grown = many.server.status()["zones"]["site1.test."]["wire_bytes"]
    assert small + 50 * 100 < grown < small + 50 * 200  # every TXT's text, kept once
    zone = many.server.zones[dns.name.from_text("site1.test")]
    assert grown == sum(len(name) + len(node) for name, node in zone.names.items())


def test_a_reload_keeps_the_answers_of_the_zones_it_did_not_change(many):
    """Rendered answers of unchanged zones survive a reload (the same template objects);
    the changed zone's, one crossing zones (a CNAME), and those under a zone added
    below their own are rendered again, from the new data."""
    replace(many.zones / "site2.test.zone",
            TEXT.format(serial=2, extra="alias CNAME www.site3.test.\nwww.sub A 192.0.2.50\n"))
    wait_for(lambda: address(many, "www.sub.site2.test") == "192.0.2.50")
    for name in ("www.site1.test", "www.site3.test", "alias.site2.test", "mail.site2.test"):
        ask(many, name)
    cache = dict(many.server.responder.state.cache)

    def template(name):
        return cache[dns.name.from_text(name).to_wire().lower() + b"\x00\x01"]

    replace(many.zones / "site3.test.zone", TEXT.format(serial=2, extra=""))
    wait_for(lambda: address(many, "www.site3.test") == "192.0.2.2")
    state = many.server.responder.state  # the answers kept join it after the swap
    wait_for(lambda: any(t is template("www.site1.test") for t in state.cache.values()))
    assert any(t is template("mail.site2.test") for t in state.cache.values())
    assert not any(t is template("alias.site2.test") for t in state.cache.values())  # site3
    assert ask(many, "alias.site2.test").answer[-1][0].address == "192.0.2.2"
    replace(many.zones / "sub.site2.test.zone", TEXT.format(serial=7, extra=""))
    wait_for(lambda: address(many, "www.sub.site2.test") == "192.0.2.7")
    assert address(many, "mail.site2.test") == "192.0.2.25"
