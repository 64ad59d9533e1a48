"""The I/O-free FTP control channel: framing, pairing, rewriting, refusing, TLS switch."""

from __future__ import annotations

import random

import pytest

from clusterkit_ftp.control import (MAX_LINE, FtpControl, LineSplitter, PassiveQuotaExceeded,
                                    command_verb, format_eprt, format_port, parse_eprt_arg,
                                    parse_epsv, parse_pasv, parse_port_arg, rewrite_epsv,
                                    rewrite_pasv, same_ip)

CLIENT = "198.51.100.7"


class Ports:
    """Records what the channel asked for; answers with fixed manager addresses."""

    def __init__(self, fail: bool = False, quota: int = 100):
        self.fail = fail
        self.quota = quota  # passive listeners this client may still open
        self.passive_calls: list[int] = []
        self.active_calls: list[tuple[str, int]] = []
        self.refused = 0
        self.tls = 0
        self.aborts = 0

    def passive_allowed(self):
        return len(self.passive_calls) < self.quota

    def passive(self, node_port):
        if self.fail:
            raise OSError("range exhausted")
        if not self.passive_allowed():
            raise PassiveQuotaExceeded("over the quota")
        self.passive_calls.append(node_port)
        return "203.0.113.10", 50000 + len(self.passive_calls)

    def active(self, ip, port):
        if self.fail:
            raise OSError("cannot listen")
        self.active_calls.append((ip, port))
        return "10.0.0.1", 40000 + len(self.active_calls)

    def active_refused(self):
        self.refused += 1

    def tls_started(self):
        self.tls += 1

    def aborted(self):
        self.aborts += 1


def channel(**kw) -> tuple[FtpControl, Ports]:
    ports = Ports(**kw)
    return FtpControl(CLIENT, ports), ports


def greeted(**kw) -> tuple[FtpControl, Ports]:
    ctl, ports = channel(**kw)
    assert ctl.from_server(b"220 ready\r\n") == b"220 ready\r\n"
    return ctl, ports


# ------------------------------------------------------------------ line framing


def test_splitter_keeps_partial_lines_until_their_end():
    s = LineSplitter()
    assert s.feed(b"US") == []
    assert s.feed(b"ER a\r\nPA") == [(b"USER a\r\n", True)]
    assert s.feed(b"SS b\r\n\r\nNOOP\n") == [(b"PASS b\r\n", True), (b"\r\n", True),
                                            (b"NOOP\n", True)]
    assert s.partial == b""


def test_splitter_passes_overlong_lines_unparsed_and_bounded():
    s = LineSplitter(limit=16)
    out = s.feed(b"x" * 40)
    assert out == [(b"x" * 40, False)] and s.partial == b""
    out = s.feed(b"yy\r\nPASV\r\n")
    assert out == [(b"yy\r\n", False), (b"PASV\r\n", True)]


def test_any_chunking_gives_the_same_bytes():
    script = (b"220-Welcome\r\n220-  227 not a reply\r\n220 ready\r\n"
              b"331 pass\r\n230 ok\r\n227 Entering Passive Mode (10,0,0,11,195,80).\r\n"
              b"150 here\r\n226 done\r\n229 Entering Extended Passive Mode (|||40000|)\r\n")
    whole, _ = channel()
    expected = whole.from_server(script)
    rng = random.Random(5)
    for _ in range(30):
        ctl, _ = channel()
        out, i = [], 0
        while i < len(script):
            n = rng.randint(1, 9)
            out.append(ctl.from_server(script[i:i + n]))
            i += n
        assert b"".join(out) == expected


# ------------------------------------------------------------- address codecs


def test_pasv_parse_and_rewrite_keep_the_rest_of_the_line():
    line = b"227 Entering Passive Mode (10,0,0,11,195,80).\r\n"
    assert parse_pasv(line) == ("10.0.0.11", 195 * 256 + 80)
    assert rewrite_pasv(line, "203.0.113.10", 50001) == \
        b"227 Entering Passive Mode (203,0,113,10,195,81).\r\n"
    bare = b"227 =10,0,0,11,4,1\n"  # no parentheses (RFC 1123 says find the numbers)
    assert parse_pasv(bare) == ("10.0.0.11", 1025)
    assert rewrite_pasv(bare, "1.2.3.4", 258) == b"227 =1,2,3,4,1,2\n"
    assert parse_pasv(b"227 no address\r\n") is None
    assert parse_pasv(b"227 (300,0,0,1,1,1)\r\n") is None


def test_epsv_parse_and_rewrite():
    line = b"229 Entering Extended Passive Mode (|||40000|)\r\n"
    assert parse_epsv(line) == 40000
    assert rewrite_epsv(line, 50123) == b"229 Entering Extended Passive Mode (|||50123|)\r\n"
    assert parse_epsv(b"229 (!!!2121!)\r\n") == 2121
    assert parse_epsv(b"229 (|||0|)\r\n") is None
    assert parse_epsv(b"229 (||40000|)\r\n") is None


def test_port_and_eprt_arguments():
    assert parse_port_arg(b"198,51,100,7,4,1") == ("198.51.100.7", 1025)
    assert parse_port_arg(b"198,51,100,7,4") is None
    assert parse_port_arg(b"198,51,100,700,4,1") is None
    assert parse_port_arg(b"a,b,c,d,e,f") is None
    assert format_port("10.0.0.1", 1025) == b"10,0,0,1,4,1"
    assert parse_eprt_arg(b"|1|198.51.100.7|6275|") == ("198.51.100.7", 6275)
    assert parse_eprt_arg(b"|2|2001:db8::7|6275|") == ("2001:db8::7", 6275)
    assert parse_eprt_arg(b"!1!198.51.100.7!6275!") == ("198.51.100.7", 6275)
    for bad in (b"|2|198.51.100.7|6275|", b"|1|2001:db8::7|1|", b"|3|1.2.3.4|5|",
                b"|1|1.2.3.4|0|", b"|1|1.2.3.4|x|", b"|1|nohost|21|", b"|1|1.2.3.4|21"):
        assert parse_eprt_arg(bad) is None, bad
    assert parse_eprt_arg(b"|2|::ffff:198.51.100.7|6275|") == ("::ffff:c633:6407", 6275)
    assert format_eprt("10.0.0.1", 40001) == b"|1|10.0.0.1|40001|"
    assert format_eprt("fd00::1", 40001) == b"|2|fd00::1|40001|"
    assert same_ip("::ffff:198.51.100.7", "198.51.100.7") and not same_ip("1.2.3.4", "1.2.3.5")


# ------------------------------------------------------------ the whole channel


def test_everything_else_passes_byte_for_byte():
    ctl, ports = greeted()
    commands = (b"USER anonymous\r\nPASS x@y\r\nSYST\r\nFEAT\r\nTYPE I\r\nCWD /a b\r\n"
                b"site chmod 644 f\nNOOP\r\n\xff\xf4\xff\xf2ABOR\r\nRETR \xc3\xa9t\xc3\xa9.txt\r\n")
    assert ctl.from_client(commands) == (commands, b"")
    replies = (b"331 Username ok\r\n230 Login successful.\r\n215 UNIX Type: L8\r\n"
               b"211-Features:\r\n EPRT\r\n EPSV\r\n MDTM\r\n211 End\r\n200 ok\r\n"
               b"250 ok\r\n200 ok\n200 ok\r\n225 ABOR ok\r\n550 not found\r\n")
    assert ctl.from_server(replies) == replies
    assert ports.passive_calls == ports.active_calls == [] and not ctl.tls


def test_pasv_reply_is_rewritten_to_the_manager():
    ctl, ports = greeted()
    assert ctl.from_client(b"PASV\r\n") == (b"PASV\r\n", b"")
    out = ctl.from_server(b"227 Entering Passive Mode (10,0,0,11,195,80).\r\n")
    assert out == b"227 Entering Passive Mode (203,0,113,10,195,81).\r\n"
    assert ports.passive_calls == [195 * 256 + 80]


def test_epsv_reply_is_rewritten_port_only():
    ctl, ports = greeted()
    ctl.from_client(b"EPSV\r\n")
    out = ctl.from_server(b"229 Entering extended passive mode (|||40000|).\r\n")
    assert out == b"229 Entering extended passive mode (|||50001|).\r\n"
    assert ports.passive_calls == [40000]


def test_no_passive_port_gives_425_and_keeps_the_line_ending():
    ctl, _ = greeted(fail=True)
    ctl.from_client(b"PASV\n")
    assert ctl.from_server(b"227 Entering Passive Mode (10,0,0,11,1,1)\n").startswith(b"425 ")
    ctl.from_client(b"EPSV\r\n")
    out = ctl.from_server(b"229 (|||40000|)\r\n")
    assert out.startswith(b"425 ") and out.endswith(b"\r\n")


def test_227_inside_a_multiline_reply_is_not_touched():
    ctl, ports = channel()
    text = (b"220-Hello\r\n227 Entering Passive Mode (1,2,3,4,5,6) is not the end\r\n"
            b"220-more\r\n220 ready\r\n")
    assert ctl.from_server(text) == text
    assert ports.passive_calls == []


def test_unparseable_227_passes_through():
    ctl, ports = greeted()
    ctl.from_client(b"PASV\r\n")
    assert ctl.from_server(b"227 Passive mode, ask later\r\n") == b"227 Passive mode, ask later\r\n"
    assert ports.passive_calls == []


def test_port_is_rewritten_to_a_manager_listener():
    ctl, ports = greeted()
    to_server, to_client = ctl.from_client(b"PORT 198,51,100,7,195,80\r\n")
    assert to_server == b"PORT 10,0,0,1,156,65\r\n" and to_client == b""
    assert ports.active_calls == [(CLIENT, 195 * 256 + 80)]
    assert ctl.from_server(b"200 PORT command successful.\r\n") == b"200 PORT command successful.\r\n"
    assert ports.refused == 0


def test_port_refused_by_the_node_releases_the_listener():
    ctl, ports = greeted()
    ctl.from_client(b"port 198,51,100,7,195,80\n")
    ctl.from_server(b"500 Active mode disabled\n")
    assert ports.refused == 1


def test_eprt_is_rewritten():
    ctl, ports = greeted()
    to_server, _ = ctl.from_client(b"EPRT |1|198.51.100.7|50000|\r\n")
    assert to_server == b"EPRT |1|10.0.0.1|40001|\r\n"
    assert ports.active_calls == [(CLIENT, 50000)]


def test_port_for_someone_else_or_a_privileged_port_is_refused_here():
    ctl, ports = greeted()
    for command in (b"PORT 192,0,2,1,195,80\r\n", b"PORT 198,51,100,7,0,25\r\n",
                    b"EPRT |1|192.0.2.1|6000|\r\n"):
        to_server, to_client = ctl.from_client(command)
        assert to_server == b"" and to_client.startswith(b"501 ") and to_client.endswith(b"\r\n")
    assert ports.active_calls == []
    # the refused commands are not awaiting a reply: the next reply is NOOP's
    ctl.from_client(b"AUTH TLS\r\n")
    ctl.from_server(b"234 go\r\n")
    assert ctl.tls


# Every form a lenient server (pyftpdlib's int(), a C strtol, a server that drops
# Telnet commands or skips blanks) could read as an address, and the balancer cannot
# parse exactly. None of them may reach the node: it would connect where they say.
LENIENT_PORTS = [
    b"PORT 127,0,0,+99,156,64", b"PORT 127,0,0,9_9,156,64", b"PORT 127,0,0,-0,156,64",
    "PORT １２７,0,0,1,156,64".encode(), b"PORT  198,51,100,7,156,64",
    b"PORT 198,51,100,7,156,64 ", b" PORT 198,51,100,7,156,64", b"PORT\t198,51,100,7,156,64",
    b"PORT 198, 51,100,7,156,64", b"PORT 198,51,100,7,156,64,1", b"PORT 198,51,100,7,156",
    b"PORT 198,51,100,256,156,64", b"PORT 198,51,100,7,156,300", b"PORT 0198,51,100,7,156,64",
    b"PORT 198.51.100.7,156,64", b"PORT", b"PORT ", b"PORT 0x7f,0,0,1,156,64",
    b"\xff\xf1PORT 127,0,0,1,0,21", b"P\xff\xf1ORT 127,0,0,1,0,21", b"\x00PORT 1,2,3,4,5,6",
    b"EPRT |1|127.0.0.1|+99|", b"EPRT |1|127.0.0.1|9_9|", b"EPRT |1| 198.51.100.7|40000|",
    b"EPRT |1|198.51.100.7 |40000|", b"EPRT  |1|198.51.100.7|40000|",
    b"EPRT |1|198.51.100.7|40000| ", b"EPRT |1|198.051.100.7|40000|",
    b"EPRT |1|198.51.100.7|70000|", b"EPRT |1|198.51.100.7|40000", b"EPRT |1|198.51.100.7|",
    b"EPRT |1|198.51.100.7|40000|1|", "EPRT |1|198.51.100.7|４００００|".encode(),
    b"EPRT 1131198.51.100.71400001", b"EPRT .1.198.51.100.7.40000.",
    b"EPRT |2|fe80::1%eth0|40000|", b"EPRT |2|198.51.100.7|40000|",
    b"EPRT |1|::ffff:198.51.100.7|40000|", b"EPRT \xff\xf1|1|127.0.0.1|21|",
]


@pytest.mark.parametrize("command", LENIENT_PORTS)
def test_a_port_or_eprt_not_exactly_formed_is_refused_here_and_never_forwarded(command):
    ctl, ports = greeted()
    to_server, to_client = ctl.from_client(command + b"\r\n")
    assert to_server == b"" and to_client.startswith(b"501 ") and to_client.endswith(b"\r\n")
    assert ports.active_calls == []
    # nothing awaits a reply from the node: the next one is AUTH's
    ctl.from_client(b"AUTH TLS\r\n")
    ctl.from_server(b"234 go\r\n")
    assert ctl.tls


def test_eprt_of_an_unknown_network_protocol_gets_522_here():
    ctl, ports = greeted()
    assert ctl.from_client(b"EPRT |3|198.51.100.7|40000|\r\n") == \
        (b"", b"522 Network protocol not supported, use (1,2).\r\n")
    assert ports.active_calls == []


def test_verbs_are_found_as_a_lenient_server_finds_them():
    assert command_verb(b"port 1,2") == b"PORT"
    assert command_verb(b"  \tEpRt |1|") == b"EPRT"
    assert command_verb(b"\xff\xf4\xff\xf2ABOR") == b"ABOR"
    assert command_verb(b"P\xff\xfb\x01ORT x") == b"PORT"
    assert command_verb(b"\xff\xffPORT") == b""  # IAC IAC is a data byte 0xff
    assert command_verb(b"1PORT") == b""


def test_a_bare_cr_inside_a_client_line_is_refused():
    ctl, ports = greeted()
    assert ctl.from_client(b"NOOP\rPORT 127,0,0,1,0,21\r\n") == \
        (b"", b"500 Command line with a bare CR refused.\r\n")
    assert ports.active_calls == []


def test_active_listener_failure_gives_425():
    ctl, _ = greeted(fail=True)
    to_server, to_client = ctl.from_client(b"PORT 198,51,100,7,195,80\r\n")
    assert to_server == b"" and to_client.startswith(b"425 ")


def test_lprt_and_lpsv_are_refused_here():
    ctl, _ = greeted()
    for verb in (b"LPSV", b"LPRT 4,4,1,2,3,4,2,1,1"):
        to_server, to_client = ctl.from_client(verb + b"\r\n")
        assert to_server == b"" and to_client.startswith(b"502 ")


def test_auth_tls_turns_the_channel_opaque():
    ctl, ports = greeted()
    ctl.from_client(b"AUTH TLS\r\n")
    assert ctl.from_server(b"234 AUTH TLS successful\r\n") == b"234 AUTH TLS successful\r\n"
    assert ctl.tls and ports.tls == 1
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03PORT 1,2,3,4,5,6\r\n"
    assert ctl.from_client(hello) == (hello, b"")
    record = b"\x16\x03\x03\x00\x7a227 (1,2,3,4,5,6)\r\n\x02"
    assert ctl.from_server(record) == record
    assert ports.passive_calls == ports.active_calls == []


def test_bytes_after_234_in_the_same_chunk_pass_untouched():
    ctl, _ = greeted()
    ctl.from_client(b"AUTH SSL\r\n")
    chunk = b"234 ok\r\n\x16\x03\x03 227 (1,2,3,4,5,6)\r\n\x00 partial"
    assert ctl.from_server(chunk) == chunk


def test_refused_auth_keeps_parsing():
    ctl, ports = greeted()
    ctl.from_client(b"AUTH TLS\r\n")
    ctl.from_server(b"502 no TLS here\r\n")
    assert not ctl.tls
    ctl.from_client(b"PASV\r\n")
    assert b"203,0,113,10" in ctl.from_server(b"227 (10,0,0,11,1,1)\r\n")


def test_234_to_something_else_than_auth_does_not_switch():
    ctl, _ = channel()
    ctl.from_client(b"NOOP\r\n")
    ctl.from_server(b"220 ready\r\n")  # the greeting answers nothing we sent
    assert ctl.from_server(b"234 odd\r\n") == b"234 odd\r\n" and not ctl.tls


def test_pipelined_commands_pair_with_their_replies():
    ctl, ports = channel()
    ctl.from_client(b"USER a\r\nPASS b\r\nPORT 198,51,100,7,4,1\r\nAUTH TLS\r\n")
    out = ctl.from_server(b"220 hi\r\n331 pass\r\n230 in\r\n150-wait\r\n150 still\r\n"
                          b"500 no active\r\n234 tls\r\n")
    assert out.endswith(b"234 tls\r\n")
    assert ports.refused == 1 and ctl.tls


@pytest.mark.parametrize("step", [1000, 1 << 20])
def test_an_overlong_command_is_refused_here_and_pairing_holds(step):
    """Not forwarded: ``PORT 127,0,0,1,0,21`` and 8 KiB of blanks is a PORT to int()."""
    ctl, _ = greeted()
    big = b"PORT 127,0,0,1,0,21" + b" " * (MAX_LINE + 10) + b"\r\n"
    sent, answered = b"", b""
    for i in range(0, len(big), step):
        to_server, to_client = ctl.from_client(big[i:i + step])
        sent, answered = sent + to_server, answered + to_client
    assert sent == b"" and answered == b"500 Command line too long.\r\n"
    ctl.from_client(b"AUTH TLS\r\n")
    ctl.from_server(b"234 go\r\n")
    assert ctl.tls


def test_pasv_and_epsv_over_the_address_quota_get_425_here():
    ctl, ports = greeted(quota=1)
    ctl.from_client(b"PASV\r\n")
    assert b"203,0,113,10" in ctl.from_server(b"227 (10,0,0,11,1,1)\r\n")
    for command in (b"PASV\r\n", b"epsv\r\n", b"EPSV 1\r\n"):
        to_server, to_client = ctl.from_client(command)
        assert to_server == b"" and to_client.startswith(b"425 ")
    assert ctl.from_client(b"EPSV ALL\r\n") == (b"EPSV ALL\r\n", b"")  # asks for no port
    ctl.from_server(b"200 ok\r\n")


def test_a_227_over_the_quota_is_answered_425():
    """Two sessions of one address passed the command's check at once: the reply decides."""
    ctl, ports = greeted()
    ctl.from_client(b"PASV\r\n")
    ports.quota = 0
    assert ctl.from_server(b"227 (10,0,0,11,1,1)\r\n").startswith(b"425 Too many")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_never_raise_and_come_back_whole(seed):
    rng = random.Random(seed)
    ctl, _ = channel()
    sent = bytes(rng.randrange(256) for _ in range(20000)).replace(b"227", b"xxx") \
        .replace(b"229", b"xxx").replace(b"234", b"xxx")
    out = b""
    for i in range(0, len(sent), 777):
        out += ctl.from_server(sent[i:i + 777])
    out += ctl._server.drain()
    assert out == sent
