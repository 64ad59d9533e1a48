"""The server on real sockets: TCP framing and limits, hot reload, fuzzing."""

from __future__ import annotations

import os
import random
import socket
import struct
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from dns_support import ServerThread, write_zones

ADDR = "127.83.2.1"


@pytest.fixture
def server(tmp_path):
    with ServerThread(write_zones(tmp_path / "zones"), ADDR, tcp_idle=1.0, tcp_max=8) as s:
        yield s


def query(name, rdtype="A", qid=None, **kw) -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=False, **kw)
    if qid is not None:
        q.id = qid
    return q.to_wire()


def framed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def read_messages(sock: socket.socket, count: int) -> list[dns.message.Message]:
    buf = b""
    out = []
    while len(out) < count:
        chunk = sock.recv(65535)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
            size = struct.unpack("!H", buf[:2])[0]
            out.append(dns.message.from_wire(buf[2:2 + size]))
            buf = buf[2 + size:]
    return out


def udp(server, name, rdtype="A", **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    return dns.query.udp(q, server.addr, port=server.port, timeout=2)


# --------------------------------------------------------------------- TCP


def test_tcp_pipelined_queries_answered_in_order(server):
    names = ["www.example.com", "nx.example.com", "mail.example.com", "a.example.net",
             "x.wild.example.com"] * 4
    with socket.create_connection((server.addr, server.port), timeout=3) as s:
        s.sendall(b"".join(framed(query(n, qid=i)) for i, n in enumerate(names)))
        replies = read_messages(s, len(names))
    assert [m.id for m in replies] == list(range(len(names)))
    assert [str(m.question[0].name) for m in replies] == [n + "." for n in names]
    assert replies[1].rcode() == dns.rcode.NXDOMAIN and replies[3].rcode() == dns.rcode.REFUSED


def test_tcp_split_reads_are_reassembled(server):
    stream = framed(query("www.example.com", qid=1)) + framed(query("mail.example.com", qid=2))
    with socket.create_connection((server.addr, server.port), timeout=3) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(stream)):  # one byte at a time, length prefix included
            s.sendall(stream[i:i + 1])
            time.sleep(0.002)
        replies = read_messages(s, 2)
    assert [m.id for m in replies] == [1, 2]
    assert replies[0].answer and replies[1].answer


def test_tcp_idle_connection_is_closed(server):
    with socket.create_connection((server.addr, server.port), timeout=5) as s:
        s.sendall(framed(query("www.example.com")))
        assert read_messages(s, 1)
        start = time.monotonic()
        assert s.recv(10) == b""  # the server closes after tcp_idle (1 s) of silence
        assert 0.5 < time.monotonic() - start < 4


def test_tcp_connection_limit(server):
    conns = []
    try:
        for _ in range(8):
            c = socket.create_connection((server.addr, server.port), timeout=3)
            c.sendall(framed(query("www.example.com")))
            assert read_messages(c, 1)
            conns.append(c)
        extra = socket.create_connection((server.addr, server.port), timeout=3)
        try:
            extra.sendall(framed(query("www.example.com")))
            data = extra.recv(10)
        except ConnectionResetError:
            data = b""
        extra.close()
        assert data == b""  # over the limit: closed at once
        assert server.server.status()["tcp_refused"] >= 1
    finally:
        for c in conns:
            c.close()
    time.sleep(0.2)
    with socket.create_connection((server.addr, server.port), timeout=3) as s:  # room again
        s.sendall(framed(query("www.example.com")))
        assert read_messages(s, 1)


def test_tcp_big_answer_is_not_truncated(server):
    q = dns.message.make_query("big.example.com", "TXT")
    m = dns.query.tcp(q, server.addr, port=server.port, timeout=3)
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 6


# --------------------------------------------------------------- hot reload


def wait_for(predicate, timeout=1.0):
    """Poll until ``predicate()`` is true; return the seconds it took (or fail)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout}s")


def answer_of(server, name, rdtype="A"):
    m = udp(server, name, rdtype)
    return m.rcode(), sorted(x.to_text() for r in m.answer for x in r)


def replace(path, text):
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


ZONE = "$TTL 60\n@ SOA ns h {serial} 1 1 1 1\n@ NS ns\nns A 192.0.2.1\nwww A {address}\n"


def test_zone_added_changed_removed_within_a_second(server):
    zones = server.server.zones_dir
    path = __import__("pathlib").Path(zones) / "hot.test.zone"
    assert answer_of(server, "www.hot.test")[0] == dns.rcode.REFUSED
    path.write_text(ZONE.format(serial=1, address="192.0.2.10"))  # written in place
    wait_for(lambda: answer_of(server, "www.hot.test") == (0, ["192.0.2.10"]))
    replace(path, ZONE.format(serial=2, address="192.0.2.20"))  # replaced by rename
    wait_for(lambda: answer_of(server, "www.hot.test") == (0, ["192.0.2.20"]))
    assert server.server.status()["zones"]["hot.test."]["serial"] == 2
    path.unlink()
    wait_for(lambda: answer_of(server, "www.hot.test")[0] == dns.rcode.REFUSED)


def test_bad_zone_keeps_the_previous_version(server, caplog):
    path = __import__("pathlib").Path(server.server.zones_dir) / "hot.test.zone"
    replace(path, ZONE.format(serial=1, address="192.0.2.10"))
    wait_for(lambda: answer_of(server, "www.hot.test") == (0, ["192.0.2.10"]))
    replace(path, ZONE.format(serial=2, address="192.0.2.300"))
    wait_for(lambda: server.server.status()["errors"])
    (error,) = server.server.status()["errors"]
    assert error.startswith(f"{path}:5: ") and "192.0.2.300" in error
    assert answer_of(server, "www.hot.test") == (0, ["192.0.2.10"])
    assert answer_of(server, "www.example.com")[0] == 0  # the other zones are untouched
    replace(path, ZONE.format(serial=3, address="192.0.2.30"))
    wait_for(lambda: answer_of(server, "www.hot.test") == (0, ["192.0.2.30"]))
    assert server.server.status()["errors"] == []


def test_changed_include_file_reloads_its_zone(server):
    inc = __import__("pathlib").Path(server.server.zones_dir) / "example.com.inc"
    replace(inc, "inc1 A 192.0.2.181\n")
    wait_for(lambda: answer_of(server, "inc1.example.com") == (0, ["192.0.2.181"]))


def test_swap_is_atomic_under_load(server):
    """While a zone is rewritten, each answer comes from one version: the MX preference in the
    answer and the address of its target in the additional section always agree."""
    path = __import__("pathlib").Path(server.server.zones_dir) / "swap.test.zone"
    text = ("$TTL 60\n@ SOA ns h {v} 1 1 1 1\n@ NS ns.other.test.\n@ MX {v} mx\n"
            "mx A 192.0.2.{v}\n")
    replace(path, text.format(v=1))
    wait_for(lambda: answer_of(server, "swap.test", "MX")[0] == 0)
    seen = set()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    for v in range(2, 12):
        replace(path, text.format(v=v))
        deadline = time.monotonic() + 0.15
        while time.monotonic() < deadline:
            s.sendto(query("swap.test", "MX"), (server.addr, server.port))
            m = dns.message.from_wire(s.recv(4096))
            preference = m.answer[0][0].preference
            address = m.additional[0][0].address
            assert address == f"192.0.2.{preference}"
            seen.add(preference)
    s.close()
    assert len(seen) >= 2  # the versions did change under the queries


def test_reload_zones_is_idempotent_and_cheap(server):
    before = server.server.reloads
    for _ in range(3):
        result = server.call(server.server.reload_zones())
        assert result["changed"] is False
    assert server.server.reloads == before


def test_repeated_queries_keep_their_own_id_flags_and_case(server):
    """The packet cache (compiler.State.packets) keys on everything after the ID: a repeat gets
    its own ID, a different RD bit or letter case is a different query, and the cached
    answer counts in the status like any other."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    before = server.server.status()["queries"].get("NOERROR", 0)
    for qid, name, rd in ((1, "www.example.com", True), (2, "www.example.com", True),
                          (3, "WwW.Example.COM", True), (4, "www.example.com", False),
                          (5, "WwW.Example.COM", True)):
        q = dns.message.make_query(name, "A", use_edns=False)
        q.id = qid
        if not rd:
            q.flags &= ~dns.flags.RD
        s.sendto(q.to_wire(), (server.addr, server.port))
        m = dns.message.from_wire(s.recv(4096))
        assert m.id == qid
        assert bool(m.flags & dns.flags.RD) is rd and m.flags & dns.flags.AA
        assert m.question[0].name.to_text() == name + "."  # as received, case kept
        assert [r.to_text() for r in m.answer[1]] == ["192.0.2.1"]
    s.close()
    assert server.server.status()["queries"]["NOERROR"] == before + 5


def test_hidden_identity_and_version_are_refused(tmp_path):
    with ServerThread(write_zones(tmp_path / "zones"), ADDR, identity="", version="") as s:
        for name in ("id.server", "version.bind"):
            q = dns.message.make_query(name, "TXT", rdclass="CH")
            m = dns.query.udp(q, s.addr, port=s.port, timeout=2)
            assert m.rcode() == dns.rcode.REFUSED and not m.answer


# -------------------------------------------------------------------- fuzz


def test_fuzz_never_crashes_and_keeps_answering(server):
    """Random and mutated packets over UDP and TCP; correct answers before, during, after."""
    rng = random.Random(6)
    good = [query(n, t) for n, t in (("www.example.com", "A"), ("example.com", "MX"),
                                     ("nx.example.com", "AAAA"), ("x.wild.example.com", "TXT"))]
    edns = dns.message.make_query("big.example.com", "TXT", use_edns=0).to_wire()
    seeds = good + [edns]

    def mutate() -> bytes:
        kind = rng.randrange(5)
        base = bytearray(rng.choice(seeds))
        if kind == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        if kind == 1:
            for _ in range(rng.randrange(1, 6)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            return bytes(base)
        if kind == 2:
            return bytes(base[:rng.randrange(len(base))])
        if kind == 3:
            return bytes(base) + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        base[4:12] = bytes(rng.randrange(256) for _ in range(8))  # wild section counts
        return bytes(base)

    expected = dns.message.from_wire(dns.query.udp(
        dns.message.make_query("www.example.com", "A"), server.addr, port=server.port,
        timeout=2).to_wire())
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(0.5)
    for i in range(1500):
        packet = mutate()
        u.sendto(packet, (server.addr, server.port))
        if i % 100 == 0:
            assert answer_of(server, "www.example.com") == (0, ["192.0.2.1", "example.com."])
    u.close()
    for _ in range(30):
        with socket.create_connection((server.addr, server.port), timeout=3) as t:
            blob = b"".join(framed(mutate()) for _ in range(rng.randrange(1, 10)))
            blob += bytes(rng.randrange(256) for _ in range(rng.randrange(0, 5)))
            t.sendall(blob)
            t.shutdown(socket.SHUT_WR)  # the server answers what is whole, then closes
            try:
                while t.recv(65535):
                    pass
            except ConnectionResetError:
                pass
    m = dns.query.udp(dns.message.make_query("www.example.com", "A"), server.addr,
                      port=server.port, timeout=2)
    assert m.answer == expected.answer and m.rcode() == 0
    m = dns.query.tcp(dns.message.make_query("example.com", "MX"), server.addr,
                      port=server.port, timeout=2)
    assert m.rcode() == 0 and m.answer
    status = server.server.status()
    assert status["queries"].get("SERVFAIL", 0) == 0  # no packet found a bug
    assert status["queries"]["FORMERR"] > 100


def test_ipv6_listener(tmp_path):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with ServerThread(write_zones(tmp_path / "zones"), "::1") as s:
        for send in (dns.query.udp, dns.query.tcp):
            m = send(dns.message.make_query("www.example.com", "AAAA"), "::1", port=s.port, timeout=2)
            assert m.rcode() == 0 and m.answer


def test_include_in_a_subdirectory_reloads_too(server):
    zones = __import__("pathlib").Path(server.server.zones_dir)
    (zones / "parts").mkdir(exist_ok=True)
    replace(zones / "parts" / "hosts.txt", "h1 A 192.0.2.91\n")
    replace(zones / "sub.test.zone", "$TTL 60\n@ SOA ns h 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\n"
                                     "$INCLUDE parts/hosts.txt\n")
    wait_for(lambda: answer_of(server, "h1.sub.test") == (0, ["192.0.2.91"]))
    replace(zones / "parts" / "hosts.txt", "h1 A 192.0.2.92\n")
    wait_for(lambda: answer_of(server, "h1.sub.test") == (0, ["192.0.2.92"]))


def test_tcp_client_that_reads_late_gets_every_answer(server):
    """Back-pressure: thousands of pipelined queries, nothing read until all are sent; the
    server stops reading while its answers pile up, then every answer arrives, in order."""
    import threading

    count = 4000  # ~3.5 MB of answers: more than the socket buffers hold
    stream = b"".join(framed(query("big.example.com", "TXT", qid=i)) for i in range(count))
    with socket.create_connection((server.addr, server.port), timeout=10) as s:
        sender = threading.Thread(target=s.sendall, args=(stream,))
        sender.start()
        time.sleep(0.5)  # let the server's write buffer fill while nobody reads
        buf, headers = b"", []
        while len(headers) < count:
            chunk = s.recv(1 << 20)
            assert chunk, "connection closed early"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                size = struct.unpack("!H", buf[:2])[0]
                headers.append(struct.unpack("!HHHH", buf[2:10]))  # id, flags, qd, an
                buf = buf[2 + size:]
        sender.join(10)
    assert [h[0] for h in headers] == list(range(count))
    assert all(h[3] == 6 and not h[1] & 0x0200 for h in headers)  # 6 TXT records, no TC


def test_zones_dir_change_moves_the_server(tmp_path):
    """DnsServer used twice on one address, as clusterkit_reload does for a new zones_dir."""
    first = write_zones(tmp_path / "a")
    second = tmp_path / "b"
    second.mkdir()
    (second / "other.test.zone").write_text(ZONE.format(serial=9, address="192.0.2.99"))
    with ServerThread(first, ADDR) as s:
        port = s.port
        assert answer_of(s, "www.example.com")[0] == 0
    with ServerThread(second, ADDR, port=port) as s:
        assert answer_of(s, "www.other.test") == (0, ["192.0.2.99"])
        assert answer_of(s, "www.example.com")[0] == dns.rcode.REFUSED


# ------------------------------------------------------ TCP under attack

TXT_10K = " ".join('"' + chr(97 + i % 26) * 250 + '"' for i in range(40))  # 10 kB of TXT
FLOOD_ZONE = f"$TTL 60\n@ SOA ns h 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\nbig TXT {TXT_10K}\n"


def status_of(s) -> dict:
    async def read():
        return s.server.status()
    return s.call(read())


def test_pipelined_queries_never_read_hold_a_bounded_buffer(tmp_path):
    """2,000 queries for a 10 kB TXT, answers never read: the server stops reading the
    connection once its unsent answers pass the bound, instead of queueing 20 MB."""
    from clusterkit_dns.server import TCP_CHUNK, TCP_UNSENT

    bound = TCP_UNSENT + TCP_CHUNK + 65537  # the bound, a gathered write, one answer
    zones = write_zones(tmp_path / "zones", {"flood.test": FLOOD_ZONE}, {})
    with ServerThread(zones, ADDR, tcp_idle=30) as s:
        flood = socket.socket()
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little itself
        flood.settimeout(5)
        flood.connect((s.addr, s.port))
        try:
            flood.sendall(framed(query("big.flood.test", "TXT")) * 2000)
            seen, last = [], None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until nothing more is answered
                st = status_of(s)
                seen.append(st["tcp_unsent_max"])
                answered = st["queries"].get("NOERROR", 0)
                if answered == last and len(seen) > 5:
                    break
                last = answered
                time.sleep(0.2)
            assert 0 < max(seen) <= bound, max(seen)
            assert 0 < answered < 2000  # the rest waits, unread, for the client to read
            # meanwhile a fresh client is answered, big answer and all
            m = dns.query.tcp(dns.message.make_query("big.flood.test", "TXT"), s.addr,
                              port=s.port, timeout=3)
            assert len(b"".join(m.answer[0][0].strings)) == 10000
            assert status_of(s)["tcp_unsent_max"] <= bound
        finally:
            flood.close()
        wait_for(lambda: status_of(s)["tcp_connections"] == 0, timeout=5)
        assert status_of(s)["tcp_unsent"] == 0


def test_pipelined_queries_then_eof_are_all_answered(tmp_path):
    """Back-pressure holds queries back; a client that sends them all and half-closes
    still gets every answer, in order, then the close."""
    zones = write_zones(tmp_path / "zones", {"flood.test": FLOOD_ZONE}, {})
    with ServerThread(zones, ADDR, tcp_idle=30) as s:
        with socket.create_connection((s.addr, s.port), timeout=10) as c:
            c.sendall(b"".join(framed(query("big.flood.test", "TXT", qid=i)) for i in range(300)))
            c.shutdown(socket.SHUT_WR)
            time.sleep(0.5)  # the server blocks on its buffer before we read
            replies = read_messages(c, 300)
            assert [m.id for m in replies] == list(range(300))
            assert c.recv(10) == b""


def test_queries_then_eof_with_answers_never_read_free_the_connection(tmp_path):
    zones = write_zones(tmp_path / "zones", {"flood.test": FLOOD_ZONE}, {})
    with ServerThread(zones, ADDR, tcp_idle=1) as s:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect((s.addr, s.port))
        with c:
            c.sendall(framed(query("big.flood.test", "TXT")) * 1000)
            c.shutdown(socket.SHUT_WR)
            wait_for(lambda: status_of(s)["tcp_unsent"] > 0, timeout=3)
            # never read: after tcp_idle the answers are dropped and the slot is free
            wait_for(lambda: status_of(s)["tcp_connections"] == 0, timeout=5)


def test_one_address_cannot_take_every_tcp_slot(tmp_path):
    with ServerThread(write_zones(tmp_path / "zones"), ADDR, tcp_max=64, tcp_per_client=3) as s:
        def connect(source):
            c = socket.create_connection((s.addr, s.port), timeout=3, source_address=(source, 0))
            c.sendall(framed(query("www.example.com")))
            try:
                return c, read_messages(c, 1)
            except ConnectionResetError:
                return c, []

        held = [connect("127.83.2.50") for _ in range(3)]
        try:
            assert all(answers for _, answers in held)
            extra, answers = connect("127.83.2.50")  # the fourth from that address
            extra.close()
            assert answers == [] and status_of(s)["tcp_refused_per_client"] == 1
            other, answers = connect("127.83.2.51")  # another address is not affected
            other.close()
            assert answers
            held.pop()[0].close()  # a slot of its own freed: the address gets it back
            wait_for(lambda: status_of(s)["tcp_connections"] == 2, timeout=3)
            again, answers = connect("127.83.2.50")
            again.close()
            assert answers
        finally:
            for c, _ in held:
                c.close()


def test_idle_timeout_shortens_when_more_than_half_the_slots_are_taken(tmp_path):
    """tcp_idle 30 s, tcp_max 8: four idle connections stay; a fifth makes the server
    busy, and then every idle connection goes within the busy timeout (2 s)."""
    with ServerThread(write_zones(tmp_path / "zones"), ADDR, tcp_idle=30, tcp_max=8) as s:
        conns = [socket.create_connection((s.addr, s.port), timeout=10) for _ in range(4)]
        try:
            time.sleep(2.5)
            assert status_of(s)["tcp_connections"] == 4  # not busy: 30 s apply
            conns.append(socket.create_connection((s.addr, s.port), timeout=10))
            wait_for(lambda: status_of(s)["tcp_connections"] == 0, timeout=6)
            for c in conns:
                assert c.recv(10) == b""
        finally:
            for c in conns:
                c.close()


def test_bytes_dribbled_without_a_whole_query_do_not_keep_a_connection(server):
    """A slow-loris client sends a byte of a query every 0.3 s: only answered queries
    count as activity, so tcp_idle (1 s) still closes it."""
    message = framed(query("www.example.com"))
    with socket.create_connection((server.addr, server.port), timeout=5) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(0.3)
        start = time.monotonic()
        closed = False
        for byte in message[:-1]:
            try:
                c.sendall(bytes([byte]))
                closed = c.recv(10) == b""
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            if closed:
                break
        assert closed and time.monotonic() - start < 4


def test_tcp_per_client_setting_is_checked():
    from clusterkit.definition.tables import section_parser
    from clusterkit_dns.settings import DNS, parse_settings

    parse_settings = section_parser(parse_settings, DNS)  # as the definition reads [dns]
    problems = []
    assert parse_settings({"tcp_per_client": 4}, lambda *p: problems.append(p)).tcp_per_client == 4
    assert parse_settings({}, lambda *p: problems.append(p)).tcp_per_client == 16
    assert problems == []
    for bad in (0, True, 2.5, "8"):
        problems.clear()
        assert parse_settings({"tcp_per_client": bad},
                              lambda *p: problems.append(p)).tcp_per_client == 16
        ((key, message),) = problems
        assert key == "tcp_per_client" and "1..65535" in message and repr(bad) in message
