"""SMTP, submission and SMTPS through the real proxy to aiosmtpd nodes, with smtplib."""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage

import pytest

from mailftp_support import Daemon, SmtpNode, cluster_file, common_port, free_port, self_signed

NET = "127.85.1"
VIP = f"{NET}.100"
CLIENT = f"{NET}.50"
NODES = {"node1": f"{NET}.11", "node2": f"{NET}.12"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("certs"), "mail.example.test")


@pytest.fixture(scope="module")
def tls_contexts(certs):
    cert, key = certs
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    client.check_hostname = False
    return server, client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tls_contexts):
    """smtp (STARTTLS offered), smtps (implicit TLS) and a PROXY-header smtp, two nodes each."""
    server_tls, _ = tls_contexts
    ips = list(NODES.values())
    ports = {kind: common_port(ips) for kind in ("smtp", "smtps", "proxied")}
    nodes = []
    try:
        for name, ip in NODES.items():
            nodes.append(SmtpNode(ip, ports["smtp"], name, tls_context=server_tls))
            nodes.append(SmtpNode(ip, ports["smtps"], name, ssl_context=server_tls))
            nodes.append(SmtpNode(ip, ports["proxied"], name, proxy_protocol_timeout=5))
        public = {kind: free_port(VIP) for kind in ports}
        policies = "".join(
            f'[[policy]]\nvip = "{VIP}"\nport = {public[kind]}\nservice = "{service}"\n'
            f'backend_port = {ports[kind]}\nscheduler = "rr"\npersistence = 0\n{extra}'
            f'members = {{node1 = 1, node2 = 1}}\n\n'
            for kind, service, extra in (("smtp", "submission", ""), ("smtps", "smtps", ""),
                                         ("proxied", "smtp", 'proxy_protocol = "v1"\n')))
        daemon = Daemon(cluster_file(tmp_path_factory.mktemp("smtp"), NET, 2, policies))
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    by_kind = {kind: [n for n in nodes if n.controller.port == ports[kind]] for kind in ports}
    yield public, by_kind
    daemon.stop()
    for node in nodes:
        node.stop()


@pytest.fixture
def mail_cluster(cluster):
    """The module's cluster with the nodes' mailboxes emptied."""
    for nodes in cluster[1].values():
        for node in nodes:
            node.messages.clear()
            node.sessions.clear()
    return cluster


def message(n: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@example.test"
    msg["To"] = "rcpt@example.test"
    msg["Subject"] = f"message {n}"
    msg.set_content(f"body {n}\n" + "x" * 5000)
    return msg


def received(nodes) -> dict[str, list[str]]:
    return {n.name: [e.content.decode().split("Subject: ")[1].split("\r\n")[0] for e in n.messages]
            for n in nodes}


def test_the_banner_arrives_before_the_client_says_anything(mail_cluster):
    public, _ = mail_cluster
    with socket.create_connection((VIP, public["smtp"]), timeout=5) as sock:
        sock.settimeout(5)
        banner = sock.recv(1024)
    assert banner.startswith(b"220 ") and b"ESMTP" in banner


def test_messages_sent_through_the_vip_arrive_on_the_nodes(mail_cluster, tls_contexts):
    public, by_kind = mail_cluster
    for n in range(4):
        with smtplib.SMTP(VIP, public["smtp"], source_address=(CLIENT, 0), timeout=10) as smtp:
            code, banner = smtp.ehlo()
            assert code == 250
            smtp.send_message(message(n))
    got = received(by_kind["smtp"])
    assert sorted(sum(got.values(), [])) == [f"message {n}" for n in range(4)]
    assert all(len(subjects) == 2 for subjects in got.values()), got  # rr over both nodes


def test_starttls_passes_through_to_the_node(mail_cluster, tls_contexts, certs):
    public, by_kind = mail_cluster
    _, client_tls = tls_contexts
    with smtplib.SMTP(VIP, public["smtp"], source_address=(CLIENT, 0), timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        smtp.starttls(context=client_tls)
        # the node's certificate, unchanged: the manager terminates nothing
        peer = smtp.sock.getpeercert(binary_form=True)
        assert peer == ssl.PEM_cert_to_DER_cert(certs[0].read_text())
        smtp.ehlo()
        smtp.send_message(message(10))
    assert sum(received(by_kind["smtp"]).values(), []) == ["message 10"]


def test_implicit_tls_smtps_passes_through(mail_cluster, tls_contexts):
    public, by_kind = mail_cluster
    _, client_tls = tls_contexts
    for n in range(2):
        with smtplib.SMTP_SSL(VIP, public["smtps"], source_address=(CLIENT, 0),
                              context=client_tls, timeout=10) as smtp:
            smtp.send_message(message(20 + n))
    got = received(by_kind["smtps"])
    assert sorted(sum(got.values(), [])) == ["message 20", "message 21"]


def test_proxy_header_gives_the_node_the_client_address(mail_cluster):
    public, by_kind = mail_cluster
    with smtplib.SMTP(VIP, public["proxied"], source_address=(CLIENT, 0), timeout=10) as smtp:
        smtp.send_message(message(30))
    sessions = [s for n in by_kind["proxied"] for s in n.sessions]
    assert len(sessions) == 1
    proxy = sessions[0].proxy_data
    assert proxy.valid and str(proxy.src_addr) == CLIENT and str(proxy.dst_addr) == VIP
    assert proxy.dst_port == public["proxied"]
