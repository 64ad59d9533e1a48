"""FTP attacks through the real proxy to a pyftpdlib node, with raw sockets and ftplib.

* FTP bounce: a PORT/EPRT the balancer cannot parse exactly used to be
  forwarded, and pyftpdlib's ``int()`` read it (``+99``, ``9_9``, full-width
  digits, blanks...) and connected where the client said — even to the
  manager's own address, which is the node's control peer. Now the balancer
  answers them itself and the node never sees them.
* The passive range: one address held a port per control connection until
  the range was gone. Now ``passive_per_client`` bounds it.

What the node receives is read from pyftpdlib's documented DEBUG log
(``<- COMMAND`` per line).
"""

from __future__ import annotations

import ftplib
import io
import logging
import socket

import pytest

from mailftp_support import (Daemon, FtpNode, cluster_file, common_port, free_port,
                             listening_ports, wait_for)

NET = "127.85.7"
VIP = f"{NET}.100"
MANAGER = f"{NET}.1"
CLIENT = f"{NET}.50"
OTHER_CLIENT = f"{NET}.51"
NODE = f"{NET}.11"
PASSIVE = range(52400, 52420)
PER_CLIENT = 2


class Heard(logging.Handler):
    """The command lines the node received, from pyftpdlib's ``<- LINE`` debug log."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if " <- " in message:
            self.lines.append(message.split(" <- ", 1)[1])

    def verbs(self) -> list[str]:
        return [line.split(" ")[0].upper() for line in self.lines]


@pytest.fixture(scope="module")
def ftp(tmp_path_factory):
    logger = logging.getLogger("pyftpdlib")
    heard, level = Heard(), logger.level
    logger.addHandler(heard)
    logger.setLevel(logging.DEBUG)  # read by each session as it starts
    base = tmp_path_factory.mktemp("ftpbounce")
    port = common_port([NODE])
    node = FtpNode(NODE, port, base / "node1")
    try:
        public = free_port(VIP)
        policy = (f'[[policy]]\nvip = "{VIP}"\nport = {public}\nservice = "ftp"\n'
                  f'backend_port = {port}\nmembers = {{node1 = 1}}\n'
                  f'options = {{passive_ports = "{PASSIVE.start}-{PASSIVE.stop - 1}", '
                  f'data_timeout = 5, passive_per_client = {PER_CLIENT}}}\n')
        daemon = Daemon(cluster_file(base, NET, 1, policy))
    except BaseException:
        node.stop()
        raise
    yield public, node, daemon, heard
    daemon.stop()
    node.stop()
    logger.removeHandler(heard)
    logger.setLevel(level)


class Raw:
    """A logged-in control connection that sends exact bytes and reads one reply."""

    def __init__(self, port: int, source: str = CLIENT):
        self.sock = socket.create_connection((VIP, port), timeout=10, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")
        assert self.command(b"USER u\r\n").startswith(b"331")
        assert self.command(b"PASS p\r\n").startswith(b"230")

    def reply(self) -> bytes:
        lines = [self.file.readline()]
        code = lines[0][:3]
        if lines[0][3:4] == b"-":
            while not (lines[-1][:3] == code and lines[-1][3:4] == b" "):
                lines.append(self.file.readline())
        return b"".join(lines)

    def command(self, raw: bytes) -> bytes:
        self.sock.sendall(raw)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def addr(ip: str, port: int) -> bytes:
    return (ip.replace(".", ",") + f",{port >> 8},{port & 255}").encode()


# What an attacker sends, each time aimed at the manager's own address or a third
# host: every form a lenient parser reads as a PORT/EPRT and ours does not.
ATTACKS = [
    b"PORT 127,0,0,+99,156,64", b"PORT 127,0,0,9_9,156,64",
    "PORT １２７,0,0,1,156,64".encode(), b"PORT " + addr(MANAGER, 8080) + b" ",
    b"PORT  " + addr(MANAGER, 8080), b" PORT " + addr(MANAGER, 8080),
    b"PORT\t" + addr(MANAGER, 8080), b"PORT 127,85,7,1,31,256", b"PORT 127,85,7,1,31",
    b"PORT 127,85,7,1,31,144,0", b"PORT 127,85,7,1,0x1f,144", b"P\xff\xf1ORT " + addr(MANAGER, 8080),
    b"EPRT |1|127.85.7.1|+8080|", b"EPRT |1|127.85.7.1|80_80|", b"EPRT |1| 127.85.7.1|8080|",
    b"EPRT |1|127.085.7.1|8080|", b"EPRT |1|127.85.7.1|8080", b"EPRT |1|127.85.7.1|99999|",
    "EPRT |1|127.85.7.1|８０８０|".encode(), b"EPRT 1111127.85.7.1180801",
]


@pytest.mark.parametrize("command", ATTACKS, ids=lambda c: c.decode("latin-1"))
def test_a_port_the_balancer_cannot_parse_gets_501_and_never_reaches_the_node(ftp, command):
    public, _, daemon, heard = ftp
    client = Raw(public)
    try:
        heard.lines.clear()
        reply = client.command(command + b"\r\n")
        assert reply.startswith(b"501 Syntax error"), reply
        assert client.command(b"NOOP\r\n").startswith(b"200")  # the session goes on
    finally:
        client.close()
    wait_for(lambda: "NOOP" in heard.verbs())  # what the node heard is recorded...
    assert not {"PORT", "EPRT"} & set(heard.verbs()), heard.lines  # ...and had no PORT
    assert daemon.sync(lambda: len(daemon.engine.retired)) == 0  # and nothing listens for it


@pytest.mark.parametrize("command, code", [
    (b"PORT " + addr(MANAGER, 8080), b"501 Rejected"),     # the node's own control peer
    (b"PORT " + addr("192.0.2.1", 8080), b"501 Rejected"),  # a third host
    (b"EPRT |1|127.85.7.1|8080|", b"501 Rejected"),
    (b"PORT " + addr(CLIENT, 25), b"501 Rejected"),         # a privileged port of the client
    (b"EPRT |3|127.85.7.1|8080|", b"522 "),
    (b"NOOP\rPORT " + addr(MANAGER, 8080), b"500 Command line with a bare CR"),  # some
    # servers end a line at a bare CR; int() strips blanks, so an over-long line is one too
    (b"PORT " + addr(MANAGER, 8080) + b" " * 9000, b"500 Command line too long"),
], ids=["manager", "third-host", "eprt-manager", "privileged", "eprt-af3", "bare-cr", "overlong"])
def test_a_well_formed_bounce_is_refused_by_the_balancer(ftp, command, code):
    public, _, _, heard = ftp
    client = Raw(public)
    try:
        heard.lines.clear()
        assert client.command(command + b"\r\n").startswith(code)
        assert client.command(b"NOOP\r\n").startswith(b"200")
    finally:
        client.close()
    wait_for(lambda: "NOOP" in heard.verbs())
    assert not {"PORT", "EPRT"} & set(heard.verbs()), heard.lines


@pytest.mark.parametrize("extended", [False, True])
def test_a_correct_port_still_works_end_to_end(ftp, extended):
    public, node, daemon, heard = ftp
    data = bytes(range(256)) * 400
    (node.root / "active.bin").write_bytes(data)
    heard.lines.clear()
    with ftplib.FTP(timeout=30, source_address=(CLIENT, 0)) as client:
        client.connect(VIP, public)
        client.login("u", "p")
        client.set_pasv(False)
        if extended:  # ftplib sends EPRT only for IPv6; ask for it by hand
            listener = socket.create_server((CLIENT, 0), backlog=1)
            client.sendeprt(CLIENT, listener.getsockname()[1])
            client.voidcmd("TYPE I")
            client.sendcmd("RETR active.bin")
            conn, _ = listener.accept()
            got = bytearray()
            while chunk := conn.recv(65536):
                got += chunk
            conn.close()
            listener.close()
            client.voidresp()
        else:
            back = io.BytesIO()
            client.retrbinary("RETR active.bin", back.write)
            got = back.getvalue()
    assert bytes(got) == data
    # the node was told to connect to the manager (its control peer), never to the client
    sent = [line for line in heard.lines if line.split(" ")[0].upper() in ("PORT", "EPRT")]
    assert len(sent) == 1 and CLIENT not in sent[0] and CLIENT.replace(".", ",") not in sent[0]
    wait_for(lambda: daemon.sync(lambda: len(daemon.engine.retired)) == 0, timeout=5)


def test_one_address_cannot_take_the_passive_range(ftp):
    public, _, daemon, heard = ftp
    sessions = [Raw(public) for _ in range(PER_CLIENT + 1)]
    other = Raw(public, source=OTHER_CLIENT)
    try:
        heard.lines.clear()
        for session in sessions[:PER_CLIENT]:
            assert session.command(b"PASV\r\n").startswith(b"227 ")
        assert len(listening_ports(VIP, PASSIVE)) == PER_CLIENT
        # over the address's quota: 425 from the balancer, the node is not even asked
        for verb in (b"PASV", b"EPSV"):
            reply = sessions[-1].command(verb + b"\r\n")
            assert reply.startswith(b"425 Too many passive"), reply
        assert heard.verbs().count("PASV") == PER_CLIENT and "EPSV" not in heard.verbs()
        # a session that asks again replaces its own port: still within the quota
        assert sessions[0].command(b"EPSV\r\n").startswith(b"229 ")
        assert len(listening_ports(VIP, PASSIVE)) == PER_CLIENT
        # another address is not affected
        assert other.command(b"PASV\r\n").startswith(b"227 ")
        # a port used (its data connection came) or freed gives the room back
        assert sessions[1].command(b"ABOR\r\n")[:1] == b"2"
        assert sessions[-1].command(b"PASV\r\n").startswith(b"227 ")
    finally:
        for session in (*sessions, other):
            session.close()
    wait_for(lambda: listening_ports(VIP, PASSIVE) == [], timeout=5)
    wait_for(lambda: daemon.sync(lambda: len(daemon.engine.retired)) == 0, timeout=5)
