"""POP3 and IMAP (plain, STARTTLS/STLS, implicit TLS, PROXY v2) through the proxy to real Dovecot."""

from __future__ import annotations

import imaplib
import poplib
import socket
import ssl

import pytest

from mailftp_support import (DovecotNode, Daemon, cluster_file, common_port, dovecot_unavailable,
                             free_port, self_signed, wait_for)

NET = "127.85.2"
VIP = f"{NET}.100"
CLIENT = f"{NET}.50"
NODES = {"node1": f"{NET}.11", "node2": f"{NET}.12"}
KINDS = ("imap", "imaps", "pop3", "pop3s", "imap_proxied")

pytestmark = pytest.mark.skipif(dovecot_unavailable() is not None,
                                reason=dovecot_unavailable() or "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("dovecot")
    cert, key = self_signed(base, "mail.example.test")
    ports = {kind: common_port(list(NODES.values())) for kind in KINDS}
    nodes = {}
    try:
        for name, ip in NODES.items():
            nodes[name] = DovecotNode(base / name, ip, ports, name, cert, key)
            nodes[name].deliver("alice", f"Subject: stored on {name}\r\n\r\nhello\r\n".encode())
        public = {kind: free_port(VIP) for kind in KINDS}
        services = {"imap_proxied": "imap"}
        policies = "".join(
            f'[[policy]]\nvip = "{VIP}"\nport = {public[kind]}\nservice = "{services.get(kind, kind)}"\n'
            f'backend_port = {ports[kind]}\nscheduler = "rr"\npersistence = 0\n'
            + ('proxy_protocol = "v2"\n' if kind == "imap_proxied" else "")
            + 'members = {node1 = 1, node2 = 1}\n\n' for kind in KINDS)
        daemon = Daemon(cluster_file(base, NET, 2, policies))
    except BaseException:
        for node in nodes.values():
            node.stop()
        raise
    client = ssl.create_default_context(cafile=str(cert))
    client.check_hostname = False
    yield public, nodes, client
    daemon.stop()
    for node in nodes.values():
        node.stop()


def node_of_banner(banner: bytes) -> str:
    return next(name for name in NODES if name.encode() in banner)


def test_greetings_reach_the_client_unasked(cluster):
    public, _, _ = cluster
    seen = set()
    for kind, prefix in (("imap", b"* OK"), ("pop3", b"+OK"), ("imap", b"* OK"), ("pop3", b"+OK")):
        with socket.create_connection((VIP, public[kind]), timeout=5) as sock:
            sock.settimeout(5)
            banner = sock.recv(4096)
        assert banner.startswith(prefix), banner
        seen.add((kind, node_of_banner(banner)))
    assert len(seen) == 4  # rr: each service visited both nodes


def test_pop3_with_stls_reads_the_nodes_mailbox(cluster):
    public, nodes, client = cluster
    served = []
    for _ in range(2):
        pop = poplib.POP3(VIP, public["pop3"], timeout=10)
        node = node_of_banner(pop.getwelcome())
        pop.stls(context=client)
        pop.user("alice")
        pop.pass_("secret")
        count, _ = pop.stat()
        _, lines, _ = pop.retr(1)
        pop.quit()
        assert count == 1 and lines[0] == f"Subject: stored on {node}".encode()
        served.append(node)
    assert sorted(served) == ["node1", "node2"]


def test_pop3s_implicit_tls(cluster):
    public, _, client = cluster
    pop = poplib.POP3_SSL(VIP, public["pop3s"], context=client, timeout=10)
    assert pop.getwelcome().startswith(b"+OK")
    pop.user("alice")
    pop.pass_("secret")
    assert pop.stat()[0] == 1
    pop.quit()


def test_imap_with_starttls_appends_and_reads_back(cluster):
    public, _, client = cluster
    imap = imaplib.IMAP4(VIP, public["imap"], timeout=10)
    node = node_of_banner(imap.welcome)
    imap.starttls(ssl_context=client)
    imap.login("bob", "hunter2")
    imap.append("INBOX", None, None, f"Subject: via {node}\r\n\r\nbody\r\n".encode())
    imap.select("INBOX")
    _, data = imap.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
    imap.logout()
    assert f"Subject: via {node}".encode() in data[0][1]


def test_imaps_implicit_tls_sees_the_nodes_certificate(cluster):
    public, _, client = cluster
    imap = imaplib.IMAP4_SSL(VIP, public["imaps"], ssl_context=client, timeout=10)
    assert imap.sock.version() is not None
    imap.login("alice", "secret")
    typ, count = imap.select("INBOX")
    imap.logout()
    assert typ == "OK" and count == [b"1"]


class SourcedIMAP4(imaplib.IMAP4):
    """imaplib has no source_address: connect from this area's client address."""

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(CLIENT, 0))


def test_proxy_v2_header_gives_dovecot_the_client_address(cluster):
    public, nodes, client = cluster
    imap = SourcedIMAP4(VIP, public["imap_proxied"], timeout=10)
    node = node_of_banner(imap.welcome)
    imap.login("alice", "secret")
    imap.logout()
    # without the header Dovecot would log the manager's address and its own
    expected = f"user=<alice>, method=PLAIN, rip={CLIENT}, lip={VIP}"
    wait_for(lambda: expected in nodes[node].log_text(), timeout=5)
