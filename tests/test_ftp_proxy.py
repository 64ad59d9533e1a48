"""FTP through the real proxy to pyftpdlib nodes, with ftplib: PASV, EPSV, PORT, EPRT.

Every upload must land on the node that holds the control connection (its
banner names it) and come back byte for byte; afterwards no port of the
passive range is still listening.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import socket
import threading
import time

import pytest

from mailftp_support import (Daemon, FtpNode, cluster_file, common_port, free_port,
                             listening_ports, wait_for)

NET = "127.85.3"
VIP = f"{NET}.100"
CLIENT = f"{NET}.50"
NODES = {"node1": f"{NET}.11", "node2": f"{NET}.12"}
PASSIVE = range(52000, 52100)
DATA_TIMEOUT = 2
TINY = 52300


class Client(ftplib.FTP):
    """ftplib from this area's client address, in one of the four data modes.

    ``mode``: ``pasv`` and ``epsv`` (passive), ``port`` and ``eprt`` (active).
    The PASV address is trusted, so the rewritten address is what is used;
    the active-mode listener binds the client address, not 0.0.0.0.
    """

    trust_server_pasv_ipv4_address = True

    def __init__(self, port: int, mode: str = "pasv"):
        super().__init__(timeout=30, source_address=(CLIENT, 0))
        self.mode = mode
        self.connect(VIP, port)
        self.login("u", "p")
        self.set_pasv(mode in ("pasv", "epsv"))

    @property
    def node(self) -> str:
        return next(name for name, ip in NODES.items() if f"node {ip} ready" in self.welcome)

    def makepasv(self):
        if self.mode == "epsv":
            return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return super().makepasv()

    def makeport(self):
        sock = socket.create_server((CLIENT, 0), backlog=1)
        host, port = sock.getsockname()[:2]
        if self.mode == "eprt":
            self.sendeprt(host, port)
        else:
            self.sendport(host, port)
        sock.settimeout(self.timeout)
        return sock


@pytest.fixture(scope="module")
def ftp(tmp_path_factory):
    base = tmp_path_factory.mktemp("ftp")
    port = common_port(list(NODES.values()))
    nodes = {}
    try:
        for name, ip in NODES.items():
            nodes[name] = FtpNode(ip, port, base / name)
        public, slow, tiny = free_port(VIP), free_port(VIP), free_port(VIP)
        policy = (f'[[policy]]\nvip = "{VIP}"\nport = {public}\nservice = "ftp"\n'
                  f'backend_port = {port}\nscheduler = "rr"\npersistence = 0\n'
                  f'members = {{node1 = 1, node2 = 1}}\n'
                  f'options = {{passive_ports = "{PASSIVE.start}-{PASSIVE.stop - 1}", '
                  # 50 parallel sessions from one address, as many users behind a NAT
                  f'data_timeout = {DATA_TIMEOUT}, passive_per_client = 50}}\n\n'
                  # idle connections close after a second here
                  f'[[policy]]\nvip = "{VIP}"\nport = {slow}\nservice = "ftp"\n'
                  f'backend_port = {port}\nidle_timeout = 1\nmembers = {{node1 = 1}}\n'
                  f'options = {{passive_ports = "52200-52209", ftps_passive_ports = '
                  f'"52210-52219"}}\n\n'
                  # a passive range of one port
                  f'[[policy]]\nvip = "{VIP}"\nport = {tiny}\nservice = "ftp"\n'
                  f'backend_port = {port}\nmembers = {{node1 = 1}}\n'
                  f'options = {{passive_ports = "{TINY}-{TINY}", ftps_passive_ports = '
                  f'"52310-52319"}}\n')
        daemon = Daemon(cluster_file(base, NET, 2, policy))
        daemon.slow_port, daemon.tiny_port = slow, tiny
    except BaseException:
        for node in nodes.values():
            node.stop()
        raise
    yield public, nodes, daemon
    daemon.stop()
    for node in nodes.values():
        node.stop()


def released(daemon) -> bool:
    """No data listener or data connection left, and no port of the range listening."""
    leftovers = daemon.sync(lambda: len(daemon.engine.retired))
    return leftovers == 0 and listening_ports(VIP, PASSIVE) == []


@pytest.mark.parametrize("mode", ["pasv", "epsv", "port", "eprt"])
def test_stor_list_retr_10mb_lands_on_the_control_node(ftp, mode, tmp_path):
    public, nodes, daemon = ftp
    data = os.urandom(10 * 1024 * 1024)
    name = f"big-{mode}.bin"
    with Client(public, mode) as client:
        node = client.node
        client.storbinary(f"STOR {name}", io.BytesIO(data))
        listing = []
        client.retrlines("LIST", listing.append)
        assert any(line.endswith(" " + name) and f" {len(data)} " in line for line in listing)
        back = io.BytesIO()
        client.retrbinary(f"RETR {name}", back.write)
    other = next(n for n in nodes if n != node)
    assert (nodes[node].root / name).read_bytes() == data
    assert not (nodes[other].root / name).exists()
    assert hashlib.sha256(back.getvalue()).digest() == hashlib.sha256(data).digest()
    wait_for(lambda: released(daemon), timeout=5)


def test_pasv_reply_names_the_vip_and_a_port_of_the_range(ftp):
    public, _, daemon = ftp
    with Client(public) as client:
        reply = client.sendcmd("PASV")
        host, port = ftplib.parse227(reply)
        assert reply.startswith("227 ") and host == VIP and port in PASSIVE
        assert listening_ports(VIP, PASSIVE) == [port]
        # nobody connects: the port returns to the range after data_timeout
        wait_for(lambda: port not in listening_ports(VIP, PASSIVE), timeout=DATA_TIMEOUT + 3)


def test_a_new_pasv_replaces_the_unused_one_and_quit_releases_it(ftp):
    public, _, daemon = ftp
    with Client(public) as client:
        ports = set()
        for command in ("PASV", "EPSV", "PASV", "EPSV"):
            reply = client.sendcmd(command)
            port = (ftplib.parse227(reply)[1] if command == "PASV"
                    else ftplib.parse229(reply, (VIP, public))[1])
            ports.add(port)
            # one client holds one passive port at a time, however often it asks
            assert listening_ports(VIP, PASSIVE) == [port]
        assert len(ports) > 1  # the ports are spread over the range
    # the control connection's end gives the port back at once, not after data_timeout
    wait_for(lambda: released(daemon), timeout=DATA_TIMEOUT / 2)


def test_a_pending_data_listener_closes_when_the_control_connection_drops(ftp):
    """No QUIT, the client just goes: its passive port goes with it, not after data_timeout."""
    public, _, daemon = ftp
    client = Client(public)
    _, port = ftplib.parse227(client.sendcmd("PASV"))
    assert listening_ports(VIP, PASSIVE) == [port]
    client.close()
    wait_for(lambda: released(daemon), timeout=DATA_TIMEOUT / 2)


def test_abor_frees_a_pending_passive_port_and_the_session_goes_on(ftp):
    public, nodes, daemon = ftp
    for node in nodes.values():  # whichever node the control connection lands on
        (node.root / "after.txt").write_bytes(b"after ABOR")
    with Client(public) as client:
        _, port = ftplib.parse227(client.sendcmd("PASV"))
        assert listening_ports(VIP, PASSIVE) == [port]
        client.sendcmd("ABOR")  # no transfer under way: the node says 225 or 226
        wait_for(lambda: released(daemon), timeout=DATA_TIMEOUT / 2)
        got = bytearray()
        client.retrbinary("RETR after.txt", got.extend)
        assert bytes(got) == b"after ABOR"


@pytest.mark.parametrize("mode", ["pasv", "port"])
def test_a_slow_transfer_keeps_its_control_connection_alive(ftp, mode):
    """The control connection says nothing for 3 s, its idle_timeout is 1 s: data counts."""
    _, nodes, daemon = ftp
    data = os.urandom(4 * 1024 * 1024)
    (nodes["node1"].root / "slow.bin").write_bytes(data)
    with Client(daemon.slow_port, mode) as client:
        client.voidcmd("TYPE I")
        conn = client.transfercmd("RETR slow.bin")
        received = bytearray()
        deadline = time.monotonic() + 3
        while chunk := conn.recv(16384):
            received += chunk
            if time.monotonic() < deadline:
                time.sleep(0.02)
        conn.close()
        assert client.voidresp().startswith("226")
        assert len(received) == len(data) and bytes(received) == data
        time.sleep(2)  # now idle for real: closed by the proxy
        with pytest.raises((EOFError, OSError)):
            client.voidcmd("NOOP")


def test_a_stuck_transfer_is_closed_and_its_session_with_it(ftp):
    """A client that stops reading holds nothing forever: data, then control, time out."""
    _, nodes, daemon = ftp
    data = os.urandom(32 * 1024 * 1024)  # more than every buffer on the way can hold
    (nodes["node1"].root / "stuck.bin").write_bytes(data)
    with Client(daemon.slow_port) as client:
        client.voidcmd("TYPE I")
        conn = client.transfercmd("RETR stuck.bin")
        time.sleep(3)  # idle_timeout is 1 s
        received = 0
        try:
            while chunk := conn.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        conn.close()
        assert received < len(data)
        try:
            client.voidresp()  # 426 when the node saw its data connection go
        except (ftplib.Error, EOFError, OSError):
            pass
        time.sleep(2)  # then nothing moves: the control connection goes too
        with pytest.raises((EOFError, OSError)):
            client.voidcmd("NOOP")


def test_an_exhausted_passive_range_answers_425_and_recovers(ftp):
    _, _, daemon = ftp
    with Client(daemon.tiny_port) as first, Client(daemon.tiny_port) as second:
        assert ftplib.parse227(first.sendcmd("PASV")) == (VIP, TINY)
        with pytest.raises(ftplib.error_temp, match="^425 "):
            second.sendcmd("PASV")
        with pytest.raises(ftplib.error_temp, match="^425 "):
            second.sendcmd("EPSV")
        first.quit()  # its port goes back when the manager has seen the session end
        wait_for(lambda: listening_ports(VIP, range(TINY, TINY + 1)) == [], timeout=5)
        assert ftplib.parse227(second.sendcmd("PASV")) == (VIP, TINY)
        listing = []
        second.retrlines("LIST", listing.append)  # and the range works again
    wait_for(lambda: listening_ports(VIP, range(TINY, TINY + 1)) == [], timeout=5)


def test_a_data_connection_from_another_address_is_refused(ftp):
    public, nodes, daemon = ftp
    with Client(public) as client:
        (nodes[client.node].root / "visible.txt").write_text("hello")
        _, port = ftplib.parse227(client.sendcmd("PASV"))
        try:
            with socket.create_connection((VIP, port), timeout=5,
                                          source_address=(f"{NET}.66", 0)) as intruder:
                intruder.settimeout(5)
                assert intruder.recv(10) == b""  # closed, never relayed
        except ConnectionResetError:
            pass  # or reset
        # the client's own data connection still gets through
        with socket.create_connection((VIP, port), timeout=5,
                                      source_address=(CLIENT, 0)) as data:
            assert client.sendcmd("NLST")[:3] in ("125", "150")
            data.settimeout(5)
            listing = b""
            while chunk := data.recv(4096):
                listing += chunk
        assert client.voidresp().startswith("226")
        assert b"visible.txt" in listing
    wait_for(lambda: released(daemon), timeout=DATA_TIMEOUT + 3)


def test_port_naming_another_host_or_a_privileged_port_is_refused(ftp):
    public, _, _ = ftp
    with Client(public, "port") as client:
        for command in ("PORT 192,0,2,1,195,80", f"PORT {CLIENT.replace('.', ',')},0,21",
                        "EPRT |1|192.0.2.1|6000|"):
            with pytest.raises(ftplib.error_perm, match="^501"):
                client.sendcmd(command)
        with pytest.raises(ftplib.error_perm, match="^502"):
            client.sendcmd("LPSV")
        assert client.sendcmd("NOOP").startswith("200")


def test_control_replies_pass_byte_for_byte(ftp):
    """Multi-line replies and everything else: the same bytes as from the node directly."""
    public, nodes, _ = ftp
    script = b"USER u\r\nPASS p\r\nFEAT\r\nHELP\r\nSTAT\r\nSYST\r\nQUIT\r\n"

    def transcript(address) -> bytes:
        with socket.create_connection(address, timeout=10, source_address=(CLIENT, 0)) as s:
            s.settimeout(10)
            s.sendall(script)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    through = transcript((VIP, public))
    node = next(name for name, ip in NODES.items() if f"node {ip}".encode() in through)
    direct = transcript((NODES[node], nodes[node].server.address[1]))
    # STAT names the peer's address; everything else is identical
    strip = lambda text: b"\n".join(l for l in text.split(b"\n") if b"Connected to" not in l)
    assert strip(through) == strip(direct)
    assert b"211-" in through and b"214-" in through


def test_fifty_parallel_sessions_each_on_its_own_node(ftp):
    public, nodes, daemon = ftp
    errors: list[BaseException] = []
    results: dict[int, tuple[str, bytes, bytes]] = {}
    modes = ("pasv", "epsv", "port", "eprt")

    def session(i: int) -> None:
        try:
            data = os.urandom(64 * 1024 + i)
            with Client(public, modes[i % 4]) as client:
                client.storbinary(f"STOR par-{i}.bin", io.BytesIO(data))
                client.retrlines("NLST")
                back = io.BytesIO()
                client.retrbinary(f"RETR par-{i}.bin", back.write)
                results[i] = (client.node, data, back.getvalue())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(results) == 50
    for i, (node, data, back) in results.items():
        assert back == data
        assert (nodes[node].root / f"par-{i}.bin").read_bytes() == data
        other = next(n for n in nodes if n != node)
        assert not (nodes[other].root / f"par-{i}.bin").exists()
    assert {node for node, _, _ in results.values()} == set(NODES)
    wait_for(lambda: released(daemon), timeout=10)
