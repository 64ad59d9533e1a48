"""Explicit FTPS (AUTH TLS) through the proxy: the port-range fallback.

After ``234`` the control channel is opaque, so the manager cannot rewrite
PASV. The nodes announce the VIP and a passive range themselves
(pyftpdlib's ``masquerade_address`` and ``passive_ports``, vsftpd's
``pasv_address``/``pasv_min_port``/``pasv_max_port``); the manager forwards
that range, from each FTPS client's address, to the node holding its
control connection, and stops listening when its last FTPS session ends.
"""

from __future__ import annotations

import ftplib
import io
import os
import socket
import ssl
import threading

import pytest

from mailftp_support import (Daemon, FtpNode, cluster_file, common_port, free_port,
                             listening_ports, self_signed, wait_for)

pytest.importorskip("OpenSSL", reason="pyftpdlib's FTPS server needs pyOpenSSL (a test extra)")

NET = "127.85.4"
VIP = f"{NET}.100"
CLIENTS = (f"{NET}.50", f"{NET}.51")
NODES = {"node1": f"{NET}.11", "node2": f"{NET}.12"}
FTPS_RANGE = range(53000, 53040)


@pytest.fixture(scope="module")
def ftps(tmp_path_factory):
    base = tmp_path_factory.mktemp("ftps")
    cert, key = self_signed(base, "ftp.example.test")
    port = common_port(list(NODES.values()))
    nodes = {}
    try:
        for name, ip in NODES.items():
            nodes[name] = FtpNode(ip, port, base / name, passive=FTPS_RANGE, masquerade=VIP,
                                  tls=(cert, key))
        public = free_port(VIP)
        # default persistence (ftp: 300 s): one client address, one node
        policy = (f'[[policy]]\nvip = "{VIP}"\nport = {public}\nservice = "ftp"\n'
                  f'backend_port = {port}\nscheduler = "rr"\nmembers = {{node1 = 1, node2 = 1}}\n'
                  f'options = {{passive_ports = "52100-52199", ftps_passive_ports = '
                  f'"{FTPS_RANGE.start}-{FTPS_RANGE.stop - 1}", data_timeout = 5}}\n')
        daemon = Daemon(cluster_file(base, NET, 2, policy))
    except BaseException:
        for node in nodes.values():
            node.stop()
        raise
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    yield public, nodes, daemon, context
    daemon.stop()
    for node in nodes.values():
        node.stop()


class Client(ftplib.FTP_TLS):
    trust_server_pasv_ipv4_address = True  # the node announces the VIP itself

    def __init__(self, port: int, source: str, context, epsv: bool = False):
        super().__init__(context=context, timeout=30, source_address=(source, 0))
        self.epsv = epsv
        self.connect(VIP, port)
        self.auth()
        self.login("u", "p")
        self.prot_p()

    @property
    def node(self) -> str:
        return next(name for name, ip in NODES.items() if f"node {ip} ready" in self.welcome)

    def makepasv(self):
        if self.epsv:
            return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return super().makepasv()


def transfer(public, source, context, name: str, size: int, epsv: bool = False):
    data = os.urandom(size)
    with Client(public, source, context, epsv) as client:
        node = client.node
        client.storbinary(f"STOR {name}", io.BytesIO(data))
        assert name in client.nlst()
        back = io.BytesIO()
        client.retrbinary(f"RETR {name}", back.write)
    return node, data, back.getvalue()


def test_ftps_transfers_reach_the_control_node_through_the_forwarded_range(ftps):
    public, nodes, daemon, context = ftps
    for epsv in (False, True):
        node, data, back = transfer(public, CLIENTS[0], context, f"tls-{epsv}.bin",
                                    2 * 1024 * 1024, epsv)
        assert back == data
        assert (nodes[node].root / f"tls-{epsv}.bin").read_bytes() == data
        other = next(n for n in nodes if n != node)
        assert not (nodes[other].root / f"tls-{epsv}.bin").exists()
    wait_for(lambda: listening_ports(VIP, FTPS_RANGE) == [], timeout=5)


def test_the_range_is_forwarded_only_while_an_ftps_session_lives(ftps):
    public, _, daemon, context = ftps
    assert listening_ports(VIP, FTPS_RANGE) == []
    client = Client(public, CLIENTS[0], context)
    try:
        assert listening_ports(VIP, FTPS_RANGE) == list(FTPS_RANGE)
        status = daemon.sync(daemon.runtime.status)["ftps"][f"{VIP}:{public}"]
        assert status == {"clients": 1, "listening_ports": len(FTPS_RANGE), "data_connections": 0}
    finally:
        client.quit()
    wait_for(lambda: listening_ports(VIP, FTPS_RANGE) == [], timeout=5)
    assert daemon.sync(daemon.runtime.status)["ftps"][f"{VIP}:{public}"]["clients"] == 0


def test_two_client_addresses_each_pinned_to_their_node(ftps):
    """Concurrent FTPS sessions from two addresses: each address's data goes to its node."""
    public, nodes, _, context = ftps
    results, errors = {}, []

    def run(i: int) -> None:
        try:
            results[i] = transfer(public, CLIENTS[i % 2], context, f"pin-{i}.bin", 128 * 1024 + i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(results) == 8
    for i, (node, data, back) in results.items():
        assert back == data
        assert (nodes[node].root / f"pin-{i}.bin").read_bytes() == data
        other = next(n for n in nodes if n != node)
        assert not (nodes[other].root / f"pin-{i}.bin").exists()
    # persistence keeps each address on one node
    for source in (0, 1):
        assert len({results[i][0] for i in results if i % 2 == source}) == 1
    wait_for(lambda: listening_ports(VIP, FTPS_RANGE) == [], timeout=5)


def test_a_data_connection_from_an_address_without_ftps_session_is_refused(ftps):
    public, _, _, context = ftps
    with Client(public, CLIENTS[0], context):
        with socket.create_connection((VIP, FTPS_RANGE.start), timeout=5,
                                      source_address=(CLIENTS[1], 0)) as stranger:
            stranger.settimeout(5)
            try:
                assert stranger.recv(10) == b""
            except ConnectionResetError:
                pass
